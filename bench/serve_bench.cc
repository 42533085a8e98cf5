// serve_bench: latency of scoring one request with the serving library (worker/serving.h) on
// one thread: DIN at the paper's sizes (dim 18, attention 80/40, MLP 200/80, PReLU), a 50-event
// history and 100 candidates, from a bundle exported from a checkpoint.
//
// Verifies first (the scorer's logits equal the model's own inference forward on the same rows,
// max abs diff <= 1e-5), then times Scorer::Score per request (p50, p99, throughput) and, as the
// ceiling, the bare model Forward on pre-gathered rows (the part of a request that is the
// model's math, not the serving library's lookups and copies).
//
// Usage: serve_bench [--requests N] [--items N]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "worker/checkpoint.h"
#include "worker/model_factory.h"
#include "worker/serving.h"

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

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

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
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--requests") == 0) requests = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--items") == 0) items = std::atoll(argv[i + 1]);
  }
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
  const int64_t kCats = 1000, T = 50, B = 100, D = 18;

  // A "trained" state: random dense weights, item and category tables of `items` rows.
  auto cfg = ParseConfigText(kConfig, "serve_bench config");
  if (!cfg.ok()) return std::fprintf(stderr, "%s\n", cfg.status().ToString().c_str()), 1;
  auto model = std::move(CreateCtrModel(*cfg, 128)).value();
  Rng rng(1);
  for (int64_t i = 0; i < model->params().size(); ++i)
    model->params().values()[i] = static_cast<float>(0.1 * rng.Normal());
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent content;
  AddModelState(model.get(), nullptr, &content);
  for (const char* name : {"item", "category"}) {
    ps::TableOptions o;
    o.name = name;
    o.dim = D;
    o.has_padding_key = true;
    tables.push_back(std::move(ps::DynamicTable::Create(o)).value());
    const int64_t n = tables.size() == 1 ? items : kCats;
    std::vector<uint64_t> keys(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) keys[k] = static_cast<uint64_t>(k + 1);
    std::vector<float> rows(keys.size() * D);
    if (!tables.back()->Pull(keys.data(), n, rows.data()).ok()) return 1;
    content.tables.push_back(tables.back().get());
  }
  content.config_text = kConfig;
  char tmpl[] = "/tmp/ips_serve_bench_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  CheckpointOptions co;
  co.dir = dir + "/ckpt";
  if (!std::move(CheckpointWriter::Create(co)).value()->Write(1, content).ok()) return 1;
  ExportOptions eo;
  eo.checkpoint = co.dir;
  eo.output = dir + "/bundle";
  auto ex = ExportBundle(eo);
  if (!ex.ok()) return std::fprintf(stderr, "%s\n", ex.status().ToString().c_str()), 1;
  auto bundle = std::move(Bundle::Load(eo.output)).value();
  auto scorer = std::move(Scorer::Create(bundle, 128)).value();

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

  // 1. Verify.
  double max_diff = 0;
  Rng vr(2);
  for (int i = 0; i < 5; ++i) {
    const ScoreRequest q = make_request(vr);
    ScoreResponse resp;
    std::fill(resp.scores.begin(), resp.scores.end(), NAN);
    if (!scorer->Score(q, &resp).ok()) return 1;
    Gathered g;
    gather(q, &g);
    if (!model->Forward(ctx, g.in, false, nullptr).ok()) return 1;
    for (int64_t b = 0; b < B; ++b) {
      const double d = std::fabs(double(resp.scores[b]) - double(model->logits()[b]));
      max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
    }
  }
  std::printf("verify: scorer vs model forward max abs diff %.3g (bundle %lld item rows)\n",
              max_diff, static_cast<long long>(bundle->rows("item")));
  if (!(max_diff <= 1e-5)) {
    std::printf("RESULT serve_bench verified=false max_abs_diff=%g\n", max_diff);
    return 1;
  }

  // 2. Time the scorer, one request at a time (fresh requests, generated before timing).
  std::vector<ScoreRequest> reqs;
  Rng tr(3);
  for (int i = 0; i < requests; ++i) reqs.push_back(make_request(tr));
  ScoreResponse resp;
  for (int i = 0; i < 50; ++i) (void)scorer->Score(reqs[i % reqs.size()], &resp);  // warm-up
  std::vector<double> lat;
  Timer total;
  for (const auto& q : reqs) {
    Timer t;
    if (!scorer->Score(q, &resp).ok()) return 1;
    lat.push_back(t.Seconds() * 1e6);
  }
  const double seconds = total.Seconds();

  // 3. Ceiling: the bare model forward on pre-gathered rows.
  Gathered g;
  gather(reqs[0], &g);
  std::vector<double> fwd;
  for (int i = 0; i < std::min(requests, 500); ++i) {
    Timer t;
    if (!model->Forward(ctx, g.in, false, nullptr).ok()) return 1;
    fwd.push_back(t.Seconds() * 1e6);
  }
  const double p50 = Percentile(lat, 0.5), p99 = Percentile(lat, 0.99);
  const double f50 = Percentile(fwd, 0.5);
  std::printf("scorer: p50 %.1f us, p99 %.1f us, %.0f requests/s, %.0f candidates/s (1 thread)\n",
              p50, p99, requests / seconds, requests * B / seconds);
  std::printf("model forward alone (ceiling): p50 %.1f us; serving overhead %.2fx\n", f50,
              p50 / f50);
  ps::RemoveTree(dir);
  ResultLine("serve_bench")
      .Add("p50_us", p50)
      .Add("p99_us", p99)
      .Add("target_p99_us", int64_t{1000})
      .Add("qps", requests / seconds)
      .Add("candidates_per_s", requests * B / seconds)
      .Add("forward_p50_us", f50)
      .Add("overhead", p50 / f50)
      .Add("history", T)
      .Add("candidates", B)
      .Add("threads", int64_t{1})
      .Add("blas_core", coretype != nullptr ? coretype : "auto")
      .Add("verified", "true")
      .Print();
  return 0;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) { return ips::Run(argc, argv); }
