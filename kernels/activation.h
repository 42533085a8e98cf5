// Element-wise dense-layer ops: fused bias + activation (ReLU, LeakyReLU, sigmoid, tanh) and its
// backward, bias gradients (column sums), PReLU with per-channel alpha, and dropout with a
// counter-based mask that the CPU and CUDA paths generate identically. Forward and backward on
// the CPU (float and double, for float64 gradient checks) and on CUDA (float).
//
// Conventions shared by every op in kernels/activation.h, norm.h, softmax.h, loss.h, capsule.h
// and linear.h (the "dense" group):
// - Row-major, contiguous tensors; on CUDA every pointer (lengths and scalar outputs included)
//   is device memory, while scalar inputs (slopes, dloss) are host values in the Args.
// - Outputs and gradients are overwritten, never accumulated into, and may be uninitialised
//   (NaN-poisoned) on entry. Where a comment says "may alias", in-place use is supported.
// - Errors: INVALID_ARGUMENT for negative sizes, null required pointers or bad hyper-parameters;
//   UNIMPLEMENTED for CUDA in a build without it, or for double on CUDA.
// - Thread safety: reentrant; concurrent calls must not share output buffers. CPU paths split
//   rows over ctx.pool (nullptr = calling thread); CUDA paths launch on ctx.stream and do not
//   synchronise.
#ifndef IPS_KERNELS_ACTIVATION_H_
#define IPS_KERNELS_ACTIVATION_H_

#include <cmath>
#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

#if defined(__CUDACC__)
#define IPS_HOST_DEVICE __host__ __device__
#else
#define IPS_HOST_DEVICE
#endif

namespace ips::kernels {

enum class Activation { kIdentity, kRelu, kLeakyRelu, kSigmoid, kTanh };

// y = act(x + bias[col]) over an [rows x cols] matrix. bias may be nullptr (no bias); y may alias
// x. LeakyReLU uses `slope` for x < 0 and needs slope >= 0 (the backward reads the sign of y).
template <typename T>
struct BiasActivationArgs {
  int64_t rows = 0, cols = 0;
  Activation act = Activation::kIdentity;
  T slope = T(0.01);
  const T* x = nullptr;
  const T* bias = nullptr;  // [cols] or nullptr
  T* y = nullptr;
};
template <typename T>
Status BiasActivationForward(const Context& ctx, const BiasActivationArgs<T>& args);

// dx = dy * act'(.) for n elements, computed from the forward OUTPUT y (every supported
// activation's derivative is a function of its output). dx may alias dy.
template <typename T>
struct ActivationBackwardArgs {
  int64_t n = 0;
  Activation act = Activation::kIdentity;
  T slope = T(0.01);
  const T* y = nullptr;
  const T* dy = nullptr;
  T* dx = nullptr;
};
template <typename T>
Status ActivationBackward(const Context& ctx, const ActivationBackwardArgs<T>& args);

// Bias gradient of a row-broadcast bias: dbias[c] = sum_r dy[r, c] (overwritten).
template <typename T>
struct BiasGradArgs {
  int64_t rows = 0, cols = 0;
  const T* dy = nullptr;
  T* dbias = nullptr;
};
template <typename T>
Status BiasGrad(const Context& ctx, const BiasGradArgs<T>& args);

// PReLU with one alpha per channel (column): y = x > 0 ? x : alpha[c] * x, over [rows x cols]
// (torch nn.PReLU(num_parameters=cols) on a 2-D input). y may alias x in the forward.
template <typename T>
struct PreluArgs {
  int64_t rows = 0, cols = 0;
  const T* x = nullptr;      // forward input; the backward needs it too
  const T* alpha = nullptr;  // [cols]
  T* y = nullptr;            // forward output
  const T* dy = nullptr;     // backward: upstream gradient
  T* dx = nullptr;           // backward: [rows x cols] (may alias dy), or nullptr to skip
  T* dalpha = nullptr;       // backward: [cols] = sum_r dy * min(x, 0), or nullptr to skip
};
template <typename T>
Status PreluForward(const Context& ctx, const PreluArgs<T>& args);
template <typename T>
Status PreluBackward(const Context& ctx, const PreluArgs<T>& args);

// Inverted dropout: y = keep ? x / (1 - p) : 0. Element i is kept iff
// DropoutBits(seed, offset + i) >= DropoutThreshold(p), i.e. Mix64(seed ^ counter) >= p * 2^64:
// a pure function of (seed, counter), so the CPU and CUDA paths draw the identical mask, the
// backward regenerates it instead of storing it, and it is the same rule as the attention
// kernels' dropout (kernels/attention.h). Callers advance `offset` by n per call (or change the
// seed) to get fresh masks. p in [0, 1]; p == 1 drops everything (y = 0). y may alias x; dx may
// alias dy.
template <typename T>
struct DropoutArgs {
  int64_t n = 0;
  float p = 0.5f;
  uint64_t seed = 0;
  uint64_t offset = 0;
  const T* x = nullptr;   // forward
  T* y = nullptr;         // forward
  const T* dy = nullptr;  // backward
  T* dx = nullptr;        // backward
};
template <typename T>
Status DropoutForward(const Context& ctx, const DropoutArgs<T>& args);
template <typename T>
Status DropoutBackward(const Context& ctx, const DropoutArgs<T>& args);

// Mix64(seed ^ counter): common/random.h's fmix64, restated because it must also compile for the
// device.
IPS_HOST_DEVICE inline uint64_t DropoutBits(uint64_t seed, uint64_t counter) {
  uint64_t k = seed ^ counter;
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}
// p * 2^64 as an integer, so the keep decision is exact and identical on both devices. (For
// p >= 1 it saturates; the ops then scale by 0, so nothing survives.)
inline uint64_t DropoutThreshold(float p) {
  if (!(p > 0.f)) return 0;
  if (p >= 1.f) return ~uint64_t{0};
  return static_cast<uint64_t>(static_cast<double>(p) * 18446744073709551616.0);
}

// Numerically stable logistic function (never exponentiates a positive number).
template <typename T>
IPS_HOST_DEVICE inline T StableSigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// Scalar activation and its derivative from the output, shared by the CPU and CUDA paths.
template <typename T>
IPS_HOST_DEVICE inline T ApplyActivation(Activation act, T slope, T v) {
  switch (act) {
    case Activation::kRelu:
      return v > T(0) ? v : T(0);
    case Activation::kLeakyRelu:
      return v > T(0) ? v : slope * v;
    case Activation::kSigmoid:
      return StableSigmoid(v);
    case Activation::kTanh:
      return std::tanh(v);
    default:
      return v;
  }
}
template <typename T>
IPS_HOST_DEVICE inline T ActivationGradFromOutput(Activation act, T slope, T y) {
  switch (act) {
    case Activation::kRelu:
      return y > T(0) ? T(1) : T(0);
    case Activation::kLeakyRelu:
      return y > T(0) ? T(1) : slope;
    case Activation::kSigmoid:
      return y * (T(1) - y);
    case Activation::kTanh:
      return T(1) - y * y;
    default:
      return T(1);
  }
}

}  // namespace ips::kernels

#endif  // IPS_KERNELS_ACTIVATION_H_
