// CPU benchmark of the attention kernels at the peer's shapes, forward + backward per step:
//   --op=din  DIN activation unit + masked weighted-sum pooling, B=512, T=50, E=36, 80/40
//             (the peer's ActivationUnit, which dominates its DIN step);
//   --op=mha  SASRec attention, B=128, T=50, d=50, 1 head, causal, dropout 0.5.
// It verifies the fused kernels against the scalar references on a slice of the batch before
// timing. The baseline is torch eager on identical shapes (bench/torch_attention.py), measured by
// bench/attention.sh in the same run and passed in as --torch_ms; the last line is
//   RESULT din_attention_cpu ours_ms=... torch_ms=... ratio=torch/ours target=1.5
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"

namespace ips::kernels {
namespace {

struct Flags {
  std::string op = "din";
  int threads = 2;
  int iters = 20;
  int reps = 5;
  int batch = 0;  // 0: the op's default
  double torch_ms = 0;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name, std::string* out) {
      const std::string prefix = std::string("--") + name + "=";
      if (arg.rfind(prefix, 0) != 0) return false;
      *out = arg.substr(prefix.size());
      return true;
    };
    std::string v;
    if (value("op", &v)) {
      f->op = v;
    } else if (value("threads", &v)) {
      f->threads = std::atoi(v.c_str());
    } else if (value("iters", &v)) {
      f->iters = std::atoi(v.c_str());
    } else if (value("reps", &v)) {
      f->reps = std::atoi(v.c_str());
    } else if (value("batch", &v)) {
      f->batch = std::atoi(v.c_str());
    } else if (value("torch_ms", &v)) {
      f->torch_ms = std::atof(v.c_str());
    } else {
      std::fprintf(stderr, "attention_bench: unknown flag '%s'\n", arg.c_str());
      return false;
    }
  }
  if ((f->op != "din" && f->op != "mha") || f->threads < 1 || f->iters < 1 || f->reps < 1 ||
      f->batch < 0) {
    std::fprintf(stderr, "attention_bench: bad flags (--op=din|mha, positive counts)\n");
    return false;
  }
  return true;
}

void Fill(std::vector<float>& v, Rng& rng, float lo, float hi) {
  for (auto& x : v) x = lo + (hi - lo) * rng.UniformFloat();
}

// Max |a-b| / (1e-3 + |b|) over n elements; NaN counts as failure.
bool Close(const char* what, const float* got, const float* want, int64_t n, double tol) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::abs(double(got[i]) - double(want[i])) / (1e-3 + std::abs(want[i]));
    if (!(err <= tol)) {
      std::fprintf(stderr, "verify FAILED: %s[%lld] got %g want %g\n", what,
                   static_cast<long long>(i), got[i], want[i]);
      return false;
    }
    worst = std::max(worst, err);
  }
  std::fprintf(stderr, "verify %s: max rel err %.2e\n", what, worst);
  return true;
}

// Median over reps of the mean ms per iteration of fn.
template <typename Fn>
double TimeMs(const Flags& f, const Fn& fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int r = 0; r < f.reps; ++r) {
    Timer t;
    for (int i = 0; i < f.iters; ++i) fn();
    ms.push_back(t.Millis() / f.iters);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct DinBuffers {
  int64_t B, T, E, H1 = 80, H2 = 40;
  std::vector<float> q, k, w1, b1, w2, b2, w3, b3, weights, pooled, saved, work, dw, dp;
  std::vector<float> gq, gk, gw1, gb1, gw2, gb2, gw3, gb3;
  std::vector<int32_t> len;
  DinBuffers(int64_t b, int64_t t, int64_t e) : B(b), T(t), E(e) {
    Rng rng(1);
    q.resize(B * E);
    k.resize(B * T * E);
    w1.resize(H1 * 4 * E);
    b1.resize(H1);
    w2.resize(H2 * H1);
    b2.resize(H2);
    w3.resize(H2);
    b3.resize(1);
    for (auto* v : {&q, &k}) Fill(*v, rng, -0.5f, 0.5f);
    for (auto* v : {&w1, &b1, &w2, &b2, &w3, &b3}) Fill(*v, rng, -0.3f, 0.3f);
    len.assign(B, static_cast<int32_t>(T));  // the peer's synthetic data: every history full
    weights.resize(B * T);
    pooled.resize(B * E);
    saved.resize(DinAttentionSavedSize(B, T, E, H1, H2));
    work.resize(DinAttentionBackwardWorkspaceSize(B, T, E, H1, H2));
    dw.assign(B * T, 0.f);  // the DIN model feeds only `pooled` onwards
    dp.resize(B * E);
    Fill(dp, rng, -1.f, 1.f);
    gq.resize(B * E);
    gk.resize(B * T * E);
    gw1.resize(w1.size());
    gb1.resize(H1);
    gw2.resize(w2.size());
    gb2.resize(H2);
    gw3.resize(H2);
    gb3.resize(1);
  }
  DinAttentionArgs<float> Args() const {
    DinAttentionArgs<float> a;
    a.batch = B;
    a.max_len = T;
    a.dim = E;
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
  DinAttentionGrads<float> Grads() {
    return {gq.data(),  gk.data(),  gw1.data(), gb1.data(),
            gw2.data(), gb2.data(), gw3.data(), gb3.data()};
  }
  Status Step(const Context& ctx) {
    IPS_RETURN_IF_ERROR(
        DinAttentionForward(ctx, Args(), weights.data(), pooled.data(), saved.data()));
    return DinAttentionBackward(ctx, Args(), saved.data(), dw.data(), dp.data(), Grads(),
                                work.data());
  }
};

int RunDin(const Flags& f, const Context& ctx) {
  const int64_t B = f.batch > 0 ? f.batch : 512, T = 50, E = 36;
  {  // verify on a slice small enough for the scalar reference
    DinBuffers v(24, T, E);
    for (int b = 0; b < 24; ++b) v.len[b] = (b * 7) % (T + 1);
    if (!v.Step(ctx).ok()) return 1;
    DinBuffers r = v;
    for (auto* x : {&r.weights, &r.pooled, &r.gq, &r.gk, &r.gw1, &r.gw2}) x->assign(x->size(), 0);
    if (!DinAttentionForwardReference(r.Args(), r.weights.data(), r.pooled.data()).ok()) return 1;
    if (!DinAttentionBackwardReference(r.Args(), r.dw.data(), r.dp.data(), r.Grads()).ok())
      return 1;
    if (!Close("weights", v.weights.data(), r.weights.data(), v.weights.size(), 1e-3) ||
        !Close("pooled", v.pooled.data(), r.pooled.data(), v.pooled.size(), 1e-3) ||
        !Close("d_keys", v.gk.data(), r.gk.data(), v.gk.size(), 1e-3) ||
        !Close("d_query", v.gq.data(), r.gq.data(), v.gq.size(), 1e-3) ||
        !Close("d_w1", v.gw1.data(), r.gw1.data(), v.gw1.size(), 1e-3) ||
        !Close("d_w2", v.gw2.data(), r.gw2.data(), v.gw2.size(), 1e-3))
      return 1;
  }
  DinBuffers d(B, T, E);
  Status st;
  const double fwd_ms = TimeMs(f, [&] {
    st = DinAttentionForward(ctx, d.Args(), d.weights.data(), d.pooled.data(), d.saved.data());
  });
  const double ms = TimeMs(f, [&] { st = d.Step(ctx); });
  if (!st.ok()) {
    std::fprintf(stderr, "attention_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  // Useful FLOPs of the peer's formulation (4E-wide first layer), forward + 2x backward.
  const double flops = 3.0 * 2.0 * B * T * (4 * E * 80 + 80 * 40 + 40);
  std::printf(
      "din_attention B=%lld T=%lld E=%lld 80/40 threads=%d blas=%d: fwd %.3f ms, "
      "fwd+bwd %.3f ms (%.1f peer-equivalent GFLOP/s)\n",
      static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(E), f.threads,
      GemmCpuUsesBlas() ? 1 : 0, fwd_ms, ms, flops / (ms * 1e6));
  ResultLine r("din_attention_cpu");
  r.Add("ours_ms", ms).Add("fwd_ms", fwd_ms);
  if (f.torch_ms > 0) r.Add("torch_ms", f.torch_ms).Add("ratio", f.torch_ms / ms);
  r.Add("target", 1.5).Add("threads", f.threads);
  r.Print();
  return 0;
}

struct MhaBuffers {
  int64_t B, T, D;
  std::vector<float> q, k, v, out, saved, dout, dq, dk, dv;
  std::vector<int32_t> len;
  MhaBuffers(int64_t b, int64_t t, int64_t d) : B(b), T(t), D(d) {
    Rng rng(2);
    q.resize(B * T * D);
    k.resize(q.size());
    v.resize(q.size());
    dout.resize(q.size());
    for (auto* x : {&q, &k, &v, &dout}) Fill(*x, rng, -1.f, 1.f);
    out.resize(q.size());
    dq.resize(q.size());
    dk.resize(q.size());
    dv.resize(q.size());
    saved.resize(MhaSavedSize(B, T, 1));
    len.assign(B, static_cast<int32_t>(T));
  }
  MhaArgs<float> Args() const {
    MhaArgs<float> a;
    a.batch = B;
    a.seq_len = T;
    a.heads = 1;
    a.head_dim = D;
    a.causal = true;
    a.padding = Padding::kLeft;
    a.lengths = len.data();
    a.dropout = 0.5;
    a.seed = 7;
    a.q = q.data();
    a.k = k.data();
    a.v = v.data();
    return a;
  }
  Status Step(const Context& ctx) {
    IPS_RETURN_IF_ERROR(MhaForward(ctx, Args(), out.data(), saved.data()));
    return MhaBackward(ctx, Args(), saved.data(), dout.data(), dq.data(), dk.data(), dv.data());
  }
};

int RunMha(const Flags& f, const Context& ctx) {
  const int64_t B = f.batch > 0 ? f.batch : 128, T = 50, D = 50;
  {
    MhaBuffers v(8, T, D);
    for (int b = 0; b < 8; ++b) v.len[b] = (b * 13) % (T + 1);
    if (!v.Step(ctx).ok()) return 1;
    MhaBuffers r = v;
    if (!MhaForwardReference(r.Args(), r.out.data()).ok() ||
        !MhaBackwardReference(r.Args(), r.dout.data(), r.dq.data(), r.dk.data(), r.dv.data()).ok())
      return 1;
    if (!Close("out", v.out.data(), r.out.data(), v.out.size(), 1e-3) ||
        !Close("dq", v.dq.data(), r.dq.data(), v.dq.size(), 1e-3) ||
        !Close("dk", v.dk.data(), r.dk.data(), v.dk.size(), 1e-3) ||
        !Close("dv", v.dv.data(), r.dv.data(), v.dv.size(), 1e-3))
      return 1;
  }
  MhaBuffers d(B, T, D);
  Status st;
  const double ms = TimeMs(f, [&] { st = d.Step(ctx); });
  if (!st.ok()) {
    std::fprintf(stderr, "attention_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("mha B=%lld T=%lld d=%lld causal dropout=0.5 threads=%d: fwd+bwd %.3f ms\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(D),
              f.threads, ms);
  ResultLine r("mha_attention_cpu");
  r.Add("ours_ms", ms);
  if (f.torch_ms > 0) r.Add("torch_ms", f.torch_ms).Add("ratio", f.torch_ms / ms);
  r.Add("target", 1.5).Add("threads", f.threads);
  r.Print();
  return 0;
}

}  // namespace
}  // namespace ips::kernels

int main(int argc, char** argv) {
  ips::kernels::Flags f;
  if (!ips::kernels::ParseFlags(argc, argv, &f)) return 2;
  ips::ThreadPool pool(f.threads);
  ips::kernels::Context ctx;
  ctx.pool = &pool;
  return f.op == "din" ? ips::kernels::RunDin(f, ctx) : ips::kernels::RunMha(f, ctx);
}
