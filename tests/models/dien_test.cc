// Dien: float64 finite-difference checks of the whole model's backward (every dense tensor, every
// pulled item/category row including rows only auxiliary negatives use) with the GRU and the LSTM
// extractor, PReLU and Dice, lengths 0, 1, max and mixed; ablation switches that really remove
// the attention / auxiliary contribution; float/double agreement; input validation; the device
// path run on the CPU (stage_on_cpu: its own finite-difference checks, and agreement with the
// plain model to float64 rounding; the CUDA run is tests/models/dien_gpu_test.cc); and, when
// /usr/bin/python3 has torch, parity of the loss and every gradient with the peer's torch DIEN
// (../shared/peers/torch_models.py) at identical weights.
#include "models/dien.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
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

constexpr int64_t kB = 4, kT = 5, kD = 3;

// B = 4, T = 5, dim 3 + 3 (H = 6), aux 5/4, attention 6/5, MLP 7/4.
DienOptions SmallOptions(DienCell cell, MlpActivation act) {
  DienOptions o;
  o.embedding_dim = kD;
  o.max_len = kT;
  o.max_batch = kB;
  o.cell = cell;
  o.aux_hidden = {5, 4};
  o.attention_hidden1 = 6;
  o.attention_hidden2 = 5;
  o.mlp_hidden = {7, 4};
  o.activation = act;
  o.seed = 7;
  return o;
}

// A batch over small pulled tables. History and target positions use item rows [0, 4) and
// category rows [0, 3); negatives use item rows [0, 6) (rows 4 and 5 are reached only through
// negatives) and category rows [0, 4) (row 3 only through negatives). Item row 6 is used only by
// the negative at each row's oldest valid position, which no pair reads: its gradient must be
// exactly zero. Item row 7 is never indexed.
struct SmallBatch : testing_util::SmallCtrBatch {
  explicit SmallBatch(std::vector<int32_t> lens, uint64_t seed = 11)
      : SmallCtrBatch(std::move(lens), kT, kD, /*item_row_count=*/8, /*cat_row_count=*/4) {
    Rng rng(seed);
    const int64_t n = 2 * B * T + B;
    item_index.resize(n);
    cat_index.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      const bool neg = i >= B * T + B;
      item_index[i] = static_cast<int64_t>(rng.UniformInt(neg ? 6 : 4));
      cat_index[i] = static_cast<int64_t>(rng.UniformInt(neg ? 4 : 3));
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t fv = T - lengths[b];
      if (fv < T) item_index[B * T + B + b * T + fv] = 6;
      // Every negative-only row is reached by at least one used negative where there is one.
      if (lengths[b] >= 3) {
        item_index[B * T + B + b * T + fv + 1] = 4;
        item_index[B * T + B + b * T + fv + 2] = 5;
        cat_index[B * T + B + b * T + fv + 1] = 3;
      }
    }
    item_rows.resize(num_item_rows * D);
    cat_rows.resize(num_cat_rows * D);
    FillUniform(item_rows, rng, -1.0, 1.0);
    FillUniform(cat_rows, rng, -1.0, 1.0);
    labels.resize(B);
    for (int64_t b = 0; b < B; ++b) labels[b] = b % 2 == 0 ? 1.0 : 0.0;
  }
};

// Moves every dense weight away from its initialisation (PReLU alphas 0.25, Dice alphas 0, ...)
// so that no branch is invisible to the finite differences.
void Perturb(DenseParams<double>& p, uint64_t seed) {
  Rng rng(seed);
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] += 0.3 * (2 * rng.Uniform() - 1);
}

struct GradCase {
  DienCell cell;
  MlpActivation act;
  std::vector<int32_t> lengths;
  bool threaded;
  const char* label;
  std::vector<int64_t> aux_hidden = {5, 4};
  // stage_on_cpu: the device path (staged copies, layer-by-layer auxiliary MLP) on the CPU.
  bool staged = false;
};

class DienGradTest : public ::testing::TestWithParam<GradCase> {};

// Every dense tensor and every pulled row against central differences of the total loss
// (click BCE + aux).
TEST_P(DienGradTest, Backward_B4_T5_D3x2_Aux5x4_Attn6x5_Mlp7x4) {
  const GradCase& c = GetParam();
  DienOptions o = SmallOptions(c.cell, c.act);
  o.aux_hidden = c.aux_hidden;
  o.stage_on_cpu = c.staged;
  auto model_or = Dien<double>::Create(o);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  Dien<double>& model = **model_or;
  DenseParams<double>& p = model.params();
  Perturb(p, 3);

  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = c.threaded ? &pool : nullptr;
  SmallBatch batch(c.lengths);
  const CtrInputs<double> in = batch.Inputs();

  double loss = 0;
  ASSERT_OK(model.Forward(ctx, in, /*training=*/true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  int64_t pairs = 0;
  for (int32_t l : c.lengths) pairs += std::max(l - 1, 0);
  EXPECT_EQ(model.aux_pairs(), pairs);
  if (pairs > 0) {
    EXPECT_GT(model.aux_loss(), 0.0);
  }
  EXPECT_NEAR(loss, model.click_loss() + model.aux_loss(), 1e-12);

  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  std::fill(p.grads(), p.grads() + p.size(), std::nan(""));
  ASSERT_OK(model.Backward(ctx, in, d_item.data(), d_cat.data()));
  const std::vector<double> dense_grad(p.grads(), p.grads() + p.size());
  for (int64_t i = 0; i < p.size(); ++i) ASSERT_TRUE(std::isfinite(dense_grad[i])) << i;
  // Row 6 only feeds never-read negatives, row 7 nothing: exactly zero.
  for (int64_t d = 0; d < kD; ++d) {
    EXPECT_EQ(d_item[6 * kD + d], 0.0);
    EXPECT_EQ(d_item[7 * kD + d], 0.0);
  }

  testing_util::ExpectGradientsMatch(model, ctx, batch, dense_grad, d_item, &d_cat);
}

INSTANTIATE_TEST_SUITE_P(
    Dien, DienGradTest,
    ::testing::Values(
        GradCase{DienCell::kGru, MlpActivation::kPrelu, {5, 1, 3, 0}, false, "gru_prelu_mixed"},
        GradCase{DienCell::kGru, MlpActivation::kDice, {5, 1, 3, 0}, false, "gru_dice_mixed"},
        GradCase{DienCell::kLstm, MlpActivation::kPrelu, {5, 1, 3, 0}, false, "lstm_prelu_mixed"},
        GradCase{DienCell::kLstm, MlpActivation::kDice, {2, 5, 4, 1}, true, "lstm_dice_pool2"},
        GradCase{DienCell::kGru, MlpActivation::kPrelu, {5, 5, 5, 5}, true, "gru_prelu_max_pool2"},
        GradCase{DienCell::kGru, MlpActivation::kDice, {1, 1, 1, 1}, false, "gru_dice_len1"},
        GradCase{DienCell::kLstm, MlpActivation::kPrelu, {0, 0, 0, 0}, false, "lstm_len0"},
        // A 1-wide hidden auxiliary layer (the 1-wide product path, then a sigmoid) and an
        // auxiliary MLP without hidden layers (a single linear layer to the logit).
        GradCase{DienCell::kGru, MlpActivation::kPrelu, {5, 3, 2, 4}, false, "gru_aux_1", {1}},
        GradCase{DienCell::kLstm, MlpActivation::kDice, {5, 3, 2, 4}, true, "lstm_aux_linear", {}}),
    [](const ::testing::TestParamInfo<GradCase>& info) { return std::string(info.param.label); });

// The device path (stage_on_cpu: staged copies, the ops of models/dien_ops.h, the auxiliary MLP
// layer by layer through kernels/): the same checks of its own backward.
GradCase Staged(GradCase c) {
  c.staged = true;
  return c;
}
INSTANTIATE_TEST_SUITE_P(
    DienStaged, DienGradTest,
    ::testing::Values(
        Staged({DienCell::kGru, MlpActivation::kPrelu, {5, 1, 3, 0}, false, "gru_prelu_mixed"}),
        Staged({DienCell::kLstm, MlpActivation::kDice, {2, 5, 4, 1}, true, "lstm_dice_pool2"}),
        Staged({DienCell::kGru, MlpActivation::kDice, {1, 1, 1, 1}, false, "gru_dice_len1"}),
        Staged({DienCell::kLstm, MlpActivation::kPrelu, {0, 0, 0, 0}, false, "lstm_len0"}),
        Staged({DienCell::kGru, MlpActivation::kPrelu, {5, 3, 2, 4}, false, "gru_aux_1", {1}}),
        Staged({DienCell::kLstm, MlpActivation::kDice, {5, 3, 2, 4}, true, "lstm_aux_linear", {}})),
    [](const ::testing::TestParamInfo<GradCase>& info) { return std::string(info.param.label); });

// B = 24 rows of T = 12 steps (every 4th row full, the rest random lengths; with_short_rows:
// rows 1 and 2 of lengths 0 and 1) over 30 item and 5 category rows, 2*B*T + B indices (history,
// targets, negatives) and labels: many auxiliary pairs, several tiles of them.
struct ManyPairsBatch : testing_util::SmallCtrBatch {
  explicit ManyPairsBatch(bool with_short_rows) : ManyPairsBatch(with_short_rows, Rng(17)) {}

 private:
  static std::vector<int32_t> DrawLengths(Rng& rng, bool with_short_rows) {
    std::vector<int32_t> lengths(24);
    for (size_t b = 0; b < lengths.size(); ++b)
      lengths[b] = static_cast<int32_t>(b % 4 == 0 ? 12 : rng.UniformInt(13));
    if (with_short_rows) {
      lengths[1] = 0;
      lengths[2] = 1;
    }
    return lengths;
  }
  // rng draws the lengths (in the base's initialiser), then everything else, in that order.
  ManyPairsBatch(bool with_short_rows, Rng rng)
      : SmallCtrBatch(DrawLengths(rng, with_short_rows), 12, kD, 30, 5) {
    item_index.resize(2 * B * T + B);
    cat_index.resize(2 * B * T + B);
    for (auto& v : item_index) v = static_cast<int64_t>(rng.UniformInt(num_item_rows));
    for (auto& v : cat_index) v = static_cast<int64_t>(rng.UniformInt(num_cat_rows));
    item_rows.resize(num_item_rows * D);
    cat_rows.resize(num_cat_rows * D);
    FillUniform(item_rows, rng, -1.0, 1.0);
    FillUniform(cat_rows, rng, -1.0, 1.0);
    labels.resize(B);
    for (int64_t b = 0; b < B; ++b) labels[b] = static_cast<double>(rng.UniformInt(2));
  }
};

// A batch large enough for several auxiliary tiles (32 pairs each) split over two parts: the
// pooled run matches the inline run (only the order of the partial sums differs), and the
// auxiliary weights and all rows pass the finite-difference check there too.
TEST(DienGrad, ManyAuxTiles_B24_T12_Pool2MatchesInlineAndFiniteDifferences) {
  DienOptions o = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  o.max_len = 12;
  o.max_batch = 24;
  auto m_or = Dien<double>::Create(o);
  ASSERT_TRUE(m_or.ok());
  Dien<double>& m = **m_or;
  Perturb(m.params(), 5);
  // Non-const: the finite-difference check perturbs the rows in place (in points at them).
  ManyPairsBatch batch(/*with_short_rows=*/false);
  const CtrInputs<double> in = batch.Inputs();
  std::vector<double>&items = batch.item_rows, &cats = batch.cat_rows;

  ThreadPool pool(2);
  kernels::Context inline_ctx, pool_ctx;
  pool_ctx.pool = &pool;
  double l_inline = 0, l_pool = 0;
  std::vector<double> gi_inline(items.size()), gc_inline(cats.size());
  std::vector<double> gi_pool(items.size(), std::nan("")), gc_pool(cats.size(), std::nan(""));
  ASSERT_OK(m.Forward(inline_ctx, in, true, &l_inline));
  ASSERT_GT(m.aux_pairs(), 4 * 32);
  ASSERT_OK(m.Backward(inline_ctx, in, gi_inline.data(), gc_inline.data()));
  const std::vector<double> dense_inline(m.params().grads(),
                                         m.params().grads() + m.params().size());
  ASSERT_OK(m.Forward(pool_ctx, in, true, &l_pool));
  ASSERT_OK(m.Backward(pool_ctx, in, gi_pool.data(), gc_pool.data()));
  EXPECT_NEAR(l_pool, l_inline, 1e-12);
  EXPECT_TRUE(testing::AllClose(gi_pool, gi_inline, {1e-12, 1e-10}));
  EXPECT_TRUE(testing::AllClose(gc_pool, gc_inline, {1e-12, 1e-10}));
  EXPECT_TRUE(testing::AllClose(m.params().grads(), dense_inline.data(), m.params().size(),
                                {1e-12, 1e-10}));

  auto loss_fn = [&]() {
    double l = 0;
    EXPECT_TRUE(m.Forward(pool_ctx, in, true, &l).ok());
    return l;
  };
  testing_util::ExpectDenseGradientsMatch(
      m.params(), dense_inline, loss_fn, [](const std::string& name) {
        return name.rfind("aux.", 0) == 0 || name.rfind("gru.", 0) == 0;
      });
  EXPECT_TRUE(CheckGradient("item_rows", items, gi_inline, loss_fn, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("cat_rows", cats, gc_inline, loss_fn, 1e-6, 1e-6));
}

// All-empty histories: finite loss, zero aux, no NaN anywhere; the final state is zero.
TEST(DienEdge, AllEmptyHistoriesAreFinite) {
  auto m = Dien<double>::Create(SmallOptions(DienCell::kGru, MlpActivation::kDice));
  ASSERT_TRUE(m.ok());
  SmallBatch batch({0, 0, 0, 0});
  kernels::Context ctx;
  double loss = std::nan("");
  ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &loss));
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_EQ((*m)->aux_loss(), 0.0);
  EXPECT_EQ((*m)->aux_pairs(), 0);
  for (int64_t i = 0; i < kB * 2 * kD; ++i) EXPECT_EQ((*m)->final_state()[i], 0.0);
  for (int64_t i = 0; i < kB * kT; ++i) EXPECT_EQ((*m)->attention_weights()[i], 0.0);
  std::vector<double> d_item(batch.item_rows.size(), std::nan("")),
      d_cat(batch.cat_rows.size(), std::nan(""));
  ASSERT_OK((*m)->Backward(ctx, batch.Inputs(), d_item.data(), d_cat.data()));
  for (double g : d_item) EXPECT_TRUE(std::isfinite(g));
  for (double g : d_cat) EXPECT_TRUE(std::isfinite(g));
  const auto& p = (*m)->params();
  for (int64_t i = 0; i < p.size(); ++i) ASSERT_TRUE(std::isfinite(p.grads()[i])) << i;
  // No step ran, so the extractor and the AUGRU get exactly zero gradient.
  for (const char* name : {"gru.weight_ih_l0", "augru.x2h.weight", "aux.0.weight"}) {
    const auto* e = p.Find(name);
    ASSERT_NE(e, nullptr) << name;
    for (int64_t i = 0; i < e->size; ++i) EXPECT_EQ(p.grads()[e->offset + i], 0.0) << name;
  }
}

// aux_loss_disabled: the loss is exactly the click BCE (recomputed here from the logits), the
// click part is identical to the full model's, and the auxiliary weights and negative-only rows
// get zero gradients; with aux enabled they get non-zero ones.
TEST(DienAblation, AuxDisabledLeavesClickLossOnly) {
  DienOptions on = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  DienOptions off = on;
  off.aux_loss_disabled = true;
  auto m_on = Dien<double>::Create(on);
  auto m_off = Dien<double>::Create(off);
  ASSERT_TRUE(m_on.ok() && m_off.ok());
  SmallBatch batch({5, 4, 3, 5});
  kernels::Context ctx;
  double l_on = 0, l_off = 0;
  ASSERT_OK((*m_on)->Forward(ctx, batch.Inputs(), true, &l_on));
  ASSERT_OK((*m_off)->Forward(ctx, batch.Inputs(), true, &l_off));
  double bce = 0;
  for (int64_t b = 0; b < kB; ++b) {
    const double x = (*m_off)->logits()[b], y = batch.labels[b];
    bce += std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::fabs(x)));
  }
  bce /= kB;
  EXPECT_NEAR(l_off, bce, 1e-12);
  EXPECT_NEAR((*m_on)->click_loss(), l_off, 1e-12);
  EXPECT_GT(l_on - l_off, 0.1) << "the auxiliary loss adds nothing";
  EXPECT_NEAR(l_on - l_off, (*m_on)->aux_loss(), 1e-12);

  auto grads = [&](Dien<double>& m, std::vector<double>* d_item) {
    std::vector<double> d_cat(batch.cat_rows.size());
    d_item->assign(batch.item_rows.size(), std::nan(""));
    EXPECT_TRUE(m.Backward(ctx, batch.Inputs(), d_item->data(), d_cat.data()).ok());
  };
  std::vector<double> gi_on, gi_off;
  grads(**m_on, &gi_on);
  grads(**m_off, &gi_off);
  auto abs_sum = [](const DenseParams<double>& p, const char* prefix) {
    double s = 0;
    for (const auto& e : p.entries())
      if (e.name.rfind(prefix, 0) == 0)
        for (int64_t i = 0; i < e.size; ++i) s += std::fabs(p.grads()[e.offset + i]);
    return s;
  };
  EXPECT_EQ(abs_sum((*m_off)->params(), "aux."), 0.0);
  EXPECT_GT(abs_sum((*m_on)->params(), "aux."), 1e-6);
  // Rows 4 and 5 are reached only through negatives.
  for (int64_t r : {4, 5})
    for (int64_t d = 0; d < kD; ++d) {
      EXPECT_EQ(gi_off[r * kD + d], 0.0);
      EXPECT_NE(gi_on[r * kD + d], 0.0);
    }

  // Evaluation (training = false, with labels) and inference (no labels) never read the
  // negatives: a batch with only B*T + B indices works, and the evaluation loss is the click BCE
  // of the training forward (PReLU: no batch statistics) without the auxiliary term.
  SmallBatch short_batch({5, 4, 3, 5});
  short_batch.item_index.resize(kB * kT + kB);
  short_batch.cat_index.resize(kB * kT + kB);
  CtrInputs<double> inf = short_batch.Inputs();
  double l_eval = 0;
  ASSERT_OK((*m_on)->Forward(ctx, inf, false, &l_eval));
  EXPECT_NEAR(l_eval, l_off, 1e-12);
  EXPECT_EQ((*m_on)->aux_loss(), 0.0);
  inf.labels = nullptr;
  ASSERT_OK((*m_on)->Forward(ctx, inf, false, nullptr));
}

// attention_disabled: the AUGRU ignores the target (rows with the same history and different
// targets reach the same final state), the activation unit gets zero gradients; with attention
// the final state depends on the target and the unit gets gradient.
TEST(DienAblation, AttentionDisabledMakesEvolutionTargetBlind) {
  DienOptions on = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  DienOptions off = on;
  off.attention_disabled = true;
  SmallBatch batch({5, 5, 3, 2});
  for (int64_t t = 0; t < kT; ++t) {  // rows 0 and 1 share their history, not their target
    batch.item_index[kT + t] = batch.item_index[t];
    batch.cat_index[kT + t] = batch.cat_index[t];
  }
  batch.item_index[kB * kT] = 0;
  batch.item_index[kB * kT + 1] = 1;
  batch.cat_index[kB * kT] = 0;
  batch.cat_index[kB * kT + 1] = 1;
  kernels::Context ctx;
  const int64_t H = 2 * kD;
  auto run = [&](const DienOptions& o, double* diff, double* attn_grad) {
    auto m = Dien<double>::Create(o);
    ASSERT_TRUE(m.ok());
    double loss = 0;
    ASSERT_OK((*m)->Forward(ctx, batch.Inputs(), true, &loss));
    *diff = 0;
    for (int64_t c = 0; c < H; ++c)
      *diff += std::fabs((*m)->final_state()[c] - (*m)->final_state()[H + c]);
    std::vector<double> gi(batch.item_rows.size()), gc(batch.cat_rows.size());
    ASSERT_OK((*m)->Backward(ctx, batch.Inputs(), gi.data(), gc.data()));
    *attn_grad = 0;
    for (const auto& e : (*m)->params().entries())
      if (e.name.rfind("attn.", 0) == 0)
        for (int64_t i = 0; i < e.size; ++i)
          *attn_grad += std::fabs((*m)->params().grads()[e.offset + i]);
  };
  double diff_on = 0, grad_on = 0, diff_off = 0, grad_off = 0;
  run(on, &diff_on, &grad_on);
  run(off, &diff_off, &grad_off);
  EXPECT_GT(diff_on, 1e-6) << "the interest evolution ignores the target";
  EXPECT_GT(grad_on, 1e-8) << "no gradient reaches the activation unit";
  EXPECT_EQ(diff_off, 0.0);
  EXPECT_EQ(grad_off, 0.0);
}

// aux_loss_weight scales the auxiliary term and its gradients linearly.
TEST(DienAblation, AuxWeightScalesAuxTerm) {
  DienOptions o = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  o.aux_loss_weight = 2.5;
  auto m1 = Dien<double>::Create(SmallOptions(DienCell::kGru, MlpActivation::kPrelu));
  auto m2 = Dien<double>::Create(o);
  ASSERT_TRUE(m1.ok() && m2.ok());
  SmallBatch batch({5, 4, 3, 5});
  kernels::Context ctx;
  double l1 = 0, l2 = 0;
  ASSERT_OK((*m1)->Forward(ctx, batch.Inputs(), true, &l1));
  ASSERT_OK((*m2)->Forward(ctx, batch.Inputs(), true, &l2));
  EXPECT_NEAR(l2 - (*m2)->click_loss(), 2.5 * (l1 - (*m1)->click_loss()), 1e-12);
  std::vector<double> gi(batch.item_rows.size()), gc(batch.cat_rows.size());
  ASSERT_OK((*m1)->Backward(ctx, batch.Inputs(), gi.data(), gc.data()));
  ASSERT_OK((*m2)->Backward(ctx, batch.Inputs(), gi.data(), gc.data()));
  const auto* e = (*m1)->params().Find("aux.4.weight");
  ASSERT_NE(e, nullptr);
  for (int64_t i = 0; i < e->size; ++i)
    EXPECT_NEAR((*m2)->params().grads()[e->offset + i],
                2.5 * (*m1)->params().grads()[e->offset + i], 1e-12);
}

// The float model (production) and the double model agree on the loss and every gradient.
TEST(DienPrecision, FloatMatchesDouble) {
  for (DienCell cell : {DienCell::kGru, DienCell::kLstm}) {
    const DienOptions o = SmallOptions(cell, MlpActivation::kPrelu);
    auto md = Dien<double>::Create(o);
    auto mf = Dien<float>::Create(o);
    ASSERT_TRUE(md.ok() && mf.ok());
    SmallBatch batch({5, 1, 3, 0});
    ThreadPool pool(2);
    kernels::Context ctx;
    ctx.pool = &pool;
    testing_util::ExpectFloatMatchesDouble(ctx, **md, **mf, batch.Inputs());
  }
}

// The production float path at the peer's widths (E = H = 36, aux 100/50, attention 80/40, MLP
// 200/80: the 64-byte panels, their 32/16/8/2-column tails and the vectorised 1-wide output
// layer) against the double model, on a batch spanning several auxiliary tiles and both parts.
TEST(DienPrecision, FloatMatchesDoubleAtPeerWidths_B16_T12) {
  DienOptions o;
  o.max_len = 12;
  o.max_batch = 16;
  o.seed = 3;
  auto md = Dien<double>::Create(o);
  auto mf = Dien<float>::Create(o);
  ASSERT_TRUE(md.ok() && mf.ok());
  std::copy((*md)->params().values(), (*md)->params().values() + (*md)->params().size(),
            (*mf)->params().values());
  const int64_t B = 16, T = 12, D = 18, NI = 40, NC = 6;
  Rng rng(23);
  std::vector<int32_t> lengths(B);
  for (int64_t b = 0; b < B; ++b)
    lengths[b] = b < 12 ? T : static_cast<int32_t>(rng.UniformInt(T + 1));
  std::vector<int64_t> ii(2 * B * T + B), ci(2 * B * T + B);
  for (auto& v : ii) v = static_cast<int64_t>(rng.UniformInt(NI));
  for (auto& v : ci) v = static_cast<int64_t>(rng.UniformInt(NC));
  std::vector<double> items(NI * D), cats(NC * D), labels(B);
  FillUniform(items, rng, -0.5, 0.5);
  FillUniform(cats, rng, -0.5, 0.5);
  for (int64_t b = 0; b < B; ++b) labels[b] = static_cast<double>(b % 2);
  std::vector<float> items_f(items.begin(), items.end()), cats_f(cats.begin(), cats.end()),
      labels_f(labels.begin(), labels.end());
  CtrInputs<double> ind;
  ind.batch = B;
  ind.lengths = lengths.data();
  ind.item_index = ii.data();
  ind.cat_index = ci.data();
  ind.item_rows = items.data();
  ind.num_item_rows = NI;
  ind.cat_rows = cats.data();
  ind.num_cat_rows = NC;
  ind.labels = labels.data();
  CtrInputs<float> inf;
  inf.batch = B;
  inf.lengths = lengths.data();
  inf.item_index = ii.data();
  inf.cat_index = ci.data();
  inf.item_rows = items_f.data();
  inf.num_item_rows = NI;
  inf.cat_rows = cats_f.data();
  inf.num_cat_rows = NC;
  inf.labels = labels_f.data();
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = &pool;
  double ld = 0;
  float lf = 0;
  ASSERT_OK((*md)->Forward(ctx, ind, true, &ld));
  ASSERT_OK((*mf)->Forward(ctx, inf, true, &lf));
  ASSERT_GT((*mf)->aux_pairs(), 4 * 32);
  EXPECT_NEAR(lf, ld, 1e-5 * std::max(1.0, std::fabs(ld)));
  EXPECT_NEAR((*mf)->aux_loss(), (*md)->aux_loss(), 1e-5);
  std::vector<double> gid(items.size()), gcd(cats.size());
  std::vector<float> gif(items.size(), std::nanf("")), gcf(cats.size(), std::nanf(""));
  std::fill((*mf)->params().grads(), (*mf)->params().grads() + (*mf)->params().size(),
            std::nanf(""));
  ASSERT_OK((*md)->Backward(ctx, ind, gid.data(), gcd.data()));
  ASSERT_OK((*mf)->Backward(ctx, inf, gif.data(), gcf.data()));
  EXPECT_TRUE(testing::AllClose(gif, gid, {1e-6, 1e-3}));
  EXPECT_TRUE(testing::AllClose(gcf, gcd, {1e-6, 1e-3}));
  const auto& pd = (*md)->params();
  const auto& pf = (*mf)->params();
  for (const auto& e : pd.entries())
    EXPECT_TRUE(
        testing::AllClose(pf.grads() + e.offset, pd.grads() + e.offset, e.size, {1e-6, 1e-3}))
        << e.name;
}

TEST(DienInputs, RejectsBadIndexLengthBatchAndOptions) {
  auto m = Dien<double>::Create(SmallOptions(DienCell::kGru, MlpActivation::kPrelu));
  ASSERT_TRUE(m.ok());
  kernels::Context ctx;
  SmallBatch batch({5, 1, 3, 0});
  batch.item_index[7] = 8;  // only 8 rows
  Status s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("item_index[7]"), std::string::npos) << s.message();
  batch.item_index[7] = 0;
  // A bad auxiliary negative (the last position of the layout).
  const int64_t last = 2 * kB * kT + kB - 1;
  batch.cat_index[last] = -1;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cat_index[" + std::to_string(last) + "]"), std::string::npos)
      << s.message();
  batch.cat_index[last] = 0;
  batch.lengths[2] = 6;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[2]"), std::string::npos) << s.message();
  batch.lengths[2] = -1;
  s = (*m)->Forward(ctx, batch.Inputs(), true, nullptr);
  EXPECT_NE(s.message().find("lengths[2]"), std::string::npos) << s.message();
  batch.lengths[2] = 3;
  CtrInputs<double> in = batch.Inputs();
  in.batch = kB + 1;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = 0;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in.batch = kB;
  in.item_rows = nullptr;
  EXPECT_EQ((*m)->Forward(ctx, in, true, nullptr).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  std::vector<double> d(64);
  auto fresh = Dien<double>::Create(SmallOptions(DienCell::kGru, MlpActivation::kPrelu));
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);
  // An inference forward does not enable Backward.
  in.labels = nullptr;
  ASSERT_OK((*fresh)->Forward(ctx, in, true, nullptr));
  in.labels = batch.labels.data();
  EXPECT_EQ((*fresh)->Backward(ctx, in, d.data(), d.data()).code(),
            StatusCode::kFailedPrecondition);

  auto expect_bad = [](DienOptions o, const std::string& field) {
    auto b = Dien<double>::Create(o);
    ASSERT_FALSE(b.ok()) << field;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(b.status().message().find(field), std::string::npos) << b.status().message();
  };
  DienOptions bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.rnn_hidden = 5;
  expect_bad(bad, "rnn_hidden");
  bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.aux_hidden = {5, 0};
  expect_bad(bad, "aux_hidden[1]");
  bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.aux_loss_weight = -1;
  expect_bad(bad, "aux_loss_weight");
  bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.mlp_hidden = {7, 0};
  expect_bad(bad, "mlp_hidden[1]");
  bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.max_len = 0;
  expect_bad(bad, "max_len");
  bad = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  bad.rnn_hidden = 2 * kD;  // explicit and equal: fine
  EXPECT_TRUE(Dien<double>::Create(bad).ok());
}

// The peer's module sizes with embedding_dim 18: parameter names and counts.
TEST(DienInit, PeerNamesAndSizes) {
  DienOptions o;
  o.max_batch = 2;
  auto m = Dien<float>::Create(o);
  ASSERT_TRUE(m.ok());
  const auto& p = (*m)->params();
  const std::map<std::string, int64_t> want = {{"gru.weight_ih_l0", 108 * 36},
                                               {"gru.weight_hh_l0", 108 * 36},
                                               {"gru.bias_ih_l0", 108},
                                               {"gru.bias_hh_l0", 108},
                                               {"aux.0.weight", 100 * 72},
                                               {"aux.2.weight", 50 * 100},
                                               {"aux.4.weight", 50},
                                               {"attn.net.0.weight", 80 * 144},
                                               {"augru.x2h.weight", 108 * 36},
                                               {"augru.h2h.bias", 108},
                                               {"top.0.weight", 200 * 72},
                                               {"top.1.alpha", 200},
                                               {"top.4.weight", 80}};
  for (const auto& [name, size] : want) {
    const auto* e = p.Find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->size, size) << name;
  }
  const auto* g = p.Find("gru.weight_hh_l0");
  double maxabs = 0;
  for (int64_t i = 0; i < g->size; ++i)
    maxabs = std::max(maxabs, std::fabs(static_cast<double>(p.values()[g->offset + i])));
  EXPECT_LE(maxabs, 1 / std::sqrt(36.0));
  EXPECT_GT(maxabs, 0.8 / std::sqrt(36.0));
  EXPECT_EQ((*m)->hidden(), 36);
  EXPECT_TRUE((*m)->aux_negatives());
}

// End-to-end trainability: Adam on the dense weights and the pulled rows of a toy task
// whose label needs the sequence (target = successor of the newest behaviour, or a random item)
// takes the click loss from chance (0.69) to well below it, and the auxiliary loss (whose
// positives are exactly "the next behaviour") drops too. (Plain SGD sits on the sigmoid plateau
// for this toy; Adam, the peer's optimizer, leaves it after ~120 steps: 0.07 at the end.)
TEST(DienLearning, AdamLearnsSuccessorTask) {
  DienOptions o = SmallOptions(DienCell::kGru, MlpActivation::kPrelu);
  o.embedding_dim = 4;
  o.max_len = 6;
  o.max_batch = 64;
  o.aux_hidden = {16, 8};
  o.attention_hidden1 = 16;
  o.attention_hidden2 = 8;
  o.mlp_hidden = {32, 16};
  auto m_or = Dien<double>::Create(o);
  ASSERT_TRUE(m_or.ok());
  Dien<double>& m = **m_or;
  const int64_t B = 64, T = 6, D = 4, NI = 12, NC = 1;
  Rng rng(99);
  std::vector<double> items(NI * D), cats(NC * D);
  FillUniform(items, rng, -0.5, 0.5);
  FillUniform(cats, rng, -0.5, 0.5);
  // Histories walk the item ring (i, i+1, ...); the positive target continues the walk.
  auto make = [&](std::vector<int32_t>* len, std::vector<int64_t>* ii, std::vector<int64_t>* ci,
                  std::vector<double>* labels) {
    len->resize(B);
    ii->assign(2 * B * T + B, 0);
    ci->assign(2 * B * T + B, 0);
    labels->resize(B);
    for (int64_t b = 0; b < B; ++b) {
      const int32_t l = static_cast<int32_t>(2 + rng.UniformInt(T - 1));
      (*len)[b] = l;
      const int64_t start = static_cast<int64_t>(rng.UniformInt(NI));
      for (int64_t t = 0; t < l; ++t) (*ii)[b * T + (T - l) + t] = (start + t) % NI;
      const bool pos = rng.UniformInt(2) == 1;
      (*labels)[b] = pos ? 1.0 : 0.0;
      (*ii)[B * T + b] = pos ? (start + l) % NI : (start + l + 1 + rng.UniformInt(NI - 1)) % NI;
      for (int64_t t = 0; t < T; ++t)
        (*ii)[B * T + B + b * T + t] = static_cast<int64_t>(rng.UniformInt(NI));
    }
  };
  kernels::Context ctx;
  std::vector<double> gi(items.size()), gc(cats.size());
  double first_click = 0, last_click = 0, first_aux = 0, last_aux = 0;
  // Adam (betas 0.9 / 0.999) as the peer trains; moments per parameter array.
  struct Moments {
    std::vector<double> m, v;
  } adam_dense, adam_items, adam_cats;
  auto adam = [](double* w, const double* g, int64_t n, Moments* s, int step) {
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    s->m.resize(n, 0.0);
    s->v.resize(n, 0.0);
    const double c1 = 1 - std::pow(b1, step + 1), c2 = 1 - std::pow(b2, step + 1);
    for (int64_t i = 0; i < n; ++i) {
      s->m[i] = b1 * s->m[i] + (1 - b1) * g[i];
      s->v[i] = b2 * s->v[i] + (1 - b2) * g[i] * g[i];
      w[i] -= lr * (s->m[i] / c1) / (std::sqrt(s->v[i] / c2) + eps);
    }
  };
  const int steps = 300;
  for (int step = 0; step < steps; ++step) {
    std::vector<int32_t> len;
    std::vector<int64_t> ii, ci;
    std::vector<double> labels;
    make(&len, &ii, &ci, &labels);
    CtrInputs<double> in;
    in.batch = B;
    in.lengths = len.data();
    in.item_index = ii.data();
    in.cat_index = ci.data();
    in.item_rows = items.data();
    in.num_item_rows = NI;
    in.cat_rows = cats.data();
    in.num_cat_rows = NC;
    in.labels = labels.data();
    double loss = 0;
    ASSERT_OK(m.Forward(ctx, in, true, &loss));
    if (step < 20) {
      first_click += m.click_loss() / 20;
      first_aux += m.aux_loss() / 20;
    }
    if (step >= steps - 20) {
      last_click += m.click_loss() / 20;
      last_aux += m.aux_loss() / 20;
    }
    ASSERT_OK(m.Backward(ctx, in, gi.data(), gc.data()));
    adam(m.params().values(), m.params().grads(), m.params().size(), &adam_dense, step);
    adam(items.data(), gi.data(), static_cast<int64_t>(items.size()), &adam_items, step);
    adam(cats.data(), gc.data(), static_cast<int64_t>(cats.size()), &adam_cats, step);
  }
  EXPECT_GT(first_click, 0.6);
  EXPECT_LT(last_click, 0.35) << "first " << first_click;
  EXPECT_LT(last_aux, 0.8 * first_aux);
}

// ---- Devices ------------------------------------------------------------------------------------

// The device is the model's: a CPU model refuses a CUDA Context, double never runs on CUDA, and a
// CUDA model needs CUDA in the build (tests/models/dien_gpu_test.cc runs it where there is a GPU).
TEST(DienDevice, ContextMustMatchAndCudaIsFloatOnly) {
  const SmallBatch b({5, 1, 3, 0});
  testing_util::ExpectTheDeviceIsTheModels<Dien>(
      SmallOptions(DienCell::kGru, MlpActivation::kPrelu), b.Inputs(), "Dien");
}

std::vector<double> DienExtras(CtrModel<double>& m) {
  auto& d = dynamic_cast<Dien<double>&>(m);
  return {d.click_loss(), d.aux_loss(), static_cast<double>(d.aux_pairs())};
}

// stage_on_cpu runs the CUDA path (staged inputs, mirrored weights and gradients, Dice
// statistics, losses and logits copied back, the per-batch ops of models/dien_ops.h, the
// auxiliary MLP layer by layer through kernels/) with the CPU kernels. Its auxiliary MLP sums in
// another order than the plain model's fused tiles, so in float64 every output tensor must agree
// to a relative L2 error of 1e-10 (rounding, not a formula difference): losses, logits, every
// dense gradient, every row gradient, Dice statistics and inference logits after the host
// weights changed; GRU and LSTM, PReLU and Dice, auxiliary loss and attention on and off,
// lengths 0, 1 and max in every batch.
TEST(DienDevice, StagedMatchesPlainCpuToRoundoff) {
  constexpr double kMaxRelL2 = 1e-10;
  for (DienCell cell : {DienCell::kGru, DienCell::kLstm})
    for (MlpActivation act : {MlpActivation::kPrelu, MlpActivation::kDice})
      for (bool aux_off : {false, true})
        for (bool att_off : {false, true}) {
          SCOPED_TRACE(std::string(DienCellName(cell)) + " " + MlpActivationName(act) +
                       (aux_off ? " no-aux" : " aux") + (att_off ? " no-attention" : " attention"));
          DienOptions o = SmallOptions(cell, act);
          o.aux_loss_disabled = aux_off;
          o.attention_disabled = att_off;
          auto plain = Dien<double>::Create(o);
          ASSERT_OK(plain.status());
          o.stage_on_cpu = true;
          auto staged = Dien<double>::Create(o);
          ASSERT_OK(staged.status());
          // Both start from the same perturbed weights (the initialisation does not depend on
          // the device; the perturbation is the same draw).
          Perturb((*plain)->params(), 13);
          Perturb((*staged)->params(), 13);
          const SmallBatch b1({5, 1, 0, 3}, 21), b2({0, 5, 2, 1}, 22), eval({2, 5, 3, 0}, 31);
          testing_util::ExpectStagedCloseToPlain(**plain, **staged, {b1.Inputs(), b2.Inputs()},
                                                 eval.Inputs(), kMaxRelL2, DienExtras);
        }
}

// A larger batch (hundreds of auxiliary pairs, several fused tiles and parts on the plain side,
// a thread pool on both): staged against plain within the same bound.
TEST(DienDevice, StagedMatchesPlainCpu_B24_T12_ManyPairs) {
  DienOptions o = SmallOptions(DienCell::kLstm, MlpActivation::kDice);
  o.max_len = 12;
  o.max_batch = 24;
  auto plain = Dien<double>::Create(o);
  ASSERT_OK(plain.status());
  o.stage_on_cpu = true;
  auto staged = Dien<double>::Create(o);
  ASSERT_OK(staged.status());
  Perturb((*plain)->params(), 5);
  Perturb((*staged)->params(), 5);
  const ManyPairsBatch batch(/*with_short_rows=*/true);
  const CtrInputs<double> in = batch.Inputs();
  const std::vector<double>&items = batch.item_rows, &cats = batch.cat_rows;
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = &pool;
  double loss[2];
  std::vector<double> gi[2], gc[2], dense[2];
  int k = 0;
  for (Dien<double>* m : {plain->get(), staged->get()}) {
    ASSERT_OK(m->Forward(ctx, in, true, &loss[k]));
    ASSERT_GT(m->aux_pairs(), 4 * 32);
    gi[k].assign(items.size(), std::nan(""));
    gc[k].assign(cats.size(), std::nan(""));
    ASSERT_OK(m->Backward(ctx, in, gi[k].data(), gc[k].data()));
    dense[k].assign(m->params().grads(), m->params().grads() + m->params().size());
    ++k;
  }
  EXPECT_LE(testing::RelativeL2(&loss[1], &loss[0], 1), 1e-10);
  EXPECT_LE(testing::RelativeL2(gi[1].data(), gi[0].data(), batch.num_item_rows * kD), 1e-10);
  EXPECT_LE(testing::RelativeL2(gc[1].data(), gc[0].data(), batch.num_cat_rows * kD), 1e-10);
  for (const auto& e : (*plain)->params().entries())
    EXPECT_LE(testing::RelativeL2(dense[1].data() + e.offset, dense[0].data() + e.offset, e.size),
              1e-10)
        << e.name;
}

// ---- Parity with the peer's torch DIEN -------------------------------------------------------

std::string PeersDir() {
  const char* data = std::getenv("IPS_SHARED_DATA");
  return data != nullptr ? std::string(data) + "/../peers" : std::string();
}

// Writes the model's weights, the batch and the peer-side script, runs torch in float64 and
// compares the loss, every dense gradient and the embedding-row gradients.
TEST(DienParity, MatchesPeerTorchDienInFloat64) {
  const std::string peers = PeersDir();
  if (peers.empty() || !std::ifstream(peers + "/torch_models.py").good())
    GTEST_SKIP() << "peers/torch_models.py not found (IPS_SHARED_DATA unset or no ../shared)";
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch";

  // The peer's fixed sizes (aux 100/50, attention 80/40, MLP 200/80), small tables.
  DienOptions o;
  o.embedding_dim = kD;
  o.max_len = kT;
  o.max_batch = kB;
  o.seed = 5;
  auto m_or = Dien<double>::Create(o);
  ASSERT_TRUE(m_or.ok());
  Dien<double>& m = **m_or;
  Perturb(m.params(), 9);
  SmallBatch batch({5, 1, 3, 0}, 21);
  kernels::Context ctx;
  double loss = 0;
  ASSERT_OK(m.Forward(ctx, batch.Inputs(), true, &loss));
  std::vector<double> gi(batch.item_rows.size()), gc(batch.cat_rows.size());
  ASSERT_OK(m.Backward(ctx, batch.Inputs(), gi.data(), gc.data()));

  char dir_tmpl[] = "/tmp/dien_parity_XXXXXX";
  ASSERT_NE(mkdtemp(dir_tmpl), nullptr);
  const std::string dir = dir_tmpl;
  {
    std::ofstream f(dir + "/in.txt");
    f.precision(17);
    auto line = [&](const std::string& name, const auto& v, int64_t n) {
      f << name;
      for (int64_t i = 0; i < n; ++i) f << ' ' << v[i];
      f << '\n';
    };
    const auto& p = m.params();
    for (const auto& e : p.entries()) {
      // nn.PReLU calls its per-channel slope `weight`.
      std::string name = e.name;
      const auto at = name.rfind(".alpha");
      if (at != std::string::npos) name = name.substr(0, at) + ".weight";
      line("param:" + name, p.values() + e.offset, e.size);
    }
    line("item_rows", batch.item_rows, static_cast<int64_t>(batch.item_rows.size()));
    line("cat_rows", batch.cat_rows, static_cast<int64_t>(batch.cat_rows.size()));
    line("item_index", batch.item_index, static_cast<int64_t>(batch.item_index.size()));
    line("cat_index", batch.cat_index, static_cast<int64_t>(batch.cat_index.size()));
    line("lengths", batch.lengths, kB);
    line("labels", batch.labels, kB);
  }
  const std::string script = R"PY(
import sys
import torch
sys.path.insert(0, sys.argv[1])
import torch_models
torch.set_default_dtype(torch.float64)
B, T, D, NI, NC = 4, 5, 3, 8, 4
vals = {}
for line in open(sys.argv[2] + "/in.txt"):
    parts = line.split()
    vals[parts[0]] = [float(x) for x in parts[1:]]
# Torch item ids are our row indices + 1: the peer's item row 0 is padding (no gradient).
model = torch_models.DIEN(NI, NC, emb=D, hidden=2 * D).double()
state = model.state_dict()
with torch.no_grad():
    for k, v in vals.items():
        if k.startswith("param:"):
            name = k[len("param:"):]
            state[name].copy_(torch.tensor(v).reshape(state[name].shape))
    state["emb.item.weight"][0].zero_()
    state["emb.item.weight"][1:].copy_(torch.tensor(vals["item_rows"]).reshape(NI, D))
    state["emb.cat.weight"].copy_(torch.tensor(vals["cat_rows"]).reshape(NC, D))
model.load_state_dict(state)
ii = torch.tensor(vals["item_index"]).long() + 1
ci = torch.tensor(vals["cat_index"]).long()
b = {
    "hist_item": ii[:B * T].reshape(B, T), "hist_cat": ci[:B * T].reshape(B, T),
    "item": ii[B * T:B * T + B], "cat": ci[B * T:B * T + B],
    "neg_item": ii[B * T + B:].reshape(B, T), "neg_cat": ci[B * T + B:].reshape(B, T),
    "length": torch.tensor(vals["lengths"]).long(), "label": torch.tensor(vals["labels"]),
}
loss = model.loss(b)
loss.backward()
with open(sys.argv[2] + "/out.txt", "w") as f:
    f.write("loss %.17g\n" % loss.item())
    for name, p in model.named_parameters():
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        if name == "emb.item.weight":
            g = g[1:]
        f.write(name + " " + " ".join("%.17g" % x for x in g.reshape(-1).tolist()) + "\n")
)PY";
  { std::ofstream(dir + "/peer.py") << script; }
  const std::string cmd =
      "/usr/bin/python3 " + dir + "/peer.py " + peers + " " + dir + " > " + dir + "/log.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "peer script failed; see " << dir << "/log.txt";
  std::map<std::string, std::vector<double>> out;
  {
    std::ifstream f(dir + "/out.txt");
    std::string line;
    while (std::getline(f, line)) {
      std::istringstream ss(line);
      std::string name;
      ss >> name;
      double v;
      while (ss >> v) out[name].push_back(v);
    }
  }
  ASSERT_EQ(out.count("loss"), 1u);
  EXPECT_NEAR(loss, out["loss"][0], 1e-10 * std::max(1.0, std::fabs(loss)));
  const auto& p = m.params();
  for (const auto& e : p.entries()) {
    std::string name = e.name;
    const auto at = name.rfind(".alpha");
    if (at != std::string::npos) name = name.substr(0, at) + ".weight";
    ASSERT_EQ(out.count(name), 1u) << name;
    ASSERT_EQ(static_cast<int64_t>(out[name].size()), e.size) << name;
    EXPECT_TRUE(testing::AllClose(p.grads() + e.offset, out[name].data(), e.size, {1e-10, 1e-8}))
        << name;
  }
  EXPECT_TRUE(testing::AllClose(gi, out["emb.item.weight"], {1e-10, 1e-8})) << "item rows";
  EXPECT_TRUE(testing::AllClose(gc, out["emb.cat.weight"], {1e-10, 1e-8})) << "cat rows";
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace ips::models
