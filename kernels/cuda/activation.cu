// CUDA twins of kernels/activation.h (float).
#include "kernels/cuda/dense_cuda.h"
#include "kernels/cuda/dense_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

using dense_cuda::ColumnSum;
using dense_cuda::kTile;

constexpr unsigned kThreads = 256;

__global__ void BiasActivationKernel(BiasActivationArgs<float> a) {
  const int64_t n = a.rows * a.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float v = a.x[i] + (a.bias != nullptr ? a.bias[i % a.cols] : 0.f);
    a.y[i] = ApplyActivation(a.act, a.slope, v);
  }
}

__global__ void ActivationBackwardKernel(ActivationBackwardArgs<float> a) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < a.n;
       i += int64_t{gridDim.x} * blockDim.x) {
    a.dx[i] = a.dy[i] * ActivationGradFromOutput(a.act, a.slope, a.y[i]);
  }
}

__global__ void BiasGradKernel(BiasGradArgs<float> a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  float s = 0.f;
  if (c < a.cols)
    for (int64_t r = threadIdx.y; r < a.rows; r += kTile) s += a.dy[r * a.cols + c];
  s = ColumnSum(s, sh);
  if (c < a.cols && threadIdx.y == 0) a.dbias[c] = s;
}

__global__ void PreluForwardKernel(PreluArgs<float> a) {
  const int64_t n = a.rows * a.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float x = a.x[i];
    a.y[i] = x > 0.f ? x : a.alpha[i % a.cols] * x;
  }
}

// One block per 32-column tile: dalpha's reduction reads every dy of the tile before any dx of
// the tile is written, so dx may alias dy.
__global__ void PreluBackwardKernel(PreluArgs<float> a) {
  __shared__ float sh[kTile][kTile + 1];
  const int64_t c = blockIdx.x * int64_t{kTile} + threadIdx.x;
  if (a.dalpha != nullptr) {
    float s = 0.f;
    if (c < a.cols)
      for (int64_t r = threadIdx.y; r < a.rows; r += kTile) {
        const float x = a.x[r * a.cols + c];
        if (x < 0.f) s += a.dy[r * a.cols + c] * x;
      }
    s = ColumnSum(s, sh);
    if (c < a.cols && threadIdx.y == 0) a.dalpha[c] = s;
  }
  if (a.dx != nullptr && c < a.cols) {
    const float alpha = a.alpha[c];
    for (int64_t r = threadIdx.y; r < a.rows; r += kTile) {
      const int64_t i = r * a.cols + c;
      a.dx[i] = a.x[i] > 0.f ? a.dy[i] : alpha * a.dy[i];
    }
  }
}

__global__ void DropoutKernel(int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold,
                              float scale, const float* in, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const bool keep = DropoutBits(seed, offset + static_cast<uint64_t>(i)) >= threshold;
    out[i] = keep ? in[i] * scale : 0.f;
  }
}

Status Dropout(const Context& ctx, const DropoutArgs<float>& a, const float* in, float* out,
               const char* name) {
  const float scale = a.p >= 1.f ? 0.f : 1.f / (1.f - a.p);
  return cuda::Launch(name, DropoutKernel, cuda::GridFor(a.n, kThreads), kThreads, 0,
                      cuda::StreamOf(ctx), a.n, a.seed, a.offset, DropoutThreshold(a.p), scale, in,
                      out);
}

dim3 ColumnGrid(int64_t cols) { return dim3(static_cast<unsigned>((cols + kTile - 1) / kTile)); }

}  // namespace

Status BiasActivationForwardCuda(const Context& ctx, const BiasActivationArgs<float>& a) {
  return cuda::Launch("bias_activation", BiasActivationKernel,
                      cuda::GridFor(a.rows * a.cols, kThreads), kThreads, 0, cuda::StreamOf(ctx),
                      a);
}

Status ActivationBackwardCuda(const Context& ctx, const ActivationBackwardArgs<float>& a) {
  return cuda::Launch("activation_backward", ActivationBackwardKernel, cuda::GridFor(a.n, kThreads),
                      kThreads, 0, cuda::StreamOf(ctx), a);
}

Status BiasGradCuda(const Context& ctx, const BiasGradArgs<float>& a) {
  return cuda::Launch("bias_grad", BiasGradKernel, ColumnGrid(a.cols), dim3(kTile, kTile), 0,
                      cuda::StreamOf(ctx), a);
}

Status PreluForwardCuda(const Context& ctx, const PreluArgs<float>& a) {
  return cuda::Launch("prelu_forward", PreluForwardKernel, cuda::GridFor(a.rows * a.cols, kThreads),
                      kThreads, 0, cuda::StreamOf(ctx), a);
}

Status PreluBackwardCuda(const Context& ctx, const PreluArgs<float>& a) {
  return cuda::Launch("prelu_backward", PreluBackwardKernel, ColumnGrid(a.cols), dim3(kTile, kTile),
                      0, cuda::StreamOf(ctx), a);
}

Status DropoutForwardCuda(const Context& ctx, const DropoutArgs<float>& a) {
  return Dropout(ctx, a, a.x, a.y, "dropout_forward");
}

Status DropoutBackwardCuda(const Context& ctx, const DropoutArgs<float>& a) {
  return Dropout(ctx, a, a.dy, a.dx, "dropout_backward");
}

}  // namespace ips::kernels
