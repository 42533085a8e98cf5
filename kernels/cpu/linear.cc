// kernels/linear.h: composed from Gemm and the activation ops, so it runs on either device.
// On the CPU, float layers up to kSmallWidth wide (the recommender MLPs: 72..216 -> 200 -> 80
// -> 1) run their GEMMs as SmallGemm blocks on ctx.pool instead of the BLAS: at these sizes the
// BLAS's packing and its own spinning threads (next to our pool's) cost more than the products
// (kernels/cpu/small_gemm.h says why).
#include "kernels/linear.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/dense_util.h"
#include "kernels/cpu/small_gemm.h"
#include "kernels/gemm.h"

namespace ips::kernels {
namespace {

using cpu::SmallMm;

constexpr int64_t kSmallWidth = 512;
constexpr int64_t kRowBlock = 64;  // rows per pool task (forward, dx)

template <typename T>
bool UseSmallGemm(const Context& ctx, const LinearArgs<T>& a) {
  return std::is_same_v<T, float> && ctx.device == Device::kCpu && a.in <= kSmallWidth &&
         a.out <= kSmallWidth;
}

// y = x W^T, row blocks in parallel; SmallGemm's B operand is W^T [in x out].
template <typename T>
void SmallForward(const Context& ctx, const LinearArgs<T>& a) {
  std::vector<T> wt(static_cast<size_t>(a.in * a.out));
  for (int64_t o = 0; o < a.out; ++o)
    for (int64_t i = 0; i < a.in; ++i) wt[i * a.out + o] = a.w[o * a.in + i];
  ParallelFor(ctx.pool, a.rows, kRowBlock, [&](int64_t r0, int64_t r1) {
    SmallMm(r1 - r0, a.out, a.in, a.x + r0 * a.in, a.in, int64_t{1}, wt.data(), a.out,
            a.y + r0 * a.out, a.out);
  });
}

// dW = dpre^T x split by output rows (each task sums over every row in order: no partials, the
// same result for any pool); dx = dpre W by row blocks.
template <typename T>
void SmallBackward(const Context& ctx, const LinearArgs<T>& a) {
  if (a.rows == 0) {  // x and dpre may be null: nothing to read, dW = 0 (dx is empty)
    std::fill(a.dw, a.dw + a.out * a.in, T(0));
    return;
  }
  ParallelFor(ctx.pool, a.out, 8, [&](int64_t o0, int64_t o1) {
    SmallMm(o1 - o0, a.in, a.rows, a.dpre + o0, int64_t{1}, a.out, a.x, a.in, a.dw + o0 * a.in,
            a.in);
  });
  if (a.dx == nullptr) return;
  ParallelFor(ctx.pool, a.rows, kRowBlock, [&](int64_t r0, int64_t r1) {
    SmallMm(r1 - r0, a.in, a.out, a.dpre + r0 * a.out, a.out, int64_t{1}, a.w, a.in,
            a.dx + r0 * a.in, a.in);
  });
}

}  // namespace

template <typename T>
Status LinearForward(const Context& ctx, const LinearArgs<T>& a) {
  constexpr const char* kOp = "LinearForward";
  IPS_RETURN_IF_ERROR(dense_internal::NonNegative(kOp, a.rows, a.in, a.out));
  if (a.rows * a.out == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(dense_internal::Required(kOp, "y", a.y));
  if (UseSmallGemm(ctx, a)) {
    if (a.in == 0) {
      std::fill(a.y, a.y + a.rows * a.out, T(0));
    } else {
      SmallForward(ctx, a);
    }
  } else {
    const int64_t in1 = std::max<int64_t>(1, a.in);  // the BLAS wants ld >= 1 when in = 0
    // y = x W^T
    IPS_RETURN_IF_ERROR(Gemm(
        ctx, MakeGemmArgs<T>(false, true, a.rows, a.out, a.in, a.x, in1, a.w, in1, a.y, a.out)));
  }
  BiasActivationArgs<T> ba;
  ba.rows = a.rows;
  ba.cols = a.out;
  ba.act = a.act;
  ba.slope = a.slope;
  ba.x = a.y;
  ba.bias = a.bias;
  ba.y = a.y;
  return BiasActivationForward(ctx, ba);
}

template <typename T>
Status LinearBackward(const Context& ctx, const LinearArgs<T>& a) {
  constexpr const char* kOp = "LinearBackward";
  IPS_RETURN_IF_ERROR(dense_internal::NonNegative(kOp, a.rows, a.in, a.out));
  IPS_RETURN_IF_ERROR(dense_internal::Required(kOp, "dw", a.dw));
  if (a.rows > 0) IPS_RETURN_IF_ERROR(dense_internal::Required(kOp, "dpre", a.dpre));
  ActivationBackwardArgs<T> ab;
  ab.n = a.rows * a.out;
  ab.act = a.act;
  ab.slope = a.slope;
  ab.y = a.y;
  ab.dy = a.dy;
  ab.dx = a.dpre;
  IPS_RETURN_IF_ERROR(ActivationBackward(ctx, ab));
  if (UseSmallGemm(ctx, a)) {
    SmallBackward(ctx, a);
  } else {
    const int64_t in1 = std::max<int64_t>(1, a.in), out1 = std::max<int64_t>(1, a.out);
    // dW = dpre^T x: [out x rows] x [rows x in]
    IPS_RETURN_IF_ERROR(Gemm(
        ctx, MakeGemmArgs<T>(true, false, a.out, a.in, a.rows, a.dpre, out1, a.x, in1, a.dw, in1)));
    if (a.dx != nullptr) {
      // dx = dpre W: [rows x out] x [out x in]
      IPS_RETURN_IF_ERROR(Gemm(ctx, MakeGemmArgs<T>(false, false, a.rows, a.in, a.out, a.dpre, out1,
                                                    a.w, in1, a.dx, in1)));
    }
  }
  if (a.dbias != nullptr) {
    BiasGradArgs<T> bg;
    bg.rows = a.rows;
    bg.cols = a.out;
    bg.dy = a.dpre;
    bg.dbias = a.dbias;
    IPS_RETURN_IF_ERROR(BiasGrad(ctx, bg));
  }
  return Status::Ok();
}

template Status LinearForward<float>(const Context&, const LinearArgs<float>&);
template Status LinearForward<double>(const Context&, const LinearArgs<double>&);
template Status LinearBackward<float>(const Context&, const LinearArgs<float>&);
template Status LinearBackward<double>(const Context&, const LinearArgs<double>&);

}  // namespace ips::kernels
