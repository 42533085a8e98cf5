// CPU timing of one SASRec (or BST) training step's model work, Forward(training) + Backward,
// at the peer's synthetic shapes: batch 512, T 50, d 50, 2 blocks, 1 head, dropout 0.5.
//
// Before timing it verifies the float model against the same model in double on the same batch
// (loss and every gradient, RelativeL2), and that the gradients are finite. Its own baselines,
// timed in the same run: the same model with fast_cpu_path = false (kernels/ throughout:
// OpenBLAS projections, kernels::Mha attention), and that path's projection GEMMs alone
// (q/k/v/ffn, forward and both backward GEMMs, at the same shapes, through kernels::Gemm). The
// baseline is the peer: --peer_ms (default: the peer README's 379.3 ms per SASRec step at batch 512
// on this VM, which also includes the optimizer), or --run_peer to time /usr/bin/python3
// ../shared/peers/bench.py here and now. The last line is
//   RESULT transformer_cpu model=sasrec ours_ms=... kernels_path_ms=... peer_ms=...
//          ratio=peer/ours ...
// Note the peer's step also runs its optimizers (dense Adam + SparseAdam); ours is the model only.
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
#include "kernels/gemm.h"
#include "models/bst.h"
#include "models/sasrec.h"

namespace ips::models {
namespace {

struct Flags {
  std::string model = "sasrec";
  int threads = 2;
  int batch = 512;
  int len = 50;
  int dim = 50;
  int blocks = 2;
  int heads = 1;
  double dropout = 0.5;
  int steps = 10;
  int warmup = 2;
  double peer_ms = 379.3;
  bool run_peer = false;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq),
                      v = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "--model")
      f->model = v;
    else if (key == "--threads")
      f->threads = std::atoi(v.c_str());
    else if (key == "--batch")
      f->batch = std::atoi(v.c_str());
    else if (key == "--len")
      f->len = std::atoi(v.c_str());
    else if (key == "--dim")
      f->dim = std::atoi(v.c_str());
    else if (key == "--blocks")
      f->blocks = std::atoi(v.c_str());
    else if (key == "--heads")
      f->heads = std::atoi(v.c_str());
    else if (key == "--dropout")
      f->dropout = std::atof(v.c_str());
    else if (key == "--steps")
      f->steps = std::atoi(v.c_str());
    else if (key == "--warmup")
      f->warmup = std::atoi(v.c_str());
    else if (key == "--peer_ms")
      f->peer_ms = std::atof(v.c_str());
    else if (key == "--run_peer")
      f->run_peer = true;
    else {
      std::fprintf(stderr, "transformer_bench: unknown flag '%s'\n", arg.c_str());
      return false;
    }
  }
  if (f->model != "sasrec" && f->model != "bst") {
    std::fprintf(stderr, "transformer_bench: --model must be sasrec or bst\n");
    return false;
  }
  return f->batch > 0 && f->len > 0 && f->dim > 0 && f->steps > 0 && f->threads > 0;
}

// CPU time of the whole process (all threads), ms: on this shared VM, wall time also counts
// other tenants' load, CPU time does not (reported alongside, not instead).
double ProcessCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename A, typename B>
double RelL2(const A* got, const B* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

bool AllFinite(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// The peer's synthetic SASRec step time (ms), timed now, or a negative value on failure.
double RunPeer(const Flags& f) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  const std::string peers = std::string(src != nullptr ? src : ".") + "/../shared/peers";
  const std::string cmd = "cd " + peers + " && /usr/bin/python3 bench.py --model sasrec " +
                          "--data synthetic --steps 20 --warmup 5 --threads " +
                          std::to_string(f.threads) + " --batch " + std::to_string(f.batch) +
                          " --seq " + std::to_string(f.len) + " --emb " + std::to_string(f.dim) +
                          " --dropout " + std::to_string(f.dropout) + " 2>/dev/null | tail -1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[512] = {0};
  const bool got = std::fgets(buf, sizeof(buf), p) != nullptr;
  pclose(p);
  const char* s = got ? std::strstr(buf, "samples_per_s=") : nullptr;
  if (s == nullptr) return -1;
  const double sps = std::atof(s + std::strlen("samples_per_s="));
  return sps > 0 ? 1000.0 * f.batch / sps : -1;
}

// Times the step's projection GEMMs alone: per block 5 Linear(d, d) layers (q, k, v, ffn.0,
// ffn.3), each one forward GEMM and two backward GEMMs over B*T rows.
double GemmCeilingMs(const Flags& f, int64_t width, int64_t ffn, int64_t rows) {
  // dx goes to its own buffer: feeding it back as x would shrink the values towards denormals.
  std::vector<float> x(rows * std::max(width, ffn), 0.5f), w(width * ffn, 0.01f),
      y(rows * std::max(width, ffn)), dw(width * ffn), dx(rows * std::max(width, ffn));
  kernels::Context ctx;
  auto one = [&]() {
    for (int b = 0; b < f.blocks; ++b)
      for (int l = 0; l < 5; ++l) {
        const int64_t in = l == 4 ? ffn : width, out = l == 3 ? ffn : width;
        (void)kernels::Gemm(
            ctx,
            kernels::MakeGemmArgs(false, true, rows, out, in, static_cast<const float*>(x.data()),
                                  in, static_cast<const float*>(w.data()), in, y.data(), out));
        (void)kernels::Gemm(
            ctx,
            kernels::MakeGemmArgs(true, false, out, in, rows, static_cast<const float*>(y.data()),
                                  out, static_cast<const float*>(x.data()), in, dw.data(), in));
        (void)kernels::Gemm(
            ctx,
            kernels::MakeGemmArgs(false, false, rows, in, out, static_cast<const float*>(y.data()),
                                  out, static_cast<const float*>(w.data()), in, dx.data(), in));
      }
  };
  one();
  std::vector<double> ms;
  for (int s = 0; s < std::max(3, f.steps / 2); ++s) {
    Timer t;
    one();
    ms.push_back(t.Millis());
  }
  return Median(ms);
}

int RunSasrec(const Flags& f) {
  SasrecOptions o;
  o.embedding_dim = f.dim;
  o.max_len = f.len;
  o.max_batch = f.batch;
  o.num_blocks = f.blocks;
  o.num_heads = f.heads;
  o.dropout = f.dropout;
  o.seed = 1;
  auto mf = Sasrec<float>::Create(o);
  auto md = Sasrec<double>::Create(o);
  if (!mf.ok() || !md.ok()) {
    std::fprintf(stderr, "transformer_bench: %s\n",
                 mf.ok() ? md.status().ToString().c_str() : mf.status().ToString().c_str());
    return 1;
  }
  const int64_t B = f.batch, L = f.len, d = f.dim, rows = 20000;
  // A pulled table of 20,000 unique rows (row 0 = padding), full-length sequences as in the
  // peer's synthetic protocol except for a few shorter ones to exercise padding.
  Rng rng(7);
  std::vector<int32_t> lengths(B, static_cast<int32_t>(L));
  for (int64_t b = 0; b < B; b += 16) lengths[b] = static_cast<int32_t>(rng.UniformInt(L + 1));
  std::vector<int64_t> index(3 * B * L, 0);
  for (int64_t k = 0; k < 3; ++k)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = L - lengths[b]; t < L; ++t)
        index[k * B * L + b * L + t] = 1 + static_cast<int64_t>(rng.UniformInt(rows - 1));
  std::vector<double> table_d(rows * d);
  for (auto& v : table_d) v = 0.1 * rng.Normal();
  std::vector<float> table_f(table_d.begin(), table_d.end());
  SeqInputs<float> inf;
  inf.batch = B;
  inf.lengths = lengths.data();
  inf.item_index = index.data();
  inf.item_rows = table_f.data();
  inf.num_item_rows = rows;
  SeqInputs<double> ind;
  ind.batch = B;
  ind.lengths = lengths.data();
  ind.item_index = index.data();
  ind.item_rows = table_d.data();
  ind.num_item_rows = rows;

  ThreadPool pool(f.threads);
  kernels::Context ctx;
  ctx.pool = &pool;
  std::vector<float> grad_f(rows * d);
  std::vector<double> grad_d(rows * d);
  // Verify: float vs double, same weights, same dropout step.
  {
    float lf = 0;
    double ld = 0;
    Status s = (*mf)->Forward(ctx, inf, true, &lf);
    if (s.ok()) s = (*md)->Forward(ctx, ind, true, &ld);
    if (s.ok()) s = (*mf)->Backward(ctx, inf, grad_f.data());
    if (s.ok()) s = (*md)->Backward(ctx, ind, grad_d.data());
    if (!s.ok()) {
      std::fprintf(stderr, "transformer_bench: %s\n", s.ToString().c_str());
      return 1;
    }
    const auto& pf = (*mf)->params();
    const auto& pd = (*md)->params();
    const double e_rows = RelL2(grad_f.data(), grad_d.data(), rows * d);
    const double e_dense = RelL2(pf.grads(), pd.grads(), pd.size());
    const double e_loss = std::fabs(lf - ld) / std::max(1e-12, std::fabs(ld));
    std::printf("verify: loss float %.6f double %.6f (rel %.2e); grad relL2 rows %.2e dense %.2e\n",
                lf, ld, e_loss, e_rows, e_dense);
    if (!(e_loss < 1e-4 && e_rows < 1e-3 && e_dense < 1e-3) ||
        !AllFinite(grad_f.data(), rows * d) || !AllFinite(pf.grads(), pf.size())) {
      std::printf("verify: FAILED\n");
      ResultLine("transformer_cpu").Add("model", "sasrec").Add("verified", 0).Print();
      return 1;
    }
  }
  md->reset();  // free the double model's memory before timing

  // Median wall ms of fwd and fwd+bwd and CPU ms of fwd+bwd over f.steps steps.
  auto time_model = [&](Sasrec<float>& m, double* fwd, double* step, double* cpu) {
    std::vector<double> fwd_ms, step_ms, cpu_ms;
    for (int s = 0; s < f.warmup + f.steps; ++s) {
      float loss = 0;
      const double cpu0 = ProcessCpuMs();
      Timer t;
      Status st = m.Forward(ctx, inf, true, &loss);
      const double t_fwd = t.Millis();
      if (st.ok()) st = m.Backward(ctx, inf, grad_f.data());
      const double t_step = t.Millis();
      if (!st.ok()) {
        std::fprintf(stderr, "transformer_bench: %s\n", st.ToString().c_str());
        return false;
      }
      if (s >= f.warmup) {
        fwd_ms.push_back(t_fwd);
        step_ms.push_back(t_step);
        cpu_ms.push_back(ProcessCpuMs() - cpu0);
      }
    }
    *fwd = Median(fwd_ms);
    *step = Median(step_ms);
    *cpu = Median(cpu_ms);
    return true;
  };
  double fwd = 0, ours = 0, cpu = 0;
  if (!time_model(**mf, &fwd, &ours, &cpu)) return 1;
  mf->reset();
  // Baseline in the same run: the same model on kernels/ throughout (OpenBLAS projections,
  // kernels::Mha attention, kernels' dropout masks for the attention).
  o.fast_cpu_path = false;
  auto mk = Sasrec<float>::Create(o);
  double kfwd = 0, kernels_ms = 0, kcpu = 0;
  if (!mk.ok() || !time_model(**mk, &kfwd, &kernels_ms, &kcpu)) return 1;
  mk->reset();
  const double gemm = GemmCeilingMs(f, d, d, B * L);
  double peer = f.peer_ms;
  std::string peer_src = "readme";
  if (f.run_peer) {
    const double p = RunPeer(f);
    if (p > 0) {
      peer = p;
      peer_src = "measured";
    } else {
      std::fprintf(stderr, "transformer_bench: the peer run failed; using --peer_ms\n");
    }
  }
  std::printf(
      "sasrec B=%d T=%d d=%d blocks=%d heads=%d dropout=%.2f threads=%d: fwd %.1f ms, "
      "fwd+bwd %.1f ms (%.0f seq/s, %.1f ms of CPU time); on kernels/ throughout %.1f ms "
      "(%.1f ms CPU); its OpenBLAS projection GEMMs alone %.1f ms; peer %.1f ms (%s)\n",
      f.batch, f.len, f.dim, f.blocks, f.heads, f.dropout, f.threads, fwd, ours,
      1000.0 * f.batch / ours, cpu, kernels_ms, kcpu, gemm, peer, peer_src.c_str());
  ResultLine("transformer_cpu")
      .Add("model", "sasrec")
      .Add("ours_ms", ours)
      .Add("fwd_ms", fwd)
      .Add("cpu_ms", cpu)
      .Add("kernels_path_ms", kernels_ms)
      .Add("speedup_vs_kernels_path", kernels_ms / ours)
      .Add("openblas_proj_gemm_ms", gemm)
      .Add("peer_ms", peer)
      .Add("peer", peer_src)
      .Add("ratio", peer / ours)
      .Add("seq_per_s", 1000.0 * f.batch / ours)
      .Add("target", 1.5)
      .Add("threads", f.threads)
      .Print();
  return 0;
}

int RunBst(const Flags& f) {
  BstOptions o;
  o.max_len = f.len;
  o.max_batch = f.batch;
  o.num_blocks = 1;
  o.num_heads = f.heads;
  o.dropout = f.dropout;
  auto m = Bst<float>::Create(o);
  if (!m.ok()) {
    std::fprintf(stderr, "transformer_bench: %s\n", m.status().ToString().c_str());
    return 1;
  }
  const int64_t B = f.batch, L = f.len, D = o.embedding_dim, items = 20000, cats = 1000;
  Rng rng(3);
  std::vector<int32_t> lengths(B, static_cast<int32_t>(L));
  std::vector<int64_t> ii(B * L + B), ci(B * L + B);
  for (auto& v : ii) v = static_cast<int64_t>(rng.UniformInt(items));
  for (auto& v : ci) v = static_cast<int64_t>(rng.UniformInt(cats));
  std::vector<float> it(items * D), ct(cats * D), labels(B);
  for (auto& v : it) v = 0.1f * static_cast<float>(rng.Normal());
  for (auto& v : ct) v = 0.1f * static_cast<float>(rng.Normal());
  for (auto& v : labels) v = static_cast<float>(rng.UniformInt(2));
  CtrInputs<float> in;
  in.batch = B;
  in.lengths = lengths.data();
  in.item_index = ii.data();
  in.cat_index = ci.data();
  in.item_rows = it.data();
  in.num_item_rows = items;
  in.cat_rows = ct.data();
  in.num_cat_rows = cats;
  in.labels = labels.data();
  ThreadPool pool(f.threads);
  kernels::Context ctx;
  ctx.pool = &pool;
  std::vector<float> gi(items * D), gc(cats * D);
  std::vector<double> step_ms;
  for (int s = 0; s < f.warmup + f.steps; ++s) {
    float loss = 0;
    Timer t;
    Status st = (*m)->Forward(ctx, in, true, &loss);
    if (st.ok()) st = (*m)->Backward(ctx, in, gi.data(), gc.data());
    if (!st.ok() || !std::isfinite(loss)) {
      std::fprintf(stderr, "transformer_bench: %s loss %f\n", st.ToString().c_str(), loss);
      return 1;
    }
    if (s >= f.warmup) step_ms.push_back(t.Millis());
  }
  const double ours = Median(step_ms);
  std::printf("bst B=%d T=%d E=%lld heads=%d dropout=%.2f threads=%d: fwd+bwd %.1f ms\n", f.batch,
              f.len, static_cast<long long>(2 * D), f.heads, f.dropout, f.threads, ours);
  ResultLine("transformer_cpu")
      .Add("model", "bst")
      .Add("ours_ms", ours)
      .Add("samples_per_s", 1000.0 * f.batch / ours)
      .Add("threads", f.threads)
      .Print();
  return 0;
}

}  // namespace
}  // namespace ips::models

int main(int argc, char** argv) {
  ips::models::Flags f;
  if (!ips::models::ParseFlags(argc, argv, &f)) return 2;
  return f.model == "sasrec" ? ips::models::RunSasrec(f) : ips::models::RunBst(f);
}
