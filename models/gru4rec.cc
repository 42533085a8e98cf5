#include "models/gru4rec.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "common/random.h"
#include "kernels/loss.h"
#include "models/option_names.h"
#include "models/seq_ops.h"

namespace ips::models {
Status ValidateGru4RecOptions(const Gru4RecOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "Gru4RecOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "Gru4RecOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "Gru4RecOptions", "max_batch", "must be >= 1");
  if (o.hidden < 0)
    return BadOption(names, "Gru4RecOptions", "hidden",
                     "must be >= 0 (0: " + MentionedOption(names, "embedding_dim") + "), got " +
                         std::to_string(o.hidden));
  if (o.cell != kernels::RnnCell::kGru && o.cell != kernels::RnnCell::kLstm)
    return BadOption(names, "Gru4RecOptions", "cell",
                     "must be GRU or LSTM (AUGRU needs attention scores)");
  return Status::Ok();
}

template <typename T>
Gru4Rec<T>::Gru4Rec(const Gru4RecOptions& o) : o_(o) {}

template <typename T>
kernels::RnnShape Gru4Rec<T>::Shape(int64_t batch) const {
  kernels::RnnShape s;
  s.cell = o_.cell;
  s.batch = batch;
  s.steps = o_.max_len;
  s.input = o_.embedding_dim;
  s.hidden = hidden_;
  return s;
}

template <typename T>
StatusOr<std::unique_ptr<Gru4Rec<T>>> Gru4Rec<T>::Create(const Gru4RecOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateGru4RecOptions(options));
  std::unique_ptr<Gru4Rec<T>> m(new Gru4Rec<T>(options));
  const Gru4RecOptions& o = m->o_;
  const int64_t B = o.max_batch, L = o.max_len, D = o.embedding_dim;
  const int64_t H = o.hidden > 0 ? o.hidden : D;
  m->hidden_ = H;
  const int64_t G = kernels::RnnGates(o.cell);
  const std::string rnn = o.cell == kernels::RnnCell::kGru ? "gru" : "lstm";
  DenseParams<T>& p = m->params_;
  m->w_ih_ = p.Add(rnn + ".weight_ih_l0", G * H * D);
  m->w_hh_ = p.Add(rnn + ".weight_hh_l0", G * H * H);
  m->b_ih_ = p.Add(rnn + ".bias_ih_l0", G * H);
  m->b_hh_ = p.Add(rnn + ".bias_hh_l0", G * H);
  if (H != D) m->proj_ = std::make_unique<Linear<T>>(&p, "proj", H, D);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  // torch's nn.GRU / nn.LSTM reset_parameters: every tensor U(-1/sqrt(H), 1/sqrt(H)).
  Rng rng(o.seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  const int64_t sizes[4] = {G * H * D, G * H * H, G * H, G * H};
  const int64_t offsets[4] = {m->w_ih_, m->w_hh_, m->b_ih_, m->b_hh_};
  for (int k = 0; k < 4; ++k) {
    T* v = p.value(offsets[k]);
    for (int64_t i = 0; i < sizes[k]; ++i) v[i] = static_cast<T>((2 * rng.Uniform() - 1) * bound);
  }
  if (m->proj_) m->proj_->Init(rng);

  // Weights are initialised on the host (the same on every device), then mirrored.
  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  const kernels::RnnShape shape = m->Shape(B);
  const size_t ws_bytes = std::max(kernels::RnnForwardWorkspaceBytes<T>(shape),
                                   kernels::RnnBackwardWorkspaceBytes<T>(shape));
  const int64_t reserve = static_cast<int64_t>(kernels::RnnReserveBytes<T>(shape) / sizeof(T)) + 1;
  const int64_t workspace = static_cast<int64_t>(ws_bytes / sizeof(T)) + 1;
  const bool lstm = o.cell == kernels::RnnCell::kLstm, proj = m->proj_ != nullptr;
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(dev, {
                                                         {&m->x_, B * L * D},
                                                         {&m->states_, B * L * H},
                                                         {&m->final_h_, B * H},
                                                         {&m->final_c_, lstm ? B * H : 0},
                                                         {&m->reserve_, reserve},
                                                         {&m->rnn_ws_, workspace},
                                                         {&m->proj_out_, proj ? B * L * D : 0},
                                                         {&m->out_left_, B * L * D},
                                                         {&m->user_, B * D},
                                                         {&m->logits_, 2 * B * L},
                                                         {&m->labels_, 2 * B * L},
                                                         {&m->mask_, 2 * B * L},
                                                         {&m->loss_scratch_, 1},
                                                         {&m->d_logits_, 2 * B * L},
                                                         {&m->d_out_, B * L * D},
                                                         {&m->d_states_, proj ? B * L * H : 0},
                                                         {&m->d_x_, B * L * D},
                                                         {&m->g_item_, 3 * B * L * D},
                                                     }));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, 3 * B * L, D,
                                                      /*output_width=*/D, /*categories=*/false));
  return m;
}

template <typename T>
Status Gru4Rec<T>::CheckInputs(const SeqInputs<T>& in, bool training) const {
  const int64_t B = in.batch, L = o_.max_len;
  if (B < 1 || B > o_.max_batch)
    return InvalidArgumentError("Gru4Rec: batch " + std::to_string(B) + " outside [1, " +
                                std::to_string(o_.max_batch) + "]");
  if (in.lengths == nullptr || in.item_index == nullptr || in.item_rows == nullptr)
    return InvalidArgumentError("Gru4Rec: null lengths, item_index or item_rows");
  for (int64_t b = 0; b < B; ++b)
    if (in.lengths[b] < 0 || in.lengths[b] > L)
      return InvalidArgumentError("Gru4Rec: lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(in.lengths[b]) + " outside [0, " +
                                  std::to_string(L) + "]");
  const int64_t n = (training ? 3 : 1) * B * L;
  for (int64_t i = 0; i < n; ++i)
    if (in.item_index[i] < 0 || in.item_index[i] >= in.num_item_rows)
      return InvalidArgumentError("Gru4Rec: item_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.item_index[i]) + " outside [0, " +
                                  std::to_string(in.num_item_rows) + ")");
  return Status::Ok();
}

template <typename T>
Status Gru4Rec<T>::Forward(const kernels::Context& ctx, const SeqInputs<T>& host_in, bool training,
                           T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Gru4Rec", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in, training));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, H = hidden_;
  IPS_ASSIGN_OR_RETURN(
      const CtrInputs<T> staged,
      io_.BeginForward(ctx, SeqAsCtrInputs(host_in), (training ? 3 : 1) * B * L, &params_));
  const SeqInputs<T> in = CtrAsSeqInputs(staged);
  const CtrShapes shapes{B, L, D, in.lengths};

  // Left-padded positions -> right-padded recurrent input (valid steps first, zeros after).
  IPS_RETURN_IF_ERROR(SeqGatherRightPadded(ctx, shapes, in.item_index, in.item_rows, x_.data()));

  kernels::RnnForwardArgs<T> r;
  r.shape = Shape(B);
  r.x = x_.data();
  r.lengths = in.lengths;
  r.w_ih = params_.compute_value(w_ih_);
  r.w_hh = params_.compute_value(w_hh_);
  r.b_ih = params_.compute_value(b_ih_);
  r.b_hh = params_.compute_value(b_hh_);
  r.states = states_.data();
  r.final_h = final_h_.data();
  r.final_c = o_.cell == kernels::RnnCell::kLstm ? final_c_.data() : nullptr;
  r.reserve = reserve_.data();
  r.workspace = rnn_ws_.data();
  IPS_RETURN_IF_ERROR(kernels::RnnForward(ctx, r));

  const T* out_right = states_.data();
  if (proj_) {
    IPS_RETURN_IF_ERROR(proj_->Forward(ctx, B * L, states_.data(), proj_out_.data()));
    // The user vector is the projected final state (for an empty history: of h_0 = 0).
    IPS_RETURN_IF_ERROR(proj_->Forward(ctx, B, final_h_.data(), user_.data()));
    out_right = proj_out_.data();
  } else {
    IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, user_.data(), final_h_.data(),
                                              sizeof(T) * static_cast<size_t>(B * H)));
  }

  // Back to the inputs' layout; padded steps read as zeros.
  IPS_RETURN_IF_ERROR(SeqRightToLeft(ctx, shapes, out_right, out_left_.data()));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, user_.data(), B));
  if (!training) return Status::Ok();

  const int64_t BL = B * L;
  int64_t valid = 0;
  for (int64_t b = 0; b < B; ++b) valid += host_in.lengths[b];
  IPS_RETURN_IF_ERROR(SeqScoreNextItems(ctx, shapes, in.item_index, in.item_rows, out_left_.data(),
                                        logits_.data(), labels_.data(), mask_.data()));
  kernels::BceWithLogitsArgs<T> l;
  l.n = 2 * BL;
  l.reduction = kernels::Reduction::kSum;
  l.logits = logits_.data();
  l.labels = labels_.data();
  l.weights = mask_.data();
  l.loss = loss_scratch_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsForward(ctx, l));
  // The peer's masked mean: sum over valid positions of both terms / max(#valid, 1).
  if (loss != nullptr) {
    T sum = T(0);
    IPS_RETURN_IF_ERROR(kernels::CopyToHost(ctx, &sum, loss_scratch_.data(), sizeof(T)));
    *loss = sum / static_cast<T>(std::max<int64_t>(valid, 1));
  }
  valid_ = valid;
  have_training_forward_ = true;
  forward_batch_ = B;
  return Status::Ok();
}

template <typename T>
Status Gru4Rec<T>::Backward(const kernels::Context& ctx, const SeqInputs<T>& host_in,
                            T* d_item_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_)
    return FailedPreconditionError(
        "Gru4Rec::Backward needs a Forward(training = true) on the same batch first");
  if (d_item_rows == nullptr) return InvalidArgumentError("Gru4Rec::Backward: null d_item_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Gru4Rec", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, BL = B * L;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const SeqInputs<T> in = CtrAsSeqInputs(io_.BackwardInputs(SeqAsCtrInputs(host_in)));
  const CtrShapes shapes{B, L, D, in.lengths};

  kernels::BceWithLogitsArgs<T> l;
  l.n = 2 * BL;
  l.reduction = kernels::Reduction::kSum;
  l.logits = logits_.data();
  l.labels = labels_.data();
  l.weights = mask_.data();
  l.dloss = T(1) / static_cast<T>(std::max<int64_t>(valid_, 1));
  l.dlogits = d_logits_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));

  // d state_t = dl_pos E[pos_t] + dl_neg E[neg_t] (right-padded layout); the positive and
  // negative rows get dl * state_t.
  IPS_RETURN_IF_ERROR(SeqScoreBackward(ctx, shapes, in.item_index, in.item_rows, out_left_.data(),
                                       d_logits_.data(), d_out_.data(), g_item_.data() + BL * D));

  const T* d_rnn = d_out_.data();
  if (proj_) {
    IPS_RETURN_IF_ERROR(proj_->Backward(ctx, BL, states_.data(), d_out_.data(), d_states_.data()));
    d_rnn = d_states_.data();
  }

  kernels::RnnBackwardArgs<T> r;
  r.shape = Shape(B);
  r.x = x_.data();
  r.lengths = in.lengths;
  r.w_ih = params_.compute_value(w_ih_);
  r.w_hh = params_.compute_value(w_hh_);
  r.states = states_.data();
  r.reserve = reserve_.data();
  r.d_states = d_rnn;
  r.d_x = d_x_.data();
  r.d_w_ih = params_.compute_grad(w_ih_);
  r.d_w_hh = params_.compute_grad(w_hh_);
  r.d_b_ih = params_.compute_grad(b_ih_);
  r.d_b_hh = params_.compute_grad(b_hh_);
  r.workspace = rnn_ws_.data();
  IPS_RETURN_IF_ERROR(kernels::RnnBackward(ctx, r));

  // Input rows: the right-padded d_x back to the left-padded positions.
  IPS_RETURN_IF_ERROR(SeqRightToLeft(ctx, shapes, d_x_.data(), g_item_.data()));

  return io_.ScatterRowGradsAndEnd(ctx, SeqAsCtrInputs(in), 3 * BL, D, g_item_.data(),
                                   /*g_cat=*/nullptr, d_item_rows, nullptr, &params_);
}

template class Gru4Rec<float>;
template class Gru4Rec<double>;

}  // namespace ips::models
