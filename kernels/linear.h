// Linear layer helper over the op-level kernels: y = act(x W^T + b) with W in torch nn.Linear
// layout [out x in]; the backward is act' (from y), two GEMMs and a bias column sum. CPU (float,
// double) and CUDA (float, cuBLAS). Conventions: kernels/activation.h.
#ifndef IPS_KERNELS_LINEAR_H_
#define IPS_KERNELS_LINEAR_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/activation.h"
#include "kernels/context.h"

namespace ips::kernels {

template <typename T>
struct LinearArgs {
  int64_t rows = 0, in = 0, out = 0;
  Activation act = Activation::kIdentity;
  T slope = T(0.01);
  const T* x = nullptr;     // [rows x in]
  const T* w = nullptr;     // [out x in]
  const T* bias = nullptr;  // [out] or nullptr
  T* y = nullptr;           // [rows x out]
  // Backward (x, w, y as after the forward):
  const T* dy = nullptr;  // [rows x out]
  T* dpre = nullptr;      // [rows x out] scratch for dL/d(pre-activation); may equal dy's buffer
  T* dx = nullptr;        // [rows x in] or nullptr to skip
  T* dw = nullptr;        // [out x in]
  T* dbias = nullptr;     // [out] or nullptr
};
template <typename T>
Status LinearForward(const Context& ctx, const LinearArgs<T>& args);
template <typename T>
Status LinearBackward(const Context& ctx, const LinearArgs<T>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_LINEAR_H_
