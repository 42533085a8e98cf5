// Gru4Rec: a GRU4Rec-style next-item model (Hidasi et al. 2016, trained like SASRec) as an
// explicit forward and backward pass over kernels/:
//
//   x_t     = E[s_t]                                   (item rows, dim d; no positional table)
//   h_t     = Cell(x_t, h_{t-1}), h_0 = 0              (GRU or LSTM, hidden H, kernels/recurrent.h)
//   state_t = h_t W_p^T + b_p  if H != d, else h_t     (a Linear projection back to d)
//   loss    = mean over valid t of BCE(<state_t, E[pos_t]>, 1) + BCE(<state_t, E[neg_t]>, 0)
//
// The loss is the SASRec peer's (shared/peers/README.md "SASRec"; torch_models.SASRec.loss:
// per-position softplus(-pos) + softplus(neg), summed over valid positions, divided by
// max(#valid, 1)), so the two sequence models train on the same batches with the same objective.
//
// Inputs are left-padded (models/model.h SeqInputs); the recurrent kernels take right-padded
// sequences, so the valid steps of each row are gathered to the front before the recurrence and
// mapped back afterwards. Valid steps therefore never see padding: the recurrence starts from
// h_0 = 0 at the first real item, exactly as if the sequence had never been padded. user_vectors()
// is the state after the last valid step (the projection of h_0 = 0 for an empty history).
//
// The model owns its dense weights (DenseParams: the cell's w_ih, w_hh, b_ih, b_hh in torch's
// nn.GRU/nn.LSTM layout and initialisation, then the projection) and nothing sparse: rows are
// pulled by the trainer and passed in with per-position row indices; Backward returns one
// gradient row per pulled row. Every buffer is allocated at Create() for max_batch rows:
// Forward/Backward allocate nothing. Templated on T (float for training, double for gradient
// checks).
//
// Devices: options.device = kCuda (float only) keeps every buffer and a copy of the dense
// weights on the GPU and runs the same passes through the kernels' CUDA twins (the layout loops
// are models/seq_ops.h); the interface stays host memory (the batch is staged in, and the row
// gradients, the loss, user_vectors() and the dense gradients in params() come back, by
// models/device_staging.h CtrDeviceIo as for DIN), so a trainer drives both devices the same
// way. Forward/Backward then need a Context whose device is the model's.
//
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_GRU4REC_H_
#define IPS_MODELS_GRU4REC_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/recurrent.h"
#include "models/device_staging.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

struct Gru4RecOptions {
  int64_t embedding_dim = 50;  // d: item rows and the scored state
  int64_t max_len = 50;        // T: sequences are left-padded to it
  int64_t max_batch = 128;     // buffers are sized for this many sequences
  int64_t hidden = 0;          // H; 0 = embedding_dim (then there is no projection)
  kernels::RnnCell cell = kernels::RnnCell::kGru;  // kGru or kLstm (AUGRU needs attention)
  uint64_t seed = 0;  // dense initialisation (Rng); embedding rows are initialised by the store
  // Where the passes run (see the header comment). The initial weights do not depend on it.
  kernels::Device device = kernels::Device::kCpu;
  // Test switch for device = kCpu: take the CUDA path's copies with the CPU kernels (as
  // DinOptions::stage_on_cpu); results are bitwise the plain CPU path's.
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("Gru4RecOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateGru4RecOptions(const Gru4RecOptions& o,
                              const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class Gru4Rec final : public SeqModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises the dense
  // weights from Rng(seed): the cell's four tensors U(-1/sqrt(H), 1/sqrt(H)) (torch's
  // nn.GRU/nn.LSTM default, in the order w_ih, w_hh, b_ih, b_hh), then the projection with
  // nn.Linear's default. INVALID_ARGUMENT for bad options; for kCuda, UNIMPLEMENTED with
  // T = double or without CUDA in the build, INTERNAL when device memory cannot be had.
  static StatusOr<std::unique_ptr<Gru4Rec>> Create(const Gru4RecOptions& options);
  Gru4Rec(const Gru4Rec&) = delete;
  Gru4Rec& operator=(const Gru4Rec&) = delete;

  // training = true: in.item_index holds 3*B*T entries (sequence, positives, negatives), *loss
  // (may be nullptr) gets the mean loss and the state for Backward is kept. training = false:
  // B*T entries (the sequence only), loss is not computed. Both fill user_vectors().
  // Errors: INVALID_ARGUMENT for a batch outside [1, max_batch], null pointers, lengths outside
  // [0, max_len] or indices outside [0, num_item_rows) (naming the position), or a Context of
  // another device; the kernels'.
  Status Forward(const kernels::Context& ctx, const SeqInputs<T>& in, bool training,
                 T* loss) override;
  // After Forward(training = true) on the same inputs: dense gradients into params().grads()
  // (overwritten) and the gradient of every pulled row into d_item_rows [num_item_rows x d]
  // (overwritten; rows no valid position uses come out zero). Errors: FAILED_PRECONDITION
  // without a preceding training Forward of the same batch size; INVALID_ARGUMENT for a null
  // d_item_rows; the kernels'.
  Status Backward(const kernels::Context& ctx, const SeqInputs<T>& in, T* d_item_rows) override;

  const Gru4RecOptions& options() const { return o_; }
  int64_t hidden() const { return hidden_; }
  bool has_projection() const { return hidden_ != o_.embedding_dim; }
  const char* name() const override { return "gru4rec"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  // [B x d] after any Forward (host memory), valid until the next one.
  const T* user_vectors() const override { return io_.HostOutput(user_.data()); }
  // States of the last Forward [B x T x d] in the inputs' left-padded layout (0 at padded
  // steps), in the model's device memory. For tests.
  const T* states() const { return out_left_.data(); }

 private:
  explicit Gru4Rec(const Gru4RecOptions& o);
  Status CheckInputs(const SeqInputs<T>& in, bool training) const;
  kernels::RnnShape Shape(int64_t batch) const;

  Gru4RecOptions o_;
  int64_t hidden_ = 0;
  DenseParams<T> params_;
  int64_t w_ih_ = 0, w_hh_ = 0, b_ih_ = 0, b_hh_ = 0;  // offsets into params_
  std::unique_ptr<Linear<T>> proj_;                    // only when hidden != embedding_dim

  // Forward state, sized for max_batch, on the model's device. "Right" buffers use the recurrent
  // kernels' layout (valid steps first), "left" ones the inputs' layout.
  kernels::Buffer<T> x_;             // [B x T x d] gathered inputs, right-padded (0 at padding)
  kernels::Buffer<T> states_;        // [B x T x H] cell outputs, right-padded
  kernels::Buffer<T> final_h_;       // [B x H]
  kernels::Buffer<T> final_c_;       // [B x H] (LSTM)
  kernels::Buffer<T> reserve_;       // RnnReserveBytes
  kernels::Buffer<T> rnn_ws_;        // max(forward, backward) workspace
  kernels::Buffer<T> proj_out_;      // [B x T x d] projected states, right-padded (projection only)
  kernels::Buffer<T> out_left_;      // [B x T x d] states in the left-padded layout
  kernels::Buffer<T> user_;          // [B x d]
  kernels::Buffer<T> logits_;        // [2 x B x T]: positives then negatives, left-padded layout
  kernels::Buffer<T> labels_;        // [2 x B x T]: B*T ones then B*T zeros
  kernels::Buffer<T> mask_;          // [2 x B x T]: 1 at valid steps
  kernels::Buffer<T> loss_scratch_;  // [1]
  int64_t valid_ = 0;                // valid positions of the last training forward
  // Backward scratch.
  kernels::Buffer<T> d_logits_;  // [2 x B x T]
  kernels::Buffer<T> d_out_;     // [B x T x d] gradient of the states, right-padded
  kernels::Buffer<T> d_states_;  // [B x T x H] (projection only)
  kernels::Buffer<T> d_x_;       // [B x T x d]
  kernels::Buffer<T> g_item_;    // [3 x B x T x d] per-position row gradients
  // The copies in and out on CUDA (or with stage_on_cpu); its output is user_.
  CtrDeviceIo<T> io_;
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_GRU4REC_H_
