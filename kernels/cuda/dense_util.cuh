// Private device helpers of the dense-group CUDA files: warp reductions and the column-tile
// reduction used by every per-channel sum over an [N x C] matrix. Include only from .cu files.
#ifndef IPS_KERNELS_CUDA_DENSE_UTIL_CUH_
#define IPS_KERNELS_CUDA_DENSE_UTIL_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace ips::kernels::dense_cuda {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Column kernels run blocks of (kTile, kTile) threads: threadIdx.x picks a column of the block's
// tile, threadIdx.y strides over the rows. ColumnSum reduces v over threadIdx.y in a fixed order
// (deterministic) and returns the column total to every thread of that column.
constexpr int kTile = 32;

__device__ __forceinline__ float ColumnSum(float v, float (*sh)[kTile + 1]) {
  sh[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0) {
    float s = 0.f;
    for (int y = 0; y < kTile; ++y) s += sh[y][threadIdx.x];
    sh[0][threadIdx.x] = s;
  }
  __syncthreads();
  const float total = sh[0][threadIdx.x];
  __syncthreads();  // sh may be reused right after
  return total;
}

// Sum over all threads of a 1-D block (blockDim.x a multiple of 32, at most 1024), fixed order.
// Every thread gets the total. `sh` holds 32 floats.
__device__ __forceinline__ float BlockSum(float v, float* sh) {
  v = WarpSum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float total = 0.f;
  const int warps = blockDim.x / 32;
  for (int w = 0; w < warps; ++w) total += sh[w];
  __syncthreads();
  return total;
}

__device__ __forceinline__ int64_t ClampLength(int32_t len, int64_t max_len) {
  return len < 0 ? 0 : (len > max_len ? max_len : static_cast<int64_t>(len));
}

}  // namespace ips::kernels::dense_cuda

#endif  // IPS_KERNELS_CUDA_DENSE_UTIL_CUH_
