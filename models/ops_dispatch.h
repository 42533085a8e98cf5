// The device dispatch every models/*_ops.cc file starts its ops with: on a CUDA Context, call the
// CUDA twin `cuda::op` (float only; declared in the op's header under IPS_WITH_CUDA), else fall
// through to the CPU body. Double on CUDA, or CUDA in a build without it, is UNIMPLEMENTED.
// Include only from .cc files, inside namespace ips::models.
#ifndef IPS_MODELS_OPS_DISPATCH_H_
#define IPS_MODELS_OPS_DISPATCH_H_

#include <string>
#include <type_traits>

#include "common/status.h"
#include "kernels/context.h"

#define IPS_MODEL_OPS_CUDA(T, op, ...)                                  \
  if (ctx.device == kernels::Device::kCuda) {                           \
    if constexpr (std::is_same_v<T, float>) {                           \
      IPS_MODEL_OPS_CUDA_CALL(op, __VA_ARGS__);                         \
    }                                                                   \
    return UnimplementedError(std::string(#op) +                        \
                              " on CUDA: float only, and needs a CUDA " \
                              "build");                                 \
  }
#ifdef IPS_WITH_CUDA
#define IPS_MODEL_OPS_CUDA_CALL(op, ...) return cuda::op(ctx, __VA_ARGS__)
#else
#define IPS_MODEL_OPS_CUDA_CALL(op, ...) \
  do {                                   \
  } while (0)
#endif

#endif  // IPS_MODELS_OPS_DISPATCH_H_
