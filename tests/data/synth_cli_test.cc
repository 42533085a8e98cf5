// `ips data synth` end to end: exit codes (0 ok, 1 write error naming the path, 2 usage), the
// RESULT line, stdout output, and that the file it writes is the one the library generates.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/testing/run_ips.h"
#include "worker/line_reader.h"
#include "worker/record_parsers.h"
#include "worker/synth.h"

namespace ips {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tmp(const std::string& name) {
  return "/tmp/synth_cli_test_" + std::to_string(getpid()) + "_" + name;
}

testing::IpsRun Ips(const std::string& args) { return testing::RunIpsSplit("data synth " + args); }
using testing::LastLine;

const char* kSmall =
    " --events 50000 --users 500 --items 5000 --categories 50 --drift_at 0.5 --domain1_fraction 0.2"
    " --domain1_items 1000 --cold_users 0.2 --seed 9";

TEST(SynthCli, WritesGzipLogTruthAndResult) {
  const std::string path = Tmp("log.tsv.gz");
  const testing::IpsRun r = Ips("--output " + path + kSmall);
  ASSERT_EQ(r.exit_code, 0) << r.error;
  const std::string result = LastLine(r.output);
  EXPECT_EQ(result.rfind("RESULT data_synth events=50000 users=500 items=6000 categories=100 ", 0),
            0u)
      << result;
  EXPECT_NE(result.find(" seconds="), std::string::npos);
  EXPECT_NE(result.find(" events_per_s="), std::string::npos);
  const std::string truth = Slurp(path + ".truth.json");
  EXPECT_NE(truth.find("\"planted_drift\": {\"index\": 25000"), std::string::npos);

  // The file is exactly the library's stream for the same options.
  SynthOptions o;
  o.events = 50000;
  o.users = 500;
  o.items = 5000;
  o.categories = 50;
  o.drift_at = 0.5;
  o.domain1_fraction = 0.2;
  o.domain1_items = 1000;
  o.cold_users = 0.2;
  o.seed = 9;
  auto model = SynthModel::Create(o);
  ASSERT_TRUE(model.ok()) << model.status();
  SynthGenerator gen(model->get());
  auto reader = LineReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string_view line;
  Event want;
  std::string want_line;
  int64_t n = 0;
  while (*(*reader)->Next(&line)) {
    ASSERT_TRUE(gen.Next(&want));
    want_line.clear();
    AppendEventLine(want, &want_line);
    want_line.pop_back();
    ASSERT_EQ(line, want_line) << "line " << n + 1;
    ++n;
  }
  EXPECT_EQ(n, 50000);
  EXPECT_FALSE(gen.Next(&want));
  std::remove(path.c_str());
  std::remove((path + ".truth.json").c_str());
}

TEST(SynthCli, StdoutCarriesOnlyEventsAndResultGoesToStderr) {
  const testing::IpsRun r = Ips("--output - --events 1000 --users 50 --items 500 --categories 10");
  ASSERT_EQ(r.exit_code, 0) << r.error;
  int lines = 0;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    Event e;
    FieldError err;
    ASSERT_TRUE(ParseEventLine(line, &e, &err)) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 1000);
  EXPECT_NE(r.error.find("RESULT data_synth events=1000 "), std::string::npos) << r.error;
}

TEST(SynthCli, UsageErrorsExitTwoWithUsage) {
  for (const std::string args :
       {"--events 10", "--output x --bogus 1", "--output x --events abc", "--output x --noise 2",
        "--output x --events 0", "--output x --categories 2", "--output x stray"}) {
    const testing::IpsRun r = Ips(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.error;
    EXPECT_NE(r.error.find("usage: ips data synth"), std::string::npos) << args;
  }
  const testing::IpsRun help = Ips("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("--drift_at"), std::string::npos);
}

TEST(SynthCli, WriteErrorsExitOneNamingThePath) {
  testing::IpsRun r = Ips("--output /nonexistent-dir/e.tsv --events 100");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.error.find("/nonexistent-dir/e.tsv"), std::string::npos) << r.error;
  r = Ips("--output /dev/full --truth none --events 200000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.error.find("/dev/full"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace ips
