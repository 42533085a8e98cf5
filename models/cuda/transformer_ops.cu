// CUDA twins of models/transformer_ops.h (float). One thread per output element, or per sum
// where the CPU sums (a sequence's loss, a positional row's gradient), in the CPU's order; the
// dropout mask is the same hash as models/transformer.cc's, one 16-bit word per thread, so CPU
// and CUDA drop the same elements.
#include "models/cuda/model_ops.cuh"
#include "models/transformer_ops.h"

namespace ips::models::cuda {
namespace {

__device__ __forceinline__ uint32_t Fmix32(uint32_t k) {
  k ^= k >> 16;
  k *= 0x85ebca6bu;
  k ^= k >> 13;
  k *= 0xc2b2ae35u;
  k ^= k >> 16;
  return k;
}

__device__ __forceinline__ bool Kept(const uint16_t* bits, int64_t i) {
  return ((bits[i >> 4] >> (i & 15)) & 1) != 0;
}

// The CPU's Softplus and StableSigmoid (models/transformer_ops.cc, kernels/activation.h).
__device__ __forceinline__ float Softplus(float z) {
  return fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z)));
}
__device__ __forceinline__ float StableSigmoid(float v) {
  if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
  const float e = expf(v);
  return e / (1.0f + e);
}

// Word w of the mask (and the spare word after the last, zeroed).
__global__ void DropoutMaskKernel(uint32_t lo, uint32_t hi, uint32_t thr, int64_t n, int64_t words,
                                  uint16_t* __restrict__ bits) {
  IPS_GRID_STRIDE(w, words + 1) {
    uint32_t word = 0;
    for (int64_t j = 0; j < 16; ++j) {
      const int64_t i = w * 16 + j;
      if (i >= n) break;
      const uint32_t h = Fmix32(Fmix32(static_cast<uint32_t>(i) * 0x9E3779B1u + lo) ^ hi);
      word |= static_cast<uint32_t>(h >= thr) << j;
    }
    bits[w] = static_cast<uint16_t>(word);
  }
}

__global__ void DropoutApplyKernel(const uint16_t* __restrict__ bits, float scale, const float* in,
                                   const float* add, float* out, int64_t n) {
  IPS_GRID_STRIDE(i, n) {
    const float kept = Kept(bits, i) ? in[i] * scale : 0.0f;
    out[i] = (add != nullptr ? add[i] : 0.0f) + kept;
  }
}

__global__ void AddKernel(int64_t n, const float* a, const float* b, float* out) {
  IPS_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void KeepResidualKernel(int64_t B, int64_t L, int64_t d,
                                   const int32_t* __restrict__ lengths,
                                   const uint16_t* __restrict__ bits, float scale,
                                   const float* __restrict__ f, const float* __restrict__ res,
                                   float* __restrict__ y) {
  IPS_GRID_STRIDE(i, B * L * d) {
    const int64_t t = (i / d) % L, b = i / (d * L);
    if (t < L - ClampedLength(lengths, b, L)) {
      y[i] = 0.0f;
    } else if (bits != nullptr) {
      y[i] = res[i] + (Kept(bits, i) ? f[i] * scale : 0.0f);
    } else {
      y[i] = res[i] + f[i];
    }
  }
}

__global__ void KeepRowsKernel(int64_t B, int64_t L, int64_t d, const int32_t* __restrict__ lengths,
                               const float* __restrict__ dy, float* __restrict__ g) {
  IPS_GRID_STRIDE(i, B * L * d) {
    const int64_t t = (i / d) % L, b = i / (d * L);
    g[i] = t < L - ClampedLength(lengths, b, L) ? 0.0f : dy[i];
  }
}

__global__ void SasrecEmbedKernel(int64_t B, int64_t L, int64_t d,
                                  const int32_t* __restrict__ lengths,
                                  const int64_t* __restrict__ item_index,
                                  const float* __restrict__ item_rows,
                                  const float* __restrict__ pos, float scale,
                                  float* __restrict__ x0) {
  IPS_GRID_STRIDE(i, B * L * d) {
    const int64_t c = i % d, t = (i / d) % L, b = i / (d * L);
    x0[i] = t < L - ClampedLength(lengths, b, L)
                ? 0.0f
                : item_rows[item_index[b * L + t] * d + c] * scale + pos[t * d + c];
  }
}

__global__ void LastStepKernel(int64_t B, int64_t L, int64_t d, const float* __restrict__ out,
                               float* __restrict__ user) {
  IPS_GRID_STRIDE(i, B * d) {
    const int64_t c = i % d, b = i / d;
    user[i] = out[(b * L + L - 1) * d + c];
  }
}

// One thread per sequence: its logits, then its loss summed in t order.
__global__ void SasrecScoreKernel(int64_t B, int64_t L, int64_t d,
                                  const int32_t* __restrict__ lengths,
                                  const int64_t* __restrict__ item_index,
                                  const float* __restrict__ item_rows,
                                  const float* __restrict__ out, float* __restrict__ pos_logits,
                                  float* __restrict__ neg_logits, float* __restrict__ seq_loss) {
  const int64_t rows = B * L;
  IPS_GRID_STRIDE(b, B) {
    const int64_t first_valid = L - ClampedLength(lengths, b, L);
    float sum = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t i = b * L + t;
      if (t < first_valid) {
        pos_logits[i] = neg_logits[i] = 0.0f;
        continue;
      }
      const float* h = out + i * d;
      const float* ep = item_rows + item_index[rows + i] * d;
      const float* en = item_rows + item_index[2 * rows + i] * d;
      float lp = 0.0f, lneg = 0.0f;
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
}

__global__ void SasrecScoreBackwardKernel(
    int64_t B, int64_t L, int64_t d, const int32_t* __restrict__ lengths,
    const int64_t* __restrict__ item_index, const float* __restrict__ item_rows,
    const float* __restrict__ out, const float* __restrict__ pos_logits,
    const float* __restrict__ neg_logits, float inv_count, float* __restrict__ dout,
    float* __restrict__ g_pos, float* __restrict__ g_neg) {
  const int64_t rows = B * L;
  IPS_GRID_STRIDE(k, rows * d) {
    const int64_t c = k % d, i = k / d, t = i % L, b = i / L;
    if (t < L - ClampedLength(lengths, b, L)) {
      dout[k] = g_pos[k] = g_neg[k] = 0.0f;
      continue;
    }
    const float dp = -StableSigmoid(-pos_logits[i]) * inv_count;
    const float dn = StableSigmoid(neg_logits[i]) * inv_count;
    const float h = out[k];
    dout[k] = dp * item_rows[item_index[rows + i] * d + c] +
              dn * item_rows[item_index[2 * rows + i] * d + c];
    g_pos[k] = dp * h;
    g_neg[k] = dn * h;
  }
}

__global__ void SasrecInputGradKernel(int64_t B, int64_t L, int64_t d,
                                      const int32_t* __restrict__ lengths,
                                      const float* __restrict__ dx0, float scale,
                                      float* __restrict__ g_seq) {
  IPS_GRID_STRIDE(i, B * L * d) {
    const int64_t t = (i / d) % L, b = i / (d * L);
    g_seq[i] = t < L - ClampedLength(lengths, b, L) ? 0.0f : dx0[i] * scale;
  }
}

// dpos[t, c] = sum over the sequences valid at t (b order) of dx[b, t, c]; rows of `width`
// elements, sequences of `steps` steps, `hist` history steps (valid when t >= hist - len; the
// steps after the history, BST's target, always valid).
__global__ void PosGradKernel(int64_t B, int64_t steps, int64_t hist, int64_t width,
                              const int32_t* __restrict__ lengths, const float* __restrict__ dx,
                              float* __restrict__ dpos) {
  IPS_GRID_STRIDE(k, steps * width) {
    const int64_t t = k / width, c = k % width;
    float sum = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
      if (t < hist - ClampedLength(lengths, b, hist)) continue;
      sum += dx[(b * steps + t) * width + c];
    }
    dpos[k] = sum;
  }
}

__global__ void BstLengthsKernel(int64_t B, const int32_t* __restrict__ lengths,
                                 int32_t* __restrict__ seq_lengths) {
  IPS_GRID_STRIDE(b, B) seq_lengths[b] = lengths[b] + 1;
}

__global__ void BstEmbedKernel(int64_t B, int64_t L, int64_t D, const int32_t* __restrict__ lengths,
                               const int64_t* __restrict__ item_index,
                               const int64_t* __restrict__ cat_index,
                               const float* __restrict__ item_rows,
                               const float* __restrict__ cat_rows, const float* __restrict__ pos,
                               float* __restrict__ x0) {
  const int64_t S = L + 1, E = 2 * D;
  IPS_GRID_STRIDE(k, B * S * E) {
    const int64_t c = k % E, t = (k / E) % S, b = k / (E * S);
    if (t < L - ClampedLength(lengths, b, L)) {
      x0[k] = 0.0f;
      continue;
    }
    const int64_t i = t < L ? b * L + t : B * L + b;
    const float e = c < D ? item_rows[item_index[i] * D + c] : cat_rows[cat_index[i] * D + c - D];
    x0[k] = e + pos[t * E + c];
  }
}

// One thread per (b, c): the mean over the valid history in t order, then the target's output.
__global__ void BstMeanPoolKernel(int64_t B, int64_t L, int64_t E,
                                  const int32_t* __restrict__ lengths, const float* __restrict__ xl,
                                  float* __restrict__ pooled) {
  const int64_t S = L + 1;
  IPS_GRID_STRIDE(k, B * E) {
    const int64_t c = k % E, b = k / E;
    const int64_t first = (L - ClampedLength(lengths, b, L)), len = L - first;
    float sum = 0.0f;
    for (int64_t t = first; t < L; ++t) sum += xl[(b * S + t) * E + c];
    if (len > 0) sum *= 1.0f / static_cast<float>(len);
    pooled[b * 2 * E + c] = sum;
    pooled[b * 2 * E + E + c] = xl[(b * S + L) * E + c];
  }
}

__global__ void BstMeanPoolBackwardKernel(int64_t B, int64_t L, int64_t E,
                                          const int32_t* __restrict__ lengths,
                                          const float* __restrict__ d_pooled,
                                          float* __restrict__ dy) {
  const int64_t S = L + 1;
  IPS_GRID_STRIDE(k, B * S * E) {
    const int64_t c = k % E, t = (k / E) % S, b = k / (E * S);
    const int64_t first = (L - ClampedLength(lengths, b, L)), len = L - first;
    const float* dp = d_pooled + b * 2 * E;
    if (t == L) {
      dy[k] = dp[E + c];
    } else if (t < first) {
      dy[k] = 0.0f;
    } else {
      dy[k] = dp[c] * (1.0f / static_cast<float>(len));
    }
  }
}

__global__ void BstRowGradKernel(int64_t B, int64_t L, int64_t D,
                                 const int32_t* __restrict__ lengths, const float* __restrict__ dx0,
                                 float* __restrict__ g_item, float* __restrict__ g_cat) {
  const int64_t S = L + 1, E = 2 * D;
  IPS_GRID_STRIDE(k, B * S * E) {
    const int64_t c = k % E, t = (k / E) % S, b = k / (E * S);
    const int64_t i = t < L ? b * L + t : B * L + b;
    const float g = t < L - ClampedLength(lengths, b, L) ? 0.0f : dx0[k];
    if (c < D) {
      g_item[i * D + c] = g;
    } else {
      g_cat[i * D + c - D] = g;
    }
  }
}

uint32_t DropThreshold32(double p) {
  if (!(p > 0)) return 0;
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

}  // namespace

Status TfDropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n,
                     uint16_t* bits) {
  const int64_t words = (n + 15) / 16;
  return Launch("TfDropoutMask", DropoutMaskKernel, GridFor(words + 1, kThreads), kThreads, 0,
                StreamOf(ctx), static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                DropThreshold32(p), n, words, bits);
}

Status TfDropoutApply(const kernels::Context& ctx, const uint16_t* bits, float scale,
                      const float* in, const float* add, float* out, int64_t n) {
  return Launch("TfDropoutApply", DropoutApplyKernel, GridFor(n, kThreads), kThreads, 0,
                StreamOf(ctx), bits, scale, in, add, out, n);
}

Status TfAdd(const kernels::Context& ctx, int64_t n, const float* a, const float* b, float* out) {
  return Launch("TfAdd", AddKernel, GridFor(n, kThreads), kThreads, 0, StreamOf(ctx), n, a, b, out);
}

Status TfKeepResidual(const kernels::Context& ctx, const CtrShapes& s, const uint16_t* bits,
                      float scale, const float* f, const float* res, float* y) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("TfKeepResidual", KeepResidualKernel, GridFor(n, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, bits, scale, f, res, y);
}

Status TfKeepRows(const kernels::Context& ctx, const CtrShapes& s, const float* dy, float* g) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("TfKeepRows", KeepRowsKernel, GridFor(n, kThreads), kThreads, 0, StreamOf(ctx),
                s.batch, s.max_len, s.dim, s.lengths, dy, g);
}

Status SasrecEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const float* item_rows, const float* pos, float scale, float* x0) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("SasrecEmbed", SasrecEmbedKernel, GridFor(n, kThreads), kThreads, 0, StreamOf(ctx),
                s.batch, s.max_len, s.dim, s.lengths, item_index, item_rows, pos, scale, x0);
}

Status SasrecLastStep(const kernels::Context& ctx, const CtrShapes& s, const float* out,
                      float* user) {
  return Launch("SasrecLastStep", LastStepKernel, GridFor(s.batch * s.dim, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, out, user);
}

Status SasrecScore(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                   const float* item_rows, const float* out, float* pos_logits, float* neg_logits,
                   float* seq_loss) {
  return Launch("SasrecScore", SasrecScoreKernel, GridFor(s.batch, 64), 64, 0, StreamOf(ctx),
                s.batch, s.max_len, s.dim, s.lengths, item_index, item_rows, out, pos_logits,
                neg_logits, seq_loss);
}

Status SasrecScoreBackward(const kernels::Context& ctx, const CtrShapes& s,
                           const int64_t* item_index, const float* item_rows, const float* out,
                           const float* pos_logits, const float* neg_logits, float inv_count,
                           float* dout, float* g_pos_neg) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("SasrecScoreBackward", SasrecScoreBackwardKernel, GridFor(n, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, item_index, item_rows, out,
                pos_logits, neg_logits, inv_count, dout, g_pos_neg, g_pos_neg + n);
}

Status SasrecEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const float* dx0,
                           float scale, float* g_seq, float* dpos) {
  const int64_t n = s.batch * s.max_len * s.dim;
  IPS_RETURN_IF_ERROR(Launch("SasrecEmbedBackward", SasrecInputGradKernel, GridFor(n, kThreads),
                             kThreads, 0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, dx0,
                             scale, g_seq));
  return Launch("SasrecPosGrad", PosGradKernel, GridFor(s.max_len * s.dim, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, s.max_len, s.dim, s.lengths, dx0, dpos);
}

Status BstEmbed(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                const int64_t* cat_index, const float* item_rows, const float* cat_rows,
                const float* pos, int32_t* seq_lengths, float* x0) {
  IPS_RETURN_IF_ERROR(Launch("BstLengths", BstLengthsKernel, GridFor(s.batch, kThreads), kThreads,
                             0, StreamOf(ctx), s.batch, s.lengths, seq_lengths));
  const int64_t n = s.batch * (s.max_len + 1) * 2 * s.dim;
  return Launch("BstEmbed", BstEmbedKernel, GridFor(n, kThreads), kThreads, 0, StreamOf(ctx),
                s.batch, s.max_len, s.dim, s.lengths, item_index, cat_index, item_rows, cat_rows,
                pos, x0);
}

Status BstMeanPool(const kernels::Context& ctx, const CtrShapes& s, const float* xl,
                   float* pooled) {
  const int64_t E = 2 * s.dim;
  return Launch("BstMeanPool", BstMeanPoolKernel, GridFor(s.batch * E, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, E, s.lengths, xl, pooled);
}

Status BstMeanPoolBackward(const kernels::Context& ctx, const CtrShapes& s, const float* d_pooled,
                           float* dy) {
  const int64_t E = 2 * s.dim, n = s.batch * (s.max_len + 1) * E;
  return Launch("BstMeanPoolBackward", BstMeanPoolBackwardKernel, GridFor(n, kThreads), kThreads, 0,
                StreamOf(ctx), s.batch, s.max_len, E, s.lengths, d_pooled, dy);
}

Status BstEmbedBackward(const kernels::Context& ctx, const CtrShapes& s, const float* dx0,
                        float* g_item, float* g_cat, float* dpos) {
  const int64_t S = s.max_len + 1, E = 2 * s.dim, n = s.batch * S * E;
  IPS_RETURN_IF_ERROR(Launch("BstRowGrad", BstRowGradKernel, GridFor(n, kThreads), kThreads, 0,
                             StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, dx0, g_item,
                             g_cat));
  return Launch("BstPosGrad", PosGradKernel, GridFor(S * E, kThreads), kThreads, 0, StreamOf(ctx),
                s.batch, S, s.max_len, E, s.lengths, dx0, dpos);
}

}  // namespace ips::models::cuda
