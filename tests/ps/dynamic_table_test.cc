// Tests of DynamicTable: deterministic row creation, optimizer application through the shared
// kernel, thread safety, admission, TTL and memory-cap eviction, memory per row, checkpoint
// iteration.
#include "ps/dynamic_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <thread>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/optimizer.h"
#include "tests/testing/tolerance.h"

namespace ips::ps {
namespace {

using ::ips::testing::AllClose;
using ::ips::testing::Poison;
using ::ips::testing::Tolerance;

TableOptions Options(const std::string& name, OptimizerOptions::Type type, int64_t dim = 18) {
  TableOptions o;
  o.name = name;
  o.dim = dim;
  o.optimizer.type = type;
  o.optimizer.learning_rate = 0.05;
  o.optimizer.initial_accumulator = 0.1;
  o.optimizer.l1 = 0.01;
  o.optimizer.l2 = 0.02;
  o.initializer.type = InitializerOptions::Type::kNormal;
  o.initializer.stddev = 0.1;
  o.seed = 42;
  return o;
}

std::unique_ptr<DynamicTable> MakeTable(const TableOptions& o) {
  auto t = DynamicTable::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

std::vector<uint64_t> RandomKeys(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (auto& k : keys) k = rng.Next();
  return keys;
}

std::vector<float> RandomGrads(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> g(static_cast<size_t>(n));
  for (auto& x : g) x = static_cast<float>(rng.Uniform() * 2.0 - 1.0);
  return g;
}

// --- Row creation is a pure function of (name, seed, key) ---------------------------------------

TEST(DynamicTable, PullCreatesDeterministicRows_IndependentOfShardsOrderThreads) {
  const std::vector<uint64_t> keys = RandomKeys(5000, 1);
  const int64_t dim = 18;
  std::vector<std::vector<float>> results;
  for (int shards : {1, 7, 16}) {
    TableOptions o = Options("item", OptimizerOptions::Type::kAdam);
    o.num_shards = shards;
    o.rows_per_slab = 64;
    auto table = MakeTable(o);
    std::vector<uint64_t> order = keys;
    std::reverse(order.begin(), order.end());
    if (shards == 7) {
      // Insert from 3 threads in interleaved chunks.
      std::vector<std::thread> threads;
      for (int t = 0; t < 3; ++t) {
        threads.emplace_back([&, t] {
          std::vector<float> out(static_cast<size_t>(dim));
          for (size_t i = t; i < order.size(); i += 3)
            ASSERT_TRUE(table->Pull(&order[i], 1, out.data()).ok());
        });
      }
      for (auto& th : threads) th.join();
    } else if (shards == 16) {
      std::vector<float> out(order.size() * dim);
      ASSERT_TRUE(table->Pull(order.data(), static_cast<int64_t>(order.size()), out.data()).ok());
    }
    std::vector<float> out(keys.size() * dim);
    Poison(out);
    ASSERT_TRUE(table->Pull(keys.data(), static_cast<int64_t>(keys.size()), out.data()).ok());
    EXPECT_EQ(table->Stats().rows, static_cast<int64_t>(keys.size()));
    results.push_back(out);
  }
  EXPECT_TRUE(AllClose(results[1], results[0], Tolerance{0, 0}));
  EXPECT_TRUE(AllClose(results[2], results[0], Tolerance{0, 0}));
  // And it is the published pure function.
  const TableOptions o = Options("item", OptimizerOptions::Type::kAdam);
  std::vector<float> want(dim);
  for (size_t i = 0; i < keys.size(); i += 97) {
    InitializeRow(o.initializer, dim, TableNameHash("item"), 42, keys[i], want.data());
    EXPECT_TRUE(AllClose(results[0].data() + i * dim, want.data(), dim, Tolerance{0, 0}));
  }
}

TEST(DynamicTable, RowsDependOnSeedAndTableName) {
  const uint64_t key = 12345;
  std::vector<float> a(18), b(18), c(18);
  auto t1 = MakeTable(Options("item", OptimizerOptions::Type::kSgd));
  TableOptions o2 = Options("item", OptimizerOptions::Type::kSgd);
  o2.seed = 43;
  auto t2 = MakeTable(o2);
  auto t3 = MakeTable(Options("category", OptimizerOptions::Type::kSgd));
  ASSERT_TRUE(t1->Pull(&key, 1, a.data()).ok());
  ASSERT_TRUE(t2->Pull(&key, 1, b.data()).ok());
  ASSERT_TRUE(t3->Pull(&key, 1, c.data()).ok());
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(b, c);
}

TEST(DynamicTable, XavierNormalStddevUsesFanRowsPlusDim) {
  TableOptions o = Options("item", OptimizerOptions::Type::kSgd, 18);
  o.initializer.type = InitializerOptions::Type::kXavierNormal;
  o.initializer.xavier_fan_rows = 63001 - 18;  // std = sqrt(2 / 63001)
  auto table = MakeTable(o);
  const std::vector<uint64_t> keys = RandomKeys(20000, 7);
  std::vector<float> out(keys.size() * 18);
  ASSERT_TRUE(table->Pull(keys.data(), static_cast<int64_t>(keys.size()), out.data()).ok());
  double sum = 0, sq = 0;
  for (float v : out) {
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double n = static_cast<double>(out.size());
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  const double want = std::sqrt(2.0 / 63001.0);
  EXPECT_NEAR(std, want, 0.02 * want);  // 360K samples: sampling error ~0.1%
  EXPECT_NEAR(mean, 0.0, 0.01 * want);
}

TEST(DynamicTable, UniformAndZerosInitializers) {
  TableOptions o = Options("u", OptimizerOptions::Type::kSgd, 8);
  o.initializer.type = InitializerOptions::Type::kUniform;
  o.initializer.range = 0.3;
  auto table = MakeTable(o);
  const std::vector<uint64_t> keys = RandomKeys(1000, 3);
  std::vector<float> out(keys.size() * 8);
  ASSERT_TRUE(table->Pull(keys.data(), 1000, out.data()).ok());
  float lo = 1, hi = -1;
  for (float v : out) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_GE(lo, -0.3f);
  EXPECT_LT(hi, 0.3f);
  EXPECT_LT(lo, -0.28f);
  EXPECT_GT(hi, 0.28f);
  o.name = "z";
  o.initializer.type = InitializerOptions::Type::kZeros;
  auto zeros = MakeTable(o);
  Poison(out);
  ASSERT_TRUE(zeros->Pull(keys.data(), 1000, out.data()).ok());
  for (float v : out) ASSERT_EQ(v, 0.0f);
}

// --- Push applies exactly the optimizer kernel ---------------------------------------------------

class PushMatchesKernel : public ::testing::TestWithParam<OptimizerOptions::Type> {};

// Three pushes of a random subset of pulled keys, checked bitwise against kernels::SparseUpdate
// on a copy. `duplicate_and_missing`: each push also repeats one key (summed with its first
// occurrence) and names a key that has no row (dropped): TableShard::Push's grouped path. Without
// them every row is distinct: its in-place path.
void CheckPushesMatchKernel(OptimizerOptions::Type type, bool duplicate_and_missing) {
  const int64_t dim = 18;
  TableOptions o = Options("t", type, dim);
  o.rows_per_slab = 16;  // rows of one push span several slabs
  o.num_shards = 3;
  auto table = MakeTable(o);
  const int state_count = table->state_count();
  const int64_t n = 300;
  const std::vector<uint64_t> keys = RandomKeys(n, 11);
  std::vector<float> pulled(n * dim);
  ASSERT_TRUE(table->Pull(keys.data(), n, pulled.data()).ok());

  // Reference copy: [n x dim] tables read back from the store.
  std::vector<float> param(n * dim), s0(n * dim), s1(n * dim), state(2 * dim);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(table->ReadRow(keys[i], param.data() + i * dim, state.data()));
    std::copy(state.begin(), state.begin() + dim, s0.begin() + i * dim);
    std::copy(state.begin() + dim, state.begin() + 2 * dim, s1.begin() + i * dim);
  }
  EXPECT_TRUE(AllClose(param, pulled, Tolerance{0, 0}));
  if (type == OptimizerOptions::Type::kAdagrad) {
    for (int64_t i = 0; i < n * dim; ++i) ASSERT_FLOAT_EQ(s0[i], 0.1f);
  }

  for (int step = 1; step <= 3; ++step) {
    // Push a random subset, one key twice, plus a key that has no row.
    std::vector<uint64_t> push_keys;
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < n; ++i) {
      if ((i * 7 + step) % 3 != 0) {
        push_keys.push_back(keys[i]);
        rows.push_back(i);
      }
    }
    const int64_t m = static_cast<int64_t>(push_keys.size());
    std::vector<float> grads = RandomGrads((m + 2) * dim, 100 + step);
    int64_t pushed = m;
    if (duplicate_and_missing) {
      push_keys.push_back(push_keys[5]);   // duplicate: summed with the first occurrence
      push_keys.push_back(0xdeadbeefULL);  // never pulled: dropped
      pushed += 2;
    }
    ASSERT_TRUE(table->Push(push_keys.data(), pushed, grads.data()).ok());

    std::vector<float> ref_grads(grads.begin(), grads.begin() + m * dim);
    if (duplicate_and_missing) {
      for (int64_t j = 0; j < dim; ++j) ref_grads[5 * dim + j] += grads[m * dim + j];
    }
    kernels::SparseUpdateArgs<float> args;
    args.hyper = ToOptimizerHyper(o.optimizer);
    args.step = step;
    args.table_rows = n;
    args.dim = dim;
    args.param = param.data();
    args.state0 = state_count > 0 ? s0.data() : nullptr;
    args.state1 = state_count > 1 ? s1.data() : nullptr;
    args.num_rows = m;
    args.row_indices = rows.data();
    args.grad = ref_grads.data();
    ASSERT_TRUE(kernels::SparseUpdate<float>(kernels::Context{}, args).ok());
  }
  EXPECT_EQ(table->optimizer_step(), 3);
  EXPECT_EQ(table->Stats().dropped_push_keys, duplicate_and_missing ? 3 : 0);
  std::vector<float> got(n * dim), got_s0(n * dim), got_s1(n * dim);
  Poison(got);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(table->ReadRow(keys[i], got.data() + i * dim, state.data()));
    std::copy(state.begin(), state.begin() + dim, got_s0.begin() + i * dim);
    std::copy(state.begin() + dim, state.begin() + 2 * dim, got_s1.begin() + i * dim);
  }
  // Same kernel on the same numbers: identical results.
  EXPECT_TRUE(AllClose(got, param, Tolerance{0, 0}));
  if (state_count > 0) {
    EXPECT_TRUE(AllClose(got_s0, s0, Tolerance{0, 0}));
  }
  if (state_count > 1) {
    EXPECT_TRUE(AllClose(got_s1, s1, Tolerance{0, 0}));
  }
  // The update did something.
  EXPECT_FALSE(AllClose(got, pulled, Tolerance{1e-7, 0}));
}

TEST_P(PushMatchesKernel, ThreeStepsWithDuplicatesAndMissingKeys) {
  CheckPushesMatchKernel(GetParam(), /*duplicate_and_missing=*/true);
}

TEST_P(PushMatchesKernel, ThreeStepsOfDistinctKeysUpdatedInPlace) {
  CheckPushesMatchKernel(GetParam(), /*duplicate_and_missing=*/false);
}

INSTANTIATE_TEST_SUITE_P(
    AllOptimizers, PushMatchesKernel,
    ::testing::Values(OptimizerOptions::Type::kSgd, OptimizerOptions::Type::kAdagrad,
                      OptimizerOptions::Type::kAdam, OptimizerOptions::Type::kFtrl),
    [](const auto& info) {
      return std::string(kernels::OptimizerKindName(ToOptimizerKind(info.param)));
    });

// --- Thread safety
// --------------------------------------------------------------------------------

TEST(DynamicTable, ConcurrentPushesSumExactly_Sgd4Threads) {
  // SGD with lr 1 from zero rows and gradients of 1: every row must end at exactly
  // -(number of pushes that contained it), whatever the interleaving.
  TableOptions o = Options("sum", OptimizerOptions::Type::kSgd, 18);
  o.optimizer.learning_rate = 1.0;
  o.initializer.type = InitializerOptions::Type::kZeros;
  o.num_shards = 4;
  o.rows_per_slab = 64;
  auto table = MakeTable(o);
  const int kThreads = 4, kRounds = 50;
  const int64_t n = 2000, dim = 18;
  std::vector<uint64_t> keys(n);
  std::iota(keys.begin(), keys.end(), 1000);
  std::atomic<bool> bad_read{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(t);
      std::vector<uint64_t> mine = keys;
      std::vector<float> out(n * dim), ones(n * dim, 1.0f);
      for (int r = 0; r < kRounds; ++r) {
        for (int64_t i = n - 1; i > 0; --i)
          std::swap(mine[i], mine[rng.UniformInt(static_cast<uint64_t>(i + 1))]);
        if (!table->Pull(mine.data(), n, out.data()).ok()) bad_read = true;
        // A row is read whole: every element equal, an integer in [-kThreads*kRounds, 0].
        for (int64_t i = 0; i < n; ++i) {
          const float v = out[i * dim];
          if (v > 0 || v < -kThreads * kRounds || v != std::floor(v)) bad_read = true;
          for (int64_t j = 1; j < dim; ++j)
            if (out[i * dim + j] != v) bad_read = true;
        }
        if (!table->Push(mine.data(), n, ones.data()).ok()) bad_read = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(bad_read);
  std::vector<float> out(n * dim);
  ASSERT_TRUE(table->Lookup(keys.data(), n, out.data()).ok());
  for (float v : out) ASSERT_EQ(v, -static_cast<float>(kThreads * kRounds));
  EXPECT_EQ(table->optimizer_step(), kThreads * kRounds);
  EXPECT_EQ(table->Stats().rows, n);
}

TEST(DynamicTable, ConcurrentPullPushSweepAndCapEvictionKeepInvariants) {
  // Pulls, pushes, TTL sweeps and memory-cap evictions racing on the same shards. Every row ever
  // created is either live or counted as evicted, the cap holds, and nothing errors.
  TableOptions o = Options("stress", OptimizerOptions::Type::kAdagrad, 18);
  o.max_memory_mb = 1;
  o.num_shards = 4;
  o.rows_per_slab = 64;
  o.ttl_steps = 20;
  o.ttl_sweep_interval = 1;
  o.min_count = 2;
  o.sketch_width = 1024;
  auto table = MakeTable(o);
  std::atomic<bool> failed{false};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + t);
      const int64_t n = 512;
      std::vector<uint64_t> keys(n);
      std::vector<float> out(n * 18), grads(n * 18, 0.5f);
      for (int r = 0; r < 60; ++r) {
        if (t == 0) table->AdvanceStep(r);  // sweeps due rows while the others pull and push
        for (auto& k : keys) k = rng.UniformInt(20000);  // duplicates included
        if (!table->Pull(keys.data(), n, out.data()).ok()) failed = true;
        if (!table->Push(keys.data(), n, grads.data()).ok()) failed = true;
      }
    });
  }
  std::thread sweeper([&] {
    while (!done) {
      table->EvictExpired();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  for (auto& th : threads) th.join();
  done = true;
  sweeper.join();
  EXPECT_FALSE(failed);
  const TableStats st = table->Stats();
  EXPECT_EQ(st.created_rows - st.evicted_ttl - st.evicted_capacity, st.rows);
  EXPECT_LE(st.bytes, int64_t{1} << 20);
  EXPECT_GT(st.unadmitted_pulls, 0);
  EXPECT_GT(st.evicted_ttl, 0);
  EXPECT_GT(st.evicted_capacity, 0);
  EXPECT_EQ(st.pulled_keys, 3 * 60 * 512);
  int64_t visited = 0;
  table->ForEachRow([&](uint64_t, const float*, const float*) { ++visited; });
  EXPECT_LE(visited, st.rows);  // rows may expire between Stats and ForEachRow, never appear
  std::printf("[ stress ] rows %lld created %lld evicted ttl %lld cap %lld unadmitted %lld\n",
              static_cast<long long>(st.rows), static_cast<long long>(st.created_rows),
              static_cast<long long>(st.evicted_ttl), static_cast<long long>(st.evicted_capacity),
              static_cast<long long>(st.unadmitted_pulls));
}

// --- Feature admission
// ----------------------------------------------------------------------------

TEST(DynamicTable, AdmissionAfterMinCountSightings) {
  TableOptions o = Options("adm", OptimizerOptions::Type::kSgd, 4);
  o.min_count = 3;
  o.num_shards = 2;
  o.rows_per_slab = 16;
  auto table = MakeTable(o);
  const uint64_t key = 77, other = 78;
  std::vector<float> out(4), grad(4, 1.0f), init(4);
  table->InitialRow(key, init.data());
  for (int seen = 1; seen <= 2; ++seen) {
    Poison(out);
    ASSERT_TRUE(table->Pull(&key, 1, out.data()).ok());
    for (float v : out) EXPECT_EQ(v, 0.0f) << "sighting " << seen;
    ASSERT_TRUE(table->Push(&key, 1, grad.data()).ok());  // dropped: no row yet
  }
  TableStats st = table->Stats();
  EXPECT_EQ(st.rows, 0);
  EXPECT_EQ(st.unadmitted_pulls, 2);
  EXPECT_EQ(st.dropped_push_keys, 2);
  EXPECT_GT(st.sketch_bytes, 0);
  ASSERT_TRUE(table->Pull(&key, 1, out.data()).ok());  // third sighting: admitted
  EXPECT_TRUE(AllClose(out, init, Tolerance{0, 0}));
  EXPECT_EQ(table->Stats().rows, 1);
  // Duplicates in one pull count as separate sightings.
  const uint64_t three[3] = {other, other, other};
  std::vector<float> out3(12);
  ASSERT_TRUE(table->Pull(three, 3, out3.data()).ok());
  for (int j = 0; j < 8; ++j) EXPECT_EQ(out3[j], 0.0f);
  table->InitialRow(other, init.data());
  EXPECT_TRUE(AllClose(out3.data() + 8, init.data(), 4, Tolerance{0, 0}));
  // Lookup never admits or counts.
  const uint64_t fresh = 999;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(table->Lookup(&fresh, 1, out.data()).ok());
  EXPECT_EQ(table->Stats().rows, 2);
}

// Windowed admission (a server with several workers): the pulls between two pushes decide on the
// counts as of the window's start, so two workers' pulls of a step admit the same keys in either
// order; their sightings count from the next push on.
TEST(DynamicTable, WindowedAdmissionDoesNotDependOnPullOrder) {
  TableOptions o = Options("win", OptimizerOptions::Type::kSgd, 4);
  o.min_count = 2;
  o.num_shards = 2;
  o.rows_per_slab = 16;
  const uint64_t a[2] = {11, 12}, b[2] = {12, 13};  // key 12 is in both workers' pulls
  std::vector<float> init(4);
  for (int order = 0; order < 2; ++order) {
    auto table = MakeTable(o);
    table->SetWindowedAdmission(true);
    table->InitialRow(12, init.data());
    std::vector<float> out_a(8), out_b(8), grads(8, 0.5f);
    Poison(out_a);
    Poison(out_b);
    // Step 1: worker A and worker B pull, in the two orders.
    if (order == 0) {
      ASSERT_TRUE(table->Pull(a, 2, out_a.data()).ok());
      ASSERT_TRUE(table->Pull(b, 2, out_b.data()).ok());
    } else {
      ASSERT_TRUE(table->Pull(b, 2, out_b.data()).ok());
      ASSERT_TRUE(table->Pull(a, 2, out_a.data()).ok());
    }
    // Key 12's second sighting is in the same window as its first: not admitted yet for either.
    for (float v : out_a) EXPECT_EQ(v, 0.0f) << "order " << order;
    for (float v : out_b) EXPECT_EQ(v, 0.0f) << "order " << order;
    EXPECT_EQ(table->Stats().rows, 0);
    ASSERT_TRUE(table->Push(a, 2, grads.data()).ok());  // closes the window (dropped: no rows)
    ASSERT_TRUE(table->Push(b, 2, grads.data()).ok());
    // Step 2: each key's sightings of step 1 count now: this one is the second of 11 and the
    // third of 12, so both are admitted.
    Poison(out_a);
    ASSERT_TRUE(table->Pull(a, 2, out_a.data()).ok());
    std::vector<float> init11(4);
    table->InitialRow(11, init11.data());
    EXPECT_TRUE(AllClose(out_a.data(), init11.data(), 4, Tolerance{0, 0})) << "order " << order;
    EXPECT_TRUE(AllClose(out_a.data() + 4, init.data(), 4, Tolerance{0, 0})) << "order " << order;
    EXPECT_EQ(table->Stats().rows, 2);
    // The sketch handed to a checkpoint includes the open window's sightings.
    const std::vector<SketchState> sketches = table->Sketches();
    ASSERT_EQ(sketches.size(), 2u);
    ASSERT_TRUE(table->Push(a, 2, grads.data()).ok());
    const std::vector<SketchState> closed = table->Sketches();
    for (size_t s = 0; s < sketches.size(); ++s) {
      EXPECT_EQ(sketches[s].counters, closed[s].counters);
      EXPECT_EQ(sketches[s].additions, closed[s].additions);
    }
    EXPECT_EQ(table->Stats().unadmitted_pulls, 4) << "order " << order;
  }
}

// --- TTL eviction --------------------------------------------------------------------------------

TEST(DynamicTable, TtlEvictsRowsUnseenForMoreThanTtlSteps) {
  TableOptions o = Options("ttl", OptimizerOptions::Type::kSgd, 4);
  o.optimizer.learning_rate = 1.0;
  o.ttl_steps = 5;
  o.ttl_sweep_interval = 1;
  o.num_shards = 2;
  o.rows_per_slab = 16;
  auto table = MakeTable(o);
  const uint64_t a = 1, b = 2;
  std::vector<float> out(4), grad(4, 1.0f), init(4);
  ASSERT_TRUE(table->Pull(&a, 1, out.data()).ok());
  ASSERT_TRUE(table->Pull(&b, 1, out.data()).ok());
  ASSERT_TRUE(table->Push(&b, 1, grad.data()).ok());  // b now differs from its initial row
  table->AdvanceStep(3);
  ASSERT_TRUE(table->Pull(&a, 1, out.data()).ok());  // a seen at step 3
  EXPECT_EQ(table->AdvanceStep(5), 0);               // b unseen for 5 steps: kept
  EXPECT_TRUE(table->ReadRow(b, nullptr, nullptr));
  EXPECT_EQ(table->AdvanceStep(6), 1);  // b unseen for 6 steps: evicted
  EXPECT_FALSE(table->ReadRow(b, nullptr, nullptr));
  EXPECT_TRUE(table->ReadRow(a, nullptr, nullptr));
  EXPECT_EQ(table->Stats().evicted_ttl, 1);
  EXPECT_EQ(table->Stats().rows, 1);
  ASSERT_TRUE(table->Push(&b, 1, grad.data()).ok());
  EXPECT_EQ(table->Stats().dropped_push_keys, 1);
  // b comes back as a fresh row; its freed slot is reused (no new slab).
  const int64_t cap = table->Stats().capacity_rows;
  ASSERT_TRUE(table->Pull(&b, 1, out.data()).ok());
  table->InitialRow(b, init.data());
  EXPECT_TRUE(AllClose(out, init, Tolerance{0, 0}));
  EXPECT_EQ(table->Stats().capacity_rows, cap);
  EXPECT_EQ(table->AdvanceStep(9), 1);  // a: last seen at 3
  EXPECT_EQ(table->Stats().rows, 1);
}

TEST(DynamicTable, ExpiredRowIsNotServedBeforeTheSweep) {
  TableOptions o = Options("ttl2", OptimizerOptions::Type::kSgd, 4);
  o.optimizer.learning_rate = 1.0;
  o.ttl_steps = 2;
  o.ttl_sweep_interval = 1000;  // no sweep in this test
  o.num_shards = 1;
  o.rows_per_slab = 16;
  auto table = MakeTable(o);
  const uint64_t k = 5;
  std::vector<float> out(4), grad(4, 1.0f), init(4);
  table->InitialRow(k, init.data());
  ASSERT_TRUE(table->Pull(&k, 1, out.data()).ok());
  ASSERT_TRUE(table->Push(&k, 1, grad.data()).ok());
  EXPECT_EQ(table->AdvanceStep(3), 0);
  ASSERT_TRUE(table->Lookup(&k, 1, out.data()).ok());
  for (float v : out) EXPECT_EQ(v, 0.0f);  // expired: reads as missing
  ASSERT_TRUE(table->Pull(&k, 1, out.data()).ok());
  EXPECT_TRUE(AllClose(out, init, Tolerance{0, 0}));  // re-created, update gone
  EXPECT_EQ(table->Stats().evicted_ttl, 1);
  EXPECT_EQ(table->Stats().rows, 1);
}

// --- A thread pool spreads shards, and changes nothing -------------------------------------------

// Drives two tables with the same calls, one through a 3-thread pool (large calls spread whole
// shards over it) and one on the calling thread, and requires every pulled row, the final rows
// and their optimizer state to be bitwise equal: admission, cap eviction (a per-shard sampler)
// and duplicate keys in a push must not depend on which thread handled a shard.
// *stats: the tables' stats at the end.
void CheckPoolChangesNothing(TableOptions o, TableStats* stats = nullptr) {
  auto serial = MakeTable(o);
  auto pooled = MakeTable(o);
  ThreadPool pool(3);
  const int64_t n = 3 * DynamicTable::kParallelKeys;
  for (int round = 0; round < 6; ++round) {
    serial->AdvanceStep(round);
    pooled->AdvanceStep(round);
    // Half the keys repeat from a fixed set (admission counts, hot rows), half are new, and a
    // tenth of the push repeats keys (summed gradients).
    std::vector<uint64_t> keys = RandomKeys(n, 1000 + round);
    const std::vector<uint64_t> fixed = RandomKeys(n / 2, 7);
    std::copy(fixed.begin(), fixed.end(), keys.begin());
    for (int64_t i = 0; i < n / 10; ++i) keys[n - 1 - i] = keys[i];
    std::vector<float> a(n * o.dim), b(n * o.dim);
    Poison(a);
    Poison(b);
    ASSERT_TRUE(serial->Pull(keys.data(), n, a.data()).ok());
    ASSERT_TRUE(pooled->Pull(keys.data(), n, b.data(), &pool).ok());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "round " << round;
    Poison(a);
    Poison(b);
    ASSERT_TRUE(serial->Lookup(keys.data(), n, a.data()).ok());
    ASSERT_TRUE(pooled->Lookup(keys.data(), n, b.data(), &pool).ok());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "round " << round;
    const std::vector<float> grads = RandomGrads(n * o.dim, 2000 + round);
    ASSERT_TRUE(serial->Push(keys.data(), n, grads.data()).ok());
    ASSERT_TRUE(pooled->Push(keys.data(), n, grads.data(), &pool).ok());
  }
  auto dump = [&](const DynamicTable& t) {
    std::map<uint64_t, std::vector<float>> rows;
    t.ForEachRowSince(0, [&](const RowRecord& r) {
      std::vector<float>& v = rows[r.key];
      v.assign(r.value, r.value + o.dim);
      if (r.state != nullptr) v.insert(v.end(), r.state, r.state + t.state_count() * o.dim);
      v.push_back(static_cast<float>(r.freq));
    });
    return rows;
  };
  const auto want = dump(*serial);
  EXPECT_GT(want.size(), 0u);
  EXPECT_TRUE(want == dump(*pooled));
  EXPECT_EQ(serial->Stats().rows, pooled->Stats().rows);
  EXPECT_EQ(serial->Stats().evicted_capacity, pooled->Stats().evicted_capacity);
  EXPECT_EQ(serial->optimizer_step(), pooled->optimizer_step());
  if (stats != nullptr) *stats = serial->Stats();
}

TEST(DynamicTable, PoolChangesNothing_AdamWithDuplicates) {
  CheckPoolChangesNothing(Options("pool_adam", OptimizerOptions::Type::kAdam));
}

TEST(DynamicTable, PoolChangesNothing_FtrlWithAdmission) {
  TableOptions o = Options("pool_ftrl", OptimizerOptions::Type::kFtrl);
  o.min_count = 2;
  TableStats st;
  CheckPoolChangesNothing(o, &st);
  EXPECT_LT(st.rows, 6 * 3 * DynamicTable::kParallelKeys);  // keys seen once have no row
}

TEST(DynamicTable, PoolChangesNothing_AdagradUnderAMemoryCap) {
  TableOptions o = Options("pool_cap", OptimizerOptions::Type::kAdagrad);
  o.max_memory_mb = 4;
  o.num_shards = 4;
  o.rows_per_slab = 256;
  TableStats st;
  CheckPoolChangesNothing(o, &st);
  EXPECT_GT(st.evicted_capacity, 0);
}

// --- Memory cap ----------------------------------------------------------------------------------

class MemoryCap : public ::testing::TestWithParam<TableOptions::Eviction> {};

TEST_P(MemoryCap, TenTimesMoreKeysThanFitStaysUnderCapAndKeepsHotKeys) {
  TableOptions o = Options("cap", OptimizerOptions::Type::kAdam, 18);
  o.max_memory_mb = 2;
  o.num_shards = 2;
  o.rows_per_slab = 256;
  o.eviction = GetParam();
  auto table = MakeTable(o);
  const int64_t cap_bytes = 2 << 20;
  // Rows that fit: about 2 MiB / (232 B + index).
  const int64_t fit = cap_bytes / 240;
  const int64_t hot_n = 500, cold_per_round = 1000;
  const int rounds = static_cast<int>(11 * fit / cold_per_round);
  std::vector<uint64_t> hot(hot_n);
  std::iota(hot.begin(), hot.end(), uint64_t{1} << 40);
  std::vector<float> out(cold_per_round * 18);
  uint64_t next_cold = 1;
  for (int r = 0; r < rounds; ++r) {
    table->AdvanceStep(r);
    std::vector<uint64_t> cold(cold_per_round);
    for (auto& k : cold) k = next_cold++;
    ASSERT_TRUE(table->Pull(hot.data(), hot_n, out.data()).ok());
    ASSERT_TRUE(table->Pull(cold.data(), cold_per_round, out.data()).ok());
    const TableStats st = table->Stats();
    ASSERT_LE(st.bytes, cap_bytes) << "round " << r;
  }
  const TableStats st = table->Stats();
  EXPECT_GE(next_cold - 1, 10 * st.rows);  // fed at least 10x what it holds
  EXPECT_GT(st.evicted_capacity, 0);
  EXPECT_GT(st.rows, fit / 2);  // the cap is used, not just respected
  int64_t hot_kept = 0;
  for (uint64_t k : hot) hot_kept += table->ReadRow(k, nullptr, nullptr) ? 1 : 0;
  EXPECT_EQ(hot_kept, hot_n);
}

INSTANTIATE_TEST_SUITE_P(Policies, MemoryCap,
                         ::testing::Values(TableOptions::Eviction::kLfu,
                                           TableOptions::Eviction::kLru),
                         [](const auto& info) {
                           return info.param == TableOptions::Eviction::kLfu ? "Lfu" : "Lru";
                         });

TEST(DynamicTable, LfuKeepsFrequentKeysAcrossARecentBurstLruDoesNot) {
  // LFU keeps keys with many past uses even when a burst of new keys is more recent; LRU evicts
  // them first. Both from the same sequence, so this also shows the policy option takes effect.
  for (auto policy : {TableOptions::Eviction::kLfu, TableOptions::Eviction::kLru}) {
    TableOptions o = Options("lfu", OptimizerOptions::Type::kSgd, 18);
    o.max_memory_mb = 1;
    o.num_shards = 1;
    o.rows_per_slab = 256;
    o.eviction = policy;
    auto table = MakeTable(o);
    std::vector<uint64_t> hot(300);
    std::iota(hot.begin(), hot.end(), uint64_t{1} << 50);
    std::vector<float> out(20000 * 18);
    for (int r = 0; r < 10; ++r) {
      table->AdvanceStep(r);
      ASSERT_TRUE(table->Pull(hot.data(), 300, out.data()).ok());
    }
    table->AdvanceStep(20);
    std::vector<uint64_t> burst(20000);
    std::iota(burst.begin(), burst.end(), 1);
    ASSERT_TRUE(table->Pull(burst.data(), 20000, out.data()).ok());
    EXPECT_GT(table->Stats().evicted_capacity, 5000);
    int kept = 0;
    for (uint64_t k : hot) kept += table->ReadRow(k, nullptr, nullptr) ? 1 : 0;
    if (policy == TableOptions::Eviction::kLfu) {
      EXPECT_EQ(kept, 300);
    } else {
      EXPECT_LT(kept, 30);
    }
  }
}

TEST(DynamicTable, CapTooSmallForOneSlabPerShardIsAnError) {
  TableOptions o = Options("tiny", OptimizerOptions::Type::kAdam, 256);
  o.max_memory_mb = 1;
  o.num_shards = 16;
  o.rows_per_slab = 512;
  auto t = DynamicTable::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("max_memory_mb"), std::string::npos) << t.status();
}

// The error names the smallest cap that works (MB, rounded up) and only settings a config has:
// the store's layout (shards, slab rows) is not the user's to change. MinMemoryMb is exact: the
// table is created at it and refused one MB below, whatever the width, optimizer and admission.
TEST(DynamicTable, CapTooSmallNamesTheSmallestCapThatWorks) {
  TableOptions o = Options("item", OptimizerOptions::Type::kAdam, 18);
  o.max_memory_mb = 1;
  EXPECT_EQ(MinMemoryMb(o), 2);  // 16 shards x 512 rows x (18 weights + 2 x 18 Adam moments)
  auto t = DynamicTable::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(),
            "table 'item': max_memory_mb 1 is below the 2 MB this table needs at least (dim 18 "
            "with ADAM's optimizer state); set max_memory_mb to 2 or more, or to 0 for no cap");
  for (const char* internal : {"shard", "slab", "rows_per_slab", "num_shards"})
    EXPECT_EQ(t.status().message().find(internal), std::string::npos) << internal;
  o.min_count = 3;  // the admission sketches count too
  t = DynamicTable::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("below the 4 MB this table needs at least (dim 18 with "
                                      "ADAM's optimizer state and the admission counts of "
                                      "min_count 3); set max_memory_mb to 4 or more"),
            std::string::npos)
      << t.status();
  for (const auto type : {OptimizerOptions::Type::kSgd, OptimizerOptions::Type::kAdagrad,
                          OptimizerOptions::Type::kAdam, OptimizerOptions::Type::kFtrl}) {
    for (const int64_t dim : {1, 18, 64, 300}) {
      for (const int64_t min_count : {0, 5}) {
        TableOptions c = Options("t", type, dim);
        c.min_count = min_count;
        const int64_t mb = MinMemoryMb(c);
        SCOPED_TRACE(std::string(OptimizerTypeName(type)) + " dim " + std::to_string(dim) +
                     " min_count " + std::to_string(min_count) + ": " + std::to_string(mb) + " MB");
        c.max_memory_mb = mb;
        EXPECT_TRUE(DynamicTable::Create(c).ok()) << DynamicTable::Create(c).status();
        if (mb > 1) {
          c.max_memory_mb = mb - 1;
          auto refused = DynamicTable::Create(c);
          ASSERT_FALSE(refused.ok());
          EXPECT_NE(refused.status().message().find("set max_memory_mb to " + std::to_string(mb) +
                                                    " or more"),
                    std::string::npos)
              << refused.status();
        }
      }
    }
  }
}

// --- Memory per row ------------------------------------------------------------------------------

class BytesPerRow : public ::testing::TestWithParam<OptimizerOptions::Type> {};

TEST_P(BytesPerRow, Dim18OneMillionRowsWithin125PercentOfPayload) {
  TableOptions o = Options("big", GetParam(), 18);
  o.initializer.type = InitializerOptions::Type::kZeros;  // the accounting, not the RNG
  auto table = MakeTable(o);
  const int64_t n = 1 << 20, batch = 1 << 16;
  std::vector<uint64_t> keys(batch);
  std::vector<float> out(batch * 18);
  Rng rng(5);
  double worst = 0;
  for (int64_t done = 0; done < n; done += batch) {
    for (auto& k : keys) k = rng.Next();
    ASSERT_TRUE(table->Pull(keys.data(), batch, out.data()).ok());
    if (done + batch >= n / 2) worst = std::max(worst, table->BytesPerRow());
  }
  const TableStats st = table->Stats();
  EXPECT_EQ(st.rows, n);
  const double target = 1.25 * static_cast<double>(st.payload_bytes_per_row);
  EXPECT_EQ(st.payload_bytes_per_row, 18 * 4 * (1 + table->state_count()));
  EXPECT_LE(st.BytesPerRow(), target) << "index " << st.index_bytes << " slabs " << st.slab_bytes;
  // Also at every batch boundary from 512K to 1M rows (index doublings included).
  EXPECT_LE(worst, target);
  std::printf("[ bytes/row ] %s: %.1f (payload %lld, target %.1f, worst %.1f)\n",
              kernels::OptimizerKindName(ToOptimizerKind(GetParam())), st.BytesPerRow(),
              static_cast<long long>(st.payload_bytes_per_row), target, worst);
}

INSTANTIATE_TEST_SUITE_P(AdamAdagrad, BytesPerRow,
                         ::testing::Values(OptimizerOptions::Type::kAdagrad,
                                           OptimizerOptions::Type::kAdam),
                         [](const auto& info) {
                           return std::string(
                               kernels::OptimizerKindName(ToOptimizerKind(info.param)));
                         });

TEST(DynamicTable, PaddingKeyReadsZerosAndIsNeverCreatedOrUpdated) {
  TableOptions o = Options("pad", OptimizerOptions::Type::kAdam, 4);
  o.has_padding_key = true;
  o.padding_key = 0;
  o.num_shards = 2;
  o.rows_per_slab = 16;
  auto table = MakeTable(o);
  const uint64_t keys[3] = {0, 9, 0};
  std::vector<float> out(12), grads(12, 1.0f), init(4);
  Poison(out);
  ASSERT_TRUE(table->Pull(keys, 3, out.data()).ok());
  table->InitialRow(9, init.data());
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(out[j], 0.0f);
    EXPECT_EQ(out[8 + j], 0.0f);
    EXPECT_EQ(out[4 + j], init[j]);
  }
  ASSERT_TRUE(table->Push(keys, 3, grads.data()).ok());
  ASSERT_TRUE(table->Pull(keys, 3, out.data()).ok());
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(out[j], 0.0f);
    EXPECT_NE(out[4 + j], init[j]);
  }
  const TableStats st = table->Stats();
  EXPECT_EQ(st.rows, 1);
  EXPECT_EQ(st.dropped_push_keys, 0);
  EXPECT_FALSE(table->ReadRow(0, nullptr, nullptr));
  EXPECT_EQ(table->Insert(0, init.data(), nullptr).code(), StatusCode::kInvalidArgument);
}

// --- Checkpoint iteration ------------------------------------------------------------------------

TEST(DynamicTable, ForEachRowThenInsertRestoresValuesStateAndUpdates) {
  TableOptions o = Options("ckpt", OptimizerOptions::Type::kAdam, 6);
  o.rows_per_slab = 16;
  o.num_shards = 3;
  auto src = MakeTable(o);
  const int64_t n = 200, dim = 6;
  const std::vector<uint64_t> keys = RandomKeys(n, 21);
  std::vector<float> out(n * dim);
  ASSERT_TRUE(src->Pull(keys.data(), n, out.data()).ok());
  for (int s = 0; s < 2; ++s) {
    const std::vector<float> g = RandomGrads(n * dim, 30 + s);
    ASSERT_TRUE(src->Push(keys.data(), n, g.data()).ok());
  }
  o.num_shards = 5;  // a different sharding restores the same rows
  auto dst = MakeTable(o);
  std::map<uint64_t, int> seen;
  src->ForEachRow([&](uint64_t key, const float* value, const float* state) {
    ++seen[key];
    ASSERT_TRUE(dst->Insert(key, value, state).ok());
  });
  EXPECT_EQ(static_cast<int64_t>(seen.size()), n);
  for (const auto& kv : seen) EXPECT_EQ(kv.second, 1);
  dst->set_optimizer_step(src->optimizer_step());
  const std::vector<float> g = RandomGrads(n * dim, 40);
  ASSERT_TRUE(src->Push(keys.data(), n, g.data()).ok());
  ASSERT_TRUE(dst->Push(keys.data(), n, g.data()).ok());
  std::vector<float> a(dim), b(dim), sa(2 * dim), sb(2 * dim);
  for (uint64_t k : keys) {
    ASSERT_TRUE(src->ReadRow(k, a.data(), sa.data()));
    ASSERT_TRUE(dst->ReadRow(k, b.data(), sb.data()));
    ASSERT_TRUE(AllClose(b, a, Tolerance{0, 0}));
    ASSERT_TRUE(AllClose(sb, sa, Tolerance{0, 0}));
  }
  // A null state is the optimizer's initial state.
  std::vector<float> v(dim, 0.5f);
  ASSERT_TRUE(dst->Insert(424242, v.data(), nullptr).ok());
  ASSERT_TRUE(dst->ReadRow(424242, b.data(), sb.data()));
  EXPECT_TRUE(AllClose(b, v, Tolerance{0, 0}));
  for (float x : sb) EXPECT_EQ(x, 0.0f);
}

// --- Bad input -----------------------------------------------------------------------------------

TEST(DynamicTable, BadOptionsAndArgumentsAreStatusErrors) {
  TableOptions o = Options("bad", OptimizerOptions::Type::kSgd, 0);
  auto t = DynamicTable::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("dim"), std::string::npos) << t.status();
  o.dim = 4;
  o.rows_per_slab = 100;
  t = DynamicTable::Create(o);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("rows_per_slab"), std::string::npos) << t.status();
  o.rows_per_slab = 16;
  o.optimizer.learning_rate = -1;
  EXPECT_FALSE(DynamicTable::Create(o).ok());
  o.optimizer.learning_rate = 0.1;
  o.name = "";
  EXPECT_FALSE(DynamicTable::Create(o).ok());
  o.name = "bad";
  auto table = MakeTable(o);
  float out[4];
  uint64_t key = 1;
  EXPECT_EQ(table->Pull(&key, -1, out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Pull(nullptr, 1, out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Push(&key, 1, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(table->Pull(nullptr, 0, nullptr).ok());
  EXPECT_EQ(table->Stats().rows, 0);
}

// --- Pushes use the slots of recorded pulls -----------------------------------------------------

// Runs the same rounds of pulls (in `parts` slices) and pushes of the whole key list on a table
// that records pulls and on one that does not, with `between(table, round)` done to both between
// a round's pulls and its push, and checks that every pulled row, every row, state and count
// ends equal bit for bit. Returns the recording table's stats.
TableStats CheckRecordedPullsChangeNothing(
    TableOptions o, int parts, const std::function<void(DynamicTable&, int)>& between = {},
    ThreadPool* pool = nullptr) {
  auto recording = MakeTable(o);
  auto plain = MakeTable(o);
  plain->set_record_pulls(false);
  const int64_t n = 3 * DynamicTable::kParallelKeys;
  for (int round = 0; round < 5; ++round) {
    recording->AdvanceStep(round);
    plain->AdvanceStep(round);
    // Half the keys repeat from a fixed set (admission counts, hot rows), half are new, and a
    // tenth repeat earlier keys of the list (summed gradients; admitted within the pull).
    std::vector<uint64_t> keys = RandomKeys(n, 3000 + round);
    const std::vector<uint64_t> fixed = RandomKeys(n / 2, 8);
    std::copy(fixed.begin(), fixed.end(), keys.begin());
    for (int64_t i = 0; i < n / 10; ++i) keys[n - 1 - i] = keys[n / 2 + i];
    std::vector<float> a(n * o.dim), b(n * o.dim);
    Poison(a);
    Poison(b);
    for (int k = 0; k < parts; ++k) {
      const int64_t begin = n * k / parts, end = n * (k + 1) / parts;
      EXPECT_TRUE(
          recording->Pull(keys.data() + begin, end - begin, a.data() + begin * o.dim, pool).ok());
      EXPECT_TRUE(plain->Pull(keys.data() + begin, end - begin, b.data() + begin * o.dim).ok());
    }
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "round " << round;
    if (between) {
      between(*recording, round);
      between(*plain, round);
    }
    const std::vector<float> grads = RandomGrads(n * o.dim, 4000 + round);
    EXPECT_TRUE(recording->Push(keys.data(), n, grads.data(), pool).ok());
    EXPECT_TRUE(plain->Push(keys.data(), n, grads.data()).ok());
  }
  auto dump = [&](const DynamicTable& t) {
    std::map<uint64_t, std::vector<float>> rows;
    t.ForEachRowSince(0, [&](const RowRecord& r) {
      std::vector<float>& v = rows[r.key];
      v.assign(r.value, r.value + o.dim);
      if (r.state != nullptr) v.insert(v.end(), r.state, r.state + t.state_count() * o.dim);
      v.push_back(static_cast<float>(r.freq));
      v.push_back(static_cast<float>(r.last_step));
    });
    return rows;
  };
  const auto want = dump(*plain);
  EXPECT_GT(want.size(), 0u);
  EXPECT_TRUE(want == dump(*recording));
  const TableStats got = recording->Stats(), reference = plain->Stats();
  EXPECT_EQ(got.rows, reference.rows);
  EXPECT_EQ(got.created_rows, reference.created_rows);
  EXPECT_EQ(got.dropped_push_keys, reference.dropped_push_keys);
  EXPECT_EQ(got.unadmitted_pulls, reference.unadmitted_pulls);
  EXPECT_EQ(got.evicted_capacity, reference.evicted_capacity);
  EXPECT_EQ(got.evicted_ttl, reference.evicted_ttl);
  EXPECT_EQ(got.pushed_keys, reference.pushed_keys);
  EXPECT_EQ(reference.push_keys_resolved_by_pull, 0);
  return got;
}

TEST(DynamicTable, PushOfThePulledKeysUsesTheirSlots_AdamWithDuplicates) {
  const TableStats st =
      CheckRecordedPullsChangeNothing(Options("rec_adam", OptimizerOptions::Type::kAdam), 1);
  EXPECT_EQ(st.push_keys_resolved_by_pull, st.pushed_keys);
}

TEST(DynamicTable, PushOfPullPartsEndToEndUsesTheirSlots_SgdOverAPool) {
  ThreadPool pool(3);
  const TableStats st = CheckRecordedPullsChangeNothing(
      Options("rec_parts", OptimizerOptions::Type::kSgd), 4, {}, &pool);
  EXPECT_EQ(st.push_keys_resolved_by_pull, st.pushed_keys);
}

TEST(DynamicTable, RecordedPullWithAdmissionWithinItIsLookedUpAgain_Ftrl) {
  // A key first unadmitted, then admitted by its duplicate later in the same pull, has a row the
  // record does not know of; those shards' keys are looked up again.
  TableOptions o = Options("rec_admit", OptimizerOptions::Type::kFtrl);
  o.min_count = 2;
  const TableStats st = CheckRecordedPullsChangeNothing(o, 2);
  EXPECT_GT(st.unadmitted_pulls, 0);
  EXPECT_LT(st.push_keys_resolved_by_pull, st.pushed_keys);
}

TEST(DynamicTable, RecordedPullThatEvictedIsLookedUpAgain_AdagradUnderACap) {
  // Under the memory cap a pull evicts rows, possibly ones it had already resolved, and reuses
  // their slots for later keys.
  TableOptions o = Options("rec_cap", OptimizerOptions::Type::kAdagrad);
  o.max_memory_mb = 4;
  o.num_shards = 4;
  o.rows_per_slab = 256;
  const TableStats st = CheckRecordedPullsChangeNothing(o, 1);
  EXPECT_GT(st.evicted_capacity, 0);
  EXPECT_LT(st.push_keys_resolved_by_pull, st.pushed_keys);
}

TEST(DynamicTable, RowsErasedAndSlotsReusedBetweenPullAndPushAreNotUpdated) {
  // Between the pull and the push, some pulled keys lose their rows and new keys (a pull too
  // small to be recorded) take their slots: the push must drop the erased keys' gradients, not
  // apply them to the new rows.
  const TableStats st = CheckRecordedPullsChangeNothing(
      Options("rec_erase", OptimizerOptions::Type::kAdam), 1, [](DynamicTable& t, int round) {
        const std::vector<uint64_t> fixed = RandomKeys(3 * DynamicTable::kParallelKeys / 2, 8);
        for (int i = 0; i < 50; ++i) t.Erase(fixed[static_cast<size_t>(i * 7 + round)]);
        const std::vector<uint64_t> fresh = RandomKeys(100, 5000 + round);
        std::vector<float> rows(100 * t.dim());
        ASSERT_TRUE(t.Pull(fresh.data(), 100, rows.data()).ok());
      });
  EXPECT_GT(st.dropped_push_keys, 0);
  EXPECT_LT(st.push_keys_resolved_by_pull, st.pushed_keys);
}

TEST(DynamicTable, RowsSweptByTtlBetweenPullAndPushAreNotUpdated) {
  TableOptions o = Options("rec_ttl", OptimizerOptions::Type::kSgd);
  o.ttl_steps = 2;
  o.ttl_sweep_interval = 1;
  const TableStats st = CheckRecordedPullsChangeNothing(o, 1, [](DynamicTable& t, int round) {
    if (round != 3) return;
    // Every row expires and is swept; new keys (a pull too small to be recorded) take their
    // slots.
    t.AdvanceStep(100);
    const std::vector<uint64_t> fresh = RandomKeys(200, 6000);
    std::vector<float> rows(200 * t.dim());
    ASSERT_TRUE(t.Pull(fresh.data(), 200, rows.data()).ok());
  });
  EXPECT_GT(st.evicted_ttl, 0);
  EXPECT_GT(st.dropped_push_keys, 0);
}

TEST(DynamicTable, PushOfOtherKeysThanThePullIsLookedUp) {
  auto t = MakeTable(Options("rec_other", OptimizerOptions::Type::kSgd));
  const int64_t n = 1000;
  const std::vector<uint64_t> keys = RandomKeys(n, 9);
  std::vector<float> rows(n * t->dim());
  ASSERT_TRUE(t->Pull(keys.data(), n, rows.data()).ok());
  std::vector<uint64_t> other = keys;
  std::swap(other[10], other[11]);  // the same keys in another order: no record matches
  const std::vector<float> grads = RandomGrads(n * t->dim(), 10);
  ASSERT_TRUE(t->Push(other.data(), n, grads.data()).ok());
  EXPECT_EQ(t->Stats().push_keys_resolved_by_pull, 0);
  ASSERT_TRUE(t->Push(keys.data(), n - 1, grads.data()).ok());  // a prefix: no record matches
  EXPECT_EQ(t->Stats().push_keys_resolved_by_pull, 0);
  ASSERT_TRUE(t->Push(keys.data(), n, grads.data()).ok());
  EXPECT_EQ(t->Stats().push_keys_resolved_by_pull, n);
  ASSERT_TRUE(t->Push(keys.data(), n, grads.data()).ok());  // the record was used up
  EXPECT_EQ(t->Stats().push_keys_resolved_by_pull, n);
}

}  // namespace
}  // namespace ips::ps
