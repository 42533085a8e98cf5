// kernels/linear.h: composed from Gemm and the activation ops, so it runs on either device.
#include "kernels/linear.h"

#include "kernels/cpu/dense_util.h"
#include "kernels/gemm.h"

namespace ips::kernels {

template <typename T>
Status LinearForward(const Context& ctx, const LinearArgs<T>& a) {
  constexpr const char* kOp = "LinearForward";
  IPS_RETURN_IF_ERROR(dense_internal::NonNegative(kOp, a.rows, a.in, a.out));
  if (a.rows * a.out == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(dense_internal::Required(kOp, "y", a.y));
  GemmArgs<T> g;  // y = x W^T
  g.trans_b = true;
  g.m = a.rows;
  g.n = a.out;
  g.k = a.in;
  g.a = a.x;
  g.lda = std::max<int64_t>(1, a.in);
  g.b = a.w;
  g.ldb = std::max<int64_t>(1, a.in);
  g.c = a.y;
  g.ldc = a.out;
  IPS_RETURN_IF_ERROR(Gemm(ctx, g));
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
  GemmArgs<T> g;  // dW = dpre^T x: [out x rows] x [rows x in]
  g.trans_a = true;
  g.m = a.out;
  g.n = a.in;
  g.k = a.rows;
  g.a = a.dpre;
  g.lda = std::max<int64_t>(1, a.out);
  g.b = a.x;
  g.ldb = std::max<int64_t>(1, a.in);
  g.c = a.dw;
  g.ldc = std::max<int64_t>(1, a.in);
  IPS_RETURN_IF_ERROR(Gemm(ctx, g));
  if (a.dx != nullptr) {
    GemmArgs<T> h;  // dx = dpre W: [rows x out] x [out x in]
    h.m = a.rows;
    h.n = a.in;
    h.k = a.out;
    h.a = a.dpre;
    h.lda = std::max<int64_t>(1, a.out);
    h.b = a.w;
    h.ldb = std::max<int64_t>(1, a.in);
    h.c = a.dx;
    h.ldc = std::max<int64_t>(1, a.in);
    IPS_RETURN_IF_ERROR(Gemm(ctx, h));
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
