#include "models/pooled.h"

#include <algorithm>
#include <functional>
#include <string>
#include <utility>

#include "models/ctr_ops.h"
#include "models/option_names.h"

namespace ips::models {
const char* HistoryPoolingName(HistoryPooling p) {
  return p == HistoryPooling::kSum ? "sum" : "mean";
}

Status ValidatePooledOptions(const PooledOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "PooledOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "PooledOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "PooledOptions", "max_batch", "must be >= 1");
  if (o.pooling != HistoryPooling::kSum && o.pooling != HistoryPooling::kMean)
    return BadOption(names, "PooledOptions", "pooling", "must be kSum or kMean");
  return CheckMlpHeadOptions("PooledOptions", o.mlp_hidden, o.activation, o.max_batch);
}

template <typename T>
PooledModel<T>::PooledModel(const PooledOptions& o) : o_(o) {}

template <typename T>
StatusOr<std::unique_ptr<PooledModel<T>>> PooledModel<T>::Create(const PooledOptions& options) {
  IPS_RETURN_IF_ERROR(ValidatePooledOptions(options));
  std::unique_ptr<PooledModel<T>> m(new PooledModel<T>(options));
  const PooledOptions& o = m->o_;
  const int64_t E = 2 * o.embedding_dim, B = o.max_batch, L = o.max_len, D = o.embedding_dim;
  DenseParams<T>& p = m->params_;
  std::vector<int64_t> sizes = {2 * E};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  m->mlp_ = std::make_unique<Mlp<T>>(&p, "top", sizes, o.activation, B);
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));
  Rng rng(o.seed);
  m->mlp_->Init(rng);

  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(m->mlp_->AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(dev, {
                                                         {&m->pooled_, B * E},
                                                         {&m->mlp_in_, B * 2 * E},
                                                         {&m->logits_, B},
                                                         {&m->loss_scratch_, 1},
                                                         {&m->d_logits_, B},
                                                         {&m->d_mlp_in_, B * 2 * E},
                                                         {&m->g_item_, (B * L + B) * D},
                                                         {&m->g_cat_, (B * L + B) * D},
                                                     }));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, B * L + B, D));
  return m;
}

template <typename T>
Status PooledModel<T>::CheckInputs(const CtrInputs<T>& in) const {
  return CheckCtrInputs("PooledModel", in, o_.max_batch, o_.max_len,
                        in.batch * o_.max_len + in.batch, CategoryInputs::kRequired);
}

template <typename T>
Status PooledModel<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& host_in,
                               bool training, T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("PooledModel", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim;
  IPS_ASSIGN_OR_RETURN(const CtrInputs<T> in, io_.BeginForward(ctx, host_in, B * L + B, &params_));
  const CtrShapes shapes{B, L, D, in.lengths};

  // mlp_in = [pooled, target]: the pooled half sums the valid (rightmost) steps directly from the
  // row tables; padded positions are never read.
  IPS_RETURN_IF_ERROR(PooledBuildMlpInput(ctx, shapes, o_.pooling == HistoryPooling::kMean,
                                          in.item_index, in.cat_index, in.item_rows, in.cat_rows,
                                          mlp_in_.data(), pooled_.data()));

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
Status PooledModel<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& host_in,
                                T* d_item_rows, T* d_cat_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_ || host_in.labels == nullptr)
    return FailedPreconditionError(
        "PooledModel::Backward needs a Forward(training = true) with labels on the same batch "
        "first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("PooledModel::Backward: null d_item_rows or d_cat_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("PooledModel", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim;
  const CtrInputs<T>& in = io_.BackwardInputs(host_in);
  const CtrShapes shapes{B, L, D, in.lengths};

  IPS_RETURN_IF_ERROR(ClickLossBackward(ctx, B, logits_.data(), in.labels, d_logits_.data()));
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in_.data(), d_logits_.data(), d_mlp_in_.data()));

  // Every valid history step receives the pooled gradient (scaled by 1/len for the mean); padded
  // steps get zero; targets get the MLP input's target half.
  IPS_RETURN_IF_ERROR(PooledRowGrads(ctx, shapes, o_.pooling == HistoryPooling::kMean,
                                     d_mlp_in_.data(), g_item_.data(), g_cat_.data()));

  return io_.ScatterRowGradsAndEnd(ctx, in, B * L + B, D, g_item_.data(), g_cat_.data(),
                                   d_item_rows, d_cat_rows, &params_);
}

template class PooledModel<float>;
template class PooledModel<double>;

}  // namespace ips::models
