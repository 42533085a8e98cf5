// Full-ranking retrieval evaluation of a model with user vectors (MIND; any CtrModel whose
// num_user_vectors() > 0): every evaluated user is scored against EVERY item of the vocabulary,
// not against the ~100 sampled candidates of the CTR ranking protocol.
//
// Protocol (a converted seqrec/ctr dataset, worker/data_reader.h EvalReader):
//   * users = the dataset's evaluation lists (in EvalReader's raw-user-id order), optionally the
//     first max_users of them; the user's history is the list's history (the last max_len
//     train+validation events), the relevant item is the list's candidate 0 (the held-out item);
//     the sampled negatives of the list are not used.
//   * item rows 1..num_items (and category rows 0..num_categories when options.category_table is
//     set) are read once with the store's read-only Lookup (unseen rows read as zeros), the users
//     are encoded in batches by an inference Forward, and score(user, item) = max_k <v_k, x_item>
//     over the user's vectors, where x_item is the model's item vector: the item row, plus the
//     item's category row for MIND with use_categories (models/mind.h).
//   * Nothing is excluded but the padding item 0: history items stay candidates (the held-out
//     item may itself appear in the history under seqrec, and excluding the history would then
//     make it unretrievable; this matches the "no filtering" full-ranking variant).
//   * Metrics per cut-off K (worker/metrics.h):
//       hit_rate, ndcg: RankingMetrics over all items, rank = #other items with a score >= the
//         held-out item's (ties count AGAINST it, the peer's convention: a constant scorer gets 0);
//       recall: RecallMetrics over the top-K list (ties broken toward the lower item id). With
//         one relevant item per user it equals hit_rate up to that tie rule.
//
// Speed: item rows are repacked into 16-item panels and scored in (user block x item block) tiles
// by a fused kernel (16-wide multiply-adds over the features for 4 interests at a time, the max
// over interests in registers; AVX-512 / AVX2 / baseline picked at run time), so the
// [users*K x items] product is never materialised. The rank comes from a vectorised counting pass
// over each user's score row and the top-K from a threshold-filtered candidate buffer cut with
// nth_element (items visited in ascending id, so ties favour lower ids). User blocks are spread
// over ctx.pool.
//
// Thread safety: none beyond the store's (Lookup is thread-safe); the model is used for
// inference forwards only, so Dice running statistics are read, not updated.
#ifndef IPS_WORKER_RETRIEVAL_H_
#define IPS_WORKER_RETRIEVAL_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/stop_signals.h"
#include "kernels/context.h"
#include "models/model.h"
#include "ps/embedding_store.h"
#include "worker/data_reader.h"

namespace ips {

struct RetrievalOptions {
  std::vector<int> cutoffs = {20, 50, 100};  // the K of Recall@K / HR@K / NDCG@K, each >= 1
  int64_t max_users = 0;                     // 0 = every evaluation list
  // Category table to feed the model's category inputs from; -1 = category rows read as zeros.
  // MIND with MindOptions.use_categories (its default) lives in the space item row + category
  // row: with a table here, every item is scored as item row + the row of its category
  // (Dataset::item_cat()); with -1 both the model and the scoring see the item rows alone, which
  // is consistent but not the space the model was trained in.
  int category_table = -1;
  int64_t users_per_forward = 0;  // 0 = the model's max_batch()
  int64_t item_block = 2048;      // items per scoring tile
  int64_t user_block = 64;        // users per scoring tile
  // Checked before every batch of users_per_forward users (may be null): once set, the evaluation
  // is abandoned with EvaluationAbandonedError (common/stop_signals.h).
  const std::atomic<bool>* stop = nullptr;
};

struct RetrievalCutoff {
  int k = 0;
  double recall = 0;    // RecallMetrics::Recall
  double hit_rate = 0;  // RankingMetrics::HitRate (ties against the held-out item)
  double ndcg = 0;      // RankingMetrics::Ndcg
};

struct RetrievalResult {
  int64_t users = 0;
  int64_t items = 0;  // items ranked per user (the vocabulary without the padding item)
  std::vector<RetrievalCutoff> cutoffs;  // in options.cutoffs order
  double mean_rank = 0;                  // mean 0-based rank of the held-out item
  double seconds = 0;                    // whole evaluation
  double encode_seconds = 0;             // reading lists + model forwards
  double score_seconds = 0;              // GEMM tiles + rank + top-K
};

// Evaluates `model` (not owned; inference forwards only) against `store`'s table `item_table`
// on `data`'s evaluation lists. The model must have num_user_vectors() >= 1 and vector_dim() ==
// embedding_dim() == the item table's dim; its max_len() is the history window read. Errors:
// INVALID_ARGUMENT (null model, model without user vectors, dims that differ, bad options),
// FAILED_PRECONDITION (a dataset without candidate lists, e.g. the given protocol, or with no
// evaluation lists), DATA_LOSS (an item id beyond the vocabulary, a non-finite score), and the
// store's and model's errors.
StatusOr<RetrievalResult> EvaluateRetrieval(const kernels::Context& ctx,
                                            models::CtrModel<float>* model,
                                            ps::EmbeddingStore* store, int item_table,
                                            const Dataset& data,
                                            const RetrievalOptions& options = {});

// The scoring core, exposed for tests and benchmarks. For users [U] with vectors [U x K x d] and
// items [(N + 1) x d] (row 0 = the padding item, never ranked), score(u, i) = max_k
// <vectors[u, k], items[i]> and, over the items i in [1, N] other than relevant[u]:
//   below[u] = #items with a score < score(u, relevant[u]),  ties[u] = #items with an equal score
//   (the held-out item's 0-based rank with ties against it is N - 1 - below[u]);
//   top[u * max_k + j] = the j-th best item of [1, N] (relevant included; score descending,
//   item id ascending on ties).
// relevant[u] in [1, N]; 1 <= max_k <= N. Parallel over user blocks on ctx.pool (CPU only).
// INVALID_ARGUMENT for bad sizes or ids, DATA_LOSS for a non-finite vector or item row (row 0
// is not read for ranking and may hold anything) or a NaN score.
Status ScoreAllItems(const kernels::Context& ctx, const float* vectors, int64_t users,
                     int64_t num_vectors, int64_t dim, const float* items, int64_t num_items,
                     const uint32_t* relevant, int max_k, int64_t user_block, int64_t item_block,
                     int32_t* below, int32_t* ties, uint32_t* top);

}  // namespace ips

#endif  // IPS_WORKER_RETRIEVAL_H_
