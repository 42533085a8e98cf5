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

TEST(ConfigLoader, ValidationOfRepeatedTableNamesIndex) {
  const auto path = WriteTemp("tables.pbtxt",
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"cat\" dim: 0 }\n");
  auto cfg = LoadConfig(path, {});
  ExpectError(cfg.status(), path + ":2: tables[1].dim: must be positive");
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
             // The model's tables are as wide as its embeddings (checked by the loader too).
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

// The checks of the model a config builds (ModelSpecFromConfig and the models' options), of the
// tables (the store's) and of the cluster are the loader's too: a bad value from --set names the
// override and the config field path ("model.num_interests", not "MindOptions.num_interests"),
// one in the file names its line. Only the fields the model type reads are checked.
TEST(ConfigOverride, ModelOptionErrorsNameTheOverrideAndTheConfigField) {
  const auto path = WriteTemp("model_checks.pbtxt",
                              "model { embedding_dim: 18 }\n"
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"category\" dim: 18 }\n");
  ASSERT_TRUE(LoadConfig(path, {}).ok());
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"model.type=MIND", "model.num_interests=0"},
       "--set model.num_interests=0: model.num_interests: must be in [1, 64], got 0"},
      {{"model.type=MIND", "model.num_interests=65"},
       "--set model.num_interests=65: model.num_interests: must be in [1, 64], got 65"},
      {{"model.type=MIND", "model.routing_iterations=21"},
       "--set model.routing_iterations=21: model.routing_iterations: must be in [1, 20], got 21"},
      {{"model.type=BST", "model.num_heads=5"},
       "--set model.num_heads=5: model.num_heads: 5 does not divide BST's block width 2 * "
       "model.embedding_dim = 36"},
      {{"model.type=BST", "model.num_blocks=0"},
       "--set model.num_blocks=0: model.num_blocks: must be >= 1, got 0"},
      {{"model.type=SASREC", "model.num_heads=4"},
       "--set model.num_heads=4: model.num_heads: 4 does not divide model.embedding_dim 18"},
      {{"model.type=DIEN", "model.aux_loss_weight=-1"},
       "--set model.aux_loss_weight=-1: model.aux_loss_weight: must be >= 0 (0: no auxiliary "
       "loss), got -1"},
      {{"model.type=DIEN", "model.rnn_hidden=20"},
       "--set model.rnn_hidden=20: model.rnn_hidden: must be 2 * model.embedding_dim = 36 (or 0 "
       "for that), got 20"},
      {{"model.type=GRU4REC", "model.rnn_hidden=-1"},
       "--set model.rnn_hidden=-1: model.rnn_hidden: must be >= 0 (0: model.embedding_dim), got "
       "-1"},
      {{"model.activation=RELU"},
       "--set model.activation=RELU: model.activation: RELU: the MLP head of DIN supports PRELU "
       "and DICE"},
      {{"model.attention_hidden=80"},
       "--set model.attention_hidden=80: model.attention_hidden: the DIN activation unit has "
       "exactly 2 hidden layers (got 1 sizes)"},
      {{"model.activation=DICE", "data.batch_size=1"},
       "--set data.batch_size=1: data.batch_size: model.activation DICE needs batches of at least "
       "2 rows, got 1"},
      // An element of a list is blamed on the override of the list.
      {{"model.mlp_hidden=64,0"},
       "--set model.mlp_hidden=64,0: model.mlp_hidden[1]: must be "
       "positive"},
  };
  for (const auto& [sets, want] : cases) {
    SCOPED_TRACE(sets.back());
    const Status s = LoadConfig(path, sets).status();
    ExpectError(s, want);
    EXPECT_EQ(s.message().find("Options."), std::string::npos) << s.message();
  }
  // A field the model type does not read is not checked (DIN has no interests or heads to split).
  EXPECT_TRUE(LoadConfig(path, {"model.num_interests=0", "model.num_heads=5"}).ok());
  EXPECT_TRUE(LoadConfig(path, {"model.type=DIEN", "model.rnn_hidden=0"}).ok());
  // In the file: its line.
  const auto file = WriteTemp("mind_file.pbtxt", "model {\n  type: MIND\n  num_interests: 0\n}\n");
  ExpectError(LoadConfig(file, {}).status(),
              file + ":3: model.num_interests: must be in [1, 64], got 0");
  // A check of two fields is blamed on the one an override set.
  const auto small = WriteTemp("batch_of_one.pbtxt", "data { batch_size: 1 }\n");
  ASSERT_TRUE(LoadConfig(small, {}).ok());
  ExpectError(LoadConfig(small, {"model.activation=DICE"}).status(),
              "--set model.activation=DICE: model.activation: DICE needs batches of at least 2 "
              "rows (data.batch_size is 1)");
}

TEST(ConfigOverride, TableOptionErrorsNameTheOverrideAndTheConfigField) {
  const auto path = WriteTemp("table_checks.pbtxt",
                              "tables { name: \"item\" dim: 18 max_memory_mb: 64 }\n"
                              "tables { name: \"category\" dim: 18 }\n");
  ASSERT_TRUE(LoadConfig(path, {}).ok());
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"tables[0].max_memory_mb=-5"},
       "--set tables[0].max_memory_mb=-5: tables[0].max_memory_mb: must be >= 0 (0: no cap), got "
       "-5"},
      {{"tables[1].ttl_steps=-1"},
       "--set tables[1].ttl_steps=-1: tables[1].ttl_steps: must be in [0, 1073741823] (0: rows "
       "never expire), got -1"},
      {{"tables[1].min_count=70000"},
       "--set tables[1].min_count=70000: tables[1].min_count: must be at most 65535"},
      {{"tables[1].dim=70000"}, "--set tables[1].dim=70000: tables[1].dim: must be at most 65536"},
      {{"optimizer.beta1=1"}, "--set optimizer.beta1=1: optimizer.beta1: must be in [0, 1), got 1"},
      {{"optimizer.type=ADAGRAD", "optimizer.epsilon=0"},
       "--set optimizer.epsilon=0: optimizer.epsilon: must be positive, got 0"},
      {{"tables[1].optimizer.type=FTRL", "tables[1].optimizer.l1=-0.5"},
       "--set tables[1].optimizer.l1=-0.5: tables[1].optimizer.l1: must be >= 0, got -0.5"},
      {{"tables[0].optimizer.initial_accumulator=-1"},
       "--set tables[0].optimizer.initial_accumulator=-1: "
       "tables[0].optimizer.initial_accumulator: must be >= 0, got -1"},
      {{"tables[0].initializer.type=NORMAL", "tables[0].initializer.stddev=-1"},
       "--set tables[0].initializer.stddev=-1: tables[0].initializer.stddev: must be >= 0, got -1"},
      {{"tables[0].initializer.type=UNIFORM", "tables[0].initializer.range=-1"},
       "--set tables[0].initializer.range=-1: tables[0].initializer.range: must be >= 0, got -1"},
      // The model's tables hold rows of model.embedding_dim floats: the side an override changed
      // is named.
      {{"tables[0].dim=32"},
       "--set tables[0].dim=32: tables[0].dim: 32 != model.embedding_dim 18 (table 'item' holds "
       "the model's embeddings)"},
      {{"model.embedding_dim=32"},
       "--set model.embedding_dim=32: model.embedding_dim: 32 != tables[0].dim 18 (table 'item' "
       "holds the model's embeddings)"},
  };
  for (const auto& [sets, want] : cases) {
    SCOPED_TRACE(sets.back());
    const Status s = LoadConfig(path, sets).status();
    ExpectError(s, want);
    EXPECT_EQ(s.message().find(path), std::string::npos) << s.message();
  }
  // A sequence model embeds items only: the category table's width is not the model's concern.
  EXPECT_TRUE(LoadConfig(path, {"model.type=SASREC", "tables[1].dim=8"}).ok());
  // A table the model does not read may have its own width.
  EXPECT_TRUE(LoadConfig(path, {"tables[2].name=extra", "tables[2].dim=8"}).ok());
  // In the file: its line.
  const auto file = WriteTemp("table_file.pbtxt",
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables {\n  name: \"category\"\n  max_memory_mb: -5\n}\n");
  ExpectError(LoadConfig(file, {}).status(),
              file + ":4: tables[1].max_memory_mb: must be >= 0 (0: no cap), got -5");
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
