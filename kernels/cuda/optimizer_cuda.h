// CUDA half of kernels/optimizer.h (float only). Defined only when IPS_WITH_CUDA; callers guard
// with #ifdef. Arguments have been validated by the dispatching entry points.
#ifndef IPS_KERNELS_CUDA_OPTIMIZER_CUDA_H_
#define IPS_KERNELS_CUDA_OPTIMIZER_CUDA_H_

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/optimizer.h"

namespace ips::kernels {

Status SparseUpdateCuda(const Context& ctx, const SparseUpdateArgs<float>& args,
                        const OptimizerScalars& s);
Status DenseUpdateCuda(const Context& ctx, const DenseUpdateArgs<float>& args,
                       const OptimizerScalars& s);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CUDA_OPTIMIZER_CUDA_H_
