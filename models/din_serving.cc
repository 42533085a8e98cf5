// DIN serving forward (models/din_serving.h): weight folding at Create, a small GEMM-with-
// epilogue engine, out[rows x 16*nv] = epilogue(bias + add + x W), and the attention unit's
// lane kernels. Register tiles are AVX-512 (compiled per function with a target attribute,
// picked at run time: the build targets baseline x86-64) with a portable scalar twin for other
// CPUs and for tests.
//
// Why our own tiles instead of kernels/gemm.h: the shapes are tiny (K = 36..200, N = 40..208,
// M = 8..50 rows) and the epilogues (sigmoid, PReLU, sigmoid then the score dot product) are
// fused into the tile while it is in registers; a BLAS call per 8x80 tile costs more in overhead
// than the arithmetic, and the distro OpenBLAS may pick SSE3 kernels on this VM.
//
// Two layouts for the attention unit's (candidate, step) pairs. Rows: one candidate's pairs
// along the rows of the tiles, outputs along the lanes (the portable path; AVX-512 for a block
// of fewer than kLaneMinCandidates candidates, the last one of a request). Lanes (AVX-512, whole
// blocks of 16 candidates): one candidate per lane and the weights broadcast from memory, so no
// lane is padding at any width (rows pad the second layer's 40 outputs to 48 lanes) and the
// score dot product needs no horizontal sums.
//
// Cost at DIN's sizes (E 36, attention 80/40, 50 steps, 100 candidates): the attention unit's
// 6080 multiply-adds per pair (2880 first layer, q * k only; 3200 second) are ~1.9M 16-wide
// FMAs per request, the top MLP ~0.2M, and 120 sigmoids per pair ~38K sigmoid vectors of 11
// operations: ~0.52 ms on one AVX-512 core of the dev VM while the VM's other core is quiet
// (busy, the same request takes up to ~1.6x that), ~95% of the ~5G vector operations/s the
// core sustains. Measured on a request of 100 (minimum of 1000): rows for every block 0.70 ms
// with the former 17-operation sigmoid; lanes 0.54 ms; the 11-operation sigmoid 0.52 ms (of it,
// sigmoids ~0.10 ms, measured by replacing them with the identity; the top MLP ~0.04 ms; the
// last block's 4 candidates on the row tiles ~0.03 ms). Two, three or four steps per lane group
// (register tiles 14x2, 9x3, 6x4) measured the same: the FMA ports, not loads, are the limit.
#include "models/din_serving.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "kernels/cpu/fast_math.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define IPS_DIN_SERVING_X86 1
#define IPS_AVX512 __attribute__((target("avx512f,avx512dq")))
#else
#define IPS_DIN_SERVING_X86 0
#endif

namespace ips::models {
namespace {

constexpr int64_t kLanes = 16;  // floats per AVX-512 vector; output widths are padded to it
constexpr int64_t kBlock = 16;  // candidates per block (top MLP rows; bounds the scratch)
static_assert(kBlock == kLanes, "the lane kernels put a block's candidates along one vector");
// Blocks of at least this many candidates run the lane kernels, where a block costs the same
// for any count (~82 us at DIN's sizes on the dev VM); smaller ones (a request's last block) the
// row tiles, which cost per candidate (~6.6 us): measured break-even 12-13.
constexpr int64_t kLaneMinCandidates = 13;
// History steps per fused layer-1 -> layer-2 chunk: its layer-1 activations (10 x 80 floats at
// DIN's sizes) stay in L1 for layer 2; 10 is two even tiles of each layer (measured: 5, 8 and 16
// are 1-4% slower at the paper's sizes).
constexpr int64_t kSteps = 10;

int64_t PadTo(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// The sigmoid epilogues take acc in units of -log2(e) on AVX-512 (Sigmoid16), plain on the
// portable tile.
enum class Epi {
  kStore,       // out = acc
  kSigmoid,     // out = sigmoid(acc)
  kPrelu,       // out = max(acc, 0) + alpha * min(acc, 0)
  kSigmoidDot,  // dot_out[r] += sum_c sigmoid(acc[r][c]) * dot[c]   (nothing stored)
};

// One call: rows x (16 * nv) outputs. Column-indexed arrays (w, bias, alpha, dot, out, add)
// point at the first column of the call; row-indexed ones (x, add, out, dot_out) at its first row.
struct TileArgs {
  const float* x = nullptr;  // [rows x ldx], K used
  int64_t ldx = 0;
  int64_t k = 0;
  const float* w = nullptr;  // [K x ldw]
  int64_t ldw = 0;
  const float* bias = nullptr;  // [cols] or nullptr
  const float* add = nullptr;   // [rows x ldadd] or nullptr
  int64_t ldadd = 0;
  Epi epi = Epi::kStore;
  float* out = nullptr;  // [rows x ldo] (kStore, kSigmoid, kPrelu)
  int64_t ldo = 0;
  const float* alpha = nullptr;  // [cols] (kPrelu)
  const float* dot = nullptr;    // [cols] (kSigmoidDot)
  float* dot_out = nullptr;      // [rows] (kSigmoidDot)
};

// ---- Portable tile ----------------------------------------------------------------------------

void TilePortable(const TileArgs& a, int64_t rows, int64_t cols) {
  float acc[8 * 5 * kLanes];
  for (int64_t r = 0; r < rows; ++r) {
    float* ar = acc + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      ar[c] = (a.bias != nullptr ? a.bias[c] : 0.0f) +
              (a.add != nullptr ? a.add[r * a.ldadd + c] : 0.0f);
    for (int64_t k = 0; k < a.k; ++k) {
      const float* wk = a.w + k * a.ldw;
      const float xv = a.x[r * a.ldx + k];
      for (int64_t c = 0; c < cols; ++c) ar[c] += xv * wk[c];
    }
    float dot = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = ar[c];
      switch (a.epi) {
        case Epi::kStore:
          a.out[r * a.ldo + c] = v;
          break;
        case Epi::kSigmoid:
          a.out[r * a.ldo + c] = kernels::cpu::Sigmoid(v);
          break;
        case Epi::kPrelu:
          a.out[r * a.ldo + c] = std::max(v, 0.0f) + a.alpha[c] * std::min(v, 0.0f);
          break;
        case Epi::kSigmoidDot:
          dot += kernels::cpu::Sigmoid(v) * a.dot[c];
          break;
      }
    }
    if (a.epi == Epi::kSigmoidDot) a.dot_out[r] += dot;
  }
}

// ---- AVX-512 tile -----------------------------------------------------------------------------

#if IPS_DIN_SERVING_X86
// sigmoid(x) from y = -x log2(e): the AVX-512 path folds the -log2(e) into the attention
// unit's weights and biases at Create, so its pre-activations arrive as y, and computes
// 1 / (1 + 2^y). The exponent splits as floor(y) + r, r = y - floor(y) in [0, 1) in one
// vreduceps (exact); 2^r is a degree-5 minimax polynomial (relative error 7.5e-8, 1.5e-7
// evaluated in float: FastExp's accuracy class, kernels/cpu/fast_math.h); 2^floor(y) comes from
// vscalefps (which floors its exponent operand itself), rounding toward zero so that a y past
// 128 (x < -88.7) saturates at FLT_MAX instead of overflowing to inf (inf * rcp(inf) = NaN in the
// Newton step): no clamp needed, and the result there is ~1e-39, sigmoid's 0. The division is
// rcp14 plus one Newton step. 11 vector operations; the Taylor/roundscale version this replaced
// took 17 (the sigmoids are ~20% of a request's vector operations).
IPS_AVX512 inline __m512 Sigmoid16(__m512 y) {
  const __m512 r = _mm512_reduce_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 p = _mm512_set1_ps(1.8775742501020432e-3f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.989345282316208e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.582631379365921e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4015361070632935e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.931530833244324e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.999999403953552e-1f));
  const __m512 e = _mm512_scalef_round_ps(p, y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 d = _mm512_add_ps(e, _mm512_set1_ps(1.0f));
  const __m512 inv = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(inv, _mm512_fnmadd_ps(d, inv, _mm512_set1_ps(1.0f)), inv);
}

// R rows x NV vectors of accumulators stay in registers (R * NV + NV + 1 <= 32).
template <int R, int NV>
IPS_AVX512 void TileAvx512(const TileArgs& a) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const __m512 b = a.bias != nullptr ? _mm512_loadu_ps(a.bias + v * kLanes) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      acc[r][v] = a.add != nullptr
                      ? _mm512_add_ps(b, _mm512_loadu_ps(a.add + r * a.ldadd + v * kLanes))
                      : b;
  }
  const float* x = a.x;
  const float* w = a.w;
  for (int64_t k = 0; k < a.k; ++k, ++x, w += a.ldw) {
    __m512 wv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(w + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * a.ldx]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(xb, wv[v], acc[r][v]);
    }
  }
  switch (a.epi) {
    case Epi::kStore:
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) _mm512_storeu_ps(a.out + r * a.ldo + v * kLanes, acc[r][v]);
      break;
    case Epi::kSigmoid:
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v)
          _mm512_storeu_ps(a.out + r * a.ldo + v * kLanes, Sigmoid16(acc[r][v]));
      break;
    case Epi::kPrelu:
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const __m512 al = _mm512_loadu_ps(a.alpha + v * kLanes);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 z = acc[r][v];
          const __m512 y = _mm512_fmadd_ps(al, _mm512_min_ps(z, _mm512_setzero_ps()),
                                           _mm512_max_ps(z, _mm512_setzero_ps()));
          _mm512_storeu_ps(a.out + r * a.ldo + v * kLanes, y);
        }
      }
      break;
    case Epi::kSigmoidDot: {
      __m512 dv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) dv[v] = _mm512_loadu_ps(a.dot + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        __m512 s = _mm512_mul_ps(Sigmoid16(acc[r][0]), dv[0]);
#pragma GCC unroll 8
        for (int v = 1; v < NV; ++v) s = _mm512_fmadd_ps(Sigmoid16(acc[r][v]), dv[v], s);
        a.dot_out[r] += _mm512_reduce_add_ps(s);
      }
      break;
    }
  }
}

using TileFn = void (*)(const TileArgs&);
template <int R>
constexpr TileFn RowTile(int nv) {
  switch (nv) {
    case 1:
      return &TileAvx512<R, 1>;
    case 2:
      return &TileAvx512<R, 2>;
    case 3:
      return &TileAvx512<R, 3>;
    case 4:
      return &TileAvx512<R, 4>;
    default:
      return &TileAvx512<R, 5>;
  }
}
TileFn Avx512Tile(int64_t rows, int64_t nv) {
  const int v = static_cast<int>(nv);
  switch (rows) {
    case 1:
      return RowTile<1>(v);
    case 2:
      return RowTile<2>(v);
    case 3:
      return RowTile<3>(v);
    case 4:
      return RowTile<4>(v);
    case 5:
      return RowTile<5>(v);
    case 6:
      return RowTile<6>(v);
    case 7:
      return RowTile<7>(v);
    default:
      return RowTile<8>(v);
  }
}

// ---- AVX-512 lane kernels: candidates along the vector lanes --------------------------------
//
// A block of 16 candidates is one vector per feature (lane i = candidate i), and a group of V
// history steps is V such vectors: the pair (candidate i, step t0 + v) is lane i of vector v.
// The weights, and the per-step history terms, are then scalars broadcast from memory (an FMA's
// embedded-broadcast operand), so every lane does useful work at any layer width (the row tiles
// pad the second attention layer's 40 outputs to 48 lanes), and the score dot product w3 . a2 is
// one FMA per output instead of a horizontal sum per pair. Register tile: HB outputs x V vectors
// of accumulators plus the V input vectors.
constexpr int kGroup = 2;   // history steps per group (V); a last odd step runs as V = 1
constexpr int kMaxHb = 14;  // outputs per tile: 14 x 2 accumulators + 2 inputs of 32 registers

struct LaneArgs {
  int64_t E = 0, H1 = 0, W1 = 0, W2 = 0;
  const float* hk = nullptr;  // [V x W1] the group's history terms (rows of hk_)
  const float* u = nullptr;   // [H1 x 16] candidate term + b1, per lane
  const float* wp = nullptr;  // [E x W1]
  const float* w2 = nullptr;  // [H1 x W2]
  const float* b2 = nullptr;  // [H2]
  const float* w3 = nullptr;  // [H2]
  const float* qk = nullptr;  // [E x V x 16] q * k
  float* a1 = nullptr;        // [H1 x V x 16] first layer's activations
  float* s = nullptr;         // [V x 16] scores, accumulated into
};

// acc[j][v] += sum_r w[r * w_stride + j] * x[r * V + v] over `rows` input rows: each weight a
// broadcast scalar, x a row of V vectors (V history steps, 16 candidates each). The inner loop
// of both lane layers.
template <int V, int HB>
IPS_AVX512 __attribute__((always_inline)) inline void AccumulateBroadcastRows(
    const float* w, int64_t w_stride, const float* x, int64_t rows, __m512 (&acc)[HB][V]) {
  for (int64_t r = 0; r < rows; ++r, w += w_stride, x += V * kLanes) {
    __m512 xv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) xv[v] = _mm512_load_ps(x + v * kLanes);
#pragma GCC unroll 16
    for (int j = 0; j < HB; ++j) {
      const __m512 wj = _mm512_set1_ps(w[j]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[j][v] = _mm512_fmadd_ps(wj, xv[v], acc[j][v]);
    }
  }
}

// a1[h0 .. h0 + HB) = sigmoid(u + hk + Wp^T qk) for the group's V steps.
template <int V, int HB>
IPS_AVX512 void LaneLayer1(const LaneArgs& a, int64_t h0) {
  __m512 acc[HB][V];
#pragma GCC unroll 16
  for (int j = 0; j < HB; ++j) {
    const __m512 u = _mm512_load_ps(a.u + (h0 + j) * kLanes);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      acc[j][v] = _mm512_add_ps(u, _mm512_set1_ps(a.hk[v * a.W1 + h0 + j]));
  }
  AccumulateBroadcastRows<V, HB>(a.wp + h0, a.W1, a.qk, a.E, acc);
#pragma GCC unroll 16
  for (int j = 0; j < HB; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      _mm512_store_ps(a.a1 + ((h0 + j) * V + v) * kLanes, Sigmoid16(acc[j][v]));
}

// s += sum_{j in [j0, j0 + HB)} w3[j] sigmoid(b2[j] + W2^T a1) for the group's V steps.
template <int V, int HB>
IPS_AVX512 void LaneLayer2(const LaneArgs& a, int64_t j0) {
  __m512 acc[HB][V];
#pragma GCC unroll 16
  for (int j = 0; j < HB; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[j][v] = _mm512_set1_ps(a.b2[j0 + j]);
  AccumulateBroadcastRows<V, HB>(a.w2 + j0, a.W2, a.a1, a.H1, acc);
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    __m512 s = _mm512_load_ps(a.s + v * kLanes);
#pragma GCC unroll 16
    for (int j = 0; j < HB; ++j)
      s = _mm512_fmadd_ps(Sigmoid16(acc[j][v]), _mm512_set1_ps(a.w3[j0 + j]), s);
    _mm512_store_ps(a.s + v * kLanes, s);
  }
}

using LaneFn = void (*)(const LaneArgs&, int64_t);
template <int V, int... I>
constexpr std::array<LaneFn, sizeof...(I)> Layer1Fns(std::integer_sequence<int, I...>) {
  return {&LaneLayer1<V, I + 1>...};
}
template <int V, int... I>
constexpr std::array<LaneFn, sizeof...(I)> Layer2Fns(std::integer_sequence<int, I...>) {
  return {&LaneLayer2<V, I + 1>...};
}
// [V - 1][HB - 1]
const std::array<LaneFn, kMaxHb> kLayer1[kGroup] = {
    Layer1Fns<1>(std::make_integer_sequence<int, kMaxHb>()),
    Layer1Fns<2>(std::make_integer_sequence<int, kMaxHb>())};
const std::array<LaneFn, kMaxHb> kLayer2[kGroup] = {
    Layer2Fns<1>(std::make_integer_sequence<int, kMaxHb>()),
    Layer2Fns<2>(std::make_integer_sequence<int, kMaxHb>())};

// Runs fn(first, count) over [0, n) in the fewest tiles of <= kMaxHb outputs, as even as
// possible (80: 14, 14, 13, 13, 13, 13).
template <typename Fn>
void ForTiles(int64_t n, Fn&& fn) {
  const int64_t tiles = (n + kMaxHb - 1) / kMaxHb;
  int64_t first = 0;
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t count = n / tiles + (i < n % tiles ? 1 : 0);
    fn(first, count);
    first += count;
  }
}

// qk[e][v] = q[e] * k[v][e] for the group's V steps (k: rows of E).
IPS_AVX512 void LaneQk(const float* q, const float* k, int64_t v_count, int64_t E, float* qk) {
  for (int64_t e = 0; e < E; ++e) {
    const __m512 qe = _mm512_load_ps(q + e * kLanes);
    for (int64_t v = 0; v < v_count; ++v)
      _mm512_store_ps(qk + (e * v_count + v) * kLanes,
                      _mm512_mul_ps(qe, _mm512_set1_ps(k[v * E + e])));
  }
}

// pooled[e] (+)= sum_t s[t] * k[t][e] for e in [e0, e0 + NE), t ascending (the generic
// forward's order), NE accumulators in registers across the steps.
template <int NE>
IPS_AVX512 void LanePoolTile(const float* s, const float* k, int64_t len, int64_t E, int64_t e0,
                             float* pooled) {
  __m512 acc[NE];
#pragma GCC unroll 16
  for (int j = 0; j < NE; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < len; ++t) {
    const __m512 st = _mm512_load_ps(s + t * kLanes);
#pragma GCC unroll 16
    for (int j = 0; j < NE; ++j)
      acc[j] = _mm512_fmadd_ps(st, _mm512_set1_ps(k[t * E + e0 + j]), acc[j]);
  }
#pragma GCC unroll 16
  for (int j = 0; j < NE; ++j) _mm512_store_ps(pooled + (e0 + j) * kLanes, acc[j]);
}
constexpr int kPoolTile = 12;
template <int... I>
constexpr std::array<void (*)(const float*, const float*, int64_t, int64_t, int64_t, float*),
                     sizeof...(I)>
PoolFns(std::integer_sequence<int, I...>) {
  return {&LanePoolTile<I + 1>...};
}
const auto kPool = PoolFns(std::make_integer_sequence<int, kPoolTile>());
#endif  // IPS_DIN_SERVING_X86

// The plain loops around the tiles, as AVX-512 and baseline clones picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IPS_SERVE_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define IPS_SERVE_CLONES
#endif

// dst[r][c] = src[r][c] * scale[c]: the interleaved history times one candidate, q * k.
IPS_SERVE_CLONES void ScaleColumns(const float* __restrict src, const float* __restrict scale,
                                   float* __restrict dst, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = src[r * cols + c] * scale[c];
}

// out[e] += sum_t w[t] * k[t][e], t ascending (the generic forward's order).
IPS_SERVE_CLONES void WeightedRowSum(const float* __restrict w, const float* __restrict k,
                                     int64_t rows, int64_t cols, float* __restrict out) {
  for (int64_t t = 0; t < rows; ++t) {
    const float wt = w[t];
    for (int64_t e = 0; e < cols; ++e) out[e] += wt * k[t * cols + e];
  }
}

// Rows of a register tile for a column block of nv vectors: as many as the 32 vector registers
// hold next to the nv weight vectors and one broadcast.
int64_t TileRows(int64_t nv) { return nv <= 3 ? 8 : nv == 4 ? 6 : 5; }

// The whole product: rows x (16 * nvec) columns, column blocks of <= 5 vectors (outer, so a
// block's weights stay in L1 across the row tiles), row tiles (inner).
void RunGemm(const TileArgs& a, int64_t rows, int64_t nvec, bool avx512) {
  for (int64_t v0 = 0; v0 < nvec; v0 += 5) {
    const int64_t nv = std::min<int64_t>(5, nvec - v0);
    const int64_t c0 = v0 * kLanes;
    // Tiles as even as the register budget allows (25 rows: 5 x 5, not 4 x 6 + 1).
    const int64_t max_tile = TileRows(nv);
    const int64_t tiles = (rows + max_tile - 1) / max_tile;
    const int64_t tile = tiles == 0 ? max_tile : (rows + tiles - 1) / tiles;
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
      const int64_t nr = std::min(tile, rows - r0);
      TileArgs t = a;
      t.x = a.x + r0 * a.ldx;
      t.w = a.w + c0;
      if (a.bias != nullptr) t.bias = a.bias + c0;
      if (a.add != nullptr) t.add = a.add + r0 * a.ldadd + c0;
      if (a.out != nullptr) t.out = a.out + r0 * a.ldo + c0;
      if (a.alpha != nullptr) t.alpha = a.alpha + c0;
      if (a.dot != nullptr) t.dot = a.dot + c0;
      if (a.dot_out != nullptr) t.dot_out = a.dot_out + r0;
#if IPS_DIN_SERVING_X86
      if (avx512) {
        Avx512Tile(nr, nv)(t);
        continue;
      }
#endif
      TilePortable(t, nr, nv * kLanes);
    }
  }
}

// Softmax over s[t * stride + c], t in [0, len), for every column c < stride: the attention
// weights of `stride` candidates side by side (1: one candidate).
void Softmax(float* s, int64_t len, int64_t stride) {
  for (int64_t c = 0; c < stride; ++c) {
    float mx = s[c];
    for (int64_t t = 1; t < len; ++t) mx = std::max(mx, s[t * stride + c]);
    float sum = 0;
    for (int64_t t = 0; t < len; ++t) {
      float& v = s[t * stride + c];
      v = std::exp(v - mx);
      sum += v;
    }
    for (int64_t t = 0; t < len; ++t) s[t * stride + c] /= sum;
  }
}

// w [out x in] (torch layout), columns [c0, c0 + n) -> [n x outp] transposed, zero padded.
std::vector<float> TransposePad(const float* w, int64_t out, int64_t in, int64_t c0, int64_t n,
                                int64_t outp) {
  std::vector<float> t(static_cast<size_t>(n * outp), 0.0f);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < n; ++i) t[i * outp + o] = w[o * in + c0 + i];
  return t;
}

std::vector<float> Pad(const float* v, int64_t n, int64_t np) {
  std::vector<float> p(static_cast<size_t>(np), 0.0f);
  std::copy(v, v + n, p.begin());
  return p;
}

}  // namespace

bool DinServing::CpuHasAvx512() {
#if IPS_DIN_SERVING_X86
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

StatusOr<std::unique_ptr<DinServing>> DinServing::Create(const Din<float>& model, Isa isa) {
  const DinOptions& o = model.options();
  if (o.activation != MlpActivation::kPrelu)
    return UnimplementedError("DinServing: only the PReLU top MLP is covered (this model uses " +
                              std::string(MlpActivationName(o.activation)) + ")");
  if (o.attention_disabled)
    return UnimplementedError("DinServing: attention_disabled is not covered");
  const bool has_avx512 = CpuHasAvx512();
  if (isa == Isa::kAvx512 && !has_avx512)
    return InvalidArgumentError("DinServing: AVX-512 requested on a CPU without AVX-512F and DQ");

  std::unique_ptr<DinServing> s(new DinServing());
  s->avx512_ = isa == Isa::kAvx512 || (isa == Isa::kAuto && has_avx512);
  s->softmax_ = o.attention_softmax;
  const int64_t E = 2 * o.embedding_dim, H1 = o.attention_hidden1, H2 = o.attention_hidden2;
  s->E_ = E;
  s->L_ = o.max_len;
  s->H1_ = H1;
  s->H2_ = H2;
  s->W1_ = PadTo(H1);
  s->W2_ = PadTo(H2);
  const DenseParams<float>& p = model.params();
  auto tensor = [&](const std::string& name, int64_t size) -> StatusOr<const float*> {
    const DenseParams<float>::Entry* e = p.Find(name);
    if (e == nullptr || e->size != size)
      return InternalError("DinServing: model tensor '" + name + "' missing or mis-sized");
    return p.value(e->offset);
  };

  // Activation unit: W1 = [Wq | Wk | Wd | Wp] by column blocks of E.
  IPS_ASSIGN_OR_RETURN(const float* w1, tensor("attn.net.0.weight", H1 * 4 * E));
  IPS_ASSIGN_OR_RETURN(const float* b1, tensor("attn.net.0.bias", H1));
  IPS_ASSIGN_OR_RETURN(const float* w2, tensor("attn.net.2.weight", H2 * H1));
  IPS_ASSIGN_OR_RETURN(const float* b2, tensor("attn.net.2.bias", H2));
  IPS_ASSIGN_OR_RETURN(const float* w3, tensor("attn.net.4.weight", H2));
  IPS_ASSIGN_OR_RETURN(const float* b3, tensor("attn.net.4.bias", 1));
  // Transposed to [in x out], output columns zero-padded to whole vectors.
  const int64_t W1 = s->W1_, W2 = s->W2_;
  s->wq_ = TransposePad(w1, H1, 4 * E, 0, E, W1);
  s->wk_ = TransposePad(w1, H1, 4 * E, E, E, W1);
  const std::vector<float> wd = TransposePad(w1, H1, 4 * E, 2 * E, E, W1);
  // Folded exactly as kernels/cpu/attention.cc folds them (one float subtraction / addition).
  for (size_t i = 0; i < wd.size(); ++i) {
    s->wk_[i] -= wd[i];
    s->wq_[i] += wd[i];
  }
  s->wp_ = TransposePad(w1, H1, 4 * E, 3 * E, E, W1);
  s->b1_ = Pad(b1, H1, W1);
  s->w2_ = TransposePad(w2, H2, H1, 0, H1, W2);
  s->b2_ = Pad(b2, H2, W2);
  s->w3_ = Pad(w3, H2, W2);
  s->b3_ = b3[0];
  if (s->avx512_) {
    // Pre-activations in units of -log2(e) for Sigmoid16: one more rounding per weight
    // (relative 6e-8), of the size the multiplication it replaces would add per sigmoid.
    constexpr float kNegLog2e = -1.44269504088896341f;
    for (std::vector<float>* w : {&s->wk_, &s->wq_, &s->wp_, &s->b1_, &s->w2_, &s->b2_})
      for (float& v : *w) v *= kNegLog2e;
  }

  // Top MLP: sizes [3E, hidden..., 1], named top.<2i>.weight/bias and top.<2i+1>.alpha.
  std::vector<int64_t> sizes = {3 * E};
  sizes.insert(sizes.end(), o.mlp_hidden.begin(), o.mlp_hidden.end());
  sizes.push_back(1);
  const size_t layers = sizes.size() - 1;
  int64_t max_outp = kLanes;
  for (size_t i = 0; i < layers; ++i) {
    const int64_t in = sizes[i], out = sizes[i + 1];
    const std::string name = "top." + std::to_string(2 * i);
    IPS_ASSIGN_OR_RETURN(const float* w, tensor(name + ".weight", out * in));
    IPS_ASSIGN_OR_RETURN(const float* b, tensor(name + ".bias", out));
    if (i + 1 == layers) {  // the output layer: one logit, a dot product per candidate
      s->out_w_.assign(w, w + in);
      s->out_b_ = b[0];
      if (i == 0) s->top_ws_.assign(w + 2 * E, w + 3 * E);  // no hidden layer: summed . w_s
      break;
    }
    Layer l;
    l.in = in;
    l.out = out;
    l.outp = PadTo(out);
    // The first layer keeps its [pooled, target] columns; its `summed` columns go to top_ws_.
    l.w = TransposePad(w, out, in, 0, i == 0 ? 2 * E : in, l.outp);
    if (i == 0) s->top_ws_ = TransposePad(w, out, in, 2 * E, E, l.outp);
    l.b = Pad(b, out, l.outp);
    IPS_ASSIGN_OR_RETURN(const float* alpha,
                         tensor("top." + std::to_string(2 * i + 1) + ".alpha", out));
    l.alpha = Pad(alpha, out, l.outp);
    max_outp = std::max(max_outp, l.outp);
    s->hidden_.push_back(std::move(l));
  }

  auto size = [](int64_t n) { return static_cast<size_t>(n); };
  s->hk_.resize(size(s->L_ * W1));
  s->summed_.resize(size(E));
  s->top_bias_.resize(size(s->hidden_.empty() ? 1 : s->hidden_[0].outp));
  s->u_.resize(size(kBlock * W1));
  s->qk_.resize(size(s->L_ * E));
  s->a1_.resize(size(kSteps * W1));
  s->s_.resize(size(s->L_));
  s->mlp_in_.resize(size(kBlock * 2 * E));
  for (auto& a : s->act_) a.resize(size(kBlock * max_outp));
  // The lane kernels' scratch, 64-byte aligned (whole-vector loads and stores).
  const int64_t q_size = E * kLanes, u_size = H1 * kLanes, qk_size = E * 2 * kLanes,
                a1_size = H1 * 2 * kLanes, s_size = s->L_ * kLanes, pool_size = E * kLanes;
  s->lane_buf_.resize(size(q_size + u_size + qk_size + a1_size + s_size + pool_size + kLanes));
  float* buf = s->lane_buf_.data();
  buf += (kLanes - reinterpret_cast<uintptr_t>(buf) / sizeof(float) % kLanes) % kLanes;
  s->lane_q_ = buf;
  s->lane_u_ = s->lane_q_ + q_size;
  s->lane_qk_ = s->lane_u_ + u_size;
  s->lane_a1_ = s->lane_qk_ + qk_size;
  s->lane_s_ = s->lane_a1_ + a1_size;
  s->lane_pool_ = s->lane_s_ + s_size;
  return s;
}

Status DinServing::Score(const float* history, int64_t len, const float* candidates, int64_t n,
                         float* logits) {
  if (len < 0 || len > L_)
    return InvalidArgumentError("DinServing::Score: history length " + std::to_string(len) +
                                " outside [0, " + std::to_string(L_) + "]");
  if (n < 0) return InvalidArgumentError("DinServing::Score: negative candidate count");
  if ((len > 0 && history == nullptr) || (n > 0 && (candidates == nullptr || logits == nullptr)))
    return InvalidArgumentError("DinServing::Score: null history, candidates or logits");
  const int64_t E = E_;
  // Per request: the history term of the first attention layer, and `summed` with its part of
  // the top MLP's first layer (the generic forward computes both once per candidate).
  if (len > 0) {
    TileArgs a;
    a.x = history;
    a.ldx = E;
    a.k = E;
    a.w = wk_.data();
    a.ldw = W1_;
    a.out = hk_.data();
    a.ldo = W1_;
    RunGemm(a, len, W1_ / kLanes, avx512_);
  }
  std::fill(summed_.begin(), summed_.end(), 0.0f);
  for (int64_t t = 0; t < len; ++t)
    for (int64_t e = 0; e < E; ++e) summed_[e] += history[t * E + e];
  if (hidden_.empty()) {
    float b = out_b_;
    for (int64_t e = 0; e < E; ++e) b += summed_[e] * top_ws_[e];
    top_bias_[0] = b;
  } else {
    TileArgs a;
    a.x = summed_.data();
    a.ldx = E;
    a.k = E;
    a.w = top_ws_.data();
    a.ldw = hidden_[0].outp;
    a.bias = hidden_[0].b.data();
    a.out = top_bias_.data();
    a.ldo = hidden_[0].outp;
    RunGemm(a, 1, hidden_[0].outp / kLanes, avx512_);
  }
  for (int64_t c0 = 0; c0 < n; c0 += kBlock)
    ScoreBlock(history, len, candidates + c0 * E, std::min(kBlock, n - c0), logits + c0);
  return Status::Ok();
}

void DinServing::ScoreBlock(const float* history, int64_t len, const float* cand, int64_t n,
                            float* logits) {
  const int64_t E = E_, W1 = W1_;
  if (len > 0) {
    // The candidate term of the first attention layer, b1 included.
    TileArgs u;
    u.x = cand;
    u.ldx = E;
    u.k = E;
    u.w = wq_.data();
    u.ldw = W1;
    u.bias = b1_.data();
    u.out = u_.data();
    u.ldo = W1;
    RunGemm(u, n, W1 / kLanes, avx512_);
  }
  for (int64_t c = 0; c < n; ++c) {
    float* pooled = mlp_in_.data() + c * 2 * E;
    std::fill(pooled, pooled + E, 0.0f);  // no valid step: zero weights, zero pooled
    std::copy(cand + c * E, cand + (c + 1) * E, pooled + E);
  }
  if (len > 0) {
    if (avx512_ && n >= kLaneMinCandidates)
      AttendLanes(history, len, cand, n);
    else
      AttendRows(history, len, cand, n);
  }

  // Top MLP over the block: [pooled, target] rows, the per-request bias holding `summed`'s part.
  const float* x = mlp_in_.data();
  int64_t ldx = 2 * E, k = 2 * E;
  if (hidden_.empty()) {
    for (int64_t c = 0; c < n; ++c) {
      float z = top_bias_[0];
      for (int64_t i = 0; i < 2 * E; ++i) z += x[c * ldx + i] * out_w_[i];
      logits[c] = z;
    }
    return;
  }
  for (size_t i = 0; i < hidden_.size(); ++i) {
    const Layer& l = hidden_[i];
    float* out = act_[i % 2].data();
    TileArgs a;
    a.x = x;
    a.ldx = ldx;
    a.k = k;
    a.w = l.w.data();
    a.ldw = l.outp;
    a.bias = i == 0 ? top_bias_.data() : l.b.data();
    a.epi = Epi::kPrelu;
    a.out = out;
    a.ldo = l.outp;
    a.alpha = l.alpha.data();
    RunGemm(a, n, l.outp / kLanes, avx512_);
    x = out;
    ldx = l.outp;
    k = l.out;
  }
  for (int64_t c = 0; c < n; ++c) {
    float z = out_b_;
    for (int64_t i = 0; i < k; ++i) z += x[c * ldx + i] * out_w_[i];
    logits[c] = z;
  }
}

// The attention, pooled into mlp_in_, one candidate at a time: its pairs along the rows of the
// tiles (the portable path, and AVX-512 blocks of few candidates).
void DinServing::AttendRows(const float* history, int64_t len, const float* cand, int64_t n) {
  const int64_t E = E_, W1 = W1_;
  const int64_t nv1 = W1 / kLanes, nv2 = W2_ / kLanes;
  for (int64_t c = 0; c < n; ++c) {
    const float* q = cand + c * E;
    float* pooled = mlp_in_.data() + c * 2 * E;
    ScaleColumns(history, q, qk_.data(), len, E);
    std::fill(s_.begin(), s_.begin() + len, 0.0f);
    for (int64_t t0 = 0; t0 < len; t0 += kSteps) {
      const int64_t rows = std::min(kSteps, len - t0);
      TileArgs l1;
      l1.x = qk_.data() + t0 * E;
      l1.ldx = E;
      l1.k = E;
      l1.w = wp_.data();
      l1.ldw = W1;
      l1.bias = u_.data() + c * W1;
      l1.add = hk_.data() + t0 * W1;
      l1.ldadd = W1;
      l1.epi = Epi::kSigmoid;
      l1.out = a1_.data();
      l1.ldo = W1;
      RunGemm(l1, rows, nv1, avx512_);
      TileArgs l2;
      l2.x = a1_.data();
      l2.ldx = W1;
      l2.k = H1_;
      l2.w = w2_.data();
      l2.ldw = W2_;
      l2.bias = b2_.data();
      l2.epi = Epi::kSigmoidDot;
      l2.dot = w3_.data();
      l2.dot_out = s_.data() + t0;
      RunGemm(l2, rows, nv2, avx512_);
    }
    float* s = s_.data();
    for (int64_t t = 0; t < len; ++t) s[t] += b3_;
    if (softmax_) Softmax(s, len, 1);
    WeightedRowSum(s, history, len, E, pooled);
  }
}

// The attention, pooled into mlp_in_, for a block of up to 16 candidates along the vector lanes
// (lanes past n hold zero candidates and are dropped).
void DinServing::AttendLanes(const float* history, int64_t len, const float* cand, int64_t n) {
#if IPS_DIN_SERVING_X86
  const int64_t E = E_, W1 = W1_, H1 = H1_;
  // The block transposed: targets [E x 16] and their first-layer term (b1 included) [H1 x 16].
  for (int64_t e = 0; e < E; ++e)
    for (int64_t c = 0; c < kLanes; ++c) lane_q_[e * kLanes + c] = c < n ? cand[c * E + e] : 0.0f;
  for (int64_t h = 0; h < H1; ++h)
    for (int64_t c = 0; c < kLanes; ++c) lane_u_[h * kLanes + c] = c < n ? u_[c * W1 + h] : 0.0f;
  float* s = lane_s_;  // [len x 16]
  std::fill(s, s + len * kLanes, b3_);
  LaneArgs a;
  a.E = E;
  a.H1 = H1;
  a.W1 = W1;
  a.W2 = W2_;
  a.u = lane_u_;
  a.wp = wp_.data();
  a.w2 = w2_.data();
  a.b2 = b2_.data();
  a.w3 = w3_.data();
  a.qk = lane_qk_;
  a.a1 = lane_a1_;
  for (int64_t t0 = 0; t0 < len; t0 += kGroup) {
    const int64_t v = std::min<int64_t>(kGroup, len - t0);
    LaneQk(lane_q_, history + t0 * E, v, E, lane_qk_);
    a.hk = hk_.data() + t0 * W1;
    a.s = s + t0 * kLanes;
    ForTiles(H1, [&](int64_t h0, int64_t hb) { kLayer1[v - 1][hb - 1](a, h0); });
    ForTiles(H2_, [&](int64_t j0, int64_t hb) { kLayer2[v - 1][hb - 1](a, j0); });
  }
  if (softmax_) Softmax(s, len, kLanes);
  for (int64_t e0 = 0; e0 < E; e0 += kPoolTile)
    kPool[std::min<int64_t>(kPoolTile, E - e0) - 1](s, history, len, E, e0, lane_pool_);
  for (int64_t c = 0; c < n; ++c)
    for (int64_t e = 0; e < E; ++e) mlp_in_[c * 2 * E + e] = lane_pool_[e * kLanes + c];
#else
  (void)history, (void)len, (void)cand, (void)n;
#endif
}

}  // namespace ips::models
