// Bst: the Behavior Sequence Transformer (Chen et al. 2019, "Behavior Sequence Transformer for
// E-commerce Recommendation in Alibaba") as a CTR model, an explicit forward and backward pass
// over kernels/, models/transformer.h's block and models/layers.h's Mlp.
//
//   e_t    = [item_emb, cat_emb] of behaviour t, t < T, and e_T = the target's   (E = 2 * dim)
//   x_0    = (e_t + P[t]) * keep_t over the T + 1 steps (history left-padded, target last)
//   x_i+1  = Block_i(x_i)          (not causal; padded keys masked; rows at padded steps zero)
//   pooled = flatten(x_num_blocks) [(T + 1) * E]          (kFlatten, the paper's), or
//            [mean of the valid history outputs, the target's output] [2E] (kMeanWithTarget)
//   logit  = MLP(pooled -> mlp_hidden... -> 1),  loss = mean BCE-with-logits
//
// Choices, and where they differ from the paper (which has extra user/context features we do
// not have, and timestamps):
// - Output: the paper concatenates the transformer's outputs of every step (behaviours and
//   target) with the other features and feeds the MLP; kFlatten does that (left padding puts
//   the target at a fixed slot T and the most recent behaviour at T - 1; padded steps are zero).
// - Positions: the paper embeds the time gap to the recommendation time and concatenates it;
//   we have no timestamps, so P is a learned embedding of the step index (xavier_normal
//   initialised), added as SASRec does, which keeps the width E.
// - Block: the shared pre-LN block (LN before attention and FFN, residual after) instead of the
//   paper's post-LN; multi-head attention with an output projection (the paper's W^H) and the
//   FFN's LeakyReLU (slope 0.01) as in the paper; FFN hidden width ffn_hidden (default E).
// - MLP activation: PReLU (per channel, init 0.25, learned) or Dice instead of the paper's
//   LeakyReLU; layer widths default to the paper's 1024, 512, 256.
// - Dropout (paper: 0.2) on the attention probabilities, the attention output, the FFN hidden
//   layer and the FFN output; no input dropout. Masks as in models/sasrec.h (dropout step).
//
// Layout of the inputs: models/model.h CtrInputs ([B x T] history, then B targets).
//
// Devices: options.device = kCuda (float only) keeps every buffer and a copy of the dense
// weights (and the MLP's buffers and Dice statistics) on the GPU and runs the same passes
// through the kernels' CUDA twins and models/transformer_ops.h for the model's own loops
// (behaviour + target input, mean pooling, dropout masks, row-gradient layout); dropout works on
// both devices with the same masks. The interface stays host memory (the batch is staged in,
// and the row gradients, the loss, logits() and the dense gradients come back, by
// models/device_staging.h CtrDeviceIo as for DIN), so a trainer drives both devices the same
// way. Forward/Backward then need a Context whose device is the model's. The device path never
// takes the fast CPU loops (fast_cpu_path is ignored there).
//
// Buffers are allocated at Create() for max_batch. Templated on T. Thread safety: none.
#ifndef IPS_MODELS_BST_H_
#define IPS_MODELS_BST_H_

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
#include "models/transformer.h"

namespace ips::models {

enum class BstPooling {
  kFlatten,         // the paper: every step's output, [(T + 1) * E]
  kMeanWithTarget,  // [mean over valid history steps (0 for an empty history), target] [2E]
};

struct BstOptions {
  int64_t embedding_dim = 18;  // width of each table; a behaviour is E = 2 * embedding_dim wide
  int64_t max_len = 50;        // history length T (the sequence is T + 1 with the target)
  int64_t max_batch = 512;
  int64_t num_blocks = 1;  // the paper found 1 best
  int64_t num_heads = 4;   // must divide E (the paper's 8 does not divide 36)
  int64_t ffn_hidden = 0;  // 0: E
  double dropout = 0.2;    // every dropout site, in [0, 1)
  std::vector<int64_t> mlp_hidden = {1024, 512, 256};
  MlpActivation activation = MlpActivation::kPrelu;
  BstPooling pooling = BstPooling::kFlatten;
  uint64_t seed = 0;  // dense initialisation and the dropout masks
  // TransformerBlockOptions::fast_cpu_path (own AVX-512 loops vs kernels/ throughout).
  bool fast_cpu_path = true;
  // TransformerBlockOptions::layout: kPreLn (the paper's equation, the peer) or kQueryNorm (the
  // SASRec reference code's norms, residuals and dropout sites).
  BlockLayout layout = BlockLayout::kPreLn;
  // Where the passes run (see the header comment). The initial weights do not depend on it.
  kernels::Device device = kernels::Device::kCpu;
  // Test switch for device = kCpu: take the CUDA path's copies and kernels with the CPU kernels
  // (as DinOptions::stage_on_cpu); results are bitwise the plain CPU model's with
  // fast_cpu_path = false.
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("BstOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateBstOptions(const BstOptions& o,
                          const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class Bst final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer and initialises the dense weights from
  // Rng(seed): pos (xavier_normal), the blocks, then the MLP (torch defaults). For kCuda,
  // UNIMPLEMENTED with T = double or without CUDA in the build, INTERNAL when device memory
  // cannot be had.
  static StatusOr<std::unique_ptr<Bst>> Create(const BstOptions& options);
  Bst(const Bst&) = delete;
  Bst& operator=(const Bst&) = delete;

  // training: dropout on (and Dice batch statistics); the dropout step advances by one.
  // With in.labels, *loss = mean BCE (loss may be nullptr). Errors: INVALID_ARGUMENT for a batch
  // outside [1, max_batch], null pointers, lengths or indices out of range (naming the
  // position), or a Context of another device; otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                 T* loss) override;
  // After Forward(training = true) with labels on the same inputs: dense gradients into
  // params().grads() (overwritten), row gradients into d_item_rows / d_cat_rows (overwritten;
  // unused rows zero). FAILED_PRECONDITION without such a forward.
  Status Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                  T* d_cat_rows) override;

  const BstOptions& options() const { return o_; }
  int64_t behaviour_dim() const { return 2 * o_.embedding_dim; }
  const char* name() const override { return "bst"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  std::vector<StateTensor<T>> state() override { return mlp_->state(); }
  // Host memory on every device.
  const T* logits() const override { return io_.HostOutput(logits_.data()); }
  // The dropout step the next training Forward uses (starts at 0). Setting it replays masks.
  bool has_dropout_step() const override { return true; }
  uint64_t dropout_step() const override { return step_; }
  void set_dropout_step(uint64_t step) override { step_ = step; }

 private:
  explicit Bst(const BstOptions& o);
  Status CheckInputs(const CtrInputs<T>& in) const;

  BstOptions o_;
  DenseParams<T> params_;
  int64_t pos_ = 0;
  std::vector<std::unique_ptr<TransformerBlock<T>>> blocks_;
  std::unique_ptr<Mlp<T>> mlp_;
  uint64_t step_ = 0;

  // On the model's device.
  kernels::Buffer<int32_t> seq_lengths_;  // [B] history length + 1 (the target)
  std::vector<kernels::Buffer<T>> xs_;    // num_blocks + 1 tensors [B*(T+1) x E]
  kernels::Buffer<T> pooled_;             // [B x 2E] (kMeanWithTarget only)
  kernels::Buffer<T> logits_;             // [B]
  kernels::Buffer<T> loss_scratch_;       // [1]
  // Backward scratch.
  kernels::Buffer<T> d_logits_, d_mlp_in_;
  kernels::Buffer<T> da_, db_;
  kernels::Buffer<T> g_item_, g_cat_;  // [(B*T + B) x dim]
  // The copies in and out on CUDA (or with stage_on_cpu); its output is logits_.
  CtrDeviceIo<T> io_;
  uint64_t forward_seed_ = 0;
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_BST_H_
