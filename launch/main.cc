// `ips`: the one binary of interest-ps. `ips <subcommand> [flags]`; `ips help` lists them.
// Exit codes: 0 success, 1 runtime/data error, 2 usage error, 3 `ips train` stopped by SIGTERM
// or SIGUSR1 after a checkpoint (common/stop_signals.h).
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "common/logging.h"
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
    {"train", "train a config's model (single process; DIN on synthetic data)",
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

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stderr: under mpirun the ranks' output is merged into one stream, and a line
  // written in pieces (an unbuffered std::cerr writes every << separately) could be split by
  // another rank's line, e.g. a RESULT line. With a line buffer every line is one write. The
  // progress line, which ends in \r, flushes itself.
  std::setvbuf(stderr, nullptr, _IOLBF, size_t{1} << 16);
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
    if (command == c.name) return c.run(std::vector<std::string>(argv + 2, argv + argc));
  }
  std::cerr << "ips: unknown command '" << command << "'\n\n";
  PrintUsage(std::cerr);
  return ips::kExitUsage;
}
