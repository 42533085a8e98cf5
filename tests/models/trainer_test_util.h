// Helpers shared by the trainer tests: a small DIN trainer configuration, an in-process store
// with the two tables DIN pulls from, short training runs of DIN (Trainer) and GRU4Rec
// (SeqTrainer), and a converted dataset with a planted sequential pattern.
#ifndef IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_
#define IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/random.h"
#include "ps/local_embedding_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"
#include "worker/seq_trainer.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips::testing_util {

// DIN with small widths (dim 3 + 3, attention 6/5, MLP 7/4) for plumbing tests.
inline TrainerOptions SmallTrainerOptions(int64_t max_batch, int64_t max_len) {
  TrainerOptions o;
  o.model.embedding_dim = 3;
  o.model.max_len = max_len;
  o.model.max_batch = max_batch;
  o.model.din.attention_hidden1 = 6;
  o.model.din.attention_hidden2 = 5;
  o.model.din.mlp_hidden = {7, 4};
  o.model.seed = 5;
  o.num_threads = 1;
  return o;
}

// "item" (table 0) and "category" (table 1), padding key 0, Xavier-normal rows with the peer's
// fan (rows of each table), the given optimizer for both.
inline std::unique_ptr<ps::LocalEmbeddingStore> MakeStore(int64_t dim,
                                                          ps::OptimizerOptions::Type type,
                                                          double lr, double item_rows,
                                                          double cat_rows) {
  std::vector<ps::TableOptions> tables(2);
  const char* names[2] = {"item", "category"};
  const double fan[2] = {item_rows, cat_rows};
  for (int i = 0; i < 2; ++i) {
    tables[i].name = names[i];
    tables[i].dim = dim;
    tables[i].optimizer.type = type;
    tables[i].optimizer.learning_rate = lr;
    tables[i].initializer.xavier_fan_rows = fan[i];
    tables[i].has_padding_key = true;
    tables[i].padding_key = 0;
    tables[i].num_shards = 4;
    tables[i].rows_per_slab = 64;
  }
  auto s = ps::LocalEmbeddingStore::Create(tables);
  if (!s.ok()) return nullptr;
  return std::move(*s);
}

// What a short training run left: the loss of every step, then the dense weights followed by
// the model's outputs on one held-out batch (click probabilities, or candidate scores).
struct TrainedRun {
  std::vector<double> losses;
  std::vector<float> weights_and_outputs;
};

// Two runs that must be the same to the bit (a rerun, a staged model against the plain one), and
// that trained: `steps` losses, equal losses, weights and outputs, the loss moved.
inline void ExpectRunsBitwiseEqual(const TrainedRun& a, const TrainedRun& b, size_t steps) {
  ASSERT_EQ(a.losses.size(), steps);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_TRUE(a.weights_and_outputs == b.weights_and_outputs);
  EXPECT_NE(a.losses.front(), a.losses.back());
}

// The same run on CUDA and on the CPU (gpu tests): rounding differences compound over steps
// through Adam, so a loose relative bound that a broken path (a missing upload, gradients left on
// the device) misses by far; the run must also have learnt something.
inline void ExpectCudaRunMatchesCpu(const TrainedRun& gpu, const TrainedRun& cpu, size_t steps) {
  ASSERT_EQ(gpu.losses.size(), steps);
  EXPECT_TRUE(testing::AllClose(gpu.losses, cpu.losses, {1e-4, 1e-2}));
  EXPECT_LT(testing::RelativeL2(gpu.weights_and_outputs.data(), cpu.weights_and_outputs.data(),
                                static_cast<int64_t>(cpu.weights_and_outputs.size())),
            1e-2);
  EXPECT_NE(gpu.losses.front(), gpu.losses.back());
}

// Trains `opt` (any CTR model) with Adam 1e-2 tables (MakeStore, sized for the 5000 items and 20
// categories of the synthetic stream) on batches 0..steps-1 of `gen`, then predicts batch 100.
// Gtest failures (and an empty result) on any error.
inline TrainedRun TrainCtrSteps(SyntheticBatches& gen, const TrainerOptions& opt, int steps,
                                int batch) {
  TrainedRun out;
  auto store =
      MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-2, 5001, 21);
  auto t = Trainer::Create(opt, store.get());
  EXPECT_OK(t.status());
  if (!t.ok()) return out;
  CtrBatch b;
  for (int i = 0; i < steps; ++i) {
    EXPECT_OK(gen.CtrBatchAt(static_cast<uint64_t>(i), batch, &b));
    auto l = (*t)->Step(ViewOf(b));
    EXPECT_OK(l.status());
    if (!l.ok()) return out;
    out.losses.push_back(*l);
  }
  const auto& p = (*t)->model().params();
  out.weights_and_outputs.assign(p.values(), p.values() + p.size());
  std::vector<float> probs(static_cast<size_t>(batch));
  EXPECT_OK(gen.CtrBatchAt(100, batch, &b));
  EXPECT_OK((*t)->Predict(ViewOf(b), probs.data()));
  out.weights_and_outputs.insert(out.weights_and_outputs.end(), probs.begin(), probs.end());
  return out;
}

// A SeqTrainer (2 threads, Adam 1e-2 dense and on an "item" table of `num_items` rows) over
// `model` (or TrainSeqSteps<models::Gru4Rec<float>>(gen, options, ...)) trains on batches
// 0..steps-1 of `gen` (lengths varied from 0 to T), then scores 3 candidates per row of batch 100
// (items of its first two steps). Gtest failures (and an empty result) on any error.
inline TrainedRun TrainSeqSteps(SyntheticBatches& gen,
                                StatusOr<std::unique_ptr<models::SeqModel<float>>> model,
                                int64_t num_items, int steps, int batch) {
  TrainedRun out;
  EXPECT_OK(model.status());
  if (!model.ok()) return out;
  std::vector<ps::TableOptions> tables(1);
  tables[0].name = "item";
  tables[0].dim = (*model)->embedding_dim();
  tables[0].optimizer.type = ps::OptimizerOptions::Type::kAdam;
  tables[0].optimizer.learning_rate = 1e-2;
  tables[0].initializer.xavier_fan_rows = static_cast<double>(num_items);
  tables[0].has_padding_key = true;
  tables[0].padding_key = 0;
  auto store = ps::LocalEmbeddingStore::Create(tables);
  EXPECT_OK(store.status());
  if (!store.ok()) return out;
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
  to.num_threads = 2;
  auto t = SeqTrainer::Create(to, store->get(), std::move(*model));
  EXPECT_OK(t.status());
  if (!t.ok()) return out;
  SeqBatch b;
  // Synthetic sequences are full: vary the lengths (0 to T) so that padding is exercised.
  auto vary_lengths = [&b](int i) {
    for (int r = 0; r < b.batch; ++r) b.length[r] = (r * 7 + i) % (b.seq_len + 1);
  };
  for (int i = 0; i < steps; ++i) {
    EXPECT_OK(gen.SeqBatchAt(static_cast<uint64_t>(i), batch, &b));
    vary_lengths(i);
    auto l = (*t)->Step(ViewOf(b));
    EXPECT_OK(l.status());
    if (!l.ok()) return out;
    out.losses.push_back(*l);
  }
  const auto& p = (*t)->model().params();
  out.weights_and_outputs.assign(p.values(), p.values() + p.size());
  EXPECT_OK(gen.SeqBatchAt(100, batch, &b));
  vary_lengths(100);
  constexpr int kCandidates = 3;
  std::vector<uint32_t> candidates;
  for (int r = 0; r < batch; ++r)
    for (uint32_t c : {b.pos[r * b.seq_len], b.neg[r * b.seq_len], b.pos[r * b.seq_len + 1]})
      candidates.push_back(c);
  std::vector<float> scores(candidates.size());
  EXPECT_OK((*t)->ScoreCandidates(ViewOf(b), candidates.data(), kCandidates, scores.data()));
  out.weights_and_outputs.insert(out.weights_and_outputs.end(), scores.begin(), scores.end());
  return out;
}

template <typename Model, typename Options>
TrainedRun TrainSeqSteps(SyntheticBatches& gen, const Options& model, int64_t num_items, int steps,
                         int batch) {
  auto m = Model::Create(model);
  if (!m.ok()) return TrainSeqSteps(gen, m.status(), num_items, steps, batch);
  return TrainSeqSteps(gen, std::unique_ptr<models::SeqModel<float>>(std::move(*m)), num_items,
                       steps, batch);
}

// A seqrec dataset converted under `root` (root/ds, returned) with a planted pattern: 40 groups
// of 10 items; user u walks cyclically through group u % 40 (12 events) from a random start, so
// the held-out item is the successor of the last history item, and every evaluation negative
// (never interacted) lies outside the user's group.
inline std::string MakePlantedGroupsDataset(const std::string& root, int max_history) {
  {
    std::ofstream out(root + "/in.txt");
    Rng rng(1);
    for (int u = 1; u <= 400; ++u) {
      const int g = (u - 1) % 40, s = static_cast<int>(rng.UniformInt(10));
      for (int j = 0; j < 12; ++j) out << u << " " << g * 10 + (s + j) % 10 + 1 << "\n";
    }
  }
  ConvertOptions o;
  o.format = "seqrec";
  o.input = root + "/in.txt";
  o.output = root + "/ds";
  o.max_history = max_history;
  EXPECT_OK(ConvertDataset(o).status());
  return root + "/ds";
}

// A test fixture holding MakePlantedGroupsDataset's dataset (history window kMaxLen) in a
// temporary directory named after `prefix`.
class PlantedGroupsDatasetTest : public ::testing::Test {
 protected:
  static constexpr int kMaxLen = 10;
  explicit PlantedGroupsDatasetTest(const char* prefix) : prefix_(prefix) {}
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/" + prefix_ + "_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
    auto d = Dataset::Open(MakePlantedGroupsDataset(dir_, kMaxLen));
    ASSERT_OK(d.status());
    data_ = std::move(*d);
  }
  void TearDown() override { (void)std::system(("rm -rf " + dir_).c_str()); }

  std::string prefix_;
  std::string dir_;
  std::unique_ptr<Dataset> data_;
};

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_
