// CountSketch: the compact sighting counter behind feature admission (TableOptions::min_count).
// A count-min sketch, 4 rows of `width` saturating 16-bit counters with conservative update, so
// a key's estimate never undercounts its sightings and overcounts only on collisions (the
// probability that all 4 counters of a key are inflated falls as (keys / width)^4). To keep a
// long stream of one-off keys from saturating it, every counter is halved after 8 * width
// additions (TinyLFU's aging): a key must then be seen min_count times within a recent window.
// Not thread-safe: each table shard owns one under its mutex.
#ifndef IPS_PS_INTERNAL_COUNT_SKETCH_H_
#define IPS_PS_INTERNAL_COUNT_SKETCH_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/random.h"

namespace ips::ps::internal {

class CountSketch {
 public:
  static constexpr int kDepth = 4;

  // width: a power of two <= 65536 (hash positions are 16-bit slices of one 64-bit hash).
  explicit CountSketch(int64_t width)
      : width_(width), counters_(static_cast<size_t>(kDepth * width), 0) {}

  // The key's estimated count (no sighting recorded).
  int Estimate(uint64_t hash) const {
    const uint64_t h = Mix64(hash ^ 0x5bd1e9955bd1e995ULL);
    uint16_t lo = 0xffff;
    for (int d = 0; d < kDepth; ++d) {
      const uint64_t pos = (h >> (16 * d)) & static_cast<uint64_t>(width_ - 1);
      lo = std::min(lo, counters_[static_cast<size_t>(d * width_ + static_cast<int64_t>(pos))]);
    }
    return lo;
  }

  // Records one sighting of the key with 64-bit hash `hash`; returns its estimated count.
  int Add(uint64_t hash) {
    const uint64_t h = Mix64(hash ^ 0x5bd1e9955bd1e995ULL);
    uint16_t* c[kDepth];
    uint16_t lo = 0xffff;
    for (int d = 0; d < kDepth; ++d) {
      const uint64_t pos = (h >> (16 * d)) & static_cast<uint64_t>(width_ - 1);
      c[d] = &counters_[static_cast<size_t>(d * width_ + static_cast<int64_t>(pos))];
      lo = std::min(lo, *c[d]);
    }
    const uint16_t next = lo == 0xffff ? lo : static_cast<uint16_t>(lo + 1);
    // Conservative update: raise only the counters that would otherwise undercount.
    for (int d = 0; d < kDepth; ++d) *c[d] = std::max(*c[d], next);
    if (++additions_ >= 8 * width_) Age();
    return next;
  }

  int64_t bytes() const { return static_cast<int64_t>(counters_.size() * sizeof(uint16_t)); }
  int64_t width() const { return width_; }

  // Checkpoint support: the raw counters [kDepth x width] and the additions since the last aging.
  const std::vector<uint16_t>& counters() const { return counters_; }
  int64_t additions() const { return additions_; }
  // Raises every counter to at least other's (element-wise max) and keeps the larger additions
  // count. Max, not sum: when several writers' sketches are merged into one table (re-sharding),
  // each key's estimate stays >= its estimate in the writer that owned it, so admission never
  // undercounts, while keys owned by one writer are not inflated by the others' counts of
  // unrelated keys more than collisions already do. Merging one sketch into an empty one
  // restores it exactly. `counters` must hold kDepth * width() values.
  void MergeMax(const uint16_t* counters, int64_t additions) {
    for (size_t i = 0; i < counters_.size(); ++i)
      counters_[i] = std::max(counters_[i], counters[i]);
    additions_ = std::max(additions_, additions);
  }

 private:
  void Age() {
    for (auto& v : counters_) v = static_cast<uint16_t>(v >> 1);
    additions_ = 0;
  }

  const int64_t width_;
  std::vector<uint16_t> counters_;
  int64_t additions_ = 0;
};

}  // namespace ips::ps::internal

#endif  // IPS_PS_INTERNAL_COUNT_SKETCH_H_
