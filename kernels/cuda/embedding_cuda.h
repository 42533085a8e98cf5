// CUDA half of kernels/embedding.h (float only). Defined only when IPS_WITH_CUDA; callers guard
// with #ifdef. Sizes in the Args have already been validated by the dispatching entry points.
#ifndef IPS_KERNELS_CUDA_EMBEDDING_CUDA_H_
#define IPS_KERNELS_CUDA_EMBEDDING_CUDA_H_

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/embedding.h"

namespace ips::kernels {

Status GatherPaddedCuda(const Context& ctx, const GatherPaddedArgs<float>& args);
Status GatherJaggedCuda(const Context& ctx, const GatherJaggedArgs<float>& args);
Status PooledPaddedCuda(const Context& ctx, const PooledPaddedArgs<float>& args);
Status PooledJaggedCuda(const Context& ctx, const PooledJaggedArgs<float>& args);
StatusOr<size_t> DedupWorkspaceBytesCuda(int64_t n);
Status DedupKeysCuda(const Context& ctx, const DedupArgs& args);
Status ScatterAddCuda(const Context& ctx, const ScatterAddArgs<float>& args);
Status GatherPaddedBackwardCuda(const Context& ctx, const GatherPaddedBackwardArgs<float>& args);
Status PooledPaddedBackwardCuda(const Context& ctx, const PooledPaddedBackwardArgs<float>& args);
Status PooledJaggedBackwardCuda(const Context& ctx, const PooledJaggedBackwardArgs<float>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CUDA_EMBEDDING_CUDA_H_
