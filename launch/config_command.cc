// `ips config check|print`: loads a config with its overrides, validates it, and prints the
// effective configuration (print) or a one-line summary (check).
//
// `check` runs, in `ips train`'s order and with its messages, every check `ips train` runs before
// its first training step that writes nothing: the config loader's (LoadConfigForRun:
// ValidateConfig, and CheckConfigForRun's model, table and run options, each error naming the
// --set or the file line that set the value), the job's (TrainJobFromConfig), the
// dataset's (Dataset::Open and FitJobToDataset, eval.top_k against the candidate lists included)
// when data.train_dir exists, the store's (table options such as max_memory_mb), the trainer's
// (the model is built: its options, the tables' widths) and the checkpoint section's (its
// intervals, checkpoint.dir through CheckpointWriter::CheckDir: a directory `ips train` can
// create or write, not on a kernel pseudo file system such as /proc or /sys (whose permission
// bits pass for root), which check does not create; through
// CheckpointWriter::CheckNotLocked: not locked by a run writing into it now, and through
// CheckCheckpointDirForRun: no checkpoints of another run in it), train.metrics_out (a file `ips
// train` can open, found with stat(2) and access(2), with `ips train`'s error; not created), plus
// with --np N the layout of `mpirun -np N ips train` (its error naming the --set or the file line
// of cluster.num_ps, as RunClusterTrain's) and its dataset's epoch against the workers
// (CheckEpochFillsWorkers). check takes `ips train`'s --resume DIR: without it the run is checked
// as a fresh one (checkpoint.dir must hold no checkpoint), with it as the resumed run
// (checkpoint.dir must hold none newer than DIR's step, DIR's checkpoint must have been trained
// on data.train_dir's vocabulary, and its position must lie within this run: its epoch below
// train.epochs, or its step within data.synthetic's steps); DIR's files are not verified (`ips
// train` does that). check takes `ips train`'s --stream SOURCE too (SOURCE is not read): the
// config is then checked as an `ips train --stream` job, whose data is the stream; without it, a
// config with neither data.train_dir nor data.synthetic is refused with `ips train`'s error, as
// plain `ips train` refuses it. A config that passes is refused by `ips train` only for what
// cannot be known here: a data.train_dir created or changed later, a checkpoint.dir locked by a
// run started later or failing to be written, a damaged or unfitting --resume checkpoint, a
// --metrics_out flag (check sees only train.metrics_out) or an unreadable stream, and failures
// while training.
//
// Usage errors come first, before the config is read, with exit code 2 as in `ips train`: --np
// out of range, and the flags that do not go with --stream (--resume; --np N > 1, an mpirun job),
// through `ips train`'s CheckTrainModeFlags (launch/commands.h).
//
// A missing data.train_dir is a warning, not an error: a config is often checked before its data
// set is converted (the shipped launch/configs/*_games.pbtxt name a placeholder directory).
// Corrupt or unfit data in an existing directory is an error, as in `ips train`.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "common/flags.h"
#include "common/result_line.h"
#include "launch/cluster_train.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "ps/local_embedding_store.h"
#include "worker/checkpoint.h"
#include "worker/cluster.h"
#include "worker/config_validation.h"
#include "worker/data_reader.h"
#include "worker/seq_trainer.h"
#include "worker/trainer.h"

namespace ips {
namespace {

// train.metrics_out as `ips train` opens it (common/output_file.h OpenAppendFile: open(2) with
// O_CREAT | O_APPEND, its errno in the message and the code), found without creating the file: the
// errno open(2) would fail with, from stat(2) and access(2) of the file or of the directory it
// would be created in, with `ips train`'s message. A regular file on (or a new one in a directory
// on) a kernel pseudo file system is refused too: open(2) fails there or writes into the kernel.
// Character devices and pipes (/dev/stdout) are accepted.
Status CheckMetricsOut(const std::string& path) {
  const std::string what = "cannot open train.metrics_out file '" + path + "'";
  auto fail = [&what](int err) { return StatusFromErrno(err, what); };
  auto pseudo = [&what](const std::string& at, const std::string& fs) {
    return FailedPreconditionError(
        what + (at.empty() ? ": it is" : ": its directory " + at + " is") + " on " + fs +
        ", a kernel pseudo file system that holds no metrics files: "
        "choose a file on a disk file system");
  };
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return fail(EISDIR);
    if (::access(path.c_str(), W_OK) != 0) return fail(errno);
    if (S_ISREG(st.st_mode)) {
      if (const std::string fs = ps::PseudoFileSystemOf(path); !fs.empty()) return pseudo("", fs);
    }
    return Status::Ok();
  }
  if (errno != ENOENT) return fail(errno);
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  if (::stat(dir.c_str(), &st) != 0) return fail(errno);
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR);
  if (::access(dir.c_str(), W_OK | X_OK) != 0) return fail(errno);
  if (const std::string fs = ps::PseudoFileSystemOf(dir); !fs.empty()) return pseudo(dir, fs);
  return Status::Ok();
}

// Builds the job of `cfg` as `ips train` does and runs its checks (see the file comment). `np`:
// the mpirun world size to check the layout for (< 2: a single-process run). *data_state says
// what was checked of the data: "synthetic", "checked" (data.train_dir opened and fitted),
// "missing" (data.train_dir does not exist: warned, skipped) or "stream" (`stream`: the config is
// checked as an `ips train --stream` job). Errors are `ips train`'s, with its context.
Status CheckTrainJob(const config::Config& cfg, const std::string& config_path,
                     const ConfigSource& source, int64_t np, const std::string& resume, bool stream,
                     std::string* data_state) {
  const bool cluster = np > 1;
  StatusOr<TrainJob> job = InvalidArgumentError("no job");
  std::unique_ptr<Dataset> data;  // data.train_dir when it exists, fitted to the job
  // `ips train` opens train.metrics_out (when no --metrics_out replaces it) right after its
  // config checks (a stream's included), before the job is built.
  if (stream) IPS_RETURN_IF_ERROR(CheckStreamConfig(cfg));
  if (!cfg.train().metrics_out().empty())
    IPS_RETURN_IF_ERROR(CheckMetricsOut(cfg.train().metrics_out()));
  if (stream) {
    *data_state = "stream";
    // --resume and --np N > 1 were refused with --stream before the config was read
    // (CheckTrainModeFlags, as RunTrainCommand).
    // RunStreamTrain (launch/stream_train.cc) names the stream as the job's data when the config
    // names none, and reads neither data source.
    config::Config c = cfg;
    if (!c.data().has_synthetic() && c.data().train_dir().empty())
      c.mutable_data()->set_train_dir("stream:-");
    job = TrainJobFromConfig(c);
    if (!job.ok()) return job.status();
  } else {
    job = TrainJobFromConfig(cfg);
    if (!job.ok()) {
      // Single-process `ips train` names the config file; its mpirun form does not.
      Status s = cluster ? job.status() : job.status().WithContext(config_path);
      // A config without a data source is one for `ips train --stream` (din_stream.pbtxt), which
      // runs in one process: say how to check it as one, after `ips train`'s own error.
      if (!cluster && !cfg.data().has_synthetic() && cfg.data().train_dir().empty())
        s = Status(s.code(), s.message() +
                                 " (checked as plain `ips train`: pass `ips config check` the "
                                 "--stream SOURCE of `ips train --stream` to check a stream job)");
      return s;
    }
    *data_state = job->synthetic ? "synthetic" : "checked";
  }

  if (!job->synthetic && !stream) {
    const std::string& dir = job->dataset.train_dir;
    const std::string context = "data.train_dir '" + dir + "'";
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) {
      *data_state = "missing";
      std::cerr << "warning: " << context
                << " does not exist: the dataset checks were skipped; `ips train` fails until "
                   "`ips data convert` writes it\n";
    } else {
      // The whole open of `ips train` (every block's CRC), then the fit of the job to the data.
      auto opened = Dataset::Open(dir);
      if (!opened.ok()) return opened.status().WithContext(context);
      data = std::move(opened).value();
      IPS_RETURN_IF_ERROR(FitJobToDataset(*data, &*job).WithContext(context));
    }
  }

  // mpirun: RunClusterTrain checks the layout (Cluster::Init) after the job and the dataset,
  // blaming cluster.num_ps's --set or file line.
  int num_workers = 1;
  if (cluster) {
    auto layout = MakeClusterLayout(static_cast<int>(np), cfg.cluster().num_ps(), source);
    if (!layout.ok()) return layout.status();
    num_workers = layout->num_workers;
  }

  // The store and the trainer of the job, as `ips train` builds them: the tables' options (the
  // rows themselves are created on first pull, so nothing big is allocated) and the model, built
  // at the job's batch capacity (its buffers: what training allocates anyway).
  auto store = ps::LocalEmbeddingStore::CreateThreaded(job->tables, job->trainer.num_threads);
  if (!store.ok()) return store.status();
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  // A stream trains a CTR Trainer whatever the model (RunStreamTrain), failing as it does.
  if (stream) return Trainer::Create(job->trainer, store->get()).status();
  IPS_RETURN_IF_ERROR(MakeTrainer(*job, store->get(), &ctr, &seq));
  // mpirun: every worker checks its share of an epoch (RunDatasetRounds) once its trainer is
  // built, before the checkpoint writer is created.
  if (cluster && data != nullptr)
    IPS_RETURN_IF_ERROR(
        CheckEpochFillsWorkers(*job, TrainingRowsPerEpoch(*data, *job), num_workers));
  // --resume: `ips train` restores it after building its trainer and refuses a checkpoint of
  // another vocabulary. Only the manifest and the dense blobs are read here.
  int64_t resumed_step = -1;
  if (!resume.empty()) {
    auto head = PeekCheckpoint(resume);
    if (!head.ok()) return head.status().WithContext("--resume " + resume);
    resumed_step = head->step;
    std::map<std::string, std::string> blobs;
    IPS_RETURN_IF_ERROR(ReadDenseFile(head->dense_path, nullptr, &blobs));
    if (data != nullptr) {
      const DatasetVocabulary vocabulary = VocabularyOf(job->dataset.train_dir, data->manifest());
      IPS_RETURN_IF_ERROR(CheckCheckpointVocabulary(head->dir, blobs, vocabulary));
      // A checkpoint saved mid-epoch must keep its position's meaning under this config.
      IPS_RETURN_IF_ERROR(CheckResumeEpochOrder(head->dir, head->config_text, blobs,
                                                ConfigToText(cfg), vocabulary,
                                                TrainingRowsPerEpoch(*data, *job)));
    }
    // Then, as `ips train` once the checkpoint is restored: its position within this run.
    IPS_RETURN_IF_ERROR(
        CheckResumeFitsRun(cfg, head->dir, blobs).WithContext("--resume " + resume));
  }
  // The writer's checks that write nothing: `ips train` creates checkpoint.dir (SetupCheckpoints;
  // mpirun: worker 0's StartCheckpointing) after its trainer, then refuses a DIR holding
  // checkpoints the run would mix with.
  if (!cfg.checkpoint().dir().empty()) {
    IPS_RETURN_IF_ERROR(CheckpointWriter::CheckDir(cfg.checkpoint().dir()));
    // CheckpointWriter::Create takes DIR/LOCK before anything else reads DIR: a run writing into
    // DIR now is reported first, as `ips train` reports it. The probe holds the lock only while
    // it tests it and creates nothing.
    IPS_RETURN_IF_ERROR(CheckpointWriter::CheckNotLocked(cfg.checkpoint().dir()));
    const Status s = CheckCheckpointDirForRun(cfg.checkpoint().dir(), resumed_step);
    if (!s.ok() && resume.empty())
      return Status(s.code(), s.message() +
                                  " (checked as a fresh run: pass `ips config check` the "
                                  "--resume DIR of `ips train` to check a resumed one)");
    IPS_RETURN_IF_ERROR(s);
  }
  return Status::Ok();
}

}  // namespace

int RunConfigCommand(const std::vector<std::string>& args) {
  const std::string usage_head =
      "usage: ips config check|print --config FILE [--set path.to.field=value ...] [--np N] "
      "[--resume DIR] [--stream SOURCE]\n";
  if (args.empty()) {
    std::cerr << usage_head;
    return kExitUsage;
  }
  if (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cerr << usage_head;
    return kExitOk;
  }
  if (args[0] != "check" && args[0] != "print") {
    // As `ips data` names an unknown subcommand: the error line is the RESULT line's message.
    std::cerr << "error: unknown subcommand 'config " << args[0] << "'\n" << usage_head;
    return kExitUsage;
  }
  const std::string verb = args[0];
  FlagSet flags("config " + verb);
  flags.Required("config", "Protobuf text-format config file (launch/configs/*.pbtxt)");
  flags.Repeated("set", "override one field: path.to.field=value");
  if (verb == "check") {
    flags.Int("np", 0,
              "also check the cluster layout of `mpirun -np N ips train` (cluster.num_ps); "
              "0 or 1: a single-process run");
    flags.String("resume", "",
                 "check the run as `ips train --resume DIR` (default: a fresh run, whose "
                 "checkpoint.dir must hold no checkpoint)");
    flags.String("stream", "",
                 "check the config as a job of `ips train --stream SOURCE` (SOURCE is not read; "
                 "default: a job of plain `ips train`, which needs data.train_dir or "
                 "data.synthetic)");
  }
  if (auto rc = ParseCommandFlags(&flags, {args.begin() + 1, args.end()})) return *rc;
  // `ips train`'s usage errors, before the config is read: --np out of range, and flags that do
  // not go with --stream (--resume; --np N > 1, an mpirun job).
  const std::vector<std::string> flag_args(args.begin() + 1, args.end());
  int64_t np = 0;
  if (verb == "check") {
    np = flags.GetInt("np");
    if (np < 0 || np > std::numeric_limits<int>::max())
      return UsageError(flags, "--np must be in [0, " +
                                   std::to_string(std::numeric_limits<int>::max()) + "], got " +
                                   flags.GetString("np"));
    if (Status s = CheckTrainModeFlags(flags, flag_args, np > 1); !s.ok())
      return UsageError(flags, s.message());
  }
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return kExitError;
  };
  ConfigSource loaded;  // where cluster.num_ps was set, for the mpirun layout's error
  auto cfg = LoadConfigForRun(flags.GetString("config"), flags.GetRepeated("set"), &loaded);
  if (!cfg.ok()) return fail(cfg.status());
  ResultLine line("config_" + verb);
  line.Add("config", flags.GetString("config"))
      .Add("version", static_cast<int64_t>(cfg->version()))
      .Add("model", config::ModelConfig::Type_Name(cfg->model().type()))
      .Add("tables", static_cast<int64_t>(cfg->tables_size()))
      .Add("overrides", static_cast<int64_t>(flags.GetRepeated("set").size()));
  if (verb == "check") {
    // The mpirun layout's error names the --set or the file line of cluster.num_ps.
    const ConfigSource source = np > 1 ? loaded : ConfigSource();
    std::string data_state;
    if (Status s =
            CheckTrainJob(*cfg, flags.GetString("config"), source, np, flags.GetString("resume"),
                          !flags.GetString("stream").empty(), &data_state);
        !s.ok())
      return fail(s);
    line.Add("data", data_state);
    if (np > 1) line.Add("np", np);
  }
  if (verb == "print") std::cout << ConfigToText(*cfg);
  line.Print();
  return kExitOk;
}

}  // namespace ips
