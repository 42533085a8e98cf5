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
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_DIN_H_
#define IPS_MODELS_DIN_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
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
};

// INVALID_ARGUMENT naming the first bad field.
Status ValidateDinOptions(const DinOptions& o);

// One batch as the model sees it: models/model.h CtrInputs ([B x T] history, then B targets).
template <typename T>
using DinInputs = CtrInputs<T>;

template <typename T>
class Din final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises the dense weights
  // from Rng(seed) in the peer's module order (activation unit, then top MLP) with torch's
  // nn.Linear defaults. INVALID_ARGUMENT for bad options.
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
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  std::vector<StateTensor<T>> state() override { return mlp_->state(); }
  // Outputs of the last Forward (valid until the next one): logits [B], attention weights
  // [B x T] (0 at padded steps), pooled interest [B x E].
  const T* logits() const override { return logits_.data(); }
  const T* attention_weights() const { return weights_.data(); }
  const T* pooled() const { return pooled_.data(); }

 private:
  explicit Din(const DinOptions& o);
  Status CheckInputs(const DinInputs<T>& in) const;

  DinOptions o_;
  DenseParams<T> params_;
  // Activation unit tensors (offsets into params_), torch layouts: w1 [H1 x 4E], w3 [H2].
  int64_t w1_ = 0, b1_ = 0, w2_ = 0, b2_ = 0, w3_ = 0, b3_ = 0;
  std::unique_ptr<Mlp<T>> mlp_;

  // Forward state, sized for max_batch.
  std::vector<T> hist_;     // [B x T x E] gathered behaviours (0 at padding)
  std::vector<T> target_;   // [B x E]
  std::vector<T> weights_;  // [B x T]
  std::vector<T> pooled_;   // [B x E]
  std::vector<T> mlp_in_;   // [B x 3E] = [pooled, target, summed]
  std::vector<T> logits_;   // [B]
  std::vector<T> attn_saved_;
  T loss_scratch_[1] = {T(0)};
  // Backward scratch.
  std::vector<T> attn_workspace_;
  std::vector<T> d_logits_;  // [B]
  std::vector<T> d_mlp_in_;  // [B x 3E]
  std::vector<T> d_pooled_;  // [B x E]
  std::vector<T> d_query_;   // [B x E]
  std::vector<T> d_keys_;    // [B x T x E]
  std::vector<T> g_item_;    // [(B*T + B) x dim] per-position item-row gradients
  std::vector<T> g_cat_;     // [(B*T + B) x dim]
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_DIN_H_
