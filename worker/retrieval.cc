#include "worker/retrieval.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "common/thread_pool.h"
#include "common/timer.h"
#include "models/mind.h"
#include "worker/metrics.h"

namespace ips {
namespace {

// A top-K entry; `Better` is the ranking order (score descending, item id ascending).
struct Scored {
  float score;
  uint32_t item;
};
bool Better(const Scored& a, const Scored& b) {
  return a.score > b.score || (a.score == b.score && a.item < b.item);
}

// True when the model's item vectors are item row + category row (MIND with
// MindOptions.use_categories): the items must then be scored with their category rows added.
bool ItemVectorsAddCategories(const models::CtrModel<float>* model) {
  const auto* mind = dynamic_cast<const models::Mind<float>*>(model);
  return mind != nullptr && mind->options().use_categories;
}

// ---- Scoring kernel ----------------------------------------------------------------------------
//
// Items are repacked into panels of 16: panel p holds items [16p, 16p + 16) as [d x 16] (feature
// c of the 16 items contiguous), zero-filled past the last item. For one user, the scores of a
// panel are then 16-wide vector FMAs over c for 4 interests at a time, the max over interests is
// taken in registers and only the final score is stored: no [users*K x items] matrix is written
// and read back. On the dev VM a first version (BLAS GEMM tiles + a separate max pass) took 2.4x
// the bare GEMM's time; this one takes about 0.4x of it (bench/retrieval_bench.cc; with d = 18
// the GEMM's k is too small for a BLAS to run near peak, and this VM's OpenBLAS also falls back
// to its SSE3 kernel). The build targets baseline x86-64, so the body is compiled three times
// (AVX-512, AVX2+FMA, baseline) and picked at run time, like kernels/cpu/recurrent.cc.

constexpr int64_t kPanel = 16;

#if defined(__GNUC__) && defined(__x86_64__)
#define IPS_RETRIEVAL_CLONES 1
#define IPS_RETRIEVAL_INLINE __attribute__((always_inline)) inline
#else
#define IPS_RETRIEVAL_INLINE inline
#endif

#if defined(__GNUC__)
typedef float V16 __attribute__((vector_size(64)));

// out[16(p - p0) ...] for panels [p0, p1): max over the k4 (a multiple of 4) interest rows of
// vec [k4 x d] of <vec_k, item>.
IPS_RETRIEVAL_INLINE void ScorePanelsBody(const float* __restrict vec, int64_t k4, int64_t d,
                                          const float* __restrict panels, int64_t p0, int64_t p1,
                                          float* __restrict out) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* pan = panels + p * d * kPanel;
    V16 best = {};  // overwritten by the first group of 4 interests
    for (int64_t k0 = 0; k0 < k4; k0 += 4) {
      const float* v0 = vec + k0 * d;
      const float* v1 = v0 + d;
      const float* v2 = v1 + d;
      const float* v3 = v2 + d;
      V16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int64_t c = 0; c < d; ++c) {
        V16 x;
        __builtin_memcpy(&x, pan + c * kPanel, sizeof(x));
        a0 += x * v0[c];
        a1 += x * v1[c];
        a2 += x * v2[c];
        a3 += x * v3[c];
      }
      const V16 m01 = a0 > a1 ? a0 : a1;
      const V16 m23 = a2 > a3 ? a2 : a3;
      const V16 m = m01 > m23 ? m01 : m23;
      best = k0 == 0 ? m : (m > best ? m : best);
    }
    __builtin_memcpy(out + (p - p0) * kPanel, &best, sizeof(best));
  }
}
#else
IPS_RETRIEVAL_INLINE void ScorePanelsBody(const float* vec, int64_t k4, int64_t d,
                                          const float* panels, int64_t p0, int64_t p1, float* out) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* pan = panels + p * d * kPanel;
    for (int64_t j = 0; j < kPanel; ++j) {
      float best = 0;
      for (int64_t k = 0; k < k4; ++k) {
        float a = 0;
        for (int64_t c = 0; c < d; ++c) a += pan[c * kPanel + j] * vec[k * d + c];
        best = k == 0 || a > best ? a : best;
      }
      out[(p - p0) * kPanel + j] = best;
    }
  }
}
#endif

constexpr int64_t kScanBlock = 64;  // the top-K pass skips blocks whose max cannot enter

// Over s[1, n]: *lt = #(s < pos), *eq = #(s == pos), *nan = #NaN (int32 counters, n < 2^31, so
// the loop vectorises in the clones). Also bmax[b] = max of s[64b, 64b + 64) for b < nblocks
// (s is readable that far; NaN scores make the caller fail, so their effect here is moot).
IPS_RETRIEVAL_INLINE void CountBody(const float* __restrict s, int64_t n, float pos, int64_t* lt,
                                    int64_t* eq, int64_t* nan, float* __restrict bmax,
                                    int64_t nblocks) {
  int32_t a = 0, b = 0, c = 0;
  for (int64_t i = 1; i <= n; ++i) {
    const float v = s[i];
    a += v < pos;
    b += v == pos;
    c += v != v;
  }
  *lt = a;
  *eq = b;
  *nan = c;
#if defined(__GNUC__)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const float* p = s + blk * kScanBlock;
    V16 m;
    __builtin_memcpy(&m, p, sizeof(m));
    for (int64_t j = 16; j < kScanBlock; j += 16) {
      V16 x;
      __builtin_memcpy(&x, p + j, sizeof(x));
      m = x > m ? x : m;
    }
    float r = m[0];
    for (int l = 1; l < 16; ++l) r = m[l] > r ? m[l] : r;
    bmax[blk] = r;
  }
#else
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    float r = s[blk * kScanBlock];
    for (int64_t j = 1; j < kScanBlock; ++j) r = std::max(r, s[blk * kScanBlock + j]);
    bmax[blk] = r;
  }
#endif
}

using CountFn = void (*)(const float*, int64_t, float, int64_t*, int64_t*, int64_t*, float*,
                         int64_t);
void CountBaseline(const float* s, int64_t n, float pos, int64_t* lt, int64_t* eq, int64_t* nan,
                   float* bmax, int64_t nblocks) {
  CountBody(s, n, pos, lt, eq, nan, bmax, nblocks);
}
#ifdef IPS_RETRIEVAL_CLONES
__attribute__((target("avx2,fma"))) void CountAvx2(const float* s, int64_t n, float pos,
                                                   int64_t* lt, int64_t* eq, int64_t* nan,
                                                   float* bmax, int64_t nblocks) {
  CountBody(s, n, pos, lt, eq, nan, bmax, nblocks);
}
__attribute__((target("avx512f,avx512bw"))) void CountAvx512(const float* s, int64_t n, float pos,
                                                             int64_t* lt, int64_t* eq, int64_t* nan,
                                                             float* bmax, int64_t nblocks) {
  CountBody(s, n, pos, lt, eq, nan, bmax, nblocks);
}
#endif

CountFn PickCount() {
#ifdef IPS_RETRIEVAL_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return CountAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CountAvx2;
#endif
  return CountBaseline;
}

using ScorePanelsFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                               float*);
void ScorePanelsBaseline(const float* vec, int64_t k4, int64_t d, const float* panels, int64_t p0,
                         int64_t p1, float* out) {
  ScorePanelsBody(vec, k4, d, panels, p0, p1, out);
}
#ifdef IPS_RETRIEVAL_CLONES
__attribute__((target("avx2,fma"))) void ScorePanelsAvx2(const float* vec, int64_t k4, int64_t d,
                                                         const float* panels, int64_t p0,
                                                         int64_t p1, float* out) {
  ScorePanelsBody(vec, k4, d, panels, p0, p1, out);
}
__attribute__((target("avx512f"))) void ScorePanelsAvx512(const float* vec, int64_t k4, int64_t d,
                                                          const float* panels, int64_t p0,
                                                          int64_t p1, float* out) {
  ScorePanelsBody(vec, k4, d, panels, p0, p1, out);
}
#endif

ScorePanelsFn PickScorePanels() {
#ifdef IPS_RETRIEVAL_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return ScorePanelsAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ScorePanelsAvx2;
#endif
  return ScorePanelsBaseline;
}

// Scans one user's score row s[0, row_len) whose entries outside [1, n] hold -inf: counts against
// the relevant item and takes per-64-item block maxima (one vectorised pass), then selects the
// top max_k by Better. The max_k-th largest block maximum t0 is a lower bound of the max_k-th
// best score (it and the larger block maxima are max_k distinct items), so only blocks and items
// scoring >= t0 can enter. Candidates go to `buf`; when it holds 4 max_k, nth_element keeps the
// best max_k and the admission bound becomes `> the worst kept score` (items are visited in
// ascending id, so a later item with an equal score loses to the kept one). Returns false on a
// NaN score.
bool ScanRow(CountFn count, const float* s, int64_t n, int64_t nblocks, uint32_t relevant,
             int max_k, std::vector<float>* bmax, std::vector<float>* bsel,
             std::vector<Scored>* buf, int32_t* below, int32_t* ties, uint32_t* top) {
  const float pos = s[relevant];
  if (std::isnan(pos)) return false;
  int64_t lt = 0, eq = 0, nan = 0;
  count(s, n, pos, &lt, &eq, &nan, bmax->data(), nblocks);
  if (nan > 0) return false;
  float bound = -std::numeric_limits<float>::infinity();
  if (nblocks >= max_k) {
    bsel->assign(bmax->begin(), bmax->end());
    std::nth_element(bsel->begin(), bsel->begin() + (max_k - 1), bsel->end(),
                     [](float a, float b) { return a > b; });
    bound = (*bsel)[max_k - 1];
  }
  const size_t cap = 4 * static_cast<size_t>(max_k);
  auto select = [&](float bound) {
    buf->clear();
    bool strict = false;  // after the first cut: admit only scores > bound
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const float m = (*bmax)[blk];
      if (strict ? !(m > bound) : !(m >= bound)) continue;
      const int64_t i0 = std::max<int64_t>(1, blk * kScanBlock);
      const int64_t i1 = std::min<int64_t>(n + 1, (blk + 1) * kScanBlock);
      for (int64_t i = i0; i < i1; ++i) {
        if (strict ? !(s[i] > bound) : !(s[i] >= bound)) continue;
        buf->push_back({s[i], static_cast<uint32_t>(i)});
        if (buf->size() == cap) {
          std::nth_element(buf->begin(), buf->begin() + (max_k - 1), buf->end(), Better);
          buf->resize(static_cast<size_t>(max_k));
          bound = (*buf)[max_k - 1].score;
          strict = true;
        }
      }
    }
  };
  select(bound);
  // Cannot happen (t0 is a lower bound); kept so that a broken bound costs time, not memory.
  if (buf->size() < static_cast<size_t>(max_k)) select(-std::numeric_limits<float>::infinity());
  std::sort(buf->begin(), buf->end(), Better);
  *below = static_cast<int32_t>(lt);
  *ties = static_cast<int32_t>(eq - 1);  // the relevant item equals itself
  for (int j = 0; j < max_k; ++j) top[j] = (*buf)[j].item;
  return true;
}

}  // namespace

Status ScoreAllItems(const kernels::Context& ctx, const float* vectors, int64_t users,
                     int64_t num_vectors, int64_t dim, const float* items, int64_t num_items,
                     const uint32_t* relevant, int max_k, int64_t user_block, int64_t item_block,
                     int32_t* below, int32_t* ties, uint32_t* top) {
  if (ctx.device != kernels::Device::kCpu)
    return InvalidArgumentError("ScoreAllItems: needs a CPU context (item rows are host memory)");
  if (users < 0 || num_vectors < 1 || dim < 1 || num_items < 1 || max_k < 1 || max_k > num_items ||
      user_block < 1 || item_block < 1)
    return InvalidArgumentError(
        "ScoreAllItems: users >= 0, num_vectors, dim, num_items, user_block, item_block >= 1 and "
        "1 <= max_k <= num_items required (users " +
        std::to_string(users) + ", num_vectors " + std::to_string(num_vectors) + ", dim " +
        std::to_string(dim) + ", num_items " + std::to_string(num_items) + ", max_k " +
        std::to_string(max_k) + ")");
  if (num_items > std::numeric_limits<int32_t>::max())
    return InvalidArgumentError("ScoreAllItems: more than 2^31 - 1 items");
  if (users == 0) return Status::Ok();
  if (vectors == nullptr || items == nullptr || relevant == nullptr || below == nullptr ||
      ties == nullptr || top == nullptr)
    return InvalidArgumentError("ScoreAllItems: null pointer");
  for (int64_t u = 0; u < users; ++u)
    if (relevant[u] < 1 || relevant[u] > num_items)
      return InvalidArgumentError("ScoreAllItems: relevant[" + std::to_string(u) +
                                  "] = " + std::to_string(relevant[u]) + " outside [1, " +
                                  std::to_string(num_items) + "]");

  // Non-finite inputs are rejected up front: the in-register max would silently drop a NaN of
  // one interest.
  for (int64_t i = 0; i < users * num_vectors * dim; ++i)
    if (!std::isfinite(vectors[i]))
      return DataLossError("ScoreAllItems: non-finite user vector value (user " +
                           std::to_string(i / (num_vectors * dim)) + ")");
  for (int64_t i = dim; i < (num_items + 1) * dim; ++i)
    if (!std::isfinite(items[i]))
      return DataLossError("ScoreAllItems: non-finite value in item row " +
                           std::to_string(i / dim));

  static const ScorePanelsFn score_panels = PickScorePanels();
  static const CountFn count = PickCount();
  const int64_t K = num_vectors, N = num_items, d = dim;
  const int64_t K4 = (K + 3) / 4 * 4;
  const int64_t num_panels = (N + 1 + kPanel - 1) / kPanel;
  // Rows are padded to whole scan blocks; the padding holds -inf (never selected, never counted).
  const int64_t nblocks = (num_panels * kPanel + kScanBlock - 1) / kScanBlock;
  const int64_t row_len = nblocks * kScanBlock;
  const int64_t ub = std::min(user_block, users);
  const int64_t pb = std::max<int64_t>(1, item_block / kPanel);  // panels per item block
  const int64_t blocks = (users + ub - 1) / ub;

  std::vector<float> panels(static_cast<size_t>(num_panels * d * kPanel), 0.0f);
  ParallelFor(ctx.pool, num_panels, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t j = 0; j < kPanel && p * kPanel + j <= N; ++j) {
        const float* row = items + (p * kPanel + j) * d;
        for (int64_t c = 0; c < d; ++c) panels[(p * d + c) * kPanel + j] = row[c];
      }
  });

  std::atomic<int64_t> nan_user{-1};
  auto run = [&](int64_t blk0, int64_t blk1) {
    std::vector<float> rows(static_cast<size_t>(ub * row_len),
                            -std::numeric_limits<float>::infinity());
    std::vector<float> bmax(static_cast<size_t>(nblocks)), bsel;
    std::vector<float> vec(static_cast<size_t>(ub * K4 * d));
    std::vector<Scored> buf;
    buf.reserve(4 * static_cast<size_t>(max_k));
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t u0 = blk * ub, nu = std::min(ub, users - u0);
      // Interests padded to a multiple of 4 with copies of interest 0 (the max is unchanged).
      for (int64_t u = 0; u < nu; ++u)
        for (int64_t k = 0; k < K4; ++k) {
          const float* src = vectors + ((u0 + u) * K + (k < K ? k : 0)) * d;
          std::copy(src, src + d, vec.begin() + (u * K4 + k) * d);
        }
      for (int64_t p0 = 0; p0 < num_panels; p0 += pb) {
        const int64_t p1 = std::min(num_panels, p0 + pb);
        for (int64_t u = 0; u < nu; ++u)
          score_panels(vec.data() + u * K4 * d, K4, d, panels.data(), p0, p1,
                       rows.data() + u * row_len + p0 * kPanel);
      }
      for (int64_t u = 0; u < nu; ++u) {
        const int64_t g = u0 + u;
        // The padding item and the zero items padding the last panel are not candidates.
        float* row = rows.data() + u * row_len;
        row[0] = -std::numeric_limits<float>::infinity();
        std::fill(row + N + 1, row + num_panels * kPanel, -std::numeric_limits<float>::infinity());
        if (!ScanRow(count, row, N, nblocks, relevant[g], max_k, &bmax, &bsel, &buf, below + g,
                     ties + g, top + g * max_k)) {
          int64_t expected = -1;
          nan_user.compare_exchange_strong(expected, g);
        }
      }
    }
  };
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || blocks == 1) {
    run(0, blocks);
  } else {
    ctx.pool->ParallelFor(blocks, 1, run);
  }
  if (nan_user.load() >= 0)
    return DataLossError("ScoreAllItems: NaN score for user " + std::to_string(nan_user.load()) +
                         " (non-finite user vector or item row)");
  return Status::Ok();
}

StatusOr<RetrievalResult> EvaluateRetrieval(const kernels::Context& ctx,
                                            models::CtrModel<float>* model,
                                            ps::EmbeddingStore* store, int item_table,
                                            const Dataset& data, const RetrievalOptions& options) {
  Timer total;
  if (model == nullptr || store == nullptr)
    return InvalidArgumentError("EvaluateRetrieval: null model or store");
  const int64_t K = model->num_user_vectors(), D = model->embedding_dim();
  if (K < 1)
    return InvalidArgumentError(std::string("EvaluateRetrieval: model '") + model->name() +
                                "' has no user vectors (num_user_vectors() == 0)");
  if (model->vector_dim() != D)
    return InvalidArgumentError("EvaluateRetrieval: vector_dim() " +
                                std::to_string(model->vector_dim()) + " != embedding_dim() " +
                                std::to_string(D) + " (user vectors must live in the item space)");
  IPS_ASSIGN_OR_RETURN(const int64_t table_dim, store->TableDim(item_table));
  if (table_dim != D)
    return InvalidArgumentError("EvaluateRetrieval: item table dim " + std::to_string(table_dim) +
                                " != the model's embedding_dim " + std::to_string(D));
  if (options.cutoffs.empty())
    return InvalidArgumentError("EvaluateRetrieval: options.cutoffs is empty");
  for (int k : options.cutoffs)
    if (k < 1)
      return InvalidArgumentError("EvaluateRetrieval: cut-off " + std::to_string(k) + " < 1");
  if (options.max_users < 0 || options.users_per_forward < 0 || options.item_block < 1 ||
      options.user_block < 1)
    return InvalidArgumentError(
        "EvaluateRetrieval: max_users, users_per_forward >= 0 and item_block, user_block >= 1 "
        "required");
  if (ctx.device != kernels::Device::kCpu)
    return InvalidArgumentError("EvaluateRetrieval: needs a CPU context");

  const Manifest& m = data.manifest();
  if (m.eval_candidates == 0)
    return FailedPreconditionError("EvaluateRetrieval: dataset protocol '" + m.protocol +
                                   "' has no candidate lists (need seqrec or ctr)");
  const int64_t N = static_cast<int64_t>(m.items);
  const int64_t C = static_cast<int64_t>(m.categories);
  if (N < 2) return FailedPreconditionError("EvaluateRetrieval: dataset has fewer than 2 items");
  int max_k = 0;
  for (int k : options.cutoffs) max_k = std::max(max_k, k);
  max_k = static_cast<int>(std::min<int64_t>(max_k, N));

  // Every item row once (row = item id; row 0 = padding, forced to zero), and the category rows
  // (or zeros).
  std::vector<float> item_rows(static_cast<size_t>((N + 1) * D));
  {
    std::vector<uint64_t> keys(static_cast<size_t>(N + 1));
    for (int64_t i = 0; i <= N; ++i) keys[i] = static_cast<uint64_t>(i);
    IPS_RETURN_IF_ERROR(store->Lookup(item_table, keys.data(), N + 1, D, item_rows.data()));
    std::fill(item_rows.begin(), item_rows.begin() + D, 0.0f);
  }
  std::vector<float> cat_rows(static_cast<size_t>((C + 1) * D), 0.0f);
  if (options.category_table >= 0) {
    IPS_ASSIGN_OR_RETURN(const int64_t cat_dim, store->TableDim(options.category_table));
    if (cat_dim != D)
      return InvalidArgumentError("EvaluateRetrieval: category table dim " +
                                  std::to_string(cat_dim) + " != " + std::to_string(D));
    std::vector<uint64_t> keys(static_cast<size_t>(C + 1));
    for (int64_t i = 0; i <= C; ++i) keys[i] = static_cast<uint64_t>(i);
    IPS_RETURN_IF_ERROR(
        store->Lookup(options.category_table, keys.data(), C + 1, D, cat_rows.data()));
    std::fill(cat_rows.begin(), cat_rows.begin() + D, 0.0f);
  }
  // The vectors items are scored with: the item rows, plus each item's category row for models
  // whose item space adds categories (with category_table = -1 the model sees zero category rows
  // and the item rows alone are consistent with it). The forward still reads the raw item rows.
  std::vector<float> summed_rows;
  const float* score_rows = item_rows.data();
  if (options.category_table >= 0 && ItemVectorsAddCategories(model)) {
    const ColumnView<uint32_t> item_cat = data.item_cat();
    if (item_cat.size < static_cast<size_t>(N + 1))
      return DataLossError("EvaluateRetrieval: the dataset's item -> category map has " +
                           std::to_string(item_cat.size) + " entries, need " +
                           std::to_string(N + 1));
    summed_rows = item_rows;
    for (int64_t i = 1; i <= N; ++i) {
      const uint32_t c = item_cat[static_cast<size_t>(i)];
      if (c > C)
        return DataLossError("EvaluateRetrieval: item " + std::to_string(i) + " has category " +
                             std::to_string(c) + " outside [0, " + std::to_string(C) + "]");
      for (int64_t j = 0; j < D; ++j) summed_rows[i * D + j] += cat_rows[c * D + j];
    }
    score_rows = summed_rows.data();
  }

  const int64_t L = model->max_len();
  const int64_t U = std::min<int64_t>(
      options.users_per_forward > 0 ? options.users_per_forward : model->max_batch(),
      model->max_batch());
  const int cands = static_cast<int>(m.eval_candidates);
  // Whole lists per batch: U lists of `cands` rows (the reader repeats the history per row; only
  // each list's first row is used).
  ReaderOptions batch_ro;
  batch_ro.max_len = static_cast<int>(L);
  batch_ro.shuffle = false;
  batch_ro.batch_size = static_cast<int>(U * cands);
  EvalReader reader(&data, {}, batch_ro);
  const int64_t lists =
      options.max_users > 0 ? std::min(options.max_users, reader.num_lists()) : reader.num_lists();
  if (lists == 0) return FailedPreconditionError("EvaluateRetrieval: no evaluation lists");

  // One rank histogram up to max_k gives HR@K and NDCG@K of every cut-off (RankingMetrics::
  // HitRateAt): a rank is below N, so a cut-off beyond N reads as N.
  RankingMetrics ranking(max_k);
  std::vector<RecallMetrics> recall;
  for (int k : options.cutoffs) recall.emplace_back(k);
  std::vector<int32_t> lengths(static_cast<size_t>(U));
  std::vector<int64_t> item_index(static_cast<size_t>(U * L + U));
  std::vector<int64_t> cat_index(static_cast<size_t>(U * L + U));
  std::vector<float> vectors(static_cast<size_t>(U * K * D));
  std::vector<uint32_t> relevant(static_cast<size_t>(U));
  std::vector<int32_t> below(static_cast<size_t>(U)), ties(static_cast<size_t>(U));
  std::vector<uint32_t> top(static_cast<size_t>(U * max_k));
  double rank_sum = 0, encode_s = 0, score_s = 0;
  int64_t done = 0;
  Batch batch;
  Timer t;
  while (done < lists && reader.Next(&batch)) {
    if (StopSet(options.stop)) return EvaluationAbandonedError();
    if (batch.size % cands != 0 || batch.max_len != L)
      return DataLossError("EvaluateRetrieval: evaluation batch of " + std::to_string(batch.size) +
                           " rows is not whole lists of " + std::to_string(cands));
    const int64_t nu = std::min<int64_t>(batch.size / cands, lists - done);
    for (int64_t u = 0; u < nu; ++u) {
      const int64_t row = u * cands;
      const int32_t len = batch.length[row];
      lengths[u] = len;
      for (int64_t t2 = 0; t2 < L; ++t2) {
        const bool valid = t2 >= L - len;
        const uint32_t it = valid ? batch.hist_item[row * L + t2] : 0;
        const uint32_t ct = valid ? batch.hist_cat[row * L + t2] : 0;
        if (it > N || ct > C)
          return DataLossError("EvaluateRetrieval: user " + std::to_string(batch.user[row]) +
                               ": history item " + std::to_string(it) + " / category " +
                               std::to_string(ct) + " outside the vocabulary");
        item_index[u * L + t2] = it;
        cat_index[u * L + t2] = ct;
      }
      const uint32_t held_out = batch.item[row];
      if (held_out < 1 || held_out > N || batch.cat[row] > C)
        return DataLossError("EvaluateRetrieval: user " + std::to_string(batch.user[row]) +
                             ": held-out item " + std::to_string(held_out) + " outside [1, " +
                             std::to_string(N) + "]");
      relevant[u] = held_out;
    }
    // Targets: the held-out item (the user vectors do not depend on it).
    for (int64_t u = 0; u < nu; ++u) {
      item_index[nu * L + u] = relevant[u];
      cat_index[nu * L + u] = batch.cat[u * cands];
    }
    models::CtrInputs<float> in;
    in.batch = nu;
    in.lengths = lengths.data();
    in.item_index = item_index.data();
    in.cat_index = cat_index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = N + 1;
    in.cat_rows = cat_rows.data();
    in.num_cat_rows = C + 1;
    // The encoding forward runs on the model's device (its inputs and user vectors are host
    // memory on every device); the scoring stays on ctx, the CPU.
    kernels::Context model_ctx = ctx;
    model_ctx.device = model->device();
    IPS_RETURN_IF_ERROR(model->Forward(model_ctx, in, /*training=*/false, nullptr));
    const float* v = model->user_vectors();
    if (v == nullptr)
      return InvalidArgumentError("EvaluateRetrieval: model returned no user vectors");
    std::copy(v, v + nu * K * D, vectors.begin());
    encode_s += t.Seconds();
    t.Reset();

    IPS_RETURN_IF_ERROR(ScoreAllItems(ctx, vectors.data(), nu, K, D, score_rows, N, relevant.data(),
                                      max_k, options.user_block, options.item_block, below.data(),
                                      ties.data(), top.data()));
    IPS_RETURN_IF_ERROR(ranking.AddCounts(below.data(), ties.data(), nu, static_cast<int>(N - 1)));
    for (size_t c = 0; c < options.cutoffs.size(); ++c) {
      for (int64_t u = 0; u < nu; ++u)
        IPS_RETURN_IF_ERROR(
            recall[c].AddRetrieved(top.data() + u * max_k, max_k, relevant.data() + u, 1));
    }
    for (int64_t u = 0; u < nu; ++u) rank_sum += static_cast<double>(N - 1 - below[u]);
    score_s += t.Seconds();
    t.Reset();
    done += nu;
  }

  RetrievalResult r;
  r.users = done;
  r.items = N;
  for (size_t c = 0; c < options.cutoffs.size(); ++c) {
    RetrievalCutoff rc;
    rc.k = options.cutoffs[c];
    rc.recall = recall[c].Recall();
    rc.hit_rate = ranking.HitRateAt(std::min(rc.k, max_k));
    rc.ndcg = ranking.NdcgAt(std::min(rc.k, max_k));
    r.cutoffs.push_back(rc);
  }
  r.mean_rank = done > 0 ? rank_sum / static_cast<double>(done) : 0;
  r.encode_seconds = encode_s;
  r.score_seconds = score_s;
  r.seconds = total.Seconds();
  return r;
}

}  // namespace ips
