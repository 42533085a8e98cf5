#include "kernels/recurrent.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/tolerance.h"

namespace ips::kernels {
namespace {

const char* CellName(RnnCell c) {
  return c == RnnCell::kGru ? "gru" : c == RnnCell::kAugru ? "augru" : "lstm";
}

// One layer's inputs and parameters, random (never zeros), and the forward's outputs.
template <typename T>
struct Problem {
  RnnShape shape;
  std::vector<int32_t> lengths;
  std::vector<T> x, w_ih, w_hh, b_ih, b_hh, att, h0, c0;
  bool use_h0 = true;
  // Outputs of Forward().
  std::vector<T> states, final_h, final_c, reserve;
  std::vector<unsigned char> workspace;

  Problem(RnnCell cell, int64_t b, int64_t t, int64_t i, int64_t h, std::vector<int32_t> lens,
          uint64_t seed) {
    shape = {cell, b, t, i, h};
    lengths = std::move(lens);
    const int64_t gh = RnnGates(cell) * h;
    x.resize(b * t * i), w_ih.resize(gh * i), w_hh.resize(gh * h), b_ih.resize(gh), b_hh.resize(gh),
        att.resize(b * t), h0.resize(b * h), c0.resize(b * h);
    Rng rng(seed);
    testing::FillUniform(x, rng);
    testing::FillUniform(w_ih, rng, T(-0.8), T(0.8));
    testing::FillUniform(w_hh, rng, T(-0.8), T(0.8));
    testing::FillUniform(b_ih, rng, T(-0.5), T(0.5));
    testing::FillUniform(b_hh, rng, T(-0.5), T(0.5));
    testing::FillUniform(att, rng, T(0.05), T(1));
    testing::FillUniform(h0, rng, T(-0.5), T(0.5));
    testing::FillUniform(c0, rng, T(-0.5), T(0.5));
  }

  RnnForwardArgs<T> ForwardArgs() {
    const int64_t B = shape.batch, H = shape.hidden;
    states.assign(B * shape.steps * H, T(0));
    final_h.assign(B * H, T(0));
    final_c.assign(B * H, T(0));
    testing::Poison(states);
    testing::Poison(final_h);
    testing::Poison(final_c);
    reserve.assign(RnnReserveBytes<T>(shape) / sizeof(T), T(0));
    testing::Poison(reserve);
    workspace.assign(
        std::max(RnnForwardWorkspaceBytes<T>(shape), RnnBackwardWorkspaceBytes<T>(shape)), 0xff);
    RnnForwardArgs<T> a;
    a.shape = shape;
    a.x = x.data(), a.lengths = lengths.data(), a.w_ih = w_ih.data(), a.w_hh = w_hh.data();
    a.b_ih = b_ih.data(), a.b_hh = b_hh.data();
    a.att = shape.cell == RnnCell::kAugru ? att.data() : nullptr;
    a.h0 = use_h0 ? h0.data() : nullptr;
    a.c0 = use_h0 && shape.cell == RnnCell::kLstm ? c0.data() : nullptr;
    a.states = states.data(), a.final_h = final_h.data();
    a.final_c = shape.cell == RnnCell::kLstm ? final_c.data() : nullptr;
    a.reserve = reserve.data(), a.workspace = workspace.data();
    return a;
  }

  Status Forward(const Context& ctx) { return RnnForward(ctx, ForwardArgs()); }
  Status Reference() { return RnnForwardReference(ForwardArgs()); }
};

template <typename T>
struct Grads {
  std::vector<T> d_states, d_final_h, d_final_c;  // upstream
  std::vector<T> d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_att, d_h0, d_c0;
};

// Runs backward for the forward p just ran, with random upstream gradients from `seed`.
template <typename T>
Status Backward(const Context& ctx, Problem<T>& p, Grads<T>& g, uint64_t seed) {
  const RnnShape& s = p.shape;
  const int64_t B = s.batch, T_ = s.steps, H = s.hidden, GH = RnnGates(s.cell) * H;
  Rng rng(seed);
  g.d_states.resize(B * T_ * H), g.d_final_h.resize(B * H), g.d_final_c.resize(B * H);
  testing::FillUniform(g.d_states, rng);
  testing::FillUniform(g.d_final_h, rng);
  testing::FillUniform(g.d_final_c, rng);
  g.d_x.assign(B * T_ * s.input, T(0)), g.d_w_ih.assign(GH * s.input, T(0));
  g.d_w_hh.assign(GH * H, T(0)), g.d_b_ih.assign(GH, T(0)), g.d_b_hh.assign(GH, T(0));
  g.d_att.assign(B * T_, T(0)), g.d_h0.assign(B * H, T(0)), g.d_c0.assign(B * H, T(0));
  for (auto* v : {&g.d_x, &g.d_w_ih, &g.d_w_hh, &g.d_b_ih, &g.d_b_hh, &g.d_att, &g.d_h0, &g.d_c0})
    testing::Poison(*v);
  RnnBackwardArgs<T> a;
  a.shape = s;
  a.x = p.x.data(), a.lengths = p.lengths.data(), a.w_ih = p.w_ih.data(), a.w_hh = p.w_hh.data();
  a.att = s.cell == RnnCell::kAugru ? p.att.data() : nullptr;
  a.h0 = p.use_h0 ? p.h0.data() : nullptr;
  a.c0 = p.use_h0 && s.cell == RnnCell::kLstm ? p.c0.data() : nullptr;
  a.states = p.states.data(), a.reserve = p.reserve.data();
  a.d_states = g.d_states.data(), a.d_final_h = g.d_final_h.data();
  a.d_final_c = s.cell == RnnCell::kLstm ? g.d_final_c.data() : nullptr;
  a.d_x = g.d_x.data(), a.d_w_ih = g.d_w_ih.data(), a.d_w_hh = g.d_w_hh.data();
  a.d_b_ih = g.d_b_ih.data(), a.d_b_hh = g.d_b_hh.data();
  a.d_att = s.cell == RnnCell::kAugru ? g.d_att.data() : nullptr;
  a.d_h0 = g.d_h0.data();
  a.d_c0 = s.cell == RnnCell::kLstm ? g.d_c0.data() : nullptr;
  a.workspace = p.workspace.data();
  return RnnBackward(ctx, a);
}

// Loss = <states, d_states> + <final_h, d_final_h> (+ <final_c, d_final_c>), with d_states
// masked at padded steps (those outputs are constants, so their upstream is irrelevant).
double Loss(Problem<double>& p, const Grads<double>& g) {
  EXPECT_TRUE(p.Forward(Context{}).ok());
  double l = testing::Dot(p.states, g.d_states) + testing::Dot(p.final_h, g.d_final_h);
  if (p.shape.cell == RnnCell::kLstm) l += testing::Dot(p.final_c, g.d_final_c);
  return l;
}

struct GradCase {
  RnnCell cell;
  std::vector<int32_t> lengths;
  bool use_h0;
};

class RnnGradCheck : public ::testing::TestWithParam<GradCase> {};

// B = lengths.size() (3, or 6 for the 4-row blocks of the products), T=5, I=4, H=3. Backward
// runs on a 2-thread pool, so the per-thread weight-gradient partials are checked too.
TEST_P(RnnGradCheck, Float64FiniteDifferences_T5_I4_H3) {
  const GradCase& c = GetParam();
  const int64_t B = static_cast<int64_t>(c.lengths.size());
  Problem<double> p(c.cell, B, 5, 4, 3, c.lengths, 101);
  p.use_h0 = c.use_h0;
  ASSERT_TRUE(p.Forward(Context{}).ok());
  Grads<double> g;
  ThreadPool pool(2);
  Context pooled;
  pooled.pool = &pool;
  const Status st = Backward(pooled, p, g, 202);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto loss = [&] { return Loss(p, g); };
  using testing::CheckGradient;
  EXPECT_TRUE(CheckGradient("x", p.x, g.d_x, loss));
  EXPECT_TRUE(CheckGradient("w_ih", p.w_ih, g.d_w_ih, loss));
  EXPECT_TRUE(CheckGradient("w_hh", p.w_hh, g.d_w_hh, loss));
  EXPECT_TRUE(CheckGradient("b_ih", p.b_ih, g.d_b_ih, loss));
  EXPECT_TRUE(CheckGradient("b_hh", p.b_hh, g.d_b_hh, loss));
  if (c.cell == RnnCell::kAugru) {
    EXPECT_TRUE(CheckGradient("att", p.att, g.d_att, loss));
    for (int64_t b = 0; b < B; ++b)  // padded steps: exactly zero
      for (int64_t t = c.lengths[b]; t < 5; ++t) EXPECT_EQ(g.d_att[b * 5 + t], 0.0);
  }
  if (c.use_h0) {
    EXPECT_TRUE(CheckGradient("h0", p.h0, g.d_h0, loss));
    if (c.cell == RnnCell::kLstm) {
      EXPECT_TRUE(CheckGradient("c0", p.c0, g.d_c0, loss));
    }
  } else {
    // d_h0 is still defined: the gradient wrt a zero initial state. Check it against the same
    // problem with an explicit zero h0.
    Problem<double> q(c.cell, B, 5, 4, 3, c.lengths, 101);
    std::fill(q.h0.begin(), q.h0.end(), 0.0);
    std::fill(q.c0.begin(), q.c0.end(), 0.0);
    ASSERT_TRUE(q.Forward(Context{}).ok());
    Grads<double> gq;
    ASSERT_TRUE(Backward(Context{}, q, gq, 202).ok());
    EXPECT_TRUE(testing::AllClose(g.d_h0, gq.d_h0, {1e-12, 1e-12}));
    auto lq = [&] { return Loss(q, gq); };
    EXPECT_TRUE(CheckGradient("h0=0", q.h0, gq.d_h0, lq));
  }
}

std::vector<GradCase> GradCases() {
  std::vector<GradCase> out;
  for (RnnCell cell : {RnnCell::kGru, RnnCell::kAugru, RnnCell::kLstm}) {
    out.push_back({cell, {0, 1, 5}, true});
    out.push_back({cell, {5, 3, 2}, true});
    out.push_back({cell, {4, 0, 5}, false});
    out.push_back({cell, {5, 0, 3, 1, 5, 2}, true});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cells, RnnGradCheck, ::testing::ValuesIn(GradCases()),
                         [](const ::testing::TestParamInfo<GradCase>& info) {
                           std::string n = CellName(info.param.cell);
                           for (int32_t l : info.param.lengths) n += "_" + std::to_string(l);
                           return n + (info.param.use_h0 ? "_h0" : "_zero_h0");
                         });

// A hand-written torch.nn.GRU step (gate order r, z, n; b_hn inside r ⊙ (.);
// h' = (1 − z) ⊙ n + z ⊙ h), independent of the kernel's code.
TEST(GruCpu, ForwardMatchesHandWrittenTorchStep_B5_T6_I7_H9_varlen) {
  const int64_t B = 5, T = 6, I = 7, H = 9;
  Problem<float> p(RnnCell::kGru, B, T, I, H, {6, 0, 1, 3, 6}, 7);
  ThreadPool pool(2);
  Context ctx;
  ctx.pool = &pool;
  ASSERT_TRUE(p.Forward(ctx).ok());
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  std::vector<double> want_states(B * T * H, 0.0), want_final(B * H);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> h(p.h0.begin() + b * H, p.h0.begin() + (b + 1) * H);
    for (int64_t t = 0; t < p.lengths[b]; ++t) {
      const float* x = &p.x[(b * T + t) * I];
      std::vector<double> hn(H);
      for (int64_t u = 0; u < H; ++u) {
        double gi[3], gh[3];
        for (int g = 0; g < 3; ++g) {
          const int64_t row = g * H + u;
          gi[g] = p.b_ih[row];
          gh[g] = p.b_hh[row];
          for (int64_t k = 0; k < I; ++k) gi[g] += double(p.w_ih[row * I + k]) * x[k];
          for (int64_t k = 0; k < H; ++k) gh[g] += double(p.w_hh[row * H + k]) * h[k];
        }
        const double r = sig(gi[0] + gh[0]), z = sig(gi[1] + gh[1]);
        const double n = std::tanh(gi[2] + r * gh[2]);
        hn[u] = (1 - z) * n + z * h[u];
      }
      h = hn;
      for (int64_t u = 0; u < H; ++u) want_states[(b * T + t) * H + u] = h[u];
    }
    for (int64_t u = 0; u < H; ++u) want_final[b * H + u] = h[u];
  }
  EXPECT_TRUE(testing::AllClose(p.states, want_states, {1e-5, 1e-4}));
  EXPECT_TRUE(testing::AllClose(p.final_h, want_final, {1e-5, 1e-4}));
  // Length 0: the final state is h0.
  EXPECT_TRUE(testing::AllClose(&p.final_h[1 * H], &p.h0[1 * H], H, {0, 0}));
}

// The peer's AUGRU puts z on the NEW state: h' = (1 − a·s) ⊙ h + a·s ⊙ n. With a ≡ 1 that is a
// GRU whose update gate is σ(−pre) = 1 − σ(pre), i.e. the GRU with the z rows negated. The plain
// GRU with the same weights must differ.
TEST(AugruCpu, UnitAttentionEqualsGruWithNegatedUpdateGate_B4_T5_I3_H4) {
  const int64_t B = 4, T = 5, I = 3, H = 4;
  Problem<double> au(RnnCell::kAugru, B, T, I, H, {5, 2, 0, 4}, 31);
  std::fill(au.att.begin(), au.att.end(), 1.0);
  ASSERT_TRUE(au.Forward(Context{}).ok());
  Problem<double> gru(RnnCell::kGru, B, T, I, H, {5, 2, 0, 4}, 31);
  ASSERT_TRUE(gru.Forward(Context{}).ok());
  EXPECT_GT(testing::RelativeL2(gru.states.data(), au.states.data(), B * T * H), 1e-2)
      << "AUGRU(a=1) equals the GRU: the update-gate conventions should differ";
  for (int64_t j = H; j < 2 * H; ++j) {
    gru.b_ih[j] = -gru.b_ih[j];
    gru.b_hh[j] = -gru.b_hh[j];
    for (int64_t k = 0; k < I; ++k) gru.w_ih[j * I + k] = -gru.w_ih[j * I + k];
    for (int64_t k = 0; k < H; ++k) gru.w_hh[j * H + k] = -gru.w_hh[j * H + k];
  }
  ASSERT_TRUE(gru.Forward(Context{}).ok());
  EXPECT_TRUE(testing::AllClose(au.states, gru.states, {1e-12, 1e-12}));
  EXPECT_TRUE(testing::AllClose(au.final_h, gru.final_h, {1e-12, 1e-12}));
}

TEST(AugruCpu, ZeroAttentionKeepsTheState_B3_T4_I2_H5) {
  Problem<double> p(RnnCell::kAugru, 3, 4, 2, 5, {4, 1, 3}, 5);
  std::fill(p.att.begin(), p.att.end(), 0.0);
  ASSERT_TRUE(p.Forward(Context{}).ok());
  EXPECT_TRUE(testing::AllClose(p.final_h, p.h0, {0, 0}));
}

// The fast path (one input GEMM, tiled rows over a pool, vectorised float activations) against
// the scalar reference, for tile and 4-row-block boundaries (B = 70) and random lengths.
class RnnFastVsReference : public ::testing::TestWithParam<RnnCell> {};

TEST_P(RnnFastVsReference, Forward_B70_T9_I5_H6_and_B37_T6_I36_H36_varlen_pool2) {
  const RnnCell cell = GetParam();
  struct Shape {
    int64_t b, t, i, h;
  };
  for (const Shape& sh : {Shape{70, 9, 5, 6}, Shape{37, 6, 36, 36}}) {
    Rng rng(3);
    std::vector<int32_t> lens(sh.b);
    for (auto& l : lens) l = static_cast<int32_t>(rng.UniformInt(sh.t + 1));
    lens[0] = 0, lens[1] = 1, lens[2] = static_cast<int32_t>(sh.t);
    for (bool use_h0 : {true, false}) {
      Problem<float> fast(cell, sh.b, sh.t, sh.i, sh.h, lens, 11);
      Problem<float> ref(cell, sh.b, sh.t, sh.i, sh.h, lens, 11);
      fast.use_h0 = ref.use_h0 = use_h0;
      ThreadPool pool(2);
      Context ctx;
      ctx.pool = &pool;
      ASSERT_TRUE(fast.Forward(ctx).ok());
      ASSERT_TRUE(ref.Reference().ok());
      SCOPED_TRACE(std::string(CellName(cell)) + " H=" + std::to_string(sh.h) +
                   (use_h0 ? " h0" : " zero h0"));
      EXPECT_TRUE(testing::AllClose(fast.states, ref.states, {1e-5, 1e-4}));
      EXPECT_TRUE(testing::AllClose(fast.final_h, ref.final_h, {1e-5, 1e-4}));
      if (cell == RnnCell::kLstm) {
        EXPECT_TRUE(testing::AllClose(fast.final_c, ref.final_c, {1e-5, 1e-4}));
      }
    }
  }
}

// Float backward (fast activations, pool) against the float64 backward on the same data.
TEST_P(RnnFastVsReference, BackwardFloatMatchesDouble_B70_T9_I5_H6_varlen_pools1to3) {
  const RnnCell cell = GetParam();
  const int64_t B = 70, T = 9, I = 5, H = 6;
  Rng rng(4);
  std::vector<int32_t> lens(B);
  for (int64_t b = 0; b < B; ++b) lens[b] = static_cast<int32_t>(rng.UniformInt(T + 1));
  lens[0] = 0, lens[1] = 1, lens[2] = T;
  Problem<double> pd(cell, B, T, I, H, lens, 12);
  Problem<float> pf(cell, B, T, I, H, lens, 12);
  auto cast = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  pf.x = cast(pd.x), pf.w_ih = cast(pd.w_ih), pf.w_hh = cast(pd.w_hh), pf.b_ih = cast(pd.b_ih);
  pf.b_hh = cast(pd.b_hh), pf.att = cast(pd.att), pf.h0 = cast(pd.h0), pf.c0 = cast(pd.c0);
  ASSERT_TRUE(pd.Forward(Context{}).ok());
  Grads<double> gd;
  ASSERT_TRUE(Backward(Context{}, pd, gd, 9).ok());
  // 1 thread: one part; 2 and 3: the weight gradients are reduced over uneven row ranges.
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    Context ctx;
    ctx.pool = &pool;
    ASSERT_TRUE(pf.Forward(ctx).ok());
    Grads<float> gf;
    ASSERT_TRUE(Backward(ctx, pf, gf, 9).ok());
    const testing::Tolerance tol{1e-4, 1e-3};
    SCOPED_TRACE("threads=" + std::to_string(threads));
    EXPECT_TRUE(testing::AllClose(gf.d_x, gd.d_x, tol));
    EXPECT_TRUE(testing::AllClose(gf.d_w_ih, gd.d_w_ih, tol));
    EXPECT_TRUE(testing::AllClose(gf.d_w_hh, gd.d_w_hh, tol));
    EXPECT_TRUE(testing::AllClose(gf.d_b_ih, gd.d_b_ih, tol));
    EXPECT_TRUE(testing::AllClose(gf.d_b_hh, gd.d_b_hh, tol));
    EXPECT_TRUE(testing::AllClose(gf.d_h0, gd.d_h0, tol));
    if (cell == RnnCell::kAugru) {
      EXPECT_TRUE(testing::AllClose(gf.d_att, gd.d_att, tol));
    }
    if (cell == RnnCell::kLstm) {
      EXPECT_TRUE(testing::AllClose(gf.d_c0, gd.d_c0, tol));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cells, RnnFastVsReference,
                         ::testing::Values(RnnCell::kGru, RnnCell::kAugru, RnnCell::kLstm),
                         [](const ::testing::TestParamInfo<RnnCell>& info) {
                           return std::string(CellName(info.param));
                         });

TEST(RnnCpu, ZeroStepsGivesInitialStateAndZeroWeightGrads) {
  for (RnnCell cell : {RnnCell::kGru, RnnCell::kAugru, RnnCell::kLstm}) {
    Problem<double> p(cell, 2, 0, 3, 4, {0, 0}, 1);
    ASSERT_TRUE(p.Forward(Context{}).ok());
    EXPECT_TRUE(testing::AllClose(p.final_h, p.h0, {0, 0}));
    if (cell == RnnCell::kLstm) {
      EXPECT_TRUE(testing::AllClose(p.final_c, p.c0, {0, 0}));
    }
    Grads<double> g;
    ASSERT_TRUE(Backward(Context{}, p, g, 2).ok());
    EXPECT_TRUE(testing::AllClose(g.d_h0, g.d_final_h, {0, 0}));
    EXPECT_TRUE(testing::AllClose(g.d_w_hh, std::vector<double>(g.d_w_hh.size(), 0.0), {0, 0}));
    EXPECT_TRUE(testing::AllClose(g.d_b_ih, std::vector<double>(g.d_b_ih.size(), 0.0), {0, 0}));
  }
}

TEST(RnnCpu, RejectsBadLengthsAndMissingPointers) {
  Problem<float> p(RnnCell::kGru, 3, 4, 2, 3, {1, 5, 2}, 1);
  Status st = p.Forward(Context{});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("lengths[1] = 5"), std::string::npos) << st.ToString();
  p.lengths = {1, -1, 2};
  EXPECT_EQ(p.Forward(Context{}).code(), StatusCode::kInvalidArgument);
  p.lengths = {1, 2, 2};
  auto a = p.ForwardArgs();
  a.reserve = nullptr;
  st = RnnForward(Context{}, a);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("reserve"), std::string::npos) << st.ToString();
  Problem<float> au(RnnCell::kAugru, 3, 4, 2, 3, {1, 2, 2}, 1);
  a = au.ForwardArgs();
  a.att = nullptr;
  EXPECT_EQ(RnnForward(Context{}, a).code(), StatusCode::kInvalidArgument);
  a = au.ForwardArgs();
  a.shape.hidden = -1;
  EXPECT_EQ(RnnForward(Context{}, a).code(), StatusCode::kInvalidArgument);
}

#ifndef IPS_WITH_CUDA
TEST(RnnCpu, CudaContextIsUnimplementedWithoutCuda) {
  Problem<float> p(RnnCell::kGru, 2, 3, 2, 3, {1, 3}, 1);
  Context ctx;
  ctx.device = Device::kCuda;
  EXPECT_EQ(p.Forward(ctx).code(), StatusCode::kUnimplemented);
}
#endif

}  // namespace
}  // namespace ips::kernels
