// CUDA twins of kernels/loss.h (float). The scalar losses are reduced by a single block in a fixed
// order (deterministic; the batches these see are at most a few hundred thousand logits).
#include <cfloat>

#include "kernels/cuda/dense_cuda.h"
#include "kernels/cuda/dense_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

using dense_cuda::BlockSum;
using dense_cuda::WarpMax;
using dense_cuda::WarpSum;

constexpr unsigned kReduceThreads = 1024;
constexpr unsigned kThreads = 256;

__global__ void BceForwardKernel(BceWithLogitsArgs<float> a) {
  __shared__ float sh[32];
  float s = 0.f, sw = 0.f;
  for (int64_t i = threadIdx.x; i < a.n; i += blockDim.x) {
    const float x = a.logits[i], y = a.labels[i];
    const float l = fmaxf(x, 0.f) - x * y + log1pf(expf(-fabsf(x)));
    const float w = a.weights != nullptr ? a.weights[i] : 1.f;
    s += w * l;
    sw += w;
  }
  s = BlockSum(s, sh);
  sw = BlockSum(sw, sh);
  if (threadIdx.x == 0) {
    float scale = 1.f;
    if (a.reduction == Reduction::kMean) scale = a.n > 0 ? 1.f / static_cast<float>(a.n) : 0.f;
    if (a.reduction == Reduction::kMaskedMean) scale = 1.f / fmaxf(sw, 1.f);
    *a.loss = s * scale;
  }
}

// kMaskedMean needs sum(w) before any gradient: every block reduces it itself (n is small enough
// that the redundant reads cost less than a second launch and a workspace).
__global__ void BceBackwardKernel(BceWithLogitsArgs<float> a) {
  __shared__ float sh[32];
  float scale = a.dloss;
  if (a.reduction == Reduction::kMean) scale /= static_cast<float>(a.n);
  if (a.reduction == Reduction::kMaskedMean) {
    float sw = 0.f;
    for (int64_t i = threadIdx.x; i < a.n; i += blockDim.x) sw += a.weights[i];
    scale /= fmaxf(BlockSum(sw, sh), 1.f);
  }
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < a.n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float w = a.weights != nullptr ? a.weights[i] : 1.f;
    a.dlogits[i] = scale * w * (StableSigmoid(a.logits[i]) - a.labels[i]);
  }
}

__device__ __forceinline__ float Corrected(const SampledSoftmaxArgs<float>& a, int64_t k) {
  return a.log_q != nullptr ? a.logits[k] - a.log_q[k] : a.logits[k];
}

// Row r's max and sum(exp(. - max)) over its classes, computed by one warp (all lanes get them).
__device__ void RowLogSumExp(const SampledSoftmaxArgs<float>& a, int64_t r, float* mx, float* se) {
  const int lane = threadIdx.x % 32;
  float m = -FLT_MAX;
  for (int64_t j = lane; j < a.classes; j += 32) m = fmaxf(m, Corrected(a, r * a.classes + j));
  m = WarpMax(m);
  float s = 0.f;
  for (int64_t j = lane; j < a.classes; j += 32) s += expf(Corrected(a, r * a.classes + j) - m);
  *mx = m;
  *se = WarpSum(s);
}

__global__ void SampledSoftmaxForwardKernel(SampledSoftmaxArgs<float> a) {
  __shared__ float sh[32];
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float s = 0.f;
  for (int64_t r = warp; r < a.rows; r += warps) {
    float mx, se;
    RowLogSumExp(a, r, &mx, &se);
    s += mx + logf(se) - Corrected(a, r * a.classes);
  }
  // Every lane of a warp holds the same per-row sums: take lane 0's.
  if (threadIdx.x % 32 == 0) sh[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < warps; ++w) total += sh[w];
    if (a.reduction == Reduction::kMean && a.rows > 0) total /= static_cast<float>(a.rows);
    *a.loss = total;
  }
}

__global__ void SampledSoftmaxBackwardKernel(SampledSoftmaxArgs<float> a, float scale) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (r >= a.rows) return;
  float mx, se;
  RowLogSumExp(a, r, &mx, &se);
  for (int64_t j = threadIdx.x % 32; j < a.classes; j += 32) {
    const int64_t k = r * a.classes + j;
    a.dlogits[k] = scale * (expf(Corrected(a, k) - mx) / se - (j == 0 ? 1.f : 0.f));
  }
}

}  // namespace

Status BceWithLogitsForwardCuda(const Context& ctx, const BceWithLogitsArgs<float>& a) {
  return cuda::Launch("bce_forward", BceForwardKernel, 1, kReduceThreads, 0, cuda::StreamOf(ctx),
                      a);
}

Status BceWithLogitsBackwardCuda(const Context& ctx, const BceWithLogitsArgs<float>& a) {
  return cuda::Launch("bce_backward", BceBackwardKernel, cuda::GridFor(a.n, kThreads, 1024),
                      kThreads, 0, cuda::StreamOf(ctx), a);
}

Status SampledSoftmaxForwardCuda(const Context& ctx, const SampledSoftmaxArgs<float>& a) {
  return cuda::Launch("sampled_softmax_forward", SampledSoftmaxForwardKernel, 1, kReduceThreads, 0,
                      cuda::StreamOf(ctx), a);
}

Status SampledSoftmaxBackwardCuda(const Context& ctx, const SampledSoftmaxArgs<float>& a) {
  const float scale =
      a.dloss / (a.reduction == Reduction::kMean ? static_cast<float>(a.rows) : 1.f);
  const unsigned warps = kThreads / 32;
  return cuda::Launch("sampled_softmax_backward", SampledSoftmaxBackwardKernel,
                      static_cast<unsigned>((a.rows + warps - 1) / warps), kThreads, 0,
                      cuda::StreamOf(ctx), a, scale);
}

}  // namespace ips::kernels
