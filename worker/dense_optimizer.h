// DenseOptimizer: the optimizer of a model's dense (replicated) weights, with its state. One
// object per trainer; every trainer (CTR, sequence) and the checkpoint code use it, so the dense
// update is one piece of code.
//
// Adam follows torch.optim.Adam (the peer's optimizer for dense weights): the kernel implements
// SparseAdam's update, p -= lr sqrt(bc2)/bc1 * m / (sqrt(v) + eps), and torch's dense Adam
// divides by sqrt(v)/sqrt(bc2) + eps instead; scaling eps by sqrt(bc2) turns the first into the
// second exactly.
#ifndef IPS_WORKER_DENSE_OPTIMIZER_H_
#define IPS_WORKER_DENSE_OPTIMIZER_H_

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/optimizer.h"

namespace ips {

class DenseOptimizer {
 public:
  DenseOptimizer(const kernels::OptimizerHyper& hyper, int64_t size);

  // Applies update number `step` (1-based: the bias corrections use it) to values[size] with
  // grads[size]. Errors: the kernel's.
  Status Apply(const kernels::Context& ctx, int64_t step, float* values, const float* grads);

  const kernels::OptimizerHyper& hyper() const { return hyper_; }
  int64_t size() const { return size_; }
  // Optimizer state (Adam m and v; Adagrad/FTRL accumulators), `size` floats each, for
  // checkpoints. Unused states are zero.
  std::vector<float>& state0() { return state0_; }
  std::vector<float>& state1() { return state1_; }

 private:
  kernels::OptimizerHyper hyper_;
  int64_t size_;
  std::vector<float> state0_, state1_;
};

}  // namespace ips

#endif  // IPS_WORKER_DENSE_OPTIMIZER_H_
