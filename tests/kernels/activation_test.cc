// Tests of kernels/activation.h on the CPU: fused bias + activation, its backward, bias
// gradients, PReLU and dropout, against naive loops and float64 finite differences.
#include "kernels/activation.h"

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

double NaiveAct(Activation act, double slope, double v) {
  switch (act) {
    case Activation::kRelu:
      return v > 0 ? v : 0;
    case Activation::kLeakyRelu:
      return v > 0 ? v : slope * v;
    case Activation::kSigmoid:
      return 1 / (1 + std::exp(-v));
    case Activation::kTanh:
      return std::tanh(v);
    default:
      return v;
  }
}

const Activation kAll[] = {Activation::kIdentity, Activation::kRelu, Activation::kLeakyRelu,
                           Activation::kSigmoid, Activation::kTanh};

class BiasActivationTest : public ::testing::TestWithParam<Activation> {};

TEST_P(BiasActivationTest, ForwardMatchesNaive_FloatAndPool) {
  const Activation act = GetParam();
  Rng rng(1);
  ThreadPool pool(2);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {512, 200}}) {
    const auto x = Random(rows * cols, rng), bias = Random(cols, rng);
    std::vector<double> want(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        want[r * cols + c] = NaiveAct(act, 0.1, x[r * cols + c] + bias[c]);
    std::vector<float> xf(x.begin(), x.end()), bf(bias.begin(), bias.end()), yf(x.size());
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      Poison(yf);
      BiasActivationArgs<float> a;
      a.rows = rows;
      a.cols = cols;
      a.act = act;
      a.slope = 0.1f;
      a.x = xf.data();
      a.bias = bf.data();
      a.y = yf.data();
      ASSERT_TRUE(BiasActivationForward(Context{Device::kCpu, p}, a).ok());
      EXPECT_TRUE(AllClose(yf, want, {1e-6, 1e-5})) << rows << "x" << cols;
    }
    // In place, no bias.
    std::vector<float> inplace(x.begin(), x.end());
    BiasActivationArgs<float> a;
    a.rows = rows;
    a.cols = cols;
    a.act = act;
    a.slope = 0.1f;
    a.x = inplace.data();
    a.y = inplace.data();
    ASSERT_TRUE(BiasActivationForward(Context{}, a).ok());
    for (size_t i = 0; i < x.size(); ++i) want[i] = NaiveAct(act, 0.1, x[i]);
    EXPECT_TRUE(AllClose(inplace, want, {1e-6, 1e-5}));
  }
}

TEST_P(BiasActivationTest, BackwardGradcheck_Double) {
  const Activation act = GetParam();
  Rng rng(2);
  const int64_t rows = 5, cols = 7;
  auto x = Random(rows * cols, rng), bias = Random(cols, rng);
  const auto up = Random(rows * cols, rng);
  std::vector<double> y(x.size());
  auto forward = [&]() {
    BiasActivationArgs<double> a;
    a.rows = rows;
    a.cols = cols;
    a.act = act;
    a.slope = 0.1;
    a.x = x.data();
    a.bias = bias.data();
    a.y = y.data();
    EXPECT_TRUE(BiasActivationForward(Context{}, a).ok());
    return Dot(y, up);
  };
  forward();
  std::vector<double> dpre(x.size()), dbias(cols);
  Poison(dpre);
  Poison(dbias);
  ActivationBackwardArgs<double> b;
  b.n = rows * cols;
  b.act = act;
  b.slope = 0.1;
  b.y = y.data();
  b.dy = up.data();
  b.dx = dpre.data();
  ASSERT_TRUE(ActivationBackward(Context{}, b).ok());
  BiasGradArgs<double> g;
  g.rows = rows;
  g.cols = cols;
  g.dy = dpre.data();
  g.dbias = dbias.data();
  ASSERT_TRUE(BiasGrad(Context{}, g).ok());
  EXPECT_TRUE(CheckGradient("x", x, dpre, forward, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("bias", bias, dbias, forward, 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(All, BiasActivationTest, ::testing::ValuesIn(kAll));

TEST(BiasGrad, ColumnSumsMatchNaive_FloatPoolAndEdges) {
  Rng rng(3);
  ThreadPool pool(2);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{0, 5}, {1, 1}, {1, 300}, {2049, 129}}) {
    const auto dy = Random(rows * cols, rng);
    std::vector<double> want(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) want[c] += dy[r * cols + c];
    std::vector<float> dyf(dy.begin(), dy.end()), db(cols);
    Poison(db);
    BiasGradArgs<float> g;
    g.rows = rows;
    g.cols = cols;
    g.dy = dyf.data();
    g.dbias = db.data();
    ASSERT_TRUE(BiasGrad(Context{Device::kCpu, &pool}, g).ok());
    EXPECT_TRUE(AllClose(db, want, {1e-4, 1e-5})) << rows << "x" << cols;
  }
}

TEST(BiasActivation, RejectsBadArguments) {
  std::vector<float> x(4);
  BiasActivationArgs<float> a;
  a.rows = -1;
  a.cols = 2;
  a.x = a.y = x.data();
  EXPECT_EQ(BiasActivationForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a.rows = 2;
  a.act = Activation::kLeakyRelu;
  a.slope = -0.5f;
  EXPECT_EQ(BiasActivationForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a.slope = 0.1f;
  a.y = nullptr;
  EXPECT_EQ(BiasActivationForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a.y = x.data();
  if (!CudaBuilt()) {  // with CUDA built, these host pointers must not reach a kernel
    EXPECT_EQ(BiasActivationForward(Context{Device::kCuda}, a).code(), StatusCode::kUnimplemented);
  }
}

TEST(Prelu, ForwardMatchesNaiveAndBackwardGradcheck_Double) {
  Rng rng(4);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {9, 6}}) {
    auto x = Random(rows * cols, rng), alpha = Random(cols, rng, 0.05, 0.5);
    const auto up = Random(rows * cols, rng);
    std::vector<double> y(x.size());
    auto forward = [&]() {
      PreluArgs<double> a;
      a.rows = rows;
      a.cols = cols;
      a.x = x.data();
      a.alpha = alpha.data();
      a.y = y.data();
      EXPECT_TRUE(PreluForward(Context{}, a).ok());
      return Dot(y, up);
    };
    Poison(y);
    forward();
    for (int64_t i = 0; i < rows * cols; ++i)
      ASSERT_DOUBLE_EQ(y[i], x[i] > 0 ? x[i] : alpha[i % cols] * x[i]);
    std::vector<double> dx(x.size()), dalpha(cols);
    Poison(dx);
    Poison(dalpha);
    PreluArgs<double> b;
    b.rows = rows;
    b.cols = cols;
    b.x = x.data();
    b.alpha = alpha.data();
    b.dy = up.data();
    b.dx = dx.data();
    b.dalpha = dalpha.data();
    ASSERT_TRUE(PreluBackward(Context{}, b).ok());
    EXPECT_TRUE(CheckGradient("x", x, dx, forward));
    EXPECT_TRUE(CheckGradient("alpha", alpha, dalpha, forward));
  }
}

TEST(Prelu, FloatBackwardMatchesDoubleInPlaceWithPool) {
  Rng rng(5);
  ThreadPool pool(2);
  const int64_t rows = 512, cols = 200;
  const auto x = Random(rows * cols, rng), alpha = Random(cols, rng, 0.05, 0.5),
             dy = Random(rows * cols, rng);
  std::vector<double> dx(x.size()), dalpha(cols);
  PreluArgs<double> b;
  b.rows = rows;
  b.cols = cols;
  b.x = x.data();
  b.alpha = alpha.data();
  b.dy = dy.data();
  b.dx = dx.data();
  b.dalpha = dalpha.data();
  ASSERT_TRUE(PreluBackward(Context{}, b).ok());
  std::vector<float> xf(x.begin(), x.end()), af(alpha.begin(), alpha.end()),
      gf(dy.begin(), dy.end()), daf(cols);
  Poison(daf);
  PreluArgs<float> f;
  f.rows = rows;
  f.cols = cols;
  f.x = xf.data();
  f.alpha = af.data();
  f.dy = gf.data();
  f.dx = gf.data();  // in place
  f.dalpha = daf.data();
  ASSERT_TRUE(PreluBackward(Context{Device::kCpu, &pool}, f).ok());
  EXPECT_TRUE(AllClose(gf, dx, {1e-6, 1e-5}));
  EXPECT_TRUE(AllClose(daf, dalpha, {1e-4, 1e-4}));
}

TEST(Dropout, MaskIsDeterministicScaledAndHasTheRightRate) {
  Rng rng(6);
  const int64_t n = 200000;
  const auto x = Random(n, rng, 0.5, 1.5);  // never zero, so a zero output means dropped
  std::vector<float> xf(x.begin(), x.end()), y1(n), y2(n), y3(n);
  for (float p : {0.1f, 0.5f}) {
    DropoutArgs<float> a;
    a.n = n;
    a.p = p;
    a.seed = 42;
    a.offset = 1000;
    a.x = xf.data();
    a.y = y1.data();
    Poison(y1);
    ASSERT_TRUE(DropoutForward(Context{}, a).ok());
    ThreadPool pool(2);
    a.y = y2.data();
    Poison(y2);
    ASSERT_TRUE(DropoutForward(Context{Device::kCpu, &pool}, a).ok());
    EXPECT_TRUE(AllClose(y1, y2, {0, 0}));
    a.offset = 1000 + n;  // next counter range: a fresh mask
    a.y = y3.data();
    ASSERT_TRUE(DropoutForward(Context{}, a).ok());
    int64_t kept = 0, same = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool k1 = y1[i] != 0.f;
      kept += k1;
      same += k1 == (y3[i] != 0.f);
      if (k1) {
        ASSERT_FLOAT_EQ(y1[i], xf[i] / (1.f - p));
      }
      ASSERT_EQ(k1, DropoutBits(42, 1000 + i) >= DropoutThreshold(p));
    }
    const double rate = 1.0 - static_cast<double>(kept) / n;
    EXPECT_NEAR(rate, p, 0.01);
    // Independent masks agree on a fraction p^2 + (1-p)^2 of the elements.
    EXPECT_NEAR(static_cast<double>(same) / n, p * p + (1 - p) * (1 - p), 0.01);
  }
}

TEST(Dropout, BitsAreMix64OfSeedXorCounter) {
  // The device-compatible restatement must stay the same hash as common/random.h's Mix64 (the
  // attention kernels' dropout uses Mix64 directly).
  Rng rng(8);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t seed = rng.Next(), counter = rng.Next() >> (i % 64);
    ASSERT_EQ(DropoutBits(seed, counter), Mix64(seed ^ counter));
  }
  EXPECT_EQ(DropoutThreshold(0.f), 0u);
  EXPECT_EQ(DropoutThreshold(0.5f), uint64_t{1} << 63);
}

TEST(Dropout, EdgeRatesAndBackwardGradcheck_Double) {
  Rng rng(7);
  const int64_t n = 64;
  auto x = Random(n, rng);
  const auto up = Random(n, rng);
  std::vector<double> y(n);
  for (float p : {0.f, 0.3f, 1.f}) {
    auto forward = [&]() {
      DropoutArgs<double> a;
      a.n = n;
      a.p = p;
      a.seed = 9;
      a.x = x.data();
      a.y = y.data();
      EXPECT_TRUE(DropoutForward(Context{}, a).ok());
      return Dot(y, up);
    };
    Poison(y);
    forward();
    if (p == 0.f) {
      EXPECT_TRUE(AllClose(y, x, {0, 0}));
    }
    if (p == 1.f) {
      EXPECT_TRUE(AllClose(y, std::vector<double>(n, 0.0), {0, 0}));
    }
    std::vector<double> dx(n);
    Poison(dx);
    DropoutArgs<double> b;
    b.n = n;
    b.p = p;
    b.seed = 9;
    b.dy = up.data();
    b.dx = dx.data();
    ASSERT_TRUE(DropoutBackward(Context{}, b).ok());
    EXPECT_TRUE(CheckGradient("x", x, dx, forward)) << "p=" << p;
  }
  DropoutArgs<double> bad;
  bad.n = 1;
  bad.p = 1.5f;
  bad.x = x.data();
  bad.y = y.data();
  EXPECT_EQ(DropoutForward(Context{}, bad).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips::kernels
