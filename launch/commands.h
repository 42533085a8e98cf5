// The subcommands of the `ips` binary. Each takes the arguments after its name and returns the
// process exit code: 0 success, 1 a runtime or data error (printed to stderr as "error: <message>",
// naming file, line and field), 2 a usage error (a command line that cannot run as given: an
// unknown flag or subcommand, a flag value out of its range, a --set that is not
// path.to.field=value, a flag that does nothing in the run's mode: the message and the usage
// printed to stderr). A --set of the right form whose field or value the config refuses is a
// config error (1), as the same value in the file would be. Each prints `RESULT <command> key=value
// ...` as its last stdout line on success; on failure launch/main.cc prints `RESULT <command>
// status=error exit=<code> error="<message>"` instead, its message the last "error: " line the
// command wrote to std::cerr (or one noted with NoteResultError, common/result_line.h): a command
// that prints its own RESULT line before it fails (`ips train` stopped, exit 3) gets no second one.
#ifndef IPS_LAUNCH_COMMANDS_H_
#define IPS_LAUNCH_COMMANDS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace ips {

struct ConfigSource;  // proto/config_loader.h
class FlagSet;
class SeqTrainer;
class Trainer;
struct TrainJob;
namespace config {
class Config;
}  // namespace config
namespace ps {
class EmbeddingStore;
}  // namespace ps

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
// `ips train` stopped by SIGTERM or SIGUSR1 between two steps after saving a checkpoint (resume
// with
// --resume); its last stdout line is `RESULT train ... status=stopped step=N`.
constexpr int kExitStopped = 3;

// Parses a subcommand's flags (launch/command_flags.cc): --help or -h prints the usage on stdout
// (exit 0); a bad flag, an unexpected positional argument or a --set that is not of the form
// path.to.field=value (no "=", or nothing before it) prints the error and the usage on stderr
// (exit 2). Returns that exit code, or nullopt when the command goes on.
std::optional<int> ParseCommandFlags(FlagSet* flags, const std::vector<std::string>& args);
// A usage error found after parsing (a flag value out of range, flags that do not go together):
// prints "error: <message>" and the usage on stderr and returns kExitUsage.
int UsageError(const FlagSet& flags, const std::string& message);

// The flags of `ips train` that apply only in some of its modes, checked before the config is
// read (launch/command_flags.cc); `ips config check`, which takes --stream, --resume and --np,
// runs the same checks. INVALID_ARGUMENT naming the flag and what it needs, for UsageError:
// --stream_* flags without --stream SOURCE; with --stream, --resume, --eval_batches and an mpirun
// run (`mpirun`: under mpirun, or `config check --np N` with N > 1). A flag `flags` does not
// declare counts as not given. `args`: the arguments `flags` parsed.
Status CheckTrainModeFlags(const FlagSet& flags, const std::vector<std::string>& args, bool mpirun);

// Why `ips train` or `ips eval` (`command`) would ignore --eval_batches for `cfg`, "" where it
// applies: it sets the held-out batches of a CTR model's AUC on data.synthetic. Both commands
// make a given flag that would be ignored a usage error (launch/command_flags.cc).
std::string EvalBatchesUnused(const config::Config& cfg, const std::string& command);

// `ips config check|print --config FILE [--set path=value ...] [--np N] [--resume DIR]
// [--stream SOURCE]` (launch/config_command.cc). `check` runs every check of `ips train` that
// needs neither a training step nor a write: the config loader's, the job's (TrainJobFromConfig:
// a data source is needed, unless --stream checks the config as an `ips train --stream` job), the
// dataset's (Dataset::Open and FitJobToDataset, when data.train_dir exists), the store's and the
// trainer's (the model is built), the checkpoint section's (checkpoint.dir must not be locked by
// a run writing into it now, and must hold no checkpoint of another run: none for a fresh run,
// none newer than --resume DIR's step for a resumed one; DIR's checkpoint must match
// data.train_dir's vocabulary) and, with --np, the mpirun layout's.
int RunConfigCommand(const std::vector<std::string>& args);
// `ips data convert|inspect|synth ...` (launch/data_command.cc).
int RunDataCommand(const std::vector<std::string>& args);
// `ips data synth ...` (launch/synth_command.cc), called by RunDataCommand.
int RunSynthCommand(const std::vector<std::string>& args);
// `ips train --config FILE [--set ...] [--metrics_out FILE] [--resume DIR]`
// (launch/train_command.cc).
int RunTrainCommand(const std::vector<std::string>& args);
// Checks of `ips train` that read only the config, shared with `ips config check`
// (launch/stream_train.cc). CheckStreamConfig: `ips train --stream` (and RunStreamTrain itself)
// refuses checkpoint.dir (a stream writes no checkpoints; INVALID_ARGUMENT naming the field) and a
// model.type a serving bundle cannot hold (a sequence model; FAILED_PRECONDITION naming the
// command and the supported types, worker/serving.h CheckBundleModelType).
Status CheckStreamConfig(const config::Config& config);
// The trainer of the job's model family, as `ips train`, `ips eval` and `ips config check` build
// it (launch/train_command.cc): a CTR Trainer or a SeqTrainer; the other stays null.
Status MakeTrainer(const TrainJob& job, ps::EmbeddingStore* store, std::unique_ptr<Trainer>* ctr,
                   std::unique_ptr<SeqTrainer>* seq);
// `ips eval --config FILE --checkpoint DIR [--set ...] [--metrics_out FILE]`: the evaluation of
// the config's model family on a checkpoint (launch/eval_command.cc).
int RunEvalCommand(const std::vector<std::string>& args);
// `ips export --checkpoint DIR --output BUNDLE [--fp16] [--min_count N]` (launch/serve_command.cc).
// Holds BUNDLE/LOCK while it writes; refuses an output that is not a bundle root, one held by
// another writer, or one whose current version is another model type (worker/serving.h).
int RunExportCommand(const std::vector<std::string>& args);
// `ips serve --bundle BUNDLE [--poll_ms N]`: JSON lines on stdin -> scores on stdout
// (launch/serve_command.cc). SIGTERM, SIGINT or SIGUSR1 stop it after the request being scored:
// `RESULT serve ... status=stopped`, exit 0.
int RunServeCommand(const std::vector<std::string>& args);

}  // namespace ips

#endif  // IPS_LAUNCH_COMMANDS_H_
