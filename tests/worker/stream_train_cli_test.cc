// RunStreamTrain (launch/stream_train.cc), the body of `ips train --stream SOURCE`: a config's DIN
// trained on an event file ends with the RESULT train_stream line and exit code 0, calls the
// publisher built by make_publisher, writes metrics JSON lines; a bad line exits 1 naming the file,
// line and field; bad --stream_* flags are rejected.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "common/random.h"
#include "launch/commands.h"
#include "launch/stream_train.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

config::Config SmallConfig() {
  auto c = ParseConfigText(R"pb(
                             version: 1
                             data { batch_size: 64 max_history: 8 }
                             model {
                               type: DIN
                               embedding_dim: 4
                               attention_hidden: [ 8, 4 ]
                               mlp_hidden: [ 8, 4 ]
                             }
                             optimizer { type: ADAM learning_rate: 0.01 }
                             tables { name: "item" dim: 4 }
                             tables { name: "category" dim: 4 }
                             train { num_threads: 1 seed: 3 }
                           )pb",
                           "small.pbtxt");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : config::Config();
}

std::string WriteEvents(const std::string& name, int n, const std::string& extra) {
  const std::string path = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                           "/ips_stream_cli_" + std::to_string(getpid()) + "_" + name;
  std::string all;
  for (int i = 0; i < n; ++i) {
    Event e;
    e.user = 1 + Mix64(i) % 20;
    e.item = 1 + Mix64(i + 77) % 100;
    e.category = e.item % 10 + 1;
    e.timestamp = 1700000000 + i;
    AppendEventLine(e, &all);
  }
  std::ofstream(path, std::ios::binary) << all << extra;
  return path;
}

TEST(StreamTrainCli, TrainsFileEndsWithResultLineAndPublishes) {
  const std::string path = WriteEvents("ok.tsv", 3000, "");
  StreamCliOptions o;
  o.follow = false;
  o.publish_every_s = 0;
  o.publish_every_steps = 10;
  o.window_events = 1000;
  int64_t published = 0, newest_seen = -1;
  o.make_publisher = [&](Trainer* t, ps::EmbeddingStore* s) -> StatusOr<StreamPublisher> {
    EXPECT_NE(t, nullptr);
    EXPECT_NE(s, nullptr);
    return StreamPublisher([&](int64_t, int64_t newest, double) {
      ++published;
      newest_seen = newest;
      return Status();
    });
  };
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  testing::internal::CaptureStdout();
  const int rc = RunStreamTrain(SmallConfig(), path, sinks, o);
  const std::string out = testing::internal::GetCapturedStdout();
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitOk);
  EXPECT_EQ(out.rfind("RESULT train_stream model=din events=3000 examples=5999 "), 0u) << out;
  for (const char* key : {" examples_per_s=", " auc_window=", " freshness_p50_ms=",
                          " freshness_p99_ms=", " publishes="})
    EXPECT_NE(out.find(key), std::string::npos) << key << " missing in " << out;
  EXPECT_EQ(out.find("nan"), std::string::npos) << out;
  EXPECT_GE(published, 9);  // 5999 rows / 64 per step = 94 steps, a publish every 10 + the last
  EXPECT_EQ(newest_seen, 2999);
  // Three windows of 1000 events, then the result.
  const std::string m = metrics.str();
  int lines = 0;
  for (char ch : m) lines += ch == '\n';
  EXPECT_EQ(lines, 4) << m;
  EXPECT_NE(m.find("\"phase\":\"stream\""), std::string::npos);
  EXPECT_NE(m.find("\"phase\":\"stream_result\""), std::string::npos);
}

TEST(StreamTrainCli, BadLineExitsNonZeroNamingFileLineField) {
  const std::string path = WriteEvents("bad.tsv", 100, "3\t9\t2\t1700000000\tpv\tx\n");
  StreamCliOptions o;
  o.follow = true;  // the error ends a followed file as well
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(SmallConfig(), path, RunSinks{}, o);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitError);
  EXPECT_EQ(out.find("RESULT"), std::string::npos);
  EXPECT_NE(err.find(path + ":101: domain"), std::string::npos) << err;
}

TEST(StreamTrainCli, MissingSourceAndBadFlags) {
  StreamCliOptions o;
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunStreamTrain(SmallConfig(), "/nonexistent/events.tsv", RunSinks{}, o), kExitError);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("/nonexistent/events.tsv"), std::string::npos) << err;

  FlagSet flags("train");
  AddStreamFlags(&flags);
  ASSERT_TRUE(flags.Parse({"--stream_negatives", "2", "--stream_no_follow"}).ok());
  auto good = StreamCliOptionsFromFlags(flags);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->negatives, 2);
  EXPECT_FALSE(good->follow);
  FlagSet bad("train");
  AddStreamFlags(&bad);
  ASSERT_TRUE(bad.Parse({"--stream_window_events", "0"}).ok());
  auto r = StreamCliOptionsFromFlags(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--stream_window_events"), std::string::npos);
}

}  // namespace
}  // namespace ips
