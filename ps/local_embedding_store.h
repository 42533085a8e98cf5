// LocalEmbeddingStore: the in-process EmbeddingStore, a fixed set of DynamicTables created
// together. The single-process trainer pulls and pushes through it directly; a parameter server
// holds one for its shard of every table and serves client requests from it.
#ifndef IPS_PS_LOCAL_EMBEDDING_STORE_H_
#define IPS_PS_LOCAL_EMBEDDING_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "ps/dynamic_table.h"
#include "ps/embedding_store.h"
#include "ps/table_options.h"

namespace ips::ps {

class LocalEmbeddingStore : public EmbeddingStore {
 public:
  // One table per entry, with table id = its position in `tables`. INVALID_ARGUMENT for bad
  // options (naming the table and field) or two tables with the same name. `pool` (not owned,
  // may be null, must outlive the store) spreads a large Pull, Lookup or Push over the table's
  // shards (DynamicTable::kParallelKeys); the results do not depend on it. The store's calls
  // then serialise on the pool (ThreadPool::ParallelFor takes one caller at a time).
  static StatusOr<std::unique_ptr<LocalEmbeddingStore>> Create(
      const std::vector<TableOptions>& tables, ThreadPool* pool = nullptr);
  // The same with a pool of its own of num_threads threads (1 or less: none), for a caller with
  // no pool to share: the single-process trainer gives it its thread count, so the batch's
  // pull and push spread over the tables' shards as a parameter server's do.
  static StatusOr<std::unique_ptr<LocalEmbeddingStore>> CreateThreaded(
      const std::vector<TableOptions>& tables, int num_threads);

  StatusOr<int> FindTable(const std::string& name) const override;
  StatusOr<int64_t> TableDim(int table) const override;
  Status Pull(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override;
  Status Lookup(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override;
  Status Push(int table, const uint64_t* keys, int64_t n, int64_t dim, const float* grads) override;
  // Advances every table (TTL sweeps run here when due).
  Status AdvanceStep(int64_t step) override;
  StatusOr<TableStats> Stats(int table) const override;

  int num_tables() const { return static_cast<int>(tables_.size()); }
  // Direct access for checkpoints (ForEachRow / Insert) and tests; NOT_FOUND for a bad id.
  // The table is owned by the store and lives as long as it.
  StatusOr<DynamicTable*> table(int table) const;

 private:
  LocalEmbeddingStore() = default;
  StatusOr<DynamicTable*> Checked(int table, int64_t dim) const;

  std::vector<std::unique_ptr<DynamicTable>> tables_;  // fixed after Create: no lock needed
  std::unique_ptr<ThreadPool> owned_pool_;             // CreateThreaded's
  ThreadPool* pool_ = nullptr;
};

}  // namespace ips::ps

#endif  // IPS_PS_LOCAL_EMBEDDING_STORE_H_
