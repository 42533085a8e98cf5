// Runs the built `ips` binary: a malformed input exits 1 naming file:line:field, an unknown flag
// or format exits 2 with usage, and convert + inspect end with their RESULT lines.
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"

namespace ips {
namespace {

struct CliRun {
  int code = -1;
  std::string out;  // stdout + stderr
};

CliRun Ips(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(IPS_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(DataCli, MalformedLineExitsOneNamingFileLineField) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("ub.csv"), "1,2,3,pv,100\n1,2,3,pv,101\n1,2,3,like,102\n");
  const CliRun r = Ips("data convert --format taobao --input " + dir.File("ub.csv") + " --output " +
                       dir.File("out"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(dir.File("ub.csv") +
                       ":3: behavior: expected one of pv, buy, cart, fav (got 'like')"),
            std::string::npos)
      << r.out;
  // With --max_bad_records the line is skipped and counted.
  const CliRun ok = Ips("data convert --format taobao --input " + dir.File("ub.csv") +
                        " --output " + dir.File("out") + " --max_bad_records 1");
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_NE(ok.out.find("RESULT data_convert "), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find(" bad_records=1 "), std::string::npos) << ok.out;
  const CliRun inspect = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(inspect.code, 0) << inspect.out;
  EXPECT_NE(inspect.out.find("RESULT data_inspect users=1 items=1 categories=1 events=2"),
            std::string::npos)
      << inspect.out;
  // A corrupted shard makes inspect fail with DATA_LOSS.
  std::string bytes = testing::ReadFile(dir.File("out/shard-00000-of-00001.ips"));
  bytes[70] ^= 1;
  testing::WriteFile(dir.File("out/shard-00000-of-00001.ips"), bytes);
  const CliRun bad = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("DATA_LOSS"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("CRC mismatch"), std::string::npos) << bad.out;
}

TEST(DataCli, UsageErrorsExitTwo) {
  CliRun r = Ips("data convert --format taobao --input x --output y --no_such_flag 1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--no_such_flag"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("usage:"), std::string::npos) << r.out;
  r = Ips("data convert --format parquet --input x --output y");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown --format 'parquet'"), std::string::npos) << r.out;
  r = Ips("data convert --input x --output y");  // --format missing
  EXPECT_EQ(r.code, 2) << r.out;
  r = Ips("data frobnicate");
  EXPECT_EQ(r.code, 2) << r.out;
  r = Ips("data inspect");
  EXPECT_EQ(r.code, 2) << r.out;
}

}  // namespace
}  // namespace ips
