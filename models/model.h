// The two model interfaces the trainers drive. Every model is an explicit forward/backward pass
// over kernels/ that owns only its dense weights (DenseParams) and non-trained state; embedding
// rows are pulled by the trainer for the batch's unique keys and passed in as small row tables
// with, for every position, the row's index (kernels/embedding.h DedupKeys' `inverse`).
// Backward returns one gradient row per pulled row, ready for the store's Push.
//
//   CtrModel: (behaviour history, target) -> click logit, BCE loss. DIN, DIEN, BST, the pooled
//             baseline and MIND (trained with label-aware attention on the same samples).
//   SeqModel: a sequence -> one state per position, scored against the next item with sampled
//             negatives (SASRec, GRU4Rec). Ranking scores are <user vector, item row>.
//
// Models that can serve retrieval (SASRec, GRU4Rec, MIND) expose user vectors: scoring a
// candidate is max over the user's vectors of <vector, candidate item row>.
//
// Buffers are sized at Create() for max_batch rows: Forward/Backward allocate nothing.
// Templated on T (float for training, double for gradient checks). Thread safety: none; kernels
// use ctx.pool internally.
#ifndef IPS_MODELS_MODEL_H_
#define IPS_MODELS_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "models/layers.h"

namespace ips::models {

// ---- CTR models -------------------------------------------------------------------------------

// One CTR batch. Positions are laid out as [B x T] history (row b = sample b, oldest first, the
// valid steps are the rightmost lengths[b]), then B targets, then — only for models whose
// aux_negatives() is true (DIEN) — [B x T] auxiliary negatives (one sampled item per history
// position). So index arrays hold B*T + B (or 2*B*T + B) entries. Every index lies in
// [0, num_*_rows), padded positions included (they map to the padding key's row, which reads as
// zeros); padded positions get zero gradient.
template <typename T>
struct CtrInputs {
  int64_t batch = 0;                    // B <= max_batch
  const int32_t* lengths = nullptr;     // [B], each in [0, max_len]
  const int64_t* item_index = nullptr;  // rows of item_rows, layout above
  const int64_t* cat_index = nullptr;   // rows of cat_rows, layout above
  const T* item_rows = nullptr;         // [num_item_rows x embedding_dim]
  int64_t num_item_rows = 0;
  const T* cat_rows = nullptr;  // [num_cat_rows x embedding_dim]
  int64_t num_cat_rows = 0;
  const T* labels = nullptr;  // [B] in {0, 1}; nullptr for inference (no loss)
};

// The checks every CtrModel's Forward starts with: batch in [1, max_batch], non-null lengths,
// item index and rows (and category index and rows when cats == kRequired), lengths in
// [0, max_len], and each of the first `positions` indices inside its row table (category indices
// also when cats == kIfPresent and they are given). INVALID_ARGUMENT naming `model` and the first
// bad position.
enum class CategoryInputs { kRequired, kIfPresent };

// The check every pass of a model that lives on `model_device` starts with: ctx must be of that
// device. INVALID_ARGUMENT naming `model` otherwise.
Status CheckModelDevice(const char* model, kernels::Device model_device,
                        const kernels::Context& ctx);
template <typename T>
Status CheckCtrInputs(const char* model, const CtrInputs<T>& in, int64_t max_batch, int64_t max_len,
                      int64_t positions, CategoryInputs cats = CategoryInputs::kRequired);

template <typename T>
class CtrModel {
 public:
  virtual ~CtrModel() = default;

  virtual const char* name() const = 0;  // "din", "dien", ...
  virtual int64_t embedding_dim() const = 0;
  virtual int64_t max_len() const = 0;
  virtual int64_t max_batch() const = 0;
  // True if the inputs carry [B x T] auxiliary negatives after the targets (DIEN).
  virtual bool aux_negatives() const { return false; }
  // Where Forward/Backward run; they need a Context of this device (the inputs, the row
  // gradients, the loss, logits() and params() are host memory on every device).
  virtual kernels::Device device() const { return kernels::Device::kCpu; }

  // Forward over in.batch rows. training = true uses batch statistics and keeps what Backward
  // needs; with labels, *loss = the mean training loss (BCE, plus any auxiliary loss); loss may be
  // nullptr when labels are. Errors: INVALID_ARGUMENT for inputs that do not fit (batch outside
  // [1, max_batch], null arrays, lengths or indices out of range), the kernels' errors.
  virtual Status Forward(const kernels::Context& ctx, const CtrInputs<T>& in, bool training,
                         T* loss) = 0;
  // After Forward(training = true) with labels and the same inputs: dense gradients of the loss
  // into params().grads() (overwritten) and the gradient of every pulled row into d_item_rows
  // [num_item_rows x dim] and d_cat_rows [num_cat_rows x dim] (overwritten; unused rows zero).
  virtual Status Backward(const kernels::Context& ctx, const CtrInputs<T>& in, T* d_item_rows,
                          T* d_cat_rows) = 0;

  virtual DenseParams<T>& params() = 0;
  virtual const DenseParams<T>& params() const = 0;
  // Running statistics and other non-trained state (empty for most models).
  virtual std::vector<StateTensor<T>> state() { return {}; }
  // Logits [B] of the last Forward.
  virtual const T* logits() const = 0;
  // Models with dropout draw their masks from (seed, dropout step); a checkpoint carries the step
  // so that a resumed run replays the same masks. Models without dropout return false.
  virtual bool has_dropout_step() const { return false; }
  virtual uint64_t dropout_step() const { return 0; }
  virtual void set_dropout_step(uint64_t) {}

  // Retrieval (MIND): vectors per user (0 = the model does not retrieve), each of vector_dim().
  virtual int64_t num_user_vectors() const { return 0; }
  virtual int64_t vector_dim() const { return 0; }
  // After a Forward(training = false) (labels and targets are ignored for this purpose): the user
  // vectors [B x num_user_vectors() x vector_dim()] computed from the history alone.
  virtual const T* user_vectors() const { return nullptr; }
};

// ---- Next-item sequence models ----------------------------------------------------------------

// One sequence batch: [B x T] input items (row b = sequence b, oldest first, the valid steps are
// the rightmost lengths[b]), then [B x T] positives (the next item of each input step), then
// [B x T] sampled negatives; item_index has 3*B*T entries, or B*T for inference (pos/neg
// absent). Only item rows (no categories). Padded steps map to the padding row and get no loss.
template <typename T>
struct SeqInputs {
  int64_t batch = 0;
  const int32_t* lengths = nullptr;     // [B], each in [0, max_len]
  const int64_t* item_index = nullptr;  // layout above
  const T* item_rows = nullptr;         // [num_item_rows x embedding_dim]
  int64_t num_item_rows = 0;
};

template <typename T>
class SeqModel {
 public:
  virtual ~SeqModel() = default;

  virtual const char* name() const = 0;  // "sasrec", "gru4rec"
  virtual int64_t embedding_dim() const = 0;
  virtual int64_t max_len() const = 0;
  virtual int64_t max_batch() const = 0;
  // Where Forward/Backward run; they need a Context of this device (the inputs, the row
  // gradients, the loss, user_vectors() and params() are host memory on every device).
  virtual kernels::Device device() const { return kernels::Device::kCpu; }

  // training = true: dropout on, keeps what Backward needs, *loss = mean over valid positions of
  // BCE(<state_t, pos_t>, 1) + BCE(<state_t, neg_t>, 0). training = false: inputs are the
  // B*T sequence only, loss is ignored (may be nullptr) and user_vectors() is filled.
  virtual Status Forward(const kernels::Context& ctx, const SeqInputs<T>& in, bool training,
                         T* loss) = 0;
  // After a training Forward: dense gradients into params().grads(), row gradients into
  // d_item_rows [num_item_rows x dim] (overwritten).
  virtual Status Backward(const kernels::Context& ctx, const SeqInputs<T>& in, T* d_item_rows) = 0;

  virtual DenseParams<T>& params() = 0;
  virtual const DenseParams<T>& params() const = 0;
  virtual std::vector<StateTensor<T>> state() { return {}; }

  // After any Forward: the state at each sequence's last valid step [B x embedding_dim()]
  // (SASRec: the final LayerNorm output; GRU4Rec: the projected hidden state); the ranking score
  // of candidate c is <user_vectors()[b], E[c]>.
  virtual const T* user_vectors() const = 0;
  // Models with dropout draw their masks from (seed, dropout step); a checkpoint carries the step
  // so that a resumed run replays the same masks. Models without dropout return false.
  virtual bool has_dropout_step() const { return false; }
  virtual uint64_t dropout_step() const { return 0; }
  virtual void set_dropout_step(uint64_t) {}
};

}  // namespace ips::models

#endif  // IPS_MODELS_MODEL_H_
