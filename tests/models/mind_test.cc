// Mind: float64 finite-difference checks of the whole backward (every dense tensor, every pulled
// item row and, in the item + category space, every pulled category row) with one routing
// iteration (where the stop-gradient routing backward is the exact gradient), K = 1 and 4,
// p = 0..3, ReLU and linear user layer, with and without categories, histories of length 0, 1,
// max and mixed; with three iterations, the analytic gradient equals the finite difference of the
// 1-iteration model started from the final routing logits (kernels/capsule.h's definition);
// without categories the category rows are unread and get exactly zero gradient; user vectors
// depend on the history only; the label-aware attention is the documented softmax of
// pow(<v_k, x>, p) with x = item row + category row; input and option validation; the device
// logic: a model refuses a Context of another device, CUDA is float only, and the CUDA path's
// copies (stage_on_cpu) give bitwise the plain CPU results, user vectors included
// (tests/models/mind_gpu_test.cc runs the CUDA model itself where there is a GPU).
#include "models/mind.h"

#include <gtest/gtest.h>

#include <algorithm>
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

// D = 3, capsule dim 4 (different from D, so a transposed S or W cannot pass), T = 5, B = 3.
MindOptions SmallOptions(int64_t k, int iterations, int pow) {
  MindOptions o;
  o.embedding_dim = 3;
  o.capsule_dim = 4;
  o.max_len = 5;
  o.max_batch = 3;
  o.num_interests = k;
  o.routing_iterations = iterations;
  o.label_attention_pow = pow;
  o.seed = 7;
  return o;
}

// Rows of T = 5 steps over 6 item rows and 3 category rows (tests/models/ctr_test_batch.h).
struct SmallBatch : testing_util::SmallCtrBatch {
  explicit SmallBatch(std::vector<int32_t> lens, uint64_t seed = 11)
      : SmallCtrBatch(std::move(lens), 5, 3, 6, 3, seed) {}
};

// Moves the dense weights off their init (seeded) so that biases and the user layer are generic,
// and scales S up a little so the capsules are not in squash's near-zero regime.
void Perturb(DenseParams<double>& p, uint64_t seed) {
  Rng rng(seed);
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] += 0.3 * (2 * rng.Uniform() - 1);
}

struct GradCase {
  int64_t k;
  int pow;
  bool relu;
  bool cats;  // MindOptions.use_categories
  std::vector<int32_t> lengths;
  bool threaded;
  std::string label;
};
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.label; }

class MindGradTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(MindGradTest, Backward_OneIteration_B3_T5_D3_Caps4) {
  const GradCase c = GetParam();
  MindOptions o = SmallOptions(c.k, 1, c.pow);
  o.user_relu = c.relu;
  o.use_categories = c.cats;
  auto model_or = Mind<double>::Create(o);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  Mind<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 3);

  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  SmallBatch batch(c.lengths);
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, batch.Inputs(), /*training=*/true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
  if (!c.cats) {
    for (double g : d_cat) EXPECT_EQ(g, 0.0) << "category rows are outside the item-only space";
  }
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  testing_util::ExpectGradientsMatch(model, ctx, batch, dense_grad, d_item,
                                     c.cats ? &d_cat : nullptr);
}

INSTANTIATE_TEST_SUITE_P(
    Mind, MindGradTest,
    ::testing::Values(GradCase{4, 3, false, true, {5, 1, 3}, false, "K4_p3_linear_cats_mixed"},
                      GradCase{4, 3, false, true, {0, 5, 2}, true, "K4_p3_linear_cats_len0"},
                      GradCase{4, 2, true, true, {5, 1, 3}, false, "K4_p2_relu_cats_mixed"},
                      GradCase{4, 1, false, true, {5, 5, 5}, false, "K4_p1_linear_cats_max"},
                      GradCase{4, 3, true, true, {1, 1, 1}, false, "K4_p3_relu_cats_len1"},
                      GradCase{4, 0, false, true, {5, 1, 3}, true, "K4_p0_linear_cats_mixed"},
                      GradCase{1, 3, false, true, {5, 1, 3}, false, "K1_p3_linear_cats_mixed"},
                      GradCase{4, 2, true, false, {5, 1, 3}, false, "K4_p2_relu_items_mixed"},
                      GradCase{4, 2, true, false, {0, 5, 2}, true, "K4_p2_relu_items_len0"},
                      GradCase{4, 3, false, false, {5, 5, 5}, false, "K4_p3_linear_items_max"},
                      GradCase{1, 2, false, false, {0, 0, 0}, false, "K1_p2_linear_items_empty"}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return info.param.label; });

// Three routing iterations: the backward is documented as the exact gradient of a 1-iteration
// routing that starts from the final iteration's logits. Build that model (same weights, per-row
// init logits = the final logits), check it reproduces the forward, and check the 3-iteration
// analytic gradients against its finite differences.
TEST(MindGrad, Backward_ThreeIterations_IsStopGradientOfFinalLogits_K4) {
  for (int64_t k : {int64_t{1}, int64_t{4}}) {
    SCOPED_TRACE("K = " + std::to_string(k));
    auto m3_or = Mind<double>::Create(SmallOptions(k, 3, 2));
    auto m1_or = Mind<double>::Create(SmallOptions(k, 1, 2));
    ASSERT_TRUE(m3_or.ok() && m1_or.ok());
    Mind<double>& m3 = **m3_or;
    Mind<double>& m1 = **m1_or;
    Perturb(m3.params(), 5);
    std::copy(m3.params().values(), m3.params().values() + m3.params().size(),
              m1.params().values());
    kernels::Context ctx;
    SmallBatch batch({5, 2, 4}, 19);
    double l3 = 0, l1 = 0;
    ASSERT_OK(m3.Forward(ctx, batch.Inputs(), true, &l3));
    std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
        d_cat(batch.cat_rows.size(), std::nan(""));
    ASSERT_OK(m3.Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
    const std::vector<double> dense_grad(m3.params().grads(),
                                         m3.params().grads() + m3.params().size());
    const std::vector<double> final_logits(m3.final_routing_logits(),
                                           m3.final_routing_logits() + 3 * k * 5);
    m1.SetRoutingLogitsForTesting(final_logits.data());
    ASSERT_OK(m1.Forward(ctx, batch.Inputs(), true, &l1));
    EXPECT_NEAR(l1, l3, 1e-12);
    EXPECT_TRUE(testing::AllClose(m1.user_vectors(), m3.user_vectors(), 3 * k * 3, {1e-12, 1e-10}));
    if (k > 1) {
      // The extra iterations must matter, or this test would not distinguish anything.
      auto plain = Mind<double>::Create(SmallOptions(k, 1, 2));
      std::copy(m3.params().values(), m3.params().values() + m3.params().size(),
                (*plain)->params().values());
      double lp = 0;
      ASSERT_OK((*plain)->Forward(ctx, batch.Inputs(), true, &lp));
      EXPECT_GT(std::fabs(lp - l3), 1e-9);
    }
    testing_util::ExpectGradientsMatch(m1, ctx, batch, dense_grad, d_item, &d_cat);
  }
}

// The user vectors come from the history alone (targets and labels do not change them), K
// interests differ from each other (the fixed random routing logits break the symmetry of the
// shared S), and the logit is <sum_k softmax_k(<v_k, x>^p) v_k, x> with x = item row + category
// row of the target (recomputed here).
TEST(MindForward, UserVectorsIgnoreTargetAndAttentionMatchesDefinition) {
  for (int pow : {0, 1, 2, 3}) {
    SCOPED_TRACE("p = " + std::to_string(pow));
    auto m = Mind<double>::Create(SmallOptions(4, 3, pow));
    ASSERT_TRUE(m.ok());
    Perturb((*m)->params(), 9);
    kernels::Context ctx;
    SmallBatch batch({5, 3, 0});
    CtrInputs<double> in = batch.Inputs();
    in.labels = nullptr;
    ASSERT_OK((*m)->Forward(ctx, in, false, nullptr));
    const int64_t K = 4, D = 3;
    std::vector<double> v((*m)->user_vectors(), (*m)->user_vectors() + 3 * K * D);
    std::vector<double> logits((*m)->logits(), (*m)->logits() + 3);
    for (int64_t b = 0; b < 3; ++b) {
      double et[3];
      for (int64_t c = 0; c < D; ++c)
        et[c] = batch.item_rows[batch.item_index[15 + b] * D + c] +
                batch.cat_rows[batch.cat_index[15 + b] * D + c];
      double a[4], mx = -1e300;
      for (int64_t k = 0; k < K; ++k) {
        double d = 0;
        for (int64_t c = 0; c < D; ++c) d += v[(b * K + k) * D + c] * et[c];
        a[k] = std::pow(d, pow);
        mx = std::max(mx, a[k]);
      }
      double sum = 0, logit = 0;
      for (int64_t k = 0; k < K; ++k) sum += std::exp(a[k] - mx);
      for (int64_t k = 0; k < K; ++k) {
        const double w = std::exp(a[k] - mx) / sum;
        EXPECT_NEAR((*m)->interest_weights()[b * K + k], w, 1e-12);
        for (int64_t c = 0; c < D; ++c) logit += w * v[(b * K + k) * D + c] * et[c];
      }
      EXPECT_NEAR(logits[b], logit, 1e-12);
    }
    // Row 0's interests are pairwise different.
    double min_diff = 1e300;
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = i + 1; j < K; ++j) {
        double diff = 0;
        for (int64_t c = 0; c < 4; ++c)
          diff += std::fabs((*m)->capsules()[i * 4 + c] - (*m)->capsules()[j * 4 + c]);
        min_diff = std::min(min_diff, diff);
      }
    EXPECT_GT(min_diff, 1e-6);
    // New targets (and padding indices): same user vectors, different logits.
    for (int64_t b = 0; b < 3; ++b) {
      batch.item_index[15 + b] = (batch.item_index[15 + b] + 1) % 6;
      batch.cat_index[15 + b] = (batch.cat_index[15 + b] + 1) % 3;
    }
    batch.item_index[5] = (batch.item_index[5] + 1) % 6;  // row 1, padded step 0
    batch.cat_index[5] = (batch.cat_index[5] + 1) % 3;
    ASSERT_OK((*m)->Forward(ctx, in, false, nullptr));
    EXPECT_TRUE(testing::AllClose((*m)->user_vectors(), v.data(), 3 * K * D, {0, 0}));
    EXPECT_NE((*m)->logits()[0], logits[0]);
  }
}

TEST(MindPrecision, FloatMatchesDouble_K4) {
  for (bool cats : {true, false}) {
    SCOPED_TRACE(cats ? "item + category space" : "item-only space");
    MindOptions o = SmallOptions(4, 3, 2);
    o.use_categories = cats;
    auto md = Mind<double>::Create(o);
    auto mf = Mind<float>::Create(o);
    ASSERT_TRUE(md.ok() && mf.ok());
    SmallBatch batch({5, 1, 3});
    testing_util::ExpectFloatMatchesDouble(kernels::Context(), **md, **mf, batch.Inputs(),
                                           /*float_cats=*/cats);
  }
}

// The category rows are part of the item vectors exactly when use_categories is set: changing
// one behaviour's category row changes the user vectors (and the target's, the logit) with it,
// and nothing at all without it.
TEST(MindForward, CategoryRowsEnterTheItemVectorsOnlyWithUseCategories) {
  for (bool cats : {true, false}) {
    SCOPED_TRACE(cats ? "item + category space" : "item-only space");
    MindOptions o = SmallOptions(4, 3, 3);
    o.use_categories = cats;
    auto m = Mind<double>::Create(o);
    ASSERT_TRUE(m.ok());
    Perturb((*m)->params(), 4);
    kernels::Context ctx;
    SmallBatch batch({5, 5, 5});
    ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
    const std::vector<double> v((*m)->user_vectors(), (*m)->user_vectors() + 3 * 4 * 3);
    const std::vector<double> logits((*m)->logits(), (*m)->logits() + 3);
    // Row 0's step 2 gets a category of its own whose row is the old one shifted.
    batch.cat_rows.resize(batch.cat_rows.size() + 3);
    for (int c = 0; c < 3; ++c)
      batch.cat_rows[9 + c] = batch.cat_rows[batch.cat_index[2] * 3 + c] + 0.5;
    batch.num_cat_rows = 4;
    batch.cat_index[2] = 3;
    ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
    double diff = 0;
    for (int i = 0; i < 12; ++i) diff += std::fabs((*m)->user_vectors()[i] - v[i]);
    if (cats) {
      EXPECT_GT(diff, 1e-6);
    } else {
      EXPECT_EQ(diff, 0.0);
    }
    // The other rows never see it.
    EXPECT_TRUE(testing::AllClose((*m)->user_vectors() + 12, v.data() + 12, 24, {0, 0}));
    EXPECT_EQ((*m)->logits()[1], logits[1]);
  }
}

TEST(MindInputs, RejectsBadIndexLengthBatchAndPointers) {
  auto m = Mind<double>::Create(SmallOptions(4, 3, 2));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SmallBatch batch({5, 1, 3});
  batch.item_index[16] = 6;  // only 6 rows; position 16 = target of row 1
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("item_index[16]"), std::string::npos) << s.message();
  batch.item_index[16] = 0;
  batch.cat_index[2] = 3;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("cat_index[2]"), std::string::npos) << s.message();
  batch.cat_index[2] = 0;
  batch.lengths[1] = 6;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[1]"), std::string::npos) << s.message();
  batch.lengths[1] = 1;
  CtrInputs<double> in = batch.Inputs();
  for (int64_t b : {0, 4}) {
    in.batch = b;
    EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  }
  in.batch = 3;
  in.item_rows = nullptr;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  std::vector<double> d(64);
  auto fresh = Mind<double>::Create(SmallOptions(4, 3, 2));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_OK((*fresh)->Forward(ctx, in, true, nullptr));
  EXPECT_EQ((*fresh)->Backward(ctx, in, nullptr, d.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), nullptr).code(), StatusCode::kInvalidArgument);
  ASSERT_OK((*fresh)->Backward(ctx, in, d.data(), d.data() + 32));
  // The item + category space needs the category arrays; the item-only one does not.
  in.cat_rows = nullptr;
  s = (*fresh)->Forward(ctx, in, true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("null cat_index"), std::string::npos) << s.message();
  in.cat_rows = batch.cat_rows.data();
  in.cat_index = nullptr;
  EXPECT_EQ((*fresh)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  MindOptions items_only = SmallOptions(4, 3, 2);
  items_only.use_categories = false;
  auto io = Mind<double>::Create(items_only);
  in.cat_rows = nullptr;
  in.num_cat_rows = 0;
  ASSERT_OK((*io)->Forward(ctx, in, true, nullptr));
  ASSERT_OK((*io)->Backward(ctx, in, d.data(), nullptr));
}

TEST(MindOptionsTest, RejectsEachBadFieldAndReportsShapes) {
  struct Case {
    const char* field;
    void (*mutate)(MindOptions*);
  };
  const Case cases[] = {
      {"embedding_dim", [](MindOptions* o) { o->embedding_dim = 0; }},
      {"max_len", [](MindOptions* o) { o->max_len = 0; }},
      {"max_batch", [](MindOptions* o) { o->max_batch = 0; }},
      {"num_interests", [](MindOptions* o) { o->num_interests = 0; }},
      {"num_interests", [](MindOptions* o) { o->num_interests = 65; }},
      {"routing_iterations", [](MindOptions* o) { o->routing_iterations = 0; }},
      {"capsule_dim", [](MindOptions* o) { o->capsule_dim = -1; }},
      {"label_attention_pow", [](MindOptions* o) { o->label_attention_pow = -1; }},
      {"label_attention_pow", [](MindOptions* o) { o->label_attention_pow = 9; }},
      {"routing_init_stddev", [](MindOptions* o) { o->routing_init_stddev = 0; }},
      {"routing_init_stddev", [](MindOptions* o) { o->routing_init_stddev = std::nan(""); }},
      {"bilinear_init_stddev", [](MindOptions* o) { o->bilinear_init_stddev = 0; }}};
  for (const Case& c : cases) {
    MindOptions o = SmallOptions(4, 3, 2);
    c.mutate(&o);
    auto m = Mind<float>::Create(o);
    ASSERT_FALSE(m.ok()) << c.field;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(std::string("MindOptions.") + c.field), std::string::npos)
        << m.status().message();
  }
  MindOptions one = SmallOptions(1, 3, 2);
  one.routing_init_stddev = 0;  // zero logits are fine with one interest
  EXPECT_TRUE(Mind<float>::Create(one).ok());

  MindOptions o;  // defaults: D = 18, K = 4, T = 50
  o.max_batch = 2;
  auto m = Mind<float>::Create(o);
  ASSERT_TRUE(m.ok());
  EXPECT_STREQ((*m)->name(), "mind");
  EXPECT_EQ((*m)->num_user_vectors(), 4);
  EXPECT_EQ((*m)->vector_dim(), 18);
  EXPECT_EQ((*m)->params().size(), 18 * 18 + 18 * 18 + 18);
  const auto st = (*m)->state();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].name, "routing.init_logits");
  EXPECT_EQ(st[0].size, 4 * 50);
}

// The device is the model's: a CPU model refuses a CUDA Context, double never runs on CUDA, and a
// CUDA model needs CUDA in the build (tests/models/mind_gpu_test.cc runs it where there is a GPU).
TEST(MindDevice, ContextMustMatchAndCudaIsFloatOnly) {
  const SmallBatch b({5, 1, 3});
  testing_util::ExpectTheDeviceIsTheModels<Mind>(SmallOptions(4, 3, 3), b.Inputs(), "Mind");
}

std::vector<double> UserVectors(const Mind<double>& m, int64_t batch) {
  const int64_t n = batch * m.num_user_vectors() * m.vector_dim();
  return std::vector<double>(m.user_vectors(), m.user_vectors() + n);
}

// staged_check.h's comparison (losses, logits, dense and row gradients, state, inference logits
// after the weights changed), plus what MIND adds: the user vectors of training and inference
// passes, and an inference pass after the routing init logits (state, which a checkpoint
// restores into the host copy) changed on the host.
void ExpectStagedMindMatchesPlain(Mind<double>& plain, Mind<double>& staged,
                                  const std::vector<CtrInputs<double>>& batches,
                                  CtrInputs<double> eval) {
  testing_util::ExpectStagedMatchesPlain(plain, staged, batches, eval);
  EXPECT_EQ(UserVectors(staged, eval.batch), UserVectors(plain, eval.batch));
  const kernels::Context ctx;
  for (const CtrInputs<double>& in : batches) {
    double loss[2];
    ASSERT_OK(plain.Forward(ctx, in, true, &loss[0]));
    ASSERT_OK(staged.Forward(ctx, in, true, &loss[1]));
    EXPECT_EQ(loss[0], loss[1]);
    EXPECT_EQ(UserVectors(staged, in.batch), UserVectors(plain, in.batch));
  }
  eval.labels = nullptr;
  ASSERT_OK(plain.Forward(ctx, eval, false, nullptr));
  const std::vector<double> before = UserVectors(plain, eval.batch);
  for (Mind<double>* m : {&plain, &staged}) {
    const std::vector<StateTensor<double>> st = m->state();
    ASSERT_EQ(st.size(), 1u);
    for (int64_t j = 0; j < st[0].size; ++j) st[0].data[j] = -0.5 * st[0].data[j] + 0.01 * j;
    ASSERT_OK(m->Forward(ctx, eval, false, nullptr));
  }
  const std::vector<double> after = UserVectors(plain, eval.batch);
  EXPECT_NE(after, before) << "the routing logits must matter for this check";
  EXPECT_EQ(UserVectors(staged, eval.batch), after);
  for (int64_t i = 0; i < eval.batch; ++i) EXPECT_EQ(staged.logits()[i], plain.logits()[i]);
}

// A batch over pulled tables larger than a staged model's staging buffers (max_batch * (T + 1)
// = 18 rows here), as the retrieval evaluation passes them (the whole item table): most rows are
// unreferenced and must get zero gradients.
SmallBatch LargeTables(std::vector<int32_t> lens, uint64_t seed) {
  SmallBatch b(std::move(lens), seed);
  Rng rng(seed + 1000);
  b.num_item_rows = 40;
  b.num_cat_rows = 25;
  for (int64_t& i : b.item_index) i = static_cast<int64_t>(rng.UniformInt(40));
  for (int64_t& c : b.cat_index) c = static_cast<int64_t>(rng.UniformInt(25));
  b.item_rows.resize(40 * 3);
  b.cat_rows.resize(25 * 3);
  FillUniform(b.item_rows, rng, -1.0, 1.0);
  FillUniform(b.cat_rows, rng, -1.0, 1.0);
  return b;
}

// stage_on_cpu runs the CUDA path's copies (staged inputs, mirrored weights, gradients and
// routing logits, loss, logits and user vectors copied back) with the CPU kernels: bitwise the
// plain CPU model's results, training and inference, after the host weights and routing logits
// changed, in both item spaces and with both user layers, over histories of length 0, 1 and max,
// with pulled tables that fit the staging buffers and tables that do not (staged compacted).
// This is the CPU check of the logic a CUDA MIND adds around its kernels.
TEST(MindDevice, StagedCopiesGiveBitwiseThePlainCpuResults) {
  for (bool cats : {true, false}) {
    for (bool relu : {false, true}) {
      SCOPED_TRACE(std::string(cats ? "item + category" : "item only") +
                   (relu ? ", ReLU" : ", linear"));
      MindOptions o = SmallOptions(4, 3, 3);
      o.use_categories = cats;
      o.user_relu = relu;
      auto plain = Mind<double>::Create(o);
      ASSERT_OK(plain.status());
      o.stage_on_cpu = true;
      auto staged = Mind<double>::Create(o);
      ASSERT_OK(staged.status());
      EXPECT_EQ((*staged)->device(), kernels::Device::kCpu);
      // ReLU must have live and dead units, and the bias must move the vectors: off the init.
      Perturb((*plain)->params(), 13);
      std::copy((*plain)->params().values(),
                (*plain)->params().values() + (*plain)->params().size(),
                (*staged)->params().values());
      const SmallBatch b1({5, 1, 0}, 21), b2({0, 5, 1}, 22), eval({2, 5, 3}, 31);
      ExpectStagedMindMatchesPlain(**plain, **staged, {b1.Inputs(), b2.Inputs()}, eval.Inputs());
      const SmallBatch large1 = LargeTables({1, 0, 5}, 23), large_eval = LargeTables({5, 2, 0}, 32);
      ExpectStagedMindMatchesPlain(**plain, **staged, {large1.Inputs(), b1.Inputs()},
                                   large_eval.Inputs());
    }
  }
}

}  // namespace
}  // namespace ips::models
