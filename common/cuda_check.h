// Turns CUDA runtime / cuBLAS error codes into a Status naming the call, file and line.
// Include only from .cu files (or .cc files compiled with the CUDA toolkit).
#ifndef IPS_COMMON_CUDA_CHECK_H_
#define IPS_COMMON_CUDA_CHECK_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/status.h"

#define IPS_CUDA_RETURN_IF_ERROR(call)                                                       \
  do {                                                                                       \
    cudaError_t _ips_err = (call);                                                           \
    if (_ips_err != cudaSuccess)                                                             \
      return ::ips::InternalError(std::string(#call) + " failed at " + __FILE__ + ":" +      \
                                  std::to_string(__LINE__) + ": " +                          \
                                  cudaGetErrorString(_ips_err));                             \
  } while (0)

#define IPS_CUBLAS_RETURN_IF_ERROR(call)                                                     \
  do {                                                                                       \
    cublasStatus_t _ips_st = (call);                                                         \
    if (_ips_st != CUBLAS_STATUS_SUCCESS)                                                    \
      return ::ips::InternalError(std::string(#call) + " failed at " + __FILE__ + ":" +      \
                                  std::to_string(__LINE__) + ": cublas status " +            \
                                  std::to_string(static_cast<int>(_ips_st)));                \
  } while (0)

// Checks the last launch: `IPS_CUDA_RETURN_IF_LAUNCH_ERROR("gather_kernel");`
#define IPS_CUDA_RETURN_IF_LAUNCH_ERROR(kernel_name)                                         \
  do {                                                                                       \
    cudaError_t _ips_err = cudaGetLastError();                                               \
    if (_ips_err != cudaSuccess)                                                             \
      return ::ips::InternalError(std::string("launch of ") + (kernel_name) + " failed at " + \
                                  __FILE__ + ":" + std::to_string(__LINE__) + ": " +         \
                                  cudaGetErrorString(_ips_err));                             \
  } while (0)

#endif  // IPS_COMMON_CUDA_CHECK_H_
