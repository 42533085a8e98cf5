// serve_bench: latency of scoring one request with the serving library (worker/serving.h) on
// ONE core: DIN at the paper's sizes (dim 18, attention 80/40, MLP 200/80, PReLU), a 50-event
// history and 100 candidates, from a bundle exported from a checkpoint. Target: p99 <= 1 ms.
//
// The process pins itself to one CPU (sched_setaffinity; --cpu N, default the last CPU it may
// use) and runs one thread (OpenBLAS too), and says so. Verifies first: the scorer's logits
// (the DIN serving fast path, models/din_serving.h) equal the model's own inference Forward on
// the same rows and the generic scorer's (fast path off), max abs diff <= 1e-5, and the JSON
// path (BundleServer::HandleLine, what `ips serve` runs per stdin line) answers those scores.
// Then times, request by request and interleaved so that load from other processes hits all
// alike, on the same requests:
//   fast     Scorer::Score through the fast path (the target's number): wall p50/p99/p999,
//            on-core (thread CPU time) p50/p99, heap allocations and page faults per request;
//   forward  the fast path's forward alone (DinServing::Score on pre-gathered rows);
//   json     HandleLine on the request's JSON line (parse, score, format), allocations too;
//   generic  Scorer::Score through the model's generic Forward (the baseline), and the bare
//            generic Forward on pre-gathered rows.
// On a machine shared with other processes the wall-clock p99 includes preemption (time the
// thread was runnable but not running): the bench counts the requests during which the thread
// was preempted (involuntary context switches) and gives the p99 of the others; the on-core p99
// leaves the waiting out (not the caches other processes evicted meanwhile). --fifo 1 runs the
// timed loops SCHED_FIFO (needs CAP_SYS_NICE): no other process preempts them, as on a core
// dedicated to serving. The RESULT line's met= compares the wall p99 with the target.
//
// Usage: serve_bench [--requests N] [--items N] [--cpu N] [--fifo 0|1]
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "common/allocation_counter.h"
#include "common/random.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "models/din.h"
#include "models/din_serving.h"
#include "ps/checkpoint_io.h"
#include "worker/serving.h"
#include "worker/serving_fixture.h"

// One thread means one BLAS thread too (when OpenBLAS is the GEMM backend).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace ips {
namespace {

constexpr char kConfig[] = R"(
version: 1
name: "serve_bench"
data { batch_size: 128 max_history: 50 }
model { type: DIN embedding_dim: 18 attention_hidden: [80, 40] mlp_hidden: [200, 80] activation: PRELU }
tables { name: "item" dim: 18 }
tables { name: "category" dim: 18 }
)";

constexpr double kTargetP99Us = 1000;

// CPU time of this thread: the on-core cost of a request, which preemption by other processes
// on a loaded machine does not inflate (wall-clock latency, the target, does include it).
double ThreadCpuUs() {
  timespec ts;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

// This thread's page faults (minor + major) and involuntary context switches (preemptions by
// other runnable threads) so far.
struct ThreadCounters {
  int64_t faults = 0, preemptions = 0;
  static ThreadCounters Now() {
    rusage ru;
    ::getrusage(RUSAGE_THREAD, &ru);
    return {static_cast<int64_t>(ru.ru_minflt + ru.ru_majflt), static_cast<int64_t>(ru.ru_nivcsw)};
  }
};

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// One timed section: wall and on-core microseconds per call.
struct Series {
  std::vector<double> wall, cpu;
  double p(double q) const { return Percentile(wall, q); }
  double cpu_p(double q) const { return Percentile(cpu, q); }
  template <typename Fn>
  bool Time(Fn&& fn) {
    const double c0 = ThreadCpuUs();
    Timer t;
    const bool ok = fn();
    wall.push_back(t.Seconds() * 1e6);
    cpu.push_back(ThreadCpuUs() - c0);
    return ok;
  }
};

int Run(int argc, char** argv) {
  // OpenBLAS picks its kernels by CPU detection at load time, and on some VMs (this one) it
  // falls back to the SSE3 "Prescott" kernels, 4-5x slower than the machine can do. Unless the
  // user chose a core type, re-run with the one the CPU supports (environment, not a result).
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const char* core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                         : nullptr;
    if (core != nullptr) {
      ::setenv("OPENBLAS_CORETYPE", core, 1);
      ::execv("/proc/self/exe", argv);  // returns only on failure: continue as we are
    }
  }
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("OPENBLAS_CORETYPE=%s\n", coretype != nullptr ? coretype : "(auto)");
  int requests = 2000;
  int64_t items = 100000;
  int cpu = -1;
  bool fifo = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--requests") == 0) requests = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--items") == 0) items = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--cpu") == 0) cpu = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--fifo") == 0) fifo = std::strcmp(argv[i + 1], "0") != 0;
  }
  if (requests < 1) return std::fprintf(stderr, "--requests must be >= 1\n"), 1;
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
  // One core: the last CPU this process may run on (CPU 0 takes most interrupts), or --cpu.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
    return std::fprintf(stderr, "sched_getaffinity failed\n"), 1;
  if (cpu < 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpu = c;
  if (cpu < 0 || cpu >= CPU_SETSIZE) return std::fprintf(stderr, "no cpu %d\n", cpu), 1;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (::sched_setaffinity(0, sizeof(one), &one) != 0)
    return std::fprintf(stderr, "cannot pin to cpu %d\n", cpu), 1;
  std::printf("pinned to cpu %d (of %d allowed), 1 thread, OpenBLAS threads 1\n", cpu,
              CPU_COUNT(&allowed));
  const int64_t kCats = 1000, T = 50, B = 100, D = 18;

  // A "trained" state: random dense weights, item keys 1..items and category keys 1..kCats,
  // exported to the bundle dir/bundle.
  auto state = MakeServingState(kConfig, 128, {items, kCats}, ps::TableOptions(), 0.1, 1);
  if (!state.ok()) return std::fprintf(stderr, "%s\n", state.status().ToString().c_str()), 1;
  char tmpl[] = "/tmp/ips_serve_bench_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  auto exported = ExportServingBundle(**state, dir, 1, /*fp16=*/false);
  if (!exported.ok()) return std::fprintf(stderr, "%s\n", exported.status().ToString().c_str()), 1;
  const std::shared_ptr<const Bundle> bundle = *exported;
  const auto& model = (*state)->model;
  const auto& tables = (*state)->tables;
  auto scorer = std::move(Scorer::Create(bundle, 128)).value();
  auto generic = std::move(Scorer::Create(bundle, 128, /*fast_path=*/false)).value();
  std::printf("scoring path: %s (baseline: %s)\n", scorer->scoring_path().c_str(),
              generic->scoring_path().c_str());

  auto make_request = [&](Rng& r) {
    ScoreRequest q;
    for (int64_t t = 0; t < T; ++t) {
      q.history.push_back(1 + r.UniformInt(static_cast<uint64_t>(items)));
      q.history_cats.push_back(1 + q.history.back() % kCats);
    }
    for (int64_t b = 0; b < B; ++b) {
      q.candidates.push_back(1 + r.UniformInt(static_cast<uint64_t>(items)));
      q.candidate_cats.push_back(1 + q.candidates.back() % kCats);
    }
    return q;
  };
  // Pre-gathered inputs of the bare forward for a request: one row per position.
  struct Gathered {
    std::vector<float> item_rows, cat_rows;
    std::vector<int64_t> index;
    std::vector<int32_t> lengths;
    models::CtrInputs<float> in;
  };
  auto gather = [&](const ScoreRequest& q, Gathered* g) {
    std::vector<uint64_t> ik(B * T + B), ck(B * T + B);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        ik[b * T + t] = q.history[t];
        ck[b * T + t] = q.history_cats[t];
      }
      ik[B * T + b] = q.candidates[b];
      ck[B * T + b] = q.candidate_cats[b];
    }
    g->item_rows.resize(ik.size() * D);
    g->cat_rows.resize(ck.size() * D);
    (void)tables[0]->Lookup(ik.data(), static_cast<int64_t>(ik.size()), g->item_rows.data());
    (void)tables[1]->Lookup(ck.data(), static_cast<int64_t>(ck.size()), g->cat_rows.data());
    g->index.resize(ik.size());
    for (size_t i = 0; i < ik.size(); ++i) g->index[i] = static_cast<int64_t>(i);
    g->lengths.assign(B, static_cast<int32_t>(T));
    g->in.batch = B;
    g->in.lengths = g->lengths.data();
    g->in.item_index = g->index.data();
    g->in.cat_index = g->index.data();
    g->in.item_rows = g->item_rows.data();
    g->in.num_item_rows = static_cast<int64_t>(ik.size());
    g->in.cat_rows = g->cat_rows.data();
    g->in.num_cat_rows = static_cast<int64_t>(ck.size());
  };

  kernels::Context ctx;
  auto* din = dynamic_cast<models::Din<float>*>(model.get());
  if (din == nullptr) return std::fprintf(stderr, "serve_bench: the model is not DIN\n"), 1;
  auto fast_forward = models::DinServing::Create(*din);
  if (!fast_forward.ok())
    return std::fprintf(stderr, "%s\n", fast_forward.status().ToString().c_str()), 1;
  auto server = BundleServer::Create(dir + "/bundle", /*poll_ms=*/60000, 128);
  if (!server.ok()) return std::fprintf(stderr, "%s\n", server.status().ToString().c_str()), 1;
  // The fast forward's inputs, pre-gathered: [T x 2D] history and [B x 2D] candidate behaviours.
  std::vector<float> hist_rows(T * 2 * D), cand_rows(B * 2 * D), item_tmp(B * D), cat_tmp(B * D);
  auto gather_behaviours = [&](const ScoreRequest& q) {
    auto put = [&](const std::vector<uint64_t>& ik, const std::vector<uint64_t>& ck, float* dst) {
      const int64_t n = static_cast<int64_t>(ik.size());
      (void)tables[0]->Lookup(ik.data(), n, item_tmp.data());
      (void)tables[1]->Lookup(ck.data(), n, cat_tmp.data());
      for (int64_t i = 0; i < n; ++i) {
        std::copy_n(item_tmp.data() + i * D, D, dst + i * 2 * D);
        std::copy_n(cat_tmp.data() + i * D, D, dst + i * 2 * D + D);
      }
    };
    put(q.history, q.history_cats, hist_rows.data());
    put(q.candidates, q.candidate_cats, cand_rows.data());
  };
  std::vector<float> fast_logits(B);

  // 1. Verify: fast scorer vs the model's Forward, the generic scorer and the fast forward alone;
  //    the JSON path answers the same scores.
  double max_diff = 0;
  bool json_ok = true;
  Rng vr(2);
  for (int i = 0; i < 5; ++i) {
    const ScoreRequest q = make_request(vr);
    ScoreResponse resp;
    resp.scores.assign(B, NAN);  // stale content must be replaced
    if (!scorer->Score(q, &resp).ok()) return 1;
    Gathered g;
    gather(q, &g);
    if (!model->Forward(ctx, g.in, false, nullptr).ok()) return 1;
    ScoreResponse base;
    if (!generic->Score(q, &base).ok() || resp.scores.size() != size_t(B) ||
        base.scores.size() != size_t(B))
      return std::fprintf(stderr, "scoring failed\n"), 1;
    gather_behaviours(q);
    std::fill(fast_logits.begin(), fast_logits.end(), NAN);
    if (!(*fast_forward)->Score(hist_rows.data(), T, cand_rows.data(), B, fast_logits.data()).ok())
      return 1;
    for (int64_t b = 0; b < B; ++b) {
      for (const float want : {model->logits()[b], base.scores[b], fast_logits[b]}) {
        const double d = std::fabs(double(resp.scores[b]) - double(want));
        max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
      }
    }
    std::string want = "{\"user\":" + std::to_string(i) +
                       ",\"version\":" + std::to_string(bundle->version()) + ",\"scores\":[";
    for (int64_t b = 0; b < B; ++b) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.9g", b > 0 ? "," : "", double(resp.scores[b]));
      want += buf;
    }
    want += "]}";
    bool ok = false;
    const std::string got =
        (*server)->HandleLine(i + 1, ScoreRequestLine(std::to_string(i), q), &ok);
    if (!ok || got != want) {
      json_ok = false;
      std::fprintf(stderr, "json response differs:\n got %s\nwant %s\n", got.c_str(), want.c_str());
    }
  }
  std::printf(
      "verify: fast scorer vs model forward, generic scorer and fast forward: max abs diff %.3g; "
      "json %s (bundle %lld item rows)\n",
      max_diff, json_ok ? "ok" : "MISMATCH", static_cast<long long>(bundle->rows("item")));
  if (!(max_diff <= 1e-5) || !json_ok) {
    std::printf("RESULT serve_bench verified=false max_abs_diff=%g json_ok=%d\n", max_diff,
                json_ok ? 1 : 0);
    return 1;
  }

  // 2. Time, request by request (fresh requests and their JSON lines, made before timing).
  std::vector<ScoreRequest> reqs;
  std::vector<std::string> lines;
  Rng tr(3);
  for (int i = 0; i < requests; ++i) {
    reqs.push_back(make_request(tr));
    lines.push_back(ScoreRequestLine(std::to_string(i), reqs.back()));
  }
  ScoreResponse resp, base;
  std::string json_out;
  bool ok = false;
  for (int i = 0; i < 50; ++i) {  // warm-up (buffers reach their size, caches fill)
    const int r = i % requests;
    (void)scorer->Score(reqs[r], &resp);
    (void)generic->Score(reqs[r], &base);
    (*server)->HandleLine(r, lines[r], &ok, &json_out);
  }
  // --fifo 1: the timed loops run SCHED_FIFO (other processes cannot preempt them; the
  // hypervisor still can): the latency of a core dedicated to serving, on a shared machine.
  if (fifo) {
    sched_param sp{};
    sp.sched_priority = 1;
    if (::sched_setscheduler(0, SCHED_FIFO, &sp) != 0) {
      std::perror("sched_setscheduler(SCHED_FIFO)");
      fifo = false;
    }
  }
  std::printf("timed loops: %s scheduling\n", fifo ? "SCHED_FIFO" : "normal (SCHED_OTHER)");
  Series fast, generic_s, forward, json;
  for (Series* s : {&fast, &generic_s, &forward, &json}) {  // no allocation inside the loop
    s->wall.reserve(static_cast<size_t>(requests));
    s->cpu.reserve(static_cast<size_t>(requests));
  }
  int64_t fast_allocs = 0, json_allocs = 0, fast_faults = 0, preempted = 0;
  std::vector<double> clean;  // wall us of the fast requests no other thread preempted
  clean.reserve(static_cast<size_t>(requests));
  double fast_seconds = 0;
  for (int i = 0; i < requests; ++i) {
    const ScoreRequest& q = reqs[i];
    const int64_t a0 = HeapAllocations();
    const ThreadCounters c0 = ThreadCounters::Now();
    if (!fast.Time([&] { return scorer->Score(q, &resp).ok(); })) return 1;
    const ThreadCounters c1 = ThreadCounters::Now();
    fast_faults += c1.faults - c0.faults;
    if (c1.preemptions != c0.preemptions)
      ++preempted;
    else
      clean.push_back(fast.wall.back());
    fast_allocs += HeapAllocations() - a0;
    fast_seconds += fast.wall.back() * 1e-6;
    if (!generic_s.Time([&] { return generic->Score(q, &base).ok(); })) return 1;
    gather_behaviours(q);
    if (!forward.Time([&] {
          return (*fast_forward)
              ->Score(hist_rows.data(), T, cand_rows.data(), B, fast_logits.data())
              .ok();
        }))
      return 1;
    const int64_t j0 = HeapAllocations();
    if (!json.Time([&] {
          (*server)->HandleLine(i, lines[i], &ok, &json_out);
          return ok;
        }))
      return 1;
    json_allocs += HeapAllocations() - j0;
  }

  if (fifo) {
    sched_param sp{};
    (void)::sched_setscheduler(0, SCHED_OTHER, &sp);
  }

  // 3. Reference: the bare generic model forward on pre-gathered rows.
  Gathered g;
  gather(reqs[0], &g);
  Series generic_forward;
  for (int i = 0; i < std::min(requests, 300); ++i)
    if (!generic_forward.Time([&] { return model->Forward(ctx, g.in, false, nullptr).ok(); }))
      return 1;

  const double p50 = fast.p(0.5), p99 = fast.p(0.99), p999 = fast.p(0.999);
  const double qps = requests / fast_seconds;
  const double per_request = 1.0 / requests;
  const bool met = p99 <= kTargetP99Us;
  std::printf(
      "fast scorer (%s): p50 %.1f us, p99 %.1f us, p999 %.1f us, %.0f requests/s, %.0f "
      "candidates/s (1 core); %.2f allocations, %.2f page faults per request\n",
      scorer->scoring_path().c_str(), p50, p99, p999, qps, qps * B, fast_allocs * per_request,
      fast_faults * per_request);
  std::printf("  on-core (thread CPU time): p50 %.1f us, p99 %.1f us\n", fast.cpu_p(0.5),
              fast.cpu_p(0.99));
  const double clean_p99 = clean.empty() ? NAN : Percentile(clean, 0.99);
  std::printf(
      "  preempted by another thread during %lld of %d requests (%.1f%%); wall p99 of the other "
      "%zu: %.1f us\n",
      static_cast<long long>(preempted), requests, 100.0 * preempted * per_request, clean.size(),
      clean_p99);
  std::printf(
      "fast forward alone (pre-gathered rows): p50 %.1f us, p99 %.1f us (on-core p99 %.1f)\n",
      forward.p(0.5), forward.p(0.99), forward.cpu_p(0.99));
  std::printf("json line (parse + score + format): p50 %.1f us, p99 %.1f us, %.2f allocations\n",
              json.p(0.5), json.p(0.99), json_allocs * per_request);
  std::printf(
      "generic scorer (model Forward): p50 %.1f us, p99 %.1f us (on-core p50 %.1f) -> fast is "
      "%.2fx (p50), %.2fx (p99)\n",
      generic_s.p(0.5), generic_s.p(0.99), generic_s.cpu_p(0.5), generic_s.p(0.5) / p50,
      generic_s.p(0.99) / p99);
  std::printf("bare generic forward on pre-gathered rows: p50 %.1f us, p99 %.1f us\n",
              generic_forward.p(0.5), generic_forward.p(0.99));
  std::printf("target p99 <= %.0f us: %s (wall p99 / target %.2f; on-core p99 / target %.2f)\n",
              kTargetP99Us, met ? "met" : "MISSED", p99 / kTargetP99Us,
              fast.cpu_p(0.99) / kTargetP99Us);
  ps::RemoveTree(dir);
  server->reset();  // stops the bundle watcher before the line
  ResultLine("serve_bench")
      .Add("p50_us", p50)
      .Add("p99_us", p99)
      .Add("p999_us", p999)
      .Add("target_p99_us", kTargetP99Us)
      .Add("p99_over_target", p99 / kTargetP99Us)
      .Add("met", met ? "true" : "false")
      .Add("cpu_p50_us", fast.cpu_p(0.5))
      .Add("cpu_p99_us", fast.cpu_p(0.99))
      .Add("preempted_frac", preempted * per_request)
      .Add("unpreempted_p99_us", clean_p99)
      .Add("qps", qps)
      .Add("candidates_per_s", qps * B)
      .Add("forward_p50_us", forward.p(0.5))
      .Add("forward_p99_us", forward.p(0.99))
      .Add("forward_cpu_p99_us", forward.cpu_p(0.99))
      .Add("json_p50_us", json.p(0.5))
      .Add("json_p99_us", json.p(0.99))
      .Add("allocs_per_request", fast_allocs * per_request)
      .Add("json_allocs_per_request", json_allocs * per_request)
      .Add("faults_per_request", fast_faults * per_request)
      .Add("generic_p50_us", generic_s.p(0.5))
      .Add("generic_p99_us", generic_s.p(0.99))
      .Add("speedup_p50", generic_s.p(0.5) / p50)
      .Add("speedup_p99", generic_s.p(0.99) / p99)
      .Add("generic_forward_p50_us", generic_forward.p(0.5))
      .Add("path", scorer->scoring_path())
      .Add("history", T)
      .Add("candidates", B)
      .Add("threads", int64_t{1})
      .Add("sched", fifo ? "fifo" : "normal")
      .Add("cpu", static_cast<int64_t>(cpu))
      .Add("blas_core", coretype != nullptr ? coretype : "auto")
      .Add("max_abs_diff", max_diff)
      .Add("verified", "true")
      .Print();
  return 0;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) { return ips::Run(argc, argv); }
