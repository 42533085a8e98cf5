#include "models/mind.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "common/random.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "models/mind_ops.h"
#include "models/option_names.h"

namespace ips::models {
namespace {

// The largest num_interests (the routing kernels keep one weight per interest on the stack:
// mind_ops.cc) and routing_iterations.
constexpr int64_t kMaxInterests = 64;
constexpr int64_t kMaxRoutingIterations = 20;

// Decorrelates the routing logits' stream from the dense initialisation's (both come from
// options.seed).
constexpr uint64_t kRoutingSeedSalt = 0x6d696e64726f7574ULL;  // "mindrout"

}  // namespace

Status ValidateMindOptions(const MindOptions& o, const OptionNames& names) {
  if (o.embedding_dim < 1)
    return BadOption(names, "MindOptions", "embedding_dim",
                     "must be positive, got " + std::to_string(o.embedding_dim));
  if (o.max_len < 1) return BadOption(names, "MindOptions", "max_len", "must be >= 1");
  if (o.max_batch < 1) return BadOption(names, "MindOptions", "max_batch", "must be >= 1");
  if (o.num_interests < 1 || o.num_interests > kMaxInterests)
    return BadOption(names, "MindOptions", "num_interests",
                     "must be in [1, " + std::to_string(kMaxInterests) + "], got " +
                         std::to_string(o.num_interests));
  if (o.routing_iterations < 1 || o.routing_iterations > kMaxRoutingIterations)
    return BadOption(names, "MindOptions", "routing_iterations",
                     "must be in [1, " + std::to_string(kMaxRoutingIterations) + "], got " +
                         std::to_string(o.routing_iterations));
  if (o.capsule_dim < 0)
    return BadOption(names, "MindOptions", "capsule_dim", "must be >= 0 (0 = embedding_dim)");
  if (o.label_attention_pow < 0 || o.label_attention_pow > 8)
    return BadOption(names, "MindOptions", "label_attention_pow", "must be in [0, 8]");
  if (!(o.routing_init_stddev >= 0) || !std::isfinite(o.routing_init_stddev))
    return BadOption(names, "MindOptions", "routing_init_stddev", "must be finite and >= 0");
  if (o.routing_init_stddev == 0 && o.num_interests > 1)
    return BadOption(
        names, "MindOptions", "routing_init_stddev",
        "0 (zero routing logits) makes all interests identical when num_interests > 1");
  if (!(o.bilinear_init_stddev > 0) || !std::isfinite(o.bilinear_init_stddev))
    return BadOption(names, "MindOptions", "bilinear_init_stddev", "must be finite and > 0");
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
  IPS_RETURN_IF_ERROR(p.Allocate().WithContext(std::string(m->name()) + " model"));

  Rng rng(o.seed);
  T* s = p.value(m->s_);
  for (int64_t i = 0; i < D * D2; ++i) s[i] = static_cast<T>(o.bilinear_init_stddev * rng.Normal());
  InitLinearTorchDefault(rng, D2, D, p.value(m->w_), p.value(m->c_));
  m->init_logits_.resize(static_cast<size_t>(K * L));
  kernels::MindRoutingInitLogits(o.seed ^ kRoutingSeedSalt, K, L, o.routing_init_stddev,
                                 m->init_logits_.data());

  // Weights and routing logits are initialised on the host (the same on every device), then
  // mirrored.
  const kernels::Device dev = o.device;
  IPS_RETURN_IF_ERROR(p.AttachDevice(dev, o.stage_on_cpu));
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(
      dev, {
               {&m->e_, B * L * D},
               {&m->et_, B * D},
               {&m->ehat_, B * L * D2},
               {&m->rweights_, B * K * L},
               {&m->final_logits_, B * K * L},
               {&m->z_, B * K * D2},
               {&m->caps_, B * K * D2},
               {&m->v_, B * K * D},
               {&m->dots_, B * K},
               {&m->attw_, B * K},
               {&m->user_, B * D},
               {&m->logits_, B},
               {&m->loss_scratch_, 1},
               {&m->d_logits_, B},
               {&m->dv_, B * K * D},
               {&m->dcaps_, B * K * D2},
               {&m->de_, B * L * D},
               {&m->routing_ws_, kernels::MindRoutingBackwardWorkspaceSize(B, L, D2)},
               {&m->g_item_, (B * L + B) * D},
           }));
  IPS_ASSIGN_OR_RETURN(m->io_, CtrDeviceIo<T>::Create(dev, o.stage_on_cpu, B, B * L + B, D));
  if (m->io_.staged()) {
    IPS_ASSIGN_OR_RETURN(m->device_init_logits_, kernels::Buffer<T>::Create(dev, K * L));
    IPS_ASSIGN_OR_RETURN(m->host_v_, kernels::HostBuffer<T>::Create(
                                         B * K * D, /*pinned=*/dev == kernels::Device::kCuda));
    m->staging_rows_ = B * L + B;
    for (CompactTable* t : {&m->compact_item_, &m->compact_cat_})
      IPS_RETURN_IF_ERROR(t->Allocate(B * L + B, D, dev == kernels::Device::kCuda));
  }
  return m;
}

template <typename T>
Status Mind<T>::CompactTable::Allocate(int64_t positions, int64_t dim, bool pinned) {
  IPS_ASSIGN_OR_RETURN(index, kernels::HostBuffer<int64_t>::Create(positions, pinned));
  IPS_ASSIGN_OR_RETURN(rows, kernels::HostBuffer<T>::Create(positions * dim, pinned));
  IPS_ASSIGN_OR_RETURN(grads, kernels::HostBuffer<T>::Create(positions * dim, pinned));
  original.resize(static_cast<size_t>(positions));
  order.resize(static_cast<size_t>(positions));
  return Status::Ok();
}

template <typename T>
void Mind<T>::CompactTable::Build(const int64_t* table_index, int64_t positions,
                                  const T* table_rows, int64_t dim) {
  for (int64_t i = 0; i < positions; ++i) order[i] = {table_index[i], i};
  std::sort(order.begin(), order.begin() + positions);
  rows_used = 0;
  for (int64_t i = 0; i < positions; ++i) {
    if (i == 0 || order[i].first != order[i - 1].first) {
      original[rows_used] = order[i].first;
      std::memcpy(rows.data() + rows_used * dim, table_rows + order[i].first * dim,
                  sizeof(T) * static_cast<size_t>(dim));
      ++rows_used;
    }
    index.data()[order[i].second] = rows_used - 1;
  }
}

template <typename T>
void Mind<T>::CompactTable::Expand(int64_t num_rows, int64_t dim, T* out) const {
  std::fill(out, out + num_rows * dim, T(0));
  for (int64_t r = 0; r < rows_used; ++r)
    std::memcpy(out + original[r] * dim, grads.data() + r * dim,
                sizeof(T) * static_cast<size_t>(dim));
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
  a.s = params_.compute_value(s_);
  // Staged, the device copy (uploaded at the start of Forward) of the host reference.
  const T* shared_logits = io_.staged() ? device_init_logits_.data() : init_logits_.data();
  a.init_logits = override_logits_ != nullptr ? override_logits_ : shared_logits;
  a.init_logits_per_row = override_logits_ != nullptr;
  a.out = caps_.data();
  a.ehat = ehat_.data();
  a.weights = rweights_.data();
  a.final_logits = final_logits_.data();
  a.z = z_.data();
  return a;
}

template <typename T>
Status Mind<T>::Forward(const kernels::Context& ctx, const CtrInputs<T>& host_in, bool training,
                        T* loss) {
  have_training_forward_ = false;
  IPS_RETURN_IF_ERROR(CheckModelDevice("Mind", o_.device, ctx));
  IPS_RETURN_IF_ERROR(CheckInputs(host_in));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, D2 = d2_,
                K = o_.num_interests;
  const int64_t positions = B * L + B;
  // Tables larger than the staging buffers: stage the referenced rows only.
  CtrInputs<T> src = host_in;
  compacted_ = io_.staged() &&
               (host_in.num_item_rows > staging_rows_ || host_in.num_cat_rows > staging_rows_);
  if (compacted_) {
    compact_item_.Build(host_in.item_index, positions, host_in.item_rows, D);
    src.item_index = compact_item_.index.data();
    src.item_rows = compact_item_.rows.data();
    src.num_item_rows = compact_item_.rows_used;
    if (o_.use_categories) {
      compact_cat_.Build(host_in.cat_index, positions, host_in.cat_rows, D);
      src.cat_index = compact_cat_.index.data();
      src.cat_rows = compact_cat_.rows.data();
      src.num_cat_rows = compact_cat_.rows_used;
    } else {  // never read; Backward zero-fills their gradients on the host
      src.cat_index = nullptr;
      src.cat_rows = nullptr;
      src.num_cat_rows = 0;
    }
  }
  IPS_ASSIGN_OR_RETURN(const CtrInputs<T> in, io_.BeginForward(ctx, src, positions, &params_));
  if (io_.staged()) {
    // The host copy is the reference (a checkpoint restores it through state()).
    IPS_RETURN_IF_ERROR(kernels::CopyToDevice(ctx, device_init_logits_.data(), init_logits_.data(),
                                              sizeof(T) * static_cast<size_t>(K * L)));
  }
  const MindShapes shapes{B, L, D, K, in.lengths};

  // Behaviours left-aligned (the routing kernel takes steps [0, len) as valid, oldest first),
  // targets into et_.
  IPS_RETURN_IF_ERROR(MindGatherItemVectors(ctx, shapes, o_.use_categories, in.item_index,
                                            in.cat_index, in.item_rows, in.cat_rows, e_.data(),
                                            et_.data()));

  IPS_RETURN_IF_ERROR(kernels::MindRoutingForward(ctx, RoutingArgs(in)));

  // v = act(u W^T + c) over the B*K capsules.
  kernels::LinearArgs<T> lin;
  lin.rows = B * K;
  lin.in = D2;
  lin.out = D;
  lin.act = o_.user_relu ? kernels::Activation::kRelu : kernels::Activation::kIdentity;
  lin.x = caps_.data();
  lin.w = params_.compute_value(w_);
  lin.bias = params_.compute_value(c_);
  lin.y = v_.data();
  IPS_RETURN_IF_ERROR(kernels::LinearForward(ctx, lin));

  // Label-aware attention over the K user vectors, then the logit against the target.
  IPS_RETURN_IF_ERROR(MindLabelAttentionForward(ctx, shapes, o_.label_attention_pow, v_.data(),
                                                et_.data(), dots_.data(), attw_.data(),
                                                user_.data(), logits_.data()));
  IPS_RETURN_IF_ERROR(io_.EndForward(ctx, logits_.data(), B));
  if (io_.staged()) {
    IPS_RETURN_IF_ERROR(kernels::CopyToHost(ctx, host_v_.data(), v_.data(),
                                            sizeof(T) * static_cast<size_t>(B * K * D)));
  }

  if (in.labels != nullptr) {
    IPS_RETURN_IF_ERROR(ClickLoss(ctx, B, logits_.data(), in.labels, loss_scratch_.data(), loss));
    have_training_forward_ = training;
    forward_batch_ = B;
  }
  return Status::Ok();
}

template <typename T>
Status Mind<T>::Backward(const kernels::Context& ctx, const CtrInputs<T>& host_in, T* d_item_rows,
                         T* d_cat_rows) {
  if (!have_training_forward_ || host_in.batch != forward_batch_ || host_in.labels == nullptr)
    return FailedPreconditionError(
        "Mind::Backward needs a Forward(training = true) with labels on the same batch first");
  if (d_item_rows == nullptr || (d_cat_rows == nullptr && host_in.num_cat_rows > 0))
    return InvalidArgumentError("Mind::Backward: null d_item_rows or d_cat_rows");
  IPS_RETURN_IF_ERROR(CheckModelDevice("Mind", o_.device, ctx));
  const int64_t B = host_in.batch, L = o_.max_len, D = o_.embedding_dim, D2 = d2_,
                K = o_.num_interests;
  // Staged, the forward's copy of the inputs is used (the same batch).
  const CtrInputs<T>& in = io_.BackwardInputs(host_in);
  const MindShapes shapes{B, L, D, K, in.lengths};

  IPS_RETURN_IF_ERROR(ClickLossBackward(ctx, B, logits_.data(), in.labels, d_logits_.data()));

  // dv_k (into dv_) and the target rows' gradient (into the target slots of g_item_).
  IPS_RETURN_IF_ERROR(MindLabelAttentionBackward(
      ctx, shapes, o_.label_attention_pow, d_logits_.data(), v_.data(), et_.data(), dots_.data(),
      attw_.data(), user_.data(), dv_.data(), g_item_.data()));

  kernels::LinearArgs<T> lin;
  lin.rows = B * K;
  lin.in = D2;
  lin.out = D;
  lin.act = o_.user_relu ? kernels::Activation::kRelu : kernels::Activation::kIdentity;
  lin.x = caps_.data();
  lin.w = params_.compute_value(w_);
  lin.bias = params_.compute_value(c_);
  lin.y = v_.data();
  lin.dy = dv_.data();
  lin.dpre = dv_.data();
  lin.dx = dcaps_.data();
  lin.dw = params_.compute_grad(w_);
  lin.dbias = params_.compute_grad(c_);
  IPS_RETURN_IF_ERROR(kernels::LinearBackward(ctx, lin));

  kernels::MindRoutingArgs<T> r = RoutingArgs(in);
  r.dout = dcaps_.data();
  r.de = de_.data();
  r.ds = params_.compute_grad(s_);
  r.workspace = routing_ws_.data();
  IPS_RETURN_IF_ERROR(kernels::MindRoutingBackward(ctx, r));

  // History positions: the left-aligned behaviour gradient of step i goes back to input
  // position L - len + i; padded positions get zero.
  IPS_RETURN_IF_ERROR(MindHistoryRowGrads(ctx, shapes, de_.data(), g_item_.data()));

  // After a compacted forward the row gradients come back for the compact tables first.
  T* item_out = compacted_ ? compact_item_.grads.data() : d_item_rows;
  T* cat_out = compacted_ ? (o_.use_categories ? compact_cat_.grads.data() : nullptr) : d_cat_rows;
  kernels::ScatterAddArgs<T> s;
  s.grad_rows = g_item_.data();
  s.inverse = in.item_index;
  s.n = B * L + B;
  s.dim = D;
  s.num_unique = in.num_item_rows;
  s.grad_unique = io_.ItemGradTarget(item_out);
  IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  if (o_.use_categories) {
    // x = item + cat: the category row of a position gets the same gradient as its item row.
    s.inverse = in.cat_index;
    s.num_unique = in.num_cat_rows;
    s.grad_unique = io_.CatGradTarget(cat_out);
    IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  } else if (in.num_cat_rows > 0) {
    // Categories are outside the item space: exactly zero gradient.
    IPS_RETURN_IF_ERROR(kernels::ZeroOnDevice(
        ctx, io_.CatGradTarget(cat_out), sizeof(T) * static_cast<size_t>(in.num_cat_rows * D)));
  }
  IPS_RETURN_IF_ERROR(io_.EndBackward(ctx, item_out, cat_out, &params_));
  if (compacted_) {
    compact_item_.Expand(host_in.num_item_rows, D, d_item_rows);
    if (o_.use_categories) {
      compact_cat_.Expand(host_in.num_cat_rows, D, d_cat_rows);
    } else if (host_in.num_cat_rows > 0) {
      std::fill(d_cat_rows, d_cat_rows + host_in.num_cat_rows * D, T(0));
    }
  }
  return Status::Ok();
}

template class Mind<float>;
template class Mind<double>;

}  // namespace ips::models
