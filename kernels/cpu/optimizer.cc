// CPU implementation of kernels/optimizer.h, plus the dispatch to the CUDA twin. Every kind
// shares one element-wise loop over a span (a row or a chunk of a dense tensor); the kind is
// a template parameter so each loop body is branch-free and vectorisable.
#include "kernels/optimizer.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "common/thread_pool.h"
#include "kernels/cpu/optimizer_span.h"

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

template <typename T>
using SpanFn = void (*)(const OptimizerScalars&, int64_t, T*, T*, T*, const T*);

template <typename T>
SpanFn<T> SpanFor(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return &cpu::UpdateSpan<OptimizerKind::kSgd, T>;
    case OptimizerKind::kAdagrad:
      return &cpu::UpdateSpan<OptimizerKind::kAdagrad, T>;
    case OptimizerKind::kAdam:
      return &cpu::UpdateSpan<OptimizerKind::kAdam, T>;
    case OptimizerKind::kFtrl:
      return &cpu::UpdateSpan<OptimizerKind::kFtrl, T>;
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
