// SmallGemm (kernels/cpu/small_gemm.h): the portable loop (double, and float where no SIMD path
// is built or supported) and the run-time choice between the per-ISA float kernels.
#include "kernels/cpu/small_gemm.h"

#include <cstdlib>
#include <cstring>

namespace ips::kernels::cpu {

// Defined in small_gemm_avx512.cc / small_gemm_avx2.cc (stubs when built without the flags).
bool SmallGemmAvx512Built();
void SmallGemmAvx512(const SmallGemmArgs<float>& g);
bool SmallGemmAvx2Built();
void SmallGemmAvx2(const SmallGemmArgs<float>& g);

namespace {

// Row i of C as one axpy per p, so the inner loop streams contiguous rows of B and C.
template <typename T>
void Portable(const SmallGemmArgs<T>& g) {
  for (int64_t i = 0; i < g.m; ++i) {
    T* __restrict c = g.c + i * g.ldc;
    if (!g.accumulate)
      for (int64_t j = 0; j < g.n; ++j) c[j] = T(0);
    const T* a = g.a + i * g.a_row;
    for (int64_t p = 0; p < g.k; ++p) {
      const T aip = a[p * g.a_col];
      const T* __restrict b = g.b + p * g.ldb;
      for (int64_t j = 0; j < g.n; ++j) c[j] += aip * b[j];
    }
  }
}

bool CpuHas(SmallGemmIsa isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  switch (isa) {
    case SmallGemmIsa::kAvx512:
      return SmallGemmAvx512Built() && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("fma");
    case SmallGemmIsa::kAvx2:
      return SmallGemmAvx2Built() && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
    case SmallGemmIsa::kPortable:
      return true;
  }
  return false;
#else
  return isa == SmallGemmIsa::kPortable;
#endif
}

SmallGemmIsa Select() {
  // The environment can only lower the choice (A/B timing against the portable loop).
  const char* cap = std::getenv("IPS_SMALL_GEMM");
  const bool allow512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
  const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
  if (allow512 && CpuHas(SmallGemmIsa::kAvx512)) return SmallGemmIsa::kAvx512;
  if (allow2 && CpuHas(SmallGemmIsa::kAvx2)) return SmallGemmIsa::kAvx2;
  return SmallGemmIsa::kPortable;
}

void RunFloat(SmallGemmIsa isa, const SmallGemmArgs<float>& g) {
  switch (isa) {
    case SmallGemmIsa::kAvx512:
      SmallGemmAvx512(g);
      return;
    case SmallGemmIsa::kAvx2:
      SmallGemmAvx2(g);
      return;
    case SmallGemmIsa::kPortable:
      Portable(g);
      return;
  }
}

}  // namespace

SmallGemmIsa SmallGemmSelectedIsa() {
  static const SmallGemmIsa isa = Select();  // thread-safe static init, once per process
  return isa;
}

const char* SmallGemmIsaName(SmallGemmIsa isa) {
  switch (isa) {
    case SmallGemmIsa::kAvx512:
      return "avx512";
    case SmallGemmIsa::kAvx2:
      return "avx2";
    case SmallGemmIsa::kPortable:
      return "portable";
  }
  return "?";
}

bool SmallGemmWithIsa(SmallGemmIsa isa, const SmallGemmArgs<float>& g) {
  if (!CpuHas(isa)) return false;
  if (g.m > 0 && g.n > 0) RunFloat(isa, g);
  return true;
}

template <>
void SmallGemm<float>(const SmallGemmArgs<float>& g) {
  if (g.m <= 0 || g.n <= 0) return;
  RunFloat(SmallGemmSelectedIsa(), g);
}

template <>
void SmallGemm<double>(const SmallGemmArgs<double>& g) {
  if (g.m <= 0 || g.n <= 0) return;
  Portable(g);
}

}  // namespace ips::kernels::cpu
