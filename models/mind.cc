#include "models/mind.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/loss.h"

namespace ips::models {
namespace {

Status Bad(const std::string& field, const std::string& what) {
  return InvalidArgumentError("MindOptions." + field + ": " + what);
}

// Decorrelates the routing logits' stream from the dense initialisation's (both come from
// options.seed).
constexpr uint64_t kRoutingSeedSalt = 0x6d696e64726f7574ULL;  // "mindrout"

// x^p for a small integer p >= 0 (0^0 = 1), and its derivative p x^(p-1).
template <typename T>
T IntPow(T x, int p) {
  T r = T(1);
  for (int i = 0; i < p; ++i) r *= x;
  return r;
}
template <typename T>
T IntPowGrad(T x, int p) {
  return p == 0 ? T(0) : static_cast<T>(p) * IntPow(x, p - 1);
}

}  // namespace

Status ValidateMindOptions(const MindOptions& o) {
  if (o.embedding_dim < 1) return Bad("embedding_dim", "must be >= 1");
  if (o.max_len < 1) return Bad("max_len", "must be >= 1");
  if (o.max_batch < 1) return Bad("max_batch", "must be >= 1");
  if (o.num_interests < 1 || o.num_interests > 64)
    return Bad("num_interests", "must be in [1, 64]");
  if (o.routing_iterations < 1 || o.routing_iterations > 20)
    return Bad("routing_iterations", "must be in [1, 20]");
  if (o.capsule_dim < 0) return Bad("capsule_dim", "must be >= 0 (0 = embedding_dim)");
  if (o.label_attention_pow < 0 || o.label_attention_pow > 8)
    return Bad("label_attention_pow", "must be in [0, 8]");
  if (!(o.routing_init_stddev >= 0) || !std::isfinite(o.routing_init_stddev))
    return Bad("routing_init_stddev", "must be finite and >= 0");
  if (o.routing_init_stddev == 0 && o.num_interests > 1)
    return Bad("routing_init_stddev",
               "0 (zero routing logits) makes all interests identical when num_interests > 1");
  if (!(o.bilinear_init_stddev > 0) || !std::isfinite(o.bilinear_init_stddev))
    return Bad("bilinear_init_stddev", "must be finite and > 0");
  return Status::Ok();
}

template <typename T>
Mind<T>::Mind(const MindOptions& o)
    : o_(o), d2_(o.capsule_dim > 0 ? o.capsule_dim : o.embedding_dim) {}

template <typename T>
StatusOr<std::unique_ptr<Mind<T>>> Mind<T>::Create(const MindOptions& options) {
  IPS_RETURN_IF_ERROR(ValidateMindOptions(options));
  std::unique_ptr<Mind<T>> m(new Mind<T>(options));
  const MindOptions& o = m->o_;
  const int64_t D = o.embedding_dim, D2 = m->d2_, K = o.num_interests, B = o.max_batch,
                L = o.max_len;
  DenseParams<T>& p = m->params_;
  m->s_ = p.Add("routing.bilinear", D * D2);
  m->w_ = p.Add("user.weight", D * D2);
  m->c_ = p.Add("user.bias", D);
  p.Finalize();

  Rng rng(o.seed);
  T* s = p.value(m->s_);
  for (int64_t i = 0; i < D * D2; ++i) s[i] = static_cast<T>(o.bilinear_init_stddev * rng.Normal());
  InitLinearTorchDefault(rng, D2, D, p.value(m->w_), p.value(m->c_));
  m->init_logits_.resize(static_cast<size_t>(K * L));
  kernels::MindRoutingInitLogits(o.seed ^ kRoutingSeedSalt, K, L, o.routing_init_stddev,
                                 m->init_logits_.data());

  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  m->e_.resize(size(B * L * D));
  m->et_.resize(size(B * D));
  m->ehat_.resize(size(B * L * D2));
  m->rweights_.resize(size(B * K * L));
  m->final_logits_.resize(size(B * K * L));
  m->z_.resize(size(B * K * D2));
  m->caps_.resize(size(B * K * D2));
  m->v_.resize(size(B * K * D));
  m->dots_.resize(size(B * K));
  m->attw_.resize(size(B * K));
  m->user_.resize(size(B * D));
  m->logits_.resize(size(B));
  m->d_logits_.resize(size(B));
  m->dv_.resize(size(B * K * D));
  m->dcaps_.resize(size(B * K * D2));
  m->de_.resize(size(B * L * D));
  m->routing_ws_.resize(size(kernels::MindRoutingBackwardWorkspaceSize(B, L, D2)));
  m->g_item_.resize(size((B * L + B) * D));
  return m;
}

template <typename T>
std::vector<StateTensor<T>> Mind<T>::state() {
  return {StateTensor<T>{"routing.init_logits", init_logits_.data(),
                         static_cast<int64_t>(init_logits_.size())}};
}

template <typename T>
Status Mind<T>::CheckInputs(const CtrInputs<T>& in) const {
  // Without use_categories the category inputs may be absent (their rows are never read).
  return CheckCtrInputs("Mind", in, o_.max_batch, o_.max_len, in.batch * o_.max_len + in.batch,
                        o_.use_categories ? CategoryInputs::kRequired : CategoryInputs::kIfPresent);
}

template <typename T>
kernels::MindRoutingArgs<T> Mind<T>::RoutingArgs(const CtrInputs<T>& in) {
  kernels::MindRoutingArgs<T> a;
  a.batch = in.batch;
  a.max_len = o_.max_len;
  a.in_dim = o_.embedding_dim;
  a.out_dim = d2_;
  a.num_interests = o_.num_interests;
  a.iterations = o_.routing_iterations;
  a.e = e_.data();
  a.lengths = in.lengths;
  a.s = params_.value(s_);
  a.init_logits = override_logits_ != nullptr ? override_logits_ : init_logits_.data();
  a.init_logits_per_row = override_logits_ != nullptr;
  a.out = caps_.data();
  a.ehat = ehat_.data();
  a.weights = rweights_.data();
  a.final_logits = final_logits_.data();
  a.z = z_.data();
  return a;
}

template <typename T>
Status Mind<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                        T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckInputs(in));
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, D2 = d2_, K = o_.num_interests;
  const int p = o_.label_attention_pow;

  // Item vectors of input position `pos` (item row, plus its category row when used).
  const bool cats = o_.use_categories;
  auto item_vector = [&](int64_t pos, T* dst) {
    const T* r = in.item_rows + in.item_index[pos] * D;
    if (cats) {
      const T* c = in.cat_rows + in.cat_index[pos] * D;
      for (int64_t j = 0; j < D; ++j) dst[j] = r[j] + c[j];
    } else {
      std::memcpy(dst, r, sizeof(T) * D);
    }
  };
  // Behaviours left-aligned (the routing kernel takes steps [0, len) as valid, oldest first):
  // step i of row b is input position L - len + i. The rest is zero so the routing's GEMM reads
  // finite values there. Targets into et_.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = in.lengths[b], first = L - len;
      T* dst = e_.data() + b * L * D;
      for (int64_t i = 0; i < len; ++i) item_vector(b * L + first + i, dst + i * D);
      std::fill(dst + len * D, dst + L * D, T(0));
      item_vector(B * L + b, et_.data() + b * D);
    }
  });

  IPS_RETURN_IF_ERROR(kernels::MindRoutingForward(ctx, RoutingArgs(in)));

  // v = act(u W^T + c) over the B*K capsules.
  kernels::LinearArgs<T> lin;
  lin.rows = B * K;
  lin.in = D2;
  lin.out = D;
  lin.act = o_.user_relu ? kernels::Activation::kRelu : kernels::Activation::kIdentity;
  lin.x = caps_.data();
  lin.w = params_.value(w_);
  lin.bias = params_.value(c_);
  lin.y = v_.data();
  IPS_RETURN_IF_ERROR(kernels::LinearForward(ctx, lin));

  // Label-aware attention over the K user vectors, then the logit against the target.
  ParallelFor(ctx.pool, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* et = et_.data() + b * D;
      const T* v = v_.data() + b * K * D;
      T* dots = dots_.data() + b * K;
      T* w = attw_.data() + b * K;
      T mx = T(0);
      for (int64_t k = 0; k < K; ++k) {
        T d = 0;
        for (int64_t c = 0; c < D; ++c) d += v[k * D + c] * et[c];
        dots[k] = d;
        w[k] = IntPow(d, p);
        mx = k == 0 ? w[k] : std::max(mx, w[k]);
      }
      T sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += (w[k] = std::exp(w[k] - mx));
      for (int64_t k = 0; k < K; ++k) w[k] /= sum;
      T* user = user_.data() + b * D;
      std::fill(user, user + D, T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < D; ++c) user[c] += w[k] * v[k * D + c];
      T logit = 0;
      for (int64_t c = 0; c < D; ++c) logit += user[c] * et[c];
      logits_[b] = logit;
    }
  });

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
Status Mind<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                         T* d_cat_rows) {
  if (!have_training_forward_ || in.batch != forward_batch_ || in.labels == nullptr)
    return FailedPreconditionError(
        "Mind::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || (d_cat_rows == nullptr && in.num_cat_rows > 0))
    return InvalidArgumentError("Mind::Backward: null d_item_rows or d_cat_rows");
  const int64_t B = in.batch, L = o_.max_len, D = o_.embedding_dim, D2 = d2_, K = o_.num_interests;
  const int p = o_.label_attention_pow;

  kernels::BceWithLogitsArgs<T> l;
  l.n = B;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits_.data();
  l.labels = in.labels;
  l.dloss = T(1);
  l.dlogits = d_logits_.data();
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsBackward(ctx, l));

  // Through logit = <user, e_t>, user = sum_k w_k v_k, w = softmax(dots^p), dots_k = <v_k, e_t>:
  // dv_k (into dv_) and the target row's gradient (into the target slots of g_item_).
  ParallelFor(ctx.pool, B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T g = d_logits_[b];
      const T* et = et_.data() + b * D;
      const T* v = v_.data() + b * K * D;
      const T* w = attw_.data() + b * K;
      const T* dots = dots_.data() + b * K;
      const T* user = user_.data() + b * D;
      T* dv = dv_.data() + b * K * D;
      T* d_et = g_item_.data() + (B * L + b) * D;
      for (int64_t c = 0; c < D; ++c) d_et[c] = g * user[c];
      // dw_k = <v_k, duser> with duser = g e_t; ws = sum_k w_k dw_k.
      T ws = 0;
      T dw[64];  // K <= 64 (ValidateMindOptions)
      for (int64_t k = 0; k < K; ++k) {
        dw[k] = g * dots[k];
        ws += w[k] * dw[k];
      }
      for (int64_t k = 0; k < K; ++k) {
        const T ddot = IntPowGrad(dots[k], p) * w[k] * (dw[k] - ws);
        const T gw = g * w[k];
        for (int64_t c = 0; c < D; ++c) {
          dv[k * D + c] = gw * et[c] + ddot * et[c];
          d_et[c] += ddot * v[k * D + c];
        }
      }
    }
  });

  kernels::LinearArgs<T> lin;
  lin.rows = B * K;
  lin.in = D2;
  lin.out = D;
  lin.act = o_.user_relu ? kernels::Activation::kRelu : kernels::Activation::kIdentity;
  lin.x = caps_.data();
  lin.w = params_.value(w_);
  lin.bias = params_.value(c_);
  lin.y = v_.data();
  lin.dy = dv_.data();
  lin.dpre = dv_.data();
  lin.dx = dcaps_.data();
  lin.dw = params_.grad(w_);
  lin.dbias = params_.grad(c_);
  IPS_RETURN_IF_ERROR(kernels::LinearBackward(ctx, lin));

  kernels::MindRoutingArgs<T> r = RoutingArgs(in);
  r.dout = dcaps_.data();
  r.de = de_.data();
  r.ds = params_.grad(s_);
  r.workspace = routing_ws_.data();
  IPS_RETURN_IF_ERROR(kernels::MindRoutingBackward(ctx, r));

  // History positions: the left-aligned behaviour gradient of step i goes back to input
  // position L - len + i; padded positions get zero.
  ParallelFor(ctx.pool, B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = in.lengths[b], first = L - len;
      T* g = g_item_.data() + b * L * D;
      std::fill(g, g + first * D, T(0));
      std::memcpy(g + first * D, de_.data() + b * L * D, sizeof(T) * len * D);
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
  if (o_.use_categories) {
    // x = item + cat: the category row of a position gets the same gradient as its item row.
    s.inverse = in.cat_index;
    s.num_unique = in.num_cat_rows;
    s.grad_unique = d_cat_rows;
    IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  } else if (in.num_cat_rows > 0) {
    // Categories are outside the item space: exactly zero gradient.
    std::fill(d_cat_rows, d_cat_rows + in.num_cat_rows * D, T(0));
  }
  return Status::Ok();
}

template class Mind<float>;
template class Mind<double>;

}  // namespace ips::models
