// CUDA twins of models/seq_ops.h (float). One thread per output element (per position for the
// scores) over grid-stride loops; each dot product runs in column order, as on the CPU.
#include "models/cuda/model_ops.cuh"
#include "models/seq_ops.h"

namespace ips::models::cuda {
namespace {

__global__ void GatherRightPaddedKernel(int64_t B, int64_t L, int64_t D,
                                        const int32_t* __restrict__ lengths,
                                        const int64_t* __restrict__ item_index,
                                        const float* __restrict__ item_rows,
                                        float* __restrict__ x) {
  IPS_GRID_STRIDE(i, B * L * D) {
    const int64_t c = i % D, t = (i / D) % L, b = i / (D * L);
    const int64_t len = ClampedLength(lengths, b, L);
    x[i] = t < len ? item_rows[item_index[b * L + (L - len) + t] * D + c] : 0.0f;
  }
}

__global__ void RightToLeftKernel(int64_t B, int64_t L, int64_t D,
                                  const int32_t* __restrict__ lengths,
                                  const float* __restrict__ right, float* __restrict__ left) {
  IPS_GRID_STRIDE(i, B * L * D) {
    const int64_t c = i % D, t = (i / D) % L, b = i / (D * L);
    const int64_t first = L - ClampedLength(lengths, b, L);
    left[i] = t < first ? 0.0f : right[(b * L + (t - first)) * D + c];
  }
}

__global__ void ScoreNextItemsKernel(int64_t B, int64_t L, int64_t D,
                                     const int32_t* __restrict__ lengths,
                                     const int64_t* __restrict__ item_index,
                                     const float* __restrict__ item_rows,
                                     const float* __restrict__ states_left,
                                     float* __restrict__ logits, float* __restrict__ labels,
                                     float* __restrict__ mask) {
  const int64_t BL = B * L;
  IPS_GRID_STRIDE(i, BL) {
    const int64_t b = i / L, t = i % L;
    labels[i] = 1.0f;
    labels[BL + i] = 0.0f;
    if (t < L - ClampedLength(lengths, b, L)) {
      logits[i] = logits[BL + i] = 0.0f;
      mask[i] = mask[BL + i] = 0.0f;
      continue;
    }
    const float* state = states_left + i * D;
    const float* ep = item_rows + item_index[BL + i] * D;
    const float* en = item_rows + item_index[2 * BL + i] * D;
    float pos = 0.0f, neg = 0.0f;
    for (int64_t c = 0; c < D; ++c) {
      pos += state[c] * ep[c];
      neg += state[c] * en[c];
    }
    logits[i] = pos;
    logits[BL + i] = neg;
    mask[i] = mask[BL + i] = 1.0f;
  }
}

__global__ void ScoreBackwardKernel(
    int64_t B, int64_t L, int64_t D, const int32_t* __restrict__ lengths,
    const int64_t* __restrict__ item_index, const float* __restrict__ item_rows,
    const float* __restrict__ states_left, const float* __restrict__ d_logits,
    float* __restrict__ d_states_right, float* __restrict__ g_pos_neg) {
  const int64_t BL = B * L;
  IPS_GRID_STRIDE(k, BL * D) {
    const int64_t c = k % D, i = k / D, b = i / L, t = i % L;
    const int64_t len = ClampedLength(lengths, b, L), first = L - len;
    if (t < first) {
      g_pos_neg[k] = 0.0f;
      g_pos_neg[BL * D + k] = 0.0f;
      d_states_right[(b * L + len + t) * D + c] = 0.0f;
      continue;
    }
    const float dp = d_logits[i], dn = d_logits[BL + i], state = states_left[k];
    d_states_right[(b * L + (t - first)) * D + c] =
        dp * item_rows[item_index[BL + i] * D + c] + dn * item_rows[item_index[2 * BL + i] * D + c];
    g_pos_neg[k] = dp * state;
    g_pos_neg[BL * D + k] = dn * state;
  }
}

}  // namespace

Status SeqGatherRightPadded(const kernels::Context& ctx, const CtrShapes& s,
                            const int64_t* item_index, const float* item_rows, float* x) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("seq_gather_right_padded", GatherRightPaddedKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, item_index,
                item_rows, x);
}

Status SeqRightToLeft(const kernels::Context& ctx, const CtrShapes& s, const float* right,
                      float* left) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("seq_right_to_left", RightToLeftKernel, dim3(GridFor(n, kThreads)), dim3(kThreads),
                0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, right, left);
}

Status SeqScoreNextItems(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                         const float* item_rows, const float* states_left, float* logits,
                         float* labels, float* mask) {
  const int64_t n = s.batch * s.max_len;
  return Launch("seq_score_next_items", ScoreNextItemsKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, item_index,
                item_rows, states_left, logits, labels, mask);
}

Status SeqScoreBackward(const kernels::Context& ctx, const CtrShapes& s, const int64_t* item_index,
                        const float* item_rows, const float* states_left, const float* d_logits,
                        float* d_states_right, float* g_pos_neg) {
  const int64_t n = s.batch * s.max_len * s.dim;
  return Launch("seq_score_backward", ScoreBackwardKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, item_index,
                item_rows, states_left, d_logits, d_states_right, g_pos_neg);
}

}  // namespace ips::models::cuda
