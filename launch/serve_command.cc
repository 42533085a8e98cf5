// `ips export` (a checkpoint -> a versioned serving bundle) and `ips serve` (JSON-lines scoring
// on stdin/stdout with hot reload of newer bundle versions), over worker/serving.h. Export holds
// the bundle root's writer lock while it writes (ExportBundle); serve takes no lock, so it keeps
// serving a root that an export or a stream is writing into.
#include <iostream>
#include <string>

#include "common/flags.h"
#include "common/result_line.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "worker/serving.h"

namespace ips {

int RunExportCommand(const std::vector<std::string>& args) {
  FlagSet flags("export");
  flags.Required("checkpoint", "checkpoint root (follows LATEST) or one ckpt-<step> directory");
  flags.Required("output",
                 "bundle root (created when missing; an existing one must be empty or a bundle "
                 "root of the same model type, and is locked while the export writes); the export "
                 "becomes its next version v-<n>");
  flags.Bool("fp16", "store embedding rows as IEEE half precision");
  flags.Int("min_count", 0,
            "drop rows used fewer than N times (LFU count; refused when no row of a table would "
            "be kept)");
  flags.Int("keep_versions", 3, "bundle versions kept in the root");
  flags.Bool("delta",
             "write only the rows that changed since the bundle's current version (a root with "
             "no version yet gets a full one, said on stderr and as delta_reason=no_base)");
  flags.String("dataset", "",
               "dataset directory whose vocab gives the item -> category map (default: the "
               "checkpoint config's data.train_dir or synthetic catalogue; none: requests must "
               "carry categories and MIND top-N is refused)");
  if (auto rc = ParseCommandFlags(&flags, args)) return *rc;
  ExportOptions o;
  o.checkpoint = flags.GetString("checkpoint");
  o.output = flags.GetString("output");
  o.fp16 = flags.GetBool("fp16");
  o.min_count = flags.GetInt("min_count");
  o.keep_versions = static_cast<int>(flags.GetInt("keep_versions"));
  o.delta = flags.GetBool("delta");
  o.dataset = flags.GetString("dataset");
  if (o.min_count < 0 || o.keep_versions < 1) {
    std::cerr << "error: --min_count must be >= 0 and --keep_versions >= 1\n" << flags.Usage();
    return kExitUsage;
  }
  Timer timer;
  auto r = ExportBundle(o);
  if (!r.ok()) {
    std::cerr << "error: " << r.status().message() << "\n";
    return kExitError;
  }
  std::cout << "exported " << r->path << " (step " << r->step << ", " << r->rows << " rows)\n";
  // --delta without a base still publishes (the first version of a publisher that always passes
  // --delta must be full), but never silently: the user asked for a delta and did not get one.
  if (r->delta_skipped == "no_base")
    std::cerr << "note: --delta: " << o.output
              << " has no current version (no CURRENT) to diff against, so " << r->path
              << " is a full bundle; later --delta exports are deltas against it\n";
  if (!r->item_cats)
    std::cerr << "warning: no item -> category map (no dataset known to the checkpoint; pass "
                 "--dataset DIR): requests must carry history_cats/candidate_cats, and MIND "
                 "top-N retrieval is refused\n";
  ResultLine result("export");
  result.Add("bundle", r->path)
      .Add("version", r->version)
      .Add("step", r->step)
      .Add("rows", r->rows)
      .Add("rows_dropped", r->rows_dropped)
      .Add("delta", r->delta_of != 0 ? "true" : "false")
      .Add("delta_of", r->delta_of)
      .Add("rows_removed", r->rows_removed)
      .Add("bytes", r->bytes)
      .Add("fp16", o.fp16 ? "true" : "false")
      .Add("item_cats", r->item_cats ? "true" : "false")
      .Add("seconds", timer.Seconds());
  if (!r->delta_skipped.empty()) result.Add("delta_reason", r->delta_skipped);
  result.Print();
  return kExitOk;
}

int RunServeCommand(const std::vector<std::string>& args) {
  FlagSet flags("serve");
  flags.Required("bundle", "bundle root (hot-reloads newer versions) or one v-<n> directory");
  flags.Int("poll_ms", 200, "how often the bundle root's CURRENT is checked for a new version");
  flags.Int("max_batch", 128, "candidates per model forward (larger requests run in chunks)");
  if (auto rc = ParseCommandFlags(&flags, args)) return *rc;
  if (flags.GetInt("poll_ms") < 1 || flags.GetInt("max_batch") < 1) {
    std::cerr << "error: --poll_ms and --max_batch must be >= 1\n" << flags.Usage();
    return kExitUsage;
  }
  auto server =
      BundleServer::Create(flags.GetString("bundle"), static_cast<int>(flags.GetInt("poll_ms")),
                           flags.GetInt("max_batch"));
  if (!server.ok()) {
    std::cerr << "error: " << server.status().message() << "\n";
    return kExitError;
  }
  const int64_t first_version = (*server)->version();
  std::cerr << "serving " << flags.GetString("bundle") << " version " << first_version << "\n";
  std::ios::sync_with_stdio(false);
  Timer timer;
  int64_t line_no = 0, requests = 0, errors = 0;
  bool noted_truncation = false;
  std::string line, response;  // reused: no allocation per request once grown
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    bool ok = false;
    (*server)->HandleLine(line_no, line, &ok, &response);
    ++requests;
    if (!ok) {
      ++errors;
      std::cerr << "error: stdin line " << line_no << ": request skipped\n";
    }
    if (!noted_truncation && (*server)->truncated_histories() > 0) {
      // Scored as training builds its histories, but never silently: once here, every time in the
      // response ("history_dropped") and the count in the RESULT line.
      noted_truncation = true;
      const ScoreResponse& r = (*server)->last_response();
      std::cerr << "note: stdin line " << line_no << ": the history has "
                << r.history_used + r.history_dropped << " entries, the model reads the newest "
                << r.history_used
                << " (data.max_history), as in training: the oldest were not scored (responses "
                   "say \"history_dropped\":N; RESULT counts truncated_histories)\n";
    }
    std::cout << response << '\n';
    std::cout.flush();  // one response per request as it is answered (interactive clients)
    for (const auto& e : (*server)->TakeReloadErrors())
      std::cerr << "warning: reload failed, still serving the old version: " << e << "\n";
  }
  ResultLine("serve")
      .Add("requests", requests)
      .Add("errors", errors)
      .Add("truncated_histories", (*server)->truncated_histories())
      .Add("reloads", (*server)->reloads())
      .Add("first_version", first_version)
      .Add("version", (*server)->version())
      .Add("seconds", timer.Seconds())
      .Print();
  return kExitOk;
}

}  // namespace ips
