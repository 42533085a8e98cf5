#include <cublas_v2.h>

#include <mutex>
#include <unordered_map>

#include "common/cuda_check.h"
#include "kernels/cuda/gemm_cuda.h"

namespace ips::kernels {
namespace {

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
