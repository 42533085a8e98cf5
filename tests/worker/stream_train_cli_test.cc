// RunStreamTrain (launch/stream_train.cc), the body of `ips train --stream SOURCE`: a config's DIN
// trained on an event file ends with the RESULT train_stream line and exit code 0, calls the
// publisher built by make_publisher, writes metrics JSON lines; a bad line exits 1 naming the file,
// line and field; bad --stream_* flags are rejected. With --stream_publish_dir the stream publishes
// serving bundles (a full one, then deltas) that a BundleServer (the body of `ips serve`) running
// alongside hot-reloads without losing a request. Without a publisher nothing is published and no
// freshness is reported; --stream_negatives 0, a sequence model, and a --stream_publish_dir that
// another run holds, that is no bundle root or whose current version is another model type are
// refused before anything is trained.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/random.h"
#include "launch/commands.h"
#include "launch/stream_train.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "tests/testing/metrics_lines.h"
#include "worker/record_parsers.h"
#include "worker/serving.h"
#include "worker/serving_fixture.h"

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

std::string EventLines(int begin, int end) {
  std::string all;
  for (int i = begin; i < end; ++i) {
    Event e;
    e.user = 1 + Mix64(i) % 20;
    e.item = 1 + Mix64(i + 77) % 100;
    e.category = e.item % 10 + 1;
    e.timestamp = 1700000000 + i;
    AppendEventLine(e, &all);
  }
  return all;
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
  // Every line parses and names its phase and the model; the stream_result line has the RESULT
  // line's figures, loss and events_per_s included (QA: they were missing).
  auto parsed = ParseMetricsLines(m);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->size(), 4u) << m;
  for (size_t i = 0; i < 3; ++i) {
    const ParsedMetricsLine& w = (*parsed)[i];
    EXPECT_EQ(w.Get("phase"), "stream") << m;
    EXPECT_EQ(w.Get("model"), "din") << m;
    EXPECT_EQ(w.Get("events"), std::to_string(1000 * (i + 1))) << m;
    for (const char* key : {"examples", "auc", "logloss", "step", "elapsed_s", "examples_per_s"})
      EXPECT_TRUE(w.Has(key)) << key << " in " << m;
  }
  auto field = [&out](const std::string& key) {  // key= of the RESULT line
    const size_t at = out.find(" " + key + "=");
    if (at == std::string::npos) return std::string();
    const size_t b = at + key.size() + 2;
    return out.substr(b, out.find_first_of(" \n", b) - b);
  };
  const ParsedMetricsLine& result = parsed->back();
  EXPECT_EQ(result.Get("phase"), "stream_result") << m;
  EXPECT_EQ(result.Get("model"), "din") << m;
  EXPECT_EQ(result.Get("events"), "3000") << m;
  for (const char* key : {"loss", "events_per_s", "examples_per_s", "auc_window"}) {
    ASSERT_TRUE(result.Has(key)) << key << " in " << m;
    EXPECT_TRUE(std::isfinite(std::stod(result.Get(key)))) << key << " in " << m;
    // The RESULT line's figure (4 decimals there, 6 here; 1 for the rates in both).
    const std::string shown = field(key);
    ASSERT_FALSE(shown.empty()) << key << " in " << out;
    EXPECT_NEAR(std::stod(result.Get(key)), std::stod(shown), 1e-4) << key;
  }
}

// The scores of a response line {"user":..,"version":V,"scores":[...]} (%.9g: exact floats).
std::vector<float> ResponseScores(const std::string& r) {
  std::vector<float> out;
  size_t pos = r.find("\"scores\":[");
  if (pos == std::string::npos) return out;
  pos += 10;
  while (pos < r.size() && r[pos] != ']') {
    char* end = nullptr;
    out.push_back(std::strtof(r.c_str() + pos, &end));
    pos = static_cast<size_t>(end - r.c_str());
    if (pos < r.size() && r[pos] == ',') ++pos;
  }
  return out;
}

int64_t ResponseVersion(const std::string& r) {
  const size_t pos = r.find("\"version\":");
  return pos == std::string::npos ? -1 : std::atoll(r.c_str() + pos + 10);
}

TEST(StreamTrainCli, PublishDir_ServeHotReloadsEveryVersion_FinalScoresEqualFreshBundle) {
  const std::string tmp = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                          "/ips_stream_publish_" + std::to_string(getpid());
  ps::RemoveTree(tmp);
  ASSERT_TRUE(ps::MakeDirs(tmp).ok());
  const std::string events = tmp + "/events.tsv", bundle = tmp + "/bundle";
  // A growing log: 12 chunks of 250 events, 30 ms apart, tailed by the stream.
  std::ofstream(events, std::ios::binary) << EventLines(0, 250);
  std::thread writer([&] {
    for (int c = 1; c < 12; ++c) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      std::ofstream(events, std::ios::binary | std::ios::app) << EventLines(250 * c, 250 * c + 250);
    }
  });
  StreamCliOptions o;
  o.follow = true;
  o.idle_timeout_s = 0.8;  // ends the stream once the writer stopped
  o.publish_every_s = 0;
  o.publish_every_steps = 4;
  o.max_batch_delay_s = 0.02;
  o.window_events = 1000;
  o.publish_dir = bundle;
  o.publish_full_every = 3;
  std::atomic<bool> done{false};
  int rc = -1;
  testing::internal::CaptureStdout();
  std::thread training([&] {
    rc = RunStreamTrain(SmallConfig(), events, RunSinks{}, o);
    done = true;
  });

  // `ips serve` on the bundle root as soon as the first publish is there.
  for (int i = 0; i < 3000 && !ps::PathExists(bundle + "/CURRENT") && !done; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto server = BundleServer::Create(bundle, 2);
  ASSERT_TRUE(server.ok()) << server.status();
  // Requests without categories: the bundle's map (the stream's items) fills them in.
  Rng rng(17);
  auto request = [&](std::string* line) {
    *line = R"({"user":1,"history":[)";
    for (int i = 0; i < 8; ++i) *line += (i ? "," : "") + std::to_string(1 + rng.UniformInt(100));
    *line += R"(],"candidates":[)";
    for (int i = 0; i < 20; ++i) *line += (i ? "," : "") + std::to_string(1 + rng.UniformInt(110));
    *line += "]}";
  };
  std::vector<std::string> responses;
  std::set<int64_t> versions;
  int64_t sent = 0, last_version = 0;
  bool monotone = true;
  std::string line;
  auto serve_one = [&] {
    request(&line);
    bool ok = false;
    responses.push_back((*server)->HandleLine(++sent, line, &ok));
    EXPECT_TRUE(ok) << responses.back();
    const int64_t v = ResponseVersion(responses.back());
    monotone = monotone && v >= last_version;
    last_version = v;
    versions.insert(v);
  };
  while (!done) {
    serve_one();
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  training.join();
  writer.join();
  const std::string out = testing::internal::GetCapturedStdout();
  ASSERT_EQ(rc, kExitOk) << out;
  auto final_version = CurrentBundleVersion(bundle);
  ASSERT_TRUE(final_version.ok()) << final_version.status();
  // Keep serving until the final publish is picked up (bounded), then compare.
  for (int i = 0; i < 5000 && last_version < *final_version; ++i) {
    serve_one();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(last_version, *final_version);
  auto fresh = Bundle::Load(bundle);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_NE((*fresh)->item_cats(), nullptr);
  auto scorer = Scorer::Create(*fresh);
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  for (int r = 0; r < 20; ++r) {
    serve_one();
    ASSERT_EQ(ResponseVersion(responses.back()), *final_version);
    // The same request scored by the final bundle loaded fresh, categories given explicitly from
    // its map (the event log's item % 10 + 1).
    ScoreRequest q;
    size_t a = line.find("[") + 1, b = line.find("]");
    for (std::istringstream is(line.substr(a, b - a)); is.good();) {
      uint64_t v;
      char comma;
      is >> v;
      q.history.push_back(v);
      is >> comma;
    }
    a = line.find("[", b) + 1;
    b = line.find("]", a);
    for (std::istringstream is(line.substr(a, b - a)); is.good();) {
      uint64_t v;
      char comma;
      is >> v;
      q.candidates.push_back(v);
      is >> comma;
    }
    for (uint64_t h : q.history) q.history_cats.push_back(h % 10 + 1);
    for (uint64_t c : q.candidates) q.candidate_cats.push_back(c <= 100 ? c % 10 + 1 : 0);
    ScoreResponse want;
    ASSERT_TRUE((*scorer)->Score(q, &want).ok());
    EXPECT_EQ(ResponseScores(responses.back()), want.scores) << responses.back();
  }
  // No request lost, versions never went back, several versions served.
  EXPECT_EQ(static_cast<int64_t>(responses.size()), sent);
  for (const auto& r : responses) EXPECT_EQ(r.find("error"), std::string::npos) << r;
  EXPECT_TRUE(monotone);
  EXPECT_GE(versions.size(), 2u);
  EXPECT_GE((*server)->reloads(), 1);
  // The RESULT line: as many publishes as versions, and freshness measured to the publishes.
  const size_t res = out.find("RESULT train_stream ");
  ASSERT_NE(res, std::string::npos) << out;
  const std::string result = out.substr(res);
  EXPECT_NE(result.find(" publishes=" + std::to_string(*final_version) + " "), std::string::npos)
      << result;
  EXPECT_NE(result.find(" freshness_p50_ms="), std::string::npos) << result;
  EXPECT_NE(result.find(" freshness_p99_ms="), std::string::npos) << result;
  EXPECT_EQ(result.find("nan"), std::string::npos) << result;
  std::printf("[ publish ] %lld requests over %zu versions, %lld reloads; %s",
              static_cast<long long>(sent), versions.size(),
              static_cast<long long>((*server)->reloads()), result.c_str());
  server->reset();
  ps::RemoveTree(tmp);
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

// QA: a file starting with a UTF-8 byte order mark (an editor's "UTF-8 with BOM"), which `ips
// data convert` reads, failed the stream at line 1 ("user: ... (got '\xef\xbb\xbf...')"). It
// trains every event now, as the same file without the mark.
TEST(StreamTrainCli, FileStartingWithAByteOrderMarkTrainsEveryEvent) {
  const std::string plain = WriteEvents("plain.tsv", 300, "");
  const std::string path = plain + ".bom";
  {
    std::ifstream in(plain, std::ios::binary);
    std::ofstream(path, std::ios::binary) << "\xef\xbb\xbf" << in.rdbuf();
  }
  StreamCliOptions o;
  o.follow = false;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(SmallConfig(), path, RunSinks{}, o);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(plain.c_str());
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitOk) << err;
  EXPECT_NE(out.find("RESULT train_stream model=din events=300 "), std::string::npos) << out;
}

TEST(StreamTrainCli, MissingSourceAndBadFlags) {
  StreamCliOptions o;
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunStreamTrain(SmallConfig(), "/nonexistent/events.tsv", RunSinks{}, o), kExitError);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("/nonexistent/events.tsv"), std::string::npos) << err;

  FlagSet flags("train");
  AddStreamFlags(&flags);
  ASSERT_TRUE(flags
                  .Parse({"--stream_negatives", "2", "--stream_no_follow", "--stream_publish_dir",
                          "/tmp/b", "--stream_publish_full_every", "4"})
                  .ok());
  auto good = StreamCliOptionsFromFlags(flags);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->negatives, 2);
  EXPECT_FALSE(good->follow);
  EXPECT_EQ(good->publish_dir, "/tmp/b");
  EXPECT_EQ(good->publish_full_every, 4);
  FlagSet bad("train");
  AddStreamFlags(&bad);
  ASSERT_TRUE(bad.Parse({"--stream_window_events", "0"}).ok());
  auto r = StreamCliOptionsFromFlags(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--stream_window_events"), std::string::npos);
}

// Without --stream_publish_dir (or a caller's publisher) nothing is published, but the RESULT line
// said publishes=1 freshness_p50_ms=44.5 (the no-op publish points): now publishes=0 and no
// freshness (na; null in the metrics JSON, as other undefined metrics there).
TEST(StreamTrainCli, WithoutAPublisher_ReportsNoPublishAndNoFreshness) {
  const std::string path = WriteEvents("nopub.tsv", 2000, "");
  StreamCliOptions o;
  o.follow = false;
  o.publish_every_steps = 5;
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(SmallConfig(), path, sinks, o);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(path.c_str());
  ASSERT_EQ(rc, kExitOk) << err;
  EXPECT_NE(out.find(" publishes=0 freshness_p50_ms=na freshness_p99_ms=na"), std::string::npos)
      << out;
  EXPECT_NE(
      metrics.str().find("\"publishes\":0,\"freshness_p50_ms\":null,\"freshness_p99_ms\":null}"),
      std::string::npos)
      << metrics.str();
  EXPECT_NE(err.find("nothing published (no --stream_publish_dir)"), std::string::npos) << err;
}

// --stream_negatives 0 was accepted: every example a positive, the window AUC nan, exit 0. The
// valid range is 1..1000, from the flags and for a library caller alike.
TEST(StreamTrainCli, NegativesOutsideTheirRange_Refused) {
  for (const char* n : {"0", "-1", "1001"}) {
    FlagSet flags("train");
    AddStreamFlags(&flags);
    ASSERT_TRUE(flags.Parse({"--stream_negatives", n}).ok());
    auto r = StreamCliOptionsFromFlags(flags);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind(
                  std::string("--stream_negatives ") + n + ": expected 1..1000", 0),
              0u)
        << r.status();
  }
  const std::string path = WriteEvents("neg0.tsv", 200, "");
  StreamCliOptions o;
  o.follow = false;
  o.negatives = 0;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(SmallConfig(), path, RunSinks{}, o);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitError);
  EXPECT_EQ(out.find("RESULT"), std::string::npos) << out;
  EXPECT_NE(err.find("--stream_negatives 0: expected 1..1000"), std::string::npos) << err;
}

// A sequence model said "model sasrec is a sequence model, not a CTR model": the command and the
// model types it supports are named.
TEST(StreamTrainCli, SequenceModel_RefusedNamingTheCommandAndTheSupportedTypes) {
  config::Config cfg = SmallConfig();
  cfg.mutable_model()->set_type(config::ModelConfig::SASREC);
  cfg.mutable_model()->set_num_heads(1);
  const std::string want =
      "`ips train --stream`: model.type SASREC is a sequence model; `ips train --stream` supports "
      "model.type DIN, DIEN, POOLED, MIND or BST (the CTR models)";
  EXPECT_EQ(CheckStreamConfig(cfg).message(), want);
  const std::string path = WriteEvents("sasrec.tsv", 200, "");
  StreamCliOptions o;
  o.follow = false;
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(cfg, path, RunSinks{}, o);
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitError);
  EXPECT_NE(err.find(want), std::string::npos) << err;
}

// --stream_publish_dir is checked and locked before anything is trained: a root that another run
// holds (its pid named), a directory that is no bundle root (a checkpoint's), and a root whose
// current version is another model type (a DIEN bundle for a DIN stream: a server following it
// would switch model type) are refused with nothing trained or written.
TEST(StreamTrainCli, PublishDirRefusedBeforeTraining_HeldNotABundleRootOrAnotherModelType) {
  const std::string tmp = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                          "/ips_stream_refused_" + std::to_string(getpid());
  ps::RemoveTree(tmp);
  ASSERT_TRUE(ps::MakeDirs(tmp).ok());
  const std::string events = tmp + "/events.tsv";
  std::ofstream(events, std::ios::binary) << EventLines(0, 500);
  // A DIEN bundle root.
  std::string dien_text = ConfigToText(SmallConfig());
  const std::string din = "type: DIN";
  ASSERT_NE(dien_text.find(din), std::string::npos) << dien_text;
  dien_text.replace(dien_text.find(din), din.size(), "type: DIEN");
  auto dien = MakeServingState(dien_text, 8, {5, 5}, ps::TableOptions(), 0, 0);
  ASSERT_TRUE(dien.ok()) << dien.status();
  BundleSource src;
  src.config_text = dien_text;
  src.origin = "test";
  src.tensors = (*dien)->content.tensors;
  for (auto& t : (*dien)->tables) src.tables.push_back(t.get());
  ExportOptions eo;
  eo.output = tmp + "/dien_bundle";
  ASSERT_TRUE(PublishBundle(src, eo).ok());
  // A checkpoint root.
  CheckpointOptions co;
  co.dir = tmp + "/ckpt";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(3, (*dien)->content).ok());
  // A bundle root another run holds.
  const std::string held = tmp + "/held";
  ASSERT_TRUE(ps::MakeDirs(held).ok());
  const int fd = ::open((held + "/LOCK").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string pid = std::to_string(::getpid());
  ASSERT_EQ(::pwrite(fd, (pid + "\n").data(), pid.size() + 1, 0),
            static_cast<ssize_t>(pid.size() + 1));
  struct Case {
    std::string dir, want;
  };
  for (const Case& c : std::vector<Case>{
           {held, "--stream_publish_dir " + held + " is in use by another run (pid " + pid + ")"},
           {co.dir, "--stream_publish_dir " + co.dir + ": is a training checkpoint root"},
           {eo.output, "--stream_publish_dir " + eo.output +
                           ": its current version v-1 holds a DIEN model (model.embedding_dim 4), "
                           "the new version would hold a DIN model (model.embedding_dim 4)"}}) {
    SCOPED_TRACE(c.dir);
    StreamCliOptions o;
    o.follow = false;
    o.publish_every_steps = 2;
    o.publish_dir = c.dir;
    RunSinks sinks;
    std::ostringstream metrics;  // a window line would mean training happened
    sinks.metrics_out = &metrics;
    o.window_events = 100;
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    const int rc = RunStreamTrain(SmallConfig(), events, sinks, o);
    const std::string out = testing::internal::GetCapturedStdout();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(rc, kExitError) << out;
    EXPECT_EQ(out.find("RESULT"), std::string::npos) << out;
    EXPECT_EQ(metrics.str(), "") << "trained before refusing";
    EXPECT_EQ(err.find("streamed "), std::string::npos) << err;
    EXPECT_NE(err.find(c.want), std::string::npos) << err << "\nwant: " << c.want;
  }
  EXPECT_EQ(CurrentBundleVersion(eo.output).value(), 1);
  EXPECT_FALSE(ps::PathExists(held + "/CURRENT"));
  EXPECT_FALSE(ps::PathExists(co.dir + "/CURRENT"));
  ::close(fd);
  ps::RemoveTree(tmp);
}

TEST(StreamTrainCli, MaxBadRecordsSkipsAndCountsInResult) {
  const std::string path = WriteEvents("skip.tsv", 100, "3\t9\t2\t1700000000\tpv\tx\n");
  StreamCliOptions o;
  o.follow = false;
  o.max_bad_records = 1;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = RunStreamTrain(SmallConfig(), path, RunSinks{}, o);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  std::remove(path.c_str());
  EXPECT_EQ(rc, kExitOk) << err;
  EXPECT_NE(out.find(" bad_lines=1"), std::string::npos) << out;
  EXPECT_NE(err.find("warning: skipping bad line " + path + ":101: domain"), std::string::npos)
      << err;
}

}  // namespace
}  // namespace ips
