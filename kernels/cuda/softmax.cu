// CUDA twin of kernels/softmax.h (float): one warp per row.
#include <cfloat>

#include "kernels/cuda/dense_cuda.h"
#include "kernels/cuda/dense_util.cuh"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

using dense_cuda::ClampLength;
using dense_cuda::WarpMax;
using dense_cuda::WarpSum;

constexpr unsigned kThreads = 256;
constexpr unsigned kWarpsPerBlock = kThreads / 32;

__device__ void ValidRange(const SoftmaxArgs<float>& a, int64_t r, int64_t* b, int64_t* e) {
  const int64_t len =
      a.lengths == nullptr ? a.cols : ClampLength(a.lengths[r / a.rows_per_length], a.cols);
  *b = a.left_padded ? a.cols - len : 0;
  *e = a.left_padded ? a.cols : len;
}

__global__ void SoftmaxForwardKernel(SoftmaxArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* x = a.x + r * a.cols;
  float* y = a.y + r * a.cols;
  int64_t b, e;
  ValidRange(a, r, &b, &e);
  float mx = -FLT_MAX;
  for (int64_t j = b + lane; j < e; j += 32) mx = fmaxf(mx, x[j]);
  mx = WarpMax(mx);
  float s = 0.f;
  for (int64_t j = b + lane; j < e; j += 32) s += expf(x[j] - mx);
  s = WarpSum(s);
  const float inv = b < e ? 1.f / s : 0.f;
  for (int64_t j = lane; j < a.cols; j += 32)
    y[j] = (j >= b && j < e) ? expf(x[j] - mx) * inv : 0.f;
}

__global__ void SoftmaxBackwardKernel(SoftmaxArgs<float> a) {
  const int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= a.rows) return;
  const float* y = a.y + r * a.cols;
  const float* dy = a.dy + r * a.cols;
  float* dx = a.dx + r * a.cols;
  int64_t b, e;
  ValidRange(a, r, &b, &e);
  float dot = 0.f;
  for (int64_t j = b + lane; j < e; j += 32) dot += y[j] * dy[j];
  dot = WarpSum(dot);
  for (int64_t j = lane; j < a.cols; j += 32)
    dx[j] = (j >= b && j < e) ? y[j] * (dy[j] - dot) : 0.f;
}

unsigned RowWarpGrid(int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

Status SoftmaxForwardCuda(const Context& ctx, const SoftmaxArgs<float>& a) {
  return cuda::Launch("softmax_forward", SoftmaxForwardKernel, RowWarpGrid(a.rows), kThreads, 0,
                      cuda::StreamOf(ctx), a);
}

Status SoftmaxBackwardCuda(const Context& ctx, const SoftmaxArgs<float>& a) {
  return cuda::Launch("softmax_backward", SoftmaxBackwardKernel, RowWarpGrid(a.rows), kThreads, 0,
                      cuda::StreamOf(ctx), a);
}

}  // namespace ips::kernels
