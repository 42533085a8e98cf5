#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace ips {
namespace {

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 1000, 12345}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.ParallelFor(n, 3, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n << " " << i;
    }
  }
}

TEST(ThreadPool, ManySmallJobsInARow) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep)
    pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 20000);
}

}  // namespace
}  // namespace ips

namespace ips {
namespace {

TEST(ParallelForFree, NullPoolRunsInlineOnceAndEmptyRangeNotAtAll) {
  int calls = 0;
  int64_t covered = 0;
  ParallelFor(nullptr, 100, 8, [&](int64_t b, int64_t e) {
    ++calls;
    covered += e - b;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(covered, 100);
  ParallelFor(nullptr, 0, 8, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 1);
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  ParallelFor(&pool, 1000, 8, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 1000);
}

}  // namespace
}  // namespace ips
