// The CPU check of the copies a CTR model adds to run on CUDA (models/device_staging.h
// CtrDeviceIo, switched on for the CPU by the models' stage_on_cpu option): a staged model must
// give the plain model's losses, logits, dense and row gradients, Dice statistics and inference
// logits, also after its host weights changed between steps. Bitwise where the staged model runs
// the same arithmetic (DIN, the pooled baseline); within a relative L2 bound per tensor where
// its device path sums in another order (DIEN's layer-by-layer auxiliary MLP).
#ifndef IPS_TESTS_MODELS_STAGED_CHECK_H_
#define IPS_TESTS_MODELS_STAGED_CHECK_H_

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/context.h"
#include "models/model.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips::testing_util {

namespace staged_internal {

// Extra per-model scalars read after each training Forward (e.g. DIEN's click and aux losses).
using Extras = std::function<std::vector<double>(models::CtrModel<double>&)>;

// Trains both models on each of `batches`, stepping the host weights by -0.05 x gradient between
// batches, then scores `eval` in inference mode; cmp(what, got, want, n) compares each output of
// the staged model (got) with the plain one's (want): the loss, the logits, every dense tensor's
// gradient, both row-gradient tables, the extras, every state tensor and the inference logits.
template <typename Cmp>
void RunAndCompare(models::CtrModel<double>& plain, models::CtrModel<double>& staged,
                   const std::vector<models::CtrInputs<double>>& batches,
                   models::CtrInputs<double> eval, const Cmp& cmp, const Extras& extras) {
  const kernels::Context ctx;
  const int64_t dim = plain.embedding_dim();
  for (size_t round = 0; round < batches.size(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const models::CtrInputs<double>& in = batches[round];
    std::vector<double> loss(2), logits[2], grads[2], d_item[2], d_cat[2], extra[2];
    int k = 0;
    for (models::CtrModel<double>* m : {&plain, &staged}) {
      ASSERT_OK(m->Forward(ctx, in, true, &loss[k]));
      logits[k].assign(m->logits(), m->logits() + in.batch);
      if (extras) extra[k] = extras(*m);
      d_item[k].assign(in.num_item_rows * dim, std::nan(""));
      d_cat[k].assign(in.num_cat_rows * dim, std::nan(""));
      ASSERT_OK(m->Backward(ctx, in, d_item[k].data(), d_cat[k].data()));
      grads[k].assign(m->params().grads(), m->params().grads() + m->params().size());
      // What a dense optimizer does between steps: the next round must see it.
      double* w = m->params().values();
      for (int64_t i = 0; i < m->params().size(); ++i) w[i] -= 0.05 * grads[k][i];
      ++k;
    }
    cmp("loss", &loss[1], &loss[0], 1);
    cmp("logits", logits[1].data(), logits[0].data(), in.batch);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (const auto& e : plain.params().entries())
      cmp(("grad " + e.name).c_str(), grads[1].data() + e.offset, grads[0].data() + e.offset,
          e.size);
    cmp("d_item_rows", d_item[1].data(), d_item[0].data(), static_cast<int64_t>(d_item[0].size()));
    cmp("d_cat_rows", d_cat[1].data(), d_cat[0].data(), static_cast<int64_t>(d_cat[0].size()));
    ASSERT_EQ(extra[0].size(), extra[1].size());
    for (size_t i = 0; i < extra[0].size(); ++i)
      cmp(("extra " + std::to_string(i)).c_str(), &extra[1][i], &extra[0][i], 1);
  }
  // Inference reads the running statistics the training passes brought back to the host.
  const auto plain_state = plain.state(), staged_state = staged.state();
  ASSERT_EQ(plain_state.size(), staged_state.size());
  for (size_t i = 0; i < plain_state.size(); ++i)
    cmp(plain_state[i].name.c_str(), staged_state[i].data, plain_state[i].data,
        plain_state[i].size);
  eval.labels = nullptr;
  ASSERT_OK(plain.Forward(ctx, eval, false, nullptr));
  ASSERT_OK(staged.Forward(ctx, eval, false, nullptr));
  cmp("inference logits", staged.logits(), plain.logits(), eval.batch);
}

}  // namespace staged_internal

// Trains both models on each of `batches` (labels required; rows tables of num_*_rows x dim),
// stepping the host weights by -0.05 x gradient between batches, then scores `eval` (labels
// ignored) in inference mode, comparing everything bitwise.
inline void ExpectStagedMatchesPlain(models::CtrModel<double>& plain,
                                     models::CtrModel<double>& staged,
                                     const std::vector<models::CtrInputs<double>>& batches,
                                     models::CtrInputs<double> eval) {
  staged_internal::RunAndCompare(
      plain, staged, batches, eval,
      [](const char* what, const double* got, const double* want, int64_t n) {
        EXPECT_EQ(std::vector<double>(got, got + n), std::vector<double>(want, want + n)) << what;
      },
      nullptr);
}

// The same run, comparing every output tensor (the loss, the logits, each dense tensor's
// gradient, each row table, each extra, each state tensor, the inference logits) by its relative
// L2 error (tests/testing/tolerance.h), which must be <= max_rel_l2; NaN never passes.
inline void ExpectStagedCloseToPlain(models::CtrModel<double>& plain,
                                     models::CtrModel<double>& staged,
                                     const std::vector<models::CtrInputs<double>>& batches,
                                     models::CtrInputs<double> eval, double max_rel_l2,
                                     const staged_internal::Extras& extras = nullptr) {
  staged_internal::RunAndCompare(
      plain, staged, batches, eval,
      [max_rel_l2](const char* what, const double* got, const double* want, int64_t n) {
        EXPECT_LE(testing::RelativeL2(got, want, n), max_rel_l2) << what;
      },
      extras);
}

// The device is the model's: a CPU model of `options` (device() kCpu) refuses a CUDA Context in
// Forward and, after a CPU forward, in Backward, with INVALID_ARGUMENT naming `name`; `options`
// on kCuda creates no double model (UNIMPLEMENTED), nor a float one in a build without CUDA.
// Model is a CtrModel or SeqModel class template; `in` a training batch for it.
template <template <typename> class Model, typename Options, typename Inputs>
void ExpectTheDeviceIsTheModels(Options options, const Inputs& in, const std::string& name) {
  auto cpu = Model<double>::Create(options);
  ASSERT_OK(cpu.status());
  EXPECT_EQ((*cpu)->device(), kernels::Device::kCpu);
  kernels::Context cuda;
  cuda.device = kernels::Device::kCuda;
  double loss = 0;
  const Status wrong = (*cpu)->Forward(cuda, in, true, &loss);
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument) << wrong;
  EXPECT_NE(wrong.ToString().find(name), std::string::npos) << wrong;
  ASSERT_OK((*cpu)->Forward(kernels::Context{}, in, true, &loss));
  const int64_t dim = (*cpu)->embedding_dim();
  std::vector<double> d_item(static_cast<size_t>(in.num_item_rows * dim));
  Status wrong_back;
  if constexpr (std::is_same_v<Inputs, models::CtrInputs<double>>) {
    std::vector<double> d_cat(static_cast<size_t>(in.num_cat_rows * dim));
    wrong_back = (*cpu)->Backward(cuda, in, d_item.data(), d_cat.data());
  } else {
    wrong_back = (*cpu)->Backward(cuda, in, d_item.data());
  }
  EXPECT_EQ(wrong_back.code(), StatusCode::kInvalidArgument) << wrong_back;
  options.device = kernels::Device::kCuda;
  EXPECT_EQ(Model<double>::Create(options).status().code(), StatusCode::kUnimplemented);
  if (!kernels::CudaBuilt()) {
    EXPECT_EQ(Model<float>::Create(options).status().code(), StatusCode::kUnimplemented);
  }
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_STAGED_CHECK_H_
