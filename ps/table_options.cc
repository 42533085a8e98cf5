#include "ps/table_options.h"

#include <cmath>
#include <sstream>
#include <string>

#include "common/random.h"
#include "ps/internal/count_sketch.h"
#include "ps/internal/table_shard.h"

namespace ips::ps {
namespace {

bool IsPowerOfTwo(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

std::string Num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

Status CheckOptimizerOptions(const OptimizerOptions& o, const OptionFailure& fail) {
  if (!std::isfinite(o.learning_rate))
    return fail("learning_rate", "must be finite, got " + Num(o.learning_rate));
  if (!(o.learning_rate > 0)) return fail("learning_rate", "must be positive");
  const bool adam = o.type == OptimizerOptions::Type::kAdam;
  if (adam && !(o.beta1 >= 0 && o.beta1 < 1))
    return fail("beta1", "must be in [0, 1), got " + Num(o.beta1));
  if (adam && !(o.beta2 >= 0 && o.beta2 < 1))
    return fail("beta2", "must be in [0, 1), got " + Num(o.beta2));
  if ((adam || o.type == OptimizerOptions::Type::kAdagrad) && !(o.epsilon > 0))
    return fail("epsilon", "must be positive, got " + Num(o.epsilon));
  if (!(o.initial_accumulator >= 0))
    return fail("initial_accumulator", "must be >= 0, got " + Num(o.initial_accumulator));
  if (o.type == OptimizerOptions::Type::kFtrl) {
    if (!(o.l1 >= 0)) return fail("l1", "must be >= 0, got " + Num(o.l1));
    if (!(o.l2 >= 0)) return fail("l2", "must be >= 0, got " + Num(o.l2));
    if (!(o.ftrl_beta >= 0)) return fail("ftrl_beta", "must be >= 0, got " + Num(o.ftrl_beta));
  }
  return Status::Ok();
}

Status CheckTableOptions(const TableOptions& o, const OptionFailure& fail) {
  if (o.name.empty()) return fail("name", "is empty");
  if (o.dim <= 0) return fail("dim", "must be positive, got " + std::to_string(o.dim));
  if (o.dim > kMaxTableDim)
    return fail("dim", "must be at most " + std::to_string(kMaxTableDim) + ", got " +
                           std::to_string(o.dim));
  IPS_RETURN_IF_ERROR(
      CheckOptimizerOptions(o.optimizer, [&](const std::string& field, const std::string& what) {
        return fail("optimizer." + field, what);
      }));
  const InitializerOptions& init = o.initializer;
  if (init.type == InitializerOptions::Type::kNormal && !(init.stddev >= 0))
    return fail("initializer.stddev", "must be >= 0, got " + Num(init.stddev));
  if (init.type == InitializerOptions::Type::kUniform && !(init.range >= 0))
    return fail("initializer.range", "must be >= 0, got " + Num(init.range));
  if (init.type == InitializerOptions::Type::kXavierNormal && !(init.xavier_fan_rows > 0))
    return fail("initializer.xavier_fan_rows", "must be positive");
  if (o.min_count < 0) return fail("min_count", "must be >= 0");
  if (o.min_count > kMaxMinCount)
    return fail("min_count", "must be at most " + std::to_string(kMaxMinCount) +
                                 " (the admission counters are 16 bits), got " +
                                 std::to_string(o.min_count));
  if (o.ttl_steps < 0 || o.ttl_steps > kMaxTtlSteps)
    return fail("ttl_steps", "must be in [0, " + std::to_string(kMaxTtlSteps) +
                                 "] (0: rows never expire), got " + std::to_string(o.ttl_steps));
  if (o.max_memory_mb < 0)
    return fail("max_memory_mb",
                "must be >= 0 (0: no cap), got " + std::to_string(o.max_memory_mb));
  if (o.num_shards < 1 || o.num_shards > 4096) return fail("num_shards", "must be in [1, 4096]");
  if (!IsPowerOfTwo(o.rows_per_slab) || o.rows_per_slab > (int64_t{1} << 20))
    return fail("rows_per_slab", "must be a power of two <= 2^20");
  if (o.min_count > 1 && (!IsPowerOfTwo(o.sketch_width) || o.sketch_width > 65536))
    return fail("sketch_width", "must be a power of two <= 65536");
  if (o.ttl_sweep_interval < 0) return fail("ttl_sweep_interval", "must be >= 0");
  if (o.max_memory_mb > 0) {
    // Each shard's share of the cap must hold one slab and its index (and sketch). The message
    // names only what a config sets: the layout (shards, slab rows) is the store's own.
    const int64_t minimum_mb = MinMemoryMb(o);
    if (o.max_memory_mb < minimum_mb) {
      std::string needs = "dim " + std::to_string(o.dim) + " with " +
                          OptimizerTypeName(o.optimizer.type) + "'s optimizer state";
      if (o.min_count > 1)
        needs += " and the admission counts of min_count " + std::to_string(o.min_count);
      return fail("max_memory_mb",
                  std::to_string(o.max_memory_mb) + " is below the " + std::to_string(minimum_mb) +
                      " MB this table needs at least (" + needs + "); set max_memory_mb to " +
                      std::to_string(minimum_mb) + " or more, or to 0 for no cap");
    }
  }
  return Status::Ok();
}

Status ValidateTableOptions(const TableOptions& o) {
  return CheckTableOptions(o, [&](const std::string& field, const std::string& what) {
    return InvalidArgumentError((o.name.empty() ? "table options: " : "table '" + o.name + "': ") +
                                field + " " + what);
  });
}

int64_t MinMemoryMb(const TableOptions& o) {
  const int state_count = kernels::OptimizerStateCount(ToOptimizerKind(o.optimizer.type));
  const int64_t sketch_bytes =
      o.min_count > 1 ? internal::CountSketch::kDepth * o.sketch_width * int64_t{sizeof(uint16_t)}
                      : 0;
  const int64_t shard_bytes = internal::SlabBytesFor(o.rows_per_slab, o.dim, state_count) +
                              internal::IndexBytesFor(o.rows_per_slab) + sketch_bytes;
  // The cap is split evenly across the shards (DynamicTable::Create): each share must hold one.
  const int64_t mb = int64_t{1} << 20;
  return (shard_bytes * o.num_shards + mb - 1) / mb;
}

const char* OptimizerTypeName(OptimizerOptions::Type type) {
  switch (type) {
    case OptimizerOptions::Type::kSgd:
      return "SGD";
    case OptimizerOptions::Type::kAdagrad:
      return "ADAGRAD";
    case OptimizerOptions::Type::kAdam:
      return "ADAM";
    case OptimizerOptions::Type::kFtrl:
      return "FTRL";
  }
  return "unknown";
}

kernels::OptimizerKind ToOptimizerKind(OptimizerOptions::Type type) {
  switch (type) {
    case OptimizerOptions::Type::kSgd:
      return kernels::OptimizerKind::kSgd;
    case OptimizerOptions::Type::kAdagrad:
      return kernels::OptimizerKind::kAdagrad;
    case OptimizerOptions::Type::kAdam:
      return kernels::OptimizerKind::kAdam;
    case OptimizerOptions::Type::kFtrl:
      return kernels::OptimizerKind::kFtrl;
  }
  return kernels::OptimizerKind::kSgd;
}

kernels::OptimizerHyper ToOptimizerHyper(const OptimizerOptions& o) {
  switch (o.type) {
    case OptimizerOptions::Type::kSgd:
      return kernels::OptimizerHyper::Sgd(o.learning_rate);
    case OptimizerOptions::Type::kAdagrad:
      return kernels::OptimizerHyper::Adagrad(o.learning_rate, o.epsilon);
    case OptimizerOptions::Type::kAdam:
      return kernels::OptimizerHyper::Adam(o.learning_rate, o.beta1, o.beta2, o.epsilon);
    case OptimizerOptions::Type::kFtrl:
      return kernels::OptimizerHyper::Ftrl(o.learning_rate, o.ftrl_beta, o.l1, o.l2);
  }
  return kernels::OptimizerHyper::Sgd(o.learning_rate);
}

uint64_t TableNameHash(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a offset basis
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return Mix64(h);
}

void InitializeRow(const InitializerOptions& init, int64_t dim, uint64_t name_hash, uint64_t seed,
                   uint64_t key, float* row) {
  if (init.type == InitializerOptions::Type::kZeros) {
    for (int64_t j = 0; j < dim; ++j) row[j] = 0.0f;
    return;
  }
  Rng rng(Mix64(Mix64(seed ^ name_hash) ^ key));
  switch (init.type) {
    case InitializerOptions::Type::kXavierNormal: {
      const double std = std::sqrt(2.0 / (init.xavier_fan_rows + static_cast<double>(dim)));
      for (int64_t j = 0; j < dim; ++j) row[j] = static_cast<float>(std * rng.Normal());
      break;
    }
    case InitializerOptions::Type::kNormal:
      for (int64_t j = 0; j < dim; ++j) row[j] = static_cast<float>(init.stddev * rng.Normal());
      break;
    case InitializerOptions::Type::kUniform:
      for (int64_t j = 0; j < dim; ++j)
        row[j] = static_cast<float>(init.range * (2.0 * rng.Uniform() - 1.0));
      break;
    case InitializerOptions::Type::kZeros:
      break;
  }
}

}  // namespace ips::ps
