// Dense building blocks of the models: the flat dense-parameter store (DenseParams), Linear
// (torch nn.Linear layout and default initialisation) and Mlp (Linear layers with PReLU or Dice
// between them). Layers run their forward and backward passes through kernels/ (GEMM, PReLU,
// Dice, bias grads) on the caller's Context and preallocate every activation buffer for a
// maximum row count, so a training step allocates nothing.
//
// Why one flat buffer for every dense tensor: the dense optimizer (kernels/optimizer.h
// DenseUpdate) and, later, the all-reduce of dense gradients then run as ONE call over one
// contiguous array instead of one per tensor. torch's Adam keeps a step count per parameter, but
// every dense parameter is updated on every step, so a single count is the same thing.
//
// Templated on T: float for training, double for the float64 finite-difference gradient checks
// (every kernel used has a double CPU path).
//
// Devices. A layer runs on the device of the Context it is given, with its parameters and
// buffers on that device: a model on CUDA calls AttachDevice(kCuda) on its DenseParams and
// Mlp after building them. The host copy of the parameters stays the reference that everything
// outside the model reads and writes (initialisation, the dense optimizer, the all-reduce,
// checkpoints); the device copy is what the kernels use (compute_value/compute_grad), refreshed
// by UploadValues before a forward pass and copied back by DownloadGrads after a backward pass.
// On the CPU both are the same array and those calls do nothing.
//
// Thread safety: none; a layer belongs to one model, which belongs to one trainer thread. The
// kernels parallelise internally over ctx.pool.
#ifndef IPS_MODELS_LAYERS_H_
#define IPS_MODELS_LAYERS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/status.h"
#include "kernels/attention.h"
#include "kernels/context.h"
#include "kernels/memory.h"

namespace ips::models {

// Named slices of one contiguous parameter array and its gradient array. Usage: every layer
// Add()s its tensors in its constructor, the model calls Allocate() (or Finalize()) once, then
// layers read their tensors through value()/grad() with the offsets Add() returned.
template <typename T>
class DenseParams {
 public:
  struct Entry {
    std::string name;
    int64_t offset = 0;
    int64_t size = 0;
  };

  // Reserves `size` elements called `name` and returns their offset. Calling it after
  // Finalize() is a programmer error (aborts).
  int64_t Add(std::string name, int64_t size);
  // Allocates the value and gradient arrays (zero-filled). RESOURCE_EXHAUSTED when they do not
  // fit in memory, naming the parameter count, the bytes and the largest tensors (a layer size
  // typo, e.g. model.attention_hidden=100000,100000, fails here rather than in std::bad_alloc).
  // Nothing is allocated then, and the params stay unfinalized.
  Status Allocate();
  // Allocate() for callers that build small parameter sets (tests): an allocation failure is
  // fatal (prints the message and aborts).
  void Finalize();
  bool finalized() const { return finalized_; }
  // After Finalize: keeps a copy of the values and gradients on `device` for the kernels
  // (nothing for kCpu, unless separate_copy: a second host copy, so that CPU tests run the
  // upload/download logic of a device). UNIMPLEMENTED for CUDA with T = double or in a build
  // without CUDA.
  Status AttachDevice(kernels::Device device, bool separate_copy = false);
  // The arrays the kernels read and write: the device copy, or the host arrays on the CPU.
  T* compute_value(int64_t offset) { return compute_values_ + offset; }
  const T* compute_value(int64_t offset) const { return compute_values_ + offset; }
  T* compute_grad(int64_t offset) { return compute_grads_ + offset; }
  // Host values -> device copy; device gradients -> host (waits for the copy). No-ops without a
  // copy.
  Status UploadValues(const kernels::Context& ctx);
  Status DownloadGrads(const kernels::Context& ctx);

  int64_t size() const { return size_; }
  T* values() { return values_.data(); }
  const T* values() const { return values_.data(); }
  T* grads() { return grads_.data(); }
  const T* grads() const { return grads_.data(); }
  T* value(int64_t offset) { return values_.data() + offset; }
  const T* value(int64_t offset) const { return values_.data() + offset; }
  T* grad(int64_t offset) { return grads_.data() + offset; }
  const std::vector<Entry>& entries() const { return entries_; }
  // The entry called `name`, or nullptr.
  const Entry* Find(const std::string& name) const;

 private:
  std::vector<Entry> entries_;
  int64_t size_ = 0;
  bool finalized_ = false;
  std::vector<T> values_;
  std::vector<T> grads_;
  bool mirrored_ = false;                            // the kernels use the copies below
  kernels::Buffer<T> device_values_, device_grads_;  // empty unless mirrored_
  T* compute_values_ = nullptr;
  T* compute_grads_ = nullptr;
};

// torch nn.Linear's default initialisation: kaiming_uniform_(a = sqrt(5)) for the weight, whose
// bound gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)) is exactly 1 / sqrt(fan_in), and
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias. Fills w[out x in] then b[out] from rng.
template <typename T>
void InitLinearTorchDefault(Rng& rng, int64_t in, int64_t out, T* w, T* b);

// y = x W^T + b with W [out x in] (torch layout), no activation (the Mlp applies PReLU/Dice as
// separate kernels because they need their pre-activation input for the backward).
template <typename T>
class Linear {
 public:
  Linear(DenseParams<T>* params, const std::string& name, int64_t in, int64_t out);
  // After params->Finalize(): the torch default initialisation.
  void Init(Rng& rng);
  // x [rows x in] -> y [rows x out]. Errors: the kernels' (INVALID_ARGUMENT on bad shapes).
  Status Forward(const kernels::Context& ctx, int64_t rows, const T* x, T* y) const;
  // Writes (overwrites) dW and db into the parameter gradients and dx [rows x in] (nullptr to
  // skip). dy [rows x out] is also used as the kernel's scratch, so its contents are left as the
  // pre-activation gradient (equal to dy: there is no activation).
  Status Backward(const kernels::Context& ctx, int64_t rows, const T* x, T* dy, T* dx);

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  int64_t weight_offset() const { return w_; }
  int64_t bias_offset() const { return b_; }

 private:
  DenseParams<T>* params_;
  int64_t in_, out_;
  int64_t w_ = 0, b_ = 0;
};

// The six tensors of DIN's activation unit (the peer's ActivationUnit: attn.net.0/2/4 weight and
// bias), shared by DIN and DIEN: registration, torch's default initialisation, and the
// kernels/attention.h arguments on the parameters' compute copies.
template <typename T>
class ActivationUnitWeights {
 public:
  // Registers the tensors for keys of width `dim` (the unit's input is 4 * dim wide).
  void Register(DenseParams<T>* params, int64_t dim, int64_t hidden1, int64_t hidden2);
  // After params->Finalize(): nn.Linear defaults, layer by layer.
  void Init(Rng& rng);
  // Sets a's hidden sizes and w1..b3.
  void SetWeights(kernels::DinAttentionArgs<T>* a) const;
  // The weight gradients (d_query and d_keys left for the caller).
  kernels::DinAttentionGrads<T> Grads() const;
  // Zeroes the weight gradients (attention disabled).
  Status ZeroGrads(const kernels::Context& ctx) const;

 private:
  DenseParams<T>* params_ = nullptr;
  int64_t dim_ = 0, hidden1_ = 0, hidden2_ = 0;
  int64_t w1_ = 0, b1_ = 0, w2_ = 0, b2_ = 0, w3_ = 0, b3_ = 0;
};

// The click loss every CTR model ends with: the mean BCE-with-logits of logits [batch] against
// labels [batch] (model memory), into loss_scratch [1] (model memory) and, when host_loss is not
// null, copied to *host_loss (waits for it).
template <typename T>
Status ClickLoss(const kernels::Context& ctx, int64_t batch, const T* logits, const T* labels,
                 T* loss_scratch, T* host_loss);
// Its gradient: d_logits [batch] = d(mean BCE)/d(logits).
template <typename T>
Status ClickLossBackward(const kernels::Context& ctx, int64_t batch, const T* logits,
                         const T* labels, T* d_logits);

// A non-trained tensor a checkpoint must carry (Dice/BatchNorm running statistics).
template <typename T>
struct StateTensor {
  std::string name;
  T* data = nullptr;
  int64_t size = 0;
};

enum class MlpActivation {
  kPrelu,  // torch nn.PReLU(num_parameters = width), alpha initialised to 0.25
  kDice,   // the peer's Dice: BatchNorm1d(affine = False, eps 1e-8) gate, alpha initialised to 0
};
const char* MlpActivationName(MlpActivation a);

// A failure of a rule that reads two options (Dice's activation and max_batch): the error that
// blames `field_a` with `what_a` or `field_b` with `what_b`, the caller's choice.
// worker/model_factory.cc blames, through BlameConfigFields (proto/config_loader.h), the one a
// --set changed.
using OptionPairFailure =
    std::function<Status(const std::string& field_a, const std::string& what_a,
                         const std::string& field_b, const std::string& what_b)>;

// The option checks of a model's MLP head, the one copy of each: every hidden width positive
// ("mlp_hidden[i]"), and Dice (batch statistics) only with max_batch >= 2 (when the head has a
// hidden layer to normalise). The models' Validate*Options run them; ModelSpecFromConfig
// (worker/model_factory.h) runs them on a config's model.mlp_hidden, model.activation and
// data.batch_size. Errors: INVALID_ARGUMENT "<options>.<field>: ..." (options: e.g.
// "DinOptions"). `names`, when given, names the options instead (the one at fault and any it
// mentions), as the Validate*Options' `names` does; without it a mentioned option is its bare
// field. `pair`, when given, makes the error of the Dice rule from its two wordings, the options
// already named: max_batch's ("<activation> DICE needs batches of at least 2 rows, got N") and
// activation's ("DICE needs batches of at least 2 rows (<max_batch> is N)"); without it the rule
// blames max_batch.
Status CheckMlpHeadOptions(const char* options, const std::vector<int64_t>& hidden,
                           MlpActivation act, int64_t max_batch,
                           const std::function<std::string(const std::string&)>& names = {},
                           const OptionPairFailure& pair = {});

// sizes = [in, h1, ..., hk, out]: Linear layers between consecutive sizes with the activation
// after every layer but the last (the peer's `mlp(sizes, act)`). Owns its activation buffers for
// up to max_rows rows; Forward's output pointer stays valid until the next Forward.
template <typename T>
class Mlp {
 public:
  // sizes.size() >= 2 and every size >= 1, max_rows >= 1 (programmer errors otherwise: the model
  // validates its options first).
  Mlp(DenseParams<T>* params, const std::string& name, std::vector<int64_t> sizes,
      MlpActivation act, int64_t max_rows);
  // After params->Finalize(): Linear layers as torch, PReLU alphas 0.25, Dice alphas 0 and
  // running statistics (mean 0, var 1). Does nothing when the constructor ran out of memory.
  void Init(Rng& rng);
  // Moves the activation buffers to `device` and keeps a device copy of Dice's running
  // statistics (the host copy, which state() exposes, stays the reference: uploaded at the start
  // of each Forward, copied back after a training one). separate_copy: keep that copy on the
  // CPU too (as DenseParams). Errors as DenseParams::AttachDevice, and first the constructor's
  // RESOURCE_EXHAUSTED (naming the layer sizes and max_rows) when its host buffers did not fit:
  // a constructor cannot return it, and every model calls AttachDevice before using the MLP.
  Status AttachDevice(kernels::Device device, bool separate_copy = false);

  // x [rows x sizes[0]] -> *out [rows x sizes.back()] (an internal buffer). training selects
  // Dice's batch statistics (and updates its running statistics) vs. its running statistics.
  // Errors: INVALID_ARGUMENT if rows > max_rows (or < 0), or Dice in training with rows < 2;
  // otherwise the kernels'.
  Status Forward(const kernels::Context& ctx, int64_t rows, const T* x, bool training,
                 const T** out);
  // After Forward(training = true) with the same x and rows: dout [rows x out] (read-only) ->
  // parameter gradients (overwritten) and dx [rows x sizes[0]] (nullptr to skip).
  Status Backward(const kernels::Context& ctx, int64_t rows, const T* x, const T* dout, T* dx);

  const std::vector<int64_t>& sizes() const { return sizes_; }
  MlpActivation activation() const { return act_; }
  int64_t max_rows() const { return max_rows_; }
  // Dice running means and variances per hidden layer ("<name>.<layer>.running_mean"/"_var");
  // empty for PReLU.
  std::vector<StateTensor<T>> state();

 private:
  DenseParams<T>* params_;
  std::string name_;
  std::vector<int64_t> sizes_;
  MlpActivation act_;
  int64_t max_rows_;
  // The constructor's allocation failure (returned by AttachDevice, Forward and Backward).
  Status alloc_status_;
  // Allocates the activation buffers on `device` (every one replaced), and the copies of
  // Dice's running statistics when mirror_stats.
  Status AllocateBuffers(kernels::Device device, bool mirror_stats);
  // Dice's running statistics: host -> device before a forward, device -> host after a
  // training one (no-ops on the CPU or with PReLU).
  Status UploadRunningStats(const kernels::Context& ctx);
  Status DownloadRunningStats(const kernels::Context& ctx);

  std::vector<Linear<T>> layers_;
  std::vector<int64_t> alpha_;  // per hidden layer: offset of its activation's alpha
  kernels::Device device_ = kernels::Device::kCpu;
  std::vector<kernels::Buffer<T>> pre_;    // per layer: Linear output [max_rows x out]
  std::vector<kernels::Buffer<T>> post_;   // per hidden layer: activation output
  std::vector<kernels::Buffer<T>> grad_;   // per layer: dL/d(Linear output) scratch
  std::vector<kernels::Buffer<T>> dpost_;  // per hidden layer: dL/d(activation output)
  // Dice state per hidden layer (not trained, so not in DenseParams): the running statistics
  // on the host (the reference, see AttachDevice) and, on CUDA, their device copies.
  std::vector<std::vector<T>> running_mean_, running_var_;
  std::vector<kernels::Buffer<T>> device_running_mean_, device_running_var_;
  std::vector<kernels::Buffer<T>> save_mean_, save_rstd_;
};

}  // namespace ips::models

#endif  // IPS_MODELS_LAYERS_H_
