// CUDA kernels of kernels/embedding.h (float only).
//
// Layout of the row kernels: a "row group" of TPR = next_pow2(dim / V) threads (at most 32)
// handles one output row (a position, a bag or a contribution), each thread moving V floats
// at a time (V = 4, 2 or 1, the widest that divides dim and keeps the pointers aligned). This
// keeps each row's loads and stores coalesced without per-element 64-bit divisions; rows are
// walked with a grid-stride loop.
//
// Indices, lengths and offsets live on the device and are never read back: an out-of-range
// row index produces a zero row (forward) or is dropped (backward), and lengths are clamped to
// [0, max_len] (documented in embedding.h; the CPU path reports them instead).
//
// Backward kernels zero their output with cudaMemsetAsync and then atomicAdd each contribution
// (the summation order, hence the last bits, vary from run to run). Dedup is sort-based: a CUB
// radix sort of (key, position) pairs, head flags, an inclusive scan for the ids, one scatter.
#include <algorithm>
#include <cstdint>
#include <cub/cub.cuh>
#include <string>

// nvcc's front end flags the assignment in StatusOr's constructor (common/status.h) with a
// spurious "ignoring return value with nodiscard" (#2810); silence it for this file only.
#include "common/cuda_check.h"
#include "kernels/cuda/embedding_cuda.h"
#include "kernels/cuda/launch.cuh"

namespace ips::kernels {
namespace {

constexpr unsigned kThreads = 256;

template <int V>
struct VecOf;
template <>
struct VecOf<1> {
  using type = float;
};
template <>
struct VecOf<2> {
  using type = float2;
};
template <>
struct VecOf<4> {
  using type = float4;
};

__device__ __forceinline__ float Get(const float& v, int k) { return v; }
__device__ __forceinline__ float Get(const float2& v, int k) { return k == 0 ? v.x : v.y; }
__device__ __forceinline__ float Get(const float4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
__device__ __forceinline__ void Zero(float& v) { v = 0.f; }
__device__ __forceinline__ void Zero(float2& v) { v = make_float2(0.f, 0.f); }
__device__ __forceinline__ void Zero(float4& v) { v = make_float4(0.f, 0.f, 0.f, 0.f); }
__device__ __forceinline__ void Acc(float& a, const float& b) { a += b; }
__device__ __forceinline__ void Acc(float2& a, const float2& b) {
  a.x += b.x;
  a.y += b.y;
}
__device__ __forceinline__ void Acc(float4& a, const float4& b) {
  a.x += b.x;
  a.y += b.y;
  a.z += b.z;
  a.w += b.w;
}
__device__ __forceinline__ void Scale(float& a, float s) { a *= s; }
__device__ __forceinline__ void Scale(float2& a, float s) {
  a.x *= s;
  a.y *= s;
}
__device__ __forceinline__ void Scale(float4& a, float s) {
  a.x *= s;
  a.y *= s;
  a.z *= s;
  a.w *= s;
}

__device__ __forceinline__ bool InRange(int64_t r, int64_t rows) {
  return static_cast<uint64_t>(r) < static_cast<uint64_t>(rows);
}

__device__ __forceinline__ int64_t ClampLen(int64_t len, int64_t max_len) {
  return len < 0 ? 0 : (len > max_len ? max_len : len);
}

// Row-group geometry, fixed per launch.
struct Groups {
  int tpr;     // threads per row group (power of two <= 32)
  int64_t dv;  // vectors per row
};

template <int V>
Groups GroupsFor(int64_t dim) {
  Groups g;
  g.dv = dim / V;
  g.tpr = 1;
  while (g.tpr < 32 && g.tpr < g.dv) g.tpr <<= 1;
  return g;
}

inline unsigned GridForRows(int64_t rows, int tpr) {
  const int64_t groups_per_block = kThreads / tpr;
  return cuda::GridFor(rows, static_cast<unsigned>(groups_per_block));
}

// The widest vector width the dim and every row pointer's alignment allow.
int VecWidth(int64_t dim, std::initializer_list<const void*> ptrs) {
  auto aligned = [&](size_t bytes) {
    for (const void* p : ptrs)
      if (reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
    return true;
  };
  if (dim % 4 == 0 && aligned(16)) return 4;
  if (dim % 2 == 0 && aligned(8)) return 2;
  return 1;
}

// ---- Forward ------------------------------------------------------------------------------

// positions = batch * max_len (padded: lengths != nullptr) or nnz (jagged: lengths == nullptr).
template <int V>
__global__ void GatherKernel(const float* __restrict__ table, int64_t table_rows,
                             const int64_t* __restrict__ indices,
                             const int64_t* __restrict__ lengths, int64_t max_len,
                             int64_t positions, Groups g, float* __restrict__ out) {
  using Vec = typename VecOf<V>::type;
  const int lane = threadIdx.x % g.tpr;
  const int64_t groups_per_block = blockDim.x / g.tpr;
  const int64_t first = blockIdx.x * groups_per_block + threadIdx.x / g.tpr;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * groups_per_block;
  const Vec* tv = reinterpret_cast<const Vec*>(table);
  Vec* ov = reinterpret_cast<Vec*>(out);
  for (int64_t p = first; p < positions; p += stride) {
    bool valid = true;
    if (lengths != nullptr) {
      const int64_t b = p / max_len, t = p - b * max_len;
      valid = t < ClampLen(lengths[b], max_len);
    }
    int64_t r = valid ? indices[p] : -1;
    valid = valid && InRange(r, table_rows);
    for (int64_t v = lane; v < g.dv; v += g.tpr) {
      Vec x;
      if (valid) {
        x = tv[r * g.dv + v];
      } else {
        Zero(x);
      }
      ov[p * g.dv + v] = x;
    }
  }
}

// One row group per bag; offsets == nullptr means padded (bag b is indices[b * max_len, +len)).
template <int V>
__global__ void PooledKernel(const float* __restrict__ table, int64_t table_rows,
                             const int64_t* __restrict__ indices,
                             const int64_t* __restrict__ lengths,
                             const int64_t* __restrict__ offsets, int64_t max_len, int64_t batch,
                             bool mean, Groups g, float* __restrict__ out) {
  using Vec = typename VecOf<V>::type;
  const int lane = threadIdx.x % g.tpr;
  const int64_t groups_per_block = blockDim.x / g.tpr;
  const int64_t first = blockIdx.x * groups_per_block + threadIdx.x / g.tpr;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * groups_per_block;
  const Vec* tv = reinterpret_cast<const Vec*>(table);
  Vec* ov = reinterpret_cast<Vec*>(out);
  for (int64_t b = first; b < batch; b += stride) {
    int64_t begin, len;
    if (offsets != nullptr) {
      begin = offsets[b];
      len = offsets[b + 1] - begin;
      if (len < 0) len = 0;
    } else {
      begin = b * max_len;
      len = ClampLen(lengths[b], max_len);
    }
    const float scale = mean && len > 0 ? 1.f / static_cast<float>(len) : 1.f;
    for (int64_t v = lane; v < g.dv; v += g.tpr) {
      Vec acc;
      Zero(acc);
      for (int64_t t = 0; t < len; ++t) {
        const int64_t r = indices[begin + t];
        if (InRange(r, table_rows)) Acc(acc, tv[r * g.dv + v]);
      }
      if (mean) Scale(acc, scale);
      ov[b * g.dv + v] = acc;
    }
  }
}

// ---- Backward ------------------------------------------------------------------------------

// Contribution kinds: each row group handles one contribution c and adds
// scale * src[c] to out[row(c)].
enum class Contrib { kFlat, kPadded, kPooledPadded, kPooledJagged };

template <int V, Contrib K>
__global__ void ScatterKernel(const float* __restrict__ src, const int64_t* __restrict__ indices,
                              const int64_t* __restrict__ lengths,
                              const int64_t* __restrict__ offsets, int64_t max_len, int64_t batch,
                              int64_t count, bool mean, int64_t out_rows, Groups g,
                              float* __restrict__ out) {
  using Vec = typename VecOf<V>::type;
  const int lane = threadIdx.x % g.tpr;
  const int64_t groups_per_block = blockDim.x / g.tpr;
  const int64_t first = blockIdx.x * groups_per_block + threadIdx.x / g.tpr;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * groups_per_block;
  const Vec* sv = reinterpret_cast<const Vec*>(src);
  for (int64_t c = first; c < count; c += stride) {
    int64_t src_row = c;
    float scale = 1.f;
    if constexpr (K == Contrib::kPadded || K == Contrib::kPooledPadded) {
      const int64_t b = c / max_len, t = c - b * max_len;
      const int64_t len = ClampLen(lengths[b], max_len);
      if (t >= len) continue;
      if constexpr (K == Contrib::kPooledPadded) {
        src_row = b;
        if (mean) scale = 1.f / static_cast<float>(len);
      }
    } else if constexpr (K == Contrib::kPooledJagged) {
      // Find the bag owning position c: binary search over offsets[0, batch].
      int64_t lo = 0, hi = batch;  // invariant: offsets[lo] <= c < offsets[hi]
      while (hi - lo > 1) {
        const int64_t mid = (lo + hi) / 2;
        if (offsets[mid] <= c) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      src_row = lo;
      if (mean) scale = 1.f / static_cast<float>(offsets[lo + 1] - offsets[lo]);
    }
    const int64_t r = indices[c];
    if (!InRange(r, out_rows)) continue;
    float* orow = out + r * g.dv * V;
    for (int64_t v = lane; v < g.dv; v += g.tpr) {
      const Vec x = sv[src_row * g.dv + v];
#pragma unroll
      for (int k = 0; k < V; ++k) atomicAdd(orow + v * V + k, scale * Get(x, k));
    }
  }
}

template <Contrib K>
Status LaunchScatter(const Context& ctx, const char* name, const float* src, const int64_t* indices,
                     const int64_t* lengths, const int64_t* offsets, int64_t max_len, int64_t batch,
                     int64_t count, bool mean, int64_t dim, int64_t out_rows, float* out) {
  cudaStream_t stream = cuda::StreamOf(ctx);
  IPS_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(out, 0, static_cast<size_t>(out_rows * dim) * sizeof(float), stream));
  if (count == 0) return Status::Ok();
  const int v = VecWidth(dim, {src});
  auto go = [&](auto vtag) {
    constexpr int kV = decltype(vtag)::value;
    const Groups g = GroupsFor<kV>(dim);
    return cuda::Launch(name, ScatterKernel<kV, K>, dim3(GridForRows(count, g.tpr)), dim3(kThreads),
                        0, stream, src, indices, lengths, offsets, max_len, batch, count, mean,
                        out_rows, g, out);
  };
  if (v == 4) return go(std::integral_constant<int, 4>{});
  if (v == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 1>{});
}

// ---- Dedup ---------------------------------------------------------------------------------

__global__ void IotaKernel(int64_t n, int64_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = i;
}

__global__ void HeadFlagsKernel(const int64_t* __restrict__ sorted, int64_t n,
                                int64_t* __restrict__ flags) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    flags[i] = (i == 0 || sorted[i] != sorted[i - 1]) ? 1 : 0;
}

// ids[i] = 1-based id of sorted[i]'s unique key (inclusive scan of the head flags).
__global__ void DedupScatterKernel(const int64_t* __restrict__ sorted,
                                   const int64_t* __restrict__ positions,
                                   const int64_t* __restrict__ ids, int64_t n,
                                   int64_t* __restrict__ unique_keys, int64_t* __restrict__ inverse,
                                   int64_t* __restrict__ num_unique) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t id = ids[i] - 1;
    if (i == 0 || sorted[i] != sorted[i - 1]) unique_keys[id] = sorted[i];
    inverse[positions[i]] = id;
    if (i == n - 1) *num_unique = ids[i];
  }
}

// Workspace layout: sorted keys, positions in, positions sorted, flags, ids (n int64 each,
// each 256-byte aligned), then CUB's temporary storage.
constexpr size_t kAlign = 256;
size_t AlignUp(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

Status CubTempBytes(int64_t n, size_t* bytes) {
  size_t sort_bytes = 0, scan_bytes = 0;
  const int num = static_cast<int>(n);
  IPS_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr),
      static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr), num));
  IPS_CUDA_RETURN_IF_ERROR(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes,
                                                         static_cast<const int64_t*>(nullptr),
                                                         static_cast<int64_t*>(nullptr), num));
  *bytes = std::max(sort_bytes, scan_bytes);
  return Status::Ok();
}

}  // namespace

Status GatherPaddedCuda(const Context& ctx, const GatherPaddedArgs<float>& a) {
  const int v = VecWidth(a.dim, {a.table, a.out});
  const int64_t positions = a.batch * a.max_len;
  auto go = [&](auto vtag) {
    constexpr int kV = decltype(vtag)::value;
    const Groups g = GroupsFor<kV>(a.dim);
    return cuda::Launch("GatherKernel(padded)", GatherKernel<kV>,
                        dim3(GridForRows(positions, g.tpr)), dim3(kThreads), 0, cuda::StreamOf(ctx),
                        a.table, a.table_rows, a.indices, a.lengths, a.max_len, positions, g,
                        a.out);
  };
  if (v == 4) return go(std::integral_constant<int, 4>{});
  if (v == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 1>{});
}

Status GatherJaggedCuda(const Context& ctx, const GatherJaggedArgs<float>& a) {
  const int v = VecWidth(a.dim, {a.table, a.out});
  auto go = [&](auto vtag) {
    constexpr int kV = decltype(vtag)::value;
    const Groups g = GroupsFor<kV>(a.dim);
    return cuda::Launch("GatherKernel(jagged)", GatherKernel<kV>, dim3(GridForRows(a.nnz, g.tpr)),
                        dim3(kThreads), 0, cuda::StreamOf(ctx), a.table, a.table_rows, a.indices,
                        static_cast<const int64_t*>(nullptr), int64_t{1}, a.nnz, g, a.out);
  };
  if (v == 4) return go(std::integral_constant<int, 4>{});
  if (v == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 1>{});
}

namespace {
Status LaunchPooled(const Context& ctx, const char* name, const float* table, int64_t rows,
                    int64_t dim, const int64_t* indices, const int64_t* lengths,
                    const int64_t* offsets, int64_t max_len, int64_t batch, Pooling mode,
                    float* out) {
  const int v = VecWidth(dim, {table, out});
  auto go = [&](auto vtag) {
    constexpr int kV = decltype(vtag)::value;
    const Groups g = GroupsFor<kV>(dim);
    return cuda::Launch(name, PooledKernel<kV>, dim3(GridForRows(batch, g.tpr)), dim3(kThreads), 0,
                        cuda::StreamOf(ctx), table, rows, indices, lengths, offsets, max_len, batch,
                        mode == Pooling::kMean, g, out);
  };
  if (v == 4) return go(std::integral_constant<int, 4>{});
  if (v == 2) return go(std::integral_constant<int, 2>{});
  return go(std::integral_constant<int, 1>{});
}
}  // namespace

Status PooledPaddedCuda(const Context& ctx, const PooledPaddedArgs<float>& a) {
  return LaunchPooled(ctx, "PooledKernel(padded)", a.table, a.table_rows, a.dim, a.indices,
                      a.lengths, nullptr, a.max_len, a.batch, a.mode, a.out);
}

Status PooledJaggedCuda(const Context& ctx, const PooledJaggedArgs<float>& a) {
  return LaunchPooled(ctx, "PooledKernel(jagged)", a.table, a.table_rows, a.dim, a.indices, nullptr,
                      a.offsets, 1, a.batch, a.mode, a.out);
}

StatusOr<size_t> DedupWorkspaceBytesCuda(int64_t n) {
  size_t cub_bytes = 0;
  IPS_RETURN_IF_ERROR(CubTempBytes(n, &cub_bytes));
  return 5 * AlignUp(static_cast<size_t>(n) * sizeof(int64_t)) + AlignUp(cub_bytes);
}

Status DedupKeysCuda(const Context& ctx, const DedupArgs& a) {
  cudaStream_t stream = cuda::StreamOf(ctx);
  if (a.n == 0) {
    IPS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a.num_unique, 0, sizeof(int64_t), stream));
    return Status::Ok();
  }
  size_t cub_bytes = 0;
  IPS_RETURN_IF_ERROR(CubTempBytes(a.n, &cub_bytes));
  const size_t slab = AlignUp(static_cast<size_t>(a.n) * sizeof(int64_t));
  const size_t need = 5 * slab + AlignUp(cub_bytes);
  if (a.workspace == nullptr || a.workspace_bytes < need)
    return InvalidArgumentError("DedupKeys(CUDA): workspace of " +
                                std::to_string(a.workspace_bytes) + " bytes, need " +
                                std::to_string(need) + " (DedupWorkspaceBytes)");
  char* ws = static_cast<char*>(a.workspace);
  int64_t* sorted = reinterpret_cast<int64_t*>(ws);
  int64_t* pos_in = reinterpret_cast<int64_t*>(ws + slab);
  int64_t* pos_sorted = reinterpret_cast<int64_t*>(ws + 2 * slab);
  int64_t* flags = reinterpret_cast<int64_t*>(ws + 3 * slab);
  int64_t* ids = reinterpret_cast<int64_t*>(ws + 4 * slab);
  void* temp = ws + 5 * slab;
  const int num = static_cast<int>(a.n);
  const unsigned grid = cuda::GridFor(a.n, kThreads);
  IPS_RETURN_IF_ERROR(
      cuda::Launch("IotaKernel", IotaKernel, dim3(grid), dim3(kThreads), 0, stream, a.n, pos_in));
  size_t temp_bytes = cub_bytes;
  IPS_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, a.keys, sorted,
                                                           static_cast<const int64_t*>(pos_in),
                                                           pos_sorted, num, 0, 64, stream));
  IPS_RETURN_IF_ERROR(cuda::Launch("HeadFlagsKernel", HeadFlagsKernel, dim3(grid), dim3(kThreads),
                                   0, stream, static_cast<const int64_t*>(sorted), a.n, flags));
  temp_bytes = cub_bytes;
  IPS_CUDA_RETURN_IF_ERROR(cub::DeviceScan::InclusiveSum(
      temp, temp_bytes, static_cast<const int64_t*>(flags), ids, num, stream));
  return cuda::Launch("DedupScatterKernel", DedupScatterKernel, dim3(grid), dim3(kThreads), 0,
                      stream, static_cast<const int64_t*>(sorted),
                      static_cast<const int64_t*>(pos_sorted), static_cast<const int64_t*>(ids),
                      a.n, a.unique_keys, a.inverse, a.num_unique);
}

Status ScatterAddCuda(const Context& ctx, const ScatterAddArgs<float>& a) {
  return LaunchScatter<Contrib::kFlat>(ctx, "ScatterKernel(flat)", a.grad_rows, a.inverse, nullptr,
                                       nullptr, 1, 0, a.n, false, a.dim, a.num_unique,
                                       a.grad_unique);
}

Status GatherPaddedBackwardCuda(const Context& ctx, const GatherPaddedBackwardArgs<float>& a) {
  return LaunchScatter<Contrib::kPadded>(
      ctx, "ScatterKernel(padded)", a.grad_out, a.indices, a.lengths, nullptr, a.max_len, a.batch,
      a.batch * a.max_len, false, a.dim, a.num_rows, a.grad_table);
}

Status PooledPaddedBackwardCuda(const Context& ctx, const PooledPaddedBackwardArgs<float>& a) {
  return LaunchScatter<Contrib::kPooledPadded>(
      ctx, "ScatterKernel(pooled padded)", a.grad_out, a.indices, a.lengths, nullptr, a.max_len,
      a.batch, a.batch * a.max_len, a.mode == Pooling::kMean, a.dim, a.num_rows, a.grad_table);
}

Status PooledJaggedBackwardCuda(const Context& ctx, const PooledJaggedBackwardArgs<float>& a) {
  // No bags: nothing can contribute (and the bag search below needs offsets[1]).
  const int64_t count = a.batch > 0 ? a.nnz : 0;
  return LaunchScatter<Contrib::kPooledJagged>(
      ctx, "ScatterKernel(pooled jagged)", a.grad_out, a.indices, nullptr, a.offsets, 1, a.batch,
      count, a.mode == Pooling::kMean, a.dim, a.num_rows, a.grad_table);
}

}  // namespace ips::kernels
