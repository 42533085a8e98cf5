#include "models/din.h"

#include <algorithm>
#include <functional>
#include <string>
#include <utility>

#include "kernels/attention.h"
#include "models/ctr_ops.h"
#include "models/option_names.h"

namespace ips::models {
Status ValidateDinOptions(const DinOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "DinOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "DinOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "DinOptions", "max_batch", "must be >= 1");
  if (o.attention_hidden1 < 1)
    return BadOption(names, "DinOptions", "attention_hidden1", "must be positive");
  if (o.attention_hidden2 < 1)
    return BadOption(names, "DinOptions", "attention_hidden2", "must be positive");
  return CheckMlpHeadOptions("DinOptions", o.mlp_hidden, o.activation, o.max_batch);
}

template <typename T>
Din<T>::Din(const DinOptions& o) : o_(o) {}

template <typename T>
StatusOr<std::unique_ptr<Din<T>>> Din<T>::Create(const DinOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateDinOptions(options));
  std::unique_ptr<Din<T>> m(new Din<T>(options));
  const DinOptions& o = m->o_;
  const int64_t E = 2 * o.embedding_dim, H1 = o.attention_hidden1, H2 = o.attention_hidden2;
  const int64_t B = o.max_batch, L = o.max_len, D = o.embedding_dim;
  // Registration order = the peer's module order: the activation unit, then the top MLP.
  DenseParams<T>& p = m->params_;
  m->attn_.Register(&p, E, H1, H2);
  std::vector<int64_t> sizes = {3 * E};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  m->mlp_ = std::make_unique<Mlp<T>>(&p, "top", sizes, o.activation, B);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  Rng rng(o.seed);
  m->attn_.Init(rng);
  m->mlp_->Init(rng);

  // Weights are initialised on the host (the same on every device), then mirrored.
  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(m->mlp_->AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(
      dev, {
               {&m->hist_, B * L * E},
               {&m->target_, B * E},
               {&m->weights_, B * L},
               {&m->pooled_, B * E},
               {&m->mlp_in_, B * 3 * E},
               {&m->logits_, B},
               {&m->attn_saved_, kernels::DinAttentionSavedSize(B, L, E, H1, H2)},
               {&m->loss_scratch_, 1},
               {&m->attn_workspace_, kernels::DinAttentionBackwardWorkspaceSize(B, L, E, H1, H2)},
               {&m->d_logits_, B},
               {&m->d_mlp_in_, B * 3 * E},
               {&m->d_pooled_, B * E},
               {&m->d_query_, B * E},
               {&m->d_keys_, B * L * E},
               {&m->g_item_, (B * L + B) * D},
               {&m->g_cat_, (B * L + B) * D},
           }));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, B * L + B, D));
  return m;
}

template <typename T>
Status Din<T>::CheckInputs(const DinInputs<T>& in) const {
  return CheckCtrInputs("Din", in, o_.max_batch, o_.max_len, in.batch * o_.max_len + in.batch,
                        CategoryInputs::kRequired);
}

template <typename T>
Status Din<T>::Forward(const kernels::Context& ctx, const DinInputs<T>& host_in, bool training,
                       T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Din", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;
  IPS_ASSIGN_OR_RETURN(const DinInputs<T> in, io_.BeginForward(ctx, host_in, B * L + B, &params_));
  const CtrShapes shapes{B, L, D, in.lengths};

  // Gather [item_emb, cat_emb] per position; padded steps are zero (the attention kernel never
  // reads them; `summed` skips them).
  IPS_RETURN_IF_ERROR(GatherBehaviours(ctx, shapes, StepLayout::kLeftPadded, in.item_index,
                                       in.cat_index, in.item_rows, in.cat_rows, hist_.data(),
                                       target_.data()));

  if (o_.attention_disabled) {
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, weights_.data(), sizeof(T) * B * L));
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, pooled_.data(), sizeof(T) * B * E));
  } else {
    kernels::DinAttentionArgs<T> a = AttentionArgs(B, in.lengths);
    IPS_RETURN_IF_ERROR(
        kernels::DinAttentionForward(ctx, a, weights_.data(), pooled_.data(), attn_saved_.data()));
  }

  // mlp_in = [pooled, target, summed].
  IPS_RETURN_IF_ERROR(
      DinBuildMlpInput(ctx, shapes, hist_.data(), pooled_.data(), target_.data(), mlp_in_.data()));

  const T* out = nullptr;
  IPS_RETURN_IF_ERROR(mlp_->Forward(ctx, B, mlp_in_.data(), training, &out));
  IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, logits_.data(), out, sizeof(T) * B));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, logits_.data(), B));

  if (in.labels != nullptr) {
    IPS_RETURN_IF_ERROR(ClickLoss(ctx, B, logits_.data(), in.labels, loss_scratch_.data(), loss));
    have_training_forward_ = training;
    forward_batch_ = B;
  }
  return Status::Ok();
}

template <typename T>
kernels::DinAttentionArgs<T> Din<T>::AttentionArgs(int64_t batch, const int32_t* lengths) {
  kernels::DinAttentionArgs<T> a;
  a.batch = batch;
  a.max_len = o_.max_len;
  a.dim = 2 * o_.embedding_dim;
  a.padding = kernels::Padding::kLeft;
  a.softmax = o_.attention_softmax;
  a.query = target_.data();
  a.keys = hist_.data();
  a.lengths = lengths;
  attn_.SetWeights(&a);
  return a;
}

template <typename T>
Status Din<T>::Backward(const kernels::Context& ctx, const DinInputs<T>& host_in, T* d_item_rows,
                        T* d_cat_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_ || host_in.labels == nullptr)
    return FailedPreconditionError(
        "Din::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("Din::Backward: null d_item_rows or d_cat_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Din", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const DinInputs<T>& in = io_.BackwardInputs(host_in);
  const CtrShapes shapes{B, L, D, in.lengths};

  IPS_RETURN_IF_ERROR(ClickLossBackward(ctx, B, logits_.data(), in.labels, d_logits_.data()));
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in_.data(), d_logits_.data(), d_mlp_in_.data()));
  IPS_RETURN_IF_ERROR(DinPooledGrad(ctx, shapes, d_mlp_in_.data(), d_pooled_.data()));

  if (o_.attention_disabled) {
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, d_query_.data(), sizeof(T) * B * E));
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(ctx, d_keys_.data(), sizeof(T) * B * L * E));
    IPS_RETURN_IF_ERROR(attn_.ZeroGrads(ctx));
  } else {
    kernels::DinAttentionGrads<T> g = attn_.Grads();
    g.d_query = d_query_.data();
    g.d_keys = d_keys_.data();
    IPS_RETURN_IF_ERROR(kernels::DinAttentionBackward(ctx, AttentionArgs(B, in.lengths),
                                                      attn_saved_.data(), nullptr, d_pooled_.data(),
                                                      g, attn_workspace_.data()));
  }

  // Per-position gradients of the item and category halves: history steps get the attention's
  // key gradient plus (when valid) the `summed` gradient; targets get the MLP's and the query's.
  IPS_RETURN_IF_ERROR(DinRowGrads(ctx, shapes, d_mlp_in_.data(), d_keys_.data(), d_query_.data(),
                                  g_item_.data(), g_cat_.data()));

  return io_.ScatterRowGradsAndEnd(ctx, in, B * L + B, D, g_item_.data(), g_cat_.data(),
                                   d_item_rows, d_cat_rows, &params_);
}

template class Din<float>;
template class Din<double>;

}  // namespace ips::models
