// CPU paths of kernels/capsule.h, and the device-independent parts of the routing (its GEMMs go
// through Gemm on either device; only the per-row routing loop has a CUDA twin).
#include "kernels/capsule.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "common/random.h"
#include "kernels/cpu/dense_util.h"
#include "kernels/gemm.h"

namespace ips::kernels {
namespace {

using dense_internal::MinRows;
using dense_internal::NoCuda;
using dense_internal::NonNegative;
using dense_internal::ParallelRows;
using dense_internal::Required;

template <typename T>
void SquashRow(const T* x, T* y, int64_t dim) {
  double sq = 0;
  for (int64_t k = 0; k < dim; ++k) sq += static_cast<double>(x[k]) * x[k];
  const double norm = std::sqrt(sq);
  const T s = static_cast<T>(norm / (1.0 + sq));
  for (int64_t k = 0; k < dim; ++k) y[k] = s * x[k];
}

// dx = s g + x (ds/dn / n) (x . g), s = n / (1 + n^2), ds/dn = (1 - n^2) / (1 + n^2)^2; at n = 0
// the second term's limit is 0 (the function is |x| x there, whose derivative vanishes).
template <typename T>
void SquashBackwardRow(const T* x, const T* g, T* dx, int64_t dim) {
  double sq = 0, xg = 0;
  for (int64_t k = 0; k < dim; ++k) {
    sq += static_cast<double>(x[k]) * x[k];
    xg += static_cast<double>(x[k]) * g[k];
  }
  const double n = std::sqrt(sq);
  const double s = n / (1.0 + sq);
  const double coef = n > 0 ? (1.0 - sq) / ((1.0 + sq) * (1.0 + sq) * n) * xg : 0.0;
  for (int64_t k = 0; k < dim; ++k) dx[k] = static_cast<T>(s * g[k] + coef * x[k]);
}

template <typename T>
Status CheckSquash(const char* op, const SquashArgs<T>& a, bool forward) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.rows, a.dim));
  if (a.rows * a.dim == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(Required(op, "x", a.x));
  if (forward) return Required(op, "y", a.y);
  IPS_RETURN_IF_ERROR(Required(op, "dy", a.dy));
  return Required(op, "dx", a.dx);
}

}  // namespace

template <typename T>
Status SquashForward(const Context& ctx, const SquashArgs<T>& a) {
  IPS_RETURN_IF_ERROR(CheckSquash("SquashForward", a, true));
  if (a.rows * a.dim == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) SquashRow(a.x + r * a.dim, a.y + r * a.dim, a.dim);
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SquashForwardCuda(ctx, a));
  return NoCuda("SquashForward", std::is_same_v<T, float>);
}

template <typename T>
Status SquashBackward(const Context& ctx, const SquashArgs<T>& a) {
  IPS_RETURN_IF_ERROR(CheckSquash("SquashBackward", a, false));
  if (a.rows * a.dim == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.rows, MinRows(a.dim), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        SquashBackwardRow(a.x + r * a.dim, a.dy + r * a.dim, a.dx + r * a.dim, a.dim);
    });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, SquashBackwardCuda(ctx, a));
  return NoCuda("SquashBackward", std::is_same_v<T, float>);
}

// ---- MIND routing -----------------------------------------------------------------------------

namespace {

template <typename T>
Status CheckRouting(const char* op, const MindRoutingArgs<T>& a, bool forward) {
  IPS_RETURN_IF_ERROR(NonNegative(op, a.batch, a.max_len, a.num_interests));
  IPS_RETURN_IF_ERROR(NonNegative(op, a.in_dim, a.out_dim));
  if (a.iterations < 1) return InvalidArgumentError(std::string(op) + ": iterations must be >= 1");
  if (a.batch == 0) return Status::Ok();
  if (a.num_interests == 0 || a.out_dim == 0 || a.in_dim == 0)
    return InvalidArgumentError(std::string(op) + ": num_interests, in_dim, out_dim must be > 0");
  for (auto [name, p] : {std::pair<const char*, const void*>{"e", a.e},
                         {"s", a.s},
                         {"ehat", a.ehat},
                         {"weights", a.weights},
                         {"z", a.z}})
    IPS_RETURN_IF_ERROR(Required(op, name, p));
  if (forward) {
    for (auto [name, p] : {std::pair<const char*, const void*>{"init_logits", a.init_logits},
                           {"final_logits", a.final_logits},
                           {"out", a.out}})
      IPS_RETURN_IF_ERROR(Required(op, name, p));
  } else {
    for (auto [name, p] : {std::pair<const char*, const void*>{"dout", a.dout},
                           {"ds", a.ds},
                           {"workspace", a.workspace}})
      IPS_RETURN_IF_ERROR(Required(op, name, p));
  }
  return Status::Ok();
}

template <typename T>
int64_t RowLength(const MindRoutingArgs<T>& a, int64_t b) {
  return a.lengths == nullptr ? a.max_len : std::clamp<int64_t>(a.lengths[b], 0, a.max_len);
}

// The routing loop of batch rows [b0, b1), given ehat.
template <typename T>
void RoutingLoopCpu(const MindRoutingArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t K = a.num_interests, L = a.max_len, D2 = a.out_dim;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t len = RowLength(a, b);
    const T* ehat = a.ehat + b * L * D2;
    T* logits = a.final_logits + b * K * L;
    T* w = a.weights + b * K * L;
    T* z = a.z + b * K * D2;
    T* u = a.out + b * K * D2;
    const T* init = a.init_logits + (a.init_logits_per_row ? b * K * L : 0);
    std::copy(init, init + K * L, logits);
    for (int it = 0; it < a.iterations; ++it) {
      // w[:, i] = softmax over the interests of logits[:, i].
      for (int64_t i = 0; i < L; ++i) {
        if (i >= len) {
          for (int64_t j = 0; j < K; ++j) w[j * L + i] = T(0);
          continue;
        }
        T mx = logits[i];
        for (int64_t j = 1; j < K; ++j) mx = std::max(mx, logits[j * L + i]);
        T sum = 0;
        for (int64_t j = 0; j < K; ++j) sum += (w[j * L + i] = std::exp(logits[j * L + i] - mx));
        for (int64_t j = 0; j < K; ++j) w[j * L + i] /= sum;
      }
      for (int64_t j = 0; j < K; ++j) {
        T* zj = z + j * D2;
        std::fill(zj, zj + D2, T(0));
        for (int64_t i = 0; i < len; ++i) {
          const T wji = w[j * L + i];
          const T* e = ehat + i * D2;
          for (int64_t k = 0; k < D2; ++k) zj[k] += wji * e[k];
        }
        SquashRow(zj, u + j * D2, D2);
      }
      if (it + 1 == a.iterations) break;
      for (int64_t j = 0; j < K; ++j) {
        const T* uj = u + j * D2;
        for (int64_t i = 0; i < len; ++i) {
          const T* e = ehat + i * D2;
          T dot = 0;
          for (int64_t k = 0; k < D2; ++k) dot += uj[k] * e[k];
          logits[j * L + i] += dot;
        }
      }
    }
  }
}

// dehat[b, i] = sum_j w[b, j, i] * squash'(z[b, j])^T dout[b, j] (0 at padded i).
template <typename T>
void RoutingBackwardLoopCpu(const MindRoutingArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t K = a.num_interests, L = a.max_len, D2 = a.out_dim;
  std::vector<T> dz(static_cast<size_t>(K * D2));
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t len = RowLength(a, b);
    const T* w = a.weights + b * K * L;
    T* dehat = a.workspace + b * L * D2;
    for (int64_t j = 0; j < K; ++j)
      SquashBackwardRow(a.z + (b * K + j) * D2, a.dout + (b * K + j) * D2, dz.data() + j * D2, D2);
    std::fill(dehat, dehat + L * D2, T(0));
    for (int64_t i = 0; i < len; ++i) {
      T* d = dehat + i * D2;
      for (int64_t j = 0; j < K; ++j) {
        const T wji = w[j * L + i];
        const T* g = dz.data() + j * D2;
        for (int64_t k = 0; k < D2; ++k) d[k] += wji * g[k];
      }
    }
  }
}

}  // namespace

template <typename T>
Status MindRoutingForward(const Context& ctx, const MindRoutingArgs<T>& a) {
  constexpr const char* kOp = "MindRoutingForward";
  IPS_RETURN_IF_ERROR(CheckRouting(kOp, a, true));
  if (a.batch == 0) return Status::Ok();
  // ehat = E S: [B*T x D] x [D x D2].
  IPS_RETURN_IF_ERROR(
      Gemm(ctx, MakeGemmArgs<T>(false, false, a.batch * a.max_len, a.out_dim, a.in_dim, a.e,
                                a.in_dim, a.s, a.out_dim, a.ehat, a.out_dim)));
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.batch, 1, [&](int64_t b0, int64_t b1) { RoutingLoopCpu(a, b0, b1); });
    return Status::Ok();
  }
  IPS_DENSE_CUDA_DISPATCH(T, MindRoutingLoopCuda(ctx, a));
  return NoCuda(kOp, std::is_same_v<T, float>);
}

template <typename T>
Status MindRoutingBackward(const Context& ctx, const MindRoutingArgs<T>& a) {
  constexpr const char* kOp = "MindRoutingBackward";
  IPS_RETURN_IF_ERROR(CheckRouting(kOp, a, false));
  if (a.batch == 0) {
    // No rows: dS is an empty sum.
    if (a.ds != nullptr) {
      // A k = 0 GEMM writes zeros on either device.
      const int64_t in1 = std::max<int64_t>(1, a.in_dim), out1 = std::max<int64_t>(1, a.out_dim);
      return Gemm(ctx, MakeGemmArgs<T>(true, false, a.in_dim, a.out_dim, 0, a.e, in1, a.workspace,
                                       out1, a.ds, out1));
    }
    return Status::Ok();
  }
  if (ctx.device == Device::kCpu) {
    ParallelRows(ctx, a.batch, 1,
                 [&](int64_t b0, int64_t b1) { RoutingBackwardLoopCpu(a, b0, b1); });
  } else {
    Status st = NoCuda(kOp, std::is_same_v<T, float>);
    if constexpr (std::is_same_v<T, float>) {
#ifdef IPS_WITH_CUDA
      st = MindRoutingBackwardLoopCuda(ctx, a);
#endif
    }
    IPS_RETURN_IF_ERROR(st);
  }
  const int64_t rows = a.batch * a.max_len;
  // dS = E^T dEhat: [D x B*T] x [B*T x D2].
  IPS_RETURN_IF_ERROR(
      Gemm(ctx, MakeGemmArgs<T>(true, false, a.in_dim, a.out_dim, rows, a.e, a.in_dim, a.workspace,
                                a.out_dim, a.ds, a.out_dim)));
  if (a.de != nullptr) {
    // dE = dEhat S^T: [B*T x D2] x [D2 x D].
    IPS_RETURN_IF_ERROR(
        Gemm(ctx, MakeGemmArgs<T>(false, true, rows, a.in_dim, a.out_dim, a.workspace, a.out_dim,
                                  a.s, a.out_dim, a.de, a.in_dim)));
  }
  return Status::Ok();
}

template <typename T>
void MindRoutingInitLogits(uint64_t seed, int64_t num_interests, int64_t max_len, double stddev,
                           T* logits) {
  Rng rng(seed);
  for (int64_t i = 0; i < num_interests * max_len; ++i)
    logits[i] = static_cast<T>(stddev * rng.Normal());
}

#define IPS_INSTANTIATE(T)                                                           \
  template Status SquashForward<T>(const Context&, const SquashArgs<T>&);            \
  template Status SquashBackward<T>(const Context&, const SquashArgs<T>&);           \
  template Status MindRoutingForward<T>(const Context&, const MindRoutingArgs<T>&);  \
  template Status MindRoutingBackward<T>(const Context&, const MindRoutingArgs<T>&); \
  template void MindRoutingInitLogits<T>(uint64_t, int64_t, int64_t, double, T*);
IPS_INSTANTIATE(float)
IPS_INSTANTIATE(double)
#undef IPS_INSTANTIATE

}  // namespace ips::kernels
