// The CPU check of the copies a CTR model adds to run on CUDA (models/device_staging.h
// CtrDeviceIo, switched on for the CPU by the models' stage_on_cpu option): a staged model must
// give bitwise the plain model's losses, logits, dense and row gradients, Dice statistics and
// inference logits, also after its host weights changed between steps.
#ifndef IPS_TESTS_MODELS_STAGED_CHECK_H_
#define IPS_TESTS_MODELS_STAGED_CHECK_H_

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "models/model.h"
#include "tests/testing/status_matchers.h"

namespace ips::testing_util {

// Trains both models on each of `batches` (labels required; rows tables of num_*_rows x dim),
// stepping the host weights by -0.05 x gradient between batches, then scores `eval` (labels
// ignored) in inference mode, comparing everything bitwise.
inline void ExpectStagedMatchesPlain(models::CtrModel<double>& plain,
                                     models::CtrModel<double>& staged,
                                     const std::vector<models::CtrInputs<double>>& batches,
                                     models::CtrInputs<double> eval) {
  const kernels::Context ctx;
  const int64_t dim = plain.embedding_dim();
  for (size_t round = 0; round < batches.size(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const models::CtrInputs<double>& in = batches[round];
    std::vector<double> loss(2), logits[2], grads[2], d_item[2], d_cat[2];
    int k = 0;
    for (models::CtrModel<double>* m : {&plain, &staged}) {
      ASSERT_OK(m->Forward(ctx, in, true, &loss[k]));
      logits[k].assign(m->logits(), m->logits() + in.batch);
      d_item[k].assign(in.num_item_rows * dim, std::nan(""));
      d_cat[k].assign(in.num_cat_rows * dim, std::nan(""));
      ASSERT_OK(m->Backward(ctx, in, d_item[k].data(), d_cat[k].data()));
      grads[k].assign(m->params().grads(), m->params().grads() + m->params().size());
      // What a dense optimizer does between steps: the next round must see it.
      double* w = m->params().values();
      for (int64_t i = 0; i < m->params().size(); ++i) w[i] -= 0.05 * grads[k][i];
      ++k;
    }
    EXPECT_EQ(loss[0], loss[1]);
    EXPECT_EQ(logits[0], logits[1]);
    EXPECT_EQ(grads[0], grads[1]);
    EXPECT_EQ(d_item[0], d_item[1]);
    EXPECT_EQ(d_cat[0], d_cat[1]);
  }
  // Inference reads the running statistics the training passes brought back to the host.
  const auto plain_state = plain.state(), staged_state = staged.state();
  ASSERT_EQ(plain_state.size(), staged_state.size());
  for (size_t i = 0; i < plain_state.size(); ++i)
    for (int64_t j = 0; j < plain_state[i].size; ++j)
      EXPECT_EQ(plain_state[i].data[j], staged_state[i].data[j]) << plain_state[i].name;
  eval.labels = nullptr;
  ASSERT_OK(plain.Forward(ctx, eval, false, nullptr));
  ASSERT_OK(staged.Forward(ctx, eval, false, nullptr));
  for (int64_t i = 0; i < eval.batch; ++i) EXPECT_EQ(plain.logits()[i], staged.logits()[i]);
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_STAGED_CHECK_H_
