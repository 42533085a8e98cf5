#include "worker/seq_trainer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/timer.h"
#include "kernels/embedding.h"
#include "worker/internal/run_steps.h"
#include "worker/model_factory.h"

namespace ips {

SeqBatchView ViewOf(const SeqBatch& b) {
  SeqBatchView v;
  v.batch = b.batch;
  v.seq_len = b.seq_len;
  v.seq = b.seq.data();
  v.pos = b.pos.empty() ? nullptr : b.pos.data();
  v.neg = b.neg.empty() ? nullptr : b.neg.data();
  v.length = b.length.data();
  return v;
}

SeqBatchView ViewOf(const SequenceBatch& b) {
  SeqBatchView v;
  v.batch = b.size;
  v.seq_len = b.max_len;
  v.seq = b.seq.data();
  v.pos = b.pos.empty() ? nullptr : b.pos.data();
  v.neg = b.neg.empty() ? nullptr : b.neg.data();
  v.length = b.length.data();
  return v;
}

namespace {

// Keys are ids >= 0 stored as int64 for the dedup kernel; the store takes the same bits as
// uint64 (signed/unsigned variants of one type may alias).
const uint64_t* AsU64(const std::vector<int64_t>& v) {
  return reinterpret_cast<const uint64_t*>(v.data());
}

using internal::Mean;

}  // namespace

// ---- SeqTrainer -------------------------------------------------------------------------------

SeqTrainer::SeqTrainer(const SeqTrainerOptions& o) : o_(o) {}

StatusOr<std::unique_ptr<SeqTrainer>> SeqTrainer::Create(
    const SeqTrainerOptions& options, ps::EmbeddingStore* store,
    std::unique_ptr<models::SeqModel<float>> model) {
  if (store == nullptr) return InvalidArgumentError("SeqTrainer::Create: null store");
  if (model == nullptr) return InvalidArgumentError("SeqTrainer::Create: null model");
  if (options.num_threads < 1)
    return InvalidArgumentError("SeqTrainerOptions.num_threads must be >= 1 (got " +
                                std::to_string(options.num_threads) + ")");
  std::unique_ptr<SeqTrainer> t(new SeqTrainer(options));
  t->store_ = store;
  t->dim_ = model->embedding_dim();
  t->max_len_ = model->max_len();
  t->max_batch_ = model->max_batch();
  auto found = store->FindTable(options.item_table);
  if (!found.ok())
    return found.status().WithContext("SeqTrainer: table '" + options.item_table + "'");
  t->item_table_ = *found;
  IPS_ASSIGN_OR_RETURN(const int64_t dim, store->TableDim(t->item_table_));
  if (dim != t->dim_)
    return InvalidArgumentError("SeqTrainer: table '" + options.item_table + "' has dim " +
                                std::to_string(dim) + " but the " + model->name() +
                                " model's embedding_dim is " + std::to_string(t->dim_));
  IPS_ASSIGN_OR_RETURN(t->pool_, CreateTrainingPool("SeqTrainer", options.num_threads));
  t->ctx_.device = kernels::Device::kCpu;
  t->ctx_.pool = t->pool_.get();
  t->model_ctx_ = t->ctx_;
  t->model_ctx_.device = model->device();
  t->model_ = std::move(model);

  const auto n = static_cast<size_t>(3 * t->max_batch_ * t->max_len_);
  for (auto* v : {&t->keys_, &t->unique_, &t->inverse_}) v->resize(n);
  IPS_ASSIGN_OR_RETURN(const size_t ws,
                       kernels::DedupWorkspaceBytes(t->ctx_, static_cast<int64_t>(n)));
  t->dedup_workspace_.resize(ws);
  const bool pinned = t->model_ctx_.device != kernels::Device::kCpu;
  for (auto* v : {&t->rows_, &t->d_rows_}) {
    IPS_ASSIGN_OR_RETURN(
        *v, kernels::HostBuffer<float>::Create(static_cast<int64_t>(n) * t->dim_, pinned));
  }
  t->dense_optimizer_ =
      std::make_unique<DenseOptimizer>(options.dense_optimizer, t->model_->params().size());
  return t;
}

Status SeqTrainer::CheckBatch(const SeqBatchView& b, bool with_targets, bool allow_large) const {
  if (b.batch < 1 || (!allow_large && b.batch > max_batch_))
    return InvalidArgumentError("SeqTrainer: batch size " + std::to_string(b.batch) +
                                " outside [1, " + std::to_string(max_batch_) + "]");
  if (b.seq_len != max_len_)
    return InvalidArgumentError("SeqTrainer: seq_len " + std::to_string(b.seq_len) +
                                " != the model's max_len " + std::to_string(max_len_));
  if (b.seq == nullptr || b.length == nullptr)
    return InvalidArgumentError("SeqTrainer: null seq or length array");
  if (with_targets && (b.pos == nullptr || b.neg == nullptr))
    return InvalidArgumentError("SeqTrainer::Step: batch without pos or neg items");
  for (int r = 0; r < b.batch; ++r)
    if (b.length[r] < 0 || b.length[r] > b.seq_len)
      return InvalidArgumentError("SeqTrainer: length[" + std::to_string(r) +
                                  "] = " + std::to_string(b.length[r]) + " outside [0, " +
                                  std::to_string(b.seq_len) + "]");
  return Status::Ok();
}

Status SeqTrainer::PrepareKeys(const SeqBatchView& b, int row0, int rows, bool with_targets) {
  const int64_t L = max_len_, BL = static_cast<int64_t>(rows) * L;
  const int parts = with_targets ? 3 : 1;
  const uint32_t* src[3] = {b.seq, b.pos, b.neg};
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = row0 + r, first = L - b.length[row];
    for (int p = 0; p < parts; ++p) {
      int64_t* dst = keys_.data() + p * BL + r * L;
      const uint32_t* in = src[p] + row * L;
      for (int64_t t = 0; t < L; ++t) dst[t] = t < first ? 0 : static_cast<int64_t>(in[t]);
    }
  }
  kernels::DedupArgs a;
  a.n = parts * BL;
  a.workspace = dedup_workspace_.data();
  a.workspace_bytes = dedup_workspace_.size();
  a.keys = keys_.data();
  a.unique_keys = unique_.data();
  a.inverse = inverse_.data();
  a.num_unique = &num_unique_;
  return kernels::DedupKeys(ctx_, a);
}

models::SeqInputs<float> SeqTrainer::Inputs(const SeqBatchView& b, int row0, int rows) const {
  models::SeqInputs<float> in;
  in.batch = rows;
  in.lengths = b.length + row0;
  in.item_index = inverse_.data();
  in.item_rows = rows_.data();
  in.num_item_rows = num_unique_;
  return in;
}

StatusOr<double> SeqTrainer::Step(const SeqBatchView& batch, const SeqBatchView* next) {
  IPS_RETURN_IF_ERROR(CheckBatch(batch, /*with_targets=*/true, /*allow_large=*/false));
  if (next != nullptr) {
    // Checked before anything is pulled, so a bad `next` leaves the store untouched.
    Status s = CheckBatch(*next, /*with_targets=*/true, /*allow_large=*/false);
    if (!s.ok()) return s.WithContext("SeqTrainer::Step: next batch");
  }
  IPS_RETURN_IF_ERROR(PrepareKeys(batch, 0, batch.batch, /*with_targets=*/true));
  IPS_RETURN_IF_ERROR(store_->Pull(item_table_, AsU64(unique_), num_unique_, dim_, rows_.data()));
  if (next != nullptr) {
    // The next step's keys in the order its PrepareKeys will produce them (the dedup is
    // deterministic), so its Pull consumes the prefetch; this step's keys are held meanwhile.
    held_unique_.resize(unique_.size());
    held_inverse_.resize(inverse_.size());
    std::swap(unique_, held_unique_);
    std::swap(inverse_, held_inverse_);
    const int64_t held_num_unique = num_unique_;
    Status s = PrepareKeys(*next, 0, next->batch, /*with_targets=*/true);
    if (s.ok()) s = store_->PrefetchPull(item_table_, AsU64(unique_), num_unique_);
    std::swap(unique_, held_unique_);
    std::swap(inverse_, held_inverse_);
    num_unique_ = held_num_unique;
    IPS_RETURN_IF_ERROR(s);
  }
  const models::SeqInputs<float> in = Inputs(batch, 0, batch.batch);
  float loss = 0;
  IPS_RETURN_IF_ERROR(model_->Forward(model_ctx_, in, /*training=*/true, &loss));
  IPS_RETURN_IF_ERROR(CheckStepLoss(steps_ + 1, loss));
  IPS_RETURN_IF_ERROR(model_->Backward(model_ctx_, in, d_rows_.data()));
  IPS_RETURN_IF_ERROR(store_->Push(item_table_, AsU64(unique_), num_unique_, dim_, d_rows_.data()));
  ++steps_;
  auto& params = model_->params();
  if (o_.dense_grad_allreduce)
    IPS_RETURN_IF_ERROR(o_.dense_grad_allreduce(params.grads(), params.size()));
  IPS_RETURN_IF_ERROR(dense_optimizer_->Apply(ctx_, steps_, params.values(), params.grads()));
  IPS_RETURN_IF_ERROR(store_->AdvanceStep(steps_));
  return static_cast<double>(loss);
}

Status SeqTrainer::ScoreCandidates(const SeqBatchView& histories, const uint32_t* candidates,
                                   int num_candidates, float* scores) {
  if (candidates == nullptr || scores == nullptr)
    return InvalidArgumentError("SeqTrainer::ScoreCandidates: null candidates or scores");
  if (num_candidates < 1)
    return InvalidArgumentError("SeqTrainer::ScoreCandidates: num_candidates " +
                                std::to_string(num_candidates) + " < 1");
  IPS_RETURN_IF_ERROR(CheckBatch(histories, /*with_targets=*/false, /*allow_large=*/true));
  const int64_t C = num_candidates, D = dim_;
  for (int row0 = 0; row0 < histories.batch; row0 += static_cast<int>(max_batch_)) {
    const int rows = static_cast<int>(std::min<int64_t>(max_batch_, histories.batch - row0));
    IPS_RETURN_IF_ERROR(PrepareKeys(histories, row0, rows, /*with_targets=*/false));
    IPS_RETURN_IF_ERROR(store_->Lookup(item_table_, AsU64(unique_), num_unique_, D, rows_.data()));
    IPS_RETURN_IF_ERROR(
        model_->Forward(model_ctx_, Inputs(histories, row0, rows), /*training=*/false, nullptr));
    const float* users = model_->user_vectors();

    const size_t n = static_cast<size_t>(rows * C);
    cand_keys_.resize(n);
    cand_rows_.resize(n * static_cast<size_t>(D));
    const uint32_t* cands = candidates + static_cast<int64_t>(row0) * C;
    for (size_t i = 0; i < n; ++i) cand_keys_[i] = cands[i];
    IPS_RETURN_IF_ERROR(store_->Lookup(item_table_, cand_keys_.data(), static_cast<int64_t>(n), D,
                                       cand_rows_.data()));
    float* out = scores + static_cast<int64_t>(row0) * C;
    for (int64_t r = 0; r < rows; ++r) {
      const float* u = users + r * D;
      for (int64_t c = 0; c < C; ++c) {
        const float* e = cand_rows_.data() + (r * C + c) * D;
        float s = 0;
        for (int64_t k = 0; k < D; ++k) s += u[k] * e[k];
        out[r * C + c] = s;
      }
    }
  }
  return CheckScores(scores, static_cast<int64_t>(histories.batch) * C, steps_);
}

StatusOr<std::unique_ptr<SeqTrainer>> CreateSeqTrainer(const TrainerOptions& options,
                                                       ps::EmbeddingStore* store) {
  if (!IsSequenceModel(options.model.kind))
    return InvalidArgumentError("CreateSeqTrainer: '" +
                                std::string(ModelKindName(options.model.kind)) +
                                "' is not a sequence model");
  IPS_ASSIGN_OR_RETURN(auto model, CreateSeqModel(options.model));
  SeqTrainerOptions o;
  o.dense_optimizer = options.dense_optimizer;
  o.num_threads = options.num_threads;
  o.item_table = options.item_table;
  o.dense_grad_allreduce = options.dense_grad_allreduce;
  return SeqTrainer::Create(o, store, std::move(model));
}

// ---- Synthetic protocol -----------------------------------------------------------------------

StatusOr<SeqSyntheticRunResult> RunSeqSyntheticTraining(SeqTrainer* trainer,
                                                        const SyntheticRunOptions& options,
                                                        const RunSinks& sinks,
                                                        const SyntheticSchedule* schedule) {
  if (trainer == nullptr) return InvalidArgumentError("RunSeqSyntheticTraining: null trainer");
  if (options.steps < 1 || options.warmup_steps < 0 || options.batch < 1 ||
      options.log_every_steps < 1)
    return InvalidArgumentError(
        "RunSeqSyntheticTraining: steps, batch and log_every_steps must be >= 1, warmup_steps "
        ">= 0");
  // Like the peer, every batch exists before the timer starts (from the resumed step on).
  const int64_t train_batches = options.warmup_steps + options.steps;
  const SyntheticSchedule one_worker(1);
  IPS_ASSIGN_OR_RETURN(auto gen, SyntheticBatches::Create(options.data));
  std::vector<SeqBatch> batches;
  IPS_RETURN_IF_ERROR(gen->MakeSeqBatches(
      internal::SyntheticFirstStep(sinks, train_batches), train_batches, options.batch,
      internal::SyntheticSlotIndex(schedule != nullptr ? *schedule : one_worker, train_batches),
      "warm-up and timed", &batches));

  SeqSyntheticRunResult r;
  IPS_RETURN_IF_ERROR(
      internal::RunSyntheticSteps(trainer, batches, options, sinks, "sequences", &r, schedule));
  return r;
}

// ---- Converted datasets -----------------------------------------------------------------------

ReaderOptions WithModelWindow(SeqTrainer* trainer, ReaderOptions reader) {
  if (reader.max_len == 0) reader.max_len = static_cast<int>(trainer->model().max_len());
  return reader;
}

StatusOr<RankingEvalResult> EvaluateSeqRanking(SeqTrainer* trainer, const Dataset& data,
                                               const ReaderOptions& reader, int64_t max_users,
                                               int k, const std::atomic<bool>* stop) {
  return EvaluateSeqRanking(trainer, data, reader, max_users, std::vector<int>{k}, stop);
}

StatusOr<RankingEvalResult> EvaluateSeqRanking(SeqTrainer* trainer, const Dataset& data,
                                               const ReaderOptions& reader, int64_t max_users,
                                               const std::vector<int>& cutoffs,
                                               const std::atomic<bool>* stop) {
  if (trainer == nullptr) return InvalidArgumentError("EvaluateSeqRanking: null trainer");
  IPS_RETURN_IF_ERROR(CheckRankingCutoffs("EvaluateSeqRanking", cutoffs));
  Timer timer;
  ReaderOptions ro = WithModelWindow(trainer, reader);
  ro.shuffle = false;
  // A sequence model encodes one history per list (not one per row, as a CTR model scores), so
  // read max_batch whole lists at a time: one inference forward per reader batch.
  const int64_t list_rows = static_cast<int64_t>(data.manifest().eval_candidates);
  if (list_rows > 0 && list_rows <= (int64_t{1} << 20))
    ro.batch_size = static_cast<int>(std::max<int64_t>(
        ro.batch_size,
        std::min<int64_t>(trainer->model().max_batch() * list_rows, int64_t{1} << 24)));
  EvalReader eval(&data, {}, ro);
  const int cands = eval.candidates_per_list();
  if (cands < 2)
    return FailedPreconditionError("EvaluateSeqRanking: the dataset has " + std::to_string(cands) +
                                   " candidates per evaluation list (need >= 2)");
  int64_t remaining = max_users > 0 ? std::min(max_users, eval.num_lists()) : eval.num_lists();
  RankingEvaluation metrics(cutoffs);
  Batch batch;
  std::vector<uint32_t> hist;
  std::vector<int32_t> lengths;
  std::vector<float> scores;
  while (remaining > 0 && eval.Next(&batch)) {
    if (StopSet(stop)) return EvaluationAbandonedError();
    if (batch.size % cands != 0)
      return DataLossError("EvaluateSeqRanking: evaluation batch of " + std::to_string(batch.size) +
                           " rows is not whole lists of " + std::to_string(cands));
    const int64_t lists = std::min<int64_t>(batch.size / cands, remaining);
    const int64_t L = batch.max_len;
    // One history per list: its first row's (every row of a list carries the same one).
    hist.resize(static_cast<size_t>(lists * L));
    lengths.resize(static_cast<size_t>(lists));
    for (int64_t j = 0; j < lists; ++j) {
      const int64_t row0 = j * cands;
      for (int64_t c = 1; c < cands; ++c)
        if (batch.length[row0 + c] != batch.length[row0] ||
            std::memcmp(&batch.hist_item[(row0 + c) * L], &batch.hist_item[row0 * L],
                        sizeof(uint32_t) * L) != 0)
          return DataLossError("EvaluateSeqRanking: evaluation list of user " +
                               std::to_string(batch.user[row0]) +
                               " has rows with different histories");
      std::memcpy(&hist[j * L], &batch.hist_item[row0 * L], sizeof(uint32_t) * L);
      lengths[j] = batch.length[row0];
    }
    SeqBatchView v;
    v.batch = static_cast<int>(lists);
    v.seq_len = static_cast<int>(L);
    v.seq = hist.data();
    v.length = lengths.data();
    scores.resize(static_cast<size_t>(lists * cands));
    // batch.item is [lists x cands] already, candidate 0 the held-out item.
    IPS_RETURN_IF_ERROR(trainer->ScoreCandidates(v, batch.item.data(), cands, scores.data()));
    IPS_RETURN_IF_ERROR(
        metrics.Add(scores.data(), batch.user.empty() ? nullptr : batch.user.data(), lists, cands));
    remaining -= lists;
  }
  return metrics.Result(timer.Seconds());
}

StatusOr<CheckpointContent> SeqTrainerCheckpointContent(SeqTrainer* trainer,
                                                        ps::LocalEmbeddingStore* store,
                                                        const std::string& config_text) {
  if (trainer == nullptr || store == nullptr)
    return InvalidArgumentError("SeqTrainerCheckpointContent: null trainer or store");
  CheckpointContent c;
  AddModelState(&trainer->model(), &trainer->dense_optimizer(), &c);
  for (int t = 0; t < store->num_tables(); ++t) {
    IPS_ASSIGN_OR_RETURN(ps::DynamicTable * table, store->table(t));
    c.tables.push_back(table);
  }
  c.config_text = config_text;
  return c;
}

namespace {

// RunDatasetEpochs' source for the sequence trainer: a SequenceReader's batches, ranked by
// EvaluateSeqRanking.
class SeqEpochSource {
 public:
  SeqEpochSource(SeqTrainer* trainer, const Dataset& data, const DatasetRunOptions& options,
                 const ReaderOptions& reader)
      : trainer_(trainer),
        data_(data),
        options_(options),
        reader_options_(reader),
        reader_(&data, {}, reader) {}

  int64_t per_epoch() const { return reader_.sequences_per_epoch(); }
  void StartEpoch(int epoch) { reader_.StartEpoch(epoch); }
  Status SkipTo(int epoch, int64_t position) { return reader_.SkipTo(epoch, position); }
  // SequenceReader has no position accessor: every batch advances it by its rows, so the
  // position in the epoch is the epoch's sequence count.
  int64_t Position(int64_t epoch_samples) const { return epoch_samples; }
  StatusOr<bool> Step(double* loss, int64_t* samples) {
    if (!reader_.Next(&batch_)) return false;
    IPS_ASSIGN_OR_RETURN(*loss, trainer_->Step(ViewOf(batch_)));
    *samples = batch_.size;
    return true;
  }
  StatusOr<RankingEvalResult> Evaluate(const std::atomic<bool>* stop) {
    return EvaluateSeqRanking(trainer_, data_, reader_options_, options_.eval_max_users,
                              RankingCutoffs(options_), stop);
  }

 private:
  SeqTrainer* trainer_;
  const Dataset& data_;
  const DatasetRunOptions& options_;
  const ReaderOptions reader_options_;
  SequenceReader reader_;
  SequenceBatch batch_;
};

}  // namespace

StatusOr<DatasetRunResult> RunSeqDatasetTraining(SeqTrainer* trainer, const Dataset& data,
                                                 const DatasetRunOptions& options,
                                                 const RunSinks& sinks) {
  if (trainer == nullptr) return InvalidArgumentError("RunSeqDatasetTraining: null trainer");
  IPS_RETURN_IF_ERROR(internal::CheckDatasetRunOptions("RunSeqDatasetTraining", options));
  SeqEpochSource source(trainer, data, options, WithModelWindow(trainer, options.reader));
  if (source.per_epoch() == 0)
    return FailedPreconditionError(
        "RunSeqDatasetTraining: the dataset has no sequence with >= 2 training events");
  return internal::RunDatasetEpochs(trainer, &source, options, sinks, "sequences");
}

}  // namespace ips
