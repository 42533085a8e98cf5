// Din: float64 finite-difference checks of the whole model's backward (every dense tensor and
// every pulled embedding row), PReLU/Dice and raw/softmax attention, variable lengths (0, 1, max),
// plus structural checks that attention is live (the pooled interest depends on the target and
// gradients reach the activation unit) and float/double agreement.
#include "models/din.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
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

// B = 3, T = 5, dim 3 + 3, attention 6/5, MLP 7/4 (the brief's small configuration).
DinOptions SmallOptions(MlpActivation act, bool softmax) {
  DinOptions o;
  o.embedding_dim = 3;
  o.max_len = 5;
  o.max_batch = 3;
  o.attention_hidden1 = 6;
  o.attention_hidden2 = 5;
  o.mlp_hidden = {7, 4};
  o.activation = act;
  o.attention_softmax = softmax;
  o.seed = 7;
  return o;
}

// Rows of T = 5 steps over 4 item rows and 3 category rows (tests/models/ctr_test_batch.h).
struct SmallBatch : testing_util::SmallCtrBatch {
  explicit SmallBatch(std::vector<int32_t> lens, uint64_t seed = 11)
      : SmallCtrBatch(std::move(lens), 5, 3, 4, 3, seed) {}
};

struct GradCase {
  MlpActivation act;
  bool softmax;
  bool threaded;
};

class DinGradTest : public ::testing::TestWithParam<GradCase> {};

// Every dense parameter and every embedding row against central differences of the mean BCE.
TEST_P(DinGradTest, Backward_B3_T5_D3x2_Attn6x5_Mlp7x4_varlen) {
  const GradCase c = GetParam();
  auto model_or = Din<double>::Create(SmallOptions(c.act, c.softmax));
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  Din<double>& model = **model_or;
  // Perturb the initial weights away from their init so that PReLU/Dice alphas (0.25 / 0) and
  // biases are generic (alpha = 0 would make Dice's second branch invisible to the check).
  Rng rng(3);
  DenseParams<double>& p = model.params();
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] += 0.3 * (2 * rng.Uniform() - 1);

  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  // Row 0 has the full history, row 1 one step, row 2 three steps (length 0 is a separate test:
  // with Dice it would still be fine, but softmax rows of length 0 have no gradient at all).
  SmallBatch batch({5, 1, 3});
  const DinInputs<double> in = batch.Inputs();

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

INSTANTIATE_TEST_SUITE_P(Din, DinGradTest,
                         ::testing::Values(GradCase{MlpActivation::kPrelu, false, false},
                                           GradCase{MlpActivation::kPrelu, true, false},
                                           GradCase{MlpActivation::kDice, false, false},
                                           GradCase{MlpActivation::kDice, true, true},
                                           GradCase{MlpActivation::kPrelu, false, true}),
                         [](const ::testing::TestParamInfo<GradCase>& info) {
                           return std::string(MlpActivationName(info.param.act)) +
                                  (info.param.softmax ? "_softmax" : "_raw") +
                                  (info.param.threaded ? "_pool2" : "_inline");
                         });

// A row with an empty history: no attention, pooled = summed = 0; only its target rows get
// gradient. Also checks an unused pulled row gets exactly zero.
TEST(DinGrad, Backward_EmptyHistoryRow_UnusedRowIsZero) {
  auto model_or = Din<double>::Create(SmallOptions(MlpActivation::kPrelu, false));
  ASSERT_TRUE(model_or.ok());
  Din<double>& model = **model_or;
  SmallBatch batch({0, 5, 2});
  batch.num_item_rows = 5;  // row 4 is never indexed
  batch.item_rows.resize(5 * batch.D, 0.5);
  kernels::Context ctx;
  const DinInputs<double> in = batch.Inputs();
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, in, true, &loss));
  for (int64_t t = 0; t < 5; ++t) EXPECT_EQ(model.attention_weights()[t], 0.0);
  std::vector<double> d_item(batch.item_rows.size()), d_cat(batch.cat_rows.size());
  ASSERT_OK(model.Backward(ctx, in, d_item.data(), d_cat.data()));
  for (int64_t c = 0; c < batch.D; ++c) EXPECT_EQ(d_item[4 * batch.D + c], 0.0);
  auto loss_fn = [&]() {
    double l = 0;
    EXPECT_TRUE(model.Forward(ctx, batch.Inputs(), true, &l).ok());
    return l;
  };
  EXPECT_TRUE(CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("cat_rows", batch.cat_rows, d_cat, loss_fn, 1e-6, 1e-6));
}

// Attention must be live: the pooled interest of a fixed history changes with the target, the
// activation unit's weights receive non-zero gradients, and with attention disabled the pooled
// vector is exactly zero. (Guards against a model that silently drops the attention branch.)
TEST(DinAttention, PooledDependsOnTargetAndAttentionGetsGradient) {
  auto model_or = Din<double>::Create(SmallOptions(MlpActivation::kPrelu, false));
  ASSERT_TRUE(model_or.ok());
  Din<double>& model = **model_or;
  kernels::Context ctx;
  SmallBatch batch({5, 5, 5});
  // Same history in rows 0 and 1, different targets.
  for (int64_t t = 0; t < 5; ++t) {
    batch.item_index[5 + t] = batch.item_index[t];
    batch.cat_index[5 + t] = batch.cat_index[t];
  }
  batch.item_index[15] = 0;
  batch.item_index[16] = 1;
  batch.cat_index[15] = 0;
  batch.cat_index[16] = 1;
  const DinInputs<double> in = batch.Inputs();
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, in, true, &loss));
  const int64_t E = 6;
  double diff = 0, norm = 0;
  for (int64_t c = 0; c < E; ++c) {
    diff += std::fabs(model.pooled()[c] - model.pooled()[E + c]);
    norm += std::fabs(model.pooled()[c]);
  }
  EXPECT_GT(norm, 1e-3);
  EXPECT_GT(diff, 1e-6) << "pooled interest does not depend on the target";
  std::vector<double> d_item(batch.item_rows.size()), d_cat(batch.cat_rows.size());
  ASSERT_OK(model.Backward(ctx, in, d_item.data(), d_cat.data()));
  const auto* w1 = model.params().Find("attn.net.0.weight");
  ASSERT_NE(w1, nullptr);
  double g = 0;
  for (int64_t i = 0; i < w1->size; ++i) g += std::fabs(model.params().grads()[w1->offset + i]);
  EXPECT_GT(g, 1e-8) << "no gradient reaches the activation unit";

  DinOptions off = SmallOptions(MlpActivation::kPrelu, false);
  off.attention_disabled = true;
  auto ablated = Din<double>::Create(off);
  ASSERT_TRUE(ablated.ok());
  ASSERT_OK((*ablated)->Forward(ctx, in, true, &loss));
  for (int64_t i = 0; i < 3 * E; ++i) EXPECT_EQ((*ablated)->pooled()[i], 0.0);
}

// float and double runs of the same model and inputs agree (the float path is the production
// one; the gradient checks run in double).
TEST(DinPrecision, FloatMatchesDouble_B3_T5) {
  const DinOptions o = SmallOptions(MlpActivation::kPrelu, false);
  auto md = Din<double>::Create(o);
  auto mf = Din<float>::Create(o);
  ASSERT_TRUE(md.ok() && mf.ok());
  SmallBatch batch({5, 1, 3});
  testing_util::ExpectFloatMatchesDouble(kernels::Context(), **md, **mf, batch.Inputs());
}

TEST(DinInputs, RejectsBadIndexLengthAndBatch) {
  auto m = Din<double>::Create(SmallOptions(MlpActivation::kPrelu, false));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SmallBatch batch({5, 1, 3});
  batch.item_index[7] = 4;  // only 4 rows
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("item_index[7]"), std::string::npos) << s.message();
  batch.item_index[7] = 0;
  batch.lengths[2] = 6;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[2]"), std::string::npos) << s.message();
  batch.lengths[2] = 3;
  DinInputs<double> in = batch.Inputs();
  in.batch = 4;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = 3;
  std::vector<double> d(64);
  // Backward without a training forward on this batch.
  auto fresh = Din<double>::Create(SmallOptions(MlpActivation::kPrelu, false));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  DinOptions bad = SmallOptions(MlpActivation::kPrelu, false);
  bad.mlp_hidden = {7, 0};
  auto b = Din<double>::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("mlp_hidden[1]"), std::string::npos);
}

// The torch default init bounds: weights and biases within 1/sqrt(fan_in), PReLU alphas 0.25.
TEST(DinInit, TorchLinearDefaultsAndPreluAlpha) {
  DinOptions o;  // the real sizes: E = 36, attention 80/40, MLP 108 -> 200 -> 80 -> 1
  o.max_batch = 2;
  auto m = Din<float>::Create(o);
  ASSERT_TRUE(m.ok());
  const auto& p = (*m)->params();
  auto check = [&](const char* name, double bound) {
    const auto* e = p.Find(name);
    ASSERT_NE(e, nullptr) << name;
    double maxabs = 0;
    for (int64_t i = 0; i < e->size; ++i)
      maxabs = std::max(maxabs, std::fabs(static_cast<double>(p.values()[e->offset + i])));
    EXPECT_LE(maxabs, bound) << name;
    EXPECT_GT(maxabs, 0.8 * bound) << name;  // actually spread over the range
  };
  check("attn.net.0.weight", 1 / std::sqrt(144.0));
  check("attn.net.0.bias", 1 / std::sqrt(144.0));
  check("attn.net.2.weight", 1 / std::sqrt(80.0));
  check("top.0.weight", 1 / std::sqrt(108.0));
  check("top.2.weight", 1 / std::sqrt(200.0));
  check("top.4.weight", 1 / std::sqrt(80.0));
  const auto* a = p.Find("top.1.alpha");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->size, 200);
  for (int64_t i = 0; i < a->size; ++i) EXPECT_EQ(p.values()[a->offset + i], 0.25f);
  // 144*80+80 + 80*40+40 + 40+1 + 108*200+200 + 200 + 200*80+80 + 80 + 80+1
  EXPECT_EQ(p.size(), 11600 + 3240 + 41 + 21800 + 200 + 16080 + 80 + 81);
}

// The device is the model's: a CPU model refuses a CUDA Context, double never runs on CUDA, and a
// CUDA model needs CUDA in the build (tests/models/din_gpu_test.cc runs it where there is a GPU).
TEST(DinDevice, ContextMustMatchAndCudaIsFloatOnly) {
  testing_util::ExpectTheDeviceIsTheModels<Din>(SmallOptions(MlpActivation::kPrelu, false),
                                                SmallBatch({5, 1, 3}).Inputs(), "Din");
}

// stage_on_cpu runs the CUDA path's copies (staged inputs, mirrored weights and gradients, Dice
// statistics, loss and logits copied back) with the CPU kernels: bitwise the plain CPU model's
// results, training and inference, after the host weights and statistics changed. This is the
// CPU check of the logic a CUDA DIN adds around its kernels.
TEST(DinDevice, StagedCopiesGiveBitwiseThePlainCpuResults) {
  for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
    for (bool softmax : {false, true}) {
      SCOPED_TRACE(std::string(MlpActivationName(act)) + (softmax ? " softmax" : " raw"));
      DinOptions o = SmallOptions(act, softmax);
      auto plain = Din<double>::Create(o);
      ASSERT_OK(plain.status());
      o.stage_on_cpu = true;
      auto staged = Din<double>::Create(o);
      ASSERT_OK(staged.status());
      const SmallBatch b1({5, 1, 0}, 21), b2({5, 1, 0}, 22), eval({2, 5, 3}, 31);
      testing_util::ExpectStagedMatchesPlain(**plain, **staged, {b1.Inputs(), b2.Inputs()},
                                             eval.Inputs());
    }
  }
}

}  // namespace
}  // namespace ips::models
