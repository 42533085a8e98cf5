// Tests of kernels/capsule.h on the CPU: squash, and MIND's B2I routing against an independent
// naive float64 implementation, with lengths 0, 1 and max, plus finite-difference checks of the
// differentiated path (the final iteration's weighted sum and squash, routing weights frozen).
#include "kernels/capsule.h"

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

TEST(Squash, ForwardMatchesDefinitionAndIsSafeAtZero_Float) {
  Rng rng(1);
  const int64_t rows = 6, dim = 9;
  auto x = Random(rows * dim, rng, -2, 2);
  for (int64_t k = 0; k < dim; ++k) x[2 * dim + k] = 0;  // an all-zero row
  std::vector<double> want(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double sq = 0;
    for (int64_t k = 0; k < dim; ++k) sq += x[r * dim + k] * x[r * dim + k];
    if (sq == 0) continue;
    for (int64_t k = 0; k < dim; ++k)
      want[r * dim + k] = sq / (1 + sq) * x[r * dim + k] / std::sqrt(sq);
  }
  std::vector<float> xf(x.begin(), x.end()), y(x.size());
  Poison(y);
  SquashArgs<float> a;
  a.rows = rows;
  a.dim = dim;
  a.x = xf.data();
  a.y = y.data();
  ASSERT_TRUE(SquashForward(Context{}, a).ok());
  EXPECT_TRUE(AllClose(y, want, {1e-7, 1e-5}));
  // Backward at the zero row is exactly zero (and finite).
  std::vector<float> g(x.size(), 1.f), dx(x.size());
  Poison(dx);
  a.dy = g.data();
  a.dx = dx.data();
  ASSERT_TRUE(SquashBackward(Context{}, a).ok());
  for (int64_t k = 0; k < dim; ++k) EXPECT_EQ(dx[2 * dim + k], 0.f);
}

TEST(Squash, BackwardGradcheck_Double) {
  Rng rng(2);
  const int64_t rows = 5, dim = 4;
  auto x = Random(rows * dim, rng, -2, 2);
  for (int64_t k = 0; k < dim; ++k) x[k] *= 1e-3;  // a tiny row (near the kink at 0)
  const auto up = Random(rows * dim, rng);
  std::vector<double> y(x.size());
  SquashArgs<double> a;
  a.rows = rows;
  a.dim = dim;
  a.x = x.data();
  a.y = y.data();
  auto forward = [&]() {
    EXPECT_TRUE(SquashForward(Context{}, a).ok());
    return Dot(y, up);
  };
  std::vector<double> dx(x.size());
  Poison(dx);
  a.dy = up.data();
  a.dx = dx.data();
  ASSERT_TRUE(SquashBackward(Context{}, a).ok());
  EXPECT_TRUE(CheckGradient("x", x, dx, forward, 1e-7, 1e-6));
}

// ---- MIND routing -----------------------------------------------------------------------------

struct Shape {
  int64_t B, T, D, D2, K;
  int r;
};

// Independent float64 reference of MindRoutingArgs' documented algorithm.
void NaiveRouting(const Shape& s, const std::vector<double>& e, const std::vector<int32_t>& len,
                  const std::vector<double>& S, const std::vector<double>& init, bool per_row,
                  std::vector<double>* out, std::vector<double>* final_logits) {
  out->assign(s.B * s.K * s.D2, 0.0);
  final_logits->assign(s.B * s.K * s.T, 0.0);
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t L = std::min<int64_t>(std::max<int32_t>(len[b], 0), s.T);
    std::vector<std::vector<double>> eh(L, std::vector<double>(s.D2, 0.0));
    for (int64_t i = 0; i < L; ++i)
      for (int64_t k = 0; k < s.D2; ++k)
        for (int64_t d = 0; d < s.D; ++d) eh[i][k] += e[(b * s.T + i) * s.D + d] * S[d * s.D2 + k];
    std::vector<double> logit(s.K * s.T);
    for (int64_t t = 0; t < s.K * s.T; ++t) logit[t] = init[(per_row ? b * s.K * s.T : 0) + t];
    std::vector<std::vector<double>> u(s.K, std::vector<double>(s.D2));
    for (int it = 0; it < s.r; ++it) {
      for (int64_t t = 0; t < s.K * s.T; ++t) (*final_logits)[b * s.K * s.T + t] = logit[t];
      std::vector<double> w(s.K * s.T, 0.0);
      for (int64_t i = 0; i < L; ++i) {
        double z = 0;
        for (int64_t j = 0; j < s.K; ++j) z += std::exp(logit[j * s.T + i]);
        for (int64_t j = 0; j < s.K; ++j) w[j * s.T + i] = std::exp(logit[j * s.T + i]) / z;
      }
      for (int64_t j = 0; j < s.K; ++j) {
        std::vector<double> zj(s.D2, 0.0);
        for (int64_t i = 0; i < L; ++i)
          for (int64_t k = 0; k < s.D2; ++k) zj[k] += w[j * s.T + i] * eh[i][k];
        double sq = 0;
        for (double v : zj) sq += v * v;
        for (int64_t k = 0; k < s.D2; ++k)
          u[j][k] = sq > 0 ? sq / (1 + sq) * zj[k] / std::sqrt(sq) : 0.0;
      }
      for (int64_t j = 0; j < s.K; ++j)
        for (int64_t i = 0; i < L; ++i) {
          double dot = 0;
          for (int64_t k = 0; k < s.D2; ++k) dot += u[j][k] * eh[i][k];
          logit[j * s.T + i] += dot;
        }
    }
    for (int64_t j = 0; j < s.K; ++j)
      for (int64_t k = 0; k < s.D2; ++k) (*out)[(b * s.K + j) * s.D2 + k] = u[j][k];
  }
}

// Owns every buffer of one routing call in element type T.
template <typename T>
struct Routing {
  Shape s;
  std::vector<T> e, S, init, out, ehat, w, logits, z, de, dS, ws;
  std::vector<int32_t> len;
  MindRoutingArgs<T> args;

  Routing(const Shape& shape, const std::vector<double>& e0, const std::vector<int32_t>& l,
          const std::vector<double>& S0, const std::vector<double>& init0, bool per_row)
      : s(shape),
        e(e0.begin(), e0.end()),
        S(S0.begin(), S0.end()),
        init(init0.begin(), init0.end()),
        out(s.B * s.K * s.D2),
        ehat(s.B * s.T * s.D2),
        w(s.B * s.K * s.T),
        logits(s.B * s.K * s.T),
        z(s.B * s.K * s.D2),
        de(s.B * s.T * s.D),
        dS(s.D * s.D2),
        ws(MindRoutingBackwardWorkspaceSize(s.B, s.T, s.D2)),
        len(l) {
    for (auto* v : {&out, &ehat, &w, &logits, &z, &de, &dS, &ws}) Poison(*v);
    args.batch = s.B;
    args.max_len = s.T;
    args.in_dim = s.D;
    args.out_dim = s.D2;
    args.num_interests = s.K;
    args.iterations = s.r;
    args.e = e.data();
    args.lengths = len.data();
    args.s = S.data();
    args.init_logits = init.data();
    args.init_logits_per_row = per_row;
    args.out = out.data();
    args.ehat = ehat.data();
    args.weights = w.data();
    args.final_logits = logits.data();
    args.z = z.data();
    args.de = de.data();
    args.ds = dS.data();
    args.workspace = ws.data();
  }
};

// Random e with padded steps set to a large finite value (they must not influence anything).
std::vector<double> Behaviours(const Shape& s, const std::vector<int32_t>& len, Rng& rng) {
  auto e = Random(s.B * s.T * s.D, rng);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = std::max<int32_t>(len[b], 0); t < s.T; ++t)
      for (int64_t d = 0; d < s.D; ++d) e[(b * s.T + t) * s.D + d] = 1e3;
  return e;
}

TEST(MindRouting, ForwardMatchesNaive_Lengths0_1_Max_Float) {
  Rng rng(3);
  ThreadPool pool(2);
  const Shape s{5, 8, 6, 5, 3, 3};
  const std::vector<int32_t> len = {0, 1, 8, 3, 7};
  const auto e = Behaviours(s, len, rng);
  const auto S = Random(s.D * s.D2, rng);
  std::vector<double> init(s.K * s.T);
  MindRoutingInitLogits(7, s.K, s.T, 1.0, init.data());
  std::vector<double> want, want_logits;
  NaiveRouting(s, e, len, S, init, false, &want, &want_logits);
  Routing<float> f(s, e, len, S, init, false);
  ASSERT_TRUE(MindRoutingForward(Context{Device::kCpu, &pool}, f.args).ok());
  EXPECT_TRUE(AllClose(f.out, want, {1e-5, 1e-4}));
  // Row 0 has no behaviours: all-zero capsules.
  for (int64_t t = 0; t < s.K * s.D2; ++t) EXPECT_EQ(f.out[t], 0.f);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t j = 0; j < s.K; ++j)
      for (int64_t i = 0; i < len[b]; ++i)
        EXPECT_NEAR(f.logits[(b * s.K + j) * s.T + i], want_logits[(b * s.K + j) * s.T + i], 1e-4);
}

TEST(MindRouting, BackwardGradcheck_OneIteration_Double) {
  // With r = 1 the routing weights are softmax(init), constants: the backward is exact.
  Rng rng(4);
  const Shape s{3, 5, 4, 3, 2, 1};
  const std::vector<int32_t> len = {1, 5, 3};
  auto e = Behaviours(s, len, rng);
  for (double& v : e)
    if (v == 1e3) v = 0.5;  // keep the finite-difference loop's padded entries small
  auto S = Random(s.D * s.D2, rng);
  std::vector<double> init(s.K * s.T);
  MindRoutingInitLogits(8, s.K, s.T, 1.0, init.data());
  const auto up = Random(s.B * s.K * s.D2, rng);
  Routing<double> d(s, e, len, S, init, false);
  auto forward = [&]() {
    EXPECT_TRUE(MindRoutingForward(Context{}, d.args).ok());
    return Dot(d.out, up);
  };
  forward();
  d.args.dout = up.data();
  ASSERT_TRUE(MindRoutingBackward(Context{}, d.args).ok());
  // Padded steps get exactly zero gradient.
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = len[b]; t < s.T; ++t)
      for (int64_t k = 0; k < s.D; ++k) EXPECT_EQ(d.de[(b * s.T + t) * s.D + k], 0.0);
  EXPECT_TRUE(CheckGradient("e", d.e, d.de, forward, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("S", d.S, d.dS, forward, 1e-6, 1e-6));
}

TEST(MindRouting, BackwardIsTheFinalIterationPathWithFrozenWeights_ThreeIterations_Double) {
  Rng rng(5);
  const Shape s{3, 6, 4, 3, 3, 3};
  const std::vector<int32_t> len = {6, 2, 4};
  const auto e = Behaviours(s, len, rng);
  const auto S = Random(s.D * s.D2, rng, -2, 2);
  std::vector<double> init(s.K * s.T);
  MindRoutingInitLogits(9, s.K, s.T, 1.0, init.data());
  const auto up = Random(s.B * s.K * s.D2, rng);
  Routing<double> full(s, e, len, S, init, false);
  ASSERT_TRUE(MindRoutingForward(Context{}, full.args).ok());
  full.args.dout = up.data();
  ASSERT_TRUE(MindRoutingBackward(Context{}, full.args).ok());

  // The frozen path: 1 iteration from the final logits (per row) reproduces the output...
  const std::vector<double> frozen(full.logits.begin(), full.logits.end());
  Shape s1 = s;
  s1.r = 1;
  auto e1 = e;
  for (double& v : e1)
    if (v == 1e3) v = 0.5;
  Routing<double> path(s1, e1, len, S, frozen, true);
  auto forward = [&]() {
    EXPECT_TRUE(MindRoutingForward(Context{}, path.args).ok());
    return Dot(path.out, up);
  };
  forward();
  EXPECT_TRUE(AllClose(path.out, full.out, {1e-12, 1e-10}));
  // ...and its finite differences are the 3-iteration backward's gradients.
  std::vector<double> de(full.de.begin(), full.de.end());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = len[b]; t < s.T; ++t)
      for (int64_t k = 0; k < s.D; ++k) EXPECT_EQ(de[(b * s.T + t) * s.D + k], 0.0);
  EXPECT_TRUE(CheckGradient("e", path.e, de, forward, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("S", path.S, full.dS, forward, 1e-6, 1e-6));
}

TEST(MindRouting, FloatMatchesDouble_ForwardAndBackward_Pool) {
  Rng rng(6);
  ThreadPool pool(2);
  const Shape s{64, 50, 36, 32, 4, 3};
  std::vector<int32_t> len(s.B);
  for (int64_t b = 0; b < s.B; ++b) len[b] = static_cast<int32_t>(rng.UniformInt(s.T + 1));
  len[0] = 0;
  len[1] = 1;
  len[2] = static_cast<int32_t>(s.T);
  const auto e = Behaviours(s, len, rng);
  const auto S = Random(s.D * s.D2, rng, -0.3, 0.3);
  std::vector<double> init(s.K * s.T);
  MindRoutingInitLogits(10, s.K, s.T, 1.0, init.data());
  const auto up = Random(s.B * s.K * s.D2, rng);
  Routing<double> d(s, e, len, S, init, false);
  ASSERT_TRUE(MindRoutingForward(Context{}, d.args).ok());
  d.args.dout = up.data();
  ASSERT_TRUE(MindRoutingBackward(Context{}, d.args).ok());
  Routing<float> f(s, e, len, S, init, false);
  const std::vector<float> upf(up.begin(), up.end());
  ASSERT_TRUE(MindRoutingForward(Context{Device::kCpu, &pool}, f.args).ok());
  f.args.dout = upf.data();
  ASSERT_TRUE(MindRoutingBackward(Context{Device::kCpu, &pool}, f.args).ok());
  EXPECT_TRUE(AllClose(f.out, d.out, {1e-5, 1e-4}));
  EXPECT_TRUE(AllClose(f.de, d.de, {1e-4, 1e-3}));
  EXPECT_LT(testing::RelativeL2(f.dS.data(), d.dS.data(), s.D * s.D2), 1e-4);
}

TEST(MindRouting, InitLogitsAreSeededNormals) {
  std::vector<double> a(4000), b(4000), c(4000);
  MindRoutingInitLogits(1, 4, 1000, 2.0, a.data());
  MindRoutingInitLogits(1, 4, 1000, 2.0, b.data());
  MindRoutingInitLogits(2, 4, 1000, 2.0, c.data());
  EXPECT_TRUE(AllClose(a, b, {0, 0}));
  EXPECT_FALSE(AllClose(a, c, {1e-3, 0}));
  double m = 0, v = 0;
  for (double x : a) m += x / a.size();
  for (double x : a) v += (x - m) * (x - m) / a.size();
  EXPECT_NEAR(m, 0.0, 0.15);
  EXPECT_NEAR(std::sqrt(v), 2.0, 0.15);
}

TEST(MindRouting, RejectsBadArguments) {
  const Shape s{1, 2, 2, 2, 2, 0};
  std::vector<double> e(4, 0.1), S(4, 0.1), init(4, 0.0);
  Routing<double> d(s, e, {2}, S, init, false);
  EXPECT_EQ(MindRoutingForward(Context{}, d.args).code(), StatusCode::kInvalidArgument);
  d.args.iterations = 1;
  d.args.s = nullptr;
  EXPECT_EQ(MindRoutingForward(Context{}, d.args).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips::kernels
