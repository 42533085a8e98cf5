// Table options for the embedding store: a plain struct that mirrors proto TableConfig
// (proto/config.proto) field for field, so that config -> options is one function in the caller
// and ps/ stays free of protobuf. Also owns the pure row-initialisation function, so every
// process (trainer, any parameter server, any sharding) creates bit-identical rows for a key.
#ifndef IPS_PS_TABLE_OPTIONS_H_
#define IPS_PS_TABLE_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "kernels/optimizer.h"

namespace ips::ps {

// Mirrors OptimizerConfig. The update arithmetic lives in kernels/optimizer.h; this only selects
// it. Field use by type:
//   SGD      learning_rate
//   ADAGRAD  learning_rate, epsilon, initial_accumulator (the accumulator's value on a new row)
//   ADAM     learning_rate, beta1, beta2, epsilon (torch.optim.SparseAdam semantics)
//   FTRL     learning_rate (= the paper's alpha), ftrl_beta, l1, l2
// Note the config's single `epsilon` (default 1e-8) feeds both Adagrad and Adam; torch's Adagrad
// default is 1e-10, so a caller matching torch's Adagrad sets epsilon = 1e-10 explicitly.
struct OptimizerOptions {
  enum class Type { kSgd, kAdagrad, kAdam, kFtrl };
  Type type = Type::kAdam;
  double learning_rate = 0.001;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double initial_accumulator = 0.0;
  double l1 = 0.0;
  double l2 = 0.0;
  double ftrl_beta = 1.0;
};

// Mirrors InitializerConfig, plus `xavier_fan_rows`, which the config does not have.
//
// Xavier normal for a [rows x dim] table is torch's nn.init.xavier_normal_: fan_in = dim,
// fan_out = rows, std = sqrt(2 / (rows + dim)). A dynamic table has no fixed row count, so the
// row fan is an option: set it to the peer's table size (n_items + 1) to reproduce the peer's
// initial scale exactly; the default 1e6 suits a table of about a million keys.
struct InitializerOptions {
  enum class Type { kXavierNormal, kNormal, kUniform, kZeros };
  Type type = Type::kXavierNormal;
  double stddev = 0.01;  // kNormal
  double range = 0.05;   // kUniform: U[-range, range)
  double xavier_fan_rows = 1e6;
};

// Mirrors TableConfig plus store-only knobs (seed, sharding, slab size).
struct TableOptions {
  std::string name;
  int64_t dim = 18;
  OptimizerOptions optimizer;
  InitializerOptions initializer;
  // Feature admission: a key gets a row on its min_count-th pull (0 and 1: on its first).
  int64_t min_count = 0;
  // Rows not pulled or pushed during the last ttl_steps steps are evicted (0 = never).
  int64_t ttl_steps = 0;
  // Cap on this table's memory in this process, index and sketch included (0 = none).
  int64_t max_memory_mb = 0;
  enum class Eviction { kLfu, kLru };
  Eviction eviction = Eviction::kLfu;

  // --- Store-only options (not in the config; defaults suit every table we train) ---
  // Seed of row initialisation; with the name and the key it fully determines a new row.
  uint64_t seed = 0;
  // Independent sub-tables, each with its own mutex: concurrency across threads.
  int num_shards = 16;
  // Rows per arena slab (power of two). A shard allocates whole slabs, so the smallest table
  // holds num_shards * rows_per_slab rows of memory once every shard has a key.
  int64_t rows_per_slab = 512;
  // Width of each of the 4 rows of a shard's admission count sketch (power of two, <= 65536);
  // used only when min_count > 1.
  int64_t sketch_width = 16384;
  // A key that always reads as zeros and is never created or updated (torch's padding_idx:
  // the peer's item table keeps row 0 at zero). Pushes to it are ignored, not counted as dropped.
  bool has_padding_key = false;
  uint64_t padding_key = 0;
  // TTL sweeps run from AdvanceStep every this many steps (0 = max(1, ttl_steps / 8)). Expired
  // rows are never served in between: a pull that finds one treats it as evicted.
  int64_t ttl_sweep_interval = 0;
};

// The ranges the store accepts (ValidateTableOptions).
constexpr int64_t kMaxTableDim = 65536;
constexpr int64_t kMaxMinCount = 65535;  // the admission sketch's counters are 16 bits
constexpr int64_t kMaxTtlSteps = (int64_t{1} << 30) - 1;

// How an options check reports a failed check: `field` is the option at fault as the options
// struct spells it ("dim", "optimizer.beta1") and `what` says why ("must be at most 65536, got
// 70000"); the Status it returns is the check's result. The one copy of each rule lives in the
// Check* functions; each caller words the error for its user: ValidateTableOptions as "table
// 'NAME': FIELD WHAT", the config check (worker/config_validation.h) with the config field path
// and the --set or file line that set it.
using OptionFailure = std::function<Status(const std::string& field, const std::string& what)>;

// The checks of an optimizer's options (fields "learning_rate", "beta1", ...): the ones its type
// reads.
Status CheckOptimizerOptions(const OptimizerOptions& options, const OptionFailure& fail);

// Every check of ValidateTableOptions, reported through `fail` (the optimizer's fields as
// "optimizer.<field>", the initializer's as "initializer.<field>").
Status CheckTableOptions(const TableOptions& options, const OptionFailure& fail);

// INVALID_ARGUMENT "table 'NAME': FIELD WHAT" when an option is out of range.
Status ValidateTableOptions(const TableOptions& options);

// The smallest max_memory_mb, in MB rounded up, that holds a table of these options: one slab of
// rows and its index in every shard, plus the admission sketches when min_count > 1. It grows
// with dim and the optimizer's state per row. DynamicTable::Create refuses a cap below it (0, no
// cap, is always fine). For valid options.
int64_t MinMemoryMb(const TableOptions& options);

// The config's name of an optimizer type (proto OptimizerConfig.Type): "SGD", "ADAM", ...
const char* OptimizerTypeName(OptimizerOptions::Type type);

// The kernel hyper-parameters for the options' optimizer.
kernels::OptimizerHyper ToOptimizerHyper(const OptimizerOptions& options);
kernels::OptimizerKind ToOptimizerKind(OptimizerOptions::Type type);

// Stable 64-bit id of a table name (FNV-1a then Mix64): independent of table order.
uint64_t TableNameHash(const std::string& name);

// Writes the initial value of `key`'s row (dim floats) to `row`: a pure function of
// (name_hash, seed, key) and the initializer, drawn from Rng(Mix64(Mix64(seed ^ name_hash) ^ key)).
// Thread-safe.
void InitializeRow(const InitializerOptions& init, int64_t dim, uint64_t name_hash, uint64_t seed,
                   uint64_t key, float* row);

}  // namespace ips::ps

#endif  // IPS_PS_TABLE_OPTIONS_H_
