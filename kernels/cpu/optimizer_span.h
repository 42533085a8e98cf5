// The element-wise optimizer step on one span of parameters (a row of an embedding table or a
// chunk of a dense tensor), header-only so that callers outside kernels/ can inline it into their
// own row loops: kernels::SparseUpdate/DenseUpdate (kernels/cpu/optimizer.cc) run it per row or
// chunk, and the parameter server's TableShard::Push (ps/internal/table_shard.cc) runs it on
// rows it updates in place. One copy of the arithmetic is what keeps the two bitwise equal.
// The kind is a template parameter so that each loop is branch-free and vectorisable.
// Scalars come from MakeOptimizerScalars (kernels/optimizer.h). p, s0, s1, g: n elements each
// (s0/s1 unused, may be null, for kinds with fewer states). CPU only; never allocates.
#ifndef IPS_KERNELS_CPU_OPTIMIZER_SPAN_H_
#define IPS_KERNELS_CPU_OPTIMIZER_SPAN_H_

#include <cmath>
#include <cstdint>

#include "kernels/optimizer.h"

namespace ips::kernels::cpu {

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

}  // namespace ips::kernels::cpu

#endif  // IPS_KERNELS_CPU_OPTIMIZER_SPAN_H_
