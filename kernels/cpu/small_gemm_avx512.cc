// SmallGemm<float> with AVX-512F (kernels/cpu/small_gemm.h). This file is compiled with
// -mavx512f -mfma where the compiler supports it (kernels/attention.cmake) and is only called
// after a run-time CPU check; without the flags it defines a stub that reports "not built".
#include "kernels/cpu/small_gemm.h"

#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

namespace ips::kernels::cpu {
namespace {

struct V {
  using R = __m512;
  using M = __mmask16;
  static constexpr int kW = 16;
  static constexpr int kMaxNv = 5;
  // 32 zmm registers: MR * NV accumulators + NV B vectors + 1 broadcast.
  static constexpr int Mr(int nv) { return nv <= 3 ? 8 : (nv == 4 ? 6 : 4); }
  static R Zero() { return _mm512_setzero_ps(); }
  static R Set1(const float* p) { return _mm512_set1_ps(*p); }
  static R Load(const float* p) { return _mm512_loadu_ps(p); }
  static R LoadMask(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static R Fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R Add(R a, R b) { return _mm512_add_ps(a, b); }
  static void Store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static void StoreMask(float* p, R v, M m) { _mm512_mask_storeu_ps(p, m, v); }
  static M MakeMask(int lanes) { return static_cast<M>((1u << lanes) - 1u); }
};

#include "kernels/cpu/small_gemm_tile.h"

}  // namespace

bool SmallGemmAvx512Built() { return true; }
void SmallGemmAvx512(const SmallGemmArgs<float>& g) { RunTiles(g); }

}  // namespace ips::kernels::cpu

#else

namespace ips::kernels::cpu {
bool SmallGemmAvx512Built() { return false; }
void SmallGemmAvx512(const SmallGemmArgs<float>&) {}
}  // namespace ips::kernels::cpu

#endif
