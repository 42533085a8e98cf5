#include "ps/dynamic_table.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <utility>

#include "common/random.h"
#include "ps/internal/table_shard.h"

namespace ips::ps {
namespace internal {

// Per-thread scratch for grouping keys by shard: order lists key positions shard by shard
// (begin[s] starts shard s), keys and hashes are the keys and their hashes in that order, so
// that each shard reads its share front to back instead of gathering it from the caller's
// arrays key by key.
struct GroupScratch {
  std::vector<uint64_t> input_hashes;  // hash of keys[i], in input order
  std::vector<uint64_t> keys;
  std::vector<uint64_t> hashes;
  std::vector<int64_t> order;
  std::vector<int64_t> begin;
  std::vector<int64_t> fill;
};

// A pull's resolution, kept for a push of the same keys (see DynamicTable::Pull): the keys in
// input order, their grouping by shard (order, begin) and, in grouped order, the slot each
// resolved to, with each shard's stamp.
struct PullRecord {
  std::vector<uint64_t> keys;
  std::vector<int64_t> order;
  std::vector<int64_t> begin;
  std::vector<uint32_t> slots;
  std::vector<PullStamp> stamps;
};

}  // namespace internal

namespace {

int Log2(int64_t x) {
  int l = 0;
  while ((int64_t{1} << l) < x) ++l;
  return l;
}

using internal::GroupScratch;

GroupScratch& ThreadGroupScratch() {
  thread_local GroupScratch scratch;
  return scratch;
}

Status CheckArgs(const TableOptions& o, const uint64_t* keys, int64_t n, const void* data,
                 const char* what) {
  if (n < 0) return InvalidArgumentError("table '" + o.name + "': negative key count");
  if (n > 0 && (keys == nullptr || data == nullptr))
    return InvalidArgumentError("table '" + o.name + "': null keys or " + what);
  return Status::Ok();
}

}  // namespace

DynamicTable::DynamicTable(const TableOptions& options)
    : options_(options),
      name_hash_(TableNameHash(options.name)),
      state_count_(kernels::OptimizerStateCount(ToOptimizerKind(options.optimizer.type))),
      hyper_(ToOptimizerHyper(options.optimizer)) {}

DynamicTable::~DynamicTable() = default;

StatusOr<std::unique_ptr<DynamicTable>> DynamicTable::Create(const TableOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateTableOptions(options));
  std::unique_ptr<DynamicTable> table(new DynamicTable(options));
  auto config = std::make_unique<internal::ShardConfig>();
  config->options = options;
  config->name_hash = table->name_hash_;
  config->state_count = table->state_count_;
  config->hyper = table->hyper_;
  config->rows_per_slab = options.rows_per_slab;
  config->log2_rows_per_slab = Log2(options.rows_per_slab);
  config->slab_bytes =
      internal::SlabBytesFor(options.rows_per_slab, options.dim, table->state_count_);
  // Index entries carry slot + 1 in 24 bits.
  config->max_slots = (((int64_t{1} << 24) - 1) / options.rows_per_slab) * options.rows_per_slab;
  config->sketch_bytes =
      options.min_count > 1
          ? internal::CountSketch::kDepth * options.sketch_width * int64_t{sizeof(uint16_t)}
          : 0;
  if (options.max_memory_mb > 0) {
    // ValidateTableOptions checked that each shard's share holds one slab (MinMemoryMb).
    config->budget_bytes = options.max_memory_mb * (int64_t{1} << 20) / options.num_shards;
  }
  table->config_ = std::move(config);
  for (int s = 0; s < options.num_shards; ++s) {
    table->shards_.push_back(std::make_unique<internal::TableShard>(
        table->config_.get(), Mix64(table->name_hash_ ^ options.seed ^ static_cast<uint64_t>(s))));
  }
  return table;
}

internal::TableShard& DynamicTable::ShardOf(uint64_t hash) const {
  // Multiply-shift on the high half: uniform for any shard count.
  const uint64_t s = ((hash >> 32) * static_cast<uint64_t>(shards_.size())) >> 32;
  return *shards_[s];
}

void DynamicTable::GroupByShard(const uint64_t* keys, int64_t n, internal::GroupScratch* g) const {
  const uint64_t num_shards = shards_.size();
  g->input_hashes.resize(static_cast<size_t>(n));
  g->keys.resize(static_cast<size_t>(n));
  g->hashes.resize(static_cast<size_t>(n));
  g->order.resize(static_cast<size_t>(n));
  g->begin.assign(num_shards + 1, 0);
  uint64_t* h = g->input_hashes.data();
  for (int64_t i = 0; i < n; ++i) {
    h[i] = internal::KeyHash(keys[i]);
    ++g->begin[(((h[i] >> 32) * num_shards) >> 32) + 1];
  }
  for (uint64_t s = 0; s < num_shards; ++s) g->begin[s + 1] += g->begin[s];
  g->fill.assign(g->begin.begin(), g->begin.end() - 1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = g->fill[((h[i] >> 32) * num_shards) >> 32]++;
    g->order[at] = i;
    g->hashes[at] = h[i];
    g->keys[at] = keys[i];
  }
}

Status DynamicTable::ForEachShardOf(
    const std::vector<int64_t>& begin, int64_t n, ThreadPool* pool,
    const std::function<Status(size_t s, int64_t begin, int64_t m)>& fn) const {
  const size_t num_shards = shards_.size();
  auto run = [&](size_t s) -> Status {
    const int64_t m = begin[s + 1] - begin[s];
    return m == 0 ? Status::Ok() : fn(s, begin[s], m);
  };
  if (pool == nullptr || pool->num_threads() < 2 || n < kParallelKeys) {
    for (size_t s = 0; s < num_shards; ++s) IPS_RETURN_IF_ERROR(run(s));
    return Status::Ok();
  }
  // Shards are claimed one at a time rather than split up front: a pool thread takes tens of
  // microseconds to wake (and on a busy host sometimes a whole time slice), and meanwhile the
  // calling thread, which starts at once, keeps claiming shards.
  std::vector<Status> status(num_shards);
  std::atomic<size_t> next{0};
  pool->ParallelFor(pool->num_threads(), 1, [&](int64_t, int64_t) {
    for (size_t s = next.fetch_add(1); s < num_shards; s = next.fetch_add(1)) status[s] = run(s);
  });
  for (const Status& s : status) IPS_RETURN_IF_ERROR(s);
  return Status::Ok();
}

Status DynamicTable::Pull(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool) {
  if (!record_pulls_ || n < kMinRecordedPull)
    return ReadRows(keys, n, out, pool, /*create=*/true, nullptr);
  std::unique_ptr<internal::PullRecord> record;
  {
    std::lock_guard<std::mutex> lock(records_mu_);
    if (!spare_records_.empty()) {
      record = std::move(spare_records_.back());
      spare_records_.pop_back();
      spare_keys_ -= static_cast<int64_t>(record->keys.capacity());
    }
  }
  if (record == nullptr) record = std::make_unique<internal::PullRecord>();
  IPS_RETURN_IF_ERROR(ReadRows(keys, n, out, pool, /*create=*/true, record.get()));
  record->keys.assign(keys, keys + n);
  std::lock_guard<std::mutex> lock(records_mu_);
  recorded_keys_ += n;
  records_.push_back(std::move(record));
  // Pulls never pushed (or pushed with other keys) age out; a record's memory is 20 bytes a key.
  while (records_.size() > kMaxPullRecords || recorded_keys_ > kMaxRecordedKeys) {
    recorded_keys_ -= static_cast<int64_t>(records_.front()->keys.size());
    KeepSpare(std::move(records_.front()));
    records_.erase(records_.begin());
  }
  return Status::Ok();
}

void DynamicTable::KeepSpare(std::unique_ptr<internal::PullRecord> record) {
  const int64_t keys = static_cast<int64_t>(record->keys.capacity());
  if (spare_keys_ + keys > kMaxRecordedKeys) return;  // freed
  spare_keys_ += keys;
  spare_records_.push_back(std::move(record));
}

Status DynamicTable::Lookup(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool) const {
  return ReadRows(keys, n, out, pool, /*create=*/false, nullptr);
}

Status DynamicTable::ReadRows(const uint64_t* keys, int64_t n, float* out, ThreadPool* pool,
                              bool create, internal::PullRecord* record) const {
  IPS_RETURN_IF_ERROR(CheckArgs(options_, keys, n, out, "output"));
  GroupScratch& g = ThreadGroupScratch();
  GroupByShard(keys, n, &g);
  const int64_t step = step_.load(std::memory_order_relaxed);
  if (record != nullptr) {
    record->slots.resize(static_cast<size_t>(n));
    record->stamps.resize(shards_.size());
  }
  IPS_RETURN_IF_ERROR(ForEachShardOf(g.begin, n, pool, [&](size_t s, int64_t b, int64_t m) {
    return shards_[s]->Pull(g.keys.data() + b, g.hashes.data() + b, g.order.data() + b, m, out,
                            step, create, record != nullptr ? record->slots.data() + b : nullptr,
                            record != nullptr ? &record->stamps[s] : nullptr);
  }));
  if (record != nullptr) {
    record->begin = g.begin;
    record->order.swap(g.order);  // the scratch takes the record's old buffer
  }
  return Status::Ok();
}

bool DynamicTable::TakeRecordsCovering(const uint64_t* keys, int64_t n,
                                       std::vector<std::unique_ptr<internal::PullRecord>>* used) {
  std::lock_guard<std::mutex> lock(records_mu_);
  std::vector<size_t> picked;
  for (int64_t at = 0; at < n;) {
    // The oldest match first: with prefetching, pulls t and t + 1 may hold the same keys, and
    // push t follows pull t.
    size_t found = records_.size();
    for (size_t r = 0; r < records_.size() && found == records_.size(); ++r) {
      const std::vector<uint64_t>& k = records_[r]->keys;
      if (static_cast<int64_t>(k.size()) <= n - at && k[0] == keys[at] &&
          std::find(picked.begin(), picked.end(), r) == picked.end() &&
          std::memcmp(k.data(), keys + at, k.size() * sizeof(uint64_t)) == 0)
        found = r;
    }
    if (found == records_.size()) return false;
    picked.push_back(found);
    at += static_cast<int64_t>(records_[found]->keys.size());
  }
  for (size_t r : picked) {
    recorded_keys_ -= static_cast<int64_t>(records_[r]->keys.size());
    used->push_back(std::move(records_[r]));
  }
  records_.erase(std::remove(records_.begin(), records_.end(), nullptr), records_.end());
  return true;
}

Status DynamicTable::Push(const uint64_t* keys, int64_t n, const float* grads, ThreadPool* pool) {
  IPS_RETURN_IF_ERROR(CheckArgs(options_, keys, n, grads, "gradients"));
  // Every push is one optimizer step, even an empty one, as torch counts optimizer.step().
  const int64_t opt_step = optimizer_step_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (windowed_admission_)
    for (auto& shard : shards_) shard->CloseSightingWindow();
  const int64_t step = step_.load(std::memory_order_relaxed);
  std::vector<std::unique_ptr<internal::PullRecord>> used;
  if (n >= kMinRecordedPull && TakeRecordsCovering(keys, n, &used)) {
    // The trainer pushes the keys it pulled: the pulls' slots spare the push its grouping and
    // index probes (a third of a pull + push's table work).
    const size_t num_shards = shards_.size();
    const size_t u = used.size();
    std::vector<internal::ResolvedPart> parts(num_shards * u);
    std::vector<int64_t> begin(num_shards + 1, 0);
    int64_t offset = 0;
    for (size_t k = 0; k < u; ++k) {
      const internal::PullRecord& r = *used[k];
      for (size_t s = 0; s < num_shards; ++s) {
        internal::ResolvedPart& part = parts[s * u + k];
        part.slots = r.slots.data() + r.begin[s];
        part.pos = r.order.data() + r.begin[s];
        part.m = r.begin[s + 1] - r.begin[s];
        part.offset = offset;
        part.stamp = r.stamps[s];
        begin[s + 1] += part.m;
      }
      offset += static_cast<int64_t>(r.keys.size());
    }
    for (size_t s = 0; s < num_shards; ++s) begin[s + 1] += begin[s];
    Status status = ForEachShardOf(begin, n, pool, [&](size_t s, int64_t, int64_t) {
      return shards_[s]->PushResolved(parts.data() + s * u, static_cast<int>(u), keys, grads, step,
                                      opt_step);
    });
    std::lock_guard<std::mutex> lock(records_mu_);
    for (auto& record : used) KeepSpare(std::move(record));
    return status;
  }
  GroupScratch& g = ThreadGroupScratch();
  GroupByShard(keys, n, &g);
  return ForEachShardOf(g.begin, n, pool, [&](size_t s, int64_t b, int64_t m) {
    return shards_[s]->Push(g.keys.data() + b, g.hashes.data() + b, g.order.data() + b, m, grads,
                            step, opt_step);
  });
}

void DynamicTable::SetWindowedAdmission(bool on) {
  windowed_admission_ = on;
  for (auto& shard : shards_) shard->SetWindowedAdmission(on);
}

int64_t DynamicTable::AdvanceStep(int64_t step) {
  step_.store(step, std::memory_order_relaxed);
  if (options_.ttl_steps <= 0) return 0;
  const int64_t interval = options_.ttl_sweep_interval > 0
                               ? options_.ttl_sweep_interval
                               : std::max<int64_t>(1, options_.ttl_steps / 8);
  int64_t last = last_sweep_step_.load(std::memory_order_relaxed);
  if (step - last < interval) return 0;
  // One caller sweeps; concurrent callers skip.
  if (!last_sweep_step_.compare_exchange_strong(last, step)) return 0;
  return EvictExpired();
}

int64_t DynamicTable::EvictExpired() {
  if (options_.ttl_steps <= 0) return 0;
  const int64_t step = step_.load(std::memory_order_relaxed);
  int64_t evicted = 0;
  for (auto& shard : shards_) evicted += shard->SweepExpired(step);
  return evicted;
}

Status DynamicTable::Insert(uint64_t key, const float* value, const float* state) {
  if (value == nullptr) return InvalidArgumentError("table '" + options_.name + "': null value");
  if (options_.has_padding_key && key == options_.padding_key)
    return InvalidArgumentError("table '" + options_.name + "': cannot insert the padding key " +
                                std::to_string(key));
  const uint64_t h = internal::KeyHash(key);
  return ShardOf(h).Insert(key, h, value, state, step_.load(std::memory_order_relaxed));
}

bool DynamicTable::ReadRow(uint64_t key, float* value, float* state) const {
  const uint64_t h = internal::KeyHash(key);
  return ShardOf(h).ReadRow(key, h, value, state, step_.load(std::memory_order_relaxed));
}

void DynamicTable::ForEachRow(
    const std::function<void(uint64_t key, const float* value, const float* state)>& fn) const {
  const int64_t step = step_.load(std::memory_order_relaxed);
  for (const auto& shard : shards_) shard->ForEachRow(fn, step);
}

void DynamicTable::InitialRow(uint64_t key, float* row) const {
  InitializeRow(options_.initializer, options_.dim, name_hash_, options_.seed, key, row);
}

uint32_t DynamicTable::BeginCheckpoint() {
  const uint32_t e = epoch_.fetch_add(1, std::memory_order_relaxed);
  for (auto& shard : shards_) shard->SetEpoch(e + 1);
  return e;
}

void DynamicTable::ForEachRowSince(uint32_t since,
                                   const std::function<void(const RowRecord&)>& fn) const {
  const int64_t step = step_.load(std::memory_order_relaxed);
  for (const auto& shard : shards_) shard->ForEachRowSince(since, fn, step);
}

std::vector<uint64_t> DynamicTable::RemovedSince(uint32_t since) const {
  std::vector<uint64_t> keys;
  for (const auto& shard : shards_) shard->RemovedSince(since, &keys);
  return keys;
}

void DynamicTable::DiscardChangesThrough(uint32_t epoch) {
  for (auto& shard : shards_) shard->DiscardRemovedThrough(epoch);
}

Status DynamicTable::RestoreRow(const RowRecord& row) {
  if (row.value == nullptr)
    return InvalidArgumentError("table '" + options_.name + "': null value");
  if (options_.has_padding_key && row.key == options_.padding_key)
    return InvalidArgumentError("table '" + options_.name + "': cannot restore the padding key " +
                                std::to_string(row.key));
  const uint64_t h = internal::KeyHash(row.key);
  return ShardOf(h).RestoreRow(row, h, step_.load(std::memory_order_relaxed));
}

bool DynamicTable::Erase(uint64_t key) {
  const uint64_t h = internal::KeyHash(key);
  return ShardOf(h).Erase(key, h);
}

void DynamicTable::RestoreClock(int64_t step, int64_t last_sweep_step, int64_t optimizer_step) {
  step_.store(step, std::memory_order_relaxed);
  last_sweep_step_.store(last_sweep_step, std::memory_order_relaxed);
  optimizer_step_.store(optimizer_step, std::memory_order_relaxed);
}

std::vector<SketchState> DynamicTable::Sketches() const {
  std::vector<SketchState> out;
  for (const auto& shard : shards_) {
    SketchState st;
    if (!shard->SketchState(&st.counters, &st.additions)) return {};
    st.width = options_.sketch_width;
    out.push_back(std::move(st));
  }
  return out;
}

Status DynamicTable::MergeSketches(const std::vector<SketchState>& sketches) {
  if (options_.min_count <= 1) return Status::Ok();  // no admission: nothing to restore
  if (sketches.size() != shards_.size())
    return InvalidArgumentError(
        "table '" + options_.name + "': " + std::to_string(sketches.size()) +
        " admission sketches for " + std::to_string(shards_.size()) + " shards");
  for (const auto& st : sketches) {
    if (st.width != options_.sketch_width ||
        static_cast<int64_t>(st.counters.size()) != internal::CountSketch::kDepth * st.width)
      return InvalidArgumentError("table '" + options_.name + "': admission sketch width " +
                                  std::to_string(st.width) + " != the table's " +
                                  std::to_string(options_.sketch_width));
  }
  for (size_t s = 0; s < shards_.size(); ++s)
    shards_[s]->MergeSketch(sketches[s].counters.data(), sketches[s].additions);
  return Status::Ok();
}

TableStats DynamicTable::Stats() const {
  TableStats st;
  st.name = options_.name;
  st.dim = options_.dim;
  st.payload_bytes_per_row =
      options_.dim * static_cast<int64_t>(sizeof(float)) * (1 + state_count_);
  for (const auto& shard : shards_) {
    internal::ShardCounters c;
    internal::ShardMemory m;
    shard->Snapshot(&c, &m);
    st.rows += m.rows;
    st.capacity_rows += m.capacity_rows;
    st.slab_bytes += m.slab_bytes;
    st.index_bytes += m.index_bytes;
    st.sketch_bytes += m.sketch_bytes;
    st.created_rows += c.created_rows;
    st.unadmitted_pulls += c.unadmitted_pulls;
    st.dropped_push_keys += c.dropped_push_keys;
    st.evicted_ttl += c.evicted_ttl;
    st.evicted_capacity += c.evicted_capacity;
    st.pulled_keys += c.pulled_keys;
    st.pushed_keys += c.pushed_keys;
    st.push_keys_resolved_by_pull += c.push_keys_resolved_by_pull;
  }
  st.bytes = st.slab_bytes + st.index_bytes + st.sketch_bytes;
  st.optimizer_step = optimizer_step();
  return st;
}

}  // namespace ips::ps
