// `ips config check|print`: loads a config with its overrides, validates it, and prints the
// effective configuration (print) or a one-line summary (check).
#include <iostream>

#include "common/flags.h"
#include "common/result_line.h"
#include "launch/commands.h"
#include "proto/config_loader.h"

namespace ips {

int RunConfigCommand(const std::vector<std::string>& args) {
  const std::string usage_head =
      "usage: ips config check|print --config FILE [--set path.to.field=value ...]\n";
  if (args.empty() || (args[0] != "check" && args[0] != "print")) {
    std::cerr << usage_head;
    return args.empty() || args[0] == "--help" ? (args.empty() ? kExitUsage : kExitOk) : kExitUsage;
  }
  const std::string verb = args[0];
  FlagSet flags("config " + verb);
  flags.Required("config", "Protobuf text-format config file (launch/configs/*.pbtxt)");
  flags.Repeated("set", "override one field: path.to.field=value");
  if (auto rc = ParseCommandFlags(&flags, {args.begin() + 1, args.end()})) return *rc;
  auto cfg = LoadConfig(flags.GetString("config"), flags.GetRepeated("set"));
  if (!cfg.ok()) {
    std::cerr << "error: " << cfg.status().message() << "\n";
    return kExitError;
  }
  if (verb == "print") std::cout << ConfigToText(*cfg);
  ResultLine("config_" + verb)
      .Add("config", flags.GetString("config"))
      .Add("version", static_cast<int64_t>(cfg->version()))
      .Add("model", config::ModelConfig::Type_Name(cfg->model().type()))
      .Add("tables", static_cast<int64_t>(cfg->tables_size()))
      .Add("overrides", static_cast<int64_t>(flags.GetRepeated("set").size()))
      .Print();
  return kExitOk;
}

}  // namespace ips
