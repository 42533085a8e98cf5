// CheckConfigForRun and LoadConfigForRun (worker/config_validation.h): the checks of the model,
// the tables and the run, made on a loaded config by the components' own rules (the models'
// Validate*Options, ps::CheckTableOptions, the run's options), each error naming the config field
// path and the --set or the file line that set the value.
#include "worker/config_validation.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "models/bst.h"
#include "models/dien.h"
#include "models/din.h"
#include "models/layers.h"
#include "models/mind.h"
#include "models/pooled.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/table_options.h"
#include "tests/testing/run_ips.h"
#include "worker/synthetic_batches.h"

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

std::string ShippedConfig(const std::string& name) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  return std::string(src ? src : ".") + "/launch/configs/" + name;
}

// The model's checks: a bad value from --set names the override and the config field path
// ("model.num_interests", not "MindOptions.num_interests"), one in the file names its line. Only
// the fields the model type reads are checked.
TEST(ConfigValidation, ModelOptionErrorsNameTheOverrideAndTheConfigField) {
  const auto path = WriteTemp("model_checks.pbtxt",
                              "model { embedding_dim: 18 }\n"
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"category\" dim: 18 }\n");
  ASSERT_TRUE(LoadConfigForRun(path, {}).ok());
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
      {{"model.type=SASREC", "model.dropout=1.5"},
       "--set model.dropout=1.5: model.dropout: must be in [0, 1), got 1.5"},
      {{"model.attention_hidden=80,0"},
       "--set model.attention_hidden=80,0: model.attention_hidden[1]: must be positive"},
      {{"model.embedding_dim=0", "tables[0].dim=0", "tables[1].dim=0"},
       "--set model.embedding_dim=0: model.embedding_dim: must be positive, got 0"},
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
    const Status s = LoadConfigForRun(path, sets).status();
    ExpectError(s, want);
    EXPECT_EQ(s.message().find("Options."), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(path), std::string::npos) << s.message();
  }
  // A field the model type does not read is not checked (DIN has no interests or heads to split).
  EXPECT_TRUE(LoadConfigForRun(path, {"model.num_interests=0", "model.num_heads=5"}).ok());
  EXPECT_TRUE(LoadConfigForRun(path, {"model.num_heads=0", "model.dropout=2"}).ok());
  EXPECT_TRUE(LoadConfigForRun(path, {"model.type=DIEN", "model.rnn_hidden=0"}).ok());
  // In the file: its line.
  const auto file = WriteTemp("mind_file.pbtxt", "model {\n  type: MIND\n  num_interests: 0\n}\n");
  ExpectError(LoadConfigForRun(file, {}).status(),
              file + ":3: model.num_interests: must be in [1, 64], got 0");
  // A check of two fields is blamed on the one an override set.
  const auto small = WriteTemp("batch_of_one.pbtxt", "data { batch_size: 1 }\n");
  ASSERT_TRUE(LoadConfigForRun(small, {}).ok());
  ExpectError(LoadConfigForRun(small, {"model.activation=DICE"}).status(),
              "--set model.activation=DICE: model.activation: DICE needs batches of at least 2 "
              "rows (data.batch_size is 1)");
  // The heads split model.embedding_dim: a --set of the width is named, with the heads' error.
  const auto heads = WriteTemp("sasrec_heads.pbtxt",
                               "model { type: SASREC num_heads: 4 embedding_dim: 16 }\n"
                               "tables { name: \"item\" dim: 16 }\n");
  ASSERT_TRUE(LoadConfigForRun(heads, {}).ok());
  ExpectError(LoadConfigForRun(heads, {"model.embedding_dim=18"}).status(),
              "--set model.embedding_dim=18: model.num_heads: 4 does not divide "
              "model.embedding_dim 18");
  ExpectError(
      LoadConfigForRun(heads, {"train.epochs=2", "model.type=BST", "model.num_heads=3"}).status(),
      "--set model.num_heads=3: model.num_heads: 3 does not divide BST's block width");
}

TEST(ConfigValidation, TableOptionErrorsNameTheOverrideAndTheConfigField) {
  const auto path = WriteTemp("table_checks.pbtxt",
                              "tables { name: \"item\" dim: 18 max_memory_mb: 64 }\n"
                              "tables { name: \"category\" dim: 18 }\n");
  ASSERT_TRUE(LoadConfigForRun(path, {}).ok());
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
      {{"optimizer.learning_rate=0"},
       "--set optimizer.learning_rate=0: optimizer.learning_rate: must be positive"},
      {{"tables[1].optimizer.type=FTRL", "tables[1].optimizer.l1=-0.5"},
       "--set tables[1].optimizer.l1=-0.5: tables[1].optimizer.l1: must be >= 0, got -0.5"},
      {{"tables[1].optimizer.type=FTRL", "tables[1].optimizer.ftrl_beta=-2"},
       "--set tables[1].optimizer.ftrl_beta=-2: tables[1].optimizer.ftrl_beta: must be >= 0, got "
       "-2"},
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
    const Status s = LoadConfigForRun(path, sets).status();
    ExpectError(s, want);
    EXPECT_EQ(s.message().find(path), std::string::npos) << s.message();
  }
  // A sequence model embeds items only: the category table's width is not the model's concern.
  EXPECT_TRUE(LoadConfigForRun(path, {"model.type=SASREC", "tables[1].dim=8"}).ok());
  // A table the model does not read may have its own width.
  EXPECT_TRUE(LoadConfigForRun(path, {"tables[2].name=extra", "tables[2].dim=8"}).ok());
  // In the file: its line.
  const auto file = WriteTemp("table_file.pbtxt",
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables {\n  name: \"category\"\n  max_memory_mb: -5\n}\n");
  ExpectError(LoadConfigForRun(file, {}).status(),
              file + ":4: tables[1].max_memory_mb: must be >= 0 (0: no cap), got -5");
  const auto zero = WriteTemp("tables.pbtxt",
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"cat\" dim: 0 }\n");
  ExpectError(LoadConfigForRun(zero, {}).status(), zero + ":2: tables[1].dim: must be positive");
}

// The run's checks (train.max_steps, eval.*, data.synthetic.*; `ips train` made them after
// loading, naming the config file for any value) name the --set too.
TEST(ConfigValidation, RunOptionErrorsNameTheOverrideAndTheConfigField) {
  const auto dataset = WriteTemp("run_dataset.pbtxt",
                                 "data { train_dir: \"/nonexistent/ds\" }\n"
                                 "eval {\n  top_k: [10, 20]\n  max_users: 100\n}\n"
                                 "tables { name: \"item\" }\ntables { name: \"category\" }\n");
  ASSERT_TRUE(LoadConfigForRun(dataset, {}).ok());
  const auto synthetic = WriteTemp("run_synthetic.pbtxt",
                                   "data {\n  synthetic {\n    num_items: 1000\n    steps: 5\n"
                                   "  }\n}\ntables { name: \"item\" }\n"
                                   "tables { name: \"category\" }\n");
  ASSERT_TRUE(LoadConfigForRun(synthetic, {}).ok());
  const std::vector<std::tuple<std::string, std::vector<std::string>, std::string>> cases = {
      {dataset,
       {"train.max_steps=-1"},
       "--set train.max_steps=-1: train.max_steps: must be >= 0 (0: no limit), got -1"},
      {synthetic,
       {"train.max_steps=-1"},
       "--set train.max_steps=-1: train.max_steps: must be >= 0 (0: no limit), got -1"},
      {dataset,
       {"eval.every_epochs=0"},
       "--set eval.every_epochs=0: eval.every_epochs: must be >= 1, got 0"},
      {dataset,
       {"eval.max_users=-1"},
       "--set eval.max_users=-1: eval.max_users: must be >= 0, got -1"},
      {dataset, {"eval.top_k=10,0"}, "--set eval.top_k=10,0: eval.top_k[1]: must be >= 1, got 0"},
      {dataset,
       {"eval.top_k=10,20,10"},
       "--set eval.top_k=10,20,10: eval.top_k: eval.top_k[2] 10 repeats eval.top_k[0]: list every "
       "cut-off once"},
      {synthetic,
       {"data.synthetic.steps=0"},
       "--set data.synthetic.steps=0: data.synthetic.steps: must be >= 1, got 0"},
      {synthetic,
       {"data.synthetic.warmup_steps=-1"},
       "--set data.synthetic.warmup_steps=-1: data.synthetic.warmup_steps: must be >= 0, got -1"},
      {synthetic,
       {"data.synthetic.num_items=300000000"},
       "--set data.synthetic.num_items=300000000: data.synthetic.num_items: must be <= 2^28, got "
       "300000000"},
      // The catalogue's own rules (worker/synthetic_batches.h) blame the --set too (they named
      // the config file), the counts on the config's 64 bits (2^32 + 1 categories was read as 1).
      {synthetic,
       {"data.synthetic.zipf_alpha=-1"},
       "--set data.synthetic.zipf_alpha=-1: data.synthetic.zipf_alpha: must be finite and >= 0, "
       "got -1"},
      {synthetic,
       {"data.max_history=70000"},
       "--set data.max_history=70000: data.max_history: must be in [1, 65535], got 70000"},
      {synthetic,
       {"data.synthetic.num_categories=4294967297"},
       "--set data.synthetic.num_categories=4294967297: data.synthetic.num_categories: must be <= "
       "2^28, got 4294967297"},
      {synthetic,
       {"data.synthetic.num_items=4294967297"},
       "--set data.synthetic.num_items=4294967297: data.synthetic.num_items: must be <= 2^28, got "
       "4294967297"},
  };
  for (const auto& [path, sets, want] : cases) {
    SCOPED_TRACE(sets.back());
    const Status s = LoadConfigForRun(path, sets).status();
    ExpectError(s, want);
    EXPECT_EQ(s.message().find(path), std::string::npos) << s.message();
  }
  // A synthetic run has no evaluation epochs; a dataset run no synthetic steps.
  EXPECT_TRUE(LoadConfigForRun(synthetic, {"eval.every_epochs=0"}).ok());
  // In the file: its line.
  const auto bad = WriteTemp("run_file.pbtxt",
                             "data { train_dir: \"/nonexistent/ds\" }\n"
                             "eval {\n  top_k: [10, 10]\n}\n");
  ExpectError(LoadConfigForRun(bad, {"train.epochs=2"}).status(),
              bad + ":3: eval.top_k: eval.top_k[1] 10 repeats eval.top_k[0]");
  const auto zipf = WriteTemp("run_zipf.pbtxt",
                              "data {\n  synthetic {\n    zipf_alpha: -0.5\n  }\n}\n"
                              "tables { name: \"item\" }\ntables { name: \"category\" }\n");
  ExpectError(LoadConfigForRun(zipf, {}).status(),
              zipf + ":3: data.synthetic.zipf_alpha: must be finite and >= 0, got -0.5");
}

// The one copy of each rule: a config's error says what the component's own check says of its
// option, under the config's name for it. Without a source (a Config made in code) it names the
// field alone.
TEST(ConfigValidation, ErrorsAreTheComponentsOwnChecks) {
  const auto path = WriteTemp("own.pbtxt", "tables { name: \"item\" dim: 18 }\n");
  models::MindOptions mind;
  mind.num_interests = 70;
  const std::string model = models::ValidateMindOptions(mind).message();
  const std::string prefix = "MindOptions.num_interests: ";
  ASSERT_EQ(model.rfind(prefix, 0), 0u) << model;
  EXPECT_EQ(
      LoadConfigForRun(path, {"model.type=MIND", "model.num_interests=70"}).status().message(),
      "--set model.num_interests=70: model.num_interests: " + model.substr(prefix.size()));

  ps::TableOptions table;
  table.name = "item";
  table.dim = 70000;
  const std::string store = ps::ValidateTableOptions(table).message();
  ASSERT_EQ(store.rfind("table 'item': dim ", 0), 0u) << store;
  EXPECT_EQ(LoadConfigForRun(path, {"tables[0].dim=70000"}).status().message(),
            "--set tables[0].dim=70000: tables[0].dim: " +
                store.substr(std::string("table 'item': dim ").size()));

  config::Config cfg;
  cfg.mutable_model()->set_type(config::ModelConfig::MIND);
  cfg.mutable_model()->set_num_interests(0);
  EXPECT_EQ(CheckConfigForRun(cfg, ConfigSource()).message(),
            "model.num_interests: must be in [1, 64], got 0");
  cfg.mutable_model()->set_num_interests(4);
  cfg.mutable_train()->set_max_steps(-3);
  EXPECT_EQ(CheckConfigForRun(cfg, ConfigSource()).message(),
            "train.max_steps: must be >= 0 (0: no limit), got -3");

  // The synthetic catalogue's (ValidateSyntheticOptions: "synthetic: <field> <what>").
  SyntheticOptions catalogue;
  catalogue.alpha = -1;
  const std::string synthetic = ValidateSyntheticOptions(catalogue).message();
  const std::string alpha = "synthetic: alpha ";
  ASSERT_EQ(synthetic.rfind(alpha, 0), 0u) << synthetic;
  EXPECT_EQ(LoadConfigForRun(ShippedConfig("din_synthetic.pbtxt"), {"data.synthetic.zipf_alpha=-1"})
                .status()
                .message(),
            "--set data.synthetic.zipf_alpha=-1: data.synthetic.zipf_alpha: " +
                synthetic.substr(alpha.size()));
}

// The MLP head's rules (model.mlp_hidden, DICE's batches) have one copy, models/layers.h
// CheckMlpHeadOptions, which every model with the head runs and which words a config's error
// under the config's names (worker/model_factory.cc had its own copy, worded apart).
TEST(ConfigValidation, MlpHeadErrorsAreTheHeadsOwnChecks) {
  using models::MlpActivation;
  const auto path = WriteTemp("mlp_head.pbtxt",
                              "model { embedding_dim: 18 }\n"
                              "tables { name: \"item\" dim: 18 }\n"
                              "tables { name: \"category\" dim: 18 }\n");
  ASSERT_TRUE(LoadConfigForRun(path, {}).ok());
  // The options' words, and the same rule's in every model with the head.
  const std::string width =
      models::CheckMlpHeadOptions("DinOptions", {64, 0}, MlpActivation::kPrelu, 8).message();
  EXPECT_EQ(width, "DinOptions.mlp_hidden[1]: must be positive");
  models::DinOptions din;
  din.mlp_hidden = {64, 0};
  EXPECT_EQ(models::ValidateDinOptions(din).message(), width);
  models::DienOptions dien;
  dien.mlp_hidden = {64, 0};
  EXPECT_EQ(models::ValidateDienOptions(dien).message(),
            "DienOptions.mlp_hidden[1]: must be positive");
  models::PooledOptions pooled;
  pooled.mlp_hidden = {64, 0};
  EXPECT_EQ(models::ValidatePooledOptions(pooled).message(),
            "PooledOptions.mlp_hidden[1]: must be positive");
  models::BstOptions bst;
  bst.mlp_hidden = {64, 0};
  EXPECT_EQ(models::ValidateBstOptions(bst).message(),
            "BstOptions.mlp_hidden[1]: must be positive");
  // A config's error: the same words under its field's name, blamed on the --set.
  const std::string field = "DinOptions.mlp_hidden[1]: ";
  EXPECT_EQ(LoadConfigForRun(path, {"model.mlp_hidden=64,0"}).status().message(),
            "--set model.mlp_hidden=64,0: model.mlp_hidden[1]: " + width.substr(field.size()));
  for (const char* type : {"DIEN", "POOLED", "BST"}) {
    SCOPED_TRACE(type);
    EXPECT_EQ(LoadConfigForRun(path, {std::string("model.type=") + type, "model.mlp_hidden=64,0"})
                  .status()
                  .message(),
              "--set model.mlp_hidden=64,0: model.mlp_hidden[1]: must be positive");
  }

  // DICE's rule reads two options: the error names both, and blames the one the caller picks.
  const auto names = [](const std::string& f) {
    return f == "max_batch" ? std::string("data.batch_size") : "model." + f;
  };
  EXPECT_EQ(models::CheckMlpHeadOptions("DinOptions", {64}, MlpActivation::kDice, 1).message(),
            "DinOptions.max_batch: activation DICE needs batches of at least 2 rows, got 1");
  const std::string dice =
      models::CheckMlpHeadOptions("DinOptions", {64}, MlpActivation::kDice, 1, names).message();
  EXPECT_EQ(dice, "data.batch_size: model.activation DICE needs batches of at least 2 rows, got 1");
  std::vector<std::string> pair;
  const Status picked =
      models::CheckMlpHeadOptions("DinOptions", {64}, MlpActivation::kDice, 1, names,
                                  [&](const std::string& a, const std::string& what_a,
                                      const std::string& b, const std::string& what_b) {
                                    pair = {a, what_a, b, what_b};
                                    return InvalidArgumentError(b + ": " + what_b);
                                  });
  EXPECT_EQ(picked.message(),
            "model.activation: DICE needs batches of at least 2 rows (data.batch_size is 1)");
  EXPECT_EQ(
      pair,
      (std::vector<std::string>{
          "data.batch_size", "model.activation DICE needs batches of at least 2 rows, got 1",
          "model.activation", "DICE needs batches of at least 2 rows (data.batch_size is 1)"}));
  EXPECT_EQ(
      LoadConfigForRun(path, {"model.activation=DICE", "data.batch_size=1"}).status().message(),
      "--set data.batch_size=1: " + dice);
  EXPECT_EQ(
      LoadConfigForRun(path, {"data.batch_size=1", "model.activation=DICE"}).status().message(),
      "--set data.batch_size=1: " + dice);
  // Without a hidden layer there is nothing for Dice to normalise.
  EXPECT_TRUE(models::CheckMlpHeadOptions("DinOptions", {}, MlpActivation::kDice, 1).ok());
  EXPECT_TRUE(models::CheckMlpHeadOptions("DinOptions", {64}, MlpActivation::kDice, 2).ok());
}

TEST(ConfigValidation, EveryShippedConfigPassesTheRunChecks) {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string dir = std::string(src) + "/launch/configs";
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int loaded = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 6 || name.substr(name.size() - 6) != ".pbtxt") continue;
    auto cfg = LoadConfigForRun(dir + "/" + name, {});
    EXPECT_TRUE(cfg.ok()) << name << ": " << cfg.status();
    ++loaded;
  }
  closedir(d);
  EXPECT_GT(loaded, 0);
}

// The "error: ..." line of a run's output ("" when there is none).
std::string ErrorLine(const testing::IpsRun& r) {
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("error: ", 0) == 0) return line;
  return "";
}

// `ips config check` and `ips eval` load their config with LoadConfigForRun: a run option set by
// --set is blamed on the --set (they named the config file for it).
TEST(ConfigValidationCli, RunOptionFromSetNamesTheOverride) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"config check --config " + ShippedConfig("din_ml100k.pbtxt") + " --set train.max_steps=-1",
       "error: INVALID_ARGUMENT: --set train.max_steps=-1: train.max_steps: must be >= 0 (0: no "
       "limit), got -1"},
      {"config check --config " + ShippedConfig("din_synthetic.pbtxt") +
           " --set data.synthetic.steps=0",
       "error: INVALID_ARGUMENT: --set data.synthetic.steps=0: data.synthetic.steps: must be >= 1, "
       "got 0"},
      {"config check --config " + ShippedConfig("din_synthetic.pbtxt") +
           " --set data.synthetic.zipf_alpha=-1",
       "error: INVALID_ARGUMENT: --set data.synthetic.zipf_alpha=-1: data.synthetic.zipf_alpha: "
       "must be finite and >= 0, got -1"},
      {"config check --config " + ShippedConfig("din_synthetic.pbtxt") +
           " --set data.max_history=70000",
       "error: INVALID_ARGUMENT: --set data.max_history=70000: data.max_history: must be in [1, "
       "65535], got 70000"},
      {"config check --config " + ShippedConfig("mind_games.pbtxt") + " --set eval.top_k=0",
       "error: INVALID_ARGUMENT: --set eval.top_k=0: eval.top_k[0]: must be >= 1, got 0"},
      {"eval --config " + ShippedConfig("din_ml100k.pbtxt") +
           " --checkpoint /nonexistent/ck --set eval.every_epochs=0",
       "error: INVALID_ARGUMENT: --set eval.every_epochs=0: eval.every_epochs: must be >= 1, got "
       "0"},
  };
  for (const auto& [args, want] : cases) {
    SCOPED_TRACE(args);
    const testing::IpsRun r = testing::RunIps(args);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(ErrorLine(r), want) << r.output;
  }
}

}  // namespace
}  // namespace ips
