// Tests of LocalEmbeddingStore: table lookup, dim checks and Status errors, and that its
// Pull/Push/AdvanceStep reach the right DynamicTable.
#include "ps/local_embedding_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tests/testing/tolerance.h"

namespace ips::ps {
namespace {

using ::ips::testing::AllClose;
using ::ips::testing::Tolerance;

std::vector<TableOptions> TwoTables() {
  TableOptions item;
  item.name = "item";
  item.dim = 18;
  item.optimizer.type = OptimizerOptions::Type::kSgd;
  item.optimizer.learning_rate = 1.0;
  item.num_shards = 4;
  item.rows_per_slab = 64;
  item.ttl_steps = 2;
  item.ttl_sweep_interval = 1;
  TableOptions cat = item;
  cat.name = "category";
  cat.dim = 8;
  cat.ttl_steps = 0;
  return {item, cat};
}

std::unique_ptr<LocalEmbeddingStore> MakeStore() {
  auto store = LocalEmbeddingStore::Create(TwoTables());
  EXPECT_TRUE(store.ok()) << store.status();
  return std::move(store).value();
}

TEST(LocalEmbeddingStore, FindTableAndDims) {
  auto store = MakeStore();
  ASSERT_EQ(store->num_tables(), 2);
  auto item = store->FindTable("item");
  auto cat = store->FindTable("category");
  ASSERT_TRUE(item.ok());
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(*store->TableDim(*item), 18);
  EXPECT_EQ(*store->TableDim(*cat), 8);
  auto missing = store->FindTable("user");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("user"), std::string::npos);
}

TEST(LocalEmbeddingStore, UnknownTableAndWrongDimAreErrors) {
  auto store = MakeStore();
  const uint64_t keys[2] = {1, 2};
  std::vector<float> buf(2 * 18, 0.0f);
  EXPECT_EQ(store->Pull(7, keys, 2, 18, buf.data()).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Pull(-1, keys, 2, 18, buf.data()).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Push(2, keys, 2, 18, buf.data()).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stats(5).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->TableDim(9).status().code(), StatusCode::kNotFound);
  const Status wrong = store->Pull(1, keys, 2, 18, buf.data());  // category is 8 wide
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.message().find("category"), std::string::npos) << wrong;
  EXPECT_EQ(store->Push(0, keys, 2, 8, buf.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Lookup(0, keys, 2, 17, buf.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Pull(0, keys, -2, 18, buf.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AdvanceStep(-1).code(), StatusCode::kInvalidArgument);
  // Nothing was created by the failed calls.
  EXPECT_EQ(store->Stats(0)->rows, 0);
  EXPECT_EQ(store->Stats(1)->rows, 0);
}

TEST(LocalEmbeddingStore, CreateRejectsDuplicateNamesAndBadOptions) {
  std::vector<TableOptions> t = TwoTables();
  t[1].name = "item";
  auto s = LocalEmbeddingStore::Create(t);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  t = TwoTables();
  t[1].optimizer.type = OptimizerOptions::Type::kAdam;
  t[1].optimizer.beta2 = 1.5;
  s = LocalEmbeddingStore::Create(t);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("category"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("beta2"), std::string::npos) << s.status();
}

TEST(LocalEmbeddingStore, PullPushAdvanceStepReachTheirTables) {
  auto store = MakeStore();
  auto* item = store->table(0).value();
  const uint64_t keys[3] = {10, 20, 10};
  std::vector<float> out(3 * 18), grads(3 * 18, 1.0f), init(18);
  ASSERT_TRUE(store->Pull(0, keys, 3, 18, out.data()).ok());
  item->InitialRow(10, init.data());
  EXPECT_TRUE(AllClose(out.data(), init.data(), 18, Tolerance{0, 0}));
  EXPECT_TRUE(AllClose(out.data() + 36, init.data(), 18, Tolerance{0, 0}));
  ASSERT_TRUE(store->Push(0, keys, 3, 18, grads.data()).ok());
  std::vector<float> after(18);
  ASSERT_TRUE(store->Lookup(0, keys, 1, 18, after.data()).ok());
  for (int j = 0; j < 18; ++j) EXPECT_EQ(after[j], init[j] - 2.0f);  // key 10 pushed twice
  auto st = store->Stats(0);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->rows, 2);
  EXPECT_EQ(st->name, "item");
  EXPECT_EQ(st->optimizer_step, 1);
  EXPECT_EQ(store->Stats(1)->rows, 0);
  // TTL 2 on item only.
  const uint64_t c = 5;
  std::vector<float> c_out(8);
  ASSERT_TRUE(store->Pull(1, &c, 1, 8, c_out.data()).ok());
  ASSERT_TRUE(store->AdvanceStep(10).ok());
  EXPECT_EQ(store->Stats(0)->rows, 0);
  EXPECT_EQ(store->Stats(0)->evicted_ttl, 2);
  EXPECT_EQ(store->Stats(1)->rows, 1);
}

// CreateThreaded's own pool serves large calls (>= DynamicTable::kParallelKeys keys) and changes
// nothing: pulls and the rows after pushes equal a store without a pool, bit for bit.
TEST(LocalEmbeddingStore, CreateThreadedMatchesUnthreadedBitwise) {
  auto threaded = LocalEmbeddingStore::CreateThreaded(TwoTables(), 3);
  ASSERT_TRUE(threaded.ok()) << threaded.status();
  auto plain = MakeStore();
  const int64_t n = 2 * DynamicTable::kParallelKeys + 17;
  std::vector<uint64_t> keys(n);
  for (int64_t i = 0; i < n; ++i) keys[i] = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ULL + 1;
  for (int step = 0; step < 3; ++step) {
    std::vector<float> a(n * 18), b(n * 18), grads(n * 18);
    for (int64_t i = 0; i < n * 18; ++i) grads[i] = static_cast<float>((i * 7 + step) % 13) - 6.f;
    ::ips::testing::Poison(a);
    ::ips::testing::Poison(b);
    ASSERT_TRUE(plain->Pull(0, keys.data(), n, 18, a.data()).ok());
    ASSERT_TRUE((*threaded)->Pull(0, keys.data(), n, 18, b.data()).ok());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "step " << step;
    ASSERT_TRUE(plain->Push(0, keys.data(), n, 18, grads.data()).ok());
    ASSERT_TRUE((*threaded)->Push(0, keys.data(), n, 18, grads.data()).ok());
  }
  std::vector<float> a(n * 18), b(n * 18);
  ASSERT_TRUE(plain->Lookup(0, keys.data(), n, 18, a.data()).ok());
  ASSERT_TRUE((*threaded)->Lookup(0, keys.data(), n, 18, b.data()).ok());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

}  // namespace
}  // namespace ips::ps
