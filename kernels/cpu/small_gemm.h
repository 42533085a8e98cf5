// SmallGemm: C = A * B (+ C) for the skinny, cache-resident products of the CPU attention
// kernels (rows of 36..144 inputs times 40..80 outputs, or the transposed reductions that give
// their weight gradients), single-threaded, so that callers can run one per thread-pool chunk
// while the chunk's activations are still in cache.
//
// Why not GemmCpu: OpenBLAS 0.3.21 picks its kernels by CPU model and on CPUs it does not
// recognise (the project's VMs report a generic model) falls back to SSE3 "Prescott" kernels,
// packs both operands on every call (a large cost at these sizes) and runs its own spinning
// threads beside our pool. The micro-kernels here
// are compiled per ISA (AVX-512F, AVX2+FMA, portable C++) in separate files and picked once at
// run time from the CPU's features, so the speed does not depend on the BLAS's detection.
//
// Operands: A(i, p) = a[i * a_row + p * a_col] (any strides, so A may be a transposed view), B
// row-major with contiguous columns: B(p, j) = b[p * ldb + j]; C row-major with ldc. Sums run
// over p in order for every element (one FMA chain per element on the SIMD paths), so the result
// is the same for any thread split of the caller's.
// accumulate = false: C is written without being read (it may hold NaN); true: C += A * B.
// float: SIMD dispatch; double: the portable loop (gradient checks, references).
// Thread safety: reentrant. Never allocates.
#ifndef IPS_KERNELS_CPU_SMALL_GEMM_H_
#define IPS_KERNELS_CPU_SMALL_GEMM_H_

#include <cstdint>

namespace ips::kernels::cpu {

template <typename T>
struct SmallGemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t a_row = 0, a_col = 1;
  const T* b = nullptr;
  int64_t ldb = 0;
  T* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};

// The instruction set a float SmallGemm uses, best first.
enum class SmallGemmIsa { kAvx512, kAvx2, kPortable };

// C = A B (accumulate = false) or C += A B. Sizes must be >= 0 (k = 0 writes zeros or leaves C).
template <typename T>
void SmallGemm(const SmallGemmArgs<T>& g);

// SmallGemmArgs in one expression (as MakeGemmArgs in kernels/gemm.h).
template <typename T>
SmallGemmArgs<T> MakeSmallGemmArgs(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_row,
                                   int64_t a_col, const T* b, int64_t ldb, T* c, int64_t ldc,
                                   bool accumulate = false) {
  SmallGemmArgs<T> g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.a_row = a_row;
  g.a_col = a_col;
  g.b = b;
  g.ldb = ldb;
  g.c = c;
  g.ldc = ldc;
  g.accumulate = accumulate;
  return g;
}

// SmallGemm(MakeSmallGemmArgs(...)): the one-line products of the CPU kernels' blocked loops.
template <typename T>
inline void SmallMm(int64_t m, int64_t n, int64_t k, const T* a, int64_t a_row, int64_t a_col,
                    const T* b, int64_t ldb, T* c, int64_t ldc, bool accumulate = false) {
  SmallGemm(MakeSmallGemmArgs(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate));
}

// The ISA SmallGemm<float> picked for this CPU (IPS_SMALL_GEMM=portable|avx2|avx512 in the
// environment caps it, for A/B runs), and its name for benchmark labels.
SmallGemmIsa SmallGemmSelectedIsa();
const char* SmallGemmIsaName(SmallGemmIsa isa);

// Runs SmallGemm<float> with the given ISA; returns false (and does nothing) when this build or
// CPU lacks it. For parity tests of every compiled path.
bool SmallGemmWithIsa(SmallGemmIsa isa, const SmallGemmArgs<float>& g);

}  // namespace ips::kernels::cpu

#endif  // IPS_KERNELS_CPU_SMALL_GEMM_H_
