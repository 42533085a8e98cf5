// Trainer (worker/trainer.h): the step's plumbing (keys -> pull -> model -> push -> dense update)
// against an independent computation, determinism, and the config mapping. The learning tests
// (planted synthetic signal, attention ablation) live in din_learning_test.cc.
#include "worker/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/tolerance.h"

namespace ips {
namespace {

using testing_util::MakeStore;
using testing_util::SmallTrainerOptions;

#define ASSERT_OK(expr)                      \
  do {                                       \
    const ::ips::Status _st = (expr);        \
    ASSERT_TRUE(_st.ok()) << _st.ToString(); \
  } while (0)

// A hand-made batch: B = 4, T = 5, lengths 5, 1, 0, 3, with repeated items, so dedup, padding and
// the [history, target] key layout all matter.
CtrBatch SmallBatch() {
  CtrBatch b;
  b.batch = 4;
  b.seq_len = 5;
  b.length = {5, 1, 0, 3};
  b.hist_item.assign(20, 0);
  b.hist_cat.assign(20, 0);
  const uint32_t items[4][5] = {
      {7, 3, 7, 9, 11}, {0, 0, 0, 0, 3}, {0, 0, 0, 0, 0}, {0, 0, 12, 7, 5}};
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 5; ++t) {
      b.hist_item[r * 5 + t] = items[r][t];
      b.hist_cat[r * 5 + t] = items[r][t] == 0 ? 0 : items[r][t] % 3 + 1;
    }
  b.item = {3, 20, 7, 9};
  b.cat = {1, 3, 2, 1};
  b.label = {1, 0, 1, 0};
  return b;
}

// One SGD step moves every pulled row by -lr * (the model's gradient for that row), computed here
// by an identical model fed with rows de-duplicated independently (std::map), and leaves the
// padding key at zero; dense weights move by -lr * their gradient.
TEST(Trainer, SgdStepMatchesIndependentGradient_B4_T5_varlen) {
  TrainerOptions opt = SmallTrainerOptions(/*max_batch=*/4, /*max_len=*/5);
  opt.dense_optimizer = kernels::OptimizerHyper::Sgd(0.1);
  auto store = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kSgd, 0.1, 1000, 10);
  auto trainer_or = Trainer::Create(opt, store.get());
  ASSERT_OK(trainer_or.status());
  Trainer& trainer = **trainer_or;
  const CtrBatch batch = SmallBatch();
  const int64_t D = opt.din.embedding_dim, B = 4, T = 5, n = B * T + B;

  // Independent de-duplication: keys in ascending order.
  std::vector<uint64_t> ikeys, ckeys;
  for (int64_t i = 0; i < B * T; ++i) {
    ikeys.push_back(batch.hist_item[i]);
    ckeys.push_back(batch.hist_cat[i]);
  }
  for (int64_t i = 0; i < B; ++i) {
    ikeys.push_back(batch.item[i]);
    ckeys.push_back(batch.cat[i]);
  }
  auto dedup = [](const std::vector<uint64_t>& keys, std::vector<uint64_t>* uniq,
                  std::vector<int64_t>* inverse) {
    std::map<uint64_t, int64_t> pos;
    for (uint64_t k : keys) pos.emplace(k, 0);
    for (auto& [k, p] : pos) {
      p = static_cast<int64_t>(uniq->size());
      uniq->push_back(k);
    }
    for (uint64_t k : keys) inverse->push_back(pos[k]);
  };
  std::vector<uint64_t> iu, cu;
  std::vector<int64_t> iinv, cinv;
  dedup(ikeys, &iu, &iinv);
  dedup(ckeys, &cu, &cinv);
  std::vector<float> irows(iu.size() * D), crows(cu.size() * D);
  // Lookup creates nothing; the step's Pull then creates rows with the same initial values
  // (a pure function of table, seed and key), so read them through a Pull on a twin store.
  auto twin = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kSgd, 0.1, 1000, 10);
  ASSERT_OK(twin->Pull(0, iu.data(), static_cast<int64_t>(iu.size()), D, irows.data()));
  ASSERT_OK(twin->Pull(1, cu.data(), static_cast<int64_t>(cu.size()), D, crows.data()));
  for (int64_t c = 0; c < D; ++c) EXPECT_EQ(irows[c], 0.f);  // key 0 = padding reads zeros

  auto ref_or = models::Din<float>::Create(opt.din);
  ASSERT_OK(ref_or.status());
  models::Din<float>& ref = **ref_or;
  const std::vector<float> dense_before(ref.params().values(),
                                        ref.params().values() + ref.params().size());
  models::DinInputs<float> in;
  in.batch = B;
  in.lengths = batch.length.data();
  in.item_index = iinv.data();
  in.cat_index = cinv.data();
  in.item_rows = irows.data();
  in.num_item_rows = static_cast<int64_t>(iu.size());
  in.cat_rows = crows.data();
  in.num_cat_rows = static_cast<int64_t>(cu.size());
  in.labels = batch.label.data();
  kernels::Context ctx;
  float ref_loss = 0;
  ASSERT_OK(ref.Forward(ctx, in, true, &ref_loss));
  std::vector<float> di(irows.size()), dc(crows.size());
  ASSERT_OK(ref.Backward(ctx, in, di.data(), dc.data()));
  ASSERT_EQ(static_cast<int64_t>(iinv.size()), n);

  auto loss = trainer.Step(ViewOf(batch));
  ASSERT_OK(loss.status());
  EXPECT_NEAR(*loss, ref_loss, 1e-6);
  EXPECT_EQ(trainer.steps(), 1);

  std::vector<float> iafter(irows.size(), std::nanf("")), cafter(crows.size(), std::nanf(""));
  ASSERT_OK(store->Lookup(0, iu.data(), static_cast<int64_t>(iu.size()), D, iafter.data()));
  ASSERT_OK(store->Lookup(1, cu.data(), static_cast<int64_t>(cu.size()), D, cafter.data()));
  std::vector<float> iwant(irows.size()), cwant(crows.size());
  for (size_t i = 0; i < irows.size(); ++i) iwant[i] = irows[i] - 0.1f * di[i];
  for (size_t i = 0; i < crows.size(); ++i) cwant[i] = crows[i] - 0.1f * dc[i];
  for (int64_t c = 0; c < D; ++c) {
    iwant[c] = 0.f;  // the padding key is never updated
    cwant[c] = 0.f;
  }
  EXPECT_TRUE(testing::AllClose(iafter, iwant, {1e-6, 1e-5}));
  EXPECT_TRUE(testing::AllClose(cafter, cwant, {1e-6, 1e-5}));

  const auto& p = trainer.model().params();
  std::vector<float> dense_want(dense_before.size());
  for (size_t i = 0; i < dense_want.size(); ++i)
    dense_want[i] = dense_before[i] - 0.1f * ref.params().grads()[i];
  EXPECT_TRUE(testing::AllClose(p.values(), dense_want.data(), p.size(), {1e-6, 1e-5}));
}

// Same seed, same thread count: bit-identical loss sequences and dense weights. One thread (the
// guarantee) and two (also deterministic: fixed partitions, no atomics on the CPU).
TEST(Trainer, DeterministicLossSequence_1and2Threads) {
  SyntheticOptions so;
  so.num_items = 5000;
  so.num_categories = 20;
  so.seq_len = 10;
  so.seed = 3;
  auto gen = SyntheticBatches::Create(so);
  ASSERT_OK(gen.status());
  for (int threads : {1, 2}) {
    std::vector<std::vector<double>> losses(2);
    std::vector<std::vector<float>> weights(2);
    for (int run = 0; run < 2; ++run) {
      TrainerOptions opt = SmallTrainerOptions(64, 10);
      opt.din.embedding_dim = 8;
      opt.num_threads = threads;
      auto store = MakeStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2, 5001, 21);
      auto t = Trainer::Create(opt, store.get());
      ASSERT_OK(t.status());
      CtrBatch b;
      for (uint64_t i = 0; i < 8; ++i) {
        ASSERT_OK((*gen)->CtrBatchAt(i, 64, &b));
        auto l = (*t)->Step(ViewOf(b));
        ASSERT_OK(l.status());
        losses[run].push_back(*l);
      }
      const auto& p = (*t)->model().params();
      weights[run].assign(p.values(), p.values() + p.size());
    }
    EXPECT_EQ(losses[0], losses[1]) << "threads=" << threads;
    EXPECT_TRUE(weights[0] == weights[1]) << "threads=" << threads;
    EXPECT_NE(losses[0].front(), losses[0].back());  // it did train
  }
}

// The dense weights follow torch.optim.Adam exactly (eps added to sqrt(v) / sqrt(bc2), not to
// sqrt(v) as in SparseAdam), checked against the formula in double over 3 steps with a large eps
// so that the two placements differ measurably.
TEST(Trainer, DenseAdamIsTorchAdam_3Steps) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-3;
  opt.dense_optimizer = kernels::OptimizerHyper::Adam(lr, b1, b2, eps);
  auto store = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  auto& p = (*t)->model().params();
  const size_t n = static_cast<size_t>(p.size());
  std::vector<double> m(n, 0.0), v(n, 0.0), want(p.values(), p.values() + n);
  const CtrBatch batch = SmallBatch();
  for (int step = 1; step <= 3; ++step) {
    ASSERT_OK((*t)->Step(ViewOf(batch)).status());
    const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    double sparse_style_diff = 0;
    for (size_t i = 0; i < n; ++i) {
      const double g = p.grads()[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double torch = lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
      const double sparse = lr * std::sqrt(bc2) / bc1 * m[i] / (std::sqrt(v[i]) + eps);
      sparse_style_diff = std::max(sparse_style_diff, std::fabs(torch - sparse));
      want[i] -= torch;
    }
    EXPECT_GT(sparse_style_diff, 1e-4) << "test cannot tell the eps placements apart";
    EXPECT_TRUE(testing::AllClose(p.values(), want.data(), p.size(), {1e-6, 1e-5}))
        << "step " << step;
    // Keep the reference in step with the float weights so rounding does not accumulate.
    for (size_t i = 0; i < n; ++i) want[i] = p.values()[i];
  }
}

TEST(Trainer, RejectsMismatchedBatchAndTables) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  CtrBatch b = SmallBatch();
  b.seq_len = 4;
  EXPECT_EQ((*t)->Step(ViewOf(b)).status().code(), StatusCode::kInvalidArgument);
  b = SmallBatch();
  b.length[1] = 9;
  auto s = (*t)->Step(ViewOf(b));
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("lengths[1]"), std::string::npos) << s.status();
  opt.item_table = "items";
  auto missing = Trainer::Create(opt, store.get());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  opt = SmallTrainerOptions(4, 5);
  opt.din.embedding_dim = 4;  // the store's tables are 3 wide
  auto wrong_dim = Trainer::Create(opt, store.get());
  EXPECT_EQ(wrong_dim.status().code(), StatusCode::kInvalidArgument);
}

// Whatever a batch holds at padded steps is never pulled: padding maps to the padding key, so no
// row is created for it.
TEST(Trainer, PaddedStepsCreateNoRows) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  CtrBatch b = SmallBatch();
  for (int i = 10; i < 15; ++i) {  // row 2 has length 0
    b.hist_item[i] = 999;
    b.hist_cat[i] = 3;
  }
  ASSERT_OK((*t)->Step(ViewOf(b)).status());
  auto items = store->Stats(0);
  ASSERT_OK(items.status());
  // Valid history items {7, 3, 9, 11} + {3} + {12, 7, 5} and targets {3, 20, 7, 9}.
  EXPECT_EQ(items->rows, 7);
  std::vector<float> row(opt.din.embedding_dim, 1.f);
  const uint64_t key = 999;
  ASSERT_OK(store->Lookup(0, &key, 1, opt.din.embedding_dim, row.data()));
  for (float v : row) EXPECT_EQ(v, 0.f);
}

// Predict uses read-only lookups: probabilities in (0, 1), no row created.
TEST(Trainer, PredictCreatesNoRows) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.din.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  const CtrBatch b = SmallBatch();
  std::vector<float> probs(4, std::nanf(""));
  ASSERT_OK((*t)->Predict(ViewOf(b), probs.data()));
  for (float p : probs) {
    EXPECT_GT(p, 0.f);
    EXPECT_LT(p, 1.f);
  }
  auto stats = store->Stats(0);
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->rows, 0);
}

std::string ConfigPath() {
  const char* src = std::getenv("IPS_SOURCE_DIR");
  return std::string(src ? src : ".") + "/launch/configs/din_synthetic.pbtxt";
}

TEST(TrainJob, FromDinSyntheticConfig) {
  auto cfg = LoadConfig(ConfigPath(), {"model.activation=DICE", "model.attention_softmax=true",
                                       "train.num_threads=1", "data.synthetic.steps=7"});
  ASSERT_OK(cfg.status());
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_OK(job.status());
  EXPECT_TRUE(job->synthetic);
  EXPECT_EQ(job->trainer.din.embedding_dim, 18);
  EXPECT_EQ(job->trainer.din.max_len, 50);
  EXPECT_EQ(job->trainer.din.max_batch, 512);
  EXPECT_EQ(job->trainer.din.attention_hidden1, 80);
  EXPECT_EQ(job->trainer.din.attention_hidden2, 40);
  EXPECT_EQ(job->trainer.din.mlp_hidden, (std::vector<int64_t>{200, 80}));
  EXPECT_EQ(job->trainer.din.activation, models::MlpActivation::kDice);
  EXPECT_TRUE(job->trainer.din.attention_softmax);
  EXPECT_EQ(job->trainer.num_threads, 1);
  EXPECT_EQ(job->trainer.dense_optimizer.kind, kernels::OptimizerKind::kAdam);
  EXPECT_NEAR(job->trainer.dense_optimizer.lr, 1e-3, 1e-9);
  ASSERT_EQ(job->tables.size(), 2u);
  EXPECT_EQ(job->tables[0].name, "item");
  EXPECT_EQ(job->tables[0].optimizer.type, ps::OptimizerOptions::Type::kAdam);
  EXPECT_DOUBLE_EQ(job->tables[0].initializer.xavier_fan_rows, 1000001.0);
  EXPECT_DOUBLE_EQ(job->tables[1].initializer.xavier_fan_rows, 1000.0);
  EXPECT_TRUE(job->tables[0].has_padding_key);
  EXPECT_EQ(job->run.steps, 7);
  EXPECT_EQ(job->run.warmup_steps, 20);
  EXPECT_EQ(job->run.data.num_items, 1000000u);
}

TEST(TrainJob, UnsupportedIsReportedNotCrashed) {
  auto cfg = LoadConfig(ConfigPath(), {"model.type=SASREC"});
  ASSERT_OK(cfg.status());
  EXPECT_EQ(TrainJobFromConfig(*cfg).status().code(), StatusCode::kUnimplemented);
  cfg = LoadConfig(ConfigPath(), {"model.activation=RELU"});
  ASSERT_OK(cfg.status());
  auto j = TrainJobFromConfig(*cfg);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("model.activation"), std::string::npos);
  cfg = LoadConfig(ConfigPath(), {"model.attention_hidden=80,40,20"});
  ASSERT_OK(cfg.status());
  EXPECT_EQ(TrainJobFromConfig(*cfg).status().code(), StatusCode::kInvalidArgument);
  cfg = LoadConfig(ConfigPath(), {"tables[1].dim=8"});
  ASSERT_OK(cfg.status());
  j = TrainJobFromConfig(*cfg);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("tables[1].dim"), std::string::npos) << j.status();
  config::Config no_synth = *LoadConfig(ConfigPath(), {});
  no_synth.mutable_data()->clear_synthetic();
  no_synth.mutable_data()->set_train_dir("/nonexistent");
  EXPECT_EQ(TrainJobFromConfig(no_synth).status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace ips
