// Runs the built `ips` binary as a user would and checks exit codes and messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

RunResult RunIps(const std::string& args) {
  const std::string cmd = std::string(IPS_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

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
  const std::string cfg = std::string(std::getenv("IPS_SOURCE_DIR")) +
                          "/launch/configs/din_synthetic.pbtxt";
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
