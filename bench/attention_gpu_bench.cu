// GPU benchmark of the DIN activation unit (forward + backward, B x 50 x 36, 80/40, pooled),
// against its byte floor: the bytes it must move at least (forward reads q, k and writes
// weights and pooled; backward reads q, k, d_pooled and writes d_query, d_keys) divided by the
// device-to-device copy bandwidth measured in the same run (cudaMemcpyAsync of 256 MiB, counted
// as read + write). Verifies the CUDA result against the CPU kernel first. Last line:
//   RESULT din_attention_gpu ms=... floor_ms=... ratio=ms/floor target=1.5
// It also reports a compute floor (our GEMM FLOPs at the cuBLAS SGEMM rate of this run): at the
// peer's batch the op is compute-bound, so the byte floor alone is out of reach by design.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"

namespace {

using ips::kernels::Context;
using ips::kernels::DinAttentionArgs;
using ips::kernels::DinAttentionGrads;

#define BENCH_CUDA(call)                                                          \
  do {                                                                            \
    cudaError_t e_ = (call);                                                      \
    if (e_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "%s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, \
                   cudaGetErrorString(e_));                                       \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

template <typename T>
T* Upload(const std::vector<T>& h) {
  T* d = nullptr;
  BENCH_CUDA(cudaMalloc(&d, std::max<size_t>(1, h.size()) * sizeof(T)));
  BENCH_CUDA(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
float* Alloc(size_t n) {
  float* d = nullptr;
  BENCH_CUDA(cudaMalloc(&d, std::max<size_t>(1, n) * sizeof(float)));
  return d;
}
std::vector<float> Download(const float* d, size_t n) {
  std::vector<float> h(n);
  BENCH_CUDA(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// Median of reps of the mean ms per call of fn over iters calls, by CUDA events.
template <typename Fn>
double TimeMs(cudaStream_t s, int iters, int reps, const Fn& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    BENCH_CUDA(cudaEventRecord(a, s));
    for (int i = 0; i < iters; ++i) fn();
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaEventSynchronize(b));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t / iters);
  }
  BENCH_CUDA(cudaEventDestroy(a));
  BENCH_CUDA(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

bool Close(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]) / (1e-3 + std::fabs(want[i]));
    if (!(err <= 2e-3)) {
      std::fprintf(stderr, "verify FAILED: %s[%zu] gpu %g cpu %g\n", what, i, got[i], want[i]);
      return false;
    }
    worst = std::max(worst, err);
  }
  std::printf("verify %s: max rel err %.2e\n", what, worst);
  return true;
}

struct Result {
  double ms, fwd_ms, floor_ms, compute_floor_ms;
};

// Runs (and, when verify, checks against the CPU) one batch size.
bool RunDin(int64_t B, bool verify, double copy_gbps, double gemm_tflops, cudaStream_t stream,
            Result* res) {
  const int64_t T = 50, E = 36, H1 = 80, H2 = 40;
  ips::Rng rng(5);
  auto fill = [&](std::vector<float>& v, float lo, float hi) {
    for (auto& x : v) x = lo + (hi - lo) * rng.UniformFloat();
  };
  std::vector<float> q(B * E), k(B * T * E), w1(H1 * 4 * E), b1(H1), w2(H2 * H1), b2(H2), w3(H2),
      b3(1), dp(B * E);
  fill(q, -0.5f, 0.5f);
  fill(k, -0.5f, 0.5f);
  for (auto* v : {&w1, &b1, &w2, &b2, &w3, &b3}) fill(*v, -0.3f, 0.3f);
  fill(dp, -1, 1);
  std::vector<int32_t> len(B, static_cast<int32_t>(T));
  for (int64_t b = 0; b < std::min<int64_t>(B, 8); ++b) len[b] = static_cast<int32_t>(b * 7);
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
  DinAttentionArgs<float> g = a;
  g.query = Upload(q);
  g.keys = Upload(k);
  g.lengths = Upload(len);
  g.w1 = Upload(w1);
  g.b1 = Upload(b1);
  g.w2 = Upload(w2);
  g.b2 = Upload(b2);
  g.w3 = Upload(w3);
  g.b3 = Upload(b3);
  float* d_dp = Upload(dp);
  float* weights = Alloc(B * T);
  float* pooled = Alloc(B * E);
  float* saved = Alloc(ips::kernels::DinAttentionSavedSize(a));
  float* work = Alloc(ips::kernels::DinAttentionBackwardWorkspaceSize(a));
  DinAttentionGrads<float> gr{Alloc(B * E),   Alloc(B * T * E), Alloc(H1 * 4 * E), Alloc(H1),
                              Alloc(H2 * H1), Alloc(H2),        Alloc(H2),         Alloc(1)};
  Context ctx;
  ctx.device = ips::kernels::Device::kCuda;
  ctx.stream = stream;
  // Statuses are kept as text: nvcc warns on assigning a [[nodiscard]] Status.
  std::string failure;
  auto forward = [&] {
    const ips::Status s = ips::kernels::DinAttentionForward(ctx, g, weights, pooled, saved);
    if (!s.ok()) failure = s.ToString();
  };
  auto step = [&] {
    forward();
    const ips::Status s =
        ips::kernels::DinAttentionBackward(ctx, g, saved, nullptr, d_dp, gr, work);
    if (!s.ok()) failure = s.ToString();
  };
  step();
  BENCH_CUDA(cudaStreamSynchronize(stream));
  if (!failure.empty()) {
    std::fprintf(stderr, "attention_gpu_bench: %s\n", failure.c_str());
    return false;
  }
  bool ok = true;
  if (verify) {
    std::vector<float> cw(B * T), cp(B * E), cs(ips::kernels::DinAttentionSavedSize(a)),
        cwork(ips::kernels::DinAttentionBackwardWorkspaceSize(a)), cq(B * E), ck(B * T * E),
        cw1(w1.size()), cb1(H1), cw2(w2.size()), cb2(H2), cw3(H2), cb3(1);
    ok = ips::kernels::DinAttentionForward(Context{}, a, cw.data(), cp.data(), cs.data()).ok() &&
         ips::kernels::DinAttentionBackward(Context{}, a, cs.data(), nullptr, dp.data(),
                                            {cq.data(), ck.data(), cw1.data(), cb1.data(),
                                             cw2.data(), cb2.data(), cw3.data(), cb3.data()},
                                            cwork.data())
             .ok();
    ok = ok && Close("weights", Download(weights, B * T), cw) &&
         Close("pooled", Download(pooled, B * E), cp) &&
         Close("d_query", Download(gr.d_query, B * E), cq) &&
         Close("d_keys", Download(gr.d_keys, B * T * E), ck) &&
         Close("d_w1", Download(gr.d_w1, w1.size()), cw1) &&
         Close("d_w2", Download(gr.d_w2, w2.size()), cw2);
  }
  if (ok) {
    res->fwd_ms = TimeMs(stream, 20, 5, forward);
    res->ms = TimeMs(stream, 20, 5, step);
    // Minimum traffic: fwd reads q, k and writes weights, pooled; bwd reads q, k, d_pooled
    // and writes d_query, d_keys (weight gradients are a few KB).
    const double bytes =
        4.0 * (2 * (B * E + B * T * E) + B * T + B * E + B * E + B * E + B * T * E);
    res->floor_ms = bytes / (copy_gbps * 1e9) * 1e3;
    // Compute floor: the GEMM FLOPs of our formulation (layer 1 over [k, q*k], layer 2, their
    // backward data and weight products) at the cuBLAS SGEMM rate measured in this run.
    const double flops = 2.0 * B * T * (3 * (2 * E * H1) + 3 * (H1 * H2));
    res->compute_floor_ms = flops / (gemm_tflops * 1e12) * 1e3;
    std::printf(
        "din_attention_gpu B=%lld T=50 E=36 80/40: fwd %.4f ms, fwd+bwd %.4f ms, "
        "byte floor %.4f ms (%.1f MB at %.0f GB/s, ratio %.2f), "
        "GEMM floor %.4f ms (%.2f GFLOP at %.1f TFLOP/s, ratio %.2f)\n",
        static_cast<long long>(B), res->fwd_ms, res->ms, res->floor_ms, bytes / 1e6, copy_gbps,
        res->ms / res->floor_ms, res->compute_floor_ms, flops / 1e9, gemm_tflops,
        res->ms / res->compute_floor_ms);
  }
  for (const void* p : {static_cast<const void*>(g.query), static_cast<const void*>(g.keys),
                        static_cast<const void*>(g.lengths), static_cast<const void*>(g.w1),
                        static_cast<const void*>(g.b1), static_cast<const void*>(g.w2),
                        static_cast<const void*>(g.b2), static_cast<const void*>(g.w3),
                        static_cast<const void*>(g.b3)})
    cudaFree(const_cast<void*>(p));
  for (float* p : {d_dp, weights, pooled, saved, work, gr.d_query, gr.d_keys, gr.d_w1, gr.d_b1,
                   gr.d_w2, gr.d_b2, gr.d_w3, gr.d_b3})
    cudaFree(p);
  if (!failure.empty()) std::fprintf(stderr, "attention_gpu_bench: %s\n", failure.c_str());
  return ok && failure.empty();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 512;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--batch=", 0) == 0) {
      batch = std::atoll(arg.c_str() + 8);
    } else {
      std::fprintf(stderr, "attention_gpu_bench: unknown flag '%s' (--batch=N)\n", arg.c_str());
      return 2;
    }
  }
  if (batch < 8) {
    std::fprintf(stderr, "attention_gpu_bench: --batch must be >= 8\n");
    return 2;
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "attention_gpu_bench: no CUDA device visible\n");
    return 1;
  }
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));
  // Ceiling: device-to-device copy bandwidth (read + write bytes) in this run.
  const size_t copy_bytes = size_t(256) << 20;
  void *src = nullptr, *dst = nullptr;
  BENCH_CUDA(cudaMalloc(&src, copy_bytes));
  BENCH_CUDA(cudaMalloc(&dst, copy_bytes));
  BENCH_CUDA(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = TimeMs(stream, 10, 5, [&] {
    BENCH_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbps = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  BENCH_CUDA(cudaFree(src));
  BENCH_CUDA(cudaFree(dst));
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbps);
  // Compute ceiling: cuBLAS SGEMM 4096^3 through the project's Gemm, in this run.
  double gemm_tflops = 0;
  {
    const int64_t n = 4096;
    float *a = Alloc(n * n), *b = Alloc(n * n), *c = Alloc(n * n);
    BENCH_CUDA(cudaMemset(a, 0, n * n * sizeof(float)));
    BENCH_CUDA(cudaMemset(b, 0, n * n * sizeof(float)));
    ips::kernels::GemmArgs<float> g;
    g.m = g.n = g.k = n;
    g.a = a;
    g.b = b;
    g.c = c;
    g.lda = g.ldb = g.ldc = n;
    Context ctx;
    ctx.device = ips::kernels::Device::kCuda;
    ctx.stream = stream;
    std::string failure;
    const double ms = TimeMs(stream, 5, 3, [&] {
      const ips::Status s = ips::kernels::Gemm(ctx, g);
      if (!s.ok()) failure = s.ToString();
    });
    if (!failure.empty()) {
      std::fprintf(stderr, "attention_gpu_bench: %s\n", failure.c_str());
      return 1;
    }
    gemm_tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
    for (float* p : {a, b, c}) BENCH_CUDA(cudaFree(p));
  }
  std::printf("cuBLAS SGEMM 4096^3: %.1f TFLOP/s\n", gemm_tflops);
  Result big{}, res{};
  // GPU-sized batch first (info line), then the peer's batch, verified against the CPU.
  if (!RunDin(batch * 8, false, copy_gbps, gemm_tflops, stream, &big)) return 1;
  if (!RunDin(batch, true, copy_gbps, gemm_tflops, stream, &res)) return 1;
  ips::ResultLine("din_attention_gpu")
      .Add("batch", batch)
      .Add("ms", res.ms)
      .Add("fwd_ms", res.fwd_ms)
      .Add("floor_ms", res.floor_ms)
      .Add("ratio", res.ms / res.floor_ms)
      .Add("compute_floor_ms", res.compute_floor_ms)
      .Add("ratio_batch_x8", big.ms / big.floor_ms)
      .Add("copy_gbps", copy_gbps)
      .Add("target", 1.5)
      .Print();
  return 0;
}
