// Trainer: one training worker's step for CTR models (DIN today), in a single process:
//
//   Step(batch) = unique keys (kernels DedupKeys) -> store Pull -> model Forward -> Backward
//                 -> store Push (the table's sparse optimizer: SparseAdam semantics)
//                 -> dense optimizer update (kernels DenseUpdate, one call over all dense weights)
//
// plus evaluation (Predict: read-only Lookup, inference-mode forward, probabilities) and the
// synthetic throughput protocol of the peer (RunSyntheticTraining: all warmup + steps batches
// generated before the timer, then timed steps, then AUC on held-out synthetic batches).
//
// This module owns the step's orchestration and the config -> options mapping
// (TrainJobFromConfig). It does not own the model math (models/), the rows (ps/, behind
// EmbeddingStore) or the batches (worker/synthetic_batches.h, worker/data_reader.h). A
// multi-process worker adds the dense all-reduce between Backward and the dense update; the store
// then is a client of the parameter servers.
//
// Determinism: for a fixed seed and thread count, losses are identical run to run (the dedup,
// gather, scatter-add and optimizer kernels are deterministic on the CPU; so is the BLAS for a
// fixed thread count).
//
// Thread safety: a Trainer is used by one thread; it parallelises inside kernels over its own
// ThreadPool of options.num_threads (the caller counts as one).
#ifndef IPS_WORKER_TRAINER_H_
#define IPS_WORKER_TRAINER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/context.h"
#include "kernels/optimizer.h"
#include "models/din.h"
#include "ps/embedding_store.h"
#include "ps/table_options.h"
#include "worker/data_reader.h"
#include "worker/metrics.h"
#include "worker/synthetic_batches.h"

namespace ips {

namespace config {
class Config;  // proto/config.proto; only trainer.cc includes the generated header
}

// A CTR batch as the trainer reads it: non-owning views, valid during the call. Histories are
// [batch x seq_len], left-padded with item/category 0 (the padding key of both tables).
struct CtrBatchView {
  int batch = 0;
  int seq_len = 0;
  const uint32_t* hist_item = nullptr;  // [B x T]
  const uint32_t* hist_cat = nullptr;   // [B x T]
  const int32_t* length = nullptr;      // [B]
  const uint32_t* item = nullptr;       // [B]
  const uint32_t* cat = nullptr;        // [B]
  const float* label = nullptr;         // [B]; may be null for Predict
};
CtrBatchView ViewOf(const CtrBatch& b);  // synthetic batches
CtrBatchView ViewOf(const Batch& b);     // the data reader's batches

struct TrainerOptions {
  models::DinOptions din;
  kernels::OptimizerHyper dense_optimizer = kernels::OptimizerHyper::Adam(1e-3);
  int num_threads = 1;
  std::string item_table = "item";
  std::string category_table = "category";
};

class Trainer {
 public:
  // Builds the model (INVALID_ARGUMENT for bad options) and looks up both tables in `store`
  // (NOT_FOUND naming the table; INVALID_ARGUMENT if a table's dim differs from
  // din.embedding_dim). `store` is not owned and must outlive the trainer.
  static StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                   ps::EmbeddingStore* store);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One training step on `batch` (labels required); returns the batch's mean BCE loss before
  // the update. Errors: INVALID_ARGUMENT for a batch that does not fit the model (batch size
  // outside [1, max_batch], seq_len != max_len, null arrays, lengths out of range), the store's
  // Pull/Push errors, the kernels' errors. After an error the model may be partially updated.
  StatusOr<double> Step(const CtrBatchView& batch);

  // Click probabilities [batch.batch] of `batch` in inference mode (Dice uses its running
  // statistics) with read-only lookups (unseen keys read as zeros, nothing is created). Labels
  // are not read. Errors as Step.
  Status Predict(const CtrBatchView& batch, float* probs);

  int64_t steps() const { return steps_; }
  const TrainerOptions& options() const { return o_; }
  models::Din<float>& model() { return *model_; }
  const kernels::Context& context() const { return ctx_; }

 private:
  explicit Trainer(const TrainerOptions& o);
  // Checks the batch, concatenates [history, target] keys per table and de-duplicates them.
  Status PrepareKeys(const CtrBatchView& batch);
  models::DinInputs<float> Inputs(const CtrBatchView& batch) const;

  TrainerOptions o_;
  ps::EmbeddingStore* store_ = nullptr;
  int item_table_ = -1, cat_table_ = -1;
  std::unique_ptr<ThreadPool> pool_;
  kernels::Context ctx_;
  std::unique_ptr<models::Din<float>> model_;
  int64_t steps_ = 0;

  // Per-step buffers sized for max_batch (no allocation per step).
  std::vector<int64_t> item_keys_, cat_keys_;        // [B*T + B]
  std::vector<int64_t> item_unique_, cat_unique_;    // capacity B*T + B
  std::vector<int64_t> item_inverse_, cat_inverse_;  // [B*T + B]
  int64_t num_item_unique_ = 0, num_cat_unique_ = 0;
  std::vector<uint8_t> dedup_workspace_;
  std::vector<float> item_rows_, cat_rows_;         // pulled rows
  std::vector<float> d_item_rows_, d_cat_rows_;     // their gradients
  std::vector<float> dense_state0_, dense_state1_;  // dense optimizer state (Adam m, v)
};

// ---- The config -> options mapping ------------------------------------------------------------

// What `ips train` needs from a Config.
struct SyntheticRunOptions {
  SyntheticOptions data;
  int batch = 512;
  int warmup_steps = 20;
  int steps = 100;
  // Held-out batches for the final AUC: the stream's batches after the training ones (the peer
  // evaluates one batch of 512; more gives a steadier estimate at the same protocol).
  int eval_batches = 4;
  int log_every_steps = 50;
};

struct TrainJob {
  TrainerOptions trainer;
  std::vector<ps::TableOptions> tables;  // item, category (padding key 0, seed = train.seed)
  bool synthetic = false;                // data.synthetic is set
  SyntheticRunOptions run;               // valid when synthetic
};

// Maps a validated config. Errors: UNIMPLEMENTED for model types other than DIN, devices other
// than CPU, and (for now) data without `synthetic`; INVALID_ARGUMENT naming the field for
// unsupported values (activation other than PRELU/DICE, attention_hidden not of size 2, a table
// dim different from model.embedding_dim, a missing "item" or "category" table).
StatusOr<TrainJob> TrainJobFromConfig(const config::Config& config);

// ---- The synthetic throughput protocol --------------------------------------------------------

struct SyntheticRunResult {
  int64_t steps = 0;  // timed steps
  int batch = 0;
  double seconds = 0;  // timed region only (train steps after warm-up)
  double samples_per_s = 0;
  std::vector<double> losses;  // every step, warm-up included
  double loss_first10 = 0;     // mean of the first 10 losses (warm-up included, as the peer)
  double loss_last10 = 0;
  BinaryMetricsResult eval;  // on the held-out batches
};

// Output sinks of a run; every pointer may be null.
struct RunSinks {
  FILE* progress = nullptr;             // ProgressLine (samples/s, loss, ETA)
  std::ostream* metrics_out = nullptr;  // JSON lines: one per log interval, one for eval
};

// Generates warmup + steps + eval batches (SyntheticBatches::CtrBatchAt(i), i = 0, 1, ...)
// before timing, runs the warm-up steps, times the remaining steps (Step only, as the peer times
// zero_grad..optimizer.step), then evaluates AUC on the held-out batches. Errors: the trainer's
// and the generator's.
StatusOr<SyntheticRunResult> RunSyntheticTraining(Trainer* trainer,
                                                  const SyntheticRunOptions& options,
                                                  const RunSinks& sinks);

}  // namespace ips

#endif  // IPS_WORKER_TRAINER_H_
