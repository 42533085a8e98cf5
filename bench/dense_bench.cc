// CPU benchmark of the dense ops at the shape of DIN's top MLP: batch 512, 108 -> 200 -> 80 -> 1
// with PReLU after the hidden layers and BCE-with-logits on the output, forward + backward.
//   ours      : LinearForward/Backward (GEMM + fused bias/activation, bias column sums),
//               PreluForward/Backward, BceWithLogitsForward/Backward.
//   gemm_only : the same nine GEMMs alone, through the same Gemm: the ceiling for ours (what the
//               element-wise work costs on top is `overhead` = ours / gemm_only).
//   naive     : straightforward loops (no BLAS, separate passes): the baseline.
// First verifies ours against naive (loss and every gradient), then times each: best of N runs
// (the VM is shared and noisy; the minimum is the least disturbed run).
// Usage: dense_bench [--iters N]   (single thread for ours and naive; the BLAS may use more)
// Last line: RESULT dense_cpu ours_ms=... gemm_only_ms=... naive_ms=... overhead=... speedup=...
//            target_overhead=1.5
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "kernels/activation.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/loss.h"

namespace ips::kernels {
namespace {

constexpr int64_t kB = 512, kIn = 108, kH1 = 200, kH2 = 80;

struct Mlp {
  std::vector<float> x, label, w1, b1, a1, w2, b2, a2, w3, b3;
};

struct Grads {
  float loss = 0;
  std::vector<float> dx, dw1, db1, da1, dw2, db2, da2, dw3, db3;
};

std::vector<float> Rand(int64_t n, Rng& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.UniformFloat();
  return v;
}

Mlp MakeMlp() {
  Rng rng(42);
  Mlp m;
  m.x = Rand(kB * kIn, rng, -1, 1);
  m.label.resize(kB);
  for (auto& l : m.label) l = rng.UniformInt(2) ? 1.f : 0.f;
  m.w1 = Rand(kH1 * kIn, rng, -0.1f, 0.1f);
  m.b1 = Rand(kH1, rng, -0.1f, 0.1f);
  m.a1 = std::vector<float>(kH1, 0.25f);
  m.w2 = Rand(kH2 * kH1, rng, -0.1f, 0.1f);
  m.b2 = Rand(kH2, rng, -0.1f, 0.1f);
  m.a2 = std::vector<float>(kH2, 0.25f);
  m.w3 = Rand(kH2, rng, -0.1f, 0.1f);
  m.b3 = Rand(1, rng, -0.1f, 0.1f);
  return m;
}

// Scratch of one step of ours.
struct Work {
  std::vector<float> h1, p1, h2, p2, out, dout, dp2, dh2, dp1, dh1;
  Work()
      : h1(kB * kH1),
        p1(kB * kH1),
        h2(kB * kH2),
        p2(kB * kH2),
        out(kB),
        dout(kB),
        dp2(kB * kH2),
        dh2(kB * kH2),
        dp1(kB * kH1),
        dh1(kB * kH1) {}
};

void InitGrads(Grads& g) {
  g.dx.assign(kB * kIn, 0);
  g.dw1.assign(kH1 * kIn, 0);
  g.db1.assign(kH1, 0);
  g.da1.assign(kH1, 0);
  g.dw2.assign(kH2 * kH1, 0);
  g.db2.assign(kH2, 0);
  g.da2.assign(kH2, 0);
  g.dw3.assign(kH2, 0);
  g.db3.assign(1, 0);
}

#define BENCH_OK(expr)                                                                    \
  do {                                                                                    \
    Status s_ = (expr);                                                                   \
    if (!s_.ok()) {                                                                       \
      std::fprintf(stderr, "dense_bench: %s failed: %s\n", #expr, s_.ToString().c_str()); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

LinearArgs<float> Layer(const float* x, int64_t in, int64_t out, const float* w, const float* b,
                        float* y) {
  LinearArgs<float> l;
  l.rows = kB;
  l.in = in;
  l.out = out;
  l.x = x;
  l.w = w;
  l.bias = b;
  l.y = y;
  return l;
}

void StepOurs(const Mlp& m, Work& k, Grads& g) {
  const Context ctx;
  auto l1 = Layer(m.x.data(), kIn, kH1, m.w1.data(), m.b1.data(), k.h1.data());
  BENCH_OK(LinearForward(ctx, l1));
  PreluArgs<float> r1{kB, kH1, k.h1.data(), m.a1.data(), k.p1.data()};
  BENCH_OK(PreluForward(ctx, r1));
  auto l2 = Layer(k.p1.data(), kH1, kH2, m.w2.data(), m.b2.data(), k.h2.data());
  BENCH_OK(LinearForward(ctx, l2));
  PreluArgs<float> r2{kB, kH2, k.h2.data(), m.a2.data(), k.p2.data()};
  BENCH_OK(PreluForward(ctx, r2));
  auto l3 = Layer(k.p2.data(), kH2, 1, m.w3.data(), m.b3.data(), k.out.data());
  BENCH_OK(LinearForward(ctx, l3));
  BceWithLogitsArgs<float> bce;
  bce.n = kB;
  bce.logits = k.out.data();
  bce.labels = m.label.data();
  bce.loss = &g.loss;
  bce.dlogits = k.dout.data();
  BENCH_OK(BceWithLogitsForward(ctx, bce));
  BENCH_OK(BceWithLogitsBackward(ctx, bce));
  l3.dy = k.dout.data();
  l3.dpre = k.dout.data();
  l3.dx = k.dp2.data();
  l3.dw = g.dw3.data();
  l3.dbias = g.db3.data();
  BENCH_OK(LinearBackward(ctx, l3));
  r2.dy = k.dp2.data();
  r2.dx = k.dh2.data();
  r2.dalpha = g.da2.data();
  BENCH_OK(PreluBackward(ctx, r2));
  l2.dy = k.dh2.data();
  l2.dpre = k.dh2.data();
  l2.dx = k.dp1.data();
  l2.dw = g.dw2.data();
  l2.dbias = g.db2.data();
  BENCH_OK(LinearBackward(ctx, l2));
  r1.dy = k.dp1.data();
  r1.dx = k.dh1.data();
  r1.dalpha = g.da1.data();
  BENCH_OK(PreluBackward(ctx, r1));
  l1.dy = k.dh1.data();
  l1.dpre = k.dh1.data();
  l1.dx = g.dx.data();
  l1.dw = g.dw1.data();
  l1.dbias = g.db1.data();
  BENCH_OK(LinearBackward(ctx, l1));
}

// The nine GEMMs of StepOurs, nothing else.
void StepGemmOnly(const Mlp& m, Work& k, Grads& g) {
  auto gemm = [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float* c, int64_t ldc) {
    GemmArgs<float> x;
    x.trans_a = ta;
    x.trans_b = tb;
    x.m = M;
    x.n = N;
    x.k = K;
    x.a = a;
    x.lda = lda;
    x.b = b;
    x.ldb = ldb;
    x.c = c;
    x.ldc = ldc;
    BENCH_OK(Gemm(Context{}, x));
  };
  gemm(false, true, kB, kH1, kIn, m.x.data(), kIn, m.w1.data(), kIn, k.h1.data(), kH1);
  gemm(false, true, kB, kH2, kH1, k.p1.data(), kH1, m.w2.data(), kH1, k.h2.data(), kH2);
  gemm(false, true, kB, 1, kH2, k.p2.data(), kH2, m.w3.data(), kH2, k.out.data(), 1);
  gemm(true, false, 1, kH2, kB, k.dout.data(), 1, k.p2.data(), kH2, g.dw3.data(), kH2);
  gemm(false, false, kB, kH2, 1, k.dout.data(), 1, m.w3.data(), kH2, k.dp2.data(), kH2);
  gemm(true, false, kH2, kH1, kB, k.dh2.data(), kH2, k.p1.data(), kH1, g.dw2.data(), kH1);
  gemm(false, false, kB, kH1, kH2, k.dh2.data(), kH2, m.w2.data(), kH1, k.dp1.data(), kH1);
  gemm(true, false, kH1, kIn, kB, k.dh1.data(), kH1, m.x.data(), kIn, g.dw1.data(), kIn);
  gemm(false, false, kB, kIn, kH1, k.dh1.data(), kH1, m.w1.data(), kIn, g.dx.data(), kIn);
}

// Naive loops: y = x W^T + b, then PReLU, in separate passes; the backward likewise.
void NaiveLinear(const float* x, int64_t in, int64_t out, const float* w, const float* b,
                 float* y) {
  for (int64_t r = 0; r < kB; ++r)
    for (int64_t o = 0; o < out; ++o) {
      float s = 0;
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  for (int64_t r = 0; r < kB; ++r)
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += b[o];
}
void NaivePrelu(const float* x, int64_t c, const float* a, float* y) {
  for (int64_t i = 0; i < kB * c; ++i) y[i] = x[i] > 0 ? x[i] : a[i % c] * x[i];
}
// dpre = dy (identity after the linear); dW, db, dx.
void NaiveLinearBackward(const float* x, int64_t in, int64_t out, const float* w, const float* dy,
                         float* dx, float* dw, float* db) {
  for (int64_t o = 0; o < out; ++o) {
    db[o] = 0;
    for (int64_t i = 0; i < in; ++i) dw[o * in + i] = 0;
  }
  for (int64_t r = 0; r < kB; ++r)
    for (int64_t o = 0; o < out; ++o) {
      db[o] += dy[r * out + o];
      for (int64_t i = 0; i < in; ++i) dw[o * in + i] += dy[r * out + o] * x[r * in + i];
    }
  for (int64_t r = 0; r < kB; ++r)
    for (int64_t i = 0; i < in; ++i) {
      float s = 0;
      for (int64_t o = 0; o < out; ++o) s += dy[r * out + o] * w[o * in + i];
      dx[r * in + i] = s;
    }
}
void NaivePreluBackward(const float* x, int64_t c, const float* a, const float* dy, float* dx,
                        float* da) {
  for (int64_t j = 0; j < c; ++j) da[j] = 0;
  for (int64_t i = 0; i < kB * c; ++i) {
    dx[i] = x[i] > 0 ? dy[i] : a[i % c] * dy[i];
    if (x[i] < 0) da[i % c] += dy[i] * x[i];
  }
}

void StepNaive(const Mlp& m, Work& k, Grads& g) {
  NaiveLinear(m.x.data(), kIn, kH1, m.w1.data(), m.b1.data(), k.h1.data());
  NaivePrelu(k.h1.data(), kH1, m.a1.data(), k.p1.data());
  NaiveLinear(k.p1.data(), kH1, kH2, m.w2.data(), m.b2.data(), k.h2.data());
  NaivePrelu(k.h2.data(), kH2, m.a2.data(), k.p2.data());
  NaiveLinear(k.p2.data(), kH2, 1, m.w3.data(), m.b3.data(), k.out.data());
  double loss = 0;
  for (int64_t i = 0; i < kB; ++i) {
    const double x = k.out[i], p = 1 / (1 + std::exp(-x));
    loss += -(m.label[i] * std::log(p) + (1 - m.label[i]) * std::log(1 - p));
    k.dout[i] = static_cast<float>((p - m.label[i]) / kB);
  }
  g.loss = static_cast<float>(loss / kB);
  NaiveLinearBackward(k.p2.data(), kH2, 1, m.w3.data(), k.dout.data(), k.dp2.data(), g.dw3.data(),
                      g.db3.data());
  NaivePreluBackward(k.h2.data(), kH2, m.a2.data(), k.dp2.data(), k.dh2.data(), g.da2.data());
  NaiveLinearBackward(k.p1.data(), kH1, kH2, m.w2.data(), k.dh2.data(), k.dp1.data(), g.dw2.data(),
                      g.db2.data());
  NaivePreluBackward(k.h1.data(), kH1, m.a1.data(), k.dp1.data(), k.dh1.data(), g.da1.data());
  NaiveLinearBackward(m.x.data(), kIn, kH1, m.w1.data(), k.dh1.data(), g.dx.data(), g.dw1.data(),
                      g.db1.data());
}

// max |a - b| / (1e-3 + max |b|) over a tensor.
double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return err / (1e-3 + scale);
}

template <typename F>
double BestMs(int iters, F step) {
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    Timer timer;
    step();
    t.push_back(timer.Millis());
  }
  return *std::min_element(t.begin(), t.end());
}

}  // namespace
}  // namespace ips::kernels

int main(int argc, char** argv) {
  using namespace ips::kernels;
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: dense_bench [--iters N]\n");
      return 2;
    }
  }
  if (iters < 1) {
    std::fprintf(stderr, "dense_bench: --iters must be >= 1\n");
    return 2;
  }
  const Mlp m = MakeMlp();
  Work wo, wn, wg;
  Grads go, gn, gg;
  InitGrads(go);
  InitGrads(gn);
  InitGrads(gg);
  // Poison ours so that an unwritten output fails the verification.
  for (auto* v : {&go.dx, &go.dw1, &go.db1, &go.da1, &go.dw2, &go.db2, &go.da2, &go.dw3, &go.db3})
    std::fill(v->begin(), v->end(), NAN);
  StepOurs(m, wo, go);
  StepNaive(m, wn, gn);
  const std::vector<std::pair<const char*, double>> errs = {
      {"loss", std::fabs(go.loss - gn.loss) / std::fabs(gn.loss)},
      {"dx", RelErr(go.dx, gn.dx)},
      {"dw1", RelErr(go.dw1, gn.dw1)},
      {"db1", RelErr(go.db1, gn.db1)},
      {"dalpha1", RelErr(go.da1, gn.da1)},
      {"dw2", RelErr(go.dw2, gn.dw2)},
      {"db2", RelErr(go.db2, gn.db2)},
      {"dalpha2", RelErr(go.da2, gn.da2)},
      {"dw3", RelErr(go.dw3, gn.dw3)},
      {"db3", RelErr(go.db3, gn.db3)}};
  for (const auto& [name, err] : errs) {
    if (!(err < 1e-4)) {
      std::fprintf(stderr, "dense_bench: verification FAILED: %s relative error %g\n", name, err);
      return 1;
    }
  }
  std::fprintf(stderr, "dense_bench: verified loss and all gradients against naive loops\n");

  for (int i = 0; i < 3; ++i) StepOurs(m, wo, go);  // warm-up
  // Interleaved so that both see the same background load.
  double ours = INFINITY, gemm = INFINITY;
  for (int i = 0; i < iters; ++i) {
    ours = std::min(ours, BestMs(1, [&] { StepOurs(m, wo, go); }));
    gemm = std::min(gemm, BestMs(1, [&] { StepGemmOnly(m, wg, gg); }));
  }
  const double naive = BestMs(std::max(3, iters / 10), [&] { StepNaive(m, wn, gn); });
  std::fprintf(stderr,
               "best of runs: ours %.3f ms, gemm only %.3f ms, naive %.3f ms per fwd+bwd step\n",
               ours, gemm, naive);
  ips::ResultLine("dense_cpu")
      .Add("shape", "B512_108_200_80_1_prelu_bce")
      .Add("blas", GemmCpuUsesBlas() ? "openblas" : "builtin")
      .Add("ours_ms", ours)
      .Add("gemm_only_ms", gemm)
      .Add("naive_ms", naive)
      .Add("overhead", ours / gemm)
      .Add("speedup", naive / ours)
      .Add("target_overhead", 1.5)
      .Print();
  return 0;
}
