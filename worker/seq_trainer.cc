#include "worker/seq_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <utility>

#include "common/progress.h"
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

using internal::JsonNumber;
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
  t->pool_ = std::make_unique<ThreadPool>(options.num_threads);
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
  return Status::Ok();
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
                                                        const RunSinks& sinks) {
  if (trainer == nullptr) return InvalidArgumentError("RunSeqSyntheticTraining: null trainer");
  if (options.steps < 1 || options.warmup_steps < 0 || options.batch < 1 ||
      options.log_every_steps < 1)
    return InvalidArgumentError(
        "RunSeqSyntheticTraining: steps, batch and log_every_steps must be >= 1, warmup_steps "
        ">= 0");
  IPS_ASSIGN_OR_RETURN(auto gen, SyntheticBatches::Create(options.data));
  // Like the peer, every batch exists before the timer starts.
  const int train_batches = options.warmup_steps + options.steps;
  std::vector<SeqBatch> batches(static_cast<size_t>(train_batches));
  for (size_t i = 0; i < batches.size(); ++i)
    IPS_RETURN_IF_ERROR(gen->SeqBatchAt(i, options.batch, &batches[i]));

  SeqSyntheticRunResult r;
  IPS_RETURN_IF_ERROR(internal::RunSyntheticSteps(trainer, batches, options, sinks, "sequences",
                                                  /*json_model=*/true, &r));
  if (r.stopped) return r;
  if (sinks.metrics_out != nullptr) sinks.metrics_out->flush();
  return r;
}

// ---- Converted datasets -----------------------------------------------------------------------

StatusOr<RankingEvalResult> EvaluateSeqRanking(SeqTrainer* trainer, const Dataset& data,
                                               const ReaderOptions& reader, int64_t max_users,
                                               int k) {
  if (trainer == nullptr) return InvalidArgumentError("EvaluateSeqRanking: null trainer");
  Timer timer;
  ReaderOptions ro = reader;
  ro.shuffle = false;
  if (ro.max_len == 0) ro.max_len = static_cast<int>(trainer->model().max_len());
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
  RankingEvaluation metrics(k);
  Batch batch;
  std::vector<uint32_t> hist;
  std::vector<int32_t> lengths;
  std::vector<float> scores;
  while (remaining > 0 && eval.Next(&batch)) {
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

StatusOr<DatasetRunResult> RunSeqDatasetTraining(SeqTrainer* trainer, const Dataset& data,
                                                 const DatasetRunOptions& options,
                                                 const RunSinks& sinks) {
  if (trainer == nullptr) return InvalidArgumentError("RunSeqDatasetTraining: null trainer");
  if (options.epochs < 1 || options.eval_every_epochs < 1 || options.max_steps < 0 ||
      options.top_k < 1 || options.reader.batch_size < 1 || options.log_every_steps < 1)
    return InvalidArgumentError(
        "RunSeqDatasetTraining: epochs, eval_every_epochs, top_k, reader.batch_size and "
        "log_every_steps must be >= 1, max_steps >= 0");
  ReaderOptions ro = options.reader;
  if (ro.max_len == 0) ro.max_len = static_cast<int>(trainer->model().max_len());
  SequenceReader reader(&data, {}, ro);
  const int64_t per_epoch = reader.sequences_per_epoch();
  if (per_epoch == 0)
    return FailedPreconditionError(
        "RunSeqDatasetTraining: the dataset has no sequence with >= 2 training events");
  int64_t total = per_epoch * options.epochs;
  if (options.max_steps > 0) total = std::min<int64_t>(total, options.max_steps * ro.batch_size);
  std::unique_ptr<ProgressLine> progress;
  if (sinks.progress != nullptr)
    progress = std::make_unique<ProgressLine>("train", total, "sequences", sinks.progress);

  DatasetRunResult r;
  SequenceBatch batch;
  const RunCheckpointing* ckpt = sinks.checkpoint;
  std::vector<int64_t> resume_state;
  std::vector<double> resume_loss;
  if (ckpt != nullptr && ckpt->resume != nullptr) {
    IPS_RETURN_IF_ERROR(UnpackBlob(*ckpt->resume, "run/dataset", 7, &resume_state));
    IPS_RETURN_IF_ERROR(UnpackBlob(*ckpt->resume, "run/loss_sum", 1, &resume_loss));
    if (resume_state[0] < 0 || resume_state[0] >= options.epochs)
      return DataLossError("checkpoint epoch " + std::to_string(resume_state[0] + 1) +
                           " is beyond train.epochs " + std::to_string(options.epochs));
    trainer->set_steps(resume_state[6]);
    IPS_RETURN_IF_ERROR(internal::RestoreDropoutStep(*ckpt->resume, &trainer->model()));
    r.steps = resume_state[2];
    r.samples = resume_state[3];
  }
  CheckpointTrigger trigger(ckpt);
  Timer timer;
  bool stop = false;
  const int first_epoch = resume_state.empty() ? 0 : static_cast<int>(resume_state[0]);
  for (int e = first_epoch; e < options.epochs && !stop; ++e) {
    EpochResult er;
    er.epoch = e + 1;
    double loss_sum = 0, window_sum = 0;
    int64_t epoch_samples = 0, window_steps = 0;
    if (e == first_epoch && !resume_state.empty()) {
      IPS_RETURN_IF_ERROR(reader.SkipTo(e, resume_state[1]).WithContext("checkpoint reader"));
      er.steps = resume_state[4];
      epoch_samples = resume_state[5];
      loss_sum = resume_loss[0];
    } else {
      reader.StartEpoch(e);
    }
    auto blobs = [&] {
      std::map<std::string, std::string> b;
      // SequenceReader has no position accessor: every batch advances it by its rows, so the
      // position in the epoch is the epoch's sequence count.
      b["run/dataset"] = PackBlob(std::vector<int64_t>{e, epoch_samples, r.steps, r.samples,
                                                       er.steps, epoch_samples, trainer->steps()});
      b["run/loss_sum"] = PackBlob(std::vector<double>{loss_sum});
      internal::SaveDropoutStep(trainer->model(), &b);
      return b;
    };
    timer.Reset();
    while (true) {
      if (options.max_steps > 0 && r.steps >= options.max_steps) {
        stop = true;
        break;
      }
      if (!reader.Next(&batch)) break;
      auto loss = trainer->Step(ViewOf(batch));
      if (!loss.ok()) return loss.status().WithContext("epoch " + std::to_string(e + 1));
      loss_sum += *loss;
      window_sum += *loss;
      ++window_steps;
      ++er.steps;
      ++r.steps;
      epoch_samples += batch.size;
      r.samples += batch.size;
      if (progress && (window_steps >= options.log_every_steps || er.steps == 1)) {
        std::ostringstream extra;
        extra << "epoch " << (e + 1) << "/" << options.epochs << " loss=" << std::fixed
              << std::setprecision(4) << window_sum / static_cast<double>(window_steps);
        progress->Update(r.samples, extra.str());
        window_sum = 0;
        window_steps = 0;
      }
      if (sinks.on_step) sinks.on_step(trainer->steps(), *loss);
      IPS_RETURN_IF_ERROR(trigger.AfterStep(trainer->steps(), false, blobs));
      if (trigger.StopRequested()) {
        r.stopped = true;
        r.epochs = e + 1;
        return r;
      }
    }
    if (stop || e + 1 == options.epochs)
      IPS_RETURN_IF_ERROR(trigger.AfterStep(trainer->steps(), true, blobs));
    const double epoch_seconds = timer.Seconds();
    r.train_seconds += epoch_seconds;
    r.epochs = e + 1;
    er.loss = er.steps > 0 ? loss_sum / static_cast<double>(er.steps) : std::nan("");
    er.samples_per_s = epoch_seconds > 0 ? static_cast<double>(epoch_samples) / epoch_seconds : 0;
    const bool last = stop || e + 1 == options.epochs;
    if ((e + 1) % options.eval_every_epochs == 0 || last) {
      IPS_ASSIGN_OR_RETURN(
          er.eval, EvaluateSeqRanking(trainer, data, ro, options.eval_max_users, options.top_k));
      er.evaluated = true;
      r.eval = er.eval;
    }
    if (progress) {
      std::ostringstream extra;
      extra << "epoch " << (e + 1) << "/" << options.epochs << " loss=" << std::fixed
            << std::setprecision(4) << er.loss;
      if (er.evaluated)
        extra << " hr" << options.top_k << "=" << er.eval.hr << " ndcg" << options.top_k << "="
              << er.eval.ndcg << " auc=" << er.eval.auc;
      progress->Update(r.samples, extra.str());
    }
    if (sinks.metrics_out != nullptr) {
      const std::string k = std::to_string(options.top_k);
      auto metric = [&](double v) { return er.evaluated ? JsonNumber(v) : std::string("null"); };
      *sinks.metrics_out << "{\"epoch\":" << er.epoch << ",\"hr" << k << "\":" << metric(er.eval.hr)
                         << ",\"ndcg" << k << "\":" << metric(er.eval.ndcg)
                         << ",\"auc\":" << metric(er.eval.auc)
                         << ",\"loss\":" << JsonNumber(er.loss)
                         << ",\"samples_per_s\":" << JsonNumber(er.samples_per_s)
                         << ",\"steps\":" << trainer->steps()
                         << ",\"eval_users\":" << (er.evaluated ? er.eval.users : 0)
                         << ",\"eval_s\":" << JsonNumber(er.evaluated ? er.eval.seconds : 0)
                         << "}\n";
      sinks.metrics_out->flush();
    }
    r.loss = er.loss;
    r.per_epoch.push_back(er);
  }
  r.samples_per_s = r.train_seconds > 0 ? static_cast<double>(r.samples) / r.train_seconds : 0;
  if (progress) {
    std::ostringstream extra;
    extra << "loss=" << std::fixed << std::setprecision(4) << r.loss;
    progress->Finish(extra.str());
  }
  return r;
}

}  // namespace ips
