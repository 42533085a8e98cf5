// DynamicTable: one embedding table of 64-bit keys that grows as keys arrive: the storage behind
// LocalEmbeddingStore (in the trainer) and behind each parameter server's shard of a table.
// It owns the rows, their optimizer state, feature admission, TTL and memory-cap eviction; the
// update arithmetic is kernels/optimizer.h's SparseUpdate, called on the table's own storage.
//
// Layout. Keys are hashed (Mix64) to one of num_shards sub-tables, each with its own mutex.
// A shard keeps rows in an arena of slabs of rows_per_slab rows; a slab holds, as separate
// contiguous arrays, the values [R x dim], each optimizer state table [R x dim] (Adagrad: the
// accumulator; Adam: m, v; FTRL: z, n), and per-row metadata (key, last-seen step, LFU count:
// 16 bytes). Separate arrays let SparseUpdate run directly on a slab (row index = slot in the
// slab), with no gather or scatter. The hash index is open addressing with linear probing over
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
#include <vector>

#include "common/status.h"
#include "ps/embedding_store.h"
#include "ps/table_options.h"

namespace ips::ps {

namespace internal {
class TableShard;
struct ShardConfig;
}  // namespace internal

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

  // Rows of keys[0, n) into out[n x dim]; see EmbeddingStore::Pull. Errors: INVALID_ARGUMENT
  // for n < 0 or null pointers with n > 0; RESOURCE_EXHAUSTED when a shard would exceed
  // 2^24 - 1 rows with nothing to evict.
  Status Pull(const uint64_t* keys, int64_t n, float* out);
  // Read-only pull: missing or expired keys read as zeros; creates, counts and touches nothing.
  Status Lookup(const uint64_t* keys, int64_t n, float* out) const;
  // One optimizer step on the rows of keys[0, n) with grads[n x dim]; duplicates are summed,
  // keys without a row dropped (counted). See EmbeddingStore::Push.
  Status Push(const uint64_t* keys, int64_t n, const float* grads);

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

  TableStats Stats() const;
  // Measured memory per live row: Stats().BytesPerRow().
  double BytesPerRow() const { return Stats().BytesPerRow(); }

 private:
  explicit DynamicTable(const TableOptions& options);
  internal::TableShard& ShardOf(uint64_t hash) const;
  // Groups [0, n) by shard: order_ lists key positions shard by shard, begin_[s] starts shard s.
  void GroupByShard(const uint64_t* keys, int64_t n, std::vector<uint64_t>* hashes,
                    std::vector<int64_t>* order, std::vector<int64_t>* begin) const;

  const TableOptions options_;
  const uint64_t name_hash_;
  const int state_count_;
  const kernels::OptimizerHyper hyper_;
  std::unique_ptr<internal::ShardConfig> config_;  // the shards point at it
  std::vector<std::unique_ptr<internal::TableShard>> shards_;
  std::atomic<int64_t> step_{0};
  std::atomic<int64_t> last_sweep_step_{0};
  std::atomic<int64_t> optimizer_step_{0};
};

}  // namespace ips::ps

#endif  // IPS_PS_DYNAMIC_TABLE_H_
