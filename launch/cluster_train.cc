#include "launch/cluster_train.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/stop_signals.h"
#include "kernels/context.h"
#include "launch/cluster_worker.h"
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

namespace {

using cluster_internal::BroadcastDenseFromWorker0;
using cluster_internal::Checkpointing;
using cluster_internal::Fixed;
using cluster_internal::OpenMetricsOut;
using cluster_internal::SyntheticSummary;
using cluster_internal::WorkerClient;

// RunRetrievalEvaluation, abandoned (EvaluationAbandonedError) once *stop is set (may be null).
StatusOr<RetrievalResult> RetrievalEvaluation(Trainer* trainer, ps::EmbeddingStore* store,
                                              const Dataset& data, const DatasetRunOptions& run,
                                              const std::atomic<bool>* stop) {
  RetrievalOptions o;
  o.cutoffs = run.retrieval_cutoffs;
  o.max_users = run.eval_max_users;
  o.stop = stop;
  IPS_ASSIGN_OR_RETURN(const int item, store->FindTable(trainer->options().item_table));
  IPS_ASSIGN_OR_RETURN(o.category_table, store->FindTable(trainer->options().category_table));
  IPS_ASSIGN_OR_RETURN(RetrievalResult r, EvaluateRetrieval(trainer->context(), &trainer->model(),
                                                            store, item, data, o));
  std::cerr << "retrieval: " << r.users << " users x " << r.items << " items in "
            << cluster_internal::Fixed(r.seconds, 1) << " s\n";
  return r;
}

// A CTR training worker (RunWorker, RunDatasetWorker): the client of the parameter servers and
// the trainer, whose dense gradients the client's hook averages over the workers; the replicas
// start from worker 0's dense weights (every worker restores the same --resume state later).
struct TrainingWorker : WorkerClient {
  TrainingWorker(Cluster* cluster, const config::Config& config, TrainJob* job)
      : WorkerClient(cluster, config, *job) {
    job->trainer.dense_grad_allreduce = dense_grad_hook;
    auto t = Trainer::Create(job->trainer, store.get());
    if (!t.ok()) cluster->Abort(t.status());
    trainer = std::move(t).value();
    BroadcastDenseFromWorker0(cluster, &trainer->model().params());
  }
  std::unique_ptr<Trainer> trainer;
};

// --resume on a PS: the rows of every table that PsOfKey assigns to this server, from the shard
// files of however many servers wrote the checkpoint.
Status RestoreServerShards(Cluster* cluster, ps::LocalEmbeddingStore* store,
                           const std::string& path) {
  IPS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(path));
  CheckpointContent into;
  for (int t = 0; t < store->num_tables(); ++t) {
    IPS_ASSIGN_OR_RETURN(ps::DynamicTable * table, store->table(t));
    into.tables.push_back(table);
  }
  const int me = cluster->role_index(), num_ps = cluster->layout().num_ps;
  IPS_RETURN_IF_ERROR(reader->Restore(
      into, nullptr, [me, num_ps](uint64_t key) { return ps::PsOfKey(key, num_ps) == me; }));
  // One write: mpirun interleaves the ranks' stderr at write boundaries.
  std::string line = cluster->Describe() + ": resumed from " + reader->dir() + " (step " +
                     std::to_string(reader->step()) + "):";
  for (ps::DynamicTable* t : into.tables)
    line += " " + t->options().name + "=" + std::to_string(t->Stats().rows) + " rows";
  std::cerr << line + "\n";
  return Status::Ok();
}

int RunServer(Cluster* cluster, const config::Config& config, const TrainJob& job,
              const ClusterTrainFlags& flags) {
  ps::ServerOptions so;
  so.tables = job.tables;
  so.num_workers = cluster->layout().num_workers;
  so.num_threads = PsThreads(config.cluster().ps_threads(), cluster->layout());
  if (cluster->rank() == flags.kill_rank) {
    if (flags.kill_in_checkpoint_step >= 0) {
      so.kill_in_checkpoint_step = flags.kill_in_checkpoint_step;
    } else {
      so.kill_after_pushes = flags.kill_step;
    }
  }
  // A stop signal sent to every rank (SIGTERM, or SIGUSR1 forwarded by mpirun) stops the workers
  // after a checkpoint, which needs the servers: they leave when the workers shut them down.
  if (Checkpointing(config)) IgnoreStopSignals();
  auto server = ps::ParameterServer::Create(cluster->transport(), so);
  if (!server.ok()) cluster->Abort(server.status());
  if (!flags.resume.empty()) {
    if (Status s = RestoreServerShards(cluster, (*server)->store(), flags.resume); !s.ok())
      cluster->Abort(s.WithContext("--resume " + flags.resume));
  }
  if (Status s = (*server)->Run(); !s.ok()) cluster->Abort(s);
  const ps::ServerStats& st = (*server)->stats();
  for (int t = 0; t < (*server)->store()->num_tables(); ++t) {
    auto ts = (*server)->store()->Stats(t);
    if (!ts.ok()) continue;
    std::cerr << cluster->Describe() << ": table " << ts->name << " rows=" << ts->rows
              << " bytes=" << ts->bytes << " bytes_per_row=" << Fixed(ts->BytesPerRow(), 1)
              << " payload_per_row=" << ts->payload_bytes_per_row
              << " evicted_ttl=" << ts->evicted_ttl << " evicted_cap=" << ts->evicted_capacity
              << "\n";
  }
  std::cerr << cluster->Describe() << ": threads=" << so.num_threads << " served pulls=" << st.pulls
            << " pushes=" << st.pushes << " deferred_pulls=" << st.deferred_pulls
            << " bytes_in=" << cluster->transport()->bytes_received()
            << " bytes_out=" << cluster->transport()->bytes_sent() << "\n";
  return 0;
}

}  // namespace

namespace {

using cluster_internal::CheckpointStateOf;
using cluster_internal::WorkerCheckpoints;

int RunWorker(Cluster* cluster, const config::Config& config, TrainJob job,
              const ClusterTrainFlags& flags) {
  const int w = cluster->role_index();
  TrainingWorker tw(cluster, config, &job);
  ps::RemoteEmbeddingStore* store = tw.store.get();
  Trainer* trainer = tw.trainer.get();
  const SyntheticRunOptions& run = job.run;
  const int train_steps = run.warmup_steps + run.steps;

  // Checkpoints hold the run's position: the step, the batch schedule and worker 0's losses.
  WorkerCheckpoints ck(cluster, config, flags, store, CheckpointStateOf(trainer, config));
  std::vector<double> losses;
  const int start = ck.ResumeSynthetic(train_steps, &losses);
  const auto& params = trainer->model().params();

  auto gen = SyntheticBatches::Create(run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  // Worker w's shard: batches w, w + W, w + 2W, ... (with one worker: exactly the
  // single-process stream), continued after every batch a resumed checkpoint's run trained
  // (SyntheticBatchIndex); held-out batches follow every batch the run trains.
  std::vector<CtrBatch> batches;
  if (Status s = (*gen)->MakeCtrBatches(
          start, train_steps, run.batch,
          [cluster](int64_t i) { return cluster_internal::SyntheticBatchIndex(cluster, i); },
          "warm-up and timed, this worker's", &batches);
      !s.ok())
    cluster->Abort(s);
  std::ofstream metrics;
  OpenMetricsOut(cluster, flags, &metrics);
  auto step = [&](int i, bool prefetch) {
    const CtrBatchView next = prefetch ? ViewOf(batches[i + 1]) : CtrBatchView();
    return trainer->Step(ViewOf(batches[i]), prefetch ? &next : nullptr);
  };
  SyntheticSummary summary;
  if (auto stopped = cluster_internal::RunSyntheticRounds(
          cluster, flags, job, &tw, &ck, params, start, "samples", step,
          metrics.is_open() ? &metrics : nullptr, &losses, &summary))
    return *stopped;
  const ps::RemoteStoreMetrics m = store->metrics();
  const size_t k = std::min<size_t>(10, losses.size());
  // This worker pushes no more: the others' pulls must not wait on its clock.
  if (Status s = store->Finish(); !s.ok()) cluster->Abort(s);

  int exit_code = 0;
  if (w == 0) {
    // The held-out batches follow every batch the run trained (its schedule's). A stop during
    // the evaluation (worker 0's alone: the others are done) ends the run after the last step's
    // checkpoint, which every checkpointed run writes.
    const uint64_t first = ck.schedule().HeldOutFirst(train_steps);
    CtrBatch held_out;  // made one at a time
    auto evaluated = internal::EvaluateSyntheticBatches(
        trainer, flags.eval_batches,
        [&](int e) -> StatusOr<const CtrBatch*> {
          IPS_RETURN_IF_ERROR((*gen)->CtrBatchAt(first + e, run.batch, &held_out));
          return &held_out;
        },
        Checkpointing(config) ? &StopRequested() : nullptr);
    if (!evaluated.ok() && IsEvaluationAbandoned(evaluated.status()))
      return ck.Stop(job, train_steps, nullptr);
    if (!evaluated.ok()) cluster->Abort(evaluated.status());
    const BinaryMetricsResult eval = *evaluated;
    std::vector<std::pair<std::string, int64_t>> table_sizes;  // <table>_rows and _bytes
    double largest_ratio = 0;  // of the table with the most rows (small tables: slab floor)
    int64_t largest_rows = -1;
    for (int t = 0; t < static_cast<int>(job.tables.size()); ++t) {
      auto ts = store->Stats(t);
      if (!ts.ok()) cluster->Abort(ts.status());
      const double ratio =
          ts->payload_bytes_per_row > 0 ? ts->BytesPerRow() / ts->payload_bytes_per_row : 0;
      if (ts->rows > largest_rows) {
        largest_rows = ts->rows;
        largest_ratio = ratio;
      }
      std::cerr << "table " << ts->name << ": rows=" << ts->rows << " bytes=" << ts->bytes
                << " bytes_per_row=" << Fixed(ts->BytesPerRow(), 1) << " (" << Fixed(ratio, 3)
                << "x row+state)\n";
      table_sizes.emplace_back(ts->name + "_rows", ts->rows);
      table_sizes.emplace_back(ts->name + "_bytes", ts->bytes);
    }
    const double last10 = summary.loss;
    std::cerr << "loss first10=" << Fixed(internal::Mean(losses, 0, k), 4)
              << " last10=" << Fixed(last10, 4) << " heldout_auc=" << Fixed(eval.auc, 4) << "\n";
    if (metrics.is_open()) {  // single-process training's eval line, then the result line
      internal::SyntheticEvalMetricsLine(ModelKindName(job.trainer.model.kind), train_steps, eval)
          .WriteTo(&metrics);
      MetricsLine result = cluster_internal::SyntheticResultMetrics(cluster, job, summary, m);
      result.Decimals("auc", eval.auc, 6);
      for (const auto& [key, value] : table_sizes) result.Int(key, value);
      result.WriteTo(&metrics);
    }
    summary.quality.emplace_back("auc", Fixed(eval.auc, 4));
    if (cluster_internal::MetricsOutWritten(*cluster, flags, metrics))
      cluster_internal::SyntheticResultLine(cluster, config, job, tw, m, summary)
          .Add("bytes_per_row_ratio", Fixed(largest_ratio, 3))
          .Print();
    else
      exit_code = 1;
  }
  if (Status s = store->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

// ---- Training on a dataset directory (data.train_dir) ------------------------------------------

// Worker w of W on data.train_dir. Every worker reads the whole dataset's epoch order (the same
// TrainReader, seed and per-epoch shuffle as single-process training) and takes every W-th batch
// of it: in round k of an epoch started at position p0, batch k*W + w, i.e. the examples from
// p0 + (k*W + w)*batch on. Every worker runs the same number of rounds (floor of the epoch's
// batches / W: the dense all-reduce needs every worker in every step), so up to W - 1 batches at
// the end of an epoch's order are left out (different examples each epoch: the order is
// reshuffled); with one worker the batches are exactly single-process training's. DIEN's
// auxiliary negatives are drawn as in RunDatasetTraining from (seed, step), worker w > 0 mixing
// in w. After every eval.every_epochs-th epoch and the last one, worker 0 runs the single-process
// evaluation (EvaluateRanking, and EvaluateRetrieval for models with user vectors) while the
// others wait at a barrier, so it reads the tables of exactly that step. The loop is
// RunDatasetRounds (launch/cluster_worker.h, shared with the sequence workers); this is the CTR
// worker's reader, Trainer step and evaluation for it.
class CtrRoundsSource : public cluster_internal::DatasetRoundsSource {
 public:
  CtrRoundsSource(Cluster* cluster, TrainingWorker* tw, const Dataset& data,
                  const DatasetRunOptions& run)
      : worker_(cluster->role_index()),
        tw_(tw),
        trainer_(tw->trainer.get()),
        data_(data),
        run_(run),
        reader_(&data, {}, run.reader),
        aux_(trainer_->model().aux_negatives()) {
    if (aux_ && data.manifest().items == 0)
      cluster->Abort(FailedPreconditionError("dataset has no items"));
  }

  const Dataset& data() const override { return data_; }
  int64_t per_epoch() const override { return reader_.examples_per_epoch(); }
  Status Read(int64_t e, int64_t first, int64_t step, bool next) override {
    Slot& slot = slots_[next ? 1 : 0];
    IPS_RETURN_IF_ERROR(reader_.SkipTo(e, first));
    if (!reader_.Next(&slot.batch)) return InternalError("the reader ended before its batch");
    // DIEN's auxiliary negatives: RunDatasetTraining's draw for trainer step `step`; worker w > 0
    // mixes in w so the workers' negatives differ.
    if (!aux_) {
      slot.view = ViewOf(slot.batch);
      return Status::Ok();
    }
    uint64_t seed = AuxNegativesSeed(run_.reader.seed, step);
    if (worker_ > 0) seed = Mix64(seed ^ static_cast<uint64_t>(worker_));
    slot.view = ViewWithAuxNegatives(slot.batch, data_, seed, &slot.negatives);
    return Status::Ok();
  }
  // The views point into the batches' and negatives' heap buffers, which the swap keeps.
  void Advance() override { std::swap(slots_[0], slots_[1]); }
  StatusOr<double> Step(bool prefetch) override {
    return trainer_->Step(slots_[0].view, prefetch ? &slots_[1].view : nullptr);
  }
  int64_t steps() const override { return trainer_->steps(); }
  const models::DenseParams<float>& params() const override { return trainer_->model().params(); }
  StatusOr<RankingEvalResult> Evaluate(bool last, std::vector<RetrievalCutoff>* recall,
                                       const std::atomic<bool>* stop) override {
    IPS_ASSIGN_OR_RETURN(RankingEvalResult ranking,
                         EvaluateRanking(trainer_, data_, run_.reader, run_.eval_max_users,
                                         RankingCutoffs(run_), stop));
    if (last && trainer_->model().num_user_vectors() > 0) {
      IPS_ASSIGN_OR_RETURN(RetrievalResult retrieval,
                           RetrievalEvaluation(trainer_, tw_->store.get(), data_, run_, stop));
      *recall = retrieval.cutoffs;
    }
    return ranking;
  }
  Names names() const override { return {"examples", "samples"}; }

 private:
  struct Slot {
    Batch batch;
    AuxNegatives negatives;
    CtrBatchView view;
  };
  const int worker_;
  TrainingWorker* tw_;
  Trainer* trainer_;
  const Dataset& data_;
  const DatasetRunOptions& run_;
  TrainReader reader_;
  const bool aux_;
  Slot slots_[2];  // this step's batch and the prefetched one
};

int RunDatasetWorker(Cluster* cluster, const config::Config& config, TrainJob job,
                     const Dataset& data, const ClusterTrainFlags& flags) {
  TrainingWorker tw(cluster, config, &job);
  CtrRoundsSource source(cluster, &tw, data, job.dataset);
  return cluster_internal::RunDatasetRounds(cluster, config, job, flags, tw,
                                            CheckpointStateOf(tw.trainer.get(), config), &source);
}

}  // namespace

int MpiWorldSizeFromEnv() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr) return std::max(0, std::atoi(v));
  }
  return 0;
}

Status CheckEpochFillsWorkers(const TrainJob& job, int64_t per_epoch, int num_workers) {
  const DatasetRunOptions& run = job.dataset;
  const int64_t batch = run.reader.batch_size;
  if (batch < 1 || num_workers < 1)
    return InvalidArgumentError("data.batch_size and the number of workers must be >= 1");
  if (cluster_internal::EpochRounds{per_epoch, batch, num_workers}.From(0) > 0) return Status::Ok();
  const char* rows = IsSequenceModel(job.trainer.model.kind)
                         ? "training sequences (with >= 2 events)"
                         : "training examples";
  return FailedPreconditionError(
      "data.train_dir '" + run.train_dir + "': " + std::to_string(per_epoch) + " " + rows +
      " per epoch do not give each of the " + std::to_string(num_workers) +
      " workers one batch of " + std::to_string(batch) + " (that needs " +
      std::to_string(batch * num_workers) + "): lower data.batch_size or use fewer workers");
}

void AddRankingFields(const RankingEvalResult& eval, const std::vector<RetrievalCutoff>& recall,
                      ResultLine* line) {
  using cluster_internal::Fixed;
  if (eval.ranked) {
    for (const RankingCutoff& c : RankingCutoffsOf(eval)) {
      const std::string k = std::to_string(c.k);
      line->Add("hr" + k, Fixed(c.hr, 4)).Add("ndcg" + k, Fixed(c.ndcg, 4));
    }
  }
  line->Add("auc", Fixed(eval.auc, 4))
      .Add("gauc", Fixed(eval.gauc, 4))
      .Add("logloss", Fixed(eval.logloss, 4));
  for (const RetrievalCutoff& c : recall)
    line->Add("recall" + std::to_string(c.k), Fixed(c.recall, 4));
}

StatusOr<RetrievalResult> RunRetrievalEvaluation(Trainer* trainer, ps::EmbeddingStore* store,
                                                 const Dataset& data, const DatasetRunOptions& run,
                                                 const std::atomic<bool>* stop) {
  return RetrievalEvaluation(trainer, store, data, run, stop);
}

int RunClusterTrain(const config::Config& config, const ClusterTrainFlags& flags) {
  // Without checkpoint.dir a rank has no stop to offer: SIGTERM and SIGUSR1 end it, as before
  // `ips train` installed the stop handler first thing (launch/main.cc); one that arrived since
  // ends it now. With checkpoint.dir, the servers ignore them (RunServer) and the workers stop.
  if (!Checkpointing(config)) DefaultStopSignals();
  // data.train_dir: every rank opens and checks the dataset (the servers need its row counts for
  // the tables' initialisers).
  auto job = TrainJobFromConfig(config);
  std::unique_ptr<Dataset> data;
  Status data_status;  // what every rank checks before anything starts (see below)
  const bool sequence = job.ok() && IsSequenceModel(job->trainer.model.kind);
  if (job.ok() && !job->synthetic) {
    Status& s = data_status;
    auto opened = Dataset::Open(job->dataset.train_dir);
    s = opened.ok() ? FitJobToDataset(**opened, &*job) : opened.status();
    if (s.ok()) data = std::move(opened).value();
    s = s.WithContext("data.train_dir '" + job->dataset.train_dir + "'");
  }
  ClusterOptions copt;
  copt.num_ps = config.cluster().num_ps();
  copt.config_source = flags.config_source;
  copt.transport.spin_us = TransportSpinUs(config.cluster().transport_spin_us());
  // Every rank prints an error of Cluster::Init, a bad layout before the ranks wait for one
  // another (report_bad_layout), with rank 0's RESULT line: mpirun kills the others as soon as
  // the first one exits, so a message left to rank 0 alone, or printed after Init returned, is
  // lost whenever another rank exits first.
  bool reported = false;
  const auto report = [&reported](const Status& s) {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    const std::string message =
        "rank " + std::string(rank != nullptr ? rank : "0") + ": " + s.ToString();
    const std::string line = "error: " + message + "\n";  // one write: ranks' lines interleave
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    // Not written through std::cerr, whose "error: " lines launch/main.cc notes itself.
    NoteResultError(message);
    FinishRunResult(1);
    reported = true;
  };
  copt.report_bad_layout = report;
  auto cluster_or = Cluster::Init(nullptr, nullptr, copt);
  if (!cluster_or.ok()) {
    if (!reported) report(cluster_or.status());
    return 1;
  }
  std::unique_ptr<Cluster> cluster = std::move(cluster_or).value();
  // Worker 0 prints the job's RESULT line, its error line included (launch/main.cc); until now
  // rank 0 would have.
  SetResultLineRank(/*worker 0's rank=*/cluster->layout().num_ps, cluster->rank());
  if (!job.ok()) cluster->Abort(job.status());
  // --resume of a checkpoint beyond this run (CheckResumeFitsRun) is refused before anything
  // loads, through the agreement below: the servers would otherwise load their shards of it while
  // the workers refuse. Worker 0 alone checks it (for a root that validates the whole checkpoint,
  // a read of every file that other ranks need not repeat); it prints the job's RESULT line.
  if (data_status.ok() && !flags.resume.empty() && cluster->rank() == cluster->layout().num_ps)
    data_status = CheckResumePathFitsRun(config, flags.resume);
  if (!job->synthetic || !flags.resume.empty()) {
    // The ranks agree before anything starts: a bad directory (or one missing on some host) or a
    // resume beyond the run ends every rank with exit code 1, each printing why. (Exiting without
    // the agreement, mpirun kills the other ranks before they can print.)
    int bad = data_status.ok() ? 0 : 1;
    MPI_Request req;
    Status agreed =
        ps::MpiStatus(MPI_Iallreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &req),
                      "MPI_Iallreduce");
    if (agreed.ok()) agreed = ps::WaitWithoutSpinning(&req, "MPI_Iallreduce");
    if (!agreed.ok()) cluster->Abort(agreed);
    if (bad != 0) {
      // One write per line: mpirun interleaves the ranks' stderr at write boundaries.
      const std::string message =
          cluster->Describe() + ": " +
          (data_status.ok() ? "another rank failed its checks of the job; see its error"
                            : data_status.ToString());
      const std::string line = "error: " + message + "\n";
      std::fputs(line.c_str(), stderr);
      std::fflush(stderr);
      // Not written through std::cerr, whose "error: " lines launch/main.cc notes itself.
      NoteResultError(message);
      // Worker 0 prints the job's RESULT line before any rank may exit: mpirun kills the others
      // as soon as the first one exits with an error.
      FinishRunResult(1);
      Status waited = ps::MpiStatus(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
      if (waited.ok()) waited = ps::WaitWithoutSpinning(&req, "MPI_Ibarrier");
      cluster.reset();  // MPI_Finalize on every rank
      return 1;
    }
  }
  job->run.eval_batches = flags.eval_batches;
  if (cluster->rank() == 0)
    std::cerr << "cluster: " << cluster->layout().Describe() << "; sync="
              << (config.cluster().sync() == config::ClusterConfig::ASYNC ? "async" : "sync")
              << " staleness=" << config.cluster().staleness() << "\n";
  if (cluster->role() != Role::kPs && job->trainer.model.device == kernels::Device::kCuda) {
    // Several workers on one host: each takes the GPU of its local rank (round robin).
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (Status s = kernels::BindCudaDevice(local != nullptr ? std::atoi(local) : 0); !s.ok())
      cluster->Abort(s.WithContext(cluster->Describe()));
  }
  int code = 0;
  if (cluster->role() == Role::kPs) {
    code = RunServer(cluster.get(), config, *job, flags);
  } else if (sequence) {
    code = cluster_internal::RunSeqWorker(cluster.get(), config, *job, data.get(), flags);
  } else if (data != nullptr) {
    code = RunDatasetWorker(cluster.get(), config, *job, *data, flags);
  } else {
    code = RunWorker(cluster.get(), config, *job, flags);
  }
  cluster.reset();  // transport shutdown (collective) and MPI_Finalize
  return code;
}

}  // namespace ips
