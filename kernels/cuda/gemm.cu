#include <cublas_v2.h>

#include <climits>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/cuda_check.h"
#include "kernels/cuda/gemm_cuda.h"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

// C[m x n] (row stride ldc) *= beta: the whole of a k = 0 product when beta != 0.
__global__ void ScaleMatrixKernel(int64_t m, int64_t n, int64_t ldc, float beta, float* c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n;
       i += int64_t{gridDim.x} * blockDim.x)
    c[(i / n) * ldc + i % n] *= beta;
}

// One cuBLAS handle per device, created on first use. Handles are not thread-safe for
// concurrent use with different streams, so the stream is set under the lock.
std::mutex g_handle_mu;

cublasHandle_t HandleForCurrentDevice() {
  static std::unordered_map<int, cublasHandle_t> handles;
  int dev = 0;
  cudaGetDevice(&dev);
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return nullptr;
  handles[dev] = h;
  return h;
}

}  // namespace

Status GemmCuda(const Context& ctx, const GemmArgs<float>& g) {
  if (g.m == 0 || g.n == 0) return Status::Ok();
  // cublasSgemm takes int sizes: a larger one would be truncated silently (2^32 + 5 rows become
  // 5), so refuse it instead.
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc}) {
    if (v > INT_MAX)
      return InvalidArgumentError("Gemm(CUDA): m=" + std::to_string(g.m) +
                                  " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) +
                                  " lda=" + std::to_string(g.lda) +
                                  " ldb=" + std::to_string(g.ldb) +
                                  " ldc=" + std::to_string(g.ldc) + ": cuBLAS sizes are int");
  }
  if (g.k == 0) {
    // An empty sum: C = beta C, and C = 0 (never read) for beta == 0, as BLAS defines it and as
    // the CPU path does. cuBLAS is not relied on for k == 0 (GPU BLAS libraries have returned
    // early there, leaving C unwritten); MindRoutingBackward's empty batch depends on the zeros.
    cudaStream_t stream = cuda::StreamOf(ctx);
    if (g.beta == 0.f) {
      IPS_CUDA_RETURN_IF_ERROR(cudaMemset2DAsync(g.c, static_cast<size_t>(g.ldc) * sizeof(float), 0,
                                                 static_cast<size_t>(g.n) * sizeof(float),
                                                 static_cast<size_t>(g.m), stream));
      return Status::Ok();
    }
    if (g.beta == 1.f) return Status::Ok();
    return cuda::Launch("gemm_scale_c", ScaleMatrixKernel, dim3(cuda::GridFor(g.m * g.n, 256)),
                        dim3(256), 0, stream, g.m, g.n, g.ldc, g.beta, g.c);
  }
  std::lock_guard<std::mutex> lock(g_handle_mu);
  cublasHandle_t h = HandleForCurrentDevice();
  if (h == nullptr) return UnavailableError("cublasCreate failed");
  IPS_CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, static_cast<cudaStream_t>(ctx.stream)));
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  IPS_CUBLAS_RETURN_IF_ERROR(cublasSgemm(h, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.n, g.m, g.k,
                                         &g.alpha, g.b, g.ldb, g.a, g.lda, &g.beta, g.c, g.ldc));
  return Status::Ok();
}

}  // namespace ips::kernels
