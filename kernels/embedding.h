// Sparse-embedding kernels: row gather for padded and jagged sequences, fused gather + sum/mean
// pooling, key de-duplication, and their backward passes (scatter-add of gradient rows into one
// row per unique key). These are what sits between the parameter-server pull/push and a model:
//
//   keys --DedupKeys--> unique_keys (pulled from the PS as a [u x dim] table) + inverse
//   inverse --Gather*/Pooled*--> activations      (forward, indices = inverse)
//   grad --ScatterAdd / *Backward--> grad_unique  (backward, one row per unique key, pushed)
//
// Conventions shared by every op here:
//  - Tables are contiguous row-major [rows x dim]; indices are int64 row numbers already
//    resolved (no hashing of keys here). Lengths/offsets are int64.
//  - CPU (Device::kCpu): float and double, parallel over the batch (or over output rows) on
//    ctx.pool. Every index, length and offset is validated: bad input returns INVALID_ARGUMENT
//    naming the field and position, and then the output contents are unspecified.
//  - CUDA (Device::kCuda): float only, asynchronous on ctx.stream; every pointer is device
//    memory. Sizes (batch, max_len, nnz, dim, num_rows) come from the Args on the host and are
//    validated; device-resident indices/lengths are not read back, so out-of-range indices read
//    as zero rows (gather) or are dropped (backward) instead of faulting, and lengths are
//    clamped to [0, max_len]. Callers needing diagnostics validate on the CPU first.
//  - Outputs are overwritten (never accumulated into); they may hold garbage (NaN) on entry.
//  - UNIMPLEMENTED for CUDA in a build without it, or for double on CUDA.
//  - All functions are thread-safe as long as concurrent calls do not share outputs (a
//    ThreadPool serialises concurrent ParallelFor callers).
#ifndef IPS_KERNELS_EMBEDDING_H_
#define IPS_KERNELS_EMBEDDING_H_

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace ips::kernels {

enum class Pooling { kSum, kMean };

// ---- Forward -------------------------------------------------------------------------------

// out[b, t, :] = table[indices[b, t], :] for t < lengths[b]; out[b, t, :] = 0 for t >= lengths[b]
// (indices there are not read, so they may hold anything).
template <typename T>
struct GatherPaddedArgs {
  const T* table = nullptr;  // [table_rows x dim]
  int64_t table_rows = 0;
  int64_t dim = 0;
  const int64_t* indices = nullptr;  // [batch x max_len]
  const int64_t* lengths = nullptr;  // [batch], each in [0, max_len]
  int64_t batch = 0;
  int64_t max_len = 0;
  T* out = nullptr;  // [batch x max_len x dim]
};

// Jagged batch: out[j, :] = table[indices[j], :] for j in [0, nnz), where bag b owns
// [offsets[b], offsets[b+1]). Offsets only get validated (0, non-decreasing, ending at nnz).
template <typename T>
struct GatherJaggedArgs {
  const T* table = nullptr;
  int64_t table_rows = 0;
  int64_t dim = 0;
  const int64_t* indices = nullptr;  // [nnz]
  const int64_t* offsets = nullptr;  // [batch + 1]
  int64_t batch = 0;
  int64_t nnz = 0;   // == offsets[batch]; passed explicitly because CUDA offsets live on the device
  T* out = nullptr;  // [nnz x dim]
};

// out[b, :] = sum (kSum) or mean (kMean) over t < lengths[b] of table[indices[b, t], :];
// a bag of length 0 gives zeros for both modes.
template <typename T>
struct PooledPaddedArgs {
  const T* table = nullptr;
  int64_t table_rows = 0;
  int64_t dim = 0;
  const int64_t* indices = nullptr;  // [batch x max_len]
  const int64_t* lengths = nullptr;  // [batch]
  int64_t batch = 0;
  int64_t max_len = 0;
  Pooling mode = Pooling::kSum;
  T* out = nullptr;  // [batch x dim]
};

template <typename T>
struct PooledJaggedArgs {
  const T* table = nullptr;
  int64_t table_rows = 0;
  int64_t dim = 0;
  const int64_t* indices = nullptr;  // [nnz]
  const int64_t* offsets = nullptr;  // [batch + 1]
  int64_t batch = 0;
  int64_t nnz = 0;
  Pooling mode = Pooling::kSum;
  T* out = nullptr;  // [batch x dim]
};

template <typename T>
Status GatherPadded(const Context& ctx, const GatherPaddedArgs<T>& args);
template <typename T>
Status GatherJagged(const Context& ctx, const GatherJaggedArgs<T>& args);
template <typename T>
Status PooledPadded(const Context& ctx, const PooledPaddedArgs<T>& args);
template <typename T>
Status PooledJagged(const Context& ctx, const PooledJaggedArgs<T>& args);

// ---- Key de-duplication ----------------------------------------------------------------------

// unique_keys[0, u) holds each distinct key of keys[0, n) once; inverse[i] is the position of
// keys[i] in unique_keys (so unique_keys[inverse[i]] == keys[i]); *num_unique = u.
// ORDER: the CPU production path (open-addressing hash) returns keys in FIRST-OCCURRENCE order;
// the CUDA path (radix sort) and DedupKeysSortCpu return them in ASCENDING (signed) order.
// Callers must not depend on either beyond "a permutation of the distinct keys".
struct DedupArgs {
  const int64_t* keys = nullptr;  // [n]
  int64_t n = 0;
  int64_t* unique_keys = nullptr;  // capacity n
  int64_t* inverse = nullptr;      // [n]
  int64_t* num_unique = nullptr;   // CPU: host pointer; CUDA: device pointer (one int64)
  // Scratch of DedupWorkspaceBytes(ctx, n) bytes. Required on CUDA. Optional on the CPU: when
  // null (or too small) a per-thread scratch buffer that grows and is reused is taken instead.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Bytes of scratch DedupKeys needs for n keys on ctx.device. CUDA: asks CUB for its temporary
// storage size (launches nothing); returns its error as INTERNAL.
StatusOr<size_t> DedupWorkspaceBytes(const Context& ctx, int64_t n);
Status DedupKeys(const Context& ctx, const DedupArgs& args);
// CPU alternative (sort of (key, position) pairs): ascending order. The hash path is the
// production one (faster, see bench/embedding_bench.cc); this one is a reference for tests and
// the benchmark. Ignores args.workspace.
Status DedupKeysSortCpu(const DedupArgs& args);

// ---- Backward --------------------------------------------------------------------------------

// grad_unique[u, :] = sum over i with inverse[i] == u of grad_rows[i, :], for u in
// [0, num_unique); rows no i maps to come out zero. This is the backward of GatherJagged (with
// inverse = indices) and of any gather from a pulled [num_unique x dim] table.
// CPU sums each output row in increasing i order (deterministic); CUDA uses atomicAdd (order,
// hence rounding, varies run to run).
template <typename T>
struct ScatterAddArgs {
  const T* grad_rows = nullptr;      // [n x dim]
  const int64_t* inverse = nullptr;  // [n], each in [0, num_unique)
  int64_t n = 0;
  int64_t dim = 0;
  int64_t num_unique = 0;
  T* grad_unique = nullptr;  // [num_unique x dim]
};

// Backward of GatherPadded: grad_table[r, :] = sum of grad_out[b, t, :] over t < lengths[b]
// with indices[b, t] == r (padding positions contribute nothing).
template <typename T>
struct GatherPaddedBackwardArgs {
  const T* grad_out = nullptr;       // [batch x max_len x dim]
  const int64_t* indices = nullptr;  // [batch x max_len], each in [0, num_rows) where t < len
  const int64_t* lengths = nullptr;  // [batch]
  int64_t batch = 0;
  int64_t max_len = 0;
  int64_t dim = 0;
  int64_t num_rows = 0;
  T* grad_table = nullptr;  // [num_rows x dim]
};

// Backward of PooledPadded / PooledJagged: every position t of bag b adds grad_out[b, :]
// (kSum) or grad_out[b, :] / lengths[b] (kMean) to grad_table[indices[b, t], :].
template <typename T>
struct PooledPaddedBackwardArgs {
  const T* grad_out = nullptr;  // [batch x dim]
  const int64_t* indices = nullptr;
  const int64_t* lengths = nullptr;
  int64_t batch = 0;
  int64_t max_len = 0;
  int64_t dim = 0;
  Pooling mode = Pooling::kSum;
  int64_t num_rows = 0;
  T* grad_table = nullptr;  // [num_rows x dim]
};

template <typename T>
struct PooledJaggedBackwardArgs {
  const T* grad_out = nullptr;       // [batch x dim]
  const int64_t* indices = nullptr;  // [nnz]
  const int64_t* offsets = nullptr;  // [batch + 1]
  int64_t batch = 0;
  int64_t nnz = 0;
  int64_t dim = 0;
  Pooling mode = Pooling::kSum;
  int64_t num_rows = 0;
  T* grad_table = nullptr;  // [num_rows x dim]
};

template <typename T>
Status ScatterAdd(const Context& ctx, const ScatterAddArgs<T>& args);
template <typename T>
Status GatherPaddedBackward(const Context& ctx, const GatherPaddedBackwardArgs<T>& args);
template <typename T>
Status PooledPaddedBackward(const Context& ctx, const PooledPaddedBackwardArgs<T>& args);
template <typename T>
Status PooledJaggedBackward(const Context& ctx, const PooledJaggedBackwardArgs<T>& args);

// CPU scatter-add algorithms, exposed for the benchmark and the tests. Both are deterministic.
//  kDirect: zero the output, then each thread owns a slice of output rows and streams over all
//           contributions adding the ones in its slice (one pass, no scratch).
//  kSegment: counting-sort the contributions by output row (CSR), then reduce each row's
//           segment (two extra passes and n entries of scratch; parallel without ownership).
// ScatterAdd on the CPU uses kDirect: on the dev VM (bench/embedding_bench.cc, 25600 rows) it
// was ~1.3x faster at D = 18, tied at D = 36 and ~5% slower at D = 64, for uniform and Zipf
// keys alike, and needs no scratch.
enum class ScatterAlgo { kDirect, kSegment };
template <typename T>
Status ScatterAddCpu(ThreadPool* pool, const ScatterAddArgs<T>& args, ScatterAlgo algo);

}  // namespace ips::kernels

#endif  // IPS_KERNELS_EMBEDDING_H_
