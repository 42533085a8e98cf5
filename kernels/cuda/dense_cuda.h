// CUDA halves of the dense-group ops (activation.h, norm.h, softmax.h, loss.h, capsule.h),
// float only. Defined only when IPS_WITH_CUDA; the CPU files dispatch to them under #ifdef after
// validating the arguments.
#ifndef IPS_KERNELS_CUDA_DENSE_CUDA_H_
#define IPS_KERNELS_CUDA_DENSE_CUDA_H_

#include "common/status.h"
#include "kernels/activation.h"
#include "kernels/capsule.h"
#include "kernels/context.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "kernels/softmax.h"

namespace ips::kernels {

Status BiasActivationForwardCuda(const Context& ctx, const BiasActivationArgs<float>& a);
Status ActivationBackwardCuda(const Context& ctx, const ActivationBackwardArgs<float>& a);
Status BiasGradCuda(const Context& ctx, const BiasGradArgs<float>& a);
Status PreluForwardCuda(const Context& ctx, const PreluArgs<float>& a);
Status PreluBackwardCuda(const Context& ctx, const PreluArgs<float>& a);
Status DropoutForwardCuda(const Context& ctx, const DropoutArgs<float>& a);
Status DropoutBackwardCuda(const Context& ctx, const DropoutArgs<float>& a);

Status LayerNormForwardCuda(const Context& ctx, const LayerNormArgs<float>& a);
Status LayerNormBackwardCuda(const Context& ctx, const LayerNormArgs<float>& a);
Status BatchNormForwardCuda(const Context& ctx, const BatchNormArgs<float>& a);
Status BatchNormBackwardCuda(const Context& ctx, const BatchNormArgs<float>& a);
Status DiceForwardCuda(const Context& ctx, const DiceArgs<float>& a);
Status DiceBackwardCuda(const Context& ctx, const DiceArgs<float>& a);

Status SoftmaxForwardCuda(const Context& ctx, const SoftmaxArgs<float>& a);
Status SoftmaxBackwardCuda(const Context& ctx, const SoftmaxArgs<float>& a);

Status BceWithLogitsForwardCuda(const Context& ctx, const BceWithLogitsArgs<float>& a);
Status BceWithLogitsBackwardCuda(const Context& ctx, const BceWithLogitsArgs<float>& a);
Status SampledSoftmaxForwardCuda(const Context& ctx, const SampledSoftmaxArgs<float>& a);
Status SampledSoftmaxBackwardCuda(const Context& ctx, const SampledSoftmaxArgs<float>& a);

Status SquashForwardCuda(const Context& ctx, const SquashArgs<float>& a);
Status SquashBackwardCuda(const Context& ctx, const SquashArgs<float>& a);
// The routing's GEMMs go through Gemm (cuBLAS); these run the per-row routing loop and its
// backward between them.
Status MindRoutingLoopCuda(const Context& ctx, const MindRoutingArgs<float>& a);
Status MindRoutingBackwardLoopCuda(const Context& ctx, const MindRoutingArgs<float>& a);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_CUDA_DENSE_CUDA_H_
