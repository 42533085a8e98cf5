// CPU implementation of kernels/embedding.h, plus the dispatch to the CUDA twin.
//
// Gather is bound by random DRAM reads of table rows (the tables are far larger than the
// caches) and, with 4 KiB pages, by the page walk each of them needs; the loops keep several
// row fetches in flight with software prefetches issued kPrefetchRows positions ahead, the
// copies themselves are trivial. Forward work is handed to the pool's threads in small blocks
// from a shared counter (ForEachBlock) rather than in one half per thread, so a pool thread the
// OS has not scheduled yet (shared cores, several ranks per host) costs at most one block
// instead of half the batch. Backward and de-duplication
// work on batch-sized data that fits in L2, so they are organised to avoid scratch allocation
// and extra passes rather than for memory-level parallelism.
#include "kernels/embedding.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/random.h"
#include "common/thread_pool.h"

#ifdef IPS_WITH_CUDA
#include "kernels/cuda/embedding_cuda.h"
#endif

namespace ips::kernels {
namespace {

// Rows ahead of the current one whose cache lines are prefetched. A row costs a few ns to copy
// and a DRAM miss plus page walk well over 100 ns, so ~16 rows must be in flight. Measured on
// the 2-core dev VM (2 GiB table): 16, 32 and 64 are within noise; for the pooled sum the
// prefetch is worth ~1.6x at D = 64 (its dependent adds keep the out-of-order window from
// running ahead), for the plain gather out-of-order execution alone already overlaps the
// independent row copies and the prefetch gains little.
constexpr int64_t kPrefetchRows = 16;
// Units of forward work handed out by ForEachBlock: 16 bags (800 rows at T = 50; B = 512 gives
// 32 blocks) or 1024 jagged rows, tens of microseconds each, long enough that the restart of
// the prefetch pipeline at a block start (its first kPrefetchRows misses are not overlapped
// with earlier rows) touches ~2% of the rows.
constexpr int64_t kBagsPerBlock = 16;
constexpr int64_t kRowsPerBlock = 1024;
// Smallest piece of a batch worth handing to another thread (backward).
constexpr int64_t kMinRowsPerChunk = 256;

int NumThreads(ThreadPool* pool) { return pool == nullptr ? 1 : pool->num_threads(); }

// Calls fn(begin, end) over consecutive blocks of `block` items covering [0, n); the pool's
// threads (caller included) take blocks in increasing order from a shared counter until none
// are left or stop() turns true. Blocks are claimed in order, so once an error has been recorded
// every unclaimed block lies after it: stopping then still reports the smallest bad position.
template <typename Fn, typename Stop>
void ForEachBlock(ThreadPool* pool, int64_t n, int64_t block, const Stop& stop, const Fn& fn) {
  const int64_t blocks = (n + block - 1) / block;
  const int64_t nt = std::min<int64_t>(NumThreads(pool), blocks);
  if (nt <= 1) {
    if (n > 0) fn(0, n);  // one run: the prefetch pipeline never restarts
    return;
  }
  std::atomic<int64_t> next{0};
  pool->ParallelFor(nt, 1, [&](int64_t, int64_t) {
    for (;;) {
      if (stop()) return;
      const int64_t k = next.fetch_add(1, std::memory_order_relaxed);
      if (k >= blocks) return;
      fn(k * block, std::min(n, (k + 1) * block));
    }
  });
}

// Smallest failing position reported by any worker thread.
class FirstError {
 public:
  void Record(int64_t pos) {
    int64_t cur = pos_.load(std::memory_order_relaxed);
    while (pos < cur && !pos_.compare_exchange_weak(cur, pos, std::memory_order_relaxed)) {
    }
  }
  bool failed() const { return pos_.load() != kNone; }
  int64_t pos() const { return pos_.load(); }

 private:
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> pos_{kNone};
};

Status Invalid(const char* op, const std::string& what) {
  return InvalidArgumentError(std::string(op) + ": " + what);
}

Status CheckNonNegative(const char* op, const char* field, int64_t v) {
  if (v < 0) return Invalid(op, std::string(field) + " = " + std::to_string(v) + " is negative");
  return Status::Ok();
}

Status CheckPtr(const char* op, const char* field, const void* p, bool needed) {
  if (needed && p == nullptr) return Invalid(op, std::string(field) + " is null");
  return Status::Ok();
}

Status BadIndexError(const char* op, const char* field, int64_t pos, int64_t value, int64_t rows) {
  return Invalid(op, std::string(field) + "[" + std::to_string(pos) + "] = " +
                         std::to_string(value) + " is outside [0, " + std::to_string(rows) + ")");
}

// Host-side checks shared by the CPU and CUDA paths (sizes and pointers only).
template <typename T>
Status CheckTable(const char* op, const T* table, int64_t rows, int64_t dim) {
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "table_rows", rows));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "dim", dim));
  return CheckPtr(op, "table", table, rows > 0 && dim > 0);
}

Status CheckPaddedShape(const char* op, const int64_t* indices, const int64_t* lengths,
                        int64_t batch, int64_t max_len) {
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "batch", batch));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "max_len", max_len));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "lengths", lengths, batch > 0));
  return CheckPtr(op, "indices", indices, batch > 0 && max_len > 0);
}

Status CheckJaggedShape(const char* op, const int64_t* indices, const int64_t* offsets,
                        int64_t batch, int64_t nnz) {
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "batch", batch));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "nnz", nnz));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "offsets", offsets, true));
  return CheckPtr(op, "indices", indices, nnz > 0);
}

// CPU-only checks of host-resident lengths / offsets.
Status CheckLengths(const char* op, const int64_t* lengths, int64_t batch, int64_t max_len) {
  for (int64_t b = 0; b < batch; ++b) {
    if (lengths[b] < 0 || lengths[b] > max_len)
      return Invalid(op, "lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                             " is outside [0, max_len = " + std::to_string(max_len) + "]");
  }
  return Status::Ok();
}

Status CheckOffsets(const char* op, const int64_t* offsets, int64_t batch, int64_t nnz) {
  if (offsets[0] != 0) return Invalid(op, "offsets[0] = " + std::to_string(offsets[0]) + " != 0");
  for (int64_t b = 0; b < batch; ++b) {
    if (offsets[b + 1] < offsets[b])
      return Invalid(op, "offsets[" + std::to_string(b + 1) +
                             "] = " + std::to_string(offsets[b + 1]) + " < offsets[" +
                             std::to_string(b) + "] = " + std::to_string(offsets[b]));
  }
  if (offsets[batch] != nnz)
    return Invalid(op, "offsets[batch = " + std::to_string(batch) + "] = " +
                           std::to_string(offsets[batch]) + " != nnz = " + std::to_string(nnz));
  return Status::Ok();
}

// Checks idx[p] in [0, rows) for every valid position of a padded batch.
Status CheckPaddedIndices(const char* op, const int64_t* indices, const int64_t* lengths,
                          int64_t batch, int64_t max_len, int64_t rows) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* ib = indices + b * max_len;
    for (int64_t t = 0; t < lengths[b]; ++t) {
      if (static_cast<uint64_t>(ib[t]) >= static_cast<uint64_t>(rows))
        return BadIndexError(op, "indices", b * max_len + t, ib[t], rows);
    }
  }
  return Status::Ok();
}

Status CheckFlatIndices(const char* op, const char* field, const int64_t* indices, int64_t n,
                        int64_t rows) {
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<uint64_t>(indices[i]) >= static_cast<uint64_t>(rows))
      return BadIndexError(op, field, i, indices[i], rows);
  }
  return Status::Ok();
}

// Locality 1 (prefetcht2 on x86: fetch into L2, not L1). On the dev VM (Xeon, 2 GiB table,
// B = 512, T = 50, best of 60 interleaved repetitions) a plain gather loop with it was 3-8%
// faster than with the non-temporal hint used before for D = 18, 36, 64 on 4 KiB pages and
// 9-12% on huge pages; T0 was no better than the non-temporal hint. The row is consumed a few
// rows later, from L2.
// One prefetch per 64-byte line the row touches (a 72-byte row at offset 56 spans two lines).
inline void PrefetchRow(const void* row, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(row) & ~uintptr_t{63};
  const uintptr_t last = reinterpret_cast<uintptr_t>(row) + bytes - 1;
  for (uintptr_t line = first; line <= last; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 1);
}

// Walks the valid positions (b, t < lengths[b]) of bags [b, b_end) of a padded batch, a fixed
// number of positions ahead of the consumer, prefetching the table row each one names.
template <typename T>
class PaddedPrefetcher {
 public:
  PaddedPrefetcher(const T* table, int64_t rows, int64_t dim, const int64_t* indices,
                   const int64_t* lengths, int64_t max_len, int64_t b, int64_t b_end)
      : table_(table),
        rows_(rows),
        dim_(dim),
        indices_(indices),
        lengths_(lengths),
        max_len_(max_len),
        b_(b),
        b_end_(b_end) {
    Skip();
    for (int64_t i = 0; i < kPrefetchRows; ++i) Next();
  }
  // Prefetches one more position (call once per consumed row).
  void Next() {
    if (b_ >= b_end_) return;
    const int64_t r = indices_[b_ * max_len_ + t_];
    // An invalid index is reported by the consumer; just don't form a wild pointer here.
    if (static_cast<uint64_t>(r) < static_cast<uint64_t>(rows_))
      PrefetchRow(table_ + r * dim_, dim_ * sizeof(T));
    ++t_;
    Skip();
  }

 private:
  void Skip() {
    while (b_ < b_end_ && t_ >= lengths_[b_]) {
      ++b_;
      t_ = 0;
    }
  }
  const T* table_;
  int64_t rows_, dim_;
  const int64_t* indices_;
  const int64_t* lengths_;
  int64_t max_len_;
  int64_t b_, b_end_, t_ = 0;
};

template <typename T>
inline void AddRow(T* __restrict dst, const T* __restrict src, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) dst[d] += src[d];
}

// Four rows at once: one read-modify-write of the accumulator row per four table rows (the
// 4-row form measured 10-20% faster than row-at-a-time for D = 36, 64).
template <typename T>
inline void AddRows4(T* __restrict dst, const T* __restrict r0, const T* __restrict r1,
                     const T* __restrict r2, const T* __restrict r3, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) dst[d] += (r0[d] + r1[d]) + (r2[d] + r3[d]);
}

inline bool BadRow(int64_t r, int64_t rows) {
  return static_cast<uint64_t>(r) >= static_cast<uint64_t>(rows);
}

// Sums table rows idx[0, len) into out (already zeroed); returns the offset of the first
// invalid index, or -1.
template <typename T, typename Prefetch>
int64_t SumRows(const T* table, int64_t rows, int64_t dim, const int64_t* idx, int64_t len, T* out,
                Prefetch&& prefetch) {
  int64_t t = 0;
  for (; t + 4 <= len; t += 4) {
    prefetch();
    prefetch();
    prefetch();
    prefetch();
    for (int k = 0; k < 4; ++k)
      if (BadRow(idx[t + k], rows)) return t + k;
    AddRows4(out, table + idx[t] * dim, table + idx[t + 1] * dim, table + idx[t + 2] * dim,
             table + idx[t + 3] * dim, dim);
  }
  for (; t < len; ++t) {
    prefetch();
    if (BadRow(idx[t], rows)) return t;
    AddRow(out, table + idx[t] * dim, dim);
  }
  return -1;
}

template <typename T>
inline void AddScaledRow(T* __restrict dst, const T* __restrict src, T scale, int64_t dim) {
  for (int64_t d = 0; d < dim; ++d) dst[d] += scale * src[d];
}

// ---- Forward kernels ---------------------------------------------------------------------

template <typename T>
Status GatherPaddedCpu(ThreadPool* pool, const GatherPaddedArgs<T>& a) {
  const char* op = "GatherPadded";
  IPS_RETURN_IF_ERROR(CheckLengths(op, a.lengths, a.batch, a.max_len));
  FirstError err;
  const auto stop = [&err] { return err.failed(); };
  const size_t row_bytes = static_cast<size_t>(a.dim) * sizeof(T);
  ForEachBlock(pool, a.batch, kBagsPerBlock, stop, [&](int64_t b0, int64_t b1) {
    PaddedPrefetcher<T> pf(a.table, a.table_rows, a.dim, a.indices, a.lengths, a.max_len, b0, b1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = a.lengths[b];
      const int64_t* ib = a.indices + b * a.max_len;
      T* ob = a.out + b * a.max_len * a.dim;
      for (int64_t t = 0; t < len; ++t) {
        pf.Next();
        const int64_t r = ib[t];
        if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(a.table_rows)) {
          err.Record(b * a.max_len + t);
          return;
        }
        std::memcpy(ob + t * a.dim, a.table + r * a.dim, row_bytes);
      }
      std::memset(ob + len * a.dim, 0, static_cast<size_t>(a.max_len - len) * row_bytes);
    }
  });
  if (err.failed())
    return BadIndexError(op, "indices", err.pos(), a.indices[err.pos()], a.table_rows);
  return Status::Ok();
}

template <typename T>
Status GatherJaggedCpu(ThreadPool* pool, const GatherJaggedArgs<T>& a) {
  const char* op = "GatherJagged";
  IPS_RETURN_IF_ERROR(CheckOffsets(op, a.offsets, a.batch, a.nnz));
  FirstError err;
  const auto stop = [&err] { return err.failed(); };
  const size_t row_bytes = static_cast<size_t>(a.dim) * sizeof(T);
  ForEachBlock(pool, a.nnz, kRowsPerBlock, stop, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < std::min(j1, j0 + kPrefetchRows); ++j) {
      if (static_cast<uint64_t>(a.indices[j]) < static_cast<uint64_t>(a.table_rows))
        PrefetchRow(a.table + a.indices[j] * a.dim, row_bytes);
    }
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t ahead = j + kPrefetchRows;
      if (ahead < j1 &&
          static_cast<uint64_t>(a.indices[ahead]) < static_cast<uint64_t>(a.table_rows))
        PrefetchRow(a.table + a.indices[ahead] * a.dim, row_bytes);
      const int64_t r = a.indices[j];
      if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(a.table_rows)) {
        err.Record(j);
        return;
      }
      std::memcpy(a.out + j * a.dim, a.table + r * a.dim, row_bytes);
    }
  });
  if (err.failed())
    return BadIndexError(op, "indices", err.pos(), a.indices[err.pos()], a.table_rows);
  return Status::Ok();
}

template <typename T>
Status PooledPaddedCpu(ThreadPool* pool, const PooledPaddedArgs<T>& a) {
  const char* op = "PooledPadded";
  IPS_RETURN_IF_ERROR(CheckLengths(op, a.lengths, a.batch, a.max_len));
  FirstError err;
  const auto stop = [&err] { return err.failed(); };
  ForEachBlock(pool, a.batch, kBagsPerBlock, stop, [&](int64_t b0, int64_t b1) {
    PaddedPrefetcher<T> pf(a.table, a.table_rows, a.dim, a.indices, a.lengths, a.max_len, b0, b1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t len = a.lengths[b];
      const int64_t* ib = a.indices + b * a.max_len;
      T* ob = a.out + b * a.dim;
      std::fill(ob, ob + a.dim, T(0));
      const int64_t bad = SumRows(a.table, a.table_rows, a.dim, ib, len, ob, [&pf] { pf.Next(); });
      if (bad >= 0) {
        err.Record(b * a.max_len + bad);
        return;
      }
      if (a.mode == Pooling::kMean && len > 0) {
        const T inv = T(1) / static_cast<T>(len);
        for (int64_t d = 0; d < a.dim; ++d) ob[d] *= inv;
      }
    }
  });
  if (err.failed())
    return BadIndexError(op, "indices", err.pos(), a.indices[err.pos()], a.table_rows);
  return Status::Ok();
}

template <typename T>
Status PooledJaggedCpu(ThreadPool* pool, const PooledJaggedArgs<T>& a) {
  const char* op = "PooledJagged";
  IPS_RETURN_IF_ERROR(CheckOffsets(op, a.offsets, a.batch, a.nnz));
  FirstError err;
  const auto stop = [&err] { return err.failed(); };
  const size_t row_bytes = static_cast<size_t>(a.dim) * sizeof(T);
  ForEachBlock(pool, a.batch, kBagsPerBlock, stop, [&](int64_t b0, int64_t b1) {
    // Jagged positions of bags [b0, b1) are contiguous: prefetch along the flat index array.
    const int64_t j_end = a.offsets[b1];
    int64_t ahead = a.offsets[b0];
    auto prefetch_next = [&] {
      if (ahead >= j_end) return;
      const int64_t r = a.indices[ahead++];
      if (static_cast<uint64_t>(r) < static_cast<uint64_t>(a.table_rows))
        PrefetchRow(a.table + r * a.dim, row_bytes);
    };
    for (int64_t i = 0; i < kPrefetchRows; ++i) prefetch_next();
    for (int64_t b = b0; b < b1; ++b) {
      T* ob = a.out + b * a.dim;
      std::fill(ob, ob + a.dim, T(0));
      const int64_t len = a.offsets[b + 1] - a.offsets[b];
      const int64_t bad =
          SumRows(a.table, a.table_rows, a.dim, a.indices + a.offsets[b], len, ob, prefetch_next);
      if (bad >= 0) {
        err.Record(a.offsets[b] + bad);
        return;
      }
      if (a.mode == Pooling::kMean && len > 0) {
        const T inv = T(1) / static_cast<T>(len);
        for (int64_t d = 0; d < a.dim; ++d) ob[d] *= inv;
      }
    }
  });
  if (err.failed())
    return BadIndexError(op, "indices", err.pos(), a.indices[err.pos()], a.table_rows);
  return Status::Ok();
}

// ---- De-duplication ------------------------------------------------------------------------

constexpr int64_t kMaxDedupKeys = int64_t{1} << 30;  // slot ids are int32

size_t HashCapacity(int64_t n) {
  size_t cap = 16;
  // Load factor <= 1/2 keeps linear-probe chains short.
  while (cap < static_cast<size_t>(2 * n)) cap <<= 1;
  return cap;
}

Status DedupHashCpu(const DedupArgs& a) {
  const size_t cap = HashCapacity(a.n);
  int32_t* slots;
  thread_local std::vector<int32_t> scratch;
  if (a.workspace != nullptr && a.workspace_bytes >= cap * sizeof(int32_t)) {
    slots = static_cast<int32_t*>(a.workspace);
  } else {
    if (scratch.size() < cap) scratch.resize(cap);
    slots = scratch.data();
  }
  // Slots hold positions in unique_keys (-1 = empty); the key itself is read from there, which
  // keeps the table at 4 bytes a slot (it is memset on every call).
  std::memset(slots, 0xff, cap * sizeof(int32_t));
  const uint64_t mask = cap - 1;
  constexpr int64_t kAhead = 8;
  int64_t u = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    if (i + kAhead < a.n)
      __builtin_prefetch(&slots[Mix64(static_cast<uint64_t>(a.keys[i + kAhead])) & mask]);
    const int64_t k = a.keys[i];
    uint64_t h = Mix64(static_cast<uint64_t>(k)) & mask;
    for (;;) {
      const int32_t s = slots[h];
      if (s < 0) {
        slots[h] = static_cast<int32_t>(u);
        a.unique_keys[u] = k;
        a.inverse[i] = u;
        ++u;
        break;
      }
      if (a.unique_keys[s] == k) {
        a.inverse[i] = s;
        break;
      }
      h = (h + 1) & mask;
    }
  }
  *a.num_unique = u;
  return Status::Ok();
}

// ---- Scatter-add -------------------------------------------------------------------------

// Contributions are described by a ForEach(fn) that calls fn(row, src, scale) once per
// contribution, in a fixed order; both algorithms add them to each output row in that order.
template <typename T, typename ForEach>
void ScatterDirect(ThreadPool* pool, int64_t num_rows, int64_t dim, T* out,
                   const ForEach& for_each) {
  const int64_t nt =
      std::max<int64_t>(1, std::min<int64_t>(NumThreads(pool), num_rows / kMinRowsPerChunk));
  ParallelFor(nt > 1 ? pool : nullptr, nt, 1, [&](int64_t tb, int64_t te) {
    for (int64_t tid = tb; tid < te; ++tid) {
      const int64_t lo = num_rows * tid / nt, hi = num_rows * (tid + 1) / nt;
      std::fill(out + lo * dim, out + hi * dim, T(0));
      for_each([&](int64_t r, const T* src, T scale) {
        if (r >= lo && r < hi) AddScaledRow(out + r * dim, src, scale, dim);
      });
    }
  });
}

template <typename T, typename ForEach>
void ScatterSegment(ThreadPool* pool, int64_t num_rows, int64_t dim, T* out,
                    const ForEach& for_each) {
  struct Entry {
    const T* src;
    T scale;
  };
  thread_local std::vector<int64_t> starts;
  thread_local std::vector<Entry> entries;
  starts.assign(static_cast<size_t>(num_rows) + 1, 0);
  int64_t n = 0;
  for_each([&](int64_t r, const T*, T) {
    ++starts[r + 1];
    ++n;
  });
  for (int64_t r = 0; r < num_rows; ++r) starts[r + 1] += starts[r];
  entries.resize(static_cast<size_t>(n));
  // Stable fill: `starts[r]` is used as row r's cursor and ends at its segment end, which is
  // row r+1's start; the loop below reads segments as [r == 0 ? 0 : starts[r-1], starts[r]).
  for_each([&](int64_t r, const T* src, T scale) { entries[starts[r]++] = Entry{src, scale}; });
  const int64_t* ends = starts.data();
  const Entry* es = entries.data();
  ParallelFor(pool, num_rows, kMinRowsPerChunk, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* o = out + r * dim;
      std::fill(o, o + dim, T(0));
      for (int64_t e = r == 0 ? 0 : ends[r - 1]; e < ends[r]; ++e)
        AddScaledRow(o, es[e].src, es[e].scale, dim);
    }
  });
}

template <typename T, typename ForEach>
void Scatter(ThreadPool* pool, ScatterAlgo algo, int64_t num_rows, int64_t dim, T* out,
             const ForEach& for_each) {
  if (num_rows == 0 || dim == 0) return;
  if (algo == ScatterAlgo::kDirect) {
    ScatterDirect(pool, num_rows, dim, out, for_each);
  } else {
    ScatterSegment(pool, num_rows, dim, out, for_each);
  }
}

constexpr ScatterAlgo kProductionScatter = ScatterAlgo::kDirect;

template <typename T>
Status ScatterAddImpl(ThreadPool* pool, const ScatterAddArgs<T>& a, ScatterAlgo algo) {
  IPS_RETURN_IF_ERROR(CheckFlatIndices("ScatterAdd", "inverse", a.inverse, a.n, a.num_unique));
  Scatter(pool, algo, a.num_unique, a.dim, a.grad_unique, [&](auto&& fn) {
    for (int64_t i = 0; i < a.n; ++i) fn(a.inverse[i], a.grad_rows + i * a.dim, T(1));
  });
  return Status::Ok();
}

template <typename T>
Status GatherPaddedBackwardCpu(ThreadPool* pool, const GatherPaddedBackwardArgs<T>& a) {
  const char* op = "GatherPaddedBackward";
  IPS_RETURN_IF_ERROR(CheckLengths(op, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckPaddedIndices(op, a.indices, a.lengths, a.batch, a.max_len, a.num_rows));
  Scatter(pool, kProductionScatter, a.num_rows, a.dim, a.grad_table, [&](auto&& fn) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const int64_t base = b * a.max_len;
      for (int64_t t = 0; t < a.lengths[b]; ++t)
        fn(a.indices[base + t], a.grad_out + (base + t) * a.dim, T(1));
    }
  });
  return Status::Ok();
}

template <typename T>
Status PooledPaddedBackwardCpu(ThreadPool* pool, const PooledPaddedBackwardArgs<T>& a) {
  const char* op = "PooledPaddedBackward";
  IPS_RETURN_IF_ERROR(CheckLengths(op, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckPaddedIndices(op, a.indices, a.lengths, a.batch, a.max_len, a.num_rows));
  Scatter(pool, kProductionScatter, a.num_rows, a.dim, a.grad_table, [&](auto&& fn) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const int64_t len = a.lengths[b];
      const T scale = a.mode == Pooling::kMean && len > 0 ? T(1) / static_cast<T>(len) : T(1);
      for (int64_t t = 0; t < len; ++t)
        fn(a.indices[b * a.max_len + t], a.grad_out + b * a.dim, scale);
    }
  });
  return Status::Ok();
}

template <typename T>
Status PooledJaggedBackwardCpu(ThreadPool* pool, const PooledJaggedBackwardArgs<T>& a) {
  const char* op = "PooledJaggedBackward";
  IPS_RETURN_IF_ERROR(CheckOffsets(op, a.offsets, a.batch, a.nnz));
  IPS_RETURN_IF_ERROR(CheckFlatIndices(op, "indices", a.indices, a.nnz, a.num_rows));
  Scatter(pool, kProductionScatter, a.num_rows, a.dim, a.grad_table, [&](auto&& fn) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const int64_t len = a.offsets[b + 1] - a.offsets[b];
      const T scale = a.mode == Pooling::kMean && len > 0 ? T(1) / static_cast<T>(len) : T(1);
      for (int64_t j = a.offsets[b]; j < a.offsets[b + 1]; ++j)
        fn(a.indices[j], a.grad_out + b * a.dim, scale);
    }
  });
  return Status::Ok();
}

template <typename T>
constexpr bool kIsFloat = std::is_same_v<T, float>;

#ifndef IPS_WITH_CUDA
Status NoCuda(const char* op) {
  return UnimplementedError(std::string(op) +
                            ": this build has no CUDA (configure with IPS_CUDA=ON)");
}
#endif

}  // namespace

// ---- Public entry points -----------------------------------------------------------------
// Each validates host-visible sizes and pointers, then runs the CPU path or the CUDA launcher.

#ifdef IPS_WITH_CUDA
#define IPS_EMBEDDING_DISPATCH_CUDA(op, call)                              \
  do {                                                                     \
    if constexpr (kIsFloat<T>) {                                           \
      return call;                                                         \
    } else {                                                               \
      return UnimplementedError(std::string(op) + ": double is CPU-only"); \
    }                                                                      \
  } while (0)
#else
#define IPS_EMBEDDING_DISPATCH_CUDA(op, call) return NoCuda(op)
#endif

template <typename T>
Status GatherPadded(const Context& ctx, const GatherPaddedArgs<T>& a) {
  const char* op = "GatherPadded";
  IPS_RETURN_IF_ERROR(CheckTable(op, a.table, a.table_rows, a.dim));
  IPS_RETURN_IF_ERROR(CheckPaddedShape(op, a.indices, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "out", a.out, a.batch * a.max_len * a.dim > 0));
  if (a.batch * a.max_len * a.dim == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) return GatherPaddedCpu(ctx.pool, a);
  IPS_EMBEDDING_DISPATCH_CUDA(op, GatherPaddedCuda(ctx, a));
}

template <typename T>
Status GatherJagged(const Context& ctx, const GatherJaggedArgs<T>& a) {
  const char* op = "GatherJagged";
  IPS_RETURN_IF_ERROR(CheckTable(op, a.table, a.table_rows, a.dim));
  IPS_RETURN_IF_ERROR(CheckJaggedShape(op, a.indices, a.offsets, a.batch, a.nnz));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "out", a.out, a.nnz * a.dim > 0));
  if (ctx.device == Device::kCpu) {
    if (a.dim == 0) return CheckOffsets(op, a.offsets, a.batch, a.nnz);
    return GatherJaggedCpu(ctx.pool, a);
  }
  if (a.nnz * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA(op, GatherJaggedCuda(ctx, a));
}

template <typename T>
Status PooledPadded(const Context& ctx, const PooledPaddedArgs<T>& a) {
  const char* op = "PooledPadded";
  IPS_RETURN_IF_ERROR(CheckTable(op, a.table, a.table_rows, a.dim));
  IPS_RETURN_IF_ERROR(CheckPaddedShape(op, a.indices, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "out", a.out, a.batch * a.dim > 0));
  if (a.batch * a.dim == 0) return Status::Ok();
  if (ctx.device == Device::kCpu) return PooledPaddedCpu(ctx.pool, a);
  IPS_EMBEDDING_DISPATCH_CUDA(op, PooledPaddedCuda(ctx, a));
}

template <typename T>
Status PooledJagged(const Context& ctx, const PooledJaggedArgs<T>& a) {
  const char* op = "PooledJagged";
  IPS_RETURN_IF_ERROR(CheckTable(op, a.table, a.table_rows, a.dim));
  IPS_RETURN_IF_ERROR(CheckJaggedShape(op, a.indices, a.offsets, a.batch, a.nnz));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "out", a.out, a.batch * a.dim > 0));
  if (ctx.device == Device::kCpu) {
    if (a.batch * a.dim == 0) return CheckOffsets(op, a.offsets, a.batch, a.nnz);
    return PooledJaggedCpu(ctx.pool, a);
  }
  if (a.batch * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA(op, PooledJaggedCuda(ctx, a));
}

StatusOr<size_t> DedupWorkspaceBytes(const Context& ctx, int64_t n) {
  if (n < 0 || n > kMaxDedupKeys)
    return InvalidArgumentError("DedupWorkspaceBytes: n = " + std::to_string(n) +
                                " is outside [0, 2^30]");
  if (ctx.device == Device::kCpu) return HashCapacity(n) * sizeof(int32_t);
#ifdef IPS_WITH_CUDA
  return DedupWorkspaceBytesCuda(n);
#else
  return NoCuda("DedupWorkspaceBytes");
#endif
}

namespace {
Status CheckDedup(const DedupArgs& a) {
  const char* op = "DedupKeys";
  if (a.n < 0 || a.n > kMaxDedupKeys)
    return Invalid(op, "n = " + std::to_string(a.n) + " is outside [0, 2^30]");
  IPS_RETURN_IF_ERROR(CheckPtr(op, "num_unique", a.num_unique, true));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "keys", a.keys, a.n > 0));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "unique_keys", a.unique_keys, a.n > 0));
  return CheckPtr(op, "inverse", a.inverse, a.n > 0);
}
}  // namespace

Status DedupKeys(const Context& ctx, const DedupArgs& a) {
  IPS_RETURN_IF_ERROR(CheckDedup(a));
  if (ctx.device == Device::kCpu) return DedupHashCpu(a);
#ifdef IPS_WITH_CUDA
  return DedupKeysCuda(ctx, a);
#else
  return NoCuda("DedupKeys");
#endif
}

Status DedupKeysSortCpu(const DedupArgs& a) {
  IPS_RETURN_IF_ERROR(CheckDedup(a));
  thread_local std::vector<std::pair<int64_t, int64_t>> pairs;
  pairs.resize(static_cast<size_t>(a.n));
  for (int64_t i = 0; i < a.n; ++i) pairs[i] = {a.keys[i], i};
  std::sort(pairs.begin(), pairs.end());
  int64_t u = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    if (i == 0 || pairs[i].first != pairs[i - 1].first) a.unique_keys[u++] = pairs[i].first;
    a.inverse[pairs[i].second] = u - 1;
  }
  *a.num_unique = u;
  return Status::Ok();
}

namespace {
template <typename T>
Status CheckScatterAdd(const ScatterAddArgs<T>& a) {
  const char* op = "ScatterAdd";
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "n", a.n));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "dim", a.dim));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "num_unique", a.num_unique));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "inverse", a.inverse, a.n > 0));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_rows", a.grad_rows, a.n * a.dim > 0));
  return CheckPtr(op, "grad_unique", a.grad_unique, a.num_unique * a.dim > 0);
}
}  // namespace

template <typename T>
Status ScatterAdd(const Context& ctx, const ScatterAddArgs<T>& a) {
  IPS_RETURN_IF_ERROR(CheckScatterAdd(a));
  if (ctx.device == Device::kCpu) return ScatterAddImpl(ctx.pool, a, kProductionScatter);
  if (a.num_unique * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA("ScatterAdd", ScatterAddCuda(ctx, a));
}

template <typename T>
Status ScatterAddCpu(ThreadPool* pool, const ScatterAddArgs<T>& a, ScatterAlgo algo) {
  IPS_RETURN_IF_ERROR(CheckScatterAdd(a));
  return ScatterAddImpl(pool, a, algo);
}

template <typename T>
Status GatherPaddedBackward(const Context& ctx, const GatherPaddedBackwardArgs<T>& a) {
  const char* op = "GatherPaddedBackward";
  IPS_RETURN_IF_ERROR(CheckPaddedShape(op, a.indices, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "dim", a.dim));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "num_rows", a.num_rows));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_out", a.grad_out, a.batch * a.max_len * a.dim > 0));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_table", a.grad_table, a.num_rows * a.dim > 0));
  if (ctx.device == Device::kCpu) return GatherPaddedBackwardCpu(ctx.pool, a);
  if (a.num_rows * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA(op, GatherPaddedBackwardCuda(ctx, a));
}

template <typename T>
Status PooledPaddedBackward(const Context& ctx, const PooledPaddedBackwardArgs<T>& a) {
  const char* op = "PooledPaddedBackward";
  IPS_RETURN_IF_ERROR(CheckPaddedShape(op, a.indices, a.lengths, a.batch, a.max_len));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "dim", a.dim));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "num_rows", a.num_rows));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_out", a.grad_out, a.batch * a.dim > 0));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_table", a.grad_table, a.num_rows * a.dim > 0));
  if (ctx.device == Device::kCpu) return PooledPaddedBackwardCpu(ctx.pool, a);
  if (a.num_rows * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA(op, PooledPaddedBackwardCuda(ctx, a));
}

template <typename T>
Status PooledJaggedBackward(const Context& ctx, const PooledJaggedBackwardArgs<T>& a) {
  const char* op = "PooledJaggedBackward";
  IPS_RETURN_IF_ERROR(CheckJaggedShape(op, a.indices, a.offsets, a.batch, a.nnz));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "dim", a.dim));
  IPS_RETURN_IF_ERROR(CheckNonNegative(op, "num_rows", a.num_rows));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_out", a.grad_out, a.batch * a.dim > 0));
  IPS_RETURN_IF_ERROR(CheckPtr(op, "grad_table", a.grad_table, a.num_rows * a.dim > 0));
  if (ctx.device == Device::kCpu) return PooledJaggedBackwardCpu(ctx.pool, a);
  if (a.num_rows * a.dim == 0) return Status::Ok();
  IPS_EMBEDDING_DISPATCH_CUDA(op, PooledJaggedBackwardCuda(ctx, a));
}

#undef IPS_EMBEDDING_DISPATCH_CUDA

#define IPS_INSTANTIATE_EMBEDDING(T)                                                           \
  template Status GatherPadded<T>(const Context&, const GatherPaddedArgs<T>&);                 \
  template Status GatherJagged<T>(const Context&, const GatherJaggedArgs<T>&);                 \
  template Status PooledPadded<T>(const Context&, const PooledPaddedArgs<T>&);                 \
  template Status PooledJagged<T>(const Context&, const PooledJaggedArgs<T>&);                 \
  template Status ScatterAdd<T>(const Context&, const ScatterAddArgs<T>&);                     \
  template Status ScatterAddCpu<T>(ThreadPool*, const ScatterAddArgs<T>&, ScatterAlgo);        \
  template Status GatherPaddedBackward<T>(const Context&, const GatherPaddedBackwardArgs<T>&); \
  template Status PooledPaddedBackward<T>(const Context&, const PooledPaddedBackwardArgs<T>&); \
  template Status PooledJaggedBackward<T>(const Context&, const PooledJaggedBackwardArgs<T>&);
IPS_INSTANTIATE_EMBEDDING(float)
IPS_INSTANTIATE_EMBEDDING(double)
#undef IPS_INSTANTIATE_EMBEDDING

}  // namespace ips::kernels
