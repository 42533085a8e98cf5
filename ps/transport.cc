#include "ps/transport.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <utility>

#include "common/result_line.h"

namespace ips::ps {
namespace {

constexpr int kTagRequest = 1;
constexpr int kTagReply = 2;
constexpr int kTagControl = 3;
constexpr size_t kHeaderBytes = 16;  // id u64, kind u32, meta_len u32
// Sends at least this large wake the sender's own comm thread: a rendezvous transfer progresses
// only inside MPI calls of both sides. Smaller (eager) sends complete when posted.
constexpr size_t kWakeOwnThreadBytes = 4096;

size_t PayloadOffset(size_t meta_len) { return (kHeaderBytes + meta_len + 7) & ~size_t{7}; }

constexpr size_t kBellPageBytes = 4096;

// Polling while traffic is recent (see the header): at most every kActiveSleepUs, or every
// kActiveSleepRungUs when every peer rings this rank's bells, for kActiveWindowUs after the last
// request or reply moved.
constexpr int64_t kActiveSleepUs = 20, kActiveSleepRungUs = 200, kActiveWindowUs = 20000;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// False when the process is gone or a zombie (killed, not yet reaped).
bool ProcessAlive(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  const char state = line[close + 2];
  return state != 'Z' && state != 'X';
}

// Each rank's "ending the job" mark: a word of its bell page, in shared memory that the other
// ranks on its host map. A rank ending the job sets its own before it says anything, so that
// the others on the host can tell a rank that ended the job from one that died, and see which
// rank prints the job's RESULT line.
enum EndingMark : uint32_t {
  kRunning = 0,
  kEndingQuietly = 1,   // ending the job; another rank prints the RESULT line (or may)
  kEndingPrinting = 2,  // ending the job and printing its RESULT line
};

}  // namespace

// The marks of the live Transport (registered by Create, removed by its destructor): this
// process's own and its peers' (null where not mapped: another host, no shared memory).
struct EndingMarks {
  std::atomic<uint32_t>* own = nullptr;
  std::vector<const std::atomic<uint32_t>*> peers;
};

namespace {

std::mutex g_marks_mu;
EndingMarks* g_marks = nullptr;  // guarded by g_marks_mu

void SetOwnMark(EndingMark mark) {
  std::lock_guard<std::mutex> lock(g_marks_mu);
  if (g_marks != nullptr && g_marks->own != nullptr) g_marks->own->store(mark);
}

bool APeerIsPrinting() {
  std::lock_guard<std::mutex> lock(g_marks_mu);
  if (g_marks == nullptr) return false;
  for (const std::atomic<uint32_t>* mark : g_marks->peers)
    if (mark != nullptr && mark->load() == kEndingPrinting) return true;
  return false;
}

constexpr int kAbortExitCode = 1;  // mpirun's exit code after MPI_Abort(..., 1)

// Ends the job; see AbortJob. `dead_rank` < 0: this rank's own failure. `dead_rank_ended_job`:
// the dead rank's process is gone because it ended the job itself (its mark was set): it said
// why, and the RESULT line is printed by it or by another, so this rank follows silently.
[[noreturn]] void EndJob(const std::string& message, int dead_rank, bool dead_rank_ended_job) {
  static std::atomic<bool> ending{false};
  if (ending.exchange(true)) {
    for (;;) pause();  // the first caller's MPI_Abort ends this process
  }
  if (dead_rank_ended_job) {
    SetOwnMark(kEndingQuietly);
    MPI_Abort(MPI_COMM_WORLD, kAbortExitCode);
  }
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  if (!PrintsResultLine()) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const int result_rank = ResultLineRank();
    const int backup = result_rank == 0 ? 1 : 0;
    if (!(dead_rank == result_rank && rank == backup)) {
      // The rank that prints the job's RESULT line (worker 0) may be ending the job too: for
      // the same failure (one every worker hits alike) or having seen the same rank die. Its line
      // should be the only one, and its MPI_Abort gets this rank killed; it is given a grace
      // period, in which this rank also follows at once any rank on this host that marks itself
      // printing. After it (the failure is this rank's alone, or worker 0 cannot print), this
      // rank prints the line; the period grows with the rank, so that of several such ranks the
      // lowest prints. Aborting at once would get worker 0 killed before it prints. When worker 0
      // is the rank that died, the lowest other rank (the backup) prints at once.
      SetOwnMark(kEndingQuietly);
      const auto deadline = std::chrono::steady_clock::now() +
                            std::chrono::milliseconds(1000 + 200 * std::min(rank, 40));
      while (std::chrono::steady_clock::now() < deadline) {
        if (APeerIsPrinting()) MPI_Abort(MPI_COMM_WORLD, kAbortExitCode);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    SetPrintsResultLine(true);
  }
  SetOwnMark(kEndingPrinting);
  // The RESULT line's error is the message without the "ips: " that names the program on stderr.
  constexpr std::string_view kProgram = "ips: ";
  const std::string_view text(message);
  NoteResultError(std::string(
      text.substr(0, kProgram.size()) == kProgram ? text.substr(kProgram.size()) : text));
  FinishRunResult(kAbortExitCode);
  MPI_Abort(MPI_COMM_WORLD, kAbortExitCode);
  std::abort();  // MPI_Abort does not return; keeps [[noreturn]] honest
}

}  // namespace

void AbortJob(const std::string& message) { EndJob(message, -1, false); }

struct Transport::Ticket::Slot {
  int peer = -1;
  std::mutex mu;
  bool done = false;  // guarded by mu
  Frame reply;
  Status error;
};

// Lives in shared memory when peers on this host ring it: plain lock-free atomics, the same in
// every process. One cache line each, so ringing one does not disturb the other's sleeper.
struct alignas(64) Transport::Bell {
  std::atomic<uint32_t> seq{0};       // bumped by every ring; the futex word
  std::atomic<uint32_t> sleepers{0};  // threads in SleepOn: ringers skip the syscall when 0
  // Request bell only: the owning process's EndingMark.
  std::atomic<uint32_t> ending_mark{kRunning};
};

static_assert(sizeof(std::atomic<uint32_t>) == 4, "futex words are 32-bit");

// Wakes every sleeper of `bell` (if any) after bumping it. Non-private futex operations: the
// word may be shared between processes.
void Transport::Ring(Bell* bell) {
  bell->seq.fetch_add(1, std::memory_order_seq_cst);
  if (bell->sleepers.load(std::memory_order_seq_cst) != 0) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell->seq), FUTEX_WAKE, INT_MAX, nullptr,
            nullptr, 0);
  }
}

// Sleeps until `bell` moves past `seen` (a ring since the caller read it returns at once) or
// for `us` microseconds. seq_cst on both sides: either the ringer sees this sleeper, or the
// kernel's compare sees the ring.
void Transport::SleepOn(Bell* bell, uint32_t seen, int64_t us) {
  bell->sleepers.fetch_add(1, std::memory_order_seq_cst);
  if (bell->seq.load(std::memory_order_seq_cst) == seen) {
    timespec ts;
    ts.tv_sec = static_cast<time_t>(us / 1000000);
    ts.tv_nsec = static_cast<long>((us % 1000000) * 1000);  // NOLINT(runtime/int)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell->seq), FUTEX_WAIT, seen, &ts, nullptr, 0);
  }
  bell->sleepers.fetch_sub(1, std::memory_order_seq_cst);
}

// ---- Frame -------------------------------------------------------------------------------------

Frame Frame::Make(uint32_t kind, std::string_view meta, size_t payload_bytes) {
  Frame f;
  f.payload_offset_ = PayloadOffset(meta.size());
  f.size_ = f.payload_offset_ + payload_bytes;
  f.bytes_.reset(new char[f.size_]);
  const uint64_t id = 0;
  const uint32_t meta_len = static_cast<uint32_t>(meta.size());
  std::memcpy(f.bytes_.get(), &id, 8);
  std::memcpy(f.bytes_.get() + 8, &kind, 4);
  std::memcpy(f.bytes_.get() + 12, &meta_len, 4);
  if (!meta.empty()) std::memcpy(f.bytes_.get() + kHeaderBytes, meta.data(), meta.size());
  return f;
}

StatusOr<Frame> Frame::Adopt(std::unique_ptr<char[]> bytes, size_t size) {
  if (size < kHeaderBytes)
    return DataLossError("transport: frame of " + std::to_string(size) + " bytes < header");
  uint32_t meta_len;
  std::memcpy(&meta_len, bytes.get() + 12, 4);
  if (PayloadOffset(meta_len) > size)
    return DataLossError("transport: frame meta length " + std::to_string(meta_len) +
                         " exceeds its size " + std::to_string(size));
  Frame f;
  f.bytes_ = std::move(bytes);
  f.size_ = size;
  f.payload_offset_ = PayloadOffset(meta_len);
  return f;
}

uint64_t Frame::id() const {
  uint64_t id;
  std::memcpy(&id, bytes_.get(), 8);
  return id;
}
void Frame::set_id(uint64_t id) { std::memcpy(bytes_.get(), &id, 8); }
uint32_t Frame::kind() const {
  uint32_t k;
  std::memcpy(&k, bytes_.get() + 8, 4);
  return k;
}
std::string_view Frame::meta() const {
  uint32_t meta_len;
  std::memcpy(&meta_len, bytes_.get() + 12, 4);
  return std::string_view(bytes_.get() + kHeaderBytes, meta_len);
}

// ---- Helpers -----------------------------------------------------------------------------------

Status MpiStatus(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return InternalError(std::string(what) + ": " + std::string(text, len));
}

void SetFineTimerSlack() { prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); }

Status WaitWithoutSpinning(MPI_Request* request, const char* what, int max_sleep_us) {
  int idle = 0;
  while (true) {
    int flag = 0;
    IPS_RETURN_IF_ERROR(MpiStatus(MPI_Test(request, &flag, MPI_STATUS_IGNORE), what));
    if (flag) return Status::Ok();
    const int64_t us = std::min<int64_t>(max_sleep_us, int64_t{2} << std::min(idle, 12));
    ++idle;
    usleep(static_cast<useconds_t>(us));
  }
}

// ---- Transport ---------------------------------------------------------------------------------

StatusOr<std::unique_ptr<Transport>> Transport::Create(MPI_Comm comm, const Options& options) {
  std::unique_ptr<Transport> t(new Transport());
  t->options_ = options;
  SetFineTimerSlack();
  MPI_Request req;
  IPS_RETURN_IF_ERROR(MpiStatus(MPI_Comm_idup(comm, &t->comm_, &req), "MPI_Comm_idup"));
  IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Comm_idup"));
  MPI_Comm_rank(t->comm_, &t->rank_);
  MPI_Comm_size(t->comm_, &t->size_);
  if (!t->options_.role_of_rank.empty() &&
      static_cast<int>(t->options_.role_of_rank.size()) != t->size_)
    return InvalidArgumentError("transport: role_of_rank has " +
                                std::to_string(t->options_.role_of_rank.size()) + " entries for " +
                                std::to_string(t->size_) + " ranks");
  // Pids and host names, for the local liveness check.
  constexpr int kHostLen = 256;
  struct Ident {
    int pid;
    int bell_id;
    char host[kHostLen];
  };
  Ident mine{};
  mine.pid = static_cast<int>(getpid());
  mine.bell_id = t->CreateBells();
  gethostname(mine.host, kHostLen - 1);
  std::vector<Ident> all(t->size_);
  IPS_RETURN_IF_ERROR(MpiStatus(MPI_Iallgather(&mine, sizeof(Ident), MPI_BYTE, all.data(),
                                               sizeof(Ident), MPI_BYTE, t->comm_, &req),
                                "MPI_Iallgather(pids)"));
  IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Iallgather(pids)"));
  std::vector<int> bell_ids;
  for (const Ident& id : all) {
    t->pids_.push_back(id.pid);
    t->hosts_.emplace_back(id.host);
    bell_ids.push_back(id.bell_id);
  }
  IPS_RETURN_IF_ERROR(t->OpenPeerBells(bell_ids));
  t->ending_marks_ = std::make_unique<EndingMarks>();
  if (!t->owned_bells_) t->ending_marks_->own = &t->own_bells_[kRequestBell].ending_mark;
  for (int p = 0; p < t->size_; ++p)
    t->ending_marks_->peers.push_back(p != t->rank_ && t->peer_bells_[p] != nullptr
                                          ? &t->peer_bells_[p][kRequestBell].ending_mark
                                          : nullptr);
  {
    std::lock_guard<std::mutex> lock(g_marks_mu);
    g_marks = t->ending_marks_.get();
  }
  const int64_t now = NowUs();
  t->last_heard_us_.assign(t->size_, now);
  t->departed_.assign(t->size_, false);
  t->last_heartbeat_us_ = 0;
  t->last_pid_check_us_ = now;
  t->thread_ = std::thread([p = t.get()] { p->Loop(); });
  if (t->options_.watch_local_pids) {
    for (int p = 0; p < t->size_; ++p) {
      if (p == t->rank_ || t->hosts_[p] != t->hosts_[t->rank_]) continue;
      const int fd = static_cast<int>(syscall(SYS_pidfd_open, t->pids_[p], 0));
      if (fd >= 0) t->peer_pidfds_.push_back(fd);  // else (old kernel): the 100 ms check alone
    }
    t->exit_watch_stop_fd_ = eventfd(0, EFD_CLOEXEC);
    if (!t->peer_pidfds_.empty() && t->exit_watch_stop_fd_ >= 0)
      t->exit_watch_thread_ = std::thread([p = t.get()] { p->WatchPeerExits(); });
  }
  return t;
}

void Transport::WatchPeerExits() {
  std::vector<pollfd> fds;
  fds.push_back({exit_watch_stop_fd_, POLLIN, 0});
  for (int fd : peer_pidfds_) fds.push_back({fd, POLLIN, 0});
  while (fds.size() > 1) {
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;  // the 100 ms check still runs
    }
    if (fds[0].revents != 0) return;
    for (size_t i = 1; i < fds.size();) {
      if (fds[i].revents != 0) {
        peer_exited_.store(true);
        Ring(&own_bells_[kRequestBell]);
        fds[i] = fds.back();  // an exited process stays readable: stop watching it
        fds.pop_back();
      } else {
        ++i;
      }
    }
  }
}

Transport::~Transport() {
  if (thread_.joinable()) Shutdown();
  if (exit_watch_thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = write(exit_watch_stop_fd_, &one, sizeof(one));
    exit_watch_thread_.join();
  }
  if (exit_watch_stop_fd_ >= 0) close(exit_watch_stop_fd_);
  for (int fd : peer_pidfds_) close(fd);
  {
    std::lock_guard<std::mutex> lock(g_marks_mu);
    if (g_marks == ending_marks_.get()) g_marks = nullptr;
  }
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  if (!own_bell_name_.empty()) shm_unlink(own_bell_name_.c_str());
  for (void* m : mappings_) munmap(m, kBellPageBytes);
}

int Transport::CreateBells() {
  static_assert(2 * sizeof(Bell) <= kBellPageBytes, "a rank's bells fit one page");
  // The name must be unique on the host while it exists: pid + a per-process counter.
  static std::atomic<int> counter{0};
  const int id = counter.fetch_add(1);
  const std::string name = "/ips_transport_" + std::to_string(getpid()) + "_" + std::to_string(id);
  const int fd = options_.doorbells ? shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600) : -1;
  void* mem = MAP_FAILED;
  if (fd >= 0) {
    if (ftruncate(fd, kBellPageBytes) == 0)
      mem = mmap(nullptr, kBellPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED) shm_unlink(name.c_str());
  }
  if (mem == MAP_FAILED) {
    // No shared memory: local wake-ups only; peers' messages are found by polling.
    owned_bells_.reset(new Bell[2]);
    own_bells_ = owned_bells_.get();
    return -1;
  }
  mappings_.push_back(mem);
  own_bell_name_ = name;
  own_bells_ = new (mem) Bell[2];
  return id;
}

Status Transport::OpenPeerBells(const std::vector<int>& bell_ids) {
  peer_bells_.assign(size_, nullptr);
  peer_bells_[rank_] = own_bells_;
  int opened_all = bell_ids[rank_] >= 0 ? 1 : 0;
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    void* mem = MAP_FAILED;
    if (bell_ids[p] >= 0 && hosts_[p] == hosts_[rank_]) {
      const std::string name =
          "/ips_transport_" + std::to_string(pids_[p]) + "_" + std::to_string(bell_ids[p]);
      const int fd = shm_open(name.c_str(), O_RDWR, 0600);
      if (fd >= 0) {
        mem = mmap(nullptr, kBellPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
      }
    }
    if (mem == MAP_FAILED) {
      opened_all = 0;  // this peer (on another host, say) is found by polling
      continue;
    }
    mappings_.push_back(mem);
    peer_bells_[p] = static_cast<Bell*>(mem);
  }
  // Every rank learns whether all bells work everywhere (then the comm thread may poll less
  // often; see Loop). The all-reduce is also the barrier after which the names go (the mappings
  // stay), leaving nothing in /dev/shm.
  int all = 0;
  MPI_Request req;
  IPS_RETURN_IF_ERROR(MpiStatus(MPI_Iallreduce(&opened_all, &all, 1, MPI_INT, MPI_MIN, comm_, &req),
                                "MPI_Iallreduce(bells)"));
  IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Iallreduce(bells)"));
  all_peers_ring_ = all == 1;
  if (!own_bell_name_.empty()) {
    shm_unlink(own_bell_name_.c_str());
    own_bell_name_.clear();
  }
  return Status::Ok();
}

std::string Transport::Describe(int r) const {
  if (r >= 0 && r < static_cast<int>(options_.role_of_rank.size()))
    return "rank " + std::to_string(r) + " (" + options_.role_of_rank[r] + ")";
  return "rank " + std::to_string(r);
}

void Transport::Enqueue(int peer, int tag, Frame frame) {
  // The caller posts its own MPI_Isend (MPI_THREAD_MULTIPLE): no hand-off to the comm thread on
  // the request path, which only completes the send. Posting under out_mu_ keeps the sends of
  // one rank in a single order (MPI's non-overtaking rule then keeps them in order per peer).
  const bool large = frame.size() >= kWakeOwnThreadBytes;
  bool ok;
  bool pending = false;  // the send needs more MPI progress (the comm thread's)
  {
    std::lock_guard<std::mutex> l(out_mu_);
    MPI_Request req;
    const int rc =
        MPI_Isend(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, peer, tag, comm_, &req);
    if (tag != kTagControl) user_sends_ = true;
    ok = rc == MPI_SUCCESS;
    if (!ok) {
      failed_sends_.push_back(peer);
    } else {
      bytes_sent_.fetch_add(static_cast<int64_t>(frame.size()));
      messages_sent_.fetch_add(1);
      // An eager send is usually complete already: then the frame goes now, and the comm
      // thread has nothing to finish.
      int done = 0;
      if (!large) MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (!done) {
        sends_.push_back(PendingSend{req, std::move(frame)});
        pending = true;
      }
    }
  }
  // The peer's bell: its comm thread (requests) or its waiting threads (replies) wake now
  // instead of at their next poll.
  if (ok && peer != rank_ && peer_bells_[peer] != nullptr)
    Ring(&peer_bells_[peer][tag == kTagReply ? kReplyBell : kRequestBell]);
  // This rank's comm thread: to report a failed send, or to drive a transfer that did not
  // complete when posted (a large one, or a small one queued behind a full shared-memory FIFO).
  if (!ok || pending) Ring(&own_bells_[kRequestBell]);
}

void Transport::SetRequestHandler(std::function<void(Incoming)> handler) {
  std::lock_guard<std::mutex> l(handler_mu_);
  handler_ = std::move(handler);
  has_handler_.store(static_cast<bool>(handler_));
}

void Transport::Send(int peer, Frame frame) { Enqueue(peer, kTagRequest, std::move(frame)); }

void Transport::Reply(int peer, uint64_t request_id, Frame frame) {
  frame.set_id(request_id);
  Enqueue(peer, kTagReply, std::move(frame));
}

Transport::Ticket Transport::Request(int peer, Frame frame) {
  Ticket t;
  t.slot_ = std::make_shared<Ticket::Slot>();
  t.slot_->peer = peer;
  const uint64_t id = next_id_.fetch_add(1);
  frame.set_id(id);
  {
    std::lock_guard<std::mutex> l(tickets_mu_);
    if (!failure_.empty()) {
      t.slot_->done = true;
      t.slot_->error = UnavailableError(failure_);
      return t;
    }
    tickets_[id] = t.slot_;
  }
  Enqueue(peer, kTagRequest, std::move(frame));
  return t;
}

StatusOr<Frame> Transport::Wait(Ticket ticket, int timeout_ms) {
  if (!ticket.valid()) return InvalidArgumentError("transport: Wait on an invalid ticket");
  thread_local bool fine_slack = false;
  if (!fine_slack) {
    SetFineTimerSlack();
    fine_slack = true;
  }
  Ticket::Slot& s = *ticket.slot_;
  Bell* bell = &own_bells_[kReplyBell];
  const int64_t start = NowUs();
  const int64_t deadline = timeout_ms < 0 ? INT64_MAX : start + int64_t{timeout_ms} * 1000;
  int idle = 0;
  waiters_.fetch_add(1);
  struct Leave {
    std::atomic<int>* n;
    ~Leave() { n->fetch_sub(1); }
  } leave{&waiters_};
  // The waiting thread receives replies itself (any ticket's): the peer's ring wakes it, and no
  // hand-off through the comm thread (a second wake-up) sits on the reply path. The comm thread
  // still receives replies nobody waits for yet (prefetches) and rings this bell when it does.
  while (true) {
    const uint32_t seen = bell->seq.load(std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> l(s.mu);
      if (s.done) break;
    }
    if (!stopped_.load() && ReceiveOneReply()) continue;
    const int64_t now = NowUs();
    if (now >= deadline)
      return UnavailableError("transport: no reply from " + Describe(s.peer) + " within " +
                              std::to_string(timeout_ms) + " ms");
    if (now - start < options_.spin_us) continue;  // cores to spare: poll again at once
    // The ring wakes this thread at once; the timed polls back it up, as in the comm thread:
    // 2 us doubling to kActiveSleepRungUs (to kActiveSleepUs when some peer cannot ring, e.g.
    // one on another host) for kActiveWindowUs, then max_sleep_us. The short first sleeps also
    // make a quick reply cheaper to notice: on a VM, a timed wake of this (halted) vCPU costs
    // less than the cross-vCPU wake-up a ring sends (bench/mpi_ps_bench.cc, pull1_us).
    const int64_t cap = now - start >= kActiveWindowUs ? options_.max_sleep_us
                        : all_peers_ring_              ? kActiveSleepRungUs
                                                       : kActiveSleepUs;
    const int64_t us = std::min<int64_t>(int64_t{2} << std::min(idle, 14), cap);
    ++idle;
    SleepOn(bell, seen, std::min<int64_t>(deadline - now, us));
  }
  std::lock_guard<std::mutex> l(s.mu);
  if (!s.error.ok()) return s.error;
  return std::move(s.reply);
}

bool Transport::ReceiveOneReply() {
  int flag = 0;
  MPI_Message msg;
  MPI_Status st;
  // Twice: an unmatched probe runs MPI's progress, which may only then move an arrived message
  // to where the next probe matches it (Open MPI's ob1 does so).
  for (int attempt = 0; attempt < 2 && !flag; ++attempt)
    if (MPI_Improbe(MPI_ANY_SOURCE, kTagReply, comm_, &flag, &msg, &st) != MPI_SUCCESS)
      return false;
  if (!flag) return false;
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  std::unique_ptr<char[]> bytes(new char[std::max<size_t>(static_cast<size_t>(count), 1)]);
  if (static_cast<size_t>(count) < kWakeOwnThreadBytes) {
    // Small: the data is already here (eager).
    if (MPI_Mrecv(bytes.get(), count, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return false;
  } else {
    MPI_Request req;
    if (MPI_Imrecv(bytes.get(), count, MPI_BYTE, &msg, &req) != MPI_SUCCESS) return false;
    // A large reply moves in fragments that need MPI calls on both sides: test, and sleep
    // briefly in between (no spinning).
    int idle = 0;
    while (true) {
      int done = 0;
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (done) break;
      usleep(static_cast<useconds_t>(std::min(20, 2 << std::min(idle++, 4))));
    }
  }
  messages_received_.fetch_add(1);
  bytes_received_.fetch_add(count);
  StatusOr<Frame> frame = Frame::Adopt(std::move(bytes), static_cast<size_t>(count));
  if (!frame.ok()) {
    std::fprintf(stderr, "ips: %s: bad frame from %s: %s\n", Describe(rank_).c_str(),
                 Describe(st.MPI_SOURCE).c_str(), frame.status().ToString().c_str());
    return true;
  }
  DeliverReply(std::move(*frame));
  return true;
}

void Transport::DeliverReply(Frame frame) {
  std::shared_ptr<Ticket::Slot> slot;
  {
    std::lock_guard<std::mutex> l(tickets_mu_);
    auto it = tickets_.find(frame.id());
    if (it == tickets_.end()) return;  // abandoned ticket
    slot = std::move(it->second);
    tickets_.erase(it);
  }
  {
    std::lock_guard<std::mutex> l(slot->mu);
    slot->reply = std::move(frame);
    slot->done = true;
  }
  Ring(&own_bells_[kReplyBell]);
}

bool Transport::Receive(Incoming* out, int timeout_ms) {
  std::unique_lock<std::mutex> l(in_mu_);
  auto ready = [&] { return !inbox_.empty() || stopped_.load(); };
  if (timeout_ms < 0) {
    in_cv_.wait(l, ready);
  } else {
    in_cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), ready);
  }
  if (inbox_.empty()) return false;
  *out = std::move(inbox_.front());
  inbox_.pop_front();
  return true;
}

void Transport::Shutdown() {
  if (!thread_.joinable()) return;
  shutdown_requested_.store(true);
  Ring(&own_bells_[kRequestBell]);
  thread_.join();
  FailAllTickets("transport shut down");
  in_cv_.notify_all();
}

void Transport::FailAllTickets(const std::string& why) {
  std::unordered_map<uint64_t, std::shared_ptr<Ticket::Slot>> tickets;
  {
    std::lock_guard<std::mutex> l(tickets_mu_);
    if (failure_.empty()) failure_ = why;
    tickets.swap(tickets_);
  }
  for (auto& [id, slot] : tickets) {
    std::lock_guard<std::mutex> l(slot->mu);
    slot->done = true;
    slot->error = UnavailableError(why);
  }
  Ring(&own_bells_[kReplyBell]);
}

void Transport::DeclareDead(int peer, const std::string& why) {
  const std::string message =
      "ips: " + Describe(peer) + " " + why + "; " + Describe(rank_) + " is ending the job";
  // A peer on this host that marked its bell page ended the job itself (its MPI_Abort is what
  // ended its process): it said why and printed the job's RESULT line if it was its to print.
  const bool peer_ended_job = peer_bells_[peer] != nullptr &&
                              peer_bells_[peer][kRequestBell].ending_mark.load() != kRunning;
  EndJob(message, peer, peer_ended_job);
}

void Transport::Deliver(int source, int tag, std::unique_ptr<char[]> bytes, size_t size) {
  last_heard_us_[source] = NowUs();
  messages_received_.fetch_add(1);
  bytes_received_.fetch_add(static_cast<int64_t>(size));
  StatusOr<Frame> frame = Frame::Adopt(std::move(bytes), size);
  if (!frame.ok()) {
    std::fprintf(stderr, "ips: %s: bad frame from %s: %s\n", Describe(rank_).c_str(),
                 Describe(source).c_str(), frame.status().ToString().c_str());
    return;
  }
  if (tag == kTagControl) {
    if (frame->kind() == kFrameBye) departed_[source] = true;
    return;
  }
  user_traffic_ = true;
  if (tag == kTagReply) {
    DeliverReply(std::move(*frame));
    return;
  }
  Dispatch(Incoming{source, std::move(*frame)});
}

void Transport::Dispatch(Incoming in) {
  {
    std::lock_guard<std::mutex> l(handler_mu_);
    if (handler_) {
      handler_(std::move(in));
      return;
    }
  }
  {
    std::lock_guard<std::mutex> l(in_mu_);
    inbox_.push_back(std::move(in));
  }
  in_cv_.notify_one();
}

void Transport::CheckPeers() {
  const int64_t now = NowUs();
  // No heartbeats once this rank has said goodbye: peers no longer expect them.
  if (shutdown_phase_ == 0 && now - last_heartbeat_us_ >= int64_t{options_.heartbeat_ms} * 1000) {
    last_heartbeat_us_ = now;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || departed_[p]) continue;
      Enqueue(p, kTagControl, Frame::Make(kFrameHeartbeat, {}, 0));
    }
  }
  for (int p = 0; p < size_; ++p) {
    if (p == rank_ || departed_[p]) continue;
    if (now - last_heard_us_[p] > int64_t{options_.dead_after_ms} * 1000) {
      DeclareDead(p, "sent nothing for " + std::to_string(options_.dead_after_ms / 1000) +
                         " s (no heartbeat): it died or hangs");
    }
  }
  if (options_.watch_local_pids &&
      (peer_exited_.exchange(false) || now - last_pid_check_us_ >= 100000)) {
    last_pid_check_us_ = now;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || departed_[p] || hosts_[p] != hosts_[rank_]) continue;
      if (!ProcessAlive(pids_[p])) {
        DeclareDead(p,
                    "died (process " + std::to_string(pids_[p]) + " on " + hosts_[p] + " is gone)");
      }
    }
  }
}

bool Transport::Poll() {
  bool did = false;
  std::vector<int> failed;
  {
    std::lock_guard<std::mutex> l(out_mu_);
    failed.swap(failed_sends_);
    if (user_sends_) user_traffic_ = true;
    user_sends_ = false;
  }
  for (int peer : failed) DeclareDead(peer, "cannot be sent to (MPI_Isend failed)");
  // Requests that arrived before a handler was installed.
  if (has_handler_.load()) {
    std::deque<Incoming> queued;
    {
      std::lock_guard<std::mutex> l(in_mu_);
      queued.swap(inbox_);
    }
    for (Incoming& in : queued) Dispatch(std::move(in));
  }
  // While a thread waits in Wait, it receives the replies (see there): probing only requests
  // and control frames here keeps a second thread from taking a reply and handing it over.
  const bool waiters = waiters_.load() > 0;
  auto probe = [&](int* flag, MPI_Message* msg, MPI_Status* st) {
    if (!waiters) return MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, flag, msg, st);
    const int rc = MPI_Improbe(MPI_ANY_SOURCE, kTagRequest, comm_, flag, msg, st);
    if (rc != MPI_SUCCESS || *flag) return rc;
    return MPI_Improbe(MPI_ANY_SOURCE, kTagControl, comm_, flag, msg, st);
  };
  bool retried = false;
  for (int i = 0; i < 64; ++i) {
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (probe(&flag, &msg, &st) != MPI_SUCCESS) break;
    if (!flag) {
      // Once more: an unmatched probe runs MPI's progress, which may only then move an arrived
      // message to where the next probe matches it (Open MPI's ob1 does so).
      if (retried) break;
      retried = true;
      continue;
    }
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    PendingRecv r;
    r.source = st.MPI_SOURCE;
    r.tag = st.MPI_TAG;
    r.size = static_cast<size_t>(count);
    r.bytes.reset(new char[std::max<size_t>(r.size, 1)]);
    did = true;
    if (recvs_.empty() && r.size < kWakeOwnThreadBytes) {
      // A small matched message is already here (eager): receive and deliver it now, in
      // arrival order as nothing is pending before it.
      MPI_Mrecv(r.bytes.get(), count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      Deliver(r.source, r.tag, std::move(r.bytes), r.size);
      continue;
    }
    MPI_Imrecv(r.bytes.get(), count, MPI_BYTE, &msg, &r.request);
    recvs_.push_back(std::move(r));
  }
  // Deliver in arrival order: a large push and the small pull after it stay in order.
  size_t done = 0;
  while (done < recvs_.size()) {
    int flag = 0;
    MPI_Test(&recvs_[done].request, &flag, MPI_STATUS_IGNORE);
    if (!flag) break;
    PendingRecv& r = recvs_[done];
    Deliver(r.source, r.tag, std::move(r.bytes), r.size);
    ++done;
    did = true;
  }
  if (done > 0) recvs_.erase(recvs_.begin(), recvs_.begin() + static_cast<ptrdiff_t>(done));
  {
    std::lock_guard<std::mutex> l(out_mu_);
    for (size_t i = 0; i < sends_.size();) {
      int flag = 0;
      MPI_Test(&sends_[i].request, &flag, MPI_STATUS_IGNORE);
      if (flag) {
        sends_[i] = std::move(sends_.back());
        sends_.pop_back();
        did = true;
      } else {
        ++i;
      }
    }
  }
  return did;
}

void Transport::Loop() {
  SetFineTimerSlack();
  int idle = 0;
  int64_t last_activity_us = 0;
  Bell* bell = &own_bells_[kRequestBell];
  while (true) {
    // Read before polling: a ring during the poll makes the sleep below return at once.
    const uint32_t seen = bell->seq.load(std::memory_order_seq_cst);
    bool did = Poll();
    CheckPeers();
    if (shutdown_requested_.load()) {
      bool sends_done;
      {
        std::lock_guard<std::mutex> l(out_mu_);
        sends_done = sends_.empty();
      }
      if (shutdown_phase_ == 0) {
        if (sends_done) {
          for (int p = 0; p < size_; ++p)
            if (p != rank_) Enqueue(p, kTagControl, Frame::Make(kFrameBye, {}, 0));
          shutdown_phase_ = 1;
        }
      } else if (shutdown_phase_ == 1 && sends_done) {
        MPI_Ibarrier(comm_, &barrier_);
        shutdown_phase_ = 2;
      } else if (shutdown_phase_ == 2) {
        int flag = 0;
        MPI_Test(&barrier_, &flag, MPI_STATUS_IGNORE);
        if (flag) break;
      }
    }
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    if (did) {
      idle = 0;
      // Heartbeats alone do not open the active window (an idle rank stays cheap).
      if (user_traffic_) last_activity_us = NowUs();
      user_traffic_ = false;
      continue;
    }
    // After a second without traffic the cap rises to kLongIdleSleepUs: an idle rank then
    // costs ~100 wake-ups a second; the first message after such a pause waits at most that.
    constexpr int64_t kLongIdleUs = 1000000, kLongIdleSleepUs = 10000;
    const int64_t now = NowUs();
    // A server with cores to spare polls again at once for a while after each request. (A
    // worker's comm thread need not: its waiting threads receive their replies themselves.)
    if (now - last_activity_us < options_.spin_us && has_handler_.load()) continue;
    const int64_t cap = now - last_activity_us > kLongIdleUs
                            ? std::max<int64_t>(options_.max_sleep_us, kLongIdleSleepUs)
                            : options_.max_sleep_us;
    int64_t us = std::min<int64_t>(cap, int64_t{2} << std::min(idle, 14));
    // While traffic is recent, poll at most every kActiveSleepUs: a pure exponential backoff
    // makes the detection delay grow with the gap since the last message, which in a
    // request/response loop feeds on itself. After kActiveWindowUs of silence, back off fully.
    // With every peer ringing this rank's bell, that poll only catches what a ring missed (a
    // message not yet visible when its sender rang), so it may be rarer.
    const int64_t active_sleep_us = all_peers_ring_ ? kActiveSleepRungUs : kActiveSleepUs;
    if (now - last_activity_us < kActiveWindowUs) us = std::min(us, active_sleep_us);
    {
      std::lock_guard<std::mutex> l(out_mu_);
      // Transfers in flight (rendezvous of large messages) progress only inside MPI calls.
      if (!sends_.empty() || !recvs_.empty()) us = std::min<int64_t>(us, kActiveSleepUs);
    }
    ++idle;
    if (shutdown_phase_ == 0 && shutdown_requested_.load()) continue;
    SleepOn(bell, seen, us);
  }
  stopped_.store(true);
  in_cv_.notify_all();
}

}  // namespace ips::ps
