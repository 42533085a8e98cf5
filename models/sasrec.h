// Sasrec: self-attentive sequential recommendation (Kang & McAuley 2018) exactly as the peer
// defines it (../shared/peers/README.md "SASRec"; torch_models.SASRec), as an explicit forward
// and backward pass over kernels/ and models/transformer.h's block.
//
//   x_0   = drop(E[s_t] * sqrt(d) + P[t]) * keep_t          (keep_t = 0 at padded steps)
//   x_i+1 = Block_i(x_i), i < num_blocks                    (pre-LN, causal, key-padding mask)
//   out   = LN(x_num_blocks)                                [B x T x d]
//   loss  = sum over valid (b, t) of softplus(-<out_bt, E[pos_bt]>) + softplus(<out_bt, E[neg_bt]>)
//           divided by max(1, number of valid positions in the batch)  (the peer's clamp(min=1))
//   user vector = out[b, T-1]   (sequences are left-padded, so T-1 is the last valid step)
//
// The item table E (n_items + 1 rows, row 0 = padding) lives in the store: the trainer pulls the
// batch's unique rows and passes them with per-position row indices (models/model.h SeqInputs).
// The positional table P [max_len x d], the blocks and the final LayerNorm are DenseParams, named
// as the peer's state_dict ("pos.weight", "blocks.<i>.q.weight", ..., "ln_out.bias").
//
// Heads: num_heads > 1 splits d into heads of d / num_heads columns, scaled by
// 1/sqrt(d / num_heads) as the SASRec reference code does; with one head (the peer) that is the
// peer's 1/sqrt(d).
//
// Dropout (training only): every site's mask is a pure function of (seed, dropout step, site,
// element) (models/transformer.h), where the dropout step counts training forwards. Re-running a
// forward with the same masks: set_dropout_step(step) before it. The peer's torch RNG cannot be
// matched, so parity with it is only defined at dropout 0.
//
// Devices: options.device = kCuda (float only) keeps every buffer and a copy of the dense
// weights on the GPU and runs the same passes through the kernels' CUDA twins (LayerNorm,
// Linear/Gemm, MhaForward/Backward, ScatterAdd) and models/transformer_ops.h for the model's own
// loops (embedding + positions, dropout masks, scores, row-gradient layout); dropout works on
// both devices with the same masks. The interface stays host memory (the batch is staged in,
// and the row gradients, the loss, user_vectors() and the dense gradients in params() come back,
// by models/device_staging.h CtrDeviceIo as for GRU4Rec), so a trainer drives both devices the
// same way. Forward/Backward then need a Context whose device is the model's. The device path
// never takes the fast CPU loops (fast_cpu_path is ignored there), so a CUDA model matches the
// CPU model with fast_cpu_path = false up to the kernels' rounding.
//
// Buffers are allocated at Create() for max_batch: Forward/Backward allocate nothing.
// Templated on T (float for training, double for gradient checks). Thread safety: none.
#ifndef IPS_MODELS_SASREC_H_
#define IPS_MODELS_SASREC_H_

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

struct SasrecOptions {
  int64_t embedding_dim = 50;  // d: item rows, positional rows and the model width
  int64_t max_len = 50;        // T (sequences are left-padded to it)
  int64_t max_batch = 512;     // buffers are sized for this many sequences
  int64_t num_blocks = 2;
  int64_t num_heads = 1;  // must divide embedding_dim
  double dropout = 0.5;   // every dropout site, in [0, 1)
  uint64_t seed = 0;      // dense initialisation and the dropout masks
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

// INVALID_ARGUMENT naming the first bad field ("SasrecOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateSasrecOptions(const SasrecOptions& o,
                             const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class Sasrec final : public SeqModel<T> {
 public:
  // Validates the options, allocates every buffer and initialises the dense weights from
  // Rng(seed) in the peer's order: pos (xavier_normal), then per block LayerNorms (1, 0) and
  // q, k, v, ffn.0, ffn.3 (torch nn.Linear defaults), then ln_out (1, 0). For kCuda,
  // UNIMPLEMENTED with T = double or without CUDA in the build, INTERNAL when device memory
  // cannot be had.
  static StatusOr<std::unique_ptr<Sasrec>> Create(const SasrecOptions& options);
  Sasrec(const Sasrec&) = delete;
  Sasrec& operator=(const Sasrec&) = delete;

  // training = true: item_index holds 3*B*T entries (inputs, positives, negatives), dropout is
  // on, *loss (may be nullptr) = the mean loss above, and the dropout step advances by one after
  // the forward. training = false: item_index holds the B*T inputs, no dropout, no loss.
  // Both fill user_vectors(). Errors: INVALID_ARGUMENT for a batch outside [1, max_batch], null
  // pointers, lengths outside [0, max_len] or indices outside [0, num_item_rows) (naming the
  // position), or a Context of another device; otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, const SeqInputs<T>& in, bool training,
                 T* loss) override;
  // After Forward(training = true) on the same inputs: dense gradients into params().grads()
  // (overwritten) and every pulled row's gradient into d_item_rows [num_item_rows x d]
  // (overwritten; rows no position uses, and the padding row's padded uses, get zero).
  // FAILED_PRECONDITION without such a forward; INVALID_ARGUMENT for a null d_item_rows.
  Status Backward(const kernels::Context& ctx, const SeqInputs<T>& in, T* d_item_rows) override;

  const SasrecOptions& options() const { return o_; }
  const char* name() const override { return "sasrec"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  // [B x d] of the last Forward (host memory).
  const T* user_vectors() const override { return io_.HostOutput(user_vectors_.data()); }
  // The final LayerNorm output of the last Forward [B x T x d] (valid steps only meaningful), in
  // the model's device memory (as the logits below).
  const T* states() const { return out_.data(); }
  // Positive and negative logits of the last training Forward [B x T] (0 at padded steps).
  const T* pos_logits() const { return pos_logits_.data(); }
  const T* neg_logits() const { return neg_logits_.data(); }
  // The dropout step the next training Forward uses (starts at 0). Setting it replays masks.
  bool has_dropout_step() const override { return true; }
  uint64_t dropout_step() const override { return step_; }
  void set_dropout_step(uint64_t step) override { step_ = step; }

 private:
  explicit Sasrec(const SasrecOptions& o);
  Status CheckInputs(const SeqInputs<T>& in, bool training) const;

  SasrecOptions o_;
  DenseParams<T> params_;
  int64_t pos_ = 0, ln_g_ = 0, ln_b_ = 0;
  std::vector<std::unique_ptr<TransformerBlock<T>>> blocks_;
  uint64_t step_ = 0;

  // Forward state, sized for max_batch, on the model's device.
  std::vector<kernels::Buffer<T>> xs_;  // num_blocks + 1 tensors [B*T x d]: block in/outputs
  kernels::Buffer<T> out_, mean_, rstd_;
  kernels::Buffer<T> pos_logits_, neg_logits_;
  kernels::Buffer<T> seq_loss_;  // [B] per-sequence loss sums
  kernels::Buffer<T> user_vectors_;
  std::vector<T> host_seq_loss_;  // [B] their host copy
  // Backward scratch.
  kernels::Buffer<T> da_, db_;            // [B*T x d] ping-pong gradients
  kernels::Buffer<T> g_rows_;             // [3*B*T x d] per-position item-row gradients
  kernels::Buffer<uint16_t> input_mask_;  // the input dropout's mask (DropoutMask bits)
  // The copies in and out on CUDA (or with stage_on_cpu); its output is user_vectors_.
  CtrDeviceIo<T> io_;
  bool dropout_on_ = false;
  uint64_t forward_seed_ = 0;
  T inv_count_ = T(0);
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_SASREC_H_
