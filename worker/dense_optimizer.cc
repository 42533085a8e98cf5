#include "worker/dense_optimizer.h"

#include <cmath>

namespace ips {

DenseOptimizer::DenseOptimizer(const kernels::OptimizerHyper& hyper, int64_t size)
    : hyper_(hyper),
      size_(size),
      state0_(static_cast<size_t>(size), 0.f),
      state1_(static_cast<size_t>(size), 0.f) {}

Status DenseOptimizer::Apply(const kernels::Context& ctx, int64_t step, float* values,
                             const float* grads) {
  kernels::DenseUpdateArgs<float> u;
  u.hyper = hyper_;
  u.step = step;
  if (u.hyper.kind == kernels::OptimizerKind::kAdam) {
    const double bc2 = 1.0 - std::pow(u.hyper.beta2, static_cast<double>(step));
    u.hyper.adam_eps = hyper_.adam_eps * std::sqrt(bc2);
  }
  u.size = size_;
  u.param = values;
  u.grad = grads;
  const int states = kernels::OptimizerStateCount(hyper_.kind);
  u.state0 = states >= 1 ? state0_.data() : nullptr;
  u.state1 = states >= 2 ? state1_.data() : nullptr;
  return kernels::DenseUpdate(ctx, u);
}

}  // namespace ips
