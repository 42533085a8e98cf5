// CPU tests of kernels/attention.h: float64 finite-difference gradient checks of every input and
// weight, the fused CPU paths against the unfused scalar references on fresh random inputs
// with NaN-poisoned outputs, masking (lengths 0, 1 and max; padded inputs never read), dropout
// determinism and argument validation.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
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
using testing::Poison;

template <typename T>
void Fill(std::vector<T>& v, Rng& rng, double lo = -1, double hi = 1) {
  for (auto& x : v) x = static_cast<T>(lo + (hi - lo) * rng.Uniform());
}

struct DinShape {
  int64_t B, T, E, H1, H2;
  Padding padding;
  bool softmax;
  bool pool;
  std::vector<int32_t> lengths;
};

template <typename T>
struct DinData {
  DinShape shape;
  std::vector<T> q, k, w1, b1, w2, b2, w3, b3;
  std::vector<int32_t> len;

  DinData(const DinShape& s, uint64_t seed) : shape(s), len(s.lengths) {
    Rng rng(seed);
    q.resize(s.B * s.E);
    k.resize(s.B * s.T * s.E);
    w1.resize(s.H1 * 4 * s.E);
    b1.resize(s.H1);
    w2.resize(s.H2 * s.H1);
    b2.resize(s.H2);
    w3.resize(s.H2);
    b3.resize(1);
    Fill(q, rng);
    Fill(k, rng);
    // Weights large enough that the sigmoids are far from linear and scores vary.
    Fill(w1, rng, -0.8, 0.8);
    Fill(b1, rng, -0.5, 0.5);
    Fill(w2, rng, -0.8, 0.8);
    Fill(b2, rng, -0.5, 0.5);
    Fill(w3, rng, -2, 2);
    Fill(b3, rng, -0.5, 0.5);
  }
  DinAttentionArgs<T> Args() const {
    DinAttentionArgs<T> a;
    a.batch = shape.B;
    a.max_len = shape.T;
    a.dim = shape.E;
    a.hidden1 = shape.H1;
    a.hidden2 = shape.H2;
    a.padding = shape.padding;
    a.softmax = shape.softmax;
    a.query = q.data();
    a.keys = k.data();
    a.lengths = len.data();
    a.w1 = w1.data();
    a.b1 = b1.data();
    a.w2 = w2.data();
    a.b2 = b2.data();
    a.w3 = w3.data();
    a.b3 = b3.data();
    return a;
  }
};

template <typename T>
struct DinGradBufs {
  std::vector<T> dq, dk, dw1, db1, dw2, db2, dw3, db3;
  explicit DinGradBufs(const DinShape& s)
      : dq(s.B * s.E),
        dk(s.B * s.T * s.E),
        dw1(s.H1 * 4 * s.E),
        db1(s.H1),
        dw2(s.H2 * s.H1),
        db2(s.H2),
        dw3(s.H2),
        db3(1) {
    for (auto* v : {&dq, &dk, &dw1, &db1, &dw2, &db2, &dw3, &db3}) Poison(*v);
  }
  DinAttentionGrads<T> Grads() {
    DinAttentionGrads<T> g;
    g.d_query = dq.data();
    g.d_keys = dk.data();
    g.d_w1 = dw1.data();
    g.d_b1 = db1.data();
    g.d_w2 = dw2.data();
    g.d_b2 = db2.data();
    g.d_w3 = dw3.data();
    g.d_b3 = db3.data();
    return g;
  }
};

// Runs the fused forward; returns weights and pooled (empty when !pool) and fills `saved`.
template <typename T>
void RunDinForward(const Context& ctx, const DinData<T>& d, std::vector<T>* weights,
                   std::vector<T>* pooled, std::vector<T>* saved) {
  const auto a = d.Args();
  weights->assign(d.shape.B * d.shape.T, T(0));
  pooled->assign(d.shape.pool ? d.shape.B * d.shape.E : 0, T(0));
  saved->assign(DinAttentionSavedSize(a), T(0));
  Poison(*weights);
  Poison(*pooled);
  Poison(*saved);
  ASSERT_TRUE(DinAttentionForward(ctx, a, weights->data(), d.shape.pool ? pooled->data() : nullptr,
                                  saved->data())
                  .ok());
}

// ---- DIN gradient checks (float64) --------------------------------------------------------------

class DinGradCheck : public ::testing::TestWithParam<std::tuple<bool, Padding, bool>> {};

TEST_P(DinGradCheck, AllInputsAndWeights_B3_T5_E4_H6_5_len0_1_5) {
  const auto [softmax, padding, pool] = GetParam();
  const DinShape s{3, 5, 4, 6, 5, padding, softmax, pool, {0, 1, 5}};
  DinData<double> d(s, 17);
  Rng rng(99);
  std::vector<double> up_w(s.B * s.T), up_p(s.B * s.E);
  Fill(up_w, rng);
  Fill(up_p, rng);
  auto loss = [&]() {
    std::vector<double> w, p, saved;
    RunDinForward(Context{}, d, &w, &p, &saved);
    return Dot(w, up_w) + (pool ? Dot(p, up_p) : 0.0);
  };
  std::vector<double> w, p, saved;
  RunDinForward(Context{}, d, &w, &p, &saved);
  DinGradBufs<double> g(s);
  std::vector<double> work(DinAttentionBackwardWorkspaceSize(d.Args()));
  Poison(work);
  ASSERT_TRUE(DinAttentionBackward(Context{}, d.Args(), saved.data(), up_w.data(),
                                   pool ? up_p.data() : nullptr, g.Grads(), work.data())
                  .ok());
  EXPECT_TRUE(CheckGradient("query", d.q, g.dq, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("keys", d.k, g.dk, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("w1", d.w1, g.dw1, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("b1", d.b1, g.db1, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("w2", d.w2, g.dw2, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("b2", d.b2, g.db2, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("w3", d.w3, g.dw3, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("b3", d.b3, g.db3, loss, 1e-6, 1e-6));
  // The reference backward must agree with the same finite differences.
  DinGradBufs<double> r(s);
  ASSERT_TRUE(
      DinAttentionBackwardReference(d.Args(), up_w.data(), pool ? up_p.data() : nullptr, r.Grads())
          .ok());
  EXPECT_TRUE(CheckGradient("ref query", d.q, r.dq, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("ref keys", d.k, r.dk, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("ref w1", d.w1, r.dw1, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("ref w2", d.w2, r.dw2, loss, 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Configs, DinGradCheck,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(Padding::kLeft, Padding::kRight),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<DinGradCheck::ParamType>& info) {
                           return std::string(std::get<0>(info.param) ? "softmax" : "raw") +
                                  (std::get<1>(info.param) == Padding::kLeft ? "_left" : "_right") +
                                  (std::get<2>(info.param) ? "_pooled" : "_weights");
                         });

// ---- DIN fused vs reference ---------------------------------------------------------------------

template <typename T>
void CompareDinWithReference(const DinShape& s, const Context& ctx, testing::Tolerance tol,
                             uint64_t seed) {
  DinData<T> d(s, seed);
  // Padded keys hold NaN: the fused path must never read them.
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t) {
      const bool valid = s.padding == Padding::kLeft ? t >= s.T - s.lengths[b] : t < s.lengths[b];
      if (!valid)
        for (int64_t e = 0; e < s.E; ++e)
          d.k[(b * s.T + t) * s.E + e] = std::numeric_limits<T>::quiet_NaN();
    }
  std::vector<T> w, p, saved;
  RunDinForward(ctx, d, &w, &p, &saved);
  // The reference reads only valid keys as well.
  std::vector<T> w_ref(s.B * s.T), p_ref(s.B * s.E);
  Poison(w_ref);
  Poison(p_ref);
  ASSERT_TRUE(DinAttentionForwardReference(d.Args(), w_ref.data(), p_ref.data()).ok());
  EXPECT_TRUE(AllClose(w, w_ref, tol)) << "weights";
  if (s.pool) {
    EXPECT_TRUE(AllClose(p, p_ref, tol)) << "pooled";
  }
  Rng rng(seed + 1);
  std::vector<T> up_w(s.B * s.T), up_p(s.B * s.E);
  Fill(up_w, rng);
  Fill(up_p, rng);
  DinGradBufs<T> g(s), r(s);
  std::vector<T> work(DinAttentionBackwardWorkspaceSize(d.Args()));
  Poison(work);
  ASSERT_TRUE(DinAttentionBackward(ctx, d.Args(), saved.data(), up_w.data(),
                                   s.pool ? up_p.data() : nullptr, g.Grads(), work.data())
                  .ok());
  ASSERT_TRUE(DinAttentionBackwardReference(d.Args(), up_w.data(), s.pool ? up_p.data() : nullptr,
                                            r.Grads())
                  .ok());
  EXPECT_TRUE(AllClose(g.dq, r.dq, tol)) << "d_query";
  EXPECT_TRUE(AllClose(g.dk, r.dk, tol)) << "d_keys";
  EXPECT_TRUE(AllClose(g.dw1, r.dw1, tol)) << "d_w1";
  EXPECT_TRUE(AllClose(g.db1, r.db1, tol)) << "d_b1";
  EXPECT_TRUE(AllClose(g.dw2, r.dw2, tol)) << "d_w2";
  EXPECT_TRUE(AllClose(g.db2, r.db2, tol)) << "d_b2";
  EXPECT_TRUE(AllClose(g.dw3, r.dw3, tol)) << "d_w3";
  EXPECT_TRUE(AllClose(g.db3, r.db3, tol)) << "d_b3";
}

std::vector<int32_t> MixedLengths(int64_t B, int64_t T, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> len(B);
  for (int64_t b = 0; b < B; ++b) len[b] = static_cast<int32_t>(rng.UniformInt(T + 1));
  len[0] = 0;
  if (B > 1) len[1] = 1;
  if (B > 2) len[2] = static_cast<int32_t>(T);
  return len;
}

TEST(DinAttentionCpu, FusedMatchesReference_Double_B9_T50_E36_H80_40_varlen) {
  for (bool softmax : {false, true})
    for (Padding pad : {Padding::kLeft, Padding::kRight}) {
      SCOPED_TRACE(softmax ? "softmax" : "raw");
      DinShape s{9, 50, 36, 80, 40, pad, softmax, true, MixedLengths(9, 50, 3)};
      CompareDinWithReference<double>(s, Context{}, {1e-11, 1e-9}, 5);
    }
}

TEST(DinAttentionCpu, FusedMatchesReference_Float_B16_T50_E36_H80_40_varlen_ThreadPool) {
  ThreadPool pool(2);
  Context ctx;
  ctx.pool = &pool;
  for (bool softmax : {false, true}) {
    SCOPED_TRACE(softmax ? "softmax" : "raw");
    DinShape s{16, 50, 36, 80, 40, Padding::kLeft, softmax, true, MixedLengths(16, 50, 7)};
    CompareDinWithReference<float>(s, ctx, {2e-5, 2e-4}, 11);
  }
}

TEST(DinAttentionCpu, FusedMatchesReference_Float_OddWidths_NoPool) {
  DinShape s{5, 7, 3, 9, 2, Padding::kRight, false, false, {7, 0, 1, 4, 6}};
  CompareDinWithReference<float>(s, Context{}, {2e-5, 2e-4}, 13);
}

// The CPU paths split the batch into pool tasks and sum weight gradients over fixed slices of
// it, so forward and backward are bitwise the same with or without a pool, and the weight
// gradients do not change when d_query / d_keys are not asked for (the backward then skips
// dL/dX). B = 37 is not a multiple of the row block or of the slice count.
TEST(DinAttentionCpu, BitwiseIndependentOfPoolAndOfOptionalGrads_B37) {
  ThreadPool pool(2);
  Context pooled_ctx;
  pooled_ctx.pool = &pool;
  for (bool softmax : {false, true}) {
    SCOPED_TRACE(softmax ? "softmax" : "raw");
    const DinShape s{37, 50, 36, 80, 40, Padding::kLeft, softmax, true, MixedLengths(37, 50, 19)};
    DinData<float> d(s, 23);
    std::vector<float> w0, p0, saved0, w1, p1, saved1;
    RunDinForward(Context{}, d, &w0, &p0, &saved0);
    RunDinForward(pooled_ctx, d, &w1, &p1, &saved1);
    ASSERT_EQ(w0, w1);
    ASSERT_EQ(p0, p1);
    Rng rng(29);
    std::vector<float> up_w(s.B * s.T), up_p(s.B * s.E);
    Fill(up_w, rng);
    Fill(up_p, rng);
    DinGradBufs<float> g0(s), g1(s), g2(s);
    std::vector<float> work(DinAttentionBackwardWorkspaceSize(d.Args()));
    Poison(work);
    ASSERT_TRUE(DinAttentionBackward(Context{}, d.Args(), saved0.data(), up_w.data(), up_p.data(),
                                     g0.Grads(), work.data())
                    .ok());
    Poison(work);
    ASSERT_TRUE(DinAttentionBackward(pooled_ctx, d.Args(), saved1.data(), up_w.data(), up_p.data(),
                                     g1.Grads(), work.data())
                    .ok());
    Poison(work);
    DinAttentionGrads<float> weights_only = g2.Grads();
    weights_only.d_query = nullptr;
    weights_only.d_keys = nullptr;
    ASSERT_TRUE(DinAttentionBackward(pooled_ctx, d.Args(), saved1.data(), up_w.data(), up_p.data(),
                                     weights_only, work.data())
                    .ok());
    EXPECT_EQ(g0.dq, g1.dq);
    EXPECT_EQ(g0.dk, g1.dk);
    for (const DinGradBufs<float>* g : {&g1, &g2}) {
      EXPECT_EQ(g0.dw1, g->dw1);
      EXPECT_EQ(g0.db1, g->db1);
      EXPECT_EQ(g0.dw2, g->dw2);
      EXPECT_EQ(g0.db2, g->db2);
      EXPECT_EQ(g0.dw3, g->dw3);
      EXPECT_EQ(g0.db3, g->db3);
    }
  }
}

// DIEN: the target over GRU states, E = H = 36, T = 50, right-padded, softmax over valid steps.
TEST(DienAttentionCpu, SoftmaxOverStates_E36_T50_MatchesReferenceAndSumsToOne) {
  const int64_t B = 8, T = 50, H = 36;
  DinShape s{B, T, H, 80, 40, Padding::kRight, true, false, MixedLengths(B, T, 21)};
  DinData<double> d(s, 23);
  DinAttentionArgs<double> a =
      DienAttentionArgs<double>(B, T, H, d.q.data(), d.k.data(), d.len.data());
  const DinAttentionArgs<double> full = d.Args();
  a.w1 = full.w1;
  a.b1 = full.b1;
  a.w2 = full.w2;
  a.b2 = full.b2;
  a.w3 = full.w3;
  a.b3 = full.b3;
  std::vector<double> w(B * T), saved(DinAttentionSavedSize(a)), w_ref(B * T);
  Poison(w);
  Poison(w_ref);
  ASSERT_TRUE(DinAttentionForward<double>(Context{}, a, w.data(), nullptr, saved.data()).ok());
  ASSERT_TRUE(DinAttentionForwardReference<double>(a, w_ref.data(), nullptr).ok());
  EXPECT_TRUE(AllClose(w, w_ref, {1e-12, 1e-10}));
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (t >= d.len[b]) {
        EXPECT_EQ(w[b * T + t], 0.0) << "b=" << b << " t=" << t;
      }
      sum += w[b * T + t];
    }
    EXPECT_NEAR(sum, d.len[b] > 0 ? 1.0 : 0.0, 1e-12) << "b=" << b;
  }
  CompareDinWithReference<float>(s, Context{}, {2e-5, 2e-4}, 29);
}

TEST(DinAttentionCpu, RawScoresAreMaskedAndPaddingIsIgnored) {
  DinShape s{3, 6, 4, 6, 5, Padding::kLeft, false, true, {0, 2, 6}};
  DinData<double> d(s, 31);
  std::vector<double> w, p, saved;
  RunDinForward(Context{}, d, &w, &p, &saved);
  // Changing padded keys changes nothing.
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t e = 0; e < 4; ++e) d.k[(1 * 6 + t) * 4 + e] = 1e30;
  std::vector<double> w2, p2, saved2;
  RunDinForward(Context{}, d, &w2, &p2, &saved2);
  EXPECT_TRUE(AllClose(w2, w, {0, 0}));
  EXPECT_TRUE(AllClose(p2, p, {0, 0}));
  for (int64_t t = 0; t < 6; ++t) EXPECT_EQ(w[t], 0.0);      // length 0
  for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(p[e], 0.0);      // length 0 pools nothing
  for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(w[6 + t], 0.0);  // left padding
  EXPECT_NE(w[6 + 4], 0.0);
}

TEST(DinAttentionCpu, RejectsBadLengthsAndShapes) {
  DinShape s{2, 4, 3, 5, 4, Padding::kLeft, false, true, {1, 5}};
  DinData<float> d(s, 37);
  std::vector<float> w(8), p(6), saved(DinAttentionSavedSize(d.Args()));
  Status st = DinAttentionForward(Context{}, d.Args(), w.data(), p.data(), saved.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("lengths[1]"), std::string::npos) << st;
  d.len[1] = -1;
  EXPECT_EQ(DinAttentionForward(Context{}, d.Args(), w.data(), p.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  d.len[1] = 2;
  auto a = d.Args();
  a.dim = 0;
  EXPECT_EQ(DinAttentionForward(Context{}, a, w.data(), p.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  a = d.Args();
  a.w2 = nullptr;
  EXPECT_EQ(DinAttentionForward(Context{}, a, w.data(), p.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  Context cuda;
  cuda.device = Device::kCuda;
  if (!CudaBuilt()) {
    EXPECT_EQ(DinAttentionForward(cuda, d.Args(), w.data(), p.data(), saved.data()).code(),
              StatusCode::kUnimplemented);
  }
}

// ---- MHA ----------------------------------------------------------------------------------------

struct MhaShape {
  int64_t B, T, H, D;
  bool causal;
  Padding padding;
  std::vector<int32_t> lengths;  // empty: no key padding
  double dropout;
};

template <typename T>
struct MhaData {
  MhaShape shape;
  std::vector<T> q, k, v;
  std::vector<int32_t> len;
  MhaData(const MhaShape& s, uint64_t seed) : shape(s), len(s.lengths) {
    Rng rng(seed);
    const int64_t n = s.B * s.T * s.H * s.D;
    q.resize(n);
    k.resize(n);
    v.resize(n);
    Fill(q, rng, -1.5, 1.5);
    Fill(k, rng, -1.5, 1.5);
    Fill(v, rng);
  }
  MhaArgs<T> Args() const {
    MhaArgs<T> a;
    a.batch = shape.B;
    a.seq_len = shape.T;
    a.heads = shape.H;
    a.head_dim = shape.D;
    a.causal = shape.causal;
    a.padding = shape.padding;
    a.lengths = len.empty() ? nullptr : len.data();
    a.dropout = shape.dropout;
    a.seed = 12345;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    return a;
  }
};

class MhaGradCheck : public ::testing::TestWithParam<std::tuple<bool, Padding, double>> {};

TEST_P(MhaGradCheck, QKV_B3_T5_H2_D3_len0_1_5) {
  const auto [causal, padding, dropout] = GetParam();
  const MhaShape s{3, 5, 2, 3, causal, padding, {0, 1, 5}, dropout};
  MhaData<double> d(s, 41);
  const int64_t n = s.B * s.T * s.H * s.D;
  Rng rng(43);
  std::vector<double> up(n);
  Fill(up, rng);
  auto loss = [&]() {
    std::vector<double> out(n), saved(MhaSavedSize(d.Args()));
    EXPECT_TRUE(MhaForward(Context{}, d.Args(), out.data(), saved.data()).ok());
    return Dot(out, up);
  };
  std::vector<double> out(n), saved(MhaSavedSize(d.Args())), dq(n), dk(n), dv(n);
  Poison(out);
  Poison(saved);
  Poison(dq);
  Poison(dk);
  Poison(dv);
  ASSERT_TRUE(MhaForward(Context{}, d.Args(), out.data(), saved.data()).ok());
  ASSERT_TRUE(
      MhaBackward(Context{}, d.Args(), saved.data(), up.data(), dq.data(), dk.data(), dv.data())
          .ok());
  EXPECT_TRUE(CheckGradient("q", d.q, dq, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("k", d.k, dk, loss, 1e-6, 1e-6));
  EXPECT_TRUE(CheckGradient("v", d.v, dv, loss, 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Configs, MhaGradCheck,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(Padding::kLeft, Padding::kRight),
                                            ::testing::Values(0.0, 0.3)),
                         [](const ::testing::TestParamInfo<MhaGradCheck::ParamType>& info) {
                           return std::string(std::get<0>(info.param) ? "causal" : "full") +
                                  (std::get<1>(info.param) == Padding::kLeft ? "_left" : "_right") +
                                  (std::get<2>(info.param) > 0 ? "_dropout" : "_nodropout");
                         });

template <typename T>
void CompareMhaWithReference(const MhaShape& s, const Context& ctx, testing::Tolerance tol) {
  MhaData<T> d(s, 47);
  const int64_t n = s.B * s.T * s.H * s.D;
  std::vector<T> out(n), saved(MhaSavedSize(d.Args())), out_ref(n);
  Poison(out);
  Poison(saved);
  Poison(out_ref);
  ASSERT_TRUE(MhaForward(ctx, d.Args(), out.data(), saved.data()).ok());
  ASSERT_TRUE(MhaForwardReference(d.Args(), out_ref.data()).ok());
  EXPECT_TRUE(AllClose(out, out_ref, tol)) << "out";
  Rng rng(53);
  std::vector<T> up(n), dq(n), dk(n), dv(n), rq(n), rk(n), rv(n);
  Fill(up, rng);
  for (auto* v : {&dq, &dk, &dv, &rq, &rk, &rv}) Poison(*v);
  ASSERT_TRUE(
      MhaBackward(ctx, d.Args(), saved.data(), up.data(), dq.data(), dk.data(), dv.data()).ok());
  ASSERT_TRUE(MhaBackwardReference(d.Args(), up.data(), rq.data(), rk.data(), rv.data()).ok());
  EXPECT_TRUE(AllClose(dq, rq, tol)) << "dq";
  EXPECT_TRUE(AllClose(dk, rk, tol)) << "dk";
  EXPECT_TRUE(AllClose(dv, rv, tol)) << "dv";
}

TEST(MhaCpu, FusedMatchesReference_Float_SASRec_B6_T50_H1_D50_causal_leftpad_dropout) {
  ThreadPool pool(2);
  Context ctx;
  ctx.pool = &pool;
  MhaShape s{6, 50, 1, 50, true, Padding::kLeft, {0, 1, 50, 17, 33, 49}, 0.5};
  CompareMhaWithReference<float>(s, ctx, {1e-5, 1e-4});
}

TEST(MhaCpu, FusedMatchesReference_Double_B3_T20_H4_D8_rightpad_nocausal) {
  MhaShape s{3, 20, 4, 8, false, Padding::kRight, {20, 1, 7}, 0.0};
  CompareMhaWithReference<double>(s, Context{}, {1e-12, 1e-10});
}

TEST(MhaCpu, FusedMatchesReference_Float_NoLengths_H2) {
  MhaShape s{2, 9, 2, 5, true, Padding::kLeft, {}, 0.2};
  CompareMhaWithReference<float>(s, Context{}, {1e-5, 1e-4});
}

TEST(MhaCpu, ProbabilitiesMaskedAndRowsSumToOne) {
  MhaShape s{2, 6, 1, 4, true, Padding::kLeft, {4, 0}, 0.0};
  MhaData<double> d(s, 59);
  std::vector<double> out(2 * 6 * 4), saved(MhaSavedSize(d.Args()));
  ASSERT_TRUE(MhaForward(Context{}, d.Args(), out.data(), saved.data()).ok());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 6; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < 6; ++j) {
        const double p = saved[(b * 6 + i) * 6 + j];
        const bool allowed = j <= i && j >= 6 - d.len[b];
        if (!allowed) {
          EXPECT_EQ(p, 0.0) << b << " " << i << " " << j;
        }
        sum += p;
      }
      const bool any = i >= 6 - d.len[b];
      EXPECT_NEAR(sum, any ? 1.0 : 0.0, 1e-12) << b << " " << i;
      if (!any) {
        for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(out[(b * 6 + i) * 4 + e], 0.0);
      }
    }
}

TEST(MhaCpu, DropoutIsDeterministicAndDropsAboutP) {
  MhaShape s{4, 50, 1, 8, false, Padding::kLeft, {}, 0.3};
  MhaData<float> d(s, 61);
  const int64_t n = 4 * 50 * 8;
  std::vector<float> o1(n), o2(n), saved(MhaSavedSize(d.Args()));
  ASSERT_TRUE(MhaForward(Context{}, d.Args(), o1.data(), saved.data()).ok());
  ASSERT_TRUE(MhaForward(Context{}, d.Args(), o2.data(), saved.data()).ok());
  EXPECT_TRUE(AllClose(o1, o2, {0, 0}));
  // Fraction dropped over all 10,000 (i, j) pairs, computed from the public rule.
  int64_t dropped = 0;
  const uint64_t thr = static_cast<uint64_t>(0.3 * 18446744073709551616.0);
  for (uint64_t idx = 0; idx < 4 * 50 * 50; ++idx) dropped += Mix64(12345 ^ idx) < thr;
  EXPECT_NEAR(dropped / 10000.0, 0.3, 0.02);
  // A different seed changes the output.
  auto a = d.Args();
  a.seed = 999;
  ASSERT_TRUE(MhaForward(Context{}, a, o2.data(), saved.data()).ok());
  EXPECT_FALSE(AllClose(o1, o2, {1e-6, 0}));
}

TEST(MhaCpu, RejectsBadArguments) {
  MhaShape s{2, 4, 1, 3, true, Padding::kLeft, {5, 1}, 0.0};
  MhaData<float> d(s, 67);
  std::vector<float> out(24), saved(32);
  EXPECT_EQ(MhaForward(Context{}, d.Args(), out.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  d.len[0] = 4;
  auto a = d.Args();
  a.dropout = 1.0;
  EXPECT_EQ(MhaForward(Context{}, a, out.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  a = d.Args();
  a.head_dim = 0;
  EXPECT_EQ(MhaForward(Context{}, a, out.data(), saved.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(MhaForward(Context{}, d.Args(), out.data(), saved.data()).ok());
}

// Without CUDA in the build, the CUDA attention supports nothing (a model on CUDA is refused at
// Create); tests/models/transformer_gpu_test.cc checks the limits on a device.
TEST(MhaCuda, SupportsNothingWithoutCuda) {
  if (CudaBuilt()) GTEST_SKIP() << "CUDA is built: the GPU test checks the limits";
  EXPECT_EQ(MhaCudaSupports(50, 50).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ips::kernels
