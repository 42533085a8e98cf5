// CPU benchmark of one model step (Forward(training) + Backward, loss and every gradient) of DIN
// and DIEN at the peer's throughput shape: batch 512, history 50, embedding 18 (+18), synthetic
// batches as the peer's protocol (every history full, Zipf-like repeated rows). The embedding
// store, dedup and optimizers are not timed: this is the model's share of a training step.
//
// Verification before timing: the float model's loss and gradients match a double model with
// the same weights on the same batch (AllClose-style relative check).
// Baseline in the same run: with --peer, the peer's own bench.py (torch 1.13, same threads) is
// run for DIEN and DIN and its samples/s taken as the baseline; otherwise the peer's recorded
// figures (peers/README.md runs: DIEN 1,967 samples/s, DIN from --peer_din_sps) are used and
// the RESULT line says baseline=recorded.
// Usage: model_step_bench [--threads 2] [--iters 20] [--peer] [--mixed]
//   --mixed: history lengths uniform in [0, 50] instead of all 50.
// Last line: RESULT model_step_cpu dien_ms=<median wall> dien_best_ms=... dien_cpu_ms=<process
//            CPU time per step, all threads> dien_sps=... din_ms=... din_cpu_ms=... din_sps=...
//            peer_dien_sps=... ratio_dien=dien_sps/peer_dien_sps target=1.5 baseline=...
//            threads=... lengths=... load1=<1-minute load average after the runs>
// Note the scopes: ours is the model's forward + backward only, the peer's samples/s is its
// whole timed step (forward, backward and optimizer steps), so ratio_dien is an upper bound of
// the training-step ratio (the trainer adds dedup, pull, push and the optimizers).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "models/dien.h"
#include "models/din.h"

namespace ips::models {
namespace {

constexpr int64_t kB = 512, kT = 50, kD = 18;

struct Batch {
  std::vector<int32_t> lengths;
  std::vector<int64_t> item_index, cat_index;
  std::vector<float> item_rows, cat_rows, labels;
  int64_t num_item_rows = 20000, num_cat_rows = 1000;
};

// Indices skewed towards low rows (a cheap Zipf stand-in: the square of a uniform), so rows
// repeat like deduplicated real batches; item/cat rows N(0, 0.3)-ish uniform.
Batch MakeBatch(bool mixed, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  b.lengths.resize(kB);
  for (auto& l : b.lengths) l = mixed ? static_cast<int32_t>(rng.UniformInt(kT + 1)) : kT;
  const int64_t n = 2 * kB * kT + kB;
  b.item_index.resize(n);
  b.cat_index.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double u = rng.Uniform();
    b.item_index[i] = static_cast<int64_t>(u * u * b.num_item_rows);
    b.cat_index[i] = static_cast<int64_t>(u * b.num_cat_rows);
  }
  b.item_rows.resize(b.num_item_rows * kD);
  b.cat_rows.resize(b.num_cat_rows * kD);
  for (auto& x : b.item_rows) x = 0.6f * rng.UniformFloat() - 0.3f;
  for (auto& x : b.cat_rows) x = 0.6f * rng.UniformFloat() - 0.3f;
  b.labels.resize(kB);
  for (auto& l : b.labels) l = rng.UniformInt(2) ? 1.f : 0.f;
  return b;
}

template <typename T>
CtrInputs<T> Inputs(const Batch& b, const std::vector<T>& items, const std::vector<T>& cats,
                    const std::vector<T>& labels) {
  CtrInputs<T> in;
  in.batch = kB;
  in.lengths = b.lengths.data();
  in.item_index = b.item_index.data();
  in.cat_index = b.cat_index.data();
  in.item_rows = items.data();
  in.num_item_rows = b.num_item_rows;
  in.cat_rows = cats.data();
  in.num_cat_rows = b.num_cat_rows;
  in.labels = labels.data();
  return in;
}

// CPU time of the whole process (all threads), in ms: on a shared VM the wall time depends on
// the other tenants' load, the CPU time much less (it is the work done, plus any spinning).
double ProcessCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double MaxRelErr(const float* got, const double* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Verifies float vs double, then times Forward + Backward; returns the median ms (and best).
template <template <typename> class Model, typename Options>
bool Run(const char* name, const Options& o, const Batch& b, ThreadPool* pool, int iters,
         double* median_ms, double* best_ms, double* cpu_ms) {
  auto mf_or = Model<float>::Create(o);
  auto md_or = Model<double>::Create(o);
  if (!mf_or.ok() || !md_or.ok()) {
    std::fprintf(stderr, "%s: Create failed\n", name);
    return false;
  }
  Model<float>& mf = **mf_or;
  Model<double>& md = **md_or;
  kernels::Context ctx;
  ctx.pool = pool;
  std::vector<double> item_d(b.item_rows.begin(), b.item_rows.end());
  std::vector<double> cat_d(b.cat_rows.begin(), b.cat_rows.end());
  std::vector<double> labels_d(b.labels.begin(), b.labels.end());
  const CtrInputs<float> inf = Inputs(b, b.item_rows, b.cat_rows, b.labels);
  const CtrInputs<double> ind = Inputs(b, item_d, cat_d, labels_d);
  std::vector<float> gi(b.item_rows.size()), gc(b.cat_rows.size());
  std::vector<double> gid(item_d.size()), gcd(cat_d.size());
  float lf = 0;
  double ld = 0;
  Status s = mf.Forward(ctx, inf, true, &lf);
  if (s.ok()) s = mf.Backward(ctx, inf, gi.data(), gc.data());
  if (s.ok()) s = md.Forward(ctx, ind, true, &ld);
  if (s.ok()) s = md.Backward(ctx, ind, gid.data(), gcd.data());
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, s.ToString().c_str());
    return false;
  }
  const double e_loss = std::fabs(lf - ld) / std::max(1.0, std::fabs(ld));
  const double e_item = MaxRelErr(gi.data(), gid.data(), static_cast<int64_t>(gi.size()));
  const double e_dense = MaxRelErr(mf.params().grads(), md.params().grads(), md.params().size());
  std::fprintf(stderr,
               "%s verify: loss %.6f (double %.6f) rel.err loss %.2e item-grads %.2e "
               "dense-grads %.2e\n",
               name, lf, ld, e_loss, e_item, e_dense);
  if (!(e_loss < 1e-5 && e_item < 1e-3 && e_dense < 1e-3)) {
    std::fprintf(stderr, "%s: float and double disagree\n", name);
    return false;
  }
  std::vector<double> ms;
  double cpu0 = 0;
  for (int i = 0; i < iters + 2; ++i) {
    if (i == 2) cpu0 = ProcessCpuMs();
    Timer t;
    s = mf.Forward(ctx, inf, true, &lf);
    if (s.ok()) s = mf.Backward(ctx, inf, gi.data(), gc.data());
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", name, s.ToString().c_str());
      return false;
    }
    if (i >= 2) ms.push_back(t.Millis());  // two warm-up steps
  }
  *cpu_ms = (ProcessCpuMs() - cpu0) / iters;
  std::sort(ms.begin(), ms.end());
  *median_ms = ms[ms.size() / 2];
  *best_ms = ms.front();
  std::fprintf(stderr,
               "%s: median %.2f ms, best %.2f ms, %.2f CPU-ms per %ld-batch step (%d iters)\n",
               name, *median_ms, *best_ms, *cpu_ms, static_cast<long>(kB), iters);
  return true;
}

// The 1-minute load average: wall times on this shared VM are only comparable at similar load.
double Load1() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

// Runs the peer's bench.py and returns its samples/s (0 on failure).
double PeerSamplesPerSecond(const char* model, int threads) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  const std::string root = src != nullptr ? src : ".";
  const std::string cmd = "cd " + root + "/../shared/peers && OMP_WAIT_POLICY=PASSIVE " +
                          "/usr/bin/python3 bench.py --model " + model +
                          " --data synthetic --steps 30 --warmup 5 --threads " +
                          std::to_string(threads) + " 2>/dev/null | tail -n 1";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return 0;
  char line[512] = {0};
  const bool got = std::fgets(line, sizeof(line), f) != nullptr;
  pclose(f);
  if (!got) return 0;
  const char* at = std::strstr(line, "samples_per_s=");
  return at != nullptr ? std::atof(at + std::strlen("samples_per_s=")) : 0;
}

int Main(int argc, char** argv) {
  int threads = 2, iters = 20;
  bool peer = false, mixed = false;
  double peer_dien = 1967, peer_din = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--peer") {
      peer = true;
    } else if (a == "--mixed") {
      mixed = true;
    } else if (a == "--peer_din_sps" && i + 1 < argc) {
      peer_din = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--iters N] [--peer] [--mixed]\n", argv[0]);
      return 2;
    }
  }
  ThreadPool pool(threads);
  const Batch b = MakeBatch(mixed, 1);
  DienOptions dien;
  dien.max_batch = kB;
  DinOptions din;
  din.max_batch = kB;
  double dien_ms = 0, dien_best = 0, dien_cpu = 0, din_ms = 0, din_best = 0, din_cpu = 0;
  if (!Run<Dien>("dien", dien, b, &pool, iters, &dien_ms, &dien_best, &dien_cpu)) return 1;
  if (!Run<Din>("din", din, b, &pool, iters, &din_ms, &din_best, &din_cpu)) return 1;
  const char* baseline = "recorded";
  if (peer) {
    const double pd = PeerSamplesPerSecond("dien", threads);
    const double pn = PeerSamplesPerSecond("din", threads);
    if (pd > 0) peer_dien = pd;
    if (pn > 0) peer_din = pn;
    baseline = pd > 0 ? "measured" : "recorded";
  }
  const double dien_sps = kB / (dien_ms / 1e3), din_sps = kB / (din_ms / 1e3);
  ResultLine r("model_step_cpu");
  r.Add("dien_ms", dien_ms)
      .Add("dien_best_ms", dien_best)
      .Add("dien_cpu_ms", dien_cpu)
      .Add("dien_sps", dien_sps)
      .Add("din_ms", din_ms)
      .Add("din_cpu_ms", din_cpu)
      .Add("din_sps", din_sps)
      .Add("peer_dien_sps", peer_dien)
      .Add("ratio_dien", dien_sps / peer_dien);
  if (peer_din > 0) r.Add("peer_din_sps", peer_din).Add("ratio_din", din_sps / peer_din);
  r.Add("target", 1.5)
      .Add("baseline", baseline)
      .Add("threads", threads)
      .Add("lengths", mixed ? "mixed" : "full")
      .Add("load1", Load1());
  r.Print();
  return 0;
}

}  // namespace
}  // namespace ips::models

int main(int argc, char** argv) { return ips::models::Main(argc, argv); }
