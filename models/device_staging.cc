#include "models/device_staging.h"

#include <string>
#include <utility>

#include "kernels/embedding.h"

namespace ips::models {

template <typename T>
StatusOr<CtrInputStaging<T>> CtrInputStaging<T>::Create(kernels::Device device, int64_t max_batch,
                                                        int64_t max_positions, int64_t dim,
                                                        bool categories) {
  CtrInputStaging s;
  s.max_batch_ = max_batch;
  s.max_positions_ = max_positions;
  s.max_cat_positions_ = categories ? max_positions : 0;
  s.dim_ = dim;
  IPS_ASSIGN_OR_RETURN(s.lengths_, kernels::Buffer<int32_t>::Create(device, max_batch));
  IPS_ASSIGN_OR_RETURN(s.labels_, kernels::Buffer<T>::Create(device, max_batch));
  IPS_ASSIGN_OR_RETURN(s.item_index_, kernels::Buffer<int64_t>::Create(device, max_positions));
  IPS_ASSIGN_OR_RETURN(s.cat_index_,
                       kernels::Buffer<int64_t>::Create(device, s.max_cat_positions_));
  for (kernels::Buffer<T>* rows : {&s.item_rows_, &s.d_item_rows_}) {
    IPS_ASSIGN_OR_RETURN(*rows, kernels::Buffer<T>::Create(device, max_positions * dim));
  }
  for (kernels::Buffer<T>* rows : {&s.cat_rows_, &s.d_cat_rows_}) {
    IPS_ASSIGN_OR_RETURN(*rows, kernels::Buffer<T>::Create(device, s.max_cat_positions_ * dim));
  }
  return s;
}

template <typename T>
StatusOr<CtrInputs<T>> CtrInputStaging<T>::Stage(const kernels::Context& ctx,
                                                 const CtrInputs<T>& in, int64_t positions) {
  const bool cats = in.cat_index != nullptr || in.cat_rows != nullptr;
  if (in.batch > max_batch_ || positions > max_positions_ || in.num_item_rows > max_positions_ ||
      in.num_cat_rows > max_cat_positions_ || (cats && positions > max_cat_positions_))
    return InvalidArgumentError("CtrInputStaging: batch of " + std::to_string(in.batch) +
                                " rows, " + std::to_string(positions) +
                                " positions exceeds the staging buffers");
  auto copy = [&](void* dst, const void* src, int64_t count, size_t elem) -> Status {
    if (src == nullptr || count == 0) return Status::Ok();
    return kernels::CopyToDevice(ctx, dst, src, static_cast<size_t>(count) * elem);
  };
  CtrInputs<T> d = in;
  IPS_RETURN_IF_ERROR(copy(lengths_.data(), in.lengths, in.batch, sizeof(int32_t)));
  d.lengths = lengths_.data();
  IPS_RETURN_IF_ERROR(copy(item_index_.data(), in.item_index, positions, sizeof(int64_t)));
  d.item_index = item_index_.data();
  IPS_RETURN_IF_ERROR(copy(item_rows_.data(), in.item_rows, in.num_item_rows * dim_, sizeof(T)));
  d.item_rows = item_rows_.data();
  if (in.cat_index != nullptr) {
    IPS_RETURN_IF_ERROR(copy(cat_index_.data(), in.cat_index, positions, sizeof(int64_t)));
    d.cat_index = cat_index_.data();
  }
  if (in.cat_rows != nullptr) {
    IPS_RETURN_IF_ERROR(copy(cat_rows_.data(), in.cat_rows, in.num_cat_rows * dim_, sizeof(T)));
    d.cat_rows = cat_rows_.data();
  }
  if (in.labels != nullptr) {
    IPS_RETURN_IF_ERROR(copy(labels_.data(), in.labels, in.batch, sizeof(T)));
    d.labels = labels_.data();
  }
  staged_ = d;
  return d;
}

template <typename T>
Status CtrInputStaging<T>::UnstageRowGrads(const kernels::Context& ctx, T* d_item_rows,
                                           T* d_cat_rows) const {
  IPS_RETURN_IF_ERROR(
      kernels::CopyToHost(ctx, d_item_rows, d_item_rows_.data(),
                          static_cast<size_t>(staged_.num_item_rows * dim_) * sizeof(T)));
  if (d_cat_rows == nullptr) return Status::Ok();
  return kernels::CopyToHost(ctx, d_cat_rows, d_cat_rows_.data(),
                             static_cast<size_t>(staged_.num_cat_rows * dim_) * sizeof(T));
}

template <typename T>
StatusOr<CtrDeviceIo<T>> CtrDeviceIo<T>::Create(kernels::Device device, bool stage_on_cpu,
                                                int64_t max_batch, int64_t max_positions,
                                                int64_t dim, int64_t output_width,
                                                bool categories) {
  CtrDeviceIo io;
  if (device == kernels::Device::kCpu && !stage_on_cpu) return io;
  IPS_ASSIGN_OR_RETURN(
      CtrInputStaging<T> staging,
      CtrInputStaging<T>::Create(device, max_batch, max_positions, dim, categories));
  io.staging_ = std::make_unique<CtrInputStaging<T>>(std::move(staging));
  io.output_width_ = output_width;
  io.host_output_.resize(static_cast<size_t>(max_batch * output_width));
  return io;
}

template <typename T>
StatusOr<CtrInputs<T>> CtrDeviceIo<T>::BeginForward(const kernels::Context& ctx,
                                                    const CtrInputs<T>& host_in, int64_t positions,
                                                    DenseParams<T>* params) {
  if (!staged()) return host_in;
  IPS_ASSIGN_OR_RETURN(CtrInputs<T> in, staging_->Stage(ctx, host_in, positions));
  IPS_RETURN_IF_ERROR(params->UploadValues(ctx));
  return in;
}

template <typename T>
Status CtrDeviceIo<T>::EndForward(const kernels::Context& ctx, const T* output, int64_t batch) {
  if (!staged()) return Status::Ok();
  return kernels::CopyToHost(ctx, host_output_.data(), output,
                             static_cast<size_t>(batch * output_width_) * sizeof(T));
}

template <typename T>
Status CtrDeviceIo<T>::EndBackward(const kernels::Context& ctx, T* d_item_rows, T* d_cat_rows,
                                   DenseParams<T>* params) {
  if (!staged()) return Status::Ok();
  IPS_RETURN_IF_ERROR(staging_->UnstageRowGrads(ctx, d_item_rows, d_cat_rows));
  return params->DownloadGrads(ctx);
}

template <typename T>
Status CtrDeviceIo<T>::ScatterRowGradsAndEnd(const kernels::Context& ctx, const CtrInputs<T>& in,
                                             int64_t positions, int64_t dim, const T* g_item,
                                             const T* g_cat, T* d_item_rows, T* d_cat_rows,
                                             DenseParams<T>* params) {
  kernels::ScatterAddArgs<T> s;
  s.grad_rows = g_item;
  s.inverse = in.item_index;
  s.n = positions;
  s.dim = dim;
  s.num_unique = in.num_item_rows;
  s.grad_unique = ItemGradTarget(d_item_rows);
  IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  if (g_cat != nullptr) {
    s.grad_rows = g_cat;
    s.inverse = in.cat_index;
    s.num_unique = in.num_cat_rows;
    s.grad_unique = CatGradTarget(d_cat_rows);
    IPS_RETURN_IF_ERROR(kernels::ScatterAdd(ctx, s));
  }
  return EndBackward(ctx, d_item_rows, d_cat_rows, params);
}

template class CtrInputStaging<float>;
template class CtrInputStaging<double>;
template class CtrDeviceIo<float>;
template class CtrDeviceIo<double>;

}  // namespace ips::models
