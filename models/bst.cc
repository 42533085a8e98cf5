#include "models/bst.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/thread_pool.h"
#include "kernels/embedding.h"
#include "kernels/loss.h"

namespace ips::models {
namespace {

Status Bad(const std::string& field, const std::string& what) {
  return InvalidArgumentError("BstOptions." + field + ": " + what);
}

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
  bo.fast_cpu_path = o.fast_cpu_path;
  bo.layout = o.layout;
  return bo;
}

int64_t MlpInputWidth(const BstOptions& o) {
  const int64_t E = 2 * o.embedding_dim;
  return o.pooling == BstPooling::kFlatten ? (o.max_len + 1) * E : 2 * E;
}

}  // namespace

Status ValidateBstOptions(const BstOptions& o) {
  if (o.embedding_dim < 1) return Bad("embedding_dim", "must be >= 1");
  if (o.max_len < 1) return Bad("max_len", "must be >= 1");
  if (o.max_batch < 1) return Bad("max_batch", "must be >= 1");
  if (o.num_blocks < 1) return Bad("num_blocks", "must be >= 1");
  if (o.num_heads < 1) return Bad("num_heads", "must be >= 1");
  if ((2 * o.embedding_dim) % o.num_heads != 0)
    return Bad("num_heads", std::to_string(o.num_heads) + " does not divide the behaviour width " +
                                std::to_string(2 * o.embedding_dim));
  if (o.ffn_hidden < 0) return Bad("ffn_hidden", "must be >= 0 (0: the behaviour width)");
  if (!(o.dropout >= 0 && o.dropout < 1))
    return Bad("dropout", std::to_string(o.dropout) + " outside [0, 1)");
  for (size_t i = 0; i < o.mlp_hidden.size(); ++i)
    if (o.mlp_hidden[i] < 1) return Bad("mlp_hidden[" + std::to_string(i) + "]", "must be >= 1");
  if (o.activation == MlpActivation::kDice && o.max_batch < 2 && !o.mlp_hidden.empty())
    return Bad("max_batch", "Dice needs batches of at least 2 rows");
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
  p.Finalize();

  Rng rng(o.seed);
  const double std = std::sqrt(2.0 / static_cast<double>(S + E));
  for (int64_t i = 0; i < S * E; ++i) p.value(m->pos_)[i] = static_cast<T>(std * rng.Normal());
  for (auto& blk : m->blocks_) blk->Init(rng);
  m->mlp_->Init(rng);

  const auto n = [](int64_t v) { return static_cast<size_t>(v); };
  m->seq_lengths_.resize(n(B));
  m->xs_.resize(n(o.num_blocks + 1));
  for (auto& x : m->xs_) x.resize(n(B * S * E));
  if (o.pooling == BstPooling::kMeanWithTarget) m->pooled_.resize(n(B * 2 * E));
  m->logits_.resize(n(B));
  m->d_logits_.resize(n(B));
  m->d_mlp_in_.resize(n(B * MlpInputWidth(o)));
  m->da_.resize(n(B * S * E));
  m->db_.resize(n(B * S * E));
  m->g_item_.resize(n((B * L + B) * D));
  m->g_cat_.resize(n((B * L + B) * D));
  return m;
}

template <typename T>
Status Bst<T>::CheckInputs(const CtrInputs<T>& in) const {
  return CheckCtrInputs("Bst", in, o_.max_batch, o_.max_len, in.batch * o_.max_len + in.batch,
                        CategoryInputs::kRequired);
}

template <typename T>
Status Bst<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                       T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckInputs(in));
  const int64_t B = in.batch, L = o_.max_len, S = L + 1, D = o_.embedding_dim, E = 2 * D;
  forward_seed_ = DropoutStepSeed(o_.seed, step_);
  if (training) ++step_;

  // x_0: behaviours then the target, plus positions; zero at padded steps.
  const T* pos = params_.value(pos_);
  T* x0 = xs_[0].data();
  ParallelFor(ctx.pool, B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      seq_lengths_[b] = in.lengths[b] + 1;
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < S; ++t) {
        T* dst = x0 + (b * S + t) * E;
        if (t < first_valid) {
          std::fill(dst, dst + E, T(0));
          continue;
        }
        const int64_t i = t < L ? b * L + t : B * L + b;
        const T* ei = in.item_rows + in.item_index[i] * D;
        const T* ec = in.cat_rows + in.cat_index[i] * D;
        const T* p = pos + t * E;
        for (int64_t c = 0; c < D; ++c) {
          dst[c] = ei[c] + p[c];
          dst[D + c] = ec[c] + p[D + c];
        }
      }
    }
  });

  for (size_t i = 0; i < blocks_.size(); ++i)
    IPS_RETURN_IF_ERROR(blocks_[i]->Forward(ctx, B, seq_lengths_.data(), xs_[i].data(),
                                            xs_[i + 1].data(), training,
                                            DropoutSiteSeed(forward_seed_, i + 1)));

  const T* xl = xs_.back().data();
  const T* mlp_in = xl;  // kFlatten: [B x S x E] is already [B x S*E]
  if (o_.pooling == BstPooling::kMeanWithTarget) {
    ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* row = pooled_.data() + b * 2 * E;
        std::fill(row, row + E, T(0));
        const int64_t len = in.lengths[b];
        for (int64_t t = L - len; t < L; ++t) {
          const T* x = xl + (b * S + t) * E;
          for (int64_t c = 0; c < E; ++c) row[c] += x[c];
        }
        if (len > 0) {
          const T inv = T(1) / static_cast<T>(len);
          for (int64_t c = 0; c < E; ++c) row[c] *= inv;
        }
        std::memcpy(row + E, xl + (b * S + L) * E, sizeof(T) * static_cast<size_t>(E));
      }
    });
    mlp_in = pooled_.data();
  }
  const T* out = nullptr;
  IPS_RETURN_IF_ERROR(mlp_->Forward(ctx, B, mlp_in, training, &out));
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
Status Bst<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                        T* d_cat_rows) {
  if (!have_training_forward_ || in.batch != forward_batch_ || in.labels == nullptr)
    return FailedPreconditionError(
        "Bst::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || d_cat_rows == nullptr)
    return InvalidArgumentError("Bst::Backward: null d_item_rows or d_cat_rows");
  const int64_t B = in.batch, L = o_.max_len, S = L + 1, D = o_.embedding_dim, E = 2 * D;

  kernels::BceWithLogitsArgs<T> l;
  l.n = B;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits_.data();
  l.labels = in.labels;
  l.dloss = T(1);
  l.dlogits = d_logits_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));
  const T* mlp_in = o_.pooling == BstPooling::kFlatten ? xs_.back().data() : pooled_.data();
  IPS_RETURN_IF_ERROR(mlp_->Backward(ctx, B, mlp_in, d_logits_.data(), d_mlp_in_.data()));

  // dL/d(last block output).
  T* dy = d_mlp_in_.data();
  if (o_.pooling == BstPooling::kMeanWithTarget) {
    dy = da_.data();
    ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* dp = d_mlp_in_.data() + b * 2 * E;
        const int64_t len = in.lengths[b];
        const T inv = len > 0 ? T(1) / static_cast<T>(len) : T(0);
        for (int64_t t = 0; t < L; ++t) {
          T* g = dy + (b * S + t) * E;
          if (t < L - len) {
            std::fill(g, g + E, T(0));
          } else {
            for (int64_t c = 0; c < E; ++c) g[c] = dp[c] * inv;
          }
        }
        std::memcpy(dy + (b * S + L) * E, dp + E, sizeof(T) * static_cast<size_t>(E));
      }
    });
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
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < S; ++t) {
        const int64_t i = t < L ? b * L + t : B * L + b;
        T* gi = g_item_.data() + i * D;
        T* gc = g_cat_.data() + i * D;
        if (t < first_valid) {
          std::fill(gi, gi + D, T(0));
          std::fill(gc, gc + D, T(0));
          continue;
        }
        const T* g = dy + (b * S + t) * E;
        std::memcpy(gi, g, sizeof(T) * static_cast<size_t>(D));
        std::memcpy(gc, g + D, sizeof(T) * static_cast<size_t>(D));
      }
    }
  });
  T* dpos = params_.grad(pos_);
  ParallelFor(ctx.pool, S, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* dp = dpos + t * E;
      std::fill(dp, dp + E, T(0));
      for (int64_t b = 0; b < B; ++b) {
        if (t < L - in.lengths[b]) continue;
        const T* g = dy + (b * S + t) * E;
        for (int64_t c = 0; c < E; ++c) dp[c] += g[c];
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

template class Bst<float>;
template class Bst<double>;

}  // namespace ips::models
