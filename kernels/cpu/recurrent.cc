// CPU GRU / AUGRU / LSTM (see kernels/recurrent.h), the scalar reference, buffer sizes and the
// device dispatch.
//
// Fast path. Batch rows are independent, so rows are split over ctx.pool once per pass (not once
// per step) and each thread walks tiles of kTileRows rows through all T steps.
// Forward, per tile: the input projection of all its steps as one product ([rows*T x I]·W_ihᵀ),
// then per step a register-blocked [rows x H]·W_hhᵀ product and the fused gate math.
// Backward, per tile: the reverse step loop keeps every step's gate gradients in [B x T x G*H]
// buffers (only dh·W_hh is per step), then d_x, d_w_ih, d_w_hh and the biases are each one
// product over all the tile's steps, summed per thread and reduced in a fixed order.
// The products are ours (SmallMatMul), not the BLAS GEMM: they run on the pool's threads, where
// OpenBLAS would start its own spinning thread pool (on the shared 2-core VM that made the same
// GEMMs several times slower under load), and the per-tile data is still in cache.
// Float code is compiled twice, baseline x86-64 and an AVX2+FMA clone chosen at run time.
#include "kernels/recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/fast_math.h"

namespace ips::kernels {

#ifdef IPS_WITH_CUDA
// Defined in kernels/cuda/recurrent.cu.
Status RnnForwardCuda(const Context& ctx, const RnnForwardArgs<float>& args);
Status RnnBackwardCuda(const Context& ctx, const RnnBackwardArgs<float>& args);
#endif

namespace {

// Everything on the per-step path is force-inlined into ForwardTile/BackwardTile, which are then
// compiled twice for float: baseline x86-64 (SSE2) and an AVX2+FMA clone picked at run time
// (RunForwardTile / RunBackwardTile). The baseline flags stay portable; the clone is where the
// speed comes from on any recent x86 CPU.
#if defined(__GNUC__)
#define IPS_RNN_INLINE __attribute__((always_inline)) inline
#define IPS_RNN_LAMBDA_INLINE __attribute__((always_inline))
#else
#define IPS_RNN_INLINE inline
#define IPS_RNN_LAMBDA_INLINE
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#define IPS_RNN_HAVE_AVX2_CLONE 1
#endif
// The gate loops read and write several rows of distinct buffers (states, reserve, gates); GCC
// cannot prove that they do not overlap and would keep the loops scalar.
#if defined(__GNUC__) && !defined(__clang__)
#define IPS_RNN_IVDEP _Pragma("GCC ivdep")
#else
#define IPS_RNN_IVDEP
#endif

constexpr int64_t kTileRows = 32;  // rows whose state and h-side gates stay in L1 across steps

// --- Activations (kernels/cpu/fast_math.h) -----------------------------------------------------
using cpu::Sigmoid;
using cpu::Tanh;

template <typename T>
inline T RefSigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// --- Small products ----------------------------------------------------------------------------
// GCC/Clang vector extensions: 32-byte vectors (8 floats / 4 doubles) that the compiler maps to
// one AVX register in the AVX2 clone below and to two SSE registers in the baseline build.
// The vectors never cross a call boundary (everything here is force-inlined), so GCC's note that
// returning them by value has a different ABI without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
struct HalfVecOf {
  typedef T type __attribute__((vector_size(16)));
};
template <typename T>
using HalfVec = typename HalfVecOf<T>::type;

template <typename V, typename T>
IPS_RNN_INLINE V Load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V, typename T>
IPS_RNN_INLINE void Store(T* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// Columns [j, j + kVecs·|V|) of kRows output rows: out (= or +=) bias + in·m, with the kRows x
// kVecs accumulators in registers across the whole k loop (each m load feeds kRows FMAs).
// in(r, p) = in[r·in_rs + p·in_cs], so a transposed left operand costs nothing.
template <typename T, typename V, int kRows, int kVecs>
IPS_RNN_INLINE void MatMulPanel(int64_t j, int64_t k, int64_t n, const T* in, int64_t in_rs,
                                int64_t in_cs, const T* __restrict m, const T* bias,
                                bool accumulate, T* out, int64_t ld_out) {
  constexpr int64_t L = sizeof(V) / sizeof(T);
  V acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) {
      if (accumulate) {
        acc[r][v] = Load<V>(out + r * ld_out + j + v * L);
      } else if (bias != nullptr) {
        acc[r][v] = Load<V>(bias + j + v * L);
      } else {
        acc[r][v] = V{};
      }
    }
  for (int64_t p = 0; p < k; ++p) {
    V w[kVecs];
    for (int v = 0; v < kVecs; ++v) w[v] = Load<V>(m + p * n + j + v * L);
    for (int r = 0; r < kRows; ++r) {
      const T a = in[r * in_rs + p * in_cs];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) Store(out + r * ld_out + j + v * L, acc[r][v]);
}

template <typename T, int kRows>
IPS_RNN_INLINE void MatMulRows(int64_t k, int64_t n, const T* in, int64_t in_rs, int64_t in_cs,
                               const T* __restrict m, const T* bias, bool accumulate, T* out,
                               int64_t ld_out) {
  constexpr int64_t L = 32 / sizeof(T), L2 = L / 2;
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L)
    MatMulPanel<T, Vec<T>, kRows, 2>(j, k, n, in, in_rs, in_cs, m, bias, accumulate, out, ld_out);
  for (; j + L <= n; j += L)
    MatMulPanel<T, Vec<T>, kRows, 1>(j, k, n, in, in_rs, in_cs, m, bias, accumulate, out, ld_out);
  for (; j + L2 <= n; j += L2)
    MatMulPanel<T, HalfVec<T>, kRows, 1>(j, k, n, in, in_rs, in_cs, m, bias, accumulate, out,
                                         ld_out);
  for (; j < n; ++j) {
    for (int r = 0; r < kRows; ++r) {
      T acc = accumulate ? out[r * ld_out + j] : (bias != nullptr ? bias[j] : T(0));
      for (int64_t p = 0; p < k; ++p) acc += in[r * in_rs + p * in_cs] * m[p * n + j];
      out[r * ld_out + j] = acc;
    }
  }
}

// out[r][j] (= or +=) bias[j] + Σ_p in(r, p)·m[p][j] for r < rows, m row-major [k x n],
// in(r, p) = in[r·in_rs + p·in_cs]. Small products on the pool's threads: the BLAS GEMM would
// bring its own thread pool, whose spinning workers collide with ours on a shared 2-core VM.
template <typename T>
IPS_RNN_INLINE void SmallMatMul(int64_t rows, int64_t k, int64_t n, const T* in, int64_t in_rs,
                                int64_t in_cs, const T* __restrict m, const T* bias,
                                bool accumulate, T* out, int64_t ld_out) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    MatMulRows<T, 4>(k, n, in + r * in_rs, in_rs, in_cs, m, bias, accumulate, out + r * ld_out,
                     ld_out);
  for (; r < rows; ++r)
    MatMulRows<T, 1>(k, n, in + r * in_rs, in_rs, in_cs, m, bias, accumulate, out + r * ld_out,
                     ld_out);
}

template <typename T>
void ParallelRows(const Context& ctx, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  ParallelFor(ctx.pool, n, kTileRows, fn);
}

// --- Validation --------------------------------------------------------------------------------
Status ValidateShape(const char* op, const RnnShape& s) {
  if (s.batch < 0 || s.steps < 0 || s.input < 0 || s.hidden < 0)
    return InvalidArgumentError(std::string(op) + ": negative size (B=" + std::to_string(s.batch) +
                                " T=" + std::to_string(s.steps) + " I=" + std::to_string(s.input) +
                                " H=" + std::to_string(s.hidden) + ")");
  return Status::Ok();
}

Status Missing(const char* op, const char* field) {
  return InvalidArgumentError(std::string(op) + ": required pointer '" + field + "' is null");
}

Status CheckLengths(const char* op, const int32_t* lengths, int64_t batch, int64_t steps) {
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] < 0 || lengths[b] > steps)
      return InvalidArgumentError(std::string(op) + ": lengths[" + std::to_string(b) +
                                  "] = " + std::to_string(lengths[b]) +
                                  " is outside [0, T=" + std::to_string(steps) + "]");
  }
  return Status::Ok();
}

template <typename T>
Status ValidateForward(const char* op, const RnnForwardArgs<T>& a, bool need_buffers) {
  IPS_RETURN_IF_ERROR(ValidateShape(op, a.shape));
  const RnnShape& s = a.shape;
  const bool any = s.batch > 0;
  const bool any_steps = any && s.steps > 0;
  if (any_steps && a.x == nullptr && s.input > 0) return Missing(op, "x");
  if (any && a.lengths == nullptr) return Missing(op, "lengths");
  if (a.w_ih == nullptr && s.input > 0 && s.hidden > 0) return Missing(op, "w_ih");
  if (a.w_hh == nullptr && s.hidden > 0) return Missing(op, "w_hh");
  if ((a.b_ih == nullptr || a.b_hh == nullptr) && s.hidden > 0) return Missing(op, "b_ih/b_hh");
  if (s.cell == RnnCell::kAugru && any_steps && a.att == nullptr) return Missing(op, "att");
  if (any_steps && s.hidden > 0 && a.states == nullptr) return Missing(op, "states");
  if (any && s.hidden > 0 && a.final_h == nullptr) return Missing(op, "final_h");
  if (s.cell == RnnCell::kLstm && any && s.hidden > 0 && a.final_c == nullptr)
    return Missing(op, "final_c");
  if (need_buffers && any_steps && s.hidden > 0) {
    if (a.reserve == nullptr) return Missing(op, "reserve");
    if (a.workspace == nullptr) return Missing(op, "workspace");
  }
  return Status::Ok();
}

template <typename T>
Status ValidateBackward(const char* op, const RnnBackwardArgs<T>& a) {
  IPS_RETURN_IF_ERROR(ValidateShape(op, a.shape));
  const RnnShape& s = a.shape;
  const bool any = s.batch > 0;
  const bool any_steps = any && s.steps > 0;
  if (any_steps && a.x == nullptr && s.input > 0) return Missing(op, "x");
  if (any && a.lengths == nullptr) return Missing(op, "lengths");
  if (a.w_ih == nullptr && s.input > 0 && s.hidden > 0) return Missing(op, "w_ih");
  if (a.w_hh == nullptr && s.hidden > 0) return Missing(op, "w_hh");
  if (s.cell == RnnCell::kAugru && any_steps && a.att == nullptr) return Missing(op, "att");
  if (s.cell == RnnCell::kAugru && any_steps && a.d_att == nullptr) return Missing(op, "d_att");
  if (any_steps && s.hidden > 0) {
    if (a.states == nullptr) return Missing(op, "states");
    if (a.reserve == nullptr) return Missing(op, "reserve");
    if (a.workspace == nullptr) return Missing(op, "workspace");
    if (a.d_x == nullptr && s.input > 0) return Missing(op, "d_x");
  }
  if (s.hidden > 0) {
    if (a.d_w_ih == nullptr && s.input > 0) return Missing(op, "d_w_ih");
    if (a.d_w_hh == nullptr) return Missing(op, "d_w_hh");
    if (a.d_b_ih == nullptr || a.d_b_hh == nullptr) return Missing(op, "d_b_ih/d_b_hh");
  }
  return Status::Ok();
}

template <typename T>
T* At(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

// --- Forward -----------------------------------------------------------------------------------
template <typename T>
IPS_RNN_INLINE void ForwardTile(const RnnForwardArgs<T>& a, const rnn_internal::ForwardLayout& L,
                                int64_t b0, int64_t b1) {
  const RnnShape& s = a.shape;
  const int64_t T_ = s.steps, H = s.hidden, G = RnnGates(s.cell), GH = G * H;
  const int64_t S = RnnSavedPerUnit(s.cell) * H;
  const int64_t rows = b1 - b0;
  T* gx_all = At<T>(a.workspace, L.gx);
  const T* wt = At<T>(a.workspace, L.wt);
  // The tile's input projection for all its steps ([rows*T x I]·W_ihᵀ; b_ih is added in the
  // gate loop), computed here so that it is still in cache when the steps read it.
  if (s.input > 0) {
    SmallMatMul<T>(rows * T_, s.input, GH, a.x + b0 * T_ * s.input, s.input, 1,
                   At<T>(a.workspace, L.wit), nullptr, false, gx_all + b0 * T_ * GH, GH);
  } else {
    std::fill(gx_all + b0 * T_ * GH, gx_all + b1 * T_ * GH, T(0));
  }
  T* gh = At<T>(a.workspace, L.gh) + b0 * GH;
  T* h = At<T>(a.workspace, L.h) + b0 * H;
  T* c = s.cell == RnnCell::kLstm ? At<T>(a.workspace, L.c) + b0 * H : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    IPS_RNN_IVDEP
    for (int64_t u = 0; u < H; ++u) {
      h[r * H + u] = a.h0 != nullptr ? a.h0[(b0 + r) * H + u] : T(0);
      if (c != nullptr) c[r * H + u] = a.c0 != nullptr ? a.c0[(b0 + r) * H + u] : T(0);
    }
  }
  int32_t max_len = 0;
  for (int64_t b = b0; b < b1; ++b) max_len = std::max(max_len, a.lengths[b]);
  const T* bi = a.b_ih;
  for (int64_t t = 0; t < T_; ++t) {
    if (t < max_len) SmallMatMul<T>(rows, H, GH, h, H, 1, wt, a.b_hh, false, gh, GH);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = b0 + r, bt = b * T_ + t;
      T* __restrict out = a.states + bt * H;
      if (t >= a.lengths[b]) {
        for (int64_t u = 0; u < H; ++u) out[u] = T(0);
        continue;
      }
      const T* __restrict gx = gx_all + bt * GH;
      const T* __restrict ghr = gh + r * GH;
      T* __restrict hr = h + r * H;
      T* __restrict sv = a.reserve + bt * S;
      switch (s.cell) {
        case RnnCell::kGru:
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T rg = Sigmoid<T>(gx[u] + bi[u] + ghr[u]);
            const T z = Sigmoid<T>(gx[H + u] + bi[H + u] + ghr[H + u]);
            const T n = Tanh<T>(gx[2 * H + u] + bi[2 * H + u] + rg * ghr[2 * H + u]);
            const T hn = (T(1) - z) * n + z * hr[u];
            sv[u] = rg, sv[H + u] = z, sv[2 * H + u] = n, sv[3 * H + u] = ghr[2 * H + u];
            hr[u] = hn;
            out[u] = hn;
          }
          break;
        case RnnCell::kAugru: {
          const T att = a.att[bt];
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T rg = Sigmoid<T>(gx[u] + bi[u] + ghr[u]);
            const T sg = Sigmoid<T>(gx[H + u] + bi[H + u] + ghr[H + u]);
            const T n = Tanh<T>(gx[2 * H + u] + bi[2 * H + u] + rg * ghr[2 * H + u]);
            const T z = att * sg;
            const T hn = (T(1) - z) * hr[u] + z * n;
            sv[u] = rg, sv[H + u] = sg, sv[2 * H + u] = n, sv[3 * H + u] = ghr[2 * H + u];
            hr[u] = hn;
            out[u] = hn;
          }
          break;
        }
        case RnnCell::kLstm: {
          T* __restrict cr = c + r * H;
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T ig = Sigmoid<T>(gx[u] + bi[u] + ghr[u]);
            const T fg = Sigmoid<T>(gx[H + u] + bi[H + u] + ghr[H + u]);
            const T gg = Tanh<T>(gx[2 * H + u] + bi[2 * H + u] + ghr[2 * H + u]);
            const T og = Sigmoid<T>(gx[3 * H + u] + bi[3 * H + u] + ghr[3 * H + u]);
            const T cn = fg * cr[u] + ig * gg;
            const T hn = og * Tanh<T>(cn);
            sv[u] = ig, sv[H + u] = fg, sv[2 * H + u] = gg, sv[3 * H + u] = og, sv[4 * H + u] = cn;
            cr[u] = cn;
            hr[u] = hn;
            out[u] = hn;
          }
          break;
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    IPS_RNN_IVDEP
    for (int64_t u = 0; u < H; ++u) {
      a.final_h[(b0 + r) * H + u] = h[r * H + u];
      if (c != nullptr) a.final_c[(b0 + r) * H + u] = c[r * H + u];
    }
  }
}

template <typename T>
void ForwardTileBaseline(const RnnForwardArgs<T>& a, const rnn_internal::ForwardLayout& L,
                         int64_t b0, int64_t b1) {
  ForwardTile(a, L, b0, b1);
}
#ifdef IPS_RNN_HAVE_AVX2_CLONE
__attribute__((target("avx2,fma"))) void ForwardTileAvx2(const RnnForwardArgs<float>& a,
                                                         const rnn_internal::ForwardLayout& L,
                                                         int64_t b0, int64_t b1) {
  ForwardTile(a, L, b0, b1);
}
#endif

bool CpuHasAvx2() {
#ifdef IPS_RNN_HAVE_AVX2_CLONE
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

template <typename T>
void RunForwardTile(const RnnForwardArgs<T>& a, const rnn_internal::ForwardLayout& L, int64_t b0,
                    int64_t b1) {
#ifdef IPS_RNN_HAVE_AVX2_CLONE
  if constexpr (std::is_same_v<T, float>) {
    if (CpuHasAvx2()) return ForwardTileAvx2(a, L, b0, b1);
  }
#endif
  ForwardTileBaseline(a, L, b0, b1);
}

template <typename T>
Status ForwardCpu(const Context& ctx, const RnnForwardArgs<T>& a) {
  const RnnShape& s = a.shape;
  const int64_t B = s.batch, T_ = s.steps, I = s.input, H = s.hidden;
  const int64_t GH = RnnGates(s.cell) * H;
  if (B == 0 || H == 0) return Status::Ok();
  IPS_RETURN_IF_ERROR(CheckLengths("RnnForward", a.lengths, B, T_));
  const rnn_internal::ForwardLayout L(s, sizeof(T));
  if (T_ == 0 || a.workspace == nullptr) {  // nothing to run: the final state is the initial one
    for (int64_t i = 0; i < B * H; ++i) {
      a.final_h[i] = a.h0 != nullptr ? a.h0[i] : T(0);
      if (s.cell == RnnCell::kLstm) a.final_c[i] = a.c0 != nullptr ? a.c0[i] : T(0);
    }
    return Status::Ok();
  }
  // Transposed weights [in x GH], so that the products stream contiguous rows of them.
  T* wt = At<T>(a.workspace, L.wt);
  for (int64_t j = 0; j < GH; ++j)
    for (int64_t k = 0; k < H; ++k) wt[k * GH + j] = a.w_hh[j * H + k];
  T* wit = At<T>(a.workspace, L.wit);
  for (int64_t j = 0; j < GH; ++j)
    for (int64_t k = 0; k < I; ++k) wit[k * GH + j] = a.w_ih[j * I + k];
  ParallelRows<T>(ctx, B, [&](int64_t begin, int64_t end) {
    for (int64_t b0 = begin; b0 < end; b0 += kTileRows)
      RunForwardTile(a, L, b0, std::min(end, b0 + kTileRows));
  });
  return Status::Ok();
}

// --- Backward ----------------------------------------------------------------------------------
template <typename T>
IPS_RNN_INLINE void BackwardTile(const RnnBackwardArgs<T>& a, const rnn_internal::BackwardLayout& L,
                                 int64_t b0, int64_t b1, T* part) {
  const RnnShape& s = a.shape;
  const int64_t T_ = s.steps, H = s.hidden, G = RnnGates(s.cell), GH = G * H;
  const int64_t S = RnnSavedPerUnit(s.cell) * H;
  const int64_t rows = b1 - b0;
  const bool lstm = s.cell == RnnCell::kLstm;
  T* dgx_all = At<T>(a.workspace, L.dgx);
  T* dgh_all = At<T>(a.workspace, L.dgh);
  T* hprev_all = At<T>(a.workspace, L.hprev);
  T* dh = At<T>(a.workspace, L.dh) + b0 * H;
  T* dc = lstm ? At<T>(a.workspace, L.dc) + b0 * H : nullptr;
  for (int64_t i = 0; i < rows * H; ++i) {
    dh[i] = a.d_final_h != nullptr ? a.d_final_h[b0 * H + i] : T(0);
    if (lstm) dc[i] = a.d_final_c != nullptr ? a.d_final_c[b0 * H + i] : T(0);
  }
  int32_t max_len = 0;
  for (int64_t b = b0; b < b1; ++b) max_len = std::max(max_len, a.lengths[b]);
  for (int64_t t = T_ - 1; t >= 0; --t) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = b0 + r, bt = b * T_ + t;
      T* __restrict dgx = dgx_all + bt * GH;
      T* __restrict dgh = dgh_all + bt * GH;
      T* __restrict hp_out = hprev_all + bt * H;
      if (t >= a.lengths[b]) {  // carried state: gradients pass through, gates see nothing
        for (int64_t j = 0; j < GH; ++j) dgx[j] = T(0);
        if (!lstm)
          for (int64_t j = 0; j < GH; ++j) dgh[j] = T(0);
        for (int64_t u = 0; u < H; ++u) hp_out[u] = T(0);
        if (s.cell == RnnCell::kAugru) a.d_att[bt] = T(0);
        continue;
      }
      const T* hp = t > 0 ? a.states + (bt - 1) * H : (a.h0 != nullptr ? a.h0 + b * H : nullptr);
      const T* __restrict sv = a.reserve + bt * S;
      const T* __restrict ds = a.d_states != nullptr ? a.d_states + bt * H : nullptr;
      T* __restrict dhr = dh + r * H;
      // Branch-free inner loops (so they vectorise): optional inputs are folded in first.
      if (hp != nullptr) {
        for (int64_t u = 0; u < H; ++u) hp_out[u] = hp[u];
      } else {
        for (int64_t u = 0; u < H; ++u) hp_out[u] = T(0);
      }
      if (ds != nullptr)
        for (int64_t u = 0; u < H; ++u) dhr[u] += ds[u];  // dhr = total dL/dh_t
      switch (s.cell) {
        case RnnCell::kGru:
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T dht = dhr[u];
            const T rg = sv[u], z = sv[H + u], n = sv[2 * H + u], ghn = sv[3 * H + u];
            const T dnp = dht * (T(1) - z) * (T(1) - n * n);
            const T dzp = dht * (hp_out[u] - n) * z * (T(1) - z);
            const T drp = dnp * ghn * rg * (T(1) - rg);
            dgx[u] = drp, dgx[H + u] = dzp, dgx[2 * H + u] = dnp;
            dgh[u] = drp, dgh[H + u] = dzp, dgh[2 * H + u] = dnp * rg;
            dhr[u] = dht * z;
          }
          break;
        case RnnCell::kAugru: {
          const T att = a.att[bt];
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T dht = dhr[u];
            const T rg = sv[u], sg = sv[H + u], n = sv[2 * H + u], ghn = sv[3 * H + u];
            const T z = att * sg;
            const T dz = dht * (n - hp_out[u]);
            const T dnp = dht * z * (T(1) - n * n);
            const T dsp = dz * att * sg * (T(1) - sg);
            const T drp = dnp * ghn * rg * (T(1) - rg);
            dgx[u] = drp, dgx[H + u] = dsp, dgx[2 * H + u] = dnp;
            dgh[u] = drp, dgh[H + u] = dz * sg, dgh[2 * H + u] = dnp * rg;  // dgh_z: see below
            dhr[u] = dht * (T(1) - z);
          }
          // d_att = Σ_u dz·s, parked in dgh's z slot so that the loop above has no reduction
          // (which the compiler may not reorder, so would not vectorise).
          T da = 0;
          for (int64_t u = 0; u < H; ++u) da += dgh[H + u];
          for (int64_t u = 0; u < H; ++u) dgh[H + u] = dgx[H + u];
          a.d_att[bt] = da;
          break;
        }
        case RnnCell::kLstm: {
          // c_{t-1} is parked in dgx's f slot, which the loop reads before overwriting.
          const T* cp =
              t > 0 ? a.reserve + (bt - 1) * S + 4 * H : (a.c0 != nullptr ? a.c0 + b * H : nullptr);
          if (cp != nullptr) {
            for (int64_t u = 0; u < H; ++u) dgx[H + u] = cp[u];
          } else {
            for (int64_t u = 0; u < H; ++u) dgx[H + u] = T(0);
          }
          T* __restrict dcr = dc + r * H;
          IPS_RNN_IVDEP
          for (int64_t u = 0; u < H; ++u) {
            const T dht = dhr[u];
            const T ig = sv[u], fg = sv[H + u], gg = sv[2 * H + u], og = sv[3 * H + u];
            const T tc = Tanh<T>(sv[4 * H + u]);
            const T cprev = dgx[H + u];
            const T dct = dcr[u] + dht * og * (T(1) - tc * tc);
            dgx[u] = dct * gg * ig * (T(1) - ig);
            dgx[H + u] = dct * cprev * fg * (T(1) - fg);
            dgx[2 * H + u] = dct * ig * (T(1) - gg * gg);
            dgx[3 * H + u] = dht * tc * og * (T(1) - og);
            dcr[u] = dct * fg;
            dhr[u] = T(0);
          }
          break;
        }
      }
    }
    // dh_{t-1} += dgh_t · W_hh for the tile (rows already past their length add zeros).
    if (t < max_len)
      SmallMatMul<T>(rows, GH, H, dgh_all + (b0 * T_ + t) * GH, T_ * GH, 1, a.w_hh, nullptr, true,
                     dh, H);
  }
  // The tile's share of d_x, and of the weight and bias gradients (summed into this part's
  // partials while the tile's gate gradients are still in cache).
  const int64_t I = s.input, n = rows * T_;
  const T* dgx = dgx_all + b0 * T_ * GH;
  const T* dgh = dgh_all + b0 * T_ * GH;
  if (I > 0) {
    SmallMatMul<T>(n, GH, I, dgx, GH, 1, a.w_ih, nullptr, false, a.d_x + b0 * T_ * I, I);
    SmallMatMul<T>(GH, n, I, dgx, 1, GH, a.x + b0 * T_ * I, nullptr, true, part, I);
  }
  SmallMatMul<T>(GH, n, H, dgh, 1, GH, hprev_all + b0 * T_ * H, nullptr, true, part + GH * I, H);
  T* __restrict db_ih = part + GH * (I + H);
  T* __restrict db_hh = db_ih + GH;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < GH; ++j) db_ih[j] += dgx[i * GH + j];
    for (int64_t j = 0; j < GH; ++j) db_hh[j] += dgh[i * GH + j];
  }
  if (a.d_h0 != nullptr)
    for (int64_t i = 0; i < rows * H; ++i) a.d_h0[b0 * H + i] = dh[i];
  if (lstm && a.d_c0 != nullptr)
    for (int64_t i = 0; i < rows * H; ++i) a.d_c0[b0 * H + i] = dc[i];
}

template <typename T>
void BackwardTileBaseline(const RnnBackwardArgs<T>& a, const rnn_internal::BackwardLayout& L,
                          int64_t b0, int64_t b1, T* part) {
  BackwardTile(a, L, b0, b1, part);
}
#ifdef IPS_RNN_HAVE_AVX2_CLONE
__attribute__((target("avx2,fma"))) void BackwardTileAvx2(const RnnBackwardArgs<float>& a,
                                                          const rnn_internal::BackwardLayout& L,
                                                          int64_t b0, int64_t b1, float* part) {
  BackwardTile(a, L, b0, b1, part);
}
#endif

template <typename T>
void RunBackwardTile(const RnnBackwardArgs<T>& a, const rnn_internal::BackwardLayout& L, int64_t b0,
                     int64_t b1, T* part) {
#ifdef IPS_RNN_HAVE_AVX2_CLONE
  if constexpr (std::is_same_v<T, float>) {
    if (CpuHasAvx2()) return BackwardTileAvx2(a, L, b0, b1, part);
  }
#endif
  BackwardTileBaseline(a, L, b0, b1, part);
}

template <typename T>
Status BackwardCpu(const Context& ctx, const RnnBackwardArgs<T>& a) {
  const RnnShape& s = a.shape;
  const int64_t B = s.batch, T_ = s.steps, I = s.input, H = s.hidden;
  const int64_t GH = RnnGates(s.cell) * H;
  if (H == 0) return Status::Ok();
  if (B > 0) IPS_RETURN_IF_ERROR(CheckLengths("RnnBackward", a.lengths, B, T_));
  if (B == 0 || T_ == 0) {  // no step ran: weights get zero gradient, h0 gets d_final
    std::fill(a.d_w_ih, a.d_w_ih + GH * I, T(0));
    std::fill(a.d_w_hh, a.d_w_hh + GH * H, T(0));
    std::fill(a.d_b_ih, a.d_b_ih + GH, T(0));
    std::fill(a.d_b_hh, a.d_b_hh + GH, T(0));
    for (int64_t i = 0; i < B * H; ++i) {
      if (a.d_h0 != nullptr) a.d_h0[i] = a.d_final_h != nullptr ? a.d_final_h[i] : T(0);
      if (s.cell == RnnCell::kLstm && a.d_c0 != nullptr)
        a.d_c0[i] = a.d_final_c != nullptr ? a.d_final_c[i] : T(0);
    }
    return Status::Ok();
  }
  const rnn_internal::BackwardLayout L(s, sizeof(T));
  // Rows are split into `parts` contiguous ranges, one per pool thread; each part sums its weight
  // and bias gradients into its own partials, which are added up here in a fixed order (the
  // result does not depend on thread timing).
  const int64_t threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>({threads, static_cast<int64_t>(L.kMaxParts), B}));
  T* partials = At<T>(a.workspace, L.partials);
  const int64_t pe = static_cast<int64_t>(L.part_elems);
  std::fill(partials, partials + parts * pe, T(0));
  auto run_part = [&](int64_t p) {
    const int64_t begin = p * B / parts, end = (p + 1) * B / parts;
    for (int64_t b0 = begin; b0 < end; b0 += kTileRows)
      RunBackwardTile(a, L, b0, std::min(end, b0 + kTileRows), partials + p * pe);
  };
  if (ctx.pool != nullptr && parts > 1) {
    ctx.pool->ParallelFor(parts, 1, [&](int64_t pb, int64_t pe_) {
      for (int64_t p = pb; p < pe_; ++p) run_part(p);
    });
  } else {
    run_part(0);
  }
  T* sums[4] = {a.d_w_ih, a.d_w_hh, a.d_b_ih, a.d_b_hh};
  const int64_t sizes[4] = {GH * I, GH * H, GH, GH};
  int64_t off = 0;
  for (int q = 0; q < 4; ++q) {
    for (int64_t i = 0; i < sizes[q]; ++i) {
      T v = 0;
      for (int64_t p = 0; p < parts; ++p) v += partials[p * pe + off + i];
      sums[q][i] = v;
    }
    off += sizes[q];
  }
  return Status::Ok();
}

// --- Reference ---------------------------------------------------------------------------------
template <typename T>
void ReferenceForward(const RnnForwardArgs<T>& a) {
  const RnnShape& s = a.shape;
  const int64_t T_ = s.steps, I = s.input, H = s.hidden, G = RnnGates(s.cell);
  std::vector<T> h(H), c(H), hn(H), cn(H), pre(G * H), preh(G * H);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t u = 0; u < H; ++u) {
      h[u] = a.h0 != nullptr ? a.h0[b * H + u] : T(0);
      c[u] = a.c0 != nullptr ? a.c0[b * H + u] : T(0);
    }
    for (int64_t t = 0; t < T_; ++t) {
      const int64_t bt = b * T_ + t;
      if (t >= a.lengths[b]) {
        for (int64_t u = 0; u < H; ++u) a.states[bt * H + u] = T(0);
        continue;
      }
      for (int64_t j = 0; j < G * H; ++j) {
        T sx = a.b_ih[j], sh = a.b_hh[j];
        for (int64_t k = 0; k < I; ++k) sx += a.w_ih[j * I + k] * a.x[bt * I + k];
        for (int64_t k = 0; k < H; ++k) sh += a.w_hh[j * H + k] * h[k];
        pre[j] = sx;
        preh[j] = sh;
      }
      for (int64_t u = 0; u < H; ++u) {
        if (s.cell == RnnCell::kLstm) {
          const T ig = RefSigmoid(pre[u] + preh[u]);
          const T fg = RefSigmoid(pre[H + u] + preh[H + u]);
          const T gg = std::tanh(pre[2 * H + u] + preh[2 * H + u]);
          const T og = RefSigmoid(pre[3 * H + u] + preh[3 * H + u]);
          cn[u] = fg * c[u] + ig * gg;
          hn[u] = og * std::tanh(cn[u]);
        } else {
          const T rg = RefSigmoid(pre[u] + preh[u]);
          const T zs = RefSigmoid(pre[H + u] + preh[H + u]);
          const T n = std::tanh(pre[2 * H + u] + rg * preh[2 * H + u]);
          if (s.cell == RnnCell::kGru) {
            hn[u] = (T(1) - zs) * n + zs * h[u];
          } else {
            const T z = a.att[bt] * zs;
            hn[u] = (T(1) - z) * h[u] + z * n;
          }
        }
      }
      h = hn;
      c = cn;
      for (int64_t u = 0; u < H; ++u) a.states[bt * H + u] = h[u];
    }
    for (int64_t u = 0; u < H; ++u) {
      a.final_h[b * H + u] = h[u];
      if (s.cell == RnnCell::kLstm) a.final_c[b * H + u] = c[u];
    }
  }
}

}  // namespace

int RnnGates(RnnCell cell) { return cell == RnnCell::kLstm ? 4 : 3; }
int RnnSavedPerUnit(RnnCell cell) { return cell == RnnCell::kLstm ? 5 : 4; }

template <typename T>
size_t RnnReserveBytes(const RnnShape& s) {
  return static_cast<size_t>(std::max<int64_t>(0, s.batch * s.steps * s.hidden)) *
         RnnSavedPerUnit(s.cell) * sizeof(T);
}

template <typename T>
size_t RnnForwardWorkspaceBytes(const RnnShape& s) {
  if (s.batch < 0 || s.steps < 0 || s.hidden < 0) return 0;
  return rnn_internal::ForwardLayout(s, sizeof(T)).total;
}

template <typename T>
size_t RnnBackwardWorkspaceBytes(const RnnShape& s) {
  if (s.batch < 0 || s.steps < 0 || s.hidden < 0) return 0;
  return rnn_internal::BackwardLayout(s, sizeof(T)).total;
}

template <typename T>
Status RnnForward(const Context& ctx, const RnnForwardArgs<T>& args) {
  IPS_RETURN_IF_ERROR(ValidateForward("RnnForward", args, /*need_buffers=*/true));
  if (ctx.device == Device::kCpu) return ForwardCpu(ctx, args);
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return RnnForwardCuda(ctx, args);
  } else {
    return UnimplementedError("RnnForward: double is CPU-only");
  }
#else
  return UnimplementedError("RnnForward: this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

template <typename T>
Status RnnBackward(const Context& ctx, const RnnBackwardArgs<T>& args) {
  IPS_RETURN_IF_ERROR(ValidateBackward("RnnBackward", args));
  if (ctx.device == Device::kCpu) return BackwardCpu(ctx, args);
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return RnnBackwardCuda(ctx, args);
  } else {
    return UnimplementedError("RnnBackward: double is CPU-only");
  }
#else
  return UnimplementedError("RnnBackward: this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

template <typename T>
Status RnnForwardReference(const RnnForwardArgs<T>& args) {
  IPS_RETURN_IF_ERROR(ValidateForward("RnnForwardReference", args, /*need_buffers=*/false));
  if (args.shape.batch > 0)
    IPS_RETURN_IF_ERROR(
        CheckLengths("RnnForwardReference", args.lengths, args.shape.batch, args.shape.steps));
  ReferenceForward(args);
  return Status::Ok();
}

#define IPS_INSTANTIATE_RNN(T)                                               \
  template size_t RnnReserveBytes<T>(const RnnShape&);                       \
  template size_t RnnForwardWorkspaceBytes<T>(const RnnShape&);              \
  template size_t RnnBackwardWorkspaceBytes<T>(const RnnShape&);             \
  template Status RnnForward<T>(const Context&, const RnnForwardArgs<T>&);   \
  template Status RnnBackward<T>(const Context&, const RnnBackwardArgs<T>&); \
  template Status RnnForwardReference<T>(const RnnForwardArgs<T>&);
IPS_INSTANTIATE_RNN(float)
IPS_INSTANTIATE_RNN(double)
#undef IPS_INSTANTIATE_RNN

}  // namespace ips::kernels
