// Float64 gradient checks of a model against central differences of the loss it computes itself
// (tests/testing/gradcheck.h CheckGradient): each dense tensor separately, so that a failure
// names it, and the pulled embedding rows. And the check that ties the float model (the
// production path) to the double one those checks run.
#ifndef IPS_TESTS_MODELS_MODEL_GRADCHECK_H_
#define IPS_TESTS_MODELS_MODEL_GRADCHECK_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "models/layers.h"
#include "models/model.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

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

// The float model against the double one (same options and seed, so the same dense weights) on
// the same inputs converted to float: the loss, the embedding rows' gradients (the float ones
// poisoned first) and the dense gradients agree within `tol`. float_cats false: the float model
// gets no category arrays (a model that does not read them must not need them).
inline void ExpectFloatMatchesDouble(const kernels::Context& ctx, models::CtrModel<double>& md,
                                     models::CtrModel<float>& mf,
                                     const models::CtrInputs<double>& in, bool float_cats = true,
                                     testing::Tolerance tol = {1e-5, 1e-4}) {
  const int64_t dim = md.embedding_dim();
  const std::vector<float> item_f(in.item_rows, in.item_rows + in.num_item_rows * dim);
  const std::vector<float> cat_f(in.cat_rows, in.cat_rows + in.num_cat_rows * dim);
  const std::vector<float> labels_f(in.labels, in.labels + in.batch);
  models::CtrInputs<float> inf;
  inf.batch = in.batch;
  inf.lengths = in.lengths;
  inf.item_index = in.item_index;
  inf.item_rows = item_f.data();
  inf.num_item_rows = in.num_item_rows;
  inf.labels = labels_f.data();
  if (float_cats) {
    inf.cat_index = in.cat_index;
    inf.cat_rows = cat_f.data();
    inf.num_cat_rows = in.num_cat_rows;
  }
  double ld = 0;
  float lf = 0;
  ASSERT_OK(md.Forward(ctx, in, true, &ld));
  ASSERT_OK(mf.Forward(ctx, inf, true, &lf));
  EXPECT_NEAR(lf, ld, 1e-5);
  std::vector<double> gid(item_f.size()), gcd(cat_f.size());
  std::vector<float> gif(item_f.size()), gcf(cat_f.size());
  testing::Poison(gif);
  testing::Poison(gcf);
  ASSERT_OK(md.Backward(ctx, in, gid.data(), gcd.data()));
  ASSERT_OK(mf.Backward(ctx, inf, gif.data(), float_cats ? gcf.data() : nullptr));
  EXPECT_TRUE(testing::AllClose(gif, gid, tol)) << "item rows";
  if (float_cats) {
    EXPECT_TRUE(testing::AllClose(gcf, gcd, tol)) << "category rows";
  }
  EXPECT_TRUE(testing::AllClose(mf.params().grads(), md.params().grads(), md.params().size(), tol))
      << "dense gradients";
}

// The same for a sequence model (ctx_d / ctx_f: the double and float models' contexts).
inline void ExpectFloatMatchesDouble(const kernels::Context& ctx_d, const kernels::Context& ctx_f,
                                     models::SeqModel<double>& md, models::SeqModel<float>& mf,
                                     const models::SeqInputs<double>& in,
                                     testing::Tolerance tol = {1e-5, 1e-4}) {
  const std::vector<float> rows_f(in.item_rows,
                                  in.item_rows + in.num_item_rows * md.embedding_dim());
  models::SeqInputs<float> inf;
  inf.batch = in.batch;
  inf.lengths = in.lengths;
  inf.item_index = in.item_index;
  inf.item_rows = rows_f.data();
  inf.num_item_rows = in.num_item_rows;
  double ld = 0;
  float lf = 0;
  ASSERT_OK(md.Forward(ctx_d, in, true, &ld));
  ASSERT_OK(mf.Forward(ctx_f, inf, true, &lf));
  EXPECT_NEAR(lf, ld, 1e-5);
  std::vector<double> gd(rows_f.size());
  std::vector<float> gf(rows_f.size());
  testing::Poison(gf);
  ASSERT_OK(md.Backward(ctx_d, in, gd.data()));
  ASSERT_OK(mf.Backward(ctx_f, inf, gf.data()));
  EXPECT_TRUE(testing::AllClose(gf, gd, tol)) << "item rows";
  EXPECT_TRUE(testing::AllClose(mf.params().grads(), md.params().grads(), md.params().size(), tol))
      << "dense gradients";
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_MODEL_GRADCHECK_H_
