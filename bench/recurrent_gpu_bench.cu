// CUDA GRU forward+backward at H = I = 36 for T in {50, 200} and B in {512, 4096} (float, full
// lengths, like the peer's unpacked nn.GRU / cuDNN). For each shape it first verifies the first
// 16 batch rows (states, final state, d_x, d_h0) against the CPU kernel on the same inputs (rows
// are independent), then times fwd+bwd with CUDA events (median of --iters). Its own floor in the
// same run: a device-to-device copy of the bytes one fwd+bwd must at least write once (states,
// reserve, gate gradients, d_x). bench/torch_recurrent.py --device cuda gives cuDNN's time;
// launch/gpu_check.sh puts the two side by side.
//
// Usage: recurrent_gpu_bench [--iters N]
// Last line: RESULT recurrent_gpu gru_ms_B512_T50=... ... (ms per fwd+bwd)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/context.h"
#include "kernels/recurrent.h"

namespace ips::kernels {
namespace {

#define BENCH_CUDA(call)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

#define BENCH_OK(expr)                                                                \
  do {                                                                                \
    const Status s_ = (expr);                                                         \
    if (!s_.ok()) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, s_.ToString().c_str()); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

template <typename T>
T* DeviceCopy(const std::vector<T>& v) {
  T* p = nullptr;
  BENCH_CUDA(cudaMalloc(&p, std::max<size_t>(1, v.size()) * sizeof(T)));
  BENCH_CUDA(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

void* DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  BENCH_CUDA(cudaMalloc(&p, std::max<size_t>(1, bytes)));
  BENCH_CUDA(cudaMemset(p, 0xff, std::max<size_t>(1, bytes)));  // NaN until written
  return p;
}

std::vector<float> Download(const float* p, size_t n) {
  std::vector<float> v(n);
  BENCH_CUDA(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

double MaxErr(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i])) / (1.0 + std::fabs(double(b[i])));
    if (!(d <= m)) m = d;
  }
  return m;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct ShapeResult {
  double ms = 0, fwd_ms = 0, floor_ms = 0;
  bool ok = false;
};

ShapeResult RunShape(int64_t B, int64_t T, int iters) {
  const int64_t I = 36, H = 36, GH = 3 * H;
  const RnnShape shape{RnnCell::kGru, B, T, I, H};
  Rng rng(static_cast<uint64_t>(B * 1000 + T));
  const float k = 1.0f / std::sqrt(static_cast<float>(H));
  auto fill = [&](int64_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& e : v) e = lo + (hi - lo) * rng.UniformFloat();
    return v;
  };
  const std::vector<float> x = fill(B * T * I, -1, 1), w_ih = fill(GH * I, -k, k),
                           w_hh = fill(GH * H, -k, k), b_ih = fill(GH, -k, k),
                           b_hh = fill(GH, -k, k), d_states = fill(B * T * H, -1, 1),
                           d_final = fill(B * H, -1, 1);
  const std::vector<int32_t> lengths(B, static_cast<int32_t>(T));
  const size_t reserve_bytes = RnnReserveBytes<float>(shape);
  const size_t ws_bytes =
      std::max(RnnForwardWorkspaceBytes<float>(shape), RnnBackwardWorkspaceBytes<float>(shape));

  float *dx = DeviceCopy(x), *dw_ih = DeviceCopy(w_ih), *dw_hh = DeviceCopy(w_hh);
  float *db_ih = DeviceCopy(b_ih), *db_hh = DeviceCopy(b_hh), *dd_states = DeviceCopy(d_states);
  float* dd_final = DeviceCopy(d_final);
  int32_t* dlen = DeviceCopy(lengths);
  auto* states = static_cast<float*>(DeviceAlloc(B * T * H * 4));
  auto* final_h = static_cast<float*>(DeviceAlloc(B * H * 4));
  auto* reserve = static_cast<float*>(DeviceAlloc(reserve_bytes));
  void* ws = DeviceAlloc(ws_bytes);
  auto* g_x = static_cast<float*>(DeviceAlloc(B * T * I * 4));
  auto* g_w_ih = static_cast<float*>(DeviceAlloc(GH * I * 4));
  auto* g_w_hh = static_cast<float*>(DeviceAlloc(GH * H * 4));
  auto* g_b_ih = static_cast<float*>(DeviceAlloc(GH * 4));
  auto* g_b_hh = static_cast<float*>(DeviceAlloc(GH * 4));
  auto* g_h0 = static_cast<float*>(DeviceAlloc(B * H * 4));

  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));
  Context gpu;
  gpu.device = Device::kCuda;
  gpu.stream = stream;
  RnnForwardArgs<float> f;
  f.shape = shape;
  f.x = dx, f.lengths = dlen, f.w_ih = dw_ih, f.w_hh = dw_hh, f.b_ih = db_ih, f.b_hh = db_hh;
  f.states = states, f.final_h = final_h, f.reserve = reserve, f.workspace = ws;
  RnnBackwardArgs<float> g;
  g.shape = shape;
  g.x = dx, g.lengths = dlen, g.w_ih = dw_ih, g.w_hh = dw_hh, g.states = states;
  g.reserve = reserve, g.d_states = dd_states, g.d_final_h = dd_final, g.d_x = g_x;
  g.d_w_ih = g_w_ih, g.d_w_hh = g_w_hh, g.d_b_ih = g_b_ih, g.d_b_hh = g_b_hh, g.d_h0 = g_h0;
  g.workspace = ws;

  // Verify the first rows against the CPU kernel.
  BENCH_OK(RnnForward(gpu, f));
  BENCH_OK(RnnBackward(gpu, g));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  const int64_t rows = std::min<int64_t>(16, B);
  ShapeResult res;
  {
    const RnnShape cs{RnnCell::kGru, rows, T, I, H};
    std::vector<float> c_states(rows * T * H), c_final(rows * H),
        c_reserve(RnnReserveBytes<float>(cs) / 4), c_dx(rows * T * I), c_dw_ih(GH * I),
        c_dw_hh(GH * H), c_db_ih(GH), c_db_hh(GH), c_dh0(rows * H);
    std::vector<unsigned char> c_ws(
        std::max(RnnForwardWorkspaceBytes<float>(cs), RnnBackwardWorkspaceBytes<float>(cs)));
    ThreadPool pool(2);
    Context cpu;
    cpu.pool = &pool;
    RnnForwardArgs<float> cf = f;
    cf.shape = cs, cf.x = x.data(), cf.lengths = lengths.data(), cf.w_ih = w_ih.data();
    cf.w_hh = w_hh.data(), cf.b_ih = b_ih.data(), cf.b_hh = b_hh.data();
    cf.states = c_states.data(), cf.final_h = c_final.data(), cf.reserve = c_reserve.data();
    cf.workspace = c_ws.data();
    BENCH_OK(RnnForward(cpu, cf));
    RnnBackwardArgs<float> cg = g;
    cg.shape = cs, cg.x = x.data(), cg.lengths = lengths.data(), cg.w_ih = w_ih.data();
    cg.w_hh = w_hh.data(), cg.states = c_states.data(), cg.reserve = c_reserve.data();
    cg.d_states = d_states.data(), cg.d_final_h = d_final.data(), cg.d_x = c_dx.data();
    cg.d_w_ih = c_dw_ih.data(), cg.d_w_hh = c_dw_hh.data(), cg.d_b_ih = c_db_ih.data();
    cg.d_b_hh = c_db_hh.data(), cg.d_h0 = c_dh0.data(), cg.workspace = c_ws.data();
    BENCH_OK(RnnBackward(cpu, cg));
    const double e_s = MaxErr(Download(states, rows * T * H).data(), c_states.data(), rows * T * H);
    const double e_f = MaxErr(Download(final_h, rows * H).data(), c_final.data(), rows * H);
    const double e_dx = MaxErr(Download(g_x, rows * T * I).data(), c_dx.data(), rows * T * I);
    const double e_dh = MaxErr(Download(g_h0, rows * H).data(), c_dh0.data(), rows * H);
    res.ok = e_s <= 1e-4 && e_f <= 1e-4 && e_dx <= 1e-3 && e_dh <= 1e-3;
    std::fprintf(stderr,
                 "verify B=%lld T=%lld (first %lld rows vs CPU): states %.2e final %.2e d_x %.2e "
                 "d_h0 %.2e -> %s\n",
                 (long long)B, (long long)T, (long long)rows, e_s, e_f, e_dx, e_dh,
                 res.ok ? "ok" : "FAILED");
  }

  cudaEvent_t e0, e1, e2;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  BENCH_CUDA(cudaEventCreate(&e2));
  std::vector<double> total, fwd;
  for (int i = 0; i < iters + 5; ++i) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    BENCH_OK(RnnForward(gpu, f));
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_OK(RnnBackward(gpu, g));
    BENCH_CUDA(cudaEventRecord(e2, stream));
    BENCH_CUDA(cudaEventSynchronize(e2));
    float tf = 0, tt = 0;
    BENCH_CUDA(cudaEventElapsedTime(&tf, e0, e1));
    BENCH_CUDA(cudaEventElapsedTime(&tt, e0, e2));
    if (i >= 5) fwd.push_back(tf), total.push_back(tt);
  }
  res.ms = Median(total);
  res.fwd_ms = Median(fwd);
  // Floor: copy the bytes fwd+bwd must write at least once (states + reserve + gx + dgx/dgh +
  // hprev + d_x), device to device.
  const size_t floor_bytes =
      (B * T * H + reserve_bytes / 4 + B * T * GH * 3 + B * T * H + B * T * I) * sizeof(float);
  void* src = DeviceAlloc(floor_bytes);
  void* dst = DeviceAlloc(floor_bytes);
  std::vector<double> fl;
  for (int i = 0; i < iters + 5; ++i) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    BENCH_CUDA(cudaMemcpyAsync(dst, src, floor_bytes, cudaMemcpyDeviceToDevice, stream));
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 5) fl.push_back(t);
  }
  res.floor_ms = Median(fl);
  std::printf("gru B=%-5lld T=%-4lld fwd %.3f ms  fwd+bwd %.3f ms  (copy floor %.3f ms)\n",
              (long long)B, (long long)T, res.fwd_ms, res.ms, res.floor_ms);
  for (void* p : {(void*)dx,
                  (void*)dw_ih,
                  (void*)dw_hh,
                  (void*)db_ih,
                  (void*)db_hh,
                  (void*)dd_states,
                  (void*)dd_final,
                  (void*)dlen,
                  (void*)states,
                  (void*)final_h,
                  (void*)reserve,
                  ws,
                  (void*)g_x,
                  (void*)g_w_ih,
                  (void*)g_w_hh,
                  (void*)g_b_ih,
                  (void*)g_b_hh,
                  (void*)g_h0,
                  src,
                  dst})
    cudaFree(p);
  cudaEventDestroy(e0), cudaEventDestroy(e1), cudaEventDestroy(e2);
  cudaStreamDestroy(stream);
  return res;
}

int Main(int argc, char** argv) {
  int iters = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--iters") {
      iters = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "recurrent_gpu_bench: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (iters < 1) {
    std::fprintf(stderr, "recurrent_gpu_bench: --iters must be >= 1\n");
    return 2;
  }
  if (!CudaDeviceAvailable()) {
    std::fprintf(stderr, "recurrent_gpu_bench: no CUDA device visible\n");
    return 1;
  }
  std::string line = "RESULT recurrent_gpu";
  bool ok = true;
  for (int64_t T : {50, 200}) {
    for (int64_t B : {512, 4096}) {
      const ShapeResult r = RunShape(B, T, iters);
      ok = ok && r.ok;
      char buf[160];
      std::snprintf(buf, sizeof(buf), " gru_ms_B%lld_T%lld=%.3f floor_ms_B%lld_T%lld=%.3f",
                    (long long)B, (long long)T, r.ms, (long long)B, (long long)T, r.floor_ms);
      line += buf;
    }
  }
  if (!ok) {
    std::fprintf(stderr, "recurrent_gpu_bench: verification FAILED, not reporting timings\n");
    return 1;
  }
  std::printf("%s H=36 I=36\n", line.c_str());
  return 0;
}

}  // namespace
}  // namespace ips::kernels

int main(int argc, char** argv) { return ips::kernels::Main(argc, argv); }
