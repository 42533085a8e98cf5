// DynamicTable: one embedding table of 64-bit keys that grows as keys arrive: the storage behind
// LocalEmbeddingStore (in the trainer) and behind each parameter server's shard of a table.
// It owns the rows, their optimizer state, feature admission, TTL and memory-cap eviction; the
// update arithmetic is kernels/optimizer.h's SparseUpdate, called on the table's own storage
// (a push whose rows are distinct, the trainer's case, updates each row in place with a copy
// of the kernel's element-wise loop, bitwise the same; see TableShard::Push).
//
// Layout. Keys are hashed (Mix64) to one of num_shards sub-tables, each with its own mutex.
// A shard keeps rows in an arena of slabs of rows_per_slab rows; a slab holds, as separate
// contiguous arrays, the values [R x dim], each optimizer state table [R x dim] (Adagrad: the
// accumulator; Adam: m, v; FTRL: z, n), and per-row metadata (key, last-seen step, LFU count:
// 16 bytes; the epoch of the last change, for incremental checkpoints: 4 bytes). Separate
// arrays let SparseUpdate run directly on a slab (row index = slot in the slab), with no gather
// or scatter. The hash index is open addressing with linear probing over
// 4-byte entries (8-bit hash tag + 24-bit slot), at most 75% full, sized to the slab capacity;
// deletion shifts entries back, so there are no tombstones. Freed slots go on an intrusive free
// list and are reused before any new slab, so memory follows the peak live row count.
// At dim 18 this is about 1.1x the row payload (value + state) for Adam and Adagrad.
//
// Eviction. TTL: a row unseen (no pull, no push) for more than ttl_steps steps is expired;
// AdvanceStep sweeps every ttl_sweep_interval steps, and a pull that meets an expired row before
// the sweep treats it as already evicted, so TTL is exact as seen by callers. Memory cap:
// max_memory_mb is split evenly across shards; a shard that needs a row slot and cannot grow by
// a slab within its budget evicts one row chosen Redis-style: 16 random live rows are sampled and
// the least frequently (LFU: pull+push count) or least recently (LRU: last step) used is evicted.
//
// Thread safety: every public method is thread-safe unless noted. Calls lock the shards they
// touch one at a time, so a Pull racing a Push sees each row either before or after the update.
#ifndef IPS_PS_DYNAMIC_TABLE_H_
#define IPS_PS_DYNAMIC_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "ps/embedding_store.h"
#include "ps/table_options.h"

namespace ips::ps {

namespace internal {
class TableShard;
struct ShardConfig;
struct GroupScratch;
struct PullRecord;
}  // namespace internal

// One row as a checkpoint sees it: value[dim], optimizer state[state_count * dim] (nullptr for
// SGD) and the TTL/LFU metadata (step of the last use mod 2^32, pulls + pushes).
struct RowRecord {
  uint64_t key = 0;
  const float* value = nullptr;
  const float* state = nullptr;
  uint32_t last_step = 0;
  uint32_t freq = 0;
};

// One table shard's admission sketch (internal::CountSketch), for checkpoints.
struct SketchState {
  int64_t width = 0;
  int64_t additions = 0;
  std::vector<uint16_t> counters;  // [4 x width]
};

class DynamicTable {
 public:
  // Validates `options` (INVALID_ARGUMENT naming the field) and creates an empty table.
  // INVALID_ARGUMENT too when max_memory_mb cannot hold one slab and index per shard.
  static StatusOr<std::unique_ptr<DynamicTable>> Create(const TableOptions& options);
  ~DynamicTable();
  DynamicTable(const DynamicTable&) = delete;
  DynamicTable& operator=(const DynamicTable&) = delete;

  const TableOptions& options() const { return options_; }
  int64_t dim() const { return options_.dim; }
  // Optimizer state tables per row (0 SGD, 1 Adagrad, 2 Adam and FTRL); a row's state is
  // state_count() * dim floats in the ForEachRow / Insert / ReadRow layout [state0 | state1].
  int state_count() const { return state_count_; }

  // Pull, Lookup and Push take an optional `pool` (not owned; nullptr = the calling thread
  // only): a call of at least kParallelKeys keys spreads whole shards over it, each shard
  // handled by one thread, so the result is the same as without it (a shard's keys are applied
  // in input order either way, and shards share no rows).
  static constexpr int64_t kParallelKeys = 4096;

  // Rows of keys[0, n) into out[n x dim]; see EmbeddingStore::Pull. Errors: INVALID_ARGUMENT
  // for n < 0 or null pointers with n > 0; RESOURCE_EXHAUSTED when a shard would exceed
  // 2^24 - 1 rows with nothing to evict.
  //
  // A pull of at least kMinRecordedPull keys is recorded (its keys, and the row slot each
  // resolved to), and a Push whose keys are those of one or more recorded pulls laid end to end
  // (the trainer's step; a parameter server's pull parts) uses their slots instead of grouping
  // and looking the keys up again. A recorded slot is used only while the shard has removed no
  // row since the pull (and, for a key left without a row, created none): the rows, counters and
  // bits are those of a push without records (tested). The newest kMaxPullRecords records of at
  // most kMaxRecordedKeys keys (20 bytes each) are kept, and as many keys' worth of used-up
  // records' buffers for later pulls to reuse.
  static constexpr int64_t kMinRecordedPull = 256;
  static constexpr size_t kMaxPullRecords = 64;
  static constexpr int64_t kMaxRecordedKeys = int64_t{1} << 20;
  Status Pull(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool = nullptr);
  // Recording on (the default) or off, to compare the two (tests, benchmarks). Not thread-safe
  // with other calls.
  void set_record_pulls(bool on) { record_pulls_ = on; }
  // Read-only pull: missing or expired keys read as zeros; creates, counts and touches nothing.
  Status Lookup(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool = nullptr) const;
  // One optimizer step on the rows of keys[0, n) with grads[n x dim]; duplicates are summed,
  // keys without a row dropped (counted). See EmbeddingStore::Push.
  Status Push(const uint64_t* keys, int64_t n, const float* grads, ThreadPool* pool = nullptr);

  // Windowed admission, for a parameter server with several workers: the pulls between two
  // pushes form a window whose admission decisions do not depend on their order. A pull admits a
  // key when its count as of the window's start, plus this sighting, reaches min_count; the
  // window's sightings are added to the sketch (in hash order) when the next Push begins. In sync
  // mode each worker's pulls of a step fall between the same two pushes, while the order in which
  // they reach a server varies run to run, so admission (and the whole run) stays deterministic.
  // Off (the default, in-process training): each sighting counts at once, the same decisions
  // when a pull holds each key once and every pull is followed by a push. Not thread-safe with
  // other calls: set it before the table is used.
  void SetWindowedAdmission(bool on);

  // Sets the current step (TTL ages, LRU recency) and sweeps expired rows when a sweep is due.
  // Returns the number of rows evicted by the sweep.
  int64_t AdvanceStep(int64_t step);
  int64_t step() const { return step_.load(std::memory_order_relaxed); }
  // Sweeps expired rows now (no-op without ttl_steps); returns how many were evicted.
  int64_t EvictExpired();

  // Adam's step count: the number of pushes so far. Settable to restore a checkpoint.
  int64_t optimizer_step() const { return optimizer_step_.load(std::memory_order_relaxed); }
  void set_optimizer_step(int64_t s) { optimizer_step_.store(s, std::memory_order_relaxed); }

  // Creates or overwrites the row of `key` (restoring a checkpoint): value[dim] and, unless
  // null, state[state_count() * dim]; a null state is the optimizer's initial state. Bypasses
  // admission; may evict under the memory cap. RESOURCE_EXHAUSTED as Pull.
  Status Insert(uint64_t key, const float* value, const float* state);
  // Copies the row of `key` without touching it; false when the key has no live row. `state`
  // may be null.
  bool ReadRow(uint64_t key, float* value, float* state) const;
  // Calls fn for every live row, shard by shard under the shard's lock (fn must not call back
  // into this table). `state` points at a [state0 | state1] copy, nullptr for SGD; both pointers
  // are valid only during the call.
  void ForEachRow(
      const std::function<void(uint64_t key, const float* value, const float* state)>& fn) const;

  // The initial value of key's row (what a pull of a new key returns), into row[dim].
  void InitialRow(uint64_t key, float* row) const;

  // ---- Checkpoint support (ps/table_checkpoint.h) ----
  // Incremental checkpoints track changes with epochs: every row carries the epoch of its last
  // change (creation, pull, push, restore), and rows removed (TTL, memory cap, Erase) are
  // recorded with the epoch of their removal once the first checkpoint began. BeginCheckpoint()
  // returns E, the epoch every change so far carries (<= E), and moves later changes to E + 1, so
  // a checkpoint begun at E' holds, relative to one begun at E, the rows with epoch > E and the
  // keys removed at an epoch > E. Rows changed while a checkpoint is being scanned are in it or
  // in the next one, never lost. Thread-safe.
  uint32_t BeginCheckpoint();
  // Live rows changed at an epoch > since (since = 0: every live row), shard by shard under the
  // shard's lock (fn must not call back into this table; pointers valid only during the call).
  void ForEachRowSince(uint32_t since, const std::function<void(const RowRecord&)>& fn) const;
  // Keys removed at an epoch > since; a key removed and re-created is listed here and also
  // visited by ForEachRowSince (apply removals first).
  std::vector<uint64_t> RemovedSince(uint32_t since) const;
  // Drops the removal records of epochs <= epoch (after a checkpoint begun at `epoch` committed).
  void DiscardChangesThrough(uint32_t epoch);
  // Creates or overwrites a row exactly as recorded (value, state, metadata); bypasses admission.
  // INVALID_ARGUMENT for a null value or the padding key; RESOURCE_EXHAUSTED as Pull.
  Status RestoreRow(const RowRecord& row);
  // Removes key's row; false when it has none.
  bool Erase(uint64_t key);
  // The step of the last TTL sweep, and a restore of the whole clock (step, last sweep, Adam's
  // step count) without sweeping.
  int64_t last_sweep_step() const { return last_sweep_step_.load(std::memory_order_relaxed); }
  void RestoreClock(int64_t step, int64_t last_sweep_step, int64_t optimizer_step);
  // Admission sketches, one per shard (empty when min_count <= 1).
  std::vector<SketchState> Sketches() const;
  // Element-wise max of sketches[s] into shard s (see CountSketch::MergeMax). INVALID_ARGUMENT
  // when the shard count or widths differ (the caller then skips the restore of admission counts).
  Status MergeSketches(const std::vector<SketchState>& sketches);
  int num_shards() const { return static_cast<int>(shards_.size()); }

  TableStats Stats() const;
  // Measured memory per live row: Stats().BytesPerRow().
  double BytesPerRow() const { return Stats().BytesPerRow(); }

 private:
  explicit DynamicTable(const TableOptions& options);
  internal::TableShard& ShardOf(uint64_t hash) const;
  // Groups [0, n) by shard into *g (dynamic_table.cc's per-thread scratch).
  void GroupByShard(const uint64_t* keys, int64_t n, internal::GroupScratch* g) const;
  // Pull (create = true: rows are created, counted and touched) and Lookup (create = false).
  // Const because the shards are reached through pointers and lock themselves.
  // With `record`, fills its grouping, slots and stamps (not its keys).
  Status ReadRows(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool, bool create,
                  internal::PullRecord* record) const;
  // Keeps `record`'s buffers for a later pull (records_mu_ held), unless the spares would exceed
  // kMaxRecordedKeys keys.
  void KeepSpare(std::unique_ptr<internal::PullRecord> record);
  // Moves into *used the recorded pulls whose keys, end to end, are keys[0, n); false (and
  // nothing moved) when there are none such.
  bool TakeRecordsCovering(const uint64_t* keys, int64_t n,
                           std::vector<std::unique_ptr<internal::PullRecord>>* used);
  // Calls fn(s, begin[s], m) for every shard s with m = begin[s + 1] - begin[s] > 0 keys, over
  // `pool` when n is large enough. Returns the error of the first failing shard in shard order
  // (so which error is reported does not depend on the threads).
  Status ForEachShardOf(const std::vector<int64_t>& begin, int64_t n, ThreadPool* pool,
                        const std::function<Status(size_t s, int64_t begin, int64_t m)>& fn) const;

  const TableOptions options_;
  const uint64_t name_hash_;
  const int state_count_;
  const kernels::OptimizerHyper hyper_;
  std::unique_ptr<internal::ShardConfig> config_;  // the shards point at it
  std::vector<std::unique_ptr<internal::TableShard>> shards_;
  std::atomic<int64_t> step_{0};
  std::atomic<int64_t> last_sweep_step_{0};
  std::atomic<int64_t> optimizer_step_{0};
  bool windowed_admission_ = false;
  bool record_pulls_ = true;
  std::mutex records_mu_;
  std::vector<std::unique_ptr<internal::PullRecord>>
      records_;                // GUARDED_BY(records_mu_), oldest first
  int64_t recorded_keys_ = 0;  // GUARDED_BY(records_mu_)
  // Records a push used up or that aged out, reused by later pulls (a server's push of 4 pull
  // parts frees 4 buffers of a few hundred KB each step); at most kMaxRecordedKeys keys' worth.
  std::vector<std::unique_ptr<internal::PullRecord>> spare_records_;  // GUARDED_BY(records_mu_)
  int64_t spare_keys_ = 0;  // GUARDED_BY(records_mu_): their keys' capacity
  std::atomic<uint32_t> epoch_{1};
};

}  // namespace ips::ps

#endif  // IPS_PS_DYNAMIC_TABLE_H_
