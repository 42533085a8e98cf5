// CUDA kernels of kernels/optimizer.h (float). One thread per element; the update rule is a
// switch on the kind, uniform across the launch, with the same formulas as the CPU loop in
// kernels/cpu/optimizer.cc (scalars folded on the host in double, then rounded to float).
#include <cstdint>

// nvcc's front end flags the assignment in StatusOr's constructor (common/status.h) with a
// spurious "ignoring return value with nodiscard" (#2810); silence it for this file only.
#include "common/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/optimizer_cuda.h"

namespace ips::kernels {
namespace {

constexpr unsigned kThreads = 256;

struct DeviceScalars {
  OptimizerKind kind;
  float lr, eps, one_b1, one_b2, step_size;
  float inv_alpha, beta, l1, l2;
};

DeviceScalars ToDevice(const OptimizerScalars& s) {
  DeviceScalars d;
  d.kind = s.kind;
  d.lr = static_cast<float>(s.lr);
  d.eps = static_cast<float>(s.eps);
  d.one_b1 = static_cast<float>(1.0 - s.beta1);
  d.one_b2 = static_cast<float>(1.0 - s.beta2);
  d.step_size = static_cast<float>(s.adam_step_size);
  d.inv_alpha = static_cast<float>(1.0 / s.ftrl_alpha);
  d.beta = static_cast<float>(s.ftrl_beta);
  d.l1 = static_cast<float>(s.ftrl_l1);
  d.l2 = static_cast<float>(s.ftrl_l2);
  return d;
}

__device__ __forceinline__ void UpdateElement(const DeviceScalars& s, float* p, float* s0,
                                              float* s1, float g) {
  switch (s.kind) {
    case OptimizerKind::kSgd:
      *p -= s.lr * g;
      break;
    case OptimizerKind::kAdagrad: {
      const float acc = *s0 + g * g;
      *s0 = acc;
      *p -= s.lr * g / (sqrtf(acc) + s.eps);
      break;
    }
    case OptimizerKind::kAdam: {
      float m = *s0, v = *s1;
      m += s.one_b1 * (g - m);
      v += s.one_b2 * (g * g - v);
      *s0 = m;
      *s1 = v;
      *p -= s.step_size * m / (sqrtf(v) + s.eps);
      break;
    }
    case OptimizerKind::kFtrl: {
      const float n_old = *s1;
      const float n_new = n_old + g * g;
      const float sqrt_new = sqrtf(n_new);
      const float sigma = (sqrt_new - sqrtf(n_old)) * s.inv_alpha;
      const float z = *s0 + g - sigma * *p;
      *s0 = z;
      *s1 = n_new;
      const float az = fabsf(z);
      const float shrunk = az > s.l1 ? az - s.l1 : 0.f;
      *p = -copysignf(shrunk, z) / ((s.beta + sqrt_new) * s.inv_alpha + s.l2);
      break;
    }
  }
}

// Thread (x, y): x walks the row's columns, y (with the block index) walks the rows.
__global__ void SparseUpdateKernel(DeviceScalars s, int64_t table_rows, int64_t dim,
                                   float* __restrict__ param, float* __restrict__ state0,
                                   float* __restrict__ state1, int64_t num_rows,
                                   const int64_t* __restrict__ rows,
                                   const float* __restrict__ grad) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; i < num_rows;
       i += stride) {
    const int64_t r = rows[i];
    if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(table_rows)) continue;
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
      const int64_t e = r * dim + d;
      UpdateElement(s, param + e, state0 ? state0 + e : nullptr, state1 ? state1 + e : nullptr,
                    grad[i * dim + d]);
    }
  }
}

__global__ void DenseUpdateKernel(DeviceScalars s, int64_t size, float* __restrict__ param,
                                  float* __restrict__ state0, float* __restrict__ state1,
                                  const float* __restrict__ grad) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < size;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    UpdateElement(s, param + e, state0 ? state0 + e : nullptr, state1 ? state1 + e : nullptr,
                  grad[e]);
  }
}

}  // namespace

Status SparseUpdateCuda(const Context& ctx, const SparseUpdateArgs<float>& a,
                        const OptimizerScalars& s) {
  // 32 columns x 8 rows per block: a warp covers one row's columns (dim is 8..128 here).
  const dim3 block(32, kThreads / 32);
  const dim3 grid(cuda::GridFor(a.num_rows, block.y));
  const int states = OptimizerStateCount(a.hyper.kind);
  return cuda::Launch("SparseUpdateKernel", SparseUpdateKernel, grid, block, 0, cuda::StreamOf(ctx),
                      ToDevice(s), a.table_rows, a.dim, a.param, states >= 1 ? a.state0 : nullptr,
                      states >= 2 ? a.state1 : nullptr, a.num_rows, a.row_indices, a.grad);
}

Status DenseUpdateCuda(const Context& ctx, const DenseUpdateArgs<float>& a,
                       const OptimizerScalars& s) {
  const int states = OptimizerStateCount(a.hyper.kind);
  return cuda::Launch("DenseUpdateKernel", DenseUpdateKernel, dim3(cuda::GridFor(a.size, kThreads)),
                      dim3(kThreads), 0, cuda::StreamOf(ctx), ToDevice(s), a.size, a.param,
                      states >= 1 ? a.state0 : nullptr, states >= 2 ? a.state1 : nullptr, a.grad);
}

}  // namespace ips::kernels
