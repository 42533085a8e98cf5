// Converter throughput: events/s of `ConvertDataset` (parse, sort, split, build examples, write
// shards) on a synthetic Taobao-format CSV written to a temp dir first. Ceiling measured in the
// same run: LineReader alone (read + split lines, no parsing) over the same file.
//   convert_bench [--events N] [--users N] [--gzip 1]
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "common/random.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"
#include "worker/line_reader.h"

namespace {

int64_t Arg(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return def;
}

// CPU seconds of this process: on a shared VM the wall clock also counts other processes'
// time slices (both are reported; the converter is single-threaded).
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "convert_bench: verification failed: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t events = Arg(argc, argv, "--events", 3000000);
  const int64_t users = Arg(argc, argv, "--users", 50000);
  const bool gzip = Arg(argc, argv, "--gzip", 0) != 0;
  char tmpl[] = "/tmp/ips_convert_bench_XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Fail("mkdtemp");
  const std::string dir = tmpl;
  const std::string input = dir + "/UserBehavior.csv" + (gzip ? ".gz" : "");
  // Synthetic UserBehavior rows: user, item (skewed), category = item / 100, behaviour, time.
  int64_t distinct_users = 0;
  {
    static const char* kBehaviors[] = {"pv", "pv", "pv", "pv", "pv", "pv", "cart", "fav", "buy"};
    ips::Rng rng(3);
    std::string text;
    text.reserve(events * 40);
    std::vector<char> seen(users + 1, 0);
    for (int64_t i = 0; i < events; ++i) {
      const uint64_t u = 1 + rng.UniformInt(users);
      distinct_users += !seen[u];
      seen[u] = 1;
      const double x = rng.Uniform();
      const uint64_t item = 1 + static_cast<uint64_t>(x * x * 2000000);
      text += std::to_string(u) + "," + std::to_string(item) + "," +
              std::to_string(1000 + item / 100) + "," + kBehaviors[rng.UniformInt(9)] + "," +
              std::to_string(1511000000 + static_cast<int64_t>(rng.UniformInt(700000))) + "\n";
    }
    if (gzip) {
      gzFile gz = gzopen(input.c_str(), "wb1");
      gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
      gzclose(gz);
    } else {
      std::ofstream(input) << text;
    }
  }
  // Ceiling: read the lines only.
  const double read_cpu0 = CpuSeconds();
  int64_t lines = 0;
  {
    auto r = ips::LineReader::Open(input);
    if (!r.ok()) return Fail(r.status().ToString());
    std::string_view line;
    for (;;) {
      auto more = (*r)->Next(&line);
      if (!more.ok() || !*more) break;
      ++lines;
    }
  }
  const double read_s = CpuSeconds() - read_cpu0;
  if (lines != events) return Fail("line count");
  ips::ConvertOptions opt;
  opt.format = "taobao";
  opt.input = input;
  opt.output = dir + "/ds";
  opt.shards = 4;
  ips::Timer tc;
  const double cpu0 = CpuSeconds();
  auto m = ips::ConvertDataset(opt);
  const double convert_s = tc.Seconds();
  const double convert_cpu_s = CpuSeconds() - cpu0;
  if (!m.ok()) return Fail(m.status().ToString());
  // Verify: every event kept and readable, users counted exactly, shards open with valid CRCs.
  if (m->events != static_cast<uint64_t>(events) ||
      m->users != static_cast<uint64_t>(distinct_users))
    return Fail("counts: events " + std::to_string(m->events) + " users " +
                std::to_string(m->users) + " vs " + std::to_string(distinct_users));
  auto d = ips::Dataset::Open(opt.output);
  if (!d.ok()) return Fail(d.status().ToString());
  uint64_t stored = 0;
  for (int s = 0; s < (*d)->num_shards(); ++s) stored += (*d)->shard(s).ev_item.size;
  if (stored != static_cast<uint64_t>(events)) return Fail("stored events");
  const std::string cleanup = "rm -rf '" + dir + "'";
  if (std::system(cleanup.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir.c_str());
  const double eps = events / convert_s;
  const double eps_cpu = events / convert_cpu_s;
  std::fprintf(stderr, "convert_bench: %lld events, %lld users, %llu items, %s input, 4 shards\n",
               (long long)events, (long long)distinct_users, (unsigned long long)m->items,
               gzip ? "gzip" : "plain");
  ips::ResultLine("convert")
      .Add("format", "taobao")
      .Add("gzip", gzip ? 1 : 0)
      .Add("events", events)
      .Add("seconds", convert_s)
      .Add("cpu_seconds", convert_cpu_s)
      .Add("events_per_s", eps)
      .Add("events_per_cpu_s", eps_cpu)
      .Add("read_only_lines_per_cpu_s", lines / read_s)
      .Add("ratio_to_read_only", eps_cpu / (lines / read_s))
      .Add("target", 1e6)
      .Add("target_met", eps_cpu >= 1e6 ? 1 : 0)
      .Print();
  return 0;
}
