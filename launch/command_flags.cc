// ParseCommandFlags (launch/commands.h): how every `ips` subcommand answers --help and bad flags;
// the usage errors shared by `ips train` and `ips config check`.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/result_line.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "worker/model_factory.h"

namespace ips {

namespace {

// A --set that is not path.to.field=value: a malformed command line (a usage error), where a --set
// of that form whose field or value the config refuses is a config error (exit 1, as the file's
// line would be; proto/config_loader.h ApplyOverride names it). "" when every one is well formed.
std::string MalformedSet(const FlagSet& flags) {
  if (!flags.WasSet("set")) return "";
  for (const std::string& a : flags.GetRepeated("set")) {
    const size_t eq = a.find('=');
    if (eq == std::string::npos || eq == 0)
      return "--set " + a + ": expected path.to.field=value (e.g. --set data.batch_size=64)";
  }
  return "";
}

}  // namespace

std::optional<int> ParseCommandFlags(FlagSet* flags, const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << flags->Usage();
      return kExitOk;
    }
  }
  const Status parsed = flags->Parse(args);
  std::string message;
  if (!parsed.ok()) {
    message = parsed.message();
  } else if (!flags->positional().empty()) {
    message = "unexpected argument '" + flags->positional()[0] + "'";
  } else {
    message = MalformedSet(*flags);
  }
  if (message.empty()) return std::nullopt;
  std::cerr << message << "\n" << flags->Usage();
  // Printed without "error: ": the message of the command's error RESULT line (launch/main.cc).
  NoteResultError(message);
  return kExitUsage;
}

int UsageError(const FlagSet& flags, const std::string& message) {
  std::cerr << "error: " << message << "\n" << flags.Usage();
  return kExitUsage;
}

Status CheckTrainModeFlags(const FlagSet& flags, const std::vector<std::string>& args,
                           bool mpirun) {
  const bool stream = flags.WasSet("stream") && !flags.GetString("stream").empty();
  if (!stream) {
    // The --stream_* flags given, in their order (found among the arguments: FlagSet keeps no
    // list; a word that is only another flag's value was not set, so WasSet leaves it out).
    std::vector<std::string> given;
    for (const std::string& a : args) {
      if (a.rfind("--stream_", 0) != 0) continue;
      std::string name = a.substr(2);
      name = name.substr(0, name.find('='));
      bool seen = false;
      for (const std::string& g : given) seen = seen || g == name;
      if (!seen && flags.WasSet(name)) given.push_back(name);
    }
    if (given.empty()) return Status::Ok();
    std::string names;
    for (const std::string& g : given) names += (names.empty() ? "--" : ", --") + g;
    return InvalidArgumentError(names + (given.size() == 1 ? " applies" : " apply") +
                                " only to streaming training: give --stream SOURCE (an event "
                                "log, or - for stdin), or leave " +
                                (given.size() == 1 ? "it" : "them") + " out");
  }
  // Streaming training writes no checkpoints (its state goes out as serving bundles).
  if (flags.WasSet("resume") && !flags.GetString("resume").empty())
    return InvalidArgumentError(
        "--resume does not apply to --stream: a stream starts from a fresh model and writes "
        "no checkpoints (its trained state is in the bundles of --stream_publish_dir)");
  if (flags.WasSet("eval_batches"))
    return InvalidArgumentError(
        "--eval_batches does not apply to --stream: it sets the held-out batches of a "
        "data.synthetic run's final AUC; a stream reports its prequential AUC per "
        "--stream_window_events window");
  if (mpirun) return InvalidArgumentError("--stream runs in one process, not under mpirun");
  return Status::Ok();
}

std::string EvalBatchesUnused(const config::Config& cfg, const std::string& command) {
  if (!cfg.data().has_synthetic())
    return "--eval_batches applies only to data.synthetic runs (the held-out batches of their "
           "AUC); this config " +
           (command == "train" ? "trains on data.train_dir '" + cfg.data().train_dir() +
                                     "', evaluated after every eval.every_epochs epochs"
                               : "evaluates on data.train_dir '" + cfg.data().train_dir() +
                                     "', with the dataset's evaluation lists");
  auto spec = ModelSpecFromConfig(cfg);
  if (spec.ok() && IsSequenceModel(spec->kind))
    return std::string("--eval_batches applies only to CTR models on data.synthetic; ") +
           ModelKindName(spec->kind) + " on data.synthetic has no held-out evaluation";
  return "";
}

}  // namespace ips
