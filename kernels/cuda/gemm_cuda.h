// CUDA half of Gemm (cuBLAS). Defined only when IPS_WITH_CUDA; callers guard with #ifdef.
#ifndef IPS_KERNELS_CUDA_GEMM_CUDA_H_
#define IPS_KERNELS_CUDA_GEMM_CUDA_H_

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/gemm.h"

namespace ips::kernels {

Status GemmCuda(const Context& ctx, const GemmArgs<float>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CUDA_GEMM_CUDA_H_
