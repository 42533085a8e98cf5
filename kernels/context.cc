#include "kernels/context.h"

#include <string>

#ifdef IPS_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace ips::kernels {

#ifdef IPS_WITH_CUDA
bool CudaBuilt() { return true; }

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return count > 0;
}

Status BindCudaDevice(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return FailedPreconditionError("no CUDA device is visible");
  }
  const int device = (local_rank % count + count) % count;
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return InternalError("cudaSetDevice(" + std::to_string(device) +
                         ") failed: " + cudaGetErrorString(e));
  return Status::Ok();
}
#else
bool CudaBuilt() { return false; }
bool CudaDeviceAvailable() { return false; }
Status BindCudaDevice(int) { return UnimplementedError("BindCudaDevice: this build has no CUDA"); }
#endif

}  // namespace ips::kernels
