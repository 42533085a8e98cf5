// Tests of the distributed layer under mpirun: transport round trips, the remote store against
// the in-process LocalEmbeddingStore on the same key stream (1, 2 and 3 PS; sync and async with
// S = 0 and prefetch; pulls of ~110K keys, sent to each PS in several frames), admission and
// eviction through the remote store, a memory-capped table fed 10x its capacity, bounded staleness
// with two workers, a killed rank ending the job, and a bad layout rejected.
//
// One binary plays two parts. Run by ctest (no --mpi_case), it is a gtest binary whose tests
// launch `mpirun ... <this binary> --mpi_case=<case> ...`, and check the exit code, the time
// taken and the lines the ranks print. Run by mpirun with --mpi_case, it executes that case on
// every rank and exits 0 only if the case's checks held on that rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "common/random.h"
#include "common/timer.h"
#include "launch/cluster_train.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "ps/remote_store.h"
#include "ps/server.h"
#include "ps/transport.h"
#include "tests/ps/cluster_train_case.h"
#include "tests/testing/metrics_lines.h"
#include "tests/testing/mpi_run.h"
#include "tests/testing/tolerance.h"
#include "worker/cluster.h"
#include "worker/collective.h"
#include "worker/metrics.h"
#include "worker/trainer.h"

namespace ips {
namespace {

using ps::Frame;
using ps::Incoming;
using ps::LocalEmbeddingStore;
using ps::RemoteEmbeddingStore;
using ps::RemoteStoreOptions;
using ps::TableOptions;
using ps::Transport;

using testing::CaseArg;
using testing::CaseIntArg;
using testing::Field;
using testing::MpiRun;
using testing::ScratchDir;

// Prints a check failure of this rank and remembers it.
bool g_failed = false;
void Fail(int rank, const std::string& what) {
  std::fprintf(stderr, "CASE FAILED on rank %d: %s\n", rank, what.c_str());
  std::fflush(stderr);
  g_failed = true;
}

// ---- Case: transport round trip ---------------------------------------------------------------

int CaseTransport() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Transport::Options opt;
  auto t = Transport::Create(MPI_COMM_WORLD, opt);
  if (!t.ok()) {
    Fail(rank, t.status().ToString());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  Transport* tr = t->get();
  // Responder: replies to each request with its payload's bytes plus one, and meta reversed;
  // one-way messages are counted.
  const int expected_requests = 2 * (size - 1);
  const int expected_oneway = size - 1;
  std::thread responder([&] {
    int requests = 0, oneway = 0;
    while (requests < expected_requests || oneway < expected_oneway) {
      Incoming in;
      if (!tr->Receive(&in, 20000)) {
        Fail(rank, "responder timed out");
        return;
      }
      if (in.frame.kind() == 99) {
        ++oneway;
        continue;
      }
      std::string meta(in.frame.meta());
      std::reverse(meta.begin(), meta.end());
      Frame reply = Frame::Make(100, meta, in.frame.payload_size());
      for (size_t i = 0; i < in.frame.payload_size(); ++i)
        reply.payload()[i] = static_cast<char>(in.frame.payload()[i] + 1);
      tr->Reply(in.source, in.frame.id(), std::move(reply));
      ++requests;
    }
  });
  // Two requests to every peer: a small one and a 3 MB one (rendezvous protocol), in flight
  // together, plus one one-way message.
  std::vector<std::pair<int, Transport::Ticket>> tickets;
  std::vector<size_t> sizes;
  for (int p = 0; p < size; ++p) {
    if (p == rank) continue;
    for (size_t n : {size_t{13}, size_t{3} << 20}) {
      const std::string meta = "from " + std::to_string(rank) + " to " + std::to_string(p);
      Frame f = Frame::Make(42, meta, n);
      for (size_t i = 0; i < n; ++i) f.payload()[i] = static_cast<char>((i * 7 + rank + p) & 0x7f);
      tickets.emplace_back(p, tr->Request(p, std::move(f)));
      sizes.push_back(n);
    }
    tr->Send(p, Frame::Make(99, "one-way", 0));
  }
  for (size_t k = 0; k < tickets.size(); ++k) {
    const int p = tickets[k].first;
    auto reply = tr->Wait(std::move(tickets[k].second), 20000);
    if (!reply.ok()) {
      Fail(rank, reply.status().ToString());
      continue;
    }
    std::string meta = "from " + std::to_string(rank) + " to " + std::to_string(p);
    std::reverse(meta.begin(), meta.end());
    if (reply->kind() != 100 || reply->meta() != meta || reply->payload_size() != sizes[k]) {
      Fail(rank, "reply header from rank " + std::to_string(p) + " is wrong");
      continue;
    }
    for (size_t i = 0; i < sizes[k]; ++i) {
      const char want = static_cast<char>(((i * 7 + rank + p) & 0x7f) + 1);
      if (reply->payload()[i] != want) {
        Fail(rank, "reply payload byte " + std::to_string(i) + " from rank " + std::to_string(p));
        break;
      }
    }
  }
  responder.join();
  std::printf("TRANSPORT rank=%d sent=%lld received=%lld\n", rank,
              static_cast<long long>(tr->bytes_sent()),
              static_cast<long long>(tr->bytes_received()));
  tr->Shutdown();
  t->reset();
  MPI_Finalize();
  return g_failed ? 1 : 0;
}

// ---- Cases over a cluster: remote store vs local store ----------------------------------------

std::vector<TableOptions> CaseTables() {
  TableOptions item;
  item.name = "item";
  item.dim = 18;
  const std::string opt = CaseArg("optimizer", "adam");
  item.optimizer.type = opt == "sgd"       ? ps::OptimizerOptions::Type::kSgd
                        : opt == "adagrad" ? ps::OptimizerOptions::Type::kAdagrad
                        : opt == "ftrl"    ? ps::OptimizerOptions::Type::kFtrl
                                           : ps::OptimizerOptions::Type::kAdam;
  item.optimizer.learning_rate = 0.05;
  item.initializer.type = ps::InitializerOptions::Type::kNormal;
  item.initializer.stddev = 0.1;
  item.min_count = CaseIntArg("min_count", 0);
  item.ttl_steps = CaseIntArg("ttl", 0);
  item.ttl_sweep_interval = item.ttl_steps > 0 ? 1 : 0;
  item.max_memory_mb = CaseIntArg("max_memory_mb", 0);
  item.num_shards = static_cast<int>(CaseIntArg("shards", 4));
  item.rows_per_slab = 64;
  item.seed = 17;
  item.has_padding_key = true;
  item.padding_key = 0;
  TableOptions cat = item;
  cat.name = "category";
  cat.dim = 8;
  cat.max_memory_mb = 0;
  cat.optimizer.type = ps::OptimizerOptions::Type::kAdagrad;
  return {item, cat};
}

// The keys of (worker, step, table): a skewed stream over `vocab` ids with duplicates and the
// padding key 0, `fresh` > 0 adds that many never-seen-before keys per step.
std::vector<uint64_t> StepKeys(int worker, int64_t step, int table, int64_t n, int64_t vocab,
                               int64_t fresh) {
  Rng rng(Mix64(0xabc + static_cast<uint64_t>(worker) * 1000003 +
                static_cast<uint64_t>(step) * 7919 + static_cast<uint64_t>(table)));
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (auto& k : keys) {
    const double u = rng.Uniform();
    k = static_cast<uint64_t>(static_cast<double>(vocab) * u * u);  // skewed to small ids
  }
  for (int64_t i = 0; i < fresh && i < n; ++i)
    keys[static_cast<size_t>(i)] =
        (uint64_t{1} << 40) + static_cast<uint64_t>(worker) * (uint64_t{1} << 32) +
        static_cast<uint64_t>(step) * static_cast<uint64_t>(fresh) + static_cast<uint64_t>(i);
  return keys;
}

// --distinct=N: the item table's keys of a step are N distinct keys, the same set every step
// (so each step's pull reads the rows the previous push updated) in a per-step order (so the
// parts a large pull is split into hold other keys each step). Mix64 is a bijection with
// Mix64(0) = 0: the set includes the padding key.
std::vector<uint64_t> DistinctKeys(int64_t n, int64_t step) {
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = Mix64(static_cast<uint64_t>(i));
  Rng rng(Mix64(0x5eed + static_cast<uint64_t>(step)));
  for (size_t i = keys.size(); i > 1; --i) std::swap(keys[i - 1], keys[rng.UniformInt(i)]);
  return keys;
}

// Deterministic gradients of pulled rows: a function of the rows and the key.
void Grads(const std::vector<uint64_t>& keys, const std::vector<float>& rows, int64_t dim,
           std::vector<float>* g) {
  g->resize(rows.size());
  for (size_t i = 0; i < keys.size(); ++i)
    for (int64_t j = 0; j < dim; ++j) {
      const size_t x = i * static_cast<size_t>(dim) + static_cast<size_t>(j);
      (*g)[x] = 0.5f * rows[x] + 0.01f * static_cast<float>(((keys[i] + j) % 7)) - 0.03f;
    }
}

std::string StatsLine(const ps::TableStats& s) {
  return "rows=" + std::to_string(s.rows) + " created=" + std::to_string(s.created_rows) +
         " unadmitted=" + std::to_string(s.unadmitted_pulls) +
         " evicted_ttl=" + std::to_string(s.evicted_ttl) +
         " evicted_cap=" + std::to_string(s.evicted_capacity) +
         " dropped=" + std::to_string(s.dropped_push_keys) + " bytes=" + std::to_string(s.bytes) +
         " pulled=" + std::to_string(s.pulled_keys) + " pushed=" + std::to_string(s.pushed_keys) +
         " opt_step=" + std::to_string(s.optimizer_step);
}

int CaseStore(int argc, char** argv) {
  ClusterOptions copt;
  copt.num_ps = static_cast<int>(CaseIntArg("num_ps", 1));
  copt.transport.dead_after_ms = static_cast<int>(CaseIntArg("dead_after_ms", 10000));
  copt.transport.watch_local_pids = CaseIntArg("watch_pids", 1) != 0;
  copt.transport.spin_us = static_cast<int>(CaseIntArg("spin_us", 0));
  auto cluster_or = Cluster::Init(&argc, &argv, copt);
  if (!cluster_or.ok()) {
    int rank = 0;
    if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK")) rank = std::atoi(r);
    // Every rank prints (mpirun kills the rest when the first exits).
    std::fprintf(stderr, "ips: rank %d: %s\n", rank, cluster_or.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<Cluster> cluster = std::move(cluster_or).value();
  if (cluster->rank() == 0) std::printf("LAYOUT %s\n", cluster->layout().Describe().c_str());
  const std::vector<TableOptions> tables = CaseTables();
  const int64_t steps = CaseIntArg("steps", 30);
  const int64_t kill_rank = CaseIntArg("kill_rank", -1), kill_step = CaseIntArg("kill_step", -1);

  if (cluster->role() == Role::kPs) {
    ps::ServerOptions so;
    so.tables = tables;
    so.num_workers = cluster->layout().num_workers;
    so.num_threads = static_cast<int>(CaseIntArg("ps_threads", 1));
    if (kill_rank == cluster->rank()) so.kill_after_pushes = kill_step;
    auto server = ps::ParameterServer::Create(cluster->transport(), so);
    if (!server.ok()) cluster->Abort(server.status());
    Status s = (*server)->Run();
    if (!s.ok()) cluster->Abort(s);
    std::printf("PS %d pulls=%lld pushes=%lld deferred=%lld\n", cluster->role_index(),
                static_cast<long long>((*server)->stats().pulls),
                static_cast<long long>((*server)->stats().pushes),
                static_cast<long long>((*server)->stats().deferred_pulls));
    return 0;
  }

  // Worker.
  const int w = cluster->role_index();
  RemoteStoreOptions ro;
  ro.tables = tables;
  ro.ps_ranks = cluster->layout().PsRanks();
  ro.worker_index = w;
  ro.mode = CaseArg("mode", "sync") == "async" ? RemoteStoreOptions::Mode::kAsync
                                               : RemoteStoreOptions::Mode::kSync;
  ro.staleness = static_cast<int>(CaseIntArg("staleness", 0));
  auto remote_or = RemoteEmbeddingStore::Create(cluster->transport(), ro);
  if (!remote_or.ok()) cluster->Abort(remote_or.status());
  RemoteEmbeddingStore* remote = remote_or->get();
  {
    // Errors are Status values, checked before anything is sent.
    const uint64_t k[2] = {1, 2};
    float buf[2 * 18];
    if (remote->Pull(7, k, 2, 18, buf).code() != StatusCode::kNotFound)
      Fail(cluster->rank(), "Pull of an unknown table is not NOT_FOUND");
    if (remote->Pull(0, k, 2, 8, buf).code() != StatusCode::kInvalidArgument)
      Fail(cluster->rank(), "Pull with a wrong dim is not INVALID_ARGUMENT");
    if (remote->Push(0, k, -1, 18, buf).code() != StatusCode::kInvalidArgument)
      Fail(cluster->rank(), "Push of a negative count is not INVALID_ARGUMENT");
    if (remote->PrefetchPull(99, k, 2).code() != StatusCode::kNotFound)
      Fail(cluster->rank(), "PrefetchPull of an unknown table is not NOT_FOUND");
    if (remote->FindTable("nope").status().code() != StatusCode::kNotFound)
      Fail(cluster->rank(), "FindTable of an unknown name is not NOT_FOUND");
  }
  // The reference: the in-process store, fed the same stream (meaningful with one worker).
  const bool compare = CaseIntArg("compare_local", 1) != 0 && cluster->layout().num_workers == 1;
  std::unique_ptr<LocalEmbeddingStore> local;
  if (compare) {
    auto l = LocalEmbeddingStore::Create(tables);
    if (!l.ok()) cluster->Abort(l.status());
    local = std::move(l).value();
  }
  const bool prefetch = CaseIntArg("prefetch", 0) != 0;
  const int64_t batch = CaseIntArg("batch", 300), vocab = CaseIntArg("vocab", 2000),
                fresh = CaseIntArg("fresh", 0);
  const int64_t sleep_us = CaseIntArg("worker_sleep_us", 0);
  const int64_t distinct = CaseIntArg("distinct", 0);
  auto keys_of = [&](int64_t step, int t) {
    return distinct > 0 && t == 0 ? DistinctKeys(distinct, step)
                                  : StepKeys(w, step, t, batch, vocab, fresh);
  };
  for (int64_t step = 0; step < steps; ++step) {
    if (kill_rank == cluster->rank() && step == kill_step) {
      std::fprintf(stderr, "ips: test: %s kills itself with SIGKILL at step %lld\n",
                   cluster->Describe().c_str(), static_cast<long long>(step));
      std::fflush(stderr);
      std::raise(SIGKILL);
    }
    for (int t = 0; t < static_cast<int>(tables.size()); ++t) {
      const int64_t dim = tables[t].dim;
      const std::vector<uint64_t> keys = keys_of(step, t);
      std::vector<float> got(keys.size() * dim), want(keys.size() * dim);
      testing::Poison(got);
      Status s = remote->Pull(t, keys.data(), static_cast<int64_t>(keys.size()), dim, got.data());
      if (!s.ok()) cluster->Abort(s);
      if (compare) {
        s = local->Pull(t, keys.data(), static_cast<int64_t>(keys.size()), dim, want.data());
        if (!s.ok()) cluster->Abort(s);
        auto same = testing::AllClose(got, want, testing::Tolerance{0, 0});
        if (!same)
          Fail(cluster->rank(), "pull step " + std::to_string(step) + " table " +
                                    std::to_string(t) + ": " + same.message());
      }
      if (sleep_us > 0) {
        // Workers at different speeds: worker w computes (w + 1) x longer, so clocks drift apart.
        std::this_thread::sleep_for(std::chrono::microseconds(sleep_us * (w + 1)));
      }
      if (prefetch && step + 1 < steps) {
        const std::vector<uint64_t> next = keys_of(step + 1, t);
        s = remote->PrefetchPull(t, next.data(), static_cast<int64_t>(next.size()));
        if (!s.ok()) cluster->Abort(s);
      }
      std::vector<float> g;
      Grads(keys, got, dim, &g);
      s = remote->Push(t, keys.data(), static_cast<int64_t>(keys.size()), dim, g.data());
      if (!s.ok()) cluster->Abort(s);
      if (compare) {
        s = local->Push(t, keys.data(), static_cast<int64_t>(keys.size()), dim, g.data());
        if (!s.ok()) cluster->Abort(s);
      }
    }
    Status s = remote->AdvanceStep(step + 1);
    if (!s.ok()) cluster->Abort(s);
    if (compare) (void)local->AdvanceStep(step + 1);
  }
  // Final state: a read-only lookup of probe keys, CRC printed (compared across runs by the
  // gtest side), and the statistics. With --distinct, the item table's probe is every key it
  // pulled (a lookup that large is sent in parts too).
  std::vector<uint64_t> small_probe;
  for (uint64_t k = 0; k < 500; ++k) small_probe.push_back(k);
  const std::vector<uint64_t> distinct_probe =
      distinct > 0 ? DistinctKeys(distinct, 0) : std::vector<uint64_t>{};
  uint32_t crc = 0;
  for (int t = 0; t < static_cast<int>(tables.size()); ++t) {
    const int64_t dim = tables[t].dim;
    const std::vector<uint64_t>& probe = distinct > 0 && t == 0 ? distinct_probe : small_probe;
    std::vector<float> got(probe.size() * dim), want(probe.size() * dim);
    testing::Poison(got);
    Status s = remote->Lookup(t, probe.data(), static_cast<int64_t>(probe.size()), dim, got.data());
    if (!s.ok()) cluster->Abort(s);
    crc = Crc32cExtend(crc, got.data(), got.size() * sizeof(float));
    auto rst = remote->Stats(t);
    if (!rst.ok()) cluster->Abort(rst.status());
    std::printf("STATS worker=%d table=%s %s\n", w, tables[t].name.c_str(),
                StatsLine(*rst).c_str());
    if (tables[t].max_memory_mb > 0) {
      // The cap is per PS: the sum over PS stays under P x cap.
      const int64_t cap = tables[t].max_memory_mb * (int64_t{1} << 20) * cluster->layout().num_ps;
      if (rst->bytes > cap)
        Fail(cluster->rank(), "table " + tables[t].name + " uses " + std::to_string(rst->bytes) +
                                  " bytes > cap " + std::to_string(cap));
      std::printf("MEMCAP table=%s bytes=%lld cap=%lld created=%lld evicted=%lld\n",
                  tables[t].name.c_str(), static_cast<long long>(rst->bytes),
                  static_cast<long long>(cap), static_cast<long long>(rst->created_rows),
                  static_cast<long long>(rst->evicted_capacity));
    }
    if (compare) {
      s = local->Lookup(t, probe.data(), static_cast<int64_t>(probe.size()), dim, want.data());
      if (!s.ok()) cluster->Abort(s);
      auto same = testing::AllClose(got, want, testing::Tolerance{0, 0});
      if (!same)
        Fail(cluster->rank(), "final lookup table " + std::to_string(t) + ": " + same.message());
      auto lst = local->Stats(t);
      if (tables[t].max_memory_mb == 0 &&
          (lst->rows != rst->rows || lst->created_rows != rst->created_rows ||
           lst->unadmitted_pulls != rst->unadmitted_pulls || lst->evicted_ttl != rst->evicted_ttl ||
           lst->dropped_push_keys != rst->dropped_push_keys ||
           lst->pulled_keys != rst->pulled_keys || lst->pushed_keys != rst->pushed_keys))
        Fail(cluster->rank(),
             "stats differ: remote " + StatsLine(*rst) + " local " + StatsLine(*lst));
    }
  }
  const ps::RemoteStoreMetrics m = remote->metrics();
  std::printf(
      "WORKER %d probe_crc=%08x staleness_max=%lld staleness_mean=%.3f pulls=%lld "
      "prefetch_hits=%lld pull_p50_us=%.0f pull_p99_us=%.0f push_p50_us=%.0f "
      "push_p99_us=%.0f bytes_sent=%lld bytes_received=%lld\n",
      w, crc, static_cast<long long>(m.staleness_max), m.staleness_mean,
      static_cast<long long>(m.pulls), static_cast<long long>(m.prefetch_hits), m.pull_p50_us,
      m.pull_p99_us, m.push_p50_us, m.push_p99_us, static_cast<long long>(m.bytes_sent),
      static_cast<long long>(m.bytes_received));
  if (ro.mode == RemoteStoreOptions::Mode::kAsync && m.staleness_max > ro.staleness)
    Fail(cluster->rank(), "measured staleness " + std::to_string(m.staleness_max) +
                              " exceeds the bound " + std::to_string(ro.staleness));
  Status s = remote->ShutdownServers();
  if (!s.ok()) cluster->Abort(s);
  std::fflush(stdout);
  if (g_failed) cluster->Abort(InternalError("checks failed (see above)"));
  return 0;
}

// ---- Case: the trainer's next-batch prefetch over parameter servers --------------------------

// The worker loop of launch/cluster_train.cc (worker w trains batches w, w + W, ...; the dense
// gradients are averaged by the workers' Collective; replicas start from worker 0's weights),
// reduced to what the prefetch tests read, with Trainer::Step(batch, &next) when --prefetch=1
// (--next_offset=2: a wrong next, the batch after it). Worker 0 prints every loss
// (LOSS step=<i> loss=<%.17g>) and one line PREFETCH worker=0 steps=.. pulls=.. prefetch_hits=..
// auc=.. samples_per_s=.. staleness_max=.. step_ms=.. pull_p50_us=.. pull_p99_us=.. (times of the
// steps after warmup; pull latency: the store's whole Pull calls, a prefetched one included);
// the AUC is over --eval_batches held-out batches of the stream after every worker's training
// batches. Also the measurement of the prefetch's effect: run it with --prefetch=0 and 1.
int CaseTrainerPrefetch(int argc, char** argv) {
  auto cfg = LoadConfig(CaseArg("config", ""), {});
  if (!cfg.ok()) {
    std::fprintf(stderr, "CASE FAILED: %s\n", cfg.status().ToString().c_str());
    return 1;
  }
  auto job_or = TrainJobFromConfig(*cfg);
  if (!job_or.ok()) {
    std::fprintf(stderr, "CASE FAILED: %s\n", job_or.status().ToString().c_str());
    return 1;
  }
  TrainJob job = std::move(job_or).value();
  ClusterOptions copt;
  copt.num_ps = cfg->cluster().num_ps();
  auto cluster_or = Cluster::Init(&argc, &argv, copt);
  if (!cluster_or.ok()) {
    std::fprintf(stderr, "CASE FAILED: %s\n", cluster_or.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<Cluster> cluster = std::move(cluster_or).value();
  const int num_workers = cluster->layout().num_workers;
  if (cluster->role() == Role::kPs) {
    ps::ServerOptions so;
    so.tables = job.tables;
    so.num_workers = num_workers;
    auto server = ps::ParameterServer::Create(cluster->transport(), so);
    if (!server.ok()) cluster->Abort(server.status());
    if (Status s = (*server)->Run(); !s.ok()) cluster->Abort(s);
    // Pulls held until the pushes they wait for were applied: a prefetch of the next step.
    std::printf("PREFETCH_PS %d pulls=%lld deferred=%lld\n", cluster->role_index(),
                static_cast<long long>((*server)->stats().pulls),
                static_cast<long long>((*server)->stats().deferred_pulls));
    std::fflush(stdout);
    return 0;
  }
  const int w = cluster->role_index();
  Collective* coll = cluster->collective();
  RemoteStoreOptions ro;
  ro.tables = job.tables;
  ro.ps_ranks = cluster->layout().PsRanks();
  ro.worker_index = w;
  ro.mode = cfg->cluster().sync() == config::ClusterConfig::ASYNC ? RemoteStoreOptions::Mode::kAsync
                                                                  : RemoteStoreOptions::Mode::kSync;
  ro.staleness = cfg->cluster().staleness();
  auto store = RemoteEmbeddingStore::Create(cluster->transport(), ro);
  if (!store.ok()) cluster->Abort(store.status());
  job.trainer.dense_grad_allreduce = [coll](float* g, int64_t n) {
    return coll->AllReduceMean(g, n);
  };
  auto trainer_or = Trainer::Create(job.trainer, store->get());
  if (!trainer_or.ok()) cluster->Abort(trainer_or.status());
  Trainer* trainer = trainer_or->get();
  auto& params = trainer->model().params();
  if (Status s = coll->Broadcast(params.values(), params.size() * int64_t{sizeof(float)}, 0);
      !s.ok())
    cluster->Abort(s);
  auto gen = SyntheticBatches::Create(job.run.data);
  if (!gen.ok()) cluster->Abort(gen.status());
  const int train_steps = job.run.warmup_steps + job.run.steps;
  std::vector<CtrBatch> batches(static_cast<size_t>(train_steps));
  for (int i = 0; i < train_steps; ++i) {
    const uint64_t index = static_cast<uint64_t>(i) * num_workers + static_cast<uint64_t>(w);
    if (Status s = (*gen)->CtrBatchAt(index, job.run.batch, &batches[i]); !s.ok())
      cluster->Abort(s);
  }
  const bool prefetch = CaseIntArg("prefetch", 1) != 0;
  // --next_offset=2 hands Step the batch after next: a wrong `next` that no Pull consumes.
  const int next_offset = CaseIntArg("next_offset", 1);
  double timed = 0;
  Timer timer;
  for (int i = 0; i < train_steps; ++i) {
    timer.Reset();
    const bool has_next = prefetch && i + next_offset < train_steps;
    CtrBatchView next;
    if (has_next) next = ViewOf(batches[i + next_offset]);
    auto loss = trainer->Step(ViewOf(batches[i]), has_next ? &next : nullptr);
    if (i >= job.run.warmup_steps) timed += timer.Seconds();
    if (!loss.ok()) cluster->Abort(loss.status());
    if (w == 0) std::printf("LOSS step=%d loss=%.17g\n", i, *loss);
  }
  if (Status s = CheckReplicasEqual(coll, params.values(), params.size(), train_steps); !s.ok())
    cluster->Abort(s);
  const ps::RemoteStoreMetrics m = (*store)->metrics();
  if (Status s = (*store)->Finish(); !s.ok()) cluster->Abort(s);
  if (w == 0) {
    BinaryMetrics bm;
    std::vector<float> probs(static_cast<size_t>(job.run.batch));
    for (int e = 0; e < CaseIntArg("eval_batches", 2); ++e) {
      CtrBatch b;
      const uint64_t index = static_cast<uint64_t>(train_steps) * num_workers + e;
      if (Status s = (*gen)->CtrBatchAt(index, job.run.batch, &b); !s.ok()) cluster->Abort(s);
      if (Status s = trainer->Predict(ViewOf(b), probs.data()); !s.ok()) cluster->Abort(s);
      if (Status s = bm.Add(probs.data(), b.label.data(), nullptr, b.batch); !s.ok())
        cluster->Abort(s);
    }
    std::printf(
        "PREFETCH worker=0 steps=%d pulls=%lld prefetch_hits=%lld auc=%.4f samples_per_s=%.1f "
        "staleness_max=%lld step_ms=%.3f pull_p50_us=%.1f pull_p99_us=%.1f\n",
        train_steps, static_cast<long long>(m.pulls), static_cast<long long>(m.prefetch_hits),
        bm.Compute().auc, timed > 0 ? job.run.steps * job.run.batch * num_workers / timed : 0.0,
        static_cast<long long>(m.staleness_max),
        job.run.steps > 0 ? timed * 1e3 / job.run.steps : 0.0, m.pull_p50_us, m.pull_p99_us);
    std::fflush(stdout);
  }
  if (Status s = (*store)->ShutdownServers(); !s.ok()) cluster->Abort(s);
  return 0;
}

// ---- The gtest side: launching mpirun ---------------------------------------------------------

// Every launch here may take 90 s (the store cases run up to 110 steps on 4 ranks).
MpiRun RunMpi(int np, const std::string& args, int timeout_s = 90,
              const std::string& mpirun_flags = "") {
  return testing::RunMpiSelf(np, args, timeout_s, mpirun_flags);
}

TEST(ClusterLayout, RolesAndBadLayouts) {
  auto l = MakeClusterLayout(5, 2);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->num_workers, 3);
  EXPECT_EQ(l->RoleName(1), "ps 1");
  EXPECT_EQ(l->RoleName(2), "worker 0");
  EXPECT_EQ(l->PsRanks(), (std::vector<int>{0, 1}));
  EXPECT_EQ(l->WorkerRanks(), (std::vector<int>{2, 3, 4}));
  for (auto [world, ps] : {std::pair{2, 2}, {3, 5}, {4, 0}, {1, 1}}) {
    auto bad = MakeClusterLayout(world, ps);
    ASSERT_FALSE(bad.ok()) << world << " ranks, " << ps << " PS";
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("num_ps"), std::string::npos);
  }
}

TEST(TransportSpinUs, ConfiguredOrOnlyWhereCoresAreToSpare) {
  EXPECT_EQ(TransportSpinUs(0), 0);
  EXPECT_EQ(TransportSpinUs(250), 250);
  struct SavedEnv {
    const char* name;
    std::string value;
    bool set;
    explicit SavedEnv(const char* n) : name(n), set(std::getenv(n) != nullptr) {
      if (set) value = std::getenv(n);
    }
    ~SavedEnv() {
      if (set) {
        setenv(name, value.c_str(), 1);
      } else {
        unsetenv(name);
      }
    }
  } local("OMPI_COMM_WORLD_LOCAL_SIZE"), world("OMPI_COMM_WORLD_SIZE");
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  // More ranks on this host than cores: never (the local size wins over the world's).
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(cores + 1).c_str(), 1);
  setenv("OMPI_COMM_WORLD_SIZE", "1", 1);
  EXPECT_EQ(TransportSpinUs(-1), 0);
  // One rank on this host: only with kCoresPerSpinningRank cores.
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1", 1);
  EXPECT_EQ(TransportSpinUs(-1), cores >= kCoresPerSpinningRank ? kAutoSpinUs : 0);
  // No local size: the whole world is on this host.
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  setenv("OMPI_COMM_WORLD_SIZE", std::to_string(cores).c_str(), 1);
  EXPECT_EQ(TransportSpinUs(-1), 0);
}

TEST(PsOfKey, SpreadsKeysEvenly) {
  for (int p : {1, 2, 3, 5}) {
    std::vector<int> count(p, 0);
    for (uint64_t k = 0; k < 30000; ++k) {
      const int o = ps::PsOfKey(k, p);
      ASSERT_GE(o, 0);
      ASSERT_LT(o, p);
      ++count[o];
    }
    for (int c : count) EXPECT_NEAR(c, 30000.0 / p, 30000.0 / p * 0.05) << p << " PS";
  }
}

TEST(MpiTransport, RoundTrip_3Ranks_SmallAndLargeFrames) {
  MpiRun r = RunMpi(3, "--mpi_case=transport");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("CASE FAILED"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("TRANSPORT rank=2"), std::string::npos) << r.output;
}

// 1 worker: the remote store reads exactly what the in-process store reads, step after step,
// and the final rows are identical whatever the number of PS.
TEST(MpiRemoteStore, EqualsLocalStore_1_2_3Ps_Sync) {
  std::string crc;
  for (int ps : {1, 2, 3}) {
    MpiRun r = RunMpi(ps + 1, "--mpi_case=store --num_ps=" + std::to_string(ps));
    ASSERT_EQ(r.exit_code, 0) << ps << " PS:\n" << r.output;
    const std::string c = Field(r.output, "WORKER 0", "probe_crc");
    ASSERT_FALSE(c.empty()) << r.output;
    if (crc.empty()) crc = c;
    EXPECT_EQ(c, crc) << ps << " PS give other rows than 1 PS";
  }
}

// Waiting threads that poll before they sleep (Transport::Options::spin_us, what hosts with
// cores to spare get) read the same rows; each step's rows are checked against the in-process
// store on the worker.
TEST(MpiRemoteStore, EqualsLocalStore_SpinningWaits_2Ps) {
  MpiRun plain = RunMpi(3, "--mpi_case=store --num_ps=2");
  MpiRun spinning = RunMpi(3, "--mpi_case=store --num_ps=2 --spin_us=200 --prefetch=1");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(spinning.exit_code, 0) << spinning.output;
  EXPECT_EQ(spinning.output.find("CASE FAILED"), std::string::npos) << spinning.output;
  const std::string crc = Field(plain.output, "WORKER 0", "probe_crc");
  ASSERT_FALSE(crc.empty()) << plain.output;
  EXPECT_EQ(Field(spinning.output, "WORKER 0", "probe_crc"), crc) << spinning.output;
}

// Sync mode with the next step's keys prefetched before each push: every pull, prefetched or
// not, reads exactly what the in-process store reads (checked step by step on the worker), so
// the PS holds a prefetch until this worker's push of the step is applied.
TEST(MpiRemoteStore, EqualsLocalStore_SyncWithPrefetch_1_2Ps) {
  for (int ps : {1, 2}) {
    MpiRun r = RunMpi(ps + 1, "--mpi_case=store --prefetch=1 --num_ps=" + std::to_string(ps));
    ASSERT_EQ(r.exit_code, 0) << ps << " PS:\n" << r.output;
    EXPECT_EQ(r.output.find("CASE FAILED"), std::string::npos) << r.output;
    // 30 steps x 2 tables, all but the first step's pulls served from the prefetch.
    EXPECT_EQ(Field(r.output, "WORKER 0", "prefetch_hits"), "58") << r.output;
    EXPECT_NE(Field(r.output, "PS 0", "deferred"), "0") << "no prefetch was held\n" << r.output;
  }
}

TEST(MpiRemoteStore, AsyncStaleness0WithPrefetchEqualsSync_2Ps) {
  MpiRun sync = RunMpi(3, "--mpi_case=store --num_ps=2");
  MpiRun async = RunMpi(3, "--mpi_case=store --num_ps=2 --mode=async --staleness=0 --prefetch=1");
  ASSERT_EQ(sync.exit_code, 0) << sync.output;
  ASSERT_EQ(async.exit_code, 0) << async.output;
  const std::string a = Field(async.output, "WORKER 0", "probe_crc");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, Field(sync.output, "WORKER 0", "probe_crc"));
  EXPECT_EQ(Field(async.output, "WORKER 0", "staleness_max"), "0");
  EXPECT_NE(Field(async.output, "WORKER 0", "prefetch_hits"), "0") << async.output;
}

// Two workers at different speeds, async with S = 2 and prefetch: the measured staleness never
// exceeds the bound (checked on each worker), and some pull saw a non-zero staleness.
TEST(MpiRemoteStore, AsyncBoundedStaleness2_2Workers) {
  MpiRun r = RunMpi(3,
                    "--mpi_case=store --num_ps=1 --mode=async --staleness=2 --prefetch=1 "
                    "--worker_sleep_us=3000 --steps=40");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string s0 = Field(r.output, "WORKER 0", "staleness_max");
  const std::string s1 = Field(r.output, "WORKER 1", "staleness_max");
  ASSERT_FALSE(s0.empty());
  ASSERT_FALSE(s1.empty());
  EXPECT_LE(std::stoi(s0), 2);
  EXPECT_LE(std::stoi(s1), 2);
  EXPECT_GT(std::max(std::stoi(s0), std::stoi(s1)), 0) << "no staleness at all: test is vacuous\n"
                                                       << r.output;
  std::printf("measured staleness: worker 0 max %s mean %s, worker 1 max %s mean %s\n", s0.c_str(),
              Field(r.output, "WORKER 0", "staleness_mean").c_str(), s1.c_str(),
              Field(r.output, "WORKER 1", "staleness_mean").c_str());
}

// Admission (min_count 3) and TTL eviction (ttl 3 steps) through the remote store: rows and
// statistics equal the in-process store's (checked on the worker), and both mechanisms fired.
TEST(MpiRemoteStore, AdmissionAndTtlEvictionMatchLocal_2Ps) {
  MpiRun r = RunMpi(3,
                    "--mpi_case=store --num_ps=2 --min_count=3 --ttl=3 --fresh=40 "
                    "--vocab=5000 --steps=20");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string unadmitted = Field(r.output, "STATS worker=0 table=item", "unadmitted");
  const std::string evicted = Field(r.output, "STATS worker=0 table=item", "evicted_ttl");
  ASSERT_FALSE(unadmitted.empty()) << r.output;
  EXPECT_GT(std::stoll(unadmitted), 0) << r.output;
  EXPECT_GT(std::stoll(evicted), 0) << r.output;
}

// A table capped at 1 MB per PS (2 PS), fed more than 10x the distinct keys the cap holds
// (Adam, dim 18: ~4.2K rows per PS fit; 110 steps x 1000 fresh keys).
TEST(MpiRemoteStore, MemoryCapHeldUnder10xKeys_2Ps) {
  MpiRun r = RunMpi(3,
                    "--mpi_case=store --num_ps=2 --max_memory_mb=1 --fresh=1000 "
                    "--batch=1200 --steps=110 --compare_local=0 --shards=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string bytes = Field(r.output, "MEMCAP", "bytes");
  const std::string created = Field(r.output, "MEMCAP", "created");
  ASSERT_FALSE(bytes.empty()) << r.output;
  EXPECT_LE(std::stoll(bytes), 2LL << 20);
  // 10x: the keys that got a row exceed 10x the rows the cap holds at once.
  const std::string rows = Field(r.output, "STATS worker=0 table=item", "rows");
  ASSERT_FALSE(rows.empty()) << r.output;
  EXPECT_GT(std::stoll(rows), 0);
  EXPECT_GE(std::stoll(created), 10 * std::stoll(rows)) << r.output;
  std::printf("memory cap: %s bytes <= %d, %s rows live, %s created\n", bytes.c_str(), 2 << 20,
              rows.c_str(), created.c_str());
}

// ---- Large pulls, sent to each PS in parts ------------------------------------------------------

// The multi-part pull path of ps/remote_store.cc: a PS's share of a pull is sent as
// max(1, min(4, share / 16384)) frames. kLargePullKeys distinct keys give every PS of 1 or 3 at
// least 2 x 16384 of them, so every pull of the item table is split (4 parts on 1 PS, 2 on each
// of 3 PS).
constexpr int64_t kLargePullKeys = 110000;
constexpr int64_t kLargePullSteps = 3;
constexpr int64_t kPartKeys = 16384;  // ps/remote_store.cc's kMinPullPartKeys

// The pull frames each of `num_ps` PS must receive from a --distinct=kLargePullKeys
// --steps=kLargePullSteps --prefetch=1 store case, every prefetch consumed: each step's keys of
// each table are sent once (step 0 by its Pull, later steps by the previous step's PrefetchPull).
std::vector<int64_t> LargePullFrames(int num_ps) {
  std::vector<int64_t> frames(num_ps, 0);
  for (int64_t step = 0; step < kLargePullSteps; ++step) {
    for (int t = 0; t < 2; ++t) {
      std::vector<int64_t> share(num_ps, 0);
      const std::vector<uint64_t> keys =
          t == 0 ? DistinctKeys(kLargePullKeys, step) : StepKeys(0, step, t, 300, 2000, 0);
      for (uint64_t k : keys) ++share[ps::PsOfKey(k, num_ps)];
      for (int p = 0; p < num_ps; ++p) {
        if (t == 0) {
          EXPECT_GE(share[p], 2 * kPartKeys)
              << "PS " << p << " of " << num_ps << " would get a single-part pull: test is vacuous";
        }
        if (share[p] > 0)
          frames[p] += std::max<int64_t>(1, std::min<int64_t>(4, share[p] / kPartKeys));
      }
    }
  }
  return frames;
}

// Checks a --distinct large-pull run on `num_ps` PS: the case's own checks held (every pull,
// prefetched or not, and the final lookup of every key bitwise equal to the in-process store's),
// every pull after the first step was served from the prefetch, and each PS got the pull frames
// of the split.
void ExpectLargePullRun(const MpiRun& r, int num_ps) {
  ASSERT_EQ(r.exit_code, 0) << num_ps << " PS:\n" << r.output;
  EXPECT_EQ(r.output.find("CASE FAILED"), std::string::npos) << r.output;
  EXPECT_EQ(Field(r.output, "WORKER 0", "pulls"), std::to_string(2 * kLargePullSteps)) << r.output;
  EXPECT_EQ(Field(r.output, "WORKER 0", "prefetch_hits"), std::to_string(2 * (kLargePullSteps - 1)))
      << r.output;
  const std::vector<int64_t> frames = LargePullFrames(num_ps);
  for (int p = 0; p < num_ps; ++p)
    EXPECT_EQ(Field(r.output, "PS " + std::to_string(p), "pulls"), std::to_string(frames[p]))
        << "PS " << p << " of " << num_ps << "\n"
        << r.output;
  // Every step's gradients of every key reached the PS (the padding key's may be dropped).
  const std::string pushed = Field(r.output, "STATS worker=0 table=item", "pushed");
  ASSERT_FALSE(pushed.empty()) << r.output;
  EXPECT_GE(std::stoll(pushed), (kLargePullKeys - 1) * kLargePullSteps) << r.output;
}

// 1 worker, sync, 1 and 3 PS: ~110K distinct keys of dim 18 pulled, pushed and pulled again (3
// steps), the next step's keys prefetched between each pull and push; every pull and the final
// lookup of all keys equal the in-process store's bit for bit (checked on the worker).
TEST(MpiRemoteStore, LargePullInPartsEqualsLocalStore_1_3Ps_SyncWithPrefetch) {
  for (int ps : {1, 3}) {
    MpiRun r = RunMpi(ps + 1, "--mpi_case=store --num_ps=" + std::to_string(ps) +
                                  " --prefetch=1 --distinct=" + std::to_string(kLargePullKeys) +
                                  " --steps=" + std::to_string(kLargePullSteps));
    ExpectLargePullRun(r, ps);
    std::printf("%d PS: %.1f s\n", ps, r.seconds);
  }
}

// The same in async mode with S = 0 (3 PS): each part meets the bound on its own and a
// prefetch is held until the step's push is applied, so it still reads what sync reads.
TEST(MpiRemoteStore, LargePullInPartsAsyncStaleness0EqualsLocalStore_3Ps) {
  MpiRun r =
      RunMpi(4,
             "--mpi_case=store --num_ps=3 --mode=async --staleness=0 --prefetch=1 "
             "--distinct=" +
                 std::to_string(kLargePullKeys) + " --steps=" + std::to_string(kLargePullSteps));
  ExpectLargePullRun(r, 3);
  EXPECT_EQ(Field(r.output, "WORKER 0", "staleness_max"), "0") << r.output;
}

TEST(MpiCluster, BadLayoutRejectedBeforeTraining) {
  MpiRun r = RunMpi(2, "--mpi_case=store --num_ps=2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("leaves no worker"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("WORKER"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 30);
}

// A worker killed mid-training: the job ends within 30 s with a message naming it and its role.
TEST(MpiCluster, KilledWorkerEndsJobWithRankAndRole) {
  MpiRun r = RunMpi(4, "--mpi_case=store --num_ps=1 --steps=100000 --kill_rank=3 --kill_step=5");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.seconds, 30) << r.output;
  EXPECT_NE(r.output.find("rank 3 (worker 2) died"), std::string::npos) << r.output;
  std::printf("job ended %.1f s after start\n", r.seconds);
}

// A PS killed, detected by heartbeats only (no local pid watch; mpirun told to keep the job
// running, as on hosts where it would not notice): still ends within 30 s naming the PS.
TEST(MpiCluster, KilledPsDetectedByHeartbeats) {
  MpiRun r = RunMpi(3,
                    "--mpi_case=store --num_ps=1 --steps=100000 --kill_rank=0 --kill_step=20 "
                    "--watch_pids=0 --dead_after_ms=5000",
                    90, "--enable-recovery");
  // (mpirun --enable-recovery exits 0 after an MPI_Abort: the exit code is not checked here.)
  EXPECT_LT(r.seconds, 30) << r.output;
  EXPECT_NE(r.output.find("rank 0 (ps 0) sent nothing"), std::string::npos) << r.output;
}

// The small job (14 steps of batch 32) on `num_ps` servers.
std::string TrainConfigText(int num_ps, const std::string& sync) {
  testing::SyntheticDinJob job;
  job.num_ps = num_ps;
  job.sync = sync;
  return job.Text();
}

// The reference: 1 worker + 1 or 2 PS in sync mode gives the same loss sequence as
// single-process training (same batches, same rows, all-reduce of one replica = identity).
TEST(MpiTrain, OneWorkerSyncEqualsSingleProcessLosses_1And2Ps) {
  auto cfg = ParseConfigText(TrainConfigText(1, "SYNC"), "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_TRUE(job.ok()) << job.status();
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_TRUE(store.ok());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  job->run.eval_batches = 0;
  auto single = RunSyntheticTraining(trainer->get(), job->run, RunSinks{});
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_EQ(single->losses.size(), 14u);
  for (int ps : {1, 2}) {
    ScratchDir dir("train" + std::to_string(ps));
    const std::string config_path = dir.Write("train.pbtxt", TrainConfigText(ps, "SYNC"));
    const std::string metrics_path = dir / "metrics.jsonl";
    MpiRun r = RunMpi(
        ps + 1, "--mpi_case=train --config=" + config_path + " --metrics_out=" + metrics_path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("RESULT train_cluster"), std::string::npos) << r.output;
    std::vector<double> got;
    for (const auto& [step, loss] : testing::LossesOf(metrics_path)) got.push_back(loss);
    EXPECT_TRUE(testing::AllClose(got, single->losses, testing::Tolerance{0, 0})) << ps << " PS\n"
                                                                                  << r.output;
  }
}

// --metrics_out of a synthetic cluster run (1 worker + 1 PS, sync: single-process training's
// steps, losses and held-out batches) has single-process training's lines under the same names:
// train lines at the same steps with the same losses and timed steps (and worker 0's rank and PS
// traffic), the held-out "eval" line, then a "result" line that names the model (QA: it had no
// "model"; the train lines neither, and there was no eval line). Every line parses and begins
// with "phase" and "model".
TEST(MpiTrain, OneWorkerMetricsLinesAreSingleProcessOnes) {
  testing::SyntheticDinJob sj;
  sj.log_every_steps = 5;  // 14 steps: lines at 5, 10 and the last
  auto cfg = ParseConfigText(sj.Text(), "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_TRUE(job.ok()) << job.status();
  job->run.eval_batches = 2;  // the train case's
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_TRUE(store.ok());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::ostringstream single_text;
  RunSinks sinks;
  sinks.metrics_out = &single_text;
  ASSERT_TRUE(RunSyntheticTraining(trainer->get(), job->run, sinks).ok());
  auto single = ParseMetricsLines(single_text.str());
  ASSERT_TRUE(single.ok()) << single.status();

  ScratchDir dir("metrics_lines");
  const std::string metrics_path = dir / "metrics.jsonl";
  MpiRun r = RunMpi(2, "--mpi_case=train --config=" + dir.Write("m.pbtxt", sj.Text()) +
                           " --metrics_out=" + metrics_path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string text = testing::ReadFile(metrics_path);
  auto cluster = ParseMetricsLines(text);
  ASSERT_TRUE(cluster.ok()) << cluster.status() << "\n" << text;
  auto phases = [](const std::vector<ParsedMetricsLine>& lines) {
    std::string s;
    for (const ParsedMetricsLine& l : lines) s += l.Get("phase") + l.Get("step") + " ";
    return s;
  };
  ASSERT_EQ(phases(*single), "train5 train10 train14 eval14 ") << single_text.str();
  ASSERT_EQ(phases(*cluster), "train5 train10 train14 eval14 result ") << text;
  for (size_t i = 0; i < 4; ++i) {
    const ParsedMetricsLine &c = (*cluster)[i], &s = (*single)[i];
    for (const auto& [key, value] : s.members) {
      if (key == "samples_per_s" || key == "elapsed_s") {
        EXPECT_TRUE(c.Has(key)) << key << " in " << text;
      } else {
        EXPECT_EQ(c.Get(key), value) << key << "\n" << text << "\n" << single_text.str();
      }
    }
  }
  for (const char* key : {"role", "rank", "pull_p50_us", "push_p99_us", "bytes_sent"})
    EXPECT_TRUE((*cluster)[2].Has(key)) << key << " in " << text;
  EXPECT_EQ((*cluster)[2].Get("rank"), "1");  // rank 0 is the server
  const ParsedMetricsLine& result = cluster->back();
  EXPECT_EQ(result.Get("model"), "din") << text;
  for (const auto& [key, want] : std::vector<std::pair<std::string, std::string>>{
           {"workers", "1"}, {"ps", "1"}, {"steps", "12"}, {"batch", "32"}})
    EXPECT_EQ(result.Get(key), want) << key << " in " << text;
  for (const char* key : {"samples_per_s", "loss", "auc", "staleness_max"})
    EXPECT_TRUE(result.Has(key)) << key << " in " << text;
  EXPECT_NEAR(std::stod(result.Get("auc")), std::stod((*single)[3].Get("auc")), 1e-6) << text;
}

// 2 PS + 2 workers, sync: trains, replicas pass the periodic checksum (the job would abort on
// a mismatch), worker 0 prints the RESULT line.
TEST(MpiTrain, TwoPsTwoWorkersSyncReplicasStayEqual) {
  ScratchDir dir("two_ps");
  MpiRun r = RunMpi(
      4, "--mpi_case=train --config=" + dir.Write("train2.pbtxt", TrainConfigText(2, "SYNC")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("RESULT train_cluster model=din workers=2 ps=2"), std::string::npos)
      << r.output;
}

// 2 workers, sync, admission (min_count 2): the workers' pulls of a step reach the servers in
// any order, yet which keys they admit, and so every loss, is the same run to run (windowed
// admission, ps/dynamic_table.h). Without it, 3 runs on ML-100K gave 3 different loglosses.
TEST(MpiTrain, TwoWorkersSyncWithAdmissionIsDeterministic_2Ps) {
  testing::SyntheticDinJob job;
  job.num_ps = 2;
  job.steps = 30;
  std::string text = job.Text();
  const std::string item = "tables { name: \"item\" dim: 8 }";
  ASSERT_NE(text.find(item), std::string::npos);
  text.replace(text.find(item), item.size(), "tables { name: \"item\" dim: 8 min_count: 2 }");
  std::vector<double> losses[3];
  for (int run = 0; run < 3; ++run) {
    ScratchDir dir("admission" + std::to_string(run));
    const std::string metrics_path = dir / "metrics.jsonl";
    MpiRun r = RunMpi(4, "--mpi_case=train --config=" + dir.Write("adm.pbtxt", text) +
                             " --metrics_out=" + metrics_path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (const auto& [step, loss] : testing::LossesOf(metrics_path)) losses[run].push_back(loss);
    ASSERT_EQ(losses[run].size(), 32u) << r.output;
    if (run > 0) {
      EXPECT_TRUE(testing::AllClose(losses[run], losses[0], testing::Tolerance{0, 0}))
          << "run " << run;
    }
  }
}

// The hybrid-synchronisation check: 2 workers, async with S = 4 reach a held-out AUC
// within 0.005 of sync on synthetic data (DIN at its paper sizes, batch 256, 120 steps).
TEST(MpiTrain, AsyncStaleness4AucWithin0005OfSync_2Workers) {
  auto config = [](const std::string& sync) {
    testing::SyntheticDinJob job;
    job.name = "mpi_auc";
    job.batch = 256;
    job.max_history = 20;
    job.num_items = 100000;
    job.num_categories = 100;
    job.warmup_steps = 5;
    job.steps = 120;
    job.dim = 18;
    job.attention_hidden = "[80, 40]";
    job.mlp_hidden = "[200, 80]";
    job.learning_rate = "0.001";
    job.log_every_steps = 50;
    job.sync = sync;
    return job.Text();
  };
  double auc[2];
  int k = 0;
  for (const std::string sync : {"SYNC", "ASYNC staleness: 4"}) {
    ScratchDir dir("auc");
    MpiRun r = RunMpi(3, "--mpi_case=train --config=" + dir.Write("auc.pbtxt", config(sync)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string a = Field(r.output, "RESULT train_cluster", "auc");
    ASSERT_FALSE(a.empty()) << r.output;
    auc[k++] = std::stod(a);
    std::printf("%s: auc %s staleness_max %s samples_per_s %s\n", sync.c_str(), a.c_str(),
                Field(r.output, "RESULT train_cluster", "staleness_max").c_str(),
                Field(r.output, "RESULT train_cluster", "samples_per_s").c_str());
  }
  EXPECT_GT(auc[0], 0.8) << "sync did not learn: the comparison would be vacuous";
  EXPECT_NEAR(auc[1], auc[0], 0.005);
}

// ---- The trainer's next-batch prefetch (Trainer::Step(batch, &next)) ---------------------------

// Runs the trainer_prefetch case on `np` ranks with `config_text` (and `extra_args`); returns the
// run and worker 0's losses.
MpiRun RunTrainerPrefetch(int np, const std::string& config_text, bool prefetch,
                          std::vector<double>* losses, const std::string& extra_args = "",
                          int timeout_s = 90) {
  ScratchDir dir("prefetch");
  MpiRun r =
      RunMpi(np,
             "--mpi_case=trainer_prefetch --config=" + dir.Write("prefetch.pbtxt", config_text) +
                 " --prefetch=" + (prefetch ? "1" : "0") + " " + extra_args,
             timeout_s);
  losses->clear();
  size_t pos = 0;
  while ((pos = r.output.find("LOSS step=", pos)) != std::string::npos) {
    const size_t k = r.output.find(" loss=", pos);
    if (k == std::string::npos) break;
    losses->push_back(std::strtod(r.output.c_str() + k + 6, nullptr));
    pos = k;
  }
  return r;
}

// The single-process losses of TrainConfigText's job (the reference of the 1-worker sync runs).
std::vector<double> SingleProcessLosses() {
  auto cfg = ParseConfigText(TrainConfigText(1, "SYNC"), "test");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  if (!cfg.ok()) return {};
  auto job = TrainJobFromConfig(*cfg);
  EXPECT_TRUE(job.ok()) << job.status();
  if (!job.ok()) return {};
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  EXPECT_TRUE(store.ok());
  if (!store.ok()) return {};
  auto trainer = Trainer::Create(job->trainer, store->get());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return {};
  job->run.eval_batches = 0;
  auto single = RunSyntheticTraining(trainer->get(), job->run, RunSinks{});
  EXPECT_TRUE(single.ok()) << single.status();
  return single.ok() ? single->losses : std::vector<double>{};
}

// The claim: with the prefetch, 1 worker + 1 or 2 PS in sync mode still give EXACTLY the
// single-process loss sequence, and the same as without the prefetch (a prefetched pull is held
// by the PS until this step's push is applied, so it reads what a fresh pull would), and every
// step after the first is served from the prefetch: prefetch_hits = 2 tables x (steps - 1), each
// of them held by every PS (its frame arrives before the push it waits for).
TEST(MpiTrainPrefetch, OneWorkerSyncEqualsSingleProcessLossesAndEveryPullIsPrefetched_1And2Ps) {
  const std::vector<double> single = SingleProcessLosses();
  const size_t steps = single.size();
  ASSERT_EQ(steps, 14u);
  for (int ps : {1, 2}) {
    std::vector<double> got;
    MpiRun r = RunTrainerPrefetch(ps + 1, TrainConfigText(ps, "SYNC"), true, &got);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(testing::AllClose(got, single, testing::Tolerance{0, 0})) << ps << " PS\n"
                                                                          << r.output;
    EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "pulls"), std::to_string(2 * steps));
    EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"),
              std::to_string(2 * (steps - 1)))
        << r.output;
    // (A held pull counts again each time a push of another table re-checks it.)
    for (int p = 0; p < ps; ++p) {
      const std::string held = Field(r.output, "PREFETCH_PS " + std::to_string(p), "deferred");
      ASSERT_FALSE(held.empty()) << r.output;
      EXPECT_GE(std::stoll(held), static_cast<long long>(2 * (steps - 1))) << "PS " << p;
    }
  }
  // Without it: the same losses, nothing prefetched, nothing held.
  std::vector<double> plain;
  MpiRun r = RunTrainerPrefetch(2, TrainConfigText(1, "SYNC"), false, &plain);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::AllClose(plain, single, testing::Tolerance{0, 0})) << r.output;
  EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"), "0") << r.output;
  EXPECT_EQ(Field(r.output, "PREFETCH_PS 0", "deferred"), "0") << r.output;
}

// A wrong `next` (the batch after the next one) over 2 PS: no Pull consumes a prefetch, so each
// step pulls afresh (the outstanding prefetch is abandoned, never waited on: that could
// deadlock), and the losses are still exactly single-process training's: the wasted prefetch
// only creates rows early (a row's initial value is a pure function of its key) and counts
// sightings, which no option of this job reads. The last steps have no `next`, so the last step
// pulls the very keys prefetched two steps before: served before the push in between, those rows
// are stale, and the store pulls afresh (it matches the clock too, not only the keys).
TEST(MpiTrainPrefetch, WrongNextBatchIsIgnoredAndChangesNoLoss_1Worker2PsSync) {
  const std::vector<double> single = SingleProcessLosses();
  ASSERT_EQ(single.size(), 14u);
  std::vector<double> got;
  MpiRun r = RunTrainerPrefetch(3, TrainConfigText(2, "SYNC"), true, &got, "--next_offset=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::AllClose(got, single, testing::Tolerance{0, 0})) << r.output;
  EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "pulls"), "28") << r.output;
  EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"), "0") << r.output;
  // The prefetches were sent (and held by the PS) all the same: 2 tables x 12 steps.
  const std::string held = Field(r.output, "PREFETCH_PS 0", "deferred");
  ASSERT_FALSE(held.empty()) << r.output;
  EXPECT_GE(std::stoll(held), 24) << r.output;
}

// 2 workers + 2 PS in sync mode: the same loss sequence with and without the prefetch, bit for
// bit (a sync PS applies every worker's push of a clock together, in worker order, so a held
// prefetch and a fresh pull of the next step read the same rows), the dense replicas end equal
// (checked by the case), worker 0 reads no stale row, and all its pulls after the first step are
// served from the prefetch.
TEST(MpiTrainPrefetch, TwoWorkersSyncSameLossesWithAndWithoutPrefetch_2Ps) {
  std::vector<double> losses[2];
  for (int prefetch = 0; prefetch < 2; ++prefetch) {
    MpiRun r = RunTrainerPrefetch(4, TrainConfigText(2, "SYNC"), prefetch == 1, &losses[prefetch]);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_EQ(losses[prefetch].size(), 14u) << r.output;
    EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"), prefetch == 1 ? "26" : "0")
        << r.output;
    EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "staleness_max"), "0") << r.output;
  }
  EXPECT_TRUE(testing::AllClose(losses[1], losses[0], testing::Tolerance{0, 0}));
  EXPECT_NE(losses[0].front(), losses[0].back());  // it did train
}

// Async with staleness 0 (1 worker, 2 PS): a prefetch is served only once this worker's push
// is applied, so the losses are still exactly single-process training's, all served from it.
TEST(MpiTrainPrefetch, OneWorkerAsyncStaleness0EqualsSingleProcessLosses_2Ps) {
  const std::vector<double> single = SingleProcessLosses();
  ASSERT_EQ(single.size(), 14u);
  std::vector<double> got;
  MpiRun r = RunTrainerPrefetch(3, TrainConfigText(2, "ASYNC staleness: 0"), true, &got);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::AllClose(got, single, testing::Tolerance{0, 0})) << r.output;
  EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"), "26") << r.output;
}

// Async with staleness 2 and the prefetch (2 workers, 1 PS): the measured staleness stays within
// the bound and the held-out AUC is within 0.01 of sync's (also prefetched).
TEST(MpiTrainPrefetch, AsyncStaleness2AucCloseToSync_2Workers) {
  auto config = [](const std::string& sync) {
    testing::SyntheticDinJob job;
    job.name = "mpi_prefetch_auc";
    job.batch = 128;
    job.max_history = 10;
    job.num_items = 20000;
    job.num_categories = 50;
    job.warmup_steps = 5;
    job.steps = 100;
    job.mlp_hidden = "[32, 16]";
    job.learning_rate = "0.005";
    job.log_every_steps = 50;
    job.sync = sync;
    return job.Text();
  };
  double auc[2];
  int k = 0;
  for (const std::string sync : {"SYNC", "ASYNC staleness: 2"}) {
    std::vector<double> losses;
    MpiRun r = RunTrainerPrefetch(3, config(sync), true, &losses);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string a = Field(r.output, "PREFETCH worker=0", "auc");
    ASSERT_FALSE(a.empty()) << r.output;
    auc[k++] = std::stod(a);
    EXPECT_EQ(Field(r.output, "PREFETCH worker=0", "prefetch_hits"), std::to_string(2 * 104));
    const std::string st = Field(r.output, "PREFETCH worker=0", "staleness_max");
    ASSERT_FALSE(st.empty()) << r.output;
    EXPECT_LE(std::stoi(st), sync == "SYNC" ? 0 : 2) << r.output;
    std::printf("%s with prefetch: auc %s staleness_max %s samples_per_s %s\n", sync.c_str(),
                a.c_str(), st.c_str(),
                Field(r.output, "PREFETCH worker=0", "samples_per_s").c_str());
  }
  EXPECT_GT(auc[0], 0.75) << "sync did not learn: the comparison would be vacuous";
  EXPECT_NEAR(auc[1], auc[0], 0.01);
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) {
  return ips::testing::MpiTestMain(
      argc, argv,
      {{"transport", ips::CaseTransport},
       {"store", [&] { return ips::CaseStore(argc, argv); }},
       {"train", [] { return ips::testing::CaseTrain(/*eval_batches=*/2); }},
       {"trainer_prefetch", [&] { return ips::CaseTrainerPrefetch(argc, argv); }}});
}
