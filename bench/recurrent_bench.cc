// CPU GRU and AUGRU forward+backward at the DIEN shape (B=512, T=50, I=H=36, float, full
// lengths like the peer's unpacked nn.GRU). Verifies first: a slice of the batch against the
// scalar reference forward and against the float64 backward (rows are independent, so the
// slice's states, d_x and d_h0 must match the full-batch run). Then times fwd+bwd (median of
// --iters; wall and process CPU time), and, as the baseline of the same run, the layer's
// non-recurrent products (input projection, d_x, d_w_ih, d_w_hh, biases: 3/5 of its FLOPs)
// through the BLAS GemmCpu at the same shapes (blas_gemms_ms): the kernel does them with its own
// per-tile products, and this says what the one-big-GEMM layout would cost for them alone.
//
// Usage: recurrent_bench [--threads N] [--iters N] [--batch B] [--steps T]
// Last line: RESULT recurrent_cpu gru_ms=... augru_ms=... ...
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "kernels/gemm.h"
#include "kernels/recurrent.h"

namespace ips::kernels {
namespace {

template <typename T>
struct Layer {
  RnnShape shape;
  std::vector<int32_t> lengths;
  std::vector<T> x, w_ih, w_hh, b_ih, b_hh, att, h0;
  std::vector<T> states, final_h, reserve, d_states, d_final, d_x, d_w_ih, d_w_hh, d_b_ih, d_b_hh,
      d_att, d_h0;
  std::vector<unsigned char> ws;

  void Allocate() {
    const int64_t B = shape.batch, T_ = shape.steps, I = shape.input, H = shape.hidden;
    const int64_t GH = RnnGates(shape.cell) * H;
    states.assign(B * T_ * H, T(0)), final_h.assign(B * H, T(0));
    reserve.assign(RnnReserveBytes<T>(shape) / sizeof(T), T(0));
    ws.assign(std::max(RnnForwardWorkspaceBytes<T>(shape), RnnBackwardWorkspaceBytes<T>(shape)), 0);
    d_x.assign(B * T_ * I, T(0)), d_w_ih.assign(GH * I, T(0)), d_w_hh.assign(GH * H, T(0));
    d_b_ih.assign(GH, T(0)), d_b_hh.assign(GH, T(0)), d_att.assign(B * T_, T(0));
    d_h0.assign(B * H, T(0));
  }

  RnnForwardArgs<T> Fwd() {
    RnnForwardArgs<T> a;
    a.shape = shape;
    a.x = x.data(), a.lengths = lengths.data(), a.w_ih = w_ih.data(), a.w_hh = w_hh.data();
    a.b_ih = b_ih.data(), a.b_hh = b_hh.data();
    a.att = shape.cell == RnnCell::kAugru ? att.data() : nullptr;
    a.h0 = h0.data(), a.states = states.data(), a.final_h = final_h.data();
    a.reserve = reserve.data(), a.workspace = ws.data();
    return a;
  }

  RnnBackwardArgs<T> Bwd() {
    RnnBackwardArgs<T> a;
    a.shape = shape;
    a.x = x.data(), a.lengths = lengths.data(), a.w_ih = w_ih.data(), a.w_hh = w_hh.data();
    a.att = shape.cell == RnnCell::kAugru ? att.data() : nullptr;
    a.h0 = h0.data(), a.states = states.data(), a.reserve = reserve.data();
    a.d_states = d_states.data(), a.d_final_h = d_final.data();
    a.d_x = d_x.data(), a.d_w_ih = d_w_ih.data(), a.d_w_hh = d_w_hh.data();
    a.d_b_ih = d_b_ih.data(), a.d_b_hh = d_b_hh.data();
    a.d_att = shape.cell == RnnCell::kAugru ? d_att.data() : nullptr;
    a.d_h0 = d_h0.data(), a.workspace = ws.data();
    return a;
  }
};

template <typename T>
Layer<T> MakeLayer(RnnCell cell, int64_t B, int64_t T_, int64_t I, int64_t H, uint64_t seed) {
  Layer<T> l;
  l.shape = {cell, B, T_, I, H};
  Rng rng(seed);
  const int64_t GH = RnnGates(cell) * H;
  auto fill = [&](std::vector<T>& v, int64_t n, double lo, double hi) {
    v.resize(n);
    for (auto& e : v) e = static_cast<T>(lo + (hi - lo) * rng.Uniform());
  };
  const double k = 1.0 / std::sqrt(static_cast<double>(H));  // torch's init range
  fill(l.x, B * T_ * I, -1, 1), fill(l.w_ih, GH * I, -k, k), fill(l.w_hh, GH * H, -k, k);
  fill(l.b_ih, GH, -k, k), fill(l.b_hh, GH, -k, k), fill(l.att, B * T_, 0, 1);
  fill(l.h0, B * H, -0.5, 0.5), fill(l.d_states, B * T_ * H, -1, 1), fill(l.d_final, B * H, -1, 1);
  l.lengths.assign(B, static_cast<int32_t>(T_));
  l.Allocate();
  return l;
}

// Slice of the first `rows` batch rows of a float layer, converted to T.
template <typename T>
Layer<T> Slice(const Layer<float>& f, int64_t rows) {
  Layer<T> l;
  l.shape = f.shape;
  l.shape.batch = rows;
  const int64_t T_ = f.shape.steps, I = f.shape.input, H = f.shape.hidden;
  auto take = [](const std::vector<float>& v, int64_t n) {
    return std::vector<T>(v.begin(), v.begin() + n);
  };
  l.x = take(f.x, rows * T_ * I), l.w_ih = take(f.w_ih, f.w_ih.size()),
  l.w_hh = take(f.w_hh, f.w_hh.size());
  l.b_ih = take(f.b_ih, f.b_ih.size()), l.b_hh = take(f.b_hh, f.b_hh.size());
  l.att = take(f.att, rows * T_), l.h0 = take(f.h0, rows * H);
  l.d_states = take(f.d_states, rows * T_ * H), l.d_final = take(f.d_final, rows * H);
  l.lengths.assign(f.lengths.begin(), f.lengths.begin() + rows);
  l.Allocate();
  return l;
}

// Max |a - b| / (1 + |b|) over n elements.
template <typename A, typename B>
double MaxErr(const A* a, const B* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i])) / (1.0 + std::fabs(double(b[i])));
    if (!(d <= m)) m = d;  // NaN propagates as a failure
  }
  return m;
}

bool Verify(const char* name, Layer<float>& l, const Context& ctx) {
  const int64_t rows = std::min<int64_t>(16, l.shape.batch);
  const int64_t T_ = l.shape.steps, I = l.shape.input, H = l.shape.hidden;
  std::fill(l.states.begin(), l.states.end(), std::nanf(""));
  std::fill(l.d_x.begin(), l.d_x.end(), std::nanf(""));
  if (!RnnForward(ctx, l.Fwd()).ok() || !RnnBackward(ctx, l.Bwd()).ok()) {
    std::fprintf(stderr, "%s: kernel returned an error\n", name);
    return false;
  }
  Layer<float> ref = Slice<float>(l, rows);
  Layer<double> dbl = Slice<double>(l, rows);
  if (!RnnForwardReference(ref.Fwd()).ok() || !RnnForward(Context{}, dbl.Fwd()).ok() ||
      !RnnBackward(Context{}, dbl.Bwd()).ok()) {
    std::fprintf(stderr, "%s: reference returned an error\n", name);
    return false;
  }
  const double e_states = MaxErr(l.states.data(), ref.states.data(), rows * T_ * H);
  const double e_final = MaxErr(l.final_h.data(), ref.final_h.data(), rows * H);
  const double e_dx = MaxErr(l.d_x.data(), dbl.d_x.data(), rows * T_ * I);
  const double e_dh0 = MaxErr(l.d_h0.data(), dbl.d_h0.data(), rows * H);
  double e_datt = 0;
  if (l.shape.cell == RnnCell::kAugru) e_datt = MaxErr(l.d_att.data(), dbl.d_att.data(), rows * T_);
  const bool ok =
      e_states <= 1e-5 && e_final <= 1e-5 && e_dx <= 1e-3 && e_dh0 <= 1e-3 && e_datt <= 1e-3;
  std::fprintf(stderr,
               "verify %s (first %lld rows): states %.2e final %.2e vs scalar reference; d_x %.2e "
               "d_h0 %.2e d_att %.2e vs float64 -> %s\n",
               name, static_cast<long long>(rows), e_states, e_final, e_dx, e_dh0, e_datt,
               ok ? "ok" : "FAILED");
  return ok;
}

struct Times {
  double fwd = 0, bwd = 0, total = 0;
  double cpu = 0;  // CPU time of all threads per fwd+bwd: on a shared, oversubscribed VM this
                   // is steadier than wall time (which then mostly measures other tenants)
};

double ProcessCpuMillis() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Times TimeLayer(Layer<float>& l, const Context& ctx, int iters) {
  std::vector<double> f, b, t, c;
  for (int i = 0; i < iters + 3; ++i) {
    const double c0 = ProcessCpuMillis();
    Timer timer;
    if (!RnnForward(ctx, l.Fwd()).ok()) std::abort();
    const double tf = timer.Millis();
    if (!RnnBackward(ctx, l.Bwd()).ok()) std::abort();
    const double tt = timer.Millis();
    const double tc = ProcessCpuMillis() - c0;
    if (i < 3) continue;  // warm-up
    f.push_back(tf), b.push_back(tt - tf), t.push_back(tt), c.push_back(tc);
  }
  return {Median(f), Median(b), Median(t), Median(c)};
}

// The GEMMs the layout needs regardless of the recurrence (same shapes as the kernel's).
double TimeBlasGemms(const Layer<float>& l, int iters) {
  const int64_t BT = l.shape.batch * l.shape.steps, I = l.shape.input, H = l.shape.hidden;
  const int64_t GH = 3 * H;
  std::vector<float> gx(BT * GH, 0.5f), dgx(BT * GH, 0.25f), hp(BT * H, 0.1f), ones(BT, 1.f);
  std::vector<float> dx(BT * I), dw(GH * I), dwh(GH * H), db(GH);
  auto gemm = [](bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float* c, int64_t ldc) {
    GemmArgs<float> g;
    g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k, g.a = a, g.lda = lda, g.b = b;
    g.ldb = ldb, g.c = c, g.ldc = ldc;
    GemmCpu(g);
  };
  std::vector<double> t;
  for (int i = 0; i < iters + 3; ++i) {
    Timer timer;
    gemm(false, true, BT, GH, I, l.x.data(), I, l.w_ih.data(), I, gx.data(), GH);
    gemm(false, false, BT, I, GH, dgx.data(), GH, l.w_ih.data(), I, dx.data(), I);
    gemm(true, false, GH, I, BT, dgx.data(), GH, l.x.data(), I, dw.data(), I);
    gemm(true, false, GH, H, BT, dgx.data(), GH, hp.data(), H, dwh.data(), H);
    gemm(false, false, 1, GH, BT, ones.data(), BT, dgx.data(), GH, db.data(), GH);
    gemm(false, false, 1, GH, BT, ones.data(), BT, dgx.data(), GH, db.data(), GH);
    if (i >= 3) t.push_back(timer.Millis());
  }
  return Median(t);
}

int Main(int argc, char** argv) {
  int threads = 2, iters = 20;
  int64_t B = 512, T_ = 50, I = 36, H = 36;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (k == "--threads")
      threads = static_cast<int>(v);
    else if (k == "--iters")
      iters = static_cast<int>(v);
    else if (k == "--batch")
      B = v;
    else if (k == "--steps")
      T_ = v;
    else {
      std::fprintf(stderr, "recurrent_bench: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (threads < 1 || iters < 1 || B < 1 || T_ < 1) {
    std::fprintf(stderr, "recurrent_bench: --threads, --iters, --batch, --steps must be >= 1\n");
    return 2;
  }
  ThreadPool pool(threads);
  Context ctx;
  ctx.pool = &pool;
  Layer<float> gru = MakeLayer<float>(RnnCell::kGru, B, T_, I, H, 1);
  Layer<float> augru = MakeLayer<float>(RnnCell::kAugru, B, T_, I, H, 2);
  if (!Verify("gru", gru, ctx) || !Verify("augru", augru, ctx)) return 1;
  const Times tg = TimeLayer(gru, ctx, iters);
  const Times ta = TimeLayer(augru, ctx, iters);
  const double blas_ms = TimeBlasGemms(gru, iters);
  std::printf("gru   fwd %.3f ms  bwd %.3f ms  total %.3f ms  (cpu %.3f ms)\n", tg.fwd, tg.bwd,
              tg.total, tg.cpu);
  std::printf("augru fwd %.3f ms  bwd %.3f ms  total %.3f ms  (cpu %.3f ms)\n", ta.fwd, ta.bwd,
              ta.total, ta.cpu);
  std::printf("baseline: the same non-recurrent products through GemmCpu %.3f ms (%s)\n", blas_ms,
              GemmCpuUsesBlas() ? "OpenBLAS" : "built-in GEMM");
  std::printf(
      "RESULT recurrent_cpu gru_ms=%.3f gru_fwd_ms=%.3f gru_bwd_ms=%.3f augru_ms=%.3f "
      "augru_fwd_ms=%.3f augru_bwd_ms=%.3f gru_cpu_ms=%.3f augru_cpu_ms=%.3f "
      "blas_gemms_ms=%.3f augru_over_gru=%.3f B=%lld T=%lld I=%lld H=%lld threads=%d\n",
      tg.total, tg.fwd, tg.bwd, ta.total, ta.fwd, ta.bwd, tg.cpu, ta.cpu, blas_ms,
      ta.total / tg.total, static_cast<long long>(B), static_cast<long long>(T_),
      static_cast<long long>(I), static_cast<long long>(H), threads);
  return 0;
}

}  // namespace
}  // namespace ips::kernels

int main(int argc, char** argv) { return ips::kernels::Main(argc, argv); }
