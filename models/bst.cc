#include "models/bst.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "models/option_names.h"
#include "models/transformer_ops.h"

namespace ips::models {
namespace {

TransformerBlockOptions BlockOptions(const BstOptions& o) {
  TransformerBlockOptions bo;
  bo.dim = 2 * o.embedding_dim;
  bo.num_heads = o.num_heads;
  bo.ffn_hidden = o.ffn_hidden > 0 ? o.ffn_hidden : 2 * o.embedding_dim;
  bo.ffn_activation = kernels::Activation::kLeakyRelu;
  bo.causal = false;
  bo.attn_output_projection = true;
  bo.dropout = o.dropout;
  bo.max_batch = o.max_batch;
  bo.max_len = o.max_len + 1;
  // The device path (CUDA, or the CPU with stage_on_cpu) runs everything through kernels/.
  bo.fast_cpu_path = o.fast_cpu_path && o.device == kernels::Device::kCpu && !o.stage_on_cpu;
  bo.layout = o.layout;
  return bo;
}

int64_t MlpInputWidth(const BstOptions& o) {
  const int64_t E = 2 * o.embedding_dim;
  return o.pooling == BstPooling::kFlatten ? (o.max_len + 1) * E : 2 * E;
}

}  // namespace

Status ValidateBstOptions(const BstOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "BstOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "BstOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "BstOptions", "max_batch", "must be >= 1");
  if (o.num_blocks < 1)
    return BadOption(names, "BstOptions", "num_blocks",
                     "must be >= 1, got " + std::to_string(o.num_blocks));
  if (o.num_heads < 1) return BadOption(names, "BstOptions", "num_heads", "must be positive");
  // The heads split the blocks' width: the behaviour's item and category embeddings.
  if ((2 * o.embedding_dim) % o.num_heads != 0)
    return BadOption(names, "BstOptions", "num_heads",
                     std::to_string(o.num_heads) + " does not divide BST's block width 2 * " +
                         MentionedOption(names, "embedding_dim") + " = " +
                         std::to_string(2 * o.embedding_dim));
  if (o.ffn_hidden < 0)
    return BadOption(names, "BstOptions", "ffn_hidden", "must be >= 0 (0: the behaviour width)");
  if (!(o.dropout >= 0 && o.dropout < 1))
    return BadOption(names, "BstOptions", "dropout",
                     "must be in [0, 1), got " + OptionNumber(o.dropout));
  IPS_RETURN_IF_ERROR(CheckMlpHeadOptions("BstOptions", o.mlp_hidden, o.activation, o.max_batch));
  return ValidateTransformerBlockOptions(BlockOptions(o), "BstOptions");
}

template <typename T>
Bst<T>::Bst(const BstOptions& o) : o_(o) {}

template <typename T>
StatusOr<std::unique_ptr<Bst<T>>> Bst<T>::Create(const BstOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateBstOptions(options));
  std::unique_ptr<Bst<T>> m(new Bst<T>(options));
  const BstOptions& o = m->o_;
  const int64_t D = o.embedding_dim, E = 2 * D, L = o.max_len, S = L + 1, B = o.max_batch;
  const TransformerBlockOptions bo = BlockOptions(o);

  DenseParams<T>& p = m->params_;
  m->pos_ = p.Add("pos.weight", S * E);
  for (int64_t i = 0; i < o.num_blocks; ++i)
    m->blocks_.push_back(
        std::make_unique<TransformerBlock<T>>(&p, "blocks." + std::to_string(i), bo));
  std::vector<int64_t> sizes = {MlpInputWidth(o)};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  m->mlp_ = std::make_unique<Mlp<T>>(&p, "top", sizes, o.activation, B);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  Rng rng(o.seed);
  const double std = std::sqrt(2.0 / static_cast<double>(S + E));
  for (int64_t i = 0; i < S * E; ++i) p.value(m->pos_)[i] = static_cast<T>(std * rng.Normal());
  for (auto& blk : m->blocks_) blk->Init(rng);
  m->mlp_->Init(rng);

  // Weights are initialised on the host (the same on every device), then mirrored.
  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(m->mlp_->AttachDevice(dev, o.stage_on_cpu));
  for (auto& blk : m->blocks_) IPS_RETURN_IF_ERROR(blk->AttachDevice(dev));
  IPS_ASSIGN_OR_RETURN(m->seq_lengths_, kernels::Buffer<int32_t>::Create(dev, B));
  m->xs_.resize(static_cast<size_t>(o.num_blocks + 1));
  for (auto& x : m->xs_) {
    IPS_ASSIGN_OR_RETURN(x, kernels::Buffer<T>::Create(dev, B * S * E));
  }
  const bool mean = o.pooling == BstPooling::kMeanWithTarget;
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(dev, {{&m->pooled_, mean ? B * 2 * E : 0},
                                                      {&m->logits_, B},
                                                      {&m->loss_scratch_, 1},
                                                      {&m->d_logits_, B},
                                                      {&m->d_mlp_in_, B * MlpInputWidth(o)},
                                                      {&m->da_, B * S * E},
                                                      {&m->db_, B * S * E},
                                                      {&m->g_item_, (B * L + B) * D},
                                                      {&m->g_cat_, (B * L + B) * D}}));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, B * L + B, D));
  return m;
}

template <typename T>
Status Bst<T>::CheckInputs(const CtrInputs<T>& in) const {
  return CheckCtrInputs("Bst", in, o_.max_batch, o_.max_len, in.batch * o_.max_len + in.batch,
                        CategoryInputs::kRequired);
}

template <typename T>
Status Bst<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& host_in, bool training,
                       T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Bst", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim;
  IPS_ASSIGN_OR_RETURN(const CtrInputs<T> in, io_.BeginForward(ctx, host_in, B * L + B, &params_));
  const CtrShapes shapes{B, L, D, in.lengths};
  forward_seed_ = DropoutStepSeed(o_.seed, step_);
  if (training) ++step_;

  // x_0: behaviours then the target, plus positions; zero at padded steps.
  IPS_RETURN_IF_ERROR(BstEmbed<T>(ctx, shapes, in.item_index, in.cat_index, in.item_rows,
                                  in.cat_rows, params_.compute_value(pos_), seq_lengths_.data(),
                                  xs_[0].data()));

  for (size_t i = 0; i < blocks_.size(); ++i)
    IPS_RETURN_IF_ERROR(blocks_[i]->Forward(ctx, B, seq_lengths_.data(), xs_[i].data(),
                                            xs_[i + 1].data(), training,
                                            DropoutSiteSeed(forward_seed_, i + 1)));

  const T* mlp_in = xs_.back().data();  // kFlatten: [B x S x E] is already [B x S*E]
  if (o_.pooling == BstPooling::kMeanWithTarget) {
    IPS_RETURN_IF_ERROR(BstMeanPool<T>(ctx, shapes, xs_.back().data(), pooled_.data()));
    mlp_in = pooled_.data();
  }
  const T* out = nullptr;
  IPS_RETURN_IF_ERROR(mlp_->Forward(ctx, B, mlp_in, training, &out));
  IPS_RETURN_IF_ERROR(
      kernels::CopyOnDevice(ctx, logits_.data(), out, sizeof(T) * static_cast<size_t>(B)));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, logits_.data(), B));

  if (in.labels != nullptr) {
    IPS_RETURN_IF_ERROR(ClickLoss(ctx, B, logits_.data(), in.labels, loss_scratch_.data(), loss));
    have_training_forward_ = training;
    forward_batch_ = B;
  }
  return Status::Ok();
}

template <typename T>
Status Bst<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& host_in, T* d_item_rows,
                        T* d_cat_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_ || host_in.labels == nullptr)
    return FailedPreconditionError(
        "Bst::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("Bst::Backward: null d_item_rows or d_cat_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Bst", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const CtrInputs<T>& in = io_.BackwardInputs(host_in);
  const CtrShapes shapes{B, L, D, in.lengths};

  IPS_RETURN_IF_ERROR(ClickLossBackward(ctx, B, logits_.data(), in.labels, d_logits_.data()));
  const T* mlp_in = o_.pooling == BstPooling::kFlatten ? xs_.back().data() : pooled_.data();
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in, d_logits_.data(), d_mlp_in_.data()));

  // dL/d(last block output).
  T* dy = d_mlp_in_.data();
  if (o_.pooling == BstPooling::kMeanWithTarget) {
    dy = da_.data();
    IPS_RETURN_IF_ERROR(BstMeanPoolBackward<T>(ctx, shapes, d_mlp_in_.data(), dy));
  }
  T* bufs[2] = {da_.data(), db_.data()};
  int next = dy == da_.data() ? 1 : 0;
  for (size_t i = blocks_.size(); i-- > 0;) {
    T* dx = bufs[next];
    IPS_RETURN_IF_ERROR(blocks_[i]->Backward(ctx, B, seq_lengths_.data(), xs_[i].data(), dy, dx));
    dy = dx;
    next ^= 1;
  }

  // dy = dL/dx_0: split into item and category halves per position; positions sum over rows.
  IPS_RETURN_IF_ERROR(BstEmbedBackward<T>(ctx, shapes, dy, g_item_.data(), g_cat_.data(),
                                          params_.compute_grad(pos_)));

  return io_.ScatterRowGradsAndEnd(ctx, in, B * L + B, D, g_item_.data(), g_cat_.data(),
                                   d_item_rows, d_cat_rows, &params_);
}

template class Bst<float>;
template class Bst<double>;

}  // namespace ips::models
