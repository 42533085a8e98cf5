// The pieces that both kinds of worker of `mpirun ... ips train` share (launch/cluster_train.h
// describes the job, its checkpoints and its data sharding): the CTR workers in cluster_train.cc
// and the sequence-model workers in cluster_seq_train.cc. It owns what makes them train, print,
// measure, average and checkpoint the same way: the client of the parameter servers with its
// timed all-reduce hook (WorkerClient), the step loops of a synthetic run (RunSyntheticRounds)
// and of a dataset run (RunDatasetRounds over a DatasetRoundsSource), the progress/metrics/RESULT
// lines, how the workers split an epoch (EpochRounds, DatasetWalk) and the checkpoint protocol for
// either trainer (WorkerCheckpoints over a TrainerCheckpointState). Internal to launch/: nothing
// outside the two worker files includes it.
#ifndef IPS_LAUNCH_CLUSTER_WORKER_H_
#define IPS_LAUNCH_CLUSTER_WORKER_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result_line.h"
#include "common/status.h"
#include "common/timer.h"
#include "launch/cluster_train.h"
#include "proto/config_loader.h"
#include "worker/checkpoint.h"
#include "worker/internal/run_steps.h"
#include "worker/metrics_line.h"
#include "worker/retrieval.h"
#include "worker/trainer.h"

namespace ips {

namespace ps {
class RemoteEmbeddingStore;
struct RemoteStoreMetrics;
}  // namespace ps
class Cluster;
class Collective;
class ProgressLine;

namespace cluster_internal {

class WorkerCheckpoints;

// Whether the config asks for checkpoints (checkpoint.dir set).
bool Checkpointing(const config::Config& config);

std::string Fixed(double v, int digits);  // fixed notation with `digits` decimals

// What every training worker starts with: its client of the parameter servers (cluster.sync,
// cluster.staleness) and the hook (for TrainerOptions / SeqTrainerOptions dense_grad_allreduce)
// that averages the dense gradients over the workers, i.e. the gradient of the global batch's
// mean loss. The hook is timed into allreduce_s (the RESULT line's allreduce_ms) and points at
// it, so the object stays where it is made. Aborts the job on an error.
struct WorkerClient {
  WorkerClient(Cluster* cluster, const config::Config& config, const TrainJob& job);
  ~WorkerClient();
  WorkerClient(const WorkerClient&) = delete;
  WorkerClient& operator=(const WorkerClient&) = delete;

  double allreduce_s = 0;  // seconds in the dense all-reduce
  std::unique_ptr<ps::RemoteEmbeddingStore> store;
  DenseGradHook dense_grad_hook;
};

// Replicas start equal: worker 0's dense weights broadcast to every worker (aborts on an error).
void BroadcastDenseFromWorker0(Cluster* cluster, models::DenseParams<float>* params);

// The dense replicas compared across the workers (CheckReplicasEqual, worker/collective.h) after
// `done` steps: every `every` steps, or now when `force` (the end of a run); never for every <= 0.
// Every worker calls it at the same steps; aborts the job on a mismatch.
void CheckReplicas(Cluster* cluster, const models::DenseParams<float>& params, int64_t done,
                   int every, bool force);

// Worker 0's --metrics_out (appended to); closed on the other workers and without the flag.
void OpenMetricsOut(Cluster* cluster, const ClusterTrainFlags& flags, std::ofstream* metrics);
// Worker 0 at the end of a run: whether `metrics` (--metrics_out, if open) took every line. If
// not, the run failed: says so on stderr ("error: rank R (worker 0): DATA_LOSS: writing
// --metrics_out file 'F'", which the run's error RESULT line takes), and the caller prints no
// success RESULT line and returns exit code 1.
bool MetricsOutWritten(const Cluster& cluster, const ClusterTrainFlags& flags,
                       const std::ofstream& metrics);

// Whether the next batch's pull may overlap a step (the trainers' Step `next`) at all: not with
// TTL or a memory cap (a prefetch is served before this step's AdvanceStep, so its rows' ages and
// recency differ).
bool PrefetchChangesNothing(const std::vector<ps::TableOptions>& tables);

// The slowest worker's `seconds` (every worker calls it: global throughput = every worker's
// samples over it).
double SlowestWorkerSeconds(Cluster* cluster, double seconds);

// The sum of every worker's `v` (exact with one worker: no float round trip).
StatusOr<double> SumOverWorkers(Collective* coll, int num_workers, double v);
// Every worker's `v`, bit-exact, indexed by worker (every worker calls it).
StatusOr<std::vector<double>> GatherFromWorkers(Collective* coll, int num_workers, double v);

// Synthetic data: the stream batch this worker trains at trainer step i, by the run's schedule
// (SyntheticSchedule, worker/synthetic_batches.h) that WorkerCheckpoints::ResumeSynthetic settled
// (call it first; a process runs one job): worker w of W trains batch i * W + w from step 0 (one
// worker: the single-process stream); a run resumed from a checkpoint of another number of
// workers continues the stream after every batch trained before. Held-out batches follow every
// batch the run trains (WorkerCheckpoints::schedule().HeldOutFirst).
uint64_t SyntheticBatchIndex(Cluster* cluster, int64_t i);

// Worker 0's "train" line on --metrics_out, in a synthetic or a dataset run of either kind of
// worker: internal::TrainMetricsLine (its own losses and time, every worker's samples), then
// "role" ("worker"), "rank" and its client's parameter-server traffic so far (pull/push latency
// percentiles, bytes each way, the largest staleness).
void WriteTrainLine(std::ostream& metrics, Cluster* cluster, std::string_view model,
                    const internal::TrainLineFigures& f, const ps::RemoteStoreMetrics& m);

// A synthetic run's end: this worker's traffic on stderr, and worker 0's RESULT line (`quality`:
// the metrics after the loss, e.g. the CTR held-out AUC; none for a sequence model) and
// --metrics_out "result" line (SyntheticResultMetrics).
struct SyntheticSummary {
  int64_t train_steps = 0;   // warm-up included
  int64_t steps_run = 0;     // of them, run by this process (not a resumed checkpoint's)
  int64_t timed_steps = 0;   // of those, the timed ones
  int64_t dense_floats = 0;  // floats per all-reduce: the model's dense parameters
  double timed_s = 0;        // this worker's seconds in the timed steps
  double samples_per_s = 0;
  double loss = 0;  // mean of the last 10 step losses
  std::vector<std::pair<std::string, std::string>> quality;
};
// The steps of a synthetic run on this worker, for both kinds of worker: trainer steps `start` (a
// resumed checkpoint's, else 0) to run.warmup_steps + run.steps, where step(i, prefetch) trains
// the worker's batch i (pulling batch i + 1's rows during it when prefetch) and returns its loss;
// checkpoints and SIGTERM stops, replica checks, worker 0's progress line (in `unit`s) and
// --metrics_out train lines (WriteTrainLine; metrics: null when closed). Appends the losses to
// *losses (which holds a resumed run's), fills *summary (train_steps, the steps this process
// ran, timed steps and seconds, samples_per_s over every worker, the last 10 losses' mean, the
// dense floats per all-reduce: known without a step, so also for a resume of the last step) and
// logs this worker's traffic.
// Returns the exit code when a stop ended the run early (after its checkpoint; *summary is not
// filled then). Aborts the job on an error.
std::optional<int> RunSyntheticRounds(
    Cluster* cluster, const ClusterTrainFlags& flags, const TrainJob& job, WorkerClient* client,
    WorkerCheckpoints* ck, const models::DenseParams<float>& params, int start, const char* unit,
    const std::function<StatusOr<double>(int, bool)>& step, std::ostream* metrics,
    std::vector<double>* losses, SyntheticSummary* summary);
// How many of this worker's pulls its prefetch served (every step's but the first of each run of
// prefetched steps, when the prefetch is on), on stderr.
void PrintPrefetchHits(Cluster* cluster, const ps::RemoteStoreMetrics& m);
// This worker's steps (run by this process), throughput and parameter-server traffic, on stderr.
void LogWorkerTraffic(Cluster* cluster, const SyntheticSummary& s, int batch,
                      const ps::RemoteStoreMetrics& m);
// Worker 0's RESULT line of a synthetic run: its per-step figures are over the steps this process
// ran (after --resume, not the checkpoint's), e.g. ps_bytes_per_step = this worker's parameter-
// server bytes over s.steps_run.
ResultLine SyntheticResultLine(Cluster* cluster, const config::Config& config, const TrainJob& job,
                               const WorkerClient& client, const ps::RemoteStoreMetrics& m,
                               const SyntheticSummary& s);
// Worker 0's --metrics_out "result" line of a synthetic run (both kinds of worker; the caller
// adds its quality, e.g. the CTR held-out "auc", and writes it):
// internal::SyntheticResultMetricsLine (every worker's samples over the slowest worker's time, the
// last 10 losses' mean), "workers", "ps" and "staleness_max".
MetricsLine SyntheticResultMetrics(Cluster* cluster, const TrainJob& job, const SyntheticSummary& s,
                                   const ps::RemoteStoreMetrics& m);

// A dataset run's lines: train lines on --metrics_out (WriteTrainLine; per epoch:
// internal::EpochMetricsLine, the single-process line of RunDatasetTraining), and at the end
// worker 0's RESULT line and --metrics_out "result" line (internal::DatasetResultMetricsLine,
// "workers", "ps" and "staleness_max").
struct DatasetSummary {
  std::string model;
  int epochs = 0;
  int64_t steps = 0;         // the run's steps (every worker's rounds)
  int64_t steps_run = 0;     // of them, run by this process (not resumed)
  int64_t dense_floats = 0;  // floats per all-reduce: the model's dense parameters
  double samples_per_s = 0;
  double loss = 0;  // the last epoch's mean step loss over every worker
  RankingEvalResult eval;
  std::vector<RetrievalCutoff> recall;
};
ResultLine DatasetResultLine(Cluster* cluster, const config::Config& config,
                             const WorkerClient& client, const ps::RemoteStoreMetrics& m,
                             const DatasetSummary& s);
void WriteDatasetResultLine(std::ostream& metrics, Cluster* cluster, const DatasetSummary& s,
                            const ps::RemoteStoreMetrics& m);

// ---- Checkpoints, the same for both kinds of worker (see the header comment) -----------------

// A dataset run's position, in the blobs of single-process RunDatasetTraining and
// RunSeqDatasetTraining: "run/dataset" = {epoch, position, steps, samples, epoch steps, epoch
// samples, trainer steps}, "run/loss_sum" = the epoch's loss sum, so a checkpoint resumes either
// way; a cluster checkpoint adds "run/worker_loss_sums", each worker's part of it. Here the
// position is the next unread example (sequence) of the epoch's order over every worker, samples
// count every worker's and the loss sum is over every worker's step losses.
struct DatasetPosition {
  int64_t epoch = 0, position = 0, steps = 0, samples = 0, epoch_steps = 0, epoch_samples = 0;
  double loss_sum = 0;
};

// How the W workers share an epoch's order of per_epoch examples (sequences) in batches of
// `batch`: round k of an epoch entered at example p0 (0, or a resumed checkpoint's position)
// gives worker v the batch from example p0 + (k*W + v) * batch on; every worker runs the same
// number of rounds (floor of the remaining batches / W), the rest of the order is left out.
struct EpochRounds {
  int64_t per_epoch = 0, batch = 1;
  int num_workers = 1;

  // Rounds of an epoch entered at example p.
  int64_t From(int64_t p) const {
    return p >= per_epoch ? 0 : (per_epoch - p + batch - 1) / batch / num_workers;
  }
  int64_t First(int64_t p0, int64_t k, int v) const { return p0 + (k * num_workers + v) * batch; }
  // Every worker's examples in round k (the order's last batch may be short).
  int64_t Rows(int64_t p0, int64_t k) const {
    int64_t rows = 0;
    for (int v = 0; v < num_workers; ++v)
      rows += std::clamp<int64_t>(per_epoch - First(p0, k, v), 0, batch);
    return rows;
  }
  // The position after round k: the epoch's next unread example over every worker.
  int64_t PositionAfter(int64_t p0, int64_t k) const {
    return std::min(per_epoch, First(p0, k + 1, 0));
  }
};

// What a worker's checkpoint holds of its trainer (a Trainer or a SeqTrainer): the dense content
// (weights, dense optimizer state, model state and the config text; every replica's is the same,
// worker 0 writes it) and the trainer's counters: its step count and the model's dropout step
// (blob "model/dropout_step", for models that have one). dense.vocabulary: a dataset run's
// (RunDatasetRounds sets it), recorded in every checkpoint; --resume of a checkpoint trained on
// another vocabulary is refused. Unset for synthetic data.
struct TrainerCheckpointState {
  CheckpointContent dense;
  std::function<void(int64_t)> set_steps;
  std::function<void(std::map<std::string, std::string>*)> save_model_blobs;
  std::function<Status(const std::map<std::string, std::string>&)> restore_model_blobs;
};
template <typename TrainerT>  // Trainer or SeqTrainer
TrainerCheckpointState CheckpointStateOf(TrainerT* trainer, const config::Config& config) {
  TrainerCheckpointState s;
  AddModelState(&trainer->model(), &trainer->dense_optimizer(), &s.dense);
  s.dense.config_text = ConfigToText(config);
  s.set_steps = [trainer](int64_t steps) { trainer->set_steps(steps); };
  s.save_model_blobs = [trainer](std::map<std::string, std::string>* b) {
    internal::SaveDropoutStep(trainer->model(), b);
  };
  s.restore_model_blobs = [trainer](const std::map<std::string, std::string>& b) {
    return internal::RestoreDropoutStep(b, &trainer->model());
  };
  return s;
}

// A worker's checkpointing (checkpoint.dir set; every member is inert otherwise): the writer
// (worker 0 only), the SIGTERM handler, the every_seconds clock and the test-only fault flags.
// Made before the first step; aborts the job on an error, e.g. when worker 0 finds that
// checkpoint.dir holds checkpoints the run would mix with (CheckCheckpointDirForRun: any for a
// fresh run, ones newer than the --resume checkpoint's step for a resumed one).
class WorkerCheckpoints {
 public:
  WorkerCheckpoints(Cluster* cluster, const config::Config& config, const ClusterTrainFlags& flags,
                    ps::RemoteEmbeddingStore* store, TrainerCheckpointState state);
  ~WorkerCheckpoints();

  // --resume (flags.resume; without it: nothing, step 0) of a synthetic run: the dense state and
  // trainer counters, worker 0's losses so far, and the run's batch schedule (schedule(): the
  // checkpoint's, continued with this run's workers); returns the step to continue at. Aborts the
  // job on the checkpoint's errors and on a position that does not fit a run of train_steps
  // steps.
  int ResumeSynthetic(int train_steps, std::vector<double>* losses);
  // The synthetic run's batch schedule (settled by ResumeSynthetic), which its checkpoints record.
  const SyntheticSchedule& schedule() const { return schedule_; }
  // --resume of a dataset run (without it: the start): the dense state, trainer counters and the
  // run's position (loss_sum: this worker's own from "run/worker_loss_sums"; from a checkpoint
  // without them, e.g. single-process, worker 0 carries the total and the others 0). Aborts the job
  // on the checkpoint's errors and on a position outside the run.
  DatasetPosition ResumeDataset(int epochs, int64_t per_epoch);

  // Before trainer step `step` (0-based; last: the run's last step): the test-only faults, then
  // whether the step ends with a checkpoint and whether the run stops after it (the same on every
  // worker; both false without checkpoint.dir).
  void BeginStep(int64_t step, bool last, bool* checkpoint_after, bool* stop);
  // Checkpoint `step` of a synthetic run (every worker calls it at the same step).
  void WriteSynthetic(int64_t step, const std::vector<double>& losses);
  // Checkpoint of a dataset run after trainer step `step`, at `at` (at.loss_sum: this worker's
  // step losses in the epoch, summed over every worker here).
  void WriteDataset(int64_t step, DatasetPosition at);
  // The end of a run stopped by SIGTERM after its checkpoint `step`; returns kExitStopped.
  int Stop(const TrainJob& job, int64_t step, ProgressLine* progress);

 private:
  // Loads the dense state of flags.resume; returns its blobs and sets *dir to its directory.
  StatusOr<std::map<std::string, std::string>> Restore(std::string* dir);
  void Write(int64_t step, const std::function<std::map<std::string, std::string>()>& blobs);

  Cluster* cluster_;
  const config::Config& config_;
  const ClusterTrainFlags& flags_;
  ps::RemoteEmbeddingStore* store_;
  TrainerCheckpointState state_;
  std::unique_ptr<CheckpointWriter> writer_;
  int64_t writing_step_ = -1;   // the checkpoint being written (for the test-only fault hook)
  SyntheticSchedule schedule_;  // a synthetic run's
  Timer since_checkpoint_;
  bool stepping_ = false;  // BeginStep was called
};

// A dataset worker's walk through the run's rounds, for both kinds of worker: the run's position
// (a resumed checkpoint's, else the start), the current epoch's sums, and what follows every step:
// the progress and --metrics_out lines and the checkpoint decided before the step.
class DatasetWalk {
 public:
  // Resumes through ck->ResumeDataset (nothing without --resume); the run ends after
  // run.max_steps steps when > 0. `model` names it on the train lines, whose traffic figures are
  // `store`'s.
  DatasetWalk(Cluster* cluster, const DatasetRunOptions& run, const EpochRounds& rounds,
              WorkerCheckpoints* ck, bool resume, std::string model,
              ps::RemoteEmbeddingStore* store);

  const DatasetPosition& at() const { return at_; }
  int64_t first_step() const { return first_step_; }
  int64_t last_step() const { return last_step_; }
  bool Done() const { return at_.steps >= last_step_; }
  // Whether the step about to run is the run's last.
  bool NextIsLast() const { return at_.steps + 1 == last_step_; }

  // Enters epoch e: the resumed epoch at the checkpoint's position with its sums, else at 0.
  void StartEpoch(int64_t e);
  int64_t rounds() const { return rounds_in_epoch_; }  // of the current epoch
  // The first example of worker w's batch in round k of the current epoch.
  int64_t First(int64_t k, int w) const { return rounds_.First(p0_, k, w); }
  // Whether round k (about to run) may prefetch round k + 1: within the epoch, not the last step.
  bool HasNext(int64_t k) const { return k + 1 < rounds_in_epoch_ && at_.steps + 1 < last_step_; }

  // After round k's step (the trainer's step count `done`, this worker's `loss`; elapsed_s: this
  // worker's training seconds so far, evaluations excluded): advances the position and the
  // epoch's sums, writes worker 0's lines (a train line every run.log_every_steps steps and after
  // the run's last) and the checkpoint when checkpoint_after. Returns whether the run stops here
  // (stop, and steps are left).
  bool AfterStep(int64_t k, int64_t done, double loss, bool checkpoint_after, bool stop,
                 double elapsed_s, ProgressLine* progress, std::ostream* metrics);
  // Checkpoint `done` (the trainer's step count) of the position after the last round stepped
  // (the current epoch's start when none was), unless AfterStep wrote it already. Every worker
  // calls it at the same point (WriteDataset is collective).
  void CheckpointNow(int64_t done);

  // The current epoch's steps, every worker's samples and this worker's loss sum (worker 0's
  // includes every worker's up to a resumed checkpoint).
  int64_t epoch_steps() const { return epoch_.epoch_steps; }
  int64_t epoch_samples() const { return epoch_.epoch_samples; }
  double epoch_loss_sum() const { return epoch_.loss_sum; }
  int64_t samples_run() const { return samples_run_; }  // every worker's, by this process
  // The current epoch's mean step loss over every worker (an all-reduce: every worker calls it
  // at the same point); NaN for an epoch without steps.
  StatusOr<double> EpochLoss() const;

 private:
  Cluster* cluster_;
  const DatasetRunOptions& run_;
  EpochRounds rounds_;
  WorkerCheckpoints* ck_;
  std::string model_;
  ps::RemoteEmbeddingStore* store_;
  internal::LossWindow window_;  // this worker's losses since its last train line
  DatasetPosition at_;           // the run's
  DatasetPosition epoch_;        // the current epoch's: epoch, position p0 and sums
  bool resumed_ = false;         // at_ came from a checkpoint and its epoch is not entered yet
  int64_t p0_ = 0, rounds_in_epoch_ = 0;
  int64_t first_step_ = 0, last_step_ = 0, samples_run_ = 0;
  int64_t last_round_ = -1;         // the current epoch's last round stepped (-1: none yet)
  int64_t checkpointed_step_ = -1;  // the step of the last checkpoint this walk wrote
};

// What a dataset worker trains (RunDatasetRounds): the reader of the single-process epoch order,
// the trainer's step on the batch read for it (the next batch's pull overlapping the step) and
// worker 0's evaluation. The CTR workers (cluster_train.cc) and the sequence workers
// (cluster_seq_train.cc) each have one.
class DatasetRoundsSource {
 public:
  virtual ~DatasetRoundsSource() = default;

  virtual const Dataset& data() const = 0;  // data.train_dir, fitted to the job
  virtual int64_t per_epoch() const = 0;    // examples (sequences) in an epoch's order
  // Reads the batch from example `first` of epoch e's order (shuffled by epoch) for trainer step
  // `step`: as this step's batch, or (next) as the one the step prefetches.
  virtual Status Read(int64_t e, int64_t first, int64_t step, bool next) = 0;
  virtual void Advance() = 0;  // the prefetched batch becomes this step's
  // The trainer's step on this step's batch (pulling the next one's rows during it when
  // `prefetch`); returns this worker's loss.
  virtual StatusOr<double> Step(bool prefetch) = 0;
  virtual int64_t steps() const = 0;  // the trainer's step count
  virtual const models::DenseParams<float>& params() const = 0;
  // Worker 0's evaluation after an epoch (last: the run's last; models with user vectors add
  // their full-ranking recall to *recall then), abandoned with EvaluationAbandonedError
  // (common/stop_signals.h) once *stop (may be null) is set.
  virtual StatusOr<RankingEvalResult> Evaluate(bool last, std::vector<RetrievalCutoff>* recall,
                                               const std::atomic<bool>* stop) = 0;

  // What the messages call the data: e.g. "examples" (per epoch), "samples" (the progress line's
  // unit).
  struct Names {
    const char* items;
    const char* unit;
  };
  virtual Names names() const = 0;
};

// A dataset run of data.train_dir on this worker (see launch/cluster_train.cc's RunDatasetWorker
// for the sharding): resume, the epochs' rounds with prefetch, replica checks, checkpoints and
// SIGTERM stops, the per-epoch evaluation on worker 0 between two barriers, the progress and
// --metrics_out lines, and worker 0's RESULT line; shuts the servers down at the end. A stop
// signal that reaches worker 0 during its evaluation (SIGUSR1 to mpirun reaches every rank)
// abandons it; the workers learn it together after the second barrier (an all-reduce every
// worker makes after every evaluation when checkpointing) and stop with the checkpoint of the
// epoch's last step. Aborts the job on an error; returns the exit code.
int RunDatasetRounds(Cluster* cluster, const config::Config& config, const TrainJob& job,
                     const ClusterTrainFlags& flags, const WorkerClient& client,
                     TrainerCheckpointState checkpoint_state, DatasetRoundsSource* source);

// The sequence models' worker (launch/cluster_seq_train.cc): SeqTrainer steps on synthetic
// batches (data == nullptr) or on the sequences of `data` (fitted to the job already), with the
// same sharding, all-reduce, replica checks, checkpoints and outputs as the CTR workers. Returns
// the exit code.
int RunSeqWorker(Cluster* cluster, const config::Config& config, TrainJob job, const Dataset* data,
                 const ClusterTrainFlags& flags);

}  // namespace cluster_internal
}  // namespace ips

#endif  // IPS_LAUNCH_CLUSTER_WORKER_H_
