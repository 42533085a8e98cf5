// `ips`: the one binary of interest-ps. `ips <subcommand> [flags]`; `ips help` lists them.
// Exit codes: 0 success, 1 runtime/data error (a C++ exception that escapes a subcommand
// included: see RunSubcommand), 2 usage error, 3 `ips train` stopped by SIGTERM or SIGUSR1 after
// a checkpoint (common/stop_signals.h).
#include <glog/logging.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "common/logging.h"
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
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc& b) {
    std::fprintf(stderr,
                 "error: out of memory (%s) in %s: lower the sizes of the config or the input "
                 "(model layers, data.batch_size, data.max_history, ...) or give the process "
                 "more memory\n",
                 b.what(), where.c_str());
  } catch (const std::exception& x) {
    std::fprintf(stderr, "error: internal: %s (in %s)\n", x.what(), where.c_str());
  } catch (...) {
    std::fprintf(stderr, "error: internal: an exception of unknown type (in %s)\n", where.c_str());
  }
  std::fflush(stderr);
}

// std::terminate's handler: an exception nobody caught (one thrown on another thread, or any
// under mpirun, see RunSubcommand) is reported and the process exits 1 at once, running no
// destructor: under mpirun a rank that exits 1 ends the job. A terminate without an exception
// (a programmer error, e.g. a joinable std::thread destroyed) still aborts, for its core dump.
[[noreturn]] void OnTerminate() {
  if (std::exception_ptr e = std::current_exception()) {
    ReportException(e);
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

// Whether argv is `ips train` with the stop handler of common/stop_signals.h: every `ips train`
// but --stream, whose own SIGINT/SIGTERM handler (launch/stream_train.cc) is installed later and
// reads another flag (the stop handler would swallow a signal that the stream never sees; without
// it, the default action at least ends the process).
bool TrainsWithStopSignals(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "train") != 0) return false;
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--stream") == 0 || std::strncmp(argv[i], "--stream=", 9) == 0)
      return false;
  return true;
}

// The stop handler of `ips train`, installed before anything else runs: glibc calls an
// executable's .preinit_array functions (with main's arguments) before the initialisers of its
// shared libraries (OpenBLAS starting a thread per core, Open MPI, protobuf, glog), so a SIGTERM
// or SIGUSR1 stops the run from then on, not only from main(); before, only the loader mapping
// and relocating the libraries remains. main() installs it again (idempotent) for a loader that
// skips the array, and for sanitizer builds, whose runtime must be initialised before any
// instrumented code runs.
void InstallStopSignalsFirst(int argc, char** argv, char** /*envp*/) {
  if (TrainsWithStopSignals(argc, argv)) ips::InstallStopSignals();
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
  std::set_terminate(OnTerminate);
  ips::InitLogging(argv[0]);
  if (argc < 2) {
    PrintUsage(std::cerr);
    return ips::kExitUsage;
  }
  const std::string command = argv[1];
  if (command == "help" || command == "--help" || command == "-h") {
    PrintUsage(std::cout);
    return ips::kExitOk;
  }
  for (const auto& c : kSubcommands) {
    if (command == c.name) return RunSubcommand(c, std::vector<std::string>(argv + 2, argv + argc));
  }
  std::cerr << "ips: unknown command '" << command << "'\n\n";
  PrintUsage(std::cerr);
  return ips::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // The stop handler before anything else (InstallStopSignalsFirst did it already): a
  // SIGTERM or SIGUSR1 that arrives while `ips train` loads its config and data (tens of ms,
  // seconds for a large dataset) would otherwise end the process with the default action instead
  // of stopping it (exit 3 after the first step). Under mpirun the ranks then adjust it
  // (launch/cluster_train.cc): the servers ignore and note stop signals, and without
  // checkpoint.dir every rank gets the default action back.
  if (TrainsWithStopSignals(argc, argv)) ips::InstallStopSignals();
  ExitProcess(Main(argc, argv));
}
