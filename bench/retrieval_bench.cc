// CPU benchmark of full-ranking retrieval scoring (worker/retrieval.h ScoreAllItems) at the shape
// of MIND on Amazon Games: 10,000 users x 23,715 items x K = 4 interests x d = 18.
//   ours      : ScoreAllItems: fused panel kernel (max over interests in registers), the held-out
//               item's rank and the top-100 list per user.
//   gemm_only : the [users*K x d] x [d x items] product alone through kernels::Gemm (OpenBLAS),
//               in blocks of 512 users, with no max, rank or top-K: what a GEMM-based scorer
//               costs before any of its reductions (a floor for that design, not for ours).
// First verifies ours on the first 64 users against a float64 brute force (the rank count and the
// score at every position of the top-100 list, up to float rounding), then times each: best of
// --runs (the VM is shared and noisy).
// Usage: retrieval_bench [--users N] [--items N] [--k K] [--dim D] [--threads T] [--runs R]
// Last line: RESULT retrieval_score ours_s=... gemm_only_s=... speedup=... users=... items=...
//            k=... dim=... threads=... target_s=2
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "kernels/gemm.h"
#include "worker/retrieval.h"

namespace ips {
namespace {

int64_t Flag(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return def;
}

int Main(int argc, char** argv) {
  const int64_t U = Flag(argc, argv, "--users", 10000), N = Flag(argc, argv, "--items", 23715);
  const int64_t K = Flag(argc, argv, "--k", 4), d = Flag(argc, argv, "--dim", 18);
  const int threads = static_cast<int>(Flag(argc, argv, "--threads", 2));
  const int runs = static_cast<int>(Flag(argc, argv, "--runs", 3));
  const int max_k = static_cast<int>(std::min<int64_t>(100, N));
  Rng rng(7);
  std::vector<float> v(U * K * d), items((N + 1) * d);
  for (auto& x : v) x = rng.UniformFloat() - 0.5f;
  for (auto& x : items) x = rng.UniformFloat() - 0.5f;
  std::vector<uint32_t> relevant(U);
  for (auto& r : relevant) r = 1 + static_cast<uint32_t>(rng.UniformInt(N));
  std::vector<int32_t> below(U), ties(U);
  std::vector<uint32_t> top(U * max_k);
  ThreadPool pool(threads);
  kernels::Context ctx;
  ctx.pool = &pool;

  // Verify on the first users.
  const int64_t check = std::min<int64_t>(64, U);
  Status st = ScoreAllItems(ctx, v.data(), check, K, d, items.data(), N, relevant.data(), max_k, 64,
                            2048, below.data(), ties.data(), top.data());
  if (!st.ok()) {
    std::fprintf(stderr, "ScoreAllItems: %s\n", st.ToString().c_str());
    return 1;
  }
  std::vector<double> s(N + 1);
  std::vector<uint32_t> ids(N);
  for (int64_t u = 0; u < check; ++u) {
    for (int64_t i = 1; i <= N; ++i) {
      double best = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < K; ++k) {
        double a = 0;
        for (int64_t c = 0; c < d; ++c)
          a += static_cast<double>(v[(u * K + k) * d + c]) * items[i * d + c];
        best = std::max(best, a);
      }
      s[i] = best;
    }
    // float vs double: scores within kEps of each other may legitimately order differently, so
    // the checks allow exactly that and nothing more.
    constexpr double kEps = 1e-5;
    const double pos = s[relevant[u]];
    int64_t lt = 0, near = 0;
    for (int64_t i = 1; i <= N; ++i) {
      if (i == relevant[u]) continue;
      lt += s[i] < pos - kEps;
      near += std::fabs(s[i] - pos) <= kEps;
    }
    for (int64_t i = 0; i < N; ++i) ids[i] = static_cast<uint32_t>(i + 1);
    std::partial_sort(ids.begin(), ids.begin() + max_k, ids.end(),
                      [&](uint32_t a, uint32_t b) { return s[a] > s[b]; });
    bool ok = below[u] >= lt && below[u] <= lt + near;
    for (int j = 0; j < max_k; ++j) ok = ok && std::fabs(s[top[u * max_k + j]] - s[ids[j]]) <= kEps;
    if (!ok) {
      std::fprintf(stderr,
                   "verification failed for user %ld (below %d, reference %ld + %ld near)\n",
                   static_cast<long>(u), below[u], static_cast<long>(lt), static_cast<long>(near));
      return 1;
    }
  }
  std::printf("verified %ld users against the float64 brute force\n", static_cast<long>(check));

  double ours = 1e30, gemm = 1e30;
  std::vector<float> c(static_cast<size_t>(512 * K * (N + 1)));
  for (int r = 0; r < runs; ++r) {
    Timer t;
    st = ScoreAllItems(ctx, v.data(), U, K, d, items.data(), N, relevant.data(), max_k, 64, 2048,
                       below.data(), ties.data(), top.data());
    ours = std::min(ours, t.Seconds());
    if (!st.ok()) return 1;
    t.Reset();
    for (int64_t u0 = 0; u0 < U; u0 += 512) {
      const int64_t nu = std::min<int64_t>(512, U - u0);
      st = kernels::Gemm(
          ctx, kernels::MakeGemmArgs<float>(false, true, nu * K, N + 1, d, v.data() + u0 * K * d, d,
                                            items.data(), d, c.data(), N + 1));
      if (!st.ok()) return 1;
    }
    gemm = std::min(gemm, t.Seconds());
  }
  std::printf("ours %.3f s (%.1f GFLOP/s), gemm_only %.3f s\n", ours,
              2.0 * U * K * (N + 1) * d / ours / 1e9, gemm);
  ResultLine("retrieval_score")
      .Add("ours_s", ours)
      .Add("gemm_only_s", gemm)
      .Add("speedup", gemm / ours)
      .Add("users", U)
      .Add("items", N)
      .Add("k", K)
      .Add("dim", d)
      .Add("threads", threads)
      .Add("target_s", 2.0)
      .Print();
  return 0;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) { return ips::Main(argc, argv); }
