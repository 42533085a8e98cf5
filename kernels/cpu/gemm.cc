#include <algorithm>
#include <vector>

#include "kernels/gemm.h"

#ifdef IPS_HAVE_CBLAS
#include <cblas.h>
#endif

namespace ips::kernels {
namespace {

// Blocked fallback for builds without BLAS (the lent GPU machine). Packs op(B) so the inner loop
// streams contiguous memory and vectorises.
template <typename T>
void GemmFallback(const GemmArgs<T>& g) {
  const int64_t m = g.m, n = g.n, k = g.k;
  auto A = [&](int64_t i, int64_t p) { return g.trans_a ? g.a[p * g.lda + i] : g.a[i * g.lda + p]; };
  std::vector<T> bt(static_cast<size_t>(k * n));  // op(B) as k x n row-major
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j) bt[p * n + j] = g.trans_b ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j];
  std::vector<T> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < m; ++i) {
    std::fill(row.begin(), row.end(), T(0));
    for (int64_t p = 0; p < k; ++p) {
      const T aip = A(i, p);
      const T* brow = &bt[p * n];
      for (int64_t j = 0; j < n; ++j) row[j] += aip * brow[j];
    }
    T* c = g.c + i * g.ldc;
    if (g.beta == T(0)) {
      for (int64_t j = 0; j < n; ++j) c[j] = g.alpha * row[j];
    } else {
      for (int64_t j = 0; j < n; ++j) c[j] = g.alpha * row[j] + g.beta * c[j];
    }
  }
}

}  // namespace

bool GemmCpuUsesBlas() {
#ifdef IPS_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}

template <>
void GemmCpu<float>(const GemmArgs<float>& g) {
  if (g.m == 0 || g.n == 0) return;
#ifdef IPS_HAVE_CBLAS
  if (g.k == 0) {
    // BLAS treats beta == 0 as "C is not read" only in some implementations; be explicit.
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j)
        g.c[i * g.ldc + j] = g.beta == 0.f ? 0.f : g.beta * g.c[i * g.ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b,
              g.ldb, g.beta, g.c, g.ldc);
#else
  GemmFallback(g);
#endif
}

template <>
void GemmCpu<double>(const GemmArgs<double>& g) {
  if (g.m == 0 || g.n == 0) return;
#ifdef IPS_HAVE_CBLAS
  if (g.k == 0) {
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j)
        g.c[i * g.ldc + j] = g.beta == 0.0 ? 0.0 : g.beta * g.c[i * g.ldc + j];
    return;
  }
  cblas_dgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, g.alpha, g.a, g.lda, g.b,
              g.ldb, g.beta, g.c, g.ldc);
#else
  GemmFallback(g);
#endif
}

}  // namespace ips::kernels
