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
#include <atomic>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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
      : WorkerClient(cluster, config, *job) {
    job->trainer.dense_grad_allreduce = dense_grad_hook;
    auto t = CreateSeqTrainer(job->trainer, store.get());
    if (!t.ok()) cluster->Abort(t.status());
    trainer = std::move(t).value();
    BroadcastDenseFromWorker0(cluster, &trainer->model().params());
  }

  std::unique_ptr<SeqTrainer> trainer;
};

// data.synthetic: the single-process protocol's batches (all made before the timer), worker w
// training batches w, w + W, ...
int RunSeqSynthetic(Cluster* cluster, const config::Config& config, TrainJob job,
                    const ClusterTrainFlags& flags) {
  const SyntheticRunOptions& run = job.run;
  if (run.steps < 1 || run.warmup_steps < 0 || run.batch < 1 || run.log_every_steps < 1)
    cluster->Abort(InvalidArgumentError(
        "data.synthetic steps, batch and train.log_every_steps must be >= 1, warmup_steps >= 0"));
  SeqWorker sw(cluster, config, &job);
  const int train_steps = run.warmup_steps + run.steps;
  WorkerCheckpoints ck(cluster, config, flags, sw.store.get(),
                       CheckpointStateOf(sw.trainer.get(), config));
  std::vector<double> losses;  // worker 0's so far (restored with the checkpoint)
  const int start = ck.ResumeSynthetic(train_steps, &losses);
  auto gen = SyntheticBatches::Create(run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  std::vector<SeqBatch> batches;
  if (Status s = (*gen)->MakeSeqBatches(
          start, train_steps, run.batch,
          [cluster](int64_t i) { return SyntheticBatchIndex(cluster, i); },
          "warm-up and timed, this worker's", &batches);
      !s.ok())
    cluster->Abort(s);
  std::ofstream metrics;
  OpenMetricsOut(cluster, flags, &metrics);
  auto step = [&](int i, bool prefetch) {
    const SeqBatchView next = prefetch ? ViewOf(batches[i + 1]) : SeqBatchView();
    return sw.trainer->Step(ViewOf(batches[i]), prefetch ? &next : nullptr);
  };
  SyntheticSummary summary;
  if (auto stopped = RunSyntheticRounds(cluster, flags, job, &sw, &ck, sw.trainer->model().params(),
                                        start, "sequences", step,
                                        metrics.is_open() ? &metrics : nullptr, &losses, &summary))
    return *stopped;
  const size_t k = std::min<size_t>(10, losses.size());
  const ps::RemoteStoreMetrics m = sw.store->metrics();
  PrintPrefetchHits(cluster, m);
  if (Status s = sw.store->Finish(); !s.ok()) cluster->Abort(s);
  int exit_code = 0;
  if (cluster->role_index() == 0) {
    std::cerr << "loss first10=" << Fixed(internal::Mean(losses, 0, k), 4)
              << " last10=" << Fixed(summary.loss, 4) << "\n";
    if (metrics.is_open()) SyntheticResultMetrics(cluster, job, summary, m).WriteTo(&metrics);
    if (MetricsOutWritten(*cluster, flags, metrics))
      SyntheticResultLine(cluster, config, job, sw, m, summary).Print();
    else
      exit_code = 1;
  }
  if (Status s = sw.store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

// data.train_dir: the SeqTrainer's reader, step and evaluation for RunDatasetRounds (worker w
// training batch k*W + w of round k).
class SeqRoundsSource : public DatasetRoundsSource {
 public:
  SeqRoundsSource(SeqWorker* sw, const Dataset& data, const DatasetRunOptions& run)
      : sw_(sw),
        data_(data),
        run_(run),
        reader_options_(WithModelWindow(sw->trainer.get(), run.reader)),
        reader_(&data, {}, reader_options_) {}

  const Dataset& data() const override { return data_; }
  int64_t per_epoch() const override { return reader_.sequences_per_epoch(); }
  Status Read(int64_t e, int64_t first, int64_t /*step*/, bool next) override {
    IPS_RETURN_IF_ERROR(reader_.SkipTo(e, first));
    if (!reader_.Next(&batches_[next ? 1 : 0]))
      return InternalError("the reader ended before its batch");
    return Status::Ok();
  }
  void Advance() override { std::swap(batches_[0], batches_[1]); }
  StatusOr<double> Step(bool prefetch) override {
    const SeqBatchView next = prefetch ? ViewOf(batches_[1]) : SeqBatchView();
    return sw_->trainer->Step(ViewOf(batches_[0]), prefetch ? &next : nullptr);
  }
  int64_t steps() const override { return sw_->trainer->steps(); }
  const models::DenseParams<float>& params() const override {
    return sw_->trainer->model().params();
  }
  StatusOr<RankingEvalResult> Evaluate(bool /*last*/, std::vector<RetrievalCutoff>* /*recall*/,
                                       const std::atomic<bool>* stop) override {
    return EvaluateSeqRanking(sw_->trainer.get(), data_, reader_options_, run_.eval_max_users,
                              RankingCutoffs(run_), stop);
  }
  Names names() const override { return {"sequences", "sequences"}; }

 private:
  SeqWorker* sw_;
  const Dataset& data_;
  const DatasetRunOptions& run_;
  const ReaderOptions reader_options_;
  SequenceReader reader_;
  SequenceBatch batches_[2];  // this step's batch and the prefetched one
};

}  // namespace

int RunSeqWorker(Cluster* cluster, const config::Config& config, TrainJob job, const Dataset* data,
                 const ClusterTrainFlags& flags) {
  if (data == nullptr) return RunSeqSynthetic(cluster, config, std::move(job), flags);
  SeqWorker sw(cluster, config, &job);
  SeqRoundsSource source(&sw, *data, job.dataset);
  return RunDatasetRounds(cluster, config, job, flags, sw,
                          CheckpointStateOf(sw.trainer.get(), config), &source);
}

}  // namespace ips::cluster_internal
