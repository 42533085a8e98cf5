// ParseCommandFlags (launch/commands.h): how every `ips` subcommand answers --help and bad flags.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/result_line.h"
#include "launch/commands.h"

namespace ips {

std::optional<int> ParseCommandFlags(FlagSet* flags, const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << flags->Usage();
      return kExitOk;
    }
  }
  const Status parsed = flags->Parse(args);
  if (!parsed.ok() || !flags->positional().empty()) {
    const std::string message =
        parsed.ok() ? "unexpected argument '" + flags->positional()[0] + "'" : parsed.message();
    std::cerr << message << "\n" << flags->Usage();
    // Printed without "error: ": the message of the command's error RESULT line (launch/main.cc).
    NoteResultError(message);
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace ips
