// Throughput of `ips data synth` (worker/synth.h), single thread.
//
// Verifies first (every formatted line parses back to the generated event; the planted interests
// carry >= 85% of a sample's events), then times: generation alone, generation + TSV formatting,
// the full writer to /dev/null (wall and CPU time) and to a gzip file, and, as the ceiling of the
// text path, formatting already-generated events alone. Ratios are against that ceiling.
//   synth_bench [--events N]   (default 3,000,000)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result_line.h"
#include "common/timer.h"
#include "worker/record_parsers.h"
#include "worker/synth.h"

namespace ips {
namespace {

SynthOptions BenchOptions(int64_t events) {
  SynthOptions o;  // the command's defaults (drift, two domains, cold start) plus gradual drift
  o.events = events;
  o.drift_at = 0.5;
  o.drift_rate = 0.5;
  o.domain1_fraction = 0.2;
  o.cold_users = 0.1;
  o.cold_items = 0.1;
  return o;
}

bool Verify(const SynthModel& model) {
  SynthGenerator gen(&model);
  Event e, back;
  SynthEventTruth t;
  std::string line;
  int64_t n = 0, in_interest = 0;
  while (gen.Next(&e, &t) && n < 200000) {
    line.clear();
    AppendEventLine(e, &line);
    line.pop_back();  // "\n"
    FieldError err;
    if (!ParseEventLine(line, &back, &err) || back.user != e.user || back.item != e.item ||
        back.category != e.category || back.timestamp != e.timestamp || back.action != e.action ||
        back.domain != e.domain) {
      std::fprintf(stderr, "verify: line %lld does not round-trip: %s\n", static_cast<long long>(n),
                   line.c_str());
      return false;
    }
    uint32_t cats[kSynthMaxInterests];
    const int k = model.Interests(e.user, t.index, cats);
    for (int j = 0; j < k; ++j) in_interest += cats[j] == t.category_index;
    ++n;
  }
  const double frac = static_cast<double>(in_interest) / static_cast<double>(n);
  std::fprintf(stderr, "verify: %lld events round-trip; %.3f in the users' interests\n",
               static_cast<long long>(n), frac);
  return frac >= 0.85;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) {
  using namespace ips;
  int64_t events = 3000000;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--events") == 0) events = std::atoll(argv[i + 1]);
  const SynthOptions o = BenchOptions(events);
  auto model_or = SynthModel::Create(o);
  if (!model_or.ok()) {
    std::fprintf(stderr, "%s\n", model_or.status().ToString().c_str());
    return 1;
  }
  const SynthModel& model = **model_or;
  if (!Verify(model)) return 1;

  // Generation alone.
  Timer t;
  {
    SynthGenerator gen(&model);
    Event e;
    uint64_t sink = 0;
    while (gen.Next(&e)) sink += e.item;
    if (sink == 0) std::fprintf(stderr, "impossible\n");
  }
  const double gen_s = t.Seconds();

  // Ceiling of the text path: formatting a block of already-generated events, repeatedly.
  std::vector<Event> block;
  {
    SynthGenerator gen(&model);
    Event e;
    while (block.size() < (1u << 20) && gen.Next(&e)) block.push_back(e);
  }
  std::string buf;
  buf.reserve(1 << 21);
  t.Reset();
  int64_t formatted = 0;
  while (formatted < events) {
    for (const Event& e : block) {
      AppendEventLine(e, &buf);
      if (buf.size() >= (1 << 20)) buf.clear();
      if (++formatted == events) break;
    }
  }
  const double format_s = t.Seconds();

  // Generation + formatting into memory.
  t.Reset();
  {
    SynthGenerator gen(&model);
    Event e;
    buf.clear();
    while (gen.Next(&e)) {
      AppendEventLine(e, &buf);
      if (buf.size() >= (1 << 20)) buf.clear();
    }
  }
  const double gen_format_s = t.Seconds();

  // The writer, plain to /dev/null and gzip (level 1) to a temporary file.
  // CPU time as well as wall time: on a shared 2-core VM the wall-clock rate mostly measures the
  // neighbours.
  SynthStats plain, gz;
  const std::clock_t cpu0 = std::clock();
  Status st = WriteSynthEvents(o, "/dev/null", "", 1, 0, {}, &plain);
  const double write_cpu_s = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  const std::string gz_path = "/tmp/synth_bench_" + std::to_string(getpid()) + ".tsv.gz";
  if (st.ok()) st = WriteSynthEvents(o, gz_path, "", 1, 0, {}, &gz);
  std::remove(gz_path.c_str());
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  const double m = 1e6;
  const double gen_meps = events / gen_s / m, format_meps = events / format_s / m;
  const double gen_format_meps = events / gen_format_s / m;
  const double write_meps = events / plain.seconds / m, gzip_meps = events / gz.seconds / m;
  std::fprintf(stderr,
               "events=%lld gen %.2f M/s | format-only ceiling %.2f M/s | gen+format %.2f M/s | "
               "write /dev/null %.2f M/s (%.1f MB/s) | gzip-1 %.2f M/s\n",
               static_cast<long long>(events), gen_meps, format_meps, gen_format_meps, write_meps,
               plain.bytes / plain.seconds / m, gzip_meps);
  ResultLine("synth_bench")
      .Add("events", events)
      .Add("gen_meps", gen_meps)
      .Add("format_ceiling_meps", format_meps)
      .Add("gen_format_meps", gen_format_meps)
      .Add("write_meps", write_meps)
      .Add("write_cpu_meps", events / write_cpu_s / m)
      .Add("gzip1_meps", gzip_meps)
      .Add("ratio_write_vs_format", write_meps / format_meps)
      .Add("target_meps", 3.0)
      .Print();
  return 0;
}
