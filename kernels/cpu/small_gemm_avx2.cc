// SmallGemm<float> with AVX2 + FMA (kernels/cpu/small_gemm.h). This file is compiled with
// -mavx2 -mfma where the compiler supports it (kernels/attention.cmake) and is only called after
// a run-time CPU check; without the flags it defines a stub that reports "not built".
#include "kernels/cpu/small_gemm.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace ips::kernels::cpu {
namespace {

struct V {
  using R = __m256;
  using M = __m256i;
  static constexpr int kW = 8;
  static constexpr int kMaxNv = 3;
  // 16 ymm registers: MR * NV accumulators + NV B vectors + 1 broadcast.
  static constexpr int Mr(int nv) { return nv == 1 ? 8 : (nv == 2 ? 6 : 4); }
  static R Zero() { return _mm256_setzero_ps(); }
  static R Set1(const float* p) { return _mm256_broadcast_ss(p); }
  static R Load(const float* p) { return _mm256_loadu_ps(p); }
  static R LoadMask(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static R Fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R Add(R a, R b) { return _mm256_add_ps(a, b); }
  static void Store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static void StoreMask(float* p, R v, M m) { _mm256_maskstore_ps(p, m, v); }
  static M MakeMask(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

#include "kernels/cpu/small_gemm_tile.h"

}  // namespace

bool SmallGemmAvx2Built() { return true; }
void SmallGemmAvx2(const SmallGemmArgs<float>& g) { RunTiles(g); }

}  // namespace ips::kernels::cpu

#else

namespace ips::kernels::cpu {
bool SmallGemmAvx2Built() { return false; }
void SmallGemmAvx2(const SmallGemmArgs<float>&) {}
}  // namespace ips::kernels::cpu

#endif
