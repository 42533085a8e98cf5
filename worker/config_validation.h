// The checks of a loaded config that belong to the components that read it: the model's options
// (models/*: Validate*Options), the tables' store options (ps/table_options.h) and the run's
// options (train.*, eval.*, data.synthetic.*). Each rule has one copy, in its component; this
// runs it on the options the config makes and blames its failure, through BlameConfigField
// (proto/config_loader.h), on the --set or the config file line that set the value. proto/ cannot
// depend on models/ or ps/, so the loader's own ValidateConfig leaves these checks here: every
// command that takes --config and --set loads its config with LoadConfigForRun.
#ifndef IPS_WORKER_CONFIG_VALIDATION_H_
#define IPS_WORKER_CONFIG_VALIDATION_H_

#include <string>
#include <vector>

#include "common/status.h"
#include "ps/table_options.h"
#include "worker/synthetic_batches.h"

namespace ips {

namespace config {
class Config;
class OptimizerConfig;
}  // namespace config
struct ConfigSource;  // proto/config_loader.h

// The store's options of an optimizer section (the dense optimizer, or a table's own).
ps::OptimizerOptions OptimizerOptionsFromConfig(const config::OptimizerConfig& optimizer);

// The store's options of config.tables(index), as a training run's store gets them: its own
// optimizer or else the config's, rows seeded by train.seed, item and category 0 the padding key,
// and with data.synthetic the Xavier row fan of the synthetic catalogue.
ps::TableOptions TableOptionsFromConfig(const config::Config& config, int index);

// The synthetic catalogue of config.data.synthetic, as a training run's (worker/trainer.cc
// TrainJobFromConfig) makes it: the counts narrowed to 32 bits (checked first by CheckRunConfig),
// the history length data.max_history, the Zipf exponent, data.seed.
SyntheticOptions SyntheticOptionsFromConfig(const config::Config& config);

// The run's checks: train.max_steps; for a run on a dataset or a stream (no data.synthetic)
// eval.every_epochs, eval.max_users and eval.top_k; for a synthetic run the catalogue's own rules
// (worker/synthetic_batches.h CheckSyntheticCount on the config's 64-bit counts, then
// CheckSyntheticOptions: data.synthetic.num_items and num_categories, data.max_history,
// data.synthetic.zipf_alpha) and data.synthetic's step counts. Errors blamed on `source` (an
// empty source names the field alone).
Status CheckRunConfig(const config::Config& config, const ConfigSource& source);

// Every check ValidateConfig leaves to the components, in this order: the model's
// (CheckModelConfig, worker/model_factory.h: the fields config.model.type reads), the optimizer's
// and every table's (ps::CheckOptimizerOptions, ps::CheckTableOptions on TableOptionsFromConfig,
// the smallest max_memory_mb included: every store, in one process or on a server, lays tables
// out alike), each model table's dim against model.embedding_dim, and CheckRunConfig. Not
// checked here: the machine (model.device CUDA) or the data (Dataset::Open, FitJobToDataset).
Status CheckConfigForRun(const config::Config& config, const ConfigSource& source);

// LoadConfig (the file, the --set overrides in order, ValidateConfig) + CheckConfigForRun: what
// `ips train`, `ips eval` and `ips config check` load a config with. `source`, when given,
// receives where the config came from, for blaming a check made later (the mpirun layout's
// cluster.num_ps).
StatusOr<config::Config> LoadConfigForRun(const std::string& path,
                                          const std::vector<std::string>& overrides,
                                          ConfigSource* source = nullptr);

}  // namespace ips

#endif  // IPS_WORKER_CONFIG_VALIDATION_H_
