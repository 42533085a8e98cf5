#include "models/dien_ops.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"
#include "models/ops_dispatch.h"

namespace ips::models {
namespace {

int64_t Length(const DienShapes& s, int64_t b) {
  return std::clamp<int64_t>(s.lengths[b], 0, s.max_len);
}

}  // namespace

template <typename T>
Status DienValidMask(const kernels::Context& ctx, const DienShapes& s, T* att) {
  IPS_MODEL_OPS_CUDA(T, DienValidMask, s, att);
  const int64_t L = s.max_len;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t len = Length(s, b);
    for (int64_t t = 0; t < L; ++t) att[b * L + t] = t < len ? T(1) : T(0);
  }
  return Status::Ok();
}

template <typename T>
Status DienBuildMlpInput(const kernels::Context& ctx, const DienShapes& s, const T* final_h,
                         const T* target, T* mlp_in) {
  IPS_MODEL_OPS_CUDA(T, DienBuildMlpInput, s, final_h, target, mlp_in);
  const int64_t E = 2 * s.dim, H = E;
  ParallelFor(ctx.pool, s.batch, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = mlp_in + b * (H + E);
      std::memcpy(row, final_h + b * H, sizeof(T) * H);
      std::memcpy(row + H, target + b * E, sizeof(T) * E);
    }
  });
  return Status::Ok();
}

template <typename T>
Status DienFinalGrad(const kernels::Context& ctx, const DienShapes& s, const T* d_mlp_in,
                     T* d_final) {
  IPS_MODEL_OPS_CUDA(T, DienFinalGrad, s, d_mlp_in, d_final);
  const int64_t H = 2 * s.dim, W = 2 * H;
  for (int64_t b = 0; b < s.batch; ++b)
    std::memcpy(d_final + b * H, d_mlp_in + b * W, sizeof(T) * H);
  return Status::Ok();
}

template <typename T>
Status DienStateGrads(const kernels::Context& ctx, const DienShapes& s, const int64_t* pair_offset,
                      const T* d_au_x, const T* d_keys, const T* d_aux_h, T* d_states) {
  IPS_MODEL_OPS_CUDA(T, DienStateGrads, s, pair_offset, d_au_x, d_keys, d_aux_h, d_states);
  const int64_t L = s.max_len, H = 2 * s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = Length(s, b);
      for (int64_t t = 0; t < L; ++t) {
        T* d = d_states + (b * L + t) * H;
        if (t >= len) {
          std::fill(d, d + H, T(0));
          continue;
        }
        const T* da = d_au_x + (b * L + t) * H;
        const T* dk = d_keys + (b * L + t) * H;
        for (int64_t c = 0; c < H; ++c) d[c] = da[c] + dk[c];
        if (pair_offset != nullptr && t + 1 < len) {
          const T* dh = d_aux_h + (pair_offset[b] + t) * H;
          for (int64_t c = 0; c < H; ++c) d[c] += dh[c];
        }
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status DienRowGrads(const kernels::Context& ctx, const DienShapes& s, bool negatives,
                    const int64_t* pair_offset, const T* d_x, const T* d_aux_pos,
                    const T* d_aux_neg, const T* d_mlp_in, const T* d_query, T* g_item, T* g_cat) {
  IPS_MODEL_OPS_CUDA(T, DienRowGrads, s, negatives, pair_offset, d_x, d_aux_pos, d_aux_neg,
                     d_mlp_in, d_query, g_item, g_cat);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D, H = E, W = H + E;
  const int64_t neg_base = B * L + B;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = Length(s, b), fv = L - len;
      for (int64_t p = 0; p < L; ++p) {  // p: left-padded position
        const int64_t t = p - fv;        // rolled step
        T* gi = g_item + (b * L + p) * D;
        T* gc = g_cat + (b * L + p) * D;
        if (t < 0) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
          continue;
        }
        const T* dx = d_x + (b * L + t) * E;
        for (int64_t c = 0; c < D; ++c) {
          gi[c] = dx[c];
          gc[c] = dx[D + c];
        }
        if (pair_offset != nullptr && t >= 1) {  // e_t is the positive of pair (t - 1, t)
          const T* dp = d_aux_pos + (pair_offset[b] + t - 1) * E;
          for (int64_t c = 0; c < D; ++c) {
            gi[c] += dp[c];
            gc[c] += dp[D + c];
          }
        }
      }
      const T* dt = d_mlp_in + b * W + H;
      const T* dq = d_query + b * E;
      T* gi = g_item + (B * L + b) * D;
      T* gc = g_cat + (B * L + b) * D;
      for (int64_t c = 0; c < D; ++c) {
        gi[c] = dt[c] + dq[c];
        gc[c] = dt[D + c] + dq[D + c];
      }
      if (!negatives) continue;
      for (int64_t p = 0; p < L; ++p) {
        const int64_t t = p - fv;
        T* ni = g_item + (neg_base + b * L + p) * D;
        T* nc = g_cat + (neg_base + b * L + p) * D;
        if (pair_offset == nullptr || t < 1 || t >= len) {
          std::fill(ni, ni + D, T(0));
          std::fill(nc, nc + D, T(0));
          continue;
        }
        const T* dn = d_aux_neg + (pair_offset[b] + t - 1) * E;
        for (int64_t c = 0; c < D; ++c) {
          ni[c] = dn[c];
          nc[c] = dn[D + c];
        }
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status DienAuxGather(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                     const int32_t* pair_row, const int64_t* pair_offset, const T* states,
                     const T* x, const int64_t* item_index, const int64_t* cat_index,
                     const T* item_rows, const T* cat_rows, T* aux_in) {
  IPS_MODEL_OPS_CUDA(T, DienAuxGather, s, pairs, pair_row, pair_offset, states, x, item_index,
                     cat_index, item_rows, cat_rows, aux_in);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, E = 2 * D, H = E, W = H + E;
  const int64_t neg_base = B * L + B;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  ParallelFor(ctx.pool, pairs, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = pair_row[p], t = p - pair_offset[b];
      T* pos = aux_in + 2 * p * W;
      T* neg = pos + W;
      const T* h = states + (b * L + t) * H;
      std::memcpy(pos, h, sizeof(T) * H);
      std::memcpy(neg, h, sizeof(T) * H);
      std::memcpy(pos + H, x + (b * L + t + 1) * E, sizeof(T) * E);
      const int64_t q = neg_base + b * L + (L - Length(s, b)) + t + 1;
      std::memcpy(neg + H, item_rows + item_index[q] * D, row_bytes);
      std::memcpy(neg + H + D, cat_rows + cat_index[q] * D, row_bytes);
    }
  });
  return Status::Ok();
}

template <typename T>
Status DienAuxSplitGrads(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                         const T* d_aux_in, T* d_aux_h, T* d_aux_pos, T* d_aux_neg) {
  IPS_MODEL_OPS_CUDA(T, DienAuxSplitGrads, s, pairs, d_aux_in, d_aux_h, d_aux_pos, d_aux_neg);
  const int64_t E = 2 * s.dim, H = E, W = H + E;
  ParallelFor(ctx.pool, pairs, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const T* pos = d_aux_in + 2 * p * W;
      const T* neg = pos + W;
      T* dh = d_aux_h + p * H;
      for (int64_t c = 0; c < H; ++c) dh[c] = pos[c] + neg[c];
      std::memcpy(d_aux_pos + p * E, pos + H, sizeof(T) * E);
      std::memcpy(d_aux_neg + p * E, neg + H, sizeof(T) * E);
    }
  });
  return Status::Ok();
}

#define IPS_DIEN_OPS_INSTANTIATE(T)                                                             \
  template Status DienValidMask<T>(const kernels::Context&, const DienShapes&, T*);             \
  template Status DienBuildMlpInput<T>(const kernels::Context&, const DienShapes&, const T*,    \
                                       const T*, T*);                                           \
  template Status DienFinalGrad<T>(const kernels::Context&, const DienShapes&, const T*, T*);   \
  template Status DienStateGrads<T>(const kernels::Context&, const DienShapes&, const int64_t*, \
                                    const T*, const T*, const T*, T*);                          \
  template Status DienRowGrads<T>(const kernels::Context&, const DienShapes&, bool,             \
                                  const int64_t*, const T*, const T*, const T*, const T*,       \
                                  const T*, T*, T*);                                            \
  template Status DienAuxGather<T>(const kernels::Context&, const DienShapes&, int64_t,         \
                                   const int32_t*, const int64_t*, const T*, const T*,          \
                                   const int64_t*, const int64_t*, const T*, const T*, T*);     \
  template Status DienAuxSplitGrads<T>(const kernels::Context&, const DienShapes&, int64_t,     \
                                       const T*, T*, T*, T*);
IPS_DIEN_OPS_INSTANTIATE(float)
IPS_DIEN_OPS_INSTANTIATE(double)

}  // namespace ips::models
