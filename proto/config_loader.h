// Loading a Config from Protobuf text format, applying `--set path.to.field=value` overrides,
// and validating it. Every error names the file, line and field (or the override) at fault.
#ifndef IPS_PROTO_CONFIG_LOADER_H_
#define IPS_PROTO_CONFIG_LOADER_H_

#include <string>
#include <vector>

#include "common/status.h"
#include "proto/config.pb.h"

namespace ips {

// The newest schema version this binary understands.
constexpr int kConfigVersion = 1;

// Parses `text` (named `filename` in errors). Errors: INVALID_ARGUMENT
// "FILE:LINE:COL: <what>" for syntax errors, unknown fields and bad values.
StatusOr<config::Config> ParseConfigText(const std::string& text, const std::string& filename);

// Reads and parses a file. NOT_FOUND if it cannot be read.
StatusOr<config::Config> LoadConfigFile(const std::string& path);

// Applies one override "a.b.c=value". Path components are field names; repeated message fields
// take an index ("tables[1].dim=36", an index equal to the size appends). A repeated scalar leaf
// takes a comma-separated list that replaces its contents ("model.mlp_hidden=200,80").
// Enums take their names. Errors: INVALID_ARGUMENT naming the override and the failing part.
Status ApplyOverride(const std::string& assignment, config::Config* config);

// Semantic checks (positive sizes, known version, consistent sections), including those of the
// model the config builds (the fields its model.type reads: worker/model_factory.cc and the
// models' Validate*Options), of the tables (ps/table_options.h ValidateTableOptions, and each
// model table's dim = model.embedding_dim) and of the cluster (cluster.staleness only with
// ASYNC), so that every value is blamed where it was set. Errors name the file, the config field
// path and, when the field was set in the file, its line; a field one of `overrides` (the --set
// assignments applied) set is named as "--set path=value: path: ..." (an element of a list, as
// "--set model.mlp_hidden=64,0: model.mlp_hidden[1]: ..."). A check of two fields is blamed on
// the one an override set. Not checked here: what needs the store's layout (the smallest
// tables[i].max_memory_mb, ps::MinMemoryMb) or the machine (model.device CUDA).
Status ValidateConfig(const config::Config& config, const std::string& filename,
                      const std::string& text, const std::vector<std::string>& overrides = {});

// LoadConfigFile + every override in order + ValidateConfig.
StatusOr<config::Config> LoadConfig(const std::string& path,
                                    const std::vector<std::string>& overrides);

// The config in text format (for logs and checkpoints).
std::string ConfigToText(const config::Config& config);

}  // namespace ips

#endif  // IPS_PROTO_CONFIG_LOADER_H_
