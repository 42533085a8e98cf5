#include "kernels/gemm.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "kernels/cuda/gemm_cuda.h"

namespace ips::kernels {
namespace {

template <typename T>
Status Validate(const GemmArgs<T>& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0) return InvalidArgumentError("Gemm: negative size");
  const int64_t a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_cols = g.trans_b ? g.k : g.n;
  if (g.lda < std::max<int64_t>(1, a_cols) || g.ldb < std::max<int64_t>(1, b_cols) ||
      g.ldc < std::max<int64_t>(1, g.n)) {
    return InvalidArgumentError("Gemm: leading dimension too small (lda=" + std::to_string(g.lda) +
                                " ldb=" + std::to_string(g.ldb) + " ldc=" + std::to_string(g.ldc) +
                                ")");
  }
  return Status::Ok();
}

}  // namespace

template <typename T>
Status Gemm(const Context& ctx, const GemmArgs<T>& args) {
  IPS_RETURN_IF_ERROR(Validate(args));
  if (ctx.device == Device::kCpu) {
    GemmCpu(args);
    return Status::Ok();
  }
#ifdef IPS_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    return GemmCuda(ctx, args);
  } else {
    return UnimplementedError("Gemm: double is CPU-only");
  }
#else
  return UnimplementedError("Gemm: this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

template Status Gemm<float>(const Context&, const GemmArgs<float>&);
template Status Gemm<double>(const Context&, const GemmArgs<double>&);

}  // namespace ips::kernels
