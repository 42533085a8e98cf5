// SeqTrainer (worker/seq_trainer.h) driving GRU4Rec: one step against an independent computation
// (rows pulled and pushed, padding, dense update), determinism, scoring against a hand
// computation (read-only, chunked), learning a planted sequential pattern (HR@10 far above a
// random model's), bad batches, the synthetic protocol, and training/evaluation on a converted
// dataset.
#include "worker/seq_trainer.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"
#include "models/gru4rec.h"
#include "models/sasrec.h"
#include "proto/config.pb.h"
#include "ps/local_embedding_store.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/metrics_lines.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tolerance.h"
#include "worker/dataset_builder.h"
#include "worker/metrics.h"
#include "worker/metrics_line.h"
#include "worker/model_factory.h"

namespace ips {
namespace {

models::Gru4RecOptions SmallModel(int64_t dim, int64_t max_len, int64_t max_batch, int64_t hidden,
                                  kernels::RnnCell cell) {
  models::Gru4RecOptions o;
  o.embedding_dim = dim;
  o.max_len = max_len;
  o.max_batch = max_batch;
  o.hidden = hidden;
  o.cell = cell;
  o.seed = 5;
  return o;
}

std::unique_ptr<ps::LocalEmbeddingStore> MakeItemStore(int64_t dim, ps::OptimizerOptions::Type type,
                                                       double lr, double fan_rows) {
  std::vector<ps::TableOptions> tables(1);
  tables[0].name = "item";
  tables[0].dim = dim;
  tables[0].optimizer.type = type;
  tables[0].optimizer.learning_rate = lr;
  tables[0].initializer.xavier_fan_rows = fan_rows;
  tables[0].has_padding_key = true;
  tables[0].padding_key = 0;
  tables[0].num_shards = 4;
  tables[0].rows_per_slab = 64;
  auto s = ps::LocalEmbeddingStore::Create(tables);
  if (!s.ok()) return nullptr;
  return std::move(*s);
}

StatusOr<std::unique_ptr<SeqTrainer>> MakeTrainer(const models::Gru4RecOptions& mo,
                                                  const SeqTrainerOptions& to,
                                                  ps::EmbeddingStore* store) {
  IPS_ASSIGN_OR_RETURN(auto model, models::Gru4Rec<float>::Create(mo));
  return SeqTrainer::Create(to, store, std::move(model));
}

// B = 4, T = 5, lengths 5, 1, 0, 3; repeated items across seq/pos/neg; padded steps hold junk
// ids (900+) that must be sent as the padding key 0, never pulled or created.
SeqBatch SmallBatch() {
  SeqBatch b;
  b.batch = 4;
  b.seq_len = 5;
  b.length = {5, 1, 0, 3};
  b.seq = {7, 3, 7, 9, 11, 901, 902, 903, 904, 3, 905, 906, 907, 908, 909, 910, 911, 12, 7, 5};
  b.pos = {3, 7, 9, 11, 4, 912, 913, 914, 915, 8, 916, 917, 918, 919, 920, 921, 922, 7, 5, 3};
  b.neg = {20,  21,  3,   22,  23,  924, 925, 926, 927, 24,
           928, 929, 930, 931, 932, 933, 934, 25,  20,  26};
  return b;
}

// One SGD step moves every pulled row by -lr * the gradient of an identical model fed with rows
// de-duplicated independently (std::map over [seq, pos, neg] with padded steps -> 0), leaves the
// padding key unmade, creates no row for junk at padded steps, and moves the dense weights by
// -lr * their gradient.
TEST(SeqTrainer, SgdStepMatchesIndependentComputation_GRU_proj_B4_T5_varlen) {
  const auto mo = SmallModel(3, 5, 4, 4, kernels::RnnCell::kGru);
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Sgd(0.1);
  auto store = MakeItemStore(3, ps::OptimizerOptions::Type::kSgd, 0.1, 1000);
  ASSERT_NE(store, nullptr);
  auto trainer_or = MakeTrainer(mo, to, store.get());
  ASSERT_OK(trainer_or.status());
  SeqTrainer& trainer = **trainer_or;
  const SeqBatch batch = SmallBatch();
  const int64_t D = 3, B = 4, T = 5;

  std::vector<uint64_t> keys;
  for (const auto* part : {&batch.seq, &batch.pos, &batch.neg})
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        keys.push_back(t < T - batch.length[b] ? 0 : (*part)[b * T + t]);
  std::map<uint64_t, int64_t> pos;
  for (uint64_t k : keys) pos.emplace(k, 0);
  std::vector<uint64_t> uniq;
  for (auto& [k, p] : pos) {
    p = static_cast<int64_t>(uniq.size());
    uniq.push_back(k);
  }
  std::vector<int64_t> inverse;
  for (uint64_t k : keys) inverse.push_back(pos[k]);
  ASSERT_EQ(uniq[0], 0u);
  std::vector<float> rows(uniq.size() * D);
  // Initial values are a pure function of (table, seed, key): read them from a twin store.
  auto twin = MakeItemStore(3, ps::OptimizerOptions::Type::kSgd, 0.1, 1000);
  ASSERT_OK(twin->Pull(0, uniq.data(), static_cast<int64_t>(uniq.size()), D, rows.data()));

  auto ref_or = models::Gru4Rec<float>::Create(mo);
  ASSERT_OK(ref_or.status());
  models::Gru4Rec<float>& ref = **ref_or;
  const std::vector<float> dense_before(ref.params().values(),
                                        ref.params().values() + ref.params().size());
  models::SeqInputs<float> in;
  in.batch = B;
  in.lengths = batch.length.data();
  in.item_index = inverse.data();
  in.item_rows = rows.data();
  in.num_item_rows = static_cast<int64_t>(uniq.size());
  kernels::Context ctx;
  float ref_loss = 0;
  ASSERT_OK(ref.Forward(ctx, in, true, &ref_loss));
  std::vector<float> grad(rows.size());
  ASSERT_OK(ref.Backward(ctx, in, grad.data()));

  auto loss = trainer.Step(ViewOf(batch));
  ASSERT_OK(loss.status());
  EXPECT_NEAR(*loss, ref_loss, 1e-6);
  EXPECT_GT(*loss, 0.5);  // ~2 log 2 at initialisation: not a trivially zero loss
  EXPECT_EQ(trainer.steps(), 1);

  std::vector<float> after(rows.size(), std::nanf(""));
  ASSERT_OK(store->Lookup(0, uniq.data(), static_cast<int64_t>(uniq.size()), D, after.data()));
  std::vector<float> want(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) want[i] = rows[i] - 0.1f * grad[i];
  for (int64_t c = 0; c < D; ++c) want[c] = 0.f;  // the padding key reads zeros, never updated
  EXPECT_TRUE(testing::AllClose(after, want, {1e-6, 1e-5}));
  // Every non-padding key moved (each is used at a valid position).
  int moved = 0;
  for (size_t i = D; i < rows.size(); ++i) moved += after[i] != rows[i];
  EXPECT_GT(moved, static_cast<int>(rows.size() - D) / 2);
  auto st = store->Stats(0);
  ASSERT_OK(st.status());
  EXPECT_EQ(st->rows, static_cast<int64_t>(uniq.size()) - 1) << "junk at padded steps was pulled";

  const auto& p = trainer.model().params();
  std::vector<float> dense_want(dense_before.size());
  for (size_t i = 0; i < dense_want.size(); ++i)
    dense_want[i] = dense_before[i] - 0.1f * ref.params().grads()[i];
  EXPECT_TRUE(testing::AllClose(p.values(), dense_want.data(), p.size(), {1e-6, 1e-5}));
}

SyntheticOptions SmallSynthetic() {
  SyntheticOptions so;
  so.num_items = 3000;
  so.num_categories = 10;
  so.seq_len = 12;
  so.seed = 3;
  return so;
}

// Same seed and thread count: bit-identical loss sequences and dense weights, with one thread
// (the guarantee) and with two (fixed partitions, no atomics on the CPU).
TEST(SeqTrainer, DeterministicLossSequence_GRU_and_LSTM_1and2Threads) {
  auto gen = SyntheticBatches::Create(SmallSynthetic());
  ASSERT_OK(gen.status());
  std::vector<SeqBatch> batches(8);
  for (size_t i = 0; i < batches.size(); ++i) ASSERT_OK((*gen)->SeqBatchAt(i, 16, &batches[i]));
  for (int threads : {1, 2})
    for (auto cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
      std::vector<double> losses[2];
      std::vector<float> dense[2];
      for (int run = 0; run < 2; ++run) {
        auto store = MakeItemStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2, 3001);
        SeqTrainerOptions to;
        to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
        to.num_threads = threads;
        auto t = MakeTrainer(SmallModel(8, 12, 16, 6, cell), to, store.get());
        ASSERT_OK(t.status());
        for (const SeqBatch& b : batches) {
          auto l = (*t)->Step(ViewOf(b));
          ASSERT_OK(l.status());
          losses[run].push_back(*l);
        }
        const auto& p = (*t)->model().params();
        dense[run].assign(p.values(), p.values() + p.size());
      }
      EXPECT_EQ(losses[0], losses[1]);
      EXPECT_EQ(dense[0], dense[1]);
      EXPECT_NE(losses[0].front(), losses[0].back());
    }
}

// A SeqTrainer over a GRU4Rec with stage_on_cpu (the CUDA path's copies with the CPU kernels;
// pulled rows in the trainer's host buffers, as on CUDA) trains and scores bitwise as the plain
// one: the trainer drives a model on another device the same way.
TEST(SeqTrainer, StagedGru4RecTrainsBitwiseAsThePlainOne) {
  auto gen = SyntheticBatches::Create(SmallSynthetic());
  ASSERT_OK(gen.status());
  for (auto cell : {kernels::RnnCell::kGru, kernels::RnnCell::kLstm}) {
    models::Gru4RecOptions mo = SmallModel(8, 12, 16, 6, cell);
    const testing_util::TrainedRun plain =
        testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, mo, 3001, 8, 16);
    mo.stage_on_cpu = true;
    testing_util::ExpectRunsBitwiseEqual(
        plain, testing_util::TrainSeqSteps<models::Gru4Rec<float>>(**gen, mo, 3001, 8, 16), 8);
  }
}

// The same for SASRec with dropout: the SeqTrainer drives its device path (kernels/ only, dropout
// masks from the model's seeded step counter) exactly as the plain model on the same path.
TEST(SeqTrainer, StagedSasrecTrainsBitwiseAsThePlainOne) {
  auto gen = SyntheticBatches::Create(SmallSynthetic());
  ASSERT_OK(gen.status());
  models::SasrecOptions mo;
  mo.embedding_dim = 8;
  mo.max_len = 12;
  mo.max_batch = 16;
  mo.num_heads = 2;
  mo.dropout = 0.2;
  mo.seed = 5;
  mo.fast_cpu_path = false;
  const testing_util::TrainedRun plain =
      testing_util::TrainSeqSteps<models::Sasrec<float>>(**gen, mo, 3001, 8, 16);
  mo.stage_on_cpu = true;
  testing_util::ExpectRunsBitwiseEqual(
      plain, testing_util::TrainSeqSteps<models::Sasrec<float>>(**gen, mo, 3001, 8, 16), 8);
}

// ScoreCandidates = <user vector of an independently fed model, Lookup'd candidate row>; it is
// read-only (no rows created, unseen candidates score 0) and chunks batches above max_batch.
TEST(SeqTrainer, ScoreCandidatesMatchesHandComputationAndIsReadOnly) {
  const auto mo = SmallModel(4, 6, 3, 0, kernels::RnnCell::kLstm);
  auto store = MakeItemStore(4, ps::OptimizerOptions::Type::kAdam, 1e-2, 100);
  auto t_or = MakeTrainer(mo, SeqTrainerOptions{}, store.get());
  ASSERT_OK(t_or.status());
  SeqTrainer& trainer = **t_or;
  // Train a little so that dense weights differ from the initialisation.
  SeqBatch tb;
  tb.batch = 3;
  tb.seq_len = 6;
  tb.length = {6, 4, 2};
  for (int i = 0; i < 18; ++i) {
    tb.seq.push_back(1 + i % 9);
    tb.pos.push_back(1 + (i + 1) % 9);
    tb.neg.push_back(10 + i % 5);
  }
  for (int s = 0; s < 3; ++s) ASSERT_OK(trainer.Step(ViewOf(tb)).status());

  // 5 histories (> max_batch 3: two chunks), 4 candidates each, one never seen (77).
  const int H = 5, C = 4, T = 6, D = 4;
  std::vector<uint32_t> hist(H * T, 0);
  std::vector<int32_t> len = {6, 0, 3, 1, 5};
  Rng rng(9);
  for (int h = 0; h < H; ++h)
    for (int t = T - len[h]; t < T; ++t)
      hist[h * T + t] = 1 + static_cast<uint32_t>(rng.UniformInt(14));
  std::vector<uint32_t> cands(H * C);
  for (int i = 0; i < H * C; ++i) cands[i] = 1 + static_cast<uint32_t>(rng.UniformInt(14));
  cands[6] = 77;
  auto rows_before = store->Stats(0);
  ASSERT_OK(rows_before.status());
  SeqBatchView v;
  v.batch = H;
  v.seq_len = T;
  v.seq = hist.data();
  v.length = len.data();
  std::vector<float> scores(H * C);
  testing::Poison(scores);
  ASSERT_OK(trainer.ScoreCandidates(v, cands.data(), C, scores.data()));
  auto rows_after = store->Stats(0);
  ASSERT_OK(rows_after.status());
  EXPECT_EQ(rows_after->rows, rows_before->rows);
  EXPECT_EQ(rows_after->pulled_keys, rows_before->pulled_keys);
  EXPECT_EQ(scores[6], 0.f);

  // By hand: a twin model with the trainer's weights, each history alone, rows via Lookup.
  auto ref_or = models::Gru4Rec<float>::Create(mo);
  ASSERT_OK(ref_or.status());
  auto& ref = **ref_or;
  const auto& tp = trainer.model().params();
  std::copy(tp.values(), tp.values() + tp.size(), ref.params().values());
  kernels::Context ctx;
  std::vector<float> want(H * C);
  for (int h = 0; h < H; ++h) {
    std::vector<uint64_t> keys(T);
    for (int t = 0; t < T; ++t) keys[t] = t < T - len[h] ? 0 : hist[h * T + t];
    std::vector<float> rows(T * D);
    ASSERT_OK(store->Lookup(0, keys.data(), T, D, rows.data()));
    std::vector<int64_t> idx(T);
    for (int t = 0; t < T; ++t) idx[t] = t;
    models::SeqInputs<float> in;
    in.batch = 1;
    in.lengths = &len[h];
    in.item_index = idx.data();
    in.item_rows = rows.data();
    in.num_item_rows = T;
    ASSERT_OK(ref.Forward(ctx, in, false, nullptr));
    for (int c = 0; c < C; ++c) {
      const uint64_t key = cands[h * C + c];
      float e[4];
      ASSERT_OK(store->Lookup(0, &key, 1, D, e));
      double s = 0;
      for (int k = 0; k < D; ++k) s += static_cast<double>(ref.user_vectors()[k]) * e[k];
      want[h * C + c] = static_cast<float>(s);
    }
  }
  EXPECT_TRUE(testing::AllClose(scores, want, {1e-6, 1e-5}));
  int nonzero = 0;
  for (float s : scores) nonzero += s != 0.f;
  EXPECT_GT(nonzero, H * C / 2);
}

TEST(SeqTrainer, RejectsBadBatchesAndOptions) {
  const auto mo = SmallModel(3, 5, 4, 0, kernels::RnnCell::kGru);
  auto store = MakeItemStore(3, ps::OptimizerOptions::Type::kAdam, 1e-2, 100);
  // Creation errors.
  auto wrong_dim = MakeTrainer(SmallModel(4, 5, 4, 0, kernels::RnnCell::kGru), {}, store.get());
  EXPECT_EQ(wrong_dim.status().code(), StatusCode::kInvalidArgument);
  SeqTrainerOptions other_table;
  other_table.item_table = "movies";
  auto missing = MakeTrainer(mo, other_table, store.get());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().ToString().find("movies"), std::string::npos);
  EXPECT_EQ(SeqTrainer::Create({}, store.get(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
  SeqTrainerOptions zero_threads;
  zero_threads.num_threads = 0;
  EXPECT_EQ(MakeTrainer(mo, zero_threads, store.get()).status().code(),
            StatusCode::kInvalidArgument);

  auto t = MakeTrainer(mo, {}, store.get());
  ASSERT_OK(t.status());
  SeqBatch b = SmallBatch();
  SeqBatchView v = ViewOf(b);
  v.seq_len = 6;
  EXPECT_EQ((*t)->Step(v).status().code(), StatusCode::kInvalidArgument);
  v = ViewOf(b);
  v.batch = 5;
  EXPECT_EQ((*t)->Step(v).status().code(), StatusCode::kInvalidArgument);
  v.batch = 0;
  EXPECT_EQ((*t)->Step(v).status().code(), StatusCode::kInvalidArgument);
  v = ViewOf(b);
  v.neg = nullptr;
  EXPECT_EQ((*t)->Step(v).status().code(), StatusCode::kInvalidArgument);
  b.length[2] = 6;
  auto s = (*t)->Step(ViewOf(b)).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("length[2]"), std::string::npos) << s.ToString();
  b.length[2] = -1;
  EXPECT_EQ((*t)->Step(ViewOf(b)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->steps(), 0);
  b.length[2] = 0;
  std::vector<float> scores(8);
  std::vector<uint32_t> cands(8, 1);
  EXPECT_EQ((*t)->ScoreCandidates(ViewOf(b), cands.data(), 0, scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->ScoreCandidates(ViewOf(b), nullptr, 2, scores.data()).code(),
            StatusCode::kInvalidArgument);
  ASSERT_OK((*t)->ScoreCandidates(ViewOf(b), cands.data(), 2, scores.data()));
  ASSERT_OK((*t)->Step(ViewOf(b)).status());
  EXPECT_EQ((*t)->steps(), 1);
}

// A step whose loss is not finite (NaN dense weights here, as a learning rate of 1e30 leaves
// them) stops training with an error naming the step, before anything is pushed or updated.
TEST(SeqTrainer, NonFiniteLossIsAnErrorNamingTheStepAndUpdatesNothing) {
  const auto mo = SmallModel(3, 5, 4, 0, kernels::RnnCell::kGru);
  auto store = MakeItemStore(3, ps::OptimizerOptions::Type::kAdam, 1e-2, 100);
  auto t = MakeTrainer(mo, {}, store.get());
  ASSERT_OK(t.status());
  const SeqBatch b = SmallBatch();
  ASSERT_OK((*t)->Step(ViewOf(b)).status());
  auto& p = (*t)->model().params();
  std::fill(p.values(), p.values() + p.size(), std::nanf(""));
  const uint64_t key = 7;
  std::vector<float> row_before(3), row_after(3);
  ASSERT_OK(store->Lookup(0, &key, 1, 3, row_before.data()));
  const Status s = (*t)->Step(ViewOf(b)).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("training diverged at step 2: loss is nan (lower "
                             "optimizer.learning_rate or check the input)"),
            std::string::npos)
      << s;
  EXPECT_EQ((*t)->steps(), 1);
  ASSERT_OK(store->Lookup(0, &key, 1, 3, row_after.data()));
  EXPECT_EQ(row_before, row_after);
  // Scoring with the diverged model says so too, rather than a metric's "score is NaN".
  std::vector<float> scores(8);
  std::vector<uint32_t> cands(8, 3);
  const Status scored = (*t)->ScoreCandidates(ViewOf(b), cands.data(), 2, scores.data());
  EXPECT_EQ(scored.code(), StatusCode::kInvalidArgument) << scored;
  EXPECT_NE(scored.message().find("training diverged by step 1: row 0 scores nan"),
            std::string::npos)
      << scored;
}

// A transformer block whose buffers cannot fit in memory (max_batch x max_len rows; more bytes
// than a 64-bit address space maps) is RESOURCE_EXHAUSTED naming its sizes (it aborted before).
TEST(SeqTrainer, SasrecThatCannotFitInMemoryIsResourceExhausted) {
  models::SasrecOptions so;
  so.embedding_dim = 16;
  so.max_len = 5;
  so.max_batch = int64_t{1} << 44;
  so.num_blocks = 1;
  auto model = models::Sasrec<float>::Create(so);
  EXPECT_EQ(model.status().code(), StatusCode::kResourceExhausted) << model.status();
  EXPECT_NE(model.status().message().find("transformer block 'blocks.0' (dim 16"),
            std::string::npos)
      << model.status();
}

// ---- Learning a planted sequential pattern ----------------------------------------------------

// Items 1..N; the next item is perm[current] with probability 0.9 and uniform otherwise, so the
// only way to rank the true next item is to model the sequence (item popularity is flat).
class PlantedSequences {
 public:
  static constexpr int kItems = 200, kLen = 10;
  explicit PlantedSequences(uint64_t seed) : perm_(kItems + 1) {
    Rng rng(seed);
    for (int i = 1; i <= kItems; ++i) perm_[i] = static_cast<uint32_t>(i);
    for (int i = kItems; i > 1; --i) std::swap(perm_[i], perm_[1 + rng.UniformInt(i)]);
  }
  uint32_t Next(uint32_t cur, Rng& rng) const {
    return rng.Uniform() < 0.9 ? perm_[cur] : Uniform(rng);
  }
  static uint32_t Uniform(Rng& rng) { return 1 + static_cast<uint32_t>(rng.UniformInt(kItems)); }
  // A batch whose rows have lengths in [2, kLen] (left-padded), negatives uniform.
  SeqBatch Batch(int rows, Rng& rng) const {
    SeqBatch b;
    b.batch = rows;
    b.seq_len = kLen;
    b.seq.assign(rows * kLen, 0);
    b.pos.assign(rows * kLen, 0);
    b.neg.assign(rows * kLen, 0);
    for (int r = 0; r < rows; ++r) {
      const int len = 2 + static_cast<int>(rng.UniformInt(kLen - 1));
      b.length.push_back(len);
      uint32_t cur = Uniform(rng);
      for (int t = kLen - len; t < kLen; ++t) {
        const uint32_t nxt = Next(cur, rng);
        b.seq[r * kLen + t] = cur;
        b.pos[r * kLen + t] = nxt;
        b.neg[r * kLen + t] = Uniform(rng);
        cur = nxt;
      }
    }
    return b;
  }
  // HR@10 / AUC of ranking each held-out sequence's true next item (pos at the last step)
  // against 99 distinct uniform negatives.
  RankingMetrics Evaluate(SeqTrainer* trainer, const SeqBatch& held_out, Rng& rng) const {
    const int C = 100, B = held_out.batch;
    std::vector<uint32_t> cands(B * C);
    for (int b = 0; b < B; ++b) {
      const uint32_t truth = held_out.pos[b * kLen + kLen - 1];
      cands[b * C] = truth;
      for (int c = 1; c < C; ++c) {
        uint32_t x;
        do x = Uniform(rng);
        while (x == truth);
        cands[b * C + c] = x;
      }
    }
    std::vector<float> scores(B * C);
    RankingMetrics m(10);
    EXPECT_TRUE(trainer->ScoreCandidates(ViewOf(held_out), cands.data(), C, scores.data()).ok());
    EXPECT_TRUE(m.Add(scores.data(), B, C).ok());
    return m;
  }

 private:
  std::vector<uint32_t> perm_;
};

class SeqTrainerLearns : public ::testing::TestWithParam<kernels::RnnCell> {};

TEST_P(SeqTrainerLearns, PlantedNextItemHr10FarAboveRandom) {
  const PlantedSequences data(17);
  const auto mo = SmallModel(16, PlantedSequences::kLen, 64, 24, GetParam());
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
  Rng rng(23);
  const SeqBatch held_out = data.Batch(400, rng);

  // The random model: untrained, with every item's row initialised (pulled once).
  auto base_store = MakeItemStore(16, ps::OptimizerOptions::Type::kAdam, 1e-2, 201);
  std::vector<uint64_t> all(PlantedSequences::kItems);
  for (int i = 0; i < PlantedSequences::kItems; ++i) all[i] = i + 1;
  std::vector<float> scratch(all.size() * 16);
  ASSERT_OK(base_store->Pull(0, all.data(), static_cast<int64_t>(all.size()), 16, scratch.data()));
  auto base = MakeTrainer(mo, to, base_store.get());
  ASSERT_OK(base.status());
  Rng eval_rng(5);
  const RankingMetrics random_model = data.Evaluate(base->get(), held_out, eval_rng);

  auto store = MakeItemStore(16, ps::OptimizerOptions::Type::kAdam, 1e-2, 201);
  auto t = MakeTrainer(mo, to, store.get());
  ASSERT_OK(t.status());
  double first = 0, last = 0;
  for (int s = 0; s < 300; ++s) {
    const SeqBatch b = data.Batch(64, rng);
    auto l = (*t)->Step(ViewOf(b));
    ASSERT_OK(l.status());
    if (s < 10) first += *l / 10;
    if (s >= 290) last += *l / 10;
  }
  Rng eval_rng2(5);
  const RankingMetrics trained = data.Evaluate(t->get(), held_out, eval_rng2);
  EXPECT_LT(last, first - 0.3) << "loss " << first << " -> " << last;
  EXPECT_LT(random_model.HitRate(), 0.25);
  EXPECT_GT(trained.HitRate(), 0.7) << "random model hr10=" << random_model.HitRate();
  EXPECT_GT(trained.Ndcg(), random_model.Ndcg() + 0.4);
  EXPECT_GT(trained.SampledAuc(), 0.9);
  std::printf("planted hr10: random %.3f trained %.3f (ndcg %.3f, auc %.3f); loss %.3f -> %.3f\n",
              random_model.HitRate(), trained.HitRate(), trained.Ndcg(), trained.SampledAuc(),
              first, last);
}

INSTANTIATE_TEST_SUITE_P(Cells, SeqTrainerLearns,
                         ::testing::Values(kernels::RnnCell::kGru, kernels::RnnCell::kLstm),
                         [](const ::testing::TestParamInfo<kernels::RnnCell>& i) {
                           return std::string(i.param == kernels::RnnCell::kGru ? "gru" : "lstm");
                         });

// The trainer is model-agnostic: SASRec (dropout on, its own seeded masks) learns the same
// planted pattern through the same step and scoring, with either block layout.
class SeqTrainerSasrec : public ::testing::TestWithParam<models::BlockLayout> {};

TEST_P(SeqTrainerSasrec, PlantedNextItemHr10FarAboveRandom) {
  const PlantedSequences data(17);
  models::SasrecOptions so;
  so.layout = GetParam();
  so.embedding_dim = 16;
  so.max_len = PlantedSequences::kLen;
  so.max_batch = 64;
  so.num_blocks = 1;
  so.dropout = 0.1;
  so.seed = 3;
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
  Rng rng(23);
  const SeqBatch held_out = data.Batch(400, rng);
  auto store = MakeItemStore(16, ps::OptimizerOptions::Type::kAdam, 1e-2, 201);
  auto model = models::Sasrec<float>::Create(so);
  ASSERT_OK(model.status());
  auto t = SeqTrainer::Create(to, store.get(), std::move(*model));
  ASSERT_OK(t.status());
  for (int s = 0; s < 300; ++s) {
    const SeqBatch b = data.Batch(64, rng);
    ASSERT_OK((*t)->Step(ViewOf(b)).status());
  }
  Rng eval_rng(5);
  const RankingMetrics trained = data.Evaluate(t->get(), held_out, eval_rng);
  EXPECT_GT(trained.HitRate(), 0.6);
  std::printf("sasrec planted hr10 %.3f (ndcg %.3f, auc %.3f)\n", trained.HitRate(), trained.Ndcg(),
              trained.SampledAuc());
}

INSTANTIATE_TEST_SUITE_P(Layouts, SeqTrainerSasrec,
                         ::testing::Values(models::BlockLayout::kPreLn,
                                           models::BlockLayout::kQueryNorm),
                         [](const ::testing::TestParamInfo<models::BlockLayout>& i) {
                           return std::string(
                               i.param == models::BlockLayout::kPreLn ? "pre_ln" : "query_norm");
                         });

// model.block_layout reaches both transformer models; PRE_LN (the peer's) is the default.
TEST(ModelFactory, BlockLayoutFromConfig) {
  config::Config c;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "model { type: SASREC embedding_dim: 8 block_layout: QUERY_NORM }", &c));
  auto spec = ModelSpecFromConfig(c);
  ASSERT_OK(spec.status());
  EXPECT_EQ(spec->sasrec.layout, models::BlockLayout::kQueryNorm);
  c.mutable_model()->set_type(config::ModelConfig::BST);
  spec = ModelSpecFromConfig(c);
  ASSERT_OK(spec.status());
  EXPECT_EQ(spec->bst.layout, models::BlockLayout::kQueryNorm);
  c.mutable_model()->clear_block_layout();
  spec = ModelSpecFromConfig(c);
  ASSERT_OK(spec.status());
  EXPECT_EQ(spec->bst.layout, models::BlockLayout::kPreLn);
}

// ---- The synthetic throughput protocol --------------------------------------------------------

TEST(SeqTrainer, SyntheticRunTimesStepsAndLogs) {
  auto store = MakeItemStore(8, ps::OptimizerOptions::Type::kAdam, 1e-3, 3001);
  auto t = MakeTrainer(SmallModel(8, 12, 16, 0, kernels::RnnCell::kGru), {}, store.get());
  ASSERT_OK(t.status());
  SyntheticRunOptions o;
  o.data = SmallSynthetic();
  o.batch = 16;
  o.warmup_steps = 3;
  o.steps = 7;
  o.log_every_steps = 5;
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunSeqSyntheticTraining(t->get(), o, sinks);
  ASSERT_OK(r.status());
  EXPECT_EQ(r->steps, 7);
  EXPECT_EQ(r->losses.size(), 10u);
  EXPECT_EQ((*t)->steps(), 10);
  EXPECT_GT(r->samples_per_s, 0);
  EXPECT_GT(r->seconds, 0);
  EXPECT_DOUBLE_EQ(r->loss_first10, r->loss_last10);  // 10 losses: the same window
  // The first batch is SeqBatchAt(0): its loss equals a fresh trainer's first step on it.
  auto store2 = MakeItemStore(8, ps::OptimizerOptions::Type::kAdam, 1e-3, 3001);
  auto t2 = MakeTrainer(SmallModel(8, 12, 16, 0, kernels::RnnCell::kGru), {}, store2.get());
  auto gen = SyntheticBatches::Create(o.data);
  ASSERT_OK(gen.status());
  SeqBatch b0;
  ASSERT_OK((*gen)->SeqBatchAt(0, 16, &b0));
  auto l0 = (*t2)->Step(ViewOf(b0));
  ASSERT_OK(l0.status());
  EXPECT_EQ(*l0, r->losses[0]);
  // Train lines when the step count (warm-up included) is a multiple of 5 and after the last step.
  auto lines = ParseMetricsLines(metrics.str());
  ASSERT_OK(lines.status());
  ASSERT_EQ(lines->size(), 2u) << metrics.str();
  for (const ParsedMetricsLine& l : *lines) {
    EXPECT_EQ(l.Get("phase"), "train");
    EXPECT_EQ(l.Get("model"), "gru4rec");
  }
  EXPECT_EQ((*lines)[0].Get("step"), "5");
  EXPECT_EQ((*lines)[0].Get("timed_steps"), "2");
  EXPECT_EQ((*lines)[1].Get("step"), "10");
  EXPECT_EQ((*lines)[1].Get("timed_steps"), "7");
  std::ostringstream last_loss;
  last_loss << std::setprecision(17) << r->losses.back();
  EXPECT_EQ((*lines)[1].Get("step_loss"), last_loss.str());
  o.steps = 0;
  EXPECT_EQ(RunSeqSyntheticTraining(t->get(), o, sinks).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- Training on a converted dataset ----------------------------------------------------------

// MakePlantedGroupsDataset's dataset: the held-out item is the successor of the last history item.
class SeqDatasetTraining : public testing_util::PlantedGroupsDatasetTest {
 protected:
  SeqDatasetTraining() : PlantedGroupsDatasetTest("seq_trainer_test_ds") {}
};

TEST_F(SeqDatasetTraining, EvaluateIsReadOnlyCapsUsersAndMatchesListByListScoring) {
  const int cands = static_cast<int>(data_->manifest().eval_candidates);
  ASSERT_EQ(cands, 101);
  auto store = MakeItemStore(8, ps::OptimizerOptions::Type::kAdam, 1e-2, 401);
  auto t = MakeTrainer(SmallModel(8, kMaxLen, 32, 0, kernels::RnnCell::kGru), {}, store.get());
  ASSERT_OK(t.status());
  ReaderOptions ro;
  ro.batch_size = 32;
  ro.max_len = kMaxLen;
  SequenceReader train(data_.get(), {}, ro);
  train.StartEpoch(0);
  SequenceBatch sb;
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE(train.Next(&sb));
    ASSERT_OK((*t)->Step(ViewOf(sb)).status());
  }
  auto before = store->Stats(0);
  ASSERT_OK(before.status());
  ASSERT_GT(before->rows, 0);
  ASSERT_LT(before->rows, 400);
  auto all = EvaluateSeqRanking(t->get(), *data_, ro, 0, 10);
  ASSERT_OK(all.status());
  EXPECT_EQ(all->users, 400);
  for (double v : {all->hr, all->ndcg, all->auc}) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  auto after = store->Stats(0);
  ASSERT_OK(after.status());
  EXPECT_EQ(after->rows, before->rows);

  auto capped = EvaluateSeqRanking(t->get(), *data_, ro, 7, 10);
  ASSERT_OK(capped.status());
  EXPECT_EQ(capped->users, 7);
  ReaderOptions one = ro;
  one.batch_size = cands;
  EvalReader reader(data_.get(), {}, one);
  Batch b;
  std::vector<float> scores(cands);
  double hits = 0, ndcg = 0, auc = 0;
  for (int u = 0; u < 7; ++u) {
    ASSERT_TRUE(reader.Next(&b));
    ASSERT_EQ(b.size, cands);
    EXPECT_EQ(b.label[0], 1.f);
    SeqBatchView v;
    v.batch = 1;
    v.seq_len = b.max_len;
    v.seq = b.hist_item.data();
    v.length = b.length.data();
    ASSERT_OK((*t)->ScoreCandidates(v, b.item.data(), cands, scores.data()));
    int rank = 0;
    double below = 0;
    for (int c = 1; c < cands; ++c) {
      rank += scores[c] >= scores[0];
      below += scores[c] < scores[0] ? 1.0 : scores[c] == scores[0] ? 0.5 : 0.0;
    }
    if (rank < 10) {
      hits += 1;
      ndcg += 1.0 / std::log2(rank + 2.0);
    }
    auc += below / (cands - 1);
  }
  EXPECT_NEAR(capped->hr, hits / 7, 1e-12);
  EXPECT_NEAR(capped->ndcg, ndcg / 7, 1e-9);
  EXPECT_NEAR(capped->auc, auc / 7, 1e-9);
}

// QA: a sequence model (SASRec, GRU4Rec) reported HR/NDCG of eval.top_k[0] alone. Every cut-off
// of DatasetRunOptions::ranking_cutoffs (the eval.top_k entries) is evaluated from one ranking of
// each list and named on the epoch lines, in that order; each equals that cut-off's evaluation
// alone, bit for bit.
TEST_F(SeqDatasetTraining, EveryTopKEntryIsEvaluatedAndNamedOnTheEpochLines) {
  auto store = MakeItemStore(16, ps::OptimizerOptions::Type::kAdam, 1e-2, 401);
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
  auto t = MakeTrainer(SmallModel(16, kMaxLen, 32, 0, kernels::RnnCell::kGru), to, store.get());
  ASSERT_OK(t.status());
  DatasetRunOptions o;
  o.reader.batch_size = 32;
  o.reader.max_len = 0;  // the model's window
  o.epochs = 2;
  o.eval_every_epochs = 2;
  o.top_k = 5;
  o.ranking_cutoffs = {5, 10};
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunSeqDatasetTraining(t->get(), *data_, o, sinks);
  ASSERT_OK(r.status());
  ASSERT_EQ(r->eval.cutoffs.size(), 2u);
  EXPECT_EQ(r->eval.k, 5);
  for (const RankingCutoff& c : r->eval.cutoffs) {
    auto alone = EvaluateSeqRanking(t->get(), *data_, o.reader, 0, c.k);
    ASSERT_OK(alone.status());
    EXPECT_EQ(c.hr, alone->hr) << c.k;
    EXPECT_EQ(c.ndcg, alone->ndcg) << c.k;
  }
  const std::string m = metrics.str();
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"gru4rec\",\"epoch\":1,\"hr5\":null,"
                   "\"ndcg5\":null,\"hr10\":null,\"ndcg10\":null,\"auc\":null,"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"gru4rec\",\"epoch\":2,\"hr5\":" +
                   JsonNumber(r->eval.cutoffs[0].hr) +
                   ",\"ndcg5\":" + JsonNumber(r->eval.cutoffs[0].ndcg) +
                   ",\"hr10\":" + JsonNumber(r->eval.cutoffs[1].hr) +
                   ",\"ndcg10\":" + JsonNumber(r->eval.cutoffs[1].ndcg) + ",\"auc\":"),
            std::string::npos)
      << m;
  o.ranking_cutoffs = {5, 5};
  EXPECT_EQ(RunSeqDatasetTraining(t->get(), *data_, o, RunSinks{}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(SeqDatasetTraining, EpochsLearnThePatternAndEvaluateOnSchedule) {
  auto store = MakeItemStore(16, ps::OptimizerOptions::Type::kAdam, 1e-2, 401);
  SeqTrainerOptions to;
  to.dense_optimizer = kernels::OptimizerHyper::Adam(1e-2);
  auto t = MakeTrainer(SmallModel(16, kMaxLen, 32, 0, kernels::RnnCell::kGru), to, store.get());
  ASSERT_OK(t.status());
  DatasetRunOptions o;
  o.reader.batch_size = 32;
  o.reader.max_len = 0;  // the model's window
  o.reader.seed = 4;
  o.epochs = 6;
  o.eval_every_epochs = 3;
  o.log_every_steps = 5;
  std::ostringstream metrics;
  RunSinks sinks;
  sinks.metrics_out = &metrics;
  auto r = RunSeqDatasetTraining(t->get(), *data_, o, sinks);
  ASSERT_OK(r.status());
  EXPECT_EQ(r->epochs, 6);
  EXPECT_EQ(r->samples, 6 * 400);  // every user has 11 training events: one sequence each
  EXPECT_EQ(r->steps, 6 * ((400 + 31) / 32));
  ASSERT_EQ(r->per_epoch.size(), 6u);
  EXPECT_FALSE(r->per_epoch[0].evaluated);
  EXPECT_TRUE(r->per_epoch[2].evaluated);
  EXPECT_TRUE(r->per_epoch[5].evaluated);
  EXPECT_LT(r->per_epoch[5].loss, r->per_epoch[0].loss);
  EXPECT_EQ(r->eval.users, 400);
  // The successor of the last item is always the held-out one: far above a random 10/101.
  EXPECT_GT(r->eval.hr, 0.6) << metrics.str();
  EXPECT_GT(r->eval.auc, 0.85);
  EXPECT_GT(r->eval.hr, r->per_epoch[2].eval.hr - 0.05);
  const std::string m = metrics.str();
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"gru4rec\",\"epoch\":1,\"hr10\":null,"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("{\"phase\":\"epoch\",\"model\":\"gru4rec\",\"epoch\":6,\"hr10\":0."),
            std::string::npos)
      << m;
  // Every line has its phase and the model; a train line every 5 steps (13 per epoch: the last,
  // step 78, is logged for being the last), each epoch's line after its train lines (QA: a
  // dataset run wrote no train lines).
  auto lines = ParseMetricsLines(m);
  ASSERT_OK(lines.status());
  std::vector<std::string> phases;
  for (const ParsedMetricsLine& l : *lines) {
    EXPECT_EQ(l.Get("model"), "gru4rec");
    phases.push_back(l.Get("phase") + (l.Get("phase") == "train" ? l.Get("step") : l.Get("epoch")));
  }
  std::vector<std::string> want;
  for (int64_t step = 5, epoch = 1; epoch <= 6; ++epoch) {
    for (; step <= 13 * epoch; step += 5) want.push_back("train" + std::to_string(step));
    if (epoch == 6 && want.back() != "train78") want.push_back("train78");
    want.push_back("epoch" + std::to_string(epoch));
  }
  EXPECT_EQ(phases, want) << m;

  o.max_steps = 4;
  auto short_run = RunSeqDatasetTraining(t->get(), *data_, o, RunSinks{});
  ASSERT_OK(short_run.status());
  EXPECT_EQ(short_run->steps, 4);
  EXPECT_EQ(short_run->epochs, 1);
  EXPECT_TRUE(short_run->per_epoch[0].evaluated);
  o.epochs = 0;
  EXPECT_EQ(RunSeqDatasetTraining(t->get(), *data_, o, RunSinks{}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ips
