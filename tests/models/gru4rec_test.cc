// Gru4Rec: float64 finite-difference checks of the whole model's backward (every dense tensor and
// every pulled row) for GRU and LSTM cells, with and without the projection, lengths 0, 1, max and
// mixed; the loss against a hand computation from the exposed states; left padding that valid
// steps never see; user vectors; float/double agreement; input validation.
#include "models/gru4rec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/models/model_gradcheck.h"
#include "tests/models/staged_check.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips::models {
namespace {

using testing::CheckGradient;
using testing::FillUniform;

Gru4RecOptions SmallOptions(kernels::RnnCell cell, int64_t hidden) {
  Gru4RecOptions o;
  o.embedding_dim = 3;
  o.max_len = 5;
  o.max_batch = 4;
  o.hidden = hidden;
  o.cell = cell;
  o.seed = 7;
  return o;
}

// B sequences of T = 5 over a small pulled table of 7 rows. Row 0 is used ONLY at padded
// positions (as the padding key would be), so its gradient must be exactly zero; rows 1..6 are
// drawn at random at valid positions, with repeats, so the scatter-add sums several positions.
struct SmallBatch {
  int64_t B = 0, T = 5, D = 3;
  std::vector<int32_t> lengths;
  std::vector<int64_t> index;  // [3 x B x T]
  std::vector<double> rows;
  int64_t num_rows = 7;

  explicit SmallBatch(std::vector<int32_t> lens, uint64_t seed = 11)
      : B(static_cast<int64_t>(lens.size())), lengths(std::move(lens)) {
    Rng rng(seed);
    index.assign(static_cast<size_t>(3 * B * T), 0);
    for (int part = 0; part < 3; ++part)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = T - lengths[b]; t < T; ++t)
          index[part * B * T + b * T + t] = 1 + static_cast<int64_t>(rng.UniformInt(num_rows - 1));
    rows.resize(static_cast<size_t>(num_rows * D));
    FillUniform(rows, rng, -1.0, 1.0);
  }
  SeqInputs<double> Inputs() const {
    SeqInputs<double> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = index.data();
    in.item_rows = rows.data();
    in.num_item_rows = num_rows;
    return in;
  }
};

std::string CellName(kernels::RnnCell c) { return c == kernels::RnnCell::kGru ? "gru" : "lstm"; }

void GradCheck(kernels::RnnCell cell, int64_t hidden, std::vector<int32_t> lengths) {
  auto m_or = Gru4Rec<double>::Create(SmallOptions(cell, hidden));
  ASSERT_OK(m_or.status());
  Gru4Rec<double>& m = **m_or;
  SmallBatch batch(std::move(lengths));
  const SeqInputs<double> in = batch.Inputs();
  kernels::Context ctx;

  double loss = std::nan("");
  ASSERT_OK(m.Forward(ctx, in, true, &loss));
  ASSERT_TRUE(std::isfinite(loss));
  std::vector<double> d_rows(batch.rows.size());
  testing::Poison(d_rows);
  std::vector<double> dense_grad(static_cast<size_t>(m.params().size()));
  testing::Poison(dense_grad);
  std::copy(dense_grad.begin(), dense_grad.end(), m.params().grads());
  ASSERT_OK(m.Backward(ctx, in, d_rows.data()));
  dense_grad.assign(m.params().grads(), m.params().grads() + m.params().size());

  auto run = [&]() {
    double l = 0;
    EXPECT_TRUE(m.Forward(ctx, in, true, &l).ok());
    return l;
  };
  // Dense: perturb a copy and write it into the model before each forward.
  std::vector<double> dense(m.params().values(), m.params().values() + m.params().size());
  for (const auto& e : m.params().entries()) {
    std::vector<double> slice(dense.begin() + e.offset, dense.begin() + e.offset + e.size);
    const std::vector<double> g(dense_grad.begin() + e.offset,
                                dense_grad.begin() + e.offset + e.size);
    auto loss_fn = [&]() {
      std::copy(slice.begin(), slice.end(), m.params().values() + e.offset);
      return run();
    };
    EXPECT_TRUE(CheckGradient(e.name.c_str(), slice, g, loss_fn, 1e-6, 1e-6));
    std::copy(slice.begin(), slice.end(), m.params().values() + e.offset);
  }
  EXPECT_TRUE(CheckGradient("item_rows", batch.rows, d_rows, run, 1e-6, 1e-6));
  for (int64_t c = 0; c < batch.D; ++c) EXPECT_EQ(d_rows[c], 0.0) << "padding-only row 0";
}

class Gru4RecGrad : public ::testing::TestWithParam<std::tuple<kernels::RnnCell, int64_t>> {};

TEST_P(Gru4RecGrad, Mixed_B4_T5_len5_1_0_3) {
  GradCheck(std::get<0>(GetParam()), std::get<1>(GetParam()), {5, 1, 0, 3});
}
TEST_P(Gru4RecGrad, AllMax_B2_T5) {
  GradCheck(std::get<0>(GetParam()), std::get<1>(GetParam()), {5, 5});
}
TEST_P(Gru4RecGrad, AllOne_B3_T5) {
  GradCheck(std::get<0>(GetParam()), std::get<1>(GetParam()), {1, 1, 1});
}

INSTANTIATE_TEST_SUITE_P(
    Cells, Gru4RecGrad,
    ::testing::Combine(::testing::Values(kernels::RnnCell::kGru, kernels::RnnCell::kLstm),
                       ::testing::Values(int64_t{0}, int64_t{4})),
    [](const ::testing::TestParamInfo<std::tuple<kernels::RnnCell, int64_t>>& i) {
      const int64_t h = std::get<1>(i.param);
      return CellName(std::get<0>(i.param)) + (h == 0 ? "_H3_noproj" : "_H4_proj");
    });

// Every length 0: loss 0 (the masked mean divides by max(#valid, 1)) and every gradient, row and
// dense, exactly zero.
TEST(Gru4Rec, AllEmptyBatchHasZeroLossAndGradients) {
  for (auto cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
    auto m_or = Gru4Rec<double>::Create(SmallOptions(cell, 4));
    ASSERT_OK(m_or.status());
    Gru4Rec<double>& m = **m_or;
    SmallBatch batch({0, 0});
    double loss = std::nan("");
    kernels::Context ctx;
    ASSERT_OK(m.Forward(ctx, batch.Inputs(), true, &loss));
    EXPECT_EQ(loss, 0.0);
    std::vector<double> d_rows(batch.rows.size(), std::nan(""));
    ASSERT_OK(m.Backward(ctx, batch.Inputs(), d_rows.data()));
    for (double g : d_rows) EXPECT_EQ(g, 0.0);
    for (int64_t i = 0; i < m.params().size(); ++i) EXPECT_EQ(m.params().grads()[i], 0.0);
  }
}

// The loss is the peer's: sum over valid positions of softplus(-<s, pos>) + softplus(<s, neg>),
// divided by the number of valid positions; user vectors are the state at the last valid step.
TEST(Gru4Rec, LossAndUserVectorsMatchAHandComputationFromTheStates) {
  for (int64_t hidden : {int64_t{0}, int64_t{4}}) {
    auto m_or = Gru4Rec<double>::Create(SmallOptions(kernels::RnnCell::kGru, hidden));
    ASSERT_OK(m_or.status());
    Gru4Rec<double>& m = **m_or;
    SmallBatch batch({5, 1, 0, 3});
    const SeqInputs<double> in = batch.Inputs();
    kernels::Context ctx;
    double loss = 0;
    ASSERT_OK(m.Forward(ctx, in, true, &loss));
    const int64_t B = batch.B, T = batch.T, D = batch.D;
    double want = 0;
    int valid = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = T - batch.lengths[b]; t < T; ++t) {
        const double* s = m.states() + (b * T + t) * D;
        double lp = 0, ln = 0;
        for (int64_t c = 0; c < D; ++c) {
          lp += s[c] * batch.rows[batch.index[B * T + b * T + t] * D + c];
          ln += s[c] * batch.rows[batch.index[2 * B * T + b * T + t] * D + c];
        }
        want += std::log1p(std::exp(-lp)) + std::log1p(std::exp(ln));
        ++valid;
      }
    EXPECT_NEAR(loss, want / valid, 1e-12);
    for (int64_t b = 0; b < B; ++b) {
      if (batch.lengths[b] == 0) continue;
      EXPECT_TRUE(
          testing::AllClose(m.user_vectors() + b * D, m.states() + (b * T + T - 1) * D, D, {0, 0}))
          << "row " << b;
    }
    // Empty history: the state of h_0 = 0 (zeros, or the projection's bias).
    const double* u2 = m.user_vectors() + 2 * D;
    for (int64_t c = 0; c < D; ++c) {
      if (hidden == 0) {
        EXPECT_EQ(u2[c], 0.0);
      } else {
        const auto* bias = m.params().Find("proj.bias");
        ASSERT_NE(bias, nullptr);
        EXPECT_EQ(u2[c], m.params().values()[bias->offset + c]);
      }
    }
  }
}

// Padding is invisible: the same items in a row with different padding indices, and in a model
// with a shorter max_len (same seed = same weights: no tensor depends on T), give the same states
// and the same inference user vectors.
TEST(Gru4Rec, ValidStepsNeverSeePadding) {
  for (auto cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
    Gru4RecOptions o = SmallOptions(cell, 4);
    auto long_or = Gru4Rec<double>::Create(o);
    o.max_len = 3;
    auto short_or = Gru4Rec<double>::Create(o);
    ASSERT_OK(long_or.status());
    ASSERT_OK(short_or.status());
    Rng rng(3);
    std::vector<double> rows(7 * 3);
    FillUniform(rows, rng);
    // Long model: two rows holding items {4, 2, 5} with different junk at the padded steps.
    const std::vector<int64_t> long_index = {1, 6, 4, 2, 5, 3, 0, 4, 2, 5};
    const std::vector<int32_t> long_len = {3, 3};
    SeqInputs<double> in;
    in.batch = 2;
    in.lengths = long_len.data();
    in.item_index = long_index.data();
    in.item_rows = rows.data();
    in.num_item_rows = 7;
    kernels::Context ctx;
    ASSERT_OK((*long_or)->Forward(ctx, in, false, nullptr));
    std::vector<double> long_states((*long_or)->states(), (*long_or)->states() + 2 * 5 * 3);
    std::vector<double> long_users((*long_or)->user_vectors(), (*long_or)->user_vectors() + 6);

    const std::vector<int64_t> short_index = {4, 2, 5};
    const std::vector<int32_t> short_len = {3};
    in.batch = 1;
    in.lengths = short_len.data();
    in.item_index = short_index.data();
    ASSERT_OK((*short_or)->Forward(ctx, in, false, nullptr));
    for (int r = 0; r < 2; ++r) {
      EXPECT_TRUE(
          testing::AllClose(long_states.data() + (r * 5 + 2) * 3, (*short_or)->states(), 9, {0, 0}))
          << "row " << r;
      EXPECT_TRUE(
          testing::AllClose(long_users.data() + r * 3, (*short_or)->user_vectors(), 3, {0, 0}));
    }
  }
}

// The float model computes the same loss and gradients as the double one (same seed), with a
// thread pool on the float side.
TEST(Gru4Rec, FloatMatchesDouble_LSTM_proj_pool2) {
  const Gru4RecOptions o = SmallOptions(kernels::RnnCell::kLstm, 4);
  auto md = Gru4Rec<double>::Create(o);
  auto mf = Gru4Rec<float>::Create(o);
  ASSERT_OK(md.status());
  ASSERT_OK(mf.status());
  for (int64_t i = 0; i < (*md)->params().size(); ++i)
    (*mf)->params().values()[i] = static_cast<float>((*md)->params().values()[i]);
  SmallBatch batch({5, 2, 0, 4});
  for (double& v : batch.rows) v = static_cast<float>(v);  // both models read the same rows
  ThreadPool pool(2);
  kernels::Context cf;
  cf.pool = &pool;
  testing_util::ExpectFloatMatchesDouble(kernels::Context(), cf, **md, **mf, batch.Inputs());
}

TEST(Gru4Rec, DenseTensorsAreTorchNamedAndSized) {
  auto m = Gru4Rec<float>::Create(SmallOptions(kernels::RnnCell::kGru, 4));
  ASSERT_OK(m.status());
  const auto& p = (*m)->params();
  ASSERT_EQ(p.entries().size(), 6u);
  EXPECT_EQ(p.entries()[0].name, "gru.weight_ih_l0");
  EXPECT_EQ(p.entries()[0].size, 3 * 4 * 3);
  EXPECT_EQ(p.entries()[1].size, 3 * 4 * 4);
  EXPECT_EQ(p.entries()[4].name, "proj.weight");
  EXPECT_EQ(p.entries()[5].size, 3);
  // torch's bound 1/sqrt(H) = 0.5 for the cell.
  for (int64_t i = 0; i < p.entries()[3].offset + p.entries()[3].size; ++i)
    EXPECT_LE(std::fabs(p.values()[i]), 0.5f);
  auto lstm = Gru4Rec<float>::Create(SmallOptions(kernels::RnnCell::kLstm, 0));
  ASSERT_OK(lstm.status());
  EXPECT_EQ((*lstm)->params().entries().size(), 4u);
  EXPECT_EQ((*lstm)->params().entries()[0].name, "lstm.weight_ih_l0");
  EXPECT_EQ((*lstm)->params().entries()[0].size, 4 * 3 * 3);
  EXPECT_FALSE((*lstm)->has_projection());
}

TEST(Gru4Rec, RejectsBadOptionsAndInputs) {
  Gru4RecOptions o = SmallOptions(kernels::RnnCell::kGru, 0);
  o.embedding_dim = 0;
  EXPECT_EQ(Gru4Rec<float>::Create(o).status().code(), StatusCode::kInvalidArgument);
  o = SmallOptions(kernels::RnnCell::kAugru, 0);
  EXPECT_EQ(Gru4Rec<float>::Create(o).status().code(), StatusCode::kInvalidArgument);
  o = SmallOptions(kernels::RnnCell::kGru, -1);
  EXPECT_EQ(Gru4Rec<float>::Create(o).status().code(), StatusCode::kInvalidArgument);

  auto m_or = Gru4Rec<double>::Create(SmallOptions(kernels::RnnCell::kGru, 0));
  ASSERT_OK(m_or.status());
  Gru4Rec<double>& m = **m_or;
  kernels::Context ctx;
  SmallBatch batch({5, 1, 0, 3});
  std::vector<double> d(batch.rows.size());
  // Backward before any training forward.
  EXPECT_EQ(m.Backward(ctx, batch.Inputs(), d.data()).code(), StatusCode::kFailedPrecondition);
  double loss = 0;
  SeqInputs<double> in = batch.Inputs();
  in.batch = 0;
  EXPECT_EQ(m.Forward(ctx, in, true, &loss).code(), StatusCode::kInvalidArgument);
  in.batch = 5;
  EXPECT_EQ(m.Forward(ctx, in, true, &loss).code(), StatusCode::kInvalidArgument);
  in = batch.Inputs();
  in.item_rows = nullptr;
  EXPECT_EQ(m.Forward(ctx, in, true, &loss).code(), StatusCode::kInvalidArgument);
  batch.lengths[1] = 6;
  Status s = m.Forward(ctx, batch.Inputs(), true, &loss);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("lengths[1]"), std::string::npos) << s.ToString();
  batch.lengths[1] = 1;
  batch.index[2 * 4 * 5 + 7] = 7;  // a negative's index past the 7 rows
  s = m.Forward(ctx, batch.Inputs(), true, &loss);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("item_index[47]"), std::string::npos) << s.ToString();
  // Inference reads only the sequence part: the bad negative does not matter there.
  ASSERT_OK(m.Forward(ctx, batch.Inputs(), false, nullptr));
  // A failed or inference forward leaves nothing for Backward.
  EXPECT_EQ(m.Backward(ctx, batch.Inputs(), d.data()).code(), StatusCode::kFailedPrecondition);
  batch.index[2 * 4 * 5 + 7] = 1;
  ASSERT_OK(m.Forward(ctx, batch.Inputs(), true, &loss));
  EXPECT_EQ(m.Backward(ctx, batch.Inputs(), nullptr).code(), StatusCode::kInvalidArgument);
  SeqInputs<double> smaller = batch.Inputs();
  smaller.batch = 3;
  EXPECT_EQ(m.Backward(ctx, smaller, d.data()).code(), StatusCode::kFailedPrecondition);
}

// The device is the model's: a CPU model refuses a CUDA Context, and double never runs on CUDA.
TEST(Gru4RecDevice, ContextMustMatchAndCudaIsFloatOnly) {
  const SmallBatch batch({5, 1, 0, 3});
  testing_util::ExpectTheDeviceIsTheModels<Gru4Rec>(SmallOptions(kernels::RnnCell::kGru, 0),
                                                    batch.Inputs(), "Gru4Rec");
}

// stage_on_cpu takes the CUDA path's copies (inputs staged into the model's own buffers, weights
// uploaded, the loss, user vectors, row and dense gradients copied back) with the CPU kernels:
// everything must be bitwise the plain model's, over two rounds with a weight update between
// them (the upload must see it) and an inference forward after.
TEST(Gru4RecDevice, StagedCopiesGiveBitwiseThePlainCpuResults) {
  for (kernels::RnnCell cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
    for (int64_t hidden : {int64_t{0}, int64_t{5}}) {
      SCOPED_TRACE(CellName(cell) + " hidden " + std::to_string(hidden));
      auto plain_or = Gru4Rec<double>::Create(SmallOptions(cell, hidden));
      Gru4RecOptions staged_options = SmallOptions(cell, hidden);
      staged_options.stage_on_cpu = true;
      auto staged_or = Gru4Rec<double>::Create(staged_options);
      ASSERT_OK(plain_or.status());
      ASSERT_OK(staged_or.status());
      Gru4Rec<double>* models[2] = {plain_or->get(), staged_or->get()};
      const kernels::Context ctx;
      const SmallBatch batches[2] = {SmallBatch({5, 1, 0, 3}, 21), SmallBatch({2, 5}, 22)};
      for (int round = 0; round < 2; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        const SeqInputs<double> in = batches[round].Inputs();
        double loss[2];
        std::vector<double> users[2], grads[2], d_rows[2];
        for (int k = 0; k < 2; ++k) {
          ASSERT_OK(models[k]->Forward(ctx, in, true, &loss[k]));
          users[k].assign(models[k]->user_vectors(), models[k]->user_vectors() + in.batch * 3);
          d_rows[k].assign(batches[round].rows.size(), std::nan(""));
          ASSERT_OK(models[k]->Backward(ctx, in, d_rows[k].data()));
          DenseParams<double>& p = models[k]->params();
          grads[k].assign(p.grads(), p.grads() + p.size());
          // What the dense optimizer does between steps: the next round must see it.
          for (int64_t i = 0; i < p.size(); ++i) p.values()[i] -= 0.1 * p.grads()[i];
        }
        EXPECT_EQ(loss[0], loss[1]);
        EXPECT_EQ(users[0], users[1]);
        EXPECT_EQ(grads[0], grads[1]);
        EXPECT_EQ(d_rows[0], d_rows[1]);
        EXPECT_NE(loss[0], 0.0);
      }
      // Inference: the sequence part only.
      SmallBatch eval({3, 5, 0}, 23);
      std::vector<double> users[2];
      for (int k = 0; k < 2; ++k) {
        ASSERT_OK(models[k]->Forward(ctx, eval.Inputs(), false, nullptr));
        users[k].assign(models[k]->user_vectors(), models[k]->user_vectors() + eval.B * 3);
      }
      EXPECT_EQ(users[0], users[1]);
    }
  }
}

}  // namespace
}  // namespace ips::models
