// Softmax over the last dimension with an optional per-row length mask, forward and backward.
// CPU (float, double) and CUDA (float). Conventions: kernels/activation.h.
#ifndef IPS_KERNELS_SOFTMAX_H_
#define IPS_KERNELS_SOFTMAX_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

// y[r, :] = softmax(x[r, valid]) on the valid columns of row r and 0 elsewhere. With
// lengths == nullptr every column is valid. Otherwise len = lengths[r / rows_per_length] clamped
// to [0, cols] (so attention maps [B x H x Lq x Lk] share one length per batch row with
// rows_per_length = H * Lq) and the valid columns are [0, len), or [cols - len, cols) when
// left_padded. A row with len == 0 is all zeros (unlike masked_fill(-1e9), which would give a
// uniform row). x at masked columns is never read. y may alias x.
// Backward: dx = y * (dy - sum(y * dy)); 0 at masked columns; dx may alias dy.
template <typename T>
struct SoftmaxArgs {
  int64_t rows = 0, cols = 0;
  const int32_t* lengths = nullptr;
  int64_t rows_per_length = 1;
  bool left_padded = false;
  const T* x = nullptr;   // forward input
  T* y = nullptr;         // forward output; backward input
  const T* dy = nullptr;  // backward
  T* dx = nullptr;        // backward
};
template <typename T>
Status SoftmaxForward(const Context& ctx, const SoftmaxArgs<T>& args);
template <typename T>
Status SoftmaxBackward(const Context& ctx, const SoftmaxArgs<T>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_SOFTMAX_H_
