// Helpers shared by the trainer tests: a small DIN trainer configuration and an in-process store
// with the two tables DIN pulls from.
#ifndef IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_
#define IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_

#include <memory>
#include <vector>

#include "ps/local_embedding_store.h"
#include "tests/testing/status_matchers.h"
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
// the click probabilities of one held-out batch.
struct TrainedDin {
  std::vector<double> losses;
  std::vector<float> weights_and_probs;
};

// Trains `opt` with Adam 1e-2 tables (MakeStore, sized for the 5000 items and 20 categories of
// the synthetic stream) on batches 0..steps-1 of `gen`, then predicts batch 100. Gtest failures
// (and an empty result) on any error.
inline TrainedDin TrainDinSteps(SyntheticBatches& gen, const TrainerOptions& opt, int steps,
                                int batch) {
  TrainedDin out;
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
  out.weights_and_probs.assign(p.values(), p.values() + p.size());
  std::vector<float> probs(static_cast<size_t>(batch));
  EXPECT_OK(gen.CtrBatchAt(100, batch, &b));
  EXPECT_OK((*t)->Predict(ViewOf(b), probs.data()));
  out.weights_and_probs.insert(out.weights_and_probs.end(), probs.begin(), probs.end());
  return out;
}

}  // namespace ips::testing_util

#endif  // IPS_TESTS_MODELS_TRAINER_TEST_UTIL_H_
