// CPU paths (and device dispatch) of kernels/activation.h.
#include "kernels/activation.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/dense_util.h"

namespace ips::kernels {
namespace {

using dense_internal::MinRows;
using dense_internal::NoCuda;
using dense_internal::NonNegative;
using dense_internal::ParallelRows;
using dense_internal::Required;

// One pass per row with the activation hoisted out of the inner loop, so each loop is a simple
// streaming map the compiler vectorises (the switch in ApplyActivation would block that).
template <typename T, typename F>
void BiasMapRows(const BiasActivationArgs<T>& a, int64_t r0, int64_t r1, F f) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* x = a.x + r * a.cols;
    T* y = a.y + r * a.cols;
    if (a.bias != nullptr) {
      for (int64_t c = 0; c < a.cols; ++c) y[c] = f(x[c] + a.bias[c]);
    } else {
      for (int64_t c = 0; c < a.cols; ++c) y[c] = f(x[c]);
    }
  }
}

template <typename T>
void BiasActivationRows(const BiasActivationArgs<T>& a, int64_t r0, int64_t r1) {
  const T slope = a.slope;
  switch (a.act) {
    case Activation::kIdentity:
      BiasMapRows(a, r0, r1, [](T v) { return v; });
      break;
    case Activation::kRelu:
      BiasMapRows(a, r0, r1, [](T v) { return v > T(0) ? v : T(0); });
      break;
    case Activation::kLeakyRelu:
      BiasMapRows(a, r0, r1, [slope](T v) { return v > T(0) ? v : slope * v; });
      break;
    case Activation::kSigmoid:
      BiasMapRows(a, r0, r1, [](T v) { return StableSigmoid(v); });
      break;
    case Activation::kTanh:
      BiasMapRows(a, r0, r1, [](T v) { return std::tanh(v); });
      break;
  }
}

template <typename T>
Status CheckActivation(const char* op, Activation act, T slope) {
  if (act == Activation::kLeakyRelu && !(slope >= T(0)))
    return InvalidArgumentError(std::string(op) + ": LeakyReLU needs slope >= 0");
  return Status::Ok();
}

}  // namespace

template <typename T>
Status BiasActivationForward(const Context& ctx, const BiasActivationArgs<T>& a) {
  constexpr const char* kOp = "BiasActivationForward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.cols));
  IPS_RETURN_IF_ERROR(CheckActivation(kOp, a.act, a.slope));
  if (a.rows * a.cols == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "x", a.x));
  IPS_RETURN_IF_ERROR(Required(kOp, "y", a.y));
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.cols),
                 [&](int64_t r0, int64_t r1) { BiasActivationRows(a, r0, r1); });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BiasActivationForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status ActivationBackward(const Context& ctx, const ActivationBackwardArgs<T>& a) {
  constexpr const char* kOp = "ActivationBackward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.n));
  IPS_RETURN_IF_ERROR(CheckActivation(kOp, a.act, a.slope));
  if (a.n == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "y", a.y));
  IPS_RETURN_IF_ERROR(Required(kOp, "dy", a.dy));
  IPS_RETURN_IF_ERROR(Required(kOp, "dx", a.dx));
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.n, 16384, [&](int64_t i0, int64_t i1) {
      const T slope = a.slope;
      switch (a.act) {
        case Activation::kIdentity:
          for (int64_t i = i0; i < i1; ++i) a.dx[i] = a.dy[i];
          break;
        case Activation::kRelu:
          for (int64_t i = i0; i < i1; ++i) a.dx[i] = a.y[i] > T(0) ? a.dy[i] : T(0);
          break;
        case Activation::kLeakyRelu:
          for (int64_t i = i0; i < i1; ++i) a.dx[i] = a.y[i] > T(0) ? a.dy[i] : slope * a.dy[i];
          break;
        case Activation::kSigmoid:
          for (int64_t i = i0; i < i1; ++i) a.dx[i] = a.dy[i] * a.y[i] * (T(1) - a.y[i]);
          break;
        case Activation::kTanh:
          for (int64_t i = i0; i < i1; ++i) a.dx[i] = a.dy[i] * (T(1) - a.y[i] * a.y[i]);
          break;
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, ActivationBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status BiasGrad(const Context& ctx, const BiasGradArgs<T>& a) {
  constexpr const char* kOp = "BiasGrad";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.cols));
  if (a.cols == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "dbias", a.dbias));
  if (a.rows > 0) IPS_RETURN_IF_ERROR(Required(kOp, "dy", a.dy));
  if (ctx.device == Device::kCpu) {
    // Parallel over column blocks so every thread streams whole rows of its block and the sum
    // order per column is fixed (deterministic regardless of the pool size).
    ParallelRows(ctx, a.cols, 64, [&](int64_t c0, int64_t c1) {
      T* db = a.dbias;
      for (int64_t c = c0; c < c1; ++c) db[c] = T(0);
      for (int64_t r = 0; r < a.rows; ++r) {
        const T* dy = a.dy + r * a.cols;
        for (int64_t c = c0; c < c1; ++c) db[c] += dy[c];
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BiasGradCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status PreluForward(const Context& ctx, const PreluArgs<T>& a) {
  constexpr const char* kOp = "PreluForward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.cols));
  if (a.rows * a.cols == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "x", a.x));
  IPS_RETURN_IF_ERROR(Required(kOp, "alpha", a.alpha));
  IPS_RETURN_IF_ERROR(Required(kOp, "y", a.y));
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.cols), [&](int64_t r0, int64_t r1) {
      const T* alpha = a.alpha;
      for (int64_t r = r0; r < r1; ++r) {
        const T* x = a.x + r * a.cols;
        T* y = a.y + r * a.cols;
        // Branch-free (signs are random: a branch would mispredict half the time) so it
        // vectorises: x > 0 gives x + alpha * 0, x <= 0 gives 0 + alpha * x.
        for (int64_t c = 0; c < a.cols; ++c)
          y[c] = std::max(x[c], T(0)) + alpha[c] * std::min(x[c], T(0));
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, PreluForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status PreluBackward(const Context& ctx, const PreluArgs<T>& a) {
  constexpr const char* kOp = "PreluBackward";
  IPS_RETURN_IF_ERROR(NonNegative(kOp, a.rows, a.cols));
  if (a.cols == 0) return Status::Ok();
  if (a.rows > 0) {
    IPS_RETURN_IF_ERROR(Required(kOp, "x", a.x));
    IPS_RETURN_IF_ERROR(Required(kOp, "dy", a.dy));
    IPS_RETURN_IF_ERROR(Required(kOp, "alpha", a.alpha));
  }
  if (ctx.device == Device::kCpu) {
    if (a.dalpha != nullptr) {
      // Before dx: dx may alias dy.
      ParallelRows(ctx, a.cols, 64, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) a.dalpha[c] = T(0);
        T* dalpha = a.dalpha;
        for (int64_t r = 0; r < a.rows; ++r) {
          const T* x = a.x + r * a.cols;
          const T* dy = a.dy + r * a.cols;
          for (int64_t c = c0; c < c1; ++c) dalpha[c] += dy[c] * std::min(x[c], T(0));
        }
      });
    }
    if (a.dx != nullptr) {
      ParallelRows(ctx, a.rows, MinRows(a.cols), [&](int64_t r0, int64_t r1) {
        const T* alpha = a.alpha;
        for (int64_t r = r0; r < r1; ++r) {
          const T* x = a.x + r * a.cols;
          const T* dy = a.dy + r * a.cols;
          T* dx = a.dx + r * a.cols;
          for (int64_t c = 0; c < a.cols; ++c) dx[c] = dy[c] * (x[c] > T(0) ? T(1) : alpha[c]);
        }
      });
    }
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, PreluBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

namespace {

template <typename T>
Status CheckDropout(const char* op, const DropoutArgs<T>& a, const void* in, const void* out) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.n));
  if (!(a.p >= 0.f && a.p <= 1.f))
    return InvalidArgumentError(std::string(op) + ": p must be in [0, 1], got " +
                                std::to_string(a.p));
  if (a.n == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(op, "input", in));
  return Required(op, "output", out);
}

// y = mask * scale * x: shared by forward (x -> y) and backward (dy -> dx).
template <typename T>
void DropoutCpu(const Context& ctx, const DropoutArgs<T>& a, const T* in, T* out) {
  const uint64_t threshold = DropoutThreshold(a.p);
  const T scale = a.p >= 1.f ? T(0) : T(1) / (T(1) - static_cast<T>(a.p));
  ParallelRows(ctx, a.n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const bool keep = DropoutBits(a.seed, a.offset + static_cast<uint64_t>(i)) >= threshold;
      out[i] = keep ? in[i] * scale : T(0);
    }
  });
}

}  // namespace

template <typename T>
Status DropoutForward(const Context& ctx, const DropoutArgs<T>& a) {
  IPS_RETURN_IF_ERROR(CheckDropout("DropoutForward", a, a.x, a.y));
  if (a.n == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    DropoutCpu(ctx, a, a.x, a.y);
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, DropoutForwardCuda(ctx, a));
  return NoCuda("DropoutForward", std::is_same_v<T, float>);
}

template <typename T>
Status DropoutBackward(const Context& ctx, const DropoutArgs<T>& a) {
  IPS_RETURN_IF_ERROR(CheckDropout("DropoutBackward", a, a.dy, a.dx));
  if (a.n == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    DropoutCpu(ctx, a, a.dy, a.dx);
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, DropoutBackwardCuda(ctx, a));
  return NoCuda("DropoutBackward", std::is_same_v<T, float>);
}

#define IPS_INSTANTIATE(T)                                                                 \
  template Status BiasActivationForward<T>(const Context&, const BiasActivationArgs<T>&);  \
  template Status ActivationBackward<T>(const Context&, const ActivationBackwardArgs<T>&); \
  template Status BiasGrad<T>(const Context&, const BiasGradArgs<T>&);                     \
  template Status PreluForward<T>(const Context&, const PreluArgs<T>&);                    \
  template Status PreluBackward<T>(const Context&, const PreluArgs<T>&);                   \
  template Status DropoutForward<T>(const Context&, const DropoutArgs<T>&);                \
  template Status DropoutBackward<T>(const Context&, const DropoutArgs<T>&);
IPS_INSTANTIATE(float)
IPS_INSTANTIATE(double)
#undef IPS_INSTANTIATE

}  // namespace ips::kernels
