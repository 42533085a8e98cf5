// PooledModel: the pooled-history baseline ("YouTube DNN"-style) that DIN is compared against,
// as an explicit forward and backward pass over kernels/.
//
//   behaviour/target e = [item_emb, cat_emb]                               (E = 2 * dim)
//   pooled = sum_t mask_bt e_bt          (kSum), or that sum / len_b       (kMean; 0 if len 0)
//   logit  = MLP([pooled, target] (2E) -> 200 -> 80 -> 1), PReLU or Dice
//   loss   = mean BCE-with-logits(logit, label)
//
// The pooled history is the same vector whatever the target is, so the model cannot express
// target-dependent interest (DIN's activation unit); the gap between the two on the same data is
// what the comparison measures. The MLP still sees the target, so it can learn a
// user-vs-item interaction of the pooled vector, just not one that re-weights the history.
//
// Ownership, inputs and outputs exactly as models/din.h: dense weights only (DenseParams), pulled
// row tables in, one gradient row per pulled row out. Every buffer is allocated at Create() for
// options.max_batch rows; Forward/Backward allocate nothing. Templated on T (float for training,
// double for gradient checks). Runs on CUDA (options.device, float) exactly as DIN does: buffers
// and a weight copy on the GPU, a host interface (models/device_staging.h CtrDeviceIo).
//
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_POOLED_H_
#define IPS_MODELS_POOLED_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/device_staging.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

enum class HistoryPooling {
  kSum,   // sum over the valid steps
  kMean,  // sum / number of valid steps (a row with no history pools to zero)
};
const char* HistoryPoolingName(HistoryPooling p);

struct PooledOptions {
  int64_t embedding_dim = 18;  // width of each table; a behaviour is 2 * embedding_dim wide
  int64_t max_len = 50;        // history length T (histories are left-padded to it)
  int64_t max_batch = 512;     // buffers are sized for this many rows
  HistoryPooling pooling = HistoryPooling::kSum;
  std::vector<int64_t> mlp_hidden = {200, 80};
  MlpActivation activation = MlpActivation::kPrelu;
  uint64_t seed = 0;  // dense initialisation (Rng); embedding rows are initialised by the store
  // Where the passes run, and the CPU test switch of the CUDA path's copies: as DinOptions.
  kernels::Device device = kernels::Device::kCpu;
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("PooledOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidatePooledOptions(const PooledOptions& o,
                             const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class PooledModel final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises the MLP from
  // Rng(seed) with torch's nn.Linear defaults (PReLU alphas 0.25, Dice alphas 0). The dense
  // tensors are named "top.<layer>..." like Din's top MLP. INVALID_ARGUMENT for bad options.
  static StatusOr<std::unique_ptr<PooledModel>> Create(const PooledOptions& options);
  PooledModel(const PooledModel&) = delete;
  PooledModel& operator=(const PooledModel&) = delete;

  // As CtrModel::Forward. Errors: INVALID_ARGUMENT for a batch outside [1, max_batch], null
  // pointers, indices out of range or lengths outside [0, max_len] (naming the position), Dice in
  // training with a batch of 1; otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                 T* loss) override;
  // As CtrModel::Backward. FAILED_PRECONDITION without a Forward(training = true) with labels on
  // a batch of the same size; INVALID_ARGUMENT for null outputs.
  Status Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                  T* d_cat_rows) override;

  const PooledOptions& options() const { return o_; }
  int64_t behaviour_dim() const { return 2 * o_.embedding_dim; }
  const char* name() const override { return "pooled"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  std::vector<StateTensor<T>> state() override { return mlp_->state(); }
  // Outputs of the last Forward (valid until the next one): logits [B] (host memory), pooled
  // history [B x E] (the model's device memory).
  const T* logits() const override { return io_.HostOutput(logits_.data()); }
  const T* pooled() const { return pooled_.data(); }

 private:
  explicit PooledModel(const PooledOptions& o);
  Status CheckInputs(const CtrInputs<T>& in) const;

  PooledOptions o_;
  DenseParams<T> params_;
  std::unique_ptr<Mlp<T>> mlp_;

  // Forward state, sized for max_batch, on the model's device.
  kernels::Buffer<T> pooled_;        // [B x E]
  kernels::Buffer<T> mlp_in_;        // [B x 2E] = [pooled, target]
  kernels::Buffer<T> logits_;        // [B]
  kernels::Buffer<T> loss_scratch_;  // [1]
  // Backward scratch.
  kernels::Buffer<T> d_logits_;  // [B]
  kernels::Buffer<T> d_mlp_in_;  // [B x 2E]
  kernels::Buffer<T> g_item_;    // [(B*T + B) x dim] per-position item-row gradients
  kernels::Buffer<T> g_cat_;     // [(B*T + B) x dim]
  CtrDeviceIo<T> io_;            // the copies in and out on CUDA (or with stage_on_cpu)
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_POOLED_H_
