// DinServing (models/din_serving.h): its logits equal Din<float>::Forward(training = false) on a
// batch whose rows all share one left-padded history (max abs diff <= 1e-5, no relative slack),
// on fresh random weights (PReLU alphas included) and embeddings, for history lengths 0, 1, odd
// and max, candidate counts that are not multiples of its blocks (both AVX-512 attention
// layouts), zero ("padded": unknown key) candidate rows, raw and softmax attention, the
// launch/configs shapes, hidden sizes that are not multiples of 16 or of the lane kernels' tiles,
// saturated attention units and an MLP without hidden layers; on both code paths (portable,
// AVX-512 when the CPU has it). Plus the configurations it refuses (Dice, attention_disabled) and
// bad inputs.
#include "models/din_serving.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"

namespace ips::models {
namespace {

using testing::AllClose;
using testing::Poison;
using testing::Tolerance;

constexpr Tolerance kExact{1e-5, 0.0};

DinOptions ServeOptions() {
  DinOptions o;
  o.embedding_dim = 18;
  o.max_len = 50;
  o.max_batch = 128;
  o.attention_hidden1 = 80;
  o.attention_hidden2 = 40;
  o.mlp_hidden = {200, 80};
  o.activation = MlpActivation::kPrelu;
  o.seed = 3;
  return o;
}

std::unique_ptr<Din<float>> RandomDin(const DinOptions& o, uint64_t seed) {
  auto m = std::move(Din<float>::Create(o)).value();
  // Fresh weights, not the init: alphas away from 0.25 and biases away from 0.
  Rng rng(seed);
  DenseParams<float>& p = m->params();
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] = static_cast<float>(0.1 * rng.Normal());
  return m;
}

// The model's generic inference forward on n rows sharing `history` ([len x E]).
std::vector<float> GenericLogits(Din<float>* m, const std::vector<float>& history, int64_t len,
                                 const std::vector<float>& cand, int64_t n) {
  const int64_t T = m->max_len(), D = m->embedding_dim(), E = 2 * D;
  // Row tables: row 0 = zeros (padding), rows 1..len the history, then the candidates.
  std::vector<float> item_rows((1 + len + n) * D), cat_rows((1 + len + n) * D);
  std::fill(item_rows.begin(), item_rows.begin() + D, 0.0f);
  std::fill(cat_rows.begin(), cat_rows.begin() + D, 0.0f);
  auto split = [&](const float* behaviour, int64_t row) {
    std::copy(behaviour, behaviour + D, item_rows.begin() + row * D);
    std::copy(behaviour + D, behaviour + E, cat_rows.begin() + row * D);
  };
  for (int64_t t = 0; t < len; ++t) split(history.data() + t * E, 1 + t);
  for (int64_t b = 0; b < n; ++b) split(cand.data() + b * E, 1 + len + b);
  std::vector<int64_t> index(n * T + n, 0);
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t t = 0; t < len; ++t) index[b * T + (T - len) + t] = 1 + t;
    index[n * T + b] = 1 + len + b;
  }
  std::vector<int32_t> lengths(n, static_cast<int32_t>(len));
  CtrInputs<float> in;
  in.batch = n;
  in.lengths = lengths.data();
  in.item_index = index.data();
  in.cat_index = index.data();
  in.item_rows = item_rows.data();
  in.num_item_rows = 1 + len + n;
  in.cat_rows = cat_rows.data();
  in.num_cat_rows = 1 + len + n;
  kernels::Context ctx;
  EXPECT_OK(m->Forward(ctx, in, /*training=*/false, nullptr));
  return std::vector<float>(m->logits(), m->logits() + n);
}

std::vector<DinServing::Isa> Isas() {
  std::vector<DinServing::Isa> isas = {DinServing::Isa::kPortable};
  if (DinServing::CpuHasAvx512()) isas.push_back(DinServing::Isa::kAvx512);
  return isas;
}

// Scores (len, n) pairs with every code path and compares with the generic forward.
void ExpectMatchesForward(const DinOptions& o, const std::vector<int64_t>& lens,
                          const std::vector<int64_t>& counts, uint64_t seed) {
  auto model = RandomDin(o, seed);
  const int64_t E = 2 * o.embedding_dim;
  Rng rng(seed + 100);
  for (DinServing::Isa isa : Isas()) {
    auto created = DinServing::Create(*model, isa);
    ASSERT_OK(created.status());
    std::unique_ptr<DinServing> fast = std::move(created).value();
    for (int64_t len : lens) {
      for (int64_t n : counts) {
        SCOPED_TRACE("isa " + std::string(fast->isa_name()) + " len " + std::to_string(len) +
                     " candidates " + std::to_string(n));
        std::vector<float> history(len * E), cand(n * E);
        for (float& v : history) v = static_cast<float>(0.3 * rng.Normal());
        for (float& v : cand) v = static_cast<float>(0.3 * rng.Normal());
        // Every 7th candidate is padded (an unknown key reads as a zero row).
        for (int64_t b = 3; b < n; b += 7)
          std::fill(cand.begin() + b * E, cand.begin() + (b + 1) * E, 0.0f);
        const std::vector<float> want = GenericLogits(model.get(), history, len, cand, n);
        std::vector<float> got(n);
        Poison(got);
        ASSERT_OK(fast->Score(history.data(), len, cand.data(), n, got.data()));
        EXPECT_TRUE(AllClose(got, want, kExact));
      }
    }
  }
}

// Candidate counts: blocks of 16 on the AVX-512 lane kernels, last blocks of 1, 4 and 12 on its
// row tiles, of 13 (the smallest on the lanes) and 14 on lanes with idle lanes; odd history
// lengths end with a lane group of one step.
TEST(DinServing, MatchesForward_Paper_E36_H80x40_Mlp200x80_len0_1_13_50) {
  ExpectMatchesForward(ServeOptions(), {0, 1, 13, 50}, {1, 12, 14, 17, 29, 100}, 1);
}

TEST(DinServing, MatchesForward_Softmax_len0_1_50) {
  DinOptions o = ServeOptions();
  o.attention_softmax = true;
  ExpectMatchesForward(o, {0, 1, 50}, {5, 14, 33}, 2);
}

// launch/configs/din_stream.pbtxt's attention 16/8; odd widths everywhere else.
TEST(DinServing, MatchesForward_OddShapes_E10_H16x8_Mlp30) {
  DinOptions o = ServeOptions();
  o.embedding_dim = 5;
  o.max_len = 9;
  o.attention_hidden1 = 16;
  o.attention_hidden2 = 8;
  o.mlp_hidden = {30};
  ExpectMatchesForward(o, {0, 1, 4, 9}, {1, 16, 19, 29}, 3);
  o.attention_hidden1 = 97;
  o.attention_hidden2 = 33;
  o.mlp_hidden = {17, 90, 3};
  ExpectMatchesForward(o, {0, 1, 9}, {2, 40}, 4);
}

// Attention pre-activations far past sigmoid's saturation (|x| in the hundreds, beyond where
// 2^(-x log2 e) overflows a float): weights exactly 0 or 1, no NaN or inf, logits still equal.
TEST(DinServing, MatchesForward_SaturatedAttentionUnits) {
  DinOptions o = ServeOptions();
  o.max_len = 20;
  auto model = RandomDin(o, 9);
  DenseParams<float>& p = model->params();
  for (const char* name : {"attn.net.0.bias", "attn.net.2.bias"}) {
    const DenseParams<float>::Entry* e = p.Find(name);
    ASSERT_NE(e, nullptr) << name;
    float* b = p.values() + e->offset;
    for (int64_t i = 0; i < e->size; ++i) b[i] = i % 3 == 0 ? 300.0f : i % 3 == 1 ? -300.0f : b[i];
  }
  const int64_t E = 2 * o.embedding_dim, len = 20, n = 21;
  Rng rng(109);
  std::vector<float> history(len * E), cand(n * E);
  for (float& v : history) v = static_cast<float>(0.3 * rng.Normal());
  for (float& v : cand) v = static_cast<float>(0.3 * rng.Normal());
  const std::vector<float> want = GenericLogits(model.get(), history, len, cand, n);
  for (DinServing::Isa isa : Isas()) {
    auto created = DinServing::Create(*model, isa);
    ASSERT_OK(created.status());
    std::vector<float> got(n);
    Poison(got);
    ASSERT_OK((*created)->Score(history.data(), len, cand.data(), n, got.data()));
    EXPECT_TRUE(AllClose(got, want, kExact)) << (*created)->isa_name();
  }
}

TEST(DinServing, MatchesForward_NoHiddenMlp) {
  DinOptions o = ServeOptions();
  o.max_len = 6;
  o.mlp_hidden = {};
  ExpectMatchesForward(o, {0, 1, 6}, {1, 20}, 5);
}

TEST(DinServing, RefusesUncoveredConfigs) {
  DinOptions o = ServeOptions();
  o.activation = MlpActivation::kDice;
  auto dice = RandomDin(o, 6);
  EXPECT_EQ(DinServing::Create(*dice).status().code(), StatusCode::kUnimplemented);
  o = ServeOptions();
  o.attention_disabled = true;
  auto off = RandomDin(o, 7);
  EXPECT_EQ(DinServing::Create(*off).status().code(), StatusCode::kUnimplemented);
}

TEST(DinServing, RejectsBadInputs) {
  auto model = RandomDin(ServeOptions(), 8);
  auto created = DinServing::Create(*model);
  ASSERT_OK(created.status());
  std::unique_ptr<DinServing> fast = std::move(created).value();
  std::vector<float> history(51 * 36, 0.1f), cand(36, 0.1f);
  float logit = 0;
  EXPECT_EQ(fast->Score(history.data(), 51, cand.data(), 1, &logit).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(fast->Score(history.data(), -1, cand.data(), 1, &logit).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(fast->Score(nullptr, 3, cand.data(), 1, &logit).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fast->Score(history.data(), 3, nullptr, 1, &logit).code(),
            StatusCode::kInvalidArgument);
  EXPECT_OK(fast->Score(history.data(), 3, nullptr, 0, nullptr));
}

}  // namespace
}  // namespace ips::models
