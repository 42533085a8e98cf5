// CUDA twins of models/ctr_ops.h (float). One thread per output element over grid-stride loops;
// the sums over history steps run in step order per (row, column), as on the CPU, so both
// devices add in the same order.
#include "models/ctr_ops.h"
#include "models/cuda/model_ops.cuh"

namespace ips::models::cuda {
namespace {

__global__ void GatherBehavioursKernel(int64_t B, int64_t L, int64_t D, bool rolled,
                                       const int32_t* __restrict__ lengths,
                                       const int64_t* __restrict__ item_index,
                                       const int64_t* __restrict__ cat_index,
                                       const float* __restrict__ item_rows,
                                       const float* __restrict__ cat_rows, float* __restrict__ hist,
                                       float* __restrict__ target) {
  const int64_t E = 2 * D;
  IPS_GRID_STRIDE(i, (B * L + B) * E) {
    const int64_t row = i / E, c = i % E;
    int64_t pos = row;  // a target: b = row - B*L sits at input position B*L + b
    if (row < B * L) {
      const int64_t b = row / L, t = row % L, len = ClampedLength(lengths, b, L);
      const int64_t first_valid = L - len;
      if (rolled ? t >= len : t < first_valid) {
        hist[i] = 0.0f;
        continue;
      }
      pos = b * L + (rolled ? first_valid + t : t);
    }
    const float v =
        c < D ? item_rows[item_index[pos] * D + c] : cat_rows[cat_index[pos] * D + (c - D)];
    if (row < B * L)
      hist[i] = v;
    else
      target[(row - B * L) * E + c] = v;
  }
}

__global__ void BuildMlpInputKernel(int64_t B, int64_t L, int64_t E,
                                    const int32_t* __restrict__ lengths,
                                    const float* __restrict__ hist,
                                    const float* __restrict__ pooled,
                                    const float* __restrict__ target, float* __restrict__ mlp_in) {
  IPS_GRID_STRIDE(i, B * 3 * E) {
    const int64_t b = i / (3 * E), c = i % (3 * E);
    float v;
    if (c < E) {
      v = pooled[b * E + c];
    } else if (c < 2 * E) {
      v = target[b * E + (c - E)];
    } else {
      v = 0.0f;
      for (int64_t t = L - ClampedLength(lengths, b, L); t < L; ++t)
        v += hist[(b * L + t) * E + (c - 2 * E)];
    }
    mlp_in[i] = v;
  }
}

__global__ void PooledGradKernel(int64_t B, int64_t E, const float* __restrict__ d_mlp_in,
                                 float* __restrict__ d_pooled) {
  IPS_GRID_STRIDE(i, B * E)
  d_pooled[i] = d_mlp_in[(i / E) * 3 * E + i % E];
}

__global__ void RowGradsKernel(int64_t B, int64_t L, int64_t D, const int32_t* __restrict__ lengths,
                               const float* __restrict__ d_mlp_in, const float* __restrict__ d_keys,
                               const float* __restrict__ d_query, float* __restrict__ g_item,
                               float* __restrict__ g_cat) {
  const int64_t E = 2 * D;
  IPS_GRID_STRIDE(i, (B * L + B) * D) {
    const int64_t pos = i / D, c = i % D;
    float gi, gc;
    if (pos < B * L) {
      const int64_t b = pos / L, t = pos % L;
      if (t < L - ClampedLength(lengths, b, L)) {
        gi = 0.0f;
        gc = 0.0f;
      } else {
        const float* d_summed = d_mlp_in + b * 3 * E + 2 * E;
        gi = d_keys[pos * E + c] + d_summed[c];
        gc = d_keys[pos * E + D + c] + d_summed[D + c];
      }
    } else {
      const int64_t b = pos - B * L;
      const float* d_target = d_mlp_in + b * 3 * E + E;
      gi = d_target[c] + d_query[b * E + c];
      gc = d_target[D + c] + d_query[b * E + D + c];
    }
    g_item[i] = gi;
    g_cat[i] = gc;
  }
}

__global__ void PooledMlpInputKernel(int64_t B, int64_t L, int64_t D, bool mean,
                                     const int32_t* __restrict__ lengths,
                                     const int64_t* __restrict__ item_index,
                                     const int64_t* __restrict__ cat_index,
                                     const float* __restrict__ item_rows,
                                     const float* __restrict__ cat_rows, float* __restrict__ mlp_in,
                                     float* __restrict__ pooled) {
  const int64_t E = 2 * D;
  IPS_GRID_STRIDE(i, B * 2 * E) {
    const int64_t b = i / (2 * E), c = i % (2 * E);
    float v;
    if (c < E) {
      const int64_t first_valid = L - ClampedLength(lengths, b, L);
      v = 0.0f;
      for (int64_t t = first_valid; t < L; ++t) {
        const int64_t pos = b * L + t;
        v += c < D ? item_rows[item_index[pos] * D + c] : cat_rows[cat_index[pos] * D + (c - D)];
      }
      const int64_t len = L - first_valid;
      if (mean && len > 0) {
        const float inv = 1.0f / static_cast<float>(len);
        v *= inv;
      }
      pooled[b * E + c] = v;
    } else {
      const int64_t pos = B * L + b, k = c - E;
      v = k < D ? item_rows[item_index[pos] * D + k] : cat_rows[cat_index[pos] * D + (k - D)];
    }
    mlp_in[i] = v;
  }
}

__global__ void PooledRowGradsKernel(int64_t B, int64_t L, int64_t D, bool mean,
                                     const int32_t* __restrict__ lengths,
                                     const float* __restrict__ d_mlp_in, float* __restrict__ g_item,
                                     float* __restrict__ g_cat) {
  const int64_t E = 2 * D;
  IPS_GRID_STRIDE(i, (B * L + B) * D) {
    const int64_t pos = i / D, c = i % D;
    float gi, gc;
    if (pos < B * L) {
      const int64_t b = pos / L, t = pos % L;
      const int64_t first_valid = L - ClampedLength(lengths, b, L), len = L - first_valid;
      if (t < first_valid) {
        gi = 0.0f;
        gc = 0.0f;
      } else {
        const float scale = mean && len > 0 ? 1.0f / static_cast<float>(len) : 1.0f;
        const float* d_pooled = d_mlp_in + b * 2 * E;
        gi = scale * d_pooled[c];
        gc = scale * d_pooled[D + c];
      }
    } else {
      const float* d_target = d_mlp_in + (pos - B * L) * 2 * E + E;
      gi = d_target[c];
      gc = d_target[D + c];
    }
    g_item[i] = gi;
    g_cat[i] = gc;
  }
}

}  // namespace

Status GatherBehaviours(const kernels::Context& ctx, const CtrShapes& s, StepLayout layout,
                        const int64_t* item_index, const int64_t* cat_index, const float* item_rows,
                        const float* cat_rows, float* hist, float* target) {
  const int64_t n = (s.batch * s.max_len + s.batch) * 2 * s.dim;
  return Launch("gather_behaviours", GatherBehavioursKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim,
                layout == StepLayout::kRolled, s.lengths, item_index, cat_index, item_rows,
                cat_rows, hist, target);
}

Status DinBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, const float* hist,
                        const float* pooled, const float* target, float* mlp_in) {
  const int64_t n = s.batch * 3 * 2 * s.dim;
  return Launch("din_build_mlp_input", BuildMlpInputKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, 2 * s.dim, s.lengths, hist,
                pooled, target, mlp_in);
}

Status DinPooledGrad(const kernels::Context& ctx, const CtrShapes& s, const float* d_mlp_in,
                     float* d_pooled) {
  const int64_t n = s.batch * 2 * s.dim;
  return Launch("din_pooled_grad", PooledGradKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, 2 * s.dim, d_mlp_in, d_pooled);
}

Status DinRowGrads(const kernels::Context& ctx, const CtrShapes& s, const float* d_mlp_in,
                   const float* d_keys, const float* d_query, float* g_item, float* g_cat) {
  const int64_t n = (s.batch * s.max_len + s.batch) * s.dim;
  return Launch("din_row_grads", RowGradsKernel, dim3(GridFor(n, kThreads)), dim3(kThreads), 0,
                StreamOf(ctx), s.batch, s.max_len, s.dim, s.lengths, d_mlp_in, d_keys, d_query,
                g_item, g_cat);
}

Status PooledBuildMlpInput(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                           const int64_t* item_index, const int64_t* cat_index,
                           const float* item_rows, const float* cat_rows, float* mlp_in,
                           float* pooled) {
  const int64_t n = s.batch * 4 * s.dim;
  return Launch("pooled_build_mlp_input", PooledMlpInputKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, mean, s.lengths,
                item_index, cat_index, item_rows, cat_rows, mlp_in, pooled);
}

Status PooledRowGrads(const kernels::Context& ctx, const CtrShapes& s, bool mean,
                      const float* d_mlp_in, float* g_item, float* g_cat) {
  const int64_t n = (s.batch * s.max_len + s.batch) * s.dim;
  return Launch("pooled_row_grads", PooledRowGradsKernel, dim3(GridFor(n, kThreads)),
                dim3(kThreads), 0, StreamOf(ctx), s.batch, s.max_len, s.dim, mean, s.lengths,
                d_mlp_in, g_item, g_cat);
}

}  // namespace ips::models::cuda
