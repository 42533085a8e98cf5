#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/random.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

// Naive triple loop in double: the reference for every layout.
void NaiveGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const std::vector<double>& a,
               const std::vector<double>& b, std::vector<double>& c, double alpha, double beta) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = alpha * s + beta * c[i * n + j];
    }
}

class GemmCpuTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(GemmCpuTest, MatchesNaiveOnRandomInputs_Float) {
  const auto [ta, tb] = GetParam();
  Rng rng(7);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {37, 19, 53}, {512, 36, 108}}) {
    std::vector<double> a(m * k), b(k * n), c(m * n), c_ref;
    testing::FillUniform(a, rng);
    testing::FillUniform(b, rng);
    testing::FillUniform(c, rng);
    c_ref = c;
    NaiveGemm(ta, tb, m, n, k, a, b, c_ref, 0.5, 2.0);
    std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), cf(c.begin(), c.end());
    GemmArgs<float> g;
    g.trans_a = ta; g.trans_b = tb; g.m = m; g.n = n; g.k = k; g.alpha = 0.5f; g.beta = 2.0f;
    g.a = af.data(); g.lda = ta ? m : k; g.b = bf.data(); g.ldb = tb ? k : n;
    g.c = cf.data(); g.ldc = n;
    ASSERT_TRUE(Gemm(Context{}, g).ok());
    EXPECT_TRUE(testing::AllClose(cf, c_ref, {1e-4, 1e-4})) << m << "x" << n << "x" << k;
  }
}

TEST_P(GemmCpuTest, BetaZeroOverwritesPoisonedOutput_Double) {
  const auto [ta, tb] = GetParam();
  Rng rng(11);
  const int64_t m = 23, n = 17, k = 9;
  std::vector<double> a(m * k), b(k * n), c(m * n, 0.0), c_ref(m * n, 0.0);
  testing::FillUniform(a, rng);
  testing::FillUniform(b, rng);
  NaiveGemm(ta, tb, m, n, k, a, b, c_ref, 1.0, 0.0);
  testing::Poison(c);
  GemmArgs<double> g;
  g.trans_a = ta; g.trans_b = tb; g.m = m; g.n = n; g.k = k;
  g.a = a.data(); g.lda = ta ? m : k; g.b = b.data(); g.ldb = tb ? k : n; g.c = c.data(); g.ldc = n;
  ASSERT_TRUE(Gemm(Context{}, g).ok());
  EXPECT_TRUE(testing::AllClose(c, c_ref, {1e-12, 1e-12}));
}

INSTANTIATE_TEST_SUITE_P(Layouts, GemmCpuTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(GemmCpu, RejectsBadLeadingDimension) {
  std::vector<float> a(4), b(4), c(4);
  GemmArgs<float> g;
  g.m = g.n = g.k = 2; g.a = a.data(); g.lda = 1; g.b = b.data(); g.ldb = 2; g.c = c.data(); g.ldc = 2;
  EXPECT_EQ(Gemm(Context{}, g).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips::kernels
