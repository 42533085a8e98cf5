#include "models/sasrec.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "kernels/activation.h"
#include "kernels/norm.h"
#include "models/option_names.h"
#include "models/transformer_ops.h"

namespace ips::models {
namespace {

// Dropout site of the embedding input (blocks use sites 1..num_blocks as their seeds).
constexpr uint64_t kSiteInput = 0;

}  // namespace

Status ValidateSasrecOptions(const SasrecOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "SasrecOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "SasrecOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "SasrecOptions", "max_batch", "must be >= 1");
  if (o.num_blocks < 1)
    return BadOption(names, "SasrecOptions", "num_blocks",
                     "must be >= 1, got " + std::to_string(o.num_blocks));
  if (o.num_heads < 1) return BadOption(names, "SasrecOptions", "num_heads", "must be positive");
  // The heads split the embedding.
  if (o.embedding_dim % o.num_heads != 0)
    return BadOption(names, "SasrecOptions", "num_heads",
                     std::to_string(o.num_heads) + " does not divide " +
                         MentionedOption(names, "embedding_dim") + " " +
                         std::to_string(o.embedding_dim));
  if (!(o.dropout >= 0 && o.dropout < 1))
    return BadOption(names, "SasrecOptions", "dropout",
                     "must be in [0, 1), got " + OptionNumber(o.dropout));
  return Status::Ok();
}

template <typename T>
Sasrec<T>::Sasrec(const SasrecOptions& o) : o_(o) {}

template <typename T>
StatusOr<std::unique_ptr<Sasrec<T>>> Sasrec<T>::Create(const SasrecOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateSasrecOptions(options));
  std::unique_ptr<Sasrec<T>> m(new Sasrec<T>(options));
  const SasrecOptions& o = m->o_;
  const int64_t d = o.embedding_dim, L = o.max_len, B = o.max_batch;
  TransformerBlockOptions bo;
  bo.dim = d;
  bo.num_heads = o.num_heads;
  bo.ffn_hidden = d;
  bo.ffn_activation = kernels::Activation::kRelu;
  bo.causal = true;
  bo.attn_output_projection = false;
  bo.dropout = o.dropout;
  bo.max_batch = B;
  bo.max_len = L;
  // The device path (CUDA, or the CPU with stage_on_cpu) runs everything through kernels/.
  const kernels::Device dev = o.device;
  bo.fast_cpu_path = o.fast_cpu_path && dev == kernels::Device::kCpu && !o.stage_on_cpu;
  bo.layout = o.layout;
  IPS_RETURN_IF_ERROR(ValidateTransformerBlockOptions(bo, "SasrecOptions"));

  DenseParams<T>& p = m->params_;
  m->pos_ = p.Add("pos.weight", L * d);
  for (int64_t i = 0; i < o.num_blocks; ++i)
    m->blocks_.push_back(
        std::make_unique<TransformerBlock<T>>(&p, "blocks." + std::to_string(i), bo));
  m->ln_g_ = p.Add("ln_out.weight", d);
  m->ln_b_ = p.Add("ln_out.bias", d);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  Rng rng(o.seed);
  // nn.init.xavier_normal_ on the [L x d] table: std = sqrt(2 / (fan_in + fan_out)).
  const double std = std::sqrt(2.0 / static_cast<double>(L + d));
  for (int64_t i = 0; i < L * d; ++i) p.value(m->pos_)[i] = static_cast<T>(std * rng.Normal());
  for (auto& blk : m->blocks_) blk->Init(rng);
  std::fill(p.value(m->ln_g_), p.value(m->ln_g_) + d, T(1));
  std::fill(p.value(m->ln_b_), p.value(m->ln_b_) + d, T(0));

  // Weights are initialised on the host (the same on every device), then mirrored.
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  for (auto& blk : m->blocks_) IPS_RETURN_IF_ERROR(blk->AttachDevice(dev));
  m->xs_.resize(static_cast<size_t>(o.num_blocks + 1));
  for (auto& x : m->xs_) {
    IPS_ASSIGN_OR_RETURN(x, kernels::Buffer<T>::Create(dev, B * L * d));
  }
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(dev, {{&m->out_, B * L * d},
                                                      {&m->mean_, B * L},
                                                      {&m->rstd_, B * L},
                                                      {&m->pos_logits_, B * L},
                                                      {&m->neg_logits_, B * L},
                                                      {&m->seq_loss_, B},
                                                      {&m->user_vectors_, B * d},
                                                      {&m->da_, B * L * d},
                                                      {&m->db_, B * L * d},
                                                      {&m->g_rows_, 3 * B * L * d}}));
  IPS_ASSIGN_OR_RETURN(m->input_mask_, kernels::Buffer<uint16_t>::Create(
                                           dev, o.dropout > 0 ? DropoutMaskWords(B * L * d) : 0));
  m->host_seq_loss_.resize(static_cast<size_t>(B));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, 3 * B * L, d,
                                                      /*output_width=*/d, /*categories=*/false));
  return m;
}

template <typename T>
Status Sasrec<T>::CheckInputs(const SeqInputs<T>& in, bool training) const {
  const int64_t B = in.batch, L = o_.max_len;
  if (B < 1 || B > o_.max_batch)
    return InvalidArgumentError("Sasrec: batch " + std::to_string(B) + " outside [1, " +
                                std::to_string(o_.max_batch) + "]");
  if (in.lengths == nullptr || in.item_index == nullptr || in.item_rows == nullptr)
    return InvalidArgumentError("Sasrec: null lengths, item_index or item_rows");
  for (int64_t b = 0; b < B; ++b)
    if (in.lengths[b] < 0 || in.lengths[b] > L)
      return InvalidArgumentError("Sasrec: lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(in.lengths[b]) + " outside [0, " +
                                  std::to_string(L) + "]");
  const int64_t n = (training ? 3 : 1) * B * L;
  for (int64_t i = 0; i < n; ++i)
    if (in.item_index[i] < 0 || in.item_index[i] >= in.num_item_rows)
      return InvalidArgumentError("Sasrec: item_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.item_index[i]) + " outside [0, " +
                                  std::to_string(in.num_item_rows) + ")");
  return Status::Ok();
}

template <typename T>
Status Sasrec<T>::Forward(const kernels::Context& ctx, const SeqInputs<T>& host_in, bool training,
                          T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Sasrec", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in, training));
  const int64_t B = host_in.batch, L = o_.max_len, d = o_.embedding_dim, rows = B * L;
  IPS_ASSIGN_OR_RETURN(
      const CtrInputs<T> staged,
      io_.BeginForward(ctx, SeqAsCtrInputs(host_in), (training ? 3 : 1) * rows, &params_));
  const SeqInputs<T> in = CtrAsSeqInputs(staged);
  const CtrShapes shapes{B, L, d, in.lengths};
  dropout_on_ = training && o_.dropout > 0;
  forward_seed_ = DropoutStepSeed(o_.seed, step_);
  if (training) ++step_;

  // x_0 = drop(E[s] * sqrt(d) + P) * keep.
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(d)));
  T* x0 = xs_[0].data();
  IPS_RETURN_IF_ERROR(SasrecEmbed<T>(ctx, shapes, in.item_index, in.item_rows,
                                     params_.compute_value(pos_), scale, x0));
  if (dropout_on_) {
    // Padded rows are zero, so dropping them keeps them zero: the mask times keep.
    IPS_RETURN_IF_ERROR(TfDropoutMask(ctx, DropoutSiteSeed(forward_seed_, kSiteInput), o_.dropout,
                                      rows * d, input_mask_.data()));
    IPS_RETURN_IF_ERROR(TfDropoutApply<T>(ctx, input_mask_.data(),
                                          static_cast<T>(1.0 / (1.0 - o_.dropout)), x0, nullptr, x0,
                                          rows * d));
  }

  for (size_t i = 0; i < blocks_.size(); ++i)
    IPS_RETURN_IF_ERROR(blocks_[i]->Forward(ctx, B, in.lengths, xs_[i].data(), xs_[i + 1].data(),
                                            training, DropoutSiteSeed(forward_seed_, i + 1)));

  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = xs_.back().data();
  ln.gamma = params_.compute_value(ln_g_);
  ln.beta = params_.compute_value(ln_b_);
  ln.y = out_.data();
  ln.mean = mean_.data();
  ln.rstd = rstd_.data();
  IPS_RETURN_IF_ERROR(kernels::LayerNormForward(ctx, ln));
  IPS_RETURN_IF_ERROR(SasrecLastStep<T>(ctx, shapes, out_.data(), user_vectors_.data()));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, user_vectors_.data(), B));
  if (!training) return Status::Ok();

  // Logits and the loss, summed per sequence then over sequences in order (deterministic).
  int64_t count = 0;
  for (int64_t b = 0; b < B; ++b) count += host_in.lengths[b];
  IPS_RETURN_IF_ERROR(SasrecScore<T>(ctx, shapes, in.item_index, in.item_rows, out_.data(),
                                     pos_logits_.data(), neg_logits_.data(), seq_loss_.data()));
  IPS_RETURN_IF_ERROR(kernels::CopyToHost(ctx, host_seq_loss_.data(), seq_loss_.data(),
                                          sizeof(T) * static_cast<size_t>(B)));
  T total = 0;
  for (int64_t b = 0; b < B; ++b) total += host_seq_loss_[b];
  inv_count_ = T(1) / static_cast<T>(std::max<int64_t>(count, 1));
  if (loss != nullptr) *loss = total * inv_count_;
  have_training_forward_ = true;
  forward_batch_ = B;
  return Status::Ok();
}

template <typename T>
Status Sasrec<T>::Backward(const kernels::Context& ctx, const SeqInputs<T>& host_in,
                           T* d_item_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_)
    return FailedPreconditionError(
        "Sasrec::Backward needs a Forward(training = true) on the same batch first");
  if (d_item_rows == nullptr) return InvalidArgumentError("Sasrec::Backward: null d_item_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Sasrec", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, d = o_.embedding_dim, rows = B * L;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const SeqInputs<T> in = CtrAsSeqInputs(io_.BackwardInputs(SeqAsCtrInputs(host_in)));
  const CtrShapes shapes{B, L, d, in.lengths};

  // dL/dout and the positive/negative rows' gradients.
  T* dout = da_.data();
  T* g_seq = g_rows_.data();
  IPS_RETURN_IF_ERROR(SasrecScoreBackward<T>(ctx, shapes, in.item_index, in.item_rows, out_.data(),
                                             pos_logits_.data(), neg_logits_.data(), inv_count_,
                                             dout, g_seq + rows * d));

  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = xs_.back().data();
  ln.gamma = params_.compute_value(ln_g_);
  ln.mean = mean_.data();
  ln.rstd = rstd_.data();
  ln.dy = dout;
  ln.dx = db_.data();
  ln.dgamma = params_.compute_grad(ln_g_);
  ln.dbeta = params_.compute_grad(ln_b_);
  IPS_RETURN_IF_ERROR(kernels::LayerNormBackward(ctx, ln));

  T* dy = db_.data();
  T* dx = da_.data();
  for (size_t i = blocks_.size(); i-- > 0;) {
    IPS_RETURN_IF_ERROR(blocks_[i]->Backward(ctx, B, in.lengths, xs_[i].data(), dy, dx));
    std::swap(dy, dx);
  }
  // dy = dL/dx_0 (after its dropout).
  if (dropout_on_)
    IPS_RETURN_IF_ERROR(TfDropoutApply<T>(ctx, input_mask_.data(),
                                          static_cast<T>(1.0 / (1.0 - o_.dropout)), dy, nullptr, dy,
                                          rows * d));
  // The input rows' gradients, and dP[t] = sum over sequences valid at t (in b order).
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(d)));
  IPS_RETURN_IF_ERROR(
      SasrecEmbedBackward<T>(ctx, shapes, dy, scale, g_seq, params_.compute_grad(pos_)));

  return io_.ScatterRowGradsAndEnd(ctx, SeqAsCtrInputs(in), 3 * rows, d, g_rows_.data(),
                                   /*g_cat=*/nullptr, d_item_rows, nullptr, &params_);
}

template class Sasrec<float>;
template class Sasrec<double>;

}  // namespace ips::models
