// Runs the built `ips` binary: a malformed input exits 1 naming file:line:field, an unknown flag
// or format exits 2 with usage, and convert + inspect end with their RESULT lines.
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"
#include "tests/testing/run_ips.h"

namespace ips {
namespace {

testing::IpsRun Ips(const std::string& args) { return testing::RunIps(args); }

TEST(DataCli, MalformedLineExitsOneNamingFileLineField) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("ub.csv"), "1,2,3,pv,100\n1,2,3,pv,101\n1,2,3,like,102\n");
  const testing::IpsRun r = Ips("data convert --format taobao --input " + dir.File("ub.csv") +
                                " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir.File("ub.csv") +
                          ":3: behavior: expected one of pv, buy, cart, fav (got 'like')"),
            std::string::npos)
      << r.output;
  // With --max_bad_records the line is skipped and counted.
  const testing::IpsRun ok = Ips("data convert --format taobao --input " + dir.File("ub.csv") +
                                 " --output " + dir.File("out") + " --max_bad_records 1");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("RESULT data_convert "), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find(" bad_records=1 "), std::string::npos) << ok.output;
  const testing::IpsRun inspect = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("RESULT data_inspect users=1 items=1 categories=1 events=2"),
            std::string::npos)
      << inspect.output;
  // A corrupted shard makes inspect fail with DATA_LOSS.
  std::string bytes = testing::ReadFile(dir.File("out/shard-00000-of-00001.ips"));
  bytes[70] ^= 1;
  testing::WriteFile(dir.File("out/shard-00000-of-00001.ips"), bytes);
  const testing::IpsRun bad = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("DATA_LOSS"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("CRC mismatch"), std::string::npos) << bad.output;
}

TEST(DataCli, UsageErrorsExitTwo) {
  testing::IpsRun r = Ips("data convert --format taobao --input x --output y --no_such_flag 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--no_such_flag"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("usage:"), std::string::npos) << r.output;
  r = Ips("data convert --format parquet --input x --output y");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown --format 'parquet'"), std::string::npos) << r.output;
  r = Ips("data convert --input x --output y");  // --format missing
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = Ips("data frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = Ips("data inspect");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace ips
