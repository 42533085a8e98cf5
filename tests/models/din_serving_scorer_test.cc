// The serving Scorer's DIN fast path (worker/serving.h with models/din_serving.h) end to end: a
// bundle exported from a checkpoint of a PReLU DIN scores through the fast path, and its scores
// equal the generic Forward path's (the same bundle with fast_path = false; max abs diff <= 1e-5)
// for histories of length 0, 1, max_len and longer (truncated), candidates the tables never saw
// (zero rows), more candidates than max_batch (the generic path's chunking), categories sent or
// filled in from the bundle's map, fp32 and fp16 bundles. A Dice DIN keeps the generic path.
// The serving loop's buffers: HandleLine into a reused string answers what a fresh server
// answers, line after line (good and bad lines mixed: nothing of a request leaks into the
// next), and, once warm, neither it nor Scorer::Score allocates. Bundle::Rows equals Row.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "common/random.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "tests/testing/tolerance.h"
#include "worker/checkpoint.h"
#include "worker/model_factory.h"
#include "worker/serving.h"
#include "worker/synthetic_batches.h"

// Heap allocations of this test binary (replaceable global operator new), for the
// no-allocation-per-request checks.
namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace
// GCC cannot tell that free() below matches the malloc() in this replacement operator new.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

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

// A bundle of a "trained" model: random dense weights, tables after random traffic.
std::shared_ptr<const Bundle> ExportRandom(const std::string& dir, const std::string& config,
                                           bool fp16, uint64_t seed) {
  auto cfg = ParseConfigText(config, "config");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  auto model = std::move(CreateCtrModel(*cfg, 128)).value();
  Rng rng(seed);
  auto& p = model->params();
  for (int64_t i = 0; i < p.size(); ++i) p.values()[i] = static_cast<float>(0.3 * rng.Normal());
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent content;
  AddModelState(model.get(), nullptr, &content);
  for (const char* name : {"item", "category"}) {
    ps::TableOptions o;
    o.name = name;
    o.dim = 4;
    o.has_padding_key = true;
    o.initializer.type = ps::InitializerOptions::Type::kNormal;
    o.initializer.stddev = 0.5;
    o.seed = seed;
    tables.push_back(std::move(ps::DynamicTable::Create(o)).value());
    const int64_t n = tables.size() == 1 ? kItems : kCats;
    std::vector<uint64_t> keys(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) keys[k] = static_cast<uint64_t>(k + 1);
    std::vector<float> rows(keys.size() * 4);
    EXPECT_TRUE(tables.back()->Pull(keys.data(), n, rows.data()).ok());
    content.tables.push_back(tables.back().get());
  }
  content.config_text = config;
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  auto w = CheckpointWriter::Create(co);
  EXPECT_TRUE(w.ok()) << w.status();
  auto info = (*w)->Write(1, content);
  EXPECT_TRUE(info.ok()) << info.status();
  ExportOptions eo;
  eo.checkpoint = info->path;
  eo.output = dir + "/bundle";
  eo.fp16 = fp16;
  auto ex = ExportBundle(eo);
  EXPECT_TRUE(ex.ok()) << ex.status();
  auto bundle = Bundle::Load(eo.output);
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  return *bundle;
}

ScoreRequest RandomRequest(Rng& rng, int history, int candidates, bool cats) {
  ScoreRequest q;
  // Keys up to kItems + 50: some were never pulled (zero rows); key 0 is the padding key.
  for (int i = 0; i < history; ++i) q.history.push_back(rng.UniformInt(kItems + 50));
  for (int i = 0; i < candidates; ++i) q.candidates.push_back(rng.UniformInt(kItems + 50));
  if (cats) {
    for (uint64_t h : q.history) q.history_cats.push_back(SyntheticCategory(h, kCats));
    for (uint64_t c : q.candidates) q.candidate_cats.push_back(SyntheticCategory(c, kCats));
  }
  return q;
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

// A request line with categories (the test bundles have no item -> category map).
std::string Line(const std::string& user, const ScoreRequest& q) {
  std::string s = "{\"user\":" + user;
  auto ids = [&](const char* name, const std::vector<uint64_t>& v) {
    s += std::string(",\"") + name + "\":[";
    for (size_t i = 0; i < v.size(); ++i) s += (i > 0 ? "," : "") + std::to_string(v[i]);
    s += "]";
  };
  ids("history", q.history);
  if (!q.history_cats.empty()) ids("history_cats", q.history_cats);
  ids("candidates", q.candidates);
  if (!q.candidate_cats.empty()) ids("candidate_cats", q.candidate_cats);
  return s + "}";
}

TEST(DinServingScorerPaths, ReusedBuffersAnswerAsFresh_AndAllocateNothingOnceWarm) {
  char tmpl[] = "/tmp/ips_din_serving_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto bundle = ExportRandom(dir, Config("PRELU"), false, 9);
  ASSERT_NE(bundle, nullptr);
  auto reused = BundleServer::Create(dir + "/bundle", 60000, 16);
  ASSERT_TRUE(reused.ok()) << reused.status();
  Rng rng(10);
  const ScoreRequest big = RandomRequest(rng, 14, 37, true);
  const std::vector<std::string> lines = {
      Line("1", big),
      Line("2", RandomRequest(rng, 5, 3, false)),  // categories from the bundle's map
      R"({"user":5,"history":[1,2],"history_cats":[1],"candidates":[3]})",  // length mismatch
      Line("\"u3\"", RandomRequest(rng, 3, 5, true)),
      R"({"user":4,"history":[1],"history":[2],"candidates":[3]})",  // duplicate field
      R"({"history":[],"history_cats":[],"candidates":[7],"candidate_cats":[1]})",
      Line("6", RandomRequest(rng, 0, 1, true)),
      Line("1", big),
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
  int64_t before = g_allocations.load();
  (*reused)->HandleLine(8, lines[0], &ok, &out);
  EXPECT_EQ(g_allocations.load() - before, 0);
  EXPECT_TRUE(ok) << out;
  auto scorer = Scorer::Create(bundle, 16);
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  ASSERT_EQ((*scorer)->scoring_path(), "din_serving/avx512");
  ScoreResponse r;
  ASSERT_TRUE((*scorer)->Score(big, &r).ok());
  before = g_allocations.load();
  ASSERT_TRUE((*scorer)->Score(big, &r).ok());
  EXPECT_EQ(g_allocations.load() - before, 0);
  EXPECT_EQ(r.scores.size(), big.candidates.size());
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
