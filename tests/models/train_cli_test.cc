// `ips train` as a user runs it: a tiny synthetic run ends with the RESULT line and appends JSON
// lines to --metrics_out; a dataset converted by `ips data convert` trains for epochs and reports
// the peer's ranking metrics; bad configs, flags and datasets exit non-zero with a message naming
// the problem.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testing/metrics_lines.h"
#include "tests/testing/run_ips.h"

namespace {

using ips::testing::LastLine;
using ips::testing::RunIps;

std::string ConfigNamed(const std::string& name) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  return std::string(src ? src : ".") + "/launch/configs/" + name;
}
std::string Config() { return ConfigNamed("din_synthetic.pbtxt"); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream all;
  all << in.rdbuf();
  return all.str();
}

// The value of `key=` in a RESULT line (NaN if absent).
double ResultValue(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  if (at == std::string::npos) return std::nan("");
  return std::atof(line.c_str() + at + key.size() + 2);
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
  // Train lines at step counts 3 and 6 (warm-up included) and the last, 8; then eval and result.
  // Every line names its phase and the model (the CTR run's train and eval lines did not).
  auto lines = ips::ParseMetricsLines(m);
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  std::string phases;
  for (const ips::ParsedMetricsLine& l : *lines) {
    EXPECT_EQ(l.Get("model"), "din") << m;
    phases += l.Get("phase") + l.Get("step") + " ";
  }
  EXPECT_EQ(phases, "train3 train6 train8 eval8 result ") << m;
  EXPECT_EQ((*lines)[1].Get("timed_steps"), "4") << m;
  EXPECT_EQ((*lines)[3].Get("examples"), "64") << m;
  for (const char* key : {"samples_per_s", "steps", "batch", "threads", "loss", "auc"})
    EXPECT_TRUE((*lines)[4].Has(key)) << key << " in " << m;
  std::remove(metrics.c_str());
}

TEST(TrainCli, UnsupportedAndBadInputExitNonZero) {
  // Every model runs on CUDA: DIN and BST on CUDA train where CUDA is built and a device is
  // visible, and are refused with the reason elsewhere.
  ips::testing::IpsRun r;
  for (const char* type : {"DIN", "BST"}) {
    r = RunIps("train --config " + Config() + kSmall +
               " --set model.device=CUDA --set model.type=" + type);
    if (r.exit_code != 0) {
      EXPECT_EQ(r.exit_code, 1) << r.output;
      EXPECT_TRUE(r.output.find("built without CUDA") != std::string::npos ||
                  r.output.find("no CUDA device is visible") != std::string::npos)
          << r.output;
    } else {
      EXPECT_NE(r.output.find("RESULT train model="), std::string::npos) << r.output;
    }
  }
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

// Inputs that used to be accepted and then exhaust memory or be silently ignored: refused before
// anything is trained, naming what to change.
TEST(TrainCli, RunsThatCannotWorkAreRefusedUpFront) {
  // Every batch of the synthetic protocol is made before training: a run whose batches cannot fit
  // in memory fails at once (not after swapping, or killed).
  auto r = RunIps("train --config " + Config() + kSmall + " --eval_batches 100000000");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("RESOURCE_EXHAUSTED"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--eval_batches"), std::string::npos) << r.output;
  r = RunIps("train --config " + Config() + kSmall +
             " --set data.synthetic.steps=2000000000 --set data.batch_size=512");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("data.synthetic.steps"), std::string::npos) << r.output;
  // Streaming training writes no checkpoints: --resume and checkpoint.dir are refused.
  const std::string stream_config = ConfigNamed("din_stream.pbtxt");
  // (A usage error, exit 2, before the config is read: see EvalBatchesOnlyWhereItEvaluates.)
  r = RunIps("train --config " + stream_config + " --stream /nonexistent.tsv --resume /tmp/x");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--resume does not apply to --stream"), std::string::npos) << r.output;
  r = RunIps("train --config " + stream_config +
             " --stream /nonexistent.tsv --set checkpoint.dir=/tmp/x");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--stream writes no checkpoints"), std::string::npos) << r.output;
}

// `ips eval --eval_batches 0` would evaluate no example and print auc=nan with exit 0: it is a
// usage error (exit 2) naming the flag and its range, like a bad flag; 1 batch evaluates.
TEST(TrainCli, EvalOfNoBatchesIsAUsageError) {
  const std::string ck =
      ::testing::TempDir() + "/train_cli_eval_batches_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + ck).c_str());
  auto r = RunIps("train --quiet --config " + Config() + kSmall + " --set checkpoint.dir=" + ck);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string eval = "eval --config " + Config() + kSmall + " --checkpoint " + ck;
  for (const char* bad : {"0", "-3", "2147483648"}) {
    SCOPED_TRACE(bad);
    r = RunIps(eval + " --eval_batches " + bad);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("ips eval: --eval_batches must be in [1, 2147483647], got " +
                            std::string(bad)),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("usage: ips eval"), std::string::npos) << r.output;
    EXPECT_EQ(LastLine(r.output).rfind("RESULT eval status=error exit=2 error=\"ips eval: "
                                       "--eval_batches must be in [1, 2147483647], got " +
                                           std::string(bad) + "\"",
                                       0),
              0u)
        << r.output;
  }
  r = RunIps(eval + " --eval_batches 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string last = LastLine(r.output);
  EXPECT_EQ(last.rfind("RESULT eval model=din ", 0), 0u) << r.output;
  EXPECT_NE(last.find(" examples=32 "), std::string::npos) << last;
  EXPECT_TRUE(std::isfinite(ResultValue(last, "auc"))) << last;
  (void)std::system(("rm -rf " + ck).c_str());
}

// A seqrec file with a planted pattern (user u walks cyclically through item group u % 40 of
// 10 items), converted with `ips data convert`, then trained 2 epochs: HR@10 must clearly beat a
// random scorer's 10/101.
TEST(TrainCli, ConvertedDatasetTrainsEpochsAndReportsRankingMetrics) {
  const std::string dir = ::testing::TempDir() + "/train_cli_ds_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  {
    std::ofstream out(dir + "/events.txt");
    uint64_t x = 12345;
    for (int u = 1; u <= 400; ++u) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;  // LCG: the walk's start item
      const int g = (u - 1) % 40, start = static_cast<int>((x >> 33) % 10);
      for (int j = 0; j < 12; ++j) out << u << " " << g * 10 + (start + j) % 10 + 1 << "\n";
    }
  }
  auto conv = RunIps("data convert --format seqrec --input " + dir + "/events.txt --output " + dir +
                     "/ds --max_history 10");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  const std::string metrics = dir + "/metrics.jsonl";
  const std::string base = "train --config " + ConfigNamed("din_ml100k.pbtxt") +
                           " --set data.train_dir=" + dir +
                           "/ds --set data.max_history=10 --set data.batch_size=64"
                           " --set optimizer.learning_rate=0.01 --set train.num_threads=1";
  auto r =
      RunIps(base + " --set train.epochs=2 --set eval.every_epochs=1 --metrics_out " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string last = LastLine(r.output);
  EXPECT_EQ(last.rfind("RESULT train model=din epochs=2 steps=", 0), 0u) << r.output;
  for (const char* key : {"samples_per_s", "loss", "hr10", "ndcg10", "auc"})
    EXPECT_FALSE(std::isnan(ResultValue(last, key))) << key << " in " << last;
  EXPECT_GT(ResultValue(last, "hr10"), 0.25) << last;  // random: 10/101 = 0.099
  EXPECT_GT(ResultValue(last, "ndcg10"), 0.1) << last;
  EXPECT_GT(ResultValue(last, "auc"), 0.7) << last;
  const std::string m = Slurp(metrics);
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"din\",\"epoch\":1,\"hr10\":"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"din\",\"epoch\":2,\"hr10\":"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("\"ndcg10\":"), std::string::npos) << m;
  EXPECT_NE(m.find("{\"phase\":\"result\",\"model\":\"din\",\"epochs\":2,"), std::string::npos)
      << m;
  // Every line parses and names its phase and the model; train lines every train.log_every_steps
  // (20 in din_ml100k.pbtxt) steps and after the last, as synthetic and cluster runs write them
  // (QA: a dataset run wrote none, and its epoch lines had no "phase").
  auto lines = ips::ParseMetricsLines(m);
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  for (const ips::ParsedMetricsLine& l : *lines) EXPECT_EQ(l.Get("model"), "din") << m;
  const auto train = ips::LinesOfPhase(*lines, "train");
  const int64_t steps = static_cast<int64_t>(ResultValue(last, "steps"));
  ASSERT_EQ(train.size(), static_cast<size_t>((steps + 19) / 20)) << m;
  for (size_t i = 0; i < train.size(); ++i) {
    EXPECT_EQ(train[i].Get("step"),
              std::to_string(i + 1 < train.size() ? 20 * static_cast<int64_t>(i + 1) : steps));
    for (const char* key : {"epoch", "loss", "step_loss", "samples_per_s", "elapsed_s"})
      EXPECT_TRUE(train[i].Has(key)) << key << " in " << m;
  }
  EXPECT_EQ(ips::LinesOfPhase(*lines, "epoch").size(), 2u) << m;
  EXPECT_EQ(lines->back().Get("phase"), "result") << m;

  // Missing and corrupt dataset directories: exit 1 with the reader's message.
  r = RunIps(base + " --set data.train_dir=" + dir + "/no_such_dir");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir + "/no_such_dir"), std::string::npos) << r.output;
  {
    std::fstream f(dir + "/ds/MANIFEST", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('#');  // breaks the manifest's CRC line
  }
  r = RunIps(base);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("DATA_LOSS"), std::string::npos) << r.output;
  EXPECT_EQ(LastLine(r.output).rfind("RESULT train status=error exit=1 error=\"DATA_LOSS: ", 0), 0u)
      << r.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

}  // namespace

namespace {

// The value of `key=` in a RESULT line as printed ("" if absent).
std::string ResultText(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  if (at == std::string::npos) return "";
  const size_t b = at + key.size() + 2, e = line.find(' ', b);
  return line.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

// The one line of an `ips eval --metrics_out` file, which must parse as a metrics line.
ips::ParsedMetricsLine OnlyLine(const std::string& path) {
  const std::string text = Slurp(path);
  auto lines = ips::ParseMetricsLines(text);
  EXPECT_TRUE(lines.ok()) << lines.status().ToString();
  if (!lines.ok() || lines->size() != 1) {
    ADD_FAILURE() << "want one line in " << path << ":\n" << text;
    return {};
  }
  return lines->front();
}

// `ips eval --metrics_out` writes a MetricsLine (phase "eval"): the figures of its RESULT line,
// under the names training's lines give them (the evaluated candidate lists are "eval_users" as
// in the epoch lines, given rows "eval_rows"; RESULT keeps "users" and "examples", which scripts
// read), a metric that is not finite as null. Its line was written by hand: it said "users" and
// printed nan, which no JSON reader takes.
TEST(TrainCli, EvalMetricsLineNamesItsFiguresAsTrainingDoes) {
  const std::string dir = ::testing::TempDir() + "/train_cli_eval_line_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  // Every figure of the line but phase and model is the RESULT line's, as printed there (nan:
  // null).
  // `renamed`: the line's name of the count, `as`: RESULT's.
  auto expect_figures_of = [](const ips::ParsedMetricsLine& line, const std::string& result,
                              const std::string& renamed, const std::string& as) {
    EXPECT_EQ(line.Get("phase"), "eval");
    EXPECT_EQ(line.Get("model"), "din");
    for (size_t i = 2; i < line.members.size(); ++i) {
      const auto& [key, value] = line.members[i];
      const std::string printed = ResultText(result, key == renamed ? as : key);
      EXPECT_EQ(value, printed == "nan" ? "null" : printed) << key << " in " << result;
    }
  };

  // Synthetic data: the members of training's own eval line of the held-out batches.
  const std::string syn = Config() + kSmall;
  auto r =
      RunIps("train --quiet --config " + syn + " --eval_batches 2 --set checkpoint.dir=" + dir +
             "/syn_ck --metrics_out " + dir + "/syn_train.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("eval --config " + syn + " --eval_batches 2 --checkpoint " + dir +
             "/syn_ck --metrics_out " + dir + "/syn_eval.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const ips::ParsedMetricsLine syn_eval = OnlyLine(dir + "/syn_eval.jsonl");
  expect_figures_of(syn_eval, LastLine(r.output), "", "");
  auto train_lines = ips::ParseMetricsLines(Slurp(dir + "/syn_train.jsonl"));
  ASSERT_TRUE(train_lines.ok()) << train_lines.status().ToString();
  const auto train_eval = ips::LinesOfPhase(*train_lines, "eval");
  ASSERT_EQ(train_eval.size(), 1u);
  ASSERT_EQ(syn_eval.members.size(), train_eval[0].members.size())
      << Slurp(dir + "/syn_eval.jsonl");
  for (size_t i = 0; i < syn_eval.members.size(); ++i)
    EXPECT_EQ(syn_eval.members[i].first, train_eval[0].members[i].first);

  // A ranked dataset (seqrec): the evaluation members of training's epoch lines.
  {
    std::ofstream out(dir + "/events.txt");
    for (int u = 1; u <= 60; ++u)
      for (int j = 0; j < 8; ++j) out << u << " " << (u % 6) * 10 + (u + j) % 10 + 1 << "\n";
  }
  r = RunIps("data convert --format seqrec --input " + dir + "/events.txt --output " + dir +
             "/ranked --max_history 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ranked = ConfigNamed("din_ml100k.pbtxt") + " --set data.train_dir=" + dir +
                             "/ranked --set data.max_history=10 --set data.batch_size=32" +
                             " --set train.num_threads=1 --set train.epochs=1";
  r = RunIps("train --quiet --config " + ranked + " --set checkpoint.dir=" + dir +
             "/ranked_ck --metrics_out " + dir + "/ranked_train.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("eval --config " + ranked + " --checkpoint " + dir + "/ranked_ck --metrics_out " +
             dir + "/ranked_eval.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ranked_result = LastLine(r.output);
  EXPECT_NE(ranked_result.find(" users="), std::string::npos) << ranked_result;
  const ips::ParsedMetricsLine ranked_eval = OnlyLine(dir + "/ranked_eval.jsonl");
  expect_figures_of(ranked_eval, ranked_result, "eval_users", "users");
  EXPECT_FALSE(ranked_eval.Has("users")) << Slurp(dir + "/ranked_eval.jsonl");
  train_lines = ips::ParseMetricsLines(Slurp(dir + "/ranked_train.jsonl"));
  ASSERT_TRUE(train_lines.ok()) << train_lines.status().ToString();
  const auto epochs = ips::LinesOfPhase(*train_lines, "epoch");
  ASSERT_EQ(epochs.size(), 1u);
  for (const char* key : {"hr10", "ndcg10", "auc", "gauc", "logloss", "eval_users"}) {
    EXPECT_TRUE(epochs[0].Has(key)) << key;
    EXPECT_TRUE(ranked_eval.Has(key)) << key << " in " << Slurp(dir + "/ranked_eval.jsonl");
  }

  // A given dataset (DIEN's files) whose evaluation rows are all clicks: AUC and GAUC are NaN.
  auto write_dien = [](const std::string& path, int lines, bool all_clicks) {
    std::ofstream out(path);
    for (int n = 0; n < lines; ++n) {
      const int user = n % 40, group = user % 8;
      const bool click = all_clicks || n % 2 == 0;
      const int target = (click ? group : (group + 1) % 8) * 10 + n % 10;
      std::string hist, cats;
      for (int t = 0; t < 4; ++t) {
        hist += (t ? "\x02" : "") + ("M" + std::to_string(group * 10 + (n + t) % 10));
        cats += (t ? "\x02" : "") + ("C" + std::to_string(group));
      }
      out << (click ? 1 : 0) << "\tU" << user << "\tM" << target << "\tC" << target / 10 << "\t"
          << hist << "\t" << cats << "\n";
    }
  };
  write_dien(dir + "/train", 200, false);
  write_dien(dir + "/test", 40, true);
  r = RunIps("data convert --format dien --input " + dir + "/train --eval_input " + dir +
             "/test --output " + dir + "/given --max_history 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string given = ConfigNamed("din_ml100k.pbtxt") + " --set data.train_dir=" + dir +
                            "/given --set data.max_history=10 --set data.batch_size=32" +
                            " --set train.num_threads=1 --set train.epochs=1";
  r = RunIps("train --quiet --config " + given + " --set checkpoint.dir=" + dir + "/given_ck");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("eval --config " + given + " --checkpoint " + dir + "/given_ck --metrics_out " + dir +
             "/given_eval.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string given_result = LastLine(r.output);
  EXPECT_EQ(ResultText(given_result, "auc"), "nan") << given_result;  // RESULT as before
  const ips::ParsedMetricsLine given_eval = OnlyLine(dir + "/given_eval.jsonl");
  expect_figures_of(given_eval, given_result, "eval_rows", "examples");
  EXPECT_EQ(given_eval.Get("auc"), "null");
  EXPECT_EQ(given_eval.Get("eval_rows"), "40");
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: --eval_batches was accepted and ignored where nothing evaluates held-out batches: it sets
// the final AUC's batches of a CTR model on data.synthetic. Elsewhere it is a usage error (exit 2)
// naming the flag and what it needs: a config on data.train_dir (refused before the dataset is
// opened), a sequence model on data.synthetic (throughput only), --stream (a prequential AUC).
// A bad value is a usage error too (it was exit 1, after the config was read).
TEST(TrainCli, EvalBatchesOnlyWhereItEvaluates) {
  struct Case {
    std::string args, error;
  };
  for (const Case& c : std::vector<Case>{
           {"--config " + ConfigNamed("din_games.pbtxt") + " --set data.train_dir=/nonexistent" +
                " --eval_batches 3",
            "error: --eval_batches applies only to data.synthetic runs (the held-out batches of "
            "their AUC); this config trains on data.train_dir '/nonexistent', evaluated "
            "after every eval.every_epochs epochs"},
           {"--config " + ConfigNamed("sasrec_synthetic.pbtxt") + kSmall + " --eval_batches 0",
            "error: --eval_batches applies only to CTR models on data.synthetic; sasrec on "
            "data.synthetic has no held-out evaluation"},
           {"--config " + ConfigNamed("din_stream.pbtxt") + " --stream /nonexistent.tsv" +
                " --eval_batches 3",
            "error: --eval_batches does not apply to --stream: it sets the held-out batches of a "
            "data.synthetic run's final AUC; a stream reports its prequential AUC per "
            "--stream_window_events window"},
           {"--config " + Config() + kSmall + " --eval_batches -2",
            "error: --eval_batches must be in [0, 2147483647], got -2"},
           {"--config " + Config() + kSmall + " --eval_batches=2147483648",
            "error: --eval_batches must be in [0, 2147483647], got 2147483648"}}) {
    SCOPED_TRACE(c.args);
    const auto r = RunIps("train --quiet " + c.args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(c.error + "\nusage: ips train"), std::string::npos) << r.output;
    EXPECT_NE(LastLine(r.output).find(" status=error exit=2 error="), std::string::npos)
        << r.output;
  }
  // Where it applies it is taken (0: no held-out evaluation); a sequence model without it trains.
  auto r = RunIps("train --quiet --config " + Config() + kSmall + " --eval_batches 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("train --quiet --config " + ConfigNamed("sasrec_synthetic.pbtxt") + kSmall);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// QA: `ips eval --eval_batches N` on a data.train_dir config or for a sequence model was accepted
// and ignored (exit 0), while `ips train` refuses the same flag there. It is the same usage error
// (exit 2, the message and the usage) before the checkpoint is read; without the flag the same
// eval goes on (here to the missing checkpoint's error). Where it applies it is taken:
// EvalOfNoBatchesIsAUsageError.
TEST(TrainCli, EvalBatchesOnlyWhereEvalTakesThem) {
  struct Case {
    std::string args, error;
  };
  for (const Case& c : std::vector<Case>{
           {"--config " + ConfigNamed("din_games.pbtxt") + " --set data.train_dir=/nonexistent",
            "error: --eval_batches applies only to data.synthetic runs (the held-out batches of "
            "their AUC); this config evaluates on data.train_dir '/nonexistent', with the "
            "dataset's evaluation lists"},
           {"--config " + ConfigNamed("sasrec_synthetic.pbtxt") + kSmall,
            "error: --eval_batches applies only to CTR models on data.synthetic; sasrec on "
            "data.synthetic has no held-out evaluation"}}) {
    SCOPED_TRACE(c.args);
    const std::string eval = "eval " + c.args + " --checkpoint /nonexistent/ck";
    auto r = RunIps(eval + " --eval_batches 3");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(c.error + "\nusage: ips eval"), std::string::npos) << r.output;
    EXPECT_EQ(LastLine(r.output),
              "RESULT eval status=error exit=2 error=\"" + c.error.substr(7) + "\"")
        << r.output;
    r = RunIps(eval);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.find("--eval_batches"), std::string::npos) << r.output;
  }
}

// QA: `ips train --stream_publish_dir DIR` without --stream failed with an unrelated "set
// data.train_dir ... or data.synthetic" error (a stream config), or trained the synthetic config
// and ignored the flag. Every --stream_* flag without --stream is a usage error (exit 2) naming the
// flags and what they need, before the config is read; --resume and mpirun with --stream too.
TEST(TrainCli, StreamFlagsWithoutStreamAreUsageErrors) {
  struct Case {
    std::string args, error;
  };
  for (const Case& c : std::vector<Case>{
           {"--config " + ConfigNamed("din_stream.pbtxt") + " --stream_publish_dir /tmp/never",
            "error: --stream_publish_dir applies only to streaming training: give --stream "
            "SOURCE (an event log, or - for stdin), or leave it out"},
           {"--config " + Config() + kSmall +
                " --stream_no_follow --stream_negatives=3 --stream_no_follow",
            "error: --stream_no_follow, --stream_negatives apply only to streaming training: give "
            "--stream SOURCE (an event log, or - for stdin), or leave them out"},
           {"--config " + ConfigNamed("din_stream.pbtxt") + " --stream /nonexistent.tsv" +
                " --resume /tmp/x",
            "error: --resume does not apply to --stream: a stream starts from a fresh model and "
            "writes no checkpoints (its trained state is in the bundles of "
            "--stream_publish_dir)"}}) {
    SCOPED_TRACE(c.args);
    const auto r = RunIps("train --quiet " + c.args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(c.error + "\nusage: ips train"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("data: set data.train_dir"), std::string::npos) << r.output;
    EXPECT_NE(LastLine(r.output).find(" status=error exit=2 error="), std::string::npos)
        << r.output;
  }
  // A word that is another flag's value is not taken for a --stream_* flag.
  // (--resume's DIR here: no checkpoint there, a runtime error naming it.)
  const auto r =
      RunIps("train --quiet --config " + Config() + kSmall + " --resume --stream_no_follow");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--stream_no_follow"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("applies only to streaming"), std::string::npos) << r.output;
}

// A small seqrec dataset in dir/ranked (60 users, 101 candidates per evaluation list); the
// din_ml100k.pbtxt arguments that train on it for one epoch.
std::string SmallRankedDataset(const std::string& dir) {
  {
    std::ofstream out(dir + "/events.txt");
    for (int u = 1; u <= 60; ++u)
      for (int j = 0; j < 8; ++j) out << u << " " << (u % 6) * 10 + (u + j) % 10 + 1 << "\n";
  }
  const auto r = RunIps("data convert --format seqrec --input " + dir + "/events.txt --output " +
                        dir + "/ranked --max_history 10");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return "--config " + ConfigNamed("din_ml100k.pbtxt") + " --set data.train_dir=" + dir +
         "/ranked --set data.max_history=10 --set data.batch_size=32" +
         " --set train.num_threads=1 --set train.epochs=1";
}

// The keys of a RESULT line, in order.
std::vector<std::string> ResultKeys(const std::string& line) {
  std::vector<std::string> keys;
  std::istringstream in(line);
  for (std::string word; in >> word;) {
    const size_t eq = word.find('=');
    if (eq != std::string::npos) keys.push_back(word.substr(0, eq));
  }
  return keys;
}

// The keys of `all` that are in `some`, in `all`'s order.
std::vector<std::string> KeysAmong(const std::vector<std::string>& all,
                                   const std::vector<std::string>& some) {
  std::vector<std::string> out;
  for (const std::string& k : all)
    for (const std::string& s : some)
      if (k == s) out.push_back(k);
  return out;
}

// QA: with several eval.top_k entries (--set eval.top_k=5,10) the models without user vectors
// reported the first alone: `RESULT ... hr5=.. ndcg5=..` and no hr10/ndcg10, in the RESULT line,
// the epoch and result lines of --metrics_out and `ips eval`. Every entry is reported, in the
// config's order, as hr<k> ndcg<k> before auc, each the figure an evaluation of that cut-off alone
// gives; one entry keeps its keys and their order.
TEST(TrainCli, EveryTopKEntryIsReportedByTrainAndEval) {
  const std::string dir = ::testing::TempDir() + "/train_cli_top_k_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  const std::string args = SmallRankedDataset(dir);
  const std::string top_k = " --set eval.top_k=5,10";
  const std::vector<std::string> ranking = {"hr5", "ndcg5", "hr10", "ndcg10", "auc"};
  auto r = RunIps("train --quiet " + args + top_k + " --set checkpoint.dir=" + dir +
                  "/ck --metrics_out " + dir + "/train.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string train_result = LastLine(r.output);
  EXPECT_EQ(KeysAmong(ResultKeys(train_result), ranking), ranking) << train_result;
  auto lines = ips::ParseMetricsLines(Slurp(dir + "/train.jsonl"));
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  const auto epochs = ips::LinesOfPhase(*lines, "epoch"),
             results = ips::LinesOfPhase(*lines, "result");
  ASSERT_EQ(epochs.size(), 1u);
  ASSERT_EQ(results.size(), 1u);
  for (const ips::ParsedMetricsLine* l : {&epochs[0], &results[0]}) {
    std::vector<std::string> keys;
    for (const auto& [key, value] : l->members) keys.push_back(key);
    EXPECT_EQ(KeysAmong(keys, ranking), ranking) << l->Get("phase");
  }
  for (const std::string& key : ranking)  // 4 decimals in RESULT, 6 on the line
    EXPECT_NEAR(ResultValue(train_result, key), std::stod(results[0].Get(key)), 5.1e-5) << key;

  // `ips eval` of the final checkpoint: the same figures (6 decimals, as the result line).
  r = RunIps("eval " + args + top_k + " --checkpoint " + dir + "/ck --metrics_out " + dir +
             "/eval.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string eval_result = LastLine(r.output);
  EXPECT_EQ(KeysAmong(ResultKeys(eval_result), ranking), ranking) << eval_result;
  const ips::ParsedMetricsLine eval_line = OnlyLine(dir + "/eval.jsonl");
  for (const std::string& key : ranking) {
    EXPECT_EQ(ResultText(eval_result, key), results[0].Get(key)) << key;
    EXPECT_EQ(eval_line.Get(key), results[0].Get(key)) << key;
  }
  // Each cut-off is the one an evaluation of it alone reports; one entry: its keys as before.
  for (const char* k : {"5", "10"}) {
    r = RunIps("eval " + args + " --set eval.top_k=" + k + " --checkpoint " + dir + "/ck");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string alone = LastLine(r.output);
    const std::vector<std::string> one = {std::string("hr") + k, std::string("ndcg") + k, "auc"};
    EXPECT_EQ(KeysAmong(ResultKeys(alone), ranking), one) << alone;
    for (const std::string& key : one)
      EXPECT_EQ(ResultText(alone, key), ResultText(eval_result, key)) << key;
  }
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: eval.top_k=101 was accepted with 101 candidates per list (the held-out item and 100
// negatives), where HR@101 is 1 for every user, and the refusal of 102 said "use at most 101".
// A cut-off must be below the candidates: `ips train` and `ips config check` refuse 101 with the
// same message and accept 100.
TEST(TrainCli, TopKOfEveryCandidateIsRefusedByTrainAndConfigCheck) {
  const std::string dir = ::testing::TempDir() + "/train_cli_top_k_all_" + std::to_string(getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  const std::string args = SmallRankedDataset(dir);
  const std::string want =
      "eval.top_k 101 equals the 101 candidates ranked per user (the held-out item and 100 "
      "sampled negatives): HR@101 would be 1 for every user; use at most 100 (or convert with "
      "more --eval_negatives)";
  const auto train = RunIps("train --quiet " + args + " --set eval.top_k=101");
  EXPECT_EQ(train.exit_code, 1) << train.output;
  EXPECT_NE(LastLine(train.output).find(want), std::string::npos) << train.output;
  const auto check = RunIps("config check " + args + " --set eval.top_k=101");
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_NE(LastLine(check.output).find(want), std::string::npos) << check.output;
  const auto beyond = RunIps("config check " + args + " --set eval.top_k=102");
  EXPECT_NE(beyond.output.find("eval.top_k 102 exceeds the 101 candidates"), std::string::npos)
      << beyond.output;
  EXPECT_NE(beyond.output.find("use at most 100 "), std::string::npos) << beyond.output;
  const auto most = RunIps("config check " + args + " --set eval.top_k=100");
  EXPECT_EQ(most.exit_code, 0) << most.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

}  // namespace

// QA: `ips eval` of a synthetic checkpoint took data.synthetic.* (the warm-up and steps that
// place the held-out batches, the seed and catalogue of the stream) and data.batch_size from the
// eval command's config, not the run's: evaluating a run trained with --set
// data.synthetic.steps=6 with the config file alone scored other batches (auc 0.9007 where
// `ips train` reported 0.8953), and steps=1 with no warm-up scored batches it had trained. It now
// takes them from the config the checkpoint records, with a note naming each one that differs,
// and reports the numbers `ips train` reported.
TEST(TrainCli, EvalOfASyntheticCheckpointTakesTheRunsSettings) {
  const std::string dir =
      ::testing::TempDir() + "/train_cli_eval_settings_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir).c_str());
  const std::string base = "--config " + Config() +
                           " --set data.synthetic.num_items=3000 --set "
                           "data.synthetic.num_categories=20 --set data.max_history=10"
                           " --set train.num_threads=1";
  const std::string run =
      " --set data.batch_size=16 --set data.synthetic.warmup_steps=2"
      " --set data.synthetic.steps=6 --set data.seed=3";
  auto trained =
      RunIps("train --quiet " + base + run + " --eval_batches 3 --set checkpoint.dir=" + dir);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const double auc = ResultValue(LastLine(trained.output), "auc");
  // The config file's own values (batch 512, 20 + 100 steps, seed 0) differ from every one.
  auto eval = RunIps("eval " + base + " --eval_batches 3 --checkpoint " + dir);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NEAR(ResultValue(LastLine(eval.output), "auc"), auc, 5e-5) << eval.output;
  EXPECT_NE(eval.output.find("eval: " + dir +
                             "/ckpt-8 was trained with data.seed 3 (this config: 0), "
                             "data.batch_size 16 (this config: 512), "
                             "data.synthetic.warmup_steps 2 (this config: 20), "
                             "data.synthetic.steps 6 (this config: 100): evaluating the held-out "
                             "batches of that run, with its settings"),
            std::string::npos)
      << eval.output;
  // The same settings as the run: no note, the same numbers.
  eval = RunIps("eval " + base + run + " --eval_batches 3 --checkpoint " + dir);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NEAR(ResultValue(LastLine(eval.output), "auc"), auc, 5e-5) << eval.output;
  EXPECT_EQ(eval.output.find("was trained with"), std::string::npos) << eval.output;
  (void)std::system(("rm -rf " + dir).c_str());
}
