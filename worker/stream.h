// Streaming training (`ips train --stream SOURCE`): a model that keeps training on an append-only
// event log while it grows, so that it tracks users' drifting interests.
//
//   EventStreamSource     tails the canonical event TSV (worker/events.h) from a growing file
//                         (tail -F: following the name across rotations) or a pipe/stdin, one
//                         Event per complete line, stamped with the steady-clock time the line was
//                         read;
//   UserHistoryStore      each user's last max_len (item, category) pairs, at most max_users users
//                         (least recently active evicted whole): the only per-user state, bounded;
//   StreamExampleBuilder  one event -> one positive (history before the event, item, 1) plus k
//                         negatives drawn uniformly from the items seen so far (never the
//                         positive), then the event joins the user's history;
//   StreamTrainer         batches the examples in the trainer's CTR layout, scores every batch
//                         BEFORE training on it (prequential evaluation: windowed AUC on events the
//                         model has not seen yet), calls Trainer::Step, and publishes through a
//                         caller-supplied hook every N steps / seconds, measuring freshness (time
//                         from an event's line being read to the end of the first publish that
//                         includes an update from it).
//
// This module owns the streaming data path and its measurements. It does not own the model math
// (models/), the rows (the EmbeddingStore behind the Trainer), or what a publish writes: that is
// the StreamPublisher callback (e.g. a delta bundle that `ips serve` reloads).
//
// Every event is a positive: the event log records interactions (views included), and the
// negatives are the items the user did not interact with at that moment. Ids must fit in 32 bits
// (the trainer's key width); a larger id is a bad line, like any other parse error.
#ifndef IPS_WORKER_STREAM_H_
#define IPS_WORKER_STREAM_H_

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "worker/events.h"
#include "worker/metrics.h"
#include "worker/trainer.h"

namespace ips {

// Seconds on the steady clock since an arbitrary (process-wide) origin: the one clock of read
// times, publish times and freshness.
double StreamNowSeconds();

// One event of the stream and where it came from.
struct StreamEvent {
  Event event;
  int64_t index = 0;     // 0-based position among the stream's events (blank lines skipped)
  int64_t file = 0;      // which file of a followed path: 0, then +1 at each rotation followed
  int64_t line = 0;      // 1-based line number in that file (in the source for a pipe)
  double read_time = 0;  // StreamNowSeconds() when the line's last byte was read
};

struct EventSourceOptions {
  // Files: at end of file wait for more data (tail -f) instead of ending. Pipes (stdin) always
  // end when the writer closes them.
  bool follow = true;
  // Waiting at end of file: sleeps that double from poll_min_s up to poll_max_s while no data
  // arrives (reset by any new data). Never a busy loop.
  double poll_min_s = 0.001;
  double poll_max_s = 0.05;
  // With follow: end the stream after this many seconds without new data (0 = never; then only
  // Stop() or a signal ends it).
  double idle_timeout_s = 0;
  // A line longer than this is an error (protects memory against a file without newlines).
  int64_t max_line_bytes = 1 << 20;
  // Rotation of a followed path (see EventStreamSource): the old file is left for the new one
  // once it has been read to its end and nothing was appended to it for this long since the
  // rotation was seen (its writer may not have reopened the path yet). 0 = at once.
  double rotate_grace_s = 1.0;
  // Malformed lines (a field that does not parse, an id >= 2^32) skipped before one is an error
  // (`ips data convert --max_bad_records`' policy): each skipped line is logged as
  // "warning: skipping bad line SOURCE:LINE: FIELD: ..." and counted (bad_lines()); the
  // max_bad_records+1-th fails the stream. 0 = the first bad line fails it. A line longer than
  // max_line_bytes, a gzip stream and read errors are never skipped.
  int64_t max_bad_records = 0;
  // Where the source's one-line notices go (a bad line skipped, a rotation followed, the followed
  // path gone), without a trailing newline. Empty: standard error. Called on Next()'s thread.
  std::function<void(const std::string&)> log;
};

// Reads events from a growing file or a pipe. A partial last line (no "\n" yet) is kept until its
// newline arrives; at a real end (a non-followed file's EOF, a closed pipe, a rotated-away file
// read to its end) an unterminated last line is parsed like any other, while a followed file that
// stops (Stop, idle timeout) leaves it unread (pending_bytes() says how much). Blank lines (and a
// trailing "\r") are ignored, and so is a UTF-8 byte order mark (EF BB BF) at the very start of
// a file (or of a pipe), as `ips data convert` ignores it; anywhere else it is part of the line.
//
// Rotation (a followed file opened by path, as `tail -F` and log shippers do it): when the path
// names another file (its device/inode changed: `mv log log.1` and a new `log`), the open file is
// read to its end first (including what the writer appends to it until it reopens the path, and
// its unterminated last line, as at a real end), then the new file from its start, with one
// notice ("...was rotated..."); StreamEvent::file counts the files, line numbers restart at 1.
// The old file is left once a read that began after the new file was seen returned nothing and
// nothing more arrived for rotate_grace_s (or the stream would end idle); the new file is held
// open from the moment it is seen, and holding the old one open keeps its inode from being
// reused: every event is read once, in file order. (Bytes appended to the old file after it was
// left are not read, as with tail -F.) While the path does not exist (renamed, not yet
// recreated; or deleted) the open file is still followed and the name is looked for at every
// wait; idle_timeout_s bounds the wait as on any file. The check is one stat() per wait at the
// end of the data, never while data is flowing. Error messages name where the line's file is
// now: the path, or for the old file after its rename, its new name (/proc/self/fd), e.g.
// "/logs/events.tsv.1:5001: item".
//
// Errors (the stream then stops for good; policy: the caller exits non-zero):
//   INVALID_ARGUMENT "SOURCE:LINE: FIELD: expected ... (got '...')" for a bad line
//   (ParseEventLine's fields, or an id >= 2^32) beyond max_bad_records, or for a line longer than
//   max_line_bytes;
//   DATA_LOSS naming the source for a read error or a file truncated in place while being read
//   (e.g. copytruncate: the bytes already read no longer exist): one that shrank below what was
//   read, and one written again past it (the bytes just before the read position are compared,
//   at every read and every wait, with those read there);
//   NOT_FOUND / FAILED_PRECONDITION when the path is rotated to a file that cannot be opened or is
//   not a regular file.
//
// Thread safety: Next() from one thread; Stop() from any thread (and from a signal handler via
// RequestStopFromSignal, which only sets an atomic flag checked at every wake-up).
class EventStreamSource {
 public:
  // `path` "-" reads standard input. NOT_FOUND naming the path if it cannot be opened.
  static StatusOr<std::unique_ptr<EventStreamSource>> Open(const std::string& path,
                                                           const EventSourceOptions& options);
  // Reads an already open descriptor (a pipe in tests); takes ownership when `owned`. `name` is
  // the source's name in messages.
  static std::unique_ptr<EventStreamSource> FromFd(int fd, bool owned, std::string name,
                                                   const EventSourceOptions& options);
  ~EventStreamSource();
  EventStreamSource(const EventStreamSource&) = delete;
  EventStreamSource& operator=(const EventStreamSource&) = delete;

  // Blocks until the next event (true), the end of the stream (false) or an error. After false or
  // an error every further call returns the same.
  StatusOr<bool> Next(StreamEvent* out);
  // Ends the stream: a blocked Next() returns false within poll_max_s (at most 0.1 s on a pipe).
  void Stop();

  const std::string& name() const { return name_; }
  int64_t lines() const { return line_; }        // lines returned or skipped so far, this file
  int64_t events() const { return events_; }     // events returned so far
  int64_t bytes() const { return bytes_read_; }  // bytes read from the source (all its files)
  int64_t pending_bytes() const { return static_cast<int64_t>(end_ - begin_); }
  // Malformed lines skipped under max_bad_records, and rotations followed. Any thread.
  int64_t bad_lines() const { return bad_lines_.load(std::memory_order_relaxed); }
  int64_t rotations() const { return rotations_.load(std::memory_order_relaxed); }

 private:
  EventStreamSource(int fd, bool owned, std::string name, const EventSourceOptions& options);
  // Reads more bytes into buf_ (waiting per the options). Returns false at the end of the stream.
  StatusOr<bool> Fill();
  // At the end of the open file's data: does the followed path still name it? Sets next_fd_ when
  // it names another file now (opened, so that file cannot go away before it is read).
  Status CheckPath();
  // Leaves the finished old file for next_fd_.
  void SwitchToNextFile();
  // A regular file: DATA_LOSS if the open file no longer holds what was read from it (truncated
  // in place): it is shorter than the read position, or the bytes just before that position
  // (tail_) differ from those read there (truncated and written again past the position).
  Status CheckNotTruncated() const;
  // Remembers the last bytes read (tail_) after a read of `n` bytes into buf_ at end_.
  void KeepTail(size_t n);
  // The name of the open file in messages: the path while it names this file, else where the
  // file is now.
  std::string FileName() const;
  void Log(const std::string& line) const;
  bool StopRequested() const;
  // Waits up to `seconds` or until Stop().
  void Sleep(double seconds);

  int fd_;
  bool owned_;
  bool regular_file_ = false;
  std::string name_;
  std::string path_;  // the followed path (Open of a file); empty: no rotation to follow
  dev_t dev_ = 0;     // identity of the open file
  ino_t ino_ = 0;
  EventSourceOptions o_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;  // unread bytes are buf_[begin_, end_)
  bool eof_ = false;            // the source ended (no more bytes will come)
  bool ended_ = false;          // Next() returned false
  Status error_;                // sticky error
  int64_t line_ = 0, events_ = 0, bytes_read_ = 0;
  int64_t file_bytes_ = 0;  // bytes read from the open file
  // The open file's offset where reading began (a descriptor may be passed in at another
  // position than 0): the read position is start_offset_ + file_bytes_.
  int64_t start_offset_ = 0;
  // The last tail_len_ bytes read from the open file (those before the read position), to tell
  // a file truncated in place and written again past the position (CheckNotTruncated).
  static constexpr int kTailBytes = 64;
  char tail_[kTailBytes] = {};
  int tail_len_ = 0;
  bool read_from_file_start_ = true;  // the open file is read from byte 0 (its BOM is skipped)
  int64_t file_index_ = 0;            // StreamEvent::file of the open file
  int next_fd_ = -1;                  // the file the path names now (rotation seen), owned
  double rotation_seen_at_ = 0;       // when next_fd_ was opened
  bool old_file_done_ = false;        // the open file is read to its end and next_fd_ is next
  bool path_gone_ = false;            // the path did not exist at the last check (noticed once)
  std::atomic<int64_t> bad_lines_{0}, rotations_{0};
  double last_read_time_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // Sleep() waits on it; Stop() notifies
  bool stop_ = false;           // guarded by mu_
};

// Asks every EventStreamSource of the process to stop (async-signal-safe: sets an atomic flag
// that sources check whenever they wake up). For a SIGINT/SIGTERM handler of `ips train --stream`.
void RequestStreamStopFromSignal();
// Clears the flag (tests, or a second run in the same process).
void ClearStreamStopRequest();

// Each user's most recent history, bounded.
//
// A user's history is a ring of its last max_len (item, category) pairs, oldest first when read.
// At most max_users users are held; adding a new user beyond that evicts the least recently
// appended-to user entirely (a returning evicted user starts with an empty history, as a new one).
// Memory: every slot is allocated once on first use, so MemoryBytes() never exceeds
// MemoryBound(max_len, max_users) (both count the history arrays, the slot bookkeeping and the
// hash map's nodes and buckets).
// Thread safety: none.
class UserHistoryStore {
 public:
  // max_len >= 1 and max_users >= 1 (programmer errors otherwise: CHECK).
  UserHistoryStore(int max_len, int64_t max_users);

  // Copies the user's history, oldest first, into items[0, n) and cats[0, n) (each needs max_len
  // entries) and returns n (0 for an unknown user). Does not change the recency order.
  int Get(uint64_t user, uint32_t* items, uint32_t* cats) const;
  // Appends one pair to the user's history (dropping its oldest beyond max_len) and makes the
  // user the most recent; may evict the least recent user.
  void Append(uint64_t user, uint32_t item, uint32_t cat);

  int max_len() const { return max_len_; }
  int64_t max_users() const { return max_users_; }
  int64_t users() const { return static_cast<int64_t>(index_.size()); }
  int64_t evictions() const { return evictions_; }
  int64_t MemoryBytes() const;
  static int64_t MemoryBound(int max_len, int64_t max_users);

 private:
  struct Slot {
    uint64_t user = 0;
    int32_t head = 0;  // position of the oldest entry in the ring
    int32_t len = 0;
    int32_t prev = -1, next = -1;  // recency list: head_ = most recent
  };
  void Unlink(int32_t s);
  void PushFront(int32_t s);

  int max_len_;
  int64_t max_users_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> items_, cats_;  // [slots x max_len]
  std::unordered_map<uint64_t, int32_t> index_;
  int32_t mru_ = -1, lru_ = -1;
  int64_t evictions_ = 0;
};

// Examples in the trainer's CTR layout (worker/trainer.h CtrBatchView: [B x T] histories
// left-padded with 0), plus where each row came from. Owns its arrays, sized at construction.
struct StreamBatch {
  StreamBatch(int capacity, int max_len, bool aux_negatives);
  int capacity = 0;
  int max_len = 0;
  int size = 0;
  std::vector<uint32_t> hist_item, hist_cat;  // [capacity x max_len]
  std::vector<uint32_t> neg_item, neg_cat;    // [capacity x max_len] when aux_negatives, else empty
  std::vector<int32_t> length;
  std::vector<uint32_t> item, cat;
  std::vector<float> label;
  std::vector<uint64_t> user;
  std::vector<int64_t> event_index;  // the StreamEvent::index each row was built from
  void Clear() { size = 0; }
  CtrBatchView View() const;  // the first `size` rows
};

struct StreamExampleOptions {
  int max_len = 50;   // history length T (the model's max_len)
  int negatives = 1;  // k sampled negatives per event
  int64_t max_users = 1 << 20;
  // The pool negatives are drawn from: every distinct item seen so far, up to this many; beyond
  // it a uniform sample of them (reservoir sampling over distinct items).
  int64_t max_items = 1 << 22;
  // Fill StreamBatch::neg_item/neg_cat (DIEN's auxiliary negatives): one pool item per valid
  // history position, never that position's own item when the pool allows.
  bool aux_negatives = false;
  uint64_t seed = 0;
};

// Builds examples from events in stream order. Deterministic: the same events and options give
// the same rows. Thread safety: none.
class StreamExampleBuilder {
 public:
  // INVALID_ARGUMENT naming the field for max_len < 1, negatives < 0, max_users < 1,
  // max_items < 2.
  static StatusOr<std::unique_ptr<StreamExampleBuilder>> Create(const StreamExampleOptions& o);

  int rows_per_event() const { return 1 + o_.negatives; }
  // Appends the event's rows to *batch: the positive, then min(k, distinct pool items other than
  // the positive) negatives (none for the very first event). Returns the number of rows added.
  // FAILED_PRECONDITION (nothing added) if the batch lacks room for rows_per_event() rows or its
  // max_len differs.
  StatusOr<int> Add(const StreamEvent& e, StreamBatch* batch);

  const UserHistoryStore& histories() const { return histories_; }
  int64_t pool_size() const { return static_cast<int64_t>(pool_.size()); }
  int64_t items_seen() const { return items_seen_; }
  // Category of a pool item (the latest seen), 0 if the item is not in the pool.
  uint32_t PoolCategory(uint32_t item) const;
  // The pool's item -> category map as a dense array indexed by item id (0 for items not in the
  // pool), for a serving bundle. nullptr when the ids are too sparse for a dense array (the
  // largest id above 16 x the pool size + 2^20).
  std::shared_ptr<const std::vector<uint32_t>> PoolCategoryMap() const;

 private:
  explicit StreamExampleBuilder(const StreamExampleOptions& o);
  // Adds (or refreshes) the item in the negative pool.
  void AddToPool(uint32_t item, uint32_t cat);
  // A pool index uniformly among those whose item != `exclude` (pool_.size() must allow it).
  size_t DrawOther(uint32_t exclude);

  StreamExampleOptions o_;
  UserHistoryStore histories_;
  Rng rng_;
  struct PoolEntry {
    uint32_t item, cat;
  };
  std::vector<PoolEntry> pool_;
  std::unordered_map<uint32_t, uint32_t> pool_index_;  // item -> position in pool_
  int64_t items_seen_ = 0;                             // distinct items offered to the pool
  std::vector<uint32_t> hist_items_, hist_cats_;       // scratch [max_len]
};

// Publishes the model after `step` steps; every event with index <= newest_event_index has been
// trained on. newest_event_read_time is that event's StreamEvent::read_time. Called on Run()'s
// thread between steps (training waits for it), only when events were trained since the last
// call. A non-OK status stops the stream with that error. An empty publisher makes publishes
// no-ops that still mark the freshness points.
using StreamPublisher =
    std::function<Status(int64_t step, int64_t newest_event_index, double newest_event_read_time)>;

struct StreamTrainerOptions {
  int batch_size = 256;  // rows per step (a batch is cut early to keep an event's rows together)
  StreamExampleOptions examples;
  // Publish after every publish_every_steps steps and/or publish_every_s seconds of the stream
  // (0 = not by that criterion; both 0 = only the final publish at the end of the stream).
  int64_t publish_every_steps = 0;
  double publish_every_s = 0;
  // When no event is waiting, a batch whose first event was read this long ago is trained
  // partially filled, so a slow stream is not held back by the batch size (0 = wait until full or
  // the end). While events are queued (a backlog), batches are always filled.
  double max_batch_delay_s = 0.5;
  // Prequential windows: window w holds the examples of events [w, w+1) * window_events.
  int64_t window_events = 10000;
  // Stop after this many events (0 = until the source ends).
  int64_t max_events = 0;
  // Events read ahead by the reader thread (back-pressure on the source beyond this).
  int64_t queue_events = 1 << 16;
  int log_every_windows = 1;  // progress line / metrics JSON every N windows
};

// One prequential window: every example of events [first_event, last_event] was scored before
// the model trained on it.
struct StreamWindow {
  int64_t first_event = 0, last_event = 0;
  int64_t examples = 0;
  double auc = 0;  // NaN if one class is missing
  double logloss = 0;
  double seconds = 0;  // since the start of the run, when the window closed
  int64_t step = 0;    // trainer steps when the window closed
};

struct StreamTrainResult {
  int64_t events = 0, examples = 0, publishes = 0;
  // The source's malformed lines skipped (EventSourceOptions::max_bad_records) and rotations
  // followed.
  int64_t bad_lines = 0, rotations = 0;
  int64_t steps = 0;   // steps of this run (Trainer::steps() counts every run)
  double seconds = 0;  // from Run() to the end of the final publish
  double events_per_s = 0, examples_per_s = 0;
  double mean_loss = 0;               // mean step loss over the run
  std::vector<StreamWindow> windows;  // closed windows in order (the last may be partial)
  // Freshness over every trained event: seconds from its read to the end of the first publish
  // that included it (p50/p99 within 1%). NaN when nothing was published. On a backlog (a
  // complete file, a trainer slower than the stream) this includes the time events waited in the
  // read-ahead queue, as it should: it is how stale the published model is.
  double freshness_p50_s = 0, freshness_p99_s = 0, freshness_max_s = 0;
  int64_t history_users = 0, history_evictions = 0;
  int64_t history_memory_bytes = 0, history_memory_bound = 0;
  int64_t pool_items = 0;
};

// Reads a source to its end (or max_events), training `trainer` on every event's examples.
// Thread safety: Run from one thread; a reader thread owned by the call reads the source ahead
// (so read times are arrival times even while a step runs).
class StreamTrainer {
 public:
  // `trainer` is not owned and must outlive this. INVALID_ARGUMENT for bad options (naming the
  // field), including examples.max_len != the model's max_len and a batch_size outside
  // [1 + negatives, the model's max_batch]. examples.aux_negatives is switched on when the model
  // needs auxiliary negatives (DIEN).
  static StatusOr<std::unique_ptr<StreamTrainer>> Create(const StreamTrainerOptions& options,
                                                         Trainer* trainer,
                                                         StreamPublisher publisher);

  // Runs until the source ends (false from Next), max_events, or an error: the source's (bad
  // line: its message), the trainer's, the metrics' or the publisher's. The examples built so far
  // are trained and published before a normal return, and before returning a source's error (a
  // bad line, a read error: every event before it is valid and the model is between steps, so the
  // publish is an ordinary one; the error's message then ends with "(the N events before it were
  // trained and published)"). After the trainer's, the metrics' or the publisher's error nothing
  // more is trained or published.
  // sinks.progress gets a progress line, sinks.metrics_out one "stream" line per logged window
  // (worker/metrics_line.h: {"phase":"stream","model":..,"events":..,"auc":..,...}; an undefined
  // AUC, a window with one class, is null) and none at the end (the caller writes that).
  // `source` is not owned; Run stops it (Stop) before returning.
  StatusOr<StreamTrainResult> Run(EventStreamSource* source, const RunSinks& sinks);

  const StreamExampleBuilder& builder() const { return *builder_; }

 private:
  StreamTrainer(const StreamTrainerOptions& o, Trainer* trainer, StreamPublisher publisher,
                std::unique_ptr<StreamExampleBuilder> builder);

  StreamTrainerOptions o_;
  Trainer* trainer_;
  StreamPublisher publisher_;
  std::unique_ptr<StreamExampleBuilder> builder_;
};

}  // namespace ips

#endif  // IPS_WORKER_STREAM_H_
