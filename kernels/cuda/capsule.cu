// CUDA twins of kernels/capsule.h (float): squash with one warp per row, and the MIND routing
// loop with one block per batch row (the GEMMs around it run through Gemm/cuBLAS in
// kernels/cpu/capsule.cc). The routing works in place in the caller's saved buffers
// (final_logits, weights, z, out), which are per-row, so blocks never share memory.
#include <cfloat>

#include "kernels/cuda/dense_cuda.h"
#include "kernels/cuda/dense_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

using dense_cuda::ClampLength;
using dense_cuda::WarpSum;

constexpr unsigned kThreads = 256;
constexpr unsigned kWarpsPerBlock = kThreads / 32;

__global__ void SquashForwardKernel(SquashArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* x = a.x + r * a.dim;
  float sq = 0.f;
  for (int64_t k = lane; k < a.dim; k += 32) sq += x[k] * x[k];
  sq = WarpSum(sq);
  const float s = sqrtf(sq) / (1.f + sq);
  for (int64_t k = lane; k < a.dim; k += 32) a.y[r * a.dim + k] = s * x[k];
}

__global__ void SquashBackwardKernel(SquashArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* x = a.x + r * a.dim;
  const float* g = a.dy + r * a.dim;
  float sq = 0.f, xg = 0.f;
  for (int64_t k = lane; k < a.dim; k += 32) {
    sq += x[k] * x[k];
    xg += x[k] * g[k];
  }
  sq = WarpSum(sq);
  xg = WarpSum(xg);
  const float n = sqrtf(sq);
  const float s = n / (1.f + sq);
  const float coef = n > 0.f ? (1.f - sq) / ((1.f + sq) * (1.f + sq) * n) * xg : 0.f;
  for (int64_t k = lane; k < a.dim; k += 32) a.dx[r * a.dim + k] = s * g[k] + coef * x[k];
}

// Dynamic shared memory: K floats (per-capsule squash scale).
__global__ void RoutingKernel(MindRoutingArgs<float> a) {
  extern __shared__ float scale[];
  const int64_t b = blockIdx.x;
  const int64_t K = a.num_interests, L = a.max_len, D2 = a.out_dim;
  const int64_t len = a.lengths == nullptr ? L : ClampLength(a.lengths[b], L);
  const float* ehat = a.ehat + b * L * D2;
  float* logits = a.final_logits + b * K * L;
  float* w = a.weights + b * K * L;
  float* z = a.z + b * K * D2;
  float* u = a.out + b * K * D2;
  const float* init = a.init_logits + (a.init_logits_per_row ? b * K * L : 0);
  for (int64_t t = threadIdx.x; t < K * L; t += blockDim.x) logits[t] = init[t];
  __syncthreads();
  for (int it = 0; it < a.iterations; ++it) {
    for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
      if (i >= len) {
        for (int64_t j = 0; j < K; ++j) w[j * L + i] = 0.f;
        continue;
      }
      float mx = -FLT_MAX;
      for (int64_t j = 0; j < K; ++j) mx = fmaxf(mx, logits[j * L + i]);
      float sum = 0.f;
      for (int64_t j = 0; j < K; ++j) {
        const float e = expf(logits[j * L + i] - mx);
        w[j * L + i] = e;
        sum += e;
      }
      for (int64_t j = 0; j < K; ++j) w[j * L + i] /= sum;
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < K * D2; t += blockDim.x) {
      const int64_t j = t / D2, k = t % D2;
      float s = 0.f;
      for (int64_t i = 0; i < len; ++i) s += w[j * L + i] * ehat[i * D2 + k];
      z[t] = s;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
      float sq = 0.f;
      for (int64_t k = 0; k < D2; ++k) sq += z[j * D2 + k] * z[j * D2 + k];
      scale[j] = sqrtf(sq) / (1.f + sq);
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < K * D2; t += blockDim.x) u[t] = scale[t / D2] * z[t];
    __syncthreads();
    if (it + 1 == a.iterations) break;
    for (int64_t t = threadIdx.x; t < K * len; t += blockDim.x) {
      const int64_t j = t / len, i = t % len;
      float dot = 0.f;
      for (int64_t k = 0; k < D2; ++k) dot += u[j * D2 + k] * ehat[i * D2 + k];
      logits[j * L + i] += dot;
    }
    __syncthreads();
  }
}

// dehat[b, i, k] = sum_j w[b, j, i] * (s_j dout[b, j, k] + coef_j z[b, j, k]) for i < len, else 0.
// Dynamic shared memory: 2K floats.
__global__ void RoutingBackwardKernel(MindRoutingArgs<float> a) {
  extern __shared__ float sh[];
  float* s = sh;
  float* coef = sh + a.num_interests;
  const int64_t b = blockIdx.x;
  const int64_t K = a.num_interests, L = a.max_len, D2 = a.out_dim;
  const int64_t len = a.lengths == nullptr ? L : ClampLength(a.lengths[b], L);
  const float* z = a.z + b * K * D2;
  const float* g = a.dout + b * K * D2;
  const float* w = a.weights + b * K * L;
  float* dehat = a.workspace + b * L * D2;
  for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
    float sq = 0.f, xg = 0.f;
    for (int64_t k = 0; k < D2; ++k) {
      sq += z[j * D2 + k] * z[j * D2 + k];
      xg += z[j * D2 + k] * g[j * D2 + k];
    }
    const float n = sqrtf(sq);
    s[j] = n / (1.f + sq);
    coef[j] = n > 0.f ? (1.f - sq) / ((1.f + sq) * (1.f + sq) * n) * xg : 0.f;
  }
  __syncthreads();
  for (int64_t t = threadIdx.x; t < L * D2; t += blockDim.x) {
    const int64_t i = t / D2, k = t % D2;
    float d = 0.f;
    if (i < len)
      for (int64_t j = 0; j < K; ++j)
        d += w[j * L + i] * (s[j] * g[j * D2 + k] + coef[j] * z[j * D2 + k]);
    dehat[t] = d;
  }
}

unsigned RowWarpGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

Status CheckSharedBytes(const char* op, size_t bytes) {
  if (bytes > 48 * 1024)
    return InvalidArgumentError(std::string(op) + ": num_interests too large for shared memory");
  return Status::Ok();
}

}  // namespace

Status SquashForwardCuda(const Context& ctx, const SquashArgs<float>& a) {
  return cuda::Launch("squash_forward", SquashForwardKernel, RowWarpGrid(a.rows), kThreads, 0,
                      cuda::StreamOf(ctx), a);
}

Status SquashBackwardCuda(const Context& ctx, const SquashArgs<float>& a) {
  return cuda::Launch("squash_backward", SquashBackwardKernel, RowWarpGrid(a.rows), kThreads, 0,
                      cuda::StreamOf(ctx), a);
}

Status MindRoutingLoopCuda(const Context& ctx, const MindRoutingArgs<float>& a) {
  const size_t smem = static_cast<size_t>(a.num_interests) * sizeof(float);
  IPS_RETURN_IF_ERROR(CheckSharedBytes("MindRoutingForward", smem));
  return cuda::Launch("mind_routing", RoutingKernel, static_cast<unsigned>(a.batch), kThreads, smem,
                      cuda::StreamOf(ctx), a);
}

Status MindRoutingBackwardLoopCuda(const Context& ctx, const MindRoutingArgs<float>& a) {
  const size_t smem = 2 * static_cast<size_t>(a.num_interests) * sizeof(float);
  IPS_RETURN_IF_ERROR(CheckSharedBytes("MindRoutingBackward", smem));
  return cuda::Launch("mind_routing_backward", RoutingBackwardKernel,
                      static_cast<unsigned>(a.batch), kThreads, smem, cuda::StreamOf(ctx), a);
}

}  // namespace ips::kernels
