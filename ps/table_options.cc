#include "ps/table_options.h"

#include <cmath>
#include <string>

#include "common/random.h"
#include "ps/internal/count_sketch.h"
#include "ps/internal/table_shard.h"

namespace ips::ps {
namespace {

bool IsPowerOfTwo(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

Status Bad(const TableOptions& o, const std::string& field, const std::string& why) {
  return InvalidArgumentError("table '" + o.name + "': " + field + " " + why);
}

}  // namespace

Status ValidateTableOptions(const TableOptions& o) {
  if (o.name.empty()) return InvalidArgumentError("table options: name is empty");
  if (o.dim <= 0 || o.dim > 65536)
    return Bad(o, "dim", "must be in [1, 65536], got " + std::to_string(o.dim));
  const OptimizerOptions& opt = o.optimizer;
  if (!(opt.learning_rate > 0) || !std::isfinite(opt.learning_rate))
    return Bad(o, "optimizer.learning_rate", "must be positive and finite");
  if (opt.type == OptimizerOptions::Type::kAdam) {
    if (!(opt.beta1 >= 0 && opt.beta1 < 1)) return Bad(o, "optimizer.beta1", "must be in [0, 1)");
    if (!(opt.beta2 >= 0 && opt.beta2 < 1)) return Bad(o, "optimizer.beta2", "must be in [0, 1)");
  }
  if ((opt.type == OptimizerOptions::Type::kAdam || opt.type == OptimizerOptions::Type::kAdagrad) &&
      !(opt.epsilon > 0))
    return Bad(o, "optimizer.epsilon", "must be positive");
  if (!(opt.initial_accumulator >= 0))
    return Bad(o, "optimizer.initial_accumulator", "must be >= 0");
  if (opt.type == OptimizerOptions::Type::kFtrl &&
      (!(opt.l1 >= 0) || !(opt.l2 >= 0) || !(opt.ftrl_beta >= 0)))
    return Bad(o, "optimizer.l1/l2/ftrl_beta", "must be >= 0");
  const InitializerOptions& init = o.initializer;
  if (init.type == InitializerOptions::Type::kNormal && !(init.stddev >= 0))
    return Bad(o, "initializer.stddev", "must be >= 0");
  if (init.type == InitializerOptions::Type::kUniform && !(init.range >= 0))
    return Bad(o, "initializer.range", "must be >= 0");
  if (init.type == InitializerOptions::Type::kXavierNormal && !(init.xavier_fan_rows > 0))
    return Bad(o, "initializer.xavier_fan_rows", "must be positive");
  if (o.min_count < 0) return Bad(o, "min_count", "must be >= 0");
  if (o.min_count > 65535) return Bad(o, "min_count", "must be <= 65535 (sketch counters)");
  if (o.ttl_steps < 0) return Bad(o, "ttl_steps", "must be >= 0");
  if (o.ttl_steps >= (int64_t{1} << 30)) return Bad(o, "ttl_steps", "must be < 2^30");
  if (o.max_memory_mb < 0) return Bad(o, "max_memory_mb", "must be >= 0");
  if (o.num_shards < 1 || o.num_shards > 4096) return Bad(o, "num_shards", "must be in [1, 4096]");
  if (!IsPowerOfTwo(o.rows_per_slab) || o.rows_per_slab > (int64_t{1} << 20))
    return Bad(o, "rows_per_slab", "must be a power of two <= 2^20");
  if (o.min_count > 1 && (!IsPowerOfTwo(o.sketch_width) || o.sketch_width > 65536))
    return Bad(o, "sketch_width", "must be a power of two <= 65536");
  if (o.ttl_sweep_interval < 0) return Bad(o, "ttl_sweep_interval", "must be >= 0");
  return Status::Ok();
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
