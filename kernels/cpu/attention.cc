// CPU attention: the fused DIN activation unit (SmallGemm products over folded first-layer
// weights and the elementwise passes, run per block of batch rows while the block is in cache),
// multi-head attention as per-(batch, head) loops, their scalar references, and the dispatch to
// CUDA.
#include "kernels/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"
#include "kernels/attention_internal.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/small_gemm.h"
#include "kernels/cuda/attention_cuda.h"

namespace ips::kernels {
namespace {

// fn(begin, end) over [0, n) in grains of `grain` claimed from a shared counter by every pool
// thread: the pool's ParallelFor splits statically, and on this shared 2-vCPU VM a thread whose
// core is busy with another process would then hold the whole call up.
template <typename Fn>
void ParFor(const Context& ctx, int64_t n, int64_t grain, const Fn& fn) {
  if (n <= 0) return;
  const int threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
  if (threads <= 1 || n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
  ctx.pool->ParallelFor(threads, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t begin = next.fetch_add(grain);
      if (begin >= n) break;
      fn(begin, std::min(n, begin + grain));
    }
  });
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// The build targets baseline x86-64 (SSE2) so binaries run anywhere; the elementwise passes
// below (the part of the DIN unit that is not GEMM) get AVX-512 and AVX2 clones picked at load
// time. Their helpers must be force-inlined into each clone to be compiled for its target.
#define IPS_ATTN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define IPS_ATTN_INLINE __attribute__((always_inline)) inline
#else
#define IPS_ATTN_CLONES
#define IPS_ATTN_INLINE inline
#endif

using cpu::Exp;
using cpu::Sigmoid;
using cpu::SmallMm;

// a[r][c] = sigmoid(a[r][c] + bias[c]).
template <typename T>
IPS_ATTN_INLINE void SigmoidRowsBody(T* __restrict a, const T* __restrict bias, int64_t rows,
                                     int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, a += cols)
    for (int64_t c = 0; c < cols; ++c) a[c] = Sigmoid(a[c] + bias[c]);
}
// dz[r][c] = ds[r] * w3[c] * a2[r][c] * (1 - a2[r][c]).
template <typename T>
IPS_ATTN_INLINE void SigmoidGradOutBody(T* __restrict dz, const T* __restrict ds,
                                        const T* __restrict w3, const T* __restrict a2,
                                        int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, dz += cols, a2 += cols) {
    const T d = ds[r];
    for (int64_t c = 0; c < cols; ++c) dz[c] = d * w3[c] * a2[c] * (T(1) - a2[c]);
  }
}
// g[r][c] *= a1[r][c] * (1 - a1[r][c]); gsum[c] = sum_r g[r][c].
template <typename T>
IPS_ATTN_INLINE void SigmoidGradSumBody(T* __restrict g, const T* __restrict a1, T* __restrict gsum,
                                        int64_t rows, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) gsum[c] = 0;
  for (int64_t r = 0; r < rows; ++r, g += cols, a1 += cols)
    for (int64_t c = 0; c < cols; ++c) {
      g[c] *= a1[c] * (T(1) - a1[c]);
      gsum[c] += g[c];
    }
}

IPS_ATTN_CLONES void SigmoidRowsF(float* a, const float* bias, int64_t rows, int64_t cols) {
  SigmoidRowsBody(a, bias, rows, cols);
}
IPS_ATTN_CLONES void SigmoidGradOutF(float* dz, const float* ds, const float* w3, const float* a2,
                                     int64_t rows, int64_t cols) {
  SigmoidGradOutBody(dz, ds, w3, a2, rows, cols);
}
IPS_ATTN_CLONES void SigmoidGradSumF(float* g, const float* a1, float* gsum, int64_t rows,
                                     int64_t cols) {
  SigmoidGradSumBody(g, a1, gsum, rows, cols);
}
inline void SigmoidRows(float* a, const float* bias, int64_t rows, int64_t cols) {
  SigmoidRowsF(a, bias, rows, cols);
}
inline void SigmoidRows(double* a, const double* bias, int64_t rows, int64_t cols) {
  SigmoidRowsBody(a, bias, rows, cols);
}
inline void SigmoidGradOut(float* dz, const float* ds, const float* w3, const float* a2,
                           int64_t rows, int64_t cols) {
  SigmoidGradOutF(dz, ds, w3, a2, rows, cols);
}
inline void SigmoidGradOut(double* dz, const double* ds, const double* w3, const double* a2,
                           int64_t rows, int64_t cols) {
  SigmoidGradOutBody(dz, ds, w3, a2, rows, cols);
}
inline void SigmoidGradSum(float* g, const float* a1, float* gsum, int64_t rows, int64_t cols) {
  SigmoidGradSumF(g, a1, gsum, rows, cols);
}
inline void SigmoidGradSum(double* g, const double* a1, double* gsum, int64_t rows, int64_t cols) {
  SigmoidGradSumBody(g, a1, gsum, rows, cols);
}

// Valid steps of row b: [lo, hi).
IPS_ATTN_INLINE void ValidRange(Padding padding, int64_t max_len, int32_t len, int64_t* lo,
                                int64_t* hi) {
  if (padding == Padding::kLeft) {
    *lo = max_len - len;
    *hi = max_len;
  } else {
    *lo = 0;
    *hi = len;
  }
}

template <typename T>
Status CheckLengths(const char* op, const int32_t* lengths, int64_t batch, int64_t max_len) {
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] < 0 || lengths[b] > max_len) {
      return InvalidArgumentError(std::string(op) + ": lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(lengths[b]) +
                                  " outside [0, max_len=" + std::to_string(max_len) + "]");
    }
  }
  return Status::Ok();
}

template <typename T>
Status ValidateDin(const char* op, const DinAttentionArgs<T>& a, bool check_lengths) {
  if (a.batch < 0 || a.max_len < 0 || a.dim <= 0 || a.hidden1 <= 0 || a.hidden2 <= 0) {
    return InvalidArgumentError(
        std::string(op) + ": bad shape (batch=" + std::to_string(a.batch) +
        " max_len=" + std::to_string(a.max_len) + " dim=" + std::to_string(a.dim) +
        " hidden1=" + std::to_string(a.hidden1) + " hidden2=" + std::to_string(a.hidden2) + ")");
  }
  if (a.w1 == nullptr || a.b1 == nullptr || a.w2 == nullptr || a.b2 == nullptr || a.w3 == nullptr ||
      a.b3 == nullptr) {
    return InvalidArgumentError(std::string(op) + ": a weight or bias pointer is null");
  }
  if (a.batch > 0 &&
      (a.query == nullptr || a.lengths == nullptr || (a.max_len > 0 && a.keys == nullptr))) {
    return InvalidArgumentError(std::string(op) + ": query, keys or lengths is null");
  }
  if (check_lengths && a.batch > 0) {
    IPS_RETURN_IF_ERROR(CheckLengths<T>(op, a.lengths, a.batch, a.max_len));
  }
  return Status::Ok();
}

template <typename T>
Status ValidateMha(const char* op, const MhaArgs<T>& a, bool check_lengths) {
  if (a.batch < 0 || a.seq_len < 0 || a.heads <= 0 || a.head_dim <= 0) {
    return InvalidArgumentError(std::string(op) + ": bad shape (batch=" + std::to_string(a.batch) +
                                " seq_len=" + std::to_string(a.seq_len) +
                                " heads=" + std::to_string(a.heads) +
                                " head_dim=" + std::to_string(a.head_dim) + ")");
  }
  if (!(a.dropout >= 0 && a.dropout < 1)) {
    return InvalidArgumentError(std::string(op) + ": dropout " + std::to_string(a.dropout) +
                                " outside [0, 1)");
  }
  if (!(a.scale >= 0) || std::isinf(a.scale)) {
    return InvalidArgumentError(std::string(op) + ": bad scale " + std::to_string(a.scale));
  }
  if (a.batch * a.seq_len > 0 && (a.q == nullptr || a.k == nullptr || a.v == nullptr)) {
    return InvalidArgumentError(std::string(op) + ": q, k or v is null");
  }
  if (check_lengths && a.lengths != nullptr) {
    IPS_RETURN_IF_ERROR(CheckLengths<T>(op, a.lengths, a.batch, a.seq_len));
  }
  return Status::Ok();
}

using attention_internal::DinSavedLayout;
using attention_internal::DinWorkLayout;
using attention_internal::DropThreshold;
using attention_internal::SavedLayout;
using attention_internal::WorkLayout;

// Folded first-layer weights, row h = [Wk - Wd, Wp, Wq + Wd] (3E), from W1 = [Wq|Wk|Wd|Wp].
template <typename T>
void FoldW1(const T* w1, int64_t H1, int64_t E, T* wfold) {
  for (int64_t h = 0; h < H1; ++h) {
    const T* wq = w1 + h * 4 * E;
    const T* wk = wq + E;
    const T* wd = wk + E;
    const T* wp = wd + E;
    T* out = wfold + h * 3 * E;
    for (int64_t e = 0; e < E; ++e) {
      out[e] = wk[e] - wd[e];
      out[E + e] = wp[e];
      out[2 * E + e] = wq[e] + wd[e];
    }
  }
}

// Contiguous runs of valid steps of batch rows [b0, b1), as [row0, row1) in the B*T step index,
// in order: a row's valid steps continue the previous row's run when no padding lies between
// (full histories make one run per chunk). The GEMMs run over runs, so padded steps cost nothing.
template <typename T, typename Fn>
void ForEachValidRun(const DinAttentionArgs<T>& a, int64_t b0, int64_t b1, const Fn& fn) {
  const int64_t L = a.max_len;
  int64_t r0 = 0, r1 = 0;
  for (int64_t b = b0; b < b1; ++b) {
    int64_t lo, hi;
    ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
    if (hi <= lo) continue;
    if (r1 > r0 && b * L + lo == r1) {
      r1 = b * L + hi;
      continue;
    }
    if (r1 > r0) fn(r0, r1);
    r0 = b * L + lo;
    r1 = b * L + hi;
  }
  if (r1 > r0) fn(r0, r1);
}

// Batch rows per cache block: the block's X, A1, A2 (forward) or dZ2, G, DX (backward) stay in
// the core's L2 between the GEMMs and the elementwise passes that consume them.
constexpr int64_t kDinBlockRows = 4;

// Forward: one pass over blocks of batch rows; each block builds X, runs both layers (GEMM,
// then bias + sigmoid), the scores, the mask or softmax and the pooling while it is in cache.
template <typename T>
void DinForwardCpu(const Context& ctx, const DinAttentionArgs<T>& a, T* weights, T* pooled,
                   T* saved) {
  const int64_t B = a.batch, L = a.max_len, E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  const DinSavedLayout lay = SavedLayout(B, L, E, H1, H2);
  T* X = saved + lay.x;
  T* A1 = saved + lay.a1;
  T* A2 = saved + lay.a2;
  T* Ws = saved + lay.w;
  T* U = saved + lay.u;
  T* wfold = saved + lay.wfold;
  FoldW1(a.w1, H1, E, wfold);
  // SmallGemm's B operand has contiguous columns: the weights transposed ([in x out]).
  std::vector<T> packed(static_cast<size_t>(3 * E * H1 + H1 * H2));
  T* wkp_t = packed.data();      // [2E x H1]: [Wk - Wd, Wp]^T
  T* wq_t = wkp_t + 2 * E * H1;  // [E x H1]: (Wq + Wd)^T
  T* w2_t = wq_t + E * H1;       // [H1 x H2]
  for (int64_t h = 0; h < H1; ++h) {
    for (int64_t p = 0; p < 3 * E; ++p) wkp_t[p * H1 + h] = wfold[h * 3 * E + p];
    for (int64_t j = 0; j < H2; ++j) w2_t[h * H2 + j] = a.w2[j * H1 + h];
  }

  ParFor(ctx, B, kDinBlockRows, [&](int64_t b0, int64_t b1) {
    std::vector<T> ub(static_cast<size_t>(H1)), s(static_cast<size_t>(L));
    // X = [k, q*k] at valid steps, 0 at padded ones (so padded keys are never read).
    for (int64_t b = b0; b < b1; ++b) {
      int64_t lo, hi;
      ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
      const T* q = a.query + b * E;
      for (int64_t t = 0; t < L; ++t) {
        T* x = X + (b * L + t) * 2 * E;
        if (t < lo || t >= hi) {
          std::fill(x, x + 2 * E, T(0));
          std::fill(A1 + (b * L + t) * H1, A1 + (b * L + t + 1) * H1, T(0));
          std::fill(A2 + (b * L + t) * H2, A2 + (b * L + t + 1) * H2, T(0));
          continue;
        }
        const T* k = a.keys + (b * L + t) * E;
        for (int64_t e = 0; e < E; ++e) {
          x[e] = k[e];
          x[E + e] = q[e] * k[e];
        }
      }
    }
    // U = Q (Wq + Wd)^T: the q part of the first layer, once per batch row.
    SmallMm(b1 - b0, H1, E, a.query + b0 * E, E, int64_t{1}, wq_t, H1, U + b0 * H1, H1, false);
    ForEachValidRun(a, b0, b1, [&](int64_t r0, int64_t r1) {
      SmallMm(r1 - r0, H1, 2 * E, X + r0 * 2 * E, 2 * E, int64_t{1}, wkp_t, H1, A1 + r0 * H1, H1,
              false);
    });
    for (int64_t b = b0; b < b1; ++b) {
      int64_t lo, hi;
      ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
      for (int64_t h = 0; h < H1; ++h) ub[h] = U[b * H1 + h] + a.b1[h];
      SigmoidRows(A1 + (b * L + lo) * H1, ub.data(), hi - lo, H1);
    }
    ForEachValidRun(a, b0, b1, [&](int64_t r0, int64_t r1) {
      SmallMm(r1 - r0, H2, H1, A1 + r0 * H1, H1, int64_t{1}, w2_t, H2, A2 + r0 * H2, H2, false);
    });
    for (int64_t b = b0; b < b1; ++b) {
      int64_t lo, hi;
      ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
      SigmoidRows(A2 + (b * L + lo) * H2, a.b2, hi - lo, H2);
      // Raw scores s = A2 w3 + b3.
      for (int64_t t = lo; t < hi; ++t) {
        const T* a2 = A2 + (b * L + t) * H2;
        T acc = 0;
        for (int64_t j = 0; j < H2; ++j) acc += a2[j] * a.w3[j];
        s[t] = acc + a.b3[0];
      }
      T* w = weights + b * L;
      T* ws = Ws + b * L;
      if (a.softmax && hi > lo) {
        T mx = s[lo];
        for (int64_t t = lo + 1; t < hi; ++t) mx = std::max(mx, s[t]);
        T sum = 0;
        for (int64_t t = lo; t < hi; ++t) {
          s[t] = std::exp(s[t] - mx);
          sum += s[t];
        }
        for (int64_t t = lo; t < hi; ++t) s[t] /= sum;
      }
      for (int64_t t = 0; t < L; ++t) w[t] = ws[t] = (t >= lo && t < hi) ? s[t] : T(0);
      if (pooled != nullptr) {
        T* p = pooled + b * E;
        std::fill(p, p + E, T(0));
        for (int64_t t = lo; t < hi; ++t) {
          const T* k = a.keys + (b * L + t) * E;
          const T wt = w[t];
          for (int64_t e = 0; e < E; ++e) p[e] += wt * k[e];
        }
      }
    }
  });
}

// Backward: blocks of batch rows as in the forward. The weight gradients are sums over all
// steps; each of a fixed number of slices of the batch (independent of the thread count and of
// which thread runs it) sums its own part, and the parts are added in slice order, so results
// are deterministic and the same for any pool.
template <typename T>
void DinBackwardCpu(const Context& ctx, const DinAttentionArgs<T>& a, const T* saved,
                    const T* d_weights, const T* d_pooled, const DinAttentionGrads<T>& gr,
                    T* work) {
  const int64_t B = a.batch, L = a.max_len, E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  const DinSavedLayout sl = SavedLayout(B, L, E, H1, H2);
  const DinWorkLayout wl = WorkLayout(B, L, E, H1, H2);
  const T* X = saved + sl.x;
  const T* A1 = saved + sl.a1;
  const T* A2 = saved + sl.a2;
  const T* Ws = saved + sl.w;
  const T* wfold = saved + sl.wfold;
  T* dZ2 = work + wl.dz2;
  T* G = work + wl.g;
  T* DX = work + wl.dx;
  T* Gsum = work + wl.gsum;
  T* ds = work + wl.ds;
  T* GX = work + wl.gx;
  const bool need_dx = gr.d_keys != nullptr || gr.d_query != nullptr;

  constexpr int64_t kMaxSlices = 16;
  const int64_t slices = std::max<int64_t>(1, std::min(B, kMaxSlices));
  // Per slice: dW2 [H2 x H1] | G^T X [H1 x 2E] | dw3 [H2] | db2 [H2] | db1 [H1] | db3 [1].
  const int64_t o_gx = H2 * H1, o_w3 = o_gx + H1 * 2 * E, o_b2 = o_w3 + H2, o_b1 = o_b2 + H2,
                o_b3 = o_b1 + H1, per = o_b3 + 1;
  std::vector<T> part(static_cast<size_t>(slices * per), T(0));

  ParFor(ctx, slices, 1, [&](int64_t s0, int64_t s1) {
    std::vector<T> g(static_cast<size_t>(L));
    for (int64_t sidx = s0; sidx < s1; ++sidx) {
      T* pt = part.data() + sidx * per;
      const int64_t sb0 = B * sidx / slices, sb1 = B * (sidx + 1) / slices;
      for (int64_t c0 = sb0; c0 < sb1; c0 += kDinBlockRows) {
        const int64_t c1 = std::min(sb1, c0 + kDinBlockRows);
        // ds = dL/ds per step (through the mask or the softmax), dZ2 = ds w3 * a2 (1 - a2).
        for (int64_t b = c0; b < c1; ++b) {
          int64_t lo, hi;
          ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
          const T* w = Ws + b * L;
          for (int64_t t = lo; t < hi; ++t) {
            T gt = d_weights != nullptr ? d_weights[b * L + t] : T(0);
            if (d_pooled != nullptr) {
              const T* k = a.keys + (b * L + t) * E;
              const T* dp = d_pooled + b * E;
              for (int64_t e = 0; e < E; ++e) gt += dp[e] * k[e];
            }
            g[t] = gt;
          }
          T* dsb = ds + b * L;
          if (a.softmax) {
            T dot = 0;
            for (int64_t t = lo; t < hi; ++t) dot += w[t] * g[t];
            for (int64_t t = lo; t < hi; ++t) g[t] = w[t] * (g[t] - dot);
          }
          for (int64_t t = 0; t < L; ++t) dsb[t] = (t >= lo && t < hi) ? g[t] : T(0);
          SigmoidGradOut(dZ2 + (b * L + lo) * H2, dsb + lo, a.w3, A2 + (b * L + lo) * H2, hi - lo,
                         H2);
          for (int64_t t = lo; t < hi; ++t) {
            const T* a2 = A2 + (b * L + t) * H2;
            const T* dz = dZ2 + (b * L + t) * H2;
            const T dst = dsb[t];
            pt[o_b3] += dst;
            for (int64_t j = 0; j < H2; ++j) {
              pt[o_w3 + j] += dst * a2[j];
              pt[o_b2 + j] += dz[j];
            }
          }
        }
        // dA1 = dZ2 W2 (into G), dW2 += dZ2^T A1.
        ForEachValidRun(a, c0, c1, [&](int64_t r0, int64_t r1) {
          const T* dz = dZ2 + r0 * H2;
          SmallMm(r1 - r0, H1, H2, dz, H2, int64_t{1}, a.w2, H1, G + r0 * H1, H1, false);
          SmallMm(H2, H1, r1 - r0, dz, int64_t{1}, H2, A1 + r0 * H1, H1, pt, H1, true);
        });
        // G = dA1 * a1 (1 - a1) = dL/dz1; Gsum = its sum over the row's steps.
        for (int64_t b = c0; b < c1; ++b) {
          int64_t lo, hi;
          ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
          SigmoidGradSum(G + (b * L + lo) * H1, A1 + (b * L + lo) * H1, Gsum + b * H1, hi - lo, H1);
          for (int64_t h = 0; h < H1; ++h) pt[o_b1 + h] += Gsum[b * H1 + h];
        }
        // G^T X (dWk, dWp) += over the block; DX = G [Wk - Wd, Wp] = dL/dX.
        ForEachValidRun(a, c0, c1, [&](int64_t r0, int64_t r1) {
          const T* gz = G + r0 * H1;
          SmallMm(H1, 2 * E, r1 - r0, gz, int64_t{1}, H1, X + r0 * 2 * E, 2 * E, pt + o_gx, 2 * E,
                  true);
          if (need_dx)
            SmallMm(r1 - r0, 2 * E, H1, gz, H1, int64_t{1}, wfold, 3 * E, DX + r0 * 2 * E, 2 * E,
                    false);
        });
        if (!need_dx) continue;
        if (gr.d_query != nullptr) {
          SmallMm(c1 - c0, E, H1, Gsum + c0 * H1, H1, int64_t{1}, wfold + 2 * E, 3 * E,
                  gr.d_query + c0 * E, E, false);
        }
        for (int64_t b = c0; b < c1; ++b) {
          int64_t lo, hi;
          ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
          const T* q = a.query + b * E;
          const T* dp = d_pooled != nullptr ? d_pooled + b * E : nullptr;
          T* dq = gr.d_query != nullptr ? gr.d_query + b * E : nullptr;
          for (int64_t t = 0; t < L; ++t) {
            T* dk = gr.d_keys != nullptr ? gr.d_keys + (b * L + t) * E : nullptr;
            if (t < lo || t >= hi) {
              if (dk != nullptr) std::fill(dk, dk + E, T(0));
              continue;
            }
            const T* dx = DX + (b * L + t) * 2 * E;
            const T* k = a.keys + (b * L + t) * E;
            if (dk != nullptr) {
              const T wt = Ws[b * L + t];
              for (int64_t e = 0; e < E; ++e) dk[e] = dx[e] + q[e] * dx[E + e];
              if (dp != nullptr)
                for (int64_t e = 0; e < E; ++e) dk[e] += wt * dp[e];
            }
            if (dq != nullptr)
              for (int64_t e = 0; e < E; ++e) dq[e] += k[e] * dx[E + e];
          }
        }
      }
    }
  });

  // Sum the slices in order.
  std::vector<T> total(part.begin(), part.begin() + per);
  for (int64_t sidx = 1; sidx < slices; ++sidx) {
    const T* pt = part.data() + sidx * per;
    for (int64_t i = 0; i < per; ++i) total[i] += pt[i];
  }
  std::copy(total.begin(), total.begin() + H2 * H1, gr.d_w2);
  std::copy(total.begin() + o_w3, total.begin() + o_w3 + H2, gr.d_w3);
  std::copy(total.begin() + o_b2, total.begin() + o_b2 + H2, gr.d_b2);
  std::copy(total.begin() + o_b1, total.begin() + o_b1 + H1, gr.d_b1);
  gr.d_b3[0] = total[o_b3];
  // GX = [G^T k, G^T (q*k), Gsum^T q] in one [H1 x 3E] block.
  for (int64_t h = 0; h < H1; ++h)
    std::copy(total.begin() + o_gx + h * 2 * E, total.begin() + o_gx + (h + 1) * 2 * E,
              GX + h * 3 * E);
  SmallMm(H1, E, B, Gsum, int64_t{1}, H1, a.query, E, GX + 2 * E, 3 * E, false);
  for (int64_t h = 0; h < H1; ++h) {
    const T* gx = GX + h * 3 * E;
    T* dw = gr.d_w1 + h * 4 * E;
    for (int64_t e = 0; e < E; ++e) {
      dw[e] = gx[2 * E + e];                  // dWq
      dw[E + e] = gx[e];                      // dWk
      dw[2 * E + e] = gx[2 * E + e] - gx[e];  // dWd = dWq - dWk (x_d = q - k)
      dw[3 * E + e] = gx[E + e];              // dWp
    }
  }
}

// ---- DIN reference ----------------------------------------------------------------------------

template <typename T>
struct DinRefStep {
  std::vector<T> x, a1, a2;
  T s = 0;
};

template <typename T>
void DinRefMlp(const DinAttentionArgs<T>& a, int64_t b, int64_t t, DinRefStep<T>* st) {
  const int64_t E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  const T* q = a.query + b * E;
  const T* k = a.keys + (b * a.max_len + t) * E;
  st->x.resize(4 * E);
  for (int64_t e = 0; e < E; ++e) {
    st->x[e] = q[e];
    st->x[E + e] = k[e];
    st->x[2 * E + e] = q[e] - k[e];
    st->x[3 * E + e] = q[e] * k[e];
  }
  st->a1.resize(H1);
  for (int64_t h = 0; h < H1; ++h) {
    T z = a.b1[h];
    for (int64_t i = 0; i < 4 * E; ++i) z += a.w1[h * 4 * E + i] * st->x[i];
    st->a1[h] = T(1) / (T(1) + std::exp(-z));
  }
  st->a2.resize(H2);
  st->s = a.b3[0];
  for (int64_t h = 0; h < H2; ++h) {
    T z = a.b2[h];
    for (int64_t i = 0; i < H1; ++i) z += a.w2[h * H1 + i] * st->a1[i];
    st->a2[h] = T(1) / (T(1) + std::exp(-z));
    st->s += a.w3[h] * st->a2[h];
  }
}

// Reference weights of row b (all T steps).
template <typename T>
void DinRefWeights(const DinAttentionArgs<T>& a, int64_t b, std::vector<T>* w) {
  const int64_t L = a.max_len;
  int64_t lo, hi;
  ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
  w->assign(L, T(0));
  DinRefStep<T> st;
  for (int64_t t = lo; t < hi; ++t) {
    DinRefMlp(a, b, t, &st);
    (*w)[t] = st.s;
  }
  if (a.softmax && hi > lo) {
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t t = lo; t < hi; ++t) mx = std::max(mx, (*w)[t]);
    T sum = 0;
    for (int64_t t = lo; t < hi; ++t) sum += std::exp((*w)[t] - mx);
    for (int64_t t = lo; t < hi; ++t) (*w)[t] = std::exp((*w)[t] - mx) / sum;
  }
}

// ---- MHA --------------------------------------------------------------------------------------

IPS_ATTN_INLINE bool Kept(uint64_t seed, uint64_t index, uint64_t threshold) {
  return threshold == 0 || Mix64(seed ^ index) >= threshold;
}

// Allowed keys of query i: [lo, hi) (empty when lo >= hi).
IPS_ATTN_INLINE void AllowedKeys(int64_t T, bool causal, int64_t key_lo, int64_t key_hi, int64_t i,
                                 int64_t* lo, int64_t* hi) {
  *lo = key_lo;
  *hi = causal ? std::min(key_hi, i + 1) : key_hi;
}

template <typename T>
IPS_ATTN_INLINE void KeyRange(const MhaArgs<T>& a, int64_t b, int64_t* lo, int64_t* hi) {
  if (a.lengths == nullptr) {
    *lo = 0;
    *hi = a.seq_len;
  } else {
    ValidRange(a.padding, a.seq_len, a.lengths[b], lo, hi);
  }
}

template <typename T>
T MhaScale(const MhaArgs<T>& a) {
  return a.scale > 0 ? static_cast<T>(a.scale)
                     : static_cast<T>(1.0 / std::sqrt(static_cast<double>(a.head_dim)));
}

// One (batch, head) of the forward; kt [D x T] and s [T] are scratch.
template <typename T>
IPS_ATTN_INLINE void MhaForwardHead(const MhaArgs<T>& a, T scale, uint64_t thr, T keep_scale,
                                    int64_t bh, T* out, T* saved, T* kt, T* s) {
  const int64_t L = a.seq_len, H = a.heads, D = a.head_dim, W = H * D;
  const int64_t b = bh / H, h = bh % H;
  int64_t klo, khi;
  KeyRange(a, b, &klo, &khi);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) kt[d * L + j] = a.k[(b * L + j) * W + h * D + d];
  for (int64_t i = 0; i < L; ++i) {
    T* p = saved + (bh * L + i) * L;
    T* o = out + (b * L + i) * W + h * D;
    int64_t lo, hi;
    AllowedKeys(L, a.causal, klo, khi, i, &lo, &hi);
    std::fill(p, p + L, T(0));
    std::fill(o, o + D, T(0));
    if (lo >= hi) continue;
    const T* q = a.q + (b * L + i) * W + h * D;
    for (int64_t j = 0; j < L; ++j) s[j] = 0;
    for (int64_t d = 0; d < D; ++d) {
      const T qd = q[d];
      const T* kr = kt + d * L;
      for (int64_t j = lo; j < hi; ++j) s[j] += qd * kr[j];
    }
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t j = lo; j < hi; ++j) mx = std::max(mx, s[j] * scale);
    T sum = 0;
    for (int64_t j = lo; j < hi; ++j) p[j] = Exp(s[j] * scale - mx);
    for (int64_t j = lo; j < hi; ++j) sum += p[j];
    const T inv = T(1) / sum;
    for (int64_t j = lo; j < hi; ++j) p[j] *= inv;
    const uint64_t base = static_cast<uint64_t>((bh * L + i) * L);
    for (int64_t j = lo; j < hi; ++j) {
      const T pj = thr == 0 ? p[j] : (Kept(a.seed, base + j, thr) ? p[j] * keep_scale : T(0));
      const T* v = a.v + (b * L + j) * W + h * D;
      for (int64_t d = 0; d < D; ++d) o[d] += pj * v[d];
    }
  }
}

// One (batch, head) of the backward; vt [D x T], dkb/dvb [T x D], dpv/pd [T] are scratch.
template <typename T>
IPS_ATTN_INLINE void MhaBackwardHead(const MhaArgs<T>& a, T scale, uint64_t thr, T keep_scale,
                                     int64_t bh, const T* saved, const T* d_out, T* dq, T* dk,
                                     T* dv, T* vt, T* dkb, T* dvb, T* dpv, T* pd) {
  const int64_t L = a.seq_len, H = a.heads, D = a.head_dim, W = H * D;
  const int64_t b = bh / H, h = bh % H;
  int64_t klo, khi;
  KeyRange(a, b, &klo, &khi);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < D; ++d) vt[d * L + j] = a.v[(b * L + j) * W + h * D + d];
  std::fill(dkb, dkb + L * D, T(0));
  std::fill(dvb, dvb + L * D, T(0));
  for (int64_t i = 0; i < L; ++i) {
    T* __restrict dqi = dq + (b * L + i) * W + h * D;
    std::fill(dqi, dqi + D, T(0));
    int64_t lo, hi;
    AllowedKeys(L, a.causal, klo, khi, i, &lo, &hi);
    if (lo >= hi) continue;
    const T* p = saved + (bh * L + i) * L;
    const T* __restrict go = d_out + (b * L + i) * W + h * D;
    const T* __restrict qi = a.q + (b * L + i) * W + h * D;
    for (int64_t j = lo; j < hi; ++j) dpv[j] = 0;
    for (int64_t d = 0; d < D; ++d) {
      const T g = go[d];
      const T* vr = vt + d * L;
      for (int64_t j = lo; j < hi; ++j) dpv[j] += g * vr[j];
    }
    const uint64_t base = static_cast<uint64_t>((bh * L + i) * L);
    T dot = 0;
    for (int64_t j = lo; j < hi; ++j) {
      const T m = thr == 0 ? T(1) : (Kept(a.seed, base + j, thr) ? keep_scale : T(0));
      pd[j] = p[j] * m;
      dpv[j] *= m;  // dL/dP
      dot += p[j] * dpv[j];
    }
    for (int64_t j = lo; j < hi; ++j) {
      const T dsj = p[j] * (dpv[j] - dot) * scale;
      const T* __restrict kj = a.k + (b * L + j) * W + h * D;
      T* __restrict dkj = dkb + j * D;
      T* __restrict dvj = dvb + j * D;
      const T pdj = pd[j];
      for (int64_t d = 0; d < D; ++d) {
        dqi[d] += dsj * kj[d];
        dkj[d] += dsj * qi[d];
        dvj[d] += pdj * go[d];
      }
    }
  }
  for (int64_t j = 0; j < L; ++j) {
    std::copy(dkb + j * D, dkb + j * D + D, dk + (b * L + j) * W + h * D);
    std::copy(dvb + j * D, dvb + j * D + D, dv + (b * L + j) * W + h * D);
  }
}

IPS_ATTN_CLONES void MhaForwardHeadF(const MhaArgs<float>& a, float scale, uint64_t thr,
                                     float keep_scale, int64_t bh, float* out, float* saved,
                                     float* kt, float* s) {
  MhaForwardHead(a, scale, thr, keep_scale, bh, out, saved, kt, s);
}
IPS_ATTN_CLONES void MhaBackwardHeadF(const MhaArgs<float>& a, float scale, uint64_t thr,
                                      float keep_scale, int64_t bh, const float* saved,
                                      const float* d_out, float* dq, float* dk, float* dv,
                                      float* vt, float* dkb, float* dvb, float* dpv, float* pd) {
  MhaBackwardHead(a, scale, thr, keep_scale, bh, saved, d_out, dq, dk, dv, vt, dkb, dvb, dpv, pd);
}

template <typename T>
void MhaForwardCpu(const Context& ctx, const MhaArgs<T>& a, T* out, T* saved) {
  const int64_t L = a.seq_len, D = a.head_dim;
  const T scale = MhaScale(a);
  const uint64_t thr = DropThreshold(a.dropout);
  const T keep_scale = static_cast<T>(1.0 / (1.0 - a.dropout));
  ParFor(ctx, a.batch * a.heads, 4, [&](int64_t i0, int64_t i1) {
    std::vector<T> kt(static_cast<size_t>(D * L)), s(static_cast<size_t>(L));
    for (int64_t bh = i0; bh < i1; ++bh) {
      if constexpr (std::is_same_v<T, float>) {
        MhaForwardHeadF(a, scale, thr, keep_scale, bh, out, saved, kt.data(), s.data());
      } else {
        MhaForwardHead(a, scale, thr, keep_scale, bh, out, saved, kt.data(), s.data());
      }
    }
  });
}

template <typename T>
void MhaBackwardCpu(const Context& ctx, const MhaArgs<T>& a, const T* saved, const T* d_out, T* dq,
                    T* dk, T* dv) {
  const int64_t L = a.seq_len, D = a.head_dim;
  const T scale = MhaScale(a);
  const uint64_t thr = DropThreshold(a.dropout);
  const T keep_scale = static_cast<T>(1.0 / (1.0 - a.dropout));
  ParFor(ctx, a.batch * a.heads, 4, [&](int64_t i0, int64_t i1) {
    std::vector<T> vt(static_cast<size_t>(D * L)), dkb(static_cast<size_t>(L * D)),
        dvb(static_cast<size_t>(L * D)), dpv(static_cast<size_t>(L)), pd(static_cast<size_t>(L));
    for (int64_t bh = i0; bh < i1; ++bh) {
      if constexpr (std::is_same_v<T, float>) {
        MhaBackwardHeadF(a, scale, thr, keep_scale, bh, saved, d_out, dq, dk, dv, vt.data(),
                         dkb.data(), dvb.data(), dpv.data(), pd.data());
      } else {
        MhaBackwardHead(a, scale, thr, keep_scale, bh, saved, d_out, dq, dk, dv, vt.data(),
                        dkb.data(), dvb.data(), dpv.data(), pd.data());
      }
    }
  });
}

}  // namespace

// ---- DIN public entry points ------------------------------------------------------------------

int64_t DinAttentionSavedSize(int64_t batch, int64_t max_len, int64_t dim, int64_t hidden1,
                              int64_t hidden2) {
  return SavedLayout(batch, max_len, dim, hidden1, hidden2).total;
}

int64_t DinAttentionBackwardWorkspaceSize(int64_t batch, int64_t max_len, int64_t dim,
                                          int64_t hidden1, int64_t hidden2) {
  return WorkLayout(batch, max_len, dim, hidden1, hidden2).total;
}

template <typename T>
Status DinAttentionForward(const Context& ctx, const DinAttentionArgs<T>& args, T* weights,
                           NoDeduce<T>* pooled, T* saved) {
  const bool cpu = ctx.device == Device::kCpu;
  IPS_RETURN_IF_ERROR(ValidateDin("DinAttentionForward", args, cpu));
  if (args.batch * args.max_len > 0 && (weights == nullptr || saved == nullptr))
    return InvalidArgumentError("DinAttentionForward: weights or saved is null");
  if (cpu) {
    DinForwardCpu(ctx, args, weights, pooled, saved);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return DinAttentionForwardCuda(ctx, args, weights, pooled, saved);
  } else {
    return UnimplementedError("DinAttentionForward: double is CPU-only");
  }
#else
  return UnimplementedError("DinAttentionForward: this build has no CUDA");
#endif
}

template <typename T>
Status DinAttentionBackward(const Context& ctx, const DinAttentionArgs<T>& args, const T* saved,
                            const NoDeduce<T>* d_weights, const NoDeduce<T>* d_pooled,
                            const DinAttentionGrads<T>& grads, T* workspace) {
  const bool cpu = ctx.device == Device::kCpu;
  IPS_RETURN_IF_ERROR(ValidateDin("DinAttentionBackward", args, cpu));
  if (grads.d_w1 == nullptr || grads.d_b1 == nullptr || grads.d_w2 == nullptr ||
      grads.d_b2 == nullptr || grads.d_w3 == nullptr || grads.d_b3 == nullptr)
    return InvalidArgumentError("DinAttentionBackward: a weight gradient pointer is null");
  if (saved == nullptr || workspace == nullptr)
    return InvalidArgumentError("DinAttentionBackward: saved or workspace is null");
  if (cpu) {
    DinBackwardCpu(ctx, args, saved, d_weights, d_pooled, grads, workspace);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return DinAttentionBackwardCuda(ctx, args, saved, d_weights, d_pooled, grads, workspace);
  } else {
    return UnimplementedError("DinAttentionBackward: double is CPU-only");
  }
#else
  return UnimplementedError("DinAttentionBackward: this build has no CUDA");
#endif
}

template <typename T>
Status DinAttentionForwardReference(const DinAttentionArgs<T>& a, T* weights, NoDeduce<T>* pooled) {
  IPS_RETURN_IF_ERROR(ValidateDin("DinAttentionForwardReference", a, true));
  const int64_t L = a.max_len, E = a.dim;
  std::vector<T> w;
  for (int64_t b = 0; b < a.batch; ++b) {
    DinRefWeights(a, b, &w);
    for (int64_t t = 0; t < L; ++t) weights[b * L + t] = w[t];
    if (pooled == nullptr) continue;
    int64_t lo, hi;
    ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
    for (int64_t e = 0; e < E; ++e) {
      T acc = 0;
      for (int64_t t = lo; t < hi; ++t) acc += w[t] * a.keys[(b * L + t) * E + e];
      pooled[b * E + e] = acc;
    }
  }
  return Status::Ok();
}

template <typename T>
Status DinAttentionBackwardReference(const DinAttentionArgs<T>& a, const NoDeduce<T>* d_weights,
                                     const NoDeduce<T>* d_pooled, const DinAttentionGrads<T>& gr) {
  IPS_RETURN_IF_ERROR(ValidateDin("DinAttentionBackwardReference", a, true));
  const int64_t B = a.batch, L = a.max_len, E = a.dim, H1 = a.hidden1, H2 = a.hidden2;
  std::fill(gr.d_w1, gr.d_w1 + H1 * 4 * E, T(0));
  std::fill(gr.d_b1, gr.d_b1 + H1, T(0));
  std::fill(gr.d_w2, gr.d_w2 + H2 * H1, T(0));
  std::fill(gr.d_b2, gr.d_b2 + H2, T(0));
  std::fill(gr.d_w3, gr.d_w3 + H2, T(0));
  gr.d_b3[0] = 0;
  if (gr.d_query != nullptr) std::fill(gr.d_query, gr.d_query + B * E, T(0));
  if (gr.d_keys != nullptr) std::fill(gr.d_keys, gr.d_keys + B * L * E, T(0));
  std::vector<T> w, g(L), dx(4 * E), da1(H1);
  DinRefStep<T> st;
  for (int64_t b = 0; b < B; ++b) {
    int64_t lo, hi;
    ValidRange(a.padding, L, a.lengths[b], &lo, &hi);
    DinRefWeights(a, b, &w);
    // dL/dw, including the pooling's contribution, then through softmax or mask to dL/ds.
    for (int64_t t = lo; t < hi; ++t) {
      g[t] = d_weights != nullptr ? d_weights[b * L + t] : T(0);
      if (d_pooled != nullptr)
        for (int64_t e = 0; e < E; ++e) g[t] += d_pooled[b * E + e] * a.keys[(b * L + t) * E + e];
    }
    if (a.softmax) {
      T dot = 0;
      for (int64_t t = lo; t < hi; ++t) dot += w[t] * g[t];
      for (int64_t t = lo; t < hi; ++t) g[t] = w[t] * (g[t] - dot);
    }
    for (int64_t t = lo; t < hi; ++t) {
      DinRefMlp(a, b, t, &st);
      const T dsv = g[t];
      gr.d_b3[0] += dsv;
      std::fill(da1.begin(), da1.end(), T(0));
      for (int64_t h = 0; h < H2; ++h) {
        gr.d_w3[h] += dsv * st.a2[h];
        const T dz = dsv * a.w3[h] * st.a2[h] * (1 - st.a2[h]);
        gr.d_b2[h] += dz;
        for (int64_t i = 0; i < H1; ++i) {
          gr.d_w2[h * H1 + i] += dz * st.a1[i];
          da1[i] += dz * a.w2[h * H1 + i];
        }
      }
      std::fill(dx.begin(), dx.end(), T(0));
      for (int64_t h = 0; h < H1; ++h) {
        const T dz = da1[h] * st.a1[h] * (1 - st.a1[h]);
        gr.d_b1[h] += dz;
        for (int64_t i = 0; i < 4 * E; ++i) {
          gr.d_w1[h * 4 * E + i] += dz * st.x[i];
          dx[i] += dz * a.w1[h * 4 * E + i];
        }
      }
      const T* q = a.query + b * E;
      const T* k = a.keys + (b * L + t) * E;
      for (int64_t e = 0; e < E; ++e) {
        const T dqe = dx[e] + dx[2 * E + e] + dx[3 * E + e] * k[e];
        T dke = dx[E + e] - dx[2 * E + e] + dx[3 * E + e] * q[e];
        if (d_pooled != nullptr) dke += w[t] * d_pooled[b * E + e];
        if (gr.d_query != nullptr) gr.d_query[b * E + e] += dqe;
        if (gr.d_keys != nullptr) gr.d_keys[(b * L + t) * E + e] += dke;
      }
    }
  }
  return Status::Ok();
}

// ---- MHA public entry points ------------------------------------------------------------------

int64_t MhaSavedSize(int64_t batch, int64_t seq_len, int64_t heads) {
  return batch * heads * seq_len * seq_len;
}

Status MhaCudaSupports(int64_t seq_len, int64_t head_dim) {
#ifdef IPS_WITH_CUDA
  return MhaCudaSupportsCuda(seq_len, head_dim);
#else
  (void)seq_len;
  (void)head_dim;
  return UnimplementedError("multi-head attention on CUDA: this build has no CUDA");
#endif
}

template <typename T>
Status MhaForward(const Context& ctx, const MhaArgs<T>& args, T* out, T* saved) {
  const bool cpu = ctx.device == Device::kCpu;
  IPS_RETURN_IF_ERROR(ValidateMha("MhaForward", args, cpu));
  if (args.batch * args.seq_len > 0 && (out == nullptr || saved == nullptr))
    return InvalidArgumentError("MhaForward: out or saved is null");
  if (cpu) {
    MhaForwardCpu(ctx, args, out, saved);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return MhaForwardCuda(ctx, args, out, saved);
  } else {
    return UnimplementedError("MhaForward: double is CPU-only");
  }
#else
  return UnimplementedError("MhaForward: this build has no CUDA");
#endif
}

template <typename T>
Status MhaBackward(const Context& ctx, const MhaArgs<T>& args, const T* saved, const T* d_out,
                   T* dq, T* dk, T* dv) {
  const bool cpu = ctx.device == Device::kCpu;
  IPS_RETURN_IF_ERROR(ValidateMha("MhaBackward", args, cpu));
  if (args.batch * args.seq_len > 0 &&
      (saved == nullptr || d_out == nullptr || dq == nullptr || dk == nullptr || dv == nullptr))
    return InvalidArgumentError("MhaBackward: saved, d_out, dq, dk or dv is null");
  if (cpu) {
    MhaBackwardCpu(ctx, args, saved, d_out, dq, dk, dv);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return MhaBackwardCuda(ctx, args, saved, d_out, dq, dk, dv);
  } else {
    return UnimplementedError("MhaBackward: double is CPU-only");
  }
#else
  return UnimplementedError("MhaBackward: this build has no CUDA");
#endif
}

template <typename T>
Status MhaForwardReference(const MhaArgs<T>& a, T* out) {
  IPS_RETURN_IF_ERROR(ValidateMha("MhaForwardReference", a, true));
  const int64_t B = a.batch, L = a.seq_len, H = a.heads, D = a.head_dim, W = H * D;
  const double scale = static_cast<double>(MhaScale(a));
  const uint64_t thr = DropThreshold(a.dropout);
  std::vector<T> s(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i) {
        int64_t klo, khi;
        KeyRange(a, b, &klo, &khi);
        std::vector<bool> allowed(L);
        bool any = false;
        for (int64_t j = 0; j < L; ++j) {
          allowed[j] = j >= klo && j < khi && (!a.causal || j <= i);
          any = any || allowed[j];
        }
        T* o = out + (b * L + i) * W + h * D;
        for (int64_t d = 0; d < D; ++d) o[d] = 0;
        if (!any) continue;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < L; ++j) {
          if (!allowed[j]) continue;
          T acc = 0;
          for (int64_t d = 0; d < D; ++d)
            acc += a.q[(b * L + i) * W + h * D + d] * a.k[(b * L + j) * W + h * D + d];
          s[j] = acc * static_cast<T>(scale);
          mx = std::max(mx, s[j]);
        }
        T sum = 0;
        for (int64_t j = 0; j < L; ++j)
          if (allowed[j]) sum += std::exp(s[j] - mx);
        for (int64_t j = 0; j < L; ++j) {
          if (!allowed[j]) continue;
          T p = std::exp(s[j] - mx) / sum;
          const uint64_t idx = static_cast<uint64_t>(((b * H + h) * L + i) * L + j);
          if (thr != 0) p = Kept(a.seed, idx, thr) ? p / static_cast<T>(1 - a.dropout) : T(0);
          for (int64_t d = 0; d < D; ++d) o[d] += p * a.v[(b * L + j) * W + h * D + d];
        }
      }
  return Status::Ok();
}

template <typename T>
Status MhaBackwardReference(const MhaArgs<T>& a, const T* d_out, T* dq, T* dk, T* dv) {
  IPS_RETURN_IF_ERROR(ValidateMha("MhaBackwardReference", a, true));
  const int64_t B = a.batch, L = a.seq_len, H = a.heads, D = a.head_dim, W = H * D;
  const T scale = MhaScale(a);
  const uint64_t thr = DropThreshold(a.dropout);
  std::fill(dq, dq + B * L * W, T(0));
  std::fill(dk, dk + B * L * W, T(0));
  std::fill(dv, dv + B * L * W, T(0));
  std::vector<T> p(L), m(L), dp(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i) {
        int64_t klo, khi;
        KeyRange(a, b, &klo, &khi);
        auto allowed = [&](int64_t j) { return j >= klo && j < khi && (!a.causal || j <= i); };
        auto Q = [&](int64_t r, int64_t d) { return a.q[(b * L + r) * W + h * D + d]; };
        auto K = [&](int64_t r, int64_t d) { return a.k[(b * L + r) * W + h * D + d]; };
        auto V = [&](int64_t r, int64_t d) { return a.v[(b * L + r) * W + h * D + d]; };
        auto dO = [&](int64_t r, int64_t d) { return d_out[(b * L + r) * W + h * D + d]; };
        T mx = -std::numeric_limits<T>::infinity();
        bool any = false;
        for (int64_t j = 0; j < L; ++j) {
          if (!allowed(j)) continue;
          any = true;
          T acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += Q(i, d) * K(j, d);
          p[j] = acc * scale;
          mx = std::max(mx, p[j]);
        }
        if (!any) continue;
        T sum = 0;
        for (int64_t j = 0; j < L; ++j)
          if (allowed(j)) sum += std::exp(p[j] - mx);
        T dot = 0;
        for (int64_t j = 0; j < L; ++j) {
          if (!allowed(j)) continue;
          p[j] = std::exp(p[j] - mx) / sum;
          const uint64_t idx = static_cast<uint64_t>(((b * H + h) * L + i) * L + j);
          m[j] = thr == 0 ? T(1)
                          : (Kept(a.seed, idx, thr) ? T(1) / static_cast<T>(1 - a.dropout) : T(0));
          T acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += dO(i, d) * V(j, d);
          dp[j] = acc * m[j];
          dot += p[j] * dp[j];
        }
        for (int64_t j = 0; j < L; ++j) {
          if (!allowed(j)) continue;
          const T ds = p[j] * (dp[j] - dot) * scale;
          for (int64_t d = 0; d < D; ++d) {
            dq[(b * L + i) * W + h * D + d] += ds * K(j, d);
            dk[(b * L + j) * W + h * D + d] += ds * Q(i, d);
            dv[(b * L + j) * W + h * D + d] += p[j] * m[j] * dO(i, d);
          }
        }
      }
  return Status::Ok();
}

#define IPS_ATTENTION_INSTANTIATE(T)                                                               \
  template Status DinAttentionForward<T>(const Context&, const DinAttentionArgs<T>&, T*, T*, T*);  \
  template Status DinAttentionBackward<T>(const Context&, const DinAttentionArgs<T>&, const T*,    \
                                          const T*, const T*, const DinAttentionGrads<T>&, T*);    \
  template Status DinAttentionForwardReference<T>(const DinAttentionArgs<T>&, T*, T*);             \
  template Status DinAttentionBackwardReference<T>(const DinAttentionArgs<T>&, const T*, const T*, \
                                                   const DinAttentionGrads<T>&);                   \
  template Status MhaForward<T>(const Context&, const MhaArgs<T>&, T*, T*);                        \
  template Status MhaBackward<T>(const Context&, const MhaArgs<T>&, const T*, const T*, T*, T*,    \
                                 T*);                                                              \
  template Status MhaForwardReference<T>(const MhaArgs<T>&, T*);                                   \
  template Status MhaBackwardReference<T>(const MhaArgs<T>&, const T*, T*, T*, T*);

IPS_ATTENTION_INSTANTIATE(float)
IPS_ATTENTION_INSTANTIATE(double)
#undef IPS_ATTENTION_INSTANTIATE

}  // namespace ips::kernels
