#include "models/ctr_ops.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"
#include "models/ops_dispatch.h"

namespace ips::models {
namespace {

int64_t FirstValid(const CtrShapes& s, int64_t b) {
  const int64_t len = std::clamp<int64_t>(s.lengths[b], 0, s.max_len);
  return s.max_len - len;
}

}  // namespace

template <typename T>
Status GatherBehaviours(const kernels::Context& ctx, const CtrShapes& s, StepLayout layout,
                        const int64_t* item_index, const int64_t* cat_index, const T* item_rows,
                        const T* cat_rows, T* hist, T* target) {
  IPS_MODEL_OPS_CUDA(T, GatherBehaviours, s, layout, item_index, cat_index, item_rows, cat_rows,
                     hist, target);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  const bool rolled = layout == StepLayout::kRolled;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = FirstValid(s, b), len = L - first_valid;
      for (int64_t t = 0; t < L; ++t) {
        T* dst = hist + (b * L + t) * E;
        if (rolled ? t >= len : t < first_valid) {
          std::memset(dst, 0, 2 * row_bytes);
        } else {
          const int64_t pos = b * L + (rolled ? first_valid + t : t);
          std::memcpy(dst, item_rows + item_index[pos] * D, row_bytes);
          std::memcpy(dst + D, cat_rows + cat_index[pos] * D, row_bytes);
        }
      }
      T* tgt = target + b * E;
      std::memcpy(tgt, item_rows + item_index[B * L + b] * D, row_bytes);
      std::memcpy(tgt + D, cat_rows + cat_index[B * L + b] * D, row_bytes);
    }
  });
  return Status::Ok();
}

template <typename T>
Status DinBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, const T* hist,
                        const T* pooled, const T* target, T* mlp_in) {
  IPS_MODEL_OPS_CUDA(T, DinBuildMlpInput, s, hist, pooled, target, mlp_in);
  const int64_t L = s.max_len, E = 2 * s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = mlp_in + b * 3 * E;
      std::memcpy(row, pooled + b * E, sizeof(T) * E);
      std::memcpy(row + E, target + b * E, sizeof(T) * E);
      T* summed = row + 2 * E;
      std::fill(summed, summed + E, T(0));
      for (int64_t t = FirstValid(s, b); t < L; ++t) {
        const T* e = hist + (b * L + t) * E;
        for (int64_t c = 0; c < E; ++c) summed[c] += e[c];
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status DinPooledGrad(const kernels::Context& ctx, const CtrShapes& s, const T* d_mlp_in,
                     T* d_pooled) {
  IPS_MODEL_OPS_CUDA(T, DinPooledGrad, s, d_mlp_in, d_pooled);
  const int64_t E = 2 * s.dim;
  ParallelFor(ctx.pool, s.batch, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      std::memcpy(d_pooled + b * E, d_mlp_in + b * 3 * E, sizeof(T) * E);
  });
  return Status::Ok();
}

template <typename T>
Status DinRowGrads(const kernels::Context& ctx, const CtrShapes& s, const T* d_mlp_in,
                   const T* d_keys, const T* d_query, T* g_item, T* g_cat) {
  IPS_MODEL_OPS_CUDA(T, DinRowGrads, s, d_mlp_in, d_keys, d_query, g_item, g_cat);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* d_row = d_mlp_in + b * 3 * E;
      const T* d_target = d_row + E;
      const T* d_summed = d_row + 2 * E;
      const int64_t first_valid = FirstValid(s, b);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t pos = b * L + t;
        const T* dk = d_keys + pos * E;
        T* gi = g_item + pos * D;
        T* gc = g_cat + pos * D;
        if (t < first_valid) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
        } else {
          for (int64_t c = 0; c < D; ++c) {
            gi[c] = dk[c] + d_summed[c];
            gc[c] = dk[D + c] + d_summed[D + c];
          }
        }
      }
      const T* dq = d_query + b * E;
      T* gi = g_item + (B * L + b) * D;
      T* gc = g_cat + (B * L + b) * D;
      for (int64_t c = 0; c < D; ++c) {
        gi[c] = d_target[c] + dq[c];
        gc[c] = d_target[D + c] + dq[D + c];
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status PooledBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                           const int64_t* item_index, const int64_t* cat_index, const T* item_rows,
                           const T* cat_rows, T* mlp_in, T* pooled) {
  IPS_MODEL_OPS_CUDA(T, PooledBuildMlpInput, s, mean, item_index, cat_index, item_rows, cat_rows,
                     mlp_in, pooled);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = mlp_in + b * 2 * E;
      std::fill(row, row + E, T(0));
      const int64_t first_valid = FirstValid(s, b);
      for (int64_t t = first_valid; t < L; ++t) {
        const T* ie = item_rows + item_index[b * L + t] * D;
        const T* ce = cat_rows + cat_index[b * L + t] * D;
        for (int64_t c = 0; c < D; ++c) {
          row[c] += ie[c];
          row[D + c] += ce[c];
        }
      }
      const int64_t len = L - first_valid;
      if (mean && len > 0) {
        const T inv = T(1) / static_cast<T>(len);
        for (int64_t c = 0; c < E; ++c) row[c] *= inv;
      }
      std::memcpy(pooled + b * E, row, sizeof(T) * E);
      T* tgt = row + E;
      std::memcpy(tgt, item_rows + item_index[B * L + b] * D, sizeof(T) * D);
      std::memcpy(tgt + D, cat_rows + cat_index[B * L + b] * D, sizeof(T) * D);
    }
  });
  return Status::Ok();
}

template <typename T>
Status PooledRowGrads(const kernels::Context& ctx, const CtrShapes& s, bool mean, const T* d_mlp_in,
                      T* g_item, T* g_cat) {
  IPS_MODEL_OPS_CUDA(T, PooledRowGrads, s, mean, d_mlp_in, g_item, g_cat);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* d_pooled = d_mlp_in + b * 2 * E;
      const T* d_target = d_pooled + E;
      const int64_t first_valid = FirstValid(s, b), len = L - first_valid;
      const T scale = mean && len > 0 ? T(1) / static_cast<T>(len) : T(1);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t pos = b * L + t;
        T* gi = g_item + pos * D;
        T* gc = g_cat + pos * D;
        if (t < first_valid) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
        } else {
          for (int64_t c = 0; c < D; ++c) {
            gi[c] = scale * d_pooled[c];
            gc[c] = scale * d_pooled[D + c];
          }
        }
      }
      std::memcpy(g_item + (B * L + b) * D, d_target, sizeof(T) * D);
      std::memcpy(g_cat + (B * L + b) * D, d_target + D, sizeof(T) * D);
    }
  });
  return Status::Ok();
}

#define IPS_CTR_OPS_INSTANTIATE(T)                                                                 \
  template Status GatherBehaviours<T>(const kernels::Context&, const CtrShapes&, StepLayout,       \
                                      const int64_t*, const int64_t*, const T*, const T*, T*, T*); \
  template Status DinBuildMlpInput<T>(const kernels::Context&, const CtrShapes&, const T*,         \
                                      const T*, const T*, T*);                                     \
  template Status DinPooledGrad<T>(const kernels::Context&, const CtrShapes&, const T*, T*);       \
  template Status DinRowGrads<T>(const kernels::Context&, const CtrShapes&, const T*, const T*,    \
                                 const T*, T*, T*);                                                \
  template Status PooledBuildMlpInput<T>(const kernels::Context&, const CtrShapes&, bool,          \
                                         const int64_t*, const int64_t*, const T*, const T*, T*,   \
                                         T*);                                                      \
  template Status PooledRowGrads<T>(const kernels::Context&, const CtrShapes&, bool, const T*, T*, \
                                    T*);
IPS_CTR_OPS_INSTANTIATE(float)
IPS_CTR_OPS_INSTANTIATE(double)

}  // namespace ips::models
