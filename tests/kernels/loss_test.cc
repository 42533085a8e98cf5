// Tests of kernels/loss.h on the CPU: BCE with logits (three reductions, extreme logits) and the
// sampled softmax loss (with and without log-Q correction), against naive float64 formulas and
// finite differences.
#include "kernels/loss.h"

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
using testing::FillUniform;
using testing::Poison;

std::vector<double> Random(int64_t n, Rng& rng, double lo = -3, double hi = 3) {
  return testing::RandomUniform(n, rng, lo, hi);
}

double NaiveBce(const std::vector<double>& x, const std::vector<double>& y,
                const std::vector<double>* w, Reduction red) {
  double s = 0, sw = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double p = 1 / (1 + std::exp(-x[i]));
    const double l = -(y[i] * std::log(p) + (1 - y[i]) * std::log(1 - p));
    const double wi = w ? (*w)[i] : 1.0;
    s += wi * l;
    sw += wi;
  }
  if (red == Reduction::kMean) return s / x.size();
  if (red == Reduction::kMaskedMean) return s / std::max(sw, 1.0);
  return s;
}

const Reduction kReductions[] = {Reduction::kSum, Reduction::kMean, Reduction::kMaskedMean};

TEST(BceWithLogits, ForwardMatchesNaiveAndBackwardGradcheck_Double) {
  Rng rng(1);
  for (Reduction red : kReductions) {
    for (int64_t n : {int64_t{1}, int64_t{37}}) {
      auto x = Random(n, rng);
      const auto y = Random(n, rng, 0, 1);  // soft labels
      std::vector<double> w = Random(n, rng, 0, 1);
      for (int64_t i = 0; i < n; i += 3) w[i] = 0;  // masked positions
      const bool weighted = red != Reduction::kSum || n > 1;
      double loss = NAN;
      BceWithLogitsArgs<double> a;
      a.n = n;
      a.reduction = red;
      a.logits = x.data();
      a.labels = y.data();
      a.weights = weighted ? w.data() : nullptr;
      a.loss = &loss;
      auto forward = [&]() {
        EXPECT_TRUE(BceWithLogitsForward(Context{}, a).ok());
        return loss;
      };
      forward();
      EXPECT_NEAR(loss, NaiveBce(x, y, weighted ? &w : nullptr, red), 1e-12);
      std::vector<double> dx(n);
      Poison(dx);
      a.dloss = 1.0;
      a.dlogits = dx.data();
      ASSERT_TRUE(BceWithLogitsBackward(Context{}, a).ok());
      EXPECT_TRUE(CheckGradient("logits", x, dx, forward)) << static_cast<int>(red) << " n=" << n;
      // dloss scales the gradient.
      std::vector<double> dx2(n);
      a.dloss = 2.5;
      a.dlogits = dx2.data();
      ASSERT_TRUE(BceWithLogitsBackward(Context{}, a).ok());
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(dx2[i], 2.5 * dx[i], 1e-15);
    }
  }
}

TEST(BceWithLogits, ExtremeLogitsStayFinite_Float) {
  std::vector<float> x = {100.f, -100.f, 100.f, -100.f, 0.f}, y = {1.f, 0.f, 0.f, 1.f, 1.f};
  float loss = NAN;
  BceWithLogitsArgs<float> a;
  a.n = 5;
  a.reduction = Reduction::kSum;
  a.logits = x.data();
  a.labels = y.data();
  a.loss = &loss;
  ASSERT_TRUE(BceWithLogitsForward(Context{}, a).ok());
  EXPECT_NEAR(loss, 200.0 + std::log(2.0), 1e-3);
  std::vector<float> dx(5);
  Poison(dx);
  a.dlogits = dx.data();
  ASSERT_TRUE(BceWithLogitsBackward(Context{}, a).ok());
  EXPECT_TRUE(AllClose(dx, std::vector<double>{0, 0, 1, -1, -0.5}, {1e-6, 1e-6}));
}

TEST(BceWithLogits, FloatMatchesDoubleOnABatch_Pool) {
  Rng rng(2);
  ThreadPool pool(2);
  const int64_t n = 25600;
  const auto x = Random(n, rng), y = Random(n, rng, 0, 1), w = Random(n, rng, 0, 1);
  double want = 0;
  std::vector<double> dwant(n);
  BceWithLogitsArgs<double> d;
  d.n = n;
  d.reduction = Reduction::kMaskedMean;
  d.logits = x.data();
  d.labels = y.data();
  d.weights = w.data();
  d.loss = &want;
  d.dlogits = dwant.data();
  ASSERT_TRUE(BceWithLogitsForward(Context{}, d).ok());
  ASSERT_TRUE(BceWithLogitsBackward(Context{}, d).ok());
  std::vector<float> xf(x.begin(), x.end()), yf(y.begin(), y.end()), wf(w.begin(), w.end()), dx(n);
  float loss = NAN;
  Poison(dx);
  BceWithLogitsArgs<float> f;
  f.n = n;
  f.reduction = Reduction::kMaskedMean;
  f.logits = xf.data();
  f.labels = yf.data();
  f.weights = wf.data();
  f.loss = &loss;
  f.dlogits = dx.data();
  ASSERT_TRUE(BceWithLogitsForward(Context{Device::kCpu, &pool}, f).ok());
  ASSERT_TRUE(BceWithLogitsBackward(Context{Device::kCpu, &pool}, f).ok());
  EXPECT_NEAR(loss, want, 1e-5);
  EXPECT_TRUE(AllClose(dx, dwant, {1e-9, 1e-5}));
}

TEST(BceWithLogits, MaskedMeanWithoutWeightsIsRejected) {
  std::vector<float> x(2), y(2);
  float loss;
  BceWithLogitsArgs<float> a;
  a.n = 2;
  a.reduction = Reduction::kMaskedMean;
  a.logits = x.data();
  a.labels = y.data();
  a.loss = &loss;
  EXPECT_EQ(BceWithLogitsForward(Context{}, a).code(), StatusCode::kInvalidArgument);
}

double NaiveSampled(const std::vector<double>& l, const std::vector<double>* q, int64_t rows,
                    int64_t classes, Reduction red) {
  double s = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double se = 0;
    for (int64_t j = 0; j < classes; ++j)
      se += std::exp(l[r * classes + j] - (q ? (*q)[r * classes + j] : 0.0));
    s += -std::log(std::exp(l[r * classes] - (q ? (*q)[r * classes] : 0.0)) / se);
  }
  return red == Reduction::kMean ? s / rows : s;
}

TEST(SampledSoftmax, ForwardMatchesNaiveAndBackwardGradcheck_Double) {
  Rng rng(3);
  for (Reduction red : {Reduction::kSum, Reduction::kMean}) {
    for (bool correct : {false, true}) {
      for (auto [rows, classes] : {std::pair<int64_t, int64_t>{1, 1}, {1, 2}, {5, 11}}) {
        auto logits = Random(rows * classes, rng);
        const auto log_q = Random(rows * classes, rng, -8, -1);
        double loss = NAN;
        SampledSoftmaxArgs<double> a;
        a.rows = rows;
        a.classes = classes;
        a.reduction = red;
        a.logits = logits.data();
        a.log_q = correct ? log_q.data() : nullptr;
        a.loss = &loss;
        auto forward = [&]() {
          EXPECT_TRUE(SampledSoftmaxForward(Context{}, a).ok());
          return loss;
        };
        forward();
        EXPECT_NEAR(loss, NaiveSampled(logits, correct ? &log_q : nullptr, rows, classes, red),
                    1e-12);
        std::vector<double> d(logits.size());
        Poison(d);
        a.dlogits = d.data();
        ASSERT_TRUE(SampledSoftmaxBackward(Context{}, a).ok());
        EXPECT_TRUE(CheckGradient("logits", logits, d, forward)) << rows << "x" << classes;
      }
    }
  }
}

TEST(SampledSoftmax, FloatMatchesDoubleWithLargeLogits_Pool) {
  Rng rng(4);
  ThreadPool pool(2);
  const int64_t rows = 512, classes = 101;
  const auto l = Random(rows * classes, rng, -60, 60), q = Random(rows * classes, rng, -12, -2);
  double want = 0;
  std::vector<double> dwant(l.size());
  SampledSoftmaxArgs<double> d;
  d.rows = rows;
  d.classes = classes;
  d.logits = l.data();
  d.log_q = q.data();
  d.loss = &want;
  d.dlogits = dwant.data();
  ASSERT_TRUE(SampledSoftmaxForward(Context{}, d).ok());
  ASSERT_TRUE(SampledSoftmaxBackward(Context{}, d).ok());
  std::vector<float> lf(l.begin(), l.end()), qf(q.begin(), q.end()), df(l.size());
  float loss = NAN;
  Poison(df);
  SampledSoftmaxArgs<float> f;
  f.rows = rows;
  f.classes = classes;
  f.logits = lf.data();
  f.log_q = qf.data();
  f.loss = &loss;
  f.dlogits = df.data();
  ASSERT_TRUE(SampledSoftmaxForward(Context{Device::kCpu, &pool}, f).ok());
  ASSERT_TRUE(SampledSoftmaxBackward(Context{Device::kCpu, &pool}, f).ok());
  EXPECT_NEAR(loss, want, 1e-4 * std::fabs(want));
  EXPECT_TRUE(AllClose(df, dwant, {1e-8, 1e-4}));
}

}  // namespace
}  // namespace ips::kernels
