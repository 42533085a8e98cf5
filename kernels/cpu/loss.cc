// CPU paths (and device dispatch) of kernels/loss.h. Reductions accumulate in double, in index
// order, so the CPU loss does not depend on the thread count.
#include "kernels/loss.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/activation.h"
#include "kernels/cpu/dense_util.h"

namespace ips::kernels {
namespace {

using dense_internal::NoCuda;
using dense_internal::NonNegative;
using dense_internal::ParallelRows;
using dense_internal::Required;

template <typename T>
Status CheckBce(const char* op, const BceWithLogitsArgs<T>& a) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.n));
  if (a.reduction == Reduction::kMaskedMean)
    IPS_RETURN_IF_ERROR(Required(op, "weights (kMaskedMean)", a.weights));
  if (a.n == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(op, "logits", a.logits));
  return Required(op, "labels", a.labels);
}

// The factor that turns sum_i w_i l_i into the reduced loss.
template <typename T>
double BceScale(const BceWithLogitsArgs<T>& a) {
  switch (a.reduction) {
    case Reduction::kSum:
      return 1.0;
    case Reduction::kMean:
      return a.n > 0 ? 1.0 / static_cast<double>(a.n) : 0.0;
    case Reduction::kMaskedMean: {
      double sw = 0;
      for (int64_t i = 0; i < a.n; ++i) sw += a.weights[i];
      return 1.0 / std::max(sw, 1.0);
    }
  }
  return 1.0;
}

}  // namespace

template <typename T>
Status BceWithLogitsForward(const Context& ctx, const BceWithLogitsArgs<T>& a) {
  constexpr const char* kOp = "BceWithLogitsForward";
  IPS_RETURN_IF_ERROR(CheckBce(kOp, a));
  IPS_RETURN_IF_ERROR(Required(kOp, "loss", a.loss));
  if (ctx.device == Device::kCpu) {
    double sum = 0;
    for (int64_t i = 0; i < a.n; ++i) {
      const double x = a.logits[i], y = a.labels[i];
      const double l = std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::fabs(x)));
      sum += a.weights != nullptr ? a.weights[i] * l : l;
    }
    *a.loss = static_cast<T>(sum * BceScale(a));
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BceWithLogitsForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status BceWithLogitsBackward(const Context& ctx, const BceWithLogitsArgs<T>& a) {
  constexpr const char* kOp = "BceWithLogitsBackward";
  IPS_RETURN_IF_ERROR(CheckBce(kOp, a));
  if (a.n == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "dlogits", a.dlogits));
  if (ctx.device == Device::kCpu) {
    const T scale = static_cast<T>(BceScale(a) * static_cast<double>(a.dloss));
    ParallelRows(ctx, a.n, 16384, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const T w = a.weights != nullptr ? a.weights[i] : T(1);
        a.dlogits[i] = scale * w * (StableSigmoid(a.logits[i]) - a.labels[i]);
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, BceWithLogitsBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

namespace {

template <typename T>
Status CheckSampled(const char* op, const SampledSoftmaxArgs<T>& a) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.rows, a.classes));
  if (a.reduction == Reduction::kMaskedMean)
    return InvalidArgumentError(std::string(op) + ": kMaskedMean is not supported (no weights)");
  if (a.rows == 0) return Status::Ok();
  if (a.classes < 1) return InvalidArgumentError(std::string(op) + ": classes must be >= 1");
  return Required(op, "logits", a.logits);
}

// Corrected logit of (r, j).
template <typename T>
T Corrected(const SampledSoftmaxArgs<T>& a, int64_t r, int64_t j) {
  const int64_t k = r * a.classes + j;
  return a.log_q != nullptr ? a.logits[k] - a.log_q[k] : a.logits[k];
}

}  // namespace

template <typename T>
Status SampledSoftmaxForward(const Context& ctx, const SampledSoftmaxArgs<T>& a) {
  constexpr const char* kOp = "SampledSoftmaxForward";
  IPS_RETURN_IF_ERROR(CheckSampled(kOp, a));
  IPS_RETURN_IF_ERROR(Required(kOp, "loss", a.loss));
  if (ctx.device == Device::kCpu) {
    double sum = 0;
    for (int64_t r = 0; r < a.rows; ++r) {
      double mx = Corrected(a, r, 0);
      for (int64_t j = 1; j < a.classes; ++j) mx = std::max<double>(mx, Corrected(a, r, j));
      double se = 0;
      for (int64_t j = 0; j < a.classes; ++j) se += std::exp(Corrected(a, r, j) - mx);
      sum += mx + std::log(se) - Corrected(a, r, 0);  // logsumexp - positive
    }
    if (a.reduction == Reduction::kMean && a.rows > 0) sum /= static_cast<double>(a.rows);
    *a.loss = static_cast<T>(sum);
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SampledSoftmaxForwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status SampledSoftmaxBackward(const Context& ctx, const SampledSoftmaxArgs<T>& a) {
  constexpr const char* kOp = "SampledSoftmaxBackward";
  IPS_RETURN_IF_ERROR(CheckSampled(kOp, a));
  if (a.rows == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(kOp, "dlogits", a.dlogits));
  if (ctx.device == Device::kCpu) {
    const double scale = static_cast<double>(a.dloss) /
                         (a.reduction == Reduction::kMean ? static_cast<double>(a.rows) : 1.0);
    ParallelRows(ctx, a.rows, dense_internal::MinRows(a.classes), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* d = a.dlogits + r * a.classes;
        double mx = Corrected(a, r, 0);
        for (int64_t j = 1; j < a.classes; ++j) mx = std::max<double>(mx, Corrected(a, r, j));
        double se = 0;
        for (int64_t j = 0; j < a.classes; ++j) se += std::exp(Corrected(a, r, j) - mx);
        for (int64_t j = 0; j < a.classes; ++j) {
          const double p = std::exp(Corrected(a, r, j) - mx) / se;
          d[j] = static_cast<T>(scale * (p - (j == 0 ? 1.0 : 0.0)));
        }
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SampledSoftmaxBackwardCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

#define IPS_INSTANTIATE(T)                                                                \
  template Status BceWithLogitsForward<T>(const Context&, const BceWithLogitsArgs<T>&);   \
  template Status BceWithLogitsBackward<T>(const Context&, const BceWithLogitsArgs<T>&);  \
  template Status SampledSoftmaxForward<T>(const Context&, const SampledSoftmaxArgs<T>&); \
  template Status SampledSoftmaxBackward<T>(const Context&, const SampledSoftmaxArgs<T>&);
IPS_INSTANTIATE(float)
IPS_INSTANTIATE(double)
#undef IPS_INSTANTIATE

}  // namespace ips::kernels
