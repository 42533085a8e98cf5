// Launch helpers shared by the CUDA kernels: grid sizing and a checked launch that names the
// kernel in its error. Include only from .cu files.
#ifndef IPS_KERNELS_CUDA_LAUNCH_CUH_
#define IPS_KERNELS_CUDA_LAUNCH_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_check.h"
#include "kernels/context.h"

namespace ips::kernels::cuda {

inline cudaStream_t StreamOf(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

// Blocks of `threads` covering n items, capped so a grid-stride loop covers the rest.
inline unsigned GridFor(int64_t n, unsigned threads, unsigned max_blocks = 65535u * 4) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, max_blocks)));
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) and returns a Status naming it if
// the launch configuration was rejected.
template <typename Kernel, typename... Args>
Status Launch(const char* name, Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes,
              cudaStream_t stream, Args... args) {
  if (block.x * block.y * block.z == 0 || block.x * block.y * block.z > 1024)
    return InvalidArgumentError(std::string("launch of ") + name + ": bad block size");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return Status::Ok();  // nothing to do
  kernel<<<grid, block, smem_bytes, stream>>>(args...);
  IPS_CUDA_RETURN_IF_LAUNCH_ERROR(name);
  return Status::Ok();
}

}  // namespace ips::kernels::cuda

#endif  // IPS_KERNELS_CUDA_LAUNCH_CUH_
