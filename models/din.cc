#include "models/din.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/loss.h"

namespace ips::models {
namespace {

Status Bad(const std::string& field, const std::string& what) {
  return InvalidArgumentError("DinOptions." + field + ": " + what);
}

}  // namespace

Status ValidateDinOptions(const DinOptions& o) {
  if (o.embedding_dim < 1) return Bad("embedding_dim", "must be >= 1");
  if (o.max_len < 1) return Bad("max_len", "must be >= 1");
  if (o.max_batch < 1) return Bad("max_batch", "must be >= 1");
  if (o.attention_hidden1 < 1) return Bad("attention_hidden1", "must be >= 1");
  if (o.attention_hidden2 < 1) return Bad("attention_hidden2", "must be >= 1");
  for (size_t i = 0; i < o.mlp_hidden.size(); ++i)
    if (o.mlp_hidden[i] < 1) return Bad("mlp_hidden[" + std::to_string(i) + "]", "must be >= 1");
  if (o.activation == MlpActivation::kDice && o.max_batch < 2 && !o.mlp_hidden.empty())
    return Bad("max_batch", "Dice needs batches of at least 2 rows");
  return Status::Ok();
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
  m->w1_ = p.Add("attn.net.0.weight", H1 * 4 * E);
  m->b1_ = p.Add("attn.net.0.bias", H1);
  m->w2_ = p.Add("attn.net.2.weight", H2 * H1);
  m->b2_ = p.Add("attn.net.2.bias", H2);
  m->w3_ = p.Add("attn.net.4.weight", H2);
  m->b3_ = p.Add("attn.net.4.bias", 1);
  std::vector<int64_t> sizes = {3 * E};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  m->mlp_ = std::make_unique<Mlp<T>>(&p, "top", sizes, o.activation, B);
  p.Finalize();

  Rng rng(o.seed);
  InitLinearTorchDefault(rng, 4 * E, H1, p.value(m->w1_), p.value(m->b1_));
  InitLinearTorchDefault(rng, H1, H2, p.value(m->w2_), p.value(m->b2_));
  InitLinearTorchDefault(rng, H2, int64_t{1}, p.value(m->w3_), p.value(m->b3_));
  m->mlp_->Init(rng);

  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  m->hist_.resize(size(B * L * E));
  m->target_.resize(size(B * E));
  m->weights_.resize(size(B * L));
  m->pooled_.resize(size(B * E));
  m->mlp_in_.resize(size(B * 3 * E));
  m->logits_.resize(size(B));
  m->attn_saved_.resize(size(kernels::DinAttentionSavedSize(B, L, E, H1, H2)));
  m->attn_workspace_.resize(size(kernels::DinAttentionBackwardWorkspaceSize(B, L, E, H1, H2)));
  m->d_logits_.resize(size(B));
  m->d_mlp_in_.resize(size(B * 3 * E));
  m->d_pooled_.resize(size(B * E));
  m->d_query_.resize(size(B * E));
  m->d_keys_.resize(size(B * L * E));
  m->g_item_.resize(size((B * L + B) * D));
  m->g_cat_.resize(size((B * L + B) * D));
  return m;
}

template <typename T>
Status Din<T>::CheckInputs(const DinInputs<T>& in) const {
  return CheckCtrInputs("Din", in, o_.max_batch, o_.max_len, in.batch * o_.max_len + in.batch,
                        CategoryInputs::kRequired);
}

template <typename T>
Status Din<T>::Forward(const kernels::Context& ctx, const DinInputs<T>& in, bool training,
                       T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckInputs(in));
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(D);

  // Gather [item_emb, cat_emb] per position; padded steps are zero (the attention kernel never
  // reads them; `summed` skips them).
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        T* dst = hist_.data() + (b * L + t) * E;
        const int64_t pos = b * L + t;
        if (t < first_valid) {
          std::memset(dst, 0, 2 * row_bytes);
        } else {
          std::memcpy(dst, in.item_rows + in.item_index[pos] * D, row_bytes);
          std::memcpy(dst + D, in.cat_rows + in.cat_index[pos] * D, row_bytes);
        }
      }
      T* tgt = target_.data() + b * E;
      std::memcpy(tgt, in.item_rows + in.item_index[B * L + b] * D, row_bytes);
      std::memcpy(tgt + D, in.cat_rows + in.cat_index[B * L + b] * D, row_bytes);
    }
  });

  if (o_.attention_disabled) {
    std::fill(weights_.begin(), weights_.begin() + B * L, T(0));
    std::fill(pooled_.begin(), pooled_.begin() + B * E, T(0));
  } else {
    kernels::DinAttentionArgs<T> a;
    a.batch = B;
    a.max_len = L;
    a.dim = E;
    a.hidden1 = o_.attention_hidden1;
    a.hidden2 = o_.attention_hidden2;
    a.padding = kernels::Padding::kLeft;
    a.softmax = o_.attention_softmax;
    a.query = target_.data();
    a.keys = hist_.data();
    a.lengths = in.lengths;
    a.w1 = params_.value(w1_);
    a.b1 = params_.value(b1_);
    a.w2 = params_.value(w2_);
    a.b2 = params_.value(b2_);
    a.w3 = params_.value(w3_);
    a.b3 = params_.value(b3_);
    IPS_RETURN_IF_ERROR(
        kernels::DinAttentionForward(ctx, a, weights_.data(), pooled_.data(), attn_saved_.data()));
  }

  // mlp_in = [pooled, target, summed].
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* row = mlp_in_.data() + b * 3 * E;
      std::memcpy(row, pooled_.data() + b * E, sizeof(T) * E);
      std::memcpy(row + E, target_.data() + b * E, sizeof(T) * E);
      T* summed = row + 2 * E;
      std::fill(summed, summed + E, T(0));
      for (int64_t t = L - in.lengths[b]; t < L; ++t) {
        const T* e = hist_.data() + (b * L + t) * E;
        for (int64_t c = 0; c < E; ++c) summed[c] += e[c];
      }
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
Status Din<T>::Backward(const kernels::Context& ctx, const DinInputs<T>& in, T* d_item_rows,
                        T* d_cat_rows) {
  if (!have_training_forward_ || in.batch != forward_batch_ || in.labels == nullptr)
    return FailedPreconditionError(
        "Din::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("Din::Backward: null d_item_rows or d_cat_rows");
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, E = 2 * D;

  kernels::BceWithLogitsArgs<T> l;
  l.n = B;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits_.data();
  l.labels = in.labels;
  l.dloss = T(1);
  l.dlogits = d_logits_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in_.data(), d_logits_.data(), d_mlp_in_.data()));

  ParallelFor(ctx.pool, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      std::memcpy(d_pooled_.data() + b * E, d_mlp_in_.data() + b * 3 * E, sizeof(T) * E);
  });

  T* attn_grads[6] = {params_.grad(w1_), params_.grad(b1_), params_.grad(w2_),
                      params_.grad(b2_), params_.grad(w3_), params_.grad(b3_)};
  if (o_.attention_disabled) {
    std::fill(d_query_.begin(), d_query_.begin() + B * E, T(0));
    std::fill(d_keys_.begin(), d_keys_.begin() + B * L * E, T(0));
    const int64_t sizes[6] = {o_.attention_hidden1 * 4 * E,
                              o_.attention_hidden1,
                              o_.attention_hidden2 * o_.attention_hidden1,
                              o_.attention_hidden2,
                              o_.attention_hidden2,
                              1};
    for (int i = 0; i < 6; ++i) std::fill(attn_grads[i], attn_grads[i] + sizes[i], T(0));
  } else {
    kernels::DinAttentionArgs<T> a;
    a.batch = B;
    a.max_len = L;
    a.dim = E;
    a.hidden1 = o_.attention_hidden1;
    a.hidden2 = o_.attention_hidden2;
    a.padding = kernels::Padding::kLeft;
    a.softmax = o_.attention_softmax;
    a.query = target_.data();
    a.keys = hist_.data();
    a.lengths = in.lengths;
    a.w1 = params_.value(w1_);
    a.b1 = params_.value(b1_);
    a.w2 = params_.value(w2_);
    a.b2 = params_.value(b2_);
    a.w3 = params_.value(w3_);
    a.b3 = params_.value(b3_);
    kernels::DinAttentionGrads<T> g;
    g.d_query = d_query_.data();
    g.d_keys = d_keys_.data();
    g.d_w1 = attn_grads[0];
    g.d_b1 = attn_grads[1];
    g.d_w2 = attn_grads[2];
    g.d_b2 = attn_grads[3];
    g.d_w3 = attn_grads[4];
    g.d_b3 = attn_grads[5];
    IPS_RETURN_IF_ERROR(kernels::DinAttentionBackward(ctx, a, attn_saved_.data(), nullptr,
                                                      d_pooled_.data(), g, attn_workspace_.data()));
  }

  // Per-position gradients of the item and category halves: history steps get the attention's
  // key gradient plus (when valid) the `summed` gradient; targets get the MLP's and the query's.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* d_row = d_mlp_in_.data() + b * 3 * E;
      const T* d_target = d_row + E;
      const T* d_summed = d_row + 2 * E;
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t pos = b * L + t;
        const T* dk = d_keys_.data() + pos * E;
        T* gi = g_item_.data() + pos * D;
        T* gc = g_cat_.data() + pos * D;
        if (t < first_valid) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
        } else {
          for (int64_t c = 0; c < D; ++c) {
            gi[c] = dk[c] + d_summed[c];
            gc[c] = dk[D + c] + d_summed[D + c];
          }
        }
      }
      const T* dq = d_query_.data() + b * E;
      T* gi = g_item_.data() + (B * L + b) * D;
      T* gc = g_cat_.data() + (B * L + b) * D;
      for (int64_t c = 0; c < D; ++c) {
        gi[c] = d_target[c] + dq[c];
        gc[c] = d_target[D + c] + dq[D + c];
      }
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

template class Din<float>;
template class Din<double>;

}  // namespace ips::models
