#include "models/mind_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"
#include "models/ops_dispatch.h"

namespace ips::models {
namespace {

// x^p for a small integer p >= 0 (0^0 = 1), and its derivative p x^(p-1).
template <typename T>
T IntPow(T x, int p) {
  T r = T(1);
  for (int i = 0; i < p; ++i) r *= x;
  return r;
}
template <typename T>
T IntPowGrad(T x, int p) {
  return p == 0 ? T(0) : static_cast<T>(p) * IntPow(x, p - 1);
}

}  // namespace

template <typename T>
Status MindGatherItemVectors(const kernels::Context& ctx, const MindShapes& s, bool use_categories,
                             const int64_t* item_index, const int64_t* cat_index,
                             const T* item_rows, const T* cat_rows, T* e, T* et) {
  IPS_MODEL_OPS_CUDA(T, MindGatherItemVectors, s, use_categories, item_index, cat_index, item_rows,
                     cat_rows, e, et);
  const int64_t B = s.batch, L = s.max_len, D = s.dim;
  // Item vectors of input position `pos` (item row, plus its category row when used).
  auto item_vector = [&](int64_t pos, T* dst) {
    const T* r = item_rows + item_index[pos] * D;
    if (use_categories) {
      const T* c = cat_rows + cat_index[pos] * D;
      for (int64_t j = 0; j < D; ++j) dst[j] = r[j] + c[j];
    } else {
      std::memcpy(dst, r, sizeof(T) * D);
    }
  };
  // The rest of each row is zero so the routing's GEMM reads finite values there.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = s.lengths[b], first = L - len;
      T* dst = e + b * L * D;
      for (int64_t i = 0; i < len; ++i) item_vector(b * L + first + i, dst + i * D);
      std::fill(dst + len * D, dst + L * D, T(0));
      item_vector(B * L + b, et + b * D);
    }
  });
  return Status::Ok();
}

template <typename T>
Status MindLabelAttentionForward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                 const T* v_all, const T* et_all, T* dots_all, T* attw_all,
                                 T* user_all, T* logits) {
  IPS_MODEL_OPS_CUDA(T, MindLabelAttentionForward, s, pow, v_all, et_all, dots_all, attw_all,
                     user_all, logits);
  const int64_t B = s.batch, D = s.dim, K = s.num_interests;
  ParallelFor(ctx.pool, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* et = et_all + b * D;
      const T* v = v_all + b * K * D;
      T* dots = dots_all + b * K;
      T* w = attw_all + b * K;
      T mx = T(0);
      for (int64_t k = 0; k < K; ++k) {
        T d = 0;
        for (int64_t c = 0; c < D; ++c) d += v[k * D + c] * et[c];
        dots[k] = d;
        w[k] = IntPow(d, pow);
        mx = k == 0 ? w[k] : std::max(mx, w[k]);
      }
      T sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += (w[k] = std::exp(w[k] - mx));
      for (int64_t k = 0; k < K; ++k) w[k] /= sum;
      T* user = user_all + b * D;
      std::fill(user, user + D, T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < D; ++c) user[c] += w[k] * v[k * D + c];
      T logit = 0;
      for (int64_t c = 0; c < D; ++c) logit += user[c] * et[c];
      logits[b] = logit;
    }
  });
  return Status::Ok();
}

template <typename T>
Status MindLabelAttentionBackward(const kernels::Context& ctx, const MindShapes& s, int pow,
                                  const T* d_logits, const T* v_all, const T* et_all,
                                  const T* dots_all, const T* attw_all, const T* user_all,
                                  T* dv_all, T* g_item) {
  IPS_MODEL_OPS_CUDA(T, MindLabelAttentionBackward, s, pow, d_logits, v_all, et_all, dots_all,
                     attw_all, user_all, dv_all, g_item);
  const int64_t B = s.batch, L = s.max_len, D = s.dim, K = s.num_interests;
  // Through logit = <user, e_t>, user = sum_k w_k v_k, w = softmax(dots^p), dots_k = <v_k, e_t>.
  ParallelFor(ctx.pool, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T g = d_logits[b];
      const T* et = et_all + b * D;
      const T* v = v_all + b * K * D;
      const T* w = attw_all + b * K;
      const T* dots = dots_all + b * K;
      const T* user = user_all + b * D;
      T* dv = dv_all + b * K * D;
      T* d_et = g_item + (B * L + b) * D;
      for (int64_t c = 0; c < D; ++c) d_et[c] = g * user[c];
      // dw_k = <v_k, duser> with duser = g e_t; ws = sum_k w_k dw_k.
      T ws = 0;
      T dw[64];  // K <= 64 (ValidateMindOptions)
      for (int64_t k = 0; k < K; ++k) {
        dw[k] = g * dots[k];
        ws += w[k] * dw[k];
      }
      for (int64_t k = 0; k < K; ++k) {
        const T ddot = IntPowGrad(dots[k], pow) * w[k] * (dw[k] - ws);
        const T gw = g * w[k];
        for (int64_t c = 0; c < D; ++c) {
          dv[k * D + c] = gw * et[c] + ddot * et[c];
          d_et[c] += ddot * v[k * D + c];
        }
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status MindHistoryRowGrads(const kernels::Context& ctx, const MindShapes& s, const T* de,
                           T* g_item) {
  IPS_MODEL_OPS_CUDA(T, MindHistoryRowGrads, s, de, g_item);
  const int64_t B = s.batch, L = s.max_len, D = s.dim;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = s.lengths[b], first = L - len;
      T* g = g_item + b * L * D;
      std::fill(g, g + first * D, T(0));
      std::memcpy(g + first * D, de + b * L * D, sizeof(T) * len * D);
    }
  });
  return Status::Ok();
}

#define IPS_MIND_OPS_INSTANTIATE(T)                                                                \
  template Status MindGatherItemVectors<T>(const kernels::Context&, const MindShapes&, bool,       \
                                           const int64_t*, const int64_t*, const T*, const T*, T*, \
                                           T*);                                                    \
  template Status MindLabelAttentionForward<T>(const kernels::Context&, const MindShapes&, int,    \
                                               const T*, const T*, T*, T*, T*, T*);                \
  template Status MindLabelAttentionBackward<T>(const kernels::Context&, const MindShapes&, int,   \
                                                const T*, const T*, const T*, const T*, const T*,  \
                                                const T*, T*, T*);                                 \
  template Status MindHistoryRowGrads<T>(const kernels::Context&, const MindShapes&, const T*, T*);
IPS_MIND_OPS_INSTANTIATE(float)
IPS_MIND_OPS_INSTANTIATE(double)

}  // namespace ips::models
