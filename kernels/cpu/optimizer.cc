// CPU implementation of kernels/optimizer.h, plus the dispatch to the CUDA twin. Every kind
// shares one element-wise loop over a span (a row or a chunk of a dense tensor); the kind is
// a template parameter so each loop body is branch-free and vectorisable.
#include "kernels/optimizer.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"

#ifdef IPS_WITH_CUDA
#include "kernels/cuda/optimizer_cuda.h"
#endif

namespace ips::kernels {

const char* OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdagrad:
      return "adagrad";
    case OptimizerKind::kAdam:
      return "adam";
    case OptimizerKind::kFtrl:
      return "ftrl";
  }
  return "unknown";
}

int OptimizerStateCount(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return 0;
    case OptimizerKind::kAdagrad:
      return 1;
    case OptimizerKind::kAdam:
    case OptimizerKind::kFtrl:
      return 2;
  }
  return 0;
}

OptimizerHyper OptimizerHyper::Sgd(double lr) {
  OptimizerHyper h;
  h.kind = OptimizerKind::kSgd;
  h.lr = lr;
  return h;
}
OptimizerHyper OptimizerHyper::Adagrad(double lr, double eps) {
  OptimizerHyper h;
  h.kind = OptimizerKind::kAdagrad;
  h.lr = lr;
  h.adagrad_eps = eps;
  return h;
}
OptimizerHyper OptimizerHyper::Adam(double lr, double beta1, double beta2, double eps) {
  OptimizerHyper h;
  h.kind = OptimizerKind::kAdam;
  h.lr = lr;
  h.beta1 = beta1;
  h.beta2 = beta2;
  h.adam_eps = eps;
  return h;
}
OptimizerHyper OptimizerHyper::Ftrl(double alpha, double beta, double l1, double l2) {
  OptimizerHyper h;
  h.kind = OptimizerKind::kFtrl;
  h.ftrl_alpha = alpha;
  h.ftrl_beta = beta;
  h.ftrl_l1 = l1;
  h.ftrl_l2 = l2;
  return h;
}

OptimizerScalars MakeOptimizerScalars(const OptimizerHyper& h, int64_t step) {
  OptimizerScalars s{};
  s.kind = h.kind;
  s.lr = h.lr;
  s.eps = h.kind == OptimizerKind::kAdam ? h.adam_eps : h.adagrad_eps;
  s.beta1 = h.beta1;
  s.beta2 = h.beta2;
  if (h.kind == OptimizerKind::kAdam && step >= 1) {
    const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
    s.adam_step_size = h.lr * std::sqrt(bc2) / bc1;
  }
  s.ftrl_alpha = h.ftrl_alpha;
  s.ftrl_beta = h.ftrl_beta;
  s.ftrl_l1 = h.ftrl_l1;
  s.ftrl_l2 = h.ftrl_l2;
  return s;
}

namespace {

template <OptimizerKind K, typename T>
void UpdateSpan(const OptimizerScalars& s, int64_t n, T* __restrict p, T* __restrict s0,
                T* __restrict s1, const T* __restrict g) {
  if constexpr (K == OptimizerKind::kSgd) {
    const T lr = static_cast<T>(s.lr);
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
  } else if constexpr (K == OptimizerKind::kAdagrad) {
    const T lr = static_cast<T>(s.lr), eps = static_cast<T>(s.eps);
    for (int64_t i = 0; i < n; ++i) {
      s0[i] += g[i] * g[i];
      p[i] -= lr * g[i] / (std::sqrt(s0[i]) + eps);
    }
  } else if constexpr (K == OptimizerKind::kAdam) {
    const T one_b1 = static_cast<T>(1.0 - s.beta1), one_b2 = static_cast<T>(1.0 - s.beta2);
    const T step_size = static_cast<T>(s.adam_step_size), eps = static_cast<T>(s.eps);
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      s0[i] += one_b1 * (gi - s0[i]);
      s1[i] += one_b2 * (gi * gi - s1[i]);
      p[i] -= step_size * s0[i] / (std::sqrt(s1[i]) + eps);
    }
  } else {
    const T inv_alpha = static_cast<T>(1.0 / s.ftrl_alpha), beta = static_cast<T>(s.ftrl_beta);
    const T l1 = static_cast<T>(s.ftrl_l1), l2 = static_cast<T>(s.ftrl_l2);
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T n_new = s1[i] + gi * gi;
      const T sqrt_new = std::sqrt(n_new);
      const T sigma = (sqrt_new - std::sqrt(s1[i])) * inv_alpha;
      const T z = s0[i] + gi - sigma * p[i];
      s0[i] = z;
      s1[i] = n_new;
      const T az = std::fabs(z);
      // Branch-free form of the proximal step: zero inside the l1 ball.
      const T shrunk = az > l1 ? (az - l1) : T(0);
      p[i] = -std::copysign(shrunk, z) / ((beta + sqrt_new) * inv_alpha + l2);
    }
  }
}

template <typename T>
using SpanFn = void (*)(const OptimizerScalars&, int64_t, T*, T*, T*, const T*);

template <typename T>
SpanFn<T> SpanFor(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return &UpdateSpan<OptimizerKind::kSgd, T>;
    case OptimizerKind::kAdagrad:
      return &UpdateSpan<OptimizerKind::kAdagrad, T>;
    case OptimizerKind::kAdam:
      return &UpdateSpan<OptimizerKind::kAdam, T>;
    case OptimizerKind::kFtrl:
      return &UpdateSpan<OptimizerKind::kFtrl, T>;
  }
  return nullptr;
}

Status CheckHyper(const char* op, const OptimizerHyper& h, int64_t step, const void* state0,
                  const void* state1, bool need_states) {
  const int states = OptimizerStateCount(h.kind);
  if (need_states && states >= 1 && state0 == nullptr)
    return InvalidArgumentError(std::string(op) + ": " + OptimizerKindName(h.kind) +
                                " needs state0");
  if (need_states && states >= 2 && state1 == nullptr)
    return InvalidArgumentError(std::string(op) + ": " + OptimizerKindName(h.kind) +
                                " needs state1");
  if (h.kind == OptimizerKind::kAdam && step < 1)
    return InvalidArgumentError(std::string(op) + ": adam step = " + std::to_string(step) +
                                " must be >= 1 (1-based count of this update)");
  if (h.kind == OptimizerKind::kFtrl && !(h.ftrl_alpha > 0))
    return InvalidArgumentError(std::string(op) + ": ftrl alpha must be > 0");
  return Status::Ok();
}

template <typename T>
constexpr bool kIsFloat = std::is_same_v<T, float>;

}  // namespace

template <typename T>
Status SparseUpdate(const Context& ctx, const SparseUpdateArgs<T>& a) {
  const char* op = "SparseUpdate";
  if (a.table_rows < 0 || a.dim < 0 || a.num_rows < 0)
    return InvalidArgumentError(std::string(op) + ": negative table_rows, dim or num_rows");
  if (a.num_rows == 0 || a.dim == 0) return Status::Ok();
  if (a.param == nullptr || a.grad == nullptr || a.row_indices == nullptr)
    return InvalidArgumentError(std::string(op) + ": param, grad or row_indices is null");
  IPS_RETURN_IF_ERROR(CheckHyper(op, a.hyper, a.step, a.state0, a.state1, true));
  const OptimizerScalars s = MakeOptimizerScalars(a.hyper, a.step);
  if (ctx.device == Device::kCpu) {
    for (int64_t i = 0; i < a.num_rows; ++i) {
      if (static_cast<uint64_t>(a.row_indices[i]) >= static_cast<uint64_t>(a.table_rows))
        return InvalidArgumentError(std::string(op) + ": row_indices[" + std::to_string(i) +
                                    "] = " + std::to_string(a.row_indices[i]) + " is outside [0, " +
                                    std::to_string(a.table_rows) + ")");
    }
    const SpanFn<T> fn = SpanFor<T>(a.hyper.kind);
    const int states = OptimizerStateCount(a.hyper.kind);
    ParallelFor(ctx.pool, a.num_rows, 64, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t off = a.row_indices[i] * a.dim;
        fn(s, a.dim, a.param + off, states >= 1 ? a.state0 + off : nullptr,
           states >= 2 ? a.state1 + off : nullptr, a.grad + i * a.dim);
      }
    });
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (kIsFloat<T>) {
    return SparseUpdateCuda(ctx, a, s);
  } else {
    return UnimplementedError(std::string(op) + ": double is CPU-only");
  }
#else
  return UnimplementedError(std::string(op) +
                            ": this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

template <typename T>
Status DenseUpdate(const Context& ctx, const DenseUpdateArgs<T>& a) {
  const char* op = "DenseUpdate";
  if (a.size < 0) return InvalidArgumentError(std::string(op) + ": negative size");
  if (a.size == 0) return Status::Ok();
  if (a.param == nullptr || a.grad == nullptr)
    return InvalidArgumentError(std::string(op) + ": param or grad is null");
  IPS_RETURN_IF_ERROR(CheckHyper(op, a.hyper, a.step, a.state0, a.state1, true));
  const OptimizerScalars s = MakeOptimizerScalars(a.hyper, a.step);
  if (ctx.device == Device::kCpu) {
    const SpanFn<T> fn = SpanFor<T>(a.hyper.kind);
    const int states = OptimizerStateCount(a.hyper.kind);
    ParallelFor(ctx.pool, a.size, 4096, [&](int64_t i0, int64_t i1) {
      fn(s, i1 - i0, a.param + i0, states >= 1 ? a.state0 + i0 : nullptr,
         states >= 2 ? a.state1 + i0 : nullptr, a.grad + i0);
    });
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (kIsFloat<T>) {
    return DenseUpdateCuda(ctx, a, s);
  } else {
    return UnimplementedError(std::string(op) + ": double is CPU-only");
  }
#else
  return UnimplementedError(std::string(op) +
                            ": this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

template Status SparseUpdate<float>(const Context&, const SparseUpdateArgs<float>&);
template Status SparseUpdate<double>(const Context&, const SparseUpdateArgs<double>&);
template Status DenseUpdate<float>(const Context&, const DenseUpdateArgs<float>&);
template Status DenseUpdate<double>(const Context&, const DenseUpdateArgs<double>&);

}  // namespace ips::kernels
