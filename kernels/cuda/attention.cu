// CUDA attention (float): the DIN activation unit as cuBLAS GEMMs over the folded first-layer
// weights plus small fused elementwise kernels (the same pass structure as the CPU path, so
// both share the saved-buffer layout of kernels/attention_internal.h), and multi-head attention
// as one block per (batch, head) with K, V and the attention rows in shared memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/attention_internal.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/gemm_cuda.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/gemm.h"

namespace ips::kernels {
namespace {

using attention_internal::DinSavedLayout;
using attention_internal::DinWorkLayout;
using attention_internal::DropThreshold;
using attention_internal::SavedLayout;
using attention_internal::WorkLayout;

constexpr unsigned kThreads = 256;

// Valid steps [lo, hi) of a row; lengths are clamped to [0, T] (device memory is not validated).
__device__ __forceinline__ void ValidRangeDev(bool left, int64_t T, int32_t len, int64_t* lo,
                                              int64_t* hi) {
  const int64_t l = len < 0 ? 0 : (len > T ? T : len);
  *lo = left ? T - l : 0;
  *hi = left ? T : l;
}

__device__ __forceinline__ float SigmoidDev(float x) { return 1.0f / (1.0f + __expf(-x)); }

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum/max through shared scratch of 32 floats; every thread gets the result.
__device__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : 0.f;
  return WarpSum(r);
}
__device__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nwarps ? scratch[lane] : -INFINITY;
  return WarpMax(r);
}

// wfold row h = [Wk - Wd, Wp, Wq + Wd].
__global__ void FoldW1Kernel(const float* __restrict__ w1, int64_t H1, int64_t E,
                             float* __restrict__ wfold) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < H1 * E;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = i / E, e = i % E;
    const float* w = w1 + h * 4 * E;
    float* o = wfold + h * 3 * E;
    o[e] = w[E + e] - w[2 * E + e];
    o[E + e] = w[3 * E + e];
    o[2 * E + e] = w[e] + w[2 * E + e];
  }
}

// X = [k, q*k] at valid steps, 0 at padded ones.
__global__ void BuildXKernel(const float* __restrict__ q, const float* __restrict__ k,
                             const int32_t* __restrict__ lengths, int64_t B, int64_t T, int64_t E,
                             bool left, float* __restrict__ X) {
  const int64_t n = B * T * E;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = i % E, bt = i / E, b = bt / T, t = bt % T;
    int64_t lo, hi;
    ValidRangeDev(left, T, lengths[b], &lo, &hi);
    float kv = 0.f, qk = 0.f;
    if (t >= lo && t < hi) {
      kv = k[i];
      qk = q[b * E + e] * kv;
    }
    X[bt * 2 * E + e] = kv;
    X[bt * 2 * E + E + e] = qk;
  }
}

// A1 = sigmoid(A1 + U[b] + b1).
__global__ void Layer1ActKernel(float* __restrict__ A1, const float* __restrict__ U,
                                const float* __restrict__ b1, int64_t B, int64_t T, int64_t H1) {
  const int64_t n = B * T * H1;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = i % H1, b = i / (T * H1);
    A1[i] = SigmoidDev(A1[i] + U[b * H1 + h] + b1[h]);
  }
}

// One block per batch row: A2 = sigmoid(A2 + b2), s = A2 w3 + b3, mask or masked softmax,
// weights (and the saved copy), pooled. Dynamic shared memory: T floats of scores.
__global__ void ScoresKernel(float* __restrict__ A2, const float* __restrict__ b2,
                             const float* __restrict__ w3, const float* __restrict__ b3,
                             const float* __restrict__ keys, const int32_t* __restrict__ lengths,
                             int64_t T, int64_t E, int64_t H2, bool left, bool softmax,
                             float* __restrict__ weights, float* __restrict__ saved_w,
                             float* __restrict__ pooled) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  float* s = smem;
  const int64_t b = blockIdx.x;
  int64_t lo, hi;
  ValidRangeDev(left, T, lengths[b], &lo, &hi);
  float* a2 = A2 + b * T * H2;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t t = warp; t < T; t += nwarps) {
    float acc = 0.f;
    for (int64_t h = lane; h < H2; h += 32) {
      const float v = SigmoidDev(a2[t * H2 + h] + b2[h]);
      a2[t * H2 + h] = v;
      acc += v * w3[h];
    }
    acc = WarpSum(acc);
    if (lane == 0) s[t] = acc + b3[0];
  }
  __syncthreads();
  if (softmax && hi > lo) {
    float mx = -INFINITY;
    for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) mx = fmaxf(mx, s[t]);
    mx = BlockMax(mx, scratch);
    float sum = 0.f;
    for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) {
      const float e = __expf(s[t] - mx);
      s[t] = e;
      sum += e;
    }
    sum = BlockSum(sum, scratch);
    const float inv = 1.f / sum;
    for (int64_t t = lo + threadIdx.x; t < hi; t += blockDim.x) s[t] *= inv;
    __syncthreads();
  }
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const float w = (t >= lo && t < hi) ? s[t] : 0.f;
    s[t] = w;
    weights[b * T + t] = w;
    saved_w[b * T + t] = w;
  }
  __syncthreads();
  if (pooled != nullptr) {
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      float acc = 0.f;
      for (int64_t t = lo; t < hi; ++t) acc += s[t] * keys[(b * T + t) * E + e];
      pooled[b * E + e] = acc;
    }
  }
}

// Backward, one block per batch row: ds through the pooling, mask/softmax; dZ2; ones.
__global__ void ScoresGradKernel(const float* __restrict__ A2, const float* __restrict__ w3,
                                 const float* __restrict__ Ws, const float* __restrict__ keys,
                                 const int32_t* __restrict__ lengths,
                                 const float* __restrict__ d_weights,
                                 const float* __restrict__ d_pooled, int64_t T, int64_t E,
                                 int64_t H2, bool left, bool softmax, float* __restrict__ ds,
                                 float* __restrict__ dZ2, float* __restrict__ ones) {
  extern __shared__ float g[];
  __shared__ float scratch[32];
  const int64_t b = blockIdx.x;
  int64_t lo, hi;
  ValidRangeDev(left, T, lengths[b], &lo, &hi);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t t = warp; t < T; t += nwarps) {
    float acc = 0.f;
    if (t >= lo && t < hi && d_pooled != nullptr) {
      for (int64_t e = lane; e < E; e += 32) acc += d_pooled[b * E + e] * keys[(b * T + t) * E + e];
      acc = WarpSum(acc);
    }
    if (lane == 0) {
      const bool valid = t >= lo && t < hi;
      g[t] = valid ? acc + (d_weights != nullptr ? d_weights[b * T + t] : 0.f) : 0.f;
    }
  }
  __syncthreads();
  const float* w = Ws + b * T;
  if (softmax) {
    float dot = 0.f;
    for (int64_t t = threadIdx.x; t < T; t += blockDim.x) dot += w[t] * g[t];
    dot = BlockSum(dot, scratch);
    for (int64_t t = threadIdx.x; t < T; t += blockDim.x) g[t] = w[t] * (g[t] - dot);
    __syncthreads();
  }
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    ds[b * T + t] = g[t];
    ones[b * T + t] = 1.f;
  }
  for (int64_t i = threadIdx.x; i < T * H2; i += blockDim.x) {
    const int64_t t = i / H2, h = i % H2;
    const float a = A2[b * T * H2 + i];
    dZ2[b * T * H2 + i] = g[t] * w3[h] * a * (1.f - a);
  }
}

// G *= a1 (1 - a1); Gsum[b] = sum_t G. One block per batch row, threads over H1.
__global__ void Layer1GradKernel(float* __restrict__ G, const float* __restrict__ A1, int64_t T,
                                 int64_t H1, float* __restrict__ Gsum) {
  const int64_t b = blockIdx.x;
  for (int64_t h = threadIdx.x; h < H1; h += blockDim.x) {
    float acc = 0.f;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = (b * T + t) * H1 + h;
      const float a = A1[i];
      const float v = G[i] * a * (1.f - a);
      G[i] = v;
      acc += v;
    }
    Gsum[b * H1 + h] = acc;
  }
}

// dW1 = [dWq, dWk, dWq - dWk, dWp] from GX = [G^T k, G^T (q*k), Gsum^T q].
__global__ void AssembleDw1Kernel(const float* __restrict__ GX, int64_t H1, int64_t E,
                                  float* __restrict__ dw1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < H1 * E;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = i / E, e = i % E;
    const float* gx = GX + h * 3 * E;
    float* o = dw1 + h * 4 * E;
    o[e] = gx[2 * E + e];
    o[E + e] = gx[e];
    o[2 * E + e] = gx[2 * E + e] - gx[e];
    o[3 * E + e] = gx[E + e];
  }
}

// dk = DX[:, :E] + q * DX[:, E:] + w dpool (valid; 0 padded); dq += sum_t k * DX[:, E:].
// One block per batch row, threads over e.
__global__ void InputGradKernel(const float* __restrict__ DX, const float* __restrict__ q,
                                const float* __restrict__ keys, const float* __restrict__ Ws,
                                const float* __restrict__ d_pooled,
                                const int32_t* __restrict__ lengths, int64_t T, int64_t E,
                                bool left, float* __restrict__ dk, float* __restrict__ dq) {
  const int64_t b = blockIdx.x;
  int64_t lo, hi;
  ValidRangeDev(left, T, lengths[b], &lo, &hi);
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const float qe = q[b * E + e];
    const float dpe = d_pooled != nullptr ? d_pooled[b * E + e] : 0.f;
    float acc = 0.f;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t bt = b * T + t;
      const bool valid = t >= lo && t < hi;
      if (dk != nullptr) {
        dk[bt * E + e] =
            valid ? DX[bt * 2 * E + e] + qe * DX[bt * 2 * E + E + e] + Ws[bt] * dpe : 0.f;
      }
      if (valid) acc += keys[bt * E + e] * DX[bt * 2 * E + E + e];
    }
    if (dq != nullptr) dq[b * E + e] += acc;
  }
}

// ---- MHA ----------------------------------------------------------------------------------------

// Same bits as ips::Mix64 (common/random.h), which is host-only.
__device__ __forceinline__ uint64_t Mix64Dev(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

struct MhaDev {
  int64_t B, T, H, D;
  bool causal, left;
  const int32_t* lengths;
  float scale, keep_scale;
  uint64_t threshold, seed;
};

__device__ __forceinline__ void KeyRangeDev(const MhaDev& m, int64_t b, int64_t* lo, int64_t* hi) {
  if (m.lengths == nullptr) {
    *lo = 0;
    *hi = m.T;
  } else {
    ValidRangeDev(m.left, m.T, m.lengths[b], lo, hi);
  }
}

__device__ __forceinline__ float DropFactor(const MhaDev& m, uint64_t index) {
  if (m.threshold == 0) return 1.f;
  return Mix64Dev(m.seed ^ index) >= m.threshold ? m.keep_scale : 0.f;
}

constexpr int kMhaWarps = 8;

// One block per (b, h); K_h and V_h in shared memory; a warp per query row.
// smem: K [T x D] | V [T x D] | per warp: p row [T] and q row [D].
__global__ void MhaForwardKernel(MhaDev m, const float* __restrict__ Q, const float* __restrict__ K,
                                 const float* __restrict__ V, float* __restrict__ out,
                                 float* __restrict__ P) {
  extern __shared__ float sm[];
  const int64_t T = m.T, D = m.D, W = m.H * m.D;
  const int64_t bh = blockIdx.x, b = bh / m.H, h = bh % m.H;
  float* ks = sm;
  float* vs = ks + T * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* prow = vs + T * D + warp * (T + D);
  float* qrow = prow + T;
  for (int64_t i = threadIdx.x; i < T * D; i += blockDim.x) {
    const int64_t j = i / D, d = i % D;
    ks[i] = K[(b * T + j) * W + h * D + d];
    vs[i] = V[(b * T + j) * W + h * D + d];
  }
  __syncthreads();
  int64_t klo, khi;
  KeyRangeDev(m, b, &klo, &khi);
  for (int64_t i = warp; i < T; i += kMhaWarps) {
    const int64_t lo = klo, hi = m.causal ? min(khi, i + 1) : khi;
    float* prow_out = P + (bh * T + i) * T;
    float* o = out + (b * T + i) * W + h * D;
    if (lo >= hi) {
      for (int64_t j = lane; j < T; j += 32) prow_out[j] = 0.f;
      for (int64_t d = lane; d < D; d += 32) o[d] = 0.f;
      continue;
    }
    for (int64_t d = lane; d < D; d += 32) qrow[d] = Q[(b * T + i) * W + h * D + d];
    __syncwarp();
    float mx = -INFINITY;
    for (int64_t j = lane; j < T; j += 32) {
      float s = -INFINITY;
      if (j >= lo && j < hi) {
        float acc = 0.f;
        for (int64_t d = 0; d < D; ++d) acc += qrow[d] * ks[j * D + d];
        s = acc * m.scale;
      }
      prow[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = WarpMax(mx);
    float sum = 0.f;
    for (int64_t j = lane; j < T; j += 32) {
      const float e = (j >= lo && j < hi) ? __expf(prow[j] - mx) : 0.f;
      prow[j] = e;
      sum += e;
    }
    sum = WarpSum(sum);
    const float inv = 1.f / sum;
    const uint64_t base = static_cast<uint64_t>((bh * T + i) * T);
    for (int64_t j = lane; j < T; j += 32) {
      const float p = prow[j] * inv;
      prow_out[j] = p;
      prow[j] = p * DropFactor(m, base + j);
    }
    __syncwarp();
    for (int64_t d = lane; d < D; d += 32) {
      float acc = 0.f;
      for (int64_t j = lo; j < hi; ++j) acc += prow[j] * vs[j * D + d];
      o[d] = acc;
    }
    __syncwarp();
  }
}

// One block per (b, h). smem: K [T x D] | V [T x D] | dS [T x T] | Pd [T x T].
// Phase 1 (warp per query row i): dS_i, Pd_i. Phase 2 (warp per row r): dQ_r, dK_r, dV_r.
__global__ void MhaBackwardKernel(MhaDev m, const float* __restrict__ Q,
                                  const float* __restrict__ K, const float* __restrict__ V,
                                  const float* __restrict__ P, const float* __restrict__ dO,
                                  float* __restrict__ dQ, float* __restrict__ dK,
                                  float* __restrict__ dV) {
  extern __shared__ float sm[];
  const int64_t T = m.T, D = m.D, W = m.H * m.D;
  const int64_t bh = blockIdx.x, b = bh / m.H, h = bh % m.H;
  float* ks = sm;
  float* vs = ks + T * D;
  float* dS = vs + T * D;
  float* Pd = dS + T * T;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t i = threadIdx.x; i < T * D; i += blockDim.x) {
    const int64_t j = i / D, d = i % D;
    ks[i] = K[(b * T + j) * W + h * D + d];
    vs[i] = V[(b * T + j) * W + h * D + d];
  }
  __syncthreads();
  for (int64_t i = warp; i < T; i += kMhaWarps) {
    const float* p = P + (bh * T + i) * T;
    const float* go = dO + (b * T + i) * W + h * D;
    const uint64_t base = static_cast<uint64_t>((bh * T + i) * T);
    float dot = 0.f;
    for (int64_t j = lane; j < T; j += 32) {
      const float pj = p[j];
      float dp = 0.f, pd = 0.f;
      if (pj != 0.f) {  // P is exactly 0 wherever key j is not allowed for row i
        const float f = DropFactor(m, base + j);
        for (int64_t d = 0; d < D; ++d) dp += go[d] * vs[j * D + d];
        dp *= f;
        pd = pj * f;
      }
      dS[i * T + j] = dp;
      Pd[i * T + j] = pd;
      dot += pj * dp;
    }
    dot = WarpSum(dot);
    for (int64_t j = lane; j < T; j += 32) dS[i * T + j] = p[j] * (dS[i * T + j] - dot) * m.scale;
  }
  __syncthreads();
  for (int64_t r = warp; r < T; r += kMhaWarps) {
    for (int64_t d = lane; d < D; d += 32) {
      float gq = 0.f, gk = 0.f, gv = 0.f;
      for (int64_t j = 0; j < T; ++j) gq += dS[r * T + j] * ks[j * D + d];
      for (int64_t i = 0; i < T; ++i) {
        const float s = dS[i * T + r], pd = Pd[i * T + r];
        if (s != 0.f) gk += s * Q[(b * T + i) * W + h * D + d];
        if (pd != 0.f) gv += pd * dO[(b * T + i) * W + h * D + d];
      }
      dQ[(b * T + r) * W + h * D + d] = gq;
      dK[(b * T + r) * W + h * D + d] = gk;
      dV[(b * T + r) * W + h * D + d] = gv;
    }
  }
}

// Shared memory per block of the forward kernel: a head's K/V rows and, per warp, a probability
// row and a query row.
size_t MhaForwardSmemBytes(int64_t seq_len, int64_t head_dim) {
  return sizeof(float) *
         static_cast<size_t>(2 * seq_len * head_dim + kMhaWarps * (seq_len + head_dim));
}

// Shared memory per block of the backward kernel: a head's K/V rows and its T x T scores and
// their gradients. Usually the larger of the two, but not for very short, very wide heads
// (T = 2, dh = 8000), so MhaCudaSupportsCuda checks both.
size_t MhaBackwardSmemBytes(int64_t seq_len, int64_t head_dim) {
  return sizeof(float) * static_cast<size_t>(2 * seq_len * head_dim + 2 * seq_len * seq_len);
}

// UNIMPLEMENTED naming `name` when `bytes` of shared memory per block exceed the device's limit.
Status CheckSmem(const char* name, size_t bytes) {
  if (bytes <= 48 * 1024) return Status::Ok();
  int dev = 0, max_optin = 0;
  IPS_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  IPS_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes > static_cast<size_t>(max_optin)) {
    return UnimplementedError(std::string(name) + ": needs " + std::to_string(bytes) +
                              " bytes of shared memory per block, device allows " +
                              std::to_string(max_optin) + " (seq_len/head_dim too large)");
  }
  return Status::Ok();
}

Status PrepareSmem(const char* name, const void* kernel, size_t bytes) {
  IPS_RETURN_IF_ERROR(CheckSmem(name, bytes));
  if (bytes <= 48 * 1024) return Status::Ok();
  IPS_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(bytes)));
  return Status::Ok();
}

MhaDev MakeMhaDev(const MhaArgs<float>& a) {
  MhaDev m;
  m.B = a.batch;
  m.T = a.seq_len;
  m.H = a.heads;
  m.D = a.head_dim;
  m.causal = a.causal;
  m.left = a.padding == Padding::kLeft;
  m.lengths = a.lengths;
  m.scale = a.scale > 0 ? static_cast<float>(a.scale)
                        : static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
  m.keep_scale = static_cast<float>(1.0 / (1.0 - a.dropout));
  m.threshold = DropThreshold(a.dropout);
  m.seed = a.seed;
  return m;
}

}  // namespace

Status DinAttentionForwardCuda(const Context& ctx, const DinAttentionArgs<float>& a, float* weights,
                               float* pooled, float* saved) {
  const int64_t B = a.batch, T = a.max_len, E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  const int64_t N = B * T;
  cudaStream_t st = cuda::StreamOf(ctx);
  if (B == 0) return Status::Ok();
  if (N == 0) {
    if (pooled != nullptr)
      IPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(pooled, 0, sizeof(float) * B * E, st));
    return Status::Ok();
  }
  const DinSavedLayout l = SavedLayout(B, T, E, H1, H2);
  float* X = saved + l.x;
  float* A1 = saved + l.a1;
  float* A2 = saved + l.a2;
  float* U = saved + l.u;
  float* wfold = saved + l.wfold;
  const bool left = a.padding == Padding::kLeft;
  IPS_RETURN_IF_ERROR(cuda::Launch("din_fold_w1", FoldW1Kernel, cuda::GridFor(H1 * E, kThreads),
                                   kThreads, 0, st, a.w1, H1, E, wfold));
  IPS_RETURN_IF_ERROR(cuda::Launch("din_build_x", BuildXKernel, cuda::GridFor(N * E, kThreads),
                                   kThreads, 0, st, a.query, a.keys, a.lengths, B, T, E, left, X));
  IPS_RETURN_IF_ERROR(GemmCuda(
      ctx, MakeGemmArgs<float>(false, true, B, H1, E, a.query, E, wfold + 2 * E, 3 * E, U, H1)));
  IPS_RETURN_IF_ERROR(GemmCuda(
      ctx, MakeGemmArgs<float>(false, true, N, H1, 2 * E, X, 2 * E, wfold, 3 * E, A1, H1)));
  IPS_RETURN_IF_ERROR(cuda::Launch("din_layer1_act", Layer1ActKernel,
                                   cuda::GridFor(N * H1, kThreads), kThreads, 0, st, A1, U, a.b1, B,
                                   T, H1));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, true, N, H2, H1, A1, H1, a.w2, H1, A2, H2)));
  IPS_RETURN_IF_ERROR(cuda::Launch("din_scores", ScoresKernel, dim3(static_cast<unsigned>(B)),
                                   kThreads, sizeof(float) * T, st, A2, a.b2, a.w3, a.b3, a.keys,
                                   a.lengths, T, E, H2, left, a.softmax, weights, saved + l.w,
                                   pooled));
  return Status::Ok();
}

Status DinAttentionBackwardCuda(const Context& ctx, const DinAttentionArgs<float>& a,
                                const float* saved, const float* d_weights, const float* d_pooled,
                                const DinAttentionGrads<float>& gr, float* work) {
  const int64_t B = a.batch, T = a.max_len, E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  const int64_t N = B * T;
  cudaStream_t st = cuda::StreamOf(ctx);
  if (N == 0) {  // nothing attended: every gradient is zero
    for (auto [p, n] : {std::pair<float*, int64_t>{gr.d_w1, H1 * 4 * E},
                        {gr.d_b1, H1},
                        {gr.d_w2, H2 * H1},
                        {gr.d_b2, H2},
                        {gr.d_w3, H2},
                        {gr.d_b3, 1},
                        {gr.d_query, B * E}}) {
      if (p != nullptr && n > 0)
        IPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, sizeof(float) * n, st));
    }
    return Status::Ok();
  }
  const DinSavedLayout sl = SavedLayout(B, T, E, H1, H2);
  const DinWorkLayout wl = WorkLayout(B, T, E, H1, H2);
  const float* X = saved + sl.x;
  const float* A1 = saved + sl.a1;
  const float* A2 = saved + sl.a2;
  const float* Ws = saved + sl.w;
  const float* wfold = saved + sl.wfold;
  float* dZ2 = work + wl.dz2;
  float* Gm = work + wl.g;
  float* DX = work + wl.dx;
  float* Gsum = work + wl.gsum;
  float* ds = work + wl.ds;
  float* ones = work + wl.ones;
  float* GX = work + wl.gx;
  const bool left = a.padding == Padding::kLeft;
  IPS_RETURN_IF_ERROR(cuda::Launch("din_scores_grad", ScoresGradKernel,
                                   dim3(static_cast<unsigned>(B)), kThreads, sizeof(float) * T, st,
                                   A2, a.w3, Ws, a.keys, a.lengths, d_weights, d_pooled, T, E, H2,
                                   left, a.softmax, ds, dZ2, ones));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, false, 1, 1, N, ones, N, ds, 1, gr.d_b3, 1)));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, false, 1, H2, N, ds, N, A2, H2, gr.d_w3, H2)));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, false, 1, H2, N, ones, N, dZ2, H2, gr.d_b2, H2)));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(true, false, H2, H1, N, dZ2, H2, A1, H1, gr.d_w2, H1)));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, false, N, H1, H2, dZ2, H2, a.w2, H1, Gm, H1)));
  IPS_RETURN_IF_ERROR(cuda::Launch("din_layer1_grad", Layer1GradKernel,
                                   dim3(static_cast<unsigned>(B)), 128, 0, st, Gm, A1, T, H1,
                                   Gsum));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(true, false, H1, 2 * E, N, Gm, H1, X, 2 * E, GX, 3 * E)));
  IPS_RETURN_IF_ERROR(GemmCuda(
      ctx, MakeGemmArgs<float>(true, false, H1, E, B, Gsum, H1, a.query, E, GX + 2 * E, 3 * E)));
  IPS_RETURN_IF_ERROR(
      GemmCuda(ctx, MakeGemmArgs<float>(false, false, 1, H1, B, ones, B, Gsum, H1, gr.d_b1, H1)));
  IPS_RETURN_IF_ERROR(cuda::Launch("din_assemble_dw1", AssembleDw1Kernel,
                                   cuda::GridFor(H1 * E, kThreads), kThreads, 0, st, GX, H1, E,
                                   gr.d_w1));
  if (gr.d_keys == nullptr && gr.d_query == nullptr) return Status::Ok();
  IPS_RETURN_IF_ERROR(GemmCuda(
      ctx, MakeGemmArgs<float>(false, false, N, 2 * E, H1, Gm, H1, wfold, 3 * E, DX, 2 * E)));
  if (gr.d_query != nullptr) {
    IPS_RETURN_IF_ERROR(GemmCuda(ctx, MakeGemmArgs<float>(false, false, B, E, H1, Gsum, H1,
                                                          wfold + 2 * E, 3 * E, gr.d_query, E)));
  }
  IPS_RETURN_IF_ERROR(cuda::Launch("din_input_grad", InputGradKernel,
                                   dim3(static_cast<unsigned>(B)), 64, 0, st, DX, a.query, a.keys,
                                   Ws, d_pooled, a.lengths, T, E, left, gr.d_keys, gr.d_query));
  return Status::Ok();
}

Status MhaForwardCuda(const Context& ctx, const MhaArgs<float>& a, float* out, float* saved) {
  if (a.batch * a.seq_len == 0) return Status::Ok();
  if (a.seq_len > 1024) return UnimplementedError("MhaForwardCuda: seq_len > 1024");
  const MhaDev m = MakeMhaDev(a);
  const size_t smem = MhaForwardSmemBytes(a.seq_len, a.head_dim);
  IPS_RETURN_IF_ERROR(
      PrepareSmem("mha_forward", reinterpret_cast<const void*>(MhaForwardKernel), smem));
  return cuda::Launch("mha_forward", MhaForwardKernel,
                      dim3(static_cast<unsigned>(a.batch * a.heads)), kMhaWarps * 32, smem,
                      cuda::StreamOf(ctx), m, a.q, a.k, a.v, out, saved);
}

Status MhaBackwardCuda(const Context& ctx, const MhaArgs<float>& a, const float* saved,
                       const float* d_out, float* dq, float* dk, float* dv) {
  if (a.batch * a.seq_len == 0) return Status::Ok();
  if (a.seq_len > 1024) return UnimplementedError("MhaBackwardCuda: seq_len > 1024");
  const MhaDev m = MakeMhaDev(a);
  const size_t smem = MhaBackwardSmemBytes(a.seq_len, a.head_dim);
  IPS_RETURN_IF_ERROR(
      PrepareSmem("mha_backward", reinterpret_cast<const void*>(MhaBackwardKernel), smem));
  return cuda::Launch("mha_backward", MhaBackwardKernel,
                      dim3(static_cast<unsigned>(a.batch * a.heads)), kMhaWarps * 32, smem,
                      cuda::StreamOf(ctx), m, a.q, a.k, a.v, saved, d_out, dq, dk, dv);
}

Status MhaCudaSupportsCuda(int64_t seq_len, int64_t head_dim) {
  if (seq_len > 1024)
    return UnimplementedError("multi-head attention on CUDA: seq_len " + std::to_string(seq_len) +
                              " > 1024");
  return CheckSmem(
      ("multi-head attention on CUDA with seq_len " + std::to_string(seq_len) + " and head_dim " +
       std::to_string(head_dim))
          .c_str(),
      std::max(MhaForwardSmemBytes(seq_len, head_dim), MhaBackwardSmemBytes(seq_len, head_dim)));
}

}  // namespace ips::kernels
