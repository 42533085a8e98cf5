// Dien: the Deep Interest Evolution Network exactly as the peer defines it
// (../shared/peers/README.md, "DIEN"; torch_models.DIEN / AUGRU), as an explicit forward and
// backward pass over kernels/.
//
//   behaviour/target e = [item_emb, cat_emb]                                (E = 2 * dim)
//   history rolled from left to right padding (step 0 = the oldest valid behaviour)
//   h_t     = GRU (or LSTM) interest extractor over e_t                     (H = E)
//   aux     = mean over valid pairs (t, t+1) of BCE(aux_MLP([h_t, e_{t+1}]), 1)
//             + BCE(aux_MLP([h_t, e'_{t+1}]), 0); aux_MLP = 2H -> 100 -> 50 -> 1, sigmoid between
//   a_t     = masked softmax over valid t of ActivationUnit(target, h_t)
//   h_final = AUGRU(h_t, a_t): the state after the last valid step (0 for an empty history)
//   logit   = MLP([h_final, target] (H + E) -> 200 -> 80 -> 1), PReLU or Dice
//   loss    = mean BCE-with-logits(logit, label) + aux_loss_weight * aux
//
// e'_{t+1} is the auxiliary negative sampled for history position t+1 (the CtrInputs layout of
// models/model.h puts [B x T] negatives after the targets, aligned with the history positions;
// the peer rolls them with the same index as the history). The negative at the oldest valid
// position is never used (no state precedes it), and its rows get zero gradient.
//
// The model owns its dense weights (DenseParams, registered in the peer's module order: gru,
// aux, attn, augru, top) and nothing sparse; Backward returns one gradient row per pulled row.
// Every buffer is allocated at Create() for options.max_batch rows: Forward/Backward allocate
// nothing. Templated on T (float for training, double for gradient checks).
//
// Why the auxiliary pairs are compacted: the peer runs the auxiliary MLP over every (t, t+1),
// padded or not, and masks the loss afterwards; only valid pairs change the loss or any
// gradient, so running the MLP over just those rows is exact and does less work on real data.
//
// Devices: options.device = kCuda (float only) keeps every buffer and a copy of the dense
// weights on the GPU and runs the same passes through the kernels' CUDA twins (the per-batch
// layout loops are models/dien_ops.h); the interface stays host memory (inputs are staged to the
// device by models/device_staging.h, the auxiliary negatives only when the auxiliary loss is
// computed; the row gradients, the losses, the logits and the dense gradients in params() come
// back to the host), so a trainer drives both devices the same way. Forward/Backward then need a
// Context whose device is the model's. The auxiliary MLP runs in two ways: the plain CPU model
// keeps its fused per-tile implementation (dien.cc, the fastest on the CPU); a staged model (CUDA,
// or the CPU with stage_on_cpu) runs it layer by layer over all compacted pairs through kernels/
// (Linear, sigmoid, BCE), which sums in another order: a staged model matches the plain one to
// rounding, not bitwise.
//
// Thread safety: none (one model per trainer thread); kernels use ctx.pool internally.
#ifndef IPS_MODELS_DIEN_H_
#define IPS_MODELS_DIEN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/context.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/memory.h"
#include "kernels/recurrent.h"
#include "models/device_staging.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

// The interest extractor's recurrent cell (the evolution layer is always the AUGRU).
enum class DienCell { kGru, kLstm };
const char* DienCellName(DienCell c);

struct DienOptions {
  int64_t embedding_dim = 18;  // width of each table; a behaviour is 2 * embedding_dim wide
  int64_t max_len = 50;        // history length T (histories are left-padded to it)
  int64_t max_batch = 512;     // buffers are sized for this many rows
  // Hidden width of the extractor and of the AUGRU. 0 means 2 * embedding_dim (the peer's 36);
  // any other value must equal 2 * embedding_dim, because the activation unit compares the
  // target embedding with the extractor's states (the peer asserts the same).
  int64_t rnn_hidden = 0;
  DienCell cell = DienCell::kGru;
  std::vector<int64_t> aux_hidden = {100, 50};  // auxiliary MLP, sigmoid between layers
  double aux_loss_weight = 1.0;
  int64_t attention_hidden1 = 80;
  int64_t attention_hidden2 = 40;
  std::vector<int64_t> mlp_hidden = {200, 80};
  MlpActivation activation = MlpActivation::kPrelu;
  // Ablation switches (tests use them to show that each part carries signal):
  // attention_disabled: skip the activation unit; the AUGRU gets a_t = 1 at every valid step
  //   (so it evolves like a GRU that ignores the target) and the unit's weights get zero
  //   gradients.
  // aux_loss_disabled: no auxiliary MLP at all; the loss is the click BCE alone, the auxiliary
  //   weights and negative rows get zero gradients.
  bool attention_disabled = false;
  bool aux_loss_disabled = false;
  uint64_t seed = 0;  // dense initialisation (Rng); embedding rows are initialised by the store
  // Where the passes run (see the header comment). The initial weights do not depend on it.
  kernels::Device device = kernels::Device::kCpu;
  // Test switch for device = kCpu: take the CUDA path (inputs staged into the model's own
  // buffers, weights, gradients, Dice statistics, losses and logits through separate copies, the
  // auxiliary MLP layer by layer through kernels/) with the CPU kernels, so that CPU tests cover
  // that logic. Equal to the plain CPU path up to rounding (the auxiliary MLP sums in another
  // order).
  bool stage_on_cpu = false;
};

// INVALID_ARGUMENT naming the first bad field ("DienOptions.<field>: ..."). `names`, when given,
// names the options in the message instead (the one at fault and any it mentions):
// ModelSpecFromConfig passes the config field paths that set them ("model.embedding_dim"), so
// that this stays the one copy of each check. Without it a mentioned option is its bare field.
Status ValidateDienOptions(const DienOptions& o,
                           const std::function<std::string(const std::string&)>& names = {});

template <typename T>
class Dien final : public CtrModel<T> {
 public:
  // Validates the options, allocates every buffer for max_batch and initialises the dense
  // weights from Rng(seed) in the peer's module order with torch's defaults (nn.GRU / nn.LSTM:
  // U(-1/sqrt(H), 1/sqrt(H)) for every tensor; nn.Linear: InitLinearTorchDefault).
  // INVALID_ARGUMENT for bad options; for kCuda, UNIMPLEMENTED with T = double or without CUDA
  // in the build, INTERNAL when device memory cannot be had.
  static StatusOr<std::unique_ptr<Dien>> Create(const DienOptions& options);
  Dien(const Dien&) = delete;
  Dien& operator=(const Dien&) = delete;

  // Forward over in.batch rows. With in.labels, *loss (may be nullptr) = click BCE, plus
  // aux_loss_weight * aux when training (the auxiliary loss is a training term: the peer's
  // loss() adds it, its evaluation calls score()). training also makes Dice use batch
  // statistics and keeps the state for Backward. The [B x T] auxiliary negatives are read (and
  // validated) only when the auxiliary loss is computed (training, labels, aux enabled), so
  // evaluation and inference callers may pass just B*T + B indices. Errors:
  // INVALID_ARGUMENT for a batch outside [1, max_batch], null pointers, indices out of range
  // (negatives included) or lengths outside [0, max_len], naming the position, or a Context of
  // another device than the model's; the kernels'.
  Status Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                 T* loss) override;
  // After Forward(training = true) with labels and the same inputs: dense gradients into
  // params().grads() (overwritten) and row gradients into d_item_rows / d_cat_rows
  // (overwritten; unused rows zero). FAILED_PRECONDITION without such a forward.
  Status Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                  T* d_cat_rows) override;

  const DienOptions& options() const { return o_; }
  int64_t behaviour_dim() const { return 2 * o_.embedding_dim; }
  int64_t hidden() const { return hidden_; }
  const char* name() const override { return "dien"; }
  int64_t embedding_dim() const override { return o_.embedding_dim; }
  int64_t max_len() const override { return o_.max_len; }
  int64_t max_batch() const override { return o_.max_batch; }
  bool aux_negatives() const override { return true; }
  kernels::Device device() const override { return o_.device; }
  DenseParams<T>& params() override { return params_; }
  const DenseParams<T>& params() const override { return params_; }
  std::vector<StateTensor<T>> state() override { return mlp_->state(); }
  // Outputs of the last Forward (valid until the next one): logits [B] (host memory); in the
  // model's device memory, attention weights [B x T] in the rolled (right-padded) layout, 0 at
  // padded steps, and the final AUGRU state [B x H]; on the host, the click BCE of the last
  // Forward with labels and the (unweighted) auxiliary loss of the last Forward (0 unless it was
  // a training forward with labels and aux enabled, and 0 when no row has two valid steps); the
  // number of auxiliary pairs.
  const T* logits() const override { return io_.HostOutput(logits_.data()); }
  const T* attention_weights() const { return att_.data(); }
  const T* final_state() const { return final_h_.data(); }
  T click_loss() const { return click_loss_; }
  T aux_loss() const { return aux_loss_; }
  int64_t aux_pairs() const { return aux_pairs_; }

 private:
  explicit Dien(const DienOptions& o);
  Status CheckInputs(const CtrInputs<T>& in, bool training) const;
  bool AuxActive(const CtrInputs<T>& in, bool training) const {
    return training && in.labels != nullptr && !o_.aux_loss_disabled;
  }
  kernels::RnnShape ExtractorShape(int64_t batch) const;
  kernels::RnnShape AugruShape(int64_t batch) const;
  kernels::DinAttentionArgs<T> AttentionArgs(const CtrInputs<T>& in) const;
  // Auxiliary MLP over the compacted pairs. Plain CPU: fused per tile of kAuxTile pairs
  // (dien.cc). Staged (CUDA, stage_on_cpu): layer by layer through kernels/ (AuxForwardLayers).
  static constexpr int64_t kAuxTile = 32;
  static constexpr int64_t kAuxMaxParts = 8;
  bool aux_fused() const { return !io_.staged(); }
  Status AuxForward(const kernels::Context& ctx, const CtrInputs<T>& in);
  Status AuxBackward(const kernels::Context& ctx, const CtrInputs<T>& in);
  Status AuxForwardLayers(const kernels::Context& ctx, const CtrInputs<T>& in);
  Status AuxBackwardLayers(const kernels::Context& ctx, const CtrInputs<T>& in);
  // What the staged forward and backward of auxiliary layer i (and of its loss) share: shapes,
  // activation and the buffers of the 2P pair rows.
  kernels::LinearArgs<T> AuxLayerArgs(int64_t i, int64_t rows);
  kernels::BceWithLogitsArgs<T> AuxLossArgs(int64_t rows);
  void AuxGatherTile(const CtrInputs<T>& in, int64_t p0, int64_t p1, T* hin, T* epos,
                     T* eneg) const;
  double AuxForwardTile(const CtrInputs<T>& in, int64_t part, int64_t p0, int64_t p1);
  void AuxBackwardTile(const CtrInputs<T>& in, int64_t part, int64_t p0, int64_t p1);
  template <typename Fn>
  void ForAuxParts(const kernels::Context& ctx, int64_t pairs, const Fn& fn);
  Status ZeroAuxGrads(const kernels::Context& ctx);
  // The pair index arrays as the ops see them: the host arrays, or their device copies.
  const int64_t* PairOffsets() const {
    return io_.staged() ? pair_offset_dev_.data() : pair_offset_.data();
  }
  const int32_t* PairRows() const { return io_.staged() ? pair_row_dev_.data() : pair_row_.data(); }

  DienOptions o_;
  int64_t hidden_ = 0;
  DenseParams<T> params_;
  // Offsets into params_ (torch layouts): extractor, auxiliary MLP layers, activation unit,
  // AUGRU.
  int64_t rnn_w_ih_ = 0, rnn_w_hh_ = 0, rnn_b_ih_ = 0, rnn_b_hh_ = 0;
  std::vector<int64_t> aux_sizes_;  // [2H, aux_hidden..., 1]
  std::vector<int64_t> aux_w_, aux_b_;
  ActivationUnitWeights<T> attn_;
  int64_t au_w_ih_ = 0, au_b_ih_ = 0, au_w_hh_ = 0, au_b_hh_ = 0;
  std::unique_ptr<Mlp<T>> mlp_;

  // Host-side index work of a batch, computed from the host lengths (see Forward).
  std::vector<int64_t> first_valid_;  // [B] T - lengths[b] (left-padded offset)
  std::vector<int64_t> pair_offset_;  // [B + 1] prefix sums of max(lengths[b] - 1, 0)
  std::vector<int32_t> pair_row_;     // [P] batch row of each pair
  // Their device copies when staged (empty otherwise).
  kernels::Buffer<int64_t> pair_offset_dev_;
  kernels::Buffer<int32_t> pair_row_dev_;

  // Forward state, sized for max_batch, on the model's device.
  kernels::Buffer<T> x_;            // [B x T x E] rolled behaviours (0 at padding)
  kernels::Buffer<T> target_;       // [B x E]
  kernels::Buffer<T> states_;       // [B x T x H] extractor states
  kernels::Buffer<T> ext_final_h_;  // [B x H] (unused downstream)
  kernels::Buffer<T> ext_final_c_;  // [B x H] LSTM only
  kernels::Buffer<T> ext_reserve_;  // RnnReserveBytes
  kernels::Buffer<T> att_;          // [B x T]
  kernels::Buffer<T> attn_saved_;
  kernels::Buffer<T> au_states_;  // [B x T x H] AUGRU states
  kernels::Buffer<T> au_reserve_;
  kernels::Buffer<T> final_h_;        // [B x H]
  kernels::Buffer<T> mlp_in_;         // [B x (H + E)] = [h_final, target]
  kernels::Buffer<T> logits_;         // [B]
  kernels::Buffer<T> rnn_workspace_;  // max of the forward/backward workspaces of both RNNs
  kernels::Buffer<T> loss_scratch_;   // [2] click loss, (staged) the summed aux loss
  T click_loss_ = T(0), aux_loss_ = T(0);
  int64_t aux_pairs_ = 0;
  bool aux_computed_ = false;
  // Fused CPU auxiliary MLP (plain CPU only): per-layer outputs [2P x sizes[i+1]] (rows [0, P)
  // positives, [P, 2P) negatives), forward weights transposed, per-part weight-gradient
  // partials and tile scratch (one set per part), layer 0's weight split into its h and e column
  // blocks.
  std::vector<std::vector<T>> aux_out_;
  std::vector<T> aux_wt_;                       // per layer W^T [in x out] then (unused) bias slot
  std::vector<int64_t> aux_w_off_, aux_b_off_;  // layer offsets in aux_wt_ / a partial
  int64_t aux_part_elems_ = 0;
  std::vector<T> aux_partials_;
  std::vector<T> aux_w0h_, aux_w0e_;
  struct AuxScratch {
    std::vector<T> hin, epos, eneg;  // [kAuxTile x H / E] gathered inputs
    std::vector<T> da, dz;           // [2 kAuxTile x widest layer]
  };
  std::vector<AuxScratch> aux_scratch_;
  double aux_part_loss_[kAuxMaxParts] = {0};
  int64_t aux_parts_ = 1;
  // Layer-by-layer auxiliary MLP (staged only), rows interleaved (2p positive, 2p + 1 negative,
  // models/dien_ops.h DienAuxGather): input [2P x 2H], per-layer outputs, two gradient buffers
  // [2P x widest layer] used in turn, labels [2P] = 1, 0, 1, 0, ... (set at Create).
  kernels::Buffer<T> aux_in_;
  std::vector<kernels::Buffer<T>> aux_act_;
  kernels::Buffer<T> aux_grad_a_, aux_grad_b_;
  kernels::Buffer<T> aux_labels_;
  // Backward scratch.
  kernels::Buffer<T> attn_workspace_;
  kernels::Buffer<T> d_logits_;  // [B]
  kernels::Buffer<T> d_mlp_in_;  // [B x (H + E)]
  kernels::Buffer<T> d_final_;   // [B x H] the h_final part of d_mlp_in_
  kernels::Buffer<T> d_au_x_;    // [B x T x H] AUGRU input gradient
  kernels::Buffer<T> d_att_;     // [B x T]
  kernels::Buffer<T> d_query_;   // [B x E]
  kernels::Buffer<T> d_keys_;    // [B x T x H]
  kernels::Buffer<T> d_states_;  // [B x T x H] total extractor-state gradient
  kernels::Buffer<T> d_x_;       // [B x T x E]
  // Per-pair input gradients of the auxiliary MLP (both paths).
  kernels::Buffer<T> d_aux_h_;    // [P x H]  both pair rows' gradient of h_t
  kernels::Buffer<T> d_aux_pos_;  // [P x E]  gradient of e_{t+1}
  kernels::Buffer<T> d_aux_neg_;  // [P x E]  gradient of e'_{t+1}
  kernels::Buffer<T> g_item_;     // [(2*B*T + B) x dim] per-position row gradients
  kernels::Buffer<T> g_cat_;
  // The copies in and out on CUDA (or with stage_on_cpu).
  CtrDeviceIo<T> io_;
  bool have_training_forward_ = false;
  int64_t forward_batch_ = 0;
};

}  // namespace ips::models

#endif  // IPS_MODELS_DIEN_H_
