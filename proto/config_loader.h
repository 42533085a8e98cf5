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

// Where a config came from, for naming the place that set a field: its file name, the file's
// text (for line numbers; may be empty) and the --set assignments applied after it, in order.
// An empty source (a Config made in code) names fields by their path alone.
struct ConfigSource {
  std::string filename;
  std::string text;
  std::vector<std::string> overrides;
};

// The INVALID_ARGUMENT error of a check of the config field at `field_path` ("model.num_heads",
// "tables[1].dim", an element of a list as "model.mlp_hidden[1]"), blaming where the value was
// set: "--set path=value: FIELD_PATH: MESSAGE" when one of source.overrides set it (the last one
// that did; a list element is set by the override of its whole list), else
// "FILE:LINE: FIELD_PATH: MESSAGE" (":LINE" when the file sets it), or "FIELD_PATH: MESSAGE" for
// an empty source. `also_read`: other fields the failed check read; when no override set
// `field_path` but one set a field of `also_read`, that override is named (a model's
// "model.num_heads: 5 does not divide ..." after --set model.embedding_dim=...). Every check of a
// config field, wherever it lives (here, worker/model_factory.cc, worker/config_validation.cc),
// words its errors through this.
Status BlameConfigField(const ConfigSource& source, const std::string& field_path,
                        const std::string& message, const std::vector<std::string>& also_read = {});

// A check of two fields whose message depends on the one blamed: blamed on `path_b` (with
// `message_b`) when an override set it and none set `path_a`, else on `path_a` (with
// `message_a`).
Status BlameConfigFields(const ConfigSource& source, const std::string& path_a,
                         const std::string& message_a, const std::string& path_b,
                         const std::string& message_b);

// The config's own checks, blamed through BlameConfigField: the schema version, finite floats,
// the data section, the table list (names), the train, cluster and checkpoint sections. The
// checks that belong to the components that read a field (the model's options, the tables'
// store options, the run's options) live with them and are run on a loaded config by
// CheckConfigForRun (worker/config_validation.h), which every command that takes --config calls.
Status ValidateConfig(const config::Config& config, const ConfigSource& source);

// LoadConfigFile + every override in order + ValidateConfig. `source`, when given, receives the
// file's name and text and the overrides, for blaming later checks (CheckConfigForRun).
StatusOr<config::Config> LoadConfig(const std::string& path,
                                    const std::vector<std::string>& overrides,
                                    ConfigSource* source = nullptr);

// The config in text format (for logs and checkpoints).
std::string ConfigToText(const config::Config& config);

}  // namespace ips

#endif  // IPS_PROTO_CONFIG_LOADER_H_
