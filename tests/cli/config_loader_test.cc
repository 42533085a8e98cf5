#include "proto/config_loader.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace ips {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

void ExpectError(const Status& s, const std::string& fragment) {
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(fragment), std::string::npos)
      << "message '" << s.message() << "' lacks '" << fragment << "'";
}

TEST(ConfigLoader, SyntaxErrorNamesFileLineAndColumn) {
  const auto path =
      WriteTemp("syntax.pbtxt", "version: 1\nmodel {\n  type: DIN\n  embedding_dim: \n}\n");
  auto cfg = LoadConfig(path, {});
  ExpectError(cfg.status(), path + ":5:");
}

TEST(ConfigLoader, UnknownFieldNamesTheFieldAndLine) {
  const auto path = WriteTemp("unknown.pbtxt", "version: 1\ndata {\n  batchsize: 3\n}\n");
  auto cfg = LoadConfig(path, {});
  ExpectError(cfg.status(), path + ":3:");
  ExpectError(cfg.status(), "batchsize");
}

TEST(ConfigLoader, ValidationErrorNamesLineAndFieldPath) {
  const auto path =
      WriteTemp("invalid.pbtxt", "version: 1\ndata {\n  seed: 3\n  batch_size: -4\n}\n");
  auto cfg = LoadConfig(path, {});
  ExpectError(cfg.status(), path + ":4: data.batch_size: must be positive, got -4");
}

// An element appended by --set that fails validation: the error, without a line (the file has
// no such element), never a crash.
TEST(ConfigLoader, InvalidElementAppendedBySetIsAnError) {
  const auto path = WriteTemp("two_tables.pbtxt",
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"cat\" dim: 18 }\n");
  auto cfg = LoadConfig(path, {"tables[2].dim=18"});
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cfg.status().message().find("tables[2]"), std::string::npos) << cfg.status();
}

TEST(ConfigLoader, RejectsFutureVersion) {
  const auto path = WriteTemp("future.pbtxt", "version: 99\n");
  ExpectError(LoadConfig(path, {}).status(), "unsupported schema version 99");
}

TEST(ConfigLoader, MissingFileIsNotFound) {
  auto cfg = LoadConfig("/nonexistent/x.pbtxt", {});
  EXPECT_EQ(cfg.status().code(), StatusCode::kNotFound);
}

TEST(ConfigOverride, SetsNestedScalarEnumStringAndRepeated) {
  const auto path = WriteTemp("base.pbtxt",
                              "model { type: DIN mlp_hidden: [200, 80] }\n"
                              "tables { name: \"item\" dim: 18 }\n");
  auto cfg = LoadConfig(
      path, {"data.batch_size=128", "model.type=DIEN", "name=my run", "model.mlp_hidden=64,32,16",
             "tables[0].dim=36", "tables[1].name=category", "data.synthetic.num_items=5000",
             // The model's tables are as wide as its embeddings (CheckConfigForRun).
             "model.embedding_dim=36", "tables[1].dim=36"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->data().batch_size(), 128);
  EXPECT_EQ(cfg->model().type(), config::ModelConfig::DIEN);
  EXPECT_EQ(cfg->name(), "my run");
  ASSERT_EQ(cfg->model().mlp_hidden_size(), 3);
  EXPECT_EQ(cfg->model().mlp_hidden(2), 16);
  EXPECT_EQ(cfg->tables(0).dim(), 36);
  ASSERT_EQ(cfg->tables_size(), 2);
  EXPECT_EQ(cfg->tables(1).name(), "category");
  EXPECT_EQ(cfg->data().synthetic().num_items(), 5000);
}

TEST(ConfigOverride, ErrorsNameTheOverrideAndPart) {
  config::Config cfg;
  ExpectError(ApplyOverride("data.batchsize=3", &cfg), "has no field 'batchsize'");
  ExpectError(ApplyOverride("data.batch_size=abc", &cfg), "'abc' is not a valid int32");
  ExpectError(ApplyOverride("model.type=TRANSFORMERX", &cfg), "'TRANSFORMERX' is not a valid enum");
  ExpectError(ApplyOverride("tables[3].dim=4", &cfg), "past its size 0");
  ExpectError(ApplyOverride("tables.dim=4", &cfg), "give an index");
  ExpectError(ApplyOverride("data=3", &cfg), "is a message");
  ExpectError(ApplyOverride("nonsense", &cfg), "expected path.to.field=value");
  // A failed override leaves the config untouched.
  EXPECT_FALSE(cfg.data().has_batch_size());
}

TEST(ConfigOverride, ValidationRunsAfterOverrides) {
  const auto path = WriteTemp("ok.pbtxt", "data { batch_size: 16 }\n");
  ExpectError(LoadConfig(path, {"data.batch_size=0"}).status(),
              "data.batch_size: must be positive");
}

// A value set by --set is blamed on the override, not on the file line it replaced; a value that
// does not parse says so once (no protobuf log line before the error).
TEST(ConfigOverride, ValidationErrorOfAnOverriddenFieldNamesTheOverride) {
  const auto path = WriteTemp("blame.pbtxt", "data { batch_size: 16 }\n");
  const Status s = LoadConfig(path, {"data.batch_size=8", "data.batch_size=-4"}).status();
  ExpectError(s, "--set data.batch_size=-4: data.batch_size: must be positive, got -4");
  EXPECT_EQ(s.message().find(path), std::string::npos) << s.message();
  // A field the overrides did not touch still names the file's line.
  const auto bad = WriteTemp("blame2.pbtxt", "data { batch_size: -2 }\n");
  ExpectError(LoadConfig(bad, {"train.num_threads=2"}).status(), bad + ":1: data.batch_size");
  ::testing::internal::CaptureStderr();
  config::Config cfg;
  ExpectError(ApplyOverride("data.batch_size=abc", &cfg), "'abc' is not a valid int32");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(ConfigOverride, ThreadCountsAndBatchSizeAreBounded) {
  const auto path = WriteTemp("ps_threads.pbtxt", "cluster { num_ps: 1 ps_threads: 2 }\n");
  EXPECT_TRUE(LoadConfig(path, {}).ok());
  ExpectError(LoadConfig(path, {"cluster.ps_threads=-1"}).status(),
              "cluster.ps_threads: must be in [0, 1024] (0: automatic), got -1");
  ExpectError(LoadConfig(path, {"cluster.ps_threads=100000"}).status(),
              "cluster.ps_threads: must be in [0, 1024] (0: automatic), got 100000");
  ExpectError(LoadConfig(path, {"train.num_threads=10000"}).status(),
              "train.num_threads: must be in [1, 1024], got 10000");
  ExpectError(LoadConfig(path, {"data.batch_size=2000000"}).status(),
              "data.batch_size: must be at most 1048576, got 2000000");
  EXPECT_TRUE(LoadConfig(path, {"train.num_threads=1024", "data.batch_size=1048576"}).ok());
}

// A run reads one data source: synthetic batches and a dataset directory together are refused,
// and the unused data.eval_dir is never silently ignored.
TEST(ConfigOverride, OneDataSourceAndNoEvalDir) {
  const auto path = WriteTemp("synthetic.pbtxt", "data { synthetic { num_items: 100 } }\n");
  EXPECT_TRUE(LoadConfig(path, {}).ok());
  ExpectError(LoadConfig(path, {"data.train_dir=/tmp/ds"}).status(),
              "data.train_dir: data.synthetic is set too");
  ExpectError(LoadConfig(path, {"data.eval_dir=/tmp/ds"}).status(), "data.eval_dir: is not used");
}

TEST(ConfigOverride, ClusterTransportSpinUsIsAutomaticOrARange) {
  const auto path = WriteTemp("spin.pbtxt", "cluster { num_ps: 1 transport_spin_us: 50 }\n");
  EXPECT_TRUE(LoadConfig(path, {}).ok());
  EXPECT_TRUE(LoadConfig(path, {"cluster.transport_spin_us=-1"}).ok());
  ExpectError(LoadConfig(path, {"cluster.transport_spin_us=-2"}).status(),
              "cluster.transport_spin_us: must be in [0, 1000000] microseconds, or -1 (automatic)");
}

// NaN passes every "must be positive" / "in [0, 1)" comparison and an infinity most of them:
// every float and double field refuses both, in the file or from --set, naming the field path.
TEST(ConfigLoader, NonFiniteFloatsAreRefusedNamingTheField) {
  const auto path = WriteTemp("finite.pbtxt",
                              "tables { name: \"item\" dim: 4 }\n"
                              "tables { name: \"cat\" dim: 4\n"
                              "  optimizer { learning_rate: inf }\n"
                              "}\n");
  ExpectError(LoadConfig(path, {}).status(),
              path + ":3: tables[1].optimizer.learning_rate: must be a finite number, got inf");
  const auto ok = WriteTemp("finite_ok.pbtxt", "checkpoint { every_seconds: 30 }\n");
  ASSERT_TRUE(LoadConfig(ok, {}).ok());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"checkpoint.every_seconds=nan",
       "checkpoint.every_seconds: must be a finite number, got nan"},
      {"checkpoint.every_seconds=inf",
       "checkpoint.every_seconds: must be a finite number, got inf"},
      {"checkpoint.every_seconds=-inf",
       "checkpoint.every_seconds: must be a finite number, got -inf"},
      {"optimizer.learning_rate=nan", "optimizer.learning_rate: must be a finite number, got nan"},
      {"optimizer.l2=inf", "optimizer.l2: must be a finite number, got inf"},
      {"model.dropout=nan", "model.dropout: must be a finite number, got nan"},
      {"model.aux_loss_weight=-inf", "model.aux_loss_weight: must be a finite number, got -inf"},
      {"data.synthetic.zipf_alpha=nan",
       "data.synthetic.zipf_alpha: must be a finite number, got nan"},
      {"tables[0].initializer.stddev=inf",
       "tables[0].initializer.stddev: must be a finite number, got inf"},
  };
  for (const auto& [set, want] : cases) {
    SCOPED_TRACE(set);
    ExpectError(LoadConfig(ok, {set}).status(), want);
  }
  // The file sets every_seconds too, but the bad value is the override's: it is named.
  ExpectError(LoadConfig(ok, {"checkpoint.every_seconds=nan"}).status(),
              "--set checkpoint.every_seconds=nan: checkpoint.every_seconds: ");
}

TEST(ConfigLoader, NegativeCheckpointIntervalsAreRefused) {
  const auto path = WriteTemp("intervals.pbtxt", "checkpoint { every_steps: 100 }\n");
  ASSERT_TRUE(LoadConfig(path, {"checkpoint.every_seconds=0.5"}).ok());
  ExpectError(LoadConfig(path, {"checkpoint.every_seconds=-1"}).status(),
              "checkpoint.every_seconds: must be >= 0 (0: no time-based checkpoints), got -1");
  const auto negative = WriteTemp("negative_seconds.pbtxt", "checkpoint { every_seconds: -2.5 }\n");
  ExpectError(LoadConfig(negative, {}).status(),
              negative +
                  ":1: checkpoint.every_seconds: must be >= 0 (0: no time-based "
                  "checkpoints), got -2.5");
}

// An empty list would clear the field, which the models read as their default sizes: refused,
// as is an empty element (a trailing comma), and the config is left as it was.
TEST(ConfigOverride, EmptyListIsAnError) {
  config::Config cfg;
  cfg.mutable_model()->add_mlp_hidden(64);
  ExpectError(ApplyOverride("model.mlp_hidden=", &cfg), "model.mlp_hidden: empty list");
  ExpectError(ApplyOverride("model.attention_hidden=", &cfg), "model.attention_hidden: empty list");
  ExpectError(ApplyOverride("eval.top_k=", &cfg), "eval.top_k: empty list");
  ExpectError(ApplyOverride("model.mlp_hidden=64,32,", &cfg),
              "model.mlp_hidden: element 2 of '64,32,' is empty");
  ExpectError(ApplyOverride("model.mlp_hidden=,64", &cfg),
              "model.mlp_hidden: element 0 of ',64' is empty");
  ASSERT_EQ(cfg.model().mlp_hidden_size(), 1);
  EXPECT_EQ(cfg.model().mlp_hidden(0), 64);
  EXPECT_TRUE(ApplyOverride("model.mlp_hidden=32", &cfg).ok());
  ASSERT_EQ(cfg.model().mlp_hidden_size(), 1);
  EXPECT_EQ(cfg.model().mlp_hidden(0), 32);
}

// BlameConfigField words every config check's error: the --set that set the field (the last
// one; a list element's is its list's), else the file and the line that set it, else the file;
// a field the check also read is blamed when its --set is the only one.
TEST(ConfigBlame, NamesTheOverrideOrTheFileLineOfTheField) {
  ConfigSource src;
  src.filename = "f.pbtxt";
  src.text = "model {\n  num_heads: 3\n  mlp_hidden: [64, 0]\n}\ntables { name: \"item\" }\n";
  src.overrides = {"model.embedding_dim=20", "data.batch_size=8", "data.batch_size=-4"};
  auto message = [&](const std::string& path, const std::vector<std::string>& also = {}) {
    return BlameConfigField(src, path, "is bad", also).message();
  };
  EXPECT_EQ(message("model.num_heads"), "f.pbtxt:2: model.num_heads: is bad");
  EXPECT_EQ(message("model.mlp_hidden[1]"), "f.pbtxt:3: model.mlp_hidden[1]: is bad");
  EXPECT_EQ(message("tables[0].name"), "f.pbtxt:5: tables[0].name: is bad");
  // Not in the file (a default, or an element --set appended): the file alone.
  EXPECT_EQ(message("train.epochs"), "f.pbtxt: train.epochs: is bad");
  EXPECT_EQ(message("tables[1].dim"), "f.pbtxt: tables[1].dim: is bad");
  EXPECT_EQ(message("data.batch_size"), "--set data.batch_size=-4: data.batch_size: is bad");
  EXPECT_EQ(message("model.num_heads", {"model.embedding_dim"}),
            "--set model.embedding_dim=20: model.num_heads: is bad");
  src.overrides.push_back("model.mlp_hidden=64,0");
  EXPECT_EQ(message("model.mlp_hidden[1]"),
            "--set model.mlp_hidden=64,0: model.mlp_hidden[1]: is bad");
  EXPECT_EQ(BlameConfigFields(src, "model.num_heads", "a", "model.embedding_dim", "b").message(),
            "--set model.embedding_dim=20: model.embedding_dim: b");
  EXPECT_EQ(BlameConfigFields(src, "data.batch_size", "a", "model.embedding_dim", "b").message(),
            "--set data.batch_size=-4: data.batch_size: a");
  // A Config made in code: the field alone.
  EXPECT_EQ(BlameConfigField(ConfigSource(), "model.num_heads", "is bad").message(),
            "model.num_heads: is bad");
  EXPECT_EQ(BlameConfigField(src, "model.num_heads", "x").code(), StatusCode::kInvalidArgument);
}

// The loader checks the config's own rules; the model's, the tables' and the run's are their
// components' (CheckConfigForRun in worker/config_validation.h, tests/cli/config_validation_test),
// which proto/ does not depend on.
TEST(ConfigLoader, LeavesTheComponentsChecksToThem) {
  const auto path = WriteTemp("components.pbtxt", "tables { name: \"item\" dim: 18 }\n");
  EXPECT_TRUE(LoadConfig(path, {"model.type=MIND", "model.num_interests=0"}).ok());
  EXPECT_TRUE(LoadConfig(path, {"tables[0].dim=70000", "train.max_steps=-1"}).ok());
  // Its own rules stay: table names, for one.
  ExpectError(LoadConfig(path, {"tables[1].dim=4"}).status(),
              path + ": tables[1].name: every table needs a name");
  ConfigSource source;
  ASSERT_TRUE(LoadConfig(path, {"data.batch_size=8"}, &source).ok());
  EXPECT_EQ(source.filename, path);
  EXPECT_EQ(source.text, "tables { name: \"item\" dim: 18 }\n");
  EXPECT_EQ(source.overrides, std::vector<std::string>{"data.batch_size=8"});
}

// cluster.staleness bounds ASYNC's reads; SYNC would ignore it, so the pair is refused, naming
// the field an override set (and both fields either way).
TEST(ConfigOverride, StalenessIsOnlyForAsync) {
  const auto sync = WriteTemp("sync.pbtxt", "cluster { num_ps: 1 sync: SYNC }\n");
  EXPECT_TRUE(LoadConfig(sync, {}).ok());
  EXPECT_TRUE(LoadConfig(sync, {"cluster.staleness=0"}).ok());
  ExpectError(LoadConfig(sync, {"cluster.staleness=3"}).status(),
              "--set cluster.staleness=3: cluster.staleness: 3 is read only with cluster.sync "
              "ASYNC, and cluster.sync is SYNC");
  EXPECT_TRUE(LoadConfig(sync, {"cluster.sync=ASYNC", "cluster.staleness=3"}).ok());
  const auto async = WriteTemp("async.pbtxt", "cluster { num_ps: 1 sync: ASYNC staleness: 2 }\n");
  EXPECT_TRUE(LoadConfig(async, {}).ok());
  ExpectError(LoadConfig(async, {"cluster.sync=SYNC"}).status(),
              "--set cluster.sync=SYNC: cluster.sync: SYNC would ignore cluster.staleness 2 (only "
              "ASYNC reads a staleness bound)");
  // The default sync is SYNC.
  const auto bare = WriteTemp("bare_stale.pbtxt", "cluster {\n  num_ps: 1\n  staleness: 4\n}\n");
  ExpectError(LoadConfig(bare, {}).status(), bare + ":3: cluster.staleness: 4 is read only");
}

TEST(ConfigFiles, EveryShippedConfigLoads) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string dir = std::string(src) + "/launch/configs";
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int loaded = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 6 || name.substr(name.size() - 6) != ".pbtxt") continue;
    auto cfg = LoadConfig(dir + "/" + name, {});
    EXPECT_TRUE(cfg.ok()) << name << ": " << cfg.status();
    ++loaded;
  }
  closedir(d);
  EXPECT_GT(loaded, 0);
}

}  // namespace
}  // namespace ips
