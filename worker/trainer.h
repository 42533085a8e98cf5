// Trainer: one training worker's step for CTR models (models/model.h CtrModel: DIN, DIEN, BST,
// the pooled baseline, MIND), in a single process:
//
//   Step(batch) = unique keys (kernels DedupKeys) -> store Pull -> model Forward -> Backward
//                 -> store Push (the table's sparse optimizer: SparseAdam semantics)
//                 -> dense optimizer update (kernels DenseUpdate, one call over all dense weights)
//
// plus evaluation (Predict: read-only Lookup, inference-mode forward, probabilities) and the
// synthetic throughput protocol of the peer (RunSyntheticTraining: all warmup + steps batches
// generated before the timer, then timed steps, then AUC on held-out synthetic batches), and
// training on a converted dataset directory (RunDatasetTraining: epochs over TrainReader's
// batches, each evaluated with the peer's leave-one-out ranking protocol by EvaluateRanking).
//
// Given the next batch as well, Step hands that batch's de-duplicated keys to the store right
// after its own Pull (EmbeddingStore::PrefetchPull), so that a parameter-server store pulls the
// next step's rows while this step computes and pushes.
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
// Devices: the model runs where it was built (models::CtrModel::device(); `model.device` in the
// config; worker/model_factory.h lists the models that run on CUDA); keys, pulls, pushes and the
// dense optimizer stay on the host, the model copies its inputs in and its gradients out (pulled
// rows in page-locked buffers).
//
// Thread safety: a Trainer is used by one thread; it parallelises inside kernels over its own
// ThreadPool of options.num_threads (the caller counts as one).
#ifndef IPS_WORKER_TRAINER_H_
#define IPS_WORKER_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/stop_signals.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/optimizer.h"
#include "models/model.h"
#include "ps/embedding_store.h"
#include "ps/local_embedding_store.h"
#include "ps/table_options.h"
#include "worker/checkpoint.h"
#include "worker/data_reader.h"
#include "worker/dense_optimizer.h"
#include "worker/metrics.h"
#include "worker/model_factory.h"
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
  // [B x T] auxiliary negatives per history position, required by models with aux_negatives()
  // (DIEN) in Step; ignored otherwise (and by Predict).
  const uint32_t* neg_item = nullptr;
  const uint32_t* neg_cat = nullptr;
};
CtrBatchView ViewOf(const CtrBatch& b);  // synthetic batches
CtrBatchView ViewOf(const Batch& b);     // the data reader's batches

// Called with the dense gradients between Backward and the dense update (a multi-worker job
// all-reduces them here); must leave the same values on every replica.
using DenseGradHook = std::function<Status(float* grads, int64_t n)>;

struct TrainerOptions {
  ModelSpec model;                     // built by CreateCtrModel unless Create is given a model
  DenseGradHook dense_grad_allreduce;  // may be empty (single process)
  kernels::OptimizerHyper dense_optimizer = kernels::OptimizerHyper::Adam(1e-3);
  int num_threads = 1;
  std::string item_table = "item";
  std::string category_table = "category";
};

class Trainer {
 public:
  // Builds options.model (INVALID_ARGUMENT for bad options) and looks up both tables in `store`
  // (NOT_FOUND naming the table; INVALID_ARGUMENT if a table's dim differs from the model's
  // embedding_dim). `store` is not owned and must outlive the trainer.
  static StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                   ps::EmbeddingStore* store);
  // As above with a model built by the caller (options.model is ignored).
  static StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                   ps::EmbeddingStore* store,
                                                   std::unique_ptr<models::CtrModel<float>> model);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One training step on `batch` (labels required); returns the batch's mean BCE loss before
  // the update. Errors: INVALID_ARGUMENT for a batch that does not fit the model (batch size
  // outside [1, max_batch], seq_len != max_len, null arrays, lengths out of range), the store's
  // Pull/Push errors, the kernels' errors. After an error the model may be partially updated.
  //
  // `next`, when not null, is the batch the NEXT Step will train on (only its keys are read, during
  // this call). Its keys are de-duplicated here, and right after this step's pulls their pull is
  // started with EmbeddingStore::PrefetchPull, so that with parameter servers the next step's
  // pull travels and is served while this step computes and pushes (in sync mode the PS serves it
  // once this step's push is applied: the same rows a pull in the next step would read). The next
  // Step finds the keys it needs already de-duplicated (compared key by key, so a different batch
  // is merely not served from the prefetch). With the in-process store the losses are those of
  // Step(batch) exactly. Pass only the batch that really comes next: a remote prefetch counts as
  // a pull on the PS (it creates rows, counts a sighting) whether or not a Step consumes it. With
  // TTL or a memory cap (TableOptions ttl_steps, max_memory_mb) a prefetched pull is a sighting
  // one step earlier (served before this step's AdvanceStep), so rows at the TTL edge may live a
  // step longer and eviction order may differ: launch/cluster_train.cc passes no `next` then.
  // Errors also INVALID_ARGUMENT for a `next` that does not fit the model (nothing is pulled), and
  // CheckStepLoss's for a loss that is not finite (then nothing is pushed or updated).
  StatusOr<double> Step(const CtrBatchView& batch, const CtrBatchView* next = nullptr);

  // Click probabilities [batch.batch] of `batch` in inference mode (Dice uses its running
  // statistics) with read-only lookups (unseen keys read as zeros, nothing is created). Labels
  // are not read. Errors as Step, and CheckScores's for a score that is not finite.
  Status Predict(const CtrBatchView& batch, float* probs);
  // As Predict, but the logits [batch.batch] (the ranking score: no sigmoid saturation ties).
  Status PredictLogits(const CtrBatchView& batch, float* logits);

  int64_t steps() const { return steps_; }
  const TrainerOptions& options() const { return o_; }
  models::CtrModel<float>& model() { return *model_; }
  DenseOptimizer& dense_optimizer() { return *dense_optimizer_; }
  ps::EmbeddingStore& store() { return *store_; }
  // Restores the step counter (checkpoint resume).
  void set_steps(int64_t steps) { steps_ = steps; }
  const kernels::Context& context() const { return ctx_; }

 private:
  explicit Trainer(const TrainerOptions& o);
  // The keys of one batch per table: [history, target (, aux negatives)] as the model indexes
  // them, and their de-duplication. Buffers sized for max_batch (no allocation per step).
  struct BatchKeys {
    int64_t n = 0;  // keys per table
    bool with_aux = false;
    bool deduped = false;                            // unique/inverse hold the dedup of keys
    std::vector<int64_t> item_keys, cat_keys;        // [B*T + B (+ B*T aux negatives)]
    std::vector<int64_t> item_unique, cat_unique;    // same capacity
    std::vector<int64_t> item_inverse, cat_inverse;  // same
    int64_t num_item_unique = 0, num_cat_unique = 0;
  };
  // Checks the batch, concatenates [history, target (, aux negatives when with_aux)] keys per
  // table into *k and de-duplicates them; with reuse_next, takes next_'s dedup instead when
  // next_ holds exactly these keys (the batch given as `next` to the previous Step).
  Status PrepareKeys(const CtrBatchView& batch, bool with_aux, BatchKeys* k, bool reuse_next);
  models::CtrInputs<float> Inputs(const CtrBatchView& batch) const;

  TrainerOptions o_;
  ps::EmbeddingStore* store_ = nullptr;
  int item_table_ = -1, cat_table_ = -1;
  std::unique_ptr<ThreadPool> pool_;
  kernels::Context ctx_;        // the host work of a step (dedup, dense optimizer)
  kernels::Context model_ctx_;  // the model's passes: ctx_ on its device (models/din.h)
  std::unique_ptr<models::CtrModel<float>> model_;
  int64_t steps_ = 0;

  // Per-step buffers sized for max_batch (no allocation per step).
  BatchKeys cur_;   // this step's (or this prediction's) keys
  BatchKeys next_;  // the keys of Step's `next`, prefetched
  std::vector<uint8_t> dedup_workspace_;
  // Pulled rows and their gradients; page-locked when the model runs on CUDA, so that the
  // model's copies to and from the device run at full speed.
  kernels::HostBuffer<float> item_rows_, cat_rows_;
  kernels::HostBuffer<float> d_item_rows_, d_cat_rows_;
  std::unique_ptr<DenseOptimizer> dense_optimizer_;
};

// The divergence check of Trainer::Step and SeqTrainer::Step on the loss of their 1-based step
// `step`, before its gradients reach the store and the dense weights: a NaN or infinite loss
// would make them NaN, so that training would go on silently and only the evaluation would fail.
// INVALID_ARGUMENT "training diverged at step N: loss is nan (lower optimizer.learning_rate or
// check the input)" (or inf) when the loss is not finite. Every driver stops on it: single
// process, synthetic, datasets, stream and the cluster workers (whose rank then ends the job).
Status CheckStepLoss(int64_t step, double loss);
// The same check on the n scores (logits) of a prediction by a model trained `steps` steps
// (Trainer::PredictLogits and Predict, SeqTrainer::ScoreCandidates): a weight update that made
// the model non-finite shows there first (a stream's prequential evaluation predicts each batch
// before training on it), not as a metric's "score is NaN". INVALID_ARGUMENT "training diverged
// by step N: row R scores nan (...)" ("the model's weights are not finite: ..." at step 0).
Status CheckScores(const float* scores, int64_t n, int64_t steps);
// The thread pool of a Trainer or SeqTrainer (`who`, for the message): train.num_threads sets
// num_threads, and a count the process's limits cannot start fails naming that field (ThreadPool::
// Create's RESOURCE_EXHAUSTED) instead of ending the process with an exception.
StatusOr<std::unique_ptr<ThreadPool>> CreateTrainingPool(const std::string& who, int num_threads);

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

// What `ips train` needs for a converted dataset (data.train_dir).
struct DatasetRunOptions {
  std::string train_dir;
  ReaderOptions reader;        // batch_size, max_len (= data.max_history), seed, shuffle
  int epochs = 1;              // train.epochs
  int64_t max_steps = 0;       // train.max_steps; 0 = no limit (stops mid-epoch when reached)
  int eval_every_epochs = 1;   // eval.every_epochs; the last epoch is always evaluated
  int64_t eval_max_users = 0;  // eval.max_users: evaluate the first N lists; 0 = all
  int top_k = 10;              // eval.top_k[0] (default 10)
  bool top_k_set = false;      // eval.top_k was given (else top_k and retrieval_cutoffs: defaults)
  // The HR@K / NDCG@K cut-offs of the sampled ranking, in eval.top_k order (RankingCutoffs reads
  // them): every eval.top_k entry, all computed from one ranking of each list; MIND's first
  // entry only (its other entries are its retrieval cut-offs, which may exceed the candidates).
  // Empty: {top_k}.
  std::vector<int> ranking_cutoffs;
  // Whether the evaluation ranks candidate lists (seqrec, ctr) or scores labelled rows (given):
  // set by FitJobToDataset; the epoch lines of epochs not evaluated name the same fields.
  bool ranked_eval = true;
  // Full-ranking retrieval cut-offs (every eval.top_k; default 20, 50, 100) for models with
  // user vectors (MIND): the CLI runs EvaluateRetrieval after the ranking evaluation.
  std::vector<int> retrieval_cutoffs = {20, 50, 100};
  int log_every_steps = 50;
};

// options.ranking_cutoffs, or {options.top_k} when it is empty: the cut-offs EvaluateRanking
// and EvaluateSeqRanking report for the run (`ips train`, its mpirun form and `ips eval`).
std::vector<int> RankingCutoffs(const DatasetRunOptions& options);

struct TrainJob {
  TrainerOptions trainer;
  std::vector<ps::TableOptions> tables;  // item, category (padding key 0, seed = train.seed)
  bool synthetic = false;                // data.synthetic is set
  SyntheticRunOptions run;               // valid when synthetic
  DatasetRunOptions dataset;             // valid when !synthetic
};

// Maps a validated config (the model through ModelSpecFromConfig). Errors: UNIMPLEMENTED for
// devices other than CPU; INVALID_ARGUMENT naming the field for data with neither `synthetic` nor
// `train_dir`, and for unsupported values (activation other than PRELU/DICE, attention_hidden not
// of size 2, a table dim different from model.embedding_dim, a missing "item" or "category"
// table). Does not touch the file system: the dataset is opened by the caller.
StatusOr<TrainJob> TrainJobFromConfig(const config::Config& config);

// Fits a dataset job to the opened dataset before Trainer::Create: the model's max_batch must
// hold one evaluation batch (whole candidate lists, at least one list of eval_candidates rows),
// and the Xavier scale uses the dataset's row counts (items + 1, categories), as the peer's.
// Every model trains on seqrec and ctr datasets (evaluated by ranking their candidate lists); the
// CTR models but MIND also on given datasets (DIEN files: evaluated by AUC over the labelled
// rows). FAILED_PRECONDITION for a given dataset with a sequence model (they train on per-user
// sequences), MIND (its retrieval evaluation needs candidate lists) or no evaluation rows, for a
// dataset without training rows, and, on a dataset of candidate lists, for an eval.top_k entry
// (or default) not below the count a user's evaluation ranks, which would make every HR@K
// (recall@K) 1 (the held-out item's rank is below that count): the eval_candidates of a list
// (the held-out item and its sampled negatives) for every entry (MIND: top_k[0], its sampled
// ranking's), the dataset's items for MIND's retrieval cut-offs.
// `ips train`, its mpirun form, `ips eval` and `ips config check` all run it.
Status FitJobToDataset(const Dataset& data, TrainJob* job);

// The training rows one epoch of `data` yields to `job`'s model, as its reader counts them:
// examples for the CTR models (TrainReader: stored rows x (1 + sampled negatives)), sequences
// for the sequence models (SequenceReader: records with >= 2 training events).
int64_t TrainingRowsPerEpoch(const Dataset& data, const TrainJob& job);

// ---- The synthetic throughput protocol --------------------------------------------------------

struct SyntheticRunResult {
  int64_t steps = 0;  // timed steps
  int batch = 0;
  double seconds = 0;  // timed region only (train steps after warm-up)
  double samples_per_s = 0;
  std::vector<double> losses;  // every step, warm-up included
  double loss_first10 = 0;     // mean of the first 10 losses (warm-up included, as the peer)
  double loss_last10 = 0;
  BinaryMetricsResult eval;  // on the held-out batches (not run, or abandoned, when stopped)
  bool stopped = false;      // a stop request ended the run early (after a checkpoint)
};

// ---- Checkpoints of a run ---------------------------------------------------------------------

// Periodic checkpoints, the stop request (SIGTERM) and resume of the Run* functions. Between two
// steps a run saves `content` plus its own blobs (step counter, reader epoch/position, loss
// accumulators, dropout step) when every_steps steps or every_seconds seconds have passed since
// the last save, when *stop is set (then it returns with stopped = true), and once after its last
// training step. Resume: the caller restores `content` (LoadCheckpoint into fresh tables, model
// and optimizer) and passes the checkpoint's blobs as `resume`; the run then continues at the
// saved step with the saved reader position, so its loss sequence equals an uninterrupted run's
// bit for bit (every batch, negative and dropout mask is a function of (seed, step/position)).
struct RunCheckpointing {
  CheckpointWriter* writer = nullptr;  // null: nothing is saved (a stop request still stops)
  int64_t every_steps = 0;             // 0: off
  double every_seconds = 0;            // 0: off
  CheckpointContent content;           // tensors, tables, config text; blobs are the run's
  const std::atomic<bool>* stop = nullptr;
  const std::map<std::string, std::string>* resume = nullptr;  // restored blobs; null = fresh
  std::function<void(const CheckpointInfo&)> on_saved;         // logging; may be empty
};

// The checkpoint content of a single-process trainer: the model's dense weights and state, the
// dense optimizer's state and every table of `store`. References stay valid while they live.
StatusOr<CheckpointContent> TrainerCheckpointContent(models::CtrModel<float>* model,
                                                     DenseOptimizer* optimizer,
                                                     ps::LocalEmbeddingStore* store,
                                                     const std::string& config_text);

// Blob packing of plain values (vectors of int64/double) for RunCheckpointing.
template <typename T>
std::string PackBlob(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
// DATA_LOSS naming the blob when it is missing or has the wrong size (n = 0: any multiple).
template <typename T>
Status UnpackBlob(const std::map<std::string, std::string>& blobs, const std::string& name,
                  size_t n, std::vector<T>* out) {
  auto it = blobs.find(name);
  if (it == blobs.end()) return DataLossError("checkpoint blob '" + name + "' is missing");
  const std::string& b = it->second;
  if (b.size() % sizeof(T) != 0 || (n > 0 && b.size() != n * sizeof(T)))
    return DataLossError("checkpoint blob '" + name + "' has " + std::to_string(b.size()) +
                         " bytes");
  out->resize(b.size() / sizeof(T));
  if (!b.empty()) std::memcpy(out->data(), b.data(), b.size());
  return Status::Ok();
}

// The between-steps trigger of RunCheckpointing (shared by the CTR and sequence runs).
class CheckpointTrigger {
 public:
  explicit CheckpointTrigger(const RunCheckpointing* c);
  bool StopRequested() const {
    return c_ != nullptr && c_->stop != nullptr && c_->stop->load(std::memory_order_relaxed);
  }
  // Saves checkpoint `step` with `blobs` when due, when forced or when a stop is requested (and
  // not already saved at `step`). Errors: the writer's.
  Status AfterStep(int64_t step, bool force,
                   const std::function<std::map<std::string, std::string>()>& blobs);

 private:
  const RunCheckpointing* c_;
  double last_seconds_ = 0;
  int64_t last_step_ = -1;
  Timer timer_;
};

// Output sinks of a run; every pointer may be null.
struct RunSinks {
  FILE* progress = nullptr;  // ProgressLine (samples/s, loss, ETA)
  // --metrics_out lines (worker/metrics_line.h): "train" every log_every_steps steps, "epoch" per
  // epoch of a dataset run, "eval" for a synthetic run's held-out batches.
  std::ostream* metrics_out = nullptr;
  const RunCheckpointing* checkpoint = nullptr;
  std::function<void(int64_t step, double loss)> on_step;  // after every training step
};

// Generates the warm-up, timed and eval batches before timing, runs the warm-up steps, times the
// remaining steps (Step only, as the peer times zero_grad..optimizer.step), then evaluates AUC on
// the held-out batches. Which batch of the stream each step trains is `schedule`'s for worker 0
// (this process) at that step, the held-out ones following from schedule->HeldOutFirst; null: the
// single-process stream (batch i at step i, SyntheticSchedule(1)). sinks.metrics_out gets a
// "train" line every log_every_steps steps (warm-up included) and after the last, and an "eval"
// line for the held-out batches. sinks.checkpoint: periodic checkpoints (recording the schedule),
// stop (returns stopped = true without evaluating; a stop during the held-out evaluation abandons
// it, after the checkpoint of the last step) and resume (from the restored step, whose batches on
// are made; the losses so far are restored, so first10/last10 equal an uninterrupted run's). A
// resumed checkpoint must continue with `schedule`: `ips train` passes the checkpoint's schedule
// continued with one worker (SyntheticSchedule::ContinuedAt); with a null one, a checkpoint
// another number of workers trained is refused (internal::RunSyntheticSteps). Errors: the
// trainer's and the generator's.
StatusOr<SyntheticRunResult> RunSyntheticTraining(Trainer* trainer,
                                                  const SyntheticRunOptions& options,
                                                  const RunSinks& sinks,
                                                  const SyntheticSchedule* schedule = nullptr);

// The protocol's held-out evaluation alone: the eval_batches batches of the stream after every
// batch `schedule` trained (schedule.HeldOutFirst(warmup + steps) on), Predict, AUC/GAUC/logloss
// (`ips eval` of a synthetic checkpoint, trained in one process or by W workers).
StatusOr<BinaryMetricsResult> EvaluateSyntheticHeldOut(Trainer* trainer,
                                                       const SyntheticRunOptions& options,
                                                       const SyntheticSchedule& schedule);

// ---- Training on a converted dataset ----------------------------------------------------------

// HR@k and NDCG@k of one cut-off of a ranking evaluation.
struct RankingCutoff {
  int k = 10;
  double hr = 0, ndcg = 0;  // NaN when no users (and for a given dataset)
};

struct RankingEvalResult {
  // false for a given dataset: no candidate lists, so no HR/NDCG (NaN); `users` counts rows and
  // `auc` is the AUC over all labelled rows.
  bool ranked = true;
  int64_t users = 0;  // evaluated candidate lists (given: labelled rows)
  // The first cut-off's figures (cutoffs[0]), for the callers that report one.
  int k = 10;
  double hr = 0, ndcg = 0, auc = 0;  // HR@k, NDCG@k, sampled AUC (NaN when no users)
  // Every cut-off evaluated, in the order asked (eval.top_k's); cutoffs[0] is {k, hr, ndcg}. A
  // result built field by field may hold none: RankingCutoffsOf then gives {k, hr, ndcg}.
  std::vector<RankingCutoff> cutoffs;
  // Over every (user, candidate) row as a CTR example (label 1 = the held-out item; given: the
  // row's label): user-weighted GAUC and logloss of sigmoid(score).
  double gauc = 0, logloss = 0;
  double seconds = 0;
};

// The cut-offs of `eval`: eval.cutoffs, or {k, hr, ndcg} of a result that holds none (a result
// built field by field).
std::vector<RankingCutoff> RankingCutoffsOf(const RankingEvalResult& eval);

// Checks the cut-offs of a ranking evaluation (`fn`, for the message): at least one, each >= 1,
// none repeated (it would be reported twice). INVALID_ARGUMENT otherwise.
Status CheckRankingCutoffs(const char* fn, const std::vector<int>& cutoffs);

// Accumulates scored candidate lists (candidate 0 of each list = the held-out item) into a
// RankingEvalResult: HR@k and NDCG@k of every cut-off k, from one RankingMetrics of the largest
// (each list is ranked once), and sampled AUC, plus GAUC and logloss of the rows as CTR examples
// (BinaryMetrics on sigmoid(score)). Shared by the CTR and sequence trainers.
class RankingEvaluation {
 public:
  explicit RankingEvaluation(int k) : RankingEvaluation(std::vector<int>{k}) {}
  // cutoffs: as CheckRankingCutoffs accepts them (a non-positive entry counts as 1).
  explicit RankingEvaluation(std::vector<int> cutoffs);
  // scores [lists x cands]; users [lists * cands] may be null. Errors: the metrics'.
  Status Add(const float* scores, const uint64_t* users, int64_t lists, int cands);
  RankingEvalResult Result(double seconds) const;

 private:
  std::vector<int> cutoffs_;
  RankingMetrics ranking_;
  BinaryMetrics ctr_;
  std::vector<float> probs_, labels_;
};

// The peer's leave-one-out evaluation: every EvalReader list (user x candidates, the held-out
// item first) is scored with PredictLogits (read-only: no store rows are created, nothing is
// updated) and ranked once; HR@k and NDCG@k are reported for every k of `cutoffs` (result
// cutoffs, in that order; k, hr, ndcg: the first). max_users > 0 evaluates only the first
// max_users lists (EvalReader's order: raw user id). A given dataset (no candidate lists) is
// evaluated as CTR examples instead: AUC, GAUC and logloss over its labelled evaluation rows
// (max_users caps the rows; ranked = false; HR and NDCG NaN). `stop` (may be null) is checked
// before every batch: once set, the evaluation is abandoned with EvaluationAbandonedError
// (common/stop_signals.h). Errors: CheckRankingCutoffs', the trainer's and the metrics'.
StatusOr<RankingEvalResult> EvaluateRanking(Trainer* trainer, const Dataset& data,
                                            const ReaderOptions& reader, int64_t max_users,
                                            const std::vector<int>& cutoffs,
                                            const std::atomic<bool>* stop = nullptr);
// One cut-off k.
StatusOr<RankingEvalResult> EvaluateRanking(Trainer* trainer, const Dataset& data,
                                            const ReaderOptions& reader, int64_t max_users, int k,
                                            const std::atomic<bool>* stop = nullptr);

struct EpochResult {
  int epoch = 0;             // 1-based
  int64_t steps = 0;         // steps in this epoch
  double loss = 0;           // mean step loss of the epoch
  double samples_per_s = 0;  // training samples / training seconds of the epoch
  bool evaluated = false;
  RankingEvalResult eval;
};

struct DatasetRunResult {
  int epochs = 0;            // epochs started (the last may be partial when max_steps stopped it)
  int64_t steps = 0;         // the run's, a resumed checkpoint's included
  int64_t steps_run = 0;     // of them, trained by this call (not resumed)
  int64_t samples = 0;       // the run's, a resumed checkpoint's included
  double train_seconds = 0;  // this call's reading + steps; evaluation excluded
  double samples_per_s = 0;  // of the samples trained by this call
  double loss = 0;           // mean step loss of the last epoch
  RankingEvalResult eval;    // of the last evaluation (always after the last epoch)
  std::vector<EpochResult> per_epoch;
  // A stop request ended the run early, after a checkpoint: between two steps, or during an
  // evaluation (abandoned; the checkpoint is of the step before it). No eval then.
  bool stopped = false;
};

// Trains options.epochs epochs (TrainReader: epoch-fresh negatives, per-epoch shuffle with
// reader.seed) or until max_steps, evaluating after every eval_every_epochs-th epoch and after
// the last one. sinks.metrics_out gets a "train" line whenever the trainer's step count is a
// multiple of log_every_steps and after the run's last step ({"phase":"train","model":..,
// "step":..,"epoch":..,"loss":..,"step_loss":..,...}), and an "epoch" line per epoch
// ({"phase":"epoch","model":..,"epoch":..,"hr10":..,"ndcg10":..,"auc":..,"loss":..,
// "samples_per_s":..,...}: hr<k> and ndcg<k> for every k of RankingCutoffs(options); metrics null
// for epochs without evaluation). sinks.checkpoint: periodic
// checkpoints (plus one after the last step, before the last evaluation: `ips eval` reproduces that
// evaluation), stop and resume at the saved epoch and reader position (per_epoch then holds the
// epochs run after the resume). A stop requested during an evaluation abandons it (checked between
// batches) and the run ends as a stop after the epoch's last step: a checkpoint of that step (if
// not saved already) and stopped = true; resumed, the run repeats that evaluation (it only reads
// the model) and goes on. Errors: INVALID_ARGUMENT for bad options, DATA_LOSS for resume blobs that
// do not fit, the trainer's and the metrics'.
StatusOr<DatasetRunResult> RunDatasetTraining(Trainer* trainer, const Dataset& data,
                                              const DatasetRunOptions& options,
                                              const RunSinks& sinks);

// DIEN's auxiliary negatives of a dataset batch (models with aux_negatives()): one item per
// history position, uniform over the dataset's items 1..manifest().items as the peer's seqrec
// protocol, with the dataset's category of that item. RunDatasetTraining draws the batch trained
// at trainer step `step` from AuxNegativesSeed(reader seed, step), so a run is reproducible (the
// distributed driver, launch/cluster_train.cc, draws the same way).
struct AuxNegatives {
  std::vector<uint32_t> item, cat;  // [size x max_len] of the batch drawn last
};
uint64_t AuxNegativesSeed(uint64_t reader_seed, int64_t step);
// ViewOf(batch) with neg_item/neg_cat drawn from `seed` into *negatives (the view reads them: keep
// *negatives unchanged while it is used). The dataset must have items (callers check it once).
CtrBatchView ViewWithAuxNegatives(const Batch& batch, const Dataset& data, uint64_t seed,
                                  AuxNegatives* negatives);

}  // namespace ips

#endif  // IPS_WORKER_TRAINER_H_
