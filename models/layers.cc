#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/activation.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/norm.h"
#include "models/option_names.h"

namespace ips::models {
namespace {

// Programmer errors in model construction (ips_models has no glog: it must build with the
// kernels alone).
[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "ips_models: %s\n", what);
  std::abort();
}

}  // namespace

// ---- DenseParams -----------------------------------------------------------------------------

template <typename T>
int64_t DenseParams<T>::Add(std::string name, int64_t size) {
  if (finalized_) Die("DenseParams::Add after Finalize");
  if (size < 0) Die("DenseParams::Add with a negative size");
  Entry e;
  e.name = std::move(name);
  e.offset = size_;
  e.size = size;
  entries_.push_back(std::move(e));
  size_ += size;
  return entries_.back().offset;
}

template <typename T>
Status DenseParams<T>::Allocate() {
  if (finalized_) Die("DenseParams::Finalize twice");
  const auto n = static_cast<uint64_t>(size_);
  bool fits = n <= values_.max_size();
  if (fits) {
    try {
      values_.assign(static_cast<size_t>(n), T(0));
      grads_.assign(static_cast<size_t>(n), T(0));
    } catch (const std::bad_alloc&) {
      fits = false;
    } catch (const std::length_error&) {
      fits = false;
    }
  }
  if (!fits) {
    std::vector<T>().swap(values_);
    std::vector<T>().swap(grads_);
    // The largest tensors name the layer sizes to lower.
    std::vector<const Entry*> largest;
    for (const Entry& e : entries_) largest.push_back(&e);
    const size_t shown = std::min<size_t>(3, largest.size());
    std::partial_sort(largest.begin(), largest.begin() + static_cast<std::ptrdiff_t>(shown),
                      largest.end(),
                      [](const Entry* a, const Entry* b) { return a->size > b->size; });
    std::string names;
    for (size_t i = 0; i < shown; ++i)
      names +=
          (i > 0 ? ", " : "") + largest[i]->name + " (" + std::to_string(largest[i]->size) + ")";
    char gib[32];
    std::snprintf(gib, sizeof(gib), "%.1f",
                  2.0 * static_cast<double>(n) * sizeof(T) / (1024.0 * 1024.0 * 1024.0));
    return ResourceExhaustedError("out of memory allocating " + std::to_string(n) +
                                  " dense parameters (" + gib +
                                  " GiB with their gradients); the largest tensors: " + names +
                                  ": lower the model's layer sizes");
  }
  compute_values_ = values_.data();
  compute_grads_ = grads_.data();
  finalized_ = true;
  return Status::Ok();
}

template <typename T>
void DenseParams<T>::Finalize() {
  const Status s = Allocate();
  if (!s.ok()) Die(s.ToString().c_str());
}

template <typename T>
Status DenseParams<T>::AttachDevice(kernels::Device device, bool separate_copy) {
  if (!finalized_) Die("DenseParams::AttachDevice before Finalize");
  if (device == kernels::Device::kCpu && !separate_copy) return Status::Ok();
  if (device != kernels::Device::kCpu && !std::is_same_v<T, float>)
    return UnimplementedError("DenseParams: CUDA parameters are float only");
  IPS_ASSIGN_OR_RETURN(device_values_, kernels::Buffer<T>::Create(device, size_));
  IPS_ASSIGN_OR_RETURN(device_grads_, kernels::Buffer<T>::Create(device, size_));
  mirrored_ = true;
  compute_values_ = device_values_.data();
  compute_grads_ = device_grads_.data();
  return Status::Ok();
}

template <typename T>
Status DenseParams<T>::UploadValues(const kernels::Context& ctx) {
  if (!mirrored_) return Status::Ok();
  return kernels::CopyToDevice(ctx, device_values_.data(), values_.data(),
                               static_cast<size_t>(size_) * sizeof(T));
}

template <typename T>
Status DenseParams<T>::DownloadGrads(const kernels::Context& ctx) {
  if (!mirrored_) return Status::Ok();
  return kernels::CopyToHost(ctx, grads_.data(), device_grads_.data(),
                             static_cast<size_t>(size_) * sizeof(T));
}

template <typename T>
const typename DenseParams<T>::Entry* DenseParams<T>::Find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

// ---- Linear ----------------------------------------------------------------------------------

template <typename T>
void InitLinearTorchDefault(Rng& rng, int64_t in, int64_t out, T* w, T* b) {
  const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
  for (int64_t i = 0; i < in * out; ++i) w[i] = static_cast<T>((2 * rng.Uniform() - 1) * bound);
  if (b != nullptr)
    for (int64_t i = 0; i < out; ++i) b[i] = static_cast<T>((2 * rng.Uniform() - 1) * bound);
}

template <typename T>
Linear<T>::Linear(DenseParams<T>* params, const std::string& name, int64_t in, int64_t out)
    : params_(params), in_(in), out_(out) {
  if (in < 1 || out < 1) Die("Linear with a non-positive size");
  w_ = params->Add(name + ".weight", in * out);
  b_ = params->Add(name + ".bias", out);
}

template <typename T>
void Linear<T>::Init(Rng& rng) {
  InitLinearTorchDefault(rng, in_, out_, params_->value(w_), params_->value(b_));
}

template <typename T>
Status Linear<T>::Forward(const kernels::Context& ctx, int64_t rows, const T* x, T* y) const {
  kernels::LinearArgs<T> a;
  a.rows = rows;
  a.in = in_;
  a.out = out_;
  a.x = x;
  a.w = params_->compute_value(w_);
  a.bias = params_->compute_value(b_);
  a.y = y;
  return kernels::LinearForward(ctx, a);
}

template <typename T>
Status Linear<T>::Backward(const kernels::Context& ctx, int64_t rows, const T* x, T* dy, T* dx) {
  kernels::LinearArgs<T> a;
  a.rows = rows;
  a.in = in_;
  a.out = out_;
  a.x = x;
  a.w = params_->compute_value(w_);
  a.dy = dy;
  a.y = dy;     // read by act' only; the identity ignores it
  a.dpre = dy;  // identity activation: the pre-activation gradient is dy itself
  a.dx = dx;
  a.dw = params_->compute_grad(w_);
  a.dbias = params_->compute_grad(b_);
  return kernels::LinearBackward(ctx, a);
}

// ---- ActivationUnitWeights --------------------------------------------------------------------

template <typename T>
void ActivationUnitWeights<T>::Register(DenseParams<T>* params, int64_t dim, int64_t hidden1,
                                        int64_t hidden2) {
  params_ = params;
  dim_ = dim;
  hidden1_ = hidden1;
  hidden2_ = hidden2;
  w1_ = params->Add("attn.net.0.weight", hidden1 * 4 * dim);
  b1_ = params->Add("attn.net.0.bias", hidden1);
  w2_ = params->Add("attn.net.2.weight", hidden2 * hidden1);
  b2_ = params->Add("attn.net.2.bias", hidden2);
  w3_ = params->Add("attn.net.4.weight", hidden2);
  b3_ = params->Add("attn.net.4.bias", 1);
}

template <typename T>
void ActivationUnitWeights<T>::Init(Rng& rng) {
  DenseParams<T>& p = *params_;
  InitLinearTorchDefault(rng, 4 * dim_, hidden1_, p.value(w1_), p.value(b1_));
  InitLinearTorchDefault(rng, hidden1_, hidden2_, p.value(w2_), p.value(b2_));
  InitLinearTorchDefault(rng, hidden2_, int64_t{1}, p.value(w3_), p.value(b3_));
}

template <typename T>
void ActivationUnitWeights<T>::SetWeights(kernels::DinAttentionArgs<T>* a) const {
  a->hidden1 = hidden1_;
  a->hidden2 = hidden2_;
  a->w1 = params_->compute_value(w1_);
  a->b1 = params_->compute_value(b1_);
  a->w2 = params_->compute_value(w2_);
  a->b2 = params_->compute_value(b2_);
  a->w3 = params_->compute_value(w3_);
  a->b3 = params_->compute_value(b3_);
}

template <typename T>
kernels::DinAttentionGrads<T> ActivationUnitWeights<T>::Grads() const {
  kernels::DinAttentionGrads<T> g;
  g.d_w1 = params_->compute_grad(w1_);
  g.d_b1 = params_->compute_grad(b1_);
  g.d_w2 = params_->compute_grad(w2_);
  g.d_b2 = params_->compute_grad(b2_);
  g.d_w3 = params_->compute_grad(w3_);
  g.d_b3 = params_->compute_grad(b3_);
  return g;
}

template <typename T>
Status ActivationUnitWeights<T>::ZeroGrads(const kernels::Context& ctx) const {
  // The six tensors are registered back to back.
  const int64_t n = b3_ + 1 - w1_;
  return kernels::ZeroOnDevice(ctx, params_->compute_grad(w1_), sizeof(T) * n);
}

// ---- Mlp -------------------------------------------------------------------------------------

const char* MlpActivationName(MlpActivation a) {
  return a == MlpActivation::kDice ? "dice" : "prelu";
}

Status CheckMlpHeadOptions(const char* options, const std::vector<int64_t>& hidden,
                           MlpActivation act, int64_t max_batch,
                           const std::function<std::string(const std::string&)>& names,
                           const OptionPairFailure& pair) {
  // The option at fault begins the message; one the message mentions is named by `names` too,
  // else by its bare field (as the models' Validate*Options mention options).
  auto subject = [&](const std::string& field) { return OptionAtFault(names, options, field); };
  auto mention = [&](const std::string& field) { return MentionedOption(names, field); };
  for (size_t i = 0; i < hidden.size(); ++i)
    if (hidden[i] < 1)
      return InvalidArgumentError(subject("mlp_hidden[" + std::to_string(i) + "]") +
                                  ": must be positive");
  // Dice normalises each hidden layer's output over the rows of the batch.
  if (act == MlpActivation::kDice && max_batch < 2 && !hidden.empty()) {
    const std::string batch = subject("max_batch"), activation = subject("activation");
    const std::string what_batch = mention("activation") +
                                   " DICE needs batches of at least 2 rows, got " +
                                   std::to_string(max_batch);
    if (!pair) return InvalidArgumentError(batch + ": " + what_batch);
    return pair(batch, what_batch, activation,
                "DICE needs batches of at least 2 rows (" + mention("max_batch") + " is " +
                    std::to_string(max_batch) + ")");
  }
  return Status::Ok();
}

template <typename T>
Mlp<T>::Mlp(DenseParams<T>* params, const std::string& name, std::vector<int64_t> sizes,
            MlpActivation act, int64_t max_rows)
    : params_(params), name_(name), sizes_(std::move(sizes)), act_(act), max_rows_(max_rows) {
  if (sizes_.size() < 2) Die("Mlp needs at least an input and an output size");
  if (max_rows_ < 1) Die("Mlp with max_rows < 1");
  const size_t num_layers = sizes_.size() - 1;
  layers_.reserve(num_layers);
  for (size_t i = 0; i < num_layers; ++i) {
    // Names follow the peer's nn.Sequential indices (Linear at 0, 2, 4; activation at 1, 3).
    layers_.emplace_back(params, name + "." + std::to_string(2 * i), sizes_[i], sizes_[i + 1]);
    if (i + 1 < num_layers)
      alpha_.push_back(
          params->Add(name + "." + std::to_string(2 * i + 1) + ".alpha", sizes_[i + 1]));
  }
  // A wide layer or a large max_rows (the batch size) may not fit in host memory: the error is
  // kept for AttachDevice (a constructor cannot return it) instead of ending the process.
  try {
    if (act_ == MlpActivation::kDice)
      for (size_t i = 0; i + 1 < num_layers; ++i) {
        running_mean_.emplace_back(static_cast<size_t>(sizes_[i + 1]), T(0));
        running_var_.emplace_back(static_cast<size_t>(sizes_[i + 1]), T(1));
      }
    alloc_status_ = AllocateBuffers(kernels::Device::kCpu, /*mirror_stats=*/false);
  } catch (const std::bad_alloc&) {
    alloc_status_ = ResourceExhaustedError("out of host memory");
  }
  if (!alloc_status_.ok()) {
    std::string widths;
    for (size_t i = 0; i < sizes_.size(); ++i)
      widths += (i > 0 ? ", " : "") + std::to_string(sizes_[i]);
    alloc_status_ = alloc_status_.WithContext("MLP '" + name_ + "' with layer sizes [" + widths +
                                              "] for up to " + std::to_string(max_rows_) +
                                              " rows (the batch size)");
    running_mean_.clear();
    running_var_.clear();
    pre_.clear();
    post_.clear();
    grad_.clear();
    dpost_.clear();
    save_mean_.clear();
    save_rstd_.clear();
  }
}

template <typename T>
Status Mlp<T>::AllocateBuffers(kernels::Device device, bool mirror_stats) {
  using Buf = kernels::Buffer<T>;
  const size_t num_layers = layers_.size();
  pre_.clear();
  grad_.clear();
  post_.clear();
  dpost_.clear();
  save_mean_.clear();
  save_rstd_.clear();
  device_running_mean_.clear();
  device_running_var_.clear();
  for (size_t i = 0; i < num_layers; ++i) {
    const int64_t rows = max_rows_ * sizes_[i + 1];
    IPS_ASSIGN_OR_RETURN(Buf pre, Buf::Create(device, rows));
    IPS_ASSIGN_OR_RETURN(Buf grad, Buf::Create(device, rows));
    pre_.push_back(std::move(pre));
    grad_.push_back(std::move(grad));
    if (i + 1 == num_layers) break;
    IPS_ASSIGN_OR_RETURN(Buf post, Buf::Create(device, rows));
    IPS_ASSIGN_OR_RETURN(Buf dpost, Buf::Create(device, rows));
    post_.push_back(std::move(post));
    dpost_.push_back(std::move(dpost));
    if (act_ != MlpActivation::kDice) continue;
    const int64_t width = sizes_[i + 1];
    IPS_ASSIGN_OR_RETURN(Buf mean, Buf::Create(device, width));
    IPS_ASSIGN_OR_RETURN(Buf rstd, Buf::Create(device, width));
    save_mean_.push_back(std::move(mean));
    save_rstd_.push_back(std::move(rstd));
    if (!mirror_stats) continue;
    IPS_ASSIGN_OR_RETURN(Buf running_mean, Buf::Create(device, width));
    IPS_ASSIGN_OR_RETURN(Buf running_var, Buf::Create(device, width));
    device_running_mean_.push_back(std::move(running_mean));
    device_running_var_.push_back(std::move(running_var));
  }
  device_ = device;
  return Status::Ok();
}

template <typename T>
Status Mlp<T>::AttachDevice(kernels::Device device, bool separate_copy) {
  IPS_RETURN_IF_ERROR(alloc_status_);
  const bool mirror_stats = device != kernels::Device::kCpu || separate_copy;
  if (device == device_ && !mirror_stats) return Status::Ok();
  if (device != kernels::Device::kCpu && !std::is_same_v<T, float>)
    return UnimplementedError("Mlp: CUDA layers are float only");
  return AllocateBuffers(device, mirror_stats);
}

template <typename T>
Status Mlp<T>::UploadRunningStats(const kernels::Context& ctx) {
  for (size_t i = 0; i < device_running_mean_.size(); ++i) {
    const size_t bytes = running_mean_[i].size() * sizeof(T);
    IPS_RETURN_IF_ERROR(
        kernels::CopyToDevice(ctx, device_running_mean_[i].data(), running_mean_[i].data(), bytes));
    IPS_RETURN_IF_ERROR(
        kernels::CopyToDevice(ctx, device_running_var_[i].data(), running_var_[i].data(), bytes));
  }
  return Status::Ok();
}

template <typename T>
Status Mlp<T>::DownloadRunningStats(const kernels::Context& ctx) {
  for (size_t i = 0; i < device_running_mean_.size(); ++i) {
    const size_t bytes = running_mean_[i].size() * sizeof(T);
    IPS_RETURN_IF_ERROR(
        kernels::CopyToHost(ctx, running_mean_[i].data(), device_running_mean_[i].data(), bytes));
    IPS_RETURN_IF_ERROR(
        kernels::CopyToHost(ctx, running_var_[i].data(), device_running_var_[i].data(), bytes));
  }
  return Status::Ok();
}

template <typename T>
void Mlp<T>::Init(Rng& rng) {
  if (!alloc_status_.ok()) return;  // no running statistics to set; AttachDevice reports it
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i].Init(rng);
    if (i < alpha_.size()) {
      T* alpha = params_->value(alpha_[i]);
      const T init = act_ == MlpActivation::kPrelu ? T(0.25) : T(0);
      for (int64_t c = 0; c < sizes_[i + 1]; ++c) alpha[c] = init;
      if (act_ == MlpActivation::kDice) {
        std::fill(running_mean_[i].begin(), running_mean_[i].end(), T(0));
        std::fill(running_var_[i].begin(), running_var_[i].end(), T(1));
      }
    }
  }
}

template <typename T>
Status Mlp<T>::Forward(const kernels::Context& ctx, int64_t rows, const T* x, bool training,
                       const T** out) {
  IPS_RETURN_IF_ERROR(alloc_status_);
  if (rows < 0 || rows > max_rows_)
    return InvalidArgumentError("Mlp::Forward: rows " + std::to_string(rows) + " outside [0, " +
                                std::to_string(max_rows_) + "]");
  if (act_ == MlpActivation::kDice && training && rows < 2 && layers_.size() > 1)
    return InvalidArgumentError("Mlp::Forward: Dice needs at least 2 rows in training (got " +
                                std::to_string(rows) + ")");
  IPS_RETURN_IF_ERROR(UploadRunningStats(ctx));
  const T* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    T* z = pre_[i].data();
    IPS_RETURN_IF_ERROR(layers_[i].Forward(ctx, rows, in, z));
    if (i + 1 == layers_.size()) break;
    T* a = post_[i].data();
    const int64_t width = sizes_[i + 1];
    if (act_ == MlpActivation::kPrelu) {
      kernels::PreluArgs<T> p;
      p.rows = rows;
      p.cols = width;
      p.x = z;
      p.alpha = params_->compute_value(alpha_[i]);
      p.y = a;
      IPS_RETURN_IF_ERROR(kernels::PreluForward(ctx, p));
    } else {
      kernels::DiceArgs<T> d;
      d.n = rows;
      d.c = width;
      d.training = training;
      d.x = z;
      d.alpha = params_->compute_value(alpha_[i]);
      const bool on_device = !device_running_mean_.empty();
      d.running_mean = on_device ? device_running_mean_[i].data() : running_mean_[i].data();
      d.running_var = on_device ? device_running_var_[i].data() : running_var_[i].data();
      d.y = a;
      d.save_mean = save_mean_[i].data();
      d.save_rstd = save_rstd_[i].data();
      IPS_RETURN_IF_ERROR(kernels::DiceForward(ctx, d));
    }
    in = a;
  }
  if (training) IPS_RETURN_IF_ERROR(DownloadRunningStats(ctx));
  *out = pre_.back().data();
  return Status::Ok();
}

template <typename T>
Status Mlp<T>::Backward(const kernels::Context& ctx, int64_t rows, const T* x, const T* dout,
                        T* dx) {
  IPS_RETURN_IF_ERROR(alloc_status_);
  if (rows < 0 || rows > max_rows_)
    return InvalidArgumentError("Mlp::Backward: rows " + std::to_string(rows) + " outside [0, " +
                                std::to_string(max_rows_) + "]");
  const size_t last = layers_.size() - 1;
  IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, grad_[last].data(), dout,
                                            sizeof(T) * static_cast<size_t>(rows * sizes_.back())));
  for (size_t i = last + 1; i-- > 0;) {
    const T* in = i == 0 ? x : post_[i - 1].data();
    T* d_in = i == 0 ? dx : dpost_[i - 1].data();
    IPS_RETURN_IF_ERROR(layers_[i].Backward(ctx, rows, in, grad_[i].data(), d_in));
    if (i == 0) break;
    // Through the activation of hidden layer i - 1: dpost_ -> grad_ (its pre-activation).
    const size_t h = i - 1;
    const int64_t width = sizes_[i];
    if (act_ == MlpActivation::kPrelu) {
      kernels::PreluArgs<T> p;
      p.rows = rows;
      p.cols = width;
      p.x = pre_[h].data();
      p.alpha = params_->compute_value(alpha_[h]);
      p.dy = dpost_[h].data();
      p.dx = grad_[h].data();
      p.dalpha = params_->compute_grad(alpha_[h]);
      IPS_RETURN_IF_ERROR(kernels::PreluBackward(ctx, p));
    } else {
      kernels::DiceArgs<T> d;
      d.n = rows;
      d.c = width;
      d.training = true;
      d.x = pre_[h].data();
      d.alpha = params_->compute_value(alpha_[h]);
      d.save_mean = save_mean_[h].data();
      d.save_rstd = save_rstd_[h].data();
      d.dy = dpost_[h].data();
      d.dx = grad_[h].data();
      d.dalpha = params_->compute_grad(alpha_[h]);
      IPS_RETURN_IF_ERROR(kernels::DiceBackward(ctx, d));
    }
  }
  return Status::Ok();
}

template <typename T>
Status ClickLoss(const kernels::Context& ctx, int64_t batch, const T* logits, const T* labels,
                 T* loss_scratch, T* host_loss) {
  kernels::BceWithLogitsArgs<T> l;
  l.n = batch;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits;
  l.labels = labels;
  l.loss = loss_scratch;
  IPS_RETURN_IF_ERROR(kernels::BceWithLogitsForward(ctx, l));
  if (host_loss == nullptr) return Status::Ok();
  return kernels::CopyToHost(ctx, host_loss, loss_scratch, sizeof(T));
}

template <typename T>
Status ClickLossBackward(const kernels::Context& ctx, int64_t batch, const T* logits,
                         const T* labels, T* d_logits) {
  kernels::BceWithLogitsArgs<T> l;
  l.n = batch;
  l.reduction = kernels::Reduction::kMean;
  l.logits = logits;
  l.labels = labels;
  l.dloss = T(1);
  l.dlogits = d_logits;
  return kernels::BceWithLogitsBackward(ctx, l);
}

template Status ClickLoss<float>(const kernels::Context&, int64_t, const float*, const float*,
                                 float*, float*);
template Status ClickLoss<double>(const kernels::Context&, int64_t, const double*, const double*,
                                  double*, double*);
template Status ClickLossBackward<float>(const kernels::Context&, int64_t, const float*,
                                         const float*, float*);
template Status ClickLossBackward<double>(const kernels::Context&, int64_t, const double*,
                                          const double*, double*);

template class DenseParams<float>;
template class DenseParams<double>;
template void InitLinearTorchDefault<float>(Rng&, int64_t, int64_t, float*, float*);
template void InitLinearTorchDefault<double>(Rng&, int64_t, int64_t, double*, double*);
template class Linear<float>;
template class Linear<double>;
template class ActivationUnitWeights<float>;
template class ActivationUnitWeights<double>;
template <typename T>
std::vector<StateTensor<T>> Mlp<T>::state() {
  std::vector<StateTensor<T>> out;
  for (size_t i = 0; i < running_mean_.size(); ++i) {
    if (running_mean_[i].empty()) continue;
    const std::string prefix = name_ + "." + std::to_string(2 * i + 1);
    out.push_back({prefix + ".running_mean", running_mean_[i].data(),
                   static_cast<int64_t>(running_mean_[i].size())});
    out.push_back({prefix + ".running_var", running_var_[i].data(),
                   static_cast<int64_t>(running_var_[i].size())});
  }
  return out;
}

template class Mlp<float>;
template class Mlp<double>;

}  // namespace ips::models
