#include "worker/stream.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <iomanip>
#include <iostream>
#include <limits>
#include <ostream>
#include <sstream>
#include <string_view>
#include <thread>
#include <utility>

#include "common/progress.h"
#include "worker/line_reader.h"
#include "worker/metrics_line.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

// Set by RequestStreamStopFromSignal: a signal handler may only touch lock-free atomics.
std::atomic<bool> g_signal_stop{false};

constexpr uint64_t kMaxId = std::numeric_limits<uint32_t>::max();

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// Quantiles of a stream of positive durations in bounded memory: buckets 2% wide on a log scale
// from 1 us to ~11 days (a stream runs for ever, so keeping every sample is not an option). A
// quantile is the geometric middle of its bucket: within 1% of the exact value.
class LogHistogram {
 public:
  LogHistogram() : counts_(kBuckets, 0) {}
  void Add(double v) {
    max_ = std::max(max_, v);
    ++n_;
    int b = 0;
    if (v > kMin) b = std::min<int>(kBuckets - 1, 1 + static_cast<int>(std::log(v / kMin) / kLog));
    ++counts_[b];
  }
  int64_t count() const { return n_; }
  double max() const { return n_ == 0 ? std::nan("") : max_; }
  double Quantile(double q) const {
    if (n_ == 0) return std::nan("");
    const int64_t rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * n_)));
    int64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += counts_[b];
      if (seen >= rank) {
        if (b == 0) return kMin;
        // Bucket b holds (kMin e^{(b-1) kLog}, kMin e^{b kLog}]: its geometric middle, capped by
        // the exact maximum so p100 never exceeds what was seen.
        return std::min(max_, kMin * std::exp((b - 0.5) * kLog));
      }
    }
    return max_;
  }

 private:
  static constexpr double kMin = 1e-6;
  static constexpr int kBuckets = 1500;
  const double kLog = std::log(1.02);
  std::vector<int64_t> counts_;
  int64_t n_ = 0;
  double max_ = 0;
};

}  // namespace

double StreamNowSeconds() {
  static const auto origin = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin).count();
}

void RequestStreamStopFromSignal() { g_signal_stop.store(true, std::memory_order_relaxed); }
void ClearStreamStopRequest() { g_signal_stop.store(false, std::memory_order_relaxed); }

// ---- EventStreamSource ------------------------------------------------------------------------

EventStreamSource::EventStreamSource(int fd, bool owned, std::string name,
                                     const EventSourceOptions& options)
    : fd_(fd), owned_(owned), name_(std::move(name)), o_(options) {
  struct stat st;
  regular_file_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
  if (regular_file_) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    // A descriptor passed in (stdin redirected from a file) may not be at the file's start: the
    // truncation checks compare the file with what was read from this offset on, and only a file
    // read from its start can begin with a byte order mark.
    const off_t at = lseek(fd_, 0, SEEK_CUR);
    start_offset_ = at > 0 ? static_cast<int64_t>(at) : 0;
    read_from_file_start_ = start_offset_ == 0;
  }
  buf_.resize(1 << 16);
  StreamNowSeconds();  // fix the clock's origin before the first read
}

EventStreamSource::~EventStreamSource() {
  if (owned_ && fd_ >= 0) close(fd_);
  if (next_fd_ >= 0) close(next_fd_);
}

StatusOr<std::unique_ptr<EventStreamSource>> EventStreamSource::Open(
    const std::string& path, const EventSourceOptions& options) {
  if (path == "-") return FromFd(STDIN_FILENO, false, "stdin", options);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NotFoundError("cannot open event stream '" + path + "': " + std::strerror(errno));
  std::unique_ptr<EventStreamSource> src = FromFd(fd, true, path, options);
  // Only a file opened by its name can be followed across rotations (a descriptor has no name).
  if (src->regular_file_) src->path_ = path;
  return src;
}

std::unique_ptr<EventStreamSource> EventStreamSource::FromFd(int fd, bool owned, std::string name,
                                                             const EventSourceOptions& options) {
  return std::unique_ptr<EventStreamSource>(
      new EventStreamSource(fd, owned, std::move(name), options));
}

void EventStreamSource::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

bool EventStreamSource::StopRequested() const {
  if (g_signal_stop.load(std::memory_order_relaxed)) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

void EventStreamSource::Sleep(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return stop_; });
}

void EventStreamSource::Log(const std::string& line) const {
  if (o_.log) {
    o_.log(line);
  } else {
    std::cerr << line + "\n";  // one write: lines of other threads do not interleave inside it
  }
}

namespace {
// Where the open file `fd` is now (Linux /proc/self/fd): "" if unknown or deleted.
std::string OpenFileNowAt(int fd) {
  char target[4096];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
  if (n <= 0) return "";
  const std::string now(target, static_cast<size_t>(n));
  const std::string deleted = " (deleted)";
  if (now.size() > deleted.size() &&
      now.compare(now.size() - deleted.size(), deleted.size(), deleted) == 0)
    return "";
  return now;
}
}  // namespace

std::string EventStreamSource::FileName() const {
  if (path_.empty()) return name_;
  struct stat st;
  if (stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) return name_;
  // The path names another file, or nothing: the open file was renamed (or deleted). Its current
  // name is what a user can open to look at the line.
  const std::string now = OpenFileNowAt(fd_);
  return now.empty() ? name_ + " (the file it named before a rotation)" : now;
}

Status EventStreamSource::CheckPath() {
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    if (!path_gone_) {
      path_gone_ = true;
      Log("event stream '" + name_ + "': the path is gone (" + std::strerror(errno) +
          "): following the open file and waiting for the name to reappear");
    }
    return Status();
  }
  path_gone_ = false;
  if (st.st_dev == dev_ && st.st_ino == ino_) return Status();
  // Another file: open it now, so that it cannot vanish before it is read (and a later rotation
  // is then another switch, from it). O_NONBLOCK: opening a FIFO must not block.
  const int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return Status();  // gone again: the next check sees it
    return NotFoundError("event stream '" + name_ + "' was rotated, but the new file cannot be " +
                         "opened: " + std::strerror(errno));
  }
  struct stat nst;
  if (fstat(fd, &nst) != 0 || !S_ISREG(nst.st_mode)) {
    close(fd);
    return FailedPreconditionError("event stream '" + name_ +
                                   "' was rotated to something that is not a regular file");
  }
  if (nst.st_dev == dev_ && nst.st_ino == ino_) {  // renamed back in between
    close(fd);
    return Status();
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  next_fd_ = fd;
  rotation_seen_at_ = StreamNowSeconds();
  return Status();
}

void EventStreamSource::SwitchToNextFile() {
  const std::string old_now = OpenFileNowAt(fd_);
  const int64_t old_lines = line_;
  if (owned_) close(fd_);
  fd_ = next_fd_;
  next_fd_ = -1;
  owned_ = true;
  struct stat st;
  if (fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  old_file_done_ = false;
  file_bytes_ = 0;
  start_offset_ = 0;
  tail_len_ = 0;
  read_from_file_start_ = true;
  line_ = 0;
  ++file_index_;
  rotations_.fetch_add(1, std::memory_order_relaxed);
  Log("event stream '" + name_ + "' was rotated: read the previous file to its end (" +
      std::to_string(old_lines) + " lines; now " +
      (old_now.empty() ? std::string("deleted") : "'" + old_now + "'") +
      "); following the new file from its start");
}

Status EventStreamSource::CheckNotTruncated() const {
  const int64_t offset = start_offset_ + file_bytes_;
  struct stat st;
  if (fstat(fd_, &st) == 0 && st.st_size < offset)
    return DataLossError("event stream '" + FileName() + "' shrank from " + std::to_string(offset) +
                         " to " + std::to_string(st.st_size) +
                         " bytes while being read (truncated in place; rotate by renaming "
                         "instead)");
  // A file truncated and written again past the read position between two looks at it (its
  // writer is faster than the poll) is no shorter than what was read: the bytes just before the
  // position tell. Compared at every read, before the bytes it returned are used: those would be
  // the middle of the new content, read as if they followed the old.
  if (tail_len_ == 0) return Status();
  char now[kTailBytes];
  const ssize_t n = pread(fd_, now, static_cast<size_t>(tail_len_), offset - tail_len_);
  if (n < 0)
    return DataLossError("reading event stream '" + FileName() + "' after line " +
                         std::to_string(line_) + ": " + std::strerror(errno));
  if (n == tail_len_ && std::memcmp(now, tail_, static_cast<size_t>(tail_len_)) == 0)
    return Status();
  return DataLossError("event stream '" + FileName() +
                       "' was truncated in place and written again while being read: its " +
                       std::to_string(tail_len_) + " bytes before offset " +
                       std::to_string(offset) +
                       " (the end of what was read) are no longer those read there (rotate by "
                       "renaming instead)");
}

void EventStreamSource::KeepTail(size_t n) {
  const char* fresh = buf_.data() + end_;
  if (n >= static_cast<size_t>(kTailBytes)) {
    std::memcpy(tail_, fresh + n - kTailBytes, kTailBytes);
    tail_len_ = kTailBytes;
    return;
  }
  const int keep = std::min(tail_len_, kTailBytes - static_cast<int>(n));  // older bytes kept
  std::memmove(tail_, tail_ + tail_len_ - keep, static_cast<size_t>(keep));
  std::memcpy(tail_ + keep, fresh, n);
  tail_len_ = keep + static_cast<int>(n);
}

StatusOr<bool> EventStreamSource::Fill() {
  // Next() consumed the rotated-away file's last line: go on with the file the path names now.
  if (old_file_done_) SwitchToNextFile();
  // Keep the unread tail (a partial line) at the front, growing the buffer only for a line longer
  // than it.
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
  double backoff = o_.poll_min_s;
  double idle_since = StreamNowSeconds();
  while (true) {
    if (StopRequested()) return false;
    if (!regular_file_) {
      // A pipe blocks in read(): wait in poll() with a short timeout so Stop() is honoured.
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, 100);
      if (r < 0 && errno != EINTR)
        return DataLossError("reading event stream '" + name_ + "': " + std::strerror(errno));
      if (r <= 0) {
        if (o_.idle_timeout_s > 0 && StreamNowSeconds() - idle_since >= o_.idle_timeout_s)
          return false;
        continue;
      }
    }
    // Whether the path already named another file before this read: then a read that returns
    // nothing means the old file is complete.
    const bool rotation_seen = next_fd_ >= 0;
    const ssize_t n = read(fd_, buf_.data() + end_, buf_.size() - end_);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return DataLossError("reading event stream '" + FileName() + "' after line " +
                           std::to_string(line_) + ": " + std::strerror(errno));
    }
    if (n > 0) {
      if (file_bytes_ == 0 && n >= 2 && static_cast<unsigned char>(buf_[end_]) == 0x1f &&
          static_cast<unsigned char>(buf_[end_ + 1]) == 0x8b)
        return InvalidArgumentError("event stream '" + FileName() +
                                    "' is gzip-compressed; a stream must be plain text (e.g. "
                                    "`zcat FILE | ips train --stream -`)");
      if (regular_file_) {
        IPS_RETURN_IF_ERROR(CheckNotTruncated());
        KeepTail(static_cast<size_t>(n));
      }
      end_ += static_cast<size_t>(n);
      bytes_read_ += n;
      file_bytes_ += n;
      last_read_time_ = StreamNowSeconds();
      return true;
    }
    // End of the bytes written so far.
    if (!regular_file_ || !o_.follow) {
      eof_ = true;
      return false;
    }
    IPS_RETURN_IF_ERROR(CheckNotTruncated());
    const double now = StreamNowSeconds();
    const bool idle = o_.idle_timeout_s > 0 && now - idle_since >= o_.idle_timeout_s;
    if (rotation_seen) {
      // The old file is read to its end (this read began after the new file was seen). Its
      // writer may still append to it until it reopens the path (logrotate renames, creates,
      // then signals the writer): leave it once it has been quiet for rotate_grace_s since the
      // rotation was seen, or when the stream would end idle anyway (the new file's events are
      // then read before it ends). The new file is held open meanwhile: nothing in it is lost.
      if (now - std::max(last_read_time_, rotation_seen_at_) >= o_.rotate_grace_s || idle) {
        // An unterminated last line is complete (Next parses it, then comes back here to
        // switch); without one, switch now.
        if (end_ > begin_) {
          old_file_done_ = true;
          return true;
        }
        SwitchToNextFile();
        backoff = o_.poll_min_s;
        continue;
      }
    } else if (!path_.empty()) {
      IPS_RETURN_IF_ERROR(CheckPath());
      // Rotated: read the old file once more (what was appended between the read above and the
      // rename), without waiting.
      if (next_fd_ >= 0) continue;
    }
    if (idle) return false;
    Sleep(backoff);
    backoff = std::min(o_.poll_max_s, backoff * 2);
  }
}

StatusOr<bool> EventStreamSource::Next(StreamEvent* out) {
  if (!error_.ok()) return error_;
  if (ended_) return false;
  while (true) {
    const char* begin = buf_.data() + begin_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', end_ - begin_));
    std::string_view line;
    if (nl != nullptr) {
      line = std::string_view(begin, nl - begin);
      begin_ += line.size() + 1;
    } else if (static_cast<int64_t>(end_ - begin_) > o_.max_line_bytes) {
      error_ = InvalidArgumentError(FormatFieldError(
          FileName(), line_ + 1, "line", "at most " + std::to_string(o_.max_line_bytes) + " bytes",
          std::string_view(begin, std::min<size_t>(32, end_ - begin_))));
      return error_;
    } else if ((eof_ || old_file_done_) && begin_ < end_) {
      // A last line without "\n" at the real end of the stream, or of a rotated-away file, is
      // complete (never joined with the next file's first bytes).
      line = std::string_view(begin, end_ - begin_);
      begin_ = end_;
    } else if (eof_) {
      ended_ = true;
      return false;
    } else {
      auto filled = Fill();
      if (!filled.ok()) {
        error_ = filled.status();
        return error_;
      }
      if (!*filled && !eof_) {
        ended_ = true;  // stopped: a partial line stays pending
        return false;
      }
      continue;
    }
    // A byte order mark is skipped at the start of a file, as `ips data convert` skips it.
    if (line_ == 0 && read_from_file_start_) line = WithoutUtf8Bom(line);
    ++line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    FieldError err;
    std::string bad;  // the bad line's message, empty if it parsed
    if (!ParseEventLine(line, &out->event, &err)) {
      bad = FormatFieldError(FileName(), line_, err.field, err.expected, err.got);
    } else {
      const char* wide = nullptr;
      uint64_t wide_id = 0;
      if (out->event.item > kMaxId) wide = "item", wide_id = out->event.item;
      if (out->event.category > kMaxId) wide = "category", wide_id = out->event.category;
      if (wide != nullptr)
        bad =
            FormatFieldError(FileName(), line_, wide, "an id below 2^32 (the trainer's key width)",
                             std::to_string(wide_id));
    }
    if (!bad.empty()) {
      if (bad_lines_.load(std::memory_order_relaxed) < o_.max_bad_records) {
        bad_lines_.fetch_add(1, std::memory_order_relaxed);
        Log("warning: skipping bad line " + bad);
        continue;
      }
      if (o_.max_bad_records > 0)
        bad += " [more than --stream_max_bad_records=" + std::to_string(o_.max_bad_records) +
               " bad lines]";
      error_ = InvalidArgumentError(std::move(bad));
      return error_;
    }
    out->index = events_++;
    out->file = file_index_;
    out->line = line_;
    out->read_time = last_read_time_;
    return true;
  }
}

// ---- UserHistoryStore -------------------------------------------------------------------------

namespace {
// What one unordered_map node costs: the value, the next pointer and the cached hash, rounded up
// to malloc's 16-byte granularity plus its 8-byte header.
constexpr int64_t kMapNodeBytes = 48;
}  // namespace

UserHistoryStore::UserHistoryStore(int max_len, int64_t max_users)
    : max_len_(max_len), max_users_(max_users) {
  CHECK_GE(max_len, 1);
  CHECK_GE(max_users, 1);
  CHECK_LE(max_users, std::numeric_limits<int32_t>::max());
}

void UserHistoryStore::Unlink(int32_t s) {
  Slot& sl = slots_[s];
  if (sl.prev >= 0)
    slots_[sl.prev].next = sl.next;
  else
    mru_ = sl.next;
  if (sl.next >= 0)
    slots_[sl.next].prev = sl.prev;
  else
    lru_ = sl.prev;
  sl.prev = sl.next = -1;
}

void UserHistoryStore::PushFront(int32_t s) {
  Slot& sl = slots_[s];
  sl.prev = -1;
  sl.next = mru_;
  if (mru_ >= 0) slots_[mru_].prev = s;
  mru_ = s;
  if (lru_ < 0) lru_ = s;
}

int UserHistoryStore::Get(uint64_t user, uint32_t* items, uint32_t* cats) const {
  const auto it = index_.find(user);
  if (it == index_.end()) return 0;
  const Slot& sl = slots_[it->second];
  const size_t base = static_cast<size_t>(it->second) * max_len_;
  for (int j = 0; j < sl.len; ++j) {
    const size_t p = base + (sl.head + j) % max_len_;
    items[j] = items_[p];
    cats[j] = cats_[p];
  }
  return sl.len;
}

void UserHistoryStore::Append(uint64_t user, uint32_t item, uint32_t cat) {
  int32_t s;
  const auto it = index_.find(user);
  if (it != index_.end()) {
    s = it->second;
    if (s != mru_) {
      Unlink(s);
      PushFront(s);
    }
  } else {
    if (static_cast<int64_t>(slots_.size()) < max_users_) {
      // Grow capacity ourselves (doubling, capped at max_users) so the arrays never hold more
      // than MemoryBound() promises.
      if (slots_.size() == slots_.capacity()) {
        const size_t cap =
            std::min<size_t>(std::max<size_t>(64, 2 * slots_.capacity()), max_users_);
        slots_.reserve(cap);
        items_.reserve(cap * max_len_);
        cats_.reserve(cap * max_len_);
      }
      s = static_cast<int32_t>(slots_.size());
      slots_.emplace_back();
      items_.resize(items_.size() + max_len_);
      cats_.resize(cats_.size() + max_len_);
    } else {
      s = lru_;
      index_.erase(slots_[s].user);
      Unlink(s);
      ++evictions_;
    }
    slots_[s].user = user;
    slots_[s].head = 0;
    slots_[s].len = 0;
    index_.emplace(user, s);
    PushFront(s);
  }
  Slot& sl = slots_[s];
  const size_t base = static_cast<size_t>(s) * max_len_;
  size_t p;
  if (sl.len < max_len_) {
    p = base + (sl.head + sl.len) % max_len_;
    ++sl.len;
  } else {
    p = base + sl.head;  // overwrite the oldest
    sl.head = (sl.head + 1) % max_len_;
  }
  items_[p] = item;
  cats_[p] = cat;
}

int64_t UserHistoryStore::MemoryBytes() const {
  return static_cast<int64_t>(slots_.capacity() * sizeof(Slot) +
                              (items_.capacity() + cats_.capacity()) * sizeof(uint32_t) +
                              index_.bucket_count() * sizeof(void*)) +
         static_cast<int64_t>(index_.size()) * kMapNodeBytes;
}

int64_t UserHistoryStore::MemoryBound(int max_len, int64_t max_users) {
  // Slot capacity is capped at max_users; the map keeps at most max_users nodes and (load factor
  // 1, libstdc++ grows it by a bit more than 2x to a prime: measured at most 2.13 buckets per
  // element up to 5M elements) fewer than 3 * max_users + 64 buckets.
  return max_users *
             (static_cast<int64_t>(sizeof(Slot)) + 2 * 4 * int64_t{max_len} + kMapNodeBytes) +
         (3 * max_users + 64) * static_cast<int64_t>(sizeof(void*));
}

// ---- StreamBatch / StreamExampleBuilder ------------------------------------------------------

StreamBatch::StreamBatch(int capacity_rows, int len, bool aux_negatives)
    : capacity(capacity_rows), max_len(len) {
  const size_t bt = static_cast<size_t>(capacity) * max_len;
  hist_item.assign(bt, 0);
  hist_cat.assign(bt, 0);
  if (aux_negatives) {
    neg_item.assign(bt, 0);
    neg_cat.assign(bt, 0);
  }
  length.assign(capacity, 0);
  item.assign(capacity, 0);
  cat.assign(capacity, 0);
  label.assign(capacity, 0);
  user.assign(capacity, 0);
  event_index.assign(capacity, 0);
}

CtrBatchView StreamBatch::View() const {
  CtrBatchView v;
  v.batch = size;
  v.seq_len = max_len;
  v.hist_item = hist_item.data();
  v.hist_cat = hist_cat.data();
  v.length = length.data();
  v.item = item.data();
  v.cat = cat.data();
  v.label = label.data();
  if (!neg_item.empty()) {
    v.neg_item = neg_item.data();
    v.neg_cat = neg_cat.data();
  }
  return v;
}

StatusOr<std::unique_ptr<StreamExampleBuilder>> StreamExampleBuilder::Create(
    const StreamExampleOptions& o) {
  if (o.max_len < 1) return InvalidArgumentError("stream examples: max_len must be >= 1");
  if (o.negatives < 0) return InvalidArgumentError("stream examples: negatives must be >= 0");
  if (o.max_users < 1 || o.max_users > std::numeric_limits<int32_t>::max())
    return InvalidArgumentError("stream examples: max_users must be in [1, 2^31)");
  if (o.max_items < 2 || o.max_items > std::numeric_limits<int32_t>::max())
    return InvalidArgumentError("stream examples: max_items must be in [2, 2^31)");
  return std::unique_ptr<StreamExampleBuilder>(new StreamExampleBuilder(o));
}

StreamExampleBuilder::StreamExampleBuilder(const StreamExampleOptions& o)
    : o_(o),
      histories_(o.max_len, o.max_users),
      rng_(Mix64(o.seed ^ 0x73747265616dULL)),  // "stream": not the model's or the table's stream
      hist_items_(o.max_len),
      hist_cats_(o.max_len) {}

uint32_t StreamExampleBuilder::PoolCategory(uint32_t item) const {
  const auto it = pool_index_.find(item);
  return it == pool_index_.end() ? 0 : pool_[it->second].cat;
}

std::shared_ptr<const std::vector<uint32_t>> StreamExampleBuilder::PoolCategoryMap() const {
  uint64_t max_item = 0;
  for (const PoolEntry& e : pool_) max_item = std::max<uint64_t>(max_item, e.item);
  if (max_item > 16 * static_cast<uint64_t>(pool_.size()) + (uint64_t{1} << 20)) return nullptr;
  auto m = std::make_shared<std::vector<uint32_t>>(pool_.empty() ? 0 : max_item + 1, 0);
  for (const PoolEntry& e : pool_) (*m)[e.item] = e.cat;
  return m;
}

void StreamExampleBuilder::AddToPool(uint32_t item, uint32_t cat) {
  const auto it = pool_index_.find(item);
  if (it != pool_index_.end()) {
    pool_[it->second].cat = cat;
    return;
  }
  ++items_seen_;
  if (static_cast<int64_t>(pool_.size()) < o_.max_items) {
    pool_index_.emplace(item, static_cast<uint32_t>(pool_.size()));
    pool_.push_back({item, cat});
    return;
  }
  // Reservoir sampling (Algorithm R) over distinct items: the pool stays a uniform sample.
  const uint64_t j = rng_.UniformInt(static_cast<uint64_t>(items_seen_));
  if (j < pool_.size()) {
    pool_index_.erase(pool_[j].item);
    pool_[j] = {item, cat};
    pool_index_.emplace(item, static_cast<uint32_t>(j));
  }
}

size_t StreamExampleBuilder::DrawOther(uint32_t exclude) {
  const auto it = pool_index_.find(exclude);
  if (it == pool_index_.end()) return rng_.UniformInt(pool_.size());
  // Uniform over the pool without the excluded entry, without rejection.
  size_t j = rng_.UniformInt(pool_.size() - 1);
  if (j >= it->second) ++j;
  return j;
}

StatusOr<int> StreamExampleBuilder::Add(const StreamEvent& e, StreamBatch* batch) {
  if (batch->max_len != o_.max_len)
    return FailedPreconditionError("stream batch max_len " + std::to_string(batch->max_len) +
                                   " != builder max_len " + std::to_string(o_.max_len));
  if (batch->capacity - batch->size < rows_per_event())
    return FailedPreconditionError("stream batch has room for " +
                                   std::to_string(batch->capacity - batch->size) + " rows, " +
                                   std::to_string(rows_per_event()) + " needed");
  if (o_.aux_negatives && batch->neg_item.empty())
    return FailedPreconditionError("stream batch has no auxiliary-negative arrays");
  if (e.event.item == 0 || e.event.item > kMaxId || e.event.category == 0 ||
      e.event.category > kMaxId)
    return InvalidArgumentError("event " + std::to_string(e.index) +
                                ": item and category must be in [1, 2^32)");
  const uint32_t item = static_cast<uint32_t>(e.event.item);
  const uint32_t cat = static_cast<uint32_t>(e.event.category);
  const int n = histories_.Get(e.event.user, hist_items_.data(), hist_cats_.data());
  const int L = o_.max_len;
  const int pad = L - n;
  const bool pool_has_item = pool_index_.count(item) > 0;
  const int64_t others = static_cast<int64_t>(pool_.size()) - (pool_has_item ? 1 : 0);
  const int rows = 1 + static_cast<int>(std::min<int64_t>(o_.negatives, others));
  for (int r = 0; r < rows; ++r) {
    const int row = batch->size + r;
    uint32_t* hi = batch->hist_item.data() + static_cast<size_t>(row) * L;
    uint32_t* hc = batch->hist_cat.data() + static_cast<size_t>(row) * L;
    std::fill(hi, hi + pad, 0u);
    std::fill(hc, hc + pad, 0u);
    std::copy(hist_items_.begin(), hist_items_.begin() + n, hi + pad);
    std::copy(hist_cats_.begin(), hist_cats_.begin() + n, hc + pad);
    batch->length[row] = n;
    if (r == 0) {
      batch->item[row] = item;
      batch->cat[row] = cat;
      batch->label[row] = 1.0f;
    } else {
      const PoolEntry& neg = pool_[DrawOther(item)];
      batch->item[row] = neg.item;
      batch->cat[row] = neg.cat;
      batch->label[row] = 0.0f;
    }
    batch->user[row] = e.event.user;
    batch->event_index[row] = e.index;
    if (o_.aux_negatives) {
      uint32_t* ni = batch->neg_item.data() + static_cast<size_t>(row) * L;
      uint32_t* nc = batch->neg_cat.data() + static_cast<size_t>(row) * L;
      std::fill(ni, ni + L, 0u);
      std::fill(nc, nc + L, 0u);
      // A history position exists only once an item was seen, so the pool is never empty here;
      // with a pool of one item, that item is the only possible negative.
      for (int t = pad; t < L; ++t) {
        const size_t j = pool_.size() > 1 ? DrawOther(hi[t]) : 0;
        ni[t] = pool_[j].item;
        nc[t] = pool_[j].cat;
      }
    }
  }
  batch->size += rows;
  histories_.Append(e.event.user, item, cat);
  AddToPool(item, cat);
  return rows;
}

// ---- StreamTrainer ----------------------------------------------------------------------------

namespace {

// The reader thread's hand-off to the training thread: a bounded queue of events, closed with
// the source's final status.
class EventQueue {
 public:
  explicit EventQueue(size_t capacity) : capacity_(capacity) {}

  // Reader side. Blocks while full; false if the consumer abandoned the queue.
  bool Push(StreamEvent e) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return q_.size() < capacity_ || abandoned_; });
    if (abandoned_) return false;
    q_.push_back(std::move(e));
    not_empty_.notify_one();
    return true;
  }
  void Close(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    status_ = std::move(s);
    not_empty_.notify_all();
  }

  enum class Got { kEvent, kTimeout, kEnd };
  // Consumer side: waits until an event, the close, or `deadline` (StreamNowSeconds; infinity =
  // none). At kEnd, *status is the source's final status.
  Got Pop(double deadline, StreamEvent* e, Status* status) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto ready = [&] { return !q_.empty() || closed_; };
    if (std::isinf(deadline)) {
      not_empty_.wait(lock, ready);
    } else {
      const double wait = deadline - StreamNowSeconds();
      if (wait > 0) not_empty_.wait_for(lock, std::chrono::duration<double>(wait), ready);
    }
    if (!q_.empty()) {
      *e = std::move(q_.front());
      q_.pop_front();
      not_full_.notify_one();
      return Got::kEvent;
    }
    if (closed_) {
      *status = status_;
      return Got::kEnd;
    }
    return Got::kTimeout;
  }
  void Abandon() {
    std::lock_guard<std::mutex> lock(mu_);
    abandoned_ = true;
    not_full_.notify_all();
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<StreamEvent> q_;  // guarded by mu_
  bool closed_ = false;        // guarded by mu_
  bool abandoned_ = false;     // guarded by mu_
  Status status_;              // guarded by mu_
};

}  // namespace

StatusOr<std::unique_ptr<StreamTrainer>> StreamTrainer::Create(const StreamTrainerOptions& options,
                                                               Trainer* trainer,
                                                               StreamPublisher publisher) {
  StreamTrainerOptions o = options;
  const models::CtrModel<float>& model = trainer->model();
  if (o.examples.max_len != model.max_len())
    return InvalidArgumentError("stream: examples.max_len " + std::to_string(o.examples.max_len) +
                                " != the model's max_len " + std::to_string(model.max_len()));
  if (model.aux_negatives()) o.examples.aux_negatives = true;
  const int rows = 1 + o.examples.negatives;
  if (o.batch_size < rows || o.batch_size > model.max_batch())
    return InvalidArgumentError("stream: batch_size " + std::to_string(o.batch_size) +
                                " outside [1 + negatives = " + std::to_string(rows) +
                                ", the model's max_batch = " + std::to_string(model.max_batch()) +
                                "]");
  if (o.publish_every_steps < 0 || o.publish_every_s < 0)
    return InvalidArgumentError("stream: publish_every_steps and publish_every_s must be >= 0");
  if (o.max_batch_delay_s < 0)
    return InvalidArgumentError("stream: max_batch_delay_s must be >= 0");
  if (o.window_events < 1) return InvalidArgumentError("stream: window_events must be >= 1");
  if (o.max_events < 0) return InvalidArgumentError("stream: max_events must be >= 0");
  if (o.queue_events < 1) return InvalidArgumentError("stream: queue_events must be >= 1");
  if (o.log_every_windows < 1)
    return InvalidArgumentError("stream: log_every_windows must be >= 1");
  IPS_ASSIGN_OR_RETURN(auto builder, StreamExampleBuilder::Create(o.examples));
  return std::unique_ptr<StreamTrainer>(
      new StreamTrainer(o, trainer, std::move(publisher), std::move(builder)));
}

StreamTrainer::StreamTrainer(const StreamTrainerOptions& o, Trainer* trainer,
                             StreamPublisher publisher,
                             std::unique_ptr<StreamExampleBuilder> builder)
    : o_(o), trainer_(trainer), publisher_(std::move(publisher)), builder_(std::move(builder)) {}

StatusOr<StreamTrainResult> StreamTrainer::Run(EventStreamSource* source, const RunSinks& sinks) {
  StreamTrainResult res;
  const double start = StreamNowSeconds();
  EventQueue queue(static_cast<size_t>(o_.queue_events));
  std::thread reader([&] {
    StreamEvent e;
    while (true) {
      auto r = source->Next(&e);
      if (!r.ok() || !*r) {
        queue.Close(r.ok() ? Status() : r.status());
        return;
      }
      if (!queue.Push(e)) return;
    }
  });
  // Every exit path stops the source and joins the reader.
  struct Joiner {
    EventStreamSource* source;
    EventQueue* queue;
    std::thread* reader;
    ~Joiner() {
      source->Stop();
      queue->Abandon();
      if (reader->joinable()) reader->join();
    }
  } joiner{source, &queue, &reader};

  StreamBatch batch(o_.batch_size, o_.examples.max_len, o_.examples.aux_negatives);
  double batch_first_read = 0;
  std::vector<float> logits(o_.batch_size), probs(o_.batch_size);
  // Events trained on since the last publish: (index, read time), for freshness.
  std::vector<std::pair<int64_t, double>> unpublished;
  std::vector<std::pair<int64_t, double>> batch_events;  // events of the current batch
  LogHistogram freshness;
  int64_t last_publish_step = 0;
  double last_publish_time = start;
  double loss_sum = 0;
  int64_t steps_run = 0;

  BinaryMetrics window;
  int64_t window_id = -1;
  int64_t window_first = 0, window_last = 0;
  ProgressLine progress("stream", 0, "events", sinks.progress != nullptr ? sinks.progress : stderr);
  const bool show_progress = sinks.progress != nullptr;

  const auto close_window = [&]() -> Status {
    if (window_id < 0 || window.Count() == 0) return Status();
    const BinaryMetricsResult m = window.Compute();
    StreamWindow w;
    w.first_event = window_first;
    w.last_event = window_last;
    w.examples = m.count;
    w.auc = m.auc;
    w.logloss = m.logloss;
    w.seconds = StreamNowSeconds() - start;
    w.step = trainer_->steps();
    res.windows.push_back(w);
    window.Clear();
    if (res.windows.size() % o_.log_every_windows == 0) {
      const double ex_s = res.examples / std::max(1e-9, w.seconds);
      if (show_progress)
        progress.Update(res.events, "auc=" + Fixed(w.auc, 4) + " examples/s=" + Fixed(ex_s, 0));
      if (sinks.metrics_out != nullptr)
        MetricsLine("stream", trainer_->model().name())
            .Int("events", w.last_event + 1)
            .Int("window_first_event", w.first_event)
            .Int("examples", w.examples)
            .Decimals("auc", w.auc, 6)
            .Decimals("logloss", w.logloss, 6)
            .Int("step", w.step)
            .Decimals("elapsed_s", w.seconds, 3)
            .Decimals("examples_per_s", ex_s, 1)
            .WriteTo(sinks.metrics_out);
    }
    return Status();
  };

  const auto publish = [&]() -> Status {
    if (unpublished.empty()) return Status();
    const auto& newest = unpublished.back();
    if (publisher_) IPS_RETURN_IF_ERROR(publisher_(trainer_->steps(), newest.first, newest.second));
    const double now = StreamNowSeconds();
    for (const auto& ev : unpublished) freshness.Add(now - ev.second);
    unpublished.clear();
    ++res.publishes;
    last_publish_step = trainer_->steps();
    last_publish_time = now;
    return Status();
  };

  const auto train_batch = [&]() -> Status {
    if (batch.size == 0) return Status();
    const CtrBatchView view = batch.View();
    // Prequential: score the rows before the model sees their labels.
    IPS_RETURN_IF_ERROR(trainer_->PredictLogits(view, logits.data()));
    for (int r = 0; r < batch.size; ++r) {
      probs[r] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(logits[r]))));
      const int64_t w = batch.event_index[r] / o_.window_events;
      if (w != window_id) {
        IPS_RETURN_IF_ERROR(close_window());
        window_id = w;
        window_first = batch.event_index[r];
      }
      window_last = batch.event_index[r];
      IPS_RETURN_IF_ERROR(window.Add(probs[r], batch.label[r], batch.user[r]));
    }
    IPS_ASSIGN_OR_RETURN(const double loss, trainer_->Step(view));
    loss_sum += loss;
    ++steps_run;
    res.examples += batch.size;
    unpublished.insert(unpublished.end(), batch_events.begin(), batch_events.end());
    batch_events.clear();
    batch.Clear();
    if (o_.publish_every_steps > 0 &&
        trainer_->steps() - last_publish_step >= o_.publish_every_steps)
      IPS_RETURN_IF_ERROR(publish());
    return Status();
  };

  const int rows_per_event = builder_->rows_per_event();
  const double inf = std::numeric_limits<double>::infinity();
  while (true) {
    double deadline = inf;
    if (batch.size > 0 && o_.max_batch_delay_s > 0)
      deadline = batch_first_read + o_.max_batch_delay_s;
    if (o_.publish_every_s > 0 && !unpublished.empty())
      deadline = std::min(deadline, last_publish_time + o_.publish_every_s);
    StreamEvent e;
    Status source_status;
    const EventQueue::Got got = queue.Pop(deadline, &e, &source_status);
    if (got == EventQueue::Got::kEnd) {
      if (!source_status.ok()) {
        // Every event before the source's error is valid and the model is between steps: train
        // and publish them as at a normal end, so a long stream ended by one bad line (or a read
        // error) does not lose what it learnt since the last publish. Then report the error.
        Status s = train_batch();
        if (s.ok()) s = publish();
        if (s.ok()) s = close_window();
        std::string note;
        if (!s.ok()) {
          note = " (the events before it were not all trained and published: " + s.ToString() + ")";
        } else if (res.events > 0) {
          note = " (the " + std::to_string(res.events) + " events before it were " +
                 (publisher_ ? "trained and published)" : "trained)");
        }
        return Status(source_status.code(), source_status.message() + note);
      }
      break;
    }
    if (got == EventQueue::Got::kEvent) {
      if (batch.capacity - batch.size < rows_per_event) IPS_RETURN_IF_ERROR(train_batch());
      if (batch.size == 0) batch_first_read = e.read_time;
      IPS_RETURN_IF_ERROR(builder_->Add(e, &batch).status());
      batch_events.emplace_back(e.index, e.read_time);
      ++res.events;
    }
    const double now = StreamNowSeconds();
    // A partial batch is trained only when the queue ran dry (a timeout): while events are
    // waiting (a backlog), batches fill up, or a lagging trainer would step on tiny batches.
    if (got == EventQueue::Got::kTimeout && batch.size > 0 && o_.max_batch_delay_s > 0 &&
        now >= batch_first_read + o_.max_batch_delay_s)
      IPS_RETURN_IF_ERROR(train_batch());
    if (o_.publish_every_s > 0 && now - last_publish_time >= o_.publish_every_s)
      IPS_RETURN_IF_ERROR(publish());
    if (o_.max_events > 0 && res.events >= o_.max_events) break;
  }
  IPS_RETURN_IF_ERROR(train_batch());
  IPS_RETURN_IF_ERROR(publish());
  IPS_RETURN_IF_ERROR(close_window());

  res.seconds = StreamNowSeconds() - start;
  res.steps = steps_run;
  res.mean_loss = steps_run > 0 ? loss_sum / steps_run : std::nan("");
  res.events_per_s = res.events / std::max(1e-9, res.seconds);
  res.examples_per_s = res.examples / std::max(1e-9, res.seconds);
  res.freshness_p50_s = freshness.Quantile(0.5);
  res.freshness_p99_s = freshness.Quantile(0.99);
  res.freshness_max_s = freshness.max();
  const UserHistoryStore& h = builder_->histories();
  res.history_users = h.users();
  res.history_evictions = h.evictions();
  res.history_memory_bytes = h.MemoryBytes();
  res.history_memory_bound = UserHistoryStore::MemoryBound(h.max_len(), h.max_users());
  res.pool_items = builder_->pool_size();
  res.bad_lines = source->bad_lines();
  res.rotations = source->rotations();
  if (show_progress && !res.windows.empty())
    progress.Finish("auc=" + Fixed(res.windows.back().auc, 4));
  return res;
}

}  // namespace ips
