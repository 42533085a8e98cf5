// Benchmark of the embedding store's DynamicTable (ps/dynamic_table.h): pull and push throughput
// in keys/s for batches of 64K unique keys x 18 floats drawn from a table of a few million rows
// (Adam: value + m + v per row), on 1 and 2 threads, and the measured memory per row against the
// 1.25 x payload target.
//
// It verifies before timing: a pulled batch equals the pure initialiser's rows, and a push equals
// kernels::SparseUpdate applied to copies of the rows. Its ceiling, measured in the same run, is
// the same work on a plain dense [rows x 18] array indexed by row number (no hashing, no locks,
// no dynamic growth): a row-gather memcpy for pull and SparseUpdate on the dense tables for push.
// ratio = ours / ceiling (1.0 = as fast as a static array). The last line is
//   RESULT embedding_table rows=... pull_1t_keys_per_s=... ... bytes_ratio=... target=1.25
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "common/random.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "kernels/optimizer.h"
#include "ps/dynamic_table.h"

namespace ips::ps {
namespace {

struct Flags {
  int64_t rows = 3000000;
  int64_t batch = 65536;
  int iters = 8;  // batches per thread per measurement
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name, int64_t* out) {
      const std::string prefix = std::string("--") + name + "=";
      if (arg.rfind(prefix, 0) != 0) return false;
      *out = std::atoll(arg.c_str() + prefix.size());
      return true;
    };
    int64_t iters = 0;
    if (value("rows", &f->rows) || value("batch", &f->batch)) continue;
    if (value("iters", &iters)) {
      f->iters = static_cast<int>(iters);
      continue;
    }
    std::fprintf(stderr, "embedding_table_bench: unknown flag '%s' (--rows --batch --iters)\n",
                 arg.c_str());
    return false;
  }
  if (f->rows < 4 * f->batch || f->batch < 1 || f->iters < 1) {
    std::fprintf(stderr, "embedding_table_bench: need rows >= 4 * batch, batch >= 1, iters >= 1\n");
    return false;
  }
  return true;
}

uint64_t KeyOf(int64_t i) { return Mix64(static_cast<uint64_t>(i) + 1); }

bool Check(bool ok, const char* what) {
  if (!ok) std::fprintf(stderr, "embedding_table_bench: verification failed: %s\n", what);
  return ok;
}

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Runs fn(thread, iteration) for `threads` threads x iters iterations; returns wall seconds and,
// in *cpu_s, the CPU seconds of thread 0 (this VM's cores are shared, so CPU time is the steadier
// measure of the work; wall time is what a caller sees).
template <typename Fn>
double TimeThreads(int threads, int iters, Fn fn, double* cpu_s = nullptr) {
  Timer timer;
  std::vector<std::thread> pool;
  std::vector<double> cpu(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const double c0 = ThreadCpuSeconds();
      for (int it = 0; it < iters; ++it) fn(t, it);
      cpu[t] = ThreadCpuSeconds() - c0;
    });
  for (auto& th : pool) th.join();
  if (cpu_s != nullptr) *cpu_s = cpu[0];
  return timer.Seconds();
}

int Run(const Flags& flags) {
  const int64_t n = flags.rows, b = flags.batch, dim = 18;
  TableOptions o;
  o.name = "item";
  o.dim = dim;
  o.optimizer.type = OptimizerOptions::Type::kAdam;
  o.optimizer.learning_rate = 0.001;
  o.initializer.type = InitializerOptions::Type::kXavierNormal;
  o.initializer.xavier_fan_rows = static_cast<double>(n);
  auto created = DynamicTable::Create(o);
  if (!created.ok()) {
    std::fprintf(stderr, "embedding_table_bench: %s\n", created.status().ToString().c_str());
    return 1;
  }
  DynamicTable& table = **created;

  // Fill the table: rows for keys KeyOf(0 .. n-1).
  Timer fill_timer;
  std::vector<uint64_t> keys(static_cast<size_t>(b));
  std::vector<float> out(static_cast<size_t>(b * dim));
  for (int64_t start = 0; start < n; start += b) {
    const int64_t m = std::min(b, n - start);
    for (int64_t i = 0; i < m; ++i) keys[i] = KeyOf(start + i);
    if (!table.Pull(keys.data(), m, out.data()).ok()) return 1;
  }
  const double fill_s = fill_timer.Seconds();
  const TableStats st = table.Stats();
  if (!Check(st.rows == n, "row count after fill")) return 1;
  const double bytes_per_row = st.BytesPerRow();
  const double target_bytes = 1.25 * static_cast<double>(st.payload_bytes_per_row);
  std::printf(
      "table: %lld rows x %lld (Adam), filled in %.2f s; %.1f bytes/row "
      "(payload %lld, target %.1f; slabs %.1f MB, index %.1f MB)\n",
      static_cast<long long>(n), static_cast<long long>(dim), fill_s, bytes_per_row,
      static_cast<long long>(st.payload_bytes_per_row), target_bytes, st.slab_bytes / 1048576.0,
      st.index_bytes / 1048576.0);

  // Batches of unique keys: disjoint slices of a random permutation of the row numbers.
  const int num_batches = 2 * flags.iters;
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  Rng rng(1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.UniformInt(i + 1)]);
  std::vector<std::vector<int64_t>> rows(num_batches);
  std::vector<std::vector<uint64_t>> batch_keys(num_batches);
  for (int k = 0; k < num_batches; ++k) {
    const int64_t off = (static_cast<int64_t>(k) * b) % (n - b);
    rows[k].assign(perm.begin() + off, perm.begin() + off + b);
    batch_keys[k].resize(b);
    for (int64_t i = 0; i < b; ++i) batch_keys[k][i] = KeyOf(rows[k][i]);
  }
  std::vector<float> grads(static_cast<size_t>(b * dim));
  for (auto& g : grads) g = static_cast<float>(rng.Uniform() * 2 - 1) * 0.01f;

  // --- Verify pull: the initialiser's rows. ---
  {
    if (!table.Pull(batch_keys[0].data(), b, out.data()).ok()) return 1;
    std::vector<float> want(dim);
    for (int64_t i = 0; i < b; i += 61) {
      table.InitialRow(batch_keys[0][i], want.data());
      if (!Check(std::memcmp(want.data(), out.data() + i * dim, dim * sizeof(float)) == 0,
                 "pulled row != InitializeRow"))
        return 1;
    }
  }
  // --- Verify push: equals SparseUpdate on copies of 512 of the rows. ---
  {
    const int64_t m = 512;
    std::vector<float> p(m * dim), s0(m * dim), s1(m * dim), state(2 * dim);
    for (int64_t i = 0; i < m; ++i) {
      table.ReadRow(batch_keys[0][i], p.data() + i * dim, state.data());
      std::memcpy(s0.data() + i * dim, state.data(), dim * sizeof(float));
      std::memcpy(s1.data() + i * dim, state.data() + dim, dim * sizeof(float));
    }
    if (!table.Push(batch_keys[0].data(), b, grads.data()).ok()) return 1;
    std::vector<int64_t> idx(m);
    for (int64_t i = 0; i < m; ++i) idx[i] = i;
    kernels::SparseUpdateArgs<float> a;
    a.hyper = ToOptimizerHyper(o.optimizer);
    a.step = table.optimizer_step();
    a.table_rows = m;
    a.dim = dim;
    a.param = p.data();
    a.state0 = s0.data();
    a.state1 = s1.data();
    a.num_rows = m;
    a.row_indices = idx.data();
    a.grad = grads.data();
    if (!kernels::SparseUpdate<float>(kernels::Context{}, a).ok()) return 1;
    std::vector<float> got(dim);
    for (int64_t i = 0; i < m; ++i) {
      table.ReadRow(batch_keys[0][i], got.data(), state.data());
      if (!Check(std::memcmp(got.data(), p.data() + i * dim, dim * sizeof(float)) == 0 &&
                     std::memcmp(state.data(), s0.data() + i * dim, dim * sizeof(float)) == 0 &&
                     std::memcmp(state.data() + dim, s1.data() + i * dim, dim * sizeof(float)) == 0,
                 "pushed row != SparseUpdate on a copy"))
        return 1;
    }
  }

  // --- Timing: ours. Thread t uses batches t, t+2, ... so 2 threads never share a batch. ---
  std::vector<std::vector<float>> outs(2, std::vector<float>(static_cast<size_t>(b * dim)));
  std::atomic<bool> ok{true};
  auto pull = [&](int t, int it) {
    if (!table.Pull(batch_keys[(2 * it + t) % num_batches].data(), b, outs[t].data()).ok())
      ok = false;
  };
  auto push = [&](int t, int it) {
    if (!table.Push(batch_keys[(2 * it + t) % num_batches].data(), b, grads.data()).ok())
      ok = false;
  };
  pull(0, 0);  // warm the per-thread scratch
  const double keys1 = static_cast<double>(b) * flags.iters;
  double pull1_cpu = 0, push1_cpu = 0, gather1_cpu = 0, update1_cpu = 0;
  const double pull1 = keys1 / TimeThreads(1, flags.iters, pull, &pull1_cpu);
  const double pull2 = 2.0 * keys1 / TimeThreads(2, flags.iters, pull);
  const double push1 = keys1 / TimeThreads(1, flags.iters, push, &push1_cpu);
  const double push2 = 2.0 * keys1 / TimeThreads(2, flags.iters, push);
  if (!Check(ok, "a timed pull or push failed")) return 1;

  // --- Ceiling: the same batches on a dense [n x dim] array indexed by row number. ---
  std::vector<float> dense(static_cast<size_t>(n * dim), 0.01f);
  std::vector<float> dm(static_cast<size_t>(n * dim), 0.0f), dv(static_cast<size_t>(n * dim), 0.0f);
  auto gather = [&](int t, int it) {
    const auto& r = rows[(2 * it + t) % num_batches];
    float* dst = outs[t].data();
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(dst + i * dim, dense.data() + r[i] * dim, dim * sizeof(float));
  };
  int64_t dense_step = 0;
  auto update = [&](int t, int it) {
    kernels::SparseUpdateArgs<float> a;
    a.hyper = ToOptimizerHyper(o.optimizer);
    a.step = ++dense_step;
    a.table_rows = n;
    a.dim = dim;
    a.param = dense.data();
    a.state0 = dm.data();
    a.state1 = dv.data();
    a.num_rows = b;
    a.row_indices = rows[(2 * it + t) % num_batches].data();
    a.grad = grads.data();
    if (!kernels::SparseUpdate<float>(kernels::Context{}, a).ok()) ok = false;
  };
  gather(0, 0);
  const double gather1 = keys1 / TimeThreads(1, flags.iters, gather, &gather1_cpu);
  const double update1 = keys1 / TimeThreads(1, flags.iters, update, &update1_cpu);
  if (!Check(ok, "ceiling update failed")) return 1;

  std::printf(
      "pull: 1 thread %.3g keys/s (%.3g per CPU-s), 2 threads %.3g keys/s; dense gather "
      "%.3g keys/s (%.3g per CPU-s); ratio %.2f (CPU %.2f)\n",
      pull1, keys1 / pull1_cpu, pull2, gather1, keys1 / gather1_cpu, pull1 / gather1,
      gather1_cpu / pull1_cpu);
  std::printf(
      "push: 1 thread %.3g keys/s (%.3g per CPU-s), 2 threads %.3g keys/s; dense Adam "
      "%.3g keys/s (%.3g per CPU-s); ratio %.2f (CPU %.2f)\n",
      push1, keys1 / push1_cpu, push2, update1, keys1 / update1_cpu, push1 / update1,
      update1_cpu / push1_cpu);
  std::printf("memory: %.1f bytes/row = %.3f x payload (target 1.25)\n", bytes_per_row,
              bytes_per_row / st.payload_bytes_per_row);
  ResultLine("embedding_table")
      .Add("rows", n)
      .Add("dim", dim)
      .Add("batch", b)
      .Add("pull_1t_keys_per_s", pull1)
      .Add("pull_2t_keys_per_s", pull2)
      .Add("push_1t_keys_per_s", push1)
      .Add("push_2t_keys_per_s", push2)
      .Add("pull_ceiling_keys_per_s", gather1)
      .Add("push_ceiling_keys_per_s", update1)
      .Add("pull_1t_keys_per_cpu_s", keys1 / pull1_cpu)
      .Add("push_1t_keys_per_cpu_s", keys1 / push1_cpu)
      .Add("pull_ratio", pull1 / gather1)
      .Add("push_ratio", push1 / update1)
      .Add("pull_cpu_ratio", gather1_cpu / pull1_cpu)
      .Add("push_cpu_ratio", update1_cpu / push1_cpu)
      .Add("bytes_per_row", bytes_per_row)
      .Add("bytes_ratio", bytes_per_row / st.payload_bytes_per_row)
      .Add("target", 1.25)
      .Print();
  return 0;
}

}  // namespace
}  // namespace ips::ps

int main(int argc, char** argv) {
  ips::ps::Flags flags;
  if (!ips::ps::ParseFlags(argc, argv, &flags)) return 2;
  return ips::ps::Run(flags);
}
