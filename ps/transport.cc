#include "ps/transport.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

namespace ips::ps {
namespace {

constexpr int kTagRequest = 1;
constexpr int kTagReply = 2;
constexpr int kTagControl = 3;
constexpr size_t kHeaderBytes = 16;  // id u64, kind u32, meta_len u32

size_t PayloadOffset(size_t meta_len) { return (kHeaderBytes + meta_len + 7) & ~size_t{7}; }

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

}  // namespace

struct Transport::Ticket::Slot {
  int peer = -1;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Frame reply;
  Status error;
};

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
    char host[kHostLen];
  };
  Ident mine{};
  mine.pid = static_cast<int>(getpid());
  gethostname(mine.host, kHostLen - 1);
  std::vector<Ident> all(t->size_);
  IPS_RETURN_IF_ERROR(MpiStatus(MPI_Iallgather(&mine, sizeof(Ident), MPI_BYTE, all.data(),
                                               sizeof(Ident), MPI_BYTE, t->comm_, &req),
                                "MPI_Iallgather(pids)"));
  IPS_RETURN_IF_ERROR(WaitWithoutSpinning(&req, "MPI_Iallgather(pids)"));
  for (const Ident& id : all) {
    t->pids_.push_back(id.pid);
    t->hosts_.emplace_back(id.host);
  }
  const int64_t now = NowUs();
  t->last_heard_us_.assign(t->size_, now);
  t->departed_.assign(t->size_, false);
  t->last_heartbeat_us_ = 0;
  t->last_pid_check_us_ = now;
  t->thread_ = std::thread([p = t.get()] { p->Loop(); });
  return t;
}

Transport::~Transport() {
  if (thread_.joinable()) Shutdown();
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
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
  {
    std::lock_guard<std::mutex> l(out_mu_);
    MPI_Request req;
    const int rc =
        MPI_Isend(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, peer, tag, comm_, &req);
    if (tag != kTagControl) user_sends_ = true;
    if (rc != MPI_SUCCESS) {
      failed_sends_.push_back(peer);
    } else {
      bytes_sent_.fetch_add(static_cast<int64_t>(frame.size()));
      messages_sent_.fetch_add(1);
      sends_.push_back(PendingSend{req, std::move(frame)});
    }
    new_sends_ = true;
  }
  out_cv_.notify_one();
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
  Ticket::Slot& s = *ticket.slot_;
  std::unique_lock<std::mutex> l(s.mu);
  if (timeout_ms < 0) {
    s.cv.wait(l, [&] { return s.done; });
  } else if (!s.cv.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return s.done; })) {
    return UnavailableError("transport: no reply from " + Describe(s.peer) + " within " +
                            std::to_string(timeout_ms) + " ms");
  }
  if (!s.error.ok()) return s.error;
  return std::move(s.reply);
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
  out_cv_.notify_one();
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
    slot->cv.notify_all();
  }
}

void Transport::DeclareDead(int peer, const std::string& why) {
  const std::string message =
      "ips: " + Describe(peer) + " " + why + "; " + Describe(rank_) + " is ending the job";
  FailAllTickets(message);
  if (options_.on_peer_dead) {
    options_.on_peer_dead(peer, message);
    departed_[peer] = true;  // report once
    return;
  }
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
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
    std::shared_ptr<Ticket::Slot> slot;
    {
      std::lock_guard<std::mutex> l(tickets_mu_);
      auto it = tickets_.find(frame->id());
      if (it == tickets_.end()) return;  // abandoned ticket
      slot = std::move(it->second);
      tickets_.erase(it);
    }
    std::lock_guard<std::mutex> l(slot->mu);
    slot->reply = std::move(*frame);
    slot->done = true;
    slot->cv.notify_all();
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
      return;
    }
  }
  if (options_.watch_local_pids && now - last_pid_check_us_ >= 100000) {
    last_pid_check_us_ = now;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || departed_[p] || hosts_[p] != hosts_[rank_]) continue;
      if (!ProcessAlive(pids_[p])) {
        DeclareDead(p,
                    "died (process " + std::to_string(pids_[p]) + " on " + hosts_[p] + " is gone)");
        return;
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
    new_sends_ = false;
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
  for (int i = 0; i < 64; ++i) {
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &msg, &st) != MPI_SUCCESS || !flag)
      break;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    PendingRecv r;
    r.source = st.MPI_SOURCE;
    r.tag = st.MPI_TAG;
    r.size = static_cast<size_t>(count);
    r.bytes.reset(new char[std::max<size_t>(r.size, 1)]);
    MPI_Imrecv(r.bytes.get(), count, MPI_BYTE, &msg, &r.request);
    recvs_.push_back(std::move(r));
    did = true;
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
  while (true) {
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
    const int64_t cap = now - last_activity_us > kLongIdleUs
                            ? std::max<int64_t>(options_.max_sleep_us, kLongIdleSleepUs)
                            : options_.max_sleep_us;
    int64_t us = std::min<int64_t>(cap, int64_t{2} << std::min(idle, 14));
    // While traffic is recent, poll at most every kActiveSleepUs: a pure exponential backoff
    // makes the detection delay grow with the gap since the last message, which in a
    // request/response loop feeds on itself. After kActiveWindowUs of silence, back off fully.
    constexpr int64_t kActiveSleepUs = 20, kActiveWindowUs = 20000;
    if (now - last_activity_us < kActiveWindowUs) us = std::min(us, kActiveSleepUs);
    std::unique_lock<std::mutex> l(out_mu_);
    // Transfers in flight (rendezvous of large messages) progress only inside MPI calls.
    if (!sends_.empty() || !recvs_.empty()) us = std::min<int64_t>(us, 20);
    ++idle;
    out_cv_.wait_for(l, std::chrono::microseconds(us), [&] {
      return new_sends_ || (shutdown_phase_ == 0 && shutdown_requested_.load());
    });
  }
  stopped_.store(true);
  in_cv_.notify_all();
}

}  // namespace ips::ps
