#include "models/sasrec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/thread_pool.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/norm.h"

namespace ips::models {
namespace {

Status Bad(const std::string& field, const std::string& what) {
  return InvalidArgumentError("SasrecOptions." + field + ": " + what);
}

// Dropout site of the embedding input (blocks use sites 1..num_blocks as their seeds).
constexpr uint64_t kSiteInput = 0;

// log(1 + exp(z)) without overflow.
template <typename T>
T Softplus(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::fabs(z)));
}

}  // namespace

Status ValidateSasrecOptions(const SasrecOptions& o) {
  if (o.embedding_dim < 1) return Bad("embedding_dim", "must be >= 1");
  if (o.max_len < 1) return Bad("max_len", "must be >= 1");
  if (o.max_batch < 1) return Bad("max_batch", "must be >= 1");
  if (o.num_blocks < 1) return Bad("num_blocks", "must be >= 1");
  if (o.num_heads < 1) return Bad("num_heads", "must be >= 1");
  if (o.embedding_dim % o.num_heads != 0)
    return Bad("num_heads", std::to_string(o.num_heads) + " does not divide embedding_dim " +
                                std::to_string(o.embedding_dim));
  if (!(o.dropout >= 0 && o.dropout < 1))
    return Bad("dropout", std::to_string(o.dropout) + " outside [0, 1)");
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
  bo.fast_cpu_path = o.fast_cpu_path;
  bo.layout = o.layout;
  IPS_RETURN_IF_ERROR(ValidateTransformerBlockOptions(bo, "SasrecOptions"));

  DenseParams<T>& p = m->params_;
  m->pos_ = p.Add("pos.weight", L * d);
  for (int64_t i = 0; i < o.num_blocks; ++i)
    m->blocks_.push_back(
        std::make_unique<TransformerBlock<T>>(&p, "blocks." + std::to_string(i), bo));
  m->ln_g_ = p.Add("ln_out.weight", d);
  m->ln_b_ = p.Add("ln_out.bias", d);
  p.Finalize();

  Rng rng(o.seed);
  // nn.init.xavier_normal_ on the [L x d] table: std = sqrt(2 / (fan_in + fan_out)).
  const double std = std::sqrt(2.0 / static_cast<double>(L + d));
  for (int64_t i = 0; i < L * d; ++i) p.value(m->pos_)[i] = static_cast<T>(std * rng.Normal());
  for (auto& blk : m->blocks_) blk->Init(rng);
  std::fill(p.value(m->ln_g_), p.value(m->ln_g_) + d, T(1));
  std::fill(p.value(m->ln_b_), p.value(m->ln_b_) + d, T(0));

  const auto n = [](int64_t v) { return static_cast<size_t>(v); };
  m->xs_.resize(n(o.num_blocks + 1));
  for (auto& x : m->xs_) x.resize(n(B * L * d));
  m->out_.resize(n(B * L * d));
  m->mean_.resize(n(B * L));
  m->rstd_.resize(n(B * L));
  m->pos_logits_.resize(n(B * L));
  m->neg_logits_.resize(n(B * L));
  m->user_vectors_.resize(n(B * d));
  m->da_.resize(n(B * L * d));
  m->db_.resize(n(B * L * d));
  m->g_rows_.resize(n(3 * B * L * d));
  if (o.dropout > 0) m->input_mask_.resize(n(DropoutMaskWords(B * L * d)));
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
Status Sasrec<T>::Forward(const kernels::Context& ctx, const SeqInputs<T>& in, bool training,
                          T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckInputs(in, training));
  const int64_t B = in.batch, L = o_.max_len, d = o_.embedding_dim, rows = B * L;
  dropout_on_ = training && o_.dropout > 0;
  forward_seed_ = DropoutStepSeed(o_.seed, step_);
  if (training) ++step_;

  // x_0 = drop(E[s] * sqrt(d) + P) * keep.
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(d)));
  const T* pos = params_.value(pos_);
  T* x0 = xs_[0].data();
  ParallelFor(ctx.pool, B, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        T* dst = x0 + (b * L + t) * d;
        if (t < first_valid) {
          std::fill(dst, dst + d, T(0));
          continue;
        }
        const T* e = in.item_rows + in.item_index[b * L + t] * d;
        const T* p = pos + t * d;
        for (int64_t c = 0; c < d; ++c) dst[c] = e[c] * scale + p[c];
      }
    }
  });
  if (dropout_on_) {
    // Padded rows are zero, so dropping them keeps them zero: the mask times keep.
    DropoutMask(ctx, DropoutSiteSeed(forward_seed_, kSiteInput), o_.dropout, rows * d,
                input_mask_.data());
    DropoutApply<T>(ctx, input_mask_.data(), static_cast<T>(1.0 / (1.0 - o_.dropout)), x0, nullptr,
                    x0, 0, rows * d);
  }

  for (size_t i = 0; i < blocks_.size(); ++i)
    IPS_RETURN_IF_ERROR(blocks_[i]->Forward(ctx, B, in.lengths, xs_[i].data(), xs_[i + 1].data(),
                                            training, DropoutSiteSeed(forward_seed_, i + 1)));

  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = xs_.back().data();
  ln.gamma = params_.value(ln_g_);
  ln.beta = params_.value(ln_b_);
  ln.y = out_.data();
  ln.mean = mean_.data();
  ln.rstd = rstd_.data();
  IPS_RETURN_IF_ERROR(kernels::LayerNormForward(ctx, ln));
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(user_vectors_.data() + b * d, out_.data() + (b * L + L - 1) * d,
                sizeof(T) * static_cast<size_t>(d));
  if (!training) return Status::Ok();

  // Logits and the loss, summed per sequence then over sequences in order (deterministic).
  int64_t count = 0;
  for (int64_t b = 0; b < B; ++b) count += in.lengths[b];
  std::vector<T>& per_row = da_;  // scratch: one partial sum per sequence
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      T sum = 0;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        if (t < first_valid) {
          pos_logits_[i] = neg_logits_[i] = T(0);
          continue;
        }
        const T* h = out_.data() + i * d;
        const T* ep = in.item_rows + in.item_index[rows + i] * d;
        const T* en = in.item_rows + in.item_index[2 * rows + i] * d;
        T lp = 0, lneg = 0;
        for (int64_t c = 0; c < d; ++c) {
          lp += h[c] * ep[c];
          lneg += h[c] * en[c];
        }
        pos_logits_[i] = lp;
        neg_logits_[i] = lneg;
        sum += Softplus(-lp) + Softplus(lneg);
      }
      per_row[b] = sum;
    }
  });
  T total = 0;
  for (int64_t b = 0; b < B; ++b) total += per_row[b];
  inv_count_ = T(1) / static_cast<T>(std::max<int64_t>(count, 1));
  if (loss != nullptr) *loss = total * inv_count_;
  have_training_forward_ = true;
  forward_batch_ = B;
  return Status::Ok();
}

template <typename T>
Status Sasrec<T>::Backward(const kernels::Context& ctx, const SeqInputs<T>& in, T* d_item_rows) {
  if (!have_training_forward_ || in.batch != forward_batch_)
    return FailedPreconditionError(
        "Sasrec::Backward needs a Forward(training = true) on the same batch first");
  if (d_item_rows == nullptr) return InvalidArgumentError("Sasrec::Backward: null d_item_rows");
  const int64_t B = in.batch, L = o_.max_len, d = o_.embedding_dim, rows = B * L;
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(d);

  // dL/dout and the positive/negative rows' gradients.
  T* dout = da_.data();
  T* g_seq = g_rows_.data();
  T* g_pos = g_seq + rows * d;
  T* g_neg = g_pos + rows * d;
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        T* go = dout + i * d;
        T* gp = g_pos + i * d;
        T* gn = g_neg + i * d;
        if (t < first_valid) {
          std::memset(go, 0, row_bytes);
          std::memset(gp, 0, row_bytes);
          std::memset(gn, 0, row_bytes);
          continue;
        }
        // d softplus(-z)/dz = -sigmoid(-z); d softplus(z)/dz = sigmoid(z).
        const T dp = -kernels::StableSigmoid(-pos_logits_[i]) * inv_count_;
        const T dn = kernels::StableSigmoid(neg_logits_[i]) * inv_count_;
        const T* h = out_.data() + i * d;
        const T* ep = in.item_rows + in.item_index[rows + i] * d;
        const T* en = in.item_rows + in.item_index[2 * rows + i] * d;
        for (int64_t c = 0; c < d; ++c) {
          go[c] = dp * ep[c] + dn * en[c];
          gp[c] = dp * h[c];
          gn[c] = dn * h[c];
        }
      }
    }
  });

  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = xs_.back().data();
  ln.gamma = params_.value(ln_g_);
  ln.mean = mean_.data();
  ln.rstd = rstd_.data();
  ln.dy = dout;
  ln.dx = db_.data();
  ln.dgamma = params_.grad(ln_g_);
  ln.dbeta = params_.grad(ln_b_);
  IPS_RETURN_IF_ERROR(kernels::LayerNormBackward(ctx, ln));

  T* dy = db_.data();
  T* dx = da_.data();
  for (size_t i = blocks_.size(); i-- > 0;) {
    IPS_RETURN_IF_ERROR(blocks_[i]->Backward(ctx, B, in.lengths, xs_[i].data(), dy, dx));
    std::swap(dy, dx);
  }
  // dy = dL/dx_0 (after its dropout).
  if (dropout_on_)
    DropoutApply<T>(ctx, input_mask_.data(), static_cast<T>(1.0 / (1.0 - o_.dropout)), dy, nullptr,
                    dy, 0, rows * d);
  const T scale = static_cast<T>(std::sqrt(static_cast<double>(d)));
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first_valid = L - in.lengths[b];
      for (int64_t t = 0; t < L; ++t) {
        const int64_t i = b * L + t;
        T* gs = g_seq + i * d;
        if (t < first_valid) {
          std::memset(gs, 0, row_bytes);
          continue;
        }
        const T* g = dy + i * d;
        for (int64_t c = 0; c < d; ++c) gs[c] = g[c] * scale;
      }
    }
  });
  // dP[t] = sum over sequences valid at t (in b order: deterministic).
  T* dpos = params_.grad(pos_);
  ParallelFor(ctx.pool, L, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* dp = dpos + t * d;
      std::fill(dp, dp + d, T(0));
      for (int64_t b = 0; b < B; ++b) {
        if (t < L - in.lengths[b]) continue;
        const T* g = dy + (b * L + t) * d;
        for (int64_t c = 0; c < d; ++c) dp[c] += g[c];
      }
    }
  });

  kernels::ScatterAddArgs<T> s;
  s.grad_rows = g_rows_.data();
  s.inverse = in.item_index;
  s.n = 3 * rows;
  s.dim = d;
  s.num_unique = in.num_item_rows;
  s.grad_unique = d_item_rows;
  return kernels::ScatterAdd(ctx, s);
}

template class Sasrec<float>;
template class Sasrec<double>;

}  // namespace ips::models
