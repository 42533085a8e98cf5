// NegativeSampler: draws items a user never interacted with, uniformly or by training
// popularity (Walker's alias method), for the converter's fixed evaluation candidates and the
// reader's per-epoch training negatives. Immutable after construction; thread-safe for Sample()
// with a caller-owned Rng.
#ifndef IPS_WORKER_NEGATIVE_SAMPLER_H_
#define IPS_WORKER_NEGATIVE_SAMPLER_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/random.h"

namespace ips {

class NegativeSampler {
 public:
  NegativeSampler() = default;
  // Uniform over items 1..num_items.
  static NegativeSampler Uniform(uint32_t num_items) {
    NegativeSampler s;
    s.num_items_ = num_items;
    return s;
  }
  // Proportional to counts[i] (i in 1..num_items, counts[0] ignored); items with count 0 are
  // never drawn by the alias table (only by the exhaustive fallback).
  template <typename Count>
  static NegativeSampler Popularity(const Count* counts, uint32_t num_items) {
    NegativeSampler s;
    s.num_items_ = num_items;
    double total = 0;
    for (uint32_t i = 1; i <= num_items; ++i) total += static_cast<double>(counts[i]);
    if (num_items == 0 || total <= 0) return s;  // falls back to uniform
    s.prob_.assign(num_items, 0.0f);
    s.alias_.assign(num_items, 0);
    std::vector<double> scaled(num_items);
    std::vector<uint32_t> small, large;
    for (uint32_t i = 0; i < num_items; ++i) {
      scaled[i] = static_cast<double>(counts[i + 1]) * num_items / total;
      (scaled[i] < 1.0 ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
      const uint32_t l = small.back(), g = large.back();
      small.pop_back();
      s.prob_[l] = static_cast<float>(scaled[l]);
      s.alias_[l] = g;
      scaled[g] -= 1.0 - scaled[l];
      if (scaled[g] < 1.0) {
        large.pop_back();
        small.push_back(g);
      }
    }
    for (uint32_t i : large) s.prob_[i] = 1.0f;
    for (uint32_t i : small) s.prob_[i] = 1.0f;
    return s;
  }

  uint32_t num_items() const { return num_items_; }
  bool popularity() const { return !prob_.empty(); }

  // One item in 1..num_items not in seen[0, n) (sorted ascending). If the user interacted with
  // every item there is no valid negative and an arbitrary item is returned (documented
  // degenerate case; never happens on real data). num_items must be > 0.
  uint32_t Sample(Rng& rng, const uint32_t* seen, size_t n) const {
    for (int attempt = 0; attempt < 64; ++attempt) {
      const uint32_t item = Draw(rng);
      if (!std::binary_search(seen, seen + n, item)) return item;
    }
    // Heavy users of a popularity table: probe uniformly, then scan.
    const uint32_t start = 1 + static_cast<uint32_t>(rng.UniformInt(num_items_));
    if (n >= num_items_) return start;
    for (uint64_t k = 0; k < num_items_; ++k) {
      const uint32_t item = 1 + static_cast<uint32_t>((start - 1 + k) % num_items_);
      if (!std::binary_search(seen, seen + n, item)) return item;
    }
    return start;
  }

 private:
  uint32_t Draw(Rng& rng) const {
    const uint32_t i = static_cast<uint32_t>(rng.UniformInt(num_items_));
    if (prob_.empty()) return i + 1;
    return (rng.UniformFloat() < prob_[i] ? i : alias_[i]) + 1;
  }
  uint32_t num_items_ = 0;
  std::vector<float> prob_;
  std::vector<uint32_t> alias_;
};

}  // namespace ips

#endif  // IPS_WORKER_NEGATIVE_SAMPLER_H_
