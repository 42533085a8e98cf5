// TableShard: one mutex-guarded sub-table of a DynamicTable (see ps/dynamic_table.h for the
// layout and the eviction rules). Owns the shard's slab arena, hash index, free list, admission
// sketch and counters. Every public method locks the shard's mutex itself.
#ifndef IPS_PS_INTERNAL_TABLE_SHARD_H_
#define IPS_PS_INTERNAL_TABLE_SHARD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "kernels/optimizer.h"
#include "ps/dynamic_table.h"
#include "ps/embedding_store.h"
#include "ps/internal/count_sketch.h"
#include "ps/table_options.h"

namespace ips::ps::internal {

// The hash every layer uses for a key: shard choice (high bits), index position (low bits),
// index tag (bits 40..47) and the admission sketch.
inline uint64_t KeyHash(uint64_t key) { return Mix64(key ^ 0x2545f4914f6cdd1dULL); }

// Per-table constants shared (read-only) by all shards of a table.
struct ShardConfig {
  TableOptions options;
  uint64_t name_hash = 0;
  int state_count = 0;
  kernels::OptimizerHyper hyper;
  int64_t rows_per_slab = 0;
  int log2_rows_per_slab = 0;
  int64_t slab_bytes = 0;    // one slab: values, states and metadata
  int64_t budget_bytes = 0;  // per shard, 0 = no cap
  int64_t max_slots = 0;     // slot limit of the 24-bit index entries, a multiple of the slab
  int64_t sketch_bytes = 0;
};

// Bytes of an index able to address `slots` row slots at <= 75% load.
int64_t IndexBytesFor(int64_t slots);
// Bytes of one slab of `rows` rows.
int64_t SlabBytesFor(int64_t rows, int64_t dim, int state_count);

// Sampled rows per eviction decision (Redis uses 5 by default; more is closer to exact LFU).
constexpr int kEvictionSamples = 16;

struct ShardCounters {
  int64_t created_rows = 0;
  int64_t unadmitted_pulls = 0;
  int64_t dropped_push_keys = 0;
  int64_t evicted_ttl = 0;
  int64_t evicted_capacity = 0;
  int64_t pulled_keys = 0;
  int64_t pushed_keys = 0;
  int64_t push_keys_resolved_by_pull = 0;  // pushed keys whose rows a recorded pull had found
};

struct ShardMemory {
  int64_t rows = 0;
  int64_t capacity_rows = 0;
  int64_t slab_bytes = 0;
  int64_t index_bytes = 0;
  int64_t sketch_bytes = 0;
};

// What a pull resolved, kept by DynamicTable for a push of the same keys: the shard's change
// counters as of before the pull, and whether some key was left without a row. The slots the
// pull found stay the keys' rows while no row was removed since (a slot changes key only after
// a removal frees it); a key without a row still has none while no row was created since.
struct PullStamp {
  uint64_t removals = 0;
  uint64_t insertions = 0;
  bool missing = false;
};

// One recorded pull's share of this shard, as a push of the same keys uses it: slots[t] is what
// key t resolved to, pos[t] its position in the pull (offset + pos[t] in the push).
struct ResolvedPart {
  const uint32_t* slots = nullptr;
  const int64_t* pos = nullptr;
  int64_t m = 0;
  int64_t offset = 0;
  PullStamp stamp;
};

struct PushScratch;

class TableShard {
 public:
  TableShard(const ShardConfig* config, uint64_t sample_seed);
  TableShard(const TableShard&) = delete;
  TableShard& operator=(const TableShard&) = delete;

  // Pulls keys[t] (hash hashes[t]) for t in [0, m) into out + pos[t] * dim: keys and hashes are
  // this shard's share of a call, gathered contiguously (read front to back), pos their
  // positions in the caller's arrays. create = false: read-only lookup. With `slots` (and
  // `stamp`), records for PushResolved what each key resolved to (slots[t]) and the shard's
  // state before the pull (*stamp).
  Status Pull(const uint64_t* keys, const uint64_t* hashes, const int64_t* pos, int64_t m,
              float* out, int64_t step, bool create, uint32_t* slots = nullptr,
              PullStamp* stamp = nullptr);
  // Applies grads + pos[t] * dim to the rows of keys[t] (hash hashes[t]; as Pull) as one step
  // of the optimizer with Adam step count `optimizer_step`.
  Status Push(const uint64_t* keys, const uint64_t* hashes, const int64_t* pos, int64_t m,
              const float* grads, int64_t step, int64_t optimizer_step);
  // Push of keys whose rows recorded pulls resolved: parts[0, num_parts) in increasing offset,
  // keys[] and grads[] the whole push's. A part whose stamp no longer holds is looked up key by
  // key; either way the rows, counters and bits are those of Push.
  Status PushResolved(const ResolvedPart* parts, int num_parts, const uint64_t* keys,
                      const float* grads, int64_t step, int64_t optimizer_step);
  Status Insert(uint64_t key, uint64_t hash, const float* value, const float* state, int64_t step);
  bool ReadRow(uint64_t key, uint64_t hash, float* value, float* state, int64_t step) const;
  void ForEachRow(const std::function<void(uint64_t, const float*, const float*)>& fn,
                  int64_t step) const;
  // Removes rows unseen for more than ttl_steps; returns how many.
  int64_t SweepExpired(int64_t step);
  void Snapshot(ShardCounters* counters, ShardMemory* memory) const;

  // ---- Checkpoint support (see DynamicTable's checkpoint section) ----
  // Makes `epoch` the mark of rows touched from now on and starts recording removed keys.
  void SetEpoch(uint32_t epoch);
  // Every live row touched at an epoch > since (since = 0: every live row), with its metadata.
  void ForEachRowSince(uint32_t since, const std::function<void(const RowRecord&)>& fn,
                       int64_t step) const;
  // Appends the keys removed at an epoch > since (in removal order).
  void RemovedSince(uint32_t since, std::vector<uint64_t>* keys) const;
  // Forgets removals recorded at epochs <= epoch.
  void DiscardRemovedThrough(uint32_t epoch);
  // Creates or overwrites a row with its metadata (no admission, no counting as a sighting).
  Status RestoreRow(const RowRecord& row, uint64_t hash, int64_t step);
  // Removes the row of key; false when there is none.
  bool Erase(uint64_t key, uint64_t hash);
  // Windowed admission (see DynamicTable::SetWindowedAdmission): a pull decides on the sketch as
  // of the window's start plus its own sighting, and its sightings are recorded when the window
  // closes (the next Push, or an explicit CloseSightingWindow), sorted, so the sketch does not
  // depend on the order of the window's pulls.
  void SetWindowedAdmission(bool on);
  void CloseSightingWindow();
  // Admission sketch state (with the open window's sightings); false (and nothing copied)
  // without a sketch.
  bool SketchState(std::vector<uint16_t>* counters, int64_t* additions) const;
  void MergeSketch(const uint16_t* counters, int64_t additions);

 private:
  // Per-row metadata, kept together so the key check and the touch cost one cache miss.
  struct RowMeta {
    uint64_t key;        // free slots: the next free slot (intrusive free list)
    uint32_t last_step;  // step of the last pull or push, mod 2^32
    uint32_t freq;       // pulls + pushes, saturating; 0 marks a free slot
  };
  struct Slab {
    std::unique_ptr<uint8_t[]> memory;
    RowMeta* meta = nullptr;  // [R]
    float* values = nullptr;  // [R x dim]
    float* state[2] = {nullptr, nullptr};
    uint32_t* touched = nullptr;  // [R] checkpoint epoch of the last change (incremental saves)
  };
  static constexpr uint32_t kNoSlot = 0xffffffffu;
  static constexpr uint32_t kPaddingSlot = 0xfffffffeu;  // a recorded pull's padding key
  static constexpr int kSlotBits = 24;
  static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;

  // Slot helpers. All private methods require mu_ held.
  Slab& SlabOf(uint32_t slot) { return slabs_[slot >> config_->log2_rows_per_slab]; }
  const Slab& SlabOf(uint32_t slot) const { return slabs_[slot >> config_->log2_rows_per_slab]; }
  int64_t OffsetOf(uint32_t slot) const {
    return static_cast<int64_t>(slot & static_cast<uint32_t>(config_->rows_per_slab - 1));
  }
  RowMeta& MetaAt(uint32_t slot) { return SlabOf(slot).meta[OffsetOf(slot)]; }
  const RowMeta& MetaAt(uint32_t slot) const { return SlabOf(slot).meta[OffsetOf(slot)]; }
  uint64_t KeyAt(uint32_t slot) const { return MetaAt(slot).key; }
  float* ValueAt(uint32_t slot) {
    return SlabOf(slot).values + OffsetOf(slot) * config_->options.dim;
  }
  const float* ValueAt(uint32_t slot) const {
    return SlabOf(slot).values + OffsetOf(slot) * config_->options.dim;
  }
  bool Live(uint32_t slot) const { return MetaAt(slot).freq != 0; }
  // Prefetches the index entry of a key about to be looked up (distance kFar) and the metadata
  // and value of the slot its home entry names (distance kNear), hiding most cache misses of a
  // batch of random keys.
  void Prefetch(uint64_t hash, bool far) const;
  bool Expired(uint32_t slot, int64_t step) const;
  void Touch(uint32_t slot, int64_t step);

  // Index position of key, or -1.
  int64_t FindPos(uint64_t key, uint64_t hash) const;
  void IndexInsert(uint64_t hash, uint32_t slot);
  void IndexEraseAt(uint64_t pos);
  void GrowIndexFor(int64_t slots);
  // Removes the row at index position pos (slot slot) and frees the slot.
  void RemoveAt(uint64_t pos, uint32_t slot);
  // A free slot: from the free list, the current slab, a new slab, or by evicting a row.
  StatusOr<uint32_t> AllocateSlot(int64_t step);
  void EvictOne(int64_t step);
  void InitRow(uint32_t slot, uint64_t key, int64_t step);
  // Push's update of distinct rows items[t] = (slot, key position), in place from
  // grads + position * dim (see Push).
  template <kernels::OptimizerKind K>
  void UpdateDistinctRows(const std::pair<uint32_t, int64_t>* items, int64_t count,
                          const float* grads, int64_t step,
                          const kernels::OptimizerScalars& scalars);
  void CopyState(uint32_t slot, float* state) const;
  // The live row slot of key for a push, or kNoSlot (no row, or an expired one) with the dropped
  // gradient counted.
  uint32_t LiveSlotForPush(uint64_t key, uint64_t hash, int64_t step);
  // Whether a recorded pull's slots are still its keys' rows (see PullStamp).
  bool StillResolves(const PullStamp& stamp) const;
  // The update of Push and PushResolved once scratch->items holds (slot, gradient position) in
  // position order; `duplicates`: some slot occurs twice.
  Status ApplyPushItems(PushScratch* scratch, bool duplicates, const float* grads, int64_t step,
                        int64_t optimizer_step);
  // One sighting of a key without a row (sketch_ set): its estimated count including this one.
  int Sighting(uint64_t hash);
  // Records the open window's sightings into `sketch` in hash order.
  void RecordSightings(CountSketch* sketch) const;

  const ShardConfig* const config_;
  mutable std::mutex mu_;
  std::vector<Slab> slabs_;                 // GUARDED_BY(mu_)
  int64_t next_unused_ = 0;                 // GUARDED_BY(mu_): slots handed out so far
  uint32_t free_head_ = kNoSlot;            // GUARDED_BY(mu_)
  int64_t live_ = 0;                        // GUARDED_BY(mu_)
  std::vector<uint32_t> index_;             // GUARDED_BY(mu_): tag << 24 | (slot + 1)
  uint64_t index_mask_ = 0;                 // GUARDED_BY(mu_)
  std::unique_ptr<CountSketch> sketch_;     // GUARDED_BY(mu_); null when min_count <= 1
  bool windowed_admission_ = false;         // GUARDED_BY(mu_)
  std::vector<uint64_t> window_sightings_;  // GUARDED_BY(mu_): hashes, in arrival order
  Rng sample_rng_;                          // GUARDED_BY(mu_)
  ShardCounters counters_;                  // GUARDED_BY(mu_)
  uint64_t removals_ = 0;                   // GUARDED_BY(mu_): rows removed so far
  uint64_t insertions_ = 0;                 // GUARDED_BY(mu_): index insertions so far
  // Incremental checkpoints: rows changed since epoch E are those with touched > E; removals are
  // recorded (key, epoch) only once a checkpoint started, so a table never checkpointed does not
  // grow a list.
  uint32_t epoch_ = 1;                                  // GUARDED_BY(mu_)
  bool track_removed_ = false;                          // GUARDED_BY(mu_)
  std::vector<std::pair<uint64_t, uint32_t>> removed_;  // GUARDED_BY(mu_)
};

}  // namespace ips::ps::internal

#endif  // IPS_PS_INTERNAL_TABLE_SHARD_H_
