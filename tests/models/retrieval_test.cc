// Full-ranking retrieval (worker/retrieval.h): ScoreAllItems against a brute-force float64
// reference on fresh random vectors (ranks with ties, top-K order, max over interests, tiles
// that do not divide the sizes, threads), its input checks, and EvaluateRetrieval end to end on
// a tiny seqrec dataset written by the test: MIND user vectors from the model, every item of the
// store, Recall/HR/NDCG@K equal to a per-user brute-force evaluation that encodes each user alone;
// with a category table, items are scored in MIND's item + category space.
#include "worker/retrieval.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "models/mind.h"
#include "models/pooled.h"
#include "ps/local_embedding_store.h"
#include "tests/data/data_test_util.h"
#include "tests/testing/status_matchers.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"

namespace ips {
namespace {

// Reference score of one user (K vectors of dim d) against item row i, in double.
double RefScore(const float* v, int64_t K, int64_t d, const float* item) {
  double best = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += static_cast<double>(v[k * d + c]) * item[c];
    best = std::max(best, s);
  }
  return best;
}

struct RefUser {
  int64_t rank = 0;  // #other items with score >= the relevant one's
  int64_t below = 0, ties = 0;
  std::vector<uint32_t> top;  // best first, ties toward the lower id
};

RefUser Reference(const float* v, int64_t K, int64_t d, const float* items, int64_t N,
                  uint32_t relevant, int max_k) {
  std::vector<double> s(static_cast<size_t>(N + 1));
  for (int64_t i = 1; i <= N; ++i) s[i] = RefScore(v, K, d, items + i * d);
  RefUser r;
  for (int64_t i = 1; i <= N; ++i) {
    if (i == relevant) continue;
    r.rank += s[i] >= s[relevant];
    r.below += s[i] < s[relevant];
    r.ties += s[i] == s[relevant];
  }
  std::vector<uint32_t> ids;
  for (int64_t i = 1; i <= N; ++i) ids.push_back(static_cast<uint32_t>(i));
  std::stable_sort(ids.begin(), ids.end(), [&](uint32_t a, uint32_t b) { return s[a] > s[b]; });
  r.top.assign(ids.begin(), ids.begin() + max_k);
  return r;
}

struct ScoreCase {
  int64_t items;
  int max_k;
  int64_t item_block;
  std::string label;
};
void PrintTo(const ScoreCase& c, std::ostream* os) { *os << c.label; }

class ScoreAllItemsTest : public ::testing::TestWithParam<ScoreCase> {};

// Random vectors and items on a grid of 1/4, with ties planted: items 10 and 20 equal, 30 and 31
// zero, and (with enough items) every 9th item a copy of one strong row, so that for many users a
// run of tied items straddles the top-K boundary and the lower ids must win. Large N exercises the
// block-maximum bound and the candidate buffer's cuts (4 max_k) of the top-K selection.
TEST_P(ScoreAllItemsTest, MatchesBruteForce_Ties_Tiles_Threads) {
  const ScoreCase sc = GetParam();
  for (int64_t K : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{6}}) {
    for (bool threaded : {false, true}) {
      SCOPED_TRACE("K = " + std::to_string(K) + (threaded ? " pool2" : " inline"));
      const int64_t U = 23, N = sc.items, d = 5;
      const int max_k = sc.max_k;
      Rng rng(100 + K);
      std::vector<float> v(U * K * d), items((N + 1) * d);
      // Multiples of 1/4 in [-1, 1]: every score is exact in float whatever the summation order
      // or FMA use of the CPU path, so the float64 reference is exact too (no flaky near-ties),
      // and the discrete scores make ties common.
      for (auto& x : v) x = 0.25f * (static_cast<float>(rng.UniformInt(9)) - 4);
      for (auto& x : items) x = 0.25f * (static_cast<float>(rng.UniformInt(9)) - 4);
      for (int64_t c = 0; c < d; ++c) {
        items[0 * d + c] = 1000;  // padding row: would win everything if it were ranked
        items[10 * d + c] = items[20 * d + c];  // items 10 and 20 tie for every user
        items[30 * d + c] = 0;                  // 30, 31 score exactly 0
        items[31 * d + c] = 0;
      }
      if (N >= 500)
        for (int64_t i = 45; i <= N; i += 9)
          for (int64_t c = 0; c < d; ++c) items[i * d + c] = 3 * items[40 * d + c];
      std::vector<uint32_t> relevant(U);
      for (int64_t u = 0; u < U; ++u) relevant[u] = 1 + static_cast<uint32_t>(rng.UniformInt(N));
      relevant[0] = 20;                // tied with item 10
      relevant[1] = 30;                // tied with item 31
      if (N >= 500) relevant[2] = 54;  // one of the planted copies
      std::vector<int32_t> below(U, -7), ties(U, -7);
      std::vector<uint32_t> top(U * max_k, 12345);
      ThreadPool pool(2);
      kernels::Context ctx;
      ctx.pool = threaded ? &pool : nullptr;
      ASSERT_OK(ScoreAllItems(ctx, v.data(), U, K, d, items.data(), N, relevant.data(), max_k,
                              /*user_block=*/4, sc.item_block, below.data(), ties.data(),
                              top.data()));
      for (int64_t u = 0; u < U; ++u) {
        const RefUser r =
            Reference(v.data() + u * K * d, K, d, items.data(), N, relevant[u], max_k);
        EXPECT_EQ(below[u], r.below) << "user " << u;
        EXPECT_EQ(ties[u], r.ties) << "user " << u;
        EXPECT_EQ(N - 1 - below[u], r.rank) << "user " << u;
        for (int j = 0; j < max_k; ++j) EXPECT_EQ(top[u * max_k + j], r.top[j]) << u << "," << j;
      }
      EXPECT_GE(ties[0], 1);
      EXPECT_GE(ties[1], 1);
      // The score is the max over interests: the best item's score equals max_k <v_k, e>.
      const double best = RefScore(v.data(), K, d, items.data() + top[0] * d);
      for (int64_t i = 1; i <= N; ++i)
        EXPECT_LE(RefScore(v.data(), K, d, items.data() + i * d), best);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Retrieval, ScoreAllItemsTest,
                         ::testing::Values(ScoreCase{97, 10, 13, "N97_top10_block13"},
                                           ScoreCase{97, 97, 2048, "N97_top97_all"},
                                           ScoreCase{2000, 1, 100, "N2000_top1"},
                                           ScoreCase{2000, 10, 2048, "N2000_top10"},
                                           ScoreCase{3001, 100, 500, "N3001_top100_block500"}),
                         [](const ::testing::TestParamInfo<ScoreCase>& info) {
                           return info.param.label;
                         });

TEST(ScoreAllItems, RejectsBadInputsAndNaN) {
  const int64_t N = 6, d = 2;
  std::vector<float> v(2 * d, 0.5f), items((N + 1) * d, 0.25f);
  std::vector<uint32_t> relevant = {1, 7};
  std::vector<int32_t> below(2), ties(2);
  std::vector<uint32_t> top(2 * 3);
  kernels::Context ctx;
  Status s = ScoreAllItems(ctx, v.data(), 2, 1, d, items.data(), N, relevant.data(), 3, 4, 4,
                           below.data(), ties.data(), top.data());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("relevant[1]"), std::string::npos) << s.message();
  relevant[1] = 2;
  EXPECT_EQ(ScoreAllItems(ctx, v.data(), 2, 1, d, items.data(), N, relevant.data(), 7, 4, 4,
                          below.data(), ties.data(), top.data())
                .code(),
            StatusCode::kInvalidArgument);  // max_k > N
  EXPECT_EQ(ScoreAllItems(ctx, v.data(), 2, 0, d, items.data(), N, relevant.data(), 3, 4, 4,
                          below.data(), ties.data(), top.data())
                .code(),
            StatusCode::kInvalidArgument);
  ASSERT_OK(ScoreAllItems(ctx, v.data(), 2, 1, d, items.data(), N, relevant.data(), 3, 4, 4,
                          below.data(), ties.data(), top.data()));
  EXPECT_EQ(ties[0], N - 1);  // every item row is equal: all tie
  EXPECT_EQ(top[0], 1u);      // ties toward the lower id
  EXPECT_EQ(top[2], 3u);
  items[4 * d + 1] = std::nanf("");  // a NaN item row
  s = ScoreAllItems(ctx, v.data(), 2, 1, d, items.data(), N, relevant.data(), 3, 4, 4, below.data(),
                    ties.data(), top.data());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
}

// ---- EvaluateRetrieval on a converted dataset -------------------------------------------------

constexpr int kUsers = 37;
constexpr int kItems = 50;
constexpr int kL = 5;
constexpr int64_t kDim = 4;

class RetrievalEvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Rng rng(42);
    std::string text;
    for (int u = 1; u <= kUsers; ++u) {
      const int n = 3 + static_cast<int>(rng.UniformInt(9));
      for (int k = 0; k < n; ++k)
        text += std::to_string(u) + " " + std::to_string(1 + rng.UniformInt(kItems)) + "\n";
    }
    testing::WriteFile(dir_.File("seq.txt"), text);
    ConvertOptions o;
    o.format = "seqrec";
    o.input = dir_.File("seq.txt");
    o.output = dir_.File("out");
    o.max_history = kL;
    o.eval_negatives = 8;
    o.seed = 3;
    o.shards = 2;
    auto m = ConvertDataset(o);
    ASSERT_TRUE(m.ok()) << m.status();
    auto d = Dataset::Open(dir_.File("out"));
    ASSERT_TRUE(d.ok()) << d.status();
    data_ = std::move(*d);
    N_ = static_cast<int64_t>(data_->manifest().items);

    std::vector<ps::TableOptions> tables(2);
    const char* names[2] = {"item", "category"};
    for (int i = 0; i < 2; ++i) {
      tables[i].name = names[i];
      tables[i].dim = kDim;
      tables[i].initializer.type = ps::InitializerOptions::Type::kNormal;
      tables[i].initializer.stddev = 0.5;
      tables[i].has_padding_key = true;
      tables[i].padding_key = 0;
      tables[i].num_shards = 2;
      tables[i].rows_per_slab = 16;
    }
    auto st = ps::LocalEmbeddingStore::Create(tables);
    ASSERT_TRUE(st.ok()) << st.status();
    store_ = std::move(*st);
    auto it = store_->FindTable("item");
    ASSERT_TRUE(it.ok());
    item_table_ = *it;
    // Create rows for all but the last 4 items: those read as zeros (tied scores of 0).
    std::vector<uint64_t> keys;
    for (int64_t i = 1; i <= N_ - 4; ++i) keys.push_back(static_cast<uint64_t>(i));
    std::vector<float> scratch(keys.size() * kDim);
    ASSERT_OK(store_->Pull(item_table_, keys.data(), static_cast<int64_t>(keys.size()), kDim,
                           scratch.data()));
  }

  std::unique_ptr<models::Mind<float>> MakeMind(int64_t K, int64_t max_batch) {
    models::MindOptions o;
    o.embedding_dim = kDim;
    o.max_len = kL;
    o.max_batch = max_batch;
    o.num_interests = K;
    o.capsule_dim = 3;
    o.seed = 9;
    auto m = models::Mind<float>::Create(o);
    EXPECT_TRUE(m.ok()) << m.status();
    Rng rng(77);
    auto& p = (*m)->params();
    for (int64_t i = 0; i < p.size(); ++i) p.values()[i] += 0.3f * (2 * rng.UniformFloat() - 1);
    return std::move(*m);
  }

  testing::TempDir dir_;
  std::unique_ptr<Dataset> data_;
  std::unique_ptr<ps::LocalEmbeddingStore> store_;
  int item_table_ = -1;
  int64_t N_ = 0;
};

TEST_F(RetrievalEvalTest, MatchesPerUserBruteForce_K1_K4) {
  const std::vector<int> cutoffs = {1, 5, 10};
  for (int64_t K : {int64_t{1}, int64_t{4}}) {
    SCOPED_TRACE("K = " + std::to_string(K));
    auto model = MakeMind(K, /*max_batch=*/7);  // 7 does not divide the user count
    ThreadPool pool(2);
    kernels::Context ctx;
    ctx.pool = &pool;
    RetrievalOptions ro;
    ro.cutoffs = cutoffs;
    ro.user_block = 3;
    ro.item_block = 11;
    auto res = EvaluateRetrieval(ctx, model.get(), store_.get(), item_table_, *data_, ro);
    ASSERT_TRUE(res.ok()) << res.status();

    // Brute force: every list alone (batch of 1), all items scored in double.
    std::vector<float> items((N_ + 1) * kDim);
    std::vector<uint64_t> keys(N_ + 1);
    for (int64_t i = 0; i <= N_; ++i) keys[i] = static_cast<uint64_t>(i);
    ASSERT_OK(store_->Lookup(item_table_, keys.data(), N_ + 1, kDim, items.data()));
    ReaderOptions rdo;
    rdo.max_len = kL;
    rdo.shuffle = false;
    rdo.batch_size = 1;  // one whole list per batch
    EvalReader reader(data_.get(), {}, rdo);
    const int cands = reader.candidates_per_list();
    Batch b;
    int64_t users = 0, zero_rows_seen = 0;
    std::vector<double> hits(cutoffs.size()), ndcg(cutoffs.size()), recall(cutoffs.size());
    kernels::Context one;
    while (reader.Next(&b)) {
      ASSERT_EQ(b.size, cands);
      std::vector<int64_t> idx(kL + 1), cidx(kL + 1, 0);
      for (int t = 0; t < kL; ++t) idx[t] = t >= kL - b.length[0] ? b.hist_item[t] : 0;
      idx[kL] = b.item[0];
      models::CtrInputs<float> in;
      in.batch = 1;
      in.lengths = b.length.data();
      in.item_index = idx.data();
      in.cat_index = cidx.data();
      in.item_rows = items.data();
      in.num_item_rows = N_ + 1;
      std::vector<float> cat_zero(kDim, 0.0f);
      in.cat_rows = cat_zero.data();
      in.num_cat_rows = 1;
      ASSERT_OK(model->Forward(one, in, false, nullptr));
      const RefUser r = Reference(model->user_vectors(), K, kDim, items.data(), N_, b.item[0], 10);
      zero_rows_seen += b.item[0] > N_ - 4;
      for (size_t c = 0; c < cutoffs.size(); ++c) {
        const int k = cutoffs[c];
        if (r.rank < k) {
          hits[c] += 1;
          ndcg[c] += 1.0 / std::log2(static_cast<double>(r.rank) + 2);
        }
        recall[c] += std::find(r.top.begin(), r.top.begin() + k, b.item[0]) != r.top.begin() + k;
      }
      ++users;
    }
    ASSERT_GT(users, 10);
    EXPECT_EQ(res->users, users);
    EXPECT_EQ(res->items, N_);
    ASSERT_EQ(res->cutoffs.size(), cutoffs.size());
    double any = 0;
    for (size_t c = 0; c < cutoffs.size(); ++c) {
      EXPECT_EQ(res->cutoffs[c].k, cutoffs[c]);
      EXPECT_NEAR(res->cutoffs[c].hit_rate, hits[c] / users, 1e-12) << cutoffs[c];
      EXPECT_NEAR(res->cutoffs[c].ndcg, ndcg[c] / users, 1e-12) << cutoffs[c];
      EXPECT_NEAR(res->cutoffs[c].recall, recall[c] / users, 1e-12) << cutoffs[c];
      any += hits[c];
    }
    EXPECT_GT(any, 0) << "a test where nothing is ever retrieved cannot tell metrics apart";
    EXPECT_LT(res->cutoffs[0].hit_rate, 1.0);

    // max_users takes the first lists only.
    ro.max_users = 5;
    auto part = EvaluateRetrieval(ctx, model.get(), store_.get(), item_table_, *data_, ro);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(part->users, 5);
  }
}

TEST_F(RetrievalEvalTest, RejectsModelsWithoutUserVectorsAndBadOptions) {
  kernels::Context ctx;
  models::PooledOptions po;
  po.embedding_dim = kDim;
  po.max_len = kL;
  po.max_batch = 4;
  po.mlp_hidden = {3};
  auto pooled = models::PooledModel<float>::Create(po);
  ASSERT_TRUE(pooled.ok());
  auto s = EvaluateRetrieval(ctx, pooled->get(), store_.get(), item_table_, *data_);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("no user vectors"), std::string::npos);

  auto model = MakeMind(2, 4);
  RetrievalOptions ro;
  ro.cutoffs = {};
  EXPECT_EQ(
      EvaluateRetrieval(ctx, model.get(), store_.get(), item_table_, *data_, ro).status().code(),
      StatusCode::kInvalidArgument);
  ro.cutoffs = {0};
  EXPECT_EQ(
      EvaluateRetrieval(ctx, model.get(), store_.get(), item_table_, *data_, ro).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateRetrieval(ctx, nullptr, store_.get(), item_table_, *data_).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateRetrieval(ctx, model.get(), store_.get(), 99, *data_).status().code(),
            StatusCode::kNotFound);

  models::MindOptions wide;
  wide.embedding_dim = kDim + 1;
  wide.max_len = kL;
  wide.max_batch = 4;
  auto w = models::Mind<float>::Create(wide);
  ASSERT_TRUE(w.ok());
  auto ws = EvaluateRetrieval(ctx, w->get(), store_.get(), item_table_, *data_);
  EXPECT_EQ(ws.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ws.status().message().find("dim"), std::string::npos) << ws.status().message();
}

// MIND in its item + category space (MindOptions.use_categories, the default): with the category
// table given, EvaluateRetrieval scores every item as item row + the row of its category
// (Dataset::item_cat()) and feeds the histories' category rows to the model; the metrics equal a
// per-user brute force over exactly those vectors, and differ from scoring the item rows alone.
TEST(RetrievalCategories, ItemsAreScoredAsItemPlusCategoryRows) {
  constexpr int kCats = 5;
  testing::TempDir dir;
  Rng rng(8);
  std::string text;
  int64_t ts = 1000;
  for (int u = 1; u <= kUsers; ++u) {
    const int n = 3 + static_cast<int>(rng.UniformInt(9));
    for (int k = 0; k < n; ++k) {
      const int item = 1 + static_cast<int>(rng.UniformInt(kItems));
      text += std::to_string(u) + "\t" + std::to_string(item) + "\t" +
              std::to_string(1 + item % kCats) + "\t" + std::to_string(++ts) + "\tclick\t0\n";
    }
  }
  testing::WriteFile(dir.File("events.tsv"), text);
  ConvertOptions co;
  co.format = "events";
  co.protocol = "seqrec";
  co.input = dir.File("events.tsv");
  co.output = dir.File("out");
  co.max_history = kL;
  co.eval_negatives = 8;
  co.seed = 3;
  ASSERT_TRUE(ConvertDataset(co).ok());
  auto d = Dataset::Open(dir.File("out"));
  ASSERT_TRUE(d.ok()) << d.status();
  const Dataset& data = **d;
  const int64_t N = static_cast<int64_t>(data.manifest().items);
  const int64_t C = static_cast<int64_t>(data.manifest().categories);
  ASSERT_GE(C, 2) << "the test needs several categories";

  std::vector<ps::TableOptions> tables(2);
  const char* names[2] = {"item", "category"};
  for (int i = 0; i < 2; ++i) {
    tables[i].name = names[i];
    tables[i].dim = kDim;
    tables[i].initializer.type = ps::InitializerOptions::Type::kNormal;
    tables[i].initializer.stddev = 0.5;
    tables[i].has_padding_key = true;
    tables[i].padding_key = 0;
  }
  auto store_or = ps::LocalEmbeddingStore::Create(tables);
  ASSERT_TRUE(store_or.ok()) << store_or.status();
  ps::LocalEmbeddingStore& store = **store_or;
  const int item_table = *store.FindTable("item"), cat_table = *store.FindTable("category");
  // Every row exists (Pull creates it), then read back with Lookup, row 0 = zeros.
  std::vector<float> items((N + 1) * kDim), cats((C + 1) * kDim);
  for (auto [table, n, rows] :
       {std::tuple<int, int64_t, std::vector<float>*>{item_table, N, &items},
        {cat_table, C, &cats}}) {
    std::vector<uint64_t> keys;
    for (int64_t i = 1; i <= n; ++i) keys.push_back(static_cast<uint64_t>(i));
    std::vector<float> scratch(keys.size() * kDim);
    ASSERT_OK(store.Pull(table, keys.data(), n, kDim, scratch.data()));
    keys.insert(keys.begin(), 0);
    ASSERT_OK(store.Lookup(table, keys.data(), n + 1, kDim, rows->data()));
    std::fill(rows->begin(), rows->begin() + kDim, 0.0f);
  }
  // The item vectors the model lives in.
  std::vector<float> summed = items;
  for (int64_t i = 1; i <= N; ++i)
    for (int64_t c = 0; c < kDim; ++c) summed[i * kDim + c] += cats[data.item_cat()[i] * kDim + c];

  models::MindOptions o;
  o.embedding_dim = kDim;
  o.max_len = kL;
  o.max_batch = 6;
  o.num_interests = 3;
  o.capsule_dim = 3;
  o.seed = 9;
  ASSERT_TRUE(o.use_categories);
  auto model_or = models::Mind<float>::Create(o);
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  models::Mind<float>& model = **model_or;
  const int64_t K = 3;
  ThreadPool pool(2);
  kernels::Context ctx;
  ctx.pool = &pool;
  RetrievalOptions ro;
  ro.cutoffs = {1, 5, 10};
  ro.category_table = cat_table;
  ro.item_block = 7;
  auto res = EvaluateRetrieval(ctx, &model, &store, item_table, data, ro);
  ASSERT_TRUE(res.ok()) << res.status();

  ReaderOptions rdo;
  rdo.max_len = kL;
  rdo.shuffle = false;
  rdo.batch_size = 1;
  EvalReader reader(&data, {}, rdo);
  Batch b;
  int64_t users = 0;
  double rank_sum = 0;
  std::vector<double> hits(3), recall(3);
  kernels::Context one;
  while (reader.Next(&b)) {
    std::vector<int64_t> idx(kL + 1), cidx(kL + 1);
    for (int t = 0; t < kL; ++t) {
      const bool valid = t >= kL - b.length[0];
      idx[t] = valid ? b.hist_item[t] : 0;
      cidx[t] = valid ? b.hist_cat[t] : 0;
    }
    idx[kL] = b.item[0];
    cidx[kL] = b.cat[0];
    models::CtrInputs<float> in;
    in.batch = 1;
    in.lengths = b.length.data();
    in.item_index = idx.data();
    in.cat_index = cidx.data();
    in.item_rows = items.data();
    in.num_item_rows = N + 1;
    in.cat_rows = cats.data();
    in.num_cat_rows = C + 1;
    ASSERT_OK(model.Forward(one, in, false, nullptr));
    const RefUser r = Reference(model.user_vectors(), K, kDim, summed.data(), N, b.item[0], 10);
    rank_sum += static_cast<double>(r.rank);
    for (size_t c = 0; c < ro.cutoffs.size(); ++c) {
      const int k = ro.cutoffs[c];
      hits[c] += r.rank < k;
      recall[c] += std::find(r.top.begin(), r.top.begin() + k, b.item[0]) != r.top.begin() + k;
    }
    ++users;
  }
  ASSERT_GT(users, 10);
  EXPECT_EQ(res->users, users);
  EXPECT_NEAR(res->mean_rank, rank_sum / users, 1e-9);
  for (size_t c = 0; c < ro.cutoffs.size(); ++c) {
    EXPECT_NEAR(res->cutoffs[c].hit_rate, hits[c] / users, 1e-12) << ro.cutoffs[c];
    EXPECT_NEAR(res->cutoffs[c].recall, recall[c] / users, 1e-12) << ro.cutoffs[c];
  }
  // Without the category table both the model and the scoring see item rows alone: a different
  // evaluation (so the one above did use the categories).
  ro.category_table = -1;
  auto plain = EvaluateRetrieval(ctx, &model, &store, item_table, data, ro);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_GT(std::fabs(plain->mean_rank - res->mean_rank), 1e-9);
}

}  // namespace
}  // namespace ips
