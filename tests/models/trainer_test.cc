// Trainer (worker/trainer.h): the step's plumbing (keys -> pull -> model -> push -> dense update)
// against an independent computation, determinism, the next-batch prefetch (what it hands the
// store, and that it changes no loss), the config mapping, and training on a
// converted dataset (EvaluateRanking against list-by-list scoring, RunDatasetTraining learning a
// planted pattern and evaluating on schedule). The learning tests
// (planted synthetic signal, attention ablation) live in din_learning_test.cc.
#include "worker/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/metrics_lines.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/config_validation.h"
#include "worker/dataset_builder.h"
#include "worker/internal/run_steps.h"
#include "worker/metrics_line.h"

namespace ips {
namespace {

using testing_util::MakeStore;
using testing_util::SmallTrainerOptions;
using testing_util::TrainCtrSteps;
using testing_util::TrainedRun;

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
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kSgd, 0.1, 1000, 10);
  auto trainer_or = Trainer::Create(opt, store.get());
  ASSERT_OK(trainer_or.status());
  Trainer& trainer = **trainer_or;
  const CtrBatch batch = SmallBatch();
  const int64_t D = opt.model.embedding_dim, B = 4, T = 5, n = B * T + B;

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
  auto twin = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kSgd, 0.1, 1000, 10);
  ASSERT_OK(twin->Pull(0, iu.data(), static_cast<int64_t>(iu.size()), D, irows.data()));
  ASSERT_OK(twin->Pull(1, cu.data(), static_cast<int64_t>(cu.size()), D, crows.data()));
  for (int64_t c = 0; c < D; ++c) EXPECT_EQ(irows[c], 0.f);  // key 0 = padding reads zeros

  auto ref_or = CreateCtrModel(opt.model);
  ASSERT_OK(ref_or.status());
  models::CtrModel<float>& ref = **ref_or;
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

// The synthetic stream of the determinism and prefetch tests: 5000 items, 20 categories,
// histories of 10.
StatusOr<std::unique_ptr<SyntheticBatches>> SmallStream(uint64_t seed) {
  SyntheticOptions so;
  so.num_items = 5000;
  so.num_categories = 20;
  so.seq_len = 10;
  so.seed = seed;
  return SyntheticBatches::Create(so);
}

// A trainer's dense weights, for bit-for-bit comparisons of runs.
std::vector<float> DenseWeights(Trainer& trainer) {
  const auto& p = trainer.model().params();
  return std::vector<float>(p.values(), p.values() + p.size());
}

// Same seed, same thread count: bit-identical loss sequences, dense weights and predictions. One
// thread (the guarantee) and two (also deterministic: fixed partitions, no atomics on the CPU).
TEST(Trainer, DeterministicLossSequence_1and2Threads) {
  auto gen = SmallStream(3);
  ASSERT_OK(gen.status());
  for (int threads : {1, 2}) {
    TrainerOptions opt = SmallTrainerOptions(64, 10);
    opt.model.embedding_dim = 8;
    opt.num_threads = threads;
    SCOPED_TRACE("threads=" + std::to_string(threads));
    testing_util::ExpectRunsBitwiseEqual(TrainCtrSteps(**gen, opt, 8, 64),
                                         TrainCtrSteps(**gen, opt, 8, 64), 8);
  }
}

// The Trainer driving a DIN that stages its inputs and mirrors its weights (the CUDA path's
// copies, run on the CPU: DinOptions::stage_on_cpu) trains bit-identically to the plain model:
// pulled rows reach the model, gradients come back for the pushes, the dense optimizer's
// updates reach the next forward.
TEST(Trainer, StagedDinTrainsBitwiseAsThePlainOne) {
  auto gen = SmallStream(4);
  ASSERT_OK(gen.status());
  TrainerOptions opt = SmallTrainerOptions(64, 10);
  opt.model.embedding_dim = 8;
  const TrainedRun plain = TrainCtrSteps(**gen, opt, 8, 64);
  opt.model.din.stage_on_cpu = true;
  testing_util::ExpectRunsBitwiseEqual(plain, TrainCtrSteps(**gen, opt, 8, 64), 8);
}

// An EmbeddingStore in front of the in-process one that records what the trainer prefetches and
// checks it against what the next step pulls, as a parameter-server store would use it.
class PrefetchRecordingStore : public ps::EmbeddingStore {
 public:
  explicit PrefetchRecordingStore(ps::LocalEmbeddingStore* inner) : inner_(inner) {}
  StatusOr<int> FindTable(const std::string& name) const override {
    return inner_->FindTable(name);
  }
  StatusOr<int64_t> TableDim(int table) const override { return inner_->TableDim(table); }
  Status Pull(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override {
    ++pulls;
    auto it = pending_.find(table);
    if (it != pending_.end()) {
      if (it->second == std::vector<uint64_t>(keys, keys + n)) ++hits;
      pending_.erase(it);
    }
    return inner_->Pull(table, keys, n, dim, out);
  }
  Status Lookup(int table, const uint64_t* keys, int64_t n, int64_t dim, float* out) override {
    return inner_->Lookup(table, keys, n, dim, out);
  }
  Status Push(int table, const uint64_t* keys, int64_t n, int64_t dim,
              const float* grads) override {
    // The protocol: a prefetch is issued after the step's pull and before its push.
    if (pending_.count(table) == 0 && expect_prefetch) ++pushes_without_prefetch;
    return inner_->Push(table, keys, n, dim, grads);
  }
  Status AdvanceStep(int64_t step) override { return inner_->AdvanceStep(step); }
  StatusOr<ps::TableStats> Stats(int table) const override { return inner_->Stats(table); }
  Status PrefetchPull(int table, const uint64_t* keys, int64_t n) override {
    ++prefetches;
    pending_[table].assign(keys, keys + n);
    return Status::Ok();
  }

  int pulls = 0, prefetches = 0, hits = 0, pushes_without_prefetch = 0;
  bool expect_prefetch = false;

 private:
  ps::LocalEmbeddingStore* inner_;
  std::map<int, std::vector<uint64_t>> pending_;
};

ModelSpec PrefetchSpec(ModelKind kind) {
  ModelSpec s;
  s.kind = kind;
  s.embedding_dim = 8;
  s.max_len = 10;
  s.max_batch = 64;
  s.seed = 5;
  s.din.attention_hidden1 = 16;
  s.din.attention_hidden2 = 8;
  s.din.mlp_hidden = {16, 8};
  s.dien.attention_hidden1 = 16;
  s.dien.attention_hidden2 = 8;
  s.dien.aux_hidden = {16, 8};
  s.dien.mlp_hidden = {16, 8};
  return s;
}

// Step(batch, &next): every step after the first pulls exactly the keys the previous step
// prefetched (same order, both tables), issued between that step's pull and push, and the losses
// and dense weights are bit-identical to Step(batch) alone. DIN, and DIEN, whose keys include the
// auxiliary negatives.
TEST(Trainer, NextBatchPrefetchIsWhatTheNextStepPullsAndChangesNoLoss_DinDien) {
  auto gen = SmallStream(3);
  ASSERT_OK(gen.status());
  constexpr int kSteps = 7;
  std::vector<CtrBatch> batches(kSteps);
  for (int i = 0; i < kSteps; ++i) ASSERT_OK((*gen)->CtrBatchAt(i, 64, &batches[i]));
  for (ModelKind kind : {ModelKind::kDin, ModelKind::kDien}) {
    std::vector<std::vector<double>> losses(2);
    std::vector<std::vector<float>> weights(2);
    for (int prefetch = 0; prefetch < 2; ++prefetch) {
      TrainerOptions opt;
      opt.model = PrefetchSpec(kind);
      auto local = MakeStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2, 5001, 21);
      PrefetchRecordingStore store(local.get());
      store.expect_prefetch = prefetch == 1;
      auto t = Trainer::Create(opt, &store);
      ASSERT_OK(t.status());
      for (int i = 0; i < kSteps; ++i) {
        const CtrBatchView next = ViewOf(batches[std::min(i + 1, kSteps - 1)]);
        const bool last = i + 1 == kSteps;
        if (last) store.expect_prefetch = false;  // nothing comes next
        auto l = (*t)->Step(ViewOf(batches[i]), prefetch == 1 && !last ? &next : nullptr);
        ASSERT_OK(l.status());
        losses[prefetch].push_back(*l);
      }
      weights[prefetch] = DenseWeights(**t);
      EXPECT_EQ(store.pulls, 2 * kSteps);
      EXPECT_EQ(store.pushes_without_prefetch, 0);
      EXPECT_EQ(store.prefetches, prefetch == 1 ? 2 * (kSteps - 1) : 0);
      EXPECT_EQ(store.hits, prefetch == 1 ? 2 * (kSteps - 1) : 0) << ModelKindName(kind);
    }
    EXPECT_EQ(losses[0], losses[1]) << ModelKindName(kind);
    EXPECT_TRUE(weights[0] == weights[1]) << ModelKindName(kind);
    EXPECT_NE(losses[0].front(), losses[0].back());  // it did train
  }
}

// A `next` that is not what comes next is only a wasted prefetch: the step that follows pulls
// its own keys (de-duplicated afresh) and its loss equals a plain step's. A bad `next` is
// rejected before anything is pulled.
TEST(Trainer, WrongOrBadNextBatchIsHarmless) {
  auto gen = SmallStream(4);
  ASSERT_OK(gen.status());
  std::vector<CtrBatch> b(4);
  for (int i = 0; i < 4; ++i) ASSERT_OK((*gen)->CtrBatchAt(i, 32, &b[i]));
  TrainerOptions opt;
  opt.model = PrefetchSpec(ModelKind::kDin);
  std::vector<std::vector<double>> losses(2);
  for (int wrong = 0; wrong < 2; ++wrong) {
    auto local = MakeStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2, 5001, 21);
    PrefetchRecordingStore store(local.get());
    auto t = Trainer::Create(opt, &store);
    ASSERT_OK(t.status());
    const CtrBatchView other = ViewOf(b[3]);
    for (int i = 0; i < 3; ++i) {
      auto l = (*t)->Step(ViewOf(b[i]), wrong == 1 ? &other : nullptr);
      ASSERT_OK(l.status());
      losses[wrong].push_back(*l);
    }
    EXPECT_EQ(store.hits, 0);
    if (wrong == 1) {
      CtrBatch bad = b[3];
      bad.length[2] = 99;
      const CtrBatchView bad_view = ViewOf(bad);
      auto stats = local->Stats(0);
      ASSERT_OK(stats.status());
      auto s = (*t)->Step(ViewOf(b[0]), &bad_view);
      EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(s.status().message().find("next batch"), std::string::npos) << s.status();
      EXPECT_NE(s.status().message().find("lengths[2]"), std::string::npos) << s.status();
      auto after = local->Stats(0);
      ASSERT_OK(after.status());
      EXPECT_EQ(after->pulled_keys, stats->pulled_keys);  // nothing pulled
      EXPECT_EQ((*t)->steps(), 3);
    }
  }
  EXPECT_EQ(losses[0], losses[1]);
}

// The in-process store's PrefetchPull is a no-op that still checks its arguments.
TEST(LocalEmbeddingStore, PrefetchPullIsANoOpThatChecksArguments) {
  auto store = MakeStore(3, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  const uint64_t keys[3] = {4, 5, 6};
  EXPECT_OK(store->PrefetchPull(0, keys, 3));
  EXPECT_EQ(store->PrefetchPull(7, keys, 3).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->PrefetchPull(0, nullptr, 3).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PrefetchPull(0, keys, -1).code(), StatusCode::kInvalidArgument);
  auto stats = store->Stats(0);
  ASSERT_OK(stats.status());
  EXPECT_EQ(stats->rows, 0);  // nothing created
  EXPECT_EQ(stats->pulled_keys, 0);
}

// The dense weights follow torch.optim.Adam exactly (eps added to sqrt(v) / sqrt(bc2), not to
// sqrt(v) as in SparseAdam), checked against the formula in double over 3 steps with a large eps
// so that the two placements differ measurably.
TEST(Trainer, DenseAdamIsTorchAdam_3Steps) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-3;
  opt.dense_optimizer = kernels::OptimizerHyper::Adam(lr, b1, b2, eps);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
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
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
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
  opt.model.embedding_dim = 4;  // the store's tables are 3 wide
  auto wrong_dim = Trainer::Create(opt, store.get());
  EXPECT_EQ(wrong_dim.status().code(), StatusCode::kInvalidArgument);
}

// Whatever a batch holds at padded steps is never pulled: padding maps to the padding key, so no
// row is created for it.
TEST(Trainer, PaddedStepsCreateNoRows) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
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
  std::vector<float> row(opt.model.embedding_dim, 1.f);
  const uint64_t key = 999;
  ASSERT_OK(store->Lookup(0, &key, 1, opt.model.embedding_dim, row.data()));
  for (float v : row) EXPECT_EQ(v, 0.f);
}

// Predict uses read-only lookups: probabilities in (0, 1), no row created.
TEST(Trainer, PredictCreatesNoRows) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
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

// A step whose loss is not finite stops training with an error naming the step: training on
// would push NaN gradients into the rows and the dense weights, and only the evaluation would
// fail (RankingMetrics: "score is NaN"), epochs later. Nothing of that step reaches the store or
// the dense weights.
TEST(Trainer, NonFiniteLossIsAnErrorNamingTheStepAndUpdatesNothing) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  const CtrBatch b = SmallBatch();
  ASSERT_OK((*t)->Step(ViewOf(b)).status());
  auto& p = (*t)->model().params();
  // A NaN output bias makes every logit, hence the loss, NaN.
  const auto* bias = p.Find("top.4.bias");
  ASSERT_NE(bias, nullptr);
  p.values()[bias->offset] = std::nanf("");
  const std::vector<float> dense_before(p.values(), p.values() + p.size());
  const uint64_t key = 7;  // a history item of the batch
  std::vector<float> row_before(3), row_after(3);
  ASSERT_OK(store->Lookup(0, &key, 1, 3, row_before.data()));
  auto loss = (*t)->Step(ViewOf(b));
  EXPECT_EQ(loss.status().code(), StatusCode::kInvalidArgument) << loss.status();
  EXPECT_NE(loss.status().message().find("training diverged at step 2: loss is nan (lower "
                                         "optimizer.learning_rate or check the input)"),
            std::string::npos)
      << loss.status();
  EXPECT_EQ((*t)->steps(), 1);
  EXPECT_EQ(std::memcmp(dense_before.data(), p.values(), dense_before.size() * sizeof(float)), 0);
  ASSERT_OK(store->Lookup(0, &key, 1, 3, row_after.data()));
  EXPECT_EQ(row_before, row_after);
  EXPECT_OK(CheckStepLoss(3, 0.5));
  EXPECT_NE(CheckStepLoss(3, HUGE_VAL).message().find("at step 3: loss is inf"), std::string::npos);
  // A prediction by the diverged model says so too (a stream's prequential evaluation predicts
  // each batch before training on it), rather than a metric's "probability nan".
  std::vector<float> probs(4);
  const Status predicted = (*t)->Predict(ViewOf(b), probs.data());
  EXPECT_EQ(predicted.code(), StatusCode::kInvalidArgument) << predicted;
  EXPECT_NE(predicted.message().find("training diverged by step 1: row 0 scores nan (lower "
                                     "optimizer.learning_rate"),
            std::string::npos)
      << predicted;
  const float fresh[2] = {0.5f, -HUGE_VALF};
  EXPECT_NE(CheckScores(fresh, 2, 0)
                .message()
                .find("the model's weights are not finite: row 1 "
                      "scores -inf"),
            std::string::npos);
}

// What `--set optimizer.learning_rate=1e30` does: the weights blow up within a few steps and the
// run stops there with the divergence error (it trained on, to a NaN evaluation, before).
TEST(Trainer, HugeLearningRateStopsWithTheDivergenceError) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  opt.dense_optimizer = kernels::OptimizerHyper::Adam(1e30);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e30, 100, 5);
  auto t = Trainer::Create(opt, store.get());
  ASSERT_OK(t.status());
  const CtrBatch b = SmallBatch();
  Status last;
  for (int i = 0; i < 20 && last.ok(); ++i) last = (*t)->Step(ViewOf(b)).status();
  EXPECT_EQ(last.code(), StatusCode::kInvalidArgument) << last;
  EXPECT_NE(last.message().find("training diverged at step "), std::string::npos) << last;
}

// Layer sizes that cannot fit in memory (on any machine: more bytes than a 64-bit address space
// maps) are RESOURCE_EXHAUSTED naming the sizes, where they threw std::bad_alloc (dense
// parameters) or aborted (the MLP's activation buffers) before.
TEST(Trainer, ModelThatCannotFitInMemoryIsResourceExhausted) {
  TrainerOptions opt = SmallTrainerOptions(4, 5);
  auto store = MakeStore(opt.model.embedding_dim, ps::OptimizerOptions::Type::kAdam, 1e-3, 100, 5);
  opt.model.din.attention_hidden1 = opt.model.din.attention_hidden2 = int64_t{1} << 30;
  auto params = Trainer::Create(opt, store.get());
  EXPECT_EQ(params.status().code(), StatusCode::kResourceExhausted) << params.status();
  EXPECT_NE(params.status().message().find("din model: out of memory allocating "),
            std::string::npos)
      << params.status();
  EXPECT_NE(params.status().message().find("attn.net.2.weight (1152921504606846976)"),
            std::string::npos)
      << params.status();
  opt = SmallTrainerOptions(int64_t{1} << 44, 5);  // max_batch rows of every MLP layer
  auto buffers = Trainer::Create(opt, store.get());
  EXPECT_EQ(buffers.status().code(), StatusCode::kResourceExhausted) << buffers.status();
  EXPECT_NE(buffers.status().message().find(
                "MLP 'top' with layer sizes [18, 7, 4, 1] for up to 17592186044416 rows"),
            std::string::npos)
      << buffers.status();
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
  EXPECT_EQ(job->trainer.model.embedding_dim, 18);
  EXPECT_EQ(job->trainer.model.max_len, 50);
  EXPECT_EQ(job->trainer.model.max_batch, 512);
  EXPECT_EQ(job->trainer.model.din.attention_hidden1, 80);
  EXPECT_EQ(job->trainer.model.din.attention_hidden2, 40);
  EXPECT_EQ(job->trainer.model.din.mlp_hidden, (std::vector<int64_t>{200, 80}));
  EXPECT_EQ(job->trainer.model.din.activation, models::MlpActivation::kDice);
  EXPECT_TRUE(job->trainer.model.din.attention_softmax);
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
  // CUDA runs every model, but only where CUDA is built and a device is visible; elsewhere it is
  // refused up front with the reason, not half-built.
  const StatusCode cuda = !kernels::CudaBuilt()             ? StatusCode::kUnimplemented
                          : !kernels::CudaDeviceAvailable() ? StatusCode::kFailedPrecondition
                                                            : StatusCode::kOk;
  auto cfg = LoadConfig(ConfigPath(), {});
  for (const char* type : {"DIN", "DIEN", "BST", "MIND", "POOLED", "GRU4REC", "SASREC"}) {
    cfg = LoadConfig(ConfigPath(), {"model.device=CUDA", std::string("model.type=") + type});
    ASSERT_OK(cfg.status());
    EXPECT_EQ(TrainJobFromConfig(*cfg).status().code(), cuda)
        << type << ": " << TrainJobFromConfig(*cfg).status();
  }
  // Every model type maps (SASRec needs only the item table; the rest also "category").
  for (const char* type : {"POOLED", "DIN", "DIEN", "BST", "MIND", "GRU4REC"}) {
    cfg = LoadConfig(ConfigPath(), {std::string("model.type=") + type});
    ASSERT_OK(cfg.status());
    const Status st = TrainJobFromConfig(*cfg).status();
    EXPECT_TRUE(st.ok()) << type << ": " << st;
  }
  // The loader refuses these (naming the --set); TrainJobFromConfig still does, for a Config
  // that skipped it, with the config's field names.
  EXPECT_FALSE(LoadConfigForRun(ConfigPath(), {"model.activation=RELU"}).ok());
  cfg = LoadConfig(ConfigPath(), {});
  ASSERT_OK(cfg.status());
  config::Config c = *cfg;
  c.mutable_model()->set_activation(config::RELU);
  auto j = TrainJobFromConfig(c);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("model.activation"), std::string::npos);
  c = *cfg;
  c.mutable_model()->clear_attention_hidden();
  for (int h : {80, 40, 20}) c.mutable_model()->add_attention_hidden(h);
  EXPECT_EQ(TrainJobFromConfig(c).status().code(), StatusCode::kInvalidArgument);
  c = *cfg;
  c.mutable_tables(1)->set_dim(8);
  j = TrainJobFromConfig(c);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("tables[1].dim"), std::string::npos) << j.status();
  c = *cfg;
  c.mutable_model()->set_type(config::ModelConfig::MIND);
  c.mutable_model()->set_num_interests(0);
  j = TrainJobFromConfig(c);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(j.status().message().rfind("model.num_interests: must be in [1, 64]", 0), 0u)
      << j.status();
  // Neither synthetic nor train_dir: nothing to train on.
  auto no_data_or = LoadConfig(ConfigPath(), {});
  ASSERT_OK(no_data_or.status());
  config::Config no_data = *no_data_or;
  no_data.mutable_data()->clear_synthetic();
  j = TrainJobFromConfig(no_data);
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(j.status().message().find("data.train_dir"), std::string::npos) << j.status();
}

TEST(TrainJob, TrainDirMapsToDatasetOptionsWithoutTouchingTheFileSystem) {
  auto c_or =
      LoadConfig(ConfigPath(), {"data.batch_size=64", "data.max_history=12", "data.seed=9",
                                "train.epochs=3", "train.max_steps=40", "eval.every_epochs=2"});
  ASSERT_OK(c_or.status());
  config::Config c = *c_or;
  c.mutable_data()->clear_synthetic();
  c.mutable_data()->set_train_dir("/nonexistent/dataset");  // opened later, by the caller
  auto job = TrainJobFromConfig(c);
  ASSERT_OK(job.status());
  EXPECT_FALSE(job->synthetic);
  EXPECT_EQ(job->dataset.train_dir, "/nonexistent/dataset");
  EXPECT_EQ(job->dataset.reader.batch_size, 64);
  EXPECT_EQ(job->dataset.reader.max_len, 12);
  EXPECT_EQ(job->dataset.reader.seed, 9u);
  EXPECT_EQ(job->dataset.epochs, 3);
  EXPECT_EQ(job->dataset.max_steps, 40);
  EXPECT_EQ(job->dataset.eval_every_epochs, 2);
  EXPECT_EQ(job->dataset.top_k, 10);
  c.mutable_eval()->set_every_epochs(0);
  EXPECT_EQ(TrainJobFromConfig(c).status().code(), StatusCode::kInvalidArgument);
}

// A repeated eval.top_k entry would be evaluated and reported twice (MIND printed
// recall10=.. recall10=..): refused, naming the entry and its value.
TEST(TrainJob, RepeatedTopKIsRefused) {
  auto c = LoadConfig(ConfigPath(), {"eval.top_k=10,20,10"});
  ASSERT_OK(c.status());
  c->mutable_data()->clear_synthetic();
  c->mutable_data()->set_train_dir("/nonexistent/dataset");
  const Status s = TrainJobFromConfig(*c).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("eval.top_k[2] 10 repeats eval.top_k[0]"), std::string::npos) << s;
  c->mutable_eval()->set_top_k(2, 50);
  EXPECT_OK(TrainJobFromConfig(*c).status());
}

// ---- Training on a converted dataset ----------------------------------------------------------

// MakePlantedGroupsDataset's dataset: a model that learns "target in the history's group" ranks
// the test item first.
class DatasetTraining : public testing_util::PlantedGroupsDatasetTest {
 protected:
  DatasetTraining() : PlantedGroupsDatasetTest("trainer_test_ds") {}
};

TEST_F(DatasetTraining, EvaluateRankingIsReadOnlyCapsUsersAndMatchesAListByListScoring) {
  const int cands = static_cast<int>(data_->manifest().eval_candidates);
  ASSERT_EQ(cands, 101);
  auto store = MakeStore(3, ps::OptimizerOptions::Type::kAdam, 1e-2, 401, 1);
  ASSERT_NE(store, nullptr);
  auto trainer = Trainer::Create(SmallTrainerOptions(5 * cands, kMaxLen), store.get());
  ASSERT_OK(trainer.status());
  ReaderOptions ro;
  ro.batch_size = 5 * cands;
  ro.max_len = kMaxLen;
  // A few training steps so that some (not all) items have rows and the scores differ.
  ReaderOptions tro = ro;
  tro.batch_size = 64;
  TrainReader train(data_.get(), {}, tro);
  train.StartEpoch(0);
  Batch tb;
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE(train.Next(&tb));
    ASSERT_OK((*trainer)->Step(ViewOf(tb)).status());
  }
  int64_t rows_before[2];
  for (int t = 0; t < 2; ++t) {
    auto st = store->Stats(t);
    ASSERT_OK(st.status());
    rows_before[t] = st->rows;
  }
  ASSERT_GT(rows_before[0], 0);
  ASSERT_LT(rows_before[0], 400);
  auto all = EvaluateRanking(trainer->get(), *data_, ro, 0, 10);
  ASSERT_OK(all.status());
  EXPECT_EQ(all->users, 400);
  for (double v : {all->hr, all->ndcg, all->auc}) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  // Read-only: evaluation scores all 400 items but creates no rows.
  for (int t = 0; t < 2; ++t) {
    auto st = store->Stats(t);
    ASSERT_OK(st.status());
    EXPECT_EQ(st->rows, rows_before[t]) << "table " << t;
  }
  // The first 7 lists, independently: one list per batch, scored and ranked by hand.
  auto capped = EvaluateRanking(trainer->get(), *data_, ro, 7, 10);
  ASSERT_OK(capped.status());
  EXPECT_EQ(capped->users, 7);
  ReaderOptions one = ro;
  one.batch_size = cands;
  EvalReader reader(data_.get(), {}, one);
  Batch b;
  std::vector<float> logits(static_cast<size_t>(cands));
  double hits = 0, ndcg = 0, auc = 0;
  int distinct_scores = 0;
  for (int u = 0; u < 7; ++u) {
    ASSERT_TRUE(reader.Next(&b));
    ASSERT_EQ(b.size, cands);
    EXPECT_EQ(b.label[0], 1.f);
    ASSERT_OK((*trainer)->PredictLogits(ViewOf(b), logits.data()));
    std::vector<float> sorted = logits;
    std::sort(sorted.begin(), sorted.end());
    distinct_scores += static_cast<int>(std::unique(sorted.begin(), sorted.end()) - sorted.begin());
    int rank = 0;
    double below = 0;
    for (int c = 1; c < cands; ++c) {
      rank += logits[c] >= logits[0];
      below += logits[c] < logits[0] ? 1.0 : logits[c] == logits[0] ? 0.5 : 0.0;
    }
    if (rank < 10) {
      hits += 1;
      ndcg += 1.0 / std::log2(rank + 2.0);
    }
    auc += below / (cands - 1);
  }
  EXPECT_GT(distinct_scores, 7 * 50) << "scores should not be constant after training";
  EXPECT_NEAR(capped->hr, hits / 7, 1e-12);
  EXPECT_NEAR(capped->ndcg, ndcg / 7, 1e-9);
  EXPECT_NEAR(capped->auc, auc / 7, 1e-9);
}

TEST_F(DatasetTraining, TwoEpochsLearnThePlantedPatternAndEvaluateOnSchedule) {
  auto c_or =
      LoadConfig(ConfigPath(), {"data.batch_size=64", "data.max_history=10", "train.epochs=2",
                                "train.num_threads=1", "optimizer.learning_rate=0.01"});
  ASSERT_OK(c_or.status());
  config::Config c = *c_or;
  c.mutable_data()->clear_synthetic();
  c.mutable_data()->set_train_dir(dir_ + "/ds");
  auto job = TrainJobFromConfig(c);
  ASSERT_OK(job.status());
  ASSERT_OK(FitJobToDataset(*data_, &*job));
  EXPECT_EQ(job->trainer.model.max_batch, 101);  // one whole evaluation list
  EXPECT_DOUBLE_EQ(job->tables[0].initializer.xavier_fan_rows, 401.0);
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(trainer.status());
  auto before = EvaluateRanking(trainer->get(), *data_, job->dataset.reader, 0, 10);
  ASSERT_OK(before.status());

  job->dataset.eval_every_epochs = 2;
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunDatasetTraining(trainer->get(), *data_, job->dataset, sinks);
  ASSERT_OK(r.status());
  EXPECT_EQ(r->epochs, 2);
  const int64_t per_epoch = static_cast<int64_t>(data_->manifest().train_examples_per_epoch);
  EXPECT_EQ(r->samples, 2 * per_epoch);
  EXPECT_EQ(r->steps, 2 * ((per_epoch + 63) / 64));
  ASSERT_EQ(r->per_epoch.size(), 2u);
  EXPECT_FALSE(r->per_epoch[0].evaluated);  // every 2 epochs
  EXPECT_TRUE(r->per_epoch[1].evaluated);
  EXPECT_LT(r->per_epoch[1].loss, r->per_epoch[0].loss);
  EXPECT_EQ(r->eval.users, 400);
  // Clearly above a random scorer's 10/101 and above the untrained model.
  EXPECT_GT(r->eval.hr, 0.25) << "untrained hr10=" << before->hr;
  EXPECT_GT(r->eval.hr, before->hr + 0.1);
  EXPECT_GT(r->eval.auc, 0.7);
  const std::string m = metrics.str();
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"din\",\"epoch\":1,\"hr10\":null,"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"din\",\"epoch\":2,\"hr10\":0."),
            std::string::npos)
      << m;
  // Ranked lists count the evaluated users (0 in an epoch not evaluated).
  EXPECT_NE(m.find(",\"eval_users\":0,"), std::string::npos) << m;
  EXPECT_NE(m.find(",\"eval_users\":400,"), std::string::npos) << m;
  EXPECT_EQ(m.find("eval_rows"), std::string::npos) << m;

  // max_steps stops mid-epoch and still evaluates.
  job->dataset.max_steps = 5;
  auto short_run = RunDatasetTraining(trainer->get(), *data_, job->dataset, RunSinks{});
  ASSERT_OK(short_run.status());
  EXPECT_EQ(short_run->steps, 5);
  EXPECT_EQ(short_run->epochs, 1);
  EXPECT_TRUE(short_run->per_epoch[0].evaluated);
}

// A dataset job for `dir` from din_synthetic.pbtxt with `sets` on top; FitJobToDataset's status.
StatusOr<TrainJob> DatasetJob(const std::string& dir, std::vector<std::string> sets) {
  IPS_ASSIGN_OR_RETURN(config::Config c, LoadConfig(ConfigPath(), sets));
  c.mutable_data()->clear_synthetic();
  c.mutable_data()->set_train_dir(dir);
  return TrainJobFromConfig(c);
}

// MetricsLine writes null for what JSON cannot hold (the cluster's result line printed "nan"
// with operator<<), escapes strings, and ParseMetricsLine reads it back; it refuses what is not
// JSON, e.g. a bare nan.
TEST(MetricsLine, NonFiniteIsNullStringsAreEscapedAndItParsesBack) {
  const std::string line = MetricsLine("result", "di\"n")
                               .Num("loss", std::nan(""))
                               .Decimals("auc", std::numeric_limits<double>::infinity(), 6)
                               .Num("step_loss", 0.1, 17)
                               .Int("steps", -3)
                               .Str("path", "a\\b\n")
                               .str();
  EXPECT_EQ(line,
            "{\"phase\":\"result\",\"model\":\"di\\\"n\",\"loss\":null,\"auc\":null,"
            "\"step_loss\":0.10000000000000001,\"steps\":-3,\"path\":\"a\\\\b\\u000a\"}\n");
  auto parsed = ParseMetricsLine(line);
  ASSERT_OK(parsed.status());
  EXPECT_EQ(parsed->Get("model"), "di\"n");
  EXPECT_EQ(parsed->Get("path"), "a\\b\n");
  EXPECT_EQ(parsed->Get("loss"), "null");
  EXPECT_EQ(std::stod(parsed->Get("step_loss")), 0.1);
  for (const char* bad : {"{\"phase\":\"x\",\"loss\":nan}", "{\"a\":1,\"a\":2}", "{\"a\":01}",
                          "{\"a\":1,}", "{\"a\":1} x", "{\"a\":\"b}", "[1]", "{\"a\":-inf}"})
    EXPECT_EQ(ParseMetricsLine(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(ParseMetricsLines("{\"model\":\"din\",\"phase\":\"train\"}\n").status().code(),
            StatusCode::kInvalidArgument)
      << "phase first";
  auto two = ParseMetricsLines(line + "\n" + line);
  ASSERT_OK(two.status());
  EXPECT_EQ(two->size(), 2u);
  EXPECT_EQ(LinesOfPhase(*two, "result").size(), 2u);
}

// 17 significant digits: a double as the train lines' "step_loss" prints it.
std::string Digits17(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

// The train lines of a run whose step losses were `losses` (step i + 1: losses[i]): one whenever
// the trainer's step count is a multiple of `every` and after the last step, with that step's
// loss to the last bit and the mean of the losses since the previous train line (8 digits).
void ExpectTrainLines(const std::vector<ParsedMetricsLine>& train,
                      const std::vector<double>& losses, int64_t every) {
  std::vector<int64_t> want;
  const auto n = static_cast<int64_t>(losses.size());
  for (int64_t s = every; s <= n; s += every) want.push_back(s);
  if (n % every != 0) want.push_back(n);
  ASSERT_EQ(train.size(), want.size());
  int64_t begin = 0;
  double elapsed = 0;
  for (size_t i = 0; i < train.size(); ++i) {
    const ParsedMetricsLine& l = train[i];
    const int64_t step = std::stoll(l.Get("step"));
    ASSERT_EQ(step, want[i]);
    EXPECT_EQ(l.Get("step_loss"), Digits17(losses[static_cast<size_t>(step - 1)])) << step;
    double mean = 0;
    for (int64_t j = begin; j < step; ++j) mean += losses[static_cast<size_t>(j)];
    mean /= static_cast<double>(step - begin);
    EXPECT_NEAR(std::stod(l.Get("loss")), mean, 1e-7 * std::fabs(mean)) << step;
    EXPECT_GE(std::stod(l.Get("elapsed_s")), elapsed) << step;
    elapsed = std::stod(l.Get("elapsed_s"));
    begin = step;
  }
}

// --metrics_out of a dataset run (QA: it had only the epoch lines, without "phase", while
// synthetic and cluster runs logged train lines): every line parses and begins with "phase" and
// "model"; train lines (ExpectTrainLines) carry the step's epoch and the throughput so far, and
// each epoch's line follows its train lines.
TEST_F(DatasetTraining, MetricsHaveTrainLinesAndEveryLineAPhaseAndModel) {
  auto job = DatasetJob(dir_ + "/ds",
                        {"data.batch_size=64", "data.max_history=10", "train.epochs=2",
                         "train.num_threads=1", "train.log_every_steps=7", "eval.every_epochs=2"});
  ASSERT_OK(job.status());
  ASSERT_OK(FitJobToDataset(*data_, &*job));
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(trainer.status());
  std::ostringstream metrics;
  std::vector<double> losses;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  sinks.on_step = [&losses](int64_t, double loss) { losses.push_back(loss); };
  auto r = RunDatasetTraining(trainer->get(), *data_, job->dataset, sinks);
  ASSERT_OK(r.status());
  const int64_t per_epoch =
      (static_cast<int64_t>(data_->manifest().train_examples_per_epoch) + 63) / 64;
  ASSERT_EQ(r->steps, 2 * per_epoch);
  ASSERT_NE(per_epoch % 7, 0) << "the last step is to be logged for being the last";
  ASSERT_EQ(losses.size(), static_cast<size_t>(r->steps));

  auto lines = ParseMetricsLines(metrics.str());
  ASSERT_OK(lines.status());
  for (const ParsedMetricsLine& l : *lines) EXPECT_EQ(l.Get("model"), "din");
  const std::vector<ParsedMetricsLine> train = LinesOfPhase(*lines, "train"),
                                       epochs = LinesOfPhase(*lines, "epoch");
  EXPECT_EQ(train.size() + epochs.size(), lines->size()) << metrics.str();
  ExpectTrainLines(train, losses, 7);
  for (const ParsedMetricsLine& l : train) {
    const int64_t step = std::stoll(l.Get("step"));
    EXPECT_EQ(l.Get("epoch"), std::to_string((step - 1) / per_epoch + 1)) << step;
    EXPECT_FALSE(l.Has("timed_steps"));
    EXPECT_GT(std::stod(l.Get("samples_per_s")), 0) << step;
  }
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[0].Get("hr10"), "null");  // evaluated every 2 epochs
  EXPECT_EQ(epochs[1].Get("steps"), std::to_string(r->steps));
  EXPECT_EQ(epochs[1].Get("eval_users"), "400");
  // Epoch 1's line comes after the train line of its last logged step, before epoch 2's.
  size_t at = 0;
  while (at < lines->size() && (*lines)[at].Get("phase") == "train" &&
         std::stoll((*lines)[at].Get("step")) <= per_epoch)
    ++at;
  ASSERT_LT(at, lines->size());
  EXPECT_EQ((*lines)[at].Get("phase"), "epoch");
  EXPECT_EQ((*lines)[at].Get("epoch"), "1");
  EXPECT_EQ(lines->back().Get("phase"), "epoch");
}

// --metrics_out of a synthetic run: train lines whenever the step count (warm-up included) is a
// multiple of log_every_steps and after the last step, counting the timed steps (0 in the
// warm-up, with no throughput yet), then the held-out "eval" line; every line names the model (the
// CTR run's lines had no "model", the sequence run's had).
TEST(Trainer, SyntheticRunMetricsLinesNameTheModelAndLogEveryStepCountMultiple) {
  auto cfg = LoadConfig(ConfigPath(), {"train.num_threads=1", "data.synthetic.num_items=3000",
                                       "data.synthetic.num_categories=20", "data.batch_size=32",
                                       "data.max_history=10", "data.synthetic.warmup_steps=4",
                                       "data.synthetic.steps=6", "train.log_every_steps=3"});
  ASSERT_OK(cfg.status());
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_OK(job.status());
  job->run.eval_batches = 2;
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(trainer.status());
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunSyntheticTraining(trainer->get(), job->run, sinks);
  ASSERT_OK(r.status());
  ASSERT_EQ(r->losses.size(), 10u);
  auto lines = ParseMetricsLines(metrics.str());
  ASSERT_OK(lines.status());
  for (const ParsedMetricsLine& l : *lines) EXPECT_EQ(l.Get("model"), "din") << metrics.str();
  const std::vector<ParsedMetricsLine> train = LinesOfPhase(*lines, "train");
  ExpectTrainLines(train, r->losses, 3);  // steps 3, 6, 9 and 10
  ASSERT_EQ(train.size(), 4u);
  EXPECT_EQ(train[0].Get("timed_steps"), "0");  // in the warm-up
  EXPECT_EQ(train[0].Get("samples_per_s"), "null");
  EXPECT_EQ(train[1].Get("timed_steps"), "2");
  EXPECT_EQ(train[3].Get("timed_steps"), "6");
  EXPECT_GT(std::stod(train[3].Get("samples_per_s")), 0);
  EXPECT_FALSE(train[3].Has("epoch"));
  ASSERT_EQ(lines->size(), 5u) << metrics.str();
  const ParsedMetricsLine& eval = lines->back();
  EXPECT_EQ(eval.Get("phase"), "eval");
  EXPECT_EQ(eval.Get("step"), "10");
  EXPECT_EQ(eval.Get("examples"), "64");
  for (const char* key : {"auc", "gauc", "logloss", "accuracy"})
    EXPECT_TRUE(std::isfinite(std::stod(eval.Get(key)))) << key;
}

// eval.top_k at or beyond the candidates a user's evaluation ranks would report HR@K (or
// recall@K) = 1 for everyone (the held-out item's rank is below the count): FitJobToDataset
// refuses it, naming the entry, its value and the candidate count, and allows one less. Every
// model ranks the sampled lists (101 candidates here) with every entry (MIND: top_k[0]); MIND
// also ranks every item (400 here) for its retrieval cut-offs, which are all the entries. (QA:
// eval.top_k=101 was accepted, and the message for 102 said "use at most 101".)
TEST_F(DatasetTraining, TopKBeyondTheCandidatesIsRefused) {
  auto fit = [&](std::vector<std::string> sets) -> Status {
    IPS_ASSIGN_OR_RETURN(TrainJob job, DatasetJob(dir_ + "/ds", std::move(sets)));
    return FitJobToDataset(*data_, &job);
  };
  auto expect_refused = [&](std::vector<std::string> sets, const std::string& want) {
    const Status s = fit(sets);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find(want), std::string::npos) << s;
  };
  ASSERT_EQ(data_->manifest().eval_candidates, 101u);
  ASSERT_EQ(data_->manifest().items, 400u);
  EXPECT_OK(fit({}));  // the default 10
  EXPECT_OK(fit({"eval.top_k=100"}));
  expect_refused({"eval.top_k=101"},
                 "eval.top_k 101 equals the 101 candidates ranked per user (the held-out item "
                 "and 100 sampled negatives): HR@101 would be 1 for every user; use at most 100 "
                 "(or convert with more --eval_negatives)");
  expect_refused({"eval.top_k=102"},
                 "eval.top_k 102 exceeds the 101 candidates ranked per user (the held-out item "
                 "and 100 sampled negatives): HR@102 would be 1 for every user; use at most 100");
  expect_refused({"eval.top_k=10,500"}, "eval.top_k[1] 500 exceeds the 101 candidates");
  expect_refused({"eval.top_k=10,101"}, "eval.top_k[1] 101 equals the 101 candidates");
  EXPECT_OK(fit({"eval.top_k=10,100"}));
  const std::vector<std::string> mind = {"model.type=MIND", "model.num_interests=2"};
  auto with = [](std::vector<std::string> v, const std::string& set) {
    v.push_back(set);
    return v;
  };
  EXPECT_OK(fit(mind));  // the default cut-offs 20, 50, 100
  EXPECT_OK(fit(with(mind, "eval.top_k=10,399")));
  expect_refused(with(mind, "eval.top_k=10,400"),
                 "eval.top_k[1] 400 equals the 400 items MIND ranks per user in its full-ranking "
                 "retrieval: recall@400 would be 1 for every user; set eval.top_k entries of at "
                 "most 399");
  expect_refused(with(mind, "eval.top_k=10,401"), "eval.top_k[1] 401 exceeds the 400 items");
  expect_refused(with(mind, "eval.top_k=101,300"), "eval.top_k[0] 101 equals the 101 candidates");
}

// QA: with several eval.top_k entries, the models without user vectors evaluated and reported the
// first alone (hr5 ndcg5 of eval.top_k=5,10), though every entry is a cut-off. Every entry is
// now one, in the config's order, all from one ranking of each list (equal, bit for bit, to an
// evaluation of that cut-off alone); the first stays RankingEvalResult's k/hr/ndcg. MIND keeps
// top_k[0] for its sampled ranking (its entries are its retrieval cut-offs, which may exceed
// the candidates).
TEST_F(DatasetTraining, EveryTopKEntryIsEvaluatedAndReported) {
  auto job = DatasetJob(dir_ + "/ds",
                        {"data.batch_size=64", "data.max_history=10", "train.epochs=2",
                         "train.num_threads=1", "eval.every_epochs=2", "eval.top_k=20,5,10"});
  ASSERT_OK(job.status());
  EXPECT_EQ(job->dataset.top_k, 20);
  EXPECT_EQ(RankingCutoffs(job->dataset), (std::vector<int>{20, 5, 10}));
  auto mind = DatasetJob(dir_ + "/ds", {"model.type=MIND", "eval.top_k=20,5,10"});
  ASSERT_OK(mind.status());
  EXPECT_EQ(RankingCutoffs(mind->dataset), std::vector<int>{20});
  EXPECT_EQ(mind->dataset.retrieval_cutoffs, (std::vector<int>{20, 5, 10}));
  auto one = DatasetJob(dir_ + "/ds", {});
  ASSERT_OK(one.status());
  EXPECT_EQ(RankingCutoffs(one->dataset), std::vector<int>{10});  // the default

  ASSERT_OK(FitJobToDataset(*data_, &*job));
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(trainer.status());
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunDatasetTraining(trainer->get(), *data_, job->dataset, sinks);
  ASSERT_OK(r.status());
  const RankingEvalResult& e = r->eval;
  ASSERT_EQ(e.cutoffs.size(), 3u);
  EXPECT_EQ(e.k, 20);
  EXPECT_EQ(e.hr, e.cutoffs[0].hr);
  EXPECT_EQ(e.ndcg, e.cutoffs[0].ndcg);
  for (const RankingCutoff& c : e.cutoffs) {
    auto alone = EvaluateRanking(trainer->get(), *data_, job->dataset.reader, 0, c.k);
    ASSERT_OK(alone.status());
    EXPECT_EQ(c.hr, alone->hr) << "hr" << c.k;  // the same ranks: bit for bit
    EXPECT_EQ(c.ndcg, alone->ndcg) << "ndcg" << c.k;
    EXPECT_EQ(e.auc, alone->auc);
  }
  EXPECT_LE(e.cutoffs[1].hr, e.cutoffs[2].hr);  // HR@5 <= HR@10 <= HR@20
  EXPECT_LE(e.cutoffs[2].hr, e.cutoffs[0].hr);

  // The epoch lines name every cut-off in that order (null in an epoch not evaluated), then auc.
  auto lines = ParseMetricsLines(metrics.str());
  ASSERT_OK(lines.status());
  const std::vector<ParsedMetricsLine> epochs = LinesOfPhase(*lines, "epoch");
  ASSERT_EQ(epochs.size(), 2u);
  const std::vector<std::string> keys = {"hr20", "ndcg20", "hr5", "ndcg5", "hr10", "ndcg10", "auc"};
  for (const ParsedMetricsLine& l : epochs) {
    ASSERT_GE(l.members.size(), 3 + keys.size()) << metrics.str();
    for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(l.members[3 + i].first, keys[i]);
  }
  EXPECT_EQ(epochs[0].Get("hr5"), "null");
  EXPECT_EQ(epochs[1].Get("hr5"), JsonNumber(e.cutoffs[1].hr));
  EXPECT_EQ(epochs[1].Get("ndcg10"), JsonNumber(e.cutoffs[2].ndcg));
  // So do the result line of --metrics_out (`ips train`) and the progress line.
  auto result = ParseMetricsLine(
      internal::DatasetResultMetricsLine("din", r->epochs, r->steps, 1, 0.5, e, {}).str());
  ASSERT_OK(result.status());
  ASSERT_GE(result->members.size(), 6 + keys.size());
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(result->members[6 + i].first, keys[i]);
  EXPECT_EQ(result->Get("hr10"), JsonFixed(e.cutoffs[2].hr, 6));
  const std::string progress = internal::EvalProgressText(e);
  size_t at = 0;
  for (const std::string& key : keys) {
    at = progress.find(" " + key + "=", at);
    EXPECT_NE(at, std::string::npos) << key << " in order in" << progress;
  }

  // Bad cut-offs are refused, not reported under a key twice.
  EXPECT_EQ(EvaluateRanking(trainer->get(), *data_, job->dataset.reader, 0, std::vector<int>{})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateRanking(trainer->get(), *data_, job->dataset.reader, 0, std::vector<int>{5, 0})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateRanking(trainer->get(), *data_, job->dataset.reader, 0, std::vector<int>{5, 5})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

// Trains `job` on `data` from scratch; the run's result.
StatusOr<DatasetRunResult> TrainFromScratch(const Dataset& data, TrainJob* job) {
  IPS_RETURN_IF_ERROR(FitJobToDataset(data, job));
  IPS_ASSIGN_OR_RETURN(auto store, ps::LocalEmbeddingStore::Create(job->tables));
  IPS_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(job->trainer, store.get()));
  return RunDatasetTraining(trainer.get(), data, job->dataset, RunSinks{});
}

TEST_F(DatasetTraining, CtrProtocolDatasetTrainsAndRanksItsCandidateLists) {
  // The same file with the ctr protocol: every training position a positive, popularity
  // negatives; its evaluation lists are ranked like seqrec's.
  ConvertOptions o;
  o.format = "seqrec";
  o.protocol = "ctr";
  o.input = dir_ + "/in.txt";
  o.output = dir_ + "/ctr";
  o.max_history = kMaxLen;
  ASSERT_OK(ConvertDataset(o).status());
  auto d = Dataset::Open(dir_ + "/ctr");
  ASSERT_OK(d.status());
  ASSERT_EQ((*d)->manifest().protocol, "ctr");
  auto job =
      DatasetJob(dir_ + "/ctr", {"data.batch_size=64", "data.max_history=10", "train.epochs=2",
                                 "train.num_threads=1", "optimizer.learning_rate=0.01"});
  ASSERT_OK(job.status());
  auto r = TrainFromScratch(**d, &*job);
  ASSERT_OK(r.status());
  EXPECT_TRUE(r->eval.ranked);
  EXPECT_EQ(r->eval.users, 400);
  EXPECT_GT(r->eval.hr, 0.25);  // a random scorer: 10/101
  EXPECT_GT(r->eval.auc, 0.7);
}

// DIEN-format files (label, user, target, category, history items, history categories) with a
// planted rule: label 1 when the target is from the user's group of items, 0 when from another.
class GivenDatasetTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/trainer_test_given_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
    WriteDienFile(dir_ + "/train", 3000, 1);
    WriteDienFile(dir_ + "/test", 600, 2);
  }
  void TearDown() override { (void)std::system(("rm -rf " + dir_).c_str()); }

  static void WriteDienFile(const std::string& path, int lines, uint64_t seed) {
    std::ofstream out(path);
    Rng rng(seed);
    for (int n = 0; n < lines; ++n) {
      const int user = static_cast<int>(rng.UniformInt(200)), group = user % 20;
      const bool positive = rng.UniformInt(2) == 0;
      int target_group = group;
      if (!positive) target_group = (group + 1 + static_cast<int>(rng.UniformInt(19))) % 20;
      auto item = [&](int g) { return g * 10 + static_cast<int>(rng.UniformInt(10)); };
      std::string hist, cats;
      for (int t = 0; t < 6; ++t) {
        hist += (t ? "\x02" : "") + ("M" + std::to_string(item(group)));
        cats += (t ? "\x02" : "") + ("C" + std::to_string(group));
      }
      out << (positive ? 1 : 0) << "\tU" << user << "\tM" << item(target_group) << "\tC"
          << target_group << "\t" << hist << "\t" << cats << "\n";
    }
  }

  std::unique_ptr<Dataset> Convert(bool with_eval) {
    ConvertOptions o;
    o.format = "dien";
    o.input = dir_ + "/train";
    if (with_eval) o.eval_input = dir_ + "/test";
    o.output = dir_ + (with_eval ? "/ds" : "/ds_no_eval");
    o.max_history = 10;
    EXPECT_OK(ConvertDataset(o).status());
    auto d = Dataset::Open(o.output);
    EXPECT_OK(d.status());
    return d.ok() ? std::move(*d) : nullptr;
  }

  std::string dir_;
};

TEST_F(GivenDatasetTraining, DinLearnsTheLabelsAndIsEvaluatedByAucOverTheRows) {
  auto data = Convert(true);
  ASSERT_NE(data, nullptr);
  ASSERT_EQ(data->manifest().protocol, "given");
  auto job = DatasetJob(
      dir_ + "/ds", {"data.batch_size=64", "data.max_history=10", "train.epochs=3",
                     "train.num_threads=1", "optimizer.learning_rate=0.01", "eval.every_epochs=2"});
  ASSERT_OK(job.status());
  ASSERT_OK(FitJobToDataset(*data, &*job));
  EXPECT_FALSE(job->dataset.ranked_eval);
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto trainer = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(trainer.status());
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunDatasetTraining(trainer->get(), *data, job->dataset, sinks);
  ASSERT_OK(r.status());
  EXPECT_EQ(r->samples, 3 * 3000);  // every given row once per epoch, no sampled negatives
  EXPECT_FALSE(r->eval.ranked);
  EXPECT_TRUE(std::isnan(r->eval.hr));
  EXPECT_EQ(r->eval.users, 600);  // rows
  EXPECT_GT(r->eval.auc, 0.9) << "the category alone separates the labels";
  EXPECT_LT(r->eval.logloss, 0.5);
  const std::string m = metrics.str();
  EXPECT_EQ(m.find("hr10"), std::string::npos) << m;
  EXPECT_NE(m.find("\"model\":\"din\",\"epoch\":1,\"auc\":null,"), std::string::npos)
      << m;  // not evaluated
  EXPECT_NE(m.find("\"model\":\"din\",\"epoch\":3,\"auc\":0."), std::string::npos) << m;
  // The epoch lines count the evaluated rows, not users (0 in an epoch not evaluated).
  EXPECT_NE(m.find(",\"eval_rows\":0,"), std::string::npos) << m;
  EXPECT_NE(m.find(",\"eval_rows\":600,"), std::string::npos) << m;
  EXPECT_EQ(m.find("eval_users"), std::string::npos) << m;
  // No candidate lists: eval.top_k ranks nothing here, so any value is accepted.
  auto big_k = DatasetJob(dir_ + "/ds", {"data.max_history=10", "eval.top_k=500"});
  ASSERT_OK(big_k.status());
  EXPECT_OK(FitJobToDataset(*data, &*big_k));

  // The AUC is the rows' pairwise AUC of the read-only predictions (counted here directly),
  // capped at max_users rows.
  ReaderOptions ro = job->dataset.reader;
  ro.shuffle = false;
  EvalReader eval(data.get(), {}, ro);
  Batch batch;
  std::vector<std::pair<float, float>> scored;  // (logit, label)
  std::vector<float> logits;
  while (eval.Next(&batch) && scored.size() < 250) {
    logits.resize(batch.size);
    ASSERT_OK((*trainer)->PredictLogits(ViewOf(batch), logits.data()));
    for (int i = 0; i < batch.size && scored.size() < 250; ++i)
      scored.emplace_back(logits[i], batch.label[i]);
  }
  double pairs = 0, wins = 0;
  for (const auto& p : scored)
    for (const auto& q : scored)
      if (p.second == 1 && q.second == 0) {
        pairs += 1;
        wins += p.first > q.first ? 1 : (p.first == q.first ? 0.5 : 0);
      }
  auto capped = EvaluateRanking(trainer->get(), *data, job->dataset.reader, 250, 10);
  ASSERT_OK(capped.status());
  EXPECT_EQ(capped->users, 250);
  EXPECT_NEAR(capped->auc, wins / pairs, 1e-9);
}

TEST_F(GivenDatasetTraining, RefusedForSequenceModelsMindAndDatasetsWithoutEvaluationRows) {
  auto data = Convert(true);
  ASSERT_NE(data, nullptr);
  for (const char* type : {"SASREC", "GRU4REC", "MIND"}) {
    auto job = DatasetJob(dir_ + "/ds", {std::string("model.type=") + type});
    ASSERT_OK(job.status());
    const Status s = FitJobToDataset(*data, &*job);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << type;
    EXPECT_NE(s.message().find("--protocol seqrec"), std::string::npos) << s;
  }
  auto no_eval = Convert(false);
  ASSERT_NE(no_eval, nullptr);
  auto job = DatasetJob(dir_ + "/ds_no_eval", {});
  ASSERT_OK(job.status());
  const Status s = FitJobToDataset(*no_eval, &*job);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("--eval_input"), std::string::npos) << s;
}

}  // namespace
}  // namespace ips
