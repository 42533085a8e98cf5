// SeqTrainer: one training worker's step for next-item sequence models (models/model.h
// SeqModel: SASRec, GRU4Rec), in a single process, plus their evaluation and runs:
//
//   Step(batch) = keys [seq B*T, pos B*T, neg B*T] (padded steps -> the padding key 0)
//                 -> unique keys (kernels DedupKeys) -> store Pull (one item table)
//                 [-> store PrefetchPull of the next batch's keys, when given one]
//                 -> model Forward(training) -> Backward -> store Push
//                 [-> dense_grad_allreduce hook: a multi-worker job averages the dense gradients]
//                 -> dense update (worker/dense_optimizer.h, one call over all dense weights)
//                 -> store AdvanceStep
//
//   ScoreCandidates: an inference forward over histories only (read-only Lookup), then
//                    <user_vectors()[b], E[candidate]> for every candidate of row b.
//   RunSeqSyntheticTraining: the peer's synthetic SASRec throughput protocol (SeqBatchAt; all
//                    warmup + steps batches generated before the timer; a sample = one sequence).
//   RunSeqDatasetTraining: epochs over SequenceReader (the peer's sasrec_epoch: fresh negatives
//                    every epoch), each evaluated with the peer's leave-one-out ranking protocol
//                    (EvaluateSeqRanking: history encoded once per list, candidate 0 = held out).
//
// The result and option structs are the CTR trainer's (worker/trainer.h), so `ips train` reports
// both kinds of model the same way. This module owns the step's orchestration only: not the model
// math (models/), the rows (ps/, behind EmbeddingStore) nor the batches
// (worker/synthetic_batches.h, worker/data_reader.h).
//
// Determinism: for a fixed seed and thread count, losses are identical run to run (dedup, gather,
// scatter-add and the optimizers are deterministic on the CPU; so is the BLAS for a fixed thread
// count), provided the model is (GRU4Rec is; SASRec's dropout draws from its own seeded Rng).
//
// Devices: as the CTR trainer's (worker/trainer.h): the model runs where it was built
// (models::SeqModel::device(); `model.device` in the config, GRU4REC on CUDA so far); keys,
// pulls, pushes, candidate scoring and the dense optimizer stay on the host, the model copies its
// inputs in and its gradients out (pulled rows in page-locked buffers).
//
// Thread safety: a SeqTrainer is used by one thread; it parallelises inside kernels over its own
// ThreadPool of options.num_threads (the caller counts as one).
#ifndef IPS_WORKER_SEQ_TRAINER_H_
#define IPS_WORKER_SEQ_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/optimizer.h"
#include "models/model.h"
#include "ps/embedding_store.h"
#include "worker/data_reader.h"
#include "worker/dense_optimizer.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {

// A sequence batch as the trainer reads it: non-owning views, valid during the call. All arrays
// are [batch x seq_len], row-major, oldest step first, the valid steps the rightmost length[b];
// entries at padded steps are ignored (they are sent as the padding key 0). pos[b][t] is the
// item after seq[b][t], neg[b][t] a sampled negative for that step.
struct SeqBatchView {
  int batch = 0;
  int seq_len = 0;
  const uint32_t* seq = nullptr;
  const uint32_t* pos = nullptr;  // may be null for scoring
  const uint32_t* neg = nullptr;  // may be null for scoring
  const int32_t* length = nullptr;
};
SeqBatchView ViewOf(const SeqBatch& b);       // synthetic batches
SeqBatchView ViewOf(const SequenceBatch& b);  // the data reader's sequence batches

struct SeqTrainerOptions {
  kernels::OptimizerHyper dense_optimizer = kernels::OptimizerHyper::Adam(1e-3);
  int num_threads = 1;
  std::string item_table = "item";
  DenseGradHook dense_grad_allreduce;  // may be empty (single process); see worker/trainer.h
};

class SeqTrainer {
 public:
  // Takes the model (non-null; any SeqModel<float>) and looks up the item table in `store`
  // (NOT_FOUND naming the table; INVALID_ARGUMENT if its dim differs from the model's
  // embedding_dim, for a null store/model or num_threads < 1). `store` is not owned and must
  // outlive the trainer.
  static StatusOr<std::unique_ptr<SeqTrainer>> Create(
      const SeqTrainerOptions& options, ps::EmbeddingStore* store,
      std::unique_ptr<models::SeqModel<float>> model);
  SeqTrainer(const SeqTrainer&) = delete;
  SeqTrainer& operator=(const SeqTrainer&) = delete;

  // One training step on `batch` (seq, pos and neg required); returns the batch's mean loss
  // before the update. `next` (optional): the batch of the following Step, whose keys are
  // prefetched (EmbeddingStore::PrefetchPull) after this step's pull so that a remote store's
  // round trip overlaps this step's compute and push; the caller must pass that very batch to the
  // next Step. It changes no value. Errors: INVALID_ARGUMENT for a batch (or next) that does not
  // fit the model (batch size outside [1, max_batch], seq_len != max_len, null arrays, lengths
  // outside [0, seq_len]), the store's Pull/Push errors, the hook's, the model's and kernels'
  // errors, and CheckStepLoss's for a loss that is not finite (checked before the backward pass:
  // nothing is pushed or updated then). After another error the model or the store may be
  // partially updated.
  StatusOr<double> Step(const SeqBatchView& batch, const SeqBatchView* next = nullptr);

  // Ranking scores of candidates for each history: scores[b * num_candidates + c] =
  // <user vector of histories row b, E[candidates[b * num_candidates + c]]>. Inference forward
  // (no dropout), read-only lookups (unseen keys read as zeros, nothing is created or counted).
  // histories.pos/neg are not read; histories.batch may exceed max_batch (processed in chunks).
  // Errors: INVALID_ARGUMENT for null arrays, num_candidates < 1, bad lengths or seq_len, and
  // CheckScores's for a score that is not finite; the store's and the model's.
  Status ScoreCandidates(const SeqBatchView& histories, const uint32_t* candidates,
                         int num_candidates, float* scores);

  int64_t steps() const { return steps_; }
  const SeqTrainerOptions& options() const { return o_; }
  models::SeqModel<float>& model() { return *model_; }
  const kernels::Context& context() const { return ctx_; }
  DenseOptimizer& dense_optimizer() { return *dense_optimizer_; }
  ps::EmbeddingStore& store() { return *store_; }
  // Restores the step counter (checkpoint resume).
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  explicit SeqTrainer(const SeqTrainerOptions& o);
  // Checks the batch shape; with_targets also requires pos/neg.
  Status CheckBatch(const SeqBatchView& b, bool with_targets, bool allow_large) const;
  // Keys [seq, pos, neg] (or [seq] only) of rows [row0, row0 + rows), padded steps -> 0,
  // de-duplicated into unique_ / inverse_.
  Status PrepareKeys(const SeqBatchView& b, int row0, int rows, bool with_targets);
  models::SeqInputs<float> Inputs(const SeqBatchView& b, int row0, int rows) const;

  SeqTrainerOptions o_;
  ps::EmbeddingStore* store_ = nullptr;
  int item_table_ = -1;
  std::unique_ptr<ThreadPool> pool_;
  kernels::Context ctx_;
  kernels::Context model_ctx_;  // the model's passes: ctx_ on its device
  std::unique_ptr<models::SeqModel<float>> model_;
  int64_t dim_ = 0, max_len_ = 0, max_batch_ = 0;
  int64_t steps_ = 0;

  // Per-step buffers sized for 3 * max_batch * max_len keys (no allocation per step).
  std::vector<int64_t> keys_, unique_, inverse_;
  int64_t num_unique_ = 0;
  // The current step's unique_/inverse_ while the next batch's keys are de-duplicated for its
  // prefetch (swapped, not copied; sized on the first prefetch).
  std::vector<int64_t> held_unique_, held_inverse_;
  std::vector<uint8_t> dedup_workspace_;
  // Pulled rows and their gradients; page-locked when the model is on CUDA.
  kernels::HostBuffer<float> rows_, d_rows_;
  std::unique_ptr<DenseOptimizer> dense_optimizer_;
  // Scoring scratch (grows with the candidate count; evaluation only).
  std::vector<uint64_t> cand_keys_;
  std::vector<float> cand_rows_;
};

// A SeqTrainer for a job's trainer options (worker/trainer.h TrainJobFromConfig): the sequence
// model options.model (CreateSeqModel), its dense optimizer, threads, item table and dense
// gradient hook. Errors: INVALID_ARGUMENT for a model kind that is not a sequence model, and
// CreateSeqModel's and Create's.
StatusOr<std::unique_ptr<SeqTrainer>> CreateSeqTrainer(const TrainerOptions& options,
                                                       ps::EmbeddingStore* store);

// ---- Runs -------------------------------------------------------------------------------------

struct SeqSyntheticRunResult {
  int64_t steps = 0;  // timed steps
  int batch = 0;
  double seconds = 0;          // timed region only (train steps after warm-up)
  double samples_per_s = 0;    // sequences per second, as the peer counts SASRec samples
  std::vector<double> losses;  // every step, warm-up included
  double loss_first10 = 0;     // mean of the first 10 losses (warm-up included, as the peer)
  double loss_last10 = 0;
  bool stopped = false;  // a stop request ended the run early (after a checkpoint)
};

// Generates the warm-up and timed batches (`schedule`'s for worker 0, null: SeqBatchAt(i) at step
// i, as RunSyntheticTraining) before timing, runs the warm-up steps, then times the remaining
// steps (Step only). options.eval_batches
// is not used: like the peer, the sequence protocol measures throughput only (Zipf sequences have
// no sequential signal to evaluate). sinks.metrics_out gets a "train" line every log_every_steps
// steps (warm-up included) and after the last. sinks.checkpoint: periodic checkpoints, stop and
// resume as RunSyntheticTraining (the losses so far and SASRec's dropout step travel with the
// checkpoint). Errors: INVALID_ARGUMENT for bad options; the trainer's and the generator's.
StatusOr<SeqSyntheticRunResult> RunSeqSyntheticTraining(
    SeqTrainer* trainer, const SyntheticRunOptions& options, const RunSinks& sinks,
    const SyntheticSchedule* schedule = nullptr);

// The peer's leave-one-out evaluation: every EvalReader list (user x candidates, the held-out
// item first, every row carrying the user's history) is scored by encoding the history once
// (the list's first row) and ranking its candidates by ScoreCandidates; HR@k and NDCG@k are
// reported for every k of `cutoffs` from that one ranking (RankingEvaluation: result cutoffs in
// that order; k, hr, ndcg the first's). reader.max_len must be the model's max_len (0 = the
// manifest's
// max_history, which must then equal it). max_users > 0 evaluates only the first max_users lists
// (EvalReader's order). Read-only: no row is created or updated. Errors: FAILED_PRECONDITION for
// fewer than 2 candidates per list; DATA_LOSS for a batch that is not whole lists or a list whose
// rows disagree on the history; the trainer's and the metrics'. `stop` (may be null) is checked
// before every batch: once set, the evaluation is abandoned with EvaluationAbandonedError
// (common/stop_signals.h). Errors also CheckRankingCutoffs'.
StatusOr<RankingEvalResult> EvaluateSeqRanking(SeqTrainer* trainer, const Dataset& data,
                                               const ReaderOptions& reader, int64_t max_users,
                                               const std::vector<int>& cutoffs,
                                               const std::atomic<bool>* stop = nullptr);
// One cut-off k.
StatusOr<RankingEvalResult> EvaluateSeqRanking(SeqTrainer* trainer, const Dataset& data,
                                               const ReaderOptions& reader, int64_t max_users,
                                               int k, const std::atomic<bool>* stop = nullptr);

// `reader` with the trainer's model window (its max_len) where reader.max_len is 0, which a
// SequenceReader would otherwise read as the manifest's max_history.
ReaderOptions WithModelWindow(SeqTrainer* trainer, ReaderOptions reader);

// The checkpoint content of a single-process sequence trainer (see TrainerCheckpointContent).
StatusOr<CheckpointContent> SeqTrainerCheckpointContent(SeqTrainer* trainer,
                                                        ps::LocalEmbeddingStore* store,
                                                        const std::string& config_text);

// Trains options.epochs epochs over SequenceReader (reader.seed shuffles and draws the per-epoch
// negatives; reader.batch_size sequences per step) or until max_steps, evaluating after every
// eval_every_epochs-th epoch and after the last one. Samples are sequences. A progress line goes
// to sinks.progress; sinks.metrics_out gets "train" lines as RunDatasetTraining's and one "epoch"
// line per epoch ({"phase":"epoch","model":..,"epoch":..,"hr10":..,"ndcg10":..,"auc":..,"loss":..,
// "samples_per_s":..,"steps":..,"eval_users":..,"eval_s":..}: hr<k> and ndcg<k> for every k of
// RankingCutoffs(options); metrics null for epochs without evaluation). sinks.checkpoint:
// periodic checkpoints, stop and resume as RunDatasetTraining (SASRec's dropout step is saved and
// restored with the run). Errors: INVALID_ARGUMENT for bad options; FAILED_PRECONDITION for a
// dataset without training sequences; the trainer's and the metrics'.
StatusOr<DatasetRunResult> RunSeqDatasetTraining(SeqTrainer* trainer, const Dataset& data,
                                                 const DatasetRunOptions& options,
                                                 const RunSinks& sinks);

}  // namespace ips

#endif  // IPS_WORKER_SEQ_TRAINER_H_
