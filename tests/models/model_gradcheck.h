// Float64 gradient checks of a model against central differences of the loss it computes itself
// (tests/testing/gradcheck.h CheckGradient): each dense tensor separately, so that a failure
// names it, and the pulled embedding rows.
#ifndef IPS_TESTS_MODELS_MODEL_GRADCHECK_H_
#define IPS_TESTS_MODELS_MODEL_GRADCHECK_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "models/layers.h"
#include "tests/testing/gradcheck.h"

namespace ips::testing_util {

// Every tensor of `p` (or those whose name `only` accepts) against `dense_grad` (the analytic
// gradient of all of p); `loss_fn` recomputes the loss at p's current values. Leaves p's values
// as they were.
inline void ExpectDenseGradientsMatch(
    models::DenseParams<double>& p, const std::vector<double>& dense_grad,
    const std::function<double()>& loss_fn,
    const std::function<bool(const std::string& name)>& only = nullptr) {
  for (const auto& e : p.entries()) {
    if (only && !only(e.name)) continue;
    std::vector<double> param(p.values() + e.offset, p.values() + e.offset + e.size);
    std::vector<double> analytic(dense_grad.begin() + e.offset,
                                 dense_grad.begin() + e.offset + e.size);
    auto fn = [&]() {
      std::copy(param.begin(), param.end(), p.values() + e.offset);
      return loss_fn();
    };
    EXPECT_TRUE(testing::CheckGradient(e.name.c_str(), param, analytic, fn, 1e-6, 1e-6));
    std::copy(param.begin(), param.end(), p.values() + e.offset);
  }
}

// The dense tensors of `model`, the batch's item rows and (when `d_cat` is given) its category
// rows, against what Backward returned for `batch` (dense_grad, d_item, d_cat). The loss is
// model.Forward(ctx, batch.Inputs(), training) at each perturbed point.
template <typename Model, typename Batch>
void ExpectGradientsMatch(Model& model, const kernels::Context& ctx, Batch& batch,
                          const std::vector<double>& dense_grad, const std::vector<double>& d_item,
                          const std::vector<double>* d_cat) {
  auto loss_fn = [&]() {
    double l = 0;
    EXPECT_TRUE(model.Forward(ctx, batch.Inputs(), /*training=*/true, &l).ok());
    return l;
  };
  ExpectDenseGradientsMatch(model.params(), dense_grad, loss_fn);
  EXPECT_TRUE(testing::CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
  if (d_cat != nullptr) {
    EXPECT_TRUE(testing::CheckGradient("cat_rows", batch.cat_rows, *d_cat, loss_fn, 1e-6, 1e-6));
  }
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_MODEL_GRADCHECK_H_
