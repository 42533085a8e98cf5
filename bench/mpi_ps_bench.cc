// Benchmark of the distributed layer, under `mpirun -np 3` (rank 0 = PS, ranks 1-2 = workers;
// `-np 2` runs the same with one worker, so that no rank waits for a core on a 2-core machine):
//   1. pull + push of 64K unique keys x 18 floats through RemoteEmbeddingStore (1 PS, SGD table)
//      vs raw blocking MPI_Send/MPI_Recv moving the same bytes between the same two ranks
//      (512 KB keys -> 4.5 MB rows -> 5 MB keys + grads -> ack): bandwidth ratio, target >= 0.5;
//      1b. the same frames through the transport alone (no table work), for context;
//      the PS applies them with `--ps_threads=N` threads (default 0: what `ips train` picks,
//      worker/cluster.h PsThreads; the in-process table work printed for context is 1 thread);
//   2. a 1-key pull round trip vs raw MPI ping-pong of the same bytes (8 B -> 72 B) with
//      blocking calls (which spin): latency ratio, target <= 3; and vs a raw ping-pong whose
//      two sides sleep on a futex doorbell, the floor of any transport that does not spin;
//   3. MPI all-reduce (Collective, the workers) of DIN's dense weights (DinOptions defaults);
//   4. CPU use of idle ranks (comm thread asleep between polls, main thread asleep).
// Phases 1 and 2 alternate ours and raw iterations in one loop, so that both see the same load
// from other jobs; the raw baselines run in the same processes (same MPI library, thread level
// MPI_THREAD_MULTIPLE and MCA settings). Every measured path is verified first (rows equal the
// in-process store's, the all-reduce sum is exactly predictable). Prints `RESULT mpi_ps ...`
// last (rank 0). `--no_doorbells` runs the transport without its doorbells (every message found
// by polling, as for a peer on another host). `--spin_us=N` makes the transport's waiting threads
// poll N us before they sleep (default: what `ips train` picks, worker/cluster.h TransportSpinUs,
// i.e. 0 on a host with fewer than 4 cores per rank), as the blocking raw baseline of phase 2 does.
//
// `--mode=allreduce_vs_step` (same -np 3 layout; flags --batch=512 --steps=30 --threads=2)
// measures instead, in one run on one machine, the all-reduce (AllReduceMean over the 2 workers,
// as the trainer calls it) of the dense gradients of DIN built by CreateCtrModel with the default
// ModelSpec, and a full single-process DIN training step (Trainer::Step over an in-process
// store: dedup, pull, forward, backward, push, dense update) at batch 512 on worker 0 while the
// other ranks sleep; prints `RESULT allreduce_vs_step allreduce_ms=.. step_ms=.. ratio=..
// target=0.05` (the "dense all-reduce <= 5% of a DIN step at batch 512").
#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "common/result_line.h"
#include "common/timer.h"
#include "models/din.h"
#include "ps/local_embedding_store.h"
#include "ps/remote_store.h"
#include "ps/server.h"
#include "worker/cluster.h"
#include "worker/model_factory.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace {

constexpr int64_t kKeys = 65536;
constexpr int64_t kDim = 18;
constexpr int kBandwidthIters = 20;
constexpr int kLatencyIters = 2000;
constexpr int kAllReduceIters = 200;

void Die(const Cluster& c, const Status& s) { c.Abort(s); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::vector<ps::TableOptions> Tables() {
  ps::TableOptions t;
  t.name = "item";
  t.dim = kDim;
  t.optimizer.type = ps::OptimizerOptions::Type::kSgd;
  t.optimizer.learning_rate = 0.01;
  t.initializer.type = ps::InitializerOptions::Type::kNormal;
  t.seed = 3;
  return {t};
}

// Sleeps until every rank of `comm` is here, without spinning (MPI_Barrier spins a core, which
// would take it from the rank being timed on a small machine).
void SleepingBarrier(const Cluster& c, MPI_Comm comm) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  if (Status s = ps::WaitWithoutSpinning(&req, "MPI_Ibarrier"); !s.ok()) c.Abort(s);
}

// One raw pull + push of phase 1 between ranks 0 (server) and 1 (client) of `pair` with
// blocking MPI_Send/MPI_Recv; returns the client's seconds.
double RawPullPushOnce(MPI_Comm pair, int rank, std::vector<char>* keys, std::vector<char>* rows,
                       std::vector<char>* push, std::vector<char>* ack) {
  Timer timer;
  const int peer = 1 - rank;
  if (rank == 1) {
    MPI_Send(keys->data(), static_cast<int>(keys->size()), MPI_BYTE, peer, 7, pair);
    MPI_Recv(rows->data(), static_cast<int>(rows->size()), MPI_BYTE, peer, 7, pair,
             MPI_STATUS_IGNORE);
    MPI_Send(push->data(), static_cast<int>(push->size()), MPI_BYTE, peer, 7, pair);
    MPI_Recv(ack->data(), static_cast<int>(ack->size()), MPI_BYTE, peer, 7, pair,
             MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(keys->data(), static_cast<int>(keys->size()), MPI_BYTE, peer, 7, pair,
             MPI_STATUS_IGNORE);
    MPI_Send(rows->data(), static_cast<int>(rows->size()), MPI_BYTE, peer, 7, pair);
    MPI_Recv(push->data(), static_cast<int>(push->size()), MPI_BYTE, peer, 7, pair,
             MPI_STATUS_IGNORE);
    MPI_Send(ack->data(), static_cast<int>(ack->size()), MPI_BYTE, peer, 7, pair);
  }
  return timer.Seconds();
}

// Raw ping-pongs of phase 2 (8 B request, 72 B reply) with blocking MPI calls, which spin:
// the fastest MPI can do, and what the latency target is measured against. Appends the
// client's round trips in us.
void RawPingPongs(MPI_Comm pair, int rank, int n, std::vector<double>* us) {
  char req[8] = {0}, rep[kDim * 4] = {0};
  const int peer = 1 - rank;
  for (int it = 0; it < n; ++it) {
    Timer timer;
    if (rank == 1) {
      MPI_Send(req, 8, MPI_BYTE, peer, 8, pair);
      MPI_Recv(rep, sizeof(rep), MPI_BYTE, peer, 8, pair, MPI_STATUS_IGNORE);
      us->push_back(timer.Seconds() * 1e6);
    } else {
      MPI_Recv(req, 8, MPI_BYTE, peer, 8, pair, MPI_STATUS_IGNORE);
      MPI_Send(rep, sizeof(rep), MPI_BYTE, peer, 8, pair);
    }
  }
}

// A futex doorbell in memory shared by the two ranks of `pair` (an MPI shared window): the
// mechanism ps::Transport sleeps on, here without any of the transport's framing or matching.
struct PairBells {
  MPI_Win win = MPI_WIN_NULL;
  std::atomic<uint32_t>* own = nullptr;   // this rank's bell (it sleeps on it)
  std::atomic<uint32_t>* peer = nullptr;  // the peer's bell (this rank rings it)
  std::atomic<uint32_t>* own_sleepers = nullptr;
  std::atomic<uint32_t>* peer_sleepers = nullptr;
};

// False when the two ranks share no memory (different hosts): no sleeping baseline then.
bool MakePairBells(MPI_Comm pair, int rank, PairBells* b) {
  MPI_Comm node;
  MPI_Comm_split_type(pair, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int node_size = 0;
  MPI_Comm_size(node, &node_size);
  if (node_size != 2) {
    MPI_Comm_free(&node);
    return false;
  }
  void* base = nullptr;
  MPI_Win_allocate_shared(64, 1, MPI_INFO_NULL, node, &base, &b->win);
  MPI_Aint size = 0;
  int disp = 0;
  void* peer_base = nullptr;
  MPI_Win_shared_query(b->win, 1 - rank, &size, &disp, &peer_base);
  auto* mine = static_cast<std::atomic<uint32_t>*>(base);
  auto* theirs = static_cast<std::atomic<uint32_t>*>(peer_base);
  new (mine) std::atomic<uint32_t>(0);
  new (mine + 1) std::atomic<uint32_t>(0);
  b->own = mine;
  b->own_sleepers = mine + 1;
  b->peer = theirs;
  b->peer_sleepers = theirs + 1;
  MPI_Barrier(node);  // both initialised before either rings
  MPI_Comm_free(&node);
  return true;
}

void RingPeer(const PairBells& b) {
  b.peer->fetch_add(1, std::memory_order_seq_cst);
  if (b.peer_sleepers->load(std::memory_order_seq_cst) != 0)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(b.peer), FUTEX_WAKE, INT_MAX, nullptr, nullptr,
            0);
}

// Completes `req`, sleeping on this rank's bell between tests (1 ms at most per sleep).
void WaitOnBell(const PairBells& b, MPI_Request* req) {
  while (true) {
    const uint32_t seen = b.own->load(std::memory_order_seq_cst);
    int done = 0;
    MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (done) return;
    b.own_sleepers->fetch_add(1, std::memory_order_seq_cst);
    if (b.own->load(std::memory_order_seq_cst) == seen) {
      timespec ts{0, 1000000};
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(b.own), FUTEX_WAIT, seen, &ts, nullptr, 0);
    }
    b.own_sleepers->fetch_sub(1, std::memory_order_seq_cst);
  }
}

// Raw ping-pongs of phase 2 where both sides sleep until the peer rings: the floor of any
// transport that does not spin (two cross-process wake-ups per round trip). Appends the
// client's round trips in us.
void SleepingPingPongs(MPI_Comm pair, int rank, const PairBells& b, int n,
                       std::vector<double>* us) {
  char req[8] = {0}, rep[kDim * 4] = {0};
  const int peer = 1 - rank;
  for (int it = 0; it < n; ++it) {
    Timer timer;
    MPI_Request r;
    if (rank == 1) {
      MPI_Isend(req, 8, MPI_BYTE, peer, 9, pair, &r);
      RingPeer(b);
      MPI_Wait(&r, MPI_STATUS_IGNORE);  // eager: already complete
      MPI_Irecv(rep, sizeof(rep), MPI_BYTE, peer, 9, pair, &r);
      WaitOnBell(b, &r);
      us->push_back(timer.Seconds() * 1e6);
    } else {
      MPI_Irecv(req, 8, MPI_BYTE, peer, 9, pair, &r);
      WaitOnBell(b, &r);
      MPI_Isend(rep, sizeof(rep), MPI_BYTE, peer, 9, pair, &r);
      RingPeer(b);
      MPI_Wait(&r, MPI_STATUS_IGNORE);
    }
  }
}

// Phase 1b: the same frames through the transport alone, answered without table work (rank 0
// echoes a rows-sized reply to the pull frame and an ack to the push frame): what the messaging
// layer costs over raw MPI, separated from the PS's table work.
double TransportOnlySeconds(Cluster* cluster) {
  ps::Transport* t = cluster->transport();
  const int iters = kBandwidthIters + 2;
  if (cluster->rank() == 0) {
    for (int i = 0; i < 2 * iters; ++i) {
      ps::Incoming in;
      if (!t->Receive(&in, 60000)) cluster->Abort(UnavailableError("echo: no request"));
      const size_t reply = in.frame.kind() == 1000 ? kKeys * kDim * 4 : 0;
      ps::Frame f = ps::Frame::Make(1002, {}, reply);
      if (reply > 0) std::memset(f.payload(), 0, reply);
      t->Reply(in.source, in.frame.id(), std::move(f));
    }
    return 0;
  }
  if (cluster->rank() != 1) return 0;
  std::vector<double> times;
  for (int it = 0; it < iters; ++it) {
    Timer timer;
    ps::Frame pull = ps::Frame::Make(1000, "meta", kKeys * 8);
    std::memset(pull.payload(), 1, kKeys * 8);
    auto r1 = t->Wait(t->Request(0, std::move(pull)));
    ps::Frame push = ps::Frame::Make(1001, "meta", kKeys * (8 + kDim * 4));
    std::memset(push.payload(), 2, kKeys * (8 + kDim * 4));
    auto r2 = t->Wait(t->Request(0, std::move(push)));
    if (!r1.ok() || !r2.ok() || r1->payload_size() != kKeys * kDim * 4)
      cluster->Abort(InternalError("echo: bad reply"));
    if (it >= 2) times.push_back(timer.Seconds());
  }
  return Median(times);
}

struct BenchFlags {
  int batch = 512;
  int steps = 30;
  int threads = 2;
  int ps_threads = 0;  // the PS's threads (cluster.ps_threads; 0: PsThreads' automatic choice)
};

// Parses `--mode=allreduce_vs_step` and its flags; returns false (and prints why) on a bad one.
bool ParseFlags(int argc, char** argv, bool* step_mode, BenchFlags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name, int* out) {
      const std::string prefix = std::string("--") + name + "=";
      if (a.rfind(prefix, 0) != 0) return false;
      *out = std::atoi(a.c_str() + prefix.size());
      return true;
    };
    if (a == "--no_doorbells" || a.rfind("--spin_us=", 0) == 0) continue;  // read in Main
    if (a == "--mode=allreduce_vs_step") {
      *step_mode = true;
    } else if (a == "--mode=pullpush") {
      *step_mode = false;
    } else if (!value("batch", &f->batch) && !value("steps", &f->steps) &&
               !value("threads", &f->threads) && !value("ps_threads", &f->ps_threads)) {
      std::fprintf(
          stderr,
          "mpi_ps_bench: unknown flag '%s' (--mode=pullpush|allreduce_vs_step, "
          "--batch=N, --steps=N, --threads=N, --ps_threads=N, --no_doorbells, --spin_us=N)\n",
          a.c_str());
      return false;
    }
  }
  if (f->batch < 1 || f->steps < 1 || f->threads < 1 || f->ps_threads < 0) {
    std::fprintf(stderr,
                 "mpi_ps_bench: --batch, --steps and --threads must be >= 1, --ps_threads >= 0\n");
    return false;
  }
  return true;
}

// --mode=allreduce_vs_step (see the header comment). Runs on every rank; rank 0 (the PS, idle
// here) prints the RESULT line. Returns the exit code.
int AllReduceVsStep(Cluster* cluster, const BenchFlags& f) {
  const int rank = cluster->rank();
  double ar_ms = 0, step_ms = 0, dense_n = 0, verified = 1, loss_first = 0, loss_last = 0;
  if (cluster->role() == Role::kWorker) {
    Collective* coll = cluster->collective();
    ModelSpec spec;  // the defaults: DIN, embedding 18, history 50
    spec.max_batch = f.batch;
    auto model = CreateCtrModel(spec);
    if (!model.ok()) cluster->Abort(model.status());
    const int64_t n = (*model)->params().size();
    dense_n = static_cast<double>(n);
    // Verify: small integers average exactly ((a + a + 100) / 2 = a + 50).
    std::vector<float> buf(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      buf[i] = static_cast<float>((i % 13) + 100 * cluster->role_index());
    if (Status s = coll->AllReduceMean(buf.data(), n); !s.ok()) cluster->Abort(s);
    for (int64_t i = 0; i < n; ++i)
      if (buf[i] != static_cast<float>((i % 13) + 50)) verified = 0;
    std::vector<double> t;
    for (int it = 0; it < kAllReduceIters + 10; ++it) {
      Timer timer;
      if (Status s = coll->AllReduceMean(buf.data(), n); !s.ok()) cluster->Abort(s);
      if (it >= 10) t.push_back(timer.Millis());
    }
    ar_ms = Median(t);
    if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
    if (cluster->role_index() == 0) {
      // The step alone: worker 1 sleeps in the barrier below meanwhile.
      std::vector<ps::TableOptions> tables(2);
      tables[0].name = "item";
      tables[1].name = "category";
      for (auto& tb : tables) tb.dim = spec.embedding_dim;  // Adam 1e-3, Xavier: defaults
      auto store = ps::LocalEmbeddingStore::Create(tables);
      if (!store.ok()) cluster->Abort(store.status());
      TrainerOptions to;
      to.model = spec;
      to.num_threads = f.threads;
      auto trainer = Trainer::Create(to, store->get(), std::move(model).value());
      if (!trainer.ok()) cluster->Abort(trainer.status());
      auto gen = SyntheticBatches::Create(SyntheticOptions{});
      if (!gen.ok()) cluster->Abort(gen.status());
      const int warmup = 5;
      std::vector<CtrBatch> batches(static_cast<size_t>(warmup + f.steps));
      for (size_t i = 0; i < batches.size(); ++i)
        if (Status s = (*gen)->CtrBatchAt(i, f.batch, &batches[i]); !s.ok()) cluster->Abort(s);
      std::vector<double> st;
      for (size_t i = 0; i < batches.size(); ++i) {
        Timer timer;
        auto loss = (*trainer)->Step(ViewOf(batches[i]));
        if (!loss.ok()) cluster->Abort(loss.status());
        // A step that trains: finite losses (checked below, first vs last).
        if (!std::isfinite(*loss)) verified = 0;
        if (i == 0) loss_first = *loss;
        loss_last = *loss;
        if (static_cast<int>(i) >= warmup) st.push_back(timer.Millis());
      }
      step_ms = Median(st);
    }
    if (Status s = coll->Barrier(); !s.ok()) cluster->Abort(s);
  }
  // Rank 0 sleeps here (non-spinning) while the workers measure: a blocking MPI_Reduce would
  // spin and take a core from the timed step on a small machine.
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  if (Status s = ps::WaitWithoutSpinning(&req, "MPI_Ibarrier"); !s.ok()) cluster->Abort(s);
  double vals[4] = {ar_ms, step_ms, dense_n, verified}, got[4] = {0};
  MPI_Reduce(vals, got, 3, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  MPI_Reduce(vals + 3, got + 3, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
  double losses[2] = {loss_first, loss_last}, got_losses[2] = {0};
  MPI_Reduce(losses, got_losses, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
  if (rank != 0) return 0;
  const double ratio = got[1] > 0 ? got[0] / got[1] : 0;
  std::printf(
      "DIN dense gradients: %lld floats (%.1f KB); all-reduce (mean, 2 workers, MPI): %.3f ms; "
      "DIN training step at batch %d (%d threads): %.2f ms (loss %.4f -> %.4f)\n",
      static_cast<long long>(got[2]), got[2] * 4 / 1024, got[0], f.batch, f.threads, got[1],
      got_losses[0], got_losses[1]);
  ResultLine("allreduce_vs_step")
      .Add("verified", got[3] > 0 ? "yes" : "NO")
      .Add("dense_floats", static_cast<int64_t>(got[2]))
      .Add("batch", static_cast<int64_t>(f.batch))
      .Add("threads", static_cast<int64_t>(f.threads))
      .Add("allreduce_ms", got[0])
      .Add("step_ms", got[1])
      .Add("ratio", ratio)
      .Add("target", 0.05)
      .Print();
  return got[3] > 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  ClusterOptions copt;
  copt.num_ps = 1;
  // --no_doorbells: the transport finds every message by polling, as it must for a peer on
  // another host (read before Init, which builds the transport).
  bool doorbells = true;
  int spin_us = -1;  // --spin_us=N (-1: what `ips train` picks, worker/cluster.h TransportSpinUs)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no_doorbells") doorbells = false;
    if (a.rfind("--spin_us=", 0) == 0) spin_us = std::atoi(a.c_str() + 10);
  }
  copt.transport.doorbells = doorbells;
  copt.transport.spin_us = TransportSpinUs(spin_us);
  auto cluster_or = Cluster::Init(&argc, &argv, copt);
  if (!cluster_or.ok()) {
    std::fprintf(stderr, "mpi_ps_bench: %s (run under mpirun -np 3 or -np 2)\n",
                 cluster_or.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<Cluster> cluster = std::move(cluster_or).value();
  const int rank = cluster->rank();
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 3 && world != 2)
    Die(*cluster, InvalidArgumentError("mpi_ps_bench needs mpirun -np 3 (or -np 2)"));
  const int num_workers = world - 1;
  bool step_mode = false;
  BenchFlags flags;
  if (!ParseFlags(argc, argv, &step_mode, &flags)) Die(*cluster, InvalidArgumentError("bad flags"));
  if (step_mode && world != 3)
    Die(*cluster, InvalidArgumentError("--mode=allreduce_vs_step needs mpirun -np 3"));
  if (step_mode) return AllReduceVsStep(cluster.get(), flags);
  // What `ips train` would give the PS here (`cluster.ps_threads`, 0 = automatic).
  const int ps_threads = PsThreads(flags.ps_threads, cluster->layout());

  // ---- 4 first: idle CPU (nothing else running yet) ----
  const double idle_wall = 2.0;
  const double cpu0 = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::duration<double>(idle_wall));
  double idle_cpu_pct = 100.0 * (CpuSeconds() - cpu0) / idle_wall;
  double idle_max = 0;
  MPI_Reduce(&idle_cpu_pct, &idle_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  const int64_t wakeups = cluster->transport()->wakeups();

  // ---- 1b: the transport alone (context for phase 1) ----
  const double transport_s = TransportOnlySeconds(cluster.get());
  MPI_Barrier(MPI_COMM_WORLD);  // no PS request before the echo phase is over

  // ---- Phases 1 and 2, each interleaved with its raw MPI baseline ----
  // Raw and ours alternate within one loop between ranks 0 (PS) and 1 (worker 0), so both see
  // the same machine load (other jobs share these cores; measured one after the other, a raw
  // baseline varied 20x between runs). The PS serves on its transport's comm thread from a
  // second thread of rank 0 (ParameterServer::Run sleeps there), so rank 0's main thread is free
  // to run the raw baselines with the same process, MPI library, thread level (MULTIPLE) and
  // MCA settings. The raw traffic uses MPI_COMM_WORLD's ranks 0 and 1 (`pair`); the transport
  // its own duplicated communicator.
  MPI_Comm pair;
  MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &pair);
  PairBells bells;
  const bool have_bells = rank < 2 && MakePairBells(pair, rank, &bells);

  const std::vector<ps::TableOptions> tables = Tables();
  double ours_s = 0, raw_s = 0, table_s = 0, pull1_us = 0, raw_pp_us = 0, raw_sleep_us = -1,
         allreduce_ms = 0;
  int64_t dense_n = 0;
  bool verified = true;
  std::unique_ptr<ps::ParameterServer> server;
  std::thread server_thread;
  Status server_status;
  std::unique_ptr<ps::RemoteEmbeddingStore> remote;
  if (cluster->role() == Role::kPs) {
    ps::ServerOptions so;
    so.tables = tables;
    so.num_workers = num_workers;
    so.num_threads = ps_threads;
    auto server_or = ps::ParameterServer::Create(cluster->transport(), so);
    if (!server_or.ok()) Die(*cluster, server_or.status());
    server = std::move(server_or).value();
    server_thread = std::thread([&] { server_status = server->Run(); });
  } else {
    ps::RemoteStoreOptions ro;
    ro.tables = tables;
    ro.ps_ranks = cluster->layout().PsRanks();
    ro.worker_index = cluster->role_index();
    auto remote_or = ps::RemoteEmbeddingStore::Create(cluster->transport(), ro);
    if (!remote_or.ok()) Die(*cluster, remote_or.status());
    remote = std::move(remote_or).value();
    // Worker 1 (-np 3) pushes nothing: it says so, or worker 0's pulls would wait for its clock.
    if (cluster->role_index() != 0)
      if (Status s = remote->Finish(); !s.ok()) Die(*cluster, s);
  }
  if (rank < 2) {
    // Phase 1: verify, then time pull + push of 64K unique keys against the raw exchange.
    std::vector<char> rk(kKeys * 8, 1), rr(kKeys * kDim * 4, 2), rp(kKeys * (8 + kDim * 4), 3),
        ra(16, 4);
    std::vector<uint64_t> keys(kKeys);
    for (int64_t i = 0; i < kKeys; ++i) keys[i] = static_cast<uint64_t>(i) * 2654435761ULL + 1;
    std::vector<float> rows(kKeys * kDim), want(kKeys * kDim), grads(kKeys * kDim, 0.01f);
    std::unique_ptr<ps::LocalEmbeddingStore> local;
    if (rank == 1) {
      auto local_or = ps::LocalEmbeddingStore::Create(tables);
      if (!local_or.ok()) Die(*cluster, local_or.status());
      local = std::move(local_or).value();
      Status s = remote->Pull(0, keys.data(), kKeys, kDim, rows.data());
      if (!s.ok()) Die(*cluster, s);
      s = local->Pull(0, keys.data(), kKeys, kDim, want.data());
      if (!s.ok()) Die(*cluster, s);
      if (std::memcmp(rows.data(), want.data(), rows.size() * 4) != 0) verified = false;
    }
    std::vector<double> t, tt, raw;
    for (int it = 0; it < kBandwidthIters + 2; ++it) {
      SleepingBarrier(*cluster, pair);
      const double r = RawPullPushOnce(pair, rank, &rk, &rr, &rp, &ra);
      if (it >= 2) raw.push_back(r);
      SleepingBarrier(*cluster, pair);
      if (rank != 1) continue;  // rank 0's main thread sleeps; its comm thread serves
      Timer timer;
      Status s = remote->Pull(0, keys.data(), kKeys, kDim, rows.data());
      if (s.ok()) s = remote->Push(0, keys.data(), kKeys, kDim, grads.data());
      if (!s.ok()) Die(*cluster, s);
      if (it >= 2) t.push_back(timer.Seconds());
      // The PS's own table work for the same call, in-process (context for the ratio).
      Timer table_timer;
      s = local->Pull(0, keys.data(), kKeys, kDim, want.data());
      if (s.ok()) s = local->Push(0, keys.data(), kKeys, kDim, grads.data());
      if (!s.ok()) Die(*cluster, s);
      if (it >= 2) tt.push_back(table_timer.Seconds());
    }
    if (rank == 1) {
      if (std::memcmp(rows.data(), want.data(), rows.size() * 4) != 0) verified = false;
      ours_s = Median(t);
      table_s = Median(tt);
      raw_s = Median(raw);
    }
    // Phase 2: 1-key pull round trips, in rounds alternating with both raw ping-pongs.
    std::vector<double> lat, pp, pp_sleep;
    float one[kDim];
    constexpr int kRounds = 20;
    for (int round = 0; round < kRounds; ++round) {
      const int n = kLatencyIters / kRounds;
      SleepingBarrier(*cluster, pair);
      RawPingPongs(pair, rank, n, &pp);
      if (have_bells) {
        SleepingBarrier(*cluster, pair);
        SleepingPingPongs(pair, rank, bells, n, &pp_sleep);
      }
      SleepingBarrier(*cluster, pair);
      if (rank != 1) continue;
      for (int it = 0; it < n; ++it) {
        Timer timer;
        Status s = remote->Pull(0, keys.data() + (it % 100), 1, kDim, one);
        if (!s.ok()) Die(*cluster, s);
        lat.push_back(timer.Seconds() * 1e6);
      }
    }
    SleepingBarrier(*cluster, pair);
    if (rank == 1) {
      pull1_us = Median(lat);
      raw_pp_us = Median(pp);
      if (have_bells) raw_sleep_us = Median(pp_sleep);
    }
  }
  if (have_bells) MPI_Win_free(&bells.win);
  if (pair != MPI_COMM_NULL) MPI_Comm_free(&pair);
  if (cluster->role() == Role::kWorker) {
    // Phase 3: all-reduce of DIN's dense weights among the 2 workers. Worker 1 waits here
    // (sleeping up to 1 ms per poll) while worker 0 runs phases 1-2.
    if (Status s = cluster->collective()->Barrier(); !s.ok()) Die(*cluster, s);
    auto din = models::Din<float>::Create(models::DinOptions{});
    if (!din.ok()) Die(*cluster, din.status());
    dense_n = (*din)->params().size();
    Collective* coll = cluster->collective();
    std::vector<float> buf(static_cast<size_t>(dense_n));
    // Small integers: the sum is exact in float, so the check is ==.
    for (int64_t i = 0; i < dense_n; ++i)
      buf[i] = static_cast<float>((i % 13) + 100 * cluster->role_index());
    Status s = coll->AllReduceSum(buf.data(), dense_n);
    if (!s.ok()) Die(*cluster, s);
    const int64_t index_sum = 100 * num_workers * (num_workers - 1) / 2;
    for (int64_t i = 0; i < dense_n; ++i)
      if (buf[i] != static_cast<float>(num_workers * (i % 13) + index_sum)) verified = false;
    s = coll->Barrier();
    std::vector<double> t;
    for (int it = 0; it < kAllReduceIters; ++it) {
      Timer timer;
      s = coll->AllReduceSum(buf.data(), dense_n);
      if (!s.ok()) Die(*cluster, s);
      t.push_back(timer.Millis());
    }
    allreduce_ms = Median(t);
    s = remote->ShutdownServers();
    if (!s.ok()) Die(*cluster, s);
  }
  if (server_thread.joinable()) {
    server_thread.join();  // Run returns once every worker has shut the servers down
    if (!server_status.ok()) Die(*cluster, server_status);
  }
  // Gather the worker-0 numbers on rank 0.
  double vals[10] = {ours_s,      table_s, pull1_us,  allreduce_ms, static_cast<double>(dense_n),
                     transport_s, raw_s,   raw_pp_us, raw_sleep_us, verified ? 1.0 : 0.0};
  double got[10] = {0};
  MPI_Reduce(vals, got, 9, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  MPI_Reduce(vals + 9, got + 9, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
  const bool all_verified = got[9] > 0;
  if (rank == 0) {
    const double bytes = kKeys * 8.0 + kKeys * kDim * 4.0 + kKeys * (8.0 + kDim * 4.0) + 16;
    const double raw_ms = got[6] * 1e3, ours_ms = got[0] * 1e3;
    const double pp_us = got[7], sleep_us = got[8];
    std::printf(
        "pull+push 64K x %lld (medians, interleaved): raw MPI %.2f ms (%.2f GB/s), ours %.2f ms "
        "(%.2f GB/s), transport alone %.2f ms, in-process table work (1 thread) %.2f ms\n",
        static_cast<long long>(kDim), raw_ms, bytes / got[6] / 1e9, ours_ms, bytes / got[0] / 1e9,
        got[5] * 1e3, got[1] * 1e3);
    std::printf(
        "1-key pull: ours %.1f us; raw MPI ping-pong %.2f us (blocking calls, which spin), "
        "%.1f us (both sides sleep on a futex bell the sender rings)\n",
        got[2], pp_us, sleep_us);
    std::printf("all-reduce of %lld floats (DIN dense) over %d worker(s): %.3f ms\n",
                static_cast<long long>(got[4]), num_workers, got[3]);
    std::printf(
        "idle rank CPU: %.2f%% of a core (max over ranks; comm thread %lld wake-ups "
        "in %.0f s on rank 0)\n",
        idle_max, static_cast<long long>(wakeups), idle_wall);
    ResultLine("mpi_ps")
        .Add("verified", all_verified ? "yes" : "NO")
        .Add("ranks", static_cast<int64_t>(world))
        .Add("doorbells", doorbells ? "yes" : "no")
        .Add("ps_threads", static_cast<int64_t>(ps_threads))
        .Add("spin_us", static_cast<int64_t>(copt.transport.spin_us))
        .Add("bw_ratio", got[6] / got[0])
        .Add("bw_target", 0.5)
        .Add("transport_bw_ratio", got[6] / got[5])
        .Add("ours_pullpush_ms", ours_ms)
        .Add("transport_ms", got[5] * 1e3)
        .Add("raw_ms", raw_ms)
        .Add("table_ms", got[1] * 1e3)
        .Add("pull1_us", got[2])
        .Add("raw_pingpong_us", pp_us)
        .Add("raw_pingpong_sleep_us", sleep_us)
        .Add("lat_ratio", got[2] / pp_us)
        .Add("lat_ratio_sleep", sleep_us > 0 ? got[2] / sleep_us : -1.0)
        .Add("lat_target", 3.0)
        .Add("allreduce_ms", got[3])
        .Add("dense_floats", static_cast<int64_t>(got[4]))
        .Add("idle_cpu_pct", idle_max)
        .Print();
  }
  return rank != 0 || all_verified ? 0 : 1;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) { return ips::Main(argc, argv); }
