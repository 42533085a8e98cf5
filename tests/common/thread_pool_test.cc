#include "common/thread_pool.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <system_error>
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
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(hits[i].load(), 1) << threads << " " << n << " " << i;
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

// Threads that cannot start (every thread maps a stack: with little address space left, few
// fit) are an error, not std::terminate: Create returns RESOURCE_EXHAUSTED naming the pool size,
// and the constructor throws std::system_error after joining the workers it started (destroying
// them joinable would terminate). Run in a child process, whose address-space limit reaches no
// other test; the child reports by its exit code (0 = as expected).
TEST(ThreadPool, ThreadsThatCannotStartAreAnErrorNotATerminate) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // A constructor that unwinds with its workers still waiting hangs in ~condition_variable:
    // end the child then (SIGALRM) rather than the test run.
    ::alarm(60);
    // The current mapping size plus 64 MiB: room for a few thread stacks (2 to 8 MiB each in
    // glibc's default), not for 255.
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages <= 0) ::_exit(20);
    const rlim_t limit = static_cast<rlim_t>(pages) * ::sysconf(_SC_PAGESIZE) + (64 << 20);
    struct rlimit as = {limit, limit};
    if (::setrlimit(RLIMIT_AS, &as) != 0) ::_exit(21);
    auto pool = ThreadPool::Create(256);
    if (pool.ok()) ::_exit(10);
    if (pool.status().code() != StatusCode::kResourceExhausted) ::_exit(11);
    if (pool.status().message().find("cannot start a pool of 256 threads") == std::string::npos)
      ::_exit(12);
    try {
      ThreadPool direct(256);
      ::_exit(13);
    } catch (const std::system_error&) {
    }
    auto small = ThreadPool::Create(2);  // the limit was reached, not the pool broken
    if (!small.ok()) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
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
