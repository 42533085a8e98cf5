// General matrix multiply, row-major: C = alpha * op(A) * op(B) + beta * C, where op(X) is X or
// its transpose. CPU: OpenBLAS's cblas_?gemm when the build found a BLAS, a blocked loop of ours
// otherwise (float and double). CUDA: cuBLAS (float only), on ctx.stream.
#ifndef IPS_KERNELS_GEMM_H_
#define IPS_KERNELS_GEMM_H_

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

template <typename T>
struct GemmArgs {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;  // op(A) is m x k, op(B) is k x n, C is m x n
  T alpha = 1;
  const T* a = nullptr;
  int64_t lda = 0;  // row stride of A as stored (k if !trans_a, m if trans_a, for dense storage)
  const T* b = nullptr;
  int64_t ldb = 0;
  T beta = 0;  // beta == 0: C is written without being read (may hold garbage/NaN)
  T* c = nullptr;
  int64_t ldc = 0;
};

// GemmArgs in one expression: MakeGemmArgs(ta, tb, m, n, k, a, lda, b, ldb, c, ldc[, beta]).
template <typename T>
GemmArgs<T> MakeGemmArgs(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                         int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, T beta = 0) {
  GemmArgs<T> g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = lda;
  g.b = b;
  g.ldb = ldb;
  g.c = c;
  g.ldc = ldc;
  g.beta = beta;
  return g;
}

// Returns INVALID_ARGUMENT on negative sizes or too-small leading dimensions, UNIMPLEMENTED for
// CUDA in a build without it (or for double on CUDA).
template <typename T>
Status Gemm(const Context& ctx, const GemmArgs<T>& args);

// The CPU implementation, callable directly by other CPU kernels (no dispatch, no checks).
template <typename T>
void GemmCpu(const GemmArgs<T>& args);

// Whether the CPU path uses an external BLAS (for benchmark labels).
bool GemmCpuUsesBlas();

}  // namespace ips::kernels

#endif  // IPS_KERNELS_GEMM_H_
