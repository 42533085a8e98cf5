// `ips export` (a checkpoint -> a versioned serving bundle) and `ips serve` (JSON-lines scoring
// on stdin/stdout with hot reload of newer bundle versions), over worker/serving.h. Export holds
// the bundle root's writer lock while it writes (ExportBundle); serve takes no lock, so it keeps
// serving a root that an export or a stream is writing into.
//
// Serve stops gracefully on SIGTERM, SIGINT or SIGUSR1 (common/stop_signals.h; the handler is
// installed first thing in main): the request being scored is answered, the lines after it are
// left unanswered (a client tells which were answered by the responses), then the RESULT line
// says status=stopped and the exit code is 0. A stop is a server's normal end (a supervisor's
// SIGTERM, a terminal's Ctrl-C), not an interrupted job: unlike a stopped `ips train` (exit 3,
// "continue it with --resume") a server has nothing to resume, so a supervisor that treats
// non-zero as a failure must not restart or alert on it.
//
// A response that cannot be written (stdout on a full disk, a closed pipe when SIGPIPE is
// ignored) ends serving: "error: writing to stdout (the response to stdin line N): <errno
// text>; ..." on stderr and exit 1. launch/main.cc then prints the error RESULT line to stdout,
// where it is lost too when stdout is what failed: stderr and the exit code tell. Answering
// later requests into an output that lost one would leave a client pairing responses with the
// wrong requests.
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/result_line.h"
#include "common/stop_signals.h"
#include "common/timer.h"
#include "launch/commands.h"
#include "worker/serving.h"

namespace ips {
namespace {

// The request lines of a descriptor (stdin), read in blocks. A wait for input is poll(2) on the
// descriptor and the stop descriptor (common/stop_signals.h StopSignalFd), with no timeout: a
// stop ends a blocking wait at once and an idle server uses no CPU. Lines are returned as
// std::getline returns them (without the "\n"; a last line without one is returned too).
class InputLines {
 public:
  enum class Next { kLine, kEnd, kStopped };

  InputLines(int fd, int stop_fd) : fd_(fd), stop_fd_(stop_fd), buf_(size_t{1} << 16) {}

  // The next line into *line, kEnd at the end of the input, kStopped when a stop signal came
  // while waiting for more input. Errors: DATA_LOSS for a failed read(2) or poll(2).
  StatusOr<Next> Read(std::string* line) {
    for (;;) {
      if (const char* nl =
              static_cast<const char*>(std::memchr(buf_.data() + begin_, '\n', end_ - begin_))) {
        const size_t at = static_cast<size_t>(nl - buf_.data());
        line->assign(buf_.data() + begin_, at - begin_);
        begin_ = at + 1;
        return Next::kLine;
      }
      if (eof_) {
        if (begin_ == end_) return Next::kEnd;
        line->assign(buf_.data() + begin_, end_ - begin_);
        begin_ = end_;
        return Next::kLine;
      }
      IPS_ASSIGN_OR_RETURN(const bool stopped, Fill());
      if (stopped) return Next::kStopped;
    }
  }

 private:
  // Waits for input (or a stop: returns true) and appends what one read(2) gives to the buffer,
  // after moving the unread part to its front (grown only for a line longer than the buffer).
  StatusOr<bool> Fill() {
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
    for (;;) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      // Without a stop descriptor (the pipe could not be created) the stop flag is checked
      // every 200 ms instead.
      const int r = poll(fds, stop_fd_ >= 0 ? 2 : 1, stop_fd_ >= 0 ? -1 : 200);
      if (r < 0 && errno != EINTR) return Failed("poll");
      if (StopRequested().load(std::memory_order_relaxed) ||
          (stop_fd_ >= 0 && (fds[1].revents & POLLIN) != 0))
        return true;
      if (r <= 0) continue;  // EINTR (another signal) or the fallback's timeout
      // Readable, at its end (POLLHUP) or in error: read(2) tells which.
      const ssize_t n = read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return Failed("read");
      }
      if (n == 0) eof_ = true;
      end_ += static_cast<size_t>(n);
      return false;
    }
  }

  Status Failed(const char* call) const {
    return DataLossError(std::string(call) + ": " + std::strerror(errno));
  }

  const int fd_, stop_fd_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;  // unread bytes: buf_[begin_, end_)
  bool eof_ = false;
};

// Writes all of `data` to `fd` (write(2) again after a partial write or EINTR: a stop signal
// while a slow client holds the pipe full does not cut a response). The errno text of the write
// that failed, "" on success.
std::string WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::strerror(errno);
    }
    done += static_cast<size_t>(n);
  }
  return "";
}

}  // namespace

int RunExportCommand(const std::vector<std::string>& args) {
  FlagSet flags("export");
  flags.Required("checkpoint", "checkpoint root (follows LATEST) or one ckpt-<step> directory");
  flags.Required("output",
                 "bundle root (created when missing; an existing one must be empty or a bundle "
                 "root of the same model type, and is locked while the export writes); the export "
                 "becomes its next version v-<n>");
  flags.Bool("fp16", "store embedding rows as IEEE half precision");
  flags.Int("min_count", 0,
            "drop rows used fewer than N times (the LFU count: each pull and each push counts "
            "one, so a training step that uses a row counts 2; refused when no row of a table "
            "would be kept)");
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
  // Responses go to descriptor 1 with write(2), one call per response (as it is answered, for
  // interactive clients), so that a failed write is seen with its errno; the RESULT line after
  // them goes through stdio, which holds nothing before it. (std::ios::sync_with_stdio(false),
  // for a faster std::cout, is not used: it also gave std::cerr a buffer of its own, which
  // launch/main.cc's ErrorLineTap does not read, and the error RESULT line then carried the
  // "serving ..." line instead of the error.)
  Timer timer;
  int64_t line_no = 0, requests = 0, errors = 0;
  bool noted_truncation = false, noted_unknown = false, stopped = false;
  std::string line, response;  // reused: no allocation per request once grown
  // main() installed the stop handler (SIGTERM, SIGINT, SIGUSR1) before anything else; again
  // here (idempotent) for a caller that did not.
  InstallStopSignals(/*with_sigint=*/true);
  InputLines input(STDIN_FILENO, StopSignalFd());
  for (;;) {
    // Checked between two requests: the one being scored when the signal came is answered.
    if (StopRequested().load(std::memory_order_relaxed)) {
      stopped = true;
      break;
    }
    StatusOr<InputLines::Next> next = input.Read(&line);
    if (!next.ok()) {
      std::cerr << "error: reading stdin after line " << line_no << ": " << next.status().message()
                << "\n";
      return kExitError;
    }
    if (*next == InputLines::Next::kEnd) break;
    if (*next == InputLines::Next::kStopped) {
      stopped = true;
      break;
    }
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
    if (!noted_unknown && (*server)->requests_with_unknown_ids() > 0) {
      // Ids without a row score as zero rows: a request of raw ids (the dataset's source ids
      // instead of its dense ids) answers plausible-looking scores of nothing. Said once here,
      // in every response ("unknown_ids") and counted in the RESULT line.
      noted_unknown = true;
      const ScoreResponse& r = (*server)->last_response();
      std::cerr << "note: stdin line " << line_no << ": " << r.unknown_ids
                << (r.unknown_ids == 1 ? " id" : " ids") << " of the request "
                << (r.unknown_ids == 1 ? "has" : "have")
                << " no row in the bundle and scored as zeros (the first: \""
                << r.first_unknown_field << "\" entry " << r.first_unknown_entry << ", id "
                << r.first_unknown_id
                << "): requests carry the model's ids (for a bundle trained on a converted "
                   "dataset, the dataset's dense ids 1..n that `ips data convert` assigned, not "
                   "the raw ids; its vocab.ips maps them), and ids training never saw or "
                   "--min_count dropped have no row (responses say \"unknown_ids\":N; RESULT "
                   "counts unknown_ids and requests_with_unknown_ids)\n";
    }
    response += '\n';
    if (const std::string failed = WriteAll(STDOUT_FILENO, response); !failed.empty()) {
      std::cerr << "error: writing to stdout (the response to stdin line " << line_no
                << "): " << failed << "; serving stopped after " << requests - 1
                << " requests answered\n";
      return kExitError;
    }
    for (const auto& e : (*server)->TakeReloadErrors())
      std::cerr << "warning: reload failed, still serving the old version: " << e << "\n";
  }
  if (stopped)
    std::cerr << "serve: stopped by " << StopSignalName() << " after " << requests << " requests\n";
  ResultLine result("serve");
  result.Add("requests", requests)
      .Add("errors", errors)
      .Add("truncated_histories", (*server)->truncated_histories())
      .Add("reloads", (*server)->reloads())
      .Add("first_version", first_version)
      .Add("version", (*server)->version())
      .Add("seconds", timer.Seconds())
      // After the older keys (consumers that read the line by position keep working), before
      // status (which ends a stopped server's line).
      .Add("unknown_ids", (*server)->unknown_ids())
      .Add("requests_with_unknown_ids", (*server)->requests_with_unknown_ids());
  if (stopped) result.Add("status", "stopped");
  result.Print();
  // Print flushed stdout: a RESULT line that did not get out (a disk that filled after the last
  // response) is a failed run, not a silent exit 0.
  if (std::ferror(stdout)) {
    std::cerr << "error: writing the RESULT line to stdout: " << std::strerror(errno) << "\n";
    return kExitError;
  }
  return kExitOk;
}

}  // namespace ips
