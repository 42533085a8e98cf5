// The serving Scorer's DIN fast path (worker/serving.h with models/din_serving.h) end to end: a
// bundle exported from a checkpoint of a PReLU DIN scores through the fast path, and its scores
// equal the generic Forward path's (the same bundle with fast_path = false; max abs diff <= 1e-5)
// for histories of length 0, 1, max_len and longer (truncated), candidates the tables never saw
// (zero rows), more candidates than max_batch (the generic path's chunking), categories sent or
// filled in from the bundle's map, fp32 and fp16 bundles; both paths count the history entries
// beyond max_history and rank candidates for top_n. A Dice DIN keeps the generic path.
// The serving loop's buffers: HandleLine into a reused string answers what a fresh server
// answers, line after line (good and bad lines mixed: nothing of a request leaks into the
// next), and, once warm, neither it nor Scorer::Score allocates (a ranked request, a truncated
// history included). Bundle::Rows equals Row.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/allocation_counter.h"
#include "common/random.h"
#include "ps/checkpoint_io.h"
#include "tests/testing/tolerance.h"
#include "worker/serving.h"
#include "worker/serving_fixture.h"
#include "worker/synthetic_batches.h"

namespace ips {
namespace {

constexpr int64_t kItems = 300, kCats = 20;

std::string Config(const char* activation) {
  return std::string(R"(
version: 1
name: "din_serving_scorer_test"
data { batch_size: 128 max_history: 10 synthetic { num_items: 350 num_categories: 20 } }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: )") +
         activation + R"( }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
train { seed: 3 }
)";
}

// A bundle of a "trained" model: random dense weights, tables (keys 1..kItems and 1..kCats)
// initialised N(0, 0.5^2).
std::shared_ptr<const Bundle> ExportRandom(const std::string& dir, const std::string& config,
                                           bool fp16, uint64_t seed) {
  ps::TableOptions table;
  table.initializer.type = ps::InitializerOptions::Type::kNormal;
  table.initializer.stddev = 0.5;
  table.seed = seed;
  auto state = MakeServingState(config, 128, {kItems, kCats}, table, 0.3, seed);
  EXPECT_TRUE(state.ok()) << state.status();
  if (!state.ok()) return nullptr;
  auto bundle = ExportServingBundle(**state, dir, 1, fp16);
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  return bundle.ok() ? *bundle : nullptr;
}

// history_padding: whether the history may hold the padding key 0 (a Scorer call may; a JSON
// request may not, as its history 0 is an error).
ScoreRequest RandomRequest(Rng& rng, int history, int candidates, bool cats,
                           bool history_padding = true) {
  ScoreRequest q;
  // Keys up to kItems + 50: some were never pulled (zero rows); key 0 is the padding key, which a
  // history may hold but a candidate may not (a JSON request's candidate 0 is an error).
  for (int i = 0; i < history; ++i)
    q.history.push_back(history_padding ? rng.UniformInt(kItems + 50)
                                        : 1 + rng.UniformInt(kItems + 49));
  for (int i = 0; i < candidates; ++i) q.candidates.push_back(1 + rng.UniformInt(kItems + 49));
  if (cats) {
    for (uint64_t h : q.history) q.history_cats.push_back(SyntheticCategory(h, kCats));
    for (uint64_t c : q.candidates) q.candidate_cats.push_back(SyntheticCategory(c, kCats));
  }
  return q;
}

// r ranks q's candidates (q.top_n >= 0): items/item_scores are the top_n of (candidates, scores),
// best first, ties in request order.
void ExpectTopCandidates(const ScoreRequest& q, const ScoreResponse& r) {
  ASSERT_EQ(r.scores.size(), q.candidates.size());
  std::vector<size_t> order(r.scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return r.scores[a] > r.scores[b]; });
  const size_t k = std::min(static_cast<size_t>(q.top_n), order.size());
  ASSERT_EQ(r.items.size(), k);
  ASSERT_EQ(r.item_scores.size(), k);
  for (size_t i = 0; i < k; ++i) {
    EXPECT_EQ(r.items[i], q.candidates[order[i]]) << "rank " << i;
    EXPECT_EQ(r.item_scores[i], r.scores[order[i]]) << "rank " << i;
  }
}

class DinServingScorer : public ::testing::TestWithParam<bool> {};  // fp16 bundle?

TEST_P(DinServingScorer, FastPathEqualsGenericForward_Len0_1_Max_Longer_UnknownKeys_Chunks) {
  char tmpl[] = "/tmp/ips_din_serving_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto bundle = ExportRandom(dir, Config("PRELU"), GetParam(), 5);
  ASSERT_NE(bundle, nullptr);
  auto fast = Scorer::Create(bundle, 16);
  auto generic = Scorer::Create(bundle, 16, /*fast_path=*/false);
  ASSERT_TRUE(fast.ok()) << fast.status();
  ASSERT_TRUE(generic.ok()) << generic.status();
  // The fast path serves on AVX-512 CPUs only (elsewhere both scorers run the Forward).
  EXPECT_EQ((*fast)->scoring_path(),
            models::DinServing::CpuHasAvx512() ? "din_serving/avx512" : "forward");
  EXPECT_EQ((*generic)->scoring_path(), "forward");
  Rng rng(7);
  for (int history : {0, 1, 10, 14}) {
    for (int candidates : {1, 37}) {
      for (bool cats : {true, false}) {
        SCOPED_TRACE("history " + std::to_string(history) + " candidates " +
                     std::to_string(candidates) + (cats ? " with" : " without") + " categories");
        const ScoreRequest q = RandomRequest(rng, history, candidates, cats);
        ScoreResponse got, want;
        got.scores.assign(3, NAN);  // stale content must be replaced
        ASSERT_TRUE((*fast)->Score(q, &got).ok());
        ASSERT_TRUE((*generic)->Score(q, &want).ok());
        EXPECT_TRUE(testing::AllClose(got.scores, want.scores, {1e-5, 0.0}));
        // The newest max_history (10) entries are scored, the rest counted, on both paths.
        EXPECT_EQ(got.history_used, std::min(history, 10));
        EXPECT_EQ(got.history_dropped, std::max(history - 10, 0));
        EXPECT_EQ(want.history_dropped, got.history_dropped);
        // top_n of the candidates: each path ranks by its own logits.
        ScoreRequest ranked = q;
        ranked.top_n = 5;
        ASSERT_TRUE((*fast)->Score(ranked, &got).ok());
        ASSERT_TRUE((*generic)->Score(ranked, &want).ok());
        ExpectTopCandidates(ranked, got);
        ExpectTopCandidates(ranked, want);
        EXPECT_TRUE(testing::AllClose(got.item_scores, want.item_scores, {1e-5, 0.0}));
      }
    }
  }
  ps::RemoveTree(dir);
}

INSTANTIATE_TEST_SUITE_P(Bundles, DinServingScorer, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "Fp16" : "Fp32");
                         });

TEST(DinServingScorerPaths, DiceDinKeepsTheGenericForward) {
  char tmpl[] = "/tmp/ips_din_serving_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto bundle = ExportRandom(dir, Config("DICE"), false, 6);
  ASSERT_NE(bundle, nullptr);
  auto scorer = Scorer::Create(bundle);
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  EXPECT_EQ((*scorer)->scoring_path(), "forward");
  Rng rng(8);
  ScoreResponse got;
  ASSERT_TRUE((*scorer)->Score(RandomRequest(rng, 5, 3, true), &got).ok());
  EXPECT_EQ(got.scores.size(), 3u);
  ps::RemoveTree(dir);
}

// Bundle::Rows (the batched lookup the fast path gathers with) answers what Row answers, for
// known, unknown and padding keys, and nothing for an unknown table.
TEST(DinServingScorerPaths, BundleRowsEqualsRow) {
  char tmpl[] = "/tmp/ips_din_serving_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto bundle = ExportRandom(dir, Config("PRELU"), false, 11);
  ASSERT_NE(bundle, nullptr);
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < kItems + 60; ++k) keys.push_back((k * 7919) % (kItems + 60));
  keys.push_back(UINT64_MAX);
  std::vector<const float*> rows(keys.size(), nullptr);
  int64_t found = 0;
  for (const char* table : {"item", "category", "no_such_table"}) {
    SCOPED_TRACE(table);
    std::fill(rows.begin(), rows.end(), reinterpret_cast<const float*>(&keys));  // poison
    bundle->Rows(table, keys.data(), static_cast<int64_t>(keys.size()), rows.data());
    for (size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(rows[i], bundle->Row(table, keys[i])) << "key " << keys[i];
      found += rows[i] != nullptr;
    }
  }
  EXPECT_EQ(found, bundle->rows("item") + bundle->rows("category"));
  EXPECT_EQ(bundle->rows("item"), kItems);
  ps::RemoveTree(dir);
}

TEST(DinServingScorerPaths, ReusedBuffersAnswerAsFresh_AndAllocateNothingOnceWarm) {
  char tmpl[] = "/tmp/ips_din_serving_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto bundle = ExportRandom(dir, Config("PRELU"), false, 9);
  ASSERT_NE(bundle, nullptr);
  auto reused = BundleServer::Create(dir + "/bundle", 60000, 16);
  ASSERT_TRUE(reused.ok()) << reused.status();
  Rng rng(10);
  const ScoreRequest big = RandomRequest(rng, 14, 37, true, false);  // history truncated to 10
  ScoreRequest big_top5 = big;
  big_top5.top_n = 5;
  const std::vector<std::string> lines = {
      ScoreRequestLine("1", big),
      ScoreRequestLine("2",
                       RandomRequest(rng, 5, 3, false, false)),  // categories from the bundle's map
      R"({"user":5,"history":[1,2],"history_cats":[1],"candidates":[3]})",  // length mismatch
      ScoreRequestLine("\"u3\"", RandomRequest(rng, 3, 5, true, false)),
      R"({"user":4,"history":[1],"history":[2],"candidates":[3]})",  // duplicate field
      R"({"history":[],"history_cats":[],"candidates":[7],"candidate_cats":[1]})",
      ScoreRequestLine("6", RandomRequest(rng, 0, 1, true, false)),
      ScoreRequestLine("1", big),
      ScoreRequestLine("7", big_top5),  // the top 5 of big's candidates
  };
  std::string out = "stale";
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE("line " + std::to_string(i + 1) + ": " + lines[i]);
    auto fresh = BundleServer::Create(dir + "/bundle", 60000, 16);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    bool ok_fresh = false, ok_reused = !ok_fresh;
    const std::string want = (*fresh)->HandleLine(int64_t(i + 1), lines[i], &ok_fresh);
    (*reused)->HandleLine(int64_t(i + 1), lines[i], &ok_reused, &out);
    EXPECT_EQ(out, want);
    EXPECT_EQ(ok_reused, ok_fresh);
    EXPECT_EQ(ok_fresh, i != 2 && i != 4) << want;
  }
  // Warm (the buffers have grown to `big`): a request allocates nothing, as a line or a call.
  if (!models::DinServing::CpuHasAvx512()) {
    ps::RemoveTree(dir);
    GTEST_SKIP() << "no AVX-512: the Forward serves, and its allocations are not checked";
  }
  bool ok = false;
  int64_t before = HeapAllocations();
  (*reused)->HandleLine(8, lines[0], &ok, &out);
  EXPECT_EQ(HeapAllocations() - before, 0);
  EXPECT_TRUE(ok) << out;
  EXPECT_NE(out.find(R"("history_dropped":4})"), std::string::npos) << out;
  before = HeapAllocations();
  (*reused)->HandleLine(9, lines.back(), &ok, &out);  // ranked (warm: it ran above)
  EXPECT_EQ(HeapAllocations() - before, 0);
  EXPECT_TRUE(ok) << out;
  EXPECT_NE(out.find(R"("items":[)"), std::string::npos) << out;
  auto scorer = Scorer::Create(bundle, 16);
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  ASSERT_EQ((*scorer)->scoring_path(), "din_serving/avx512");
  ScoreResponse r;
  ASSERT_TRUE((*scorer)->Score(big, &r).ok());
  before = HeapAllocations();
  ASSERT_TRUE((*scorer)->Score(big, &r).ok());
  EXPECT_EQ(HeapAllocations() - before, 0);
  EXPECT_EQ(r.scores.size(), big.candidates.size());
  ASSERT_TRUE((*scorer)->Score(big_top5, &r).ok());
  before = HeapAllocations();
  ASSERT_TRUE((*scorer)->Score(big_top5, &r).ok());
  EXPECT_EQ(HeapAllocations() - before, 0);
  EXPECT_EQ(r.items.size(), 5u);
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
