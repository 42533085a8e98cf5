// Every CTR model learns the planted structure of `ips data synth` data, end to end: synth events
// -> `ips data convert` (seqrec protocol: leave-one-out, the peer's) -> RunDatasetTraining ->
// ranking evaluation of the held-out item against 100 never-interacted items.
//
// The data are built so that only the planted *interests* carry signal: items are equally popular
// within a category and categories equally popular (item_alpha = category_alpha = 0), so a model
// cannot rank by popularity; a user's events come from 2-4 interest categories. The held-out item
// is in one of the user's interest categories, the negatives are mostly not, so scoring needs the
// target's relation to the history. A model that does not train scores 0.5 sampled AUC.
//
// What each test shows:
//   * untrained models are at chance (the evaluation is not rigged);
//   * every model learns far above chance;
//   * DIN with its activation unit disabled (no attention) loses clearly to DIN: attention is
//     doing the work, and a silently disabled attention fails this test;
//   * the pooled baseline (no target-aware interest) learns, but DIN beats it;
//   * DIEN learns, and its reported training loss carries the auxiliary next-behaviour loss (a
//     silently disabled auxiliary loss fails this test);
//   * MIND learns through its K interests.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "ps/local_embedding_store.h"
#include "tests/data/data_test_util.h"
#include "tests/models/trainer_test_util.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"
#include "worker/synth.h"
#include "worker/trainer.h"

namespace ips {
namespace {

class PlantedLearningTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SynthOptions s;
    s.events = 60000;
    s.users = 800;
    s.items = 4000;
    s.categories = 40;
    s.item_alpha = 0;
    s.category_alpha = 0;
    s.user_alpha = 0;
    s.min_interests = 2;
    s.max_interests = 4;
    s.noise = 0.05;
    s.drift_at = 0;
    s.domain1_fraction = 0;
    s.cold_users = 0;
    s.cold_items = 0;
    s.seed = 7;
    const std::string events = dir_->File("events.tsv");
    Status st = WriteSynthEvents(s, events, "", 0, 0, {}, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ConvertOptions c;
    c.format = "events";
    c.protocol = "seqrec";
    c.input = events;
    c.output = dir_->File("data");
    c.seed = 1;
    auto m = ConvertDataset(c);
    ASSERT_TRUE(m.ok()) << m.status();
    auto d = Dataset::Open(c.output);
    ASSERT_TRUE(d.ok()) << d.status();
    data_ = d->release();
  }
  static void TearDownTestSuite() {
    delete data_;
    delete dir_;
  }

  struct Outcome {
    double auc = 0, hr = 0, loss = 0;
  };

  // Trains `spec` for `epochs` (0 = evaluate the untrained model) and evaluates every user.
  // init_stddev > 0: rows drawn from N(0, init_stddev^2) instead of Xavier-normal.
  static Outcome Train(ModelSpec spec, int epochs, double init_stddev = 0) {
    Outcome o;
    if (data_ == nullptr) {
      ADD_FAILURE() << "no dataset";
      return o;
    }
    TrainJob job;
    job.trainer.model = spec;
    job.trainer.model.max_len = 30;
    job.trainer.model.max_batch = 256;
    job.trainer.model.seed = 3;
    job.trainer.num_threads = 2;
    job.dataset.reader.batch_size = 256;
    job.dataset.reader.max_len = 30;
    job.dataset.reader.seed = 5;
    job.dataset.epochs = std::max(epochs, 1);
    job.dataset.eval_every_epochs = 1000;
    job.dataset.eval_max_users = 0;
    job.dataset.top_k = 10;
    for (const char* name : {"item", "category"}) {
      ps::TableOptions t;
      t.name = name;
      t.dim = spec.embedding_dim;
      t.optimizer.type = ps::OptimizerOptions::Type::kAdam;
      t.optimizer.learning_rate = 3e-3;
      t.has_padding_key = true;
      t.padding_key = 0;
      t.seed = 11;
      if (init_stddev > 0) {
        t.initializer.type = ps::InitializerOptions::Type::kNormal;
        t.initializer.stddev = init_stddev;
      }
      job.tables.push_back(t);
    }
    job.trainer.dense_optimizer = kernels::OptimizerHyper::Adam(3e-3);
    Status st = FitJobToDataset(*data_, &job);
    if (!st.ok()) {
      ADD_FAILURE() << st;
      return o;
    }
    auto store = ps::LocalEmbeddingStore::Create(job.tables);
    if (!store.ok()) {
      ADD_FAILURE() << store.status();
      return o;
    }
    auto trainer = Trainer::Create(job.trainer, store->get());
    if (!trainer.ok()) {
      ADD_FAILURE() << trainer.status();
      return o;
    }
    if (epochs == 0) {
      auto e = EvaluateRanking(trainer->get(), *data_, job.dataset.reader, 0, 10);
      if (!e.ok()) {
        ADD_FAILURE() << e.status();
        return o;
      }
      o.auc = e->auc;
      o.hr = e->hr;
      return o;
    }
    auto r = RunDatasetTraining(trainer->get(), *data_, job.dataset, RunSinks{});
    if (!r.ok()) {
      ADD_FAILURE() << r.status();
      return o;
    }
    o.auc = r->eval.auc;
    o.hr = r->eval.hr;
    o.loss = r->loss;
    return o;
  }

  static ModelSpec Spec(ModelKind kind) {
    ModelSpec s;
    s.kind = kind;
    s.embedding_dim = 8;
    s.din.attention_hidden1 = 16;
    s.din.attention_hidden2 = 8;
    s.din.mlp_hidden = {32, 16};
    s.dien.attention_hidden1 = 16;
    s.dien.attention_hidden2 = 8;
    s.dien.aux_hidden = {16, 8};
    s.dien.mlp_hidden = {32, 16};
    s.pooled.mlp_hidden = {32, 16};
    s.mind.num_interests = 4;
    return s;
  }

  static testing::TempDir* dir_;
  static Dataset* data_;
};

testing::TempDir* PlantedLearningTest::dir_ = nullptr;
Dataset* PlantedLearningTest::data_ = nullptr;

TEST_F(PlantedLearningTest, UntrainedDinIsAtChance) {
  const Outcome o = Train(Spec(ModelKind::kDin), 0);
  EXPECT_NEAR(o.auc, 0.5, 0.06);
}

TEST_F(PlantedLearningTest, DinLearnsAndNeedsItsAttention) {
  const Outcome din = Train(Spec(ModelKind::kDin), 2);
  ModelSpec off = Spec(ModelKind::kDin);
  off.din.attention_disabled = true;
  const Outcome no_attention = Train(off, 2);
  std::printf("planted: din auc=%.4f hr10=%.4f | din without attention auc=%.4f hr10=%.4f\n",
              din.auc, din.hr, no_attention.auc, no_attention.hr);
  EXPECT_GT(din.auc, 0.8);
  EXPECT_GT(din.auc, no_attention.auc + 0.015);
  EXPECT_GT(din.hr, no_attention.hr + 0.04);
}

TEST_F(PlantedLearningTest, PooledBaselineLearnsButDinBeatsIt) {
  const Outcome pooled = Train(Spec(ModelKind::kPooled), 2);
  const Outcome din = Train(Spec(ModelKind::kDin), 2);
  std::printf("planted: pooled auc=%.4f hr10=%.4f | din auc=%.4f hr10=%.4f\n", pooled.auc,
              pooled.hr, din.auc, din.hr);
  EXPECT_GT(pooled.auc, 0.7);
  EXPECT_GT(din.auc, pooled.auc + 0.015);
}

TEST_F(PlantedLearningTest, DienLearnsWithItsAuxiliaryLoss) {
  const Outcome dien = Train(Spec(ModelKind::kDien), 2);
  ModelSpec no_aux = Spec(ModelKind::kDien);
  no_aux.dien.aux_loss_disabled = true;
  const Outcome without = Train(no_aux, 2);
  std::printf("planted: dien auc=%.4f hr10=%.4f loss=%.4f | without aux auc=%.4f loss=%.4f\n",
              dien.auc, dien.hr, dien.loss, without.auc, without.loss);
  EXPECT_GT(dien.auc, 0.8);
  // The auxiliary BCE over consecutive behaviours is part of the optimised loss.
  EXPECT_GT(dien.loss, without.loss + 0.1);
}

TEST_F(PlantedLearningTest, MindLearns) {
  const Outcome mind = Train(Spec(ModelKind::kMind), 2);
  std::printf("planted: mind auc=%.4f hr10=%.4f\n", mind.auc, mind.hr);
  EXPECT_GT(mind.auc, 0.75);
}

}  // namespace
}  // namespace ips
