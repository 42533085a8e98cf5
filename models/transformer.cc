#include "models/transformer.h"

#include "common/thread_pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define IPS_TF_AVX512 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/memory.h"
#include "kernels/norm.h"
#include "models/transformer_ops.h"

namespace ips::models {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "ips_models: %s\n", what);
  std::abort();
}

// Dropout sites of one block (the attention op's probabilities are site 0).
constexpr uint64_t kSiteAttnProbs = 0;
constexpr uint64_t kSiteAttnOut = 1;
constexpr uint64_t kSiteFfnHidden = 2;
constexpr uint64_t kSiteFfnOut = 3;

// ---- Projection GEMMs --------------------------------------------------------------------------
// Why our own: every projection here is tall and skinny ([B*T x d] times [d x d'], d ~ 50), and
// OpenBLAS 0.3.21 falls back to its SSE3 "Prescott" kernels on CPUs it does not know (this VM's),
// where these GEMMs took over half of a SASRec step. The loops below keep a block of output rows
// (up to 8 AVX-512 vectors wide) in registers across the whole reduction, with masked loads and
// stores for the ragged edge. They run when the CPU has AVX-512 and the small dimension fits
// (<= 128 floats / 64 doubles); kernels::Gemm (OpenBLAS) serves everything else.
#ifdef IPS_TF_AVX512
#define IPS_TF_TARGET __attribute__((target("avx512f")))
#define IPS_TF_INLINE __attribute__((target("avx512f"), always_inline)) inline

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using R = __m512;
  using M = __mmask16;
  static constexpr int kW = 16;
  static M Mask(int64_t n) { return n >= 16 ? M(0xFFFF) : M((1u << n) - 1); }
  static IPS_TF_INLINE R Zero() { return _mm512_setzero_ps(); }
  static IPS_TF_INLINE R Set1(float v) { return _mm512_set1_ps(v); }
  static IPS_TF_INLINE R Load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static IPS_TF_INLINE void Store(float* p, M m, R v) { _mm512_mask_storeu_ps(p, m, v); }
  static IPS_TF_INLINE R Fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static IPS_TF_INLINE R Add(R a, R b) { return _mm512_add_ps(a, b); }
  static IPS_TF_INLINE R Mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static IPS_TF_INLINE R MaskzSub(M m, R a, R b) { return _mm512_maskz_sub_ps(m, a, b); }
  // Horizontal sum through memory: _mm512_reduce_add_ps trips GCC 12's -Wmaybe-uninitialized.
  static IPS_TF_INLINE float Sum(R a) {
    alignas(64) float t[16];
    _mm512_store_ps(t, a);
    float s = 0;
    for (int i = 0; i < 16; ++i) s += t[i];
    return s;
  }
  // maskz_max: plain _mm512_max_ps trips GCC 12's -Wmaybe-uninitialized (undefined source).
  static IPS_TF_INLINE R Relu(R v) { return _mm512_maskz_max_ps(0xFFFF, v, _mm512_setzero_ps()); }
  static IPS_TF_INLINE R Leaky(R v, float slope) {
    const M neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(slope));
  }
};
template <>
struct Vec<double> {
  using R = __m512d;
  using M = __mmask8;
  static constexpr int kW = 8;
  static M Mask(int64_t n) { return n >= 8 ? M(0xFF) : M((1u << n) - 1); }
  static IPS_TF_INLINE R Zero() { return _mm512_setzero_pd(); }
  static IPS_TF_INLINE R Set1(double v) { return _mm512_set1_pd(v); }
  static IPS_TF_INLINE R Load(const double* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static IPS_TF_INLINE void Store(double* p, M m, R v) { _mm512_mask_storeu_pd(p, m, v); }
  static IPS_TF_INLINE R Fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static IPS_TF_INLINE R Add(R a, R b) { return _mm512_add_pd(a, b); }
  static IPS_TF_INLINE R Mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static IPS_TF_INLINE R MaskzSub(M m, R a, R b) { return _mm512_maskz_sub_pd(m, a, b); }
  static IPS_TF_INLINE double Sum(R a) {
    alignas(64) double t[8];
    _mm512_store_pd(t, a);
    double s = 0;
    for (int i = 0; i < 8; ++i) s += t[i];
    return s;
  }
  static IPS_TF_INLINE R Relu(R v) { return _mm512_maskz_max_pd(0xFF, v, _mm512_setzero_pd()); }
  static IPS_TF_INLINE R Leaky(R v, double slope) {
    const M neg = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LT_OQ);
    return _mm512_mask_mul_pd(v, neg, v, _mm512_set1_pd(slope));
  }
};

bool HasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// C[RB rows x N] = act(A[RB x K] B[K x N] + bias) (or C += A B when accumulate), N <= NV*W.
template <typename T, int RB, int NV>
IPS_TF_TARGET void RowsTimesBlock(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t K,
                                  int64_t N, const T* bias, T* c, int64_t ldc, bool accumulate,
                                  kernels::Activation act, T slope) {
  using V = Vec<T>;
  constexpr int W = V::kW;
  typename V::M mask[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) mask[j] = V::Mask(N - j * W);
  typename V::R acc[RB][NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    const typename V::R b0 = bias != nullptr ? V::Load(bias + j * W, mask[j]) : V::Zero();
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) acc[r][j] = b0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = b + k * ldb;
    typename V::R bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = V::Load(brow + j * W, mask[j]);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const typename V::R av = V::Set1(a[r * lda + k]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] = V::Fma(av, bv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      T* dst = c + r * ldc + j * W;
      typename V::R v = acc[r][j];
      if (accumulate) v = V::Add(v, V::Load(dst, mask[j]));
      if (act == kernels::Activation::kRelu) v = V::Relu(v);
      if (act == kernels::Activation::kLeakyRelu) v = V::Leaky(v, slope);
      V::Store(dst, mask[j], v);
    }
  }
}

template <typename T, int NV>
IPS_TF_TARGET void RowsTimesRange(int64_t r0, int64_t r1, const T* a, int64_t lda, const T* b,
                                  int64_t ldb, int64_t K, int64_t N, const T* bias, T* c,
                                  int64_t ldc, bool accumulate, kernels::Activation act, T slope) {
  constexpr int RB = NV <= 4 ? 6 : 3;  // RB * NV accumulators stay within the 32 registers
  int64_t r = r0;
  for (; r + RB <= r1; r += RB)
    RowsTimesBlock<T, RB, NV>(a + r * lda, lda, b, ldb, K, N, bias, c + r * ldc, ldc, accumulate,
                              act, slope);
  for (; r < r1; ++r)
    RowsTimesBlock<T, 1, NV>(a + r * lda, lda, b, ldb, K, N, bias, c + r * ldc, ldc, accumulate,
                             act, slope);
}

// out[RB x I] (+)= sum over m in [m0, m1) of dy[m, o..o+RB) (x) x[m, :], I <= NV*W.
template <typename T, int RB, int NV>
IPS_TF_TARGET void WeightGradTile(const T* dy, int64_t O, int64_t o, const T* x, int64_t I,
                                  int64_t m0, int64_t m1, T* out) {
  using V = Vec<T>;
  constexpr int W = V::kW;
  typename V::M mask[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) mask[j] = V::Mask(I - j * W);
  typename V::R acc[RB][NV];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[r][j] = V::Load(out + (o + r) * I + j * W, mask[j]);
  for (int64_t m = m0; m < m1; ++m) {
    typename V::R xv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) xv[j] = V::Load(x + m * I + j * W, mask[j]);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const typename V::R g = V::Set1(dy[m * O + o + r]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] = V::Fma(g, xv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) V::Store(out + (o + r) * I + j * W, mask[j], acc[r][j]);
}

// out[O x I] = dy[m0:m1]^T x[m0:m1] (overwritten), in chunks of rows that stay in L1.
template <typename T, int NV>
IPS_TF_TARGET void WeightGradRange(const T* dy, int64_t O, const T* x, int64_t I, int64_t m0,
                                   int64_t m1, T* out) {
  constexpr int RB = NV <= 4 ? 6 : 3;
  constexpr int64_t kChunk = 128;
  std::fill(out, out + O * I, T(0));
  for (int64_t mc = m0; mc < m1; mc += kChunk) {
    const int64_t me = std::min(m1, mc + kChunk);
    int64_t o = 0;
    for (; o + RB <= O; o += RB) WeightGradTile<T, RB, NV>(dy, O, o, x, I, mc, me, out);
    for (; o < O; ++o) WeightGradTile<T, 1, NV>(dy, O, o, x, I, mc, me, out);
  }
}

#define IPS_TF_DISPATCH_NV(nv, call) \
  switch (nv) {                      \
    case 1:                          \
      call(1);                       \
      break;                         \
    case 2:                          \
      call(2);                       \
      break;                         \
    case 3:                          \
      call(3);                       \
      break;                         \
    case 4:                          \
      call(4);                       \
      break;                         \
    case 5:                          \
      call(5);                       \
      break;                         \
    case 6:                          \
      call(6);                       \
      break;                         \
    case 7:                          \
      call(7);                       \
      break;                         \
    default:                         \
      call(8);                       \
      break;                         \
  }

template <typename T>
bool FastFits(int64_t n) {
  return HasAvx512() && n >= 1 && n <= 8 * Vec<T>::kW;
}

// C[rows x N] = act(A[rows x K] B[K x N] + bias), or C += A B; parallel over row blocks.
template <typename T>
void FastRowsTimes(const kernels::Context& ctx, int64_t rows, const T* a, int64_t K, const T* b,
                   int64_t N, const T* bias, T* c, bool accumulate, kernels::Activation act,
                   T slope) {
  const int nv = static_cast<int>((N + Vec<T>::kW - 1) / Vec<T>::kW);
  ParallelFor(ctx.pool, rows, 96, [&](int64_t r0, int64_t r1) {
#define IPS_TF_CALL(NV) \
  RowsTimesRange<T, NV>(r0, r1, a, K, b, N, K, N, bias, c, N, accumulate, act, slope)
    IPS_TF_DISPATCH_NV(nv, IPS_TF_CALL)
#undef IPS_TF_CALL
  });
}

// dw[O x I] = dy[rows x O]^T x[rows x I]: `parts` contiguous row ranges (one per thread, at most
// kMaxParts) into partial[part], then summed in part order, so a given thread count always gives
// the same bits.
constexpr int64_t kMaxParts = 8;
template <typename T>
void FastWeightGrad(const kernels::Context& ctx, int64_t rows, const T* dy, int64_t O, const T* x,
                    int64_t I, T* dw, T* partial) {
  const int nv = static_cast<int>((I + Vec<T>::kW - 1) / Vec<T>::kW);
  const int64_t threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
  const int64_t parts = std::max<int64_t>(1, std::min({threads, kMaxParts, rows / 256}));
  auto run = [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t m0 = rows * p / parts, m1 = rows * (p + 1) / parts;
      T* out = parts == 1 ? dw : partial + p * O * I;
#define IPS_TF_CALL(NV) WeightGradRange<T, NV>(dy, O, x, I, m0, m1, out)
      IPS_TF_DISPATCH_NV(nv, IPS_TF_CALL)
#undef IPS_TF_CALL
    }
  };
  if (parts == 1) {
    run(0, 1);
    return;
  }
  ParallelFor(ctx.pool, parts, 1, run);
  const int64_t n = O * I;
  std::copy(partial, partial + n, dw);
  for (int64_t p = 1; p < parts; ++p)
    for (int64_t i = 0; i < n; ++i) dw[i] += partial[p * n + i];
}
// LayerNorm over rows of width d <= NV*W (torch's: biased variance, eps inside the sqrt).
template <typename T, int NV>
IPS_TF_TARGET void LnForwardRows(int64_t r0, int64_t r1, int64_t d, float eps, const T* x,
                                 const T* gamma, const T* beta, T* y, T* mean, T* rstd) {
  using V = Vec<T>;
  constexpr int W = V::kW;
  typename V::M mask[NV];
  typename V::R g[NV], b[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    mask[j] = V::Mask(d - j * W);
    g[j] = V::Load(gamma + j * W, mask[j]);
    b[j] = V::Load(beta + j * W, mask[j]);
  }
  const T inv_d = T(1) / static_cast<T>(d);
  for (int64_t r = r0; r < r1; ++r) {
    typename V::R xv[NV];
    typename V::R s = V::Zero();
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      xv[j] = V::Load(x + r * d + j * W, mask[j]);
      s = V::Add(s, xv[j]);
    }
    const T mu = V::Sum(s) * inv_d;
    typename V::R ss = V::Zero();
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      xv[j] = V::MaskzSub(mask[j], xv[j], V::Set1(mu));
      ss = V::Fma(xv[j], xv[j], ss);
    }
    const T rs = T(1) / std::sqrt(V::Sum(ss) * inv_d + static_cast<T>(eps));
    mean[r] = mu;
    rstd[r] = rs;
    const typename V::R rsv = V::Set1(rs);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j)
      V::Store(y + r * d + j * W, mask[j], V::Fma(V::Mul(xv[j], rsv), g[j], b[j]));
  }
}

// dx for rows [r0, r1) and this range's dgamma/dbeta partial sums ([d] each, overwritten).
template <typename T, int NV>
IPS_TF_TARGET void LnBackwardRows(int64_t r0, int64_t r1, int64_t d, const T* x, const T* gamma,
                                  const T* mean, const T* rstd, const T* dy, T* dx, T* dgamma,
                                  T* dbeta) {
  using V = Vec<T>;
  constexpr int W = V::kW;
  typename V::M mask[NV];
  typename V::R g[NV], accg[NV], accb[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    mask[j] = V::Mask(d - j * W);
    g[j] = V::Load(gamma + j * W, mask[j]);
    accg[j] = V::Zero();
    accb[j] = V::Zero();
  }
  const T inv_d = T(1) / static_cast<T>(d);
  for (int64_t r = r0; r < r1; ++r) {
    const typename V::R mu = V::Set1(mean[r]), rs = V::Set1(rstd[r]);
    typename V::R xh[NV], gy[NV];
    typename V::R sg = V::Zero(), sgx = V::Zero();
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      xh[j] = V::Mul(V::MaskzSub(mask[j], V::Load(x + r * d + j * W, mask[j]), mu), rs);
      const typename V::R dyv = V::Load(dy + r * d + j * W, mask[j]);
      accg[j] = V::Fma(dyv, xh[j], accg[j]);
      accb[j] = V::Add(accb[j], dyv);
      gy[j] = V::Mul(dyv, g[j]);
      sg = V::Add(sg, gy[j]);
      sgx = V::Fma(gy[j], xh[j], sgx);
    }
    const typename V::R mean_g = V::Set1(V::Sum(sg) * inv_d);
    const typename V::R mean_gx = V::Set1(V::Sum(sgx) * inv_d);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      // dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
      const typename V::R t = V::MaskzSub(mask[j], gy[j], V::Fma(xh[j], mean_gx, mean_g));
      V::Store(dx + r * d + j * W, mask[j], V::Mul(t, rs));
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    V::Store(dgamma + j * W, mask[j], accg[j]);
    V::Store(dbeta + j * W, mask[j], accb[j]);
  }
}

// C[M x N] (+)= A[M x K] B[K x N] on the calling thread (N <= 8 vectors).
template <typename T>
void SmallGemm(int64_t M, int64_t K, int64_t N, const T* a, int64_t lda, const T* b, int64_t ldb,
               T* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t r = 0; r < M; ++r) std::fill(c + r * ldc, c + r * ldc + N, T(0));
    return;
  }
  const int nv = static_cast<int>((N + Vec<T>::kW - 1) / Vec<T>::kW);
#define IPS_TF_CALL(NV)                                                          \
  RowsTimesRange<T, NV>(0, M, a, lda, b, ldb, K, N, nullptr, c, ldc, accumulate, \
                        kernels::Activation::kIdentity, T(0))
  IPS_TF_DISPATCH_NV(nv, IPS_TF_CALL)
#undef IPS_TF_CALL
}

template <typename T>
void Transpose(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
}
#undef IPS_TF_DISPATCH_NV
#else   // !IPS_TF_AVX512
constexpr int64_t kMaxParts = 8;
template <typename T>
bool FastFits(int64_t) {
  return false;
}
template <typename T>
void FastRowsTimes(const kernels::Context&, int64_t, const T*, int64_t, const T*, int64_t, const T*,
                   T*, bool, kernels::Activation, T) {}
template <typename T>
void FastWeightGrad(const kernels::Context&, int64_t, const T*, int64_t, const T*, int64_t, T*,
                    T*) {}
template <typename T>
void SmallGemm(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, bool) {
}
template <typename T>
void Transpose(int64_t, int64_t, const T*, int64_t, T*, int64_t) {}
#endif  // IPS_TF_AVX512

}  // namespace

// ---- Dropout masks ----------------------------------------------------------------------------

namespace {

inline uint32_t Fmix32(uint32_t k) {
  k ^= k >> 16;
  k *= 0x85ebca6bu;
  k ^= k >> 13;
  k *= 0xc2b2ae35u;
  k ^= k >> 16;
  return k;
}

inline uint32_t DropThreshold32(double p) {
  if (!(p > 0)) return 0;
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// Words [w0, w1) of the mask.
void DropoutMaskScalar(uint64_t seed, uint32_t thr, int64_t n, int64_t w0, int64_t w1,
                       uint16_t* bits) {
  const uint32_t lo = static_cast<uint32_t>(seed), hi = static_cast<uint32_t>(seed >> 32);
  for (int64_t w = w0; w < w1; ++w) {
    uint32_t word = 0;
    for (int64_t j = 0; j < 16; ++j) {
      const int64_t i = w * 16 + j;
      if (i >= n) break;
      const uint32_t h = Fmix32(Fmix32(static_cast<uint32_t>(i) * 0x9E3779B1u + lo) ^ hi);
      word |= static_cast<uint32_t>(h >= thr) << j;
    }
    bits[w] = static_cast<uint16_t>(word);
  }
}

#ifdef IPS_TF_AVX512
IPS_TF_INLINE __m512i Fmix32x16(__m512i k) {
  k = _mm512_xor_si512(k, _mm512_maskz_srli_epi32(0xFFFF, k, 16));
  k = _mm512_mullo_epi32(k, _mm512_set1_epi32(static_cast<int>(0x85ebca6bu)));
  k = _mm512_xor_si512(k, _mm512_maskz_srli_epi32(0xFFFF, k, 13));
  k = _mm512_mullo_epi32(k, _mm512_set1_epi32(static_cast<int>(0xc2b2ae35u)));
  return _mm512_xor_si512(k, _mm512_maskz_srli_epi32(0xFFFF, k, 16));
}

IPS_TF_TARGET void DropoutMaskAvx512(uint64_t seed, uint32_t thr, int64_t n, int64_t w0, int64_t w1,
                                     uint16_t* bits) {
  const __m512i lo = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed)));
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(seed >> 32)));
  const __m512i golden = _mm512_set1_epi32(static_cast<int>(0x9E3779B1u));
  const __m512i t = _mm512_set1_epi32(static_cast<int>(thr));
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const int64_t full = std::min(w1, n / 16);
  int64_t w = w0;
  for (; w < full; ++w) {
    const __m512i i = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(w * 16)), iota);
    const __m512i k = _mm512_add_epi32(_mm512_mullo_epi32(i, golden), lo);
    const __m512i h = Fmix32x16(_mm512_xor_si512(Fmix32x16(k), hi));
    bits[w] = static_cast<uint16_t>(_mm512_cmpge_epu32_mask(h, t));
  }
  if (w < w1) DropoutMaskScalar(seed, thr, n, w, w1, bits);
}

// The 16 mask bits of elements [i, i + 16) (bits has a spare word at the end).
inline uint32_t MaskWindow(const uint16_t* bits, int64_t i) {
  const int64_t w = i >> 4;
  const uint32_t win = static_cast<uint32_t>(bits[w]) | (static_cast<uint32_t>(bits[w + 1]) << 16);
  return (win >> (i & 15)) & 0xFFFFu;
}

IPS_TF_TARGET void DropoutApplyAvx512(const uint16_t* bits, float scale, const float* in,
                                      const float* add, float* out, int64_t b, int64_t e) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = b; i < e; i += 16) {
    const __mmask16 lanes = Vec<float>::Mask(e - i);
    const __mmask16 keep = static_cast<__mmask16>(MaskWindow(bits, i)) & lanes;
    __m512 v = _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(keep, in + i), s);
    if (add != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, add + i));
    _mm512_mask_storeu_ps(out + i, lanes, v);
  }
}
IPS_TF_TARGET void DropoutApplyAvx512(const uint16_t* bits, double scale, const double* in,
                                      const double* add, double* out, int64_t b, int64_t e) {
  const __m512d s = _mm512_set1_pd(scale);
  for (int64_t i = b; i < e; i += 8) {
    const __mmask8 lanes = Vec<double>::Mask(e - i);
    const __mmask8 keep = static_cast<__mmask8>(MaskWindow(bits, i) & 0xFFu) & lanes;
    __m512d v = _mm512_maskz_mul_pd(keep, _mm512_maskz_loadu_pd(keep, in + i), s);
    if (add != nullptr) v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(lanes, add + i));
    _mm512_mask_storeu_pd(out + i, lanes, v);
  }
}
#endif  // IPS_TF_AVX512

}  // namespace

void DropoutMask(const kernels::Context& ctx, uint64_t seed, double p, int64_t n, uint16_t* bits) {
  const uint32_t thr = DropThreshold32(p);
  const int64_t words = (n + 15) / 16;
  bits[words] = 0;
  ParallelFor(ctx.pool, words, 2048, [&](int64_t w0, int64_t w1) {
#ifdef IPS_TF_AVX512
    if (HasAvx512()) {
      DropoutMaskAvx512(seed, thr, n, w0, w1, bits);
      return;
    }
#endif
    DropoutMaskScalar(seed, thr, n, w0, w1, bits);
  });
}

template <typename T>
void DropoutApply(const kernels::Context& ctx, const uint16_t* bits, T scale, const T* in,
                  const T* add, T* out, int64_t begin, int64_t end) {
  ParallelFor(ctx.pool, end - begin, 16384, [&](int64_t c0, int64_t c1) {
    const int64_t b = begin + c0, e = begin + c1;
#ifdef IPS_TF_AVX512
    if (HasAvx512()) {
      DropoutApplyAvx512(bits, scale, in, add, out, b, e);
      return;
    }
#endif
    for (int64_t i = b; i < e; ++i) {
      const T kept = ((bits[i >> 4] >> (i & 15)) & 1) != 0 ? in[i] * scale : T(0);
      out[i] = (add != nullptr ? add[i] : T(0)) + kept;
    }
  });
}
template void DropoutApply<float>(const kernels::Context&, const uint16_t*, float, const float*,
                                  const float*, float*, int64_t, int64_t);
template void DropoutApply<double>(const kernels::Context&, const uint16_t*, double, const double*,
                                   const double*, double*, int64_t, int64_t);

Status ValidateTransformerBlockOptions(const TransformerBlockOptions& o,
                                       const std::string& prefix) {
  auto bad = [&](const char* field, const std::string& what) {
    return InvalidArgumentError(prefix + "." + field + ": " + what);
  };
  if (o.dim < 1) return bad("dim", "must be >= 1");
  if (o.num_heads < 1) return bad("num_heads", "must be >= 1");
  if (o.dim % o.num_heads != 0)
    return bad("num_heads",
               std::to_string(o.num_heads) + " does not divide the width " + std::to_string(o.dim));
  if (o.ffn_hidden < 1) return bad("ffn_hidden", "must be >= 1");
  if (o.ffn_activation != kernels::Activation::kRelu &&
      o.ffn_activation != kernels::Activation::kLeakyRelu)
    return bad("ffn_activation", "must be ReLU or LeakyReLU");
  if (!(o.dropout >= 0 && o.dropout < 1))
    return bad("dropout", std::to_string(o.dropout) + " outside [0, 1)");
  if (o.max_batch < 1) return bad("max_batch", "must be >= 1");
  if (o.max_len < 1) return bad("max_len", "must be >= 1");
  return Status::Ok();
}

template <typename T>
typename TransformerBlock<T>::Lin TransformerBlock<T>::AddLinear(const std::string& name,
                                                                 int64_t in, int64_t out) {
  Lin l;
  l.in = in;
  l.out = out;
  l.w = params_->Add(name + ".weight", in * out);
  l.b = params_->Add(name + ".bias", out);
  return l;
}

template <typename T>
TransformerBlock<T>::TransformerBlock(DenseParams<T>* params, const std::string& prefix,
                                      const TransformerBlockOptions& o)
    : params_(params), o_(o) {
  if (!ValidateTransformerBlockOptions(o, "TransformerBlockOptions").ok())
    Die("TransformerBlock with invalid options");
  const int64_t d = o.dim, F = o.ffn_hidden;
  // Registration order = the peer's ModuleDict order: ln1, q, k, v, ln2, ffn.
  ln1_g_ = params->Add(prefix + ".ln1.weight", d);
  ln1_b_ = params->Add(prefix + ".ln1.bias", d);
  q_ = AddLinear(prefix + ".q", d, d);
  k_ = AddLinear(prefix + ".k", d, d);
  v_ = AddLinear(prefix + ".v", d, d);
  if (o.attn_output_projection) proj_ = AddLinear(prefix + ".attn_out", d, d);
  ln2_g_ = params->Add(prefix + ".ln2.weight", d);
  ln2_b_ = params->Add(prefix + ".ln2.bias", d);
  ffn1_ = AddLinear(prefix + ".ffn.0", d, F);
  ffn2_ = AddLinear(prefix + ".ffn.3", F, d);

  // A long max_len (the attention is max_batch x heads x max_len^2) or a wide layer may not fit
  // in host memory: the error is kept for AttachDevice (a constructor cannot return it) instead
  // of ending the process.
  try {
    alloc_status_ = Allocate(kernels::Device::kCpu);
    // The fast CPU path's scratch (host memory, only where that path can run).
    const auto n = [](int64_t v) { return static_cast<size_t>(v); };
    if (alloc_status_.ok() && o.fast_cpu_path) {
      wt_.resize(n(d * std::max(d, F)));
      ln_partials_.resize(n(kMaxParts * 2 * d));
      partials_.resize(n(kMaxParts * d * std::max(d, F)));
    }
    if (alloc_status_.ok() && FastAttention()) {
      const int64_t T_ = o.max_len, dh = d / o.num_heads;
      attn_scratch_.resize(n(kMaxParts * (dh * T_ + 5 * T_ * T_)));
      if (o.dropout > 0)
        mask_attn_probs_.resize(
            n(DropoutMaskWords(kernels::MhaSavedSize(o.max_batch, o.max_len, o.num_heads))));
    }
  } catch (const std::bad_alloc&) {
    alloc_status_ = ResourceExhaustedError("out of host memory");
  }
  if (!alloc_status_.ok())
    alloc_status_ = alloc_status_.WithContext(
        "transformer block '" + prefix + "' (dim " + std::to_string(d) + ", ffn_hidden " +
        std::to_string(F) + ", heads " + std::to_string(o.num_heads) + ", max_len " +
        std::to_string(o.max_len) + ", up to " + std::to_string(o.max_batch) + " rows)");
}

template <typename T>
Status TransformerBlock<T>::Allocate(kernels::Device device) {
  const TransformerBlockOptions& o = o_;
  const int64_t d = o.dim, F = o.ffn_hidden, rows = o.max_batch * o.max_len;
  const bool proj = o.attn_output_projection, drop = o.dropout > 0;
  IPS_RETURN_IF_ERROR(kernels::CreateBuffers<T>(
      device, {{&h1_, rows * d},
               {&q_buf_, rows * d},
               {&k_buf_, rows * d},
               {&v_buf_, rows * d},
               {&attn_, rows * d},
               {&mid_, rows * d},
               {&h2_, rows * d},
               {&f2_, rows * d},
               {&g_, rows * d},
               {&dtmp_, rows * d},
               {&dq_, rows * d},
               {&dk_, rows * d},
               {&dv_, rows * d},
               {&dh_, rows * d},
               {&proj_buf_, proj ? rows * d : 0},
               {&mean1_, rows},
               {&rstd1_, rows},
               {&mean2_, rows},
               {&rstd2_, rows},
               {&f1_, rows * F},
               {&df1_, rows * F},
               {&f1d_, drop ? rows * F : 0},
               {&probs_, kernels::MhaSavedSize(o.max_batch, o.max_len, o.num_heads)}}));
  return kernels::CreateBuffers<uint16_t>(
      device, {{&mask_attn_out_, drop ? DropoutMaskWords(rows * d) : 0},
               {&mask_ffn_hidden_, drop ? DropoutMaskWords(rows * F) : 0},
               {&mask_ffn_out_, drop ? DropoutMaskWords(rows * d) : 0}});
}

template <typename T>
Status TransformerBlock<T>::AttachDevice(kernels::Device device) {
  IPS_RETURN_IF_ERROR(alloc_status_);
  if (device == kernels::Device::kCpu) return Status::Ok();
  if (!std::is_same_v<T, float>)
    return UnimplementedError("TransformerBlock: CUDA blocks are float only");
  if (o_.fast_cpu_path) Die("TransformerBlock::AttachDevice: fast_cpu_path is CPU-only");
  // A sequence too long for the CUDA attention fails here, at Create, not at the first Backward.
  if (Status st = kernels::MhaCudaSupports(o_.max_len, o_.dim / o_.num_heads); !st.ok())
    return st.WithContext("TransformerBlock (max_len " + std::to_string(o_.max_len) + ")");
  return Allocate(device);
}

template <typename T>
void TransformerBlock<T>::Init(Rng& rng) {
  const int64_t d = o_.dim;
  std::fill(params_->value(ln1_g_), params_->value(ln1_g_) + d, T(1));
  std::fill(params_->value(ln1_b_), params_->value(ln1_b_) + d, T(0));
  std::fill(params_->value(ln2_g_), params_->value(ln2_g_) + d, T(1));
  std::fill(params_->value(ln2_b_), params_->value(ln2_b_) + d, T(0));
  std::vector<const Lin*> lins = {&q_, &k_, &v_};
  if (o_.attn_output_projection) lins.push_back(&proj_);
  lins.push_back(&ffn1_);
  lins.push_back(&ffn2_);
  for (const Lin* l : lins)
    InitLinearTorchDefault(rng, l->in, l->out, params_->value(l->w), params_->value(l->b));
}

template <typename T>
Status TransformerBlock<T>::LinForward(const kernels::Context& ctx, const Lin& l, int64_t rows,
                                       const T* x, T* y, kernels::Activation act) {
  if (o_.fast_cpu_path && FastFits<T>(l.out) && rows > 0) {
    // y = x W^T: the kernel wants B = W^T [in x out].
    const T* w = params_->compute_value(l.w);
    T* wt = wt_.data();
    for (int64_t o = 0; o < l.out; ++o)
      for (int64_t i = 0; i < l.in; ++i) wt[i * l.out + o] = w[o * l.in + i];
    FastRowsTimes<T>(ctx, rows, x, l.in, wt, l.out, params_->compute_value(l.b), y, false, act,
                     T(0.01));
    return Status::Ok();
  }
  kernels::LinearArgs<T> a;
  a.rows = rows;
  a.in = l.in;
  a.out = l.out;
  a.act = act;
  a.x = x;
  a.w = params_->compute_value(l.w);
  a.bias = params_->compute_value(l.b);
  a.y = y;
  return kernels::LinearForward(ctx, a);
}

template <typename T>
Status TransformerBlock<T>::LinBackward(const kernels::Context& ctx, const Lin& l, int64_t rows,
                                        const T* x, const T* y, T* dpre, kernels::Activation act,
                                        T* dx, T dx_beta) {
  if (o_.fast_cpu_path && FastFits<T>(l.in) && rows > 0) {
    if (act != kernels::Activation::kIdentity) {  // ReLU / LeakyReLU from the output's sign
      const T neg = act == kernels::Activation::kLeakyRelu ? T(0.01) : T(0);
      ParallelFor(ctx.pool, rows, 256, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0 * l.out; i < r1 * l.out; ++i)
          dpre[i] = y[i] > T(0) ? dpre[i] : dpre[i] * neg;
      });
    }
    FastWeightGrad<T>(ctx, rows, dpre, l.out, x, l.in, params_->compute_grad(l.w),
                      partials_.data());
    kernels::BiasGradArgs<T> bg;
    bg.rows = rows;
    bg.cols = l.out;
    bg.dy = dpre;
    bg.dbias = params_->compute_grad(l.b);
    IPS_RETURN_IF_ERROR(kernels::BiasGrad(ctx, bg));
    if (dx != nullptr)  // dx (+)= dpre W, W [out x in] as B
      FastRowsTimes<T>(ctx, rows, dpre, l.out, params_->compute_value(l.w), l.in, nullptr, dx,
                       dx_beta != T(0), kernels::Activation::kIdentity, T(0));
    return Status::Ok();
  }
  kernels::LinearArgs<T> a;
  a.rows = rows;
  a.in = l.in;
  a.out = l.out;
  a.act = act;
  a.x = x;
  a.w = params_->compute_value(l.w);
  a.y = const_cast<T*>(y);  // LinearArgs::y is the forward's output; the backward only reads it
  a.dy = dpre;
  a.dpre = dpre;
  a.dx = dx_beta == T(0) ? dx : nullptr;
  a.dw = params_->compute_grad(l.w);
  a.dbias = params_->compute_grad(l.b);
  IPS_RETURN_IF_ERROR(kernels::LinearBackward(ctx, a));
  if (dx == nullptr || dx_beta == T(0)) return Status::Ok();
  // Accumulating dx += dpre W (Q, K and V all read the same LN output).
  return kernels::Gemm(
      ctx, kernels::MakeGemmArgs(false, false, rows, l.in, l.out, static_cast<const T*>(dpre),
                                 l.out, params_->compute_value(l.w), l.in, dx, l.in, dx_beta));
}

template <typename T>
Status TransformerBlock<T>::LayerNorm(const kernels::Context& ctx,
                                      const kernels::LayerNormArgs<T>& a, bool backward) {
#ifdef IPS_TF_AVX512
  if (o_.fast_cpu_path && FastFits<T>(a.dim) && a.rows > 0) {
    const int nv = static_cast<int>((a.dim + Vec<T>::kW - 1) / Vec<T>::kW);
    const int64_t threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
    const int64_t parts = std::max<int64_t>(1, std::min({threads, kMaxParts, a.rows / 64}));
    const int64_t d = a.dim;
    ParallelFor(ctx.pool, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t r0 = a.rows * p / parts, r1 = a.rows * (p + 1) / parts;
        T* dg = ln_partials_.data() + p * 2 * d;
        switch (nv) {
#define IPS_TF_LN_CASE(NV)                                                                    \
  case NV:                                                                                    \
    if (backward) {                                                                           \
      LnBackwardRows<T, NV>(r0, r1, d, a.x, a.gamma, a.mean, a.rstd, a.dy, a.dx, dg, dg + d); \
    } else {                                                                                  \
      LnForwardRows<T, NV>(r0, r1, d, a.eps, a.x, a.gamma, a.beta, a.y, a.mean, a.rstd);      \
    }                                                                                         \
    break;
          IPS_TF_LN_CASE(1)
          IPS_TF_LN_CASE(2)
          IPS_TF_LN_CASE(3)
          IPS_TF_LN_CASE(4)
          IPS_TF_LN_CASE(5)
          IPS_TF_LN_CASE(6)
          IPS_TF_LN_CASE(7)
          default:
            IPS_TF_LN_CASE(8)
#undef IPS_TF_LN_CASE
        }
      }
    });
    if (backward) {  // parameter gradients: the parts' partial sums in part order
      const T* part = ln_partials_.data();
      std::copy(part, part + d, a.dgamma);
      std::copy(part + d, part + 2 * d, a.dbeta);
      for (int64_t p = 1; p < parts; ++p)
        for (int64_t c = 0; c < d; ++c) {
          a.dgamma[c] += part[p * 2 * d + c];
          a.dbeta[c] += part[p * 2 * d + d + c];
        }
    }
    return Status::Ok();
  }
#endif
  return backward ? kernels::LayerNormBackward(ctx, a) : kernels::LayerNormForward(ctx, a);
}

template <typename T>
bool TransformerBlock<T>::FastAttention() const {
  return o_.fast_cpu_path && FastFits<T>(std::max(o_.max_len, o_.dim / o_.num_heads));
}

template <typename T>
Status TransformerBlock<T>::AttentionForward(const kernels::Context& ctx, int64_t batch,
                                             const int32_t* lengths) {
  const int64_t T_ = o_.max_len, H = o_.num_heads, dh = o_.dim / H, W = o_.dim;
  if (!FastAttention()) {
    kernels::MhaArgs<T> m;
    m.batch = batch;
    m.seq_len = T_;
    m.heads = H;
    m.head_dim = dh;
    m.causal = o_.causal;
    m.padding = kernels::Padding::kLeft;
    m.lengths = lengths;
    m.dropout = dropout_on_ ? o_.dropout : 0.0;
    m.seed = DropoutSiteSeed(seed_, kSiteAttnProbs);
    m.q = q_buf_.data();
    m.k = k_buf_.data();
    m.v = v_buf_.data();
    return kernels::MhaForward(ctx, m, attn_.data(), probs_.data());
  }
  // Our path: only a sequence's valid steps take part (left padding: the last len steps), as
  // queries and as keys. Padded query rows get zero output and probabilities (the kernel would
  // give them attention over the valid keys when not causal, but the block zeroes those rows
  // and they pass no gradient, so the block computes the same function).
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T keep_scale = dropout_on_ ? static_cast<T>(1.0 / (1.0 - o_.dropout)) : T(1);
  const uint16_t* bits = nullptr;
  if (dropout_on_) {
    DropoutMask(ctx, DropoutSiteSeed(seed_, kSiteAttnProbs), o_.dropout, batch * H * T_ * T_,
                mask_attn_probs_.data());
    bits = mask_attn_probs_.data();
  }
  const int64_t threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
  const int64_t parts = std::max<int64_t>(1, std::min({threads, kMaxParts, batch * H}));
  const int64_t per_part = dh * T_ + 5 * T_ * T_;
  auto run = [&](int64_t p0, int64_t p1) {
    for (int64_t part = p0; part < p1; ++part) {
      T* kt = attn_scratch_.data() + part * per_part;
      T* pd = kt + dh * T_;
      const int64_t bh0 = batch * H * part / parts, bh1 = batch * H * (part + 1) / parts;
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / H, h = bh % H, len = lengths[b], fv = T_ - len;
        T* P = probs_.data() + bh * T_ * T_;
        std::fill(P, P + T_ * T_, T(0));
        T* out = attn_.data() + b * T_ * W + h * dh;
        for (int64_t t = 0; t < fv; ++t) std::fill(out + t * W, out + t * W + dh, T(0));
        if (len == 0) continue;
        const int64_t off = (b * T_ + fv) * W + h * dh;
        const T* q = q_buf_.data() + off;
        const T* k = k_buf_.data() + off;
        const T* v = v_buf_.data() + off;
        Transpose<T>(len, dh, k, W, kt, len);
        T* S = P + fv * T_ + fv;  // [len x len] at stride T
        SmallGemm<T>(len, dh, len, q, W, kt, len, S, T_, false);
        for (int64_t i = 0; i < len; ++i) {
          T* row = S + i * T_;
          const int64_t hi = o_.causal ? i + 1 : len;
          T mx = row[0] * scale;
          for (int64_t j = 1; j < hi; ++j) mx = std::max(mx, row[j] * scale);
          T sum = 0;
          for (int64_t j = 0; j < hi; ++j) {
            row[j] = std::exp(row[j] * scale - mx);
            sum += row[j];
          }
          const T inv = T(1) / sum;
          for (int64_t j = 0; j < hi; ++j) row[j] *= inv;
          std::fill(row + hi, row + len, T(0));
        }
        const T* a = S;
        int64_t lda = T_;
        if (bits != nullptr) {
          for (int64_t i = 0; i < len; ++i) {
            const int64_t base = (bh * T_ + fv + i) * T_ + fv;
            for (int64_t j = 0; j < len; ++j) {
              const int64_t idx = base + j;
              pd[i * len + j] =
                  ((bits[idx >> 4] >> (idx & 15)) & 1) != 0 ? S[i * T_ + j] * keep_scale : T(0);
            }
          }
          a = pd;
          lda = len;
        }
        SmallGemm<T>(len, len, dh, a, lda, v, W, out + fv * W, W, false);
      }
    }
  };
  if (parts == 1) {
    run(0, 1);
  } else {
    ParallelFor(ctx.pool, parts, 1, run);
  }
  return Status::Ok();
}

template <typename T>
Status TransformerBlock<T>::AttentionBackward(const kernels::Context& ctx, int64_t batch,
                                              const int32_t* lengths, const T* d_attn) {
  const int64_t T_ = o_.max_len, H = o_.num_heads, dh = o_.dim / H, W = o_.dim;
  if (!FastAttention()) {
    kernels::MhaArgs<T> m;
    m.batch = batch;
    m.seq_len = T_;
    m.heads = H;
    m.head_dim = dh;
    m.causal = o_.causal;
    m.padding = kernels::Padding::kLeft;
    m.lengths = lengths;
    m.dropout = dropout_on_ ? o_.dropout : 0.0;
    m.seed = DropoutSiteSeed(seed_, kSiteAttnProbs);
    m.q = q_buf_.data();
    m.k = k_buf_.data();
    m.v = v_buf_.data();
    return kernels::MhaBackward(ctx, m, probs_.data(), d_attn, dq_.data(), dk_.data(), dv_.data());
  }
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T keep_scale = dropout_on_ ? static_cast<T>(1.0 / (1.0 - o_.dropout)) : T(1);
  const uint16_t* bits = dropout_on_ ? mask_attn_probs_.data() : nullptr;
  const int64_t threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
  const int64_t parts = std::max<int64_t>(1, std::min({threads, kMaxParts, batch * H}));
  const int64_t per_part = dh * T_ + 5 * T_ * T_;
  auto run = [&](int64_t p0, int64_t p1) {
    for (int64_t part = p0; part < p1; ++part) {
      T* vt = attn_scratch_.data() + part * per_part;
      T* pd = vt + dh * T_;    // dropped probabilities [len x len]
      T* pdt = pd + T_ * T_;   // their transpose
      T* dpd = pdt + T_ * T_;  // dL/d(dropped probabilities)
      T* ds = dpd + T_ * T_;   // dL/dS (scaled scores)
      T* dst = ds + T_ * T_;   // its transpose
      const int64_t bh0 = batch * H * part / parts, bh1 = batch * H * (part + 1) / parts;
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / H, h = bh % H, len = lengths[b], fv = T_ - len;
        const int64_t head = b * T_ * W + h * dh;
        for (int64_t t = 0; t < fv; ++t) {
          std::fill(dq_.data() + head + t * W, dq_.data() + head + t * W + dh, T(0));
          std::fill(dk_.data() + head + t * W, dk_.data() + head + t * W + dh, T(0));
          std::fill(dv_.data() + head + t * W, dv_.data() + head + t * W + dh, T(0));
        }
        if (len == 0) continue;
        const int64_t off = head + fv * W;
        const T* q = q_buf_.data() + off;
        const T* k = k_buf_.data() + off;
        const T* v = v_buf_.data() + off;
        const T* go = d_attn + off;
        const T* P = probs_.data() + bh * T_ * T_ + fv * T_ + fv;  // [len x len] at stride T
        // dPd = dO V^T.
        Transpose<T>(len, dh, v, W, vt, len);
        SmallGemm<T>(len, dh, len, go, W, vt, len, dpd, len, false);
        // dV = Pd^T dO.
        for (int64_t i = 0; i < len; ++i) {
          const int64_t base = (bh * T_ + fv + i) * T_ + fv;
          for (int64_t j = 0; j < len; ++j) {
            const int64_t idx = base + j;
            const bool kept = bits == nullptr || ((bits[idx >> 4] >> (idx & 15)) & 1) != 0;
            pdt[j * len + i] = kept ? P[i * T_ + j] * keep_scale : T(0);
            // dL/dP (through the dropout), kept in pd's slot.
            pd[i * len + j] = kept ? dpd[i * len + j] * keep_scale : T(0);
          }
        }
        SmallGemm<T>(len, len, dh, pdt, len, go, W, dv_.data() + off, W, false);
        // dS = P * (dP - sum_j P dP) * scale (softmax backward, then the score scale).
        for (int64_t i = 0; i < len; ++i) {
          const int64_t hi = o_.causal ? i + 1 : len;
          const T* prow = P + i * T_;
          const T* dprow = pd + i * len;
          T dot = 0;
          for (int64_t j = 0; j < hi; ++j) dot += prow[j] * dprow[j];
          for (int64_t j = 0; j < len; ++j) {
            const T g = j < hi ? prow[j] * (dprow[j] - dot) * scale : T(0);
            ds[i * len + j] = g;
            dst[j * len + i] = g;
          }
        }
        SmallGemm<T>(len, len, dh, ds, len, k, W, dq_.data() + off, W, false);
        SmallGemm<T>(len, len, dh, dst, len, q, W, dk_.data() + off, W, false);
      }
    }
  };
  if (parts == 1) {
    run(0, 1);
  } else {
    ParallelFor(ctx.pool, parts, 1, run);
  }
  return Status::Ok();
}

template <typename T>
Status TransformerBlock<T>::Forward(const kernels::Context& ctx, int64_t batch,
                                    const int32_t* lengths, const T* x, T* y, bool training,
                                    uint64_t seed) {
  IPS_RETURN_IF_ERROR(alloc_status_);
  if (batch < 0 || batch > o_.max_batch)
    return InvalidArgumentError("TransformerBlock::Forward: batch " + std::to_string(batch) +
                                " outside [0, " + std::to_string(o_.max_batch) + "]");
  batch_ = batch;
  seed_ = seed;
  dropout_on_ = training && o_.dropout > 0;
  const int64_t T_ = o_.max_len, d = o_.dim, rows = batch * T_, F = o_.ffn_hidden;
  if (rows == 0) return Status::Ok();

  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = x;
  ln.gamma = params_->compute_value(ln1_g_);
  ln.beta = params_->compute_value(ln1_b_);
  ln.y = h1_.data();
  ln.mean = mean1_.data();
  ln.rstd = rstd1_.data();
  IPS_RETURN_IF_ERROR(LayerNorm(ctx, ln, false));

  const auto id = kernels::Activation::kIdentity;
  const bool query_norm = o_.layout == BlockLayout::kQueryNorm;
  const T* kv_in = query_norm ? x : h1_.data();
  IPS_RETURN_IF_ERROR(LinForward(ctx, q_, rows, h1_.data(), q_buf_.data(), id));
  IPS_RETURN_IF_ERROR(LinForward(ctx, k_, rows, kv_in, k_buf_.data(), id));
  IPS_RETURN_IF_ERROR(LinForward(ctx, v_, rows, kv_in, v_buf_.data(), id));

  IPS_RETURN_IF_ERROR(AttentionForward(ctx, batch, lengths));
  const T* o = attn_.data();
  if (o_.attn_output_projection) {
    IPS_RETURN_IF_ERROR(LinForward(ctx, proj_, rows, attn_.data(), proj_buf_.data(), id));
    o = proj_buf_.data();
  }

  // m = x + drop(o) (kQueryNorm: h1 + o, the reference code dropping only the attention
  // weights).
  const T* res1 = query_norm ? h1_.data() : x;
  T* mid = mid_.data();
  const T keep_scale = dropout_on_ ? static_cast<T>(1.0 / (1.0 - o_.dropout)) : T(1);
  if (dropout_on_) {
    IPS_RETURN_IF_ERROR(TfDropoutMask(ctx, DropoutSiteSeed(seed_, kSiteFfnHidden), o_.dropout,
                                      rows * F, mask_ffn_hidden_.data()));
    IPS_RETURN_IF_ERROR(TfDropoutMask(ctx, DropoutSiteSeed(seed_, kSiteFfnOut), o_.dropout,
                                      rows * d, mask_ffn_out_.data()));
  }
  if (AttnOutDropout()) {
    IPS_RETURN_IF_ERROR(TfDropoutMask(ctx, DropoutSiteSeed(seed_, kSiteAttnOut), o_.dropout,
                                      rows * d, mask_attn_out_.data()));
    IPS_RETURN_IF_ERROR(
        TfDropoutApply<T>(ctx, mask_attn_out_.data(), keep_scale, o, res1, mid, rows * d));
  } else {
    IPS_RETURN_IF_ERROR(TfAdd<T>(ctx, rows * d, res1, o, mid));
  }

  ln.x = mid;
  ln.gamma = params_->compute_value(ln2_g_);
  ln.beta = params_->compute_value(ln2_b_);
  ln.y = h2_.data();
  ln.mean = mean2_.data();
  ln.rstd = rstd2_.data();
  IPS_RETURN_IF_ERROR(LayerNorm(ctx, ln, false));

  IPS_RETURN_IF_ERROR(LinForward(ctx, ffn1_, rows, h2_.data(), f1_.data(), o_.ffn_activation));
  const T* f1 = f1_.data();
  if (dropout_on_) {
    IPS_RETURN_IF_ERROR(TfDropoutApply<T>(ctx, mask_ffn_hidden_.data(), keep_scale, f1, nullptr,
                                          f1d_.data(), rows * F));
    f1 = f1d_.data();
  }
  IPS_RETURN_IF_ERROR(LinForward(ctx, ffn2_, rows, f1, f2_.data(), id));
  const T* f2 = f2_.data();
  // y = (m + drop(f2)) * keep (kQueryNorm: h2 + drop(f2)): padded rows zero, each sequence's
  // valid rows one span.
  const T* res2 = query_norm ? h2_.data() : mid;
  IPS_RETURN_IF_ERROR(TfKeepResidual<T>(ctx, CtrShapes{batch, T_, d, lengths},
                                        dropout_on_ ? mask_ffn_out_.data() : nullptr, keep_scale,
                                        f2, res2, y));
  return Status::Ok();
}

template <typename T>
Status TransformerBlock<T>::Backward(const kernels::Context& ctx, int64_t batch,
                                     const int32_t* lengths, const T* x, const T* dy, T* dx) {
  if (batch != batch_)
    return FailedPreconditionError("TransformerBlock::Backward: batch " + std::to_string(batch) +
                                   " differs from the forward's " + std::to_string(batch_));
  const int64_t T_ = o_.max_len, d = o_.dim, rows = batch * T_, F = o_.ffn_hidden;
  if (rows == 0) return Status::Ok();
  const auto id = kernels::Activation::kIdentity;

  // g = dy * keep (dL/dy before the keep mask).
  T* g = g_.data();
  IPS_RETURN_IF_ERROR(TfKeepRows<T>(ctx, CtrShapes{batch, T_, d, lengths}, dy, g));

  // FFN: dtmp = d f2 (through its dropout), df1 = d(f1 after dropout).
  T* dtmp = dtmp_.data();
  const T keep_scale = dropout_on_ ? static_cast<T>(1.0 / (1.0 - o_.dropout)) : T(1);
  const size_t row_bytes = sizeof(T) * static_cast<size_t>(rows * d);
  if (dropout_on_) {
    IPS_RETURN_IF_ERROR(
        TfDropoutApply<T>(ctx, mask_ffn_out_.data(), keep_scale, g, nullptr, dtmp, rows * d));
  } else {
    IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, dtmp, g, row_bytes));
  }
  const T* f1_in = dropout_on_ ? f1d_.data() : f1_.data();
  IPS_RETURN_IF_ERROR(LinBackward(ctx, ffn2_, rows, f1_in, dtmp, dtmp, id, df1_.data(), T(0)));
  if (dropout_on_)
    IPS_RETURN_IF_ERROR(TfDropoutApply<T>(ctx, mask_ffn_hidden_.data(), keep_scale, df1_.data(),
                                          nullptr, df1_.data(), rows * F));
  IPS_RETURN_IF_ERROR(LinBackward(ctx, ffn1_, rows, h2_.data(), f1_.data(), df1_.data(),
                                  o_.ffn_activation, dh_.data(), T(0)));

  const bool query_norm = o_.layout == BlockLayout::kQueryNorm;
  // kQueryNorm: the residual starts at h2, so dL/dh2 = FFN's input gradient + g.
  if (query_norm) IPS_RETURN_IF_ERROR(TfAdd<T>(ctx, rows * d, dh_.data(), g, dh_.data()));
  kernels::LayerNormArgs<T> ln;
  ln.rows = rows;
  ln.dim = d;
  ln.x = mid_.data();
  ln.gamma = params_->compute_value(ln2_g_);
  ln.mean = mean2_.data();
  ln.rstd = rstd2_.data();
  ln.dy = dh_.data();
  ln.dx = query_norm ? g : dtmp;  // kQueryNorm: LN2's input gradient is all of dL/dm
  ln.dgamma = params_->compute_grad(ln2_g_);
  ln.dbeta = params_->compute_grad(ln2_b_);
  IPS_RETURN_IF_ERROR(LayerNorm(ctx, ln, true));
  // kPreLn: g = dL/dm = g (the residual) + LN2's input gradient.
  if (!query_norm) IPS_RETURN_IF_ERROR(TfAdd<T>(ctx, rows * d, g, dtmp, g));

  // Attention branch: do = dropout'(g).
  if (AttnOutDropout()) {
    IPS_RETURN_IF_ERROR(
        TfDropoutApply<T>(ctx, mask_attn_out_.data(), keep_scale, g, nullptr, dtmp, rows * d));
  } else {
    IPS_RETURN_IF_ERROR(kernels::CopyOnDevice(ctx, dtmp, g, row_bytes));
  }
  T* d_attn = dtmp;
  if (o_.attn_output_projection) {
    IPS_RETURN_IF_ERROR(
        LinBackward(ctx, proj_, rows, attn_.data(), dtmp, dtmp, id, dh_.data(), T(0)));
    d_attn = dh_.data();
  }
  IPS_RETURN_IF_ERROR(AttentionBackward(ctx, batch, lengths, d_attn));
  // kPreLn: dh1 = dQ Wq + dK Wk + dV Wv. kQueryNorm: dh1 = dQ Wq + g (the residual from h1),
  // and dK Wk + dV Wv go straight to dx below. (d_attn may live in dh_, but the attention
  // backward is done.)
  IPS_RETURN_IF_ERROR(
      LinBackward(ctx, q_, rows, h1_.data(), dq_.data(), dq_.data(), id, dh_.data(), T(0)));
  if (query_norm) {
    IPS_RETURN_IF_ERROR(TfAdd<T>(ctx, rows * d, dh_.data(), g, dh_.data()));
  } else {
    IPS_RETURN_IF_ERROR(
        LinBackward(ctx, k_, rows, h1_.data(), dk_.data(), dk_.data(), id, dh_.data(), T(1)));
    IPS_RETURN_IF_ERROR(
        LinBackward(ctx, v_, rows, h1_.data(), dv_.data(), dv_.data(), id, dh_.data(), T(1)));
  }

  ln.x = x;
  ln.gamma = params_->compute_value(ln1_g_);
  ln.mean = mean1_.data();
  ln.rstd = rstd1_.data();
  ln.dy = dh_.data();
  ln.dx = dx;
  ln.dgamma = params_->compute_grad(ln1_g_);
  ln.dbeta = params_->compute_grad(ln1_b_);
  IPS_RETURN_IF_ERROR(LayerNorm(ctx, ln, true));
  if (query_norm) {
    // dx = LN1's input gradient + dK Wk + dV Wv.
    IPS_RETURN_IF_ERROR(LinBackward(ctx, k_, rows, x, dk_.data(), dk_.data(), id, dx, T(1)));
    IPS_RETURN_IF_ERROR(LinBackward(ctx, v_, rows, x, dv_.data(), dv_.data(), id, dx, T(1)));
  } else {
    // dx = LN1's input gradient + the residual's dL/dm.
    IPS_RETURN_IF_ERROR(TfAdd<T>(ctx, rows * d, dx, g, dx));
  }
  return Status::Ok();
}

template class TransformerBlock<float>;
template class TransformerBlock<double>;

}  // namespace ips::models
