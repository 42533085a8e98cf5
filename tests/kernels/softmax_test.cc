// Tests of kernels/softmax.h on the CPU: masked softmax against a naive float64 softmax over the
// valid columns, lengths 0, 1, max and beyond, left padding, shared lengths, and gradients.
#include "kernels/softmax.h"

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

std::vector<double> Random(int64_t n, Rng& rng, double lo = -3, double hi = 3) {
  return testing::RandomUniform(n, rng, lo, hi);
}

std::vector<double> NaiveSoftmax(const std::vector<double>& x, int64_t rows, int64_t cols,
                                 const std::vector<int32_t>* lengths, int64_t per, bool left) {
  std::vector<double> y(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t len = cols;
    if (lengths) len = std::min<int64_t>(std::max<int32_t>((*lengths)[r / per], 0), cols);
    const int64_t b = left ? cols - len : 0, e = left ? cols : len;
    double s = 0;
    for (int64_t j = b; j < e; ++j) s += std::exp(x[r * cols + j]);
    for (int64_t j = b; j < e; ++j) y[r * cols + j] = std::exp(x[r * cols + j]) / s;
  }
  return y;
}

TEST(Softmax, ForwardMatchesNaive_LengthsEdgesAndPadding_Float) {
  Rng rng(1);
  ThreadPool pool(2);
  const int64_t cols = 50;
  // Lengths 0, 1, max, over max (clamped) and negative (clamped to 0).
  const std::vector<int32_t> lengths = {0, 1, 50, 77, -3, 17, 49};
  const int64_t per = 3, rows = static_cast<int64_t>(lengths.size()) * per;
  auto x = Random(rows * cols, rng);
  for (bool left : {false, true}) {
    for (bool masked : {false, true}) {
      const auto want = NaiveSoftmax(x, rows, cols, masked ? &lengths : nullptr, per, left);
      std::vector<float> xf(x.begin(), x.end()), y(x.size());
      // Masked-out inputs must never be read: poison them.
      if (masked)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < cols; ++j)
            if (want[r * cols + j] == 0.0) xf[r * cols + j] = NAN;
      Poison(y);
      SoftmaxArgs<float> a;
      a.rows = rows;
      a.cols = cols;
      a.lengths = masked ? lengths.data() : nullptr;
      a.rows_per_length = per;
      a.left_padded = left;
      a.x = xf.data();
      a.y = y.data();
      ASSERT_TRUE(SoftmaxForward(Context{Device::kCpu, &pool}, a).ok());
      EXPECT_TRUE(AllClose(y, want, {1e-7, 1e-5})) << "left=" << left << " masked=" << masked;
    }
  }
}

TEST(Softmax, LargeLogitsAreStableAndInPlaceWorks) {
  std::vector<float> x = {1000.f, 999.f, -1000.f, 0.f};
  SoftmaxArgs<float> a;
  a.rows = 1;
  a.cols = 4;
  a.x = x.data();
  a.y = x.data();
  ASSERT_TRUE(SoftmaxForward(Context{}, a).ok());
  const double e = std::exp(-1.0);
  EXPECT_TRUE(AllClose(x, std::vector<double>{1 / (1 + e), e / (1 + e), 0, 0}, {1e-6, 1e-5}));
}

TEST(Softmax, BackwardGradcheck_Double) {
  Rng rng(2);
  const int64_t cols = 6;
  const std::vector<int32_t> lengths = {0, 1, 6, 4};
  const int64_t rows = 4;
  for (bool left : {false, true}) {
    for (bool masked : {false, true}) {
      auto x = Random(rows * cols, rng);
      const auto up = Random(rows * cols, rng);
      std::vector<double> y(x.size());
      SoftmaxArgs<double> a;
      a.rows = rows;
      a.cols = cols;
      a.lengths = masked ? lengths.data() : nullptr;
      a.left_padded = left;
      a.x = x.data();
      a.y = y.data();
      auto forward = [&]() {
        EXPECT_TRUE(SoftmaxForward(Context{}, a).ok());
        return Dot(y, up);
      };
      forward();
      std::vector<double> dx(x.size());
      Poison(dx);
      a.dy = up.data();
      a.dx = dx.data();
      ASSERT_TRUE(SoftmaxBackward(Context{}, a).ok());
      EXPECT_TRUE(CheckGradient("x", x, dx, forward)) << "left=" << left << " masked=" << masked;
    }
  }
}

TEST(Softmax, RejectsBadArguments) {
  std::vector<float> x(4);
  std::vector<int32_t> len = {1};
  SoftmaxArgs<float> a;
  a.rows = 1;
  a.cols = 4;
  a.x = x.data();
  a.y = x.data();
  a.lengths = len.data();
  a.rows_per_length = 0;
  EXPECT_EQ(SoftmaxForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a.rows_per_length = 1;
  a.x = nullptr;
  EXPECT_EQ(SoftmaxForward(Context{}, a).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips::kernels
