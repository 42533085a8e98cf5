// Synthetic training batches for the throughput benchmark: the peer's `data.Synthetic` protocol
// (shared/peers/data.py, README "Data protocols / synthetic"), reproduced in distribution.
//
// This module owns the synthetic item/category model and the batch layouts the trainer consumes
// on synthetic data (CtrBatch for DIN/DIEN, SeqBatch for SASRec/BST). It does not own timing:
// like the peer, the trainer generates all warmup + steps batches before its timer starts.
//
// The protocol (peer behaviour in brackets where we differ):
//   * Items 1..num_items are drawn from a bounded Zipf(alpha): P(id = r) ∝ r^-alpha, by inverse
//     CDF over the ranks. The CDF table is built with numpy's arithmetic (sequential sum of
//     pow(r, -alpha), divided by the total); numpy 1.24 on an AVX-512 CPU computes `**` with
//     SVML, 1 ulp away from libm's pow in ~28% of entries, so the tables agree to ~1e-15
//     relative and BoundedZipf::FromUniform(u) equals the peer's
//     `searchsorted(cdf, u, side="right")` except for u within a few ulps of a table entry
//     (checked by bench/peer_check/metrics_vs_peer.py). Batches draw through an alias table of
//     the same pmf instead (2-6x faster than inverse CDF; see BoundedZipf).
//   * Random numbers: xoshiro256** from common/random.h, not numpy's PCG64, so batches equal the
//     peer's in distribution only, not bit for bit. Uniforms have 53 bits like numpy's random().
//   * Categories: cat(item) = fmix64(item) % num_categories + 1 [peer: without the + 1]. Our ids
//     reserve 0 for padding (the data layer's categories are 1..C), so a real category never
//     shares the padding row; item 0 (padding) has category 0. The mapping is the same pure
//     function shifted by one, so category *tables* hold num_categories + 1 rows [peer: C rows].
//   * Every history has exactly seq_len items, so length = seq_len and there is no padding (the
//     peer's layout is left-padded; with full rows left- and right-padding coincide).
//   * CTR batch: label ~ Bernoulli(0.5). A positive, with probability 0.8, takes its target
//     uniformly from ALL catalogue items of its history's most frequent category (ties go to the
//     lowest category id), exactly as the peer's code does (`by_cat`: every item of the category,
//     not only those in the history). Every other target is a Zipf draw. DIEN's auxiliary
//     negatives are one Zipf draw per history position.
//   * SASRec batch: a Zipf sequence s of length seq_len + 1; seq = s[:-1], pos = s[1:], and neg
//     is an independent Zipf draw per position.
//
// Determinism: a batch is a pure function of (options, rng state). *At(index, ...) seeds the Rng
// from (options.seed, index), so batch i is the same whichever worker or thread makes it and in
// whatever order.
//
// Memory: the CDF (8 bytes per item), the alias table (16 bytes per item) and the items grouped
// by category (4 bytes per item): 28 MB for 1M items. Generation is O(B * T).
//
// Thread safety: SyntheticBatches and BoundedZipf are immutable after construction; all const
// methods are thread-safe with a caller-owned Rng.
#ifndef IPS_WORKER_SYNTHETIC_BATCHES_H_
#define IPS_WORKER_SYNTHETIC_BATCHES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/status.h"

namespace ips {

// Bounded Zipf over ids 1..n: P(id = r) = r^-alpha / sum_{s=1..n} s^-alpha.
//
// Two samplers of the same distribution:
//   * FromUniform(u): the exact inverse CDF, the peer's u -> id map (binary search over the CDF
//     table, which is built with numpy's arithmetic). For parity checks against the peer.
//   * Sample(rng): Walker's alias table (Vose's construction): one 64-bit draw and one table
//     cell per sample. Measured on the 2-core VM for n = 1M, alpha = 1.1 (20M draws): binary
//     search 229 ns, inverse CDF with a guide table 58-99 ns, alias 34-36 ns per draw; the
//     alias table's pmf equals the analytic one to rounding (SamplerPmf(), tested).
// Memory: 8 bytes (CDF) + 16 bytes (alias cell) per id.
class BoundedZipf {
 public:
  // n >= 1, alpha >= 0 and finite (validated by SyntheticBatches::Create; n = 0 is a programmer
  // error that yields a sampler returning 1).
  BoundedZipf(uint32_t n, double alpha);

  // The id for a uniform u in [0, 1): min(#{i : cdf[i] <= u}, n - 1) + 1, the peer's
  // `minimum(searchsorted(cdf, u, side="right"), n - 1) + 1`. O(log n).
  uint32_t FromUniform(double u) const;
  // An id drawn from the alias table with one rng.Next(): the high 64 bits of Next() * n pick the
  // cell, the low 64 bits (uniform given the cell) the coin. O(1).
  uint32_t Sample(Rng& rng) const {
    const unsigned __int128 p = static_cast<unsigned __int128>(rng.Next()) * n_;
    const uint32_t i = static_cast<uint32_t>(p >> 64);
    const double coin =
        static_cast<double>(static_cast<uint64_t>(p) >> 11) * (1.0 / 9007199254740992.0);
    const Cell& c = cells_[i];
    return (coin < c.prob ? i : c.alias) + 1;
  }
  // Exact probability of id (0 outside 1..n).
  double Probability(uint32_t id) const;
  // The pmf that Sample() realises, recomputed from the alias table: [n + 1], [0] = 0. O(n);
  // for tests.
  std::vector<double> SamplerPmf() const;
  uint32_t n() const { return n_; }
  double alpha() const { return alpha_; }
  // cdf()[i] = P(id <= i + 1); cdf().back() == 1.0 exactly.
  const std::vector<double>& cdf() const { return cdf_; }

 private:
  struct Cell {
    double prob;     // keep index i with this probability
    uint32_t alias;  // else take this index
  };
  uint32_t n_;
  double alpha_;
  double total_ = 1;  // sum of r^-alpha over 1..n
  std::vector<double> cdf_;
  std::vector<Cell> cells_;
};

struct SyntheticOptions {
  uint32_t num_items = 1000000;    // peer --items
  uint32_t num_categories = 1000;  // peer --cats
  int seq_len = 50;                // peer --seq
  double alpha = 1.1;              // peer's Zipf exponent (fixed there)
  double positive_rate = 0.5;      // P(label = 1)
  double planted_rate = 0.8;       // P(a positive's target comes from its history's mode category)
  uint64_t seed = 0;               // peer --seed (a different generator: same seed != same data)
};

// The largest synthetic catalogue, in items and in categories (each holds a table row and an
// index entry per id; 2^28 items take 7.5 GB here).
constexpr int64_t kMaxSyntheticCount = int64_t{1} << 28;

// How a check of SyntheticOptions reports the option at fault: `field` is the option's name
// ("num_items", "seq_len", "alpha", ...), `what` the rule it breaks ("must be in [1, 65535], got
// 70000"). ValidateSyntheticOptions words it "synthetic: <field> <what>"; a config's check
// (worker/config_validation.h CheckRunConfig) blames the config field that sets the option, on
// the --set or the file line.
using SyntheticOptionFailure =
    std::function<Status(const std::string& field, const std::string& what)>;

// The rule of a catalogue count (`field`: "num_items" or "num_categories"): in [1, 2^28]. On 64
// bits, so that a config's count (int64) is checked before a run narrows it to SyntheticOptions'
// 32 bits: 2^32 + 1 items is refused, not read as 1.
Status CheckSyntheticCount(const std::string& field, int64_t count,
                           const SyntheticOptionFailure& fail);

// SyntheticOptions' rules, the one copy of each, the first broken one reported through `fail`:
// num_items and num_categories (CheckSyntheticCount), seq_len in [1, 65535], alpha finite and
// >= 0, positive_rate and planted_rate in [0, 1].
Status CheckSyntheticOptions(const SyntheticOptions& o, const SyntheticOptionFailure& fail);

// CheckSyntheticOptions as INVALID_ARGUMENT "synthetic: <field> <what>".
Status ValidateSyntheticOptions(const SyntheticOptions& o);

// The synthetic category of an item: fmix64(item) % num_categories + 1 for item >= 1, and 0 for
// the padding item 0. A pure function (no table), num_categories >= 1.
inline uint32_t SyntheticCategory(uint64_t item, uint32_t num_categories) {
  return item == 0 ? 0 : static_cast<uint32_t>(Mix64(item) % num_categories) + 1;
}

// One DIN/DIEN batch. All [B x T] arrays are row-major (row b = sample b, element b * T + t),
// oldest behaviour first; valid entries are the rightmost length[b] of a row (left padding with
// item 0 / category 0, the peer's layout; on synthetic data length[b] == T, so nothing is padded).
struct CtrBatch {
  int batch = 0;                    // B
  int seq_len = 0;                  // T
  std::vector<uint32_t> hist_item;  // [B x T] ids in 1..num_items (0 = padding)
  std::vector<uint32_t> hist_cat;   // [B x T] SyntheticCategory(hist_item)
  std::vector<int32_t> length;      // [B]
  std::vector<uint32_t> item;       // [B] target item
  std::vector<uint32_t> cat;        // [B] SyntheticCategory(item)
  std::vector<float> label;         // [B] 0 or 1
  std::vector<uint32_t> neg_item;   // [B x T] DIEN auxiliary negative per position
  std::vector<uint32_t> neg_cat;    // [B x T]
};

// One SASRec/BST batch: row-major [B x T]; pos[b][t] is the item after seq[b][t].
struct SeqBatch {
  int batch = 0;
  int seq_len = 0;
  std::vector<uint32_t> seq;    // [B x T]
  std::vector<uint32_t> pos;    // [B x T] next item (= seq shifted left by one, plus one more)
  std::vector<uint32_t> neg;    // [B x T] independent Zipf draws
  std::vector<int32_t> length;  // [B] (== T on synthetic data)
};

class SyntheticBatches {
 public:
  // INVALID_ARGUMENT from ValidateSyntheticOptions. Builds the Zipf tables and the
  // items-by-category index: O(num_items) time (about 0.2 s for 1M items) and 28 bytes per item.
  static StatusOr<std::unique_ptr<SyntheticBatches>> Create(const SyntheticOptions& options);
  SyntheticBatches(const SyntheticBatches&) = delete;
  SyntheticBatches& operator=(const SyntheticBatches&) = delete;

  const SyntheticOptions& options() const { return o_; }
  const BoundedZipf& zipf() const { return zipf_; }
  // Rows of the item and category tables a model needs (ids 0..num_items / 0..num_categories).
  uint64_t ItemRows() const { return static_cast<uint64_t>(o_.num_items) + 1; }
  uint64_t CategoryRows() const { return static_cast<uint64_t>(o_.num_categories) + 1; }
  uint32_t Category(uint64_t item) const { return SyntheticCategory(item, o_.num_categories); }
  // The items of category c (1..num_categories) in ascending id order; *count = 0 for an empty
  // or out-of-range category (then the pointer must not be read).
  const uint32_t* CategoryItems(uint32_t c, uint32_t* count) const;
  // The most frequent category among cats[0, n) (ties: the lowest id), using `counts` as
  // scratch: counts.size() must be >= CategoryRows() and all zero; it is all zero again on return.
  static uint32_t ModeCategory(const uint32_t* cats, int n, std::vector<int32_t>& counts);

  // Fills *out (resizing its vectors, reusing their capacity) with a batch of `batch` rows drawn
  // from rng. INVALID_ARGUMENT if batch < 1 or batch * (seq_len + 1) > 2^31 - 1. About 4 ms
  // (CTR) / 3 ms (SASRec) for B = 512, T = 50, 1M items on the 2-core VM (numpy peer: 32 / 20).
  Status MakeCtrBatch(Rng& rng, int batch, CtrBatch* out) const;
  Status MakeSeqBatch(Rng& rng, int batch, SeqBatch* out) const;
  // Batch `index` of the stream: MakeXxxBatch with BatchRng(options.seed, index).
  Status CtrBatchAt(uint64_t index, int batch, CtrBatch* out) const;
  Status SeqBatchAt(uint64_t index, int batch, SeqBatch* out) const;
  // The batches of a run, made before it starts as the peer's protocol does: (*out)[i] =
  // XxxBatchAt(index_of(i)) for i in [begin, end), *out resized to `end` (the slots before
  // `begin`, a resumed run's, left empty). A run holds all of them at once, so first
  // RESOURCE_EXHAUSTED (naming data.synthetic.steps, data.batch_size and `what`, e.g.
  // "--eval_batches") when they would need more than half of this machine's memory, instead of
  // swapping or being killed while making them.
  Status MakeCtrBatches(int64_t begin, int64_t end, int batch,
                        const std::function<uint64_t(int64_t)>& index_of, const std::string& what,
                        std::vector<CtrBatch>* out) const;
  Status MakeSeqBatches(int64_t begin, int64_t end, int batch,
                        const std::function<uint64_t(int64_t)>& index_of, const std::string& what,
                        std::vector<SeqBatch>* out) const;
  // An Rng whose stream depends on both seed and index through a hash (seeds s and s + 1 of
  // Rng::Seed would give overlapping SplitMix sequences; hashing keeps batch streams unrelated).
  static Rng BatchRng(uint64_t seed, uint64_t index);

 private:
  explicit SyntheticBatches(const SyntheticOptions& o);
  SyntheticOptions o_;
  BoundedZipf zipf_;
  std::vector<uint32_t> by_cat_;     // items grouped by category, ascending id within each
  std::vector<uint32_t> cat_start_;  // [num_categories + 2]: category c owns
                                     // by_cat_[cat_start_[c], cat_start_[c + 1])
};

// Which batch of the stream each worker trains at each trainer step of a synthetic run, across
// resumes onto another number of workers (single-process training is one worker). A run of W
// workers from step 0 trains, at step i, batch i * W + w on worker w (one worker: batch i, the
// single-process stream). A run that continues at step s with another number of workers W'
// continues the stream where every earlier step left it: worker w trains batch b(s) + (i - s) *
// W' + w, where b(s) counts the batches trained before step s. So no batch is trained twice or
// skipped, and the held-out batches (HeldOutFirst) never were trained, whatever the resumes.
// Every checkpoint of a synthetic run records it (worker/checkpoint.h kSyntheticScheduleBlob).
class SyntheticSchedule {
 public:
  // Steps from first_step on (up to the next part's) are trained by num_workers workers.
  struct Part {
    int64_t first_step = 0;
    int num_workers = 1;
    bool operator==(const Part& o) const {
      return first_step == o.first_step && num_workers == o.num_workers;
    }
  };
  // num_workers workers from step 0 (>= 1).
  explicit SyntheticSchedule(int num_workers = 1) : parts_{{0, num_workers}} {}
  // INVALID_ARGUMENT unless the first part starts at step 0, the parts start at increasing steps
  // and each has 1 .. 2^20 workers.
  static StatusOr<SyntheticSchedule> FromParts(std::vector<Part> parts);

  const std::vector<Part>& parts() const { return parts_; }
  // The batch worker w trains at step `step` (>= 0).
  uint64_t BatchIndex(int64_t step, int worker) const;
  // The schedule of a run that continues at `step` with num_workers workers: this one when its
  // last part has that many workers, else this one with a part from `step` on (replacing a last
  // part that starts at `step`: it trained nothing).
  SyntheticSchedule ContinuedAt(int64_t step, int num_workers) const;
  // The most workers of any part.
  int MaxWorkers() const;
  // The first held-out batch of a run of train_steps steps (warm-up included): train_steps *
  // MaxWorkers(), after every batch the run trains (b(train_steps) <= that), and for a run of W
  // workers throughout exactly where its evaluation always took them.
  uint64_t HeldOutFirst(int64_t train_steps) const {
    return static_cast<uint64_t>(train_steps) * static_cast<uint64_t>(MaxWorkers());
  }
  // "2 workers from step 0, 1 from step 16".
  std::string Describe() const;
  bool operator==(const SyntheticSchedule& o) const { return parts_ == o.parts_; }
  bool operator!=(const SyntheticSchedule& o) const { return !(*this == o); }

 private:
  std::vector<Part> parts_;  // parts_[0].first_step == 0, first steps increasing
};

}  // namespace ips

#endif  // IPS_WORKER_SYNTHETIC_BATCHES_H_
