// CPU tests of kernels/optimizer.h: sparse and dense updates against straightforward scalar
// float64 formulas on random inputs (several steps, random non-zero state), single-step values
// worked out by hand, and torch.optim.SparseAdam / Adagrad trajectories recorded from PyTorch.
#include "kernels/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::FillUniform;

// One element, the rules exactly as written in optimizer.h, in double.
void RefUpdate(const OptimizerHyper& h, int64_t step, double& p, double& s0, double& s1, double g) {
  switch (h.kind) {
    case OptimizerKind::kSgd:
      p -= h.lr * g;
      break;
    case OptimizerKind::kAdagrad:
      s0 += g * g;
      p -= h.lr * g / (std::sqrt(s0) + h.adagrad_eps);
      break;
    case OptimizerKind::kAdam: {
      s0 = h.beta1 * s0 + (1 - h.beta1) * g;
      s1 = h.beta2 * s1 + (1 - h.beta2) * g * g;
      const double step_size =
          h.lr * std::sqrt(1 - std::pow(h.beta2, step)) / (1 - std::pow(h.beta1, step));
      p -= step_size * s0 / (std::sqrt(s1) + h.adam_eps);
      break;
    }
    case OptimizerKind::kFtrl: {
      const double sigma = (std::sqrt(s1 + g * g) - std::sqrt(s1)) / h.ftrl_alpha;
      s0 += g - sigma * p;
      s1 += g * g;
      if (std::fabs(s0) <= h.ftrl_l1) {
        p = 0;
      } else {
        const double sign = s0 > 0 ? 1.0 : -1.0;
        p = -(s0 - sign * h.ftrl_l1) / ((h.ftrl_beta + std::sqrt(s1)) / h.ftrl_alpha + h.ftrl_l2);
      }
      break;
    }
  }
}

std::vector<OptimizerHyper> AllKinds() {
  return {OptimizerHyper::Sgd(0.05), OptimizerHyper::Adagrad(0.1),
          OptimizerHyper::Adam(0.01, 0.9, 0.999, 1e-8), OptimizerHyper::Ftrl(0.1, 1.0, 0.05, 0.5)};
}

// Random state that is valid for the kind: accumulators (Adagrad s, Adam v, FTRL n) positive.
void InitState(OptimizerKind kind, Rng& rng, std::vector<double>& s0, std::vector<double>& s1) {
  FillUniform(s0, rng, -0.5, 0.5);
  FillUniform(s1, rng, 0.01, 0.5);
  if (kind == OptimizerKind::kAdagrad) FillUniform(s0, rng, 0.01, 0.5);
}

template <typename T>
testing::Tolerance Tol() {
  return std::is_same_v<T, float> ? testing::Tolerance{2e-5, 2e-4}
                                  : testing::Tolerance{1e-12, 1e-10};
}

template <typename T>
std::vector<T> Cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
class OptimizerCpuTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptimizerCpuTest, Types);

TYPED_TEST(OptimizerCpuTest, SparseUpdateMatchesScalarReference_3Steps_D18) {
  using T = TypeParam;
  const int64_t rows = 300, dim = 18, num = 97;
  for (const OptimizerHyper& h : AllKinds()) {
    SCOPED_TRACE(OptimizerKindName(h.kind));
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      Rng rng(100 + threads);
      std::vector<double> p(rows * dim), s0(rows * dim), s1(rows * dim);
      FillUniform(p, rng);
      InitState(h.kind, rng, s0, s1);
      auto pt = Cast<T>(p), s0t = Cast<T>(s0), s1t = Cast<T>(s1);
      // Reference runs on the values as rounded to T, so only the update arithmetic differs.
      p.assign(pt.begin(), pt.end());
      s0.assign(s0t.begin(), s0t.end());
      s1.assign(s1t.begin(), s1t.end());
      for (int64_t step = 1; step <= 3; ++step) {
        std::vector<int64_t> perm(rows);
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t i = rows - 1; i > 0; --i) std::swap(perm[i], perm[rng.UniformInt(i + 1)]);
        std::vector<int64_t> idx(perm.begin(), perm.begin() + num);
        std::vector<double> g(num * dim);
        FillUniform(g, rng);
        const auto gt = Cast<T>(g);
        for (int64_t i = 0; i < num; ++i)
          for (int64_t d = 0; d < dim; ++d) {
            const int64_t e = idx[i] * dim + d;
            RefUpdate(h, step, p[e], s0[e], s1[e], static_cast<double>(gt[i * dim + d]));
          }
        SparseUpdateArgs<T> a;
        a.hyper = h;
        a.step = step;
        a.table_rows = rows;
        a.dim = dim;
        a.param = pt.data();
        a.state0 = s0t.data();
        a.state1 = s1t.data();
        a.num_rows = num;
        a.row_indices = idx.data();
        a.grad = gt.data();
        ASSERT_TRUE(SparseUpdate(Context{Device::kCpu, &pool}, a).ok());
        // Untouched rows must stay bit-identical; touched rows must match the reference.
        EXPECT_TRUE(AllClose(pt, p, Tol<T>())) << "step " << step;
        if (OptimizerStateCount(h.kind) >= 1) {
          EXPECT_TRUE(AllClose(s0t, s0, Tol<T>()));
        }
        if (OptimizerStateCount(h.kind) >= 2) {
          EXPECT_TRUE(AllClose(s1t, s1, Tol<T>()));
        }
      }
    }
  }
}

TYPED_TEST(OptimizerCpuTest, DenseUpdateMatchesScalarReference_Size10007) {
  using T = TypeParam;
  const int64_t n = 10007;
  ThreadPool pool(2);
  for (const OptimizerHyper& h : AllKinds()) {
    SCOPED_TRACE(OptimizerKindName(h.kind));
    Rng rng(200);
    std::vector<double> p(n), s0(n), s1(n), g(n);
    FillUniform(p, rng);
    InitState(h.kind, rng, s0, s1);
    auto pt = Cast<T>(p), s0t = Cast<T>(s0), s1t = Cast<T>(s1);
    p.assign(pt.begin(), pt.end());
    s0.assign(s0t.begin(), s0t.end());
    s1.assign(s1t.begin(), s1t.end());
    for (int64_t step = 1; step <= 2; ++step) {
      FillUniform(g, rng);
      const auto gt = Cast<T>(g);
      for (int64_t i = 0; i < n; ++i) RefUpdate(h, step, p[i], s0[i], s1[i], gt[i]);
      DenseUpdateArgs<T> a{h, step, n, pt.data(), s0t.data(), s1t.data(), gt.data()};
      ASSERT_TRUE(DenseUpdate(Context{Device::kCpu, &pool}, a).ok());
      EXPECT_TRUE(AllClose(pt, p, Tol<T>()));
      if (OptimizerStateCount(h.kind) >= 1) {
        EXPECT_TRUE(AllClose(s0t, s0, Tol<T>()));
      }
      if (OptimizerStateCount(h.kind) >= 2) {
        EXPECT_TRUE(AllClose(s1t, s1, Tol<T>()));
      }
    }
  }
}

// Single steps worked out by hand.
TEST(OptimizerCpu, HandComputedSingleSteps) {
  const Context ctx;
  {  // SGD: 1 - 0.1 * 0.5 = 0.95; -2 - 0.1 * (-3) = -1.7.
    std::vector<double> p = {1.0, -2.0}, g = {0.5, -3.0};
    DenseUpdateArgs<double> a{OptimizerHyper::Sgd(0.1), 1, 2, p.data(), nullptr, nullptr, g.data()};
    ASSERT_TRUE(DenseUpdate(ctx, a).ok());
    EXPECT_DOUBLE_EQ(p[0], 0.95);
    EXPECT_DOUBLE_EQ(p[1], -1.7);
  }
  {  // Adagrad from s = 0, g = 2: s = 4, p = 1 - 0.1 * 2 / 2 = 0.9 (eps 1e-10 negligible).
    std::vector<double> p = {1.0}, s = {0.0}, g = {2.0};
    DenseUpdateArgs<double> a{
        OptimizerHyper::Adagrad(0.1), 1, 1, p.data(), s.data(), nullptr, g.data()};
    ASSERT_TRUE(DenseUpdate(ctx, a).ok());
    EXPECT_DOUBLE_EQ(s[0], 4.0);
    EXPECT_NEAR(p[0], 0.9, 1e-10);
  }
  {  // Adam step 1 from zero moments moves each parameter by ~ -lr * sign(g), whatever |g|.
    std::vector<double> p = {0.5, 0.5, 0.5}, m(3, 0.0), v(3, 0.0), g = {3.0, -0.2, 1e-3};
    DenseUpdateArgs<double> a{
        OptimizerHyper::Adam(0.01), 1, 3, p.data(), m.data(), v.data(), g.data()};
    ASSERT_TRUE(DenseUpdate(ctx, a).ok());
    EXPECT_NEAR(p[0], 0.49, 1e-7);
    EXPECT_NEAR(p[1], 0.51, 1e-7);
    EXPECT_NEAR(p[2], 0.49, 1e-5);  // eps / sqrt(1 - beta2) = 3.2e-7 relative to |g| = 1e-3
    EXPECT_NEAR(m[0], 0.3, 1e-15);
    EXPECT_NEAR(v[0], 0.009, 1e-15);
  }
  {  // FTRL from z = n = 0, alpha 0.1, beta 1, l1 0.5, l2 1:
     // g = 2: n = 4, sigma = 2 / 0.1 = 20, z = 2 - 20 * 0 = 2 (p was 0),
     //        p = -(2 - 0.5) / ((1 + 2) / 0.1 + 1) = -1.5 / 31.
     // g = -0.3: |z| = 0.3 <= l1, p = 0.  g = -1 with p = 0.25: sigma = 10, z = -1 - 2.5 = -3.5,
     //        p = -(-3.5 + 0.5) / ((1 + 1) / 0.1 + 1) = 3 / 21.
    std::vector<double> p = {0.0, 0.0, 0.25}, z(3, 0.0), n(3, 0.0), g = {2.0, -0.3, -1.0};
    DenseUpdateArgs<double> a{
        OptimizerHyper::Ftrl(0.1, 1.0, 0.5, 1.0), 1, 3, p.data(), z.data(), n.data(), g.data()};
    ASSERT_TRUE(DenseUpdate(ctx, a).ok());
    EXPECT_DOUBLE_EQ(p[0], -1.5 / 31.0);
    EXPECT_EQ(p[1], 0.0);
    EXPECT_DOUBLE_EQ(z[2], -3.5);
    EXPECT_DOUBLE_EQ(p[2], 3.0 / 21.0);
  }
}

// Trajectory recorded with torch 1.13 (float64): SparseAdam(lr=0.01), 3x2 embedding, sparse
// gradients on rows {0, 2}, then {1}, then {0}. Row 1's first update uses step = 2 and row 0's
// second update step = 3: one step count per tensor, moments of untouched rows left alone.
TEST(OptimizerCpu, MatchesTorchSparseAdamTrajectory) {
  std::vector<double> p = {0.5, -0.25, 1.0, 2.0, -0.75, 0.125}, m(6, 0.0), v(6, 0.0);
  struct Step {
    std::vector<int64_t> rows;
    std::vector<double> grad;
    std::vector<double> want;  // param after the step (torch)
  };
  const std::vector<Step> steps = {
      {{0, 2},
       {0.1, -0.2, 0.4, 0.0},
       {0.4900000316226766, -0.2400000158113633, 1.0, 2.0, -0.7599999920943121, 0.125}},
      {{1},
       {0.3, 0.05},
       {0.4900000316226766, -0.2400000158113633, 0.9925586396082128, 1.9925586788273777,
        -0.7599999920943121, 0.125}},
      {{0},
       {-0.5, 0.7},
       {0.4951366750413173, -0.24456307142944217, 0.9925586396082128, 1.9925586788273777,
        -0.7599999920943121, 0.125}},
  };
  for (size_t k = 0; k < steps.size(); ++k) {
    SparseUpdateArgs<double> a;
    a.hyper = OptimizerHyper::Adam(0.01);
    a.step = static_cast<int64_t>(k) + 1;
    a.table_rows = 3;
    a.dim = 2;
    a.param = p.data();
    a.state0 = m.data();
    a.state1 = v.data();
    a.num_rows = static_cast<int64_t>(steps[k].rows.size());
    a.row_indices = steps[k].rows.data();
    a.grad = steps[k].grad.data();
    ASSERT_TRUE(SparseUpdate(Context{}, a).ok());
    EXPECT_TRUE(AllClose(p, steps[k].want, {1e-14, 1e-12})) << "after step " << k + 1;
  }
  // torch's exp_avg / exp_avg_sq after the three steps.
  EXPECT_TRUE(
      AllClose(m, std::vector<double>{-0.041, 0.052, 0.03, 0.005, 0.04, 0.0}, {1e-15, 1e-12}));
  EXPECT_TRUE(AllClose(v, std::vector<double>{0.00025999, 0.00052996, 9e-05, 2.5e-06, 0.00016, 0.0},
                       {1e-15, 1e-10}));
}

// torch.optim.Adagrad(lr=0.1) on a dense 3-vector, two steps (recorded from torch 1.13).
TEST(OptimizerCpu, MatchesTorchAdagradTrajectory) {
  std::vector<double> p = {0.5, -0.25, 1.0}, s(3, 0.0);
  const std::vector<std::vector<double>> grads = {{0.1, -0.2, 0.0}, {0.3, 0.05, -1.0}};
  const std::vector<std::vector<double>> want = {
      {0.4000000001, -0.15000000004999997, 1.0},
      {0.3051316703249486, -0.17425356254186855, 1.09999999999}};
  for (size_t k = 0; k < grads.size(); ++k) {
    DenseUpdateArgs<double> a{
        OptimizerHyper::Adagrad(0.1), 1, 3, p.data(), s.data(), nullptr, grads[k].data()};
    ASSERT_TRUE(DenseUpdate(Context{}, a).ok());
    EXPECT_TRUE(AllClose(p, want[k], {1e-14, 1e-12})) << "after step " << k + 1;
  }
}

TEST(OptimizerCpu, BadInputIsRejectedWithReason) {
  std::vector<float> p(20, 1.f), s0(20), s1(20), g(10, 0.1f);
  std::vector<int64_t> idx = {1, 5};
  SparseUpdateArgs<float> a;
  a.hyper = OptimizerHyper::Adam(0.01);
  a.step = 0;
  a.table_rows = 4;
  a.dim = 5;
  a.param = p.data();
  a.state0 = s0.data();
  a.state1 = s1.data();
  a.num_rows = 2;
  a.row_indices = idx.data();
  a.grad = g.data();
  Status s = SparseUpdate(Context{}, a);
  EXPECT_NE(s.message().find("step = 0"), std::string::npos) << s;
  a.step = 1;
  s = SparseUpdate(Context{}, a);
  EXPECT_NE(s.message().find("row_indices[1] = 5"), std::string::npos) << s;
  idx[1] = 3;
  a.state1 = nullptr;
  s = SparseUpdate(Context{}, a);
  EXPECT_NE(s.message().find("needs state1"), std::string::npos) << s;
  a.state1 = s1.data();
  EXPECT_TRUE(SparseUpdate(Context{}, a).ok());
  a.num_rows = -1;
  EXPECT_EQ(SparseUpdate(Context{}, a).code(), StatusCode::kInvalidArgument);
  if (!CudaBuilt()) {
    a.num_rows = 2;
    EXPECT_EQ(SparseUpdate(Context{Device::kCuda}, a).code(), StatusCode::kUnimplemented);
  }
}

}  // namespace
}  // namespace ips::kernels
