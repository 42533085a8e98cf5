// Distributed training under mpirun: `mpirun -np N ips train --config X` with cluster.num_ps = P
// runs P parameter-server ranks (ps/server.h, serving their shard of every table) and N - P
// worker ranks, each training the config's model through the single-process trainer (CTR
// models: Trainer, worker/trainer.h; sequence models: SeqTrainer, worker/seq_trainer.h, in
// launch/cluster_seq_train.cc) with a RemoteEmbeddingStore (ps/remote_store.h) and the dense
// gradients averaged over the workers by the Collective (worker/collective.h) in the trainer's
// dense_grad_allreduce hook. This module owns only that orchestration: roles, the per-worker
// data shard, the replica check, metrics per role, the final statistics of the tables, and the
// coordination of checkpoints.
//
// Checkpoints (config `checkpoint { dir every_steps every_seconds keep_last incremental }`, the
// same directory layout as single-process training, worker/checkpoint.h): after every
// every_steps-th step, when worker 0 finds every_seconds passed, after the last step, and when a
// worker got a stop signal (SIGTERM or SIGUSR1, common/stop_signals.h), every worker stops at the
// same step (the decision is all-reduced before each step, which then skips its prefetch of the
// next batch), waits at a barrier (so every push of that step is applied), and worker 0 opens a
// staging directory, has every PS write its shard of every table into it (ps/server.h CHECKPOINT),
// writes the dense weights, dense optimizer state, model state and run state (step, losses) and the
// manifest with every file's size and CRC32C, and publishes it by rename only after every PS
// acknowledged; the others wait at a second barrier. A rank killed at any point leaves the previous
// checkpoint intact and no partial one visible. A stop signal stops the job after that checkpoint
// (exit code 3 on the workers; the servers ignore SIGTERM and SIGUSR1 and stop when the workers
// shut them down).
//
// Resume (`--resume DIR`, a checkpoint root or one ckpt-<step>; on every rank): each PS loads
// the rows that PsOfKey assigns to it from every writer's shard files (so a checkpoint of P
// servers resumes on any number of servers), the workers load the dense state and continue at
// the saved step with the same batches. A checkpoint of a single-process run resumes here and
// a cluster checkpoint resumes single-process (`ips train --resume`) or exports (`ips export`).
// A checkpoint beyond the run (CheckResumeFitsRun, checked by worker 0) is refused on every rank
// before any loads.
// Synthetic data continues the checkpoint's batch schedule (worker/synthetic_batches.h
// SyntheticSchedule, recorded in every checkpoint): with another number of workers (or after a
// single process) the stream goes on after every batch trained before, never repeating one.
//
// Data: data.synthetic (worker w trains the generator's batches w, w + W, ... from step 0; worker 0
// evaluates AUC on held-out batches after every batch the run trains) or data.train_dir, a
// directory of `ips data convert`. Every rank opens and checks the directory. Sequence models
// (SASRec, GRU4Rec) train the same way through launch/cluster_seq_train.cc, checkpoints included;
// what both workers share is in launch/cluster_worker.h. Each worker follows the single-process
// epoch order (TrainReader: same seed, same per-epoch shuffle) and trains every W-th batch of it:
// round k of an epoch is batches kW .. kW + W - 1, one per worker, so the workers read disjoint
// examples; every worker runs floor(batches / W) rounds per epoch (up to W - 1 batches of each
// epoch's order are left out). With one worker the batches, losses and metrics are single-process
// training's. After every eval.every_epochs-th epoch and the last, worker 0 runs the single-process
// evaluation (EvaluateRanking: HR@k, NDCG@k, AUC, GAUC, logloss; EvaluateRetrieval for MIND) while
// the others wait, and writes the same per-epoch JSON lines to
// --metrics_out. Checkpoints hold the single-process reader blobs (epoch, position in the epoch's
// order, counters, the epoch's loss sum over every worker), so they resume on any number of workers
// and single-process.
#ifndef IPS_LAUNCH_CLUSTER_TRAIN_H_
#define IPS_LAUNCH_CLUSTER_TRAIN_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result_line.h"
#include "common/status.h"
#include "worker/retrieval.h"
#include "worker/trainer.h"

namespace ips {

namespace config {
class Config;
}
namespace ps {
class EmbeddingStore;
}  // namespace ps
class Dataset;
struct ConfigSource;  // proto/config_loader.h
struct RetrievalResult;

struct ClusterTrainFlags {
  int eval_batches = 4;          // synthetic data: held-out batches evaluated on worker 0
  bool quiet = false;            // no progress line
  std::string metrics_out;       // JSON lines from worker 0 and per-role summaries ("" = none)
  int replica_check_every = 50;  // steps between dense replica checksums (0 = never)
  // Continue from this checkpoint (a root with LATEST, or one ckpt-<step>); "" = fresh start.
  std::string resume;
  // Where the config came from (file, text, --set overrides; outlives the call): a layout that
  // cannot work (cluster.num_ps < 1, or no rank left for a worker) is blamed on the --set or the
  // file line that set cluster.num_ps, as config errors are. Null: the field alone.
  const ConfigSource* config_source = nullptr;
  // Test-only failure injection: rank kill_rank raises SIGKILL, a worker at training step
  // kill_step, a PS after serving kill_step pushes or, when kill_in_checkpoint_step >= 0, in the
  // middle of the checkpoint of that step: a PS after writing its shards (before acknowledging
  // them), worker 0 after writing every file and the manifest (before the publishing rename).
  int kill_rank = -1;
  int64_t kill_step = -1;
  int64_t kill_in_checkpoint_step = -1;
  // Test-only: worker rank kill_rank raises SIGTERM at the start of training step term_step (the
  // other ranks get none: the workers still stop together).
  int64_t term_step = -1;
};

// Runs the job on this rank (every rank of the mpirun job calls it with the same config).
// Initialises MPI (MPI_Init_thread with null argc/argv: Open MPI needs no arguments) and
// finalises it (worker/cluster.h); call it at most once per process. Returns the process exit code:
// 0 on success, 1 on a bad layout (printed by every rank, naming the --set or the file line of
// cluster.num_ps through flags.config_source, before anything starts) or a runtime
// error (the failing rank prints it naming itself and its role, and ends the job with MPI_Abort).
// Worker 0 prints `RESULT train_cluster ...` as its last stdout line, and is the rank that prints
// the error RESULT line of launch/main.cc when it fails (SetPrintsResultLine: none for a job that
// another rank ends with MPI_Abort). A run stopped by SIGTERM
// returns 3 on the workers (kExitStopped, launch/commands.h) after its checkpoint, and worker 0
// prints `RESULT train_cluster ... status=stopped step=N checkpoint=DIR/ckpt-N`. A bad
// data.train_dir, or a --resume checkpoint beyond the run (CheckResumePathFitsRun, on worker 0),
// returns 1 on every rank before anything loads or trains (the ranks agree first), each rank
// printing its error or that another rank failed. Worker 0's stop message says how to continue
// (ContinueAdvice: with --set checkpoint.dir when the config file does not set it); a --resume
// without checkpoint.dir is warned about.
int RunClusterTrain(const config::Config& config, const ClusterTrainFlags& flags);

// The world size mpirun announced to this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
// MPI_LOCALNRANKS), 0 when not started by mpirun.
int MpiWorldSizeFromEnv();
// Whether this process was started by mpirun with more than one rank: `ips train` dispatches to
// RunClusterTrain then (with one rank there is no room for a server and a worker, so it trains
// single-process and says so).
inline bool LaunchedUnderMpi() { return MpiWorldSizeFromEnv() > 1; }

// The full-ranking retrieval evaluation (EvaluateRetrieval, worker/retrieval.h) of a model with
// user vectors (MIND) after training on `data`: item vectors = the store's item + category rows,
// cut-offs and user limit from `run`; logs its size and time on stderr. Shared by single-process
// `ips train` and worker 0 of a cluster run. Once *stop is set (checked before every batch of
// users; may be null) it is abandoned with EvaluationAbandonedError (common/stop_signals.h).
// Errors: NOT_FOUND for a missing table, EvaluateRetrieval's.
StatusOr<RetrievalResult> RunRetrievalEvaluation(Trainer* trainer, ps::EmbeddingStore* store,
                                                 const Dataset& data, const DatasetRunOptions& run,
                                                 const std::atomic<bool>* stop = nullptr);

// Every worker of a dataset run steps in every round (the dense gradients are all-reduced over
// all of them), so an epoch of per_epoch training rows (TrainingRowsPerEpoch, worker/trainer.h)
// must hold one batch (data.batch_size) for each of num_workers workers; FAILED_PRECONDITION
// naming data.train_dir, the rows, the batch and the workers otherwise. Every worker checks it
// before its first round (RunDatasetRounds), and `ips config check --np N` with the same message.
Status CheckEpochFillsWorkers(const TrainJob& job, int64_t per_epoch, int num_workers);

// The ranking fields of a dataset run's RESULT line, the same for `ips train` and its mpirun
// form: hrK ndcgK for every cut-off K of the evaluation (RankingCutoffsOf: eval.top_k's order),
// auc gauc logloss (4 decimals), then recallK per retrieval cut-off.
void AddRankingFields(const RankingEvalResult& eval, const std::vector<RetrievalCutoff>& recall,
                      ResultLine* line);

}  // namespace ips

#endif  // IPS_LAUNCH_CLUSTER_TRAIN_H_
