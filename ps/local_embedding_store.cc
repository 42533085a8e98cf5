#include "ps/local_embedding_store.h"

#include <string>
#include <utility>

namespace ips::ps {

StatusOr<std::unique_ptr<LocalEmbeddingStore>> LocalEmbeddingStore::Create(
    const std::vector<TableOptions>& tables, ThreadPool* pool) {
  std::unique_ptr<LocalEmbeddingStore> store(new LocalEmbeddingStore());
  store->pool_ = pool;
  for (const TableOptions& options : tables) {
    for (const auto& t : store->tables_) {
      if (t->options().name == options.name)
        return InvalidArgumentError("embedding store: two tables named '" + options.name + "'");
    }
    IPS_ASSIGN_OR_RETURN(std::unique_ptr<DynamicTable> table, DynamicTable::Create(options));
    store->tables_.push_back(std::move(table));
  }
  return store;
}

StatusOr<std::unique_ptr<LocalEmbeddingStore>> LocalEmbeddingStore::CreateThreaded(
    const std::vector<TableOptions>& tables, int num_threads) {
  std::unique_ptr<ThreadPool> pool;
  if (num_threads > 1) pool = std::make_unique<ThreadPool>(num_threads);
  IPS_ASSIGN_OR_RETURN(auto store, Create(tables, pool.get()));
  store->owned_pool_ = std::move(pool);
  return store;
}

StatusOr<int> LocalEmbeddingStore::FindTable(const std::string& name) const {
  for (size_t i = 0; i < tables_.size(); ++i)
    if (tables_[i]->options().name == name) return static_cast<int>(i);
  return NotFoundError("embedding store: no table named '" + name + "'");
}

StatusOr<DynamicTable*> LocalEmbeddingStore::table(int table) const {
  if (table < 0 || table >= static_cast<int>(tables_.size()))
    return NotFoundError("embedding store: no table with id " + std::to_string(table) + " (" +
                         std::to_string(tables_.size()) + " tables)");
  return tables_[static_cast<size_t>(table)].get();
}

StatusOr<int64_t> LocalEmbeddingStore::TableDim(int t) const {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, table(t));
  return table->dim();
}

StatusOr<DynamicTable*> LocalEmbeddingStore::Checked(int t, int64_t dim) const {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, table(t));
  if (dim != table->dim())
    return InvalidArgumentError("table '" + table->options().name + "': dim " +
                                std::to_string(dim) + " does not match the table's " +
                                std::to_string(table->dim()));
  return table;
}

Status LocalEmbeddingStore::Pull(int t, const uint64_t* keys, int64_t n, int64_t dim, float* out) {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, Checked(t, dim));
  return table->Pull(keys, n, out, pool_);
}

Status LocalEmbeddingStore::Lookup(int t, const uint64_t* keys, int64_t n, int64_t dim,
                                   float* out) {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, Checked(t, dim));
  return table->Lookup(keys, n, out, pool_);
}

Status LocalEmbeddingStore::Push(int t, const uint64_t* keys, int64_t n, int64_t dim,
                                 const float* grads) {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, Checked(t, dim));
  return table->Push(keys, n, grads, pool_);
}

Status LocalEmbeddingStore::AdvanceStep(int64_t step) {
  if (step < 0)
    return InvalidArgumentError("embedding store: negative step " + std::to_string(step));
  for (auto& table : tables_) table->AdvanceStep(step);
  return Status::Ok();
}

StatusOr<TableStats> LocalEmbeddingStore::Stats(int t) const {
  IPS_ASSIGN_OR_RETURN(DynamicTable * table, table(t));
  return table->Stats();
}

}  // namespace ips::ps
