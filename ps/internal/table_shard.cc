#include "ps/internal/table_shard.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "kernels/cpu/optimizer_span.h"

namespace ips::ps::internal {
namespace {

int64_t NextPow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Prefetch distances in keys (see TableShard::Prefetch).
constexpr int64_t kFar = 16;
constexpr int64_t kNear = 8;

int64_t IndexCapacityFor(int64_t slots) {
  return NextPow2(std::max<int64_t>(16, (slots * 4 + 2) / 3));
}

}  // namespace

// Per-thread scratch for Push, reused across calls so a push does not allocate in steady state.
struct PushScratch {
  std::vector<std::pair<uint32_t, int64_t>> items;    // (slot, key position), by position
  std::vector<std::pair<uint32_t, int64_t>> by_slab;  // the same, grouped by slab (stable)
  std::vector<int64_t> slab_begin;                    // counting sort: start of each slab
  std::vector<int32_t> row_of;  // [rows_per_slab]: index in `rows` of a slab row, -1 = none
  std::vector<int64_t> rows;
  std::vector<float> grads;
  // Duplicate detection: seen[slot] == generation when slot already occurs in this push of
  // this shard (a new generation per shard push, so the array is never cleared).
  std::vector<uint32_t> seen;
  uint32_t generation = 0;
};

namespace {

PushScratch& ThreadScratch() {
  thread_local PushScratch scratch;
  return scratch;
}

}  // namespace

// Used when the rows of a push are distinct: each row is updated in place from the caller's
// gradients (no grouping by slab, no gradient copy, no indirect call per row) by the same
// UpdateSpan that kernels::SparseUpdate runs, so the rows are bitwise what the kernel would give.
template <kernels::OptimizerKind K>
void TableShard::UpdateDistinctRows(const std::pair<uint32_t, int64_t>* items, int64_t count,
                                    const float* grads, int64_t step,
                                    const kernels::OptimizerScalars& scalars) {
  const int64_t dim = config_->options.dim;
  const int states = config_->state_count;
  for (int64_t t = 0; t < count; ++t) {
    if (t + kNear < count) {
      // The rows and gradients of a later item: the lookups touched them a while ago, and the
      // gradients of one shard are a strided subset of the caller's array.
      const uint32_t ahead = items[t + kNear].first;
      const Slab& a = SlabOf(ahead);
      const int64_t aoff = OffsetOf(ahead) * dim;
      const float* ag = grads + items[t + kNear].second * dim;
      __builtin_prefetch(a.values + aoff, 1);
      __builtin_prefetch(a.values + aoff + dim - 1, 1);
      for (int k = 0; k < states; ++k) {
        __builtin_prefetch(a.state[k] + aoff, 1);
        __builtin_prefetch(a.state[k] + aoff + dim - 1, 1);
      }
      __builtin_prefetch(ag);
      __builtin_prefetch(ag + dim - 1);
    }
    const uint32_t slot = items[t].first;
    Touch(slot, step);
    Slab& s = SlabOf(slot);
    const int64_t off = OffsetOf(slot) * dim;
    kernels::cpu::UpdateSpan<K, float>(
        scalars, dim, s.values + off, s.state[0] != nullptr ? s.state[0] + off : nullptr,
        s.state[1] != nullptr ? s.state[1] + off : nullptr, grads + items[t].second * dim);
  }
}

int64_t IndexBytesFor(int64_t slots) {
  return IndexCapacityFor(slots) * static_cast<int64_t>(sizeof(uint32_t));
}

int64_t SlabBytesFor(int64_t rows, int64_t dim, int state_count) {
  // + 16: TableShard::RowMeta; + 4: the touched epoch.
  return rows * (dim * static_cast<int64_t>(sizeof(float)) * (1 + state_count) + 16 + 4);
}

TableShard::TableShard(const ShardConfig* config, uint64_t sample_seed)
    : config_(config), sample_rng_(sample_seed) {
  static_assert(sizeof(RowMeta) == 16, "SlabBytesFor counts 16 + 4 bytes of metadata per row");
  if (config_->options.min_count > 1)
    sketch_ = std::make_unique<CountSketch>(config_->options.sketch_width);
}

__attribute__((always_inline)) inline bool TableShard::Expired(uint32_t slot, int64_t step) const {
  const int64_t ttl = config_->options.ttl_steps;
  if (ttl <= 0) return false;
  // Steps are kept mod 2^32; the signed difference is exact for ages below 2^31 and makes a
  // step that went backwards (a restored checkpoint) read as "recent", never as expired.
  const int32_t age = static_cast<int32_t>(static_cast<uint32_t>(step) - MetaAt(slot).last_step);
  return age > ttl;
}

__attribute__((always_inline)) inline void TableShard::Touch(uint32_t slot, int64_t step) {
  RowMeta& m = MetaAt(slot);
  m.last_step = static_cast<uint32_t>(step);
  if (m.freq != std::numeric_limits<uint32_t>::max()) ++m.freq;
  SlabOf(slot).touched[OffsetOf(slot)] = epoch_;
}

__attribute__((always_inline)) inline void TableShard::Prefetch(uint64_t hash, bool far) const {
  if (index_.empty()) return;
  const uint32_t* entry = &index_[hash & index_mask_];
  if (far) {
    __builtin_prefetch(entry);
    return;
  }
  const uint32_t e = *entry;
  if (e == 0) return;
  const uint32_t slot = (e & kSlotMask) - 1;
  if (static_cast<int64_t>(slot) >= next_unused_) return;
  __builtin_prefetch(&MetaAt(slot));
  // A row of dim floats usually straddles two cache lines; Touch writes its epoch word.
  const float* value = ValueAt(slot);
  __builtin_prefetch(value);
  __builtin_prefetch(value + config_->options.dim - 1);
  __builtin_prefetch(&SlabOf(slot).touched[OffsetOf(slot)]);
}

__attribute__((always_inline)) inline int64_t TableShard::FindPos(uint64_t key,
                                                                  uint64_t hash) const {
  if (index_.empty()) return -1;
  const uint32_t tag = static_cast<uint32_t>((hash >> 40) & 0xff);
  uint64_t pos = hash & index_mask_;
  for (;;) {
    const uint32_t e = index_[pos];
    if (e == 0) return -1;
    if ((e >> kSlotBits) == tag && KeyAt((e & kSlotMask) - 1) == key)
      return static_cast<int64_t>(pos);
    pos = (pos + 1) & index_mask_;
  }
}

void TableShard::IndexInsert(uint64_t hash, uint32_t slot) {
  ++insertions_;
  const uint32_t entry = (static_cast<uint32_t>((hash >> 40) & 0xff) << kSlotBits) | (slot + 1);
  uint64_t pos = hash & index_mask_;
  while (index_[pos] != 0) pos = (pos + 1) & index_mask_;
  index_[pos] = entry;
}

void TableShard::IndexEraseAt(uint64_t i) {
  // Backward-shift deletion for linear probing: move later entries of the probe run into the
  // hole unless that would put them before their home position.
  uint64_t j = i;
  for (;;) {
    j = (j + 1) & index_mask_;
    const uint32_t e = index_[j];
    if (e == 0) break;
    const uint64_t home = KeyHash(KeyAt((e & kSlotMask) - 1)) & index_mask_;
    const bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
    if (movable) {
      index_[i] = e;
      i = j;
    }
  }
  index_[i] = 0;
}

void TableShard::GrowIndexFor(int64_t slots) {
  const int64_t cap = IndexCapacityFor(slots);
  if (cap <= static_cast<int64_t>(index_.size())) return;
  std::vector<uint32_t> old;
  old.swap(index_);
  index_.assign(static_cast<size_t>(cap), 0);
  index_.shrink_to_fit();
  index_mask_ = static_cast<uint64_t>(cap - 1);
  for (uint32_t e : old) {
    if (e == 0) continue;
    const uint32_t slot = (e & kSlotMask) - 1;
    IndexInsert(KeyHash(KeyAt(slot)), slot);
  }
}

void TableShard::RemoveAt(uint64_t pos, uint32_t slot) {
  ++removals_;
  IndexEraseAt(pos);
  RowMeta& m = MetaAt(slot);
  if (track_removed_) removed_.emplace_back(m.key, epoch_);
  m.freq = 0;
  m.key = free_head_;
  free_head_ = slot;
  --live_;
}

void TableShard::EvictOne(int64_t step) {
  // Redis-style approximate LFU/LRU: the worst of a few random live rows.
  const bool lru = config_->options.eviction == TableOptions::Eviction::kLru;
  const uint32_t now = static_cast<uint32_t>(step);
  int64_t best = -1;
  uint64_t best_score = 0;
  int found = 0;
  auto consider = [&](uint32_t slot) {
    const RowMeta& m = MetaAt(slot);
    // Higher score = better victim. LRU: age; LFU: fewer uses, then older.
    const uint32_t age = now - m.last_step;
    const uint64_t score = lru ? age : ((static_cast<uint64_t>(~m.freq) << 32) | age);
    if (best < 0 || score > best_score) {
      best = slot;
      best_score = score;
    }
    ++found;
  };
  for (int tries = 0; tries < 8 * kEvictionSamples && found < kEvictionSamples; ++tries) {
    const uint32_t slot =
        static_cast<uint32_t>(sample_rng_.UniformInt(static_cast<uint64_t>(next_unused_)));
    if (Live(slot)) consider(slot);
  }
  if (best < 0) {
    // Mostly free slots: scan from a random start for any live row (live_ > 0 here).
    const int64_t start =
        static_cast<int64_t>(sample_rng_.UniformInt(static_cast<uint64_t>(next_unused_)));
    for (int64_t k = 0; k < next_unused_ && best < 0; ++k) {
      const uint32_t slot = static_cast<uint32_t>((start + k) % next_unused_);
      if (Live(slot)) consider(slot);
    }
  }
  const uint32_t victim = static_cast<uint32_t>(best);
  const uint64_t key = KeyAt(victim);
  const int64_t pos = FindPos(key, KeyHash(key));
  RemoveAt(static_cast<uint64_t>(pos), victim);
  ++counters_.evicted_capacity;
}

StatusOr<uint32_t> TableShard::AllocateSlot(int64_t step) {
  auto pop_free = [this]() {
    const uint32_t slot = free_head_;
    free_head_ = static_cast<uint32_t>(KeyAt(slot));
    return slot;
  };
  if (free_head_ != kNoSlot) return pop_free();
  const int64_t capacity = static_cast<int64_t>(slabs_.size()) * config_->rows_per_slab;
  if (next_unused_ < capacity) return static_cast<uint32_t>(next_unused_++);

  const int64_t new_capacity = capacity + config_->rows_per_slab;
  const bool over_slots = new_capacity > config_->max_slots;
  const bool over_budget =
      config_->budget_bytes > 0 && (static_cast<int64_t>(slabs_.size()) + 1) * config_->slab_bytes +
                                           IndexBytesFor(new_capacity) + config_->sketch_bytes >
                                       config_->budget_bytes;
  if ((over_slots || over_budget) && live_ > 0) {
    EvictOne(step);
    return pop_free();
  }
  if (over_slots) {
    return ResourceExhaustedError("table '" + config_->options.name + "': a shard is full (" +
                                  std::to_string(config_->max_slots) + " rows); raise num_shards");
  }
  // Over budget with no live row happens only if the cap holds less than one slab, which
  // DynamicTable::Create rejects.
  const int64_t r = config_->rows_per_slab;
  const int64_t dim = config_->options.dim;
  Slab slab;
  slab.memory.reset(new uint8_t[static_cast<size_t>(config_->slab_bytes)]);
  uint8_t* p = slab.memory.get();
  slab.meta = reinterpret_cast<RowMeta*>(p);
  p += r * sizeof(RowMeta);
  slab.values = reinterpret_cast<float*>(p);
  p += r * dim * sizeof(float);
  for (int k = 0; k < config_->state_count; ++k) {
    slab.state[k] = reinterpret_cast<float*>(p);
    p += r * dim * sizeof(float);
  }
  slab.touched = reinterpret_cast<uint32_t*>(p);
  std::memset(slab.meta, 0, static_cast<size_t>(r) * sizeof(RowMeta));
  std::memset(slab.touched, 0, static_cast<size_t>(r) * sizeof(uint32_t));
  slabs_.push_back(std::move(slab));
  GrowIndexFor(new_capacity);
  return static_cast<uint32_t>(next_unused_++);
}

void TableShard::InitRow(uint32_t slot, uint64_t key, int64_t step) {
  Slab& s = SlabOf(slot);
  const int64_t off = OffsetOf(slot);
  const int64_t dim = config_->options.dim;
  s.meta[off] = RowMeta{key, static_cast<uint32_t>(step), 1};
  s.touched[off] = epoch_;
  InitializeRow(config_->options.initializer, dim, config_->name_hash, config_->options.seed, key,
                s.values + off * dim);
  for (int k = 0; k < config_->state_count; ++k) {
    // Adagrad's accumulator starts at initial_accumulator; Adam's m, v and FTRL's z, n at 0.
    const float v = (config_->options.optimizer.type == OptimizerOptions::Type::kAdagrad && k == 0)
                        ? static_cast<float>(config_->options.optimizer.initial_accumulator)
                        : 0.0f;
    std::fill_n(s.state[k] + off * dim, dim, v);
  }
  ++live_;
  ++counters_.created_rows;
}

void TableShard::CopyState(uint32_t slot, float* state) const {
  const Slab& s = SlabOf(slot);
  const int64_t dim = config_->options.dim;
  for (int k = 0; k < config_->state_count; ++k)
    std::memcpy(state + k * dim, s.state[k] + OffsetOf(slot) * dim, dim * sizeof(float));
}

int TableShard::Sighting(uint64_t hash) {
  if (!windowed_admission_) return sketch_->Add(hash);
  window_sightings_.push_back(hash);
  return std::min(sketch_->Estimate(hash) + 1, 0xffff);
}

void TableShard::RecordSightings(CountSketch* sketch) const {
  // Sorted: a conservative-update sketch (and its aging) depends on the order of additions.
  std::vector<uint64_t> sorted = window_sightings_;
  std::sort(sorted.begin(), sorted.end());
  for (uint64_t h : sorted) sketch->Add(h);
}

void TableShard::SetWindowedAdmission(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!on && sketch_ != nullptr) RecordSightings(sketch_.get());
  window_sightings_.clear();
  windowed_admission_ = on;
}

void TableShard::CloseSightingWindow() {
  std::lock_guard<std::mutex> lock(mu_);
  if (sketch_ == nullptr || window_sightings_.empty()) return;
  RecordSightings(sketch_.get());
  window_sightings_.clear();
}

Status TableShard::Pull(const uint64_t* keys, const uint64_t* hashes, const int64_t* pos, int64_t m,
                        float* out, int64_t step, bool create, uint32_t* slots, PullStamp* stamp) {
  const int64_t dim = config_->options.dim;
  const int64_t min_count = config_->options.min_count;
  const bool padding = config_->options.has_padding_key;
  const uint64_t padding_key = config_->options.padding_key;
  std::lock_guard<std::mutex> lock(mu_);
  if (stamp != nullptr) {
    // Counters as of before this pull: a row it removes (TTL, the memory cap) may free a slot
    // that a key resolved earlier in it had, and a key it leaves without a row may get one from
    // a later duplicate; either way the record is then not used.
    stamp->removals = removals_;
    stamp->insertions = insertions_;
    stamp->missing = false;
  }
  // Records what key t resolved to (a no-op without `slots`).
  auto record = [&](int64_t t, uint32_t slot) {
    if (slots == nullptr) return;
    slots[t] = slot;
    if (slot == kNoSlot) stamp->missing = true;
  };
  for (int64_t t = 0; t < m; ++t) {
    if (t + kFar < m) Prefetch(hashes[t + kFar], /*far=*/true);
    if (t + kNear < m) Prefetch(hashes[t + kNear], /*far=*/false);
    const int64_t i = pos[t];
    const uint64_t key = keys[t];
    const uint64_t h = hashes[t];
    float* dst = out + i * dim;
    if (padding && key == padding_key) {
      std::fill_n(dst, dim, 0.0f);
      record(t, kPaddingSlot);
      continue;
    }
    int64_t at = FindPos(key, h);
    if (at >= 0) {
      const uint32_t slot = (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1;
      if (!Expired(slot, step)) {
        if (create) Touch(slot, step);
        std::memcpy(dst, ValueAt(slot), dim * sizeof(float));
        record(t, slot);
        continue;
      }
      if (create) {
        RemoveAt(static_cast<uint64_t>(at), slot);
        ++counters_.evicted_ttl;
      }
    }
    if (!create) {
      std::fill_n(dst, dim, 0.0f);
      record(t, kNoSlot);
      continue;
    }
    if (sketch_ != nullptr && Sighting(h) < min_count) {
      std::fill_n(dst, dim, 0.0f);
      ++counters_.unadmitted_pulls;
      record(t, kNoSlot);
      continue;
    }
    IPS_ASSIGN_OR_RETURN(const uint32_t slot, AllocateSlot(step));
    InitRow(slot, key, step);
    IndexInsert(h, slot);
    std::memcpy(dst, ValueAt(slot), dim * sizeof(float));
    record(t, slot);
  }
  if (create) counters_.pulled_keys += m;
  return Status::Ok();
}

namespace {

// A push's (slot, gradient position) items, collected into scratch->items with duplicate
// detection (a new generation of `seen` per shard push, so the array is never cleared).
class PushItems {
 public:
  PushItems(PushScratch* scratch, int64_t slots) : s_(*scratch) {
    s_.items.clear();
    if (s_.seen.size() < static_cast<size_t>(slots)) s_.seen.resize(static_cast<size_t>(slots));
    if (++s_.generation == 0) {  // wrapped: forget every stamp
      std::fill(s_.seen.begin(), s_.seen.end(), 0u);
      s_.generation = 1;
    }
  }
  void Add(uint32_t slot, int64_t position) {
    s_.items.emplace_back(slot, position);
    duplicates_ |= s_.seen[slot] == s_.generation;
    s_.seen[slot] = s_.generation;
  }
  bool duplicates() const { return duplicates_; }

 private:
  PushScratch& s_;
  bool duplicates_ = false;
};

}  // namespace

uint32_t TableShard::LiveSlotForPush(uint64_t key, uint64_t hash, int64_t step) {
  const int64_t at = FindPos(key, hash);
  if (at >= 0) {
    const uint32_t slot = (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1;
    if (!Expired(slot, step)) return slot;
  }
  ++counters_.dropped_push_keys;
  return kNoSlot;
}

Status TableShard::Push(const uint64_t* keys, const uint64_t* hashes, const int64_t* pos, int64_t m,
                        const float* grads, int64_t step, int64_t optimizer_step) {
  const bool padding = config_->options.has_padding_key;
  const uint64_t padding_key = config_->options.padding_key;
  PushScratch& scratch = ThreadScratch();
  std::lock_guard<std::mutex> lock(mu_);
  counters_.pushed_keys += m;
  PushItems items(&scratch, next_unused_);
  for (int64_t t = 0; t < m; ++t) {
    if (t + kFar < m) Prefetch(hashes[t + kFar], /*far=*/true);
    if (t + kNear < m) Prefetch(hashes[t + kNear], /*far=*/false);
    if (padding && keys[t] == padding_key) continue;
    const uint32_t slot = LiveSlotForPush(keys[t], hashes[t], step);
    if (slot != kNoSlot) items.Add(slot, pos[t]);
  }
  return ApplyPushItems(&scratch, items.duplicates(), grads, step, optimizer_step);
}

bool TableShard::StillResolves(const PullStamp& stamp) const {
  return stamp.removals == removals_ && (!stamp.missing || stamp.insertions == insertions_);
}

Status TableShard::PushResolved(const ResolvedPart* parts, int num_parts, const uint64_t* keys,
                                const float* grads, int64_t step, int64_t optimizer_step) {
  const bool padding = config_->options.has_padding_key;
  const uint64_t padding_key = config_->options.padding_key;
  PushScratch& scratch = ThreadScratch();
  std::lock_guard<std::mutex> lock(mu_);
  PushItems items(&scratch, next_unused_);
  for (int k = 0; k < num_parts; ++k) {
    const ResolvedPart& part = parts[k];
    counters_.pushed_keys += part.m;
    const bool resolved = StillResolves(part.stamp);
    if (resolved) counters_.push_keys_resolved_by_pull += part.m;
    for (int64_t t = 0; t < part.m; ++t) {
      const int64_t i = part.offset + part.pos[t];
      if (!resolved) {  // rows changed since the pull: look the key up as Push does
        if (padding && keys[i] == padding_key) continue;
        const uint32_t slot = LiveSlotForPush(keys[i], KeyHash(keys[i]), step);
        if (slot != kNoSlot) items.Add(slot, i);
        continue;
      }
      if (t + kNear < part.m && part.slots[t + kNear] < kPaddingSlot) {
        const uint32_t ahead = part.slots[t + kNear];
        __builtin_prefetch(&MetaAt(ahead));
        __builtin_prefetch(&SlabOf(ahead).touched[OffsetOf(ahead)]);
      }
      const uint32_t slot = part.slots[t];
      if (slot == kPaddingSlot) continue;
      if (slot == kNoSlot || Expired(slot, step)) {
        ++counters_.dropped_push_keys;
        continue;
      }
      items.Add(slot, i);
    }
  }
  return ApplyPushItems(&scratch, items.duplicates(), grads, step, optimizer_step);
}

Status TableShard::ApplyPushItems(PushScratch* scratch_ptr, bool duplicates, const float* grads,
                                  int64_t step, int64_t optimizer_step) {
  PushScratch& scratch = *scratch_ptr;
  auto& items = scratch.items;
  const int64_t dim = config_->options.dim;
  const kernels::OptimizerHyper& hyper = config_->hyper;
  if (!duplicates && (hyper.kind != kernels::OptimizerKind::kFtrl || hyper.ftrl_alpha > 0)) {
    // Distinct rows (the trainer deduplicates its keys): each row gets its own gradient, so the
    // rows can be updated in input order straight from `grads`. Below, duplicates are summed
    // first (in input order) and the kernel runs per slab; both give the same bits.
    const kernels::OptimizerScalars scalars = kernels::MakeOptimizerScalars(hyper, optimizer_step);
    const int64_t count = static_cast<int64_t>(items.size());
    switch (hyper.kind) {
      case kernels::OptimizerKind::kSgd:
        UpdateDistinctRows<kernels::OptimizerKind::kSgd>(items.data(), count, grads, step, scalars);
        break;
      case kernels::OptimizerKind::kAdagrad:
        UpdateDistinctRows<kernels::OptimizerKind::kAdagrad>(items.data(), count, grads, step,
                                                             scalars);
        break;
      case kernels::OptimizerKind::kAdam:
        UpdateDistinctRows<kernels::OptimizerKind::kAdam>(items.data(), count, grads, step,
                                                          scalars);
        break;
      case kernels::OptimizerKind::kFtrl:
        UpdateDistinctRows<kernels::OptimizerKind::kFtrl>(items.data(), count, grads, step,
                                                          scalars);
        break;
    }
    return Status::Ok();
  }
  // Group by slab with a stable counting sort (a shard has few slabs): within a slab the keys
  // stay in input order, so the gradients are read front to back (not at random, as a sort by
  // slot would) and duplicates are summed in input order, whatever the thread scheduling.
  const size_t num_slabs = slabs_.size();
  const int log2_rows = config_->log2_rows_per_slab;
  auto& begin = scratch.slab_begin;
  begin.assign(num_slabs + 1, 0);
  for (const auto& it : items) ++begin[(it.first >> log2_rows) + 1];
  for (size_t k = 0; k < num_slabs; ++k) begin[k + 1] += begin[k];
  auto& by_slab = scratch.by_slab;
  by_slab.resize(items.size());
  {
    std::vector<int64_t>& fill = scratch.rows;  // reused as the fill cursors
    fill.assign(begin.begin(), begin.end() - 1);
    for (const auto& it : items) by_slab[static_cast<size_t>(fill[it.first >> log2_rows]++)] = it;
  }
  kernels::Context ctx;  // CPU, calling thread: concurrency comes from the callers
  kernels::SparseUpdateArgs<float> args;
  args.hyper = config_->hyper;
  args.step = optimizer_step;
  args.table_rows = config_->rows_per_slab;
  args.dim = dim;
  auto& rows = scratch.rows;
  auto& g = scratch.grads;
  auto& row_of = scratch.row_of;
  if (row_of.size() != static_cast<size_t>(config_->rows_per_slab))
    row_of.assign(static_cast<size_t>(config_->rows_per_slab), -1);
  for (size_t slab_id = 0; slab_id < num_slabs; ++slab_id) {
    const int64_t b0 = begin[slab_id], b1 = begin[slab_id + 1];
    if (b0 == b1) continue;
    rows.clear();
    if (g.size() < static_cast<size_t>((b1 - b0) * dim))
      g.resize(static_cast<size_t>((b1 - b0) * dim));
    for (int64_t b = b0; b < b1; ++b) {
      const uint32_t slot = by_slab[b].first;
      const int64_t off = OffsetOf(slot);
      const float* src = grads + by_slab[b].second * dim;
      if (row_of[off] >= 0) {  // a duplicate key: its gradients add up
        float* dst = g.data() + row_of[off] * dim;
        for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
        continue;
      }
      row_of[off] = static_cast<int32_t>(rows.size());
      std::copy_n(src, dim, g.data() + rows.size() * dim);
      rows.push_back(off);
      Touch(slot, step);
    }
    for (int64_t r : rows) row_of[r] = -1;
    Slab& s = slabs_[slab_id];
    args.param = s.values;
    args.state0 = s.state[0];
    args.state1 = s.state[1];
    args.num_rows = static_cast<int64_t>(rows.size());
    args.row_indices = rows.data();
    args.grad = g.data();
    IPS_RETURN_IF_ERROR(kernels::SparseUpdate<float>(ctx, args));
  }
  return Status::Ok();
}

Status TableShard::Insert(uint64_t key, uint64_t hash, const float* value, const float* state,
                          int64_t step) {
  const int64_t dim = config_->options.dim;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t at = FindPos(key, hash);
  uint32_t slot;
  if (at >= 0) {
    slot = (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1;
    Touch(slot, step);
  } else {
    IPS_ASSIGN_OR_RETURN(slot, AllocateSlot(step));
    InitRow(slot, key, step);  // sets metadata and the initial optimizer state
    IndexInsert(hash, slot);
  }
  Slab& s = SlabOf(slot);
  const int64_t off = OffsetOf(slot);
  std::memcpy(s.values + off * dim, value, dim * sizeof(float));
  if (state != nullptr) {
    for (int k = 0; k < config_->state_count; ++k)
      std::memcpy(s.state[k] + off * dim, state + k * dim, dim * sizeof(float));
  }
  return Status::Ok();
}

bool TableShard::ReadRow(uint64_t key, uint64_t hash, float* value, float* state,
                         int64_t step) const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t at = FindPos(key, hash);
  if (at < 0) return false;
  const uint32_t slot = (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1;
  if (Expired(slot, step)) return false;
  if (value != nullptr) std::memcpy(value, ValueAt(slot), config_->options.dim * sizeof(float));
  if (state != nullptr) CopyState(slot, state);
  return true;
}

void TableShard::ForEachRow(const std::function<void(uint64_t, const float*, const float*)>& fn,
                            int64_t step) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<float> state(static_cast<size_t>(config_->state_count * config_->options.dim));
  for (int64_t k = 0; k < next_unused_; ++k) {
    const uint32_t slot = static_cast<uint32_t>(k);
    if (!Live(slot) || Expired(slot, step)) continue;
    CopyState(slot, state.data());
    fn(KeyAt(slot), ValueAt(slot), state.empty() ? nullptr : state.data());
  }
}

int64_t TableShard::SweepExpired(int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t evicted = 0;
  for (int64_t k = 0; k < next_unused_; ++k) {
    const uint32_t slot = static_cast<uint32_t>(k);
    if (!Live(slot) || !Expired(slot, step)) continue;
    const uint64_t key = KeyAt(slot);
    RemoveAt(static_cast<uint64_t>(FindPos(key, KeyHash(key))), slot);
    ++evicted;
  }
  counters_.evicted_ttl += evicted;
  return evicted;
}

void TableShard::Snapshot(ShardCounters* counters, ShardMemory* memory) const {
  std::lock_guard<std::mutex> lock(mu_);
  *counters = counters_;
  memory->rows = live_;
  memory->capacity_rows = static_cast<int64_t>(slabs_.size()) * config_->rows_per_slab;
  memory->slab_bytes = static_cast<int64_t>(slabs_.size()) * config_->slab_bytes;
  memory->index_bytes = static_cast<int64_t>(index_.capacity() * sizeof(uint32_t));
  memory->sketch_bytes = sketch_ != nullptr ? sketch_->bytes() : 0;
}

void TableShard::SetEpoch(uint32_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  epoch_ = epoch;
  track_removed_ = true;
}

void TableShard::ForEachRowSince(uint32_t since, const std::function<void(const RowRecord&)>& fn,
                                 int64_t step) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<float> state(static_cast<size_t>(config_->state_count * config_->options.dim));
  RowRecord r;
  for (int64_t k = 0; k < next_unused_; ++k) {
    const uint32_t slot = static_cast<uint32_t>(k);
    if (!Live(slot) || Expired(slot, step)) continue;
    if (SlabOf(slot).touched[OffsetOf(slot)] <= since) continue;
    CopyState(slot, state.data());
    const RowMeta& m = MetaAt(slot);
    r.key = m.key;
    r.value = ValueAt(slot);
    r.state = state.empty() ? nullptr : state.data();
    r.last_step = m.last_step;
    r.freq = m.freq;
    fn(r);
  }
}

void TableShard::RemovedSince(uint32_t since, std::vector<uint64_t>* keys) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, epoch] : removed_)
    if (epoch > since) keys->push_back(key);
}

void TableShard::DiscardRemovedThrough(uint32_t epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  removed_.erase(std::remove_if(removed_.begin(), removed_.end(),
                                [epoch](const auto& e) { return e.second <= epoch; }),
                 removed_.end());
  removed_.shrink_to_fit();
}

Status TableShard::RestoreRow(const RowRecord& row, uint64_t hash, int64_t step) {
  const int64_t dim = config_->options.dim;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t at = FindPos(row.key, hash);
  uint32_t slot;
  if (at >= 0) {
    slot = (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1;
  } else {
    IPS_ASSIGN_OR_RETURN(slot, AllocateSlot(step));
    InitRow(slot, row.key, step);
    IndexInsert(hash, slot);
  }
  Slab& s = SlabOf(slot);
  const int64_t off = OffsetOf(slot);
  // freq 0 marks a free slot: a restored live row is used at least once.
  s.meta[off] = RowMeta{row.key, row.last_step, std::max<uint32_t>(row.freq, 1)};
  s.touched[off] = epoch_;
  std::memcpy(s.values + off * dim, row.value, dim * sizeof(float));
  if (row.state != nullptr) {
    for (int k = 0; k < config_->state_count; ++k)
      std::memcpy(s.state[k] + off * dim, row.state + k * dim, dim * sizeof(float));
  }
  return Status::Ok();
}

bool TableShard::Erase(uint64_t key, uint64_t hash) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t at = FindPos(key, hash);
  if (at < 0) return false;
  RemoveAt(static_cast<uint64_t>(at), (index_[static_cast<uint64_t>(at)] & kSlotMask) - 1);
  return true;
}

bool TableShard::SketchState(std::vector<uint16_t>* counters, int64_t* additions) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (sketch_ == nullptr) return false;
  if (window_sightings_.empty()) {
    *counters = sketch_->counters();
    *additions = sketch_->additions();
    return true;
  }
  CountSketch closed = *sketch_;  // as the window's close will leave it
  RecordSightings(&closed);
  *counters = closed.counters();
  *additions = closed.additions();
  return true;
}

void TableShard::MergeSketch(const uint16_t* counters, int64_t additions) {
  std::lock_guard<std::mutex> lock(mu_);
  if (sketch_ != nullptr) sketch_->MergeMax(counters, additions);
}

}  // namespace ips::ps::internal
