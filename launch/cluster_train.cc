#include "launch/cluster_train.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/progress.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "ps/remote_store.h"
#include "ps/server.h"
#include "worker/checkpoint.h"
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

// Set by SIGTERM on a worker; read between steps (lock-free: async-signal safe).
std::atomic<bool> g_stop_requested{false};
extern "C" void OnClusterSigterm(int) { g_stop_requested.store(true, std::memory_order_relaxed); }

bool Checkpointing(const config::Config& config) { return !config.checkpoint().dir().empty(); }

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
  std::cerr << cluster->Describe() << ": resumed from " << reader->dir() << " (step "
            << reader->step() << "):";
  for (ps::DynamicTable* t : into.tables)
    std::cerr << " " << t->options().name << "=" << t->Stats().rows << " rows";
  std::cerr << "\n";
  return Status::Ok();
}

int RunServer(Cluster* cluster, const config::Config& config, const TrainJob& job,
              const ClusterTrainFlags& flags) {
  ps::ServerOptions so;
  so.tables = job.tables;
  so.num_workers = cluster->layout().num_workers;
  if (cluster->rank() == flags.kill_rank) {
    if (flags.kill_in_checkpoint_step >= 0) {
      so.kill_in_checkpoint_step = flags.kill_in_checkpoint_step;
    } else {
      so.kill_after_pushes = flags.kill_step;
    }
  }
  // A SIGTERM sent to every rank stops the workers after a checkpoint, which needs the servers:
  // they leave when the workers shut them down.
  if (Checkpointing(config)) std::signal(SIGTERM, SIG_IGN);
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
  std::cerr << cluster->Describe() << ": served pulls=" << st.pulls << " pushes=" << st.pushes
            << " deferred_pulls=" << st.deferred_pulls
            << " bytes_in=" << cluster->transport()->bytes_received()
            << " bytes_out=" << cluster->transport()->bytes_sent() << "\n";
  return 0;
}

// --resume on a worker: the dense state (every worker loads the same, so replicas stay equal) and
// the run's position. Returns the step to continue at.
StatusOr<int64_t> RestoreWorker(Trainer* trainer, const CheckpointContent& dense,
                                const std::string& path, int train_steps,
                                std::vector<double>* losses) {
  IPS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(path));
  std::map<std::string, std::string> blobs;
  IPS_RETURN_IF_ERROR(reader->Restore(dense, &blobs));
  std::vector<int64_t> step;
  IPS_RETURN_IF_ERROR(UnpackBlob(blobs, "run/synthetic_step", 1, &step));
  IPS_RETURN_IF_ERROR(UnpackBlob(blobs, "run/losses", 0, losses));
  if (step[0] < 0 || step[0] > train_steps || static_cast<int64_t>(losses->size()) != step[0])
    return DataLossError(reader->dir() +
                         ": blob 'run/synthetic_step' = " + std::to_string(step[0]) +
                         " does not fit a run of " + std::to_string(train_steps) + " steps with " +
                         std::to_string(losses->size()) + " losses");
  trainer->set_steps(step[0]);
  if (trainer->model().has_dropout_step()) {
    std::vector<int64_t> d;
    IPS_RETURN_IF_ERROR(UnpackBlob(blobs, "model/dropout_step", 1, &d));
    trainer->model().set_dropout_step(static_cast<uint64_t>(d[0]));
  }
  return step[0];
}

// checkpoint.dir set: checks the intervals, installs the SIGTERM handler and, on worker 0, creates
// the writer (null on the other workers). *writing_step is the checkpoint being written, read by
// the test-only fault hook (flags.kill_in_checkpoint_step).
StatusOr<std::unique_ptr<CheckpointWriter>> StartCheckpointing(Cluster* cluster,
                                                               const config::Config& config,
                                                               const ClusterTrainFlags& flags,
                                                               const int64_t* writing_step) {
  const config::CheckpointConfig& ck = config.checkpoint();
  if (ck.every_steps() < 0 || ck.every_seconds() < 0)
    return InvalidArgumentError("checkpoint.every_steps and every_seconds must be >= 0");
  std::signal(SIGTERM, OnClusterSigterm);
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
  return CheckpointWriter::Create(o);
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
      g_stop_requested.load(std::memory_order_relaxed) ? 1.f : 0.f,
      w == 0 && ck.every_seconds() > 0 && seconds_since_checkpoint >= ck.every_seconds() ? 1.f
                                                                                         : 0.f};
  IPS_RETURN_IF_ERROR(coll->AllReduceSum(decide, 2));
  *stop = decide[0] > 0;
  *checkpoint_after =
      *stop || decide[1] > 0 || last || (ck.every_steps() > 0 && done % ck.every_steps() == 0);
  return Status::Ok();
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
  const SyntheticRunOptions& run = job.run;
  const int train_steps = run.warmup_steps + run.steps;

  // Checkpoint state: the dense part (every worker's replica is the same; worker 0 writes it),
  // and the run's position: the step (batch index) and worker 0's losses so far.
  CheckpointContent dense;
  AddModelState(&trainer->model(), &trainer->dense_optimizer(), &dense);
  dense.config_text = ConfigToText(config);
  std::vector<double> losses;
  int start = 0;
  if (!flags.resume.empty()) {
    auto restored = RestoreWorker(trainer, dense, flags.resume, train_steps, &losses);
    if (!restored.ok()) cluster->Abort(restored.status().WithContext("--resume " + flags.resume));
    start = static_cast<int>(*restored);
    if (w == 0)
      std::cerr << "cluster: resumed from " << flags.resume << " at step " << start << "\n";
  }
  const config::CheckpointConfig& ck = config.checkpoint();
  std::unique_ptr<CheckpointWriter> writer;
  int64_t writing_step = -1;  // the checkpoint being written (for the test-only fault hook)
  if (Checkpointing(config)) {
    auto wr = StartCheckpointing(cluster, config, flags, &writing_step);
    if (!wr.ok()) cluster->Abort(wr.status());
    writer = std::move(wr).value();
  }
  auto run_blobs = [&](int64_t step) {
    std::map<std::string, std::string> b;
    b["run/synthetic_step"] = PackBlob(std::vector<int64_t>{step});
    b["run/losses"] = PackBlob(losses);
    if (trainer->model().has_dropout_step())
      b["model/dropout_step"] =
          PackBlob(std::vector<int64_t>{static_cast<int64_t>(trainer->model().dropout_step())});
    b["cluster/layout"] = PackBlob(std::vector<int64_t>{cluster->layout().num_ps, num_workers});
    return b;
  };
  // Every worker calls it at the same step.
  auto checkpoint = [&](int64_t step) {
    return WriteCheckpoint(cluster, store->get(), writer.get(), dense,
                           [&] { return run_blobs(step); }, step, &writing_step);
  };
  // Replicas start equal: worker 0's initial dense weights everywhere.
  auto& params = trainer->model().params();
  if (Status s = coll->Broadcast(params.values(), params.size() * int64_t{sizeof(float)}, 0);
      !s.ok())
    cluster->Abort(s);

  auto gen = SyntheticBatches::Create(run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  // Worker w's shard: batches w, w + W, w + 2W, ... (with one worker: exactly the
  // single-process stream); held-out batches follow every worker's training batches.
  std::vector<CtrBatch> batches(static_cast<size_t>(train_steps));
  for (int i = start; i < train_steps; ++i) {
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
  double timed = 0;
  int64_t timed_steps = 0;
  bool stopped = false;
  Timer timer, since_checkpoint;
  for (int i = start; i < train_steps; ++i) {
    if (cluster->rank() == flags.kill_rank && i == flags.kill_step) {
      std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL at step %d\n",
                   cluster->Describe().c_str(), i);
      std::fflush(stderr);
      std::raise(SIGKILL);
    }
    if (cluster->rank() == flags.kill_rank && i == flags.term_step) std::raise(SIGTERM);
    // Whether this step ends with a checkpoint (and the run stops after it): see DecideCheckpoint.
    bool checkpoint_after = false, stop = false;
    if (Checkpointing(config)) {
      if (Status s = DecideCheckpoint(coll, ck, w, i + 1, i + 1 == train_steps,
                                      since_checkpoint.Seconds(), &checkpoint_after, &stop);
          !s.ok())
        cluster->Abort(s);
    }
    if (i == run.warmup_steps) allreduce_s = 0;  // timed steps only
    timer.Reset();
    // The next batch's pull overlaps this step's compute and push (Trainer::Step's `next`), where
    // that changes nothing: not with TTL or a memory cap (a prefetch is served before this step's
    // AdvanceStep, so its rows' ages and recency differ), and not before a checkpoint (the
    // snapshot would hold the unconsumed prefetch's rows and sightings, which the resumed run
    // pulls and counts again).
    bool prefetch = i + 1 < train_steps && !checkpoint_after;
    for (const ps::TableOptions& t : job.tables)
      if (t.ttl_steps > 0 || t.max_memory_mb > 0) prefetch = false;
    CtrBatchView next;
    if (prefetch) next = ViewOf(batches[i + 1]);
    auto loss = trainer->Step(ViewOf(batches[i]), prefetch ? &next : nullptr);
    if (i >= run.warmup_steps) {
      timed += timer.Seconds();
      ++timed_steps;
    }
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
    if (checkpoint_after) {
      if (Status s = checkpoint(done); !s.ok()) cluster->Abort(s);
      since_checkpoint.Reset();
    }
    if (stop && done < train_steps) {
      stopped = true;
      break;
    }
  }
  if (stopped) {
    const int64_t step = trainer->steps();
    if (progress) progress->Finish("stopped");
    if (w == 0) {
      std::cerr << "cluster: stopped by SIGTERM at step " << step << "; checkpoint " << ck.dir()
                << "/ckpt-" << step << "; continue with --resume " << ck.dir() << "\n";
      ResultLine("train_cluster")
          .Add("model", ModelKindName(job.trainer.model.kind))
          .Add("status", "stopped")
          .Add("step", step)
          .Add("checkpoint", ck.dir() + "/ckpt-" + std::to_string(step))
          .Print();
    }
    if (Status s = (*store)->ShutdownServers(); !s.ok()) cluster->Abort(s);
    return kExitStopped;
  }
  if (progress) progress->Finish("loss=" + Fixed(losses.empty() ? 0.0 : losses.back(), 4));
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
      slowest > 0 ? static_cast<double>(timed_steps) * run.batch * num_workers / slowest : 0;
  const ps::RemoteStoreMetrics m = (*store)->metrics();
  std::cerr << cluster->Describe() << ": steps=" << train_steps << " own_samples_per_s="
            << Fixed(timed > 0 ? static_cast<double>(timed_steps) * run.batch / timed : 0, 1)
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
        .Add("step_ms", Fixed(timed_steps > 0 ? 1000 * timed / timed_steps : 0, 3))
        .Add("allreduce_ms", Fixed(timed_steps > 0 ? 1000 * allreduce_s / timed_steps : 0, 3))
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
  const int code = cluster->role() == Role::kPs ? RunServer(cluster.get(), config, *job, flags)
                                                : RunWorker(cluster.get(), config, *job, flags);
  cluster.reset();  // transport shutdown (collective) and MPI_Finalize
  return code;
}

}  // namespace ips
