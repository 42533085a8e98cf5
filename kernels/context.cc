#include "kernels/context.h"

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
#else
bool CudaBuilt() { return false; }
bool CudaDeviceAvailable() { return false; }
#endif

}  // namespace ips::kernels
