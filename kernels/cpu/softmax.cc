// CPU paths (and device dispatch) of kernels/softmax.h.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/dense_util.h"

namespace ips::kernels {
namespace {

using dense_internal::MinRows;
using dense_internal::NoCuda;
using dense_internal::NonNegative;
using dense_internal::ParallelRows;
using dense_internal::Required;

// The valid column range [begin, end) of row r.
template <typename T>
void ValidRange(const SoftmaxArgs<T>& a, int64_t r, int64_t* begin, int64_t* end) {
  int64_t len = a.cols;
  if (a.lengths != nullptr) len = std::clamp<int64_t>(a.lengths[r / a.rows_per_length], 0, a.cols);
  *begin = a.left_padded ? a.cols - len : 0;
  *end = a.left_padded ? a.cols : len;
}

template <typename T>
Status Check(const char* op, const SoftmaxArgs<T>& a, bool forward) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.rows, a.cols));
  if (a.lengths != nullptr && a.rows_per_length < 1)
    return InvalidArgumentError(std::string(op) + ": rows_per_length must be >= 1");
  if (a.rows * a.cols == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(op, "y", a.y));
  if (forward) return Required(op, "x", a.x);
  IPS_RETURN_IF_ERROR(Required(op, "dy", a.dy));
  return Required(op, "dx", a.dx);
}

}  // namespace

template <typename T>
Status SoftmaxForward(const Context& ctx, const SoftmaxArgs<T>& a) {
  IPS_RETURN_IF_ERROR(Check("SoftmaxForward", a, true));
  if (a.rows * a.cols == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.cols), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* x = a.x + r * a.cols;
        T* y = a.y + r * a.cols;
        int64_t b, e;
        ValidRange(a, r, &b, &e);
        T mx = b < e ? x[b] : T(0);
        for (int64_t j = b; j < e; ++j) mx = std::max(mx, x[j]);
        T sum = 0;
        for (int64_t j = b; j < e; ++j) {
          y[j] = std::exp(x[j] - mx);
          sum += y[j];
        }
        const T inv = b < e ? T(1) / sum : T(0);
        for (int64_t j = 0; j < b; ++j) y[j] = T(0);
        for (int64_t j = b; j < e; ++j) y[j] *= inv;
        for (int64_t j = e; j < a.cols; ++j) y[j] = T(0);
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SoftmaxForwardCuda(ctx, a));
  return NoCuda("SoftmaxForward", std::is_same_v<T, float>);
}

template <typename T>
Status SoftmaxBackward(const Context& ctx, const SoftmaxArgs<T>& a) {
  IPS_RETURN_IF_ERROR(Check("SoftmaxBackward", a, false));
  if (a.rows * a.cols == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.cols), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* y = a.y + r * a.cols;
        const T* dy = a.dy + r * a.cols;
        T* dx = a.dx + r * a.cols;
        int64_t b, e;
        ValidRange(a, r, &b, &e);
        T dot = 0;
        for (int64_t j = b; j < e; ++j) dot += y[j] * dy[j];
        for (int64_t j = 0; j < b; ++j) dx[j] = T(0);
        for (int64_t j = b; j < e; ++j) dx[j] = y[j] * (dy[j] - dot);
        for (int64_t j = e; j < a.cols; ++j) dx[j] = T(0);
      }
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SoftmaxBackwardCuda(ctx, a));
  return NoCuda("SoftmaxBackward", std::is_same_v<T, float>);
}

template Status SoftmaxForward<float>(const Context&, const SoftmaxArgs<float>&);
template Status SoftmaxForward<double>(const Context&, const SoftmaxArgs<double>&);
template Status SoftmaxBackward<float>(const Context&, const SoftmaxArgs<float>&);
template Status SoftmaxBackward<double>(const Context&, const SoftmaxArgs<double>&);

}  // namespace ips::kernels
