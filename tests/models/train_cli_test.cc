// `ips train` as a user runs it: a tiny synthetic run ends with the RESULT line and appends JSON
// lines to --metrics_out; bad configs and flags exit non-zero with a message naming the problem.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/testing/run_ips.h"

namespace {

using ips::testing::LastLine;
using ips::testing::RunIps;

std::string Config() {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  return std::string(src ? src : ".") + "/launch/configs/din_synthetic.pbtxt";
}

// Small sizes so the run takes well under a second.
const char* kSmall =
    " --set data.synthetic.num_items=3000 --set data.synthetic.num_categories=20"
    " --set data.batch_size=32 --set data.max_history=10 --set data.synthetic.warmup_steps=2"
    " --set data.synthetic.steps=6 --set train.log_every_steps=3 --set train.num_threads=1";

TEST(TrainCli, SyntheticRunEndsWithResultAndWritesMetrics) {
  const std::string metrics =
      ::testing::TempDir() + "/train_cli_metrics_" + std::to_string(getpid()) + ".jsonl";
  std::remove(metrics.c_str());
  auto r =
      RunIps("train --config " + Config() + kSmall + " --eval_batches 2 --metrics_out " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string last = LastLine(r.output);
  EXPECT_EQ(last.rfind("RESULT train model=din samples_per_s=", 0), 0u) << r.output;
  for (const char* key : {" steps=6", " batch=32", " threads=1", " loss=", " auc="})
    EXPECT_NE(last.find(key), std::string::npos) << key << " in " << last;
  std::ifstream in(metrics);
  std::stringstream all;
  all << in.rdbuf();
  const std::string m = all.str();
  // Intervals at 3 and 6 timed steps, then eval and result.
  EXPECT_NE(m.find("{\"phase\":\"train\",\"step\":5,\"timed_steps\":3,"), std::string::npos) << m;
  EXPECT_NE(m.find("{\"phase\":\"train\",\"step\":8,\"timed_steps\":6,"), std::string::npos) << m;
  EXPECT_NE(m.find("{\"phase\":\"eval\",\"step\":8,\"examples\":64,"), std::string::npos) << m;
  EXPECT_NE(m.find("{\"phase\":\"result\",\"model\":\"din\""), std::string::npos) << m;
  std::remove(metrics.c_str());
}

TEST(TrainCli, UnsupportedAndBadInputExitNonZero) {
  auto r = RunIps("train --config " + Config() + kSmall + " --set model.type=SASREC");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("UNIMPLEMENTED"), std::string::npos) << r.output;
  r = RunIps("train --config " + Config() + " --set model.attention_hidden=80");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.attention_hidden"), std::string::npos) << r.output;
  r = RunIps("train --config /nonexistent/x.pbtxt");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  r = RunIps("train --config " + Config() + " --frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunIps("train");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = RunIps("train --config " + Config() + kSmall + " --metrics_out /nonexistent/dir/m.jsonl");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/dir/m.jsonl"), std::string::npos) << r.output;
}

}  // namespace
