// PooledModel: float64 finite-difference checks of the whole backward (every dense tensor and
// every pulled item and category row) for SUM and MEAN pooling, PReLU and Dice, histories of
// length 0, 1, max and mixed; the pooled vector's definition (independent of the target, MEAN =
// SUM / len); float/double agreement; input and option validation.
#include "models/pooled.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/models/ctr_test_batch.h"
#include "tests/models/model_gradcheck.h"
#include "tests/models/staged_check.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips::models {
namespace {

using testing::CheckGradient;
using testing::FillUniform;

PooledOptions SmallOptions(HistoryPooling pooling, MlpActivation act) {
  PooledOptions o;
  o.embedding_dim = 3;
  o.max_len = 5;
  o.max_batch = 3;
  o.pooling = pooling;
  o.mlp_hidden = {7, 4};
  o.activation = act;
  o.seed = 7;
  return o;
}

// Rows of T = 5 steps over 4 item rows and 3 category rows (tests/models/ctr_test_batch.h).
struct SmallBatch : testing_util::SmallCtrBatch {
  explicit SmallBatch(std::vector<int32_t> lens, uint64_t seed = 11)
      : SmallCtrBatch(std::move(lens), 5, 3, 4, 3, seed) {}
};

struct GradCase {
  HistoryPooling pooling;
  MlpActivation act;
  std::vector<int32_t> lengths;
  bool threaded;
  std::string label;
};
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.label; }

class PooledGradTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(PooledGradTest, Backward_B3_T5_D3x2_Mlp7x4) {
  const GradCase c = GetParam();
  auto model_or = PooledModel<double>::Create(SmallOptions(c.pooling, c.act));
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  PooledModel<double>& model = **model_or;
  // Move the weights off their init so PReLU/Dice alphas and biases are generic.
  Rng rng(3);
  DenseParams<double>& p = model.params();
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] += 0.3 * (2 * rng.Uniform() - 1);

  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  SmallBatch batch(c.lengths);
  const CtrInputs<double> in = batch.Inputs();
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, in, /*training=*/true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, in, d_item.data(), d_cat.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());

  testing_util::ExpectGradientsMatch(model, ctx, batch, dense_grad, d_item, &d_cat);
}

INSTANTIATE_TEST_SUITE_P(
    Pooled, PooledGradTest,
    ::testing::Values(
        GradCase{HistoryPooling::kSum, MlpActivation::kPrelu, {5, 1, 3}, false, "sum_prelu_mixed"},
        GradCase{
            HistoryPooling::kMean, MlpActivation::kPrelu, {5, 1, 3}, false, "mean_prelu_mixed"},
        GradCase{HistoryPooling::kSum, MlpActivation::kDice, {0, 5, 2}, true, "sum_dice_len0"},
        GradCase{HistoryPooling::kMean, MlpActivation::kDice, {0, 1, 5}, false, "mean_dice_len0"},
        GradCase{HistoryPooling::kMean, MlpActivation::kPrelu, {5, 5, 5}, true, "mean_prelu_max"},
        GradCase{HistoryPooling::kSum, MlpActivation::kPrelu, {1, 1, 1}, false, "sum_prelu_len1"},
        GradCase{
            HistoryPooling::kMean, MlpActivation::kPrelu, {0, 0, 0}, false, "mean_prelu_allempty"}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return info.param.label; });

// pooled() is SUM (or SUM / len) of [item, cat] over the valid steps only, does not depend on the
// target, and an empty history pools to zero; a pulled row nobody indexes gets zero gradient.
TEST(PooledForward, PooledIsTargetIndependentSumOrMean) {
  for (HistoryPooling mode : {HistoryPooling::kSum, HistoryPooling::kMean}) {
    auto m = PooledModel<double>::Create(SmallOptions(mode, MlpActivation::kPrelu));
    ASSERT_TRUE(m.ok());
    SmallBatch batch({4, 4, 0});
    batch.num_item_rows = 5;  // row 4 never indexed
    batch.item_rows.resize(5 * 3, 0.75);
    // Same history in rows 0 and 1 (padding positions differ: they must not be read), different
    // targets.
    for (int64_t t = 1; t < 5; ++t) {
      batch.item_index[5 + t] = batch.item_index[t];
      batch.cat_index[5 + t] = batch.cat_index[t];
    }
    batch.item_index[0] = 3;
    batch.item_index[5] = 2;
    batch.item_index[15] = 0;
    batch.item_index[16] = 1;
    kernels::Context ctx;
    ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, nullptr));
    const double* pooled = (*m)->pooled();
    for (int64_t c = 0; c < 6; ++c) {
      double want = 0;
      for (int64_t t = 1; t < 5; ++t)
        want += c < 3 ? batch.item_rows[batch.item_index[t] * 3 + c]
                      : batch.cat_rows[batch.cat_index[t] * 3 + c - 3];
      if (mode == HistoryPooling::kMean) want /= 4;
      EXPECT_NEAR(pooled[c], want, 1e-12) << c;
      EXPECT_EQ(pooled[6 + c], pooled[c]) << "pooled depends on the target or on padding";
      EXPECT_EQ(pooled[12 + c], 0.0) << "empty history must pool to zero";
    }
    EXPECT_NE((*m)->logits()[0], (*m)->logits()[1]);  // the MLP still sees the target
    std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
        d_cat(batch.cat_rows.size(), std::nan(""));
    ASSERT_OK((*m)->Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(d_item[4 * 3 + c], 0.0);
  }
}

TEST(PooledPrecision, FloatMatchesDouble_B3_T5) {
  const PooledOptions o = SmallOptions(HistoryPooling::kMean, MlpActivation::kDice);
  auto md = PooledModel<double>::Create(o);
  auto mf = PooledModel<float>::Create(o);
  ASSERT_TRUE(md.ok() && mf.ok());
  SmallBatch batch({5, 1, 3});
  testing_util::ExpectFloatMatchesDouble(kernels::Context(), **md, **mf, batch.Inputs());
}

TEST(PooledInputs, RejectsBadIndexLengthBatchAndPointers) {
  auto m = PooledModel<double>::Create(SmallOptions(HistoryPooling::kSum, MlpActivation::kPrelu));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SmallBatch batch({5, 1, 3});
  batch.item_index[7] = 4;  // only 4 rows
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("item_index[7]"), std::string::npos) << s.message();
  batch.item_index[7] = 0;
  batch.cat_index[16] = -1;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("cat_index[16]"), std::string::npos) << s.message();
  batch.cat_index[16] = 0;
  batch.lengths[2] = 6;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[2]"), std::string::npos) << s.message();
  batch.lengths[2] = -1;
  EXPECT_EQ((*m)->Forward(ctx, batch.Inputs(), true, nullptr).code(), StatusCode::kInvalidArgument);
  batch.lengths[2] = 3;
  CtrInputs<double> in = batch.Inputs();
  for (int64_t b : {0, 4}) {
    in.batch = b;
    s = (*m)->Forward(ctx, in, true, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("batch"), std::string::npos) << s.message();
  }
  in.batch = 3;
  in.cat_rows = nullptr;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  std::vector<double> d(64);
  auto fresh =
      PooledModel<double>::Create(SmallOptions(HistoryPooling::kSum, MlpActivation::kPrelu));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  // Inference forward (no labels) does not enable Backward.
  in.labels = nullptr;
  ASSERT_OK((*fresh)->Forward(ctx, in, false, nullptr));
  EXPECT_EQ((*fresh)->Backward(ctx, batch.Inputs(), d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_OK((*fresh)->Forward(ctx, batch.Inputs(), true, nullptr));
  EXPECT_EQ((*fresh)->Backward(ctx, batch.Inputs(), nullptr, d.data()).code(),
            StatusCode::kInvalidArgument);
}

TEST(PooledOptionsTest, RejectsEachBadField) {
  struct Case {
    const char* field;
    void (*mutate)(PooledOptions*);
  };
  const Case cases[] = {
      {"embedding_dim", [](PooledOptions* o) { o->embedding_dim = 0; }},
      {"max_len", [](PooledOptions* o) { o->max_len = 0; }},
      {"max_batch", [](PooledOptions* o) { o->max_batch = 0; }},
      {"mlp_hidden[1]",
       [](PooledOptions* o) {
         o->mlp_hidden = {4, 0};
       }},
      {"pooling", [](PooledOptions* o) { o->pooling = static_cast<HistoryPooling>(7); }},
      {"max_batch", [](PooledOptions* o) {
         o->activation = MlpActivation::kDice;
         o->max_batch = 1;
       }}};
  for (const Case& c : cases) {
    PooledOptions o = SmallOptions(HistoryPooling::kSum, MlpActivation::kPrelu);
    c.mutate(&o);
    auto m = PooledModel<float>::Create(o);
    ASSERT_FALSE(m.ok()) << c.field;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(std::string("PooledOptions.") + c.field), std::string::npos)
        << m.status().message();
  }
  // The default sizes: MLP 72 -> 200 -> 80 -> 1 with PReLU.
  PooledOptions o;
  o.max_batch = 2;
  auto m = PooledModel<float>::Create(o);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->params().size(), 72 * 200 + 200 + 200 + 200 * 80 + 80 + 80 + 80 + 1);
  EXPECT_STREQ((*m)->name(), "pooled");
  EXPECT_EQ((*m)->num_user_vectors(), 0);
}

// The CUDA path's copies (CtrDeviceIo), run on the CPU with stage_on_cpu: bitwise the plain
// model, sum and mean pooling, PReLU and Dice (tests/models/staged_check.h).
TEST(PooledDevice, StagedCopiesGiveBitwiseThePlainCpuResults) {
  for (HistoryPooling pooling : {HistoryPooling::kSum, HistoryPooling::kMean}) {
    for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
      SCOPED_TRACE(std::string(HistoryPoolingName(pooling)) + " " + MlpActivationName(act));
      PooledOptions o = SmallOptions(pooling, act);
      auto plain = PooledModel<double>::Create(o);
      ASSERT_OK(plain.status());
      o.stage_on_cpu = true;
      auto staged = PooledModel<double>::Create(o);
      ASSERT_OK(staged.status());
      const SmallBatch b1({5, 1, 0}, 21), b2({5, 1, 0}, 22), eval({2, 5, 3}, 31);
      testing_util::ExpectStagedMatchesPlain(**plain, **staged, {b1.Inputs(), b2.Inputs()},
                                             eval.Inputs());
    }
  }
  // The device is the model's.
  auto cpu = PooledModel<double>::Create(SmallOptions(HistoryPooling::kSum, MlpActivation::kPrelu));
  ASSERT_OK(cpu.status());
  kernels::Context cuda;
  cuda.device = kernels::Device::kCuda;
  const SmallBatch b({5, 1, 3});
  EXPECT_EQ((*cpu)->Forward(cuda, b.Inputs(), true, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips::models
