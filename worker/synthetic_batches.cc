#include "worker/synthetic_batches.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

namespace ips {

// ---------------------------------------------------------------------------------------------
// BoundedZipf

BoundedZipf::BoundedZipf(uint32_t n, double alpha) : n_(n), alpha_(alpha), cdf_(n), cells_(n) {
  if (n == 0) {
    n_ = 1;
    cdf_.assign(1, 1.0);
    cells_.assign(1, Cell{1.0, 0});
    return;
  }
  // The same arithmetic as numpy's `cumsum(arange(1, n + 1) ** -alpha)` followed by `/ cdf[-1]`:
  // a sequential float64 sum of pow(r, -alpha), then one division per entry. The last entry is
  // total / total == 1.0 exactly.
  double acc = 0;
  for (uint32_t i = 0; i < n; ++i) {
    acc += std::pow(static_cast<double>(i) + 1.0, -alpha);
    cdf_[i] = acc;
  }
  for (uint32_t i = 0; i < n; ++i) cdf_[i] /= acc;
  total_ = acc;
  // Vose's alias construction on n * pmf. Leftover cells (rounding) keep probability 1.
  std::vector<double> scaled(n);
  std::vector<uint32_t> small, large;
  for (uint32_t i = 0; i < n; ++i) {
    scaled[i] = Probability(i + 1) * n;
    (scaled[i] < 1.0 ? small : large).push_back(i);
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t l = small.back(), g = large.back();
    small.pop_back();
    cells_[l] = Cell{scaled[l], g};
    scaled[g] -= 1.0 - scaled[l];
    if (scaled[g] < 1.0) {
      large.pop_back();
      small.push_back(g);
    }
  }
  for (uint32_t i : large) cells_[i] = Cell{1.0, i};
  for (uint32_t i : small) cells_[i] = Cell{1.0, i};
}

uint32_t BoundedZipf::FromUniform(double u) const {
  const size_t i = std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  return static_cast<uint32_t>(std::min<size_t>(i, n_ - 1)) + 1;
}

std::vector<double> BoundedZipf::SamplerPmf() const {
  std::vector<double> pmf(static_cast<size_t>(n_) + 1, 0.0);
  for (uint32_t i = 0; i < n_; ++i) {
    pmf[i + 1] += cells_[i].prob / n_;
    pmf[cells_[i].alias + 1] += (1.0 - cells_[i].prob) / n_;
  }
  return pmf;
}

double BoundedZipf::Probability(uint32_t id) const {
  if (id < 1 || id > n_) return 0;
  // From the pmf, not a CDF difference, which would lose the relative precision of small terms.
  return std::pow(static_cast<double>(id), -alpha_) / total_;
}

// ---------------------------------------------------------------------------------------------
// SyntheticBatches

namespace {

// A double as the options' messages print it: "-1", "1.5", "nan".
std::string Num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

Status CheckSyntheticCount(const std::string& field, int64_t count,
                           const SyntheticOptionFailure& fail) {
  if (count < 1) return fail(field, "must be >= 1, got " + std::to_string(count));
  if (count > kMaxSyntheticCount)
    return fail(field, "must be <= 2^28, got " + std::to_string(count));
  return Status::Ok();
}

Status CheckSyntheticOptions(const SyntheticOptions& o, const SyntheticOptionFailure& fail) {
  IPS_RETURN_IF_ERROR(CheckSyntheticCount("num_items", o.num_items, fail));
  IPS_RETURN_IF_ERROR(CheckSyntheticCount("num_categories", o.num_categories, fail));
  if (o.seq_len < 1 || o.seq_len > 65535)
    return fail("seq_len", "must be in [1, 65535], got " + std::to_string(o.seq_len));
  if (!std::isfinite(o.alpha) || o.alpha < 0)
    return fail("alpha", "must be finite and >= 0, got " + Num(o.alpha));
  if (!(o.positive_rate >= 0 && o.positive_rate <= 1))
    return fail("positive_rate", "must be in [0, 1], got " + Num(o.positive_rate));
  if (!(o.planted_rate >= 0 && o.planted_rate <= 1))
    return fail("planted_rate", "must be in [0, 1], got " + Num(o.planted_rate));
  return Status::Ok();
}

Status ValidateSyntheticOptions(const SyntheticOptions& o) {
  return CheckSyntheticOptions(o, [](const std::string& field, const std::string& what) {
    return InvalidArgumentError("synthetic: " + field + " " + what);
  });
}

StatusOr<std::unique_ptr<SyntheticBatches>> SyntheticBatches::Create(
    const SyntheticOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateSyntheticOptions(options));
  return std::unique_ptr<SyntheticBatches>(new SyntheticBatches(options));
}

SyntheticBatches::SyntheticBatches(const SyntheticOptions& o) : o_(o), zipf_(o.num_items, o.alpha) {
  // Counting sort of items by category: ascending id within a category, as the peer's stable
  // argsort gives.
  const uint32_t c_rows = o.num_categories + 1;
  cat_start_.assign(c_rows + 1, 0);
  for (uint32_t item = 1; item <= o.num_items; ++item) ++cat_start_[Category(item) + 1];
  for (uint32_t c = 0; c < c_rows; ++c) cat_start_[c + 1] += cat_start_[c];
  by_cat_.resize(o.num_items);
  std::vector<uint32_t> fill(cat_start_.begin(), cat_start_.end() - 1);
  for (uint32_t item = 1; item <= o.num_items; ++item) by_cat_[fill[Category(item)]++] = item;
}

const uint32_t* SyntheticBatches::CategoryItems(uint32_t c, uint32_t* count) const {
  if (c < 1 || c > o_.num_categories) {
    *count = 0;
    return by_cat_.data();
  }
  *count = cat_start_[c + 1] - cat_start_[c];
  return by_cat_.data() + cat_start_[c];
}

uint32_t SyntheticBatches::ModeCategory(const uint32_t* cats, int n, std::vector<int32_t>& counts) {
  uint32_t best = 0;
  int32_t best_count = 0;
  for (int t = 0; t < n; ++t) {
    const uint32_t c = cats[t];
    const int32_t k = ++counts[c];
    if (k > best_count || (k == best_count && c < best)) {
      best = c;
      best_count = k;
    }
  }
  for (int t = 0; t < n; ++t) counts[cats[t]] = 0;
  return best;
}

namespace {

Status CheckBatchSize(int batch, int seq_len) {
  if (batch < 1 || static_cast<int64_t>(batch) * (seq_len + 1) > INT32_MAX) {
    return InvalidArgumentError(
        "synthetic: batch must be in [1, (2^31 - 1) / (seq_len + 1)], got " +
        std::to_string(batch));
  }
  return Status::Ok();
}

}  // namespace

Status SyntheticBatches::MakeCtrBatch(Rng& rng, int batch, CtrBatch* out) const {
  IPS_RETURN_IF_ERROR(CheckBatchSize(batch, o_.seq_len));
  const int T = o_.seq_len;
  const size_t bt = static_cast<size_t>(batch) * T;
  out->batch = batch;
  out->seq_len = T;
  out->hist_item.resize(bt);
  out->hist_cat.resize(bt);
  out->length.assign(batch, T);
  out->item.resize(batch);
  out->cat.resize(batch);
  out->label.resize(batch);
  out->neg_item.resize(bt);
  out->neg_cat.resize(bt);
  std::vector<int32_t> counts(CategoryRows(), 0);
  for (int b = 0; b < batch; ++b) {
    uint32_t* hist = out->hist_item.data() + static_cast<size_t>(b) * T;
    uint32_t* hcat = out->hist_cat.data() + static_cast<size_t>(b) * T;
    for (int t = 0; t < T; ++t) {
      hist[t] = zipf_.Sample(rng);
      hcat[t] = Category(hist[t]);
    }
    const bool positive = rng.Uniform() < o_.positive_rate;
    uint32_t target = zipf_.Sample(rng);
    if (positive && rng.Uniform() < o_.planted_rate) {
      uint32_t size = 0;
      const uint32_t* items = CategoryItems(ModeCategory(hcat, T, counts), &size);
      // size > 0: the mode is the category of a history item.
      if (size > 0) {
        target = items[std::min<uint32_t>(static_cast<uint32_t>(rng.Uniform() * size), size - 1)];
      }
    }
    out->item[b] = target;
    out->cat[b] = Category(target);
    out->label[b] = positive ? 1.0f : 0.0f;
  }
  for (size_t i = 0; i < bt; ++i) {
    out->neg_item[i] = zipf_.Sample(rng);
    out->neg_cat[i] = Category(out->neg_item[i]);
  }
  return Status::Ok();
}

Status SyntheticBatches::MakeSeqBatch(Rng& rng, int batch, SeqBatch* out) const {
  IPS_RETURN_IF_ERROR(CheckBatchSize(batch, o_.seq_len));
  const int T = o_.seq_len;
  const size_t bt = static_cast<size_t>(batch) * T;
  out->batch = batch;
  out->seq_len = T;
  out->seq.resize(bt);
  out->pos.resize(bt);
  out->neg.resize(bt);
  out->length.assign(batch, T);
  for (int b = 0; b < batch; ++b) {
    uint32_t* seq = out->seq.data() + static_cast<size_t>(b) * T;
    uint32_t* pos = out->pos.data() + static_cast<size_t>(b) * T;
    // s[0..T]: seq = s[:-1], pos = s[1:].
    uint32_t prev = zipf_.Sample(rng);
    for (int t = 0; t < T; ++t) {
      seq[t] = prev;
      prev = zipf_.Sample(rng);
      pos[t] = prev;
    }
  }
  for (size_t i = 0; i < bt; ++i) out->neg[i] = zipf_.Sample(rng);
  return Status::Ok();
}

Rng SyntheticBatches::BatchRng(uint64_t seed, uint64_t index) {
  return Rng(Mix64(Mix64(seed) ^ (index * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL)));
}

Status SyntheticBatches::CtrBatchAt(uint64_t index, int batch, CtrBatch* out) const {
  Rng rng = BatchRng(o_.seed, index);
  return MakeCtrBatch(rng, batch, out);
}

Status SyntheticBatches::SeqBatchAt(uint64_t index, int batch, SeqBatch* out) const {
  Rng rng = BatchRng(o_.seed, index);
  return MakeSeqBatch(rng, batch, out);
}

namespace {

// The memory check of MakeCtrBatches / MakeSeqBatches (see the header).
Status CheckPregeneratedBatches(int64_t batches, int64_t batch, int64_t seq_len,
                                const std::string& what) {
  // The larger batch kind: a CtrBatch with DIEN's negatives, 4 ids per position and 5 per row.
  const double bytes_per_batch = static_cast<double>(batch) * (16.0 * seq_len + 20.0);
  const double need = static_cast<double>(std::max<int64_t>(0, batches)) * bytes_per_batch;
  const double memory =
      static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (memory > 0 && need > 0.5 * memory) {
    auto gib = [](double b) { return std::to_string(static_cast<int64_t>(b / (1 << 30))); };
    return ResourceExhaustedError(
        "data.synthetic: " + std::to_string(batches) + " batches (" + what + ") of " +
        std::to_string(batch) + " rows x " + std::to_string(seq_len) +
        " positions are all made before training starts and need about " + gib(need) +
        " GiB, more than half of this machine's " + gib(memory) +
        " GiB: lower data.synthetic.steps, data.batch_size or the held-out batches");
  }
  return Status::Ok();
}

template <typename BatchT, typename MakeT>
Status MakeBatches(int64_t begin, int64_t end, int batch, int seq_len,
                   const std::function<uint64_t(int64_t)>& index_of, const std::string& what,
                   std::vector<BatchT>* out, const MakeT& make_at) {
  IPS_RETURN_IF_ERROR(CheckPregeneratedBatches(end - begin, batch, seq_len, what));
  out->resize(static_cast<size_t>(std::max<int64_t>(0, end)));
  for (int64_t i = begin; i < end; ++i)
    IPS_RETURN_IF_ERROR(make_at(index_of(i), &(*out)[static_cast<size_t>(i)]));
  return Status::Ok();
}

}  // namespace

Status SyntheticBatches::MakeCtrBatches(int64_t begin, int64_t end, int batch,
                                        const std::function<uint64_t(int64_t)>& index_of,
                                        const std::string& what, std::vector<CtrBatch>* out) const {
  return MakeBatches(begin, end, batch, o_.seq_len, index_of, what, out,
                     [&](uint64_t index, CtrBatch* b) { return CtrBatchAt(index, batch, b); });
}

Status SyntheticBatches::MakeSeqBatches(int64_t begin, int64_t end, int batch,
                                        const std::function<uint64_t(int64_t)>& index_of,
                                        const std::string& what, std::vector<SeqBatch>* out) const {
  return MakeBatches(begin, end, batch, o_.seq_len, index_of, what, out,
                     [&](uint64_t index, SeqBatch* b) { return SeqBatchAt(index, batch, b); });
}

StatusOr<SyntheticSchedule> SyntheticSchedule::FromParts(std::vector<Part> parts) {
  if (parts.empty() || parts[0].first_step != 0)
    return InvalidArgumentError("synthetic schedule: the first part must start at step 0");
  for (size_t k = 0; k < parts.size(); ++k) {
    if (parts[k].num_workers < 1 || parts[k].num_workers > (1 << 20))
      return InvalidArgumentError("synthetic schedule: part " + std::to_string(k) + " has " +
                                  std::to_string(parts[k].num_workers) + " workers");
    if (k > 0 && parts[k].first_step <= parts[k - 1].first_step)
      return InvalidArgumentError("synthetic schedule: part " + std::to_string(k) +
                                  " starts at step " + std::to_string(parts[k].first_step) +
                                  ", not after the previous part's step " +
                                  std::to_string(parts[k - 1].first_step));
  }
  SyntheticSchedule s;
  s.parts_ = std::move(parts);
  return s;
}

uint64_t SyntheticSchedule::BatchIndex(int64_t step, int worker) const {
  uint64_t first = 0;  // the first batch of part k
  size_t k = 0;
  for (; k + 1 < parts_.size() && parts_[k + 1].first_step <= step; ++k)
    first += static_cast<uint64_t>(parts_[k + 1].first_step - parts_[k].first_step) *
             static_cast<uint64_t>(parts_[k].num_workers);
  return first +
         static_cast<uint64_t>(step - parts_[k].first_step) *
             static_cast<uint64_t>(parts_[k].num_workers) +
         static_cast<uint64_t>(worker);
}

SyntheticSchedule SyntheticSchedule::ContinuedAt(int64_t step, int num_workers) const {
  if (parts_.back().num_workers == num_workers) return *this;
  SyntheticSchedule s = *this;
  if (s.parts_.size() > 1 && s.parts_.back().first_step >= step) s.parts_.pop_back();
  if (s.parts_.back().first_step >= step) {
    s.parts_.back().num_workers = num_workers;  // nothing trained under it (step 0)
  } else if (s.parts_.back().num_workers != num_workers) {
    s.parts_.push_back({step, num_workers});
  }
  return s;
}

int SyntheticSchedule::MaxWorkers() const {
  int most = 1;
  for (const Part& p : parts_) most = std::max(most, p.num_workers);
  return most;
}

std::string SyntheticSchedule::Describe() const {
  std::string s;
  for (size_t k = 0; k < parts_.size(); ++k) {
    const int w = parts_[k].num_workers;
    s += (k == 0 ? "" : ", ") + std::to_string(w) +
         (k == 0 ? (w == 1 ? " worker" : " workers") : "") + " from step " +
         std::to_string(parts_[k].first_step);
  }
  return s;
}

}  // namespace ips
