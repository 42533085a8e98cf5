// Runs the built `ips` binary as a user would and checks exit codes and messages.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/testing/run_ips.h"

namespace {

using ips::testing::LastLine;
using ips::testing::RunIps;

TEST(Cli, NoCommandOrUnknownCommandIsUsageExit2) {
  auto r = RunIps("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("usage: ips"), std::string::npos);
  r = RunIps("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST(Cli, HelpListsCommands) {
  auto r = RunIps("help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("data"), std::string::npos);
  EXPECT_NE(r.output.find("config"), std::string::npos);
}

TEST(Cli, ConfigCheckEndsWithResultLine) {
  const std::string cfg =
      std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/din_synthetic.pbtxt";
  auto r = RunIps("config check --config " + cfg + " --set data.batch_size=128");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(LastLine(r.output).rfind("RESULT config_check ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("overrides=1"), std::string::npos);
  r = RunIps("config print --config " + cfg + " --set model.type=DIEN");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("type: DIEN"), std::string::npos) << r.output;
}

TEST(Cli, UnknownFlagIsUsageExit2) {
  auto r = RunIps("config check --config x.pbtxt --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown flag '--bogus'"), std::string::npos) << r.output;
}

TEST(Cli, BadConfigIsExit1NamingFileAndLine) {
  const std::string path = ::testing::TempDir() + "/bad_cli.pbtxt";
  std::ofstream(path) << "version: 1\nmodel {\n  embedding_dim: -3\n}\n";
  auto r = RunIps("config check --config " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path + ":3: model.embedding_dim: must be positive"), std::string::npos)
      << r.output;
  r = RunIps("config check --config " + path + " --set model.embedding_dim=oops");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("'oops' is not a valid int32"), std::string::npos) << r.output;
}

}  // namespace
