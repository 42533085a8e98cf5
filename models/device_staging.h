// CtrInputStaging: the device copies of a CtrModel's inputs (models/model.h CtrInputs) and of
// its row gradients, for a model that runs on CUDA. The model's interface stays host memory (the
// trainer pulls rows into host buffers, page-locked when the model is on CUDA, see
// worker/trainer.cc); Stage copies a batch to the device at the start of Forward and
// UnstageRowGrads copies the pulled rows' gradients back at the end of Backward.
// Buffers are sized at Create for the model's largest batch; nothing is allocated per batch.
#ifndef IPS_MODELS_DEVICE_STAGING_H_
#define IPS_MODELS_DEVICE_STAGING_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/layers.h"
#include "models/model.h"

namespace ips::models {

template <typename T>
class CtrInputStaging {
 public:
  // For batches of up to max_batch rows with up to max_positions indices per table (every
  // pulled row is referenced, so a table holds at most max_positions rows) of `dim` floats.
  // categories = false: a model without category rows (no buffers for them; Stage refuses
  // category inputs).
  static StatusOr<CtrInputStaging> Create(kernels::Device device, int64_t max_batch,
                                          int64_t max_positions, int64_t dim,
                                          bool categories = true);

  // Copies `in` (host; `positions` indices per table, already checked by the model) to the
  // device and returns the same batch with device pointers. Categories may be absent.
  StatusOr<CtrInputs<T>> Stage(const kernels::Context& ctx, const CtrInputs<T>& in,
                               int64_t positions);
  // The last staged batch.
  const CtrInputs<T>& staged() const { return staged_; }
  // Device buffers for the row gradients of the last staged batch.
  T* device_d_item_rows() { return d_item_rows_.data(); }
  T* device_d_cat_rows() { return d_cat_rows_.data(); }
  // Copies those gradients to the host arrays (d_cat_rows may be null when there are no
  // categories); waits for the copy.
  Status UnstageRowGrads(const kernels::Context& ctx, T* d_item_rows, T* d_cat_rows) const;

 private:
  int64_t max_batch_ = 0, max_positions_ = 0, max_cat_positions_ = 0, dim_ = 0;
  kernels::Buffer<int32_t> lengths_;
  kernels::Buffer<int64_t> item_index_, cat_index_;
  kernels::Buffer<T> item_rows_, cat_rows_, labels_, d_item_rows_, d_cat_rows_;
  CtrInputs<T> staged_;
};

// What a model adds around its passes so that they can run on CUDA with a host interface (DIN,
// DIEN, MIND, the pooled baseline and, through SeqAsCtrInputs, GRU4Rec use it): the batch staged
// in, the weights uploaded, the forward's host-visible output (logits, or a sequence model's user
// vectors), the row gradients and the dense gradients copied back. Not staged (a plain CPU
// model), every call passes through and costs nothing.
template <typename T>
class CtrDeviceIo {
 public:
  // Staged off the CPU, and on the CPU with stage_on_cpu (the models' test switch that runs this
  // logic with the CPU kernels).
  // output_width: elements per row of the output EndForward brings back (1: logits);
  // categories: as CtrInputStaging::Create.
  static StatusOr<CtrDeviceIo> Create(kernels::Device device, bool stage_on_cpu, int64_t max_batch,
                                      int64_t max_positions, int64_t dim, int64_t output_width = 1,
                                      bool categories = true);
  bool staged() const { return staging_ != nullptr; }

  // Start of Forward: the batch as the kernels see it (host_in itself when not staged) with
  // `positions` indices per table, and params' values uploaded.
  StatusOr<CtrInputs<T>> BeginForward(const kernels::Context& ctx, const CtrInputs<T>& host_in,
                                      int64_t positions, DenseParams<T>* params);
  // After Forward wrote its output [batch x output_width] (model memory; the logits of a CTR
  // model): keeps their host copy when staged.
  Status EndForward(const kernels::Context& ctx, const T* output, int64_t batch);
  // The model's logits() (or user_vectors()) given its own buffer.
  const T* HostOutput(const T* output) const { return staged() ? host_output_.data() : output; }

  // Backward: the inputs of the last forward (host_in when not staged), where the row gradients
  // are to be written, and at the end the copies back (row gradients, then dense gradients).
  const CtrInputs<T>& BackwardInputs(const CtrInputs<T>& host_in) const {
    return staged() ? staging_->staged() : host_in;
  }
  T* ItemGradTarget(T* host_d_item_rows) {
    return staged() ? staging_->device_d_item_rows() : host_d_item_rows;
  }
  T* CatGradTarget(T* host_d_cat_rows) {
    return staged() ? staging_->device_d_cat_rows() : host_d_cat_rows;
  }
  Status EndBackward(const kernels::Context& ctx, T* d_item_rows, T* d_cat_rows,
                     DenseParams<T>* params);
  // The usual end of a Backward: scatter-adds per-position row gradients g_item (and g_cat,
  // unless null) [positions x dim], in the index layout of `in` (the inputs the kernels saw),
  // into one gradient row per pulled row (kernels/embedding.h ScatterAdd, into the targets
  // above), then EndBackward.
  Status ScatterRowGradsAndEnd(const kernels::Context& ctx, const CtrInputs<T>& in,
                               int64_t positions, int64_t dim, const T* g_item, const T* g_cat,
                               T* d_item_rows, T* d_cat_rows, DenseParams<T>* params);

 private:
  std::unique_ptr<CtrInputStaging<T>> staging_;  // null when not staged
  int64_t output_width_ = 1;
  std::vector<T> host_output_;
};

// A sequence batch (models/model.h SeqInputs: item rows only, no labels) as the CtrInputs the
// staging copies, and back: the copies are the same, so sequence models share CtrDeviceIo.
template <typename T>
CtrInputs<T> SeqAsCtrInputs(const SeqInputs<T>& in) {
  CtrInputs<T> c;
  c.batch = in.batch;
  c.lengths = in.lengths;
  c.item_index = in.item_index;
  c.item_rows = in.item_rows;
  c.num_item_rows = in.num_item_rows;
  return c;
}
template <typename T>
SeqInputs<T> CtrAsSeqInputs(const CtrInputs<T>& in) {
  SeqInputs<T> s;
  s.batch = in.batch;
  s.lengths = in.lengths;
  s.item_index = in.item_index;
  s.item_rows = in.item_rows;
  s.num_item_rows = in.num_item_rows;
  return s;
}

}  // namespace ips::models

#endif  // IPS_MODELS_DEVICE_STAGING_H_
