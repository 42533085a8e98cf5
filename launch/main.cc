// `ips`: the one binary of interest-ps. `ips <subcommand> [flags]`; `ips help` lists them.
// Exit codes: 0 success, 1 runtime/data error (a C++ exception that escapes a subcommand
// included: see RunSubcommand), 2 usage error, 3 `ips train` stopped by SIGTERM or SIGUSR1 after
// a checkpoint (common/stop_signals.h). `ips serve` stopped by SIGTERM, SIGINT or SIGUSR1 exits 0
// (a server's stop is its normal end; there is nothing to resume).
//
// Every run ends with one RESULT line (common/result_line.h). A command prints its own when it
// succeeds (and `ips train` and `ips serve` when stopped); when it fails, or only printed its help,
// this file prints it (FinishResult):
//   RESULT <name> status=error exit=<code> error="<message>"
//   RESULT <name> status=help
// <name> is the one of the command's success line (ResultTargetOf: train, train_cluster,
// data_convert, ...; `ips` itself for a missing or unknown command, `help` for `ips help`), the
// message the first line of the last error reported (NoteResultError: the commands' "error: ..."
// lines on std::cerr, read by ErrorLineTap, or the message noted otherwise), quoted
// (QuoteResultValue). It goes where the command's success line goes: stdout, stderr for `ips data
// synth --output -` (stdout is the event log). Under mpirun only the rank that prints the job's
// RESULT line prints it (SetPrintsResultLine).
#include <glog/logging.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <mutex>
#include <new>
#include <optional>
#include <streambuf>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/result_line.h"
#include "common/stop_signals.h"
#include "launch/cluster_train.h"
#include "launch/commands.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

const Subcommand kSubcommands[] = {
    {"data", "convert, inspect and synthesize datasets (ips data help)", ips::RunDataCommand},
    {"config", "check or print a config with its --set overrides", ips::RunConfigCommand},
    {"train", "train a config's model (one process, or a cluster under mpirun)",
     ips::RunTrainCommand},
    {"eval", "evaluate a checkpoint of a config's model (ranking, retrieval or AUC)",
     ips::RunEvalCommand},
    {"export", "turn a checkpoint into a versioned serving bundle", ips::RunExportCommand},
    {"serve", "score JSON-line requests on stdin with a bundle (hot reload)", ips::RunServeCommand},
};

void PrintUsage(std::ostream& os) {
  os << "usage: ips <command> [flags]\n\ncommands:\n";
  for (const auto& c : kSubcommands) os << "  " << c.name << "\t" << c.summary << "\n";
  os << "\n`ips <command> --help` describes a command's flags.\n";
}

// ---- The RESULT line of a run whose command printed none (see the top of the file) -----------

// Reads the commands' error messages off std::cerr on their way to stderr: a line that starts
// with "error: " (the commands' way of reporting an error, launch/commands.h) is noted without
// that prefix (NoteResultError), and the first other non-blank line is kept as the message of
// last resort (a usage error that prints only the usage; `ips data synth: ...`). It writes every
// piece on to the stream's own buffer at once (stderr's line buffer, see Main), so what reaches
// stderr is unchanged. Thread-safe, as std::cerr is. (A command that turned off sync_with_stdio
// would give std::cerr another buffer, whose lines are not read: none does.)
class ErrorLineTap : public std::streambuf {
 public:
  explicit ErrorLineTap(std::streambuf* out) : out_(out) {}
  // The first non-blank line that was not an error line, "" if none.
  std::string first_line() {
    std::lock_guard<std::mutex> lock(mu_);
    Scan("\n", 1);  // ends a last line written without its newline
    return first_;
  }

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    std::lock_guard<std::mutex> lock(mu_);
    Scan(&ch, 1);
    return out_->sputc(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::lock_guard<std::mutex> lock(mu_);
    Scan(s, n);
    return out_->sputn(s, n);
  }
  int sync() override { return out_->pubsync(); }

 private:
  static constexpr size_t kMaxLine = 4096;  // bytes kept of a line (the message is cut anyway)

  // Never throws: an exception here (bad_alloc) would set std::cerr's badbit, silencing it.
  void Scan(const char* s, std::streamsize n) noexcept {
    try {
      ScanLines(s, n);
    } catch (...) {
      line_.clear();
    }
  }
  void ScanLines(const char* s, std::streamsize n) {
    for (std::streamsize i = 0; i < n; ++i) {
      if (s[i] == '\n') {
        EndLine();
      } else if (s[i] == '\r') {
        line_.clear();  // a progress line, rewritten in place
      } else if (line_.size() < kMaxLine) {
        line_ += s[i];
      }
    }
  }
  void EndLine() {
    static const std::string kError = "error: ";
    if (line_.compare(0, kError.size(), kError) == 0) {
      ips::NoteResultError(line_.substr(kError.size()));
    } else if (first_.empty() && line_.find_first_not_of(" \t") != std::string::npos) {
      first_ = line_;
    }
    line_.clear();
  }

  std::streambuf* const out_;
  std::mutex mu_;
  std::string line_;   // guarded by mu_
  std::string first_;  // guarded by mu_
};

// What FinishResult needs to know of the run, from its arguments (set by Main).
struct ResultTarget {
  std::string name = "ips";  // the name of the command's success line
  bool help = false;         // the arguments ask for a help text
  bool on_stderr = false;    // the success line goes to stderr (`ips data synth --output -`)
};
ResultTarget g_result;
ErrorLineTap* g_tap = nullptr;  // std::cerr's buffer (Main)

// The value of --name (the last one: "--name V" or "--name=V"), nullopt if absent.
std::optional<std::string> FlagValue(const std::vector<std::string>& args,
                                     const std::string& name) {
  const std::string flag = "--" + name, with_value = flag + "=";
  std::optional<std::string> value;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag && i + 1 < args.size()) {
      value = args[++i];
    } else if (args[i].rfind(with_value, 0) == 0) {
      value = args[i].substr(with_value.size());
    }
  }
  return value;
}

// The RESULT line's target for `ips ARGS`: the name of the success line of the command (with its
// verb: data_convert, config_check; train_stream with --stream, train_cluster under mpirun),
// "help" for `ips help`, "ips" when no known command is named.
ResultTarget ResultTargetOf(const std::vector<std::string>& args) {
  ResultTarget t;
  auto is_help = [](const std::string& a) { return a == "help" || a == "--help" || a == "-h"; };
  if (args.empty()) return t;
  const std::string& command = args[0];
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i] == "--help" || args[i] == "-h" || (i < 2 && args[i] == "help")) t.help = true;
  if (is_help(command)) {
    t.name = "help";
    return t;
  }
  bool known = false;
  for (const auto& c : kSubcommands) known = known || command == c.name;
  if (!known) return t;
  t.name = command;
  const std::string verb = args.size() > 1 ? args[1] : "";
  if ((command == "data" && (verb == "convert" || verb == "inspect" || verb == "synth")) ||
      (command == "config" && (verb == "check" || verb == "print")))
    t.name += "_" + verb;
  if (t.name == "data_synth") {
    t.on_stderr = FlagValue(args, "output") == std::optional<std::string>("-");
  }
  if (command == "train") {
    const std::optional<std::string> stream = FlagValue(args, "stream");
    if (stream.has_value() && !stream->empty()) {
      t.name = "train_stream";
    } else if (ips::LaunchedUnderMpi()) {
      t.name = "train_cluster";
    }
  }
  return t;
}

// The RESULT line FinishResult prints for exit code `code`.
void PrintFinalResultLine(int code) {
  ips::ResultLine line(g_result.name);
  if (code == ips::kExitOk) {
    line.Add("status", "help");
  } else {
    const std::string first = g_tap != nullptr ? g_tap->first_line() : "";  // ends a last line
    std::string message = ips::NotedResultError();
    if (message.empty()) message = first;
    if (message.empty()) message = code == ips::kExitUsage ? "usage error" : "failed";
    line.Add("status", "error").Add("exit", code).AddQuoted("error", message);
  }
  if (g_result.on_stderr) {
    std::cerr.flush();
    std::fprintf(stderr, "%s\n", line.str().c_str());
    std::fflush(stderr);
  } else {
    std::cout.flush();  // its own buffer when a command turned off sync_with_stdio
    line.Print();
  }
}

// Ends the run with its RESULT line when the command printed none (and this rank prints one):
// status=error for a non-zero exit code, status=help when it printed a help text. Returns `code`.
int FinishResult(int code) {
  if (ips::ResultLinePrinted() || !ips::PrintsResultLine()) return code;
  if (code == ips::kExitOk && !g_result.help) return code;
  // Best effort, never an exception (this runs in the terminate handler too): a process out of
  // memory may end without the line; its exit code still tells.
  try {
    PrintFinalResultLine(code);
  } catch (...) {
  }
  return code;
}

// A C++ exception that escapes a subcommand (std::bad_alloc for a size nobody checked,
// std::system_error from the standard library) would end the process in std::terminate: an
// abort (exit 134, a core dump) with the bare what(). It is a runtime error instead: a message on
// stderr and exit 1. ReportException prints that message for the exception being handled.
const char* g_command = "";  // the running subcommand, for the messages

void ReportException(std::exception_ptr e) {
  // Under mpirun the ranks' lines are merged: name the rank.
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank == nullptr) rank = std::getenv("PMI_RANK");
  std::string where = std::string("`ips ") + g_command + "`";
  if (rank != nullptr) where += std::string(" (rank ") + rank + ")";
  // Formatted without the heap, which may be what ran out.
  char message[4096];
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc& b) {
    std::snprintf(message, sizeof(message),
                  "out of memory (%s) in %s: lower the sizes of the config or the input (model "
                  "layers, data.batch_size, data.max_history, ...) or give the process more memory",
                  b.what(), where.c_str());
  } catch (const std::exception& x) {
    std::snprintf(message, sizeof(message), "internal: %s (in %s)", x.what(), where.c_str());
  } catch (...) {
    std::snprintf(message, sizeof(message), "internal: an exception of unknown type (in %s)",
                  where.c_str());
  }
  std::fprintf(stderr, "error: %s\n", message);
  std::fflush(stderr);
  // The message of the RESULT line (not written through std::cerr, whose lines are noted). Best
  // effort: noting it allocates.
  try {
    ips::NoteResultError(message);
  } catch (...) {
  }
}

// std::terminate's handler: an exception nobody caught (one thrown on another thread, or any
// under mpirun, see RunSubcommand) is reported and the process exits 1 at once, running no
// destructor: under mpirun a rank that exits 1 ends the job. A terminate without an exception
// (a programmer error, e.g. a joinable std::thread destroyed) still aborts, for its core dump.
[[noreturn]] void OnTerminate() {
  if (std::exception_ptr e = std::current_exception()) {
    ReportException(e);
    // Under mpirun this rank's exit ends the job, and mpirun may kill the rank that prints the
    // job's RESULT line before it does: this one prints it.
    if (ips::LaunchedUnderMpi()) ips::SetPrintsResultLine(true);
    FinishResult(ips::kExitError);
    std::_Exit(ips::kExitError);
  }
  std::fputs("ips: std::terminate called without an active exception\n", stderr);
  std::abort();
}

// Runs a subcommand. In one process an exception is caught here, after unwinding (the
// destructors flush and close the output files). Under mpirun it is left to OnTerminate, which
// does not unwind: a rank's ~Cluster shuts its transport down, which waits for peers that are
// waiting for this rank, so an unwinding rank would hang, silent, until the others' heartbeat
// timeout ended the job.
int RunSubcommand(const Subcommand& c, const std::vector<std::string>& args) {
  g_command = c.name;
  if (ips::LaunchedUnderMpi()) return c.run(args);
  try {
    return c.run(args);
  } catch (...) {
    ReportException(std::current_exception());
  }
  return ips::kExitError;
}

// The commands that take the stop handler of common/stop_signals.h first thing (see
// InstallStopSignalsFirst): every `ips train` but --stream, whose own SIGINT/SIGTERM handler
// (launch/stream_train.cc) is installed later and reads another flag (the stop handler would
// swallow a signal that the stream never sees; without it, the default action at least ends the
// process); and `ips serve`, with SIGINT: a server stops gracefully whenever the stop comes (one
// during the bundle's load ends it before its first request).
enum class EarlyStop { kNone, kTrain, kServe };

EarlyStop EarlyStopOf(int argc, char** argv) {
  if (argc < 2) return EarlyStop::kNone;
  if (std::strcmp(argv[1], "serve") == 0) return EarlyStop::kServe;
  if (std::strcmp(argv[1], "train") != 0) return EarlyStop::kNone;
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--stream") == 0 || std::strncmp(argv[i], "--stream=", 9) == 0)
      return EarlyStop::kNone;
  return EarlyStop::kTrain;
}

void InstallEarlyStopSignals(int argc, char** argv) {
  const EarlyStop which = EarlyStopOf(argc, argv);
  if (which != EarlyStop::kNone)
    ips::InstallStopSignals(/*with_sigint=*/which == EarlyStop::kServe);
}

// The stop handler of `ips train` and `ips serve`, installed before anything else runs: glibc
// calls an executable's .preinit_array functions (with main's arguments) before the initialisers
// of its shared libraries (OpenBLAS starting a thread per core, Open MPI, protobuf, glog), so a
// SIGTERM or SIGUSR1 stops the run from then on, not only from main(); before, only the loader
// mapping and relocating the libraries remains. main() installs it again (idempotent) for a
// loader that skips the array, and for sanitizer builds, whose runtime must be initialised before
// any instrumented code runs.
void InstallStopSignalsFirst(int argc, char** argv, char** /*envp*/) {
  InstallEarlyStopSignals(argc, argv);
}
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
__attribute__((section(".preinit_array"),
               used)) void (*preinit_stop_signals)(int, char**, char**) = InstallStopSignalsFirst;
#endif

// The process's end, with `code`: every buffered output flushed (std::cout has its own buffer
// when a command turned off sync_with_stdio; glog's files with --log_dir), then _exit, which does
// not run the exit handlers of the libraries. OpenBLAS's handler joins its worker threads, and
// under an address-space limit (ulimit -v) a worker that could not get its buffer when the library
// was loaded (one per core, 128 MiB each, before main) retries forever: exit() then never returned,
// whatever the command did (even `ips help`). Nothing of ips is left to them: a command closes its
// own files and MPI is finalised before RunClusterTrain returns. Sanitizer builds exit normally,
// for the leak check that runs at exit.
[[noreturn]] void ExitProcess(int code) {
  std::cout.flush();
  std::cerr.flush();
  std::clog.flush();
  google::FlushLogFiles(google::GLOG_INFO);
  std::fflush(nullptr);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  std::exit(code);
#else
  _exit(code);
#endif
}

int Main(int argc, char** argv) {
  // Line-buffered stderr: under mpirun the ranks' output is merged into one stream, and a line
  // written in pieces (an unbuffered std::cerr writes every << separately) could be split by
  // another rank's line, e.g. a RESULT line. With a line buffer every line is one write. The
  // progress line, which ends in \r, flushes itself. std::cerr writes into that buffer, but its
  // unitbuf flag (set by default) flushed it after every <<, so a line still went out in pieces
  // and ranks' lines interleaved mid-line: off, the line buffer decides.
  std::setvbuf(stderr, nullptr, _IOLBF, size_t{1} << 16);
  std::cerr.unsetf(std::ios::unitbuf);
  // Never destroyed: std::cerr writes through it until the process ends.
  g_tap = new ErrorLineTap(std::cerr.rdbuf());
  std::cerr.rdbuf(g_tap);
  std::set_terminate(OnTerminate);
  ips::InitLogging(argv[0]);
  const std::vector<std::string> args(argv + 1, argv + argc);
  g_result = ResultTargetOf(args);
  // `mpirun ... ips train`: worker 0 prints the job's RESULT line (launch/cluster_train.cc tells
  // every rank once the layout is known); until then, e.g. for a config that does not load or a
  // refused --stream (every rank fails alike), rank 0.
  if (!args.empty() && args[0] == "train" && ips::LaunchedUnderMpi()) {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    if (rank == nullptr) rank = std::getenv("PMI_RANK");
    ips::SetPrintsResultLine(rank == nullptr || std::atoi(rank) == 0);
  }
  if (args.empty()) {
    PrintUsage(std::cerr);
    ips::NoteResultError("no command given (usage: ips <command> [flags])");
    return ips::kExitUsage;
  }
  const std::string& command = args[0];
  if (command == "help" || command == "--help" || command == "-h") {
    PrintUsage(std::cout);
    return ips::kExitOk;
  }
  for (const auto& c : kSubcommands) {
    if (command == c.name) return RunSubcommand(c, {args.begin() + 1, args.end()});
  }
  std::cerr << "ips: unknown command '" << command << "'\n\n";
  PrintUsage(std::cerr);
  ips::NoteResultError("unknown command '" + command + "'");
  return ips::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // The stop handler before anything else (InstallStopSignalsFirst did it already): a
  // SIGTERM or SIGUSR1 that arrives while `ips train` loads its config and data (tens of ms,
  // seconds for a large dataset) would otherwise end the process with the default action instead
  // of stopping it (exit 3 after the first step). Under mpirun the ranks then adjust it
  // (launch/cluster_train.cc): the servers ignore and note stop signals, and without
  // checkpoint.dir every rank gets the default action back. `ips serve` likewise (with SIGINT):
  // a stop while its bundle loads ends it before its first request, with its RESULT line.
  InstallEarlyStopSignals(argc, argv);
  ips::ResultFinisherSlot().store(&FinishResult);
  ExitProcess(FinishResult(Main(argc, argv)));
}
