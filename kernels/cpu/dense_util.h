// Private helpers of the dense-group CPU files (activation, norm, softmax, loss, capsule, linear):
// argument checks, row-parallel loops over ctx.pool, and the CUDA dispatch fallback.
#ifndef IPS_KERNELS_CPU_DENSE_UTIL_H_
#define IPS_KERNELS_CPU_DENSE_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/context.h"

#ifdef IPS_WITH_CUDA
#include <type_traits>

#include "kernels/cuda/dense_cuda.h"
// In an op templated on T: returns the CUDA launcher's Status when T is float.
#define IPS_DENSE_CUDA_DISPATCH(T, call) \
  if constexpr (std::is_same_v<T, float>) return (call)
#else
#define IPS_DENSE_CUDA_DISPATCH(T, call) \
  do {                                   \
  } while (0)
#endif

namespace ips::kernels::dense_internal {

// fn(begin, end) over [0, n): on ctx.pool in chunks of at least min_chunk, or inline.
inline void ParallelRows(const Context& ctx, int64_t n, int64_t min_chunk,
                         const std::function<void(int64_t, int64_t)>& fn) {
  ParallelFor(ctx.pool, n, min_chunk, fn);
}

// Rows per chunk so that a chunk carries at least ~16k elements of work.
inline int64_t MinRows(int64_t cols) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols));
}

inline Status NonNegative(const char* op, int64_t a, int64_t b = 0, int64_t c = 0) {
  if (a < 0 || b < 0 || c < 0) return InvalidArgumentError(std::string(op) + ": negative size");
  return Status::Ok();
}

// INVALID_ARGUMENT naming the op and the field when a required pointer is null.
inline Status Required(const char* op, const char* field, const void* p) {
  if (p == nullptr) return InvalidArgumentError(std::string(op) + ": " + field + " is null");
  return Status::Ok();
}

// The error for a device the op cannot run on in this build.
inline Status NoCuda(const char* op, bool is_float) {
#ifdef IPS_WITH_CUDA
  if (!is_float) return UnimplementedError(std::string(op) + ": double is CPU-only");
  return InternalError(std::string(op) + ": unreachable CUDA dispatch");
#else
  return UnimplementedError(std::string(op) +
                            ": this build has no CUDA (configure with IPS_CUDA=ON)");
#endif
}

}  // namespace ips::kernels::dense_internal

#endif  // IPS_KERNELS_CPU_DENSE_UTIL_H_
