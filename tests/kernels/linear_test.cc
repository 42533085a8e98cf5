// Tests of kernels/linear.h on the CPU: y = act(x W^T + b) against a naive loop, and the backward
// (x, W, b) against float64 finite differences for every activation.
#include "kernels/linear.h"

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

std::vector<double> Random(int64_t n, Rng& rng, double lo = -1, double hi = 1) {
  return testing::RandomUniform(n, rng, lo, hi);
}

class LinearTest : public ::testing::TestWithParam<Activation> {};

TEST_P(LinearTest, ForwardMatchesNaive_DinShapes_Float) {
  Rng rng(1);
  ThreadPool pool(2);
  const Activation act = GetParam();
  for (auto [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {512, 108, 200}}) {
    const auto x = Random(rows * in, rng), w = Random(out * in, rng, -0.2, 0.2),
               b = Random(out, rng);
    std::vector<double> want(rows * out);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = b[o];
        for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
        want[r * out + o] = act == Activation::kRelu        ? std::max(s, 0.0)
                            : act == Activation::kSigmoid   ? 1 / (1 + std::exp(-s))
                            : act == Activation::kTanh      ? std::tanh(s)
                            : act == Activation::kLeakyRelu ? (s > 0 ? s : 0.2 * s)
                                                            : s;
      }
    std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), bf(b.begin(), b.end()),
        y(rows * out);
    Poison(y);
    LinearArgs<float> a;
    a.rows = rows;
    a.in = in;
    a.out = out;
    a.act = act;
    a.slope = 0.2f;
    a.x = xf.data();
    a.w = wf.data();
    a.bias = bf.data();
    a.y = y.data();
    ASSERT_TRUE(LinearForward(Context{Device::kCpu, &pool}, a).ok());
    EXPECT_TRUE(AllClose(y, want, {1e-5, 1e-4}));
  }
}

TEST_P(LinearTest, BackwardGradcheck_Double) {
  Rng rng(2);
  const Activation act = GetParam();
  const int64_t rows = 4, in = 5, out = 3;
  auto x = Random(rows * in, rng), w = Random(out * in, rng), b = Random(out, rng);
  const auto up = Random(rows * out, rng);
  std::vector<double> y(rows * out);
  LinearArgs<double> a;
  a.rows = rows;
  a.in = in;
  a.out = out;
  a.act = act;
  a.slope = 0.2;
  a.x = x.data();
  a.w = w.data();
  a.bias = b.data();
  a.y = y.data();
  auto forward = [&]() {
    EXPECT_TRUE(LinearForward(Context{}, a).ok());
    return Dot(y, up);
  };
  forward();
  std::vector<double> dpre(rows * out), dx(rows * in), dw(out * in), db(out);
  for (auto* v : {&dpre, &dx, &dw, &db}) Poison(*v);
  a.dy = up.data();
  a.dpre = dpre.data();
  a.dx = dx.data();
  a.dw = dw.data();
  a.dbias = db.data();
  ASSERT_TRUE(LinearBackward(Context{}, a).ok());
  EXPECT_TRUE(CheckGradient("x", x, dx, forward));
  EXPECT_TRUE(CheckGradient("w", w, dw, forward));
  EXPECT_TRUE(CheckGradient("b", b, db, forward));
}

INSTANTIATE_TEST_SUITE_P(All, LinearTest,
                         ::testing::Values(Activation::kIdentity, Activation::kRelu,
                                           Activation::kLeakyRelu, Activation::kSigmoid,
                                           Activation::kTanh));

TEST(Linear, ZeroRowsGiveZeroWeightGradient) {
  std::vector<float> w(6, 1.f), dw(6), db(3);
  Poison(dw);
  Poison(db);
  LinearArgs<float> a;
  a.rows = 0;
  a.in = 2;
  a.out = 3;
  a.w = w.data();
  a.dw = dw.data();
  a.dbias = db.data();
  ASSERT_TRUE(LinearBackward(Context{}, a).ok());
  EXPECT_TRUE(AllClose(dw, std::vector<double>(6, 0.0), {0, 0}));
  EXPECT_TRUE(AllClose(db, std::vector<double>(3, 0.0), {0, 0}));
}

}  // namespace
}  // namespace ips::kernels
