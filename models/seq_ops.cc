#include "models/seq_ops.h"

#include <algorithm>
#include <cstring>

#include "common/thread_pool.h"
#include "models/ops_dispatch.h"

namespace ips::models {
namespace {

int64_t ValidLength(const CtrShapes& s, int64_t b) {
  return std::clamp<int64_t>(s.lengths[b], 0, s.max_len);
}

template <typename T>
T DotRow(const T* a, const T* b, int64_t n) {
  T sum = T(0);
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

template <typename T>
Status SeqGatherRightPadded(const kernels::Context& ctx, const CtrShapes& s,
                            const int64_t* item_index, const T* item_rows, T* x) {
  IPS_MODEL_OPS_CUDA(T, SeqGatherRightPadded, s, item_index, item_rows, x);
  const int64_t L = s.max_len, D = s.dim;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = ValidLength(s, b), first = L - len;
      for (int64_t t = 0; t < L; ++t) {
        T* dst = x + (b * L + t) * D;
        if (t < len)
          std::memcpy(dst, item_rows + item_index[b * L + first + t] * D, row_bytes);
        else
          std::memset(dst, 0, row_bytes);
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status SeqRightToLeft(const kernels::Context& ctx, const CtrShapes& s, const T* right, T* left) {
  IPS_MODEL_OPS_CUDA(T, SeqRightToLeft, s, right, left);
  const int64_t L = s.max_len, D = s.dim;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = ValidLength(s, b), first = L - len;
      std::memset(left + b * L * D, 0, row_bytes * static_cast<size_t>(first));
      if (len > 0)
        std::memcpy(left + (b * L + first) * D, right + b * L * D,
                    row_bytes * static_cast<size_t>(len));
    }
  });
  return Status::Ok();
}

template <typename T>
Status SeqScoreNextItems(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                         const T* item_rows, const T* states_left, T* logits, T* labels, T* mask) {
  IPS_MODEL_OPS_CUDA(T, SeqScoreNextItems, s, item_index, item_rows, states_left, logits, labels,
                     mask);
  const int64_t L = s.max_len, D = s.dim, BL = s.batch * L;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first = L - ValidLength(s, b);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        labels[i] = T(1);
        labels[BL + i] = T(0);
        if (t < first) {
          logits[i] = logits[BL + i] = T(0);
          mask[i] = mask[BL + i] = T(0);
          continue;
        }
        const T* state = states_left + i * D;
        logits[i] = DotRow(state, item_rows + item_index[BL + i] * D, D);
        logits[BL + i] = DotRow(state, item_rows + item_index[2 * BL + i] * D, D);
        mask[i] = mask[BL + i] = T(1);
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status SeqScoreBackward(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                        const T* item_rows, const T* states_left, const T* d_logits,
                        T* d_states_right, T* g_pos_neg) {
  IPS_MODEL_OPS_CUDA(T, SeqScoreBackward, s, item_index, item_rows, states_left, d_logits,
                     d_states_right, g_pos_neg);
  const int64_t L = s.max_len, D = s.dim, BL = s.batch * L;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = ValidLength(s, b), first = L - len;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;  // left-padded position
        T* g_pos = g_pos_neg + i * D;
        T* g_neg = g_pos_neg + (BL + i) * D;
        if (t < first) {
          std::memset(g_pos, 0, row_bytes);
          std::memset(g_neg, 0, row_bytes);
          // The right-padded row b * L + len + t is a padded step of the recurrence.
          std::memset(d_states_right + (b * L + len + t) * D, 0, row_bytes);
          continue;
        }
        const T dp = d_logits[i], dn = d_logits[BL + i];
        const T* state = states_left + i * D;
        const T* ep = item_rows + item_index[BL + i] * D;
        const T* en = item_rows + item_index[2 * BL + i] * D;
        T* d = d_states_right + (b * L + (t - first)) * D;
        for (int64_t c = 0; c < D; ++c) {
          d[c] = dp * ep[c] + dn * en[c];
          g_pos[c] = dp * state[c];
          g_neg[c] = dn * state[c];
        }
      }
    }
  });
  return Status::Ok();
}

#define IPS_INSTANTIATE_SEQ_OPS(T)                                                                \
  template Status SeqGatherRightPadded<T>(const kernels::Context&, const CtrShapes&,              \
                                          const int64_t*, const T*, T*);                          \
  template Status SeqRightToLeft<T>(const kernels::Context&, const CtrShapes&, const T*, T*);     \
  template Status SeqScoreNextItems<T>(const kernels::Context&, const CtrShapes&, const int64_t*, \
                                       const T*, const T*, T*, T*, T*);                           \
  template Status SeqScoreBackward<T>(const kernels::Context&, const CtrShapes&, const int64_t*,  \
                                      const T*, const T*, const T*, T*, T*);
IPS_INSTANTIATE_SEQ_OPS(float)
IPS_INSTANTIATE_SEQ_OPS(double)
#undef IPS_INSTANTIATE_SEQ_OPS

}  // namespace ips::models
