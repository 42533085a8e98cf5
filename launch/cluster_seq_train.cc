// The sequence models' worker of `mpirun -np N ips train` (launch/cluster_train.h, which owns the
// job's roles, checks and servers): SASRec and GRU4Rec trained by a SeqTrainer
// (worker/seq_trainer.h) over a RemoteEmbeddingStore, exactly as the CTR workers train theirs:
// worker 0's dense weights broadcast at the start, the dense gradients averaged over the workers
// (the SeqTrainer's dense_grad_allreduce hook) before every dense update, sync or async embedding
// updates as cluster.sync says (the store keeps the staleness bound), the next batch's rows
// prefetched during a step where that changes nothing, the replicas' checksum compared every
// flags.replica_check_every steps, and worker 0 printing the progress line, --metrics_out and the
// `RESULT train_cluster ...` line.
//
// Data: data.synthetic (worker w trains the generator's sequence batches w, w + W, ...: with one
// worker the single-process stream; throughput and loss only, as single-process
// RunSeqSyntheticTraining) or data.train_dir: every worker reads the single-process epoch order of
// SequenceReader (same seed, shuffle and per-epoch negatives) and trains every W-th batch of it
// (round k: batch k*W + w), floor(batches / W) rounds per epoch, so with one worker the batches are
// single-process RunSeqDatasetTraining's. After every eval.every_epochs-th epoch and the last,
// worker 0 runs the single-process leave-one-out evaluation (EvaluateSeqRanking, read-only lookups
// through the remote store) while the others wait at a barrier.
//
// Checkpoints and --resume: the CTR workers' (WorkerCheckpoints, launch/cluster_worker.h) with the
// SeqTrainer's dense state, step count and SASRec's dropout step, and the single-process run blobs
// of RunSeqSyntheticTraining / RunSeqDatasetTraining (a synthetic run's step and losses; a
// dataset run's epoch, position in SequenceReader's order and the epoch's loss sum), so a
// checkpoint resumes on any number of servers and workers, and single-process.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/progress.h"
#include "common/timer.h"
#include "launch/cluster_worker.h"
#include "proto/config.pb.h"
#include "ps/remote_store.h"
#include "worker/cluster.h"
#include "worker/data_reader.h"
#include "worker/internal/run_steps.h"
#include "worker/model_factory.h"
#include "worker/seq_trainer.h"
#include "worker/synthetic_batches.h"

namespace ips::cluster_internal {
namespace {

// A sequence training worker: the client of the parameter servers and the SeqTrainer whose dense
// gradients the client's hook averages; the replicas start from worker 0's dense weights.
struct SeqWorker : WorkerClient {
  SeqWorker(Cluster* cluster, const config::Config& config, TrainJob* job)
      : WorkerClient(cluster, config, *job), cluster(cluster) {
    job->trainer.dense_grad_allreduce = dense_grad_hook;
    auto t = CreateSeqTrainer(job->trainer, store.get());
    if (!t.ok()) cluster->Abort(t.status());
    trainer = std::move(t).value();
    BroadcastDenseFromWorker0(cluster, &trainer->model().params());
  }

  // The step on `cur` (prefetching `next` when not null); aborts the job on an error.
  double Step(const SeqBatchView& cur, const SeqBatchView* next, const std::string& where) {
    auto loss = trainer->Step(cur, next);
    if (!loss.ok()) cluster->Abort(loss.status().WithContext(where));
    return *loss;
  }

  Cluster* cluster;
  std::unique_ptr<SeqTrainer> trainer;
};

// How many of this worker's pulls its prefetch served (every step's but the first of each run of
// prefetched steps, when the prefetch is on).
void PrintPrefetchHits(Cluster* cluster, const ps::RemoteStoreMetrics& m) {
  std::cerr << cluster->Describe() << ": pulls=" << m.pulls << " prefetch_hits=" << m.prefetch_hits
            << "\n";
}

std::unique_ptr<ProgressLine> WorkerZeroProgress(Cluster* cluster, const ClusterTrainFlags& flags,
                                                 int64_t total) {
  if (cluster->role_index() != 0 || flags.quiet) return nullptr;
  return std::make_unique<ProgressLine>("train", total, "sequences", stderr);
}

// data.synthetic: the single-process protocol's batches (all made before the timer), worker w
// training batches w, w + W, ...
int RunSeqSynthetic(Cluster* cluster, const config::Config& config, TrainJob job,
                    const ClusterTrainFlags& flags) {
  const SyntheticRunOptions& run = job.run;
  if (run.steps < 1 || run.warmup_steps < 0 || run.batch < 1 || run.log_every_steps < 1)
    cluster->Abort(InvalidArgumentError(
        "data.synthetic steps, batch and train.log_every_steps must be >= 1, warmup_steps >= 0"));
  SeqWorker sw(cluster, config, &job);
  const int num_workers = cluster->layout().num_workers;
  const int train_steps = run.warmup_steps + run.steps;
  WorkerCheckpoints ck(cluster, config, flags, sw.store.get(),
                       CheckpointStateOf(sw.trainer.get(), config));
  std::vector<double> losses;  // worker 0's so far (restored with the checkpoint)
  const int start = ck.ResumeSynthetic(train_steps, &losses);
  auto gen = SyntheticBatches::Create(run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  std::vector<SeqBatch> batches(static_cast<size_t>(train_steps));
  for (int i = start; i < train_steps; ++i)
    if (Status s = (*gen)->SeqBatchAt(SyntheticBatchIndex(cluster, i), run.batch, &batches[i]);
        !s.ok())
      cluster->Abort(s);
  std::ofstream metrics;
  OpenMetricsOut(cluster, flags, &metrics);
  auto progress =
      WorkerZeroProgress(cluster, flags, static_cast<int64_t>(run.steps) * run.batch * num_workers);
  const bool may_prefetch = PrefetchChangesNothing(job.tables);
  SyntheticSummary summary;
  summary.train_steps = train_steps;
  bool stopped = false;
  Timer timer;
  for (int i = start; i < train_steps; ++i) {
    bool checkpoint_after, stop;  // decided by every worker together (see RunWorker)
    ck.BeginStep(i, i + 1 == train_steps, &checkpoint_after, &stop);
    if (i == run.warmup_steps) sw.allreduce_s = 0;  // timed steps only
    timer.Reset();
    // No prefetch before a checkpoint: the snapshot would hold its rows (see RunWorker).
    const bool prefetch = i + 1 < train_steps && may_prefetch && !checkpoint_after;
    SeqBatchView next;
    if (prefetch) next = ViewOf(batches[i + 1]);
    const double loss =
        sw.Step(ViewOf(batches[i]), prefetch ? &next : nullptr, "step " + std::to_string(i + 1));
    if (i >= run.warmup_steps) {
      summary.timed_s += timer.Seconds();
      ++summary.timed_steps;
    }
    losses.push_back(loss);
    const int64_t done = i + 1;
    CheckReplicas(cluster, sw.trainer->model().params(), done, flags.replica_check_every,
                  /*force=*/false);
    if (progress && i >= run.warmup_steps)
      progress->Update(static_cast<int64_t>(i - run.warmup_steps + 1) * run.batch * num_workers,
                       "loss=" + Fixed(loss, 4));
    if (metrics.is_open() && (done % run.log_every_steps == 0 || done == train_steps))
      WriteSyntheticStepLine(metrics, cluster, done, loss, sw.store->metrics());
    if (checkpoint_after) ck.WriteSynthetic(done, losses);
    if (stop && done < train_steps) {
      stopped = true;
      break;
    }
  }
  if (stopped) return ck.Stop(job, sw.trainer->steps(), progress.get());
  if (progress) progress->Finish("loss=" + Fixed(losses.back(), 4));
  CheckReplicas(cluster, sw.trainer->model().params(), train_steps, flags.replica_check_every,
                /*force=*/true);
  // Global throughput: every worker's sequences over the slowest worker's time.
  const double slowest = SlowestWorkerSeconds(cluster, summary.timed_s);
  summary.samples_per_s =
      slowest > 0 ? static_cast<double>(summary.timed_steps) * run.batch * num_workers / slowest
                  : 0;
  const size_t n = losses.size(), k = std::min<size_t>(10, n);
  summary.loss = internal::Mean(losses, n - k, n);
  const ps::RemoteStoreMetrics m = sw.store->metrics();
  LogWorkerTraffic(cluster, summary, run.batch, m);
  PrintPrefetchHits(cluster, m);
  if (Status s = sw.store->Finish(); !s.ok()) cluster->Abort(s);
  int exit_code = 0;
  if (cluster->role_index() == 0) {
    std::cerr << "loss first10=" << Fixed(internal::Mean(losses, 0, k), 4)
              << " last10=" << Fixed(summary.loss, 4) << "\n";
    if (metrics.is_open()) {
      metrics << "{\"phase\":\"result\",\"model\":\"" << ModelKindName(job.trainer.model.kind)
              << "\",\"workers\":" << num_workers << ",\"ps\":" << cluster->layout().num_ps
              << ",\"samples_per_s\":" << Fixed(summary.samples_per_s, 1)
              << ",\"loss\":" << Fixed(summary.loss, 6) << ",\"staleness_max\":" << m.staleness_max
              << "}\n";
      metrics.flush();
      if (!metrics) exit_code = 1;
    }
    SyntheticResultLine(cluster, config, job, sw, m, summary).Print();
  }
  if (Status s = sw.store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

// data.train_dir: epochs over SequenceReader's order, worker w training batch k*W + w of round k.
int RunSeqDataset(Cluster* cluster, const config::Config& config, TrainJob job, const Dataset& data,
                  const ClusterTrainFlags& flags) {
  const DatasetRunOptions& run = job.dataset;
  if (run.epochs < 1 || run.eval_every_epochs < 1 || run.max_steps < 0 || run.top_k < 1 ||
      run.reader.batch_size < 1 || run.log_every_steps < 1)
    cluster->Abort(InvalidArgumentError(
        "train.epochs, eval.every_epochs, eval.top_k, data.batch_size and train.log_every_steps "
        "must be >= 1, train.max_steps >= 0"));
  SeqWorker sw(cluster, config, &job);
  SeqTrainer* trainer = sw.trainer.get();
  Collective* coll = cluster->collective();
  const int w = cluster->role_index(), num_workers = cluster->layout().num_workers;
  ReaderOptions ro = run.reader;
  if (ro.max_len == 0) ro.max_len = static_cast<int>(trainer->model().max_len());
  SequenceReader reader(&data, {}, ro);
  const int64_t per_epoch = reader.sequences_per_epoch(), batch = ro.batch_size;
  const EpochRounds rounds_of{per_epoch, batch, num_workers};
  if (rounds_of.From(0) == 0)
    cluster->Abort(FailedPreconditionError(
        "data.train_dir '" + run.train_dir + "': " + std::to_string(per_epoch) +
        " training sequences (with >= 2 events) per epoch are fewer than one batch of " +
        std::to_string(batch) + " for each of the " + std::to_string(num_workers) + " workers"));
  WorkerCheckpoints ck(cluster, config, flags, sw.store.get(), CheckpointStateOf(trainer, config));
  DatasetWalk walk(cluster, run, rounds_of, &ck, !flags.resume.empty());
  const std::string model = ModelKindName(job.trainer.model.kind);
  if (w == 0)
    std::cerr << "cluster: model=" << model << " data=" << run.train_dir
              << " sequences/epoch=" << per_epoch << " batch=" << batch << " per worker x "
              << num_workers << " workers, " << rounds_of.From(0) << " steps/epoch, "
              << per_epoch - rounds_of.PositionAfter(0, rounds_of.From(0) - 1)
              << " sequences/epoch left out, epochs=" << run.epochs << "\n";
  std::ofstream metrics;
  OpenMetricsOut(cluster, flags, &metrics);
  auto progress = WorkerZeroProgress(cluster, flags,
                                     (walk.last_step() - walk.first_step()) * batch * num_workers);
  const bool may_prefetch = PrefetchChangesNothing(job.tables);

  SequenceBatch cur, next;
  DatasetSummary summary;
  summary.model = model;
  summary.loss = std::nan("");
  double train_seconds = 0;  // this worker's reading + steps (evaluation excluded)
  bool stopped = false, finished = false;
  Timer timer;
  for (int64_t e = walk.at().epoch; e < run.epochs && !stopped && !finished; ++e) {
    const std::string where = "epoch " + std::to_string(e + 1);
    walk.StartEpoch(e);
    auto read = [&](int64_t k, SequenceBatch* b) {
      Status s = reader.SkipTo(e, walk.First(k, w));
      if (s.ok() && !reader.Next(b)) s = InternalError("the reader ended before its batch");
      if (!s.ok()) cluster->Abort(s.WithContext(where + " round " + std::to_string(k)));
    };
    bool have_next = false;
    timer.Reset();
    for (int64_t k = 0; k < walk.rounds() && !walk.Done(); ++k) {
      bool checkpoint_after, stop;  // decided by every worker together (see RunWorker)
      ck.BeginStep(trainer->steps(), walk.NextIsLast(), &checkpoint_after, &stop);
      if (have_next) {
        std::swap(cur, next);
      } else {
        read(k, &cur);
      }
      // Within an epoch, not before a checkpoint or the run's last step (see RunWorker).
      have_next = may_prefetch && walk.HasNext(k) && !checkpoint_after;
      SeqBatchView next_view;
      if (have_next) {
        read(k + 1, &next);
        next_view = ViewOf(next);
      }
      const double loss = sw.Step(ViewOf(cur), have_next ? &next_view : nullptr, where);
      CheckReplicas(cluster, trainer->model().params(), trainer->steps(), flags.replica_check_every,
                    /*force=*/false);
      stopped = walk.AfterStep(k, trainer->steps(), loss, checkpoint_after, stop, progress.get(),
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
    const bool evaluate = (e + 1) % run.eval_every_epochs == 0 || e + 1 == run.epochs || finished;
    RankingEvalResult eval;
    if (evaluate) {
      // Every worker's pushes are applied and nobody pulls until worker 0 is done.
      if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
      if (w == 0) {
        auto ranking = EvaluateSeqRanking(trainer, data, ro, run.eval_max_users, run.top_k);
        if (!ranking.ok()) cluster->Abort(ranking.status().WithContext(where));
        eval = *ranking;
        summary.eval = eval;
      }
      if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
    }
    const double epoch_samples_per_s =
        epoch_seconds > 0 ? static_cast<double>(walk.epoch_samples()) / epoch_seconds : 0;
    if (progress) {
      std::string extra =
          where + "/" + std::to_string(run.epochs) + " loss=" + Fixed(summary.loss, 4);
      if (evaluate)
        extra += " hr" + std::to_string(run.top_k) + "=" + Fixed(eval.hr, 4) + " ndcg" +
                 std::to_string(run.top_k) + "=" + Fixed(eval.ndcg, 4);
      progress->Update(walk.at().samples, extra);
    }
    if (metrics.is_open())
      WriteEpochLine(metrics, e + 1, run.top_k, evaluate, eval, summary.loss, epoch_samples_per_s,
                     trainer->steps());
  }
  if (stopped) return ck.Stop(job, trainer->steps(), progress.get());
  if (progress) progress->Finish("loss=" + Fixed(summary.loss, 4));
  CheckReplicas(cluster, trainer->model().params(), trainer->steps(), flags.replica_check_every,
                /*force=*/true);
  const double slowest = SlowestWorkerSeconds(cluster, train_seconds);
  summary.samples_per_s = slowest > 0 ? static_cast<double>(walk.samples_run()) / slowest : 0;
  summary.steps = walk.at().steps;
  summary.steps_run = walk.at().steps - walk.first_step();
  const ps::RemoteStoreMetrics m = sw.store->metrics();
  std::cerr << cluster->Describe() << ": steps=" << summary.steps_run
            << " pull_p50_us=" << Fixed(m.pull_p50_us, 0)
            << " push_p50_us=" << Fixed(m.push_p50_us, 0) << " bytes_sent=" << m.bytes_sent
            << " bytes_received=" << m.bytes_received << " staleness_max=" << m.staleness_max
            << "\n";
  PrintPrefetchHits(cluster, m);
  if (Status s = sw.store->Finish(); !s.ok()) cluster->Abort(s);
  int exit_code = 0;
  if (w == 0) {
    std::cerr << "trained " << summary.steps_run << " steps x " << num_workers << " workers in "
              << Fixed(train_seconds, 1) << " s, evaluated " << summary.eval.users << " users\n";
    if (metrics.is_open()) {
      WriteDatasetResultLine(metrics, cluster, summary);
      if (!metrics) exit_code = 1;
    }
    DatasetResultLine(cluster, config, sw, m, summary).Print();
  }
  if (Status s = sw.store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

}  // namespace

int RunSeqWorker(Cluster* cluster, const config::Config& config, TrainJob job, const Dataset* data,
                 const ClusterTrainFlags& flags) {
  if (data == nullptr) return RunSeqSynthetic(cluster, config, std::move(job), flags);
  return RunSeqDataset(cluster, config, std::move(job), *data, flags);
}

}  // namespace ips::cluster_internal
