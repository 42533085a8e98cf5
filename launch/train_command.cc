// `ips train`: single-process training of a config's model with an in-process embedding store.
// CTR models (DIN, DIEN, BST, pooled, MIND), either on the peer's synthetic throughput protocol
// (data.synthetic) or on a dataset directory written by `ips data convert` (data.train_dir:
// epochs of training, each followed by the peer's HR@10 / NDCG@10 / sampled-AUC evaluation of
// seqrec and ctr datasets, or AUC / GAUC / logloss over a given dataset's labelled rows). MIND
// on a dataset adds the full-ranking retrieval evaluation (recall@K).
//
// Checkpoints (config `checkpoint { dir every_steps every_seconds keep_last incremental }`): saved
// every N steps / seconds, after the last step, and on SIGTERM, which stops the run between two
// steps after saving (exit code kExitStopped = 3 and `RESULT train ... status=stopped`).
// `--resume DIR` (a checkpoint root or one ckpt-<step>) restores the weights, optimizer states,
// tables, step counter and reader position and continues exactly where the run stopped.
// A run never mixes its checkpoints with another run's (keep_last keeps the newest by step, and
// --resume DIR takes the newest): a fresh run into a checkpoint.dir holding any ckpt-<step>, or a
// resumed one into a checkpoint.dir holding a newer one than the resumed step, is refused before
// its first step. A run on data.train_dir records the dataset's vocabulary in its checkpoints;
// --resume of a checkpoint trained on another vocabulary is refused (ids are numbered per dataset).
// A synthetic run continues its checkpoint's batch schedule (SyntheticSchedule): a cluster
// checkpoint of W workers goes on with the batches the cluster would have trained next and its
// held-out batches, and records that for `ips eval` and later resumes. --resume without a
// checkpoint.dir is warned about (the run saves nothing); a stop says how to continue, naming
// checkpoint.dir when the config file does not set it.
// Under mpirun, checkpoints and --resume are launch/cluster_train.h's (same layout and checks).
#include <atomic>
#include <csignal>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/output_file.h"
#include "common/result_line.h"
#include "common/stop_signals.h"
#include "common/timer.h"
#include "launch/cluster_train.h"
#include "launch/commands.h"
#include "launch/stream_train.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "worker/checkpoint.h"
#include "worker/config_validation.h"
#include "worker/data_reader.h"
#include "worker/internal/run_steps.h"
#include "worker/model_factory.h"
#include "worker/retrieval.h"
#include "worker/seq_trainer.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {

Status MakeTrainer(const TrainJob& job, ps::EmbeddingStore* store, std::unique_ptr<Trainer>* ctr,
                   std::unique_ptr<SeqTrainer>* seq) {
  if (!IsSequenceModel(job.trainer.model.kind)) {
    IPS_ASSIGN_OR_RETURN(*ctr, Trainer::Create(job.trainer, store));
    return Status::Ok();
  }
  IPS_ASSIGN_OR_RETURN(*seq, CreateSeqTrainer(job.trainer, store));
  return Status::Ok();
}

namespace {

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

int Fail(const Status& s) {
  std::cerr << "error: " << s.ToString() << "\n";
  return kExitError;
}

// " cell=GRU" or " cell=LSTM" for the models with a recurrent cell (model.cell: DIEN's interest
// evolution, GRU4Rec), for the header line: "" for the others, which ignore the field.
std::string CellField(const config::Config& cfg) {
  const config::ModelConfig& m = cfg.model();
  if (m.type() != config::ModelConfig::DIEN && m.type() != config::ModelConfig::GRU4REC) return "";
  return " cell=" + config::RecurrentCell_Name(m.cell());
}

// Checkpointing of one run: the writer (checkpoint.dir set), the content of the trainer and the
// blobs of a resumed checkpoint.
struct CheckpointSetup {
  std::unique_ptr<CheckpointWriter> writer;
  std::map<std::string, std::string> resume_blobs;
  RunCheckpointing run;
  std::string dir;
  int64_t resumed_step = -1;
  // How a stopped run continues (ContinueAdvice): "--resume DIR", with "--set checkpoint.dir=DIR"
  // when the config file does not set it.
  std::string continue_advice;
};

// Builds the writer and the content, restores --resume when given, installs the stop handler
// (SIGTERM, SIGUSR1: common/stop_signals.h). `vocabulary`: the dataset's (data.train_dir; null
// for synthetic data), recorded in every checkpoint; a resumed checkpoint trained on another
// vocabulary is refused, and so is one saved mid-epoch whose position would stand for other
// examples under this run's data.seed, data.shuffle, data.batch_size or dataset layout
// (`examples_per_epoch`: the dataset's TrainingRowsPerEpoch; CheckResumeEpochOrder), and so is
// one whose position lies beyond this run's train.epochs or steps (CheckResumeFitsRun), both
// before its tables load. Once the writer holds DIR/LOCK, a DIR holding checkpoints this run
// would mix with is refused (CheckCheckpointDirForRun). `source`: where the config came from
// (the stop message's advice names a checkpoint.dir that the config file does not set).
Status SetupCheckpoints(const config::Config& cfg, const ConfigSource& source,
                        const std::string& resume, Trainer* ctr, SeqTrainer* seq,
                        ps::LocalEmbeddingStore* store, const DatasetVocabulary* vocabulary,
                        int64_t examples_per_epoch, CheckpointSetup* out) {
  const std::string text = ConfigToText(cfg);
  if (ctr != nullptr) {
    IPS_ASSIGN_OR_RETURN(
        out->run.content,
        TrainerCheckpointContent(&ctr->model(), &ctr->dense_optimizer(), store, text));
  } else {
    IPS_ASSIGN_OR_RETURN(out->run.content, SeqTrainerCheckpointContent(seq, store, text));
  }
  if (vocabulary != nullptr) out->run.content.vocabulary = *vocabulary;
  if (!resume.empty()) {
    if (vocabulary != nullptr) out->run.content.resume_examples_per_epoch = examples_per_epoch;
    // A checkpoint whose position lies beyond this run is refused before its tables load.
    out->run.content.check_resume = [&cfg, &resume](const std::string& checkpoint,
                                                    const std::map<std::string, std::string>& b) {
      return CheckResumeFitsRun(cfg, checkpoint, b).WithContext("--resume " + resume);
    };
    auto resumed = LoadCheckpoint(resume, out->run.content, &out->resume_blobs);
    out->run.content.check_resume = nullptr;  // it refers to this call's arguments
    if (!resumed.ok()) return resumed.status();
    out->resumed_step = *resumed;
    out->run.resume = &out->resume_blobs;
  }
  const config::CheckpointConfig& c = cfg.checkpoint();
  if (!c.dir().empty()) {
    CheckpointOptions o;
    o.dir = c.dir();
    o.keep_last = c.keep_last();
    o.incremental = c.incremental();
    IPS_ASSIGN_OR_RETURN(out->writer, CheckpointWriter::Create(o));
    // After the lock: a second run into DIR is told that DIR is in use, not what it holds.
    IPS_RETURN_IF_ERROR(CheckCheckpointDirForRun(c.dir(), out->resumed_step));
    out->run.writer = out->writer.get();
    out->run.every_steps = c.every_steps();
    out->run.every_seconds = c.every_seconds();
    out->dir = c.dir();
    out->continue_advice = ContinueAdvice(c.dir(), source.text);
  }
  if (!resume.empty())
    std::cerr << "train: resumed from '" << resume << "' at step " << out->resumed_step << "\n";
  // --resume only reads: without checkpoint.dir of its own the run saves nothing, and a stop
  // signal then loses what it trained.
  if (!resume.empty() && c.dir().empty())
    std::cerr << "warning: --resume " << resume
              << ": this run writes no checkpoints (no checkpoint.dir); add --set checkpoint.dir="
              << CheckpointRootOf(resume) << " to keep saving\n";
  out->run.stop = &StopRequested();
  InstallStopSignals();
  return Status::Ok();
}

// A run stopped by SIGTERM or SIGUSR1: says where the checkpoint is and how to continue.
int ReportStopped(const std::string& model, int64_t step, const CheckpointSetup& ck) {
  if (ck.writer != nullptr)
    std::cerr << "train: stopped by " << StopSignalName() << " at step " << step << "; checkpoint "
              << ck.dir << "/ckpt-" << step << "; continue with " << ck.continue_advice << "\n";
  else
    std::cerr << "train: stopped by " << StopSignalName() << " at step " << step
              << "; nothing saved (no checkpoint.dir in the config)\n";
  ResultLine line("train");
  line.Add("model", model).Add("status", "stopped").Add("step", step);
  if (ck.writer != nullptr) line.Add("checkpoint", ck.dir + "/ckpt-" + std::to_string(step));
  line.Print();
  return kExitStopped;
}

// data.train_dir: open and validate the dataset, train, evaluate, print the RESULT line.
int RunDatasetJob(TrainJob job, const config::Config& cfg, const ConfigSource& source,
                  const std::string& resume, RunSinks sinks, std::ofstream* metrics,
                  const std::string& metrics_path) {
  const DatasetRunOptions& run = job.dataset;
  auto data = Dataset::Open(run.train_dir);
  if (!data.ok()) return Fail(data.status().WithContext("data.train_dir '" + run.train_dir + "'"));
  if (Status s = FitJobToDataset(**data, &job); !s.ok())
    return Fail(s.WithContext("data.train_dir '" + run.train_dir + "'"));
  auto store = ps::LocalEmbeddingStore::CreateThreaded(job.tables, job.trainer.num_threads);
  if (!store.ok()) return Fail(store.status());
  const bool sequence = IsSequenceModel(job.trainer.model.kind);
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  if (Status s = MakeTrainer(job, store->get(), &ctr, &seq); !s.ok()) return Fail(s);
  CheckpointSetup ck;
  const DatasetVocabulary vocabulary = VocabularyOf(run.train_dir, (*data)->manifest());
  const int64_t per_epoch = TrainingRowsPerEpoch(**data, job);
  if (Status s = SetupCheckpoints(cfg, source, resume, ctr.get(), seq.get(), store->get(),
                                  &vocabulary, per_epoch, &ck);
      !s.ok())
    return Fail(s);
  sinks.checkpoint = &ck.run;
  const Manifest& m = (*data)->manifest();
  const std::string model = ModelKindName(job.trainer.model.kind);
  std::cerr << "train: model=" << model << CellField(cfg) << " data=" << run.train_dir << " ("
            << m.format << "/" << m.protocol << ", " << m.users << " users, " << m.items
            << " items, " << m.categories << " cats) examples/epoch=" << per_epoch
            << " eval_lists=" << m.eval_examples << "x" << m.eval_candidates
            << " batch=" << run.reader.batch_size << " seq=" << run.reader.max_len
            << " epochs=" << run.epochs << " threads=" << job.trainer.num_threads << "\n";
  Timer wall;
  auto result = sequence ? RunSeqDatasetTraining(seq.get(), **data, run, sinks)
                         : RunDatasetTraining(ctr.get(), **data, run, sinks);
  if (!result.ok()) return Fail(result.status());
  const DatasetRunResult& r = *result;
  if (r.stopped) return ReportStopped(model, ctr != nullptr ? ctr->steps() : seq->steps(), ck);
  // MIND (user vectors): the full-ranking retrieval evaluation after the sampled ranking one. A
  // stop abandons it as it abandons the ranking one: the run's last step is checkpointed already
  // (RunDatasetTraining saves it before the last evaluation), so the run stops there, and resumed
  // it evaluates again.
  std::vector<RetrievalCutoff> recall;
  if (ctr != nullptr && ctr->model().num_user_vectors() > 0) {
    auto retrieval = RunRetrievalEvaluation(ctr.get(), store->get(), **data, run, ck.run.stop);
    if (!retrieval.ok() && StopSet(ck.run.stop) && IsEvaluationAbandoned(retrieval.status()))
      return ReportStopped(model, ctr->steps(), ck);
    if (!retrieval.ok()) return Fail(retrieval.status());
    recall = retrieval->cutoffs;
  }
  std::cerr << "trained " << r.steps_run << " steps in " << Fixed(r.train_seconds, 1)
            << " s, evaluated " << r.eval.users << (r.eval.ranked ? " users" : " rows") << "; wall "
            << Fixed(wall.Seconds(), 1) << " s\n";
  ResultLine line("train");
  line.Add("model", model)
      .Add("epochs", static_cast<int64_t>(r.epochs))
      .Add("steps", r.steps)
      .Add("samples_per_s", Fixed(r.samples_per_s, 1))
      .Add("loss", Fixed(r.loss, 4));
  AddRankingFields(r.eval, recall, &line);
  if (sinks.metrics_out != nullptr) {
    internal::DatasetResultMetricsLine(model, r.epochs, r.steps, r.samples_per_s, r.loss, r.eval,
                                       recall)
        .WriteTo(metrics);
    if (!*metrics) return Fail(DataLossError("writing --metrics_out file '" + metrics_path + "'"));
  }
  line.Print();
  return kExitOk;
}

// The batch schedule of a synthetic run in this process (SyntheticSchedule,
// worker/synthetic_batches.h): a fresh run trains the single-process stream (batch i at step i);
// a resumed one continues its checkpoint's schedule with one worker. After a cluster checkpoint
// of W workers at step s (batches 0 .. W*s - 1 trained) that is batch W*s + (i - s) at step i, and
// the held-out batches stay the cluster run's. Its checkpoints record it, so that `ips eval` and
// later resumes, in one process or under mpirun, take the same batches.
StatusOr<SyntheticSchedule> ScheduleOfRun(const CheckpointSetup& ck, const std::string& resume,
                                          int64_t train_steps) {
  if (ck.resumed_step < 0) return SyntheticSchedule(1);
  IPS_ASSIGN_OR_RETURN(const SyntheticSchedule saved,
                       SyntheticScheduleOf("--resume " + resume, ck.resume_blobs, ck.resumed_step));
  const SyntheticSchedule schedule = saved.ContinuedAt(ck.resumed_step, 1);
  if (schedule != saved)
    std::cerr << "train: the checkpoint's batches were trained by " << saved.Describe()
              << ": continuing the stream at batch " << schedule.BatchIndex(ck.resumed_step, 0)
              << ", held-out batches from " << schedule.HeldOutFirst(train_steps) << "\n";
  return schedule;
}

// data.synthetic: the peer's throughput protocol (worker/trainer.h RunSyntheticTraining, on the
// batches of ScheduleOfRun); a CTR model then scores the held-out batches (AUC), a sequence model
// has nothing to evaluate (i.i.d. Zipf sequences carry no sequential signal), as the peer.
int RunSyntheticJob(Trainer* ctr, SeqTrainer* seq, const TrainJob& job, const CheckpointSetup& ck,
                    const std::string& resume, const RunSinks& sinks, std::ofstream* metrics,
                    const std::string& metrics_path) {
  const SyntheticRunOptions& run = job.run;
  const std::string model = ModelKindName(job.trainer.model.kind);
  auto schedule = ScheduleOfRun(ck, resume, run.warmup_steps + run.steps);
  if (!schedule.ok()) return Fail(schedule.status());
  SyntheticRunResult r;  // a sequence model's SeqSyntheticRunResult copied in (no eval)
  if (seq != nullptr) {
    auto sr = RunSeqSyntheticTraining(seq, run, sinks, &*schedule);
    if (!sr.ok()) return Fail(sr.status());
    if (sr->stopped) return ReportStopped(model, seq->steps(), ck);
    r.batch = sr->batch;
    r.steps = sr->steps;
    r.seconds = sr->seconds;
    r.samples_per_s = sr->samples_per_s;
    r.loss_first10 = sr->loss_first10;
    r.loss_last10 = sr->loss_last10;
  } else {
    auto cr = RunSyntheticTraining(ctr, run, sinks, &*schedule);
    if (!cr.ok()) return Fail(cr.status());
    r = *std::move(cr);
    if (r.stopped) return ReportStopped(model, ctr->steps(), ck);
  }
  std::cerr << "loss first10=" << Fixed(r.loss_first10, 4) << " last10=" << Fixed(r.loss_last10, 4)
            << " step_ms=" << Fixed(1000 * r.seconds / r.steps, 1);
  if (ctr != nullptr)
    std::cerr << " heldout_auc=" << Fixed(r.eval.auc, 4) << " (" << r.eval.count << " examples)";
  std::cerr << "\n";
  ResultLine line("train");
  line.Add("model", model)
      .Add("samples_per_s", Fixed(r.samples_per_s, 1))
      .Add("steps", r.steps)
      .Add("batch", static_cast<int64_t>(r.batch))
      .Add("threads", static_cast<int64_t>(job.trainer.num_threads))
      .Add("loss", Fixed(r.loss_last10, 4));
  if (ctr != nullptr) line.Add("auc", Fixed(r.eval.auc, 4));
  if (sinks.metrics_out != nullptr) {
    MetricsLine result = internal::SyntheticResultMetricsLine(model, r.samples_per_s, r.steps,
                                                              r.batch, r.loss_last10);
    result.Int("threads", job.trainer.num_threads);
    if (ctr != nullptr) result.Decimals("auc", r.eval.auc, 6);
    result.WriteTo(metrics);
    if (!*metrics) return Fail(DataLossError("writing --metrics_out file '" + metrics_path + "'"));
  }
  line.Print();
  return kExitOk;
}

}  // namespace

int RunTrainCommand(const std::vector<std::string>& args) {
  FlagSet flags("train");
  flags.Required("config", "Protobuf text-format config file (launch/configs/*.pbtxt)");
  flags.Repeated("set", "override one field: path.to.field=value");
  flags.String("metrics_out", "",
               "append JSON lines (train intervals, eval, result) to this file "
               "(default: train.metrics_out of the config)");
  flags.Int("eval_batches", 4,
            "CTR models on data.synthetic only (refused otherwise): held-out batches for the "
            "final AUC (0: none)");
  flags.Bool("quiet", "no progress line on stderr");
  flags.String("resume", "",
               "continue a run from a checkpoint: its root (LATEST) or one ckpt-<step> directory");
  flags.String("stream", "",
               "train continuously on an append-only event log (a growing file, or - for stdin) "
               "instead of data.train_dir / data.synthetic");
  AddStreamFlags(&flags);
  if (auto rc = ParseCommandFlags(&flags, args)) return *rc;
  // Usage errors (exit 2 with the usage), before the config is read: flags that do nothing in the
  // run's mode (--stream_* without --stream; --resume, --eval_batches or mpirun with it) and
  // out-of-range values (--stream_negatives 0, --eval_batches -1, ...).
  if (Status s = CheckTrainModeFlags(flags, args, LaunchedUnderMpi()); !s.ok())
    return UsageError(flags, s.message());
  StatusOr<StreamCliOptions> stream_options = StreamCliOptions();
  if (!flags.GetString("stream").empty()) {
    stream_options = StreamCliOptionsFromFlags(flags);
    if (!stream_options.ok()) return UsageError(flags, stream_options.status().message());
  }
  const int64_t eval_batches = flags.GetInt("eval_batches");
  if (eval_batches < 0 || eval_batches > std::numeric_limits<int>::max())
    return UsageError(flags, "--eval_batches must be in [0, " +
                                 std::to_string(std::numeric_limits<int>::max()) + "], got " +
                                 flags.GetString("eval_batches"));
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return kExitError;
  };
  ConfigSource source;  // where cluster.num_ps was set, for the mpirun layout's error
  auto cfg = LoadConfigForRun(flags.GetString("config"), flags.GetRepeated("set"), &source);
  if (!cfg.ok()) return fail(cfg.status());
  // Streaming training writes no checkpoints and trains a CTR model: refuse a config it would
  // silently misread.
  if (!flags.GetString("stream").empty()) {
    if (Status s = CheckStreamConfig(*cfg); !s.ok()) return fail(s);
  }
  // A usage error too, though it needs the config: the flag would do nothing in this run.
  if (flags.WasSet("eval_batches")) {
    if (const std::string unused = EvalBatchesUnused(*cfg, "train"); !unused.empty())
      return UsageError(flags, unused);
  }
  if (MpiWorldSizeFromEnv() == 1 && flags.GetString("stream").empty())
    std::cerr << "train: mpirun started one rank: no room for parameter servers and workers "
                 "(cluster.num_ps="
              << cfg->cluster().num_ps()
              << " ignored); training single-process. Use mpirun -np >= num_ps + 1 for a "
                 "cluster\n";
  if (LaunchedUnderMpi()) {
    // `mpirun -np N ips train`: parameter-server and worker ranks (launch/cluster_train.h).
    ClusterTrainFlags cf;
    cf.eval_batches = static_cast<int>(eval_batches);
    cf.quiet = flags.GetBool("quiet");
    cf.metrics_out = flags.GetString("metrics_out").empty() ? cfg->train().metrics_out()
                                                            : flags.GetString("metrics_out");
    // Every rank gets the same --resume: the servers load their shards, the workers the rest.
    cf.resume = flags.GetString("resume");
    // A layout error names the --set or the file line of cluster.num_ps, as config errors do.
    cf.config_source = &source;
    return RunClusterTrain(*cfg, cf);
  }
  std::string metrics_path = flags.GetString("metrics_out");
  const char* metrics_source = "--metrics_out";
  if (metrics_path.empty()) {
    metrics_path = cfg->train().metrics_out();
    metrics_source = "train.metrics_out";
  }
  std::ofstream metrics;
  if (!metrics_path.empty()) {
    if (Status s = OpenAppendFile(metrics_path, metrics_source, &metrics); !s.ok()) return fail(s);
  }
  RunSinks sinks;
  sinks.progress = flags.GetBool("quiet") ? nullptr : stderr;
  sinks.metrics_out = metrics_path.empty() ? nullptr : &metrics;
  if (!flags.GetString("stream").empty())
    return RunStreamTrain(*cfg, flags.GetString("stream"), sinks, *stream_options);
  auto job = TrainJobFromConfig(*cfg);
  if (!job.ok()) return fail(job.status().WithContext(flags.GetString("config")));
  job->run.eval_batches = static_cast<int>(eval_batches);

  const std::string resume = flags.GetString("resume");
  if (!job->synthetic)
    return RunDatasetJob(*job, *cfg, source, resume, sinks, &metrics, metrics_path);

  auto store = ps::LocalEmbeddingStore::CreateThreaded(job->tables, job->trainer.num_threads);
  if (!store.ok()) return fail(store.status());
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  if (Status s = MakeTrainer(*job, store->get(), &ctr, &seq); !s.ok()) return fail(s);

  const SyntheticRunOptions& run = job->run;
  CheckpointSetup ck;
  if (Status s = SetupCheckpoints(*cfg, source, resume, ctr.get(), seq.get(), store->get(), nullptr,
                                  -1, &ck);
      !s.ok())
    return fail(s);
  sinks.checkpoint = &ck.run;
  const std::string model = ModelKindName(job->trainer.model.kind);
  std::cerr << "train: model=" << model << CellField(*cfg) << " batch=" << run.batch
            << " seq=" << run.data.seq_len << " items=" << run.data.num_items
            << " cats=" << run.data.num_categories << " warmup=" << run.warmup_steps
            << " steps=" << run.steps << " threads=" << job->trainer.num_threads << "\n";
  return RunSyntheticJob(ctr.get(), seq.get(), *job, ck, resume, sinks, &metrics, metrics_path);
}

}  // namespace ips
