// `ips data convert|inspect|synth`: the command-line face of the data layer (worker/
// dataset_builder.h, worker/data_reader.h). Usage errors exit 2 with usage text on stderr, data
// errors exit 1 naming file, line and field (or, for an input that would convert into a dataset
// that cannot train or evaluate, the file, what is missing and the remedy); success ends with one
// `RESULT data_* ...` line.
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/flags.h"
#include "common/progress.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"

namespace ips {
namespace {

constexpr char kDataUsage[] =
    "usage: ips data <subcommand> [flags]\n"
    "  convert   convert a dataset into interest-ps shards (ips data convert --help)\n"
    "  inspect   print counts and validate every CRC of a converted dataset: ips data inspect DIR\n"
    "  synth     generate a synthetic event log (ips data synth --help)\n";

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : "|") + x;
  return s;
}

// `--help` works even when required flags are missing.
bool WantsHelp(const std::vector<std::string>& args) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") return true;
  return false;
}

void DeclareConvertFlags(FlagSet* f) {
  f->Required("format", "input format: " + Join(ConvertFormats()) +
                            " (seqrec: `user item` per line in time order, space/tab separated; "
                            "extra columns are ignored, as the peer does; item ids >= 1, 0 is "
                            "padding)");
  f->Required("input",
              "input file (plain or gzip; a pipe or FIFO too), or directory for "
              "movielens100k/movielens1m (movielens1m: every ratings*.dat[.gz] in it)");
  f->Required("output",
              "output dataset directory (created if missing; an existing one must be empty or "
              "hold an earlier conversion)");
  f->String("eval_input", "", "dien only: DIEN's test file, converted into evaluation rows");
  f->Int("shards", 1, "number of shards (users are assigned by hash of their id)");
  f->Int("seed", 0, "seed (>= 0) of the evaluation-user sample and evaluation negatives");
  f->String("protocol", "",
            "seqrec|ctr (dien: given); default seqrec for movielens*/seqrec, ctr for "
            "taobao/events");
  f->Int("max_bad_records", 0, "skip and count up to N malformed lines (more fails)");
  f->Int("max_history", 50, "history window L (seqrec: positives at the last L train positions)");
  f->Int("eval_negatives", 100,
         "sampled negatives per evaluation list, 1..100000, drawn with replacement from the items "
         "the user never interacted with (seqrec/ctr; unused by dien; an input where a user "
         "interacted with every item is refused)");
  f->Int("eval_users", 10000,
         "evaluate a seeded random N >= 1 of the users with >= 3 events, or all of them when "
         "there are fewer (seqrec/ctr; unused by dien)");
  f->Int("min_user_events", 1,
         "drop (and count) users with fewer events (>= 0; an error if no user is left)");
}

int RunConvert(const std::vector<std::string>& args) {
  FlagSet flags("data convert");
  DeclareConvertFlags(&flags);
  flags.Bool("help", "print this help");
  if (WantsHelp(args)) {
    std::cerr << flags.Usage() << std::endl;
    return kExitOk;
  }
  if (Status s = flags.Parse(args); !s.ok() || flags.GetBool("help")) {
    if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
    std::cerr << flags.Usage() << std::endl;
    return s.ok() ? kExitOk : kExitUsage;
  }
  if (!flags.positional().empty()) {
    std::cerr << "error: unexpected argument '" << flags.positional()[0] << "'\n"
              << flags.Usage() << std::endl;
    return kExitUsage;
  }
  ConvertOptions opt;
  opt.format = flags.GetString("format");
  const auto& formats = ConvertFormats();
  if (std::find(formats.begin(), formats.end(), opt.format) == formats.end()) {
    std::cerr << "error: unknown --format '" << opt.format << "' (expected one of " << Join(formats)
              << ")\n"
              << flags.Usage() << std::endl;
    return kExitUsage;
  }
  opt.input = flags.GetString("input");
  opt.output = flags.GetString("output");
  opt.eval_input = flags.GetString("eval_input");
  opt.shards = static_cast<int>(flags.GetInt("shards"));
  // A negative --seed would silently become a huge unsigned one (-1 -> 2^64-1).
  if (flags.GetInt("seed") < 0) {
    std::cerr << "error: --seed must be >= 0 (got " << flags.GetInt("seed") << ")\n"
              << flags.Usage() << std::endl;
    return kExitUsage;
  }
  opt.seed = static_cast<uint64_t>(flags.GetInt("seed"));
  opt.protocol = flags.GetString("protocol");
  opt.max_bad_records = flags.GetInt("max_bad_records");
  opt.max_history = flags.GetInt("max_history");
  opt.eval_negatives = flags.GetInt("eval_negatives");
  opt.eval_users = flags.GetInt("eval_users");
  opt.min_user_events = flags.GetInt("min_user_events");
  if (!opt.protocol.empty() && opt.protocol != "seqrec" && opt.protocol != "ctr" &&
      opt.protocol != "given") {
    std::cerr << "error: unknown --protocol '" << opt.protocol << "'\n"
              << flags.Usage() << std::endl;
    return kExitUsage;
  }
  // Out-of-range flag values are usage errors (exit 2), found before any input is read.
  if (Status s = ValidateConvertOptions(opt); !s.ok()) {
    std::cerr << "error: " << s.message() << "\n" << flags.Usage() << std::endl;
    return kExitUsage;
  }
  // An --output that is a file, a checkpoint, a bundle or someone else's directory: refused
  // before the input is read (ConvertDataset checks again; this keeps the progress line out).
  if (Status s = CheckConvertOutput(opt.output); !s.ok()) {
    std::cerr << "error: " << s.message() << std::endl;
    return kExitError;
  }
  ProgressLine progress("convert " + opt.format, 0, "lines");
  opt.progress = [&](uint64_t lines) { progress.Update(static_cast<int64_t>(lines)); };
  Timer timer;
  StatusOr<Manifest> m = ConvertDataset(opt);
  const double seconds = timer.Seconds();
  if (!m.ok()) {
    progress.Finish();
    std::cerr << "error: " << m.status().message() << std::endl;
    return kExitError;
  }
  progress.Finish();
  std::cerr << "wrote " << m->shards.size() << " shard(s) to " << opt.output << ": " << m->users
            << " users, " << m->items << " items, " << m->categories << " categories, " << m->events
            << " events, " << m->train_examples << " train rows (" << m->train_examples_per_epoch
            << " per epoch), " << m->eval_examples << " eval rows; " << m->input_lines
            << " input lines = " << (m->input_lines - m->bad_records) << " kept/filtered + "
            << m->bad_records << " bad\n";
  for (const auto& [reason, n] : m->filtered)
    std::cerr << "  filtered " << reason << ": " << n << " lines\n";
  uint64_t filtered = 0;
  for (const auto& [reason, n] : m->filtered) filtered += n;
  ResultLine r("data_convert");
  r.Add("format", m->format)
      .Add("protocol", m->protocol)
      .Add("lines", m->input_lines)
      .Add("events", m->events)
      .Add("users", m->users)
      .Add("items", m->items)
      .Add("categories", m->categories)
      .Add("examples", m->train_examples_per_epoch)
      .Add("train_events", m->train_events)
      .Add("train_rows", m->train_examples)
      .Add("eval_examples", m->eval_examples)
      .Add("bad_records", m->bad_records)
      .Add("filtered", filtered)
      .Add("shards", static_cast<int64_t>(m->shards.size()))
      .Add("seconds", seconds)
      .Add("events_per_s", seconds > 0 ? static_cast<double>(m->events) / seconds : 0.0);
  r.Print();
  return kExitOk;
}

// Whole-file CRC32C, compared with the manifest's (the per-block CRCs are checked on open).
StatusOr<uint32_t> FileCrc(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError(path + ": cannot open");
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) crc = Crc32cExtend(crc, buf.data(), n);
  const bool err = std::ferror(f);
  std::fclose(f);
  if (err) return DataLossError(path + ": read error");
  return crc;
}

// `ips data inspect`'s usage: one usage line naming its DIR (FlagSet::Usage's own first line,
// "usage: ips data inspect [flags]", would be a second one), then the flags.
std::string InspectUsage(const FlagSet& flags) {
  const std::string usage = flags.Usage();
  const size_t first_line_end = usage.find('\n');
  return "usage: ips data inspect DIR [flags]\n" +
         (first_line_end == std::string::npos ? "" : usage.substr(first_line_end + 1));
}

int RunInspect(const std::vector<std::string>& args) {
  FlagSet flags("data inspect");
  flags.Bool("help", "print this help");
  if (WantsHelp(args)) {
    std::cerr << InspectUsage(flags) << std::flush;
    return kExitOk;
  }
  const Status parsed = flags.Parse(args);
  if (parsed.ok() && flags.GetBool("help")) {  // --help=true
    std::cerr << InspectUsage(flags) << std::flush;
    return kExitOk;
  }
  if (const Status& s = parsed; !s.ok() || flags.positional().size() != 1) {
    if (!s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
    } else if (flags.positional().empty()) {
      std::cerr << "error: ips data inspect: missing DIR (a dataset directory written by `ips "
                   "data convert`)\n";
    } else {
      std::cerr << "error: ips data inspect: expected one DIR, got " << flags.positional().size()
                << " arguments\n";
    }
    std::cerr << InspectUsage(flags) << std::flush;
    return kExitUsage;
  }
  const std::string dir = flags.positional()[0];
  Timer timer;
  auto data = Dataset::Open(dir);
  if (!data.ok()) {
    std::cerr << "error: " << data.status().ToString() << std::endl;
    return kExitError;
  }
  const Manifest& m = (*data)->manifest();
  uint64_t bytes = 0;
  std::vector<ManifestFile> files = m.shards;
  files.push_back(m.vocab);
  for (const ManifestFile& f : files) {
    auto crc = FileCrc(dir + "/" + f.file);
    if (!crc.ok()) {
      std::cerr << "error: " << crc.status().ToString() << std::endl;
      return kExitError;
    }
    if (*crc != f.crc) {
      char buf[128];
      std::snprintf(buf, sizeof(buf), "CRC mismatch (stored 0x%08x, computed 0x%08x)", f.crc, *crc);
      std::cerr << "error: DATA_LOSS: " << dir << "/" << f.file << ": whole file: " << buf
                << std::endl;
      return kExitError;
    }
    bytes += f.bytes;
  }
  std::printf("dataset %s\n  format %s, protocol %s (train negatives: %s x%lld per positive)\n",
              dir.c_str(), m.format.c_str(), m.protocol.c_str(), m.train_negatives.c_str(),
              static_cast<long long>(m.negatives_per_positive));
  std::printf("  users %llu  items %llu  categories %llu  events %llu\n",
              (unsigned long long)m.users, (unsigned long long)m.items,
              (unsigned long long)m.categories, (unsigned long long)m.events);
  std::printf("  train rows %llu (%llu examples per epoch)  eval %llu (x%llu candidates)\n",
              (unsigned long long)m.train_examples, (unsigned long long)m.train_examples_per_epoch,
              (unsigned long long)m.eval_examples, (unsigned long long)m.eval_candidates);
  std::printf("  input lines %llu  bad records %llu", (unsigned long long)m.input_lines,
              (unsigned long long)m.bad_records);
  for (const auto& [reason, n] : m.filtered)
    std::printf("  filtered %s %llu", reason.c_str(), (unsigned long long)n);
  std::printf("\n  shards %zu (%llu bytes with vocab, every CRC valid)\n", m.shards.size(),
              (unsigned long long)bytes);
  for (const ManifestFile& f : m.shards)
    std::printf("    %s  %llu bytes  crc 0x%08x  users %llu  events %llu  train %llu  eval %llu\n",
                f.file.c_str(), (unsigned long long)f.bytes, f.crc, (unsigned long long)f.users,
                (unsigned long long)f.events, (unsigned long long)f.train_examples,
                (unsigned long long)f.eval_examples);
  // History-length histogram of training rows, in up to 10 ranges.
  const auto& h = m.history_histogram;
  uint64_t total = 0, weighted = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    total += h[i];
    weighted += h[i] * i;
  }
  std::printf("  history length of train rows (max %lld, mean %.2f):\n",
              static_cast<long long>(m.max_history),
              total ? static_cast<double>(weighted) / total : 0.0);
  const size_t width = h.empty() ? 1 : (h.size() + 9) / 10;
  for (size_t lo = 0; lo < h.size(); lo += width) {
    const size_t hi = std::min(h.size(), lo + width) - 1;
    uint64_t c = 0;
    for (size_t i = lo; i <= hi; ++i) c += h[i];
    const double frac = total ? static_cast<double>(c) / total : 0.0;
    std::printf("    %3zu-%-3zu %10llu %6.2f%% %s\n", lo, hi, (unsigned long long)c, 100 * frac,
                std::string(static_cast<size_t>(frac * 40 + 0.5), '#').c_str());
  }
  ResultLine r("data_inspect");
  r.Add("users", m.users)
      .Add("items", m.items)
      .Add("categories", m.categories)
      .Add("events", m.events)
      .Add("train_examples", m.train_examples)
      .Add("train_examples_per_epoch", m.train_examples_per_epoch)
      .Add("eval_examples", m.eval_examples)
      .Add("bad_records", m.bad_records)
      .Add("shards", static_cast<int64_t>(m.shards.size()))
      .Add("bytes", bytes)
      .Add("crc_ok", 1)
      .Add("seconds", timer.Seconds());
  r.Print();
  return kExitOk;
}

}  // namespace

int RunDataCommand(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << kDataUsage;
    return kExitUsage;
  }
  const std::string& sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "convert") return RunConvert(rest);
  if (sub == "inspect") return RunInspect(rest);
  if (sub == "synth") return RunSynthCommand(rest);
  if (sub == "help" || sub == "--help" || sub == "-h") {
    std::cerr << kDataUsage;
    return kExitOk;
  }
  std::cerr << "error: unknown subcommand 'data " << sub << "'\n" << kDataUsage;
  return kExitUsage;
}

}  // namespace ips
