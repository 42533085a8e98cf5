// ParameterServer: the serving loop of one parameter-server rank. It owns this rank's shard of
// every embedding table (a LocalEmbeddingStore: the same DynamicTables, optimizers, admission
// and eviction as the single-process trainer) and the per-worker push clocks that bound
// staleness. It answers the frames of ps/remote_store.h: pull, read-only lookup, push,
// advance-step, stats, clock-done and shutdown. Which keys it owns is the client's business
// (PsOfKey in ps/remote_store.h); a PS serves whatever keys it is sent.
//
// Staleness protocol (bounded staleness, SSP): the PS counts, per (worker, table), the pushes it
// has applied. A pull carries `required` = the reader's own clock minus its bound S; it is served
// once every worker's applied count for that table is >= required, and deferred (queued, no
// thread blocked) until then. The reply carries that minimum, from which the worker measures
// the staleness it actually saw. A worker that has finished sends CLOCK_DONE so nobody waits
// on it. S = 0 with one worker therefore reads exactly what sync mode reads.
//
// Threading: frames are handled one at a time on the transport's comm thread (Run installs the
// handler and sleeps), so per-worker order is the arrival order; a large pull or push is spread
// over `num_threads`, each thread taking whole shards of the table (DynamicTable's pool argument:
// the result does not depend on the thread count). A worker
// sends a large pull as a few consecutive pull frames (ps/remote_store.h), each served as soon
// as it arrives, so the lookup of one overlaps the transfer of the previous one's rows. In sync
// mode they read the rows one frame would (no push of a later clock can be applied between
// them, see below); in async mode another worker's push may land between two of them, as
// between two pulls, and each still meets the staleness bound. Each counts as a pull in
// ServerStats. Pushes are never split: one push
// is one optimizer step (Adam's step count). In sync mode (pushes that
// want an ack) with several workers, a push is held until every worker that has not finished
// has sent its push of the same clock to the same table, and then they are applied in worker
// order: the result does not depend on which worker's push arrived first, so sync training is
// deterministic run to run (and a resumed run repeats an uninterrupted one). It costs no extra
// wait: a sync worker's next pull waits for every worker's push anyway. The workers' pulls of a
// step still reach the server in any order, so with several workers the tables use windowed
// admission (DynamicTable::SetWindowedAdmission): which keys a pull admits does not depend on
// that order. Eviction under max_memory_mb does: which rows it samples depends on the order in
// which rows were created, so a capped table is not deterministic with several workers.
//
// Checkpoints (launch/cluster_train.cc coordinates them, worker/checkpoint.h owns the layout):
// CHECKPOINT writes this server's shard of every table (ps/table_checkpoint.h
// WriteTableShardFiles: rows, optimizer state, TTL/LFU metadata, admission sketches) into the
// coordinator's staging directory and replies with the files' sizes and CRC32Cs; the write runs
// on a thread of its own so the comm thread keeps answering heartbeats. CHECKPOINT_COMMIT, sent
// once the coordinator has published the checkpoint, makes those files the base of this
// server's next incremental ones. The coordinator sends them only while every worker waits
// between the same two steps, so a shard is an exact snapshot.
#ifndef IPS_PS_SERVER_H_
#define IPS_PS_SERVER_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "ps/local_embedding_store.h"
#include "ps/table_options.h"
#include "ps/transport.h"

namespace ips::psproto {
class Request;  // proto/ps.proto; only the .cc files include the generated header
}

namespace ips::ps {

// Frame kinds of the PS protocol (after the transport's own).
enum PsFrame : uint32_t {
  kPsPull = kFrameFirstUser,
  kPsLookup,
  kPsPush,
  kPsAdvance,
  kPsStats,
  kPsClockDone,
  kPsShutdown,
  kPsReply,
  kPsCheckpoint,
  kPsCheckpointCommit,
};

struct ServerOptions {
  // Every table, identical on all ranks (the worker's RemoteStoreOptions::tables).
  std::vector<TableOptions> tables;
  int num_workers = 1;
  int num_threads = 1;
  // Test-only: after serving this many pushes, the process kills itself with SIGKILL (< 0: never).
  int64_t kill_after_pushes = -1;
  // Test-only: SIGKILL after writing the shard files of the checkpoint of this step, before
  // replying (a server dying mid-checkpoint; < 0: never).
  int64_t kill_in_checkpoint_step = -1;
};

struct ServerStats {
  int64_t pulls = 0, lookups = 0, pushes = 0, deferred_pulls = 0;
};

class ParameterServer {
 public:
  // Creates the tables (INVALID_ARGUMENT as LocalEmbeddingStore::Create). `transport` is not
  // owned and must outlive the server.
  static StatusOr<std::unique_ptr<ParameterServer>> Create(Transport* transport,
                                                           const ServerOptions& options);

  // Serves requests until every worker has sent SHUTDOWN. Errors of single requests are
  // returned to their sender, not here; returns UNAVAILABLE only if the transport stops first.
  Status Run();

  // Joins a checkpoint write still running.
  ~ParameterServer();

  LocalEmbeddingStore* store() { return store_.get(); }
  // Valid after Run returned.
  const ServerStats& stats() const { return stats_; }

 private:
  ParameterServer() = default;
  void Handle(Incoming in);
  // Serves deferred pulls whose clock is now satisfied.
  void RetryDeferred();
  int64_t MinApplied(int table) const;
  void ReplyError(const Incoming& in, const Status& s);
  void ServePull(const Incoming& in, int table, int64_t n, int64_t dim, bool lookup);
  // Applies one push (store, clock, stats, ack or deferred error).
  void ApplyPush(const Incoming& in, const psproto::Request& req);
  // Applies the held sync pushes of `table` whose clock every active worker has pushed.
  void ReleaseHeldPushes(int table);
  // CHECKPOINT's write, on checkpoint_thread_; replies to (source, id) itself.
  void WriteCheckpoint(int source, uint64_t id, const std::string& dir, int64_t step,
                       bool incremental, std::map<std::string, uint32_t> since);

  Transport* transport_ = nullptr;
  ServerOptions options_;
  std::unique_ptr<LocalEmbeddingStore> store_;
  // applied_[w][t]: pushes of worker w to table t applied here; INT64_MAX once w is done.
  std::vector<std::vector<int64_t>> applied_;
  std::vector<Incoming> deferred_;
  struct HeldPush {
    int worker = 0;
    Incoming in;
  };
  std::vector<std::map<int64_t, std::vector<HeldPush>>> held_pushes_;  // per table, by clock
  std::vector<Status> async_error_;  // per worker: a failed un-acked push, reported next reply
  std::vector<bool> shut_down_;
  int64_t max_step_ = -1;
  ServerStats stats_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;  // guarded by done_mu_: every worker has shut down
  // Checkpoints. The thread writes pending_* and is joined (by the comm thread) before they are
  // read; committed_epochs_ is the comm thread's.
  std::thread checkpoint_thread_;
  int64_t pending_step_ = -1;
  std::map<std::string, uint32_t> pending_epochs_;
  std::map<std::string, uint32_t> committed_epochs_;  // per table: epoch of the last commit
};

}  // namespace ips::ps

#endif  // IPS_PS_SERVER_H_
