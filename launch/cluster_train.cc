#include "launch/cluster_train.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/progress.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "proto/config.pb.h"
#include "ps/remote_store.h"
#include "ps/server.h"
#include "worker/cluster.h"
#include "worker/metrics.h"
#include "worker/model_factory.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace {

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

int RunServer(Cluster* cluster, const TrainJob& job) {
  ps::ServerOptions so;
  so.tables = job.tables;
  so.num_workers = cluster->layout().num_workers;
  auto server = ps::ParameterServer::Create(cluster->transport(), so);
  if (!server.ok()) cluster->Abort(server.status());
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
  std::cerr << cluster->Describe() << ": served pulls=" << st.pulls << " pushes=" << st.pushes
            << " deferred_pulls=" << st.deferred_pulls
            << " bytes_in=" << cluster->transport()->bytes_received()
            << " bytes_out=" << cluster->transport()->bytes_sent() << "\n";
  return 0;
}

int RunWorker(Cluster* cluster, const config::Config& config, TrainJob job,
              const ClusterTrainFlags& flags) {
  const int w = cluster->role_index();
  const int num_workers = cluster->layout().num_workers;
  Collective* coll = cluster->collective();
  ps::RemoteStoreOptions ro;
  ro.tables = job.tables;
  ro.ps_ranks = cluster->layout().PsRanks();
  ro.worker_index = w;
  ro.mode = config.cluster().sync() == config::ClusterConfig::ASYNC
                ? ps::RemoteStoreOptions::Mode::kAsync
                : ps::RemoteStoreOptions::Mode::kSync;
  ro.staleness = config.cluster().staleness();
  auto store = ps::RemoteEmbeddingStore::Create(cluster->transport(), ro);
  if (!store.ok()) cluster->Abort(store.status());
  // Gradients of each worker's mean loss, averaged: the gradient of the global batch's mean.
  // The hook is timed (output only: allreduce_ms in the RESULT line, for launch/scale.sh).
  double allreduce_s = 0;
  int64_t dense_floats = 0;
  job.trainer.dense_grad_allreduce = [coll, &allreduce_s, &dense_floats](float* g, int64_t n) {
    Timer t;
    Status s = coll->AllReduceMean(g, n);
    allreduce_s += t.Seconds();
    dense_floats = n;
    return s;
  };
  auto trainer_or = Trainer::Create(job.trainer, store->get());
  if (!trainer_or.ok()) cluster->Abort(trainer_or.status());
  Trainer* trainer = trainer_or->get();
  // Replicas start equal: worker 0's initial dense weights everywhere.
  auto& params = trainer->model().params();
  if (Status s = coll->Broadcast(params.values(), params.size() * int64_t{sizeof(float)}, 0);
      !s.ok())
    cluster->Abort(s);

  const SyntheticRunOptions& run = job.run;
  auto gen = SyntheticBatches::Create(run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  // Worker w's shard: batches w, w + W, w + 2W, ... (with one worker: exactly the
  // single-process stream); held-out batches follow every worker's training batches.
  const int train_steps = run.warmup_steps + run.steps;
  std::vector<CtrBatch> batches(static_cast<size_t>(train_steps));
  for (int i = 0; i < train_steps; ++i) {
    const uint64_t index = static_cast<uint64_t>(i) * num_workers + static_cast<uint64_t>(w);
    if (Status s = (*gen)->CtrBatchAt(index, run.batch, &batches[i]); !s.ok()) cluster->Abort(s);
  }
  std::ofstream metrics;
  if (w == 0 && !flags.metrics_out.empty()) {
    metrics.open(flags.metrics_out, std::ios::app);
    if (!metrics)
      cluster->Abort(NotFoundError("cannot open --metrics_out file '" + flags.metrics_out + "'"));
  }
  std::unique_ptr<ProgressLine> progress;
  if (w == 0 && !flags.quiet)
    progress = std::make_unique<ProgressLine>(
        "train", static_cast<int64_t>(run.steps) * run.batch * num_workers, "samples", stderr);
  std::vector<double> losses;
  double timed = 0;
  Timer timer;
  for (int i = 0; i < train_steps; ++i) {
    if (cluster->rank() == flags.kill_rank && i == flags.kill_step) {
      std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL at step %d\n",
                   cluster->Describe().c_str(), i);
      std::fflush(stderr);
      std::raise(SIGKILL);
    }
    if (i == run.warmup_steps) allreduce_s = 0;  // timed steps only
    timer.Reset();
    auto loss = trainer->Step(ViewOf(batches[i]));
    if (i >= run.warmup_steps) timed += timer.Seconds();
    if (!loss.ok()) cluster->Abort(loss.status());
    losses.push_back(*loss);
    const int done = i + 1;
    if (flags.replica_check_every > 0 && done % flags.replica_check_every == 0) {
      if (Status s = CheckReplicasEqual(coll, params.values(), params.size(), done); !s.ok())
        cluster->Abort(s);
    }
    if (progress && i >= run.warmup_steps) {
      progress->Update(static_cast<int64_t>(i - run.warmup_steps + 1) * run.batch * num_workers,
                       "loss=" + Fixed(*loss, 4));
    }
    if (metrics.is_open() && (done % run.log_every_steps == 0 || done == train_steps)) {
      const auto m = (*store)->metrics();
      metrics << "{\"phase\":\"train\",\"role\":\"worker\",\"rank\":" << cluster->rank()
              << ",\"step\":" << done << ",\"loss\":" << std::setprecision(17) << *loss
              << std::setprecision(6) << ",\"pull_p50_us\":" << m.pull_p50_us
              << ",\"pull_p99_us\":" << m.pull_p99_us << ",\"push_p50_us\":" << m.push_p50_us
              << ",\"push_p99_us\":" << m.push_p99_us << ",\"bytes_sent\":" << m.bytes_sent
              << ",\"bytes_received\":" << m.bytes_received
              << ",\"staleness_max\":" << m.staleness_max << "}\n";
    }
  }
  if (progress) progress->Finish("loss=" + Fixed(losses.back(), 4));
  if (flags.replica_check_every > 0) {
    if (Status s = CheckReplicasEqual(coll, params.values(), params.size(), train_steps); !s.ok())
      cluster->Abort(s);
  }
  // Global throughput: every worker's samples over the slowest worker's time.
  std::vector<float> times(static_cast<size_t>(num_workers), 0.0f);
  times[w] = static_cast<float>(timed);
  if (Status s = coll->AllReduceSum(times.data(), num_workers); !s.ok()) cluster->Abort(s);
  double slowest = 0;
  for (float t : times) slowest = std::max(slowest, static_cast<double>(t));
  const double samples_per_s =
      slowest > 0 ? static_cast<double>(run.steps) * run.batch * num_workers / slowest : 0;
  const ps::RemoteStoreMetrics m = (*store)->metrics();
  std::cerr << cluster->Describe() << ": steps=" << train_steps
            << " own_samples_per_s=" << Fixed(timed > 0 ? run.steps * run.batch / timed : 0, 1)
            << " pull_p50_us=" << Fixed(m.pull_p50_us, 0)
            << " pull_p99_us=" << Fixed(m.pull_p99_us, 0)
            << " push_p50_us=" << Fixed(m.push_p50_us, 0)
            << " push_p99_us=" << Fixed(m.push_p99_us, 0) << " bytes_sent=" << m.bytes_sent
            << " bytes_received=" << m.bytes_received << " staleness_max=" << m.staleness_max
            << " staleness_mean=" << Fixed(m.staleness_mean, 2) << "\n";
  // This worker pushes no more: the others' pulls must not wait on its clock.
  if (Status s = (*store)->Finish(); !s.ok()) cluster->Abort(s);

  int exit_code = 0;
  if (w == 0) {
    BinaryMetrics bm;
    std::vector<float> probs(static_cast<size_t>(run.batch));
    for (int e = 0; e < flags.eval_batches; ++e) {
      CtrBatch b;
      const uint64_t index = static_cast<uint64_t>(train_steps) * num_workers + e;
      if (Status s = (*gen)->CtrBatchAt(index, run.batch, &b); !s.ok()) cluster->Abort(s);
      if (Status s = trainer->Predict(ViewOf(b), probs.data()); !s.ok()) cluster->Abort(s);
      if (Status s = bm.Add(probs.data(), b.label.data(), nullptr, b.batch); !s.ok())
        cluster->Abort(s);
    }
    const BinaryMetricsResult eval = bm.Compute();
    std::ostringstream tables;
    double largest_ratio = 0;  // of the table with the most rows (small tables: slab floor)
    int64_t largest_rows = -1;
    for (int t = 0; t < static_cast<int>(job.tables.size()); ++t) {
      auto ts = (*store)->Stats(t);
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
      tables << ",\"" << ts->name << "_rows\":" << ts->rows << ",\"" << ts->name
             << "_bytes\":" << ts->bytes;
    }
    double first10 = 0, last10 = 0;
    const size_t k = std::min<size_t>(10, losses.size());
    for (size_t i = 0; i < k; ++i) first10 += losses[i] / k;
    for (size_t i = losses.size() - k; i < losses.size(); ++i) last10 += losses[i] / k;
    std::cerr << "loss first10=" << Fixed(first10, 4) << " last10=" << Fixed(last10, 4)
              << " heldout_auc=" << Fixed(eval.auc, 4) << "\n";
    if (metrics.is_open()) {
      metrics << "{\"phase\":\"result\",\"workers\":" << num_workers
              << ",\"ps\":" << cluster->layout().num_ps << ",\"samples_per_s\":" << samples_per_s
              << ",\"loss\":" << last10 << ",\"auc\":" << eval.auc
              << ",\"staleness_max\":" << m.staleness_max << tables.str() << "}\n";
      metrics.flush();
      if (!metrics) exit_code = 1;
    }
    ResultLine("train_cluster")
        .Add("model", ModelKindName(job.trainer.model.kind))
        .Add("workers", static_cast<int64_t>(num_workers))
        .Add("ps", static_cast<int64_t>(cluster->layout().num_ps))
        .Add("sync", config.cluster().sync() == config::ClusterConfig::ASYNC ? "async" : "sync")
        .Add("staleness", static_cast<int64_t>(ro.staleness))
        .Add("samples_per_s", Fixed(samples_per_s, 1))
        .Add("steps", static_cast<int64_t>(run.steps))
        .Add("batch", static_cast<int64_t>(run.batch))
        .Add("loss", Fixed(last10, 4))
        .Add("auc", Fixed(eval.auc, 4))
        .Add("staleness_max", m.staleness_max)
        .Add("pull_p50_us", Fixed(m.pull_p50_us, 0))
        .Add("pull_p99_us", Fixed(m.pull_p99_us, 0))
        .Add("push_p50_us", Fixed(m.push_p50_us, 0))
        .Add("push_p99_us", Fixed(m.push_p99_us, 0))
        // Worker 0's per-step averages over the timed steps (step = Trainer::Step), its PS
        // traffic per step over all steps, and the dense floats all-reduced per step.
        .Add("step_ms", Fixed(run.steps > 0 ? 1000 * timed / run.steps : 0, 3))
        .Add("allreduce_ms", Fixed(run.steps > 0 ? 1000 * allreduce_s / run.steps : 0, 3))
        .Add("ps_bytes_per_step",
             static_cast<int64_t>(train_steps > 0 ? (m.bytes_sent + m.bytes_received) / train_steps
                                                  : 0))
        .Add("dense_floats", dense_floats)
        .Add("bytes_per_row_ratio", Fixed(largest_ratio, 3))
        .Print();
  }
  if (Status s = (*store)->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return exit_code;
}

}  // namespace

bool LaunchedUnderMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && std::atoi(v) > 1) return true;
  }
  return false;
}

int RunClusterTrain(const config::Config& config, const ClusterTrainFlags& flags) {
  ClusterOptions copt;
  copt.num_ps = config.cluster().num_ps();
  auto cluster_or = Cluster::Init(nullptr, nullptr, copt);
  if (!cluster_or.ok()) {
    // Every rank prints: mpirun kills the others as soon as the first one exits, so a message left
    // to rank 0 alone is lost whenever another rank exits first.
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    std::cerr << "error: rank " << (rank != nullptr ? rank : "0") << ": "
              << cluster_or.status().ToString() << "\n";
    return 1;
  }
  std::unique_ptr<Cluster> cluster = std::move(cluster_or).value();
  auto job = TrainJobFromConfig(config);
  if (!job.ok()) cluster->Abort(job.status());
  if (!job->synthetic)
    cluster->Abort(UnimplementedError(
        "distributed training on a dataset directory (data.train_dir); use data.synthetic"));
  job->run.eval_batches = flags.eval_batches;
  if (cluster->rank() == 0)
    std::cerr << "cluster: " << cluster->layout().Describe() << "; sync="
              << (config.cluster().sync() == config::ClusterConfig::ASYNC ? "async" : "sync")
              << " staleness=" << config.cluster().staleness() << "\n";
  const int code = cluster->role() == Role::kPs ? RunServer(cluster.get(), *job)
                                                : RunWorker(cluster.get(), config, *job, flags);
  cluster.reset();  // transport shutdown (collective) and MPI_Finalize
  return code;
}

}  // namespace ips
