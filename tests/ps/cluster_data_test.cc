// Distributed training on a dataset directory (launch/cluster_train.h, data.train_dir) under
// mpirun, through the `ips` binary as a user runs it, on a tiny dataset made here with
// `ips data synth` + `ips data convert`:
//  - 1 worker + 1 PS (sync) trains exactly single-process RunDatasetTraining: every step loss
//    equal to the last bit, and the per-epoch lines (loss, HR@10, NDCG@10, AUC, GAUC, logloss at
//    the 8 digits they are printed with) equal;
//  - 2 workers + 2 PS complete with each worker on its own half of every epoch's batches and a
//    ranking quality far above a random scorer's;
//  - a given-protocol dataset (labelled rows) trains like single-process training too, its epoch
//    lines counting the evaluated rows as eval_rows;
//  - a missing or corrupt train_dir fails on every rank with the reason, a non-zero exit and no
//    hang, and one with fewer batches per epoch than workers with the message of
//    `ips config check --np N` (sequence models on a dataset: tests/ps/cluster_seq_test.cc);
//  - a checkpoint written mid-epoch resumes (1 worker, and 2 workers + 2 PS) with the
//    uninterrupted run's step losses and metrics bit for bit, and single-process
//    `ips train --resume` continues a cluster checkpoint to the same final metrics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "tests/testing/metrics_lines.h"
#include "tests/testing/mpi_run.h"
#include "tests/testing/run_ips.h"
#include "worker/data_reader.h"
#include "worker/trainer.h"

namespace ips {
namespace {

using testing::LastLine;
using testing::MpiRun;
using testing::RunIps;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

// The value of "key": in a JSON line, or key= in a RESULT line ("" if absent).
std::string JsonField(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return "";
  const size_t b = at + k.size();
  return line.substr(b, line.find_first_of(",}", b) - b);
}
double ResultValue(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  if (at == std::string::npos) return std::nan("");
  return std::atof(line.c_str() + at + key.size() + 2);
}
// A per-epoch line without its timing fields (samples_per_s, eval_s).
std::string WithoutTimings(std::string line) {
  for (const char* key : {"\"samples_per_s\":", "\"eval_s\":"}) {
    const size_t at = line.find(key);
    if (at == std::string::npos) continue;
    const size_t end = line.find_first_of(",}", at);
    line.erase(at, end - at);
  }
  return line;
}

// `timeout mpirun -np NP ips ARGS`.
MpiRun RunMpiIps(int np, const std::string& args, int timeout_s = 60) {
  return testing::RunMpi(IPS_BINARY, np, args, timeout_s);
}

// A tiny seqrec dataset (~200 users, ~320 items, 3786 training examples per epoch in 2 shards,
// 100 sampled negatives per evaluation list), made once per test binary.
class ClusterData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScratchDir("cluster_data");
    auto synth = RunIps("data synth --output " + Dir() +
                        "/events.txt --truth none --events 6000 --users 200 --items 300 "
                        "--categories 20 --seed 3");
    ASSERT_EQ(synth.exit_code, 0) << synth.output;
    auto conv = RunIps("data convert --format events --protocol seqrec --input " + Dir() +
                       "/events.txt --output " + Dir() + "/ds --max_history 10 --shards 2");
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Dir() { return dir_->path(); }
  static std::string Data() { return Dir() + "/ds"; }
  // A given-protocol dataset (DIEN files: labelled examples with their histories; label 1 when
  // the target's category is the history's).
  static std::string GivenData() {
    for (const bool train : {true, false}) {
      std::ofstream out(Dir() + (train ? "/dien_train" : "/dien_test"));
      Rng rng(train ? 1 : 2);
      for (int n = 0; n < (train ? 1500 : 300); ++n) {
        const int g = static_cast<int>(rng.UniformInt(10));
        const bool positive = rng.UniformInt(2) == 0;
        const int tg = positive ? g : (g + 1 + static_cast<int>(rng.UniformInt(9))) % 10;
        out << (positive ? 1 : 0) << "\tU" << rng.UniformInt(100) << "\tM"
            << tg * 10 + rng.UniformInt(10) << "\tC" << tg << "\tM" << g * 10 + rng.UniformInt(10)
            << "\x02M" << g * 10 + rng.UniformInt(10) << "\tC" << g
            << "\x02"
               "C"
            << g << "\n";
      }
    }
    auto conv = RunIps("data convert --format dien --input " + Dir() + "/dien_train --eval_input " +
                       Dir() + "/dien_test --output " + Dir() + "/given --max_history 10");
    EXPECT_EQ(conv.exit_code, 0) << conv.output;
    return Dir() + "/given";
  }

  // The config of every run: DIN on the dataset, 2 epochs, every step logged.
  static std::string Config(const std::string& name, const std::string& extra = "",
                            const std::string& data = Data()) {
    const std::string path = Dir() + "/" + name + ".pbtxt";
    std::ofstream(path) << "version: 1\nname: \"" << name << "\"\n"
                        << "data { train_dir: \"" << data
                        << "\" batch_size: 128 max_history: 10 seed: 0 }\n"
                           "model { type: DIN embedding_dim: 8 attention_hidden: [16, 8] "
                           "mlp_hidden: [32, 16] activation: PRELU }\n"
                           "optimizer { type: ADAM learning_rate: 0.01 }\n"
                           "tables { name: \"item\" dim: 8 initializer { type: XAVIER_NORMAL } }\n"
                           "tables { name: \"category\" dim: 8 initializer { type: XAVIER_NORMAL "
                           "} }\n"
                           "train { epochs: 2 num_threads: 1 seed: 0 log_every_steps: 1 }\n"
                           "eval { top_k: 10 every_epochs: 1 }\n"
                           "cluster { num_ps: 1 sync: SYNC }\n"
                        << extra;
    return path;
  }

  static testing::ScratchDir* dir_;
};
testing::ScratchDir* ClusterData::dir_ = nullptr;

// The lines of a --metrics_out text with the given phase, as written ("" phase: every line).
// Every line must parse and begin with "phase" and "model" (ParseMetricsLines).
std::vector<std::string> LinesOf(const std::string& text, const std::string& phase) {
  auto parsed = ParseMetricsLines(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << text;
  std::vector<std::string> out;
  const std::vector<std::string> all = Lines(text);
  if (!parsed.ok() || parsed->size() != all.size()) return out;
  for (size_t i = 0; i < all.size(); ++i)
    if (phase.empty() || (*parsed)[i].Get("phase") == phase) out.push_back(all[i]);
  return out;
}

// Single-process training as `ips train` runs it (launch/train_command.cc): every step's loss and
// the train and per-epoch metrics lines.
struct SingleProcess {
  std::vector<double> losses;
  std::vector<std::string> train_lines, epoch_lines;
};
SingleProcess TrainSingleProcess(const std::string& config_path) {
  SingleProcess sp;
  auto cfg = LoadConfig(config_path, {});
  EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
  if (!cfg.ok()) return sp;
  auto job = TrainJobFromConfig(*cfg);
  EXPECT_TRUE(job.ok()) << job.status().ToString();
  auto data = Dataset::Open(job->dataset.train_dir);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  if (!job.ok() || !data.ok()) return sp;
  EXPECT_TRUE(FitJobToDataset(**data, &*job).ok());
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  EXPECT_TRUE(store.ok());
  auto trainer = Trainer::Create(job->trainer, store->get());
  EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
  if (!store.ok() || !trainer.ok()) return sp;
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  sinks.on_step = [&sp](int64_t, double loss) { sp.losses.push_back(loss); };
  auto r = RunDatasetTraining(trainer->get(), **data, job->dataset, sinks);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  sp.train_lines = LinesOf(metrics.str(), "train");
  sp.epoch_lines = LinesOf(metrics.str(), "epoch");
  EXPECT_EQ(sp.train_lines.size() + sp.epoch_lines.size(), Lines(metrics.str()).size());
  return sp;
}

// The cluster run's metrics lines: step losses (17 digits), train, per-epoch and result lines.
struct ClusterMetrics {
  std::vector<std::string> losses;  // as printed
  std::vector<int64_t> steps;
  std::vector<std::string> train_lines, epoch_lines, result_lines;
};
ClusterMetrics ReadClusterMetrics(const std::string& path) {
  ClusterMetrics m;
  const std::string text = testing::ReadFile(path);
  m.train_lines = LinesOf(text, "train");
  m.epoch_lines = LinesOf(text, "epoch");
  m.result_lines = LinesOf(text, "result");
  EXPECT_EQ(m.train_lines.size() + m.epoch_lines.size() + m.result_lines.size(), Lines(text).size())
      << text;
  for (const std::string& line : m.train_lines) {
    m.losses.push_back(JsonField(line, "step_loss"));
    m.steps.push_back(std::stoll(JsonField(line, "step")));
  }
  return m;
}
std::string Digits17(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

// The cluster run's step losses (all 17 digits), train lines and epoch lines equal single-process
// training's: every step is logged (train.log_every_steps 1), in the same train lines but worker
// 0's timings, rank and PS traffic (QA: single-process dataset runs wrote no train lines).
void ExpectSameRun(const SingleProcess& sp, const ClusterMetrics& cm, const std::string& err) {
  ASSERT_EQ(cm.losses.size(), sp.losses.size()) << err;
  for (size_t i = 0; i < sp.losses.size(); ++i)
    ASSERT_EQ(cm.losses[i], Digits17(sp.losses[i])) << "step " << i + 1;
  ASSERT_EQ(cm.train_lines.size(), sp.train_lines.size());
  for (size_t i = 0; i < sp.train_lines.size(); ++i)
    for (const char* key : {"model", "step", "epoch", "loss", "step_loss"})
      ASSERT_EQ(JsonField(cm.train_lines[i], key), JsonField(sp.train_lines[i], key))
          << key << "\n"
          << cm.train_lines[i] << "\n"
          << sp.train_lines[i];
  ASSERT_EQ(cm.epoch_lines.size(), sp.epoch_lines.size());
  for (size_t e = 0; e < sp.epoch_lines.size(); ++e)
    EXPECT_EQ(WithoutTimings(cm.epoch_lines[e]), WithoutTimings(sp.epoch_lines[e]));
}

TEST_F(ClusterData, OneWorkerOnePsEqualsSingleProcessBitwise) {
  const std::string config = Config("one");
  const SingleProcess sp = TrainSingleProcess(config);
  ASSERT_EQ(sp.losses.size(), 60u);  // 2 epochs of ceil(3786 / 128) = 30 batches
  ASSERT_EQ(sp.epoch_lines.size(), 2u);
  const std::string metrics = Dir() + "/one.jsonl";
  MpiRun r = RunMpiIps(2, "train --quiet --config " + config + " --metrics_out " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::cerr << "1 worker + 1 PS: " << r.seconds << " s\n";
  const ClusterMetrics cm = ReadClusterMetrics(metrics);
  ExpectSameRun(sp, cm, r.err);
  const std::string last = LastLine(r.out);
  EXPECT_EQ(
      last.rfind("RESULT train_cluster model=din workers=1 ps=1 sync=sync epochs=2 steps=60", 0),
      0u)
      << last;
  // The result line: single-process `ips train`'s names, then the layout.
  ASSERT_EQ(cm.result_lines.size(), 1u);
  const std::string& result = cm.result_lines[0];
  for (const auto& [key, want] : std::vector<std::pair<std::string, std::string>>{
           {"model", "\"din\""}, {"epochs", "2"}, {"steps", "60"}, {"workers", "1"}, {"ps", "1"}})
    EXPECT_EQ(JsonField(result, key), want) << key << " in " << result;
  for (const char* key :
       {"samples_per_s", "loss", "hr10", "ndcg10", "auc", "gauc", "logloss", "staleness_max"})
    EXPECT_FALSE(JsonField(result, key).empty()) << key << " in " << result;
  std::ostringstream hr;
  hr << std::fixed << std::setprecision(4) << std::stod(JsonField(sp.epoch_lines[1], "hr10"));
  EXPECT_NE(last.find(" hr10=" + hr.str() + " "), std::string::npos) << last;
}

TEST_F(ClusterData, GivenDatasetOneWorkerEqualsSingleProcessAndReportsRowAuc) {
  const std::string config = Config("given", "", GivenData());
  const SingleProcess sp = TrainSingleProcess(config);
  ASSERT_EQ(sp.losses.size(), 24u);  // 2 epochs of ceil(1500 / 128) = 12 batches
  ASSERT_EQ(sp.epoch_lines.size(), 2u);
  EXPECT_EQ(sp.epoch_lines[1].find("hr10"), std::string::npos) << sp.epoch_lines[1];
  const std::string metrics = Dir() + "/given.jsonl";
  MpiRun r = RunMpiIps(2, "train --quiet --config " + config + " --metrics_out " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const ClusterMetrics cm = ReadClusterMetrics(metrics);
  ExpectSameRun(sp, cm, r.err);
  // The epoch lines count the 300 evaluated rows as rows, not users.
  for (const std::string& line : cm.epoch_lines) {
    EXPECT_EQ(JsonField(line, "eval_rows"), "300") << line;
    EXPECT_EQ(line.find("eval_users"), std::string::npos) << line;
  }
  const std::string last = LastLine(r.out);
  EXPECT_EQ(last.find(" hr10="), std::string::npos) << last;
  const double auc = std::stod(JsonField(sp.epoch_lines[1], "auc"));
  EXPECT_GT(auc, 0.75) << "the category separates the labels";
  std::ostringstream shown;
  shown << std::fixed << std::setprecision(4) << auc;
  EXPECT_NE(last.find(" auc=" + shown.str() + " "), std::string::npos) << last;
}

// Every worker steps in every round: an epoch of fewer batches than workers is refused before
// training, with the message `ips config check --np N` gives for it.
TEST_F(ClusterData, BadTrainDirTooSmallForTheWorkersFailsAsConfigCheckSays) {
  // 1500 given rows per epoch = 2 batches of 1000 for 3 workers (4 ranks, one PS).
  const std::string config = Config("small", "", GivenData());
  const std::string sets = " --set data.batch_size=1000";
  const testing::IpsRun check = RunIps("config check --config " + config + sets + " --np 4");
  ASSERT_EQ(check.exit_code, 1) << check.output;
  const std::string want = "FAILED_PRECONDITION: data.train_dir '" + Dir() +
                           "/given': 1500 training examples per epoch do not give each of the 3 "
                           "workers one batch of 1000 (that needs 3000): lower data.batch_size or "
                           "use fewer workers";
  EXPECT_NE(check.output.find("error: " + want + "\n"), std::string::npos) << check.output;
  MpiRun r = RunMpiIps(4, "train --quiet --config " + config + sets, 45);
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.err;
  EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  // The job's one RESULT line: worker 0's error (before, a job ended so printed none).
  const std::vector<std::string> lines = testing::ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  EXPECT_EQ(lines[0], "RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): " +
                          want + "; ending the job\"");
  // Two workers get a batch each.
  EXPECT_EQ(RunIps("config check --config " + config + sets + " --np 3").exit_code, 0);
}

TEST_F(ClusterData, OneRankTrainsSingleProcessAndSaysSo) {
  MpiRun r = RunMpiIps(1, "train --quiet --config " + Config("np1", "") + " --set train.epochs=1");
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("mpirun started one rank"), std::string::npos) << r.err;
  EXPECT_EQ(LastLine(r.out).rfind("RESULT train model=din", 0), 0u) << r.out;
}

TEST_F(ClusterData, TwoWorkersTwoPsSplitTheBatches) {
  const std::string config = Config("two");
  const std::string metrics = Dir() + "/two.jsonl";
  MpiRun r = RunMpiIps(
      4, "train --quiet --config " + config + " --set cluster.num_ps=2 --metrics_out " + metrics,
      80);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::cerr << "2 workers + 2 PS: " << r.seconds << " s\n";
  const std::string last = LastLine(r.out);
  // 30 batches per epoch: 15 rounds of 2 workers, every batch trained once.
  EXPECT_EQ(
      last.rfind("RESULT train_cluster model=din workers=2 ps=2 sync=sync epochs=2 steps=30 ", 0),
      0u)
      << last;
  EXPECT_NE(r.err.find("15 steps/epoch, 0 examples/epoch left out"), std::string::npos) << r.err;
  // A random scorer: HR@10 = 10/101, AUC = 0.5.
  EXPECT_GT(ResultValue(last, "hr10"), 0.3) << last;
  EXPECT_GT(ResultValue(last, "auc"), 0.7) << last;
  EXPECT_FALSE(std::isnan(ResultValue(last, "ndcg10"))) << last;
  EXPECT_LT(ResultValue(last, "loss"), 0.69) << last;  // below log(2): it learned
  const ClusterMetrics cm = ReadClusterMetrics(metrics);
  EXPECT_EQ(cm.losses.size(), 30u);
  EXPECT_EQ(cm.epoch_lines.size(), 2u);
  // Both servers hold rows: the embeddings are sharded over them.
  EXPECT_NE(r.err.find("rank 0 (ps 0): table item rows="), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rank 1 (ps 1): table item rows="), std::string::npos) << r.err;
}

// `ips eval` of a synthetic checkpoint of 2 workers scores the held-out batches the run scored:
// those after both workers' training batches (QA: it took those after one worker's, which the
// second worker had trained on, and reported AUC 0.935 for a run whose held-out AUC was 0.905).
TEST_F(ClusterData, TwoWorkersSyntheticEvalScoresTheRunsHeldOutBatches) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "ctest sets IPS_SOURCE_DIR";
  const std::string sets =
      " --config " + std::string(src) +
      "/launch/configs/din_synthetic.pbtxt --set data.synthetic.num_items=20000"
      " --set data.synthetic.steps=24 --set data.synthetic.warmup_steps=2"
      " --set data.batch_size=128 --set train.num_threads=1 --set checkpoint.dir=" +
      Dir() + "/syn_ckpt";
  MpiRun r = RunMpiIps(3, "train --quiet" + sets, 90);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const std::string last = LastLine(r.out);
  ASSERT_EQ(last.rfind("RESULT train_cluster model=din workers=2", 0), 0u) << last;
  const double heldout = ResultValue(last, "auc");  // the held-out AUC, 4 digits
  const testing::IpsRun eval = RunIps("eval" + sets + " --checkpoint " + Dir() + "/syn_ckpt");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const double got = ResultValue(LastLine(eval.output), "auc");
  EXPECT_NEAR(got, heldout, 5e-5) << eval.output << "\n" << last;
}

TEST_F(ClusterData, BadTrainDirFailsOnEveryRankWithoutHanging) {
  const std::string missing = Dir() + "/no_such_dir";
  MpiRun r = RunMpiIps(
      3, "train --quiet --config " + Config("bad") + " --set data.train_dir=" + missing, 45);
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.err;
  // Every rank says why (each opened the directory itself).
  for (const char* rank : {"rank 0 (ps 0)", "rank 1 (worker 0)", "rank 2 (worker 1)"})
    EXPECT_NE(
        r.err.find(std::string("error: ") + rank + ": NOT_FOUND: data.train_dir '" + missing + "'"),
        std::string::npos)
        << rank << "\n"
        << r.err;
  // One RESULT line for the job: worker 0's error line (launch/main.cc).
  EXPECT_EQ(r.out,
            "RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): NOT_FOUND: "
            "data.train_dir '" +
                missing + "': " + missing +
                "/MANIFEST: cannot open (not a converted dataset directory?)\"\n")
      << r.out;
  EXPECT_LT(r.seconds, 40) << r.err;

  // A corrupt copy (a flipped byte in MANIFEST): DATA_LOSS.
  const std::string corrupt = Dir() + "/corrupt";
  ASSERT_EQ(std::system(("rm -rf " + corrupt + " && cp -r " + Data() + " " + corrupt).c_str()), 0);
  {
    std::fstream f(corrupt + "/MANIFEST", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('#');
  }
  r = RunMpiIps(3, "train --quiet --config " + Config("bad") + " --set data.train_dir=" + corrupt,
                45);
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.err;
  EXPECT_NE(r.err.find("DATA_LOSS"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.rfind("RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): "
                        "DATA_LOSS: data.train_dir '" +
                            corrupt + "'",
                        0),
            0u)
      << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;
}

TEST_F(ClusterData, CheckpointMidEpochResumesBitwise) {
  const std::string ckpt = Dir() + "/ckpt";
  ASSERT_EQ(std::system(("rm -rf " + ckpt).c_str()), 0);
  const std::string config =
      Config("ck", "checkpoint { dir: \"" + ckpt + "\" every_steps: 20 keep_last: 5 }\n");
  const std::string full_metrics = Dir() + "/ck_full.jsonl";
  MpiRun full = RunMpiIps(2, "train --quiet --config " + config + " --metrics_out " + full_metrics);
  ASSERT_EQ(full.exit_code, 0) << full.err << full.out;
  // Step 20 is in the middle of epoch 1 (30 steps per epoch).
  MpiRun resumed = RunMpiIps(2, "train --quiet --config " + Config("ck") + " --resume " + ckpt +
                                    "/ckpt-20 --metrics_out " + Dir() + "/ck_resumed.jsonl");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  std::cerr << "full " << full.seconds << " s, resumed " << resumed.seconds << " s\n";
  const ClusterMetrics a = ReadClusterMetrics(full_metrics);
  const ClusterMetrics b = ReadClusterMetrics(Dir() + "/ck_resumed.jsonl");
  ASSERT_EQ(a.losses.size(), 60u);
  ASSERT_EQ(b.losses.size(), 40u);
  for (size_t i = 0; i < b.losses.size(); ++i) {
    EXPECT_EQ(b.steps[i], a.steps[20 + i]);
    ASSERT_EQ(b.losses[i], a.losses[20 + i]) << "step " << b.steps[i];
  }
  ASSERT_EQ(b.epoch_lines.size(), 2u);  // the resumed epoch 1 (its loss sums steps 1..30) and 2
  for (size_t e = 0; e < 2; ++e)
    EXPECT_EQ(WithoutTimings(b.epoch_lines[e]), WithoutTimings(a.epoch_lines[e]));
  EXPECT_EQ(LastLine(resumed.out).substr(0, LastLine(resumed.out).find(" samples_per_s")),
            LastLine(full.out).substr(0, LastLine(full.out).find(" samples_per_s")));
  // A cluster checkpoint continues single-process with the same final metrics.
  auto single = testing::RunIpsSplit("train --quiet --config " + Config("ck") + " --resume " +
                                     ckpt + "/ckpt-20");
  ASSERT_EQ(single.exit_code, 0) << single.error << single.output;
  const std::string s_last = LastLine(single.output), c_last = LastLine(full.out);
  for (const char* key : {"loss", "hr10", "ndcg10", "auc", "gauc", "logloss"})
    EXPECT_EQ(ResultValue(s_last, key), ResultValue(c_last, key)) << key << "\n"
                                                                  << s_last << "\n"
                                                                  << c_last;
}

// Item ids are numbered per dataset: a cluster --resume of a checkpoint trained on a dataset of
// another vocabulary used to train silently with every row standing for another item. Every
// worker refuses it naming both datasets, without hanging; the same input converted again with
// other evaluation lists has the same vocabulary and resumes.
TEST_F(ClusterData, OneWorkerResumeOnAnotherVocabularyIsRefused) {
  const std::string ckpt = Dir() + "/ckpt_vocab";
  ASSERT_EQ(std::system(("rm -rf " + ckpt).c_str()), 0);
  // Every item id shifted: as many users, items and categories, another vocabulary.
  {
    std::istringstream in(testing::ReadFile(Dir() + "/events.txt"));
    std::ofstream out(Dir() + "/events_shifted.txt");
    for (std::string line; std::getline(in, line);) {
      const size_t a = line.find('\t'), b = line.find('\t', a + 1);
      out << line.substr(0, a + 1) << std::stoll(line.substr(a + 1, b - a - 1)) + 1000
          << line.substr(b) << "\n";
    }
  }
  for (const std::string& conv :
       {"--input " + Dir() + "/events_shifted.txt --output " + Dir() + "/ds_shifted",
        "--input " + Dir() + "/events.txt --output " + Dir() + "/ds_again --eval_negatives 50"}) {
    auto r = RunIps("data convert --format events --protocol seqrec --max_history 10 --shards 2 " +
                    conv);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  MpiRun train = RunMpiIps(2, "train --quiet --config " +
                                  Config("voc", "checkpoint { dir: \"" + ckpt + "\" }\n") +
                                  " --set train.max_steps=10");
  ASSERT_EQ(train.exit_code, 0) << train.err << train.out;

  MpiRun other = RunMpiIps(2,
                           "train --quiet --config " +
                               Config("voc_other", "", Dir() + "/ds_shifted") + " --resume " + ckpt,
                           45);
  EXPECT_NE(other.exit_code, 0) << other.err;
  EXPECT_NE(other.exit_code, 124) << "hung: " << other.err;
  EXPECT_NE(
      other.err.find("(worker 0): INVALID_ARGUMENT: --resume " + ckpt + ": the checkpoint at " +
                     ckpt + "/ckpt-10 was trained on data.train_dir '" + Data() + "' (events: "),
      std::string::npos)
      << other.err;
  EXPECT_NE(other.err.find("but data.train_dir '" + Dir() + "/ds_shifted' (events: "),
            std::string::npos)
      << other.err;
  const std::vector<std::string> lines = testing::ResultLines(other.out);
  ASSERT_EQ(lines.size(), 1u) << other.out;
  EXPECT_EQ(lines[0].rfind("RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): "
                           "INVALID_ARGUMENT: --resume ",
                           0),
            0u)
      << lines[0];

  MpiRun again =
      RunMpiIps(2, "train --quiet --config " + Config("voc_again", "", Dir() + "/ds_again") +
                       " --set train.max_steps=20 --resume " + ckpt);
  EXPECT_EQ(again.exit_code, 0) << again.err << again.out;
}

// 2 workers + 2 PS, sync: the servers apply a step's pushes in worker order, so a run resumed
// mid-epoch repeats worker 0's step losses, the epoch lines and the final metrics bit for bit:
// each worker resumes its own part of the epoch's loss sum (from step 13 on, a float sum of
// worker 0 carrying both parts differed in the 8th digit of epoch 1's mean).
TEST_F(ClusterData, ResumeTwoWorkersMidEpochBitwise) {
  const std::string ckpt = Dir() + "/ckpt2";
  ASSERT_EQ(std::system(("rm -rf " + ckpt).c_str()), 0);
  const std::string config =
      Config("ck2", "checkpoint { dir: \"" + ckpt + "\" every_steps: 13 keep_last: 5 }\n");
  const std::string full_metrics = Dir() + "/ck2_full.jsonl";
  MpiRun full = RunMpiIps(4, "train --quiet --config " + config +
                                 " --set cluster.num_ps=2 --metrics_out " + full_metrics);
  ASSERT_EQ(full.exit_code, 0) << full.err << full.out;
  // Step 13 of 15 per epoch: in the middle of epoch 1.
  MpiRun resumed =
      RunMpiIps(4, "train --quiet --config " + Config("ck2") + " --set cluster.num_ps=2 --resume " +
                       ckpt + "/ckpt-13 --metrics_out " + Dir() + "/ck2_resumed.jsonl");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  const ClusterMetrics a = ReadClusterMetrics(full_metrics);
  const ClusterMetrics b = ReadClusterMetrics(Dir() + "/ck2_resumed.jsonl");
  ASSERT_EQ(a.losses.size(), 30u);
  ASSERT_EQ(b.losses.size(), 17u);
  for (size_t i = 0; i < b.losses.size(); ++i)
    ASSERT_EQ(b.losses[i], a.losses[13 + i]) << "step " << b.steps[i];
  ASSERT_EQ(b.epoch_lines.size(), 2u);
  for (size_t e = 0; e < 2; ++e)
    EXPECT_EQ(WithoutTimings(b.epoch_lines[e]), WithoutTimings(a.epoch_lines[e]));
}

}  // namespace
}  // namespace ips
