// CUDA twins of models/dien_ops.h (float). One thread per output element over grid-stride loops,
// as models/cuda/ctr_ops.cu; every sum is at most two or three terms in the CPU's order.
#include "models/cuda/model_ops.cuh"
#include "models/dien_ops.h"

namespace ips::models::cuda {
namespace {

__global__ void ValidMaskKernel(int64_t B, int64_t L, const int32_t* __restrict__ lengths,
                                float* __restrict__ att) {
  IPS_GRID_STRIDE(i, B * L) { att[i] = i % L < ClampedLength(lengths, i / L, L) ? 1.0f : 0.0f; }
}

__global__ void BuildMlpInputKernel(int64_t B, int64_t H, int64_t E,
                                    const float* __restrict__ final_h,
                                    const float* __restrict__ target, float* __restrict__ mlp_in) {
  const int64_t W = H + E;
  IPS_GRID_STRIDE(i, B * W) {
    const int64_t b = i / W, c = i % W;
    mlp_in[i] = c < H ? final_h[b * H + c] : target[b * E + (c - H)];
  }
}

__global__ void FinalGradKernel(int64_t B, int64_t H, int64_t W, const float* __restrict__ d_mlp_in,
                                float* __restrict__ d_final) {
  IPS_GRID_STRIDE(i, B * H) { d_final[i] = d_mlp_in[(i / H) * W + i % H]; }
}

__global__ void StateGradsKernel(int64_t B, int64_t L, int64_t H,
                                 const int32_t* __restrict__ lengths,
                                 const int64_t* __restrict__ pair_offset,
                                 const float* __restrict__ d_au_x, const float* __restrict__ d_keys,
                                 const float* __restrict__ d_aux_h, float* __restrict__ d_states) {
  IPS_GRID_STRIDE(i, B * L * H) {
    const int64_t bt = i / H, c = i % H, b = bt / L, t = bt % L;
    const int64_t len = ClampedLength(lengths, b, L);
    if (t >= len) {
      d_states[i] = 0.0f;
      continue;
    }
    float d = d_au_x[i] + d_keys[i];
    if (pair_offset != nullptr && t + 1 < len) d += d_aux_h[(pair_offset[b] + t) * H + c];
    d_states[i] = d;
  }
}

__global__ void RowGradsKernel(int64_t B, int64_t L, int64_t D, bool negatives,
                               const int32_t* __restrict__ lengths,
                               const int64_t* __restrict__ pair_offset,
                               const float* __restrict__ d_x, const float* __restrict__ d_aux_pos,
                               const float* __restrict__ d_aux_neg,
                               const float* __restrict__ d_mlp_in,
                               const float* __restrict__ d_query, float* __restrict__ g_item,
                               float* __restrict__ g_cat) {
  const int64_t E = 2 * D, H = E, W = H + E;
  const int64_t n_pos = (negatives ? 2 * B * L : B * L) + B;
  IPS_GRID_STRIDE(i, n_pos * D) {
    const int64_t pos = i / D, c = i % D;
    float gi = 0.0f, gc = 0.0f;
    if (pos < B * L) {  // history position
      const int64_t b = pos / L, len = ClampedLength(lengths, b, L), t = pos % L - (L - len);
      if (t >= 0) {
        const float* dx = d_x + (b * L + t) * E;
        gi = dx[c];
        gc = dx[D + c];
        if (pair_offset != nullptr && t >= 1) {
          const float* dp = d_aux_pos + (pair_offset[b] + t - 1) * E;
          gi += dp[c];
          gc += dp[D + c];
        }
      }
    } else if (pos < B * L + B) {  // target
      const int64_t b = pos - B * L;
      gi = d_mlp_in[b * W + H + c] + d_query[b * E + c];
      gc = d_mlp_in[b * W + H + D + c] + d_query[b * E + D + c];
    } else {  // auxiliary negative
      const int64_t q = pos - (B * L + B), b = q / L, len = ClampedLength(lengths, b, L);
      const int64_t t = q % L - (L - len);
      if (pair_offset != nullptr && t >= 1 && t < len) {
        const float* dn = d_aux_neg + (pair_offset[b] + t - 1) * E;
        gi = dn[c];
        gc = dn[D + c];
      }
    }
    g_item[i] = gi;
    g_cat[i] = gc;
  }
}

__global__ void AuxGatherKernel(int64_t B, int64_t L, int64_t D, int64_t pairs,
                                const int32_t* __restrict__ lengths,
                                const int32_t* __restrict__ pair_row,
                                const int64_t* __restrict__ pair_offset,
                                const float* __restrict__ states, const float* __restrict__ x,
                                const int64_t* __restrict__ item_index,
                                const int64_t* __restrict__ cat_index,
                                const float* __restrict__ item_rows,
                                const float* __restrict__ cat_rows, float* __restrict__ aux_in) {
  const int64_t E = 2 * D, H = E, W = H + E;
  IPS_GRID_STRIDE(i, 2 * pairs * W) {
    const int64_t r = i / W, c = i % W, p = r / 2;
    const bool neg = (r & 1) != 0;
    const int64_t b = pair_row[p], t = p - pair_offset[b];
    float v;
    if (c < H) {
      v = states[(b * L + t) * H + c];
    } else if (!neg) {
      v = x[(b * L + t + 1) * E + (c - H)];
    } else {
      const int64_t q = B * L + B + b * L + (L - ClampedLength(lengths, b, L)) + t + 1, k = c - H;
      v = k < D ? item_rows[item_index[q] * D + k] : cat_rows[cat_index[q] * D + (k - D)];
    }
    aux_in[i] = v;
  }
}

__global__ void AuxSplitGradsKernel(int64_t D, int64_t pairs, const float* __restrict__ d_aux_in,
                                    float* __restrict__ d_aux_h, float* __restrict__ d_aux_pos,
                                    float* __restrict__ d_aux_neg) {
  const int64_t E = 2 * D, H = E, W = H + E;
  // Per pair: H columns of d_aux_h, then E of d_aux_pos, then E of d_aux_neg.
  IPS_GRID_STRIDE(i, pairs * (H + 2 * E)) {
    const int64_t p = i / (H + 2 * E), c = i % (H + 2 * E);
    const float* pos = d_aux_in + 2 * p * W;
    const float* neg = pos + W;
    if (c < H) {
      d_aux_h[p * H + c] = pos[c] + neg[c];
    } else if (c < H + E) {
      d_aux_pos[p * E + (c - H)] = pos[c];
    } else {
      d_aux_neg[p * E + (c - H - E)] = neg[c - E];
    }
  }
}

}  // namespace

Status DienValidMask(const kernels::Context& ctx, const DienShapes& s, float* att) {
  const int64_t n = s.batch * s.max_len;
  return Launch("dien_valid_mask", ValidMaskKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, s.max_len, s.lengths, att);
}

Status DienBuildMlpInput(const kernels::Context& ctx, const DienShapes& s, const float* final_h,
                         const float* target, float* mlp_in) {
  const int64_t n = s.batch * 4 * s.dim;
  return Launch("dien_build_mlp_input", BuildMlpInputKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, 2 * s.dim, 2 * s.dim, final_h, target,
                mlp_in);
}

Status DienFinalGrad(const kernels::Context& ctx, const DienShapes& s, const float* d_mlp_in,
                     float* d_final) {
  const int64_t n = s.batch * 2 * s.dim;
  return Launch("dien_final_grad", FinalGradKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, 2 * s.dim, 4 * s.dim, d_mlp_in, d_final);
}

Status DienStateGrads(const kernels::Context& ctx, const DienShapes& s, const int64_t* pair_offset,
                      const float* d_au_x, const float* d_keys, const float* d_aux_h,
                      float* d_states) {
  const int64_t n = s.batch * s.max_len * 2 * s.dim;
  return Launch("dien_state_grads", StateGradsKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, s.max_len, 2 * s.dim, s.lengths, pair_offset, d_au_x,
                d_keys, d_aux_h, d_states);
}

Status DienRowGrads(const kernels::Context& ctx, const DienShapes& s, bool negatives,
                    const int64_t* pair_offset, const float* d_x, const float* d_aux_pos,
                    const float* d_aux_neg, const float* d_mlp_in, const float* d_query,
                    float* g_item, float* g_cat) {
  const int64_t BL = s.batch * s.max_len;
  const int64_t n = ((negatives ? 2 * BL : BL) + s.batch) * s.dim;
  return Launch("dien_row_grads", RowGradsKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, negatives, s.lengths, pair_offset, d_x,
                d_aux_pos, d_aux_neg, d_mlp_in, d_query, g_item, g_cat);
}

Status DienAuxGather(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                     const int32_t* pair_row, const int64_t* pair_offset, const float* states,
                     const float* x, const int64_t* item_index, const int64_t* cat_index,
                     const float* item_rows, const float* cat_rows, float* aux_in) {
  const int64_t n = 2 * pairs * 4 * s.dim;
  if (n == 0) return Status::Ok();
  return Launch("dien_aux_gather", AuxGatherKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, pairs, s.lengths, pair_row, pair_offset,
                states, x, item_index, cat_index, item_rows, cat_rows, aux_in);
}

Status DienAuxSplitGrads(const kernels::Context& ctx, const DienShapes& s, int64_t pairs,
                         const float* d_aux_in, float* d_aux_h, float* d_aux_pos,
                         float* d_aux_neg) {
  const int64_t n = pairs * 6 * s.dim;
  if (n == 0) return Status::Ok();
  return Launch("dien_aux_split_grads", AuxSplitGradsKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.dim, pairs, d_aux_in, d_aux_h, d_aux_pos,
                d_aux_neg);
}

}  // namespace ips::models::cuda
