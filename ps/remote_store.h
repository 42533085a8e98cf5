// RemoteEmbeddingStore: the worker-side EmbeddingStore whose rows live on parameter servers
// (ps/server.h). It owns the key -> PS partition (PsOfKey), the per-call fan-out (one push
// frame per PS per call; one pull frame per PS, or a few sent at once for a large pull so that
// the PS's lookups overlap the transfers; keys as raw uint64 arrays, rows and gradients as raw
// float arrays), the worker's push clocks for bounded staleness, the prefetch of the next
// batch's rows, and the client-side metrics (latency percentiles, bytes, measured staleness).
//
// Modes. kSync: Push returns after every PS applied it, and a pull reads every worker's pushes
// of the previous steps (with one worker: exactly the single-process store). kAsync with bound
// S: Push returns once its frames are queued; a pull at clock c (the number of pushes this
// worker has issued to the table, +1 for a prefetch of the next step) is served by each PS only
// when every worker's applied pushes reach c - S, so no worker reads parameters more than S
// steps older than its own. S = 0 reads exactly what kSync reads.
//
// Thread safety: one thread uses a store at a time (the trainer's); the transport's comm thread
// does the I/O.
#ifndef IPS_PS_REMOTE_STORE_H_
#define IPS_PS_REMOTE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "ps/embedding_store.h"
#include "ps/table_checkpoint.h"
#include "ps/table_options.h"
#include "ps/transport.h"

namespace ips::ps {

// The PS index in [0, num_ps) owning `key`: a hash independent of DynamicTable's own shard hash
// (internal::KeyHash), so keys spread evenly over PS ranks and over threads inside each.
inline int PsOfKey(uint64_t key, int num_ps) {
  uint64_t h = key ^ 0x9e3779b97f4a7c15ULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 29;
  return static_cast<int>(((h & 0xffffffffULL) * static_cast<uint64_t>(num_ps)) >> 32);
}

struct RemoteStoreOptions {
  std::vector<TableOptions> tables;  // same list, same order as every PS's ServerOptions
  std::vector<int> ps_ranks;         // transport ranks of the PS, index = PsOfKey's result
  int worker_index = 0;              // this worker's index among the workers
  enum class Mode { kSync, kAsync };
  Mode mode = Mode::kSync;
  int staleness = 0;  // kAsync's bound S (>= 0)
  // A reply not arriving within this long is an UNAVAILABLE error (the failure detector of the
  // transport normally ends the job long before).
  int timeout_ms = 120000;
};

// Client-side counters; latencies are of whole calls (all PS), in microseconds.
struct RemoteStoreMetrics {
  int64_t pulls = 0, pushes = 0, prefetch_hits = 0;
  double pull_p50_us = 0, pull_p99_us = 0, push_p50_us = 0, push_p99_us = 0;
  int64_t bytes_sent = 0, bytes_received = 0;  // payload + control of this store's frames
  int64_t staleness_max = 0;                   // over pulls: own clock - min applied clock
  double staleness_mean = 0;
};

class RemoteEmbeddingStore : public EmbeddingStore {
 public:
  // INVALID_ARGUMENT for no PS, a bad mode/staleness or bad table options. `transport` is not
  // owned and must outlive the store.
  static StatusOr<std::unique_ptr<RemoteEmbeddingStore>> Create(Transport* transport,
                                                                const RemoteStoreOptions& options);
  ~RemoteEmbeddingStore() override;

  StatusOr<int> FindTable(const std::string& name) const override;
  StatusOr<int64_t> TableDim(int table) const override;
  // See EmbeddingStore. Uses the rows of a matching PrefetchPull (same table, same keys in the
  // same order) when there is one. Errors also UNAVAILABLE (a PS died or timed out) and those the
  // PS returns.
  Status Pull(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override;
  Status Lookup(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override;
  Status Push(int table, const uint64_t* keys, int64_t n, int64_t dim, const float* grads) override;
  // Sends the step to every PS (each applies the largest step it has seen) and waits.
  Status AdvanceStep(int64_t step) override;
  // Sums every PS's statistics of the table (optimizer_step: the maximum).
  StatusOr<TableStats> Stats(int table) const override;

  // Starts the pull of the NEXT step's keys (call it after this step's Pull and before its
  // Push: its clock is one more than a Pull's now) and returns at once; the next Pull of the
  // same table with the same keys in the same order consumes it, if made after exactly one more
  // Push of the table (a Pull of other keys, or at another clock, pulls afresh and leaves it
  // outstanding). One prefetch per table: a newer one abandons the older (the
  // PS still serves it, so it counts as a sighting there). The keys are copied.
  Status PrefetchPull(int table, const uint64_t* keys, int64_t n) override;

  // Tells every PS this worker will push no more (peers' pulls stop waiting on its clock).
  Status Finish();
  // Finish, then tells every PS this worker is leaving; a PS's Run returns once every worker has.
  Status ShutdownServers();

  // Coordinated checkpoints (launch/cluster_train.cc; ps/server.h CHECKPOINT). The caller makes
  // sure no worker is inside a step (every worker waits at a barrier), so the shards are one
  // consistent snapshot. CheckpointServers asks every PS to write its shard of every table into
  // `dir` (a staging directory on a file system every PS sees) and returns all their files;
  // it waits without the reply timeout (large tables take long; a dead PS is reported by the
  // transport). CommitServerCheckpoint, once the checkpoint is published, makes those files the
  // base of each PS's next incremental ones. Errors: UNAVAILABLE (a PS died), a PS's INTERNAL
  // naming the file it could not write, FAILED_PRECONDITION (incremental without a committed
  // base, a commit of another step).
  StatusOr<std::vector<TableShardFile>> CheckpointServers(const std::string& dir, int64_t step,
                                                          bool incremental);
  Status CommitServerCheckpoint(int64_t step);

  RemoteStoreMetrics metrics() const;

 private:
  struct Inflight;  // one pull fan-out
  RemoteEmbeddingStore() = default;
  Status CheckTable(int table, int64_t dim) const;
  // Partitions keys by PS and sends the frames of `kind` to each PS that owns some (one, or a
  // few parts of a large share), returning the fan-out to wait on; keep_keys copies the keys
  // into it (a prefetch, matched against the later Pull's keys).
  std::unique_ptr<Inflight> StartPull(uint32_t kind, int table, const uint64_t* keys, int64_t n,
                                      int64_t clock, bool keep_keys);
  Status FinishPull(Inflight* f, float* out);
  Status SendAll(uint32_t kind, const std::string& meta);
  Status ReplyStatus(const Frame& f) const;

  Transport* transport_ = nullptr;
  RemoteStoreOptions options_;
  int num_ps_ = 1;
  std::vector<int64_t> pushes_;                      // per table: pushes issued (the clock)
  std::vector<std::unique_ptr<Inflight>> prefetch_;  // per table
  std::vector<int> owner_;                           // scratch: PS of each key
  bool finished_ = false;

  // Metrics.
  std::vector<double> pull_us_, push_us_;
  int64_t pulls_ = 0, pushes_total_ = 0, prefetch_hits_ = 0;
  mutable int64_t bytes_sent_ = 0, bytes_received_ = 0;
  int64_t staleness_max_ = 0, staleness_sum_ = 0, staleness_count_ = 0;
};

}  // namespace ips::ps

#endif  // IPS_PS_REMOTE_STORE_H_
