// Evaluation metrics of the trainer, defined exactly as the peer (shared/peers) and sklearn define
// them, as streaming accumulators that several workers can merge.
//
// This module owns the metric definitions; the trainer owns what it feeds them:
//   * BinaryMetrics: CTR evaluation (DIN/DIEN). AUC, GAUC, log loss, mean prediction, accuracy.
//   * RankingMetrics: one held-out item among sampled candidates (the peer's `rank_metrics`):
//     HR@K, NDCG@K and sampled AUC.
//   * RecallMetrics: full-ranking retrieval with several relevant items per user (MIND):
//     Recall@K and HitRate@K.
//
// Merging: every accumulator's Merge(other) gives exactly the state that adding other's inputs
// after this one's would give. AUC/GAUC keep the examples (16 bytes each) because exact AUC needs
// all scores; everything else keeps order-independent integer counts (HR, NDCG's rank histogram,
// sampled-AUC numerators), so merged results are bit-identical to the concatenation's, or O(1)
// double sums (log loss, mean prediction, Recall) that match to rounding.
//
// Invalid input (NaN scores, probabilities outside [0, 1], labels other than 0/1, too few
// candidates) is rejected with INVALID_ARGUMENT naming the element and nothing of that call is
// added, so a diverged model cannot corrupt the sort or crash the process.
//
// Several workers: each accumulates locally, Serialize()s its state, and one rank Deserialize()s
// and Merge()s them (the bytes are host byte order; every machine we run on is little-endian).
// Deserialize validates everything it reads (DATA_LOSS naming the accumulator and the field), so
// corrupt bytes cannot crash the merge.
//
// Thread safety: none; use one accumulator per thread and Merge.
#ifndef IPS_WORKER_METRICS_H_
#define IPS_WORKER_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ips {

// sklearn 1.2's log_loss(eps="auto") clips at np.finfo(y_pred.dtype).eps, which is this value
// for our float32 predictions: clipping p to [eps, 1 - eps] makes our log loss equal sklearn's.
constexpr double kLogLossEps = 1.1920928955078125e-07;  // FLT_EPSILON = 2^-23

// Every BinaryMetrics value at once (one GAUC sort instead of one per getter).
struct BinaryMetricsResult {
  int64_t count = 0;
  int64_t positives = 0;
  double positive_rate = 0;
  double auc = 0;
  double gauc = 0;
  int64_t gauc_users = 0;
  double logloss = 0;
  double mean_prediction = 0;
  double accuracy = 0;
};

// CTR metrics over (probability, label, user) examples.
//
// Definitions (n examples, P positives, N negatives):
//   Auc:   P(score of a random positive > score of a random negative), ties count 1/2; equal to
//          sklearn's roc_auc_score. O(n log n) by one sort. NaN when P == 0 or N == 0.
//   Gauc:  the DIN paper's group AUC weighted by impressions: sum_u n_u AUC_u / sum_u n_u over
//          users u that have both classes (users whose examples are all one class have no AUC and
//          are skipped: they are neither in the numerator nor the denominator). NaN if no user
//          qualifies. GaucUsers() says how many users counted.
//   LogLoss: mean of -[y log p + (1-y) log(1-p)] with p clipped to [eps, 1-eps] (kLogLossEps by
//          default, sklearn's value for float32 input). NaN when empty.
//   MeanPrediction: mean p (compare with PositiveRate() for calibration). NaN when empty.
//   Accuracy: fraction of examples with (p >= 0.5) == (y == 1), i.e. logit >= 0 predicts a
//          click. NaN when empty.
class BinaryMetrics {
 public:
  explicit BinaryMetrics(double logloss_eps = kLogLossEps) : eps_(logloss_eps) {}

  // Adds n examples: probs[i] in [0, 1], labels[i] in {0, 1}, users[i] any id (users may be
  // null: every example then belongs to user 0, and Gauc() equals Auc() when both classes are
  // present). INVALID_ARGUMENT naming the first bad index; then nothing of this call is added.
  Status Add(const float* probs, const float* labels, const uint64_t* users, int64_t n);
  Status Add(float prob, float label, uint64_t user = 0) { return Add(&prob, &label, &user, 1); }

  // Appends other's examples and sums. `other` must use the same eps (else FAILED_PRECONDITION).
  Status Merge(const BinaryMetrics& other);
  void Clear();

  // State as bytes (16 bytes per example + 56) / back. Deserialize: DATA_LOSS on a wrong
  // magic, truncated or trailing bytes, or invalid content (probability, label, counts).
  std::string Serialize() const;
  static StatusOr<BinaryMetrics> Deserialize(std::string_view bytes);

  // All metrics; sorts the examples twice (AUC, GAUC): O(n log n).
  BinaryMetricsResult Compute() const;
  int64_t Count() const { return static_cast<int64_t>(examples_.size()); }
  int64_t Positives() const { return positives_; }
  double PositiveRate() const;
  double Auc() const;
  double Gauc() const;
  int64_t GaucUsers() const;  // users with both classes (those Gauc() averages over)
  double LogLoss() const;
  double MeanPrediction() const;
  double Accuracy() const;

 private:
  struct Example {
    uint64_t user;
    float prob;
    uint32_t label;  // 0 or 1
  };
  // AUC of examples [begin, end) already sorted by prob; sets *pos and *neg. NaN if one is 0.
  static double SortedAuc(const Example* begin, const Example* end, int64_t* pos, int64_t* neg);
  // Computes GAUC and the number of counted users.
  void ComputeGauc(double* gauc, int64_t* users) const;

  double eps_;
  std::vector<Example> examples_;
  int64_t positives_ = 0;
  int64_t correct_ = 0;
  double logloss_sum_ = 0;
  double prob_sum_ = 0;
};

// Ranking metrics of one held-out item among sampled candidates, exactly the peer's
// `rank_metrics` (shared/peers/data.py). For each user, scores[0] is the held-out (positive)
// item and scores[1..C-1] are the negatives:
//   rank = #negatives with score >= scores[0] (ties count AGAINST the positive, so a constant
//          scorer gets HR = 0);
//   HR@K = mean over users of [rank < K];  NDCG@K = mean of [rank < K] / log2(rank + 2);
//   sampled AUC = mean over users of (#neg < pos + 0.5 * #neg == pos) / #negatives.
// All state is integer counts (hits per rank below K, AUC numerators per negative count), so
// results do not depend on the order of users or of merges. The counts per rank also give HR@j
// and NDCG@j of every j <= K (HitRateAt, NdcgAt): one accumulator of the largest cut-off reports
// all of them from the same ranks.
class RankingMetrics {
 public:
  // k >= 1 (the peer reports k = 10); a non-positive k is treated as 1.
  explicit RankingMetrics(int k = 10);

  // scores: row-major [num_users x num_candidates], column 0 = the held-out item.
  // INVALID_ARGUMENT if num_candidates < 2, num_users < 0, or a score is NaN (naming user and
  // column); then nothing of this call is added.
  Status Add(const float* scores, int64_t num_users, int num_candidates);
  // Adds users whose comparisons were counted elsewhere (e.g. on the GPU): below[i] =
  // #negatives scoring < the positive, ties[i] = #negatives scoring == it; the rank is
  // num_negatives - below[i]. INVALID_ARGUMENT if num_negatives < 1, a count is negative or
  // below + ties > num_negatives.
  Status AddCounts(const int32_t* below, const int32_t* ties, int64_t num_users, int num_negatives);

  // FAILED_PRECONDITION if k differs.
  Status Merge(const RankingMetrics& other);
  void Clear();
  // State as bytes / back (DATA_LOSS on wrong magic, size or inconsistent counts).
  std::string Serialize() const;
  static StatusOr<RankingMetrics> Deserialize(std::string_view bytes);

  int k() const { return k_; }
  int64_t Users() const { return users_; }
  double HitRate() const;  // HR@K; NaN when no users
  double Ndcg() const;     // NDCG@K; NaN when no users
  // HR@j and NDCG@j for a cut-off j in [1, K] (j = K: HitRate(), Ndcg()); NaN when no users or j
  // is outside [1, K] (the ranks at or beyond K are not kept).
  double HitRateAt(int j) const;
  double NdcgAt(int j) const;
  double SampledAuc() const;  // NaN when no users

 private:
  int k_;
  int64_t users_ = 0;
  std::vector<int64_t> rank_count_;  // [k]: users with rank r < k
  // num_negatives -> sum over those users of (2 * below + ties): exact integer numerators.
  std::map<int, int64_t> auc_twice_below_;
};

// Full-ranking retrieval with several relevant items per user (MIND's evaluation):
//   Recall@K = mean over users of |top-K ∩ relevant| / |relevant|;
//   HitRate@K = fraction of users with |top-K ∩ relevant| >= 1.
// `relevant` is a set (duplicates count once). The caller removes items that must not be
// retrieved (e.g. the user's history) before calling; this module only intersects.
class RecallMetrics {
 public:
  explicit RecallMetrics(int k = 50);

  // retrieved: the user's ranked list (best first); only its first K distinct entries count.
  // INVALID_ARGUMENT if num_relevant == 0 (recall undefined: such users must not be evaluated)
  // or a count is negative.
  Status AddRetrieved(const uint32_t* retrieved, int num_retrieved, const uint32_t* relevant,
                      int num_relevant);
  // scores over all items [0, num_items) (index = item id; mask ineligible items with -inf).
  // top-K = the K highest scores, ties broken toward the LOWER item id (a stable descending
  // sort); NaN scores are rejected (INVALID_ARGUMENT). relevant ids must be < num_items.
  // O(num_items) per user (nth_element).
  Status AddScores(const float* scores, int64_t num_items, const uint32_t* relevant,
                   int num_relevant);

  Status Merge(const RecallMetrics& other);  // FAILED_PRECONDITION if k differs
  void Clear();
  // State as bytes / back (DATA_LOSS on wrong magic, size or inconsistent counts).
  std::string Serialize() const;
  static StatusOr<RecallMetrics> Deserialize(std::string_view bytes);

  int k() const { return k_; }
  int64_t Users() const { return users_; }
  double Recall() const;   // NaN when no users
  double HitRate() const;  // NaN when no users

 private:
  int k_;
  int64_t users_ = 0;
  int64_t hit_users_ = 0;
  double recall_sum_ = 0;
  std::vector<int64_t> index_scratch_;  // AddScores' candidate order (kept to reuse the memory)
};

}  // namespace ips

#endif  // IPS_WORKER_METRICS_H_
