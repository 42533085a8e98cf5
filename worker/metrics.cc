#include "worker/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>

namespace ips {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Fixed-width fields in host byte order.
class Writer {
 public:
  explicit Writer(const char magic[8]) { out_.append(magic, 8); }
  template <typename T>
  void Put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void PutBytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(std::string_view bytes, const char* what) : bytes_(bytes), what_(what) {}
  Status Magic(const char magic[8]) {
    if (bytes_.size() < 8 || std::memcmp(bytes_.data(), magic, 8) != 0) {
      return DataLossError(std::string(what_) + "::Deserialize: bad magic (not this accumulator)");
    }
    pos_ = 8;
    return Status::Ok();
  }
  template <typename T>
  Status Get(T* v, const char* field) {
    return GetBytes(v, sizeof(T), field);
  }
  Status GetBytes(void* p, size_t n, const char* field) {
    if (bytes_.size() - pos_ < n) {
      return DataLossError(std::string(what_) + "::Deserialize: truncated at field " + field +
                           " (offset " + std::to_string(pos_) + " of " +
                           std::to_string(bytes_.size()) + ")");
    }
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  size_t Remaining() const { return bytes_.size() - pos_; }
  Status Done() const {
    if (pos_ != bytes_.size()) {
      return DataLossError(std::string(what_) + "::Deserialize: " +
                           std::to_string(bytes_.size() - pos_) + " trailing bytes");
    }
    return Status::Ok();
  }
  Status Bad(const std::string& msg) const {
    return DataLossError(std::string(what_) + "::Deserialize: " + msg);
  }

 private:
  std::string_view bytes_;
  const char* what_;
  size_t pos_ = 0;
};

constexpr char kBinaryMagic[8] = {'I', 'P', 'S', 'M', 'B', 'I', 'N', '1'};
constexpr char kRankingMagic[8] = {'I', 'P', 'S', 'M', 'R', 'N', 'K', '1'};
constexpr char kRecallMagic[8] = {'I', 'P', 'S', 'M', 'R', 'E', 'C', '1'};

}  // namespace

// ---------------------------------------------------------------------------------------------
// BinaryMetrics

Status BinaryMetrics::Add(const float* probs, const float* labels, const uint64_t* users,
                          int64_t n) {
  if (n < 0) return InvalidArgumentError("BinaryMetrics::Add: negative count " + std::to_string(n));
  // Validate everything first so that a bad call adds nothing.
  for (int64_t i = 0; i < n; ++i) {
    const float p = probs[i], y = labels[i];
    if (!(p >= 0.0f && p <= 1.0f)) {  // also rejects NaN
      return InvalidArgumentError("BinaryMetrics::Add: example " + std::to_string(i) +
                                  ": probability " + std::to_string(p) + " is not in [0, 1]");
    }
    if (y != 0.0f && y != 1.0f) {
      return InvalidArgumentError("BinaryMetrics::Add: example " + std::to_string(i) + ": label " +
                                  std::to_string(y) + " is not 0 or 1");
    }
  }
  examples_.reserve(examples_.size() + static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double p = probs[i];
    const uint32_t y = labels[i] == 1.0f ? 1 : 0;
    examples_.push_back({users != nullptr ? users[i] : 0, probs[i], y});
    positives_ += y;
    correct_ += ((p >= 0.5) == (y == 1)) ? 1 : 0;
    const double c = std::min(std::max(p, eps_), 1.0 - eps_);
    logloss_sum_ -= y ? std::log(c) : std::log(1.0 - c);
    prob_sum_ += p;
  }
  return Status::Ok();
}

Status BinaryMetrics::Merge(const BinaryMetrics& other) {
  if (other.eps_ != eps_) {
    return FailedPreconditionError("BinaryMetrics::Merge: log-loss eps differs (" +
                                   std::to_string(eps_) + " vs " + std::to_string(other.eps_) +
                                   ")");
  }
  examples_.insert(examples_.end(), other.examples_.begin(), other.examples_.end());
  positives_ += other.positives_;
  correct_ += other.correct_;
  logloss_sum_ += other.logloss_sum_;
  prob_sum_ += other.prob_sum_;
  return Status::Ok();
}

void BinaryMetrics::Clear() {
  examples_.clear();
  positives_ = correct_ = 0;
  logloss_sum_ = prob_sum_ = 0;
}

std::string BinaryMetrics::Serialize() const {
  static_assert(sizeof(Example) == 16, "Example must have no padding");
  Writer w(kBinaryMagic);
  w.Put(eps_);
  w.Put(static_cast<int64_t>(examples_.size()));
  w.Put(positives_);
  w.Put(correct_);
  w.Put(logloss_sum_);
  w.Put(prob_sum_);
  w.PutBytes(examples_.data(), examples_.size() * sizeof(Example));
  return w.Take();
}

StatusOr<BinaryMetrics> BinaryMetrics::Deserialize(std::string_view bytes) {
  Reader r(bytes, "BinaryMetrics");
  IPS_RETURN_IF_ERROR(r.Magic(kBinaryMagic));
  double eps;
  int64_t n;
  IPS_RETURN_IF_ERROR(r.Get(&eps, "eps"));
  IPS_RETURN_IF_ERROR(r.Get(&n, "count"));
  BinaryMetrics m(eps);
  IPS_RETURN_IF_ERROR(r.Get(&m.positives_, "positives"));
  IPS_RETURN_IF_ERROR(r.Get(&m.correct_, "correct"));
  IPS_RETURN_IF_ERROR(r.Get(&m.logloss_sum_, "logloss_sum"));
  IPS_RETURN_IF_ERROR(r.Get(&m.prob_sum_, "prob_sum"));
  if (n < 0 || static_cast<uint64_t>(n) != r.Remaining() / sizeof(Example)) {
    return r.Bad("count " + std::to_string(n) + " does not match " + std::to_string(r.Remaining()) +
                 " bytes of examples");
  }
  m.examples_.resize(n);
  IPS_RETURN_IF_ERROR(r.GetBytes(m.examples_.data(), n * sizeof(Example), "examples"));
  IPS_RETURN_IF_ERROR(r.Done());
  int64_t positives = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Example& e = m.examples_[i];
    if (!(e.prob >= 0.0f && e.prob <= 1.0f) || e.label > 1) {
      return r.Bad("example " + std::to_string(i) + " has probability " + std::to_string(e.prob) +
                   " / label " + std::to_string(e.label));
    }
    positives += e.label;
  }
  if (positives != m.positives_ || m.correct_ < 0 || m.correct_ > n || !(eps >= 0 && eps < 0.5)) {
    return r.Bad("inconsistent positives/correct/eps");
  }
  return m;
}

BinaryMetricsResult BinaryMetrics::Compute() const {
  BinaryMetricsResult res;
  res.count = Count();
  res.positives = positives_;
  res.positive_rate = PositiveRate();
  res.auc = Auc();
  ComputeGauc(&res.gauc, &res.gauc_users);
  res.logloss = LogLoss();
  res.mean_prediction = MeanPrediction();
  res.accuracy = Accuracy();
  return res;
}

double BinaryMetrics::PositiveRate() const {
  return examples_.empty() ? kNaN : static_cast<double>(positives_) / Count();
}

double BinaryMetrics::SortedAuc(const Example* begin, const Example* end, int64_t* pos,
                                int64_t* neg) {
  // Walk groups of equal score in ascending order: each positive of a group beats every negative
  // of the earlier groups and ties with the group's negatives (counted 1/2). The numerator is
  // kept doubled so that it stays an exact integer.
  int64_t p_total = 0, n_total = 0;
  int64_t twice_wins = 0;
  for (const Example* g = begin; g != end;) {
    const Example* e = g;
    int64_t p = 0, q = 0;
    for (; e != end && e->prob == g->prob; ++e) (e->label ? p : q) += 1;
    twice_wins += 2 * p * n_total + p * q;
    p_total += p;
    n_total += q;
    g = e;
  }
  *pos = p_total;
  *neg = n_total;
  if (p_total == 0 || n_total == 0) return kNaN;
  return static_cast<double>(twice_wins) / (2.0 * static_cast<double>(p_total) * n_total);
}

double BinaryMetrics::Auc() const {
  std::vector<Example> sorted(examples_);
  std::sort(sorted.begin(), sorted.end(),
            [](const Example& a, const Example& b) { return a.prob < b.prob; });
  int64_t p = 0, q = 0;
  return SortedAuc(sorted.data(), sorted.data() + sorted.size(), &p, &q);
}

void BinaryMetrics::ComputeGauc(double* gauc, int64_t* users) const {
  std::vector<Example> sorted(examples_);
  std::sort(sorted.begin(), sorted.end(), [](const Example& a, const Example& b) {
    return a.user != b.user ? a.user < b.user : a.prob < b.prob;
  });
  double weighted = 0;
  int64_t weight = 0, counted = 0;
  const Example* end = sorted.data() + sorted.size();
  for (const Example* u = sorted.data(); u != end;) {
    const Example* e = u;
    while (e != end && e->user == u->user) ++e;
    int64_t p = 0, q = 0;
    const double auc = SortedAuc(u, e, &p, &q);
    if (p > 0 && q > 0) {
      weighted += static_cast<double>(p + q) * auc;
      weight += p + q;
      ++counted;
    }
    u = e;
  }
  *gauc = weight > 0 ? weighted / static_cast<double>(weight) : kNaN;
  *users = counted;
}

double BinaryMetrics::Gauc() const {
  double g;
  int64_t u;
  ComputeGauc(&g, &u);
  return g;
}

int64_t BinaryMetrics::GaucUsers() const {
  double g;
  int64_t u;
  ComputeGauc(&g, &u);
  return u;
}

double BinaryMetrics::LogLoss() const { return examples_.empty() ? kNaN : logloss_sum_ / Count(); }

double BinaryMetrics::MeanPrediction() const {
  return examples_.empty() ? kNaN : prob_sum_ / Count();
}

double BinaryMetrics::Accuracy() const {
  return examples_.empty() ? kNaN : static_cast<double>(correct_) / Count();
}

// ---------------------------------------------------------------------------------------------
// RankingMetrics

RankingMetrics::RankingMetrics(int k) : k_(std::max(k, 1)), rank_count_(k_, 0) {}

Status RankingMetrics::Add(const float* scores, int64_t num_users, int num_candidates) {
  if (num_candidates < 2) {
    return InvalidArgumentError(
        "RankingMetrics::Add: need the held-out item and at least one "
        "negative per user, got num_candidates = " +
        std::to_string(num_candidates));
  }
  if (num_users < 0) {
    return InvalidArgumentError("RankingMetrics::Add: negative num_users " +
                                std::to_string(num_users));
  }
  const int64_t total = num_users * num_candidates;
  for (int64_t i = 0; i < total; ++i) {
    if (std::isnan(scores[i])) {
      return InvalidArgumentError("RankingMetrics::Add: user " +
                                  std::to_string(i / num_candidates) + " candidate " +
                                  std::to_string(i % num_candidates) + ": score is NaN");
    }
  }
  const int negatives = num_candidates - 1;
  int64_t& twice = auc_twice_below_[negatives];
  for (int64_t u = 0; u < num_users; ++u) {
    const float* s = scores + u * num_candidates;
    const float pos = s[0];
    int below = 0, ties = 0;
    for (int j = 1; j < num_candidates; ++j) {
      below += s[j] < pos;
      ties += s[j] == pos;
    }
    const int rank = negatives - below;  // #negatives >= pos
    if (rank < k_) ++rank_count_[rank];
    twice += 2 * static_cast<int64_t>(below) + ties;
  }
  users_ += num_users;
  return Status::Ok();
}

Status RankingMetrics::AddCounts(const int32_t* below, const int32_t* ties, int64_t num_users,
                                 int num_negatives) {
  if (num_negatives < 1 || num_users < 0) {
    return InvalidArgumentError(
        "RankingMetrics::AddCounts: need num_negatives >= 1 and "
        "num_users >= 0, got " +
        std::to_string(num_negatives) + " and " + std::to_string(num_users));
  }
  for (int64_t u = 0; u < num_users; ++u) {
    if (below[u] < 0 || ties[u] < 0 || static_cast<int64_t>(below[u]) + ties[u] > num_negatives) {
      return InvalidArgumentError("RankingMetrics::AddCounts: user " + std::to_string(u) +
                                  ": below = " + std::to_string(below[u]) +
                                  ", ties = " + std::to_string(ties[u]) + " with " +
                                  std::to_string(num_negatives) + " negatives");
    }
  }
  int64_t& twice = auc_twice_below_[num_negatives];
  for (int64_t u = 0; u < num_users; ++u) {
    const int rank = num_negatives - below[u];
    if (rank < k_) ++rank_count_[rank];
    twice += 2 * static_cast<int64_t>(below[u]) + ties[u];
  }
  users_ += num_users;
  return Status::Ok();
}

Status RankingMetrics::Merge(const RankingMetrics& other) {
  if (other.k_ != k_) {
    return FailedPreconditionError("RankingMetrics::Merge: k differs (" + std::to_string(k_) +
                                   " vs " + std::to_string(other.k_) + ")");
  }
  users_ += other.users_;
  for (int r = 0; r < k_; ++r) rank_count_[r] += other.rank_count_[r];
  for (const auto& [n, v] : other.auc_twice_below_) auc_twice_below_[n] += v;
  return Status::Ok();
}

void RankingMetrics::Clear() {
  users_ = 0;
  std::fill(rank_count_.begin(), rank_count_.end(), 0);
  auc_twice_below_.clear();
}

std::string RankingMetrics::Serialize() const {
  Writer w(kRankingMagic);
  w.Put(static_cast<int64_t>(k_));
  w.Put(users_);
  for (int64_t c : rank_count_) w.Put(c);
  w.Put(static_cast<int64_t>(auc_twice_below_.size()));
  for (const auto& [n, v] : auc_twice_below_) {
    w.Put(static_cast<int64_t>(n));
    w.Put(v);
  }
  return w.Take();
}

StatusOr<RankingMetrics> RankingMetrics::Deserialize(std::string_view bytes) {
  Reader r(bytes, "RankingMetrics");
  IPS_RETURN_IF_ERROR(r.Magic(kRankingMagic));
  int64_t k, entries;
  IPS_RETURN_IF_ERROR(r.Get(&k, "k"));
  if (k < 1 || k > (1 << 24) || static_cast<uint64_t>(k) * 8 > r.Remaining()) {
    return r.Bad("k = " + std::to_string(k));
  }
  RankingMetrics m(static_cast<int>(k));
  IPS_RETURN_IF_ERROR(r.Get(&m.users_, "users"));
  int64_t hits = 0;
  for (auto& c : m.rank_count_) {
    IPS_RETURN_IF_ERROR(r.Get(&c, "rank_count"));
    if (c < 0) return r.Bad("negative rank count");
    hits += c;
  }
  IPS_RETURN_IF_ERROR(r.Get(&entries, "auc_entries"));
  if (entries < 0 || static_cast<uint64_t>(entries) * 16 != r.Remaining()) {
    return r.Bad("auc entry count " + std::to_string(entries));
  }
  for (int64_t i = 0; i < entries; ++i) {
    int64_t n, v;
    IPS_RETURN_IF_ERROR(r.Get(&n, "auc_negatives"));
    IPS_RETURN_IF_ERROR(r.Get(&v, "auc_numerator"));
    if (n < 1 || n > INT32_MAX || v < 0) return r.Bad("auc entry " + std::to_string(i));
    m.auc_twice_below_[static_cast<int>(n)] = v;
  }
  IPS_RETURN_IF_ERROR(r.Done());
  if (m.users_ < 0 || hits > m.users_) return r.Bad("inconsistent user counts");
  return m;
}

double RankingMetrics::HitRate() const { return HitRateAt(k_); }

double RankingMetrics::Ndcg() const { return NdcgAt(k_); }

double RankingMetrics::HitRateAt(int j) const {
  if (users_ == 0 || j < 1 || j > k_) return kNaN;
  int64_t hits = 0;
  for (int r = 0; r < j; ++r) hits += rank_count_[r];
  return static_cast<double>(hits) / users_;
}

double RankingMetrics::NdcgAt(int j) const {
  if (users_ == 0 || j < 1 || j > k_) return kNaN;
  double sum = 0;
  for (int r = 0; r < j; ++r) sum += rank_count_[r] / std::log2(r + 2.0);
  return sum / users_;
}

double RankingMetrics::SampledAuc() const {
  if (users_ == 0) return kNaN;
  double sum = 0;
  for (const auto& [n, twice] : auc_twice_below_) sum += static_cast<double>(twice) / (2.0 * n);
  return sum / users_;
}

// ---------------------------------------------------------------------------------------------
// RecallMetrics

RecallMetrics::RecallMetrics(int k) : k_(std::max(k, 1)) {}

namespace {

// Sorted, deduplicated copy of the relevant set; INVALID_ARGUMENT when empty or negative.
Status RelevantSet(const uint32_t* relevant, int num_relevant, std::vector<uint32_t>* out) {
  if (num_relevant <= 0) {
    return InvalidArgumentError("RecallMetrics: user has " + std::to_string(num_relevant) +
                                " relevant items; recall is undefined (do not evaluate it)");
  }
  out->assign(relevant, relevant + num_relevant);
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
  return Status::Ok();
}

}  // namespace

Status RecallMetrics::AddRetrieved(const uint32_t* retrieved, int num_retrieved,
                                   const uint32_t* relevant, int num_relevant) {
  if (num_retrieved < 0) {
    return InvalidArgumentError("RecallMetrics::AddRetrieved: negative num_retrieved " +
                                std::to_string(num_retrieved));
  }
  std::vector<uint32_t> rel;
  IPS_RETURN_IF_ERROR(RelevantSet(relevant, num_relevant, &rel));
  // The first K distinct retrieved ids.
  std::unordered_set<uint32_t> top;
  for (int i = 0; i < num_retrieved && static_cast<int>(top.size()) < k_; ++i) {
    top.insert(retrieved[i]);
  }
  int64_t hits = 0;
  for (uint32_t id : top) hits += std::binary_search(rel.begin(), rel.end(), id);
  recall_sum_ += static_cast<double>(hits) / static_cast<double>(rel.size());
  hit_users_ += hits > 0;
  ++users_;
  return Status::Ok();
}

Status RecallMetrics::AddScores(const float* scores, int64_t num_items, const uint32_t* relevant,
                                int num_relevant) {
  if (num_items <= 0) {
    return InvalidArgumentError("RecallMetrics::AddScores: num_items must be positive, got " +
                                std::to_string(num_items));
  }
  for (int64_t i = 0; i < num_items; ++i) {
    if (std::isnan(scores[i])) {
      return InvalidArgumentError("RecallMetrics::AddScores: item " + std::to_string(i) +
                                  ": score is NaN");
    }
  }
  std::vector<uint32_t> rel;
  IPS_RETURN_IF_ERROR(RelevantSet(relevant, num_relevant, &rel));
  if (rel.back() >= num_items) {
    return InvalidArgumentError("RecallMetrics::AddScores: relevant item " +
                                std::to_string(rel.back()) + " is not below num_items " +
                                std::to_string(num_items));
  }
  const int64_t k = std::min<int64_t>(k_, num_items);
  index_scratch_.resize(num_items);
  for (int64_t i = 0; i < num_items; ++i) index_scratch_[i] = i;
  // Descending score, ties toward the lower id: a strict weak order (no NaN), so the first k
  // after nth_element are exactly the top-k of a stable descending sort.
  auto better = [scores](int64_t a, int64_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  };
  std::nth_element(index_scratch_.begin(), index_scratch_.begin() + (k - 1), index_scratch_.end(),
                   better);
  int64_t hits = 0;
  for (int64_t i = 0; i < k; ++i) {
    hits += std::binary_search(rel.begin(), rel.end(), static_cast<uint32_t>(index_scratch_[i]));
  }
  recall_sum_ += static_cast<double>(hits) / static_cast<double>(rel.size());
  hit_users_ += hits > 0;
  ++users_;
  return Status::Ok();
}

Status RecallMetrics::Merge(const RecallMetrics& other) {
  if (other.k_ != k_) {
    return FailedPreconditionError("RecallMetrics::Merge: k differs (" + std::to_string(k_) +
                                   " vs " + std::to_string(other.k_) + ")");
  }
  users_ += other.users_;
  hit_users_ += other.hit_users_;
  recall_sum_ += other.recall_sum_;
  return Status::Ok();
}

void RecallMetrics::Clear() {
  users_ = hit_users_ = 0;
  recall_sum_ = 0;
}

std::string RecallMetrics::Serialize() const {
  Writer w(kRecallMagic);
  w.Put(static_cast<int64_t>(k_));
  w.Put(users_);
  w.Put(hit_users_);
  w.Put(recall_sum_);
  return w.Take();
}

StatusOr<RecallMetrics> RecallMetrics::Deserialize(std::string_view bytes) {
  Reader r(bytes, "RecallMetrics");
  IPS_RETURN_IF_ERROR(r.Magic(kRecallMagic));
  int64_t k;
  IPS_RETURN_IF_ERROR(r.Get(&k, "k"));
  if (k < 1 || k > INT32_MAX) return r.Bad("k = " + std::to_string(k));
  RecallMetrics m(static_cast<int>(k));
  IPS_RETURN_IF_ERROR(r.Get(&m.users_, "users"));
  IPS_RETURN_IF_ERROR(r.Get(&m.hit_users_, "hit_users"));
  IPS_RETURN_IF_ERROR(r.Get(&m.recall_sum_, "recall_sum"));
  IPS_RETURN_IF_ERROR(r.Done());
  if (m.users_ < 0 || m.hit_users_ < 0 || m.hit_users_ > m.users_ ||
      !(m.recall_sum_ >= 0 && m.recall_sum_ <= m.users_ + 1e-6 * m.users_)) {
    return r.Bad("inconsistent counts");
  }
  return m;
}

double RecallMetrics::Recall() const { return users_ == 0 ? kNaN : recall_sum_ / users_; }

double RecallMetrics::HitRate() const {
  return users_ == 0 ? kNaN : static_cast<double>(hit_users_) / users_;
}

}  // namespace ips
