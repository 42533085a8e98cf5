// ParseCommandFlags (launch/commands.h): how every `ips` subcommand answers --help and bad flags.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/flags.h"
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
    std::cerr << (parsed.ok() ? "unexpected argument '" + flags->positional()[0] + "'"
                              : parsed.message())
              << "\n"
              << flags->Usage();
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace ips
