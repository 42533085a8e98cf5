#include "launch/cluster_worker.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/output_file.h"
#include "common/progress.h"
#include "common/random.h"
#include "common/result_line.h"
#include "common/stop_signals.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "ps/remote_store.h"
#include "ps/server.h"
#include "ps/transport.h"
#include "worker/checkpoint.h"
#include "worker/cluster.h"
#include "worker/data_reader.h"
#include "worker/internal/run_steps.h"
#include "worker/metrics.h"
#include "worker/model_factory.h"
#include "worker/retrieval.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace cluster_internal {

bool Checkpointing(const config::Config& config) { return !config.checkpoint().dir().empty(); }

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

WorkerClient::WorkerClient(Cluster* cluster, const config::Config& config, const TrainJob& job) {
  ps::RemoteStoreOptions ro;
  ro.tables = job.tables;
  ro.ps_ranks = cluster->layout().PsRanks();
  ro.worker_index = cluster->role_index();
  ro.mode = config.cluster().sync() == config::ClusterConfig::ASYNC
                ? ps::RemoteStoreOptions::Mode::kAsync
                : ps::RemoteStoreOptions::Mode::kSync;
  ro.staleness = config.cluster().staleness();
  auto s = ps::RemoteEmbeddingStore::Create(cluster->transport(), ro);
  if (!s.ok()) cluster->Abort(s.status());
  store = std::move(s).value();
  Collective* coll = cluster->collective();
  dense_grad_hook = [coll, this](float* g, int64_t n) {
    Timer t;
    Status st = coll->AllReduceMean(g, n);
    allreduce_s += t.Seconds();
    return st;
  };
}

WorkerClient::~WorkerClient() = default;

void BroadcastDenseFromWorker0(Cluster* cluster, models::DenseParams<float>* params) {
  if (Status s = cluster->collective()->Broadcast(params->values(),
                                                  params->size() * int64_t{sizeof(float)}, 0);
      !s.ok())
    cluster->Abort(s);
}

void CheckReplicas(Cluster* cluster, const models::DenseParams<float>& params, int64_t done,
                   int every, bool force) {
  if (every <= 0 || (!force && done % every != 0)) return;
  if (Status s = CheckReplicasEqual(cluster->collective(), params.values(), params.size(), done);
      !s.ok())
    cluster->Abort(s);
}

// As single-process `ips train`: the reason of a failure and its code from open(2)'s errno.
void OpenMetricsOut(Cluster* cluster, const ClusterTrainFlags& flags, std::ofstream* metrics) {
  if (cluster->role_index() != 0 || flags.metrics_out.empty()) return;
  if (Status s = OpenAppendFile(flags.metrics_out, "--metrics_out", metrics); !s.ok())
    cluster->Abort(s);
}

bool MetricsOutWritten(const Cluster& cluster, const ClusterTrainFlags& flags,
                       const std::ofstream& metrics) {
  if (!metrics.is_open() || metrics.good()) return true;
  std::cerr << "error: " << cluster.Describe() << ": "
            << DataLossError("writing --metrics_out file '" + flags.metrics_out + "'").ToString()
            << "\n";
  return false;
}

bool PrefetchChangesNothing(const std::vector<ps::TableOptions>& tables) {
  for (const ps::TableOptions& t : tables)
    if (t.ttl_steps > 0 || t.max_memory_mb > 0) return false;
  return true;
}

double SlowestWorkerSeconds(Cluster* cluster, double seconds) {
  const int num_workers = cluster->layout().num_workers;
  std::vector<float> times(static_cast<size_t>(num_workers), 0.0f);
  times[cluster->role_index()] = static_cast<float>(seconds);
  if (Status s = cluster->collective()->AllReduceSum(times.data(), num_workers); !s.ok())
    cluster->Abort(s);
  double slowest = 0;
  for (float t : times) slowest = std::max(slowest, static_cast<double>(t));
  return slowest;
}

StatusOr<double> SumOverWorkers(Collective* coll, int num_workers, double v) {
  if (num_workers == 1) return v;
  float f = static_cast<float>(v);
  IPS_RETURN_IF_ERROR(coll->AllReduceSum(&f, 1));
  return static_cast<double>(f);
}

StatusOr<std::vector<double>> GatherFromWorkers(Collective* coll, int num_workers, double v) {
  std::vector<double> all(static_cast<size_t>(num_workers), 0.0);
  all[static_cast<size_t>(coll->rank())] = v;
  if (num_workers == 1) return all;
  // One broadcast per worker: bit-exact doubles (AllReduceSum is float).
  for (int r = 0; r < num_workers; ++r)
    IPS_RETURN_IF_ERROR(coll->Broadcast(&all[static_cast<size_t>(r)], sizeof(double), r));
  return all;
}

namespace {

// The batch schedule of this process's synthetic run, settled by
// WorkerCheckpoints::ResumeSynthetic (null before: every worker from step 0).
const SyntheticSchedule*& RunSchedule() {
  static const SyntheticSchedule* schedule = nullptr;
  return schedule;
}

}  // namespace

uint64_t SyntheticBatchIndex(Cluster* cluster, int64_t i) {
  const SyntheticSchedule fresh(cluster->layout().num_workers);
  const SyntheticSchedule* schedule = RunSchedule() != nullptr ? RunSchedule() : &fresh;
  return schedule->BatchIndex(i, cluster->role_index());
}

void WriteTrainLine(std::ostream& metrics, Cluster* cluster, std::string_view model,
                    const internal::TrainLineFigures& f, const ps::RemoteStoreMetrics& m) {
  internal::TrainMetricsLine(model, f)
      .Str("role", "worker")
      .Int("rank", cluster->rank())
      .Num("pull_p50_us", m.pull_p50_us, 6)
      .Num("pull_p99_us", m.pull_p99_us, 6)
      .Num("push_p50_us", m.push_p50_us, 6)
      .Num("push_p99_us", m.push_p99_us, 6)
      .Int("bytes_sent", m.bytes_sent)
      .Int("bytes_received", m.bytes_received)
      .Int("staleness_max", m.staleness_max)
      .WriteTo(&metrics);
}

void PrintPrefetchHits(Cluster* cluster, const ps::RemoteStoreMetrics& m) {
  std::cerr << cluster->Describe() << ": pulls=" << m.pulls << " prefetch_hits=" << m.prefetch_hits
            << "\n";
}

void LogWorkerTraffic(Cluster* cluster, const SyntheticSummary& s, int batch,
                      const ps::RemoteStoreMetrics& m) {
  std::cerr << cluster->Describe() << ": steps=" << s.steps_run << " own_samples_per_s="
            << Fixed(s.timed_s > 0 ? static_cast<double>(s.timed_steps) * batch / s.timed_s : 0, 1)
            << " pull_p50_us=" << Fixed(m.pull_p50_us, 0)
            << " pull_p99_us=" << Fixed(m.pull_p99_us, 0)
            << " push_p50_us=" << Fixed(m.push_p50_us, 0)
            << " push_p99_us=" << Fixed(m.push_p99_us, 0) << " bytes_sent=" << m.bytes_sent
            << " bytes_received=" << m.bytes_received << " staleness_max=" << m.staleness_max
            << " staleness_mean=" << Fixed(m.staleness_mean, 2) << "\n";
}

std::optional<int> RunSyntheticRounds(
    Cluster* cluster, const ClusterTrainFlags& flags, const TrainJob& job, WorkerClient* client,
    WorkerCheckpoints* ck, const models::DenseParams<float>& params, int start, const char* unit,
    const std::function<StatusOr<double>(int, bool)>& step, std::ostream* metrics,
    std::vector<double>* losses, SyntheticSummary* summary) {
  const SyntheticRunOptions& run = job.run;
  const int num_workers = cluster->layout().num_workers;
  const int train_steps = run.warmup_steps + run.steps;
  std::unique_ptr<ProgressLine> progress;
  if (cluster->role_index() == 0 && !flags.quiet) {
    progress = std::make_unique<ProgressLine>(
        "train", static_cast<int64_t>(run.steps) * run.batch * num_workers, unit, stderr);
    // A resumed run's timed steps count in the position, not in this process's rate.
    progress->StartFrom(static_cast<int64_t>(std::max(0, start - run.warmup_steps)) * run.batch *
                        num_workers);
  }
  const bool may_prefetch = PrefetchChangesNothing(job.tables);
  const std::string model = ModelKindName(job.trainer.model.kind);
  double timed = 0;
  int64_t timed_steps = 0;
  internal::LossWindow window;  // worker 0's losses since its last train line
  Timer timer;
  for (int i = start; i < train_steps; ++i) {
    // Whether this step ends with a checkpoint (and the run stops after it): see DecideCheckpoint.
    bool checkpoint_after, stop;
    ck->BeginStep(i, i + 1 == train_steps, &checkpoint_after, &stop);
    if (i == run.warmup_steps) client->allreduce_s = 0;  // timed steps only
    timer.Reset();
    // The next batch's pull overlaps this step's compute and push where that changes nothing
    // (PrefetchChangesNothing), and not before a checkpoint: the snapshot would hold the
    // unconsumed prefetch's rows and sightings, which the resumed run pulls and counts again.
    const bool prefetch = i + 1 < train_steps && !checkpoint_after && may_prefetch;
    auto loss = step(i, prefetch);
    if (i >= run.warmup_steps) {
      timed += timer.Seconds();
      ++timed_steps;
    }
    if (!loss.ok()) cluster->Abort(loss.status().WithContext("step " + std::to_string(i + 1)));
    losses->push_back(*loss);
    window.Add(*loss);
    const int done = i + 1;
    CheckReplicas(cluster, params, done, flags.replica_check_every, /*force=*/false);
    if (progress && i >= run.warmup_steps)
      progress->Update(static_cast<int64_t>(i - run.warmup_steps + 1) * run.batch * num_workers,
                       "loss=" + Fixed(*loss, 4));
    if (metrics != nullptr && (done % run.log_every_steps == 0 || done == train_steps)) {
      // The steps this process timed, every worker's samples (the workers step together).
      internal::TrainLineFigures f;
      f.step = done;
      f.timed_steps = std::max(0, done - run.warmup_steps);
      f.loss = window.Take();
      f.step_loss = *loss;
      f.samples_per_s =
          internal::PerSecond(static_cast<double>(timed_steps) * run.batch * num_workers, timed);
      f.elapsed_s = timed;
      WriteTrainLine(*metrics, cluster, model, f, client->store->metrics());
    }
    if (checkpoint_after) ck->WriteSynthetic(done, *losses);
    if (stop && done < train_steps) {
      return ck->Stop(job, done, progress.get());
    }
  }
  if (progress) progress->Finish("loss=" + Fixed(losses->empty() ? 0.0 : losses->back(), 4));
  CheckReplicas(cluster, params, train_steps, flags.replica_check_every, /*force=*/true);
  // Global throughput: every worker's samples over the slowest worker's time.
  const double slowest = SlowestWorkerSeconds(cluster, timed);
  summary->train_steps = train_steps;
  summary->steps_run = train_steps - start;
  summary->timed_steps = timed_steps;
  summary->dense_floats = params.size();
  summary->timed_s = timed;
  summary->samples_per_s =
      slowest > 0 ? static_cast<double>(timed_steps) * run.batch * num_workers / slowest : 0;
  const size_t n = losses->size(), k = std::min<size_t>(10, n);
  summary->loss = internal::Mean(*losses, n - k, n);
  LogWorkerTraffic(cluster, *summary, run.batch, client->store->metrics());
  return std::nullopt;
}

ResultLine SyntheticResultLine(Cluster* cluster, const config::Config& config, const TrainJob& job,
                               const WorkerClient& client, const ps::RemoteStoreMetrics& m,
                               const SyntheticSummary& s) {
  ResultLine line("train_cluster");
  line.Add("model", ModelKindName(job.trainer.model.kind))
      .Add("workers", static_cast<int64_t>(cluster->layout().num_workers))
      .Add("ps", static_cast<int64_t>(cluster->layout().num_ps))
      .Add("sync", config.cluster().sync() == config::ClusterConfig::ASYNC ? "async" : "sync")
      .Add("staleness", static_cast<int64_t>(config.cluster().staleness()))
      .Add("samples_per_s", Fixed(s.samples_per_s, 1))
      .Add("steps", static_cast<int64_t>(job.run.steps))
      .Add("batch", static_cast<int64_t>(job.run.batch))
      .Add("loss", Fixed(s.loss, 4));
  for (const auto& [key, value] : s.quality) line.Add(key, value);
  const double per_step = s.timed_steps > 0 ? 1000.0 / static_cast<double>(s.timed_steps) : 0;
  line.Add("staleness_max", m.staleness_max)
      .Add("pull_p50_us", Fixed(m.pull_p50_us, 0))
      .Add("pull_p99_us", Fixed(m.pull_p99_us, 0))
      .Add("push_p50_us", Fixed(m.push_p50_us, 0))
      .Add("push_p99_us", Fixed(m.push_p99_us, 0))
      // Worker 0's per-step averages over the timed steps (step = the trainer's Step), its PS
      // traffic per step over every step this process ran (its traffic is theirs: a resumed
      // checkpoint's steps are not), and the dense floats all-reduced per step.
      .Add("step_ms", Fixed(per_step * s.timed_s, 3))
      .Add("allreduce_ms", Fixed(per_step * client.allreduce_s, 3))
      .Add("ps_bytes_per_step",
           static_cast<int64_t>(s.steps_run > 0 ? (m.bytes_sent + m.bytes_received) / s.steps_run
                                                : 0))
      .Add("dense_floats", s.dense_floats);
  return line;
}

ResultLine DatasetResultLine(Cluster* cluster, const config::Config& config,
                             const WorkerClient& client, const ps::RemoteStoreMetrics& m,
                             const DatasetSummary& s) {
  ResultLine line("train_cluster");
  line.Add("model", s.model)
      .Add("workers", static_cast<int64_t>(cluster->layout().num_workers))
      .Add("ps", static_cast<int64_t>(cluster->layout().num_ps))
      .Add("sync", config.cluster().sync() == config::ClusterConfig::ASYNC ? "async" : "sync")
      .Add("epochs", static_cast<int64_t>(s.epochs))
      .Add("steps", s.steps)
      .Add("samples_per_s", Fixed(s.samples_per_s, 1))
      .Add("loss", Fixed(s.loss, 4));
  AddRankingFields(s.eval, s.recall, &line);
  line.Add("staleness_max", m.staleness_max)
      .Add("allreduce_ms",
           Fixed(s.steps_run > 0 ? 1000 * client.allreduce_s / static_cast<double>(s.steps_run) : 0,
                 3))
      .Add("dense_floats", s.dense_floats);
  return line;
}

void WriteDatasetResultLine(std::ostream& metrics, Cluster* cluster, const DatasetSummary& s,
                            const ps::RemoteStoreMetrics& m) {
  internal::DatasetResultMetricsLine(s.model, s.epochs, s.steps, s.samples_per_s, s.loss, s.eval,
                                     s.recall)
      .Int("workers", cluster->layout().num_workers)
      .Int("ps", cluster->layout().num_ps)
      .Int("staleness_max", m.staleness_max)
      .WriteTo(&metrics);
}

MetricsLine SyntheticResultMetrics(Cluster* cluster, const TrainJob& job, const SyntheticSummary& s,
                                   const ps::RemoteStoreMetrics& m) {
  MetricsLine line = internal::SyntheticResultMetricsLine(
      ModelKindName(job.trainer.model.kind), s.samples_per_s, job.run.steps, job.run.batch, s.loss);
  line.Int("workers", cluster->layout().num_workers)
      .Int("ps", cluster->layout().num_ps)
      .Int("staleness_max", m.staleness_max);
  return line;
}

}  // namespace cluster_internal

namespace {

using cluster_internal::Checkpointing;
using cluster_internal::Fixed;

// The end of a run stopped by SIGTERM or SIGUSR1 after its checkpoint `step`: worker 0 says where
// the checkpoint is (and prints the RESULT line), the servers are shut down; returns kExitStopped.
// The advice names checkpoint.dir unless the config file (flags.config_source) sets it.
int StopAfterCheckpoint(Cluster* cluster, ps::RemoteEmbeddingStore* store, const TrainJob& job,
                        const ClusterTrainFlags& flags, const config::CheckpointConfig& ck,
                        int64_t step, ProgressLine* progress) {
  if (progress != nullptr) progress->Finish("stopped");
  if (cluster->role_index() == 0) {
    const std::string file_text = flags.config_source != nullptr ? flags.config_source->text : "";
    std::cerr << "cluster: stopped by " << StopSignalName() << " at step " << step
              << "; checkpoint " << ck.dir() << "/ckpt-" << step << "; continue with "
              << ContinueAdvice(ck.dir(), file_text) << "\n";
    ResultLine("train_cluster")
        .Add("model", ModelKindName(job.trainer.model.kind))
        .Add("status", "stopped")
        .Add("step", step)
        .Add("checkpoint", ck.dir() + "/ckpt-" + std::to_string(step))
        .Print();
  }
  if (Status s = store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return kExitStopped;
}

// checkpoint.dir set: checks the intervals, installs the stop handler
// (SIGTERM, SIGUSR1: common/stop_signals.h) and, on worker 0, creates
// the writer (null on the other workers) and, holding DIR/LOCK, refuses a DIR whose checkpoints
// the run would mix with (CheckCheckpointDirForRun, as single-process `ips train`). *writing_step
// is the checkpoint being written, read by the test-only fault hook
// (flags.kill_in_checkpoint_step).
StatusOr<std::unique_ptr<CheckpointWriter>> StartCheckpointing(Cluster* cluster,
                                                               const config::Config& config,
                                                               const ClusterTrainFlags& flags,
                                                               const int64_t* writing_step) {
  const config::CheckpointConfig& ck = config.checkpoint();
  InstallStopSignals();
  if (cluster->role_index() != 0) return std::unique_ptr<CheckpointWriter>();
  CheckpointOptions o;
  o.dir = ck.dir();
  o.keep_last = ck.keep_last();
  o.incremental = ck.incremental();
  if (cluster->rank() == flags.kill_rank && flags.kill_in_checkpoint_step >= 0) {
    // Test-only: the coordinator dies with every file of the checkpoint and its manifest
    // written, just before the publishing rename.
    const int64_t kill_at = flags.kill_in_checkpoint_step;
    o.fault_hook = [writing_step, kill_at, cluster](const std::string& event) {
      if (event == "publish" && *writing_step == kill_at) {
        std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL before publishing %lld\n",
                     cluster->Describe().c_str(), static_cast<long long>(*writing_step));
        std::fflush(stderr);
        std::raise(SIGKILL);
      }
      return Status::Ok();
    };
  }
  IPS_ASSIGN_OR_RETURN(auto writer, CheckpointWriter::Create(o));
  // The writer is made before the resume (every worker restores it later), so the resumed step
  // is read from the checkpoint's manifest here.
  int64_t resumed_step = -1;
  if (!flags.resume.empty()) {
    auto head = PeekCheckpoint(flags.resume);
    if (!head.ok()) return head.status().WithContext("--resume " + flags.resume);
    resumed_step = head->step;
  }
  IPS_RETURN_IF_ERROR(CheckCheckpointDirForRun(ck.dir(), resumed_step));
  return writer;
}

// Whether the step about to run ends with a checkpoint (and whether the run stops after it),
// decided before the step and the same on every worker: a SIGTERM reaches the workers at
// different steps, and only worker 0's clock decides every_seconds. Deciding first lets the step
// skip its prefetch, so a snapshot never holds a pull of the step after it. `done` = the steps
// done once this one is; last = it is the run's last step.
Status DecideCheckpoint(Collective* coll, const config::CheckpointConfig& ck, int w, int64_t done,
                        bool last, double seconds_since_checkpoint, bool* checkpoint_after,
                        bool* stop) {
  float decide[2] = {
      StopRequested().load(std::memory_order_relaxed) ? 1.f : 0.f,
      w == 0 && ck.every_seconds() > 0 && seconds_since_checkpoint >= ck.every_seconds() ? 1.f
                                                                                         : 0.f};
  IPS_RETURN_IF_ERROR(coll->AllReduceSum(decide, 2));
  *stop = decide[0] > 0;
  *checkpoint_after =
      *stop || decide[1] > 0 || last || (ck.every_steps() > 0 && done % ck.every_steps() == 0);
  return Status::Ok();
}

// Before trainer step `step` (0-based; `last`: the run's last step): the test-only faults
// (flags.kill_rank dies with SIGKILL at kill_step, or raises SIGTERM at term_step), then
// DecideCheckpoint when checkpointing (else both outputs false). Aborts the job on an error.
void BeginStep(Cluster* cluster, const config::Config& config, const ClusterTrainFlags& flags,
               int64_t step, bool last, const Timer& since_checkpoint, bool* checkpoint_after,
               bool* stop) {
  if (cluster->rank() == flags.kill_rank && step == flags.kill_step) {
    std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL at step %lld\n",
                 cluster->Describe().c_str(), static_cast<long long>(step));
    std::fflush(stderr);
    std::raise(SIGKILL);
  }
  if (cluster->rank() == flags.kill_rank && step == flags.term_step) std::raise(SIGTERM);
  *checkpoint_after = false;
  *stop = false;
  if (!Checkpointing(config)) return;
  if (Status s =
          DecideCheckpoint(cluster->collective(), config.checkpoint(), cluster->role_index(),
                           step + 1, last, since_checkpoint.Seconds(), checkpoint_after, stop);
      !s.ok())
    cluster->Abort(s);
}

// Checkpoint `step`, called by every worker at the same step; see the header for the protocol.
// Worker 0 (the only one with a writer) adds blobs() (the run's position) to the dense content.
Status WriteCheckpoint(Cluster* cluster, ps::RemoteEmbeddingStore* store, CheckpointWriter* writer,
                       const CheckpointContent& dense,
                       const std::function<std::map<std::string, std::string>()>& blobs,
                       int64_t step, int64_t* writing_step) {
  Collective* coll = cluster->collective();
  // Every worker has finished `step`: its pushes are applied (sync: acknowledged; async: the
  // step's AdvanceStep reply follows them on the same channel).
  IPS_RETURN_IF_ERROR(coll->Barrier());
  if (cluster->role_index() == 0) {
    Timer t;
    *writing_step = step;
    IPS_ASSIGN_OR_RETURN(const std::string staging, writer->Begin(step));
    const bool incremental = writer->NextIsIncremental();
    auto shards = store->CheckpointServers(staging, step, incremental);
    if (!shards.ok()) {
      ps::RemoveTree(staging);
      return shards.status().WithContext("checkpoint " + std::to_string(step));
    }
    std::vector<CheckpointFile> files;
    for (const ps::TableShardFile& f : *shards) files.push_back(CheckpointFileOf(f));
    CheckpointContent content = dense;
    content.blobs = blobs();
    auto info = writer->Commit(step, staging, content, files);
    if (!info.ok()) {
      ps::RemoveTree(staging);
      return info.status();
    }
    IPS_RETURN_IF_ERROR(store->CommitServerCheckpoint(step));
    std::cerr << "checkpoint " << info->path << ": " << info->files << " files, " << info->bytes
              << " bytes, " << info->table_rows << " table rows"
              << (info->incremental ? " (incremental)" : "") << " in " << Fixed(t.Seconds(), 3)
              << " s\n";
  }
  // The others start the next step only once the servers' shards are written.
  return coll->Barrier();
}

}  // namespace

// ---- WorkerCheckpoints: the protocol above for either trainer ---------------------------------

namespace cluster_internal {

WorkerCheckpoints::WorkerCheckpoints(Cluster* cluster, const config::Config& config,
                                     const ClusterTrainFlags& flags,
                                     ps::RemoteEmbeddingStore* store, TrainerCheckpointState state)
    : cluster_(cluster),
      config_(config),
      flags_(flags),
      store_(store),
      state_(std::move(state)),
      schedule_(cluster->layout().num_workers) {
  // --resume only reads: without checkpoint.dir of its own the job saves nothing, and a stop
  // signal then ends it without a checkpoint.
  if (!Checkpointing(config) && !flags.resume.empty() && cluster->role_index() == 0)
    std::cerr << ("warning: --resume " + flags.resume +  // one write
                  ": this run writes no checkpoints (no checkpoint.dir); add --set "
                  "checkpoint.dir=" +
                  CheckpointRootOf(flags.resume) + " to keep saving\n");
  if (!Checkpointing(config)) return;
  auto wr = StartCheckpointing(cluster, config, flags, &writing_step_);
  if (!wr.ok()) cluster->Abort(wr.status());
  writer_ = std::move(wr).value();
}

WorkerCheckpoints::~WorkerCheckpoints() {
  if (RunSchedule() == &schedule_) RunSchedule() = nullptr;
}

StatusOr<std::map<std::string, std::string>> WorkerCheckpoints::Restore(std::string* dir) {
  // Every worker loads the same dense state, so the replicas stay equal.
  IPS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(flags_.resume));
  std::map<std::string, std::string> blobs;
  // A checkpoint whose position lies beyond this run is refused before the dense state loads.
  state_.dense.check_resume = [this](const std::string& checkpoint,
                                     const std::map<std::string, std::string>& b) {
    return CheckResumeFitsRun(config_, checkpoint, b);
  };
  const Status restored = reader->Restore(state_.dense, &blobs);
  state_.dense.check_resume = nullptr;  // the content is also what every checkpoint writes
  IPS_RETURN_IF_ERROR(restored);
  *dir = reader->dir();
  return blobs;
}

int WorkerCheckpoints::ResumeSynthetic(int train_steps, std::vector<double>* losses) {
  const int num_workers = cluster_->layout().num_workers;
  RunSchedule() = &schedule_;
  if (flags_.resume.empty()) return 0;
  std::string dir;
  auto blobs = Restore(&dir);
  std::vector<int64_t> step;
  Status s = blobs.status();
  if (s.ok()) s = UnpackBlob(*blobs, "run/synthetic_step", 1, &step);
  if (s.ok()) s = UnpackBlob(*blobs, "run/losses", 0, losses);
  if (s.ok() &&
      (step[0] < 0 || step[0] > train_steps || static_cast<int64_t>(losses->size()) != step[0]))
    s = DataLossError(dir + ": blob 'run/synthetic_step' = " + std::to_string(step[0]) +
                      " does not fit a run of " + std::to_string(train_steps) + " steps with " +
                      std::to_string(losses->size()) + " losses");
  // The batches the checkpoint's run trained (by another number of workers, or in one process):
  // this run continues the stream after them.
  SyntheticSchedule saved;
  if (s.ok()) {
    auto schedule = SyntheticScheduleOf(dir, *blobs, step[0]);
    s = schedule.status();
    if (s.ok()) saved = *schedule;
  }
  if (s.ok()) {
    state_.set_steps(step[0]);
    s = state_.restore_model_blobs(*blobs);
  }
  if (!s.ok()) cluster_->Abort(s.WithContext("--resume " + flags_.resume));
  schedule_ = saved.ContinuedAt(step[0], num_workers);
  if (cluster_->role_index() == 0) {
    std::string line =
        "cluster: resumed from " + flags_.resume + " at step " + std::to_string(step[0]) + "\n";
    if (schedule_ != saved)
      line += "cluster: the checkpoint's batches were trained by " + saved.Describe() +
              ": continuing the stream at batch " +
              std::to_string(schedule_.BatchIndex(step[0], 0)) + ", held-out batches from " +
              std::to_string(schedule_.HeldOutFirst(train_steps)) + "\n";
    std::cerr << line;  // one write
  }
  return static_cast<int>(step[0]);
}

DatasetPosition WorkerCheckpoints::ResumeDataset(int epochs, int64_t per_epoch) {
  DatasetPosition p;
  if (flags_.resume.empty()) return p;
  std::string dir;
  // A checkpoint saved mid-epoch is refused when this run's data.seed, data.shuffle,
  // data.batch_size or dataset layout would make its position stand for other examples
  // (CheckResumeEpochOrder, as single-process `ips train --resume`).
  state_.dense.resume_examples_per_epoch = per_epoch;
  auto blobs = Restore(&dir);
  std::vector<int64_t> st;
  std::vector<double> loss, worker_loss;
  const int num_workers = cluster_->layout().num_workers, me = cluster_->role_index();
  Status s = blobs.status();
  if (s.ok()) s = UnpackBlob(*blobs, "run/dataset", 7, &st);
  if (s.ok()) s = UnpackBlob(*blobs, "run/loss_sum", 1, &loss);
  // Each worker's own sum, when the checkpoint has them for this many workers (older
  // checkpoints, single-process ones and another worker count: worker 0 carries the total).
  if (s.ok()) {
    const bool own = blobs->count("run/worker_loss_sums") != 0 &&
                     UnpackBlob(*blobs, "run/worker_loss_sums", num_workers, &worker_loss).ok();
    if (own) {
      loss[0] = worker_loss[static_cast<size_t>(me)];
    } else if (me != 0) {
      loss[0] = 0;
    }
  }
  if (s.ok() &&
      (st[0] < 0 || st[0] >= epochs || st[1] < 0 || st[1] > per_epoch || st[2] < 0 || st[6] < 0))
    s = DataLossError(dir + ": blob 'run/dataset' (epoch " + std::to_string(st[0] + 1) +
                      ", position " + std::to_string(st[1]) + ") does not fit a run of " +
                      std::to_string(epochs) + " epochs of " + std::to_string(per_epoch) +
                      " examples");
  if (s.ok()) {
    state_.set_steps(st[6]);
    s = state_.restore_model_blobs(*blobs);
  }
  if (!s.ok()) cluster_->Abort(s.WithContext("--resume " + flags_.resume));
  p = {st[0], st[1], st[2], st[3], st[4], st[5], s.ok() ? loss[0] : 0};
  if (cluster_->role_index() == 0)
    std::cerr << ("cluster: resumed from " + flags_.resume + " at epoch " +  // one write
                  std::to_string(p.epoch + 1) + " position " + std::to_string(p.position) +
                  " step " + std::to_string(st[6]) + "\n");
  return p;
}

void WorkerCheckpoints::BeginStep(int64_t step, bool last, bool* checkpoint_after, bool* stop) {
  if (!stepping_) {  // every_seconds counts from the first step (not from the set-up)
    since_checkpoint_.Reset();
    stepping_ = true;
  }
  ips::BeginStep(cluster_, config_, flags_, step, last, since_checkpoint_, checkpoint_after, stop);
}

void WorkerCheckpoints::Write(int64_t step,
                              const std::function<std::map<std::string, std::string>()>& blobs) {
  // Besides the run's position, every checkpoint holds the model's blobs (dropout step) and the
  // cluster's layout.
  auto all_blobs = [&] {
    std::map<std::string, std::string> b = blobs();
    state_.save_model_blobs(&b);
    b["cluster/layout"] =
        PackBlob(std::vector<int64_t>{cluster_->layout().num_ps, cluster_->layout().num_workers});
    return b;
  };
  if (Status s = WriteCheckpoint(cluster_, store_, writer_.get(), state_.dense, all_blobs, step,
                                 &writing_step_);
      !s.ok())
    cluster_->Abort(s);
  since_checkpoint_.Reset();
}

void WorkerCheckpoints::WriteSynthetic(int64_t step, const std::vector<double>& losses) {
  Write(step, [&] {
    std::map<std::string, std::string> b;
    b["run/synthetic_step"] = PackBlob(std::vector<int64_t>{step});
    b["run/losses"] = PackBlob(losses);
    b[kSyntheticScheduleBlob] = EncodeSyntheticSchedule(schedule_);
    return b;
  });
}

void WorkerCheckpoints::WriteDataset(int64_t step, DatasetPosition at) {
  // Every worker's own sum, so that a resumed epoch adds each worker's later losses to exactly
  // the sum it had (the epoch's mean is then the uninterrupted run's to the bit), and their total
  // for a single-process resume.
  auto worker_loss =
      GatherFromWorkers(cluster_->collective(), cluster_->layout().num_workers, at.loss_sum);
  if (!worker_loss.ok()) cluster_->Abort(worker_loss.status());
  double total = 0;
  for (double l : *worker_loss) total += l;
  Write(step, [&] {
    std::map<std::string, std::string> b;
    b["run/dataset"] = PackBlob(std::vector<int64_t>{at.epoch, at.position, at.steps, at.samples,
                                                     at.epoch_steps, at.epoch_samples, step});
    b["run/loss_sum"] = PackBlob(std::vector<double>{total});
    b["run/worker_loss_sums"] = PackBlob(*worker_loss);
    return b;
  });
}

int WorkerCheckpoints::Stop(const TrainJob& job, int64_t step, ProgressLine* progress) {
  return StopAfterCheckpoint(cluster_, store_, job, flags_, config_.checkpoint(), step, progress);
}

DatasetWalk::DatasetWalk(Cluster* cluster, const DatasetRunOptions& run, const EpochRounds& rounds,
                         WorkerCheckpoints* ck, bool resume, std::string model,
                         ps::RemoteEmbeddingStore* store)
    : cluster_(cluster),
      run_(run),
      rounds_(rounds),
      ck_(ck),
      model_(std::move(model)),
      store_(store),
      resumed_(resume) {
  at_ = ck->ResumeDataset(run.epochs, rounds.per_epoch);
  first_step_ = at_.steps;
  // The run's last step (a checkpoint always follows it, as in single-process training).
  last_step_ =
      at_.steps + rounds.From(at_.position) + (run.epochs - at_.epoch - 1) * rounds.From(0);
  if (run.max_steps > 0) last_step_ = std::min<int64_t>(last_step_, run.max_steps);
}

void DatasetWalk::StartEpoch(int64_t e) {
  const bool resumed_epoch = resumed_ && e == at_.epoch;
  epoch_ = resumed_epoch ? at_ : DatasetPosition{};
  epoch_.epoch = e;
  if (!resumed_epoch) epoch_.position = 0;
  p0_ = epoch_.position;
  rounds_in_epoch_ = rounds_.From(p0_);
  last_round_ = -1;
  resumed_ = false;
}

StatusOr<double> DatasetWalk::EpochLoss() const {
  const int num_workers = cluster_->layout().num_workers;
  IPS_ASSIGN_OR_RETURN(const double sum,
                       SumOverWorkers(cluster_->collective(), num_workers, epoch_.loss_sum));
  return epoch_.epoch_steps > 0 ? sum / static_cast<double>(epoch_.epoch_steps * num_workers)
                                : std::nan("");
}

bool DatasetWalk::AfterStep(int64_t k, int64_t done, double loss, bool checkpoint_after, bool stop,
                            double elapsed_s, ProgressLine* progress, std::ostream* metrics) {
  const int64_t rows = rounds_.Rows(p0_, k);
  epoch_.loss_sum += loss;
  ++epoch_.epoch_steps;
  epoch_.epoch_samples += rows;
  ++at_.steps;
  at_.samples += rows;
  samples_run_ += rows;
  window_.Add(loss);
  const int64_t e = epoch_.epoch;
  if (progress != nullptr && (epoch_.epoch_steps % run_.log_every_steps == 0 || k == 0))
    progress->Update(at_.samples, "epoch " + std::to_string(e + 1) + "/" +
                                      std::to_string(run_.epochs) + " loss=" + Fixed(loss, 4));
  if (metrics != nullptr && (done % run_.log_every_steps == 0 || at_.steps == last_step_)) {
    internal::TrainLineFigures f;
    f.step = done;
    f.epoch = e + 1;
    f.loss = window_.Take();
    f.step_loss = loss;
    f.samples_per_s = internal::PerSecond(static_cast<double>(samples_run_), elapsed_s);
    f.elapsed_s = elapsed_s;
    WriteTrainLine(*metrics, cluster_, model_, f, store_->metrics());
  }
  last_round_ = k;
  if (checkpoint_after) {
    ck_->WriteDataset(done, {e, rounds_.PositionAfter(p0_, k), at_.steps, at_.samples,
                             epoch_.epoch_steps, epoch_.epoch_samples, epoch_.loss_sum});
    checkpointed_step_ = done;
  }
  return stop && at_.steps < last_step_;
}

void DatasetWalk::CheckpointNow(int64_t done) {
  if (checkpointed_step_ == done) return;
  // PositionAfter(p0, -1) = p0: an epoch entered at a resumed position and not stepped yet.
  ck_->WriteDataset(done, {epoch_.epoch, rounds_.PositionAfter(p0_, last_round_), at_.steps,
                           at_.samples, epoch_.epoch_steps, epoch_.epoch_samples, epoch_.loss_sum});
  checkpointed_step_ = done;
}

int RunDatasetRounds(Cluster* cluster, const config::Config& config, const TrainJob& job,
                     const ClusterTrainFlags& flags, const WorkerClient& client,
                     TrainerCheckpointState checkpoint_state, DatasetRoundsSource* source) {
  const DatasetRunOptions& run = job.dataset;
  if (run.epochs < 1 || run.eval_every_epochs < 1 || run.max_steps < 0 || run.top_k < 1 ||
      run.reader.batch_size < 1 || run.log_every_steps < 1)
    cluster->Abort(InvalidArgumentError(
        "train.epochs, eval.every_epochs, eval.top_k, data.batch_size and train.log_every_steps "
        "must be >= 1, train.max_steps >= 0"));
  const int w = cluster->role_index(), num_workers = cluster->layout().num_workers;
  Collective* coll = cluster->collective();
  ps::RemoteEmbeddingStore* store = client.store.get();
  const DatasetRoundsSource::Names names = source->names();
  const int64_t per_epoch = source->per_epoch(), batch = run.reader.batch_size;
  if (Status s = CheckEpochFillsWorkers(job, per_epoch, num_workers); !s.ok()) cluster->Abort(s);
  const EpochRounds rounds_of{per_epoch, batch, num_workers};
  checkpoint_state.dense.vocabulary = VocabularyOf(run.train_dir, source->data().manifest());
  WorkerCheckpoints ck(cluster, config, flags, store, std::move(checkpoint_state));
  const std::string model = ModelKindName(job.trainer.model.kind);
  DatasetWalk walk(cluster, run, rounds_of, &ck, !flags.resume.empty(), model, store);
  if (w == 0)
    std::cerr << "cluster: model=" << model << " data=" << run.train_dir << " " << names.items
              << "/epoch=" << per_epoch << " batch=" << batch << " per worker x " << num_workers
              << " workers, " << rounds_of.From(0) << " steps/epoch, "
              << per_epoch - rounds_of.PositionAfter(0, rounds_of.From(0) - 1) << " " << names.items
              << "/epoch left out, epochs=" << run.epochs << "\n";
  std::ofstream metrics;
  OpenMetricsOut(cluster, flags, &metrics);
  std::unique_ptr<ProgressLine> progress;
  if (w == 0 && !flags.quiet) {
    // The position counts a resumed checkpoint's samples (walk.at()), the rate this process's.
    progress = std::make_unique<ProgressLine>(
        "train", walk.at().samples + (walk.last_step() - walk.first_step()) * batch * num_workers,
        names.unit, stderr);
    progress->StartFrom(walk.at().samples);
  }
  const bool may_prefetch = PrefetchChangesNothing(job.tables);

  DatasetSummary summary;
  summary.model = model;
  summary.loss = std::nan("");
  double train_seconds = 0;  // this worker's reading + steps (evaluation excluded)
  bool stopped = false, finished = false;
  // Worker 0's evaluations watch the stop flag when a stop can end the run (checkpointing).
  const bool checkpointing = Checkpointing(config);
  const std::atomic<bool>& stop_flag = StopRequested();
  Timer timer;
  for (int64_t e = walk.at().epoch; e < run.epochs && !stopped && !finished; ++e) {
    const std::string where = "epoch " + std::to_string(e + 1);
    walk.StartEpoch(e);
    auto read = [&](int64_t k, bool next) {
      Status s = source->Read(e, walk.First(k, w), source->steps() + (next ? 1 : 0), next);
      if (!s.ok()) cluster->Abort(s.WithContext(where + " round " + std::to_string(k)));
    };
    bool have_next = false;
    timer.Reset();
    for (int64_t k = 0; k < walk.rounds() && !walk.Done(); ++k) {
      bool checkpoint_after, stop;  // decided by every worker together (see RunWorker)
      ck.BeginStep(source->steps(), walk.NextIsLast(), &checkpoint_after, &stop);
      if (have_next) {
        source->Advance();
      } else {
        read(k, /*next=*/false);
      }
      // The next batch's pull overlaps this step within an epoch, not before a checkpoint (the
      // snapshot would hold the unconsumed prefetch's rows and sightings) or the run's last step.
      have_next = may_prefetch && walk.HasNext(k) && !checkpoint_after;
      if (have_next) read(k + 1, /*next=*/true);
      auto loss = source->Step(have_next);
      if (!loss.ok()) cluster->Abort(loss.status().WithContext(where));
      CheckReplicas(cluster, source->params(), source->steps(), flags.replica_check_every,
                    /*force=*/false);
      stopped = walk.AfterStep(k, source->steps(), *loss, checkpoint_after, stop,
                               train_seconds + timer.Seconds(), progress.get(),
                               metrics.is_open() ? &metrics : nullptr);
      if (stopped) break;
    }
    if (stopped) break;
    finished = walk.Done();  // the run's last step (train.max_steps, or the last epoch's)
    const double epoch_seconds = timer.Seconds();
    train_seconds += epoch_seconds;
    summary.epochs = static_cast<int>(e + 1);
    auto mean_loss = walk.EpochLoss();
    if (!mean_loss.ok()) cluster->Abort(mean_loss.status());
    summary.loss = *mean_loss;
    const bool last = finished || e + 1 == run.epochs;
    const bool evaluate = (e + 1) % run.eval_every_epochs == 0 || last;
    RankingEvalResult eval;
    if (evaluate) {
      // Every worker's pushes are applied and nobody pulls until worker 0 is done, so it reads
      // the tables of exactly this step.
      if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
      float abandoned = 0;  // worker 0 gave its evaluation up for a stop signal
      if (w == 0) {
        auto ranking =
            source->Evaluate(last, &summary.recall, checkpointing ? &stop_flag : nullptr);
        if (!ranking.ok() && checkpointing && IsEvaluationAbandoned(ranking.status()) &&
            stop_flag.load(std::memory_order_relaxed)) {
          abandoned = 1;
        } else if (!ranking.ok()) {
          cluster->Abort(ranking.status().WithContext(where));
        } else {
          eval = *ranking;
          summary.eval = eval;
        }
      }
      if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
      if (checkpointing) {
        // Every worker makes this all-reduce after every evaluation (checkpointing is the
        // config's, the same on every rank), so none waits for a peer that left.
        if (Status s = coll->AllReduceSum(&abandoned, 1); !s.ok()) cluster->Abort(s);
        if (abandoned > 0) {
          // The evaluation only read: the state is the epoch's last step, whose checkpoint the
          // workers write together (unless written already), then they stop as after a step.
          walk.CheckpointNow(source->steps());
          return ck.Stop(job, source->steps(), progress.get());
        }
      }
    }
    const double epoch_samples_per_s =
        epoch_seconds > 0 ? static_cast<double>(walk.epoch_samples()) / epoch_seconds : 0;
    if (progress) {
      std::string extra =
          where + "/" + std::to_string(run.epochs) + " loss=" + Fixed(summary.loss, 4);
      if (evaluate) extra += internal::EvalProgressText(eval);
      progress->Update(walk.at().samples, extra);
    }
    if (metrics.is_open())  // single-process RunDatasetTraining's epoch line
      internal::EpochMetricsLine(model, e + 1, eval, evaluate, run, summary.loss,
                                 epoch_samples_per_s, source->steps())
          .WriteTo(&metrics);
  }
  if (stopped) return ck.Stop(job, source->steps(), progress.get());
  if (progress) progress->Finish("loss=" + Fixed(summary.loss, 4));
  CheckReplicas(cluster, source->params(), source->steps(), flags.replica_check_every,
                /*force=*/true);
  // Global throughput: every worker's samples over the slowest worker's training time.
  const double slowest = SlowestWorkerSeconds(cluster, train_seconds);
  summary.samples_per_s = slowest > 0 ? static_cast<double>(walk.samples_run()) / slowest : 0;
  summary.steps = walk.at().steps;
  summary.steps_run = walk.at().steps - walk.first_step();
  summary.dense_floats = source->params().size();
  const ps::RemoteStoreMetrics m = store->metrics();
  std::cerr << cluster->Describe() << ": steps=" << summary.steps_run
            << " pull_p50_us=" << Fixed(m.pull_p50_us, 0)
            << " push_p50_us=" << Fixed(m.push_p50_us, 0) << " bytes_sent=" << m.bytes_sent
            << " bytes_received=" << m.bytes_received << " staleness_max=" << m.staleness_max
            << "\n";
  PrintPrefetchHits(cluster, m);
  // This worker pushes no more: the others' pulls must not wait on its clock.
  if (Status s = store->Finish(); !s.ok()) cluster->Abort(s);
  int exit_code = 0;
  if (w == 0) {
    std::cerr << "trained " << summary.steps_run << " steps x " << num_workers << " workers in "
              << Fixed(train_seconds, 1) << " s, evaluated " << summary.eval.users
              << (summary.eval.ranked ? " users" : " rows") << "\n";
    if (metrics.is_open()) WriteDatasetResultLine(metrics, cluster, summary, m);
    if (MetricsOutWritten(*cluster, flags, metrics))
      DatasetResultLine(cluster, config, client, m, summary).Print();
    else
      exit_code = 1;
  }
  if (Status s = store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

}  // namespace cluster_internal
}  // namespace ips
