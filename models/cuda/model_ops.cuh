// What the models' CUDA twins (models/cuda/*_ops.cu) share: the launch helpers, one block size,
// a row's length clamped into [0, T] as the CPU twins clamp it, and a grid-stride loop. Include
// only from .cu files.
#ifndef IPS_MODELS_CUDA_MODEL_OPS_CUH_
#define IPS_MODELS_CUDA_MODEL_OPS_CUH_

#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace ips::models::cuda {

using kernels::cuda::GridFor;
using kernels::cuda::Launch;
using kernels::cuda::StreamOf;

constexpr unsigned kThreads = 256;

__device__ __forceinline__ int64_t ClampedLength(const int32_t* lengths, int64_t b, int64_t L) {
  const int64_t len = lengths[b];
  return len < 0 ? 0 : (len > L ? L : len);
}

// for (int64_t i = this thread's first index; i < total; i += the grid's thread count)
#define IPS_GRID_STRIDE(i, total)                                               \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (total); \
       i += int64_t{gridDim.x} * blockDim.x)

}  // namespace ips::models::cuda

#endif  // IPS_MODELS_CUDA_MODEL_OPS_CUH_
