// Din: the Deep Interest Network exactly as the peer defines it (../shared/peers/README.md,
// "DIN"; torch_models.DIN), as an explicit forward and backward pass over kernels/.
//
//   behaviour/target e = [item_emb, cat_emb]                               (E = 2 * dim)
//   w_bt   = ActivationUnit(target_b, e_bt) masked (raw scores) or masked softmax
//   pooled = sum_t w_bt e_bt,  summed = sum_t mask_bt e_bt
//   logit  = MLP([pooled, target, summed] (3E) -> 200 -> 80 -> 1), PReLU or Dice
//   loss   = mean BCE-with-logits(logit, label)
//
// The model owns its dense weights (DenseParams: activation unit, top MLP, activation alphas)
// and nothing sparse: the caller pulls the embedding rows of the batch's unique keys into two
// small tables (item rows, category rows) and passes, for every position, the row index into
// them (kernels/embedding.h DedupKeys' `inverse`). Backward returns one gradient row per pulled
// row (the scatter-add of kernels/embedding.h), ready for the store's Push. The model never talks
// to a store or the network.
//
// Every buffer is allocated at Create() for options.max_batch rows: Forward/Backward allocate
// nothing. Templated on T (float for training, double for gradient checks).
//
// Devices: options.device = kCuda (float only) keeps every buffer and a copy of the dense
// weights on the GPU and runs the same passes through the kernels' CUDA twins; the interface
// stays host memory (inputs are staged to the device by models/device_staging.h, the row
// gradients, the loss, the logits and the dense gradients in params() come back to the host),
// so a trainer drives both devices the same way. Forward/Backward then need a Context whose
// device is the model's.
//
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_DIN_H_
#define IPS_MODELS_DIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/device_staging.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

struct DinOptions {
  int64_t embedding_dim = 18;  // width of each table; a behaviour is 2 * embedding_dim wide
  int64_t max_len = 50;        // history length T (histories are left-padded to it)
  int64_t max_batch = 512;     // buffers are sized for this many rows
  int64_t attention_hidden1 = 80;
  int64_t attention_hidden2 = 40;
  std::vector<int64_t> mlp_hidden = {200, 80};
  MlpActivation activation = MlpActivation::kPrelu;
  bool attention_softmax = false;  // false: the DIN paper's raw masked scores
  // Ablation/debug switch: skip the activation unit, so the attention weights and `pooled` are
  // identically zero and its weights get zero gradients. Tests use it to show that attention
  // carries signal (the model must do worse without it).
  bool attention_disabled = false;
  uint64_t seed = 0;  // dense initialisation (Rng); embedding rows are initialised by the store
  // Where the passes run (see the header comment). The initial weights do not depend on it.
  kernels::Device device = kernels::Device::kCpu;
  // Test switch for device = kCpu: take the CUDA path's copies (inputs staged into the model's
  // own buffers, weights, gradients, Dice statistics, loss and logits through separate copies)
  // with the CPU kernels, so that CPU tests cover that logic; results are bitwise the plain
  // CPU path's.
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("DinOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateDinOptions(const DinOptions& o,
                          const std::function<std::string(const std::string&)>& names = {});

// One batch as the model sees it: models/model.h CtrInputs ([B x T] history, then B targets).
template <typename T>
using DinInputs = CtrInputs<T>;

template <typename T>
class Din final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises the dense weights
  // from Rng(seed) in the peer's module order (activation unit, then top MLP) with torch's
  // nn.Linear defaults. INVALID_ARGUMENT for bad options; for kCuda, UNIMPLEMENTED with
  // T = double or without CUDA in the build, INTERNAL when device memory cannot be had.
  static StatusOr<std::unique_ptr<Din>> Create(const DinOptions& options);
  Din(const Din&) = delete;
  Din& operator=(const Din&) = delete;

  // Runs the forward pass. training: Dice uses batch statistics (and updates its running ones);
  // the state for Backward is kept. With in.labels, writes the mean BCE loss to *loss (may be
  // nullptr otherwise). Errors: INVALID_ARGUMENT for a batch outside [1, max_batch], null
  // pointers, indices out of range or lengths outside [0, max_len] (naming the position);
  // otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, const DinInputs<T>& in, bool training,
                 T* loss) override;

  // After Forward(training = true) with labels and the same inputs: writes the dense gradients
  // of the mean loss into params().grads() (overwritten) and the gradient of every pulled row to
  // d_item_rows [num_item_rows x dim] and d_cat_rows [num_cat_rows x dim] (overwritten; rows no
  // position uses come out zero). Errors: FAILED_PRECONDITION without a training forward with
  // labels; otherwise as Forward.
  Status Backward(const kernels::Context& ctx, const DinInputs<T>& in, T* d_item_rows,
                  T* d_cat_rows) override;

  const DinOptions& options() const { return o_; }
  int64_t behaviour_dim() const { return 2 * o_.embedding_dim; }
  const char* name() const override { return "din"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  std::vector<StateTensor<T>> state() override { return mlp_->state(); }
  // Outputs of the last Forward (valid until the next one): logits [B] (host memory), and, in
  // the model's device memory, attention weights [B x T] (0 at padded steps) and pooled
  // interest [B x E].
  const T* logits() const override { return io_.HostOutput(logits_.data()); }
  const T* attention_weights() const { return weights_.data(); }
  const T* pooled() const { return pooled_.data(); }

 private:
  explicit Din(const DinOptions& o);
  Status CheckInputs(const DinInputs<T>& in) const;
  // The activation unit's arguments for a batch of `batch` rows (weights on the model's device).
  kernels::DinAttentionArgs<T> AttentionArgs(int64_t batch, const int32_t* lengths);

  DinOptions o_;
  DenseParams<T> params_;
  ActivationUnitWeights<T> attn_;  // in params_, torch layouts: w1 [H1 x 4E], w3 [H2]
  std::unique_ptr<Mlp<T>> mlp_;

  // Forward state, sized for max_batch, on the model's device.
  kernels::Buffer<T> hist_;     // [B x T x E] gathered behaviours (0 at padding)
  kernels::Buffer<T> target_;   // [B x E]
  kernels::Buffer<T> weights_;  // [B x T]
  kernels::Buffer<T> pooled_;   // [B x E]
  kernels::Buffer<T> mlp_in_;   // [B x 3E] = [pooled, target, summed]
  kernels::Buffer<T> logits_;   // [B]
  kernels::Buffer<T> attn_saved_;
  kernels::Buffer<T> loss_scratch_;  // [1]
  // Backward scratch.
  kernels::Buffer<T> attn_workspace_;
  kernels::Buffer<T> d_logits_;  // [B]
  kernels::Buffer<T> d_mlp_in_;  // [B x 3E]
  kernels::Buffer<T> d_pooled_;  // [B x E]
  kernels::Buffer<T> d_query_;   // [B x E]
  kernels::Buffer<T> d_keys_;    // [B x T x E]
  kernels::Buffer<T> g_item_;    // [(B*T + B) x dim] per-position item-row gradients
  kernels::Buffer<T> g_cat_;     // [(B*T + B) x dim]
  // The copies in and out on CUDA (or with stage_on_cpu).
  CtrDeviceIo<T> io_;
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_DIN_H_
