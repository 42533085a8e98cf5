// EmbeddingStore: the interface through which the trainer reads and updates sparse embedding
// rows, whether the rows live in this process (LocalEmbeddingStore, ps/local_embedding_store.h)
// or on parameter servers behind a client. Owns the contract only: what Pull/Push mean, their
// errors and their thread safety, and the per-table statistics record.
//
// Keys are arbitrary 64-bit ids; no table has a fixed vocabulary. A pull creates the rows of keys
// it has not seen (subject to feature admission, see TableOptions::min_count) and returns their
// values; a push applies per-key gradients with the table's optimizer (kernels/optimizer.h).
#ifndef IPS_PS_EMBEDDING_STORE_H_
#define IPS_PS_EMBEDDING_STORE_H_

#include <cstdint>
#include <string>

#include "common/status.h"

namespace ips::ps {

// Counters and memory of one table. Memory counts everything the table allocates that grows with
// its rows: arena slabs (values, optimizer state and per-row metadata, free slots included), the
// hash index and the admission sketch.
struct TableStats {
  std::string name;
  int64_t dim = 0;
  int64_t rows = 0;           // live rows
  int64_t capacity_rows = 0;  // row slots allocated (live + free)
  int64_t bytes = 0;          // slab_bytes + index_bytes + sketch_bytes
  int64_t slab_bytes = 0;
  int64_t index_bytes = 0;
  int64_t sketch_bytes = 0;
  // Bytes of one row's value + optimizer state, the 1x baseline of the memory target.
  int64_t payload_bytes_per_row = 0;
  int64_t created_rows = 0;       // rows created by pulls (admitted keys) and inserts
  int64_t unadmitted_pulls = 0;   // pulled keys below min_count: served the zero vector
  int64_t dropped_push_keys = 0;  // pushed keys without a row: gradient dropped
  int64_t evicted_ttl = 0;        // rows removed as unseen for ttl_steps
  int64_t evicted_capacity = 0;   // rows removed to stay under max_memory_mb
  int64_t pulled_keys = 0;
  int64_t pushed_keys = 0;
  // Pushed keys whose rows a recorded pull had found (DynamicTable::Pull); not sent by servers.
  int64_t push_keys_resolved_by_pull = 0;
  int64_t optimizer_step = 0;  // pushes applied so far (Adam's step count)
  // bytes / rows (0 when empty).
  double BytesPerRow() const { return rows > 0 ? static_cast<double>(bytes) / rows : 0.0; }
};

class EmbeddingStore {
 public:
  virtual ~EmbeddingStore() = default;

  // Id of the table called `name`, for the calls below. NOT_FOUND when there is none.
  virtual StatusOr<int> FindTable(const std::string& name) const = 0;
  // Row width of `table`. NOT_FOUND for an unknown table id.
  virtual StatusOr<int64_t> TableDim(int table) const = 0;

  // Writes the rows of keys[0, n) to out[n x dim] (row i at out + i * dim). Keys without a row
  // get one, initialised by InitializeRow (ps/table_options.h), once admitted; a key not yet
  // admitted reads as zeros. Duplicate keys are allowed and read the same row. A pull counts as
  // a sighting for admission, TTL and LFU/LRU. Errors: NOT_FOUND (unknown table),
  // INVALID_ARGUMENT (dim differs from the table's, n < 0, null pointers with n > 0),
  // RESOURCE_EXHAUSTED (a shard exceeds 2^24 - 1 rows); after an error `out` is unspecified.
  // Thread-safe.
  virtual Status Pull(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) = 0;

  // As Pull, but read-only: creates no row, counts no sighting, missing keys read as zeros
  // (evaluation). Thread-safe.
  virtual Status Lookup(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) = 0;

  // Applies grads[n x dim] (row i is the gradient of keys[i]) with the table's optimizer as one
  // optimizer step: Adam's step count advances by one per Push call. Duplicate keys in one call
  // are summed first (as torch coalesces a sparse gradient). Keys without a row (not admitted,
  // or evicted since the pull) are dropped and counted in TableStats::dropped_push_keys.
  // Errors: as Pull, plus the optimizer kernel's. Thread-safe; concurrent pushes to the same key
  // are serialised (each applied whole, in an unspecified order).
  virtual Status Push(int table, const uint64_t* keys, int64_t n, int64_t dim,
                      const float* grads) = 0;

  // A hint that the NEXT step will Pull keys[0, n) of `table` (same keys, same order): a store
  // whose rows are remote starts that pull now, so that it overlaps this step's compute and
  // push, and serves the next matching Pull from it. Call it after this step's Pull of the table
  // and before its Push. The rows it delivers are what that Pull would read (in sync mode, after
  // this step's push; see ps/remote_store.h); a Pull of other keys ignores it. Pass only keys
  // the next step will really pull: a remote store's prefetch counts as a pull on the server
  // (creates rows, counts a sighting) even when nothing consumes it. The keys are copied.
  // The in-process store reads its rows in place and has nothing to start: the default is a
  // no-op. Errors: NOT_FOUND (unknown table), INVALID_ARGUMENT (n < 0, null keys with n > 0).
  // Thread-safe as Pull.
  virtual Status PrefetchPull(int table, const uint64_t* keys, int64_t n) {
    if (n < 0 || (n > 0 && keys == nullptr))
      return InvalidArgumentError("PrefetchPull: bad keys (n = " + std::to_string(n) + ")");
    return TableDim(table).status();
  }

  // Sets the global training step used for TTL ages and LRU recency (steps normally increase
  // by one per trainer step) and runs due TTL sweeps. Thread-safe.
  virtual Status AdvanceStep(int64_t step) = 0;

  // Statistics of `table`; NOT_FOUND for an unknown id. Thread-safe (a consistent snapshot
  // per shard, not across shards).
  virtual StatusOr<TableStats> Stats(int table) const = 0;
};

}  // namespace ips::ps

#endif  // IPS_PS_EMBEDDING_STORE_H_
