#include "models/model.h"

#include <string>

namespace ips::models {

Status CheckModelDevice(const char* model, kernels::Device model_device,
                        const kernels::Context& ctx) {
  if (ctx.device == model_device) return Status::Ok();
  return InvalidArgumentError(std::string(model) + ": the model lives on " +
                              (model_device == kernels::Device::kCpu ? "the CPU" : "CUDA") +
                              " but was called with a Context for another device");
}

template <typename T>
Status CheckCtrInputs(const char* model, const CtrInputs<T>& in, int64_t max_batch, int64_t max_len,
                      int64_t positions, CategoryInputs cats) {
  const std::string m = model;
  const int64_t B = in.batch;
  if (B < 1 || B > max_batch)
    return InvalidArgumentError(m + ": batch " + std::to_string(B) + " outside [1, " +
                                std::to_string(max_batch) + "]");
  if (in.lengths == nullptr || in.item_index == nullptr || in.item_rows == nullptr)
    return InvalidArgumentError(m + ": null lengths, item_index or item_rows");
  if (cats == CategoryInputs::kRequired && (in.cat_index == nullptr || in.cat_rows == nullptr))
    return InvalidArgumentError(m + ": null cat_index or cat_rows");
  for (int64_t b = 0; b < B; ++b)
    if (in.lengths[b] < 0 || in.lengths[b] > max_len)
      return InvalidArgumentError(m + ": lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(in.lengths[b]) + " outside [0, " +
                                  std::to_string(max_len) + "]");
  for (int64_t i = 0; i < positions; ++i) {
    if (in.item_index[i] < 0 || in.item_index[i] >= in.num_item_rows)
      return InvalidArgumentError(m + ": item_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.item_index[i]) + " outside [0, " +
                                  std::to_string(in.num_item_rows) + ")");
    if (in.cat_index != nullptr && (in.cat_index[i] < 0 || in.cat_index[i] >= in.num_cat_rows))
      return InvalidArgumentError(m + ": cat_index[" + std::to_string(i) +
                                  "] = " + std::to_string(in.cat_index[i]) + " outside [0, " +
                                  std::to_string(in.num_cat_rows) + ")");
  }
  return Status::Ok();
}

template Status CheckCtrInputs<float>(const char*, const CtrInputs<float>&, int64_t, int64_t,
                                      int64_t, CategoryInputs);
template Status CheckCtrInputs<double>(const char*, const CtrInputs<double>&, int64_t, int64_t,
                                       int64_t, CategoryInputs);

}  // namespace ips::models
