// Normalisation ops of the dense layers: LayerNorm over the last dimension, BatchNorm1d over the
// rows of an [N x C] matrix (training: batch statistics plus the running-statistics update;
// inference: running statistics), and DIN's Dice activation, which is a BatchNorm without affine
// feeding a sigmoid gate. CPU (float, double) and CUDA (float). Conventions: kernels/activation.h.
#ifndef IPS_KERNELS_NORM_H_
#define IPS_KERNELS_NORM_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

// y = (x - mean) * rstd * gamma + beta per row of [rows x dim], with the biased variance and
// rstd = 1 / sqrt(var + eps), as torch nn.LayerNorm(dim) (eps 1e-5 by default).
// The forward writes mean/rstd [rows]; the backward reads them back.
template <typename T>
struct LayerNormArgs {
  int64_t rows = 0, dim = 0;
  float eps = 1e-5f;
  const T* x = nullptr;
  const T* gamma = nullptr;  // [dim]
  const T* beta = nullptr;   // [dim]
  T* y = nullptr;            // forward output (may alias x only in the forward-only use)
  T* mean = nullptr;         // [rows], written by the forward
  T* rstd = nullptr;         // [rows], written by the forward
  // Backward (x, gamma, mean, rstd as after the forward):
  const T* dy = nullptr;
  T* dx = nullptr;      // [rows x dim]
  T* dgamma = nullptr;  // [dim] or nullptr
  T* dbeta = nullptr;   // [dim] or nullptr
};
template <typename T>
Status LayerNormForward(const Context& ctx, const LayerNormArgs<T>& args);
template <typename T>
Status LayerNormBackward(const Context& ctx, const LayerNormArgs<T>& args);

// BatchNorm1d over the N rows of [N x C], per channel c, as torch nn.BatchNorm1d(C):
// - training: mean/var are the batch statistics (biased var for normalising), and
//   running_mean/var (when non-null) become (1 - momentum) * running + momentum * batch, with the
//   UNBIASED batch variance. N must be >= 2 (torch raises for N == 1 too).
// - inference: running_mean/var normalise (both required).
// The forward writes save_mean/save_rstd [C] = the statistics it normalised with, which the
// backward reads. gamma/beta nullptr = no affine (gamma 1, beta 0).
template <typename T>
struct BatchNormArgs {
  int64_t n = 0, c = 0;
  bool training = true;
  float eps = 1e-5f;
  float momentum = 0.1f;
  const T* x = nullptr;
  const T* gamma = nullptr;   // [C] or nullptr
  const T* beta = nullptr;    // [C] or nullptr
  T* running_mean = nullptr;  // [C]
  T* running_var = nullptr;   // [C]
  T* y = nullptr;
  T* save_mean = nullptr;  // [C]
  T* save_rstd = nullptr;  // [C]
  // Backward: dx = d/dx through the batch statistics in training mode, dy * gamma * rstd in
  // inference mode.
  const T* dy = nullptr;
  T* dx = nullptr;
  T* dgamma = nullptr;  // [C] or nullptr
  T* dbeta = nullptr;   // [C] or nullptr
};
template <typename T>
Status BatchNormForward(const Context& ctx, const BatchNormArgs<T>& args);
template <typename T>
Status BatchNormBackward(const Context& ctx, const BatchNormArgs<T>& args);

// Dice (DIN), exactly the peer's torch module: p = sigmoid(BN(x)) with BN = BatchNorm1d(C,
// affine=False, eps=1e-8, momentum 0.1), y = p * x + (1 - p) * alpha[c] * x, alpha per channel.
// Training/inference and the statistics buffers behave as in BatchNormArgs. The backward
// differentiates through the batch statistics in training mode (as autograd does) and writes
// dx and dalpha = sum_n dy * (1 - p) * x.
template <typename T>
struct DiceArgs {
  int64_t n = 0, c = 0;
  bool training = true;
  float eps = 1e-8f;
  float momentum = 0.1f;
  const T* x = nullptr;
  const T* alpha = nullptr;  // [C]
  T* running_mean = nullptr;
  T* running_var = nullptr;
  T* y = nullptr;
  T* save_mean = nullptr;  // [C]
  T* save_rstd = nullptr;  // [C]
  const T* dy = nullptr;
  T* dx = nullptr;
  T* dalpha = nullptr;  // [C] or nullptr
};
template <typename T>
Status DiceForward(const Context& ctx, const DiceArgs<T>& args);
template <typename T>
Status DiceBackward(const Context& ctx, const DiceArgs<T>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_NORM_H_
