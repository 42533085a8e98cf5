// Optimizer update kernels: SGD, Adagrad, Adam (torch.optim.SparseAdam semantics) and
// FTRL-Proximal, applied either to selected rows of a [table_rows x dim] parameter table (the
// parameter servers' sparse rows) or to a contiguous dense tensor (the trainer's dense weights).
// The module owns the update arithmetic only: state tables are allocated and initialised by the
// caller, and the caller counts steps.
//
// Update rules (g = gradient, p = parameter; element-wise):
//   SGD      p -= lr * g
//   Adagrad  s += g^2;  p -= lr * g / (sqrt(s) + eps)          (torch.optim.Adagrad with
//            lr_decay = 0, weight_decay = 0; s starts at initial_accumulator_value, torch's 0)
//   Adam     exactly torch.optim.SparseAdam (torch/optim/_functional.py, sparse_adam), which
//            also is what torch.optim.Adam does densely:
//              m += (1 - beta1) * (g - m);   v += (1 - beta2) * (g^2 - v)
//              step_size = lr * sqrt(1 - beta2^step) / (1 - beta1^step)
//              p -= step_size * m / (sqrt(v) + eps)
//            `step` is ONE count per parameter tensor, incremented on every optimizer step
//            whichever rows it touches (torch keeps state['step'] per parameter, not per row),
//            and rows not in the update keep their m, v unchanged ("lazy" Adam). Pass the
//            1-based count of this update (1 on the first call). Note eps is added to sqrt(v)
//            before bias correction is folded into step_size, as torch does.
//   FTRL     FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1) with per-coordinate z, n:
//              sigma = (sqrt(n + g^2) - sqrt(n)) / alpha
//              z += g - sigma * p;   n += g^2
//              p = |z| <= l1 ? 0 : -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)
//            (the paper's lambda1 = l1, lambda2 = l2; the weight is recomputed from z and n
//            every step, so p's prior value only enters through sigma * p).
//
// State tables (same shape as the parameter, caller-initialised):
//   SGD: none.  Adagrad: state0 = accumulator s.  Adam: state0 = m, state1 = v (zeros).
//   FTRL: state0 = z, state1 = n (zeros).
//
// CPU: float and double, parallel over rows/elements on ctx.pool. CUDA: float, on ctx.stream,
// all pointers device memory; row indices are not read back, so an out-of-range row index on
// CUDA is skipped rather than reported. Row indices must be distinct within one call (the
// pushes are aggregated per key first); duplicates give unspecified results.
// Errors: INVALID_ARGUMENT for negative sizes, null pointers that are needed, missing state
// tables, non-positive step (Adam) and (CPU) row indices outside [0, table_rows), naming the
// position; UNIMPLEMENTED for CUDA without a CUDA build or double on CUDA.
#ifndef IPS_KERNELS_OPTIMIZER_H_
#define IPS_KERNELS_OPTIMIZER_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

enum class OptimizerKind { kSgd, kAdagrad, kAdam, kFtrl };

const char* OptimizerKindName(OptimizerKind kind);
// Number of state tables the kind uses (0, 1 or 2).
int OptimizerStateCount(OptimizerKind kind);

// Hyper-parameters; which fields matter depends on `kind` (see the rules above). Defaults are
// torch's (Adagrad eps 1e-10; Adam betas (0.9, 0.999), eps 1e-8) and the FTRL paper's beta = 1.
struct OptimizerHyper {
  OptimizerKind kind = OptimizerKind::kSgd;
  double lr = 0.01;  // SGD, Adagrad, Adam
  double adagrad_eps = 1e-10;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double ftrl_alpha = 0.05, ftrl_beta = 1.0, ftrl_l1 = 0.0, ftrl_l2 = 0.0;

  static OptimizerHyper Sgd(double lr);
  static OptimizerHyper Adagrad(double lr, double eps = 1e-10);
  static OptimizerHyper Adam(double lr, double beta1 = 0.9, double beta2 = 0.999,
                             double eps = 1e-8);
  static OptimizerHyper Ftrl(double alpha, double beta, double l1, double l2);
};

// Updates rows row_indices[0, num_rows) of param (and of the state tables) with the gradient
// rows grad[i, :] for param row row_indices[i].
template <typename T>
struct SparseUpdateArgs {
  OptimizerHyper hyper;
  int64_t step = 1;  // Adam: 1-based step count of this update
  int64_t table_rows = 0;
  int64_t dim = 0;
  T* param = nullptr;   // [table_rows x dim]
  T* state0 = nullptr;  // [table_rows x dim] or null when the kind has no state
  T* state1 = nullptr;  // [table_rows x dim] or null when the kind has < 2 states
  int64_t num_rows = 0;
  const int64_t* row_indices = nullptr;  // [num_rows], distinct
  const T* grad = nullptr;               // [num_rows x dim]
};

// Updates every element of a contiguous tensor of `size` elements.
template <typename T>
struct DenseUpdateArgs {
  OptimizerHyper hyper;
  int64_t step = 1;
  int64_t size = 0;
  T* param = nullptr;
  T* state0 = nullptr;
  T* state1 = nullptr;
  const T* grad = nullptr;
};

template <typename T>
Status SparseUpdate(const Context& ctx, const SparseUpdateArgs<T>& args);
template <typename T>
Status DenseUpdate(const Context& ctx, const DenseUpdateArgs<T>& args);

// The per-kind scalar constants both devices use, computed once per call in double.
struct OptimizerScalars {
  OptimizerKind kind;
  double lr;
  double eps;
  double beta1, beta2;
  double adam_step_size;  // lr * sqrt(1 - beta2^step) / (1 - beta1^step)
  double ftrl_alpha, ftrl_beta, ftrl_l1, ftrl_l2;
};
OptimizerScalars MakeOptimizerScalars(const OptimizerHyper& hyper, int64_t step);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_OPTIMIZER_H_
