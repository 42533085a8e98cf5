// Tests of kernels/norm.h on the CPU: LayerNorm, BatchNorm1d (training and inference, running
// statistics) and Dice, against naive float64 formulas and finite differences.
#include "kernels/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

using testing::AllClose;
using testing::CheckGradient;
using testing::Dot;
using testing::FillUniform;
using testing::Poison;

std::vector<double> Random(int64_t n, Rng& rng, double lo = -2, double hi = 2) {
  return testing::RandomUniform(n, rng, lo, hi);
}

// ---- LayerNorm ----------------------------------------------------------------------------------

TEST(LayerNorm, ForwardMatchesNaive_FloatWithPool) {
  Rng rng(1);
  ThreadPool pool(2);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 1}, {1, 50}, {2500, 50}, {3, 129}}) {
    const auto x = Random(rows * dim, rng), gamma = Random(dim, rng), beta = Random(dim, rng);
    std::vector<double> want(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double m = 0, v = 0;
      for (int64_t j = 0; j < dim; ++j) m += x[r * dim + j] / dim;
      for (int64_t j = 0; j < dim; ++j) v += (x[r * dim + j] - m) * (x[r * dim + j] - m) / dim;
      for (int64_t j = 0; j < dim; ++j)
        want[r * dim + j] = (x[r * dim + j] - m) / std::sqrt(v + 1e-5) * gamma[j] + beta[j];
    }
    std::vector<float> xf(x.begin(), x.end()), gf(gamma.begin(), gamma.end()),
        bf(beta.begin(), beta.end()), y(x.size()), mean(rows), rstd(rows);
    Poison(y);
    LayerNormArgs<float> a;
    a.rows = rows;
    a.dim = dim;
    a.x = xf.data();
    a.gamma = gf.data();
    a.beta = bf.data();
    a.y = y.data();
    a.mean = mean.data();
    a.rstd = rstd.data();
    ASSERT_TRUE(LayerNormForward(Context{Device::kCpu, &pool}, a).ok());
    // dim 1: xhat is 0 whatever x is, y = beta.
    EXPECT_TRUE(AllClose(y, want, {1e-4, 1e-4})) << rows << "x" << dim;
  }
}

TEST(LayerNorm, BackwardGradcheck_Double) {
  Rng rng(2);
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 2}, {4, 9}}) {
    auto x = Random(rows * dim, rng), gamma = Random(dim, rng), beta = Random(dim, rng);
    const auto up = Random(rows * dim, rng);
    std::vector<double> y(x.size()), mean(rows), rstd(rows);
    LayerNormArgs<double> a;
    a.rows = rows;
    a.dim = dim;
    a.x = x.data();
    a.gamma = gamma.data();
    a.beta = beta.data();
    a.y = y.data();
    a.mean = mean.data();
    a.rstd = rstd.data();
    auto forward = [&]() {
      EXPECT_TRUE(LayerNormForward(Context{}, a).ok());
      return Dot(y, up);
    };
    forward();
    std::vector<double> dx(x.size()), dg(dim), db(dim);
    Poison(dx);
    Poison(dg);
    Poison(db);
    a.dy = up.data();
    a.dx = dx.data();
    a.dgamma = dg.data();
    a.dbeta = db.data();
    ASSERT_TRUE(LayerNormBackward(Context{}, a).ok());
    EXPECT_TRUE(CheckGradient("x", x, dx, forward));
    EXPECT_TRUE(CheckGradient("gamma", gamma, dg, forward));
    EXPECT_TRUE(CheckGradient("beta", beta, db, forward));
  }
}

// ---- BatchNorm1d ------------------------------------------------------------------------------

TEST(BatchNorm, TrainingForwardAndRunningStatsMatchTorchFormulas_Float) {
  Rng rng(3);
  ThreadPool pool(2);
  const int64_t n = 37, c = 70;
  const auto x = Random(n * c, rng), gamma = Random(c, rng), beta = Random(c, rng);
  const auto rm = Random(c, rng), rv = Random(c, rng, 0.5, 2);
  std::vector<double> want(x.size()), want_rm(c), want_rv(c);
  for (int64_t j = 0; j < c; ++j) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; ++i) m += x[i * c + j] / n;
    for (int64_t i = 0; i < n; ++i) v += (x[i * c + j] - m) * (x[i * c + j] - m);
    for (int64_t i = 0; i < n; ++i)
      want[i * c + j] = (x[i * c + j] - m) / std::sqrt(v / n + 1e-5) * gamma[j] + beta[j];
    want_rm[j] = 0.9 * rm[j] + 0.1 * m;
    want_rv[j] = 0.9 * rv[j] + 0.1 * v / (n - 1);
  }
  std::vector<float> xf(x.begin(), x.end()), gf(gamma.begin(), gamma.end()),
      bf(beta.begin(), beta.end()), rmf(rm.begin(), rm.end()), rvf(rv.begin(), rv.end()),
      y(x.size()), sm(c), sr(c);
  Poison(y);
  BatchNormArgs<float> a;
  a.n = n;
  a.c = c;
  a.x = xf.data();
  a.gamma = gf.data();
  a.beta = bf.data();
  a.running_mean = rmf.data();
  a.running_var = rvf.data();
  a.y = y.data();
  a.save_mean = sm.data();
  a.save_rstd = sr.data();
  ASSERT_TRUE(BatchNormForward(Context{Device::kCpu, &pool}, a).ok());
  EXPECT_TRUE(AllClose(y, want, {1e-4, 1e-4}));
  EXPECT_TRUE(AllClose(rmf, want_rm, {1e-6, 1e-5}));
  EXPECT_TRUE(AllClose(rvf, want_rv, {1e-6, 1e-5}));

  // Inference uses the running statistics and leaves them alone.
  a.training = false;
  Poison(y);
  ASSERT_TRUE(BatchNormForward(Context{}, a).ok());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j)
      want[i * c + j] =
          (x[i * c + j] - want_rm[j]) / std::sqrt(want_rv[j] + 1e-5) * gamma[j] + beta[j];
  EXPECT_TRUE(AllClose(y, want, {1e-4, 1e-4}));
  EXPECT_TRUE(AllClose(rmf, want_rm, {1e-6, 1e-5}));
}

TEST(BatchNorm, BackwardGradcheck_TrainingAndInference_Double) {
  Rng rng(4);
  for (bool training : {true, false}) {
    for (bool affine : {true, false}) {
      const int64_t n = training ? 2 : 1, c = 3;
      for (int64_t nn : {n, int64_t{6}}) {
        auto x = Random(nn * c, rng), gamma = Random(c, rng), beta = Random(c, rng);
        auto rm = Random(c, rng), rv = Random(c, rng, 0.5, 2);
        const auto up = Random(nn * c, rng);
        std::vector<double> y(x.size()), sm(c), sr(c);
        BatchNormArgs<double> a;
        a.n = nn;
        a.c = c;
        a.training = training;
        a.x = x.data();
        a.gamma = affine ? gamma.data() : nullptr;
        a.beta = affine ? beta.data() : nullptr;
        // Running stats are only read in inference (the training update is not part of L).
        std::vector<double> rm_copy, rv_copy;
        a.y = y.data();
        a.save_mean = sm.data();
        a.save_rstd = sr.data();
        auto forward = [&]() {
          rm_copy = rm;
          rv_copy = rv;
          a.running_mean = rm_copy.data();
          a.running_var = rv_copy.data();
          EXPECT_TRUE(BatchNormForward(Context{}, a).ok());
          return Dot(y, up);
        };
        forward();
        std::vector<double> dx(x.size()), dg(c), db(c);
        Poison(dx);
        Poison(dg);
        Poison(db);
        a.dy = up.data();
        a.dx = dx.data();
        a.dgamma = dg.data();
        a.dbeta = db.data();
        ASSERT_TRUE(BatchNormBackward(Context{}, a).ok());
        EXPECT_TRUE(CheckGradient("x", x, dx, forward, 1e-6, 1e-5))
            << "training=" << training << " n=" << nn;
        if (affine) {
          EXPECT_TRUE(CheckGradient("gamma", gamma, dg, forward, 1e-6, 1e-5));
          EXPECT_TRUE(CheckGradient("beta", beta, db, forward, 1e-6, 1e-5));
        }
      }
    }
  }
}

TEST(BatchNorm, TrainingWithOneRowIsRejectedLikeTorch) {
  std::vector<float> x(3), y(3), sm(3), sr(3);
  BatchNormArgs<float> a;
  a.n = 1;
  a.c = 3;
  a.x = x.data();
  a.y = y.data();
  a.save_mean = sm.data();
  a.save_rstd = sr.data();
  EXPECT_EQ(BatchNormForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a.training = false;  // inference without running stats
  EXPECT_EQ(BatchNormForward(Context{}, a).code(), StatusCode::kInvalidArgument);
}

// ---- Dice -------------------------------------------------------------------------------------

TEST(Dice, ForwardMatchesPeerFormula_TrainingAndInference_Float) {
  Rng rng(5);
  ThreadPool pool(2);
  const int64_t n = 512, c = 80;
  const auto x = Random(n * c, rng), alpha = Random(c, rng, -0.5, 0.5);
  const auto rm = Random(c, rng), rv = Random(c, rng, 0.5, 2);
  std::vector<float> xf(x.begin(), x.end()), af(alpha.begin(), alpha.end()),
      rmf(rm.begin(), rm.end()), rvf(rv.begin(), rv.end()), y(x.size()), sm(c), sr(c);
  for (bool training : {true, false}) {
    std::vector<double> want(x.size()), mean(c), var(c);
    for (int64_t j = 0; j < c; ++j) {
      if (training) {
        for (int64_t i = 0; i < n; ++i) mean[j] += x[i * c + j] / n;
        for (int64_t i = 0; i < n; ++i)
          var[j] += (x[i * c + j] - mean[j]) * (x[i * c + j] - mean[j]) / n;
      } else {
        mean[j] = rmf[j];
        var[j] = rvf[j];
      }
      for (int64_t i = 0; i < n; ++i) {
        const double s = x[i * c + j];
        const double p = 1 / (1 + std::exp(-(s - mean[j]) / std::sqrt(var[j] + 1e-8)));
        want[i * c + j] = p * s + (1 - p) * alpha[j] * s;
      }
    }
    Poison(y);
    DiceArgs<float> a;
    a.n = n;
    a.c = c;
    a.training = training;
    a.x = xf.data();
    a.alpha = af.data();
    a.running_mean = rmf.data();
    a.running_var = rvf.data();
    a.y = y.data();
    a.save_mean = sm.data();
    a.save_rstd = sr.data();
    ASSERT_TRUE(DiceForward(Context{Device::kCpu, &pool}, a).ok());
    EXPECT_TRUE(AllClose(y, want, {1e-5, 1e-4})) << "training=" << training;
  }
}

TEST(Dice, BackwardGradcheck_TrainingAndInference_Double) {
  Rng rng(6);
  for (bool training : {true, false}) {
    for (int64_t n : {int64_t{2}, int64_t{7}}) {
      const int64_t c = 4;
      auto x = Random(n * c, rng), alpha = Random(c, rng, -0.5, 0.5);
      const auto rm = Random(c, rng), rv = Random(c, rng, 0.5, 2);
      const auto up = Random(n * c, rng);
      std::vector<double> y(x.size()), sm(c), sr(c), rm_copy, rv_copy;
      DiceArgs<double> a;
      a.n = n;
      a.c = c;
      a.training = training;
      a.x = x.data();
      a.alpha = alpha.data();
      a.y = y.data();
      a.save_mean = sm.data();
      a.save_rstd = sr.data();
      auto forward = [&]() {
        rm_copy = rm;
        rv_copy = rv;
        a.running_mean = rm_copy.data();
        a.running_var = rv_copy.data();
        EXPECT_TRUE(DiceForward(Context{}, a).ok());
        return Dot(y, up);
      };
      forward();
      std::vector<double> dx(x.size()), da(c);
      Poison(dx);
      Poison(da);
      a.dy = up.data();
      a.dx = dx.data();
      a.dalpha = da.data();
      ASSERT_TRUE(DiceBackward(Context{}, a).ok());
      // eps = 1e-8 makes the normalisation steep for tiny variances; these inputs keep it tame.
      EXPECT_TRUE(CheckGradient("x", x, dx, forward, 1e-6, 1e-5))
          << "training=" << training << " n=" << n;
      EXPECT_TRUE(CheckGradient("alpha", alpha, da, forward, 1e-6, 1e-5));
    }
  }
}

TEST(Dice, FloatBackwardMatchesDouble_Pool) {
  Rng rng(7);
  ThreadPool pool(2);
  const int64_t n = 512, c = 200;
  const auto x = Random(n * c, rng), alpha = Random(c, rng, -0.5, 0.5), dy = Random(n * c, rng);
  std::vector<double> y(x.size()), sm(c), sr(c), dx(x.size()), da(c);
  DiceArgs<double> a;
  a.n = n;
  a.c = c;
  a.x = x.data();
  a.alpha = alpha.data();
  a.y = y.data();
  a.save_mean = sm.data();
  a.save_rstd = sr.data();
  a.dy = dy.data();
  a.dx = dx.data();
  a.dalpha = da.data();
  ASSERT_TRUE(DiceForward(Context{}, a).ok());
  ASSERT_TRUE(DiceBackward(Context{}, a).ok());
  std::vector<float> xf(x.begin(), x.end()), af(alpha.begin(), alpha.end()),
      dyf(dy.begin(), dy.end()), yf(x.size()), smf(c), srf(c), dxf(x.size()), daf(c);
  Poison(dxf);
  Poison(daf);
  DiceArgs<float> f;
  f.n = n;
  f.c = c;
  f.x = xf.data();
  f.alpha = af.data();
  f.y = yf.data();
  f.save_mean = smf.data();
  f.save_rstd = srf.data();
  f.dy = dyf.data();
  f.dx = dxf.data();
  f.dalpha = daf.data();
  ASSERT_TRUE(DiceForward(Context{Device::kCpu, &pool}, f).ok());
  ASSERT_TRUE(DiceBackward(Context{Device::kCpu, &pool}, f).ok());
  EXPECT_TRUE(AllClose(yf, y, {1e-5, 1e-4}));
  EXPECT_TRUE(AllClose(dxf, dx, {1e-5, 1e-4}));
  EXPECT_TRUE(AllClose(daf, da, {1e-3, 1e-4}));
}

}  // namespace
}  // namespace ips::kernels
