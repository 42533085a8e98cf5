// Sasrec and Bst (and through them models/transformer.h's block): float64 finite-difference
// checks of every dense tensor and every pulled row, with dropout off and on (the masks replayed
// through set_dropout_step), 1 and 2 heads, lengths 0, 1, max and mixed; the peer's semantics
// (causality, padding, averaging, user vectors); float/double agreement; input validation; and
// parity of SASRec's loss and gradients with the peer's torch SASRec (skipped without torch).
#include "models/transformer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "models/bst.h"
#include "models/sasrec.h"
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

// Moves every dense value away from its initialisation (LayerNorm gammas 1 / betas 0, PReLU
// alphas 0.25) so that the check sees generic values.
template <typename T>
void Perturb(DenseParams<T>& p, uint64_t seed, double amount = 0.3) {
  Rng rng(seed);
  for (int64_t i = 0; i < p.size(); ++i)
    p.values()[i] += static_cast<T>(amount * (2 * rng.Uniform() - 1));
}

bool AllFinite(const double* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// ---- The shared block ------------------------------------------------------------------------

// The documented mask rule, restated: keep_i = Fmix32(Fmix32(i * 0x9E3779B1 + lo) ^ hi) >= p 2^32.
uint32_t Fmix32(uint32_t k) {
  k ^= k >> 16;
  k *= 0x85ebca6bu;
  k ^= k >> 13;
  k *= 0xc2b2ae35u;
  k ^= k >> 16;
  return k;
}

// The vectorised mask equals the documented formula bit for bit (ragged length, spare word
// zero), keeps about 1 - p, and DropoutApply scales kept elements and adds `add`.
TEST(TransformerDropout, MaskMatchesFormulaAndApplyScales_n1000003) {
  const int64_t n = 1000003;
  const double p = 0.3;
  const uint64_t seed = 0x0123456789abcdefULL;
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = &pool;
  std::vector<uint16_t> bits(DropoutMaskWords(n), 0xFFFF);
  DropoutMask(ctx, seed, p, n, bits.data());
  const uint32_t thr = static_cast<uint32_t>(p * 4294967296.0);
  int64_t kept = 0, bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t h =
        Fmix32(Fmix32(static_cast<uint32_t>(i) * 0x9E3779B1u + static_cast<uint32_t>(seed)) ^
               static_cast<uint32_t>(seed >> 32));
    const bool want = h >= thr, got = ((bits[i >> 4] >> (i & 15)) & 1) != 0;
    bad += want != got;
    kept += got;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_NEAR(static_cast<double>(kept) / n, 1 - p, 0.003);
  EXPECT_EQ(bits[(n + 15) / 16] & 0xFFFF, 0) << "the spare word must be zero";
  EXPECT_EQ(bits[n / 16] >> (n % 16), 0) << "bits past n must be zero";

  Rng rng(1);
  std::vector<float> in(5000), add(5000), out(5000, std::nanf(""));
  FillUniform(in, rng);
  FillUniform(add, rng);
  DropoutApply<float>(ctx, bits.data(), 2.0f, in.data(), add.data(), out.data(), 17, 4990);
  for (int64_t i = 0; i < 5000; ++i) {
    if (i < 17 || i >= 4990) {
      EXPECT_TRUE(std::isnan(out[i])) << "written outside the range at " << i;
      continue;
    }
    const bool keep = ((bits[i >> 4] >> (i & 15)) & 1) != 0;
    ASSERT_EQ(out[i], add[i] + (keep ? in[i] * 2.0f : 0.0f)) << i;
  }
}

struct BlockCase {
  int64_t dim, heads, ffn, max_len;
  bool causal, proj;
  std::vector<int32_t> lengths;
  std::string label;
  BlockLayout layout = BlockLayout::kPreLn;
};
void PrintTo(const BlockCase& c, std::ostream* os) { *os << c.label; }
BlockCase QueryNormBlock(BlockCase c) {
  c.layout = BlockLayout::kQueryNorm;
  return c;
}

class BlockPathTest : public ::testing::TestWithParam<BlockCase> {};

// The block's own AVX-512 projections and attention against kernels::Linear/Gemm/Mha (the
// fallback path), same weights, dropout 0: outputs and every gradient, float and double, over
// widths that exercise one and several vectors and ragged tails, 1-3 heads, causal or not.
template <typename T>
void CompareBlockPaths(const BlockCase& c, testing::Tolerance tol) {
  TransformerBlockOptions o;
  o.dim = c.dim;
  o.num_heads = c.heads;
  o.ffn_hidden = c.ffn;
  o.ffn_activation = c.proj ? kernels::Activation::kLeakyRelu : kernels::Activation::kRelu;
  o.causal = c.causal;
  o.attn_output_projection = c.proj;
  o.layout = c.layout;
  o.max_batch = static_cast<int64_t>(c.lengths.size());
  o.max_len = c.max_len;
  DenseParams<T> pf, ps;
  o.fast_cpu_path = true;
  TransformerBlock<T> fast(&pf, "b", o);
  o.fast_cpu_path = false;
  TransformerBlock<T> slow(&ps, "b", o);
  pf.Finalize();
  ps.Finalize();
  Rng rng(4);
  fast.Init(rng);
  Perturb(pf, 9, 0.2);
  std::copy(pf.values(), pf.values() + pf.size(), ps.values());
  const int64_t B = o.max_batch, n = B * c.max_len * c.dim;
  std::vector<T> x(n), dy(n);
  FillUniform(x, rng);
  FillUniform(dy, rng);
  // Padded rows of a block input are zero (the models guarantee it).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < c.max_len - c.lengths[b]; ++t)
      for (int64_t k = 0; k < c.dim; ++k) x[(b * c.max_len + t) * c.dim + k] = 0;
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = &pool;
  std::vector<T> yf(n, NAN), ys(n, NAN), dxf(n, NAN), dxs(n, NAN);
  ASSERT_OK(fast.Forward(ctx, B, c.lengths.data(), x.data(), yf.data(), true, 1));
  ASSERT_OK(slow.Forward(ctx, B, c.lengths.data(), x.data(), ys.data(), true, 1));
  EXPECT_TRUE(testing::AllClose(yf, ys, tol)) << "outputs";
  std::fill(pf.grads(), pf.grads() + pf.size(), T(NAN));
  ASSERT_OK(fast.Backward(ctx, B, c.lengths.data(), x.data(), dy.data(), dxf.data()));
  ASSERT_OK(slow.Backward(ctx, B, c.lengths.data(), x.data(), dy.data(), dxs.data()));
  EXPECT_TRUE(testing::AllClose(dxf, dxs, tol)) << "dx";
  for (const auto& e : pf.entries())
    EXPECT_TRUE(testing::AllClose(pf.grads() + e.offset, ps.grads() + e.offset, e.size, tol))
        << e.name;
}

TEST_P(BlockPathTest, FastMatchesKernels_Float) {
  CompareBlockPaths<float>(GetParam(), {2e-5, 2e-4});
}
TEST_P(BlockPathTest, FastMatchesKernels_Double) {
  CompareBlockPaths<double>(GetParam(), {1e-12, 1e-10});
}

INSTANTIATE_TEST_SUITE_P(
    Block, BlockPathTest,
    ::testing::Values(
        BlockCase{4, 1, 4, 5, true, false, {5, 1, 3}, "d4_H1_T5_causal"},
        BlockCase{20, 2, 40, 7, true, false, {7, 0, 4, 1, 6}, "d20_H2_F40_causal"},
        BlockCase{50, 1, 50, 50, true, false, {50, 13, 1, 0}, "d50_H1_T50"},
        BlockCase{36, 3, 72, 9, false, true, {9, 2, 0, 5}, "d36_H3_F72_proj"},
        BlockCase{70, 2, 130, 6, false, true, {6, 3}, "d70_H2_F130_proj"},
        QueryNormBlock({20, 2, 40, 7, true, false, {7, 0, 4, 1, 6}, "d20_H2_querynorm"}),
        QueryNormBlock({36, 3, 72, 9, false, true, {9, 2, 0, 5}, "d36_H3_querynorm"})),
    [](const ::testing::TestParamInfo<BlockCase>& info) { return info.param.label; });

// ---- SASRec ----------------------------------------------------------------------------------

SasrecOptions SmallSasrec(int64_t heads, double dropout) {
  SasrecOptions o;
  o.embedding_dim = 4;
  o.max_len = 5;
  o.max_batch = 3;
  o.num_blocks = 2;
  o.num_heads = heads;
  o.dropout = dropout;
  o.seed = 5;
  return o;
}

// A training batch over a small pulled table (rows 1..num_rows-1 are items, row 0 the padding
// row). Valid steps draw inputs, positives and negatives from the items (with repeats, so the
// scatter-add sums several positions into one row); padded steps use row 0, as the trainer does.
struct SeqBatch {
  int64_t B, T, D, num_rows;
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index;
  std::vector<double> item_rows;

  SeqBatch(std::vector<int32_t> lens, int64_t T_, int64_t D_, int64_t rows = 7, uint64_t seed = 9)
      : B(static_cast<int64_t>(lens.size())),
        T(T_),
        D(D_),
        num_rows(rows),
        lengths(std::move(lens)) {
    Rng rng(seed);
    item_index.assign(3 * B * T, 0);
    for (int64_t k = 0; k < 3; ++k)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = T - lengths[b]; t < T; ++t)
          item_index[k * B * T + b * T + t] = 1 + static_cast<int64_t>(rng.UniformInt(rows - 1));
    item_rows.resize(num_rows * D);
    FillUniform(item_rows, rng, -1.0, 1.0);
  }
  SeqInputs<double> Inputs() const {
    SeqInputs<double> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = item_index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = num_rows;
    return in;
  }
};

struct SasrecCase {
  int64_t heads;
  double dropout;
  std::vector<int32_t> lengths;
  bool threaded;
  std::string label;
  bool fast = true;  // SasrecOptions::fast_cpu_path
  int64_t dim = 4, max_len = 5;
  BlockLayout layout = BlockLayout::kPreLn;
};
void PrintTo(const SasrecCase& c, std::ostream* os) { *os << c.label; }
SasrecCase QueryNorm(SasrecCase c) {
  c.layout = BlockLayout::kQueryNorm;
  return c;
}

class SasrecGradTest : public ::testing::TestWithParam<SasrecCase> {};

// The training loss of `model` on `in` with the dropout masks of `step` replayed (the function
// a finite-difference check perturbs; `in` points at the rows it perturbs in place).
template <typename Model, typename Inputs>
std::function<double()> ReplayedLoss(Model& model, const kernels::Context& ctx, Inputs in,
                                     uint64_t step) {
  return [&model, &ctx, in, step]() {
    model.set_dropout_step(step);
    double l = 0;
    EXPECT_TRUE(model.Forward(ctx, in, true, &l).ok());
    return l;
  };
}

// Every dense tensor and every pulled item row against central differences of the mean loss.
// With dropout, each evaluation replays the masks of dropout step 3.
TEST_P(SasrecGradTest, Backward_B3_Blocks2) {
  const SasrecCase c = GetParam();
  SasrecOptions so = SmallSasrec(c.heads, c.dropout);
  so.fast_cpu_path = c.fast;
  so.embedding_dim = c.dim;
  so.max_len = c.max_len;
  so.layout = c.layout;
  auto model_or = Sasrec<double>::Create(so);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  Sasrec<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 3);
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  SeqBatch batch(c.lengths, c.max_len, c.dim);
  constexpr uint64_t kStep = 3;

  model.set_dropout_step(kStep);
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, batch.Inputs(), /*training=*/true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_EQ(model.dropout_step(), kStep + 1);
  std::vector<double> d_item(batch.item_rows.size(), std::nan(""));
  std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, batch.Inputs(), d_item.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  ASSERT_TRUE(AllFinite(dense_grad.data(), p.size()));
  ASSERT_TRUE(AllFinite(d_item.data(), static_cast<int64_t>(d_item.size())));

  const auto loss_fn = ReplayedLoss(model, ctx, batch.Inputs(), kStep);
  EXPECT_DOUBLE_EQ(loss_fn(), loss) << "the replayed forward must reproduce the loss";
  testing_util::ExpectDenseGradientsMatch(p, dense_grad, loss_fn);
  EXPECT_TRUE(CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(
    Sasrec, SasrecGradTest,
    ::testing::Values(
        SasrecCase{1, 0.0, {5, 1, 3}, false, "H1_nodrop_mixed"},
        SasrecCase{2, 0.0, {5, 1, 3}, false, "H2_nodrop_mixed"},
        SasrecCase{1, 0.3, {5, 1, 3}, false, "H1_drop_mixed"},
        SasrecCase{2, 0.3, {0, 5, 2}, true, "H2_drop_len0_pool2"},
        SasrecCase{1, 0.0, {5, 5, 5}, true, "H1_nodrop_max_pool2"},
        SasrecCase{2, 0.5, {1, 1, 1}, false, "H2_drop_len1"},
        SasrecCase{1, 0.0, {0, 1, 0}, false, "H1_nodrop_len0_len1"},
        SasrecCase{2, 0.3, {5, 1, 3}, true, "H2_drop_mixed_kernelpath", false},
        // Several vectors per row with ragged tails (d 20 = 2.5 double vectors).
        SasrecCase{2, 0.2, {7, 3, 0}, true, "D20_T7_H2_drop", true, 20, 7},
        // The SASRec reference code's layout (BlockLayout::kQueryNorm).
        QueryNorm({1, 0.0, {5, 1, 3}, false, "QueryNorm_H1_nodrop_mixed"}),
        QueryNorm({2, 0.3, {0, 5, 2}, true, "QueryNorm_H2_drop_len0_pool2"}),
        QueryNorm({2, 0.3, {5, 1, 3}, true, "QueryNorm_H2_drop_kernelpath", false}),
        QueryNorm({2, 0.2, {7, 3, 0}, true, "QueryNorm_D20_T7_H2_drop", true, 20, 7})),
    [](const ::testing::TestParamInfo<SasrecCase>& info) { return info.param.label; });

// No valid position anywhere: the loss is 0 (the peer's clamp(min=1)), nothing is NaN, and every
// gradient is exactly zero; the user vectors are the final LayerNorm's bias.
TEST(SasrecSemantics, AllEmpty_ZeroLossZeroGradNoNaN) {
  auto m = Sasrec<double>::Create(SmallSasrec(2, 0.3));
  ASSERT_TRUE(m.ok());
  Perturb((*m)->params(), 4);
  kernels::Context ctx;
  SeqBatch batch({0, 0, 0}, 5, 4);
  double loss = std::nan("");
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &loss));
  EXPECT_EQ(loss, 0.0);
  std::vector<double> d_item(batch.item_rows.size(), std::nan(""));
  ASSERT_OK((*m)->Backward(ctx, batch.Inputs(), d_item.data()));
  for (double g : d_item) EXPECT_EQ(g, 0.0);
  const auto& p = (*m)->params();
  for (int64_t i = 0; i < p.size(); ++i) ASSERT_EQ(p.grads()[i], 0.0) << i;
  const auto* beta = p.Find("ln_out.bias");
  ASSERT_NE(beta, nullptr);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 4; ++c)
      EXPECT_DOUBLE_EQ((*m)->user_vectors()[b * 4 + c], p.values()[beta->offset + c]);
}

// The loss is averaged over valid positions of the whole batch, so an empty sequence adds
// nothing: [empty, s1, s2] has exactly the loss of [s1, s2].
TEST(SasrecSemantics, EmptyRowContributesNothing) {
  auto m = Sasrec<double>::Create(SmallSasrec(1, 0.0));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SeqBatch batch({0, 5, 2}, 5, 4);
  double l3 = 0, l2 = 0;
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &l3));
  SeqBatch two({5, 2}, 5, 4);
  two.item_rows = batch.item_rows;
  for (int64_t k = 0; k < 3; ++k)
    for (int64_t i = 0; i < 2 * 5; ++i)
      two.item_index[k * 10 + i] = batch.item_index[k * 15 + 5 + i];
  ASSERT_OK((*m)->Forward(ctx, two.Inputs(), true, &l2));
  EXPECT_NEAR(l3, l2, 1e-14);
  // And it is the per-position mean: recompute from the logits.
  double sum = 0;
  auto sp = [](double z) { return std::log1p(std::exp(z)); };
  for (int64_t i = 0; i < 10; ++i) {
    if (i % 5 < 5 - two.lengths[i / 5]) continue;
    sum += sp(-(*m)->pos_logits()[i]) + sp((*m)->neg_logits()[i]);
  }
  EXPECT_NEAR(l2, sum / 7.0, 1e-12);
}

// State t sees items <= t only, and what sits at padded steps is never read: changing the item
// at step 3 leaves states 0..2 unchanged and changes 3 and 4; changing a padded step's index
// changes nothing. user_vectors() is the state at T-1.
TEST(SasrecSemantics, CausalAndPaddingInvisible) {
  auto m = Sasrec<double>::Create(SmallSasrec(2, 0.0));
  ASSERT_TRUE(m.ok());
  Perturb((*m)->params(), 6);
  kernels::Context ctx;
  SeqBatch batch({5, 3, 4}, 5, 4);
  SeqInputs<double> in = batch.Inputs();
  ASSERT_OK((*m)->Forward(ctx, in, false, nullptr));
  const int64_t n = 3 * 5 * 4;
  std::vector<double> base((*m)->states(), (*m)->states() + n);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 4; ++c)
      EXPECT_EQ((*m)->user_vectors()[b * 4 + c], base[(b * 5 + 4) * 4 + c]);
  batch.item_index[0 * 5 + 3] = batch.item_index[0 * 5 + 3] % 6 + 1;  // row 0, step 3
  batch.item_index[1 * 5 + 0] = 4;                                    // row 1, padded step 0
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
  const double* s = (*m)->states();
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(s[t * 4 + c], base[t * 4 + c]) << t;
  double diff = 0;
  for (int64_t t = 3; t < 5; ++t)
    for (int64_t c = 0; c < 4; ++c) diff += std::fabs(s[t * 4 + c] - base[t * 4 + c]);
  EXPECT_GT(diff, 1e-6);
  for (int64_t i = 5 * 4; i < n; ++i) EXPECT_EQ(s[i], base[i]) << i;
}

// Dropout: masks depend on the step only (same step, same loss; another step, another loss),
// the step advances per training forward, and inference has no dropout (equal to a model built
// with dropout 0, whose weights are the same because initialisation does not use dropout).
TEST(SasrecSemantics, DropoutDeterministicPerStepAndOffInInference) {
  auto m = Sasrec<double>::Create(SmallSasrec(1, 0.5));
  auto m0 = Sasrec<double>::Create(SmallSasrec(1, 0.0));
  ASSERT_TRUE(m.ok() && m0.ok());
  kernels::Context ctx;
  SeqBatch batch({5, 2, 4}, 5, 4);
  double a = 0, b = 0, c = 0, z = 0;
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &a));
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &b));
  EXPECT_EQ((*m)->dropout_step(), 2u);
  (*m)->set_dropout_step(0);
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &c));
  EXPECT_EQ(a, c);
  EXPECT_NE(a, b);
  ASSERT_OK((*m0)->Forward(ctx, batch.Inputs(), true, &z));
  EXPECT_NE(a, z);
  std::vector<double> uv0((*m0)->user_vectors(), (*m0)->user_vectors() + 12);
  SeqInputs<double> inf = batch.Inputs();
  ASSERT_OK((*m)->Forward(ctx, inf, false, nullptr));
  EXPECT_EQ((*m)->dropout_step(), 1u) << "inference must not advance the dropout step";
  EXPECT_TRUE(testing::AllClose((*m)->user_vectors(), uv0.data(), 12, {0, 0}));
}

TEST(SasrecPrecision, FloatMatchesDouble_B3_T5_H2_Dropout) {
  const SasrecOptions o = SmallSasrec(2, 0.3);
  auto md = Sasrec<double>::Create(o);
  auto mf = Sasrec<float>::Create(o);
  ASSERT_TRUE(md.ok() && mf.ok());
  SeqBatch batch({5, 1, 3}, 5, 4);
  const kernels::Context ctx;
  testing_util::ExpectFloatMatchesDouble(ctx, ctx, **md, **mf, batch.Inputs());
}

TEST(SasrecInputs, RejectsBadIndexLengthBatchAndOptions) {
  auto m = Sasrec<double>::Create(SmallSasrec(1, 0.0));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SeqBatch batch({5, 1, 3}, 5, 4);
  batch.item_index[2 * 15 + 14] = 7;  // a negative, only 7 rows
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("item_index[44]"), std::string::npos) << s.message();
  // Inference reads only the B*T inputs.
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
  batch.item_index[44] = 1;
  batch.item_index[3] = -1;
  s = (*m)->Forward(ctx, batch.Inputs(), false, nullptr);
  EXPECT_NE(s.message().find("item_index[3]"), std::string::npos) << s.message();
  batch.item_index[3] = 1;
  batch.lengths[1] = 6;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[1]"), std::string::npos) << s.message();
  batch.lengths[1] = -1;
  EXPECT_EQ((*m)->Forward(ctx, batch.Inputs(), true, nullptr).code(), StatusCode::kInvalidArgument);
  batch.lengths[1] = 1;
  SeqInputs<double> in = batch.Inputs();
  in.batch = 4;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = 0;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = 3;
  in.item_rows = nullptr;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  std::vector<double> d(64);
  auto fresh = Sasrec<double>::Create(SmallSasrec(1, 0.0));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data()).code(), StatusCode::kFailedPrecondition);
  ASSERT_OK((*fresh)->Forward(ctx, in, false, nullptr));  // inference does not enable Backward
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data()).code(), StatusCode::kFailedPrecondition);
  ASSERT_OK((*fresh)->Forward(ctx, in, true, nullptr));
  EXPECT_EQ((*fresh)->Backward(ctx, in, nullptr).code(), StatusCode::kInvalidArgument);

  SasrecOptions bad = SmallSasrec(3, 0.0);  // 3 does not divide 4
  auto b = Sasrec<double>::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("num_heads"), std::string::npos);
  bad = SmallSasrec(1, 1.0);
  b = Sasrec<double>::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("dropout"), std::string::npos);
  bad = SmallSasrec(1, 0.0);
  bad.num_blocks = 0;
  EXPECT_FALSE(Sasrec<double>::Create(bad).ok());
}

// The peer's state_dict names and shapes, and its initialisation ranges.
TEST(SasrecInit, PeerNamesAndShapes) {
  SasrecOptions o;  // the peer's sizes: d 50, T 50, 2 blocks
  o.max_batch = 1;
  auto m = Sasrec<float>::Create(o);
  ASSERT_TRUE(m.ok());
  const auto& p = (*m)->params();
  const std::map<std::string, int64_t> want = {
      {"pos.weight", 2500},        {"blocks.0.ln1.weight", 50}, {"blocks.0.ln1.bias", 50},
      {"blocks.0.q.weight", 2500}, {"blocks.0.q.bias", 50},     {"blocks.0.k.weight", 2500},
      {"blocks.0.v.bias", 50},     {"blocks.0.ln2.weight", 50}, {"blocks.0.ffn.0.weight", 2500},
      {"blocks.1.ffn.3.bias", 50}, {"ln_out.weight", 50},       {"ln_out.bias", 50}};
  for (const auto& [name, size] : want) {
    const auto* e = p.Find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->size, size) << name;
  }
  // pos + 2 * (4 LN vectors + 5 Linear(50, 50)) + final LN
  EXPECT_EQ(p.size(), 2500 + 2 * (4 * 50 + 5 * 2550) + 100);
  const auto* w = p.Find("blocks.1.q.weight");
  double maxabs = 0;
  for (int64_t i = 0; i < w->size; ++i)
    maxabs = std::max(maxabs, std::fabs(static_cast<double>(p.values()[w->offset + i])));
  EXPECT_LE(maxabs, 1 / std::sqrt(50.0));
  EXPECT_GT(maxabs, 0.8 / std::sqrt(50.0));
}

// ---- Parity with the peer's torch SASRec ------------------------------------------------------

std::string PeerDir() {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  return std::string(src != nullptr ? src : ".") + "/../shared/peers";
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

// The peer script: builds torch_models.SASRec in float64 with dropout 0, loads our weights by
// name, runs loss() on our batch and writes the loss and every gradient (dense by name, the item
// table as "item.weight") in the same text format.
constexpr const char* kPeerScript = R"PY(
import sys
sys.path.insert(0, sys.argv[1])
import torch
from torch_models import SASRec
torch.set_default_dtype(torch.float64)
vals = {}
with open(sys.argv[2]) as f:
    hdr = f.readline().split()
    n_items, d, max_len, blocks, B = map(int, hdr)
    for line in f:
        parts = line.split()
        vals[parts[0]] = [float(x) for x in parts[1:]]
def encode_query_norm(self, seq):
    # The SASRec reference code's block (models/transformer.h BlockLayout::kQueryNorm), written
    # over the peer's modules: LN1 on the queries only, K and V from x, residuals from LN(x).
    L = seq.shape[1]
    keep = (seq != 0).unsqueeze(-1).double()
    x = self.drop(self.item(seq) * self.d ** 0.5 + self.pos.weight[-L:]) * keep
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = causal[None] & (seq != 0)[:, None, :]
    for blk in self.blocks:
        h = blk["ln1"](x)
        s = blk["q"](h) @ blk["k"](x).transpose(1, 2) / self.d ** 0.5
        a = self.drop(torch.softmax(s.masked_fill(~allowed, -1e9), dim=-1))
        h2 = blk["ln2"](h + a @ blk["v"](x))  # no dropout on the attention output
        x = (h2 + self.drop(blk["ffn"](h2))) * keep
    return self.ln_out(x)
if sys.argv[4] == "query_norm":
    SASRec.encode = encode_query_norm
m = SASRec(n_items, d, max_len, blocks, dropout=0.0).double()
sd = m.state_dict()
for k in sd:
    sd[k] = torch.tensor(vals[k], dtype=torch.float64).reshape(sd[k].shape)
m.load_state_dict(sd)
def ids(name):
    return torch.tensor([int(x) for x in vals[name]], dtype=torch.long).reshape(B, max_len)
batch = {"seq": ids("seq"), "pos": ids("pos"), "neg": ids("neg")}
loss = m.loss(batch)
loss.backward()
with open(sys.argv[3], "w") as f:
    f.write("loss %.17g\n" % loss.item())
    for name, p in m.named_parameters():
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        f.write(name + " " + " ".join("%.17g" % v for v in g.flatten().tolist()) + "\n")
)PY";

// Loss and every gradient against torch in float64 (the peer's SASRec, its encode replaced by
// the reference code's block for kQueryNorm), dropout 0.
void CheckSasrecAgainstTorch(BlockLayout layout) {
  const std::string peer = PeerDir();
  if (!FileExists(peer + "/torch_models.py")) GTEST_SKIP() << "no peer at " << peer;
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch";

  SasrecOptions o;
  o.layout = layout;
  o.embedding_dim = 4;
  o.max_len = 6;
  o.max_batch = 3;
  o.num_blocks = 2;
  o.num_heads = 1;
  o.dropout = 0;
  o.seed = 1;
  auto m = Sasrec<double>::Create(o);
  ASSERT_TRUE(m.ok());
  Perturb((*m)->params(), 8);
  // The whole table is "pulled": row r = item r, so item ids are row indices (row 0 = padding).
  const int64_t n_items = 9;
  SeqBatch batch({6, 2, 4}, 6, 4, n_items + 1, 21);
  for (int64_t c = 0; c < 4; ++c) batch.item_rows[c] = 0;  // the peer's zero padding row
  kernels::Context ctx;
  double loss = 0;
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &loss));
  std::vector<double> d_item(batch.item_rows.size());
  ASSERT_OK((*m)->Backward(ctx, batch.Inputs(), d_item.data()));

  char in_path[] = "/tmp/sasrec_parity_XXXXXX";
  const int fd = mkstemp(in_path);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string out_path = std::string(in_path) + ".out",
                    py_path = std::string(in_path) + ".py";
  {
    std::ofstream py(py_path);
    py << kPeerScript;
    std::ofstream f(in_path);
    f.precision(17);
    f << n_items << " " << 4 << " " << 6 << " " << 2 << " " << 3 << "\n";
    const auto& p = (*m)->params();
    for (const auto& e : p.entries()) {
      f << e.name;
      for (int64_t i = 0; i < e.size; ++i) f << " " << p.values()[e.offset + i];
      f << "\n";
    }
    f << "item.weight";
    for (double v : batch.item_rows) f << " " << v;
    f << "\n";
    const char* names[3] = {"seq", "pos", "neg"};
    for (int k = 0; k < 3; ++k) {
      f << names[k];
      for (int64_t i = 0; i < 18; ++i) f << " " << batch.item_index[k * 18 + i];
      f << "\n";
    }
  }
  const std::string cmd = "/usr/bin/python3 " + py_path + " " + peer + " " + in_path + " " +
                          out_path + " " +
                          (layout == BlockLayout::kQueryNorm ? "query_norm" : "pre_ln") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::map<std::string, std::vector<double>> got;
  {
    std::ifstream f(out_path);
    std::string line;
    while (std::getline(f, line)) {
      std::istringstream ss(line);
      std::string name;
      ss >> name;
      double v;
      while (ss >> v) got[name].push_back(v);
    }
  }
  std::remove(in_path);
  std::remove(out_path.c_str());
  std::remove(py_path.c_str());
  ASSERT_EQ(got["loss"].size(), 1u);
  EXPECT_NEAR(loss, got["loss"][0], 1e-12);
  const auto& p = (*m)->params();
  for (const auto& e : p.entries()) {
    ASSERT_EQ(got[e.name].size(), static_cast<size_t>(e.size)) << e.name;
    EXPECT_TRUE(testing::AllClose(p.grads() + e.offset, got[e.name].data(), e.size, {1e-10, 1e-8}))
        << e.name;
  }
  // torch leaves the padding row's gradient at zero (padding_idx); ours only receives padded
  // uses' zeros too, so the whole table matches.
  EXPECT_TRUE(testing::AllClose(d_item, got["item.weight"], {1e-10, 1e-8}));
}

TEST(SasrecPeerParity, LossAndGradientsMatchTorch_Dropout0_B3_T6_D4) {
  CheckSasrecAgainstTorch(BlockLayout::kPreLn);
}
TEST(SasrecPeerParity, QueryNormMatchesTorch_Dropout0_B3_T6_D4) {
  CheckSasrecAgainstTorch(BlockLayout::kQueryNorm);
}

// ---- BST -------------------------------------------------------------------------------------

BstOptions SmallBst(int64_t heads, double dropout, BstPooling pooling, MlpActivation act) {
  BstOptions o;
  o.embedding_dim = 3;  // E = 6
  o.max_len = 4;
  o.max_batch = 3;
  o.num_blocks = 1;
  o.num_heads = heads;
  o.dropout = dropout;
  o.mlp_hidden = {5, 3};
  o.activation = act;
  o.pooling = pooling;
  o.seed = 13;
  return o;
}

// Rows of T = 4 steps over 5 item rows and 3 category rows (tests/models/ctr_test_batch.h).
struct CtrBatch : testing_util::SmallCtrBatch {
  explicit CtrBatch(std::vector<int32_t> lens, uint64_t seed = 17)
      : SmallCtrBatch(std::move(lens), 4, 3, 5, 3, seed) {}
};

struct BstCase {
  int64_t heads;
  double dropout;
  BstPooling pooling;
  MlpActivation act;
  std::vector<int32_t> lengths;
  bool threaded;
  std::string label;
  bool fast = true;  // BstOptions::fast_cpu_path
  BlockLayout layout = BlockLayout::kPreLn;
};
void PrintTo(const BstCase& c, std::ostream* os) { *os << c.label; }

class BstGradTest : public ::testing::TestWithParam<BstCase> {};

TEST_P(BstGradTest, Backward_B3_T4_D3x2_Mlp5x3) {
  const BstCase c = GetParam();
  BstOptions bo = SmallBst(c.heads, c.dropout, c.pooling, c.act);
  bo.fast_cpu_path = c.fast;
  bo.layout = c.layout;
  auto model_or = Bst<double>::Create(bo);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  Bst<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 2);
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  CtrBatch batch(c.lengths);
  constexpr uint64_t kStep = 7;

  model.set_dropout_step(kStep);
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, batch.Inputs(), true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  ASSERT_TRUE(AllFinite(dense_grad.data(), p.size()));

  const auto loss_fn = ReplayedLoss(model, ctx, batch.Inputs(), kStep);
  EXPECT_DOUBLE_EQ(loss_fn(), loss);
  testing_util::ExpectDenseGradientsMatch(p, dense_grad, loss_fn);
  EXPECT_TRUE(CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("cat_rows", batch.cat_rows, d_cat, loss_fn, 1e-6, 1e-6));
}

std::vector<BstCase> BstCases() {
  const auto kF = BstPooling::kFlatten, kM = BstPooling::kMeanWithTarget;
  const auto kP = MlpActivation::kPrelu, kD = MlpActivation::kDice;
  std::vector<BstCase> c;
  c.push_back({1, 0.0, kF, kP, {4, 1, 2}, false, "H1_nodrop_flatten_mixed"});
  c.push_back({2, 0.0, kF, kP, {0, 4, 3}, false, "H2_nodrop_flatten_len0"});
  c.push_back({2, 0.3, kF, kP, {4, 1, 2}, true, "H2_drop_flatten_mixed_pool2"});
  c.push_back({3, 0.3, kM, kP, {0, 1, 4}, false, "H3_drop_mean_len0_len1_max"});
  c.push_back({1, 0.0, kM, kD, {4, 4, 4}, false, "H1_nodrop_mean_dice_max"});
  c.push_back({2, 0.2, kF, kD, {0, 0, 0}, false, "H2_drop_flatten_dice_allempty"});
  c.push_back({2, 0.3, kM, kP, {4, 0, 2}, true, "H2_drop_mean_kernelpath", false});
  c.push_back({2,
               0.3,
               kF,
               kP,
               {4, 1, 0},
               true,
               "H2_drop_flatten_querynorm",
               true,
               BlockLayout::kQueryNorm});
  return c;
}

INSTANTIATE_TEST_SUITE_P(Bst, BstGradTest, ::testing::ValuesIn(BstCases()),
                         [](const ::testing::TestParamInfo<BstCase>& info) {
                           return info.param.label;
                         });

// The history matters (attention from the target reaches the behaviours) and the target
// matters; padded steps' indices are never read; inference has no dropout.
TEST(BstSemantics, HistoryAndTargetMatterPaddingInvisible) {
  auto m =
      Bst<double>::Create(SmallBst(2, 0.0, BstPooling::kMeanWithTarget, MlpActivation::kPrelu));
  ASSERT_TRUE(m.ok());
  Perturb((*m)->params(), 5);
  kernels::Context ctx;
  CtrBatch batch({4, 2, 3});
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
  const std::vector<double> base((*m)->logits(), (*m)->logits() + 3);
  batch.item_index[1 * 4 + 0] = (batch.item_index[4] + 1) % 5;  // row 1, padded step 0
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
  for (int b = 0; b < 3; ++b) EXPECT_EQ((*m)->logits()[b], base[b]);
  batch.item_index[0 * 4 + 1] = (batch.item_index[1] + 1) % 5;  // row 0, a behaviour
  batch.item_index[12 + 2] = (batch.item_index[14] + 1) % 5;    // row 2's target
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), false, nullptr));
  EXPECT_NE((*m)->logits()[0], base[0]);
  EXPECT_EQ((*m)->logits()[1], base[1]);
  EXPECT_NE((*m)->logits()[2], base[2]);

  auto md = Bst<double>::Create(SmallBst(2, 0.5, BstPooling::kFlatten, MlpActivation::kPrelu));
  auto m0 = Bst<double>::Create(SmallBst(2, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu));
  ASSERT_TRUE(md.ok() && m0.ok());
  double a = 0, z = 0;
  ASSERT_OK((*md)->Forward(ctx, batch.Inputs(), false, &a));
  ASSERT_OK((*m0)->Forward(ctx, batch.Inputs(), false, &z));
  EXPECT_EQ(a, z);
  ASSERT_OK((*md)->Forward(ctx, batch.Inputs(), true, &a));
  EXPECT_NE(a, z);
}

TEST(BstPrecision, FloatMatchesDouble_B3_T4_H2_Dropout) {
  const BstOptions o = SmallBst(2, 0.3, BstPooling::kFlatten, MlpActivation::kPrelu);
  auto md = Bst<double>::Create(o);
  auto mf = Bst<float>::Create(o);
  ASSERT_TRUE(md.ok() && mf.ok());
  CtrBatch batch({4, 1, 2});
  testing_util::ExpectFloatMatchesDouble(kernels::Context(), **md, **mf, batch.Inputs());
}

TEST(BstInputs, RejectsBadIndexLengthBatchAndOptions) {
  auto m = Bst<double>::Create(SmallBst(1, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  CtrBatch batch({4, 1, 2});
  batch.cat_index[13] = 3;  // only 3 category rows
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cat_index[13]"), std::string::npos) << s.message();
  batch.cat_index[13] = 0;
  batch.item_index[2] = 5;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("item_index[2]"), std::string::npos) << s.message();
  batch.item_index[2] = 0;
  batch.lengths[0] = 5;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[0]"), std::string::npos) << s.message();
  batch.lengths[0] = 4;
  CtrInputs<double> in = batch.Inputs();
  in.batch = 4;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = 3;
  in.cat_rows = nullptr;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  std::vector<double> d(64);
  auto fresh = Bst<double>::Create(SmallBst(1, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  in.labels = nullptr;
  ASSERT_OK((*fresh)->Forward(ctx, in, true, nullptr));  // no labels: no Backward
  EXPECT_EQ((*fresh)->Backward(ctx, batch.Inputs(), d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);

  BstOptions bad = SmallBst(4, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu);  // 4 !| 6
  auto b = Bst<double>::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("num_heads"), std::string::npos);
  bad = SmallBst(1, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu);
  bad.mlp_hidden = {5, 0};
  b = Bst<double>::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("mlp_hidden[1]"), std::string::npos);
  bad = SmallBst(1, -0.1, BstPooling::kFlatten, MlpActivation::kPrelu);
  EXPECT_FALSE(Bst<double>::Create(bad).ok());
}

TEST(BstInit, ShapesOfTheDefaultModel) {
  BstOptions o;  // E = 36, T = 50, flatten -> 1836 -> 1024 -> 512 -> 256 -> 1
  o.max_batch = 2;
  auto m = Bst<float>::Create(o);
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& p = (*m)->params();
  const auto* pos = p.Find("pos.weight");
  ASSERT_NE(pos, nullptr);
  EXPECT_EQ(pos->size, 51 * 36);
  const auto* top0 = p.Find("top.0.weight");
  ASSERT_NE(top0, nullptr);
  EXPECT_EQ(top0->size, 1836 * 1024);
  ASSERT_NE(p.Find("blocks.0.attn_out.weight"), nullptr);
  EXPECT_EQ(p.Find("blocks.1.q.weight"), nullptr);
}

// ---- Devices (the CUDA path's logic, run on the CPU with stage_on_cpu) ------------------------

// A CPU model refuses a CUDA Context (naming the model); a CUDA model is float only.
TEST(TransformerDevice, ContextMustMatchAndCudaIsFloatOnly) {
  const SeqBatch seq({5, 1, 0}, 5, 4);
  testing_util::ExpectTheDeviceIsTheModels<Sasrec>(SmallSasrec(1, 0.0), seq.Inputs(), "Sasrec");
  const CtrBatch ctr({4, 1, 0});
  testing_util::ExpectTheDeviceIsTheModels<Bst>(
      SmallBst(1, 0.0, BstPooling::kFlatten, MlpActivation::kPrelu), ctr.Inputs(), "Bst");
}

// stage_on_cpu takes the CUDA path (inputs staged into the model's buffers, weights uploaded,
// every loop through models/transformer_ops.h, the loss, user vectors, row and dense gradients
// copied back) with the CPU kernels: it must be bitwise the plain model with fast_cpu_path =
// false (the same kernels in the same order), over two rounds with a weight update between them
// (the upload must see it), dropout on, lengths 0, 1 and max, a batch below max_batch, and an
// inference forward after.
TEST(SasrecDevice, StagedCopiesGiveBitwiseThePlainKernelPath) {
  for (BlockLayout layout : {BlockLayout::kPreLn, BlockLayout::kQueryNorm}) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(layout == BlockLayout::kPreLn ? "preln" : "querynorm") +
                   " threads " + std::to_string(threads));
      SasrecOptions o = SmallSasrec(2, 0.3);
      o.layout = layout;
      o.fast_cpu_path = false;
      auto plain_or = Sasrec<double>::Create(o);
      o.fast_cpu_path = true;  // ignored on the device path
      o.stage_on_cpu = true;
      auto staged_or = Sasrec<double>::Create(o);
      ASSERT_OK(plain_or.status());
      ASSERT_OK(staged_or.status());
      Sasrec<double>* models[2] = {plain_or->get(), staged_or->get()};
      ThreadPool pool(threads);
      kernels::Context ctx;
      ctx.pool = threads > 1 ? &pool : nullptr;
      const SeqBatch batches[2] = {SeqBatch({5, 1, 0}, 5, 4, 7, 21), SeqBatch({2, 5}, 5, 4, 6, 22)};
      for (int round = 0; round < 2; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        const SeqInputs<double> in = batches[round].Inputs();
        double loss[2];
        std::vector<double> users[2], grads[2], d_rows[2], logits[2];
        for (int k = 0; k < 2; ++k) {
          ASSERT_OK(models[k]->Forward(ctx, in, true, &loss[k]));
          users[k].assign(models[k]->user_vectors(), models[k]->user_vectors() + in.batch * 4);
          logits[k].assign(models[k]->pos_logits(), models[k]->pos_logits() + in.batch * 5);
          d_rows[k].assign(batches[round].item_rows.size(), std::nan(""));
          DenseParams<double>& p = models[k]->params();
          std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
          ASSERT_OK(models[k]->Backward(ctx, in, d_rows[k].data()));
          grads[k].assign(p.grads(), p.grads() + p.size());
          // What the dense optimizer does between steps: the next round must see it.
          for (int64_t i = 0; i < p.size(); ++i) p.values()[i] -= 0.1 * p.grads()[i];
        }
        EXPECT_EQ(loss[0], loss[1]);
        EXPECT_NE(loss[0], 0.0);
        EXPECT_EQ(users[0], users[1]);
        EXPECT_EQ(logits[0], logits[1]);
        EXPECT_EQ(d_rows[0], d_rows[1]);
        for (const auto& e : models[0]->params().entries())
          EXPECT_EQ(std::vector<double>(grads[1].begin() + e.offset,
                                        grads[1].begin() + e.offset + e.size),
                    std::vector<double>(grads[0].begin() + e.offset,
                                        grads[0].begin() + e.offset + e.size))
              << e.name;
        EXPECT_TRUE(AllFinite(grads[1].data(), static_cast<int64_t>(grads[1].size())));
      }
      // Inference: the sequence part only (B*T indices).
      SeqBatch eval({3, 5, 0}, 5, 4, 7, 23);
      eval.item_index.resize(eval.B * eval.T);
      std::vector<double> users[2];
      for (int k = 0; k < 2; ++k) {
        ASSERT_OK(models[k]->Forward(ctx, eval.Inputs(), false, nullptr));
        users[k].assign(models[k]->user_vectors(), models[k]->user_vectors() + eval.B * 4);
      }
      EXPECT_EQ(users[0], users[1]);
    }
  }
}

// The same for BST through tests/models/staged_check.h (loss, logits, every dense gradient, both
// row tables, Dice statistics, inference logits), both poolings, PReLU and Dice, dropout on.
TEST(BstDevice, StagedCopiesGiveBitwiseThePlainKernelPath) {
  const auto kF = BstPooling::kFlatten, kM = BstPooling::kMeanWithTarget;
  for (BstPooling pooling : {kF, kM}) {
    for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice}) {
      SCOPED_TRACE(std::string(pooling == kF ? "flatten " : "mean ") + MlpActivationName(act));
      BstOptions o = SmallBst(2, 0.3, pooling, act);
      o.fast_cpu_path = false;
      auto plain = Bst<double>::Create(o);
      o.fast_cpu_path = true;  // ignored on the device path
      o.stage_on_cpu = true;
      auto staged = Bst<double>::Create(o);
      ASSERT_OK(plain.status());
      ASSERT_OK(staged.status());
      CtrBatch b0({4, 1, 0}, 31), b1({0, 4, 2}, 32), eval({3, 4, 0}, 33);
      CtrInputs<double> second = b1.Inputs();
      second.batch = 2;  // below max_batch
      testing_util::ExpectStagedMatchesPlain(**plain, **staged, {b0.Inputs(), second},
                                             eval.Inputs());
    }
  }
}

// Float64 finite differences of the staged models (dropout on, masks replayed): the device
// path's backward is the gradient of its forward.
TEST(SasrecDevice, StagedGradientCheck_Dropout) {
  SasrecOptions o = SmallSasrec(2, 0.3);
  o.stage_on_cpu = true;
  auto model_or = Sasrec<double>::Create(o);
  ASSERT_OK(model_or.status());
  Sasrec<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 3);
  const kernels::Context ctx;
  SeqBatch batch({5, 1, 0}, 5, 4);
  constexpr uint64_t kStep = 3;
  model.set_dropout_step(kStep);
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, batch.Inputs(), true, &loss));
  std::vector<double> d_item(batch.item_rows.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, batch.Inputs(), d_item.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  const auto loss_fn = ReplayedLoss(model, ctx, batch.Inputs(), kStep);
  EXPECT_DOUBLE_EQ(loss_fn(), loss);
  testing_util::ExpectDenseGradientsMatch(p, dense_grad, loss_fn);
  EXPECT_TRUE(CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
}

TEST(BstDevice, StagedGradientCheck_Dropout) {
  BstOptions o = SmallBst(2, 0.3, BstPooling::kMeanWithTarget, MlpActivation::kPrelu);
  o.stage_on_cpu = true;
  auto model_or = Bst<double>::Create(o);
  ASSERT_OK(model_or.status());
  Bst<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 2);
  const kernels::Context ctx;
  CtrBatch batch({4, 1, 0});
  constexpr uint64_t kStep = 7;
  model.set_dropout_step(kStep);
  double loss = 0;
  ASSERT_OK(model.Forward(ctx, batch.Inputs(), true, &loss));
  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  const auto loss_fn = ReplayedLoss(model, ctx, batch.Inputs(), kStep);
  EXPECT_DOUBLE_EQ(loss_fn(), loss);
  testing_util::ExpectDenseGradientsMatch(p, dense_grad, loss_fn);
  EXPECT_TRUE(CheckGradient("item_rows", batch.item_rows, d_item, loss_fn, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("cat_rows", batch.cat_rows, d_cat, loss_fn, 1e-6, 1e-6));
}

}  // namespace
}  // namespace ips::models
