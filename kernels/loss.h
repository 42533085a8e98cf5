// Losses over logits: binary cross-entropy with logits (CTR models, DIEN's auxiliary loss,
// SASRec's positive/negative loss) and the sampled softmax loss (MIND: the positive item against
// K sampled negatives, with optional log-Q correction). Forward writes the scalar loss; backward
// writes dlogits. CPU (float, double) and CUDA (float). Conventions: kernels/activation.h; on CUDA
// `loss` is a device pointer to one element, `dloss` is a host value.
#ifndef IPS_KERNELS_LOSS_H_
#define IPS_KERNELS_LOSS_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

enum class Reduction {
  kSum,
  kMean,        // divides by n
  kMaskedMean,  // sum(w * l) / max(sum(w), 1): the peers' masked mean (weights required)
};

// l_i = w_i * (max(x, 0) - x * y + log1p(exp(-|x|))), which never overflows, reduced to `loss`.
// Labels may be soft (any value in [0, 1]). weights: nullptr = 1 (kMaskedMean needs them).
// Backward: dx_i = dloss * scale * w_i * (sigmoid(x_i) - y_i), scale from the reduction.
template <typename T>
struct BceWithLogitsArgs {
  int64_t n = 0;
  Reduction reduction = Reduction::kMean;
  const T* logits = nullptr;
  const T* labels = nullptr;
  const T* weights = nullptr;
  T* loss = nullptr;  // forward: [1]
  T dloss = T(1);     // backward: dL/dloss
  T* dlogits = nullptr;
};
template <typename T>
Status BceWithLogitsForward(const Context& ctx, const BceWithLogitsArgs<T>& args);
template <typename T>
Status BceWithLogitsBackward(const Context& ctx, const BceWithLogitsArgs<T>& args);

// Sampled softmax: logits [rows x classes], column 0 the positive and columns 1..classes-1 the
// sampled negatives of that row. With log_q (same shape, log of each column's sampling
// probability) the corrected logit is logit - log_q (Jean et al. / Yi et al. log-Q correction);
// then l_r = -log softmax(corrected_r)[0], reduced by kSum or kMean over rows.
// Backward: dlogits = dloss * scale * (softmax(corrected) - onehot(0)).
template <typename T>
struct SampledSoftmaxArgs {
  int64_t rows = 0, classes = 0;  // classes = 1 + K
  Reduction reduction = Reduction::kMean;
  const T* logits = nullptr;
  const T* log_q = nullptr;  // nullptr = no correction
  T* loss = nullptr;         // forward: [1]
  T dloss = T(1);
  T* dlogits = nullptr;
};
template <typename T>
Status SampledSoftmaxForward(const Context& ctx, const SampledSoftmaxArgs<T>& args);
template <typename T>
Status SampledSoftmaxBackward(const Context& ctx, const SampledSoftmaxArgs<T>& args);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_LOSS_H_
