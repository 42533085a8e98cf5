// Transport: request/response messaging between the ranks of an MPI job, owned by one
// communication thread per process. It owns the wire frame (a small fixed header, a serialized
// control message, then a raw 8-byte-aligned payload), the comm thread's send/receive loop,
// request/response matching, and failure detection (heartbeats between all ranks plus, on one
// host, a check that each peer's process still exists). It does not know what the messages mean
// (ps/server.h and ps/remote_store.h do).
//
// Threading: MPI is initialised with MPI_THREAD_MULTIPLE (Cluster, worker/cluster.h). A sender
// posts its own MPI_Isend (no hand-off to another thread on the request path). A thread waiting
// for a reply (Wait) receives replies itself, so no hand-off sits on the reply path either. The
// comm thread does everything else: probing and receiving requests (and replies nobody waits
// for yet, e.g. prefetches), completing sends and large receives, heartbeats, and running the
// request handler of a parameter server (so a pull is served on the thread that received it).
// Collectives (worker/collective.h) run on the trainer thread on their own communicator, and
// MPI_Abort may come from any thread.
//
// No busy-polling: Open MPI's blocking MPI_Recv/MPI_Probe/MPI_Wait spin a core (with
// mpi_yield_when_idle they sched_yield in a loop; measured on the loaded 2-core dev VM, a rank
// blocked 2 s in MPI_Recv used 64% of a core, 48% with `--mca mpi_yield_when_idle 1`, so no MCA
// setting helps), and here 4+ ranks share 2 cores. Instead every rank has two doorbells, futex
// words in a small shared-memory segment that the other ranks on its host map: one for requests
// (the comm thread sleeps on it) and one for replies (threads in Wait sleep on it). A sender rings
// the peer's bell right after its MPI_Isend, so a sleeping receiver wakes at once and finds the
// message with MPI_Improbe; a ring costs one atomic add, plus a FUTEX_WAKE only when someone
// sleeps. Sleeps are also bounded, because a message can be missed by a ring (a peer on another
// host has no bell; a rendezvous transfer needs MPI calls on both sides): for 20 ms after traffic
// the comm thread polls at least every 200 us (every 20 us while a transfer is in flight, or when
// some peer cannot ring), backing off from 2 us; then it backs off to max_sleep_us (1 ms) and,
// after 1 s of silence, to 10 ms; heartbeats do not count as traffic. A thread in Wait backs
// off the same way from the start of its wait. The short first sleeps are not only a safety
// net: on a VM whose idle vCPUs halt, a timed wake-up of the sleeper's own vCPU is cheaper than
// the cross-vCPU wake-up a ring causes, and the first of the two wins (measured on the 2-core
// dev VM: a 1-key pull round trip of ~32-42 us with them, ~45-49 us with the bells alone).
// Threads' timer slack is set to 1 us so short sleeps are short. Where cores are to spare,
// Options::spin_us makes the waiting threads poll for a while before they sleep.
// Measured idle cost: bench/mpi_ps_bench.cc prints idle_cpu_pct (about 0.5% of a core here).
// A round trip thus costs two wake-ups of sleeping threads; bench/mpi_ps_bench.cc compares it
// with raw MPI ping-pongs, spinning ones and ones whose two sides sleep on a futex bell.
#ifndef IPS_PS_TRANSPORT_H_
#define IPS_PS_TRANSPORT_H_

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace ips::ps {

// Ends the whole MPI job from this process, for a failure of this rank's own that it cannot
// recover from: prints `message` to stderr and the run's error RESULT line to stdout
// (common/result_line.h), then MPI_Abort(MPI_COMM_WORLD, 1). Of the ranks, the one that prints
// the job's RESULT line (worker 0) prints it at once; another prints it after a grace period of
// 1 s + 0.2 s per rank, unless mpirun has killed it by then (worker 0 ended the job for the same
// reason, with its own line). A rank's death is reported by Transport (the same, for the dead
// rank's peers: worker 0 prints the line, or the lowest other rank if worker 0 died; a peer on
// the same host that ended the job with AbortJob is followed silently, not reported as dead).
// Only the first call in a process does this; a concurrent or later one (another thread that saw
// the same failure) sleeps until the process is killed: Open MPI's MPI_Abort is not safe to enter
// from two threads at once (a worker whose comm thread and trainer thread both saw a peer die
// crashed in its help-message parser).
[[noreturn]] void AbortJob(const std::string& message);

struct EndingMarks;  // ps/transport.cc

// One message: [id u64][kind u32][meta_len u32][meta bytes][pad to 8][payload]. Move-only; the
// storage is uninitialised on creation (payloads are several MB; no zero-fill).
class Frame {
 public:
  Frame() = default;
  // A frame of `kind` with control bytes `meta` and room for payload_bytes of payload.
  static Frame Make(uint32_t kind, std::string_view meta, size_t payload_bytes);
  // Adopts received bytes; DATA_LOSS when the header is inconsistent with `size`.
  static StatusOr<Frame> Adopt(std::unique_ptr<char[]> bytes, size_t size);

  uint64_t id() const;
  void set_id(uint64_t id);
  uint32_t kind() const;
  std::string_view meta() const;
  char* payload() { return bytes_.get() + payload_offset_; }
  const char* payload() const { return bytes_.get() + payload_offset_; }
  size_t payload_size() const { return size_ - payload_offset_; }
  const char* data() const { return bytes_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  std::unique_ptr<char[]> bytes_;
  size_t size_ = 0;
  size_t payload_offset_ = 0;
};

// A message that arrived: its sender and the frame.
struct Incoming {
  int source = -1;
  Frame frame;
};

class Transport {
 public:
  struct Options {
    // Name of each rank's role for messages ("ps 0", "worker 1"); empty = "rank r".
    std::vector<std::string> role_of_rank;
    // Heartbeats go to every rank this often; a peer silent for dead_after_ms is declared dead.
    int heartbeat_ms = 1000;
    int dead_after_ms = 10000;
    // Also declare a peer on this host dead as soon as its process is gone (checked every
    // 100 ms; needs the peers' pids, exchanged at Create).
    bool watch_local_pids = true;
    // Longest sleep of the comm thread while traffic is less than 1 s old (after that: 10 ms).
    int max_sleep_us = 1000;
    // Peers on this host ring each other's doorbells (shared memory, see above). false: no
    // bells; every message is found by polling (what a peer on another host always gets).
    bool doorbells = true;
    // For a host with cores to spare (see worker/cluster.h TransportSpinUs): a thread in Wait,
    // and the comm thread of a rank that serves requests, poll without sleeping for this long
    // (from the start of the wait; after the last request) before they sleep as above. A
    // spinning thread holds a core, as blocking MPI calls do; it saves the two wake-ups of a
    // round trip. 0: never spin.
    int spin_us = 0;
  };

  // Duplicates `comm` (the transport's traffic never matches anyone else's receives),
  // exchanges pids and host names (collective over `comm`: every rank must call Create), and
  // starts the comm thread. Errors: INTERNAL naming the failing MPI call.
  static StatusOr<std::unique_ptr<Transport>> Create(MPI_Comm comm, const Options& options);
  // Stops the comm thread (Shutdown if not called). Must be destroyed before MPI_Finalize.
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // "ps 0 (rank 1)"-style name of a rank for messages.
  std::string Describe(int rank) const;

  // Queues `frame` for `peer` as a one-way request (no reply expected; it arrives in the
  // peer's Receive). The comm thread owns it from here. Thread-safe.
  void Send(int peer, Frame frame);
  // Queues `frame` as the reply to request `request_id` of `peer` (Incoming::frame.id()).
  // Thread-safe.
  void Reply(int peer, uint64_t request_id, Frame frame);

  // A pending reply.
  class Ticket {
   public:
    bool valid() const { return slot_ != nullptr; }

   private:
    friend class Transport;
    struct Slot;
    std::shared_ptr<Slot> slot_;
  };
  // Sends `frame` as a request (the transport assigns its id) and returns a ticket for the
  // reply. Thread-safe.
  Ticket Request(int peer, Frame frame);
  // Waits (sleeping on the reply bell) for the reply of `ticket`, receiving replies itself
  // meanwhile (any ticket's: each goes to its own ticket). UNAVAILABLE when the peer is declared
  // dead or the transport shuts down, DEADLINE as UNAVAILABLE after timeout_ms (< 0: none).
  StatusOr<Frame> Wait(Ticket ticket, int timeout_ms = -1);

  // Routes incoming requests to `handler`, called on the comm thread (it may Reply, and must not
  // block on this transport), instead of Receive; requests queued before are handed to it
  // first. An empty handler restores Receive. Blocks while a handler call is running, so the
  // handler's captures may be destroyed once this returns. Thread-safe.
  void SetRequestHandler(std::function<void(Incoming)> handler);

  // Pops the next incoming request (frames not matching a pending ticket), sleeping up to
  // timeout_ms (< 0: until one arrives or shutdown). False on timeout or shutdown. Thread-safe.
  bool Receive(Incoming* out, int timeout_ms);

  // True once the comm thread has exited (after Shutdown).
  bool stopped() const { return stopped_.load(); }

  // Counters (thread-safe).
  int64_t bytes_sent() const { return bytes_sent_.load(); }
  int64_t bytes_received() const { return bytes_received_.load(); }
  int64_t messages_sent() const { return messages_sent_.load(); }
  int64_t messages_received() const { return messages_received_.load(); }
  // Comm-thread wake-ups so far (for measuring the idle cost).
  int64_t wakeups() const { return wakeups_.load(); }

  // Flushes queued sends, tells every peer this rank is leaving (peers stop expecting its
  // heartbeats), then stops the comm thread after a non-spinning barrier over the transport's
  // communicator, so no rank finalises MPI while another still sends to it. Collective: every
  // rank must call it. Idempotent.
  void Shutdown();

 private:
  Transport() = default;
  void Loop();
  // One pass of the loop; returns whether anything happened.
  bool Poll();
  void CheckPeers();
  // Ends the job (AbortJob) with a message naming the dead peer and this rank.
  [[noreturn]] void DeclareDead(int peer, const std::string& why);
  void FailAllTickets(const std::string& why);

  void Deliver(int source, int tag, std::unique_ptr<char[]> bytes, size_t size);
  // Hands a reply to its ticket and rings this rank's reply bell. Thread-safe.
  void DeliverReply(Frame frame);
  void Dispatch(Incoming in);
  void Enqueue(int peer, int tag, Frame frame);
  // Run by a thread in Wait: receives one reply (any ticket's) if one is there; true if it did.
  bool ReceiveOneReply();
  // Creates this rank's bells (shared memory when possible) and returns the id peers open it by
  // (-1: private, no peer can ring it).
  int CreateBells();
  // Maps the bells of the peers on this host; unlinks this rank's segment afterwards.
  Status OpenPeerBells(const std::vector<int>& bell_ids);

  // A doorbell: a futex word that senders bump after posting a message (see the header).
  struct Bell;
  static constexpr int kRequestBell = 0, kReplyBell = 1;
  static void Ring(Bell* bell);
  static void SleepOn(Bell* bell, uint32_t seen, int64_t us);
  Bell* own_bells_ = nullptr;            // [2]; in shared memory or owned_bells_
  std::unique_ptr<Bell[]> owned_bells_;  // when shared memory is unavailable
  std::vector<Bell*> peer_bells_;        // per rank: its [2] bells, nullptr = none (poll)
  std::vector<void*> mappings_;          // shared-memory mappings to unmap
  std::string own_bell_name_;            // shm name until unlinked
  // This process's and its peers' ending marks (in the bell pages), registered for AbortJob.
  std::unique_ptr<EndingMarks> ending_marks_;
  bool all_peers_ring_ = false;  // every peer can ring this rank's bells

  struct PendingSend {
    MPI_Request request;
    Frame frame;
  };
  struct PendingRecv {
    MPI_Request request;
    int source;
    int tag;
    std::unique_ptr<char[]> bytes;
    size_t size;
  };

  Options options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> pids_;
  std::vector<std::string> hosts_;
  // Exit watch of the peers on this host (watch_local_pids, where pidfd_open works): a thread
  // blocked in poll(2) on their pidfds raises peer_exited_ and rings this rank's request bell, so
  // that the comm thread checks them at once rather than at its next 100 ms check. mpirun kills
  // every rank soon after one is killed; the survivors must see it first to say which died.
  void WatchPeerExits();
  std::thread exit_watch_thread_;
  std::vector<int> peer_pidfds_;          // local peers' pidfds (closed at the end)
  int exit_watch_stop_fd_ = -1;           // eventfd that ends the watch
  std::atomic<bool> peer_exited_{false};  // a watched peer's process has exited

  std::thread thread_;
  std::atomic<bool> shutdown_requested_{false};
  std::atomic<bool> stopped_{false};  // the comm thread has exited
  int shutdown_phase_ = 0;            // comm thread only
  MPI_Request barrier_ = MPI_REQUEST_NULL;

  std::mutex out_mu_;               // guards the sends (posting and completing)
  std::vector<PendingSend> sends_;  // guarded by out_mu_
  std::vector<int> failed_sends_;   // guarded by out_mu_: peers whose Isend failed
  bool user_sends_ = false;         // guarded by out_mu_: a non-heartbeat send was posted

  std::mutex handler_mu_;
  std::function<void(Incoming)> handler_;  // guarded by handler_mu_
  std::atomic<bool> has_handler_{false};

  std::mutex in_mu_;
  std::condition_variable in_cv_;
  std::deque<Incoming> inbox_;  // guarded by in_mu_

  std::mutex tickets_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Ticket::Slot>> tickets_;  // by request id
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int> waiters_{0};  // threads in Wait (they receive replies themselves)
  std::string failure_;          // guarded by tickets_mu_: set once the transport is broken

  // Comm-thread-only state.
  std::vector<PendingRecv> recvs_;
  std::vector<int64_t> last_heard_us_;
  std::vector<bool> departed_;
  int64_t last_heartbeat_us_ = 0;
  int64_t last_pid_check_us_ = 0;
  bool user_traffic_ = false;  // a request/reply moved since the last pass

  std::atomic<int64_t> bytes_sent_{0}, bytes_received_{0}, messages_sent_{0}, messages_received_{0},
      wakeups_{0};
};

// Frame kinds below 16 are the transport's own.
constexpr uint32_t kFrameHeartbeat = 1;
constexpr uint32_t kFrameBye = 2;
constexpr uint32_t kFrameFirstUser = 16;

// INTERNAL "<what>: <MPI error string>" when rc is not MPI_SUCCESS.
Status MpiStatus(int rc, const char* what);

// Completes a non-blocking MPI operation without spinning a core: MPI_Test, then sleeps with
// the same backoff as the comm thread (2 us doubling to max_sleep_us). Every blocking-looking
// MPI step of this project (barriers, all-reduces, start-up exchanges) goes through it.
Status WaitWithoutSpinning(MPI_Request* request, const char* what, int max_sleep_us = 1000);
// Sets the calling thread's timer slack to 1 us (Linux), so backoff sleeps of a few
// microseconds are not rounded up to the default 50 us.
void SetFineTimerSlack();

}  // namespace ips::ps

#endif  // IPS_PS_TRANSPORT_H_
