// CUDA half of the attention ops (kernels/attention.h), float only. Defined only when
// IPS_WITH_CUDA; the dispatch in kernels/cpu/attention.cc guards its calls with #ifdef.
#ifndef IPS_KERNELS_CUDA_ATTENTION_CUDA_H_
#define IPS_KERNELS_CUDA_ATTENTION_CUDA_H_

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/context.h"

namespace ips::kernels {

Status DinAttentionForwardCuda(const Context& ctx, const DinAttentionArgs<float>& args,
                               float* weights, float* pooled, float* saved);
Status DinAttentionBackwardCuda(const Context& ctx, const DinAttentionArgs<float>& args,
                                const float* saved, const float* d_weights, const float* d_pooled,
                                const DinAttentionGrads<float>& grads, float* workspace);
Status MhaCudaSupportsCuda(int64_t seq_len, int64_t head_dim);
Status MhaForwardCuda(const Context& ctx, const MhaArgs<float>& args, float* out, float* saved);
Status MhaBackwardCuda(const Context& ctx, const MhaArgs<float>& args, const float* saved,
                       const float* d_out, float* dq, float* dk, float* dv);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CUDA_ATTENTION_CUDA_H_
