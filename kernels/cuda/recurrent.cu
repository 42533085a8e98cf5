// CUDA GRU / AUGRU / LSTM (float), see kernels/recurrent.h.
//
// Forward: the input projection of all steps is one cuBLAS GEMM ([B*T x I]·W_ihᵀ into the
// workspace), then ONE persistent kernel walks all T steps. Batch rows are independent, so each
// block owns a slice of rows and never needs a grid-wide barrier; W_hh lives in shared memory for
// the whole sequence and the block's states stay on chip (two __syncthreads per step). Backward
// is the mirror image: one persistent kernel for the recurrence writes the gate gradients of all
// steps, then cuBLAS computes d_x, d_w_ih and d_w_hh as three big GEMMs and one small kernel sums
// the bias gradients. For H > 128, or when W_hh does not fit in shared memory (about GRU H > 130
// / LSTM H > 119 on H100, GRU H > 117 / LSTM H > 101 on A100), a per-step path runs instead:
// per step one cuBLAS GEMM for the hidden projection and one elementwise kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/cuda_check.h"
#include "kernels/cuda/gemm_cuda.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/recurrent.h"

namespace ips::kernels {
namespace {

constexpr int kPersistentMaxHidden = 128;
constexpr int kPersistentThreads = 256;
constexpr int kStepThreads = 128;

struct Dims {
  int B, T, I, H;
};

template <typename T>
T* At(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

__device__ __forceinline__ float Sig(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ int ClampedLength(const int32_t* lengths, int b, int T) {
  return min(max(lengths[b], 0), T);
}

// ---- Cell math, shared by the persistent and per-step kernels ---------------------------------
// Forward for one (row, unit): gx_row points at the row's x-side gates (without b_ih), gh_row at
// its h-side gates (with b_hh). Updates h (and c), writes the saved values.
template <RnnCell kCell>
__device__ __forceinline__ float CellForward(int u, int H, const float* gx_row, const float* gh_row,
                                             const float* b_ih, float att, float h, float* c,
                                             float* saved) {
  if constexpr (kCell == RnnCell::kLstm) {
    const float ig = Sig(gx_row[u] + b_ih[u] + gh_row[u]);
    const float fg = Sig(gx_row[H + u] + b_ih[H + u] + gh_row[H + u]);
    const float gg = tanhf(gx_row[2 * H + u] + b_ih[2 * H + u] + gh_row[2 * H + u]);
    const float og = Sig(gx_row[3 * H + u] + b_ih[3 * H + u] + gh_row[3 * H + u]);
    const float cn = fg * *c + ig * gg;
    saved[u] = ig, saved[H + u] = fg, saved[2 * H + u] = gg, saved[3 * H + u] = og;
    saved[4 * H + u] = cn;
    *c = cn;
    return og * tanhf(cn);
  } else {
    const float r = Sig(gx_row[u] + b_ih[u] + gh_row[u]);
    const float s = Sig(gx_row[H + u] + b_ih[H + u] + gh_row[H + u]);
    const float ghn = gh_row[2 * H + u];
    const float n = tanhf(gx_row[2 * H + u] + b_ih[2 * H + u] + r * ghn);
    saved[u] = r, saved[H + u] = s, saved[2 * H + u] = n, saved[3 * H + u] = ghn;
    if constexpr (kCell == RnnCell::kGru) {
      return (1.f - s) * n + s * h;
    } else {
      const float z = att * s;
      return (1.f - z) * h + z * n;
    }
  }
}

// Backward for one valid (row, unit). dht = total gradient wrt h_t; returns the direct part of
// dh_{t-1} (without the W_hh term); writes x-side and h-side gate gradients; *da_part gets the
// unit's share of d_att (AUGRU); *dc is updated in place (LSTM).
template <RnnCell kCell>
__device__ __forceinline__ float CellBackward(int u, int H, const float* saved, float hp,
                                              float cprev, float att, float dht, float* dc,
                                              float* dgx, float* dgh, float* da_part) {
  if constexpr (kCell == RnnCell::kLstm) {
    const float ig = saved[u], fg = saved[H + u], gg = saved[2 * H + u], og = saved[3 * H + u];
    const float tc = tanhf(saved[4 * H + u]);
    const float dct = *dc + dht * og * (1.f - tc * tc);
    const float di = dct * gg * ig * (1.f - ig);
    const float df = dct * cprev * fg * (1.f - fg);
    const float dg = dct * ig * (1.f - gg * gg);
    const float dop = dht * tc * og * (1.f - og);
    dgx[u] = di, dgx[H + u] = df, dgx[2 * H + u] = dg, dgx[3 * H + u] = dop;
    dgh[u] = di, dgh[H + u] = df, dgh[2 * H + u] = dg, dgh[3 * H + u] = dop;
    *dc = dct * fg;
    return 0.f;
  } else {
    const float r = saved[u], s = saved[H + u], n = saved[2 * H + u], ghn = saved[3 * H + u];
    float dnp, dsp, direct;
    if constexpr (kCell == RnnCell::kGru) {
      dnp = dht * (1.f - s) * (1.f - n * n);
      dsp = dht * (hp - n) * s * (1.f - s);
      direct = dht * s;
    } else {
      const float z = att * s;
      const float dz = dht * (n - hp);
      *da_part = dz * s;
      dnp = dht * z * (1.f - n * n);
      dsp = dz * att * s * (1.f - s);
      direct = dht * (1.f - z);
    }
    const float drp = dnp * ghn * r * (1.f - r);
    dgx[u] = drp, dgx[H + u] = dsp, dgx[2 * H + u] = dnp;
    dgh[u] = drp, dgh[H + u] = dsp, dgh[2 * H + u] = dnp * r;
    return direct;
  }
}

// ---- Persistent kernels -----------------------------------------------------------------------
// Shared memory (floats): W_hhᵀ [H x GH] | h [R x H] | c [R x H] | gh [R x GH].
template <RnnCell kCell>
__global__ void ForwardPersistentKernel(
    Dims d, int R, const float* __restrict__ gx, const int32_t* __restrict__ lengths,
    const float* __restrict__ w_hh, const float* __restrict__ b_ih, const float* __restrict__ b_hh,
    const float* __restrict__ att, const float* __restrict__ h0, const float* __restrict__ c0,
    float* __restrict__ states, float* __restrict__ final_h, float* __restrict__ final_c,
    float* __restrict__ reserve) {
  constexpr int G = kCell == RnnCell::kLstm ? 4 : 3;
  constexpr int S = kCell == RnnCell::kLstm ? 5 : 4;
  extern __shared__ float smem[];
  const int H = d.H, GH = G * H, T = d.T;
  float* wt = smem;
  float* h = wt + H * GH;
  float* c = h + R * H;
  float* gh = c + R * H;
  __shared__ int max_len;
  const int b0 = blockIdx.x * R;
  const int rows = min(R, d.B - b0);
  if (threadIdx.x == 0) max_len = 0;
  for (int i = threadIdx.x; i < GH * H; i += blockDim.x) wt[(i % H) * GH + i / H] = w_hh[i];
  for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
    const int b = b0 + i / H;
    h[i] = h0 != nullptr ? h0[b * H + i % H] : 0.f;
    c[i] = c0 != nullptr ? c0[b * H + i % H] : 0.f;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    atomicMax(&max_len, ClampedLength(lengths, b0 + r, T));
  __syncthreads();
  const int steps = max_len;
  for (int t = 0; t < steps; ++t) {
    for (int i = threadIdx.x; i < rows * GH; i += blockDim.x) {
      const int r = i / GH, j = i - r * GH;
      const float* hr = h + r * H;
      float acc = b_hh[j];
      for (int k = 0; k < H; ++k) acc = fmaf(wt[k * GH + j], hr[k], acc);
      gh[i] = acc;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
      const int r = i / H, u = i - r * H, b = b0 + r;
      const size_t bt = static_cast<size_t>(b) * T + t;
      if (t < ClampedLength(lengths, b, T)) {
        const float a = att != nullptr ? att[bt] : 1.f;
        const float hn = CellForward<kCell>(u, H, gx + bt * GH, gh + r * GH, b_ih, a, h[i], &c[i],
                                            reserve + bt * S * H);
        h[i] = hn;
        states[bt * H + u] = hn;
      } else {
        states[bt * H + u] = 0.f;
      }
    }
    __syncthreads();
  }
  // 64-bit: rows * (T - steps) * H outgrows int for long sequences (32 * 2^19 * 128 = 2^31).
  const int64_t per_row = static_cast<int64_t>(T - steps) * H;
  for (int64_t i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
    const int64_t r = i / per_row, rem = i - r * per_row;
    states[(static_cast<size_t>(b0 + r) * T + steps) * H + rem] = 0.f;
  }
  for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
    final_h[b0 * H + i] = h[i];
    if (kCell == RnnCell::kLstm) final_c[b0 * H + i] = c[i];
  }
}

// Shared memory (floats): W_hh [GH x H] | dh [R x H] | dc [R x H] | dgh [R x GH] | da [R x H].
template <RnnCell kCell>
__global__ void BackwardPersistentKernel(
    Dims d, int R, const int32_t* __restrict__ lengths, const float* __restrict__ w_hh,
    const float* __restrict__ att, const float* __restrict__ h0, const float* __restrict__ c0,
    const float* __restrict__ states, const float* __restrict__ reserve,
    const float* __restrict__ d_states, const float* __restrict__ d_final_h,
    // dgx_all and dgh_all are the same buffer for LSTM, hence no __restrict__ on them.
    const float* __restrict__ d_final_c, float* dgx_all, float* dgh_all,
    float* __restrict__ hprev_all, float* __restrict__ d_att, float* __restrict__ d_h0,
    float* __restrict__ d_c0) {
  constexpr int G = kCell == RnnCell::kLstm ? 4 : 3;
  constexpr int S = kCell == RnnCell::kLstm ? 5 : 4;
  extern __shared__ float smem[];
  const int H = d.H, GH = G * H, T = d.T;
  float* w = smem;
  float* dh = w + GH * H;
  float* dc = dh + R * H;
  float* dgh_s = dc + R * H;
  float* da = dgh_s + R * GH;
  __shared__ int max_len;
  const int b0 = blockIdx.x * R;
  const int rows = min(R, d.B - b0);
  if (threadIdx.x == 0) max_len = 0;
  for (int i = threadIdx.x; i < GH * H; i += blockDim.x) w[i] = w_hh[i];
  for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
    dh[i] = d_final_h != nullptr ? d_final_h[b0 * H + i] : 0.f;
    dc[i] = d_final_c != nullptr ? d_final_c[b0 * H + i] : 0.f;
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    atomicMax(&max_len, ClampedLength(lengths, b0 + r, T));
  __syncthreads();
  for (int t = T - 1; t >= 0; --t) {
    for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
      const int r = i / H, u = i - r * H, b = b0 + r;
      const size_t bt = static_cast<size_t>(b) * T + t;
      float* dgx = dgx_all + bt * GH;
      float* dgh = dgh_all + bt * GH;
      if (t >= ClampedLength(lengths, b, T)) {  // carried state: dh passes through
        for (int g = 0; g < G; ++g) {
          dgx[g * H + u] = 0.f;
          dgh[g * H + u] = 0.f;
          dgh_s[r * GH + g * H + u] = 0.f;
        }
        hprev_all[bt * H + u] = 0.f;
        da[i] = 0.f;
        continue;
      }
      const float hp = t > 0 ? states[(bt - 1) * H + u] : (h0 != nullptr ? h0[b * H + u] : 0.f);
      float cprev = 0.f;
      if (kCell == RnnCell::kLstm)
        cprev =
            t > 0 ? reserve[(bt - 1) * S * H + 4 * H + u] : (c0 != nullptr ? c0[b * H + u] : 0.f);
      hprev_all[bt * H + u] = hp;
      const float dht = dh[i] + (d_states != nullptr ? d_states[bt * H + u] : 0.f);
      const float a = att != nullptr ? att[bt] : 1.f;
      float da_part = 0.f;
      float* dgh_row = dgh_s + r * GH;
      dh[i] = CellBackward<kCell>(u, H, reserve + bt * S * H, hp, cprev, a, dht, &dc[i], dgx,
                                  dgh_row, &da_part);
      for (int g = 0; g < G; ++g) dgh[g * H + u] = dgh_row[g * H + u];
      da[i] = da_part;
    }
    __syncthreads();
    if (t < max_len) {
      for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
        const int r = i / H, k = i - r * H;
        const float* g = dgh_s + r * GH;
        float acc = dh[i];
        for (int j = 0; j < GH; ++j) acc = fmaf(g[j], w[j * H + k], acc);
        dh[i] = acc;
      }
      if (kCell == RnnCell::kAugru) {
        for (int r = threadIdx.x; r < rows; r += blockDim.x) {
          float s = 0.f;
          for (int u = 0; u < H; ++u) s += da[r * H + u];
          d_att[static_cast<size_t>(b0 + r) * T + t] = s;  // 0 at padded steps (da zeroed)
        }
      }
    } else if (kCell == RnnCell::kAugru) {
      for (int r = threadIdx.x; r < rows; r += blockDim.x)
        d_att[static_cast<size_t>(b0 + r) * T + t] = 0.f;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < rows * H; i += blockDim.x) {
    if (d_h0 != nullptr) d_h0[b0 * H + i] = dh[i];
    if (kCell == RnnCell::kLstm && d_c0 != nullptr) d_c0[b0 * H + i] = dc[i];
  }
}

// ---- Per-step kernels (fallback for large H) --------------------------------------------------
// One block per batch row. h/c are the running state (final_h / final_c); gh holds this step's
// h·W_hhᵀ without b_hh, and each block adds b_hh to its own row in place.
template <RnnCell kCell>
__global__ void ForwardStepKernel(Dims d, int t, const float* __restrict__ gx, float* gh,
                                  const int32_t* __restrict__ lengths,
                                  const float* __restrict__ b_ih, const float* __restrict__ b_hh,
                                  const float* __restrict__ att, float* __restrict__ h,
                                  float* __restrict__ c, float* __restrict__ states,
                                  float* __restrict__ reserve) {
  constexpr int G = kCell == RnnCell::kLstm ? 4 : 3;
  constexpr int S = kCell == RnnCell::kLstm ? 5 : 4;
  const int b = blockIdx.x, H = d.H, GH = G * H, T = d.T;
  const size_t bt = static_cast<size_t>(b) * T + t;
  if (t >= ClampedLength(lengths, b, T)) {  // block-uniform: no barrier is skipped unevenly
    for (int u = threadIdx.x; u < H; u += blockDim.x) states[bt * H + u] = 0.f;
    return;
  }
  float* ghr = gh + static_cast<size_t>(b) * GH;
  for (int j = threadIdx.x; j < GH; j += blockDim.x) ghr[j] += b_hh[j];
  __syncthreads();
  const float a = att != nullptr ? att[bt] : 1.f;
  for (int u = threadIdx.x; u < H; u += blockDim.x) {
    float cv = kCell == RnnCell::kLstm ? c[b * H + u] : 0.f;
    const float hn = CellForward<kCell>(u, H, gx + bt * GH, ghr, b_ih, a, h[b * H + u], &cv,
                                        reserve + bt * S * H);
    if (kCell == RnnCell::kLstm) c[b * H + u] = cv;
    h[b * H + u] = hn;
    states[bt * H + u] = hn;
  }
}

template <RnnCell kCell>
__global__ void BackwardStepKernel(Dims d, int t, const int32_t* __restrict__ lengths,
                                   const float* __restrict__ att, const float* __restrict__ h0,
                                   const float* __restrict__ c0, const float* __restrict__ states,
                                   const float* __restrict__ reserve,
                                   const float* __restrict__ d_states, float* __restrict__ dh,
                                   float* __restrict__ dc, float* dgx_all, float* dgh_all,
                                   float* __restrict__ hprev_all, float* __restrict__ d_att) {
  constexpr int G = kCell == RnnCell::kLstm ? 4 : 3;
  constexpr int S = kCell == RnnCell::kLstm ? 5 : 4;
  __shared__ float partial[kStepThreads];
  const int b = blockIdx.x, H = d.H, GH = G * H, T = d.T;
  const size_t bt = static_cast<size_t>(b) * T + t;
  float* dgx = dgx_all + bt * GH;
  float* dgh = dgh_all + bt * GH;
  if (t >= ClampedLength(lengths, b, T)) {
    for (int j = threadIdx.x; j < GH; j += blockDim.x) dgx[j] = dgh[j] = 0.f;
    for (int u = threadIdx.x; u < H; u += blockDim.x) hprev_all[bt * H + u] = 0.f;
    if (kCell == RnnCell::kAugru && threadIdx.x == 0) d_att[bt] = 0.f;
    return;
  }
  const float a = att != nullptr ? att[bt] : 1.f;
  float da_sum = 0.f;
  for (int u = threadIdx.x; u < H; u += blockDim.x) {
    const float hp = t > 0 ? states[(bt - 1) * H + u] : (h0 != nullptr ? h0[b * H + u] : 0.f);
    float cprev = 0.f;
    if (kCell == RnnCell::kLstm)
      cprev = t > 0 ? reserve[(bt - 1) * S * H + 4 * H + u] : (c0 != nullptr ? c0[b * H + u] : 0.f);
    hprev_all[bt * H + u] = hp;
    const float dht = dh[b * H + u] + (d_states != nullptr ? d_states[bt * H + u] : 0.f);
    float da_part = 0.f;
    float dcv = kCell == RnnCell::kLstm ? dc[b * H + u] : 0.f;
    dh[b * H + u] = CellBackward<kCell>(u, H, reserve + bt * S * H, hp, cprev, a, dht, &dcv, dgx,
                                        dgh, &da_part);
    if (kCell == RnnCell::kLstm) dc[b * H + u] = dcv;
    da_sum += da_part;
  }
  if (kCell == RnnCell::kAugru) {
    partial[threadIdx.x] = da_sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) d_att[bt] = partial[0];
  }
}

// ---- Small helpers ----------------------------------------------------------------------------
__global__ void InitStateKernel(int n, const float* __restrict__ src, float* __restrict__ dst) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    dst[i] = src != nullptr ? src[i] : 0.f;
}

// out[j] = Σ_r m[r][j] for a [rows x cols] matrix; blockIdx.y picks (m0, out0) or (m1, out1).
// Block (32, 8): 32 consecutive columns, 8 row stripes, reduced in shared memory (deterministic).
__global__ void ColumnSumKernel(int64_t rows, int cols, const float* __restrict__ m0,
                                float* __restrict__ out0, const float* __restrict__ m1,
                                float* __restrict__ out1) {
  __shared__ float part[8][33];
  const float* m = blockIdx.y == 0 ? m0 : m1;
  float* out = blockIdx.y == 0 ? out0 : out1;
  const int j = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (j < cols)
    for (int64_t r = threadIdx.y; r < rows; r += 8) s += m[r * cols + j];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    float t = 0.f;
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    out[j] = t;
  }
}

Status RnnGemm(const Context& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
               const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
               float beta = 0.f) {
  GemmArgs<float> g;
  g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k;
  g.a = a, g.lda = std::max<int64_t>(1, lda), g.b = b, g.ldb = std::max<int64_t>(1, ldb);
  g.c = c, g.ldc = std::max<int64_t>(1, ldc), g.beta = beta;
  if (k == 0) {  // cuBLAS with k = 0 leaves C = beta·C; we want it written
    if (beta != 0.f) return UnimplementedError("recurrent Gemm: k == 0 with beta != 0");
    IPS_CUDA_RETURN_IF_ERROR(
        cudaMemset2DAsync(c, g.ldc * sizeof(float), 0, n * sizeof(float), m, cuda::StreamOf(ctx)));
    return Status::Ok();
  }
  return GemmCuda(ctx, g);
}

// Rows per block for the persistent kernels and their shared memory, or rows = 0 when W_hh does
// not fit (the per-step path runs then).
struct PersistentPlan {
  int rows = 0;
  size_t smem = 0;
};

PersistentPlan PlanPersistent(const RnnShape& s, bool backward) {
  PersistentPlan p;
  if (s.hidden > kPersistentMaxHidden) return p;
  int dev = 0, sms = 1, max_smem = 48 * 1024;
  if (cudaGetDevice(&dev) != cudaSuccess) return p;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  const int64_t H = s.hidden, GH = RnnGates(s.cell) * H;
  // Two blocks per SM keeps the SMs busy while one block waits at a barrier.
  int rows = static_cast<int>(std::clamp<int64_t>((s.batch + 2 * sms - 1) / (2 * sms), 1, 32));
  auto bytes = [&](int r) {
    return static_cast<size_t>(GH * H + r * (2 * H + GH + (backward ? H : 0))) * sizeof(float);
  };
  // The opt-in limit covers static shared memory too (the kernels' max_len): keep a margin.
  const size_t limit = static_cast<size_t>(std::max(0, max_smem - 256));
  while (rows > 1 && bytes(rows) > limit) --rows;
  if (bytes(rows) > limit) return p;
  p.rows = rows;
  p.smem = bytes(rows);
  return p;
}

template <typename Kernel>
Status AllowSmem(Kernel kernel, size_t smem) {
  if (smem > 48 * 1024)
    IPS_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  return Status::Ok();
}

template <RnnCell kCell>
Status ForwardImpl(const Context& ctx, const RnnForwardArgs<float>& a) {
  const RnnShape& s = a.shape;
  const Dims d{static_cast<int>(s.batch), static_cast<int>(s.steps), static_cast<int>(s.input),
               static_cast<int>(s.hidden)};
  const int64_t GH = RnnGates(kCell) * s.hidden;
  cudaStream_t stream = cuda::StreamOf(ctx);
  const rnn_internal::ForwardLayout L(s, sizeof(float));
  float* gx = At<float>(a.workspace, L.gx);
  IPS_RETURN_IF_ERROR(RnnGemm(ctx, false, true, s.batch * s.steps, GH, s.input, a.x, s.input,
                              a.w_ih, s.input, gx, GH));
  const PersistentPlan plan = PlanPersistent(s, /*backward=*/false);
  if (plan.rows > 0) {
    auto kernel = ForwardPersistentKernel<kCell>;
    IPS_RETURN_IF_ERROR(AllowSmem(kernel, plan.smem));
    const unsigned blocks = static_cast<unsigned>((s.batch + plan.rows - 1) / plan.rows);
    return cuda::Launch("rnn_forward_persistent", kernel, dim3(blocks), dim3(kPersistentThreads),
                        plan.smem, stream, d, plan.rows, static_cast<const float*>(gx), a.lengths,
                        a.w_hh, a.b_ih, a.b_hh, a.att, a.h0, a.c0, a.states, a.final_h, a.final_c,
                        a.reserve);
  }
  // Per-step path: final_h / final_c hold the running state.
  const int n = static_cast<int>(s.batch * s.hidden);
  IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_h", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                   dim3(256), 0, stream, n, a.h0, a.final_h));
  if (kCell == RnnCell::kLstm)
    IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_c", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                     dim3(256), 0, stream, n, a.c0, a.final_c));
  float* gh = At<float>(a.workspace, L.gh);
  for (int t = 0; t < d.T; ++t) {
    IPS_RETURN_IF_ERROR(RnnGemm(ctx, false, true, s.batch, GH, s.hidden, a.final_h, s.hidden,
                                a.w_hh, s.hidden, gh, GH));
    IPS_RETURN_IF_ERROR(cuda::Launch("rnn_forward_step", ForwardStepKernel<kCell>, dim3(d.B),
                                     dim3(kStepThreads), 0, stream, d, t,
                                     static_cast<const float*>(gx), gh, a.lengths, a.b_ih, a.b_hh,
                                     a.att, a.final_h, a.final_c, a.states, a.reserve));
  }
  return Status::Ok();
}

template <RnnCell kCell>
Status BackwardImpl(const Context& ctx, const RnnBackwardArgs<float>& a) {
  const RnnShape& s = a.shape;
  const Dims d{static_cast<int>(s.batch), static_cast<int>(s.steps), static_cast<int>(s.input),
               static_cast<int>(s.hidden)};
  const int64_t H = s.hidden, I = s.input, GH = RnnGates(kCell) * H, BT = s.batch * s.steps;
  cudaStream_t stream = cuda::StreamOf(ctx);
  const rnn_internal::BackwardLayout L(s, sizeof(float));
  float* dgx = At<float>(a.workspace, L.dgx);
  float* dgh = At<float>(a.workspace, L.dgh);
  float* hprev = At<float>(a.workspace, L.hprev);
  const PersistentPlan plan = PlanPersistent(s, /*backward=*/true);
  if (plan.rows > 0) {
    auto kernel = BackwardPersistentKernel<kCell>;
    IPS_RETURN_IF_ERROR(AllowSmem(kernel, plan.smem));
    const unsigned blocks = static_cast<unsigned>((s.batch + plan.rows - 1) / plan.rows);
    IPS_RETURN_IF_ERROR(cuda::Launch(
        "rnn_backward_persistent", kernel, dim3(blocks), dim3(kPersistentThreads), plan.smem,
        stream, d, plan.rows, a.lengths, a.w_hh, a.att, a.h0, a.c0, a.states, a.reserve, a.d_states,
        a.d_final_h, a.d_final_c, dgx, dgh, hprev, a.d_att, a.d_h0, a.d_c0));
  } else {
    float* dh = At<float>(a.workspace, L.dh);
    float* dc = At<float>(a.workspace, L.dc);
    const int n = static_cast<int>(s.batch * H);
    IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_dh", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                     dim3(256), 0, stream, n, a.d_final_h, dh));
    if (kCell == RnnCell::kLstm)
      IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_dc", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                       dim3(256), 0, stream, n, a.d_final_c, dc));
    for (int t = d.T - 1; t >= 0; --t) {
      IPS_RETURN_IF_ERROR(cuda::Launch("rnn_backward_step", BackwardStepKernel<kCell>, dim3(d.B),
                                       dim3(kStepThreads), 0, stream, d, t, a.lengths, a.att, a.h0,
                                       a.c0, a.states, a.reserve, a.d_states, dh, dc, dgx, dgh,
                                       hprev, a.d_att));
      // dh_{t-1} = direct part (already in dh) + dgh_t · W_hh (padded rows add zeros).
      IPS_RETURN_IF_ERROR(RnnGemm(ctx, false, false, s.batch, H, GH, dgh + t * GH, s.steps * GH,
                                  a.w_hh, H, dh, H, /*beta=*/1.f));
    }
    if (a.d_h0 != nullptr)
      IPS_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(a.d_h0, dh, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    if (kCell == RnnCell::kLstm && a.d_c0 != nullptr)
      IPS_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(a.d_c0, dc, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  }
  IPS_RETURN_IF_ERROR(RnnGemm(ctx, false, false, BT, I, GH, dgx, GH, a.w_ih, I, a.d_x, I));
  IPS_RETURN_IF_ERROR(RnnGemm(ctx, true, false, GH, I, BT, dgx, GH, a.x, I, a.d_w_ih, I));
  IPS_RETURN_IF_ERROR(RnnGemm(ctx, true, false, GH, H, BT, dgh, GH, hprev, H, a.d_w_hh, H));
  return cuda::Launch("rnn_bias_grad", ColumnSumKernel,
                      dim3(static_cast<unsigned>((GH + 31) / 32), 2), dim3(32, 8), 0, stream, BT,
                      static_cast<int>(GH), static_cast<const float*>(dgx), a.d_b_ih,
                      static_cast<const float*>(dgh), a.d_b_hh);
}

Status CheckCudaShape(const char* op, const RnnShape& s) {
  // Kernels index with int within a row block; B·T·G·H must fit comfortably in 64-bit offsets
  // (used) but B, T, H individually in int, and so must B·H: the [B x H] states (h0, final_h,
  // dh, ...) are indexed as b * H + u in int and sized as int n = B * H.
  if (s.batch > (1 << 30) || s.steps > (1 << 30) || s.hidden > (1 << 20) || s.input > (1 << 30) ||
      s.batch * s.hidden > INT32_MAX)
    return InvalidArgumentError(
        std::string(op) + ": shape too large for the CUDA kernels (B=" + std::to_string(s.batch) +
        ", H=" + std::to_string(s.hidden) + "; B*H must fit in int32)");
  return Status::Ok();
}

}  // namespace

Status RnnForwardCuda(const Context& ctx, const RnnForwardArgs<float>& a) {
  const RnnShape& s = a.shape;
  IPS_RETURN_IF_ERROR(CheckCudaShape("RnnForward", s));
  if (s.batch == 0 || s.hidden == 0) return Status::Ok();
  if (s.steps == 0) {  // final state = initial state
    const int n = static_cast<int>(s.batch * s.hidden);
    cudaStream_t stream = cuda::StreamOf(ctx);
    IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_h", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                     dim3(256), 0, stream, n, a.h0, a.final_h));
    if (s.cell == RnnCell::kLstm)
      IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_c", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                       dim3(256), 0, stream, n, a.c0, a.final_c));
    return Status::Ok();
  }
  switch (s.cell) {
    case RnnCell::kGru:
      return ForwardImpl<RnnCell::kGru>(ctx, a);
    case RnnCell::kAugru:
      return ForwardImpl<RnnCell::kAugru>(ctx, a);
    case RnnCell::kLstm:
      return ForwardImpl<RnnCell::kLstm>(ctx, a);
  }
  return InvalidArgumentError("RnnForward: unknown cell");
}

Status RnnBackwardCuda(const Context& ctx, const RnnBackwardArgs<float>& a) {
  const RnnShape& s = a.shape;
  IPS_RETURN_IF_ERROR(CheckCudaShape("RnnBackward", s));
  if (s.hidden == 0) return Status::Ok();
  cudaStream_t stream = cuda::StreamOf(ctx);
  if (s.batch == 0 || s.steps == 0) {  // no step ran
    const int64_t GH = RnnGates(s.cell) * s.hidden;
    auto zero = [&](float* p, int64_t n) -> Status {
      if (n > 0) IPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, n * sizeof(float), stream));
      return Status::Ok();
    };
    IPS_RETURN_IF_ERROR(zero(a.d_w_ih, GH * s.input));
    IPS_RETURN_IF_ERROR(zero(a.d_w_hh, GH * s.hidden));
    IPS_RETURN_IF_ERROR(zero(a.d_b_ih, GH));
    IPS_RETURN_IF_ERROR(zero(a.d_b_hh, GH));
    const int n = static_cast<int>(s.batch * s.hidden);
    if (n > 0 && a.d_h0 != nullptr)
      IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_dh0", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                       dim3(256), 0, stream, n, a.d_final_h, a.d_h0));
    if (n > 0 && s.cell == RnnCell::kLstm && a.d_c0 != nullptr)
      IPS_RETURN_IF_ERROR(cuda::Launch("rnn_init_dc0", InitStateKernel, dim3(cuda::GridFor(n, 256)),
                                       dim3(256), 0, stream, n, a.d_final_c, a.d_c0));
    return Status::Ok();
  }
  switch (s.cell) {
    case RnnCell::kGru:
      return BackwardImpl<RnnCell::kGru>(ctx, a);
    case RnnCell::kAugru:
      return BackwardImpl<RnnCell::kAugru>(ctx, a);
    case RnnCell::kLstm:
      return BackwardImpl<RnnCell::kLstm>(ctx, a);
  }
  return InvalidArgumentError("RnnBackward: unknown cell");
}

}  // namespace ips::kernels
