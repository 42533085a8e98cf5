// GPU benchmark of the dense ops at DIN's top-MLP shape (batch B, 108 -> 200 -> 80 -> 1, PReLU,
// BCE with logits), forward + backward, against its own ceiling in the same run: the same nine
// cuBLAS GEMMs alone (`overhead` = ours / gemm_only: what the fused bias/activation, PReLU,
// bias column sums and the loss cost on top of the GEMMs). Verifies the GPU step against the CPU
// kernels on the same inputs first (loss and every gradient).
// Usage: dense_gpu_bench [--iters N] [--batch B]
// Last line: RESULT dense_gpu batch=... ours_ms=... gemm_only_ms=... overhead=...
// target_overhead=1.5
#include <cuda_runtime.h>

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
#include "kernels/context.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/loss.h"

namespace ips::kernels {
namespace {

constexpr int64_t kIn = 108, kH1 = 200, kH2 = 80;

#define BENCH_OK(expr)                                                                        \
  do {                                                                                        \
    Status s_ = (expr);                                                                       \
    if (!s_.ok()) {                                                                           \
      std::fprintf(stderr, "dense_gpu_bench: %s failed: %s\n", #expr, s_.ToString().c_str()); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)
#define BENCH_CUDA(expr)                                                                       \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "dense_gpu_bench: %s failed: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

// Every tensor of one step, by name; `sizes` gives their element counts in this order.
enum Buf {
  kX,
  kLabel,
  kW1,
  kB1,
  kA1,
  kW2,
  kB2,
  kA2,
  kW3,
  kB3,  // inputs and parameters
  kH1o,
  kP1,
  kH2o,
  kP2,
  kOut,
  kDout,
  kDp2,
  kDh2,
  kDp1,
  kDh1,  // activations and scratch
  kDx,
  kDw1,
  kDb1,
  kDa1,
  kDw2,
  kDb2,
  kDa2,
  kDw3,
  kDb3,
  kLoss,
  kNumBufs
};
constexpr int kFirstGrad = kDx;

std::vector<int64_t> Sizes(int64_t b) {
  return {b * kIn,   b,       kH1 * kIn, kH1,     kH1,     kH2 * kH1, kH2, kH2,
          kH2,       1,       b * kH1,   b * kH1, b * kH2, b * kH2,   b,   b,
          b * kH2,   b * kH2, b * kH1,   b * kH1, b * kIn, kH1 * kIn, kH1, kH1,
          kH2 * kH1, kH2,     kH2,       kH2,     1,       1};
}

struct Step {
  int64_t b;
  std::vector<float*> p;  // kNumBufs pointers (host or device)
};

LinearArgs<float> Layer(const Step& s, Buf x, int64_t in, int64_t out, Buf w, Buf bias, Buf y) {
  LinearArgs<float> l;
  l.rows = s.b;
  l.in = in;
  l.out = out;
  l.x = s.p[x];
  l.w = s.p[w];
  l.bias = s.p[bias];
  l.y = s.p[y];
  return l;
}

void RunOurs(const Context& ctx, const Step& s) {
  const auto& p = s.p;
  auto l1 = Layer(s, kX, kIn, kH1, kW1, kB1, kH1o);
  BENCH_OK(LinearForward(ctx, l1));
  PreluArgs<float> r1{s.b, kH1, p[kH1o], p[kA1], p[kP1]};
  BENCH_OK(PreluForward(ctx, r1));
  auto l2 = Layer(s, kP1, kH1, kH2, kW2, kB2, kH2o);
  BENCH_OK(LinearForward(ctx, l2));
  PreluArgs<float> r2{s.b, kH2, p[kH2o], p[kA2], p[kP2]};
  BENCH_OK(PreluForward(ctx, r2));
  auto l3 = Layer(s, kP2, kH2, 1, kW3, kB3, kOut);
  BENCH_OK(LinearForward(ctx, l3));
  BceWithLogitsArgs<float> bce;
  bce.n = s.b;
  bce.logits = p[kOut];
  bce.labels = p[kLabel];
  bce.loss = p[kLoss];
  bce.dlogits = p[kDout];
  BENCH_OK(BceWithLogitsForward(ctx, bce));
  BENCH_OK(BceWithLogitsBackward(ctx, bce));
  l3.dy = l3.dpre = p[kDout];
  l3.dx = p[kDp2];
  l3.dw = p[kDw3];
  l3.dbias = p[kDb3];
  BENCH_OK(LinearBackward(ctx, l3));
  r2.dy = p[kDp2];
  r2.dx = p[kDh2];
  r2.dalpha = p[kDa2];
  BENCH_OK(PreluBackward(ctx, r2));
  l2.dy = l2.dpre = p[kDh2];
  l2.dx = p[kDp1];
  l2.dw = p[kDw2];
  l2.dbias = p[kDb2];
  BENCH_OK(LinearBackward(ctx, l2));
  r1.dy = p[kDp1];
  r1.dx = p[kDh1];
  r1.dalpha = p[kDa1];
  BENCH_OK(PreluBackward(ctx, r1));
  l1.dy = l1.dpre = p[kDh1];
  l1.dx = p[kDx];
  l1.dw = p[kDw1];
  l1.dbias = p[kDb1];
  BENCH_OK(LinearBackward(ctx, l1));
}

void RunGemmOnly(const Context& ctx, const Step& s) {
  const auto& p = s.p;
  const int64_t b = s.b;
  auto gemm = [&](bool ta, bool tb, int64_t m, int64_t n, int64_t k, Buf a, int64_t lda, Buf bb,
                  int64_t ldb, Buf c, int64_t ldc) {
    GemmArgs<float> g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = p[a];
    g.lda = lda;
    g.b = p[bb];
    g.ldb = ldb;
    g.c = p[c];
    g.ldc = ldc;
    BENCH_OK(Gemm(ctx, g));
  };
  gemm(false, true, b, kH1, kIn, kX, kIn, kW1, kIn, kH1o, kH1);
  gemm(false, true, b, kH2, kH1, kP1, kH1, kW2, kH1, kH2o, kH2);
  gemm(false, true, b, 1, kH2, kP2, kH2, kW3, kH2, kOut, 1);
  gemm(true, false, 1, kH2, b, kDout, 1, kP2, kH2, kDw3, kH2);
  gemm(false, false, b, kH2, 1, kDout, 1, kW3, kH2, kDp2, kH2);
  gemm(true, false, kH2, kH1, b, kDh2, kH2, kP1, kH1, kDw2, kH1);
  gemm(false, false, b, kH1, kH2, kDh2, kH2, kW2, kH1, kDp1, kH1);
  gemm(true, false, kH1, kIn, b, kDh1, kH1, kX, kIn, kDw1, kIn);
  gemm(false, false, b, kIn, kH1, kDh1, kH1, kW1, kIn, kDx, kIn);
}

}  // namespace
}  // namespace ips::kernels

int main(int argc, char** argv) {
  using namespace ips::kernels;
  int iters = 200;
  int64_t batch = 512;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
      batch = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: dense_gpu_bench [--iters N] [--batch B]\n");
      return 2;
    }
  }
  if (iters < 1 || batch < 2) {
    std::fprintf(stderr, "dense_gpu_bench: need --iters >= 1 and --batch >= 2\n");
    return 2;
  }
  if (!CudaDeviceAvailable()) {
    std::fprintf(stderr, "dense_gpu_bench: no CUDA device visible\n");
    return 1;
  }
  const auto sizes = Sizes(batch);
  std::vector<std::vector<float>> host(kNumBufs);
  ips::Rng rng(42);
  for (int i = 0; i < kNumBufs; ++i) {
    host[i].assign(sizes[i], NAN);  // outputs stay NaN-poisoned until written
    if (i >= kH1o) continue;
    for (auto& v : host[i]) v = -0.1f + 0.2f * rng.UniformFloat();
  }
  for (auto& v : host[kX]) v = -1.f + 2.f * rng.UniformFloat();
  for (auto& v : host[kLabel]) v = rng.UniformInt(2) ? 1.f : 0.f;
  std::fill(host[kA1].begin(), host[kA1].end(), 0.25f);
  std::fill(host[kA2].begin(), host[kA2].end(), 0.25f);

  Step cpu{batch, {}}, gpu{batch, {}}, gemm_step{batch, {}};
  for (int i = 0; i < kNumBufs; ++i) {
    cpu.p.push_back(host[i].data());
    float* d = nullptr;
    BENCH_CUDA(cudaMalloc(&d, sizes[i] * sizeof(float)));
    BENCH_CUDA(cudaMemcpy(d, host[i].data(), sizes[i] * sizeof(float), cudaMemcpyHostToDevice));
    gpu.p.push_back(d);
  }
  // The GEMM-only step writes its own outputs, reading the same inputs.
  gemm_step.p = gpu.p;
  for (int i = kH1o; i < kNumBufs; ++i) BENCH_CUDA(cudaMalloc(&gemm_step.p[i], sizes[i] * 4));

  const Context cpu_ctx, gpu_ctx{Device::kCuda, nullptr, nullptr};
  RunOurs(cpu_ctx, cpu);
  RunOurs(gpu_ctx, gpu);
  BENCH_CUDA(cudaDeviceSynchronize());
  for (int i = kFirstGrad; i < kNumBufs; ++i) {
    std::vector<float> got(sizes[i]);
    BENCH_CUDA(cudaMemcpy(got.data(), gpu.p[i], sizes[i] * 4, cudaMemcpyDeviceToHost));
    double err = 0, scale = 0;
    for (int64_t j = 0; j < sizes[i]; ++j) {
      const double d = std::fabs(static_cast<double>(got[j]) - host[i][j]);
      err = std::max(err, std::isnan(d) ? HUGE_VAL : d);
      scale = std::max(scale, static_cast<double>(std::fabs(host[i][j])));
    }
    if (!(err <= 1e-4 * (1e-3 + scale))) {
      std::fprintf(stderr, "dense_gpu_bench: verification FAILED on buffer %d: err %g scale %g\n",
                   i, err, scale);
      return 1;
    }
  }
  std::fprintf(stderr, "dense_gpu_bench: verified loss and all gradients against the CPU\n");

  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  auto time_ms = [&](auto&& step) {
    for (int i = 0; i < 10; ++i) step();  // warm-up (cuBLAS handle, caches)
    BENCH_CUDA(cudaEventRecord(start));
    for (int i = 0; i < iters; ++i) step();
    BENCH_CUDA(cudaEventRecord(stop));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms) / iters;
  };
  double ours = INFINITY, gemm = INFINITY;
  for (int round = 0; round < 3; ++round) {  // interleaved rounds, best of each
    ours = std::min(ours, time_ms([&] { RunOurs(gpu_ctx, gpu); }));
    gemm = std::min(gemm, time_ms([&] { RunGemmOnly(gpu_ctx, gemm_step); }));
  }
  std::fprintf(stderr, "ours %.4f ms, gemm only %.4f ms per fwd+bwd step\n", ours, gemm);
  ips::ResultLine("dense_gpu")
      .Add("batch", batch)
      .Add("ours_ms", ours)
      .Add("gemm_only_ms", gemm)
      .Add("overhead", ours / gemm)
      .Add("target_overhead", 1.5)
      .Print();
  return 0;
}
