#include "worker/config_validation.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "worker/model_factory.h"

namespace ips {
namespace {

// Whether a field of ps::TableOptions ("dim", "optimizer.beta1") is set by a TableConfig field of
// the same name; the others are the store's own (shards, slabs, sketch width, the Xavier fan).
bool IsTableConfigField(const std::string& field) {
  return field == "dim" || field == "min_count" || field == "ttl_steps" ||
         field == "max_memory_mb" || field == "initializer.stddev" ||
         field == "initializer.range" || field.rfind("optimizer.", 0) == 0;
}

// The config field that sets a SyntheticOptions field (SyntheticOptionsFromConfig), or "".
std::string SyntheticConfigPath(const std::string& field) {
  if (field == "num_items" || field == "num_categories") return "data.synthetic." + field;
  if (field == "alpha") return "data.synthetic.zipf_alpha";
  if (field == "seq_len") return "data.max_history";
  return "";
}

}  // namespace

SyntheticOptions SyntheticOptionsFromConfig(const config::Config& cfg) {
  const auto& syn = cfg.data().synthetic();
  SyntheticOptions o;
  o.num_items = static_cast<uint32_t>(syn.num_items());
  o.num_categories = static_cast<uint32_t>(syn.num_categories());
  o.seq_len = cfg.data().max_history();
  o.alpha = syn.zipf_alpha();
  o.seed = cfg.data().seed();
  return o;
}

ps::OptimizerOptions OptimizerOptionsFromConfig(const config::OptimizerConfig& c) {
  ps::OptimizerOptions o;
  switch (c.type()) {
    case config::OptimizerConfig::SGD:
      o.type = ps::OptimizerOptions::Type::kSgd;
      break;
    case config::OptimizerConfig::ADAGRAD:
      o.type = ps::OptimizerOptions::Type::kAdagrad;
      break;
    case config::OptimizerConfig::FTRL:
      o.type = ps::OptimizerOptions::Type::kFtrl;
      break;
    case config::OptimizerConfig::ADAM:
    default:
      o.type = ps::OptimizerOptions::Type::kAdam;
      break;
  }
  o.learning_rate = c.learning_rate();
  o.beta1 = c.beta1();
  o.beta2 = c.beta2();
  o.epsilon = c.epsilon();
  o.initial_accumulator = c.initial_accumulator();
  o.l1 = c.l1();
  o.l2 = c.l2();
  o.ftrl_beta = c.ftrl_beta();
  return o;
}

ps::TableOptions TableOptionsFromConfig(const config::Config& cfg, int index) {
  const config::TableConfig& t = cfg.tables(index);
  ps::TableOptions o;
  o.name = t.name();
  o.dim = t.dim();
  o.optimizer = OptimizerOptionsFromConfig(t.has_optimizer() ? t.optimizer() : cfg.optimizer());
  switch (t.initializer().type()) {
    case config::InitializerConfig::NORMAL:
      o.initializer.type = ps::InitializerOptions::Type::kNormal;
      break;
    case config::InitializerConfig::UNIFORM:
      o.initializer.type = ps::InitializerOptions::Type::kUniform;
      break;
    case config::InitializerConfig::ZEROS:
      o.initializer.type = ps::InitializerOptions::Type::kZeros;
      break;
    default:
      o.initializer.type = ps::InitializerOptions::Type::kXavierNormal;
  }
  o.initializer.stddev = t.initializer().stddev();
  o.initializer.range = t.initializer().range();
  // The peer's Xavier scale uses the table's row count: n_items + 1 and n_cats.
  if (cfg.data().has_synthetic()) {
    const auto& syn = cfg.data().synthetic();
    o.initializer.xavier_fan_rows =
        t.name() == "item" ? static_cast<double>(syn.num_items()) + 1
                           : static_cast<double>(std::max<int64_t>(syn.num_categories(), 1));
  }
  o.min_count = t.min_count();
  o.ttl_steps = t.ttl_steps();
  o.max_memory_mb = t.max_memory_mb();
  o.eviction = t.eviction() == config::TableConfig::LRU ? ps::TableOptions::Eviction::kLru
                                                        : ps::TableOptions::Eviction::kLfu;
  o.seed = cfg.train().seed();
  o.has_padding_key = true;  // item 0 / category 0 pad histories (torch's padding_idx = 0)
  o.padding_key = 0;
  return o;
}

Status CheckRunConfig(const config::Config& cfg, const ConfigSource& source) {
  auto fail = [&](const std::string& path, const std::string& what) {
    return BlameConfigField(source, path, what);
  };
  if (cfg.train().max_steps() < 0)
    return fail("train.max_steps",
                "must be >= 0 (0: no limit), got " + std::to_string(cfg.train().max_steps()));
  const auto& d = cfg.data();
  if (d.has_synthetic()) {
    const auto& syn = d.synthetic();
    // The catalogue's own rules (worker/synthetic_batches.h), under the config's names. The counts
    // first, on the config's 64 bits: the options hold them in 32.
    const SyntheticOptions options = SyntheticOptionsFromConfig(cfg);
    auto blame = [&](const std::string& field, const std::string& what) {
      const std::string path = SyntheticConfigPath(field);
      // An option no config field sets (the label rates): the options' own words.
      if (path.empty()) return ValidateSyntheticOptions(options);
      return fail(path, what);
    };
    IPS_RETURN_IF_ERROR(CheckSyntheticCount("num_items", syn.num_items(), blame));
    IPS_RETURN_IF_ERROR(CheckSyntheticCount("num_categories", syn.num_categories(), blame));
    IPS_RETURN_IF_ERROR(CheckSyntheticOptions(options, blame));
    if (syn.warmup_steps() < 0)
      return fail("data.synthetic.warmup_steps",
                  "must be >= 0, got " + std::to_string(syn.warmup_steps()));
    if (syn.steps() < 1)
      return fail("data.synthetic.steps", "must be >= 1, got " + std::to_string(syn.steps()));
    return Status::Ok();
  }
  // A dataset run (or a stream's, whose data is the stream): its evaluation.
  const auto& e = cfg.eval();
  if (e.every_epochs() < 1)
    return fail("eval.every_epochs", "must be >= 1, got " + std::to_string(e.every_epochs()));
  if (e.max_users() < 0)
    return fail("eval.max_users", "must be >= 0, got " + std::to_string(e.max_users()));
  for (int i = 0; i < e.top_k_size(); ++i) {
    const std::string at = "eval.top_k[" + std::to_string(i) + "]";
    if (e.top_k(i) < 1) return fail(at, "must be >= 1, got " + std::to_string(e.top_k(i)));
    // A repeated cut-off would be evaluated and reported twice (MIND: recall10=.. twice). The
    // list is at fault, not one entry.
    for (int j = 0; j < i; ++j)
      if (e.top_k(j) == e.top_k(i))
        return fail("eval.top_k", at + " " + std::to_string(e.top_k(i)) + " repeats eval.top_k[" +
                                      std::to_string(j) + "]: list every cut-off once");
  }
  return Status::Ok();
}

Status CheckConfigForRun(const config::Config& cfg, const ConfigSource& source) {
  IPS_RETURN_IF_ERROR(CheckModelConfig(cfg, source));
  // The dense weights' optimizer, which is also every table's without its own.
  IPS_RETURN_IF_ERROR(
      ps::CheckOptimizerOptions(OptimizerOptionsFromConfig(cfg.optimizer()),
                                [&](const std::string& field, const std::string& what) {
                                  return BlameConfigField(source, "optimizer." + field, what);
                                }));
  for (int i = 0; i < cfg.tables_size(); ++i) {
    const ps::TableOptions options = TableOptionsFromConfig(cfg, i);
    const bool own_optimizer = cfg.tables(i).has_optimizer();
    IPS_RETURN_IF_ERROR(
        ps::CheckTableOptions(options, [&](const std::string& field, const std::string& what) {
          // A store-only option (none the config sets should fail): the store's own words.
          if (!IsTableConfigField(field)) return ps::ValidateTableOptions(options);
          const bool shared = field.rfind("optimizer.", 0) == 0 && !own_optimizer;
          return BlameConfigField(
              source, (shared ? "" : "tables[" + std::to_string(i) + "].") + field, what);
        }));
  }
  // The model reads its embeddings from the 'item' table (CTR models: and 'category'), rows of
  // model.embedding_dim floats (TrainJobFromConfig). Either side may be the one a --set changed.
  const config::ModelConfig::Type type = cfg.model().type();
  const bool sequence = type == config::ModelConfig::SASREC || type == config::ModelConfig::GRU4REC;
  const int64_t width = cfg.model().embedding_dim();
  for (int i = 0; i < cfg.tables_size(); ++i) {
    const auto& t = cfg.tables(i);
    if (t.name() != "item" && (sequence || t.name() != "category")) continue;
    if (t.dim() == width) continue;
    const std::string table = " (table '" + t.name() + "' holds the model's embeddings)";
    return BlameConfigFields(
        source, "tables[" + std::to_string(i) + "].dim",
        std::to_string(t.dim()) + " != model.embedding_dim " + std::to_string(width) + table,
        "model.embedding_dim",
        std::to_string(width) + " != tables[" + std::to_string(i) + "].dim " +
            std::to_string(t.dim()) + table);
  }
  return CheckRunConfig(cfg, source);
}

StatusOr<config::Config> LoadConfigForRun(const std::string& path,
                                          const std::vector<std::string>& overrides,
                                          ConfigSource* source) {
  ConfigSource own;
  ConfigSource& from = source != nullptr ? *source : own;
  IPS_ASSIGN_OR_RETURN(config::Config cfg, LoadConfig(path, overrides, &from));
  IPS_RETURN_IF_ERROR(CheckConfigForRun(cfg, from));
  return cfg;
}

}  // namespace ips
