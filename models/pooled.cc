#include "models/pooled.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/thread_pool.h"
#include "kernels/embedding.h"
#include "kernels/loss.h"

namespace ips::models {
namespace {

Status Bad(const std::string& field, const std::string& what) {
  return InvalidArgumentError("PooledOptions." + field + ": " + what);
}

}  // namespace

const char* HistoryPoolingName(HistoryPooling p) {
  return p == HistoryPooling::kSum ? "sum" : "mean";
}

Status ValidatePooledOptions(const PooledOptions& o) {
  if (o.embedding_dim < 1) return Bad("embedding_dim", "must be >= 1");
  if (o.max_len < 1) return Bad("max_len", "must be >= 1");
  if (o.max_batch < 1) return Bad("max_batch", "must be >= 1");
  if (o.pooling != HistoryPooling::kSum && o.pooling != HistoryPooling::kMean)
    return Bad("pooling", "must be kSum or kMean");
  for (size_t i = 0; i < o.mlp_hidden.size(); ++i)
    if (o.mlp_hidden[i] < 1) return Bad("mlp_hidden[" + std::to_string(i) + "]", "must be >= 1");
  if (o.activation == MlpActivation::kDice && o.max_batch < 2 && !o.mlp_hidden.empty())
    return Bad("max_batch", "Dice needs batches of at least 2 rows");
  return Status::Ok();
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
  p.Finalize();
  Rng rng(o.seed);
  m->mlp_->Init(rng);

  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  m->pooled_.resize(size(B * E));
  m->mlp_in_.resize(size(B * 2 * E));
  m->logits_.resize(size(B));
  m->d_logits_.resize(size(B));
  m->d_mlp_in_.resize(size(B * 2 * E));
  m->g_item_.resize(size((B * L + B) * D));
  m->g_cat_.resize(size((B * L + B) * D));
  return m;
}

template <typename T>
Status PooledModel<T>::CheckInputs(const CtrInputs<T>& in) const {
  return CheckCtrInputs("PooledModel", in, o_.max_batch, o_.max_len,
                        in.batch * o_.max_len + in.batch, CategoryInputs::kRequired);
}

template <typename T>
Status PooledModel<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                               T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckInputs(in));
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;
  const bool mean = o_.pooling == HistoryPooling::kMean;

  // mlp_in = [pooled, target]: the pooled half sums the valid (rightmost) steps directly from the
  // row tables; padded positions are never read.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = mlp_in_.data() + b * 2 * E;
      T* pooled = row;
      std::fill(pooled, pooled + E, T(0));
      const int64_t len = in.lengths[b];
      for (int64_t t = L - len; t < L; ++t) {
        const T* ie = in.item_rows + in.item_index[b * L + t] * D;
        const T* ce = in.cat_rows + in.cat_index[b * L + t] * D;
        for (int64_t c = 0; c < D; ++c) {
          pooled[c] += ie[c];
          pooled[D + c] += ce[c];
        }
      }
      if (mean && len > 0) {
        const T inv = T(1) / static_cast<T>(len);
        for (int64_t c = 0; c < E; ++c) pooled[c] *= inv;
      }
      std::memcpy(pooled_.data() + b * E, pooled, sizeof(T) * E);
      T* tgt = row + E;
      std::memcpy(tgt, in.item_rows + in.item_index[B * L + b] * D, sizeof(T) * D);
      std::memcpy(tgt + D, in.cat_rows + in.cat_index[B * L + b] * D, sizeof(T) * D);
    }
  });

  const T* out = nullptr;
  IPS_RETURN_IF_ERROR(mlp_->Forward(ctx, B, mlp_in_.data(), training, &out));
  std::memcpy(logits_.data(), out, sizeof(T) * static_cast<size_t>(B));

  if (in.labels != nullptr) {
    kernels::BceWithLogitsArgs<T> l;
    l.n = B;
    l.reduction = kernels::Reduction::kMean;
    l.logits = logits_.data();
    l.labels = in.labels;
    l.loss = loss_scratch_;
    IPS_RETURN_IF_ERROR(kernels::BceWithLogitsForward(ctx, l));
    if (loss != nullptr) *loss = loss_scratch_[0];
    have_training_forward_ = training;
    forward_batch_ = B;
  }
  return Status::Ok();
}

template <typename T>
Status PooledModel<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                                T* d_cat_rows) {
  if (!have_training_forward_ || in.batch != forward_batch_ || in.labels == nullptr)
    return FailedPreconditionError(
        "PooledModel::Backward needs a Forward(training = true) with labels on the same batch "
        "first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("PooledModel::Backward: null d_item_rows or d_cat_rows");
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;
  const bool mean = o_.pooling == HistoryPooling::kMean;

  kernels::BceWithLogitsArgs<T> l;
  l.n = B;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits_.data();
  l.labels = in.labels;
  l.dloss = T(1);
  l.dlogits = d_logits_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in_.data(), d_logits_.data(), d_mlp_in_.data()));

  // Every valid history step receives the pooled gradient (scaled by 1/len for the mean); padded
  // steps get zero; targets get the MLP input's target half.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* d_pooled = d_mlp_in_.data() + b * 2 * E;
      const T* d_target = d_pooled + E;
      const int64_t len = in.lengths[b];
      const T scale = mean && len > 0 ? T(1) / static_cast<T>(len) : T(1);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t pos = b * L + t;
        T* gi = g_item_.data() + pos * D;
        T* gc = g_cat_.data() + pos * D;
        if (t < L - len) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
        } else {
          for (int64_t c = 0; c < D; ++c) {
            gi[c] = scale * d_pooled[c];
            gc[c] = scale * d_pooled[D + c];
          }
        }
      }
      std::memcpy(g_item_.data() + (B * L + b) * D, d_target, sizeof(T) * D);
      std::memcpy(g_cat_.data() + (B * L + b) * D, d_target + D, sizeof(T) * D);
    }
  });

  kernels::ScatterAddArgs<T> s;
  s.grad_rows = g_item_.data();
  s.inverse = in.item_index;
  s.n = B * L + B;
  s.dim = D;
  s.num_unique = in.num_item_rows;
  s.grad_unique = d_item_rows;
  IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  s.grad_rows = g_cat_.data();
  s.inverse = in.cat_index;
  s.num_unique = in.num_cat_rows;
  s.grad_unique = d_cat_rows;
  return kernels::ScatterAdd(ctx, s);
}

template class PooledModel<float>;
template class PooledModel<double>;

}  // namespace ips::models
