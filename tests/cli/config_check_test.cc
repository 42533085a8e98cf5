// `ips config check` runs the checks of `ips train` (launch/config_command.cc): a config that
// `ips train` refuses before training is refused by `check` with the same error line, every
// shipped config passes, a missing data.train_dir is a warning and an existing one is opened and
// fitted to the job (eval.top_k against its candidate lists, and with --np N the epoch against
// the workers), a checkpoint.dir that cannot be a directory is refused without being created, one
// locked by a running run is refused as `ips train` refuses it, and a config without a data
// source is refused as plain `ips train` refuses it unless --stream checks it as a stream job.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/result_line.h"
#include "proto/config_loader.h"
#include "tests/testing/run_ips.h"

namespace {

using ips::testing::IpsRun;
using ips::testing::LastLine;
using ips::testing::RunIps;

std::string ConfigNamed(const std::string& name) {
  return std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/" + name;
}

// The "error: ..." line of a run's output ("" when there is none).
std::string ErrorLine(const IpsRun& r) {
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("error: ", 0) == 0) return line;
  return "";
}

// Whether the only RESULT line of a failed `ips config check` is its error line (launch/main.cc),
// last, with the message of its "error: " line.
::testing::AssertionResult EndsWithTheErrorResultLine(const IpsRun& r) {
  const std::string error = ErrorLine(r);
  const std::string want = "RESULT config_check status=error exit=1 error=" +
                           ips::QuoteResultValue(error.substr(std::min<size_t>(error.size(), 7)));
  if (r.output.find("RESULT") != r.output.rfind("RESULT") || LastLine(r.output) != want)
    return ::testing::AssertionFailure() << "want the last and only RESULT line\n"
                                         << want << "\nin:\n"
                                         << r.output;
  return ::testing::AssertionSuccess();
}

// `ips config check ARGS` fails (exit 1, no RESULT line) with the error line of `ips TRAIN_ARGS`,
// which must contain `want`.
void ExpectCheckFailsLikeTrain(const std::string& args, const std::string& train_args,
                               const std::string& want) {
  const IpsRun train = RunIps(train_args);
  ASSERT_EQ(train.exit_code, 1) << train.output;
  const IpsRun check = RunIps("config check " + args);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_TRUE(EndsWithTheErrorResultLine(check));
  EXPECT_NE(ErrorLine(check).find(want), std::string::npos) << check.output;
  EXPECT_EQ(ErrorLine(check), ErrorLine(train)) << "check:\n"
                                                << check.output << "train:\n"
                                                << train.output;
}

// A synthetic run small enough to train in a moment, for the cases `ips train` accepts.
const char kSmall[] =
    " --set data.batch_size=16 --set data.max_history=8 --set data.synthetic.num_items=1000"
    " --set data.synthetic.num_categories=10 --set data.synthetic.warmup_steps=1"
    " --set data.synthetic.steps=2 --set train.num_threads=1";

TEST(ConfigCheck, SasrecHeadsThatDoNotDivideTheWidthFailLikeTrain) {
  const std::string args =
      "--config " + ConfigNamed("sasrec_synthetic.pbtxt") + " --set model.num_heads=3";
  ExpectCheckFailsLikeTrain(args, "train " + args + kSmall, "num_heads");
}

TEST(ConfigCheck, TableDimOtherThanEmbeddingDimFailsLikeTrain) {
  const std::string args =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set tables[0].dim=32";
  ExpectCheckFailsLikeTrain(args, "train " + args + kSmall,
                            "--set tables[0].dim=32: tables[0].dim: 32 != model.embedding_dim 18");
  // A table the model needs is missing.
  const std::string missing =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set tables[1].name=cat";
  ExpectCheckFailsLikeTrain(missing, "train " + missing + kSmall, "needs a table named 'category'");
}

TEST(ConfigCheck, ModelOptionsFailLikeTrain) {
  // attention_hidden of 1 size: ModelSpecFromConfig's check, made by the loader too.
  const std::string args =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set model.attention_hidden=80";
  ExpectCheckFailsLikeTrain(args, "train " + args + kSmall, "model.attention_hidden");
}

// A model's or a table's option set by --set is blamed on the override, with the config's field
// path, not on the config file (whose line it replaced) and not with the option's C++ name
// ("MindOptions.num_interests").
TEST(ConfigCheck, OptionErrorsFromSetNameTheOverrideLikeTrain) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"din_synthetic.pbtxt --set tables[0].max_memory_mb=-5",
       "error: INVALID_ARGUMENT: --set tables[0].max_memory_mb=-5: tables[0].max_memory_mb: must "
       "be >= 0 (0: no cap), got -5"},
      {"mind_games.pbtxt --set model.num_interests=0",
       "error: INVALID_ARGUMENT: --set model.num_interests=0: model.num_interests: must be in [1, "
       "64], got 0"},
      {"bst_games.pbtxt --set model.num_heads=5",
       "error: INVALID_ARGUMENT: --set model.num_heads=5: model.num_heads: 5 does not divide "
       "BST's block width 2 * model.embedding_dim = 36"},
      {"dien_synthetic.pbtxt --set model.aux_loss_weight=-1",
       "error: INVALID_ARGUMENT: --set model.aux_loss_weight=-1: model.aux_loss_weight: must be >= "
       "0 (0: no auxiliary loss), got -1"},
      {"dien_synthetic.pbtxt --set model.rnn_hidden=20",
       "error: INVALID_ARGUMENT: --set model.rnn_hidden=20: model.rnn_hidden: must be 2 * "
       "model.embedding_dim = 36 (or 0 for that), got 20"},
      {"din_synthetic.pbtxt --set model.mlp_hidden=200,0",
       "error: INVALID_ARGUMENT: --set model.mlp_hidden=200,0: model.mlp_hidden[1]: must be "
       "positive"},
  };
  for (const auto& [config_and_set, want] : cases) {
    SCOPED_TRACE(config_and_set);
    // The *_games configs name a placeholder data.train_dir (refused before it is read); the
    // synthetic ones get kSmall, should a run start after all.
    const std::string args = "--config " + ConfigNamed(config_and_set);
    const bool synthetic = config_and_set.find("_synthetic") != std::string::npos;
    ExpectCheckFailsLikeTrain(args, "train " + args + (synthetic ? kSmall : ""), want);
    EXPECT_EQ(RunIps("config check " + args).output.find(".pbtxt"), std::string::npos);
  }
}

// cluster.staleness bounds ASYNC's reads: with SYNC it would be ignored, so it is refused, naming
// both fields. No shipped config sets it with SYNC.
TEST(ConfigCheck, StalenessWithSyncIsRefused) {
  const std::string args =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set cluster.staleness=3";
  ExpectCheckFailsLikeTrain(
      args, "train " + args + kSmall,
      "error: INVALID_ARGUMENT: --set cluster.staleness=3: cluster.staleness: 3 is read only with "
      "cluster.sync ASYNC, and cluster.sync is SYNC: set cluster.sync to ASYNC, or leave "
      "cluster.staleness out");
  const IpsRun async = RunIps("config check " + args + " --set cluster.sync=ASYNC");
  EXPECT_EQ(async.exit_code, 0) << async.output;
}

TEST(ConfigCheck, StoreAndCheckpointChecksFailLikeTrain) {
  // The store's table check: a memory cap below one slab per shard, refused when the config
  // loads (blaming the --set), not when a store (a server, under mpirun) builds the table. The
  // error names the smallest cap that works and nothing the config cannot set.
  const std::string cap =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set tables[0].max_memory_mb=1";
  ExpectCheckFailsLikeTrain(cap, "train " + cap + kSmall,
                            "--set tables[0].max_memory_mb=1: tables[0].max_memory_mb: 1 is below "
                            "the 2 MB this table needs at least (dim 18 with ADAM's optimizer "
                            "state); set max_memory_mb to 2 or more, or to 0 for no cap");
  const IpsRun at_minimum = RunIps("config check " + cap + " --set tables[0].max_memory_mb=2");
  EXPECT_EQ(at_minimum.exit_code, 0) << at_minimum.output;
  // Negative checkpoint intervals with checkpoint.dir set (nothing is written by check).
  const std::string dir = ::testing::TempDir() + "/config_check_ck_" + std::to_string(getpid());
  const std::string ck = "--config " + ConfigNamed("din_synthetic.pbtxt") +
                         " --set checkpoint.dir=" + dir + " --set checkpoint.every_steps=-1";
  const IpsRun check = RunIps("config check " + ck);
  EXPECT_FALSE(std::filesystem::exists(dir)) << "config check wrote " << dir;
  ExpectCheckFailsLikeTrain(ck, "train " + ck + kSmall, "checkpoint.every_steps");
  std::filesystem::remove_all(dir);
}

TEST(ConfigCheck, EveryShippedConfigPasses) {
  const std::string absent =
      ::testing::TempDir() + "/config_check_absent_" + std::to_string(getpid());
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(
           std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs")) {
    if (e.path().extension() != ".pbtxt") continue;
    ++seen;
    const std::string path = e.path().string();
    auto cfg = ips::LoadConfigFile(path);
    ASSERT_TRUE(cfg.ok()) << path << ": " << cfg.status().ToString();
    // The shipped data.train_dir is a placeholder that may or may not exist on this host: point it
    // at a directory that certainly does not, so the result does not depend on the host.
    const bool dataset = !cfg->data().train_dir().empty();
    // A config without a data source is one for `ips train --stream` (din_stream.pbtxt).
    const bool stream = !dataset && !cfg->data().has_synthetic();
    const std::string args = "config check --config " + path +
                             (dataset ? " --set data.train_dir=" + absent : "") +
                             (stream ? " --stream events.tsv" : "");
    const IpsRun r = RunIps(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    const std::string last = LastLine(r.output);
    EXPECT_EQ(last.rfind("RESULT config_check config=" + path + " ", 0), 0u) << r.output;
    const std::string data = cfg->data().has_synthetic() ? "synthetic"
                             : dataset                   ? "missing"
                                                         : "stream";
    EXPECT_NE(last.find(" data=" + data), std::string::npos) << r.output;
    if (dataset) {
      EXPECT_NE(r.output.find("warning: data.train_dir '" + absent + "' does not exist"),
                std::string::npos)
          << r.output;
    }
  }
  EXPECT_GE(seen, 10);
}

TEST(ConfigCheck, StreamConfigIsCheckedAsAStreamJob) {
  const std::string cfg = ConfigNamed("din_stream.pbtxt");
  // `ips config check` takes `ips train`'s --stream SOURCE (and does not read SOURCE).
  const std::string stream = " --stream /nonexistent.tsv";
  IpsRun r = RunIps("config check --config " + cfg + stream);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(LastLine(r.output).find(" data=stream"), std::string::npos) << r.output;
  // `ips train --stream` refuses checkpoint.dir before it reads the stream.
  const std::string args = "--config " + cfg + " --set checkpoint.dir=/tmp/never_written" + stream;
  ExpectCheckFailsLikeTrain(args, "train " + args, "checkpoint.dir is set, but --stream");
  // A sequence model cannot stream (the stream trainer is the CTR Trainer).
  const std::string seq =
      "--config " + cfg +
      " --set model.type=SASREC --set model.num_heads=1 --set tables[1].name=x" + stream;
  ExpectCheckFailsLikeTrain(seq, "train " + seq, "sequence model");
  // --resume and mpirun do not go with --stream: usage errors (exit 2, before the config is read)
  // in `ips train` and here alike.
  r = RunIps("config check --config " + cfg + stream + " --resume /tmp/no_checkpoint");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  const IpsRun train = RunIps("train --config " + cfg + stream + " --resume /tmp/no_checkpoint");
  EXPECT_EQ(train.exit_code, 2) << train.output;
  EXPECT_EQ(ErrorLine(r), ErrorLine(train)) << r.output;
  EXPECT_EQ(ErrorLine(r),
            "error: --resume does not apply to --stream: a stream starts from a fresh model and "
            "writes no checkpoints (its trained state is in the bundles of --stream_publish_dir)")
      << r.output;
  EXPECT_NE(r.output.find("usage: ips config check"), std::string::npos) << r.output;
  r = RunIps("config check --config " + cfg + stream + " --np 3");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(ErrorLine(r), "error: --stream runs in one process, not under mpirun") << r.output;
  EXPECT_EQ(LastLine(r.output),
            "RESULT config_check status=error exit=2 error=\"--stream runs in one process, not "
            "under mpirun\"")
      << r.output;
  // --np 1 is a single-process run: --stream goes with it.
  r = RunIps("config check --config " + cfg + stream + " --np 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A config with neither data.train_dir nor data.synthetic (data.train_dir empty, e.g. set to ""
// by an override) is refused by plain `ips train` naming data.train_dir; check refuses it with
// the same error line plus how to check it as a stream job (it passed, checked as one, without a
// word on the exit code).
TEST(ConfigCheck, NoDataSourceFailsLikeTrainWithoutStream) {
  const std::string hint =
      " (checked as plain `ips train`: pass `ips config check` the --stream SOURCE of `ips train "
      "--stream` to check a stream job)";
  for (const std::string& args :
       {"--config " + ConfigNamed("din_stream.pbtxt"),
        "--config " + ConfigNamed("din_ml100k.pbtxt") + " --set data.train_dir="}) {
    SCOPED_TRACE(args);
    const IpsRun train = RunIps("train --quiet " + args);
    ASSERT_EQ(train.exit_code, 1) << train.output;
    EXPECT_NE(ErrorLine(train).find("data: set data.train_dir"), std::string::npos) << train.output;
    const IpsRun check = RunIps("config check " + args);
    EXPECT_EQ(check.exit_code, 1) << check.output;
    EXPECT_TRUE(EndsWithTheErrorResultLine(check));
    EXPECT_EQ(ErrorLine(check), ErrorLine(train) + hint) << check.output;
    // As a stream job it passes.
    const IpsRun stream = RunIps("config check " + args + " --stream -");
    EXPECT_EQ(stream.exit_code, 0) << stream.output;
    EXPECT_NE(LastLine(stream.output).find(" data=stream"), std::string::npos) << stream.output;
  }
  // mpirun: the same error, without the config's name (as RunClusterTrain) and without the hint
  // (a stream runs in one process).
  const IpsRun np = RunIps("config check --config " + ConfigNamed("din_stream.pbtxt") + " --np 3");
  EXPECT_EQ(np.exit_code, 1) << np.output;
  EXPECT_EQ(ErrorLine(np),
            "error: INVALID_ARGUMENT: data: set data.train_dir (a directory written by `ips data "
            "convert`) or data.synthetic")
      << np.output;
}

TEST(ConfigCheck, ClusterLayoutWithNp) {
  const std::string cfg = "--config " + ConfigNamed("din_synthetic.pbtxt");
  IpsRun r = RunIps("config check " + cfg + " --set cluster.num_ps=2 --np 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(ErrorLine(r),
            "error: INVALID_ARGUMENT: --set cluster.num_ps=2: cluster.num_ps: 2 leaves no worker "
            "among the 2 ranks of this job; run mpirun -np 3 or more, or lower cluster.num_ps "
            "below 2")
      << r.output;
  r = RunIps("config check " + cfg + " --set cluster.num_ps=2 --np 3");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(LastLine(r.output).find(" np=3"), std::string::npos) << r.output;
  // Without --np (or with 1) the run is single-process, which ignores the cluster section.
  r = RunIps("config check " + cfg + " --set cluster.num_ps=2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A bad --np is a usage error, as a bad flag is.
  r = RunIps("config check " + cfg + " --np -1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

// QA: `mpirun -np 2 ips train ... --set cluster.num_ps=0` failed with "rank 0: INVALID_ARGUMENT:
// cluster: cluster.num_ps = 0; ..." naming neither the --set nor the file line, and `config check
// --np 2` alike. The layout's error is blamed as a config check's now (the --set, else the file's
// line). num_ps 0 stays valid for a single-process run, which ignores the cluster section.
TEST(ConfigCheck, LayoutErrorsWithNpNameTheSetOrTheFileLine) {
  const std::string synthetic = ConfigNamed("din_synthetic.pbtxt");
  IpsRun r = RunIps("config check --config " + synthetic + " --set cluster.num_ps=0 --np 2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(ErrorLine(r),
            "error: INVALID_ARGUMENT: --set cluster.num_ps=0: cluster.num_ps: must be >= 1 under "
            "mpirun (the parameter-server ranks; a single-process run ignores it), got 0")
      << r.output;
  EXPECT_TRUE(EndsWithTheErrorResultLine(r));
  r = RunIps("config check --config " + synthetic + " --set cluster.num_ps=0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Set by the file: its line.
  const std::string path = ::testing::TempDir() + "/layout_" + std::to_string(getpid()) + ".pbtxt";
  {
    std::ifstream in(synthetic);
    std::stringstream text;
    text << in.rdbuf();
    std::string t = text.str();
    const size_t at = t.find("num_ps: 1");
    ASSERT_NE(at, std::string::npos) << t;
    const int line = static_cast<int>(std::count(t.begin(), t.begin() + at, '\n')) + 1;
    t.replace(at, std::string("num_ps: 1").size(), "num_ps: 4");
    std::ofstream(path) << t;
    r = RunIps("config check --config " + path + " --np 3");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(ErrorLine(r), "error: INVALID_ARGUMENT: " + path + ":" + std::to_string(line) +
                                ": cluster.num_ps: 4 leaves no worker among the 3 ranks of this "
                                "job; run mpirun -np 5 or more, or lower cluster.num_ps below 3")
        << r.output;
  }
  std::remove(path.c_str());
}

// A fresh scratch directory `name` (removed first) under the test's temp dir.
std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name + "_" + std::to_string(getpid());
  EXPECT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  return dir;
}

// A tiny seqrec dataset converted into DIR/ds: 50 users of 8 events over 60 items, i.e. 250
// training rows (500 examples per epoch with their sampled negatives), 50 training sequences and
// 50 evaluation lists of 101 candidates (the held-out item and 100 sampled negatives).
void ConvertSmallDataset(const std::string& dir) {
  {
    std::ofstream out(dir + "/events.txt");
    for (int u = 1; u <= 50; ++u)
      for (int j = 0; j < 8; ++j) out << u << " " << (u * 7 + j) % 60 + 1 << "\n";
  }
  auto conv = RunIps("data convert --format seqrec --input " + dir + "/events.txt --output " + dir +
                     "/ds --max_history 10");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
}

// DIN (din_ml100k.pbtxt) on a dataset; append the data.train_dir.
const char kDinOnDataset[] =
    " --set data.max_history=10 --set data.batch_size=16 --set train.num_threads=1"
    " --set data.train_dir=";

// A converted dataset is opened and fitted; a corrupt one fails as `ips train` does; a missing
// directory is a warning.
TEST(ConfigCheck, DatasetIsOpenedAndFitted) {
  const std::string dir = FreshDir("config_check_ds");
  ConvertSmallDataset(dir);
  const std::string args = "--config " + ConfigNamed("din_ml100k.pbtxt") + kDinOnDataset;
  IpsRun r = RunIps("config check " + args + dir + "/ds");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(LastLine(r.output).find(" data=checked"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;

  r = RunIps("config check " + args + dir + "/no_such_dir");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(LastLine(r.output).find(" data=missing"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("warning: data.train_dir '" + dir + "/no_such_dir' does not exist"),
            std::string::npos)
      << r.output;

  // An existing directory that is not a dataset, and a corrupt manifest: `ips train`'s errors.
  ExpectCheckFailsLikeTrain(args + dir, "train " + args + dir, "data.train_dir '" + dir + "'");
  {
    std::fstream f(dir + "/ds/MANIFEST", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('#');  // breaks the manifest's CRC line
  }
  ExpectCheckFailsLikeTrain(args + dir + "/ds", "train " + args + dir + "/ds", "DATA_LOSS");
  (void)std::system(("rm -rf " + dir).c_str());
}

// eval.top_k at or beyond the candidates ranked per user (101 here) would report HR@K = 1: `ips
// train`, `ips eval` and `ips config check` refuse it with the same message, naming the value and
// the candidate count. One less than the list (100) is accepted; the whole list (101) is not (QA:
// it was, and the refusal of 102 said "use at most 101").
TEST(ConfigCheck, TopKBeyondTheCandidateListFailsLikeTrainAndEval) {
  const std::string dir = FreshDir("config_check_top_k");
  ConvertSmallDataset(dir);
  const std::string args =
      "--config " + ConfigNamed("din_ml100k.pbtxt") + kDinOnDataset + dir + "/ds";
  const std::string top_k = " --set eval.top_k=500";
  ExpectCheckFailsLikeTrain(args + top_k, "train " + args + top_k,
                            "eval.top_k 500 exceeds the 101 candidates");
  // `ips eval` fits the job to the dataset before it opens the checkpoint.
  const IpsRun eval = RunIps("eval " + args + top_k + " --checkpoint " + dir + "/no_checkpoint");
  EXPECT_EQ(eval.exit_code, 1) << eval.output;
  EXPECT_EQ(ErrorLine(eval), ErrorLine(RunIps("config check " + args + top_k))) << eval.output;
  // A later entry counts too (MIND's retrieval cut-offs are checked against the item count).
  ExpectCheckFailsLikeTrain(args + " --set eval.top_k=10,102",
                            "train " + args + " --set eval.top_k=10,102",
                            "eval.top_k[1] 102 exceeds the 101 candidates");
  ExpectCheckFailsLikeTrain(args + " --set eval.top_k=101",
                            "train " + args + " --set eval.top_k=101",
                            "eval.top_k 101 equals the 101 candidates ranked per user (the "
                            "held-out item and 100 sampled negatives): HR@101 would be 1 for every "
                            "user; use at most 100");
  const IpsRun most = RunIps("config check " + args + " --set eval.top_k=100");
  EXPECT_EQ(most.exit_code, 0) << most.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// `mpirun -np N ips train` steps every worker in every round, so an epoch with fewer batches than
// workers is refused before training (RunDatasetRounds); check --np N refuses it with the same
// message (tests/ps/cluster_data_test.cc compares it with an mpirun run's).
TEST(ConfigCheck, EpochWithFewerBatchesThanWorkersFailsWithNp) {
  const std::string dir = FreshDir("config_check_workers");
  ConvertSmallDataset(dir);
  const std::string ds = dir + "/ds";
  // DIN: 500 examples per epoch = 5 batches of 100, for 5 workers (np 6, one PS) but not 7.
  const std::string din = "--config " + ConfigNamed("din_ml100k.pbtxt") + kDinOnDataset + ds +
                          " --set data.batch_size=100";
  IpsRun r = RunIps("config check " + din + " --np 6");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("config check " + din + " --np 8");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(EndsWithTheErrorResultLine(r));
  EXPECT_EQ(ErrorLine(r), "error: FAILED_PRECONDITION: data.train_dir '" + ds +
                              "': 500 training examples per epoch do not give each of the 7 "
                              "workers one batch of 100 (that needs 700): lower data.batch_size "
                              "or use fewer workers")
      << r.output;
  // Without --np the run is single-process: one worker.
  r = RunIps("config check " + din);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // A sequence model trains on sequences: 50 per epoch = 5 batches of 10.
  const std::string sasrec = "--config " + ConfigNamed("sasrec_games.pbtxt") +
                             " --set data.max_history=10 --set data.batch_size=10"
                             " --set train.num_threads=1 --set data.train_dir=" +
                             ds;
  r = RunIps("config check " + sasrec + " --np 6");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("config check " + sasrec + " --np 7");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(ErrorLine(r).find("50 training sequences (with >= 2 events) per epoch do not give each "
                              "of the 6 workers one batch of 10 (that needs 60)"),
            std::string::npos)
      << r.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// `ips train` creates checkpoint.dir (and its parents) when it starts: a path that exists as a
// file, or lies under one, fails there; check refuses it with the same error line and creates
// nothing. A directory it can create passes.
TEST(ConfigCheck, CheckpointDirThatCannotBeADirectoryFailsLikeTrain) {
  const std::string dir = FreshDir("config_check_ckdir");
  std::ofstream(dir + "/file") << "not a directory\n";
  for (const std::string& ck : {dir + "/file", dir + "/file/sub"}) {
    const std::string args =
        "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set checkpoint.dir=" + ck;
    ExpectCheckFailsLikeTrain(args, "train " + args + kSmall, "checkpoint.dir " + ck);
  }
  const std::string fresh = dir + "/new/ck";
  IpsRun r = RunIps("config check --config " + ConfigNamed("din_synthetic.pbtxt") +
                    " --set checkpoint.dir=" + fresh);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/new")) << "config check created " << fresh;
  // A parent without write permission (root writes anywhere: only checked as another user).
  if (geteuid() != 0) {
    std::filesystem::create_directory(dir + "/ro");
    std::filesystem::permissions(
        dir + "/ro", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    const std::string args = "--config " + ConfigNamed("din_synthetic.pbtxt") +
                             " --set checkpoint.dir=" + dir + "/ro/ck";
    ExpectCheckFailsLikeTrain(args, "train " + args + kSmall, "checkpoint.dir " + dir + "/ro/ck");
    std::filesystem::permissions(dir + "/ro", std::filesystem::perms::owner_all);
  }
  (void)std::system(("rm -rf " + dir).c_str());
}

// `ips train` refuses a checkpoint.dir whose DIR/LOCK another run holds (its CheckpointWriter
// flocks it for the run's lifetime): check refuses it with the same error line, naming the pid
// recorded in the lock. The probe creates nothing (no DIR/LOCK in a DIR that has none) and leaves
// the lock free once the other run is gone.
TEST(ConfigCheck, CheckpointDirLockedByAnotherRunFailsLikeTrain) {
  const std::string dir = FreshDir("config_check_cklock");
  const std::string ck = dir + "/ck";
  const std::string args =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set checkpoint.dir=" + ck;
  ASSERT_EQ(::mkdir(ck.c_str(), 0755), 0);
  IpsRun r = RunIps("config check " + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(ck + "/LOCK")) << "config check created " << ck << "/LOCK";

  // This test process is the other run: it holds the lock as CheckpointWriter does, with its pid.
  const std::string lock = ck + "/LOCK";
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string pid = std::to_string(::getpid());
  ASSERT_EQ(::write(fd, (pid + "\n").data(), pid.size() + 1), static_cast<ssize_t>(pid.size() + 1));
  ExpectCheckFailsLikeTrain(args, "train " + args + kSmall,
                            "FAILED_PRECONDITION: checkpoint.dir " + ck +
                                " is in use by another run (pid " + pid +
                                "): give each run its own checkpoint.dir (lock: " + lock + ")");
  // Reported before what DIR holds (as `ips train` does: it takes the lock first).
  ASSERT_EQ(::mkdir((ck + "/ckpt-5").c_str(), 0755), 0);
  r = RunIps("config check " + args);
  EXPECT_NE(ErrorLine(r).find("is in use by another run (pid " + pid + ")"), std::string::npos)
      << r.output;
  ASSERT_EQ(::rmdir((ck + "/ckpt-5").c_str()), 0);
  // The other run is gone: check passes, and its probe left the lock free for `ips train`.
  ::close(fd);
  r = RunIps("config check " + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const IpsRun train = RunIps("train --quiet " + args + kSmall);
  EXPECT_EQ(train.exit_code, 0) << train.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// `ips train` refuses a checkpoint.dir holding checkpoints it would mix with (any, for a fresh
// run; newer ones than the resumed step, with --resume) and a --resume checkpoint trained on a
// dataset of another vocabulary; check refuses them with the same error line (plus, for a fresh
// run, how to check a resumed one) and, given `ips train`'s --resume DIR, checks the resumed run.
TEST(ConfigCheck, CheckpointDirOfAnotherRunAndResumeVocabularyFailLikeTrain) {
  const std::string dir = FreshDir("config_check_ckrun");
  ConvertSmallDataset(dir);
  const std::string ck = dir + "/ck";
  const std::string args = "--config " + ConfigNamed("din_ml100k.pbtxt") + kDinOnDataset + dir +
                           "/ds --set checkpoint.dir=" + ck + " --set checkpoint.every_steps=4";
  const IpsRun first = RunIps("train --quiet " + args + " --set train.max_steps=8");
  ASSERT_EQ(first.exit_code, 0) << first.output;

  // A fresh run.
  const IpsRun train = RunIps("train --quiet " + args + " --set train.max_steps=4");
  ASSERT_EQ(train.exit_code, 1) << train.output;
  const std::string want = "error: FAILED_PRECONDITION: checkpoint.dir " + ck +
                           " already holds 2 checkpoint(s) of an earlier run (newest: " + ck +
                           "/ckpt-8)";
  EXPECT_EQ(ErrorLine(train).rfind(want, 0), 0u) << train.output;
  IpsRun check = RunIps("config check " + args);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_EQ(ErrorLine(check),
            ErrorLine(train) +
                " (checked as a fresh run: pass `ips config check` the --resume DIR of `ips "
                "train` to check a resumed one)")
      << check.output;

  // Resumed: from the newest, fine; from an older one, refused like train.
  check = RunIps("config check " + args + " --resume " + ck);
  EXPECT_EQ(check.exit_code, 0) << check.output;
  ExpectCheckFailsLikeTrain(args + " --resume " + ck + "/ckpt-4",
                            "train --quiet " + args + " --resume " + ck + "/ckpt-4",
                            "holds 1 checkpoint(s) newer than the resumed step 4");

  // A dataset of another vocabulary (every item id shifted), and the same one converted again
  // with other evaluation lists.
  {
    std::ofstream out(dir + "/other.txt");
    for (int u = 1; u <= 50; ++u)
      for (int j = 0; j < 8; ++j) out << u << " " << (u * 7 + j) % 60 + 2 << "\n";
  }
  for (const std::string& conv :
       {"--input " + dir + "/other.txt --output " + dir + "/other",
        "--input " + dir + "/events.txt --output " + dir + "/again --eval_negatives 20 --seed 5"}) {
    const IpsRun r = RunIps("data convert --format seqrec --max_history 10 " + conv);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const std::string other = args + " --set data.train_dir=" + dir + "/other";
  ExpectCheckFailsLikeTrain(other + " --resume " + ck, "train --quiet " + other + " --resume " + ck,
                            "the checkpoint at " + ck + "/ckpt-8 was trained on data.train_dir '" +
                                dir + "/ds' (seqrec: 50 users, 60 items");
  check = RunIps("config check " + args + " --set data.train_dir=" + dir + "/again --resume " + ck);
  EXPECT_EQ(check.exit_code, 0) << check.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: as root, CheckpointWriter::CheckDir's permission test passes under /proc and /sys, so check
// accepted a checkpoint.dir there that `ips train` then failed to create ("INTERNAL: /proc/x:
// cannot create directory"). A checkpoint.dir on a kernel pseudo file system is refused by
// CheckDir itself, so by check and `ips train` alike, naming it and where it would be created,
// without creating anything.
TEST(ConfigCheck, CheckpointDirOnAKernelPseudoFileSystemIsRefused) {
  const std::string tag = std::to_string(getpid());
  struct Case {
    std::string dir, want;
  };
  std::vector<Case> cases = {
      {"/proc/ips_ck_" + tag,
       "error: FAILED_PRECONDITION: checkpoint.dir /proc/ips_ck_" + tag +
           " would be created in /proc, which is on procfs, a kernel pseudo file system that holds "
           "no checkpoint files: choose a directory on a disk file system"},
      {"/proc/ips_ck_" + tag + "/a/b", "would be created in /proc, which is on procfs"},
      {"/proc", "error: FAILED_PRECONDITION: checkpoint.dir /proc is on procfs"},
  };
  if (std::filesystem::is_directory("/sys/kernel"))
    cases.push_back({"/sys/kernel/ips_ck_" + tag, "would be created in /sys/kernel, which is on "});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dir);
    const std::string args =
        "--config " + ConfigNamed("din_synthetic.pbtxt") + " --set checkpoint.dir=" + c.dir;
    const IpsRun check = RunIps("config check " + args);
    EXPECT_EQ(check.exit_code, 1) << check.output;
    EXPECT_TRUE(EndsWithTheErrorResultLine(check));
    EXPECT_NE(ErrorLine(check).find(c.want), std::string::npos) << check.output;
    // `ips train` refuses it alike, before it creates anything (CheckpointWriter::CheckDir): it
    // used to go on and create the directory ("INTERNAL: ... cannot create directory" on /proc; on
    // a cgroup mount, as root, a new cgroup).
    const IpsRun train = RunIps("train --quiet " + args + kSmall);
    EXPECT_EQ(train.exit_code, 1) << train.output;
    EXPECT_EQ(ErrorLine(train), ErrorLine(check)) << train.output;
  }
  EXPECT_FALSE(std::filesystem::exists("/proc/ips_ck_" + tag));
  // A directory on a disk file system passes.
  const std::string dir = FreshDir("config_check_ck_fs");
  const IpsRun ok = RunIps("config check --config " + ConfigNamed("din_synthetic.pbtxt") +
                           " --set checkpoint.dir=" + dir + "/ck");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: train.metrics_out was not checked ("an unwritable --metrics_out" was left to `ips train`,
// which opens it before the job is built). check refuses what `ips train` cannot open with
// `ips train`'s error line (the reason from open(2)'s errno, and its code), creating nothing: a
// missing directory, a directory, a path under a file; a file on a kernel pseudo file system is
// refused by both (check names the file system). A new file in a writable directory, an existing
// file and /dev/null pass.
TEST(ConfigCheck, MetricsOutTrainCannotOpenFailsLikeTrain) {
  const std::string dir = FreshDir("config_check_metrics");
  std::ofstream(dir + "/file") << "x\n";
  const std::string base = "--config " + ConfigNamed("din_synthetic.pbtxt") + kSmall;
  struct Case {
    std::string path, want;
  };
  for (const Case& c : std::vector<Case>{
           {dir + "/missing/m.jsonl", "error: NOT_FOUND: cannot open train.metrics_out file '" +
                                          dir + "/missing/m.jsonl': No such file or directory"},
           {dir, "error: INVALID_ARGUMENT: cannot open train.metrics_out file '" + dir +
                     "': Is a directory"},
           {dir + "/file/m.jsonl", "error: NOT_FOUND: cannot open train.metrics_out file '" + dir +
                                       "/file/m.jsonl': Not a directory"},
       }) {
    SCOPED_TRACE(c.path);
    const std::string args = base + " --set train.metrics_out=" + c.path;
    ExpectCheckFailsLikeTrain(args, "train --quiet " + args, c.want);
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/missing"));
  // /proc takes no new file: `ips train` fails with open(2)'s reason, check names procfs.
  const std::string proc = "/proc/ips_metrics_" + std::to_string(getpid()) + ".jsonl";
  const std::string args = base + " --set train.metrics_out=" + proc;
  const IpsRun train = RunIps("train --quiet " + args);
  EXPECT_EQ(train.exit_code, 1) << train.output;
  EXPECT_NE(ErrorLine(train).find("cannot open train.metrics_out file '" + proc + "': "),
            std::string::npos)
      << train.output;
  const IpsRun check = RunIps("config check " + args);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_EQ(ErrorLine(check), "error: FAILED_PRECONDITION: cannot open train.metrics_out file '" +
                                  proc +
                                  "': its directory /proc is on procfs, a kernel pseudo file "
                                  "system that holds no metrics files: choose a file on a disk "
                                  "file system")
      << check.output;
  // What `ips train` can open passes, and check creates nothing.
  for (const std::string& ok : {dir + "/new.jsonl", dir + "/file", std::string("/dev/null")}) {
    const IpsRun r = RunIps("config check " + base + " --set train.metrics_out=" + ok);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/new.jsonl"));
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: resuming a checkpoint saved in epoch 2 with train.epochs 1 failed with "DATA_LOSS:
// checkpoint epoch 2 is beyond train.epochs 1", naming neither the checkpoint nor the fix (and
// the data is not lost: the config ends before it); a synthetic run's step beyond its steps alike
// ("DATA_LOSS: checkpoint blob 'run/synthetic_step' = 3 does not fit a run of 2 steps"), and check
// passed both. Now FAILED_PRECONDITION naming the checkpoint and the value to set, in check and
// train alike; the run that fits passes.
TEST(ConfigCheck, ResumeBeyondTheRunFailsLikeTrainNamingTheFix) {
  const std::string dir = FreshDir("config_check_resume_fits");
  ConvertSmallDataset(dir);
  const std::string ck = dir + "/ck";
  const std::string args = "--config " + ConfigNamed("din_ml100k.pbtxt") + kDinOnDataset + dir +
                           "/ds --set checkpoint.dir=" + ck + " --set checkpoint.every_steps=1000";
  const IpsRun two = RunIps("train --quiet " + args + " --set train.epochs=2");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  // 500 examples per epoch in batches of 16: 32 steps per epoch, the run's last checkpoint 64.
  const std::string one = args + " --set train.epochs=1 --resume " + ck;
  ExpectCheckFailsLikeTrain(one, "train --quiet " + one,
                            "error: FAILED_PRECONDITION: --resume " + ck + ": the checkpoint at " +
                                ck +
                                "/ckpt-64 was saved in epoch 2, beyond this run's train.epochs 1: "
                                "set train.epochs to at least 2 to continue it (--set "
                                "train.epochs=2)");
  // One checkpoint directory named directly (a trailing slash too) is named alike.
  ExpectCheckFailsLikeTrain(
      args + " --set train.epochs=1 --resume " + ck + "/ckpt-64/",
      "train --quiet " + args + " --set train.epochs=1 --resume " + ck + "/ckpt-64/",
      "the checkpoint at " + ck + "/ckpt-64 was saved in epoch 2");
  IpsRun r = RunIps("config check " + args + " --set train.epochs=2 --resume " + ck);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("config check " + args + " --set train.epochs=3 --resume " + ck);
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // Synthetic: kSmall's 1 warm-up + 2 steps, checkpointed after the last (step 3).
  const std::string syn_ck = dir + "/syn";
  const std::string syn =
      "--config " + ConfigNamed("din_synthetic.pbtxt") + kSmall + " --set checkpoint.dir=" + syn_ck;
  r = RunIps("train --quiet " + syn);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string fewer = syn + " --set data.synthetic.steps=1 --resume " + syn_ck;
  ExpectCheckFailsLikeTrain(fewer, "train --quiet " + fewer,
                            "error: FAILED_PRECONDITION: --resume " + syn_ck +
                                ": the checkpoint at " + syn_ck +
                                "/ckpt-3 was saved at step 3, beyond this run's 2 steps "
                                "(data.synthetic.warmup_steps 1 + data.synthetic.steps 1): set "
                                "data.synthetic.steps to at least 2 to continue it (--set "
                                "data.synthetic.steps=2)");
  // train.max_steps caps data.synthetic.steps: both named when both fall short.
  const std::string capped =
      syn + " --set data.synthetic.steps=1 --set train.max_steps=1 --resume " + syn_ck;
  ExpectCheckFailsLikeTrain(capped, "train --quiet " + capped,
                            "(data.synthetic.warmup_steps 1 + data.synthetic.steps 1, capped by "
                            "train.max_steps 1): set data.synthetic.steps and train.max_steps to "
                            "at least 2 to continue it (--set data.synthetic.steps=2 --set "
                            "train.max_steps=2)");
  r = RunIps("config check " + syn + " --resume " + syn_ck);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

}  // namespace
