#include "models/transformer_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/thread_pool.h"
#include "kernels/activation.h"
#include "models/ops_dispatch.h"
#include "models/transformer.h"

namespace ips::models {
namespace {

// log(1 + exp(z)) without overflow.
template <typename T>
T Softplus(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::fabs(z)));
}

}  // namespace

// ---- The block ------------------------------------------------------------------------------

Status TfDropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n,
                     uint16_t* bits) {
  IPS_MODEL_OPS_CUDA(float, TfDropoutMask, seed, p, n, bits);
  DropoutMask(ctx, seed, p, n, bits);
  return Status::Ok();
}

template <typename T>
Status TfDropoutApply(const kernels::Context& ctx, const uint16_t* bits, T scale, const T* in,
                      const T* add, T* out, int64_t n) {
  IPS_MODEL_OPS_CUDA(T, TfDropoutApply, bits, scale, in, add, out, n);
  DropoutApply<T>(ctx, bits, scale, in, add, out, 0, n);
  return Status::Ok();
}

template <typename T>
Status TfAdd(const kernels::Context& ctx, int64_t n, const T* a, const T* b, T* out) {
  IPS_MODEL_OPS_CUDA(T, TfAdd, n, a, b, out);
  ParallelFor(ctx.pool, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
  return Status::Ok();
}

template <typename T>
Status TfKeepResidual(const kernels::Context& ctx, const CtrShapes& s, const uint16_t* bits,
                      T scale, const T* f, const T* res, T* y) {
  IPS_MODEL_OPS_CUDA(T, TfKeepResidual, s, bits, scale, f, res, y);
  const int64_t T_ = s.max_len, d = s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    const kernels::Context inline_ctx;  // already inside the pool
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = T_ - s.lengths[b];
      const int64_t base = b * T_ * d, valid = base + first_valid * d, end = base + T_ * d;
      std::fill(y + base, y + valid, T(0));
      if (bits != nullptr) {
        DropoutApply<T>(inline_ctx, bits, scale, f, res, y, valid, end);
      } else {
        for (int64_t i = valid; i < end; ++i) y[i] = res[i] + f[i];
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status TfKeepRows(const kernels::Context& ctx, const CtrShapes& s, const T* dy, T* g) {
  IPS_MODEL_OPS_CUDA(T, TfKeepRows, s, dy, g);
  const int64_t T_ = s.max_len, d = s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = T_ - s.lengths[b];
      const int64_t base = b * T_ * d;
      std::fill(g + base, g + base + first_valid * d, T(0));
      std::memcpy(g + base + first_valid * d, dy + base + first_valid * d,
                  sizeof(T) * static_cast<size_t>((T_ - first_valid) * d));
    }
  });
  return Status::Ok();
}

// ---- SASRec ---------------------------------------------------------------------------------

template <typename T>
Status SasrecEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const T* item_rows, const T* pos, T scale, T* x0) {
  IPS_MODEL_OPS_CUDA(T, SasrecEmbed, s, item_index, item_rows, pos, scale, x0);
  const int64_t L = s.max_len, d = s.dim;
  ParallelFor(ctx.pool, s.batch, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - s.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        T* dst = x0 + (b * L + t) * d;
        if (t < first_valid) {
          std::fill(dst, dst + d, T(0));
          continue;
        }
        const T* e = item_rows + item_index[b * L + t] * d;
        const T* p = pos + t * d;
        for (int64_t c = 0; c < d; ++c) dst[c] = e[c] * scale + p[c];
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status SasrecLastStep(const kernels::Context& ctx, const CtrShapes& s, const T* out, T* user) {
  IPS_MODEL_OPS_CUDA(T, SasrecLastStep, s, out, user);
  const int64_t L = s.max_len, d = s.dim;
  for (int64_t b = 0; b < s.batch; ++b)
    std::memcpy(user + b * d, out + (b * L + L - 1) * d, sizeof(T) * static_cast<size_t>(d));
  return Status::Ok();
}

template <typename T>
Status SasrecScore(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const T* item_rows, const T* out, T* pos_logits, T* neg_logits, T* seq_loss) {
  IPS_MODEL_OPS_CUDA(T, SasrecScore, s, item_index, item_rows, out, pos_logits, neg_logits,
                     seq_loss);
  const int64_t L = s.max_len, d = s.dim, rows = s.batch * L;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - s.lengths[b];
      T sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        if (t < first_valid) {
          pos_logits[i] = neg_logits[i] = T(0);
          continue;
        }
        const T* h = out + i * d;
        const T* ep = item_rows + item_index[rows + i] * d;
        const T* en = item_rows + item_index[2 * rows + i] * d;
        T lp = 0, lneg = 0;
        for (int64_t c = 0; c < d; ++c) {
          lp += h[c] * ep[c];
          lneg += h[c] * en[c];
        }
        pos_logits[i] = lp;
        neg_logits[i] = lneg;
        sum += Softplus(-lp) + Softplus(lneg);
      }
      seq_loss[b] = sum;
    }
  });
  return Status::Ok();
}

template <typename T>
Status SasrecScoreBackward(const kernels::Context& ctx, const CtrShapes& s,
                           const int64_t* item_index, const T* item_rows, const T* out,
                           const T* pos_logits, const T* neg_logits, T inv_count, T* dout,
                           T* g_pos_neg) {
  IPS_MODEL_OPS_CUDA(T, SasrecScoreBackward, s, item_index, item_rows, out, pos_logits, neg_logits,
                     inv_count, dout, g_pos_neg);
  const int64_t L = s.max_len, d = s.dim, rows = s.batch * L;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(d);
  T* g_pos = g_pos_neg;
  T* g_neg = g_pos_neg + rows * d;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - s.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        T* go = dout + i * d;
        T* gp = g_pos + i * d;
        T* gn = g_neg + i * d;
        if (t < first_valid) {
          std::memset(go, 0, row_bytes);
          std::memset(gp, 0, row_bytes);
          std::memset(gn, 0, row_bytes);
          continue;
        }
        // d softplus(-z)/dz = -sigmoid(-z); d softplus(z)/dz = sigmoid(z).
        const T dp = -kernels::StableSigmoid(-pos_logits[i]) * inv_count;
        const T dn = kernels::StableSigmoid(neg_logits[i]) * inv_count;
        const T* h = out + i * d;
        const T* ep = item_rows + item_index[rows + i] * d;
        const T* en = item_rows + item_index[2 * rows + i] * d;
        for (int64_t c = 0; c < d; ++c) {
          go[c] = dp * ep[c] + dn * en[c];
          gp[c] = dp * h[c];
          gn[c] = dn * h[c];
        }
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status SasrecEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const T* dx0, T scale,
                           T* g_seq, T* dpos) {
  IPS_MODEL_OPS_CUDA(T, SasrecEmbedBackward, s, dx0, scale, g_seq, dpos);
  const int64_t B = s.batch, L = s.max_len, d = s.dim;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(d);
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - s.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        T* gs = g_seq + i * d;
        if (t < first_valid) {
          std::memset(gs, 0, row_bytes);
          continue;
        }
        const T* g = dx0 + i * d;
        for (int64_t c = 0; c < d; ++c) gs[c] = g[c] * scale;
      }
    }
  });
  ParallelFor(ctx.pool, L, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* dp = dpos + t * d;
      std::fill(dp, dp + d, T(0));
      for (int64_t b = 0; b < B; ++b) {
        if (t < L - s.lengths[b]) continue;
        const T* g = dx0 + (b * L + t) * d;
        for (int64_t c = 0; c < d; ++c) dp[c] += g[c];
      }
    }
  });
  return Status::Ok();
}

// ---- BST ------------------------------------------------------------------------------------

template <typename T>
Status BstEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                const int64_t* cat_index, const T* item_rows, const T* cat_rows, const T* pos,
                int32_t* seq_lengths, T* x0) {
  IPS_MODEL_OPS_CUDA(T, BstEmbed, s, item_index, cat_index, item_rows, cat_rows, pos, seq_lengths,
                     x0);
  const int64_t B = s.batch, L = s.max_len, S = L + 1, D = s.dim, E = 2 * D;
  ParallelFor(ctx.pool, B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      seq_lengths[b] = s.lengths[b] + 1;
      const int64_t first_valid = L - s.lengths[b];
      for (int64_t t = 0; t < S; ++t) {
        T* dst = x0 + (b * S + t) * E;
        if (t < first_valid) {
          std::fill(dst, dst + E, T(0));
          continue;
        }
        const int64_t i = t < L ? b * L + t : B * L + b;
        const T* ei = item_rows + item_index[i] * D;
        const T* ec = cat_rows + cat_index[i] * D;
        const T* p = pos + t * E;
        for (int64_t c = 0; c < D; ++c) {
          dst[c] = ei[c] + p[c];
          dst[D + c] = ec[c] + p[D + c];
        }
      }
    }
  });
  return Status::Ok();
}

template <typename T>
Status BstMeanPool(const kernels::Context& ctx, const CtrShapes& s, const T* xl, T* pooled) {
  IPS_MODEL_OPS_CUDA(T, BstMeanPool, s, xl, pooled);
  const int64_t L = s.max_len, S = L + 1, E = 2 * s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = pooled + b * 2 * E;
      std::fill(row, row + E, T(0));
      const int64_t len = s.lengths[b];
      for (int64_t t = L - len; t < L; ++t) {
        const T* x = xl + (b * S + t) * E;
        for (int64_t c = 0; c < E; ++c) row[c] += x[c];
      }
      if (len > 0) {
        const T inv = T(1) / static_cast<T>(len);
        for (int64_t c = 0; c < E; ++c) row[c] *= inv;
      }
      std::memcpy(row + E, xl + (b * S + L) * E, sizeof(T) * static_cast<size_t>(E));
    }
  });
  return Status::Ok();
}

template <typename T>
Status BstMeanPoolBackward(const kernels::Context& ctx, const CtrShapes& s, const T* d_pooled,
                           T* dy) {
  IPS_MODEL_OPS_CUDA(T, BstMeanPoolBackward, s, d_pooled, dy);
  const int64_t L = s.max_len, S = L + 1, E = 2 * s.dim;
  ParallelFor(ctx.pool, s.batch, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* dp = d_pooled + b * 2 * E;
      const int64_t len = s.lengths[b];
      const T inv = len > 0 ? T(1) / static_cast<T>(len) : T(0);
      for (int64_t t = 0; t < L; ++t) {
        T* g = dy + (b * S + t) * E;
        if (t < L - len) {
          std::fill(g, g + E, T(0));
        } else {
          for (int64_t c = 0; c < E; ++c) g[c] = dp[c] * inv;
        }
      }
      std::memcpy(dy + (b * S + L) * E, dp + E, sizeof(T) * static_cast<size_t>(E));
    }
  });
  return Status::Ok();
}

template <typename T>
Status BstEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const T* dx0, T* g_item,
                        T* g_cat, T* dpos) {
  IPS_MODEL_OPS_CUDA(T, BstEmbedBackward, s, dx0, g_item, g_cat, dpos);
  const int64_t B = s.batch, L = s.max_len, S = L + 1, D = s.dim, E = 2 * D;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - s.lengths[b];
      for (int64_t t = 0; t < S; ++t) {
        const int64_t i = t < L ? b * L + t : B * L + b;
        T* gi = g_item + i * D;
        T* gc = g_cat + i * D;
        if (t < first_valid) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
          continue;
        }
        const T* g = dx0 + (b * S + t) * E;
        std::memcpy(gi, g, sizeof(T) * static_cast<size_t>(D));
        std::memcpy(gc, g + D, sizeof(T) * static_cast<size_t>(D));
      }
    }
  });
  ParallelFor(ctx.pool, S, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* dp = dpos + t * E;
      std::fill(dp, dp + E, T(0));
      for (int64_t b = 0; b < B; ++b) {
        if (t < L - s.lengths[b]) continue;
        const T* g = dx0 + (b * S + t) * E;
        for (int64_t c = 0; c < E; ++c) dp[c] += g[c];
      }
    }
  });
  return Status::Ok();
}

#define IPS_TF_OPS_INSTANTIATE(T)                                                                  \
  template Status TfDropoutApply<T>(const kernels::Context&, const uint16_t*, T, const T*,         \
                                    const T*, T*, int64_t);                                        \
  template Status TfAdd<T>(const kernels::Context&, int64_t, const T*, const T*, T*);              \
  template Status TfKeepResidual<T>(const kernels::Context&, const CtrShapes&, const uint16_t*, T, \
                                    const T*, const T*, T*);                                       \
  template Status TfKeepRows<T>(const kernels::Context&, const CtrShapes&, const T*, T*);          \
  template Status SasrecEmbed<T>(const kernels::Context&, const CtrShapes&, const int64_t*,        \
                                 const T*, const T*, T, T*);                                       \
  template Status SasrecLastStep<T>(const kernels::Context&, const CtrShapes&, const T*, T*);      \
  template Status SasrecScore<T>(const kernels::Context&, const CtrShapes&, const int64_t*,        \
                                 const T*, const T*, T*, T*, T*);                                  \
  template Status SasrecScoreBackward<T>(const kernels::Context&, const CtrShapes&,                \
                                         const int64_t*, const T*, const T*, const T*, const T*,   \
                                         T, T*, T*);                                               \
  template Status SasrecEmbedBackward<T>(const kernels::Context&, const CtrShapes&, const T*, T,   \
                                         T*, T*);                                                  \
  template Status BstEmbed<T>(const kernels::Context&, const CtrShapes&, const int64_t*,           \
                              const int64_t*, const T*, const T*, const T*, int32_t*, T*);         \
  template Status BstMeanPool<T>(const kernels::Context&, const CtrShapes&, const T*, T*);         \
  template Status BstMeanPoolBackward<T>(const kernels::Context&, const CtrShapes&, const T*, T*); \
  template Status BstEmbedBackward<T>(const kernels::Context&, const CtrShapes&, const T*, T*, T*, \
                                      T*);
IPS_TF_OPS_INSTANTIATE(float)
IPS_TF_OPS_INSTANTIATE(double)
#undef IPS_TF_OPS_INSTANTIATE

}  // namespace ips::models
