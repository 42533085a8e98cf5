#include "worker/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/random.h"
#include "common/timer.h"
#include "kernels/activation.h"
#include "kernels/embedding.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "worker/config_validation.h"
#include "worker/internal/run_steps.h"

namespace ips {

CtrBatchView ViewOf(const CtrBatch& b) {
  CtrBatchView v;
  v.batch = b.batch;
  v.seq_len = b.seq_len;
  v.hist_item = b.hist_item.data();
  v.hist_cat = b.hist_cat.data();
  v.length = b.length.data();
  v.item = b.item.data();
  v.cat = b.cat.data();
  v.label = b.label.empty() ? nullptr : b.label.data();
  v.neg_item = b.neg_item.empty() ? nullptr : b.neg_item.data();
  v.neg_cat = b.neg_cat.empty() ? nullptr : b.neg_cat.data();
  return v;
}

CtrBatchView ViewOf(const Batch& b) {
  CtrBatchView v;
  v.batch = b.size;
  v.seq_len = b.max_len;
  v.hist_item = b.hist_item.data();
  v.hist_cat = b.hist_cat.data();
  v.length = b.length.data();
  v.item = b.item.data();
  v.cat = b.cat.data();
  v.label = b.label.empty() ? nullptr : b.label.data();
  return v;
}

// ---- Trainer ----------------------------------------------------------------------------------

namespace {

const char* NonFiniteName(double v) { return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"); }

}  // namespace

Status CheckStepLoss(int64_t step, double loss) {
  if (std::isfinite(loss)) return Status::Ok();
  return InvalidArgumentError("training diverged at step " + std::to_string(step) + ": loss is " +
                              NonFiniteName(loss) +
                              " (lower optimizer.learning_rate or check the input)");
}

StatusOr<std::unique_ptr<ThreadPool>> CreateTrainingPool(const std::string& who, int num_threads) {
  auto pool = ThreadPool::Create(num_threads);
  if (!pool.ok())
    return pool.status().WithContext(who + ": train.num_threads " + std::to_string(num_threads));
  return pool;
}

Status CheckScores(const float* scores, int64_t n, int64_t steps) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(scores[i])) continue;
    const std::string score = "row " + std::to_string(i) + " scores " + NonFiniteName(scores[i]);
    if (steps == 0) return InvalidArgumentError("the model's weights are not finite: " + score);
    return InvalidArgumentError("training diverged by step " + std::to_string(steps) + ": " +
                                score + " (lower optimizer.learning_rate or check the input)");
  }
  return Status::Ok();
}

Trainer::Trainer(const TrainerOptions& o) : o_(o) {}

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options,
                                                   ps::EmbeddingStore* store) {
  IPS_ASSIGN_OR_RETURN(auto model, CreateCtrModel(options.model));
  return Create(options, store, std::move(model));
}

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options,
                                                   ps::EmbeddingStore* store,
                                                   std::unique_ptr<models::CtrModel<float>> model) {
  if (store == nullptr) return InvalidArgumentError("Trainer::Create: null store");
  if (model == nullptr) return InvalidArgumentError("Trainer::Create: null model");
  if (options.num_threads < 1)
    return InvalidArgumentError("TrainerOptions.num_threads must be >= 1 (got " +
                                std::to_string(options.num_threads) + ")");
  std::unique_ptr<Trainer> t(new Trainer(options));
  t->store_ = store;
  const int64_t D = model->embedding_dim();
  for (auto [name, id] : {std::pair<const std::string*, int*>{&options.item_table, &t->item_table_},
                          {&options.category_table, &t->cat_table_}}) {
    auto found = store->FindTable(*name);
    if (!found.ok()) return found.status().WithContext("Trainer: table '" + *name + "'");
    *id = *found;
    IPS_ASSIGN_OR_RETURN(const int64_t dim, store->TableDim(*id));
    if (dim != D)
      return InvalidArgumentError("Trainer: table '" + *name + "' has dim " + std::to_string(dim) +
                                  " but model.embedding_dim is " + std::to_string(D));
  }
  IPS_ASSIGN_OR_RETURN(t->pool_, CreateTrainingPool("Trainer", options.num_threads));
  t->ctx_.device = kernels::Device::kCpu;
  t->ctx_.pool = t->pool_.get();
  t->model_ctx_ = t->ctx_;
  t->model_ctx_.device = model->device();
  t->model_ = std::move(model);

  const int64_t B = t->model_->max_batch(), L = t->model_->max_len();
  const auto n = static_cast<size_t>(B * (L + 1) + (t->model_->aux_negatives() ? B * L : 0));
  for (BatchKeys* k : {&t->cur_, &t->next_})
    for (auto* v : {&k->item_keys, &k->cat_keys, &k->item_unique, &k->cat_unique, &k->item_inverse,
                    &k->cat_inverse})
      v->resize(n);
  IPS_ASSIGN_OR_RETURN(const size_t ws, kernels::DedupWorkspaceBytes(t->ctx_, n));
  t->dedup_workspace_.resize(ws);
  const bool pinned = t->model_ctx_.device != kernels::Device::kCpu;
  for (auto* v : {&t->item_rows_, &t->cat_rows_, &t->d_item_rows_, &t->d_cat_rows_}) {
    IPS_ASSIGN_OR_RETURN(*v,
                         kernels::HostBuffer<float>::Create(static_cast<int64_t>(n) * D, pinned));
  }
  t->dense_optimizer_ =
      std::make_unique<DenseOptimizer>(options.dense_optimizer, t->model_->params().size());
  return t;
}

Status Trainer::PrepareKeys(const CtrBatchView& b, bool with_aux, BatchKeys* k, bool reuse_next) {
  if (b.batch < 1 || b.batch > model_->max_batch())
    return InvalidArgumentError("Trainer: batch size " + std::to_string(b.batch) + " outside [1, " +
                                std::to_string(model_->max_batch()) + "]");
  if (b.seq_len != model_->max_len())
    return InvalidArgumentError("Trainer: batch history length " + std::to_string(b.seq_len) +
                                " != the model's max_len " + std::to_string(model_->max_len()));
  if (with_aux && (b.neg_item == nullptr || b.neg_cat == nullptr))
    return InvalidArgumentError(std::string("Trainer: model ") + model_->name() +
                                " needs auxiliary negatives (neg_item, neg_cat) in the batch");
  if (b.hist_item == nullptr || b.hist_cat == nullptr || b.length == nullptr || b.item == nullptr ||
      b.cat == nullptr)
    return InvalidArgumentError("Trainer: batch with a null array");
  const int64_t B = b.batch, L = b.seq_len, n = B * L + B + (with_aux ? B * L : 0);
  int64_t* item_keys = k->item_keys.data();
  int64_t* cat_keys = k->cat_keys.data();
  k->deduped = false;
  // [history (B*T), targets (B) (, aux negatives (B*T))]: the layout of models::CtrInputs.
  // Padded steps get key 0 whatever the batch holds there: the padding key dedups to one row that
  // reads as zeros and whose pushes the store ignores, so padding never creates rows.
  for (int64_t r = 0; r < B; ++r) {
    const int32_t len = b.length[r];
    if (len < 0 || len > L)
      return InvalidArgumentError("Trainer: lengths[" + std::to_string(r) + "] = " +
                                  std::to_string(len) + " outside [0, " + std::to_string(L) + "]");
    for (int64_t t = 0; t < L; ++t) {
      const int64_t i = r * L + t;
      const bool valid = t >= L - len;
      item_keys[i] = valid ? b.hist_item[i] : 0;
      cat_keys[i] = valid ? b.hist_cat[i] : 0;
      if (with_aux) {
        item_keys[B * L + B + i] = valid ? b.neg_item[i] : 0;
        cat_keys[B * L + B + i] = valid ? b.neg_cat[i] : 0;
      }
    }
  }
  for (int64_t i = 0; i < B; ++i) {
    item_keys[B * L + i] = b.item[i];
    cat_keys[B * L + i] = b.cat[i];
  }
  k->n = n;
  k->with_aux = with_aux;
  // The batch given as the previous Step's `next` was de-duplicated then: the same keys (compared
  // here, so any other batch is de-duplicated afresh) have the same dedup.
  if (reuse_next && next_.deduped && next_.n == n && next_.with_aux == with_aux &&
      std::equal(item_keys, item_keys + n, next_.item_keys.data()) &&
      std::equal(cat_keys, cat_keys + n, next_.cat_keys.data())) {
    std::swap(*k, next_);
    next_.deduped = false;
    return Status::Ok();
  }
  kernels::DedupArgs a;
  a.n = n;
  a.workspace = dedup_workspace_.data();
  a.workspace_bytes = dedup_workspace_.size();
  a.keys = item_keys;
  a.unique_keys = k->item_unique.data();
  a.inverse = k->item_inverse.data();
  a.num_unique = &k->num_item_unique;
  IPS_RETURN_IF_ERROR(kernels::DedupKeys(ctx_, a));
  a.keys = cat_keys;
  a.unique_keys = k->cat_unique.data();
  a.inverse = k->cat_inverse.data();
  a.num_unique = &k->num_cat_unique;
  IPS_RETURN_IF_ERROR(kernels::DedupKeys(ctx_, a));
  k->deduped = true;
  return Status::Ok();
}

models::CtrInputs<float> Trainer::Inputs(const CtrBatchView& b) const {
  models::CtrInputs<float> in;
  in.batch = b.batch;
  in.lengths = b.length;
  in.item_index = cur_.item_inverse.data();
  in.cat_index = cur_.cat_inverse.data();
  in.item_rows = item_rows_.data();
  in.num_item_rows = cur_.num_item_unique;
  in.cat_rows = cat_rows_.data();
  in.num_cat_rows = cur_.num_cat_unique;
  in.labels = b.label;
  return in;
}

namespace {
// Keys are ids >= 0 stored as int64 for the dedup kernel; the store takes the same bits as
// uint64 (signed/unsigned variants of one type may alias).
const uint64_t* AsU64(const std::vector<int64_t>& v) {
  return reinterpret_cast<const uint64_t*>(v.data());
}
}  // namespace

StatusOr<double> Trainer::Step(const CtrBatchView& batch, const CtrBatchView* next) {
  if (batch.label == nullptr) return InvalidArgumentError("Trainer::Step: batch without labels");
  const bool aux = model_->aux_negatives();
  IPS_RETURN_IF_ERROR(PrepareKeys(batch, aux, &cur_, /*reuse_next=*/true));
  if (next != nullptr) {
    // Checked before anything is pulled, so a bad `next` leaves the store untouched.
    if (next->label == nullptr)
      return InvalidArgumentError("Trainer::Step: next batch without labels");
    Status s = PrepareKeys(*next, aux, &next_, /*reuse_next=*/false);
    if (!s.ok()) return s.WithContext("Trainer::Step: next batch");
  }
  const int64_t D = model_->embedding_dim();
  IPS_RETURN_IF_ERROR(store_->Pull(item_table_, AsU64(cur_.item_unique), cur_.num_item_unique, D,
                                   item_rows_.data()));
  IPS_RETURN_IF_ERROR(
      store_->Pull(cat_table_, AsU64(cur_.cat_unique), cur_.num_cat_unique, D, cat_rows_.data()));
  if (next != nullptr) {
    // As early as the protocol allows (after this step's pulls, before its pushes): the PS
    // holds it until this step's push is applied (sync), then serves it while this worker
    // finishes the step.
    IPS_RETURN_IF_ERROR(
        store_->PrefetchPull(item_table_, AsU64(next_.item_unique), next_.num_item_unique));
    IPS_RETURN_IF_ERROR(
        store_->PrefetchPull(cat_table_, AsU64(next_.cat_unique), next_.num_cat_unique));
  }
  const models::CtrInputs<float> in = Inputs(batch);
  float loss = 0;
  IPS_RETURN_IF_ERROR(model_->Forward(model_ctx_, in, /*training=*/true, &loss));
  IPS_RETURN_IF_ERROR(CheckStepLoss(steps_ + 1, loss));
  IPS_RETURN_IF_ERROR(model_->Backward(model_ctx_, in, d_item_rows_.data(), d_cat_rows_.data()));
  // Categories first: a PS serves a held prefetch as soon as the push it waits for is applied,
  // before the next request it has; the small category pull then delays the item push only a
  // little, while the large item pull is served as the last thing of the step, overlapping this
  // worker's dense all-reduce and update. (The tables are independent: the order changes no
  // value.)
  IPS_RETURN_IF_ERROR(
      store_->Push(cat_table_, AsU64(cur_.cat_unique), cur_.num_cat_unique, D, d_cat_rows_.data()));
  IPS_RETURN_IF_ERROR(store_->Push(item_table_, AsU64(cur_.item_unique), cur_.num_item_unique, D,
                                   d_item_rows_.data()));

  ++steps_;
  auto& params = model_->params();
  if (o_.dense_grad_allreduce)
    IPS_RETURN_IF_ERROR(o_.dense_grad_allreduce(params.grads(), params.size()));
  IPS_RETURN_IF_ERROR(dense_optimizer_->Apply(ctx_, steps_, params.values(), params.grads()));
  IPS_RETURN_IF_ERROR(store_->AdvanceStep(steps_));
  return static_cast<double>(loss);
}

Status Trainer::Predict(const CtrBatchView& batch, float* probs) {
  if (probs == nullptr) return InvalidArgumentError("Trainer::Predict: null probs");
  IPS_RETURN_IF_ERROR(PredictLogits(batch, probs));
  for (int i = 0; i < batch.batch; ++i) probs[i] = kernels::StableSigmoid(probs[i]);
  return Status::Ok();
}

Status Trainer::PredictLogits(const CtrBatchView& batch, float* out) {
  if (out == nullptr) return InvalidArgumentError("Trainer::PredictLogits: null output");
  // Inference never reads auxiliary negatives: they only feed DIEN's training loss.
  IPS_RETURN_IF_ERROR(PrepareKeys(batch, /*with_aux=*/false, &cur_, /*reuse_next=*/false));
  const int64_t D = model_->embedding_dim();
  IPS_RETURN_IF_ERROR(store_->Lookup(item_table_, AsU64(cur_.item_unique), cur_.num_item_unique, D,
                                     item_rows_.data()));
  IPS_RETURN_IF_ERROR(
      store_->Lookup(cat_table_, AsU64(cur_.cat_unique), cur_.num_cat_unique, D, cat_rows_.data()));
  models::CtrInputs<float> in = Inputs(batch);
  in.labels = nullptr;
  IPS_RETURN_IF_ERROR(model_->Forward(model_ctx_, in, /*training=*/false, nullptr));
  const float* logits = model_->logits();
  std::copy(logits, logits + batch.batch, out);
  return CheckScores(out, batch.batch, steps_);
}

// ---- Config mapping ---------------------------------------------------------------------------

namespace {

kernels::OptimizerHyper HyperOf(const config::OptimizerConfig& c) {
  switch (c.type()) {
    case config::OptimizerConfig::SGD:
      return kernels::OptimizerHyper::Sgd(c.learning_rate());
    case config::OptimizerConfig::ADAGRAD:
      return kernels::OptimizerHyper::Adagrad(c.learning_rate(), c.epsilon());
    case config::OptimizerConfig::FTRL:
      return kernels::OptimizerHyper::Ftrl(c.learning_rate(), c.ftrl_beta(), c.l1(), c.l2());
    case config::OptimizerConfig::ADAM:
    default:
      return kernels::OptimizerHyper::Adam(c.learning_rate(), c.beta1(), c.beta2(), c.epsilon());
  }
}

}  // namespace

StatusOr<TrainJob> TrainJobFromConfig(const config::Config& cfg) {
  TrainJob job;
  if (!cfg.data().has_synthetic() && cfg.data().train_dir().empty())
    return InvalidArgumentError(
        "data: set data.train_dir (a directory written by `ips data convert`) or data.synthetic");
  // The model's, the tables' and the run's checks, for a Config that did not come through
  // LoadConfigForRun (which blames the same errors on their --set or line): errors name the field.
  IPS_RETURN_IF_ERROR(CheckConfigForRun(cfg, ConfigSource()));
  IPS_ASSIGN_OR_RETURN(job.trainer.model, ModelSpecFromConfig(cfg));
  const bool sequence = IsSequenceModel(job.trainer.model.kind);
  job.trainer.dense_optimizer = HyperOf(cfg.optimizer());
  job.trainer.num_threads = cfg.train().num_threads();
  if (job.trainer.num_threads < 1)
    return InvalidArgumentError("train.num_threads must be >= 1 (got " +
                                std::to_string(job.trainer.num_threads) + ")");

  const auto& syn = cfg.data().synthetic();
  // Sequence models embed items only; CTR models items and categories.
  std::vector<std::string> names = {"item"};
  if (!sequence) names.push_back("category");
  for (const std::string& name : names) {
    int found = -1;
    for (int i = 0; i < cfg.tables_size(); ++i)
      if (cfg.tables(i).name() == name) found = i;
    if (found < 0)
      return InvalidArgumentError(std::string("tables: model ") +
                                  ModelKindName(job.trainer.model.kind) + " needs a table named '" +
                                  name + "'");
    job.tables.push_back(TableOptionsFromConfig(cfg, found));
  }

  if (!cfg.data().has_synthetic()) {
    DatasetRunOptions& r = job.dataset;
    r.train_dir = cfg.data().train_dir();
    r.reader.batch_size = cfg.data().batch_size();
    r.reader.max_len = cfg.data().max_history();
    r.reader.seed = cfg.data().seed();
    r.reader.shuffle = cfg.data().shuffle();
    r.epochs = cfg.train().epochs();
    r.max_steps = cfg.train().max_steps();
    r.eval_every_epochs = cfg.eval().every_epochs();
    r.eval_max_users = cfg.eval().max_users();
    if (cfg.eval().top_k_size() > 0) {
      r.top_k_set = true;
      r.top_k = cfg.eval().top_k(0);
      r.retrieval_cutoffs.assign(cfg.eval().top_k().begin(), cfg.eval().top_k().end());
    }
    // Every entry is a cut-off of the sampled ranking (eval.top_k: "HR@K / NDCG@K / Recall@K
    // cut-offs"), but for MIND, whose later entries are its retrieval cut-offs: they may exceed
    // the candidates of a list (CheckTopKFitsDataset), where HR@K would be 1 for everyone.
    r.ranking_cutoffs = r.top_k_set && job.trainer.model.kind != ModelKind::kMind
                            ? r.retrieval_cutoffs
                            : std::vector<int>{r.top_k};
    r.log_every_steps = std::max(1, cfg.train().log_every_steps());
    return job;
  }

  job.synthetic = true;
  SyntheticRunOptions& r = job.run;
  r.data.num_items = static_cast<uint32_t>(syn.num_items());
  r.data.num_categories = static_cast<uint32_t>(syn.num_categories());
  r.data.seq_len = cfg.data().max_history();
  r.data.alpha = syn.zipf_alpha();
  r.data.seed = cfg.data().seed();
  IPS_RETURN_IF_ERROR(ValidateSyntheticOptions(r.data));
  r.batch = cfg.data().batch_size();
  r.warmup_steps = syn.warmup_steps();
  r.steps = syn.steps();
  if (cfg.train().max_steps() > 0)
    r.steps = static_cast<int>(std::min<int64_t>(r.steps, cfg.train().max_steps()));
  r.log_every_steps = std::max(1, cfg.train().log_every_steps());
  return job;
}

namespace {

// How cut-off k compares with the n entries a ranking ranks: "equals" or "exceeds" (k >= n).
std::string ReachedBy(int k, uint64_t n) {
  return static_cast<uint64_t>(k) == n ? "equals" : "exceeds";
}

// FitJobToDataset's eval.top_k check on a dataset of ranked candidate lists (see trainer.h). A
// ranking of n entries puts the held-out one at a rank below n, so HR@K (recall@K) is 1 for
// every user once K >= n: a cut-off must be below the entries ranked.
Status CheckTopKFitsDataset(const Manifest& m, const TrainJob& job) {
  const DatasetRunOptions& r = job.dataset;
  const bool mind = job.trainer.model.kind == ModelKind::kMind;
  // The sampled ranking uses every entry (MIND: top_k[0]; its retrieval uses every entry, or its
  // default cut-offs).
  const std::vector<int> entries = r.top_k_set ? r.retrieval_cutoffs : std::vector<int>{r.top_k};
  auto name = [&](size_t i, int k) {
    const std::string v = " " + std::to_string(k);
    if (!r.top_k_set) return "eval.top_k" + v + " (the default)";
    if (entries.size() == 1) return "eval.top_k" + v;
    return "eval.top_k[" + std::to_string(i) + "]" + v;
  };
  const uint64_t candidates = m.eval_candidates;
  for (size_t i = 0; i < entries.size(); ++i) {
    const int k = entries[i];
    if ((i == 0 || !mind) && static_cast<uint64_t>(k) >= candidates)
      return FailedPreconditionError(
          name(i, k) + " " + ReachedBy(k, candidates) + " the " + std::to_string(candidates) +
          " candidates ranked per user (the held-out item and " + std::to_string(candidates - 1) +
          " sampled negatives): HR@" + std::to_string(k) +
          " would be 1 for every user; use at most " + std::to_string(candidates - 1) +
          " (or convert with more --eval_negatives)");
  }
  if (!mind) return Status::Ok();
  const std::vector<int>& cutoffs = r.retrieval_cutoffs;
  for (size_t i = 0; i < cutoffs.size(); ++i) {
    const int k = cutoffs[i];
    if (static_cast<uint64_t>(k) < m.items) continue;
    const std::string what =
        r.top_k_set ? name(i, k) : "the default retrieval cut-off " + std::to_string(k);
    const std::string recall = "recall@" + std::to_string(k);
    return FailedPreconditionError(
        what + " " + ReachedBy(k, m.items) + " the " + std::to_string(m.items) +
        " items MIND ranks per user in its full-ranking retrieval: " + recall +
        " would be 1 for every user; set eval.top_k entries of at most " +
        std::to_string(m.items > 0 ? m.items - 1 : 0));
  }
  return Status::Ok();
}

}  // namespace

Status FitJobToDataset(const Dataset& data, TrainJob* job) {
  if (job == nullptr) return InvalidArgumentError("FitJobToDataset: null job");
  const Manifest& m = data.manifest();
  const char* model = ModelKindName(job->trainer.model.kind);
  if (m.protocol == "given") {
    // Given rows are single examples with their own labels: no per-user sequences to train a
    // sequence model on, no candidate lists to rank or retrieve from.
    if (IsSequenceModel(job->trainer.model.kind) || job->trainer.model.kind == ModelKind::kMind)
      return FailedPreconditionError(
          std::string("dataset protocol 'given' (examples given by the input, labelled): ") +
          model +
          " trains on per-user sequences and is evaluated by ranking candidate lists; convert "
          "sequence input (taobao, events, movielens, seqrec) with `--protocol seqrec` or `ctr`");
    if (m.eval_examples == 0)
      return FailedPreconditionError(
          "dataset protocol 'given' has no evaluation rows: convert DIEN's test file with "
          "`ips data convert --format dien ... --eval_input FILE`");
  } else if (m.protocol != "seqrec" && m.protocol != "ctr") {
    return FailedPreconditionError("dataset protocol '" + m.protocol +
                                   "' is not one of seqrec, ctr, given");
  }
  if (m.train_examples == 0) return FailedPreconditionError("dataset has no training rows");
  job->dataset.ranked_eval = m.eval_candidates > 0;
  if (m.eval_candidates > static_cast<uint64_t>(1) << 20)
    return FailedPreconditionError("dataset eval_candidates " + std::to_string(m.eval_candidates) +
                                   " is implausibly large");
  if (job->dataset.ranked_eval) IPS_RETURN_IF_ERROR(CheckTopKFitsDataset(m, *job));
  // EvalReader batches hold whole lists: at least one list even when batch_size is smaller.
  job->trainer.model.max_batch =
      std::max<int64_t>(job->trainer.model.max_batch, static_cast<int64_t>(m.eval_candidates));
  for (ps::TableOptions& t : job->tables)
    t.initializer.xavier_fan_rows = t.name == "item"
                                        ? static_cast<double>(m.items) + 1
                                        : static_cast<double>(std::max<uint64_t>(m.categories, 1));
  return Status::Ok();
}

int64_t TrainingRowsPerEpoch(const Dataset& data, const TrainJob& job) {
  if (IsSequenceModel(job.trainer.model.kind))
    return SequenceReader(&data, {}, job.dataset.reader).sequences_per_epoch();
  return TrainReader(&data, {}, job.dataset.reader).examples_per_epoch();
}

// ---- Synthetic protocol -----------------------------------------------------------------------

namespace {

using internal::Mean;

}  // namespace

// ---- Checkpoints ------------------------------------------------------------------------------

StatusOr<CheckpointContent> TrainerCheckpointContent(models::CtrModel<float>* model,
                                                     DenseOptimizer* optimizer,
                                                     ps::LocalEmbeddingStore* store,
                                                     const std::string& config_text) {
  if (model == nullptr || store == nullptr)
    return InvalidArgumentError("TrainerCheckpointContent: null model or store");
  CheckpointContent c;
  AddModelState(model, optimizer, &c);
  for (int t = 0; t < store->num_tables(); ++t) {
    IPS_ASSIGN_OR_RETURN(ps::DynamicTable * table, store->table(t));
    c.tables.push_back(table);
  }
  c.config_text = config_text;
  return c;
}

CheckpointTrigger::CheckpointTrigger(const RunCheckpointing* c) : c_(c) {}

Status CheckpointTrigger::AfterStep(
    int64_t step, bool force, const std::function<std::map<std::string, std::string>()>& blobs) {
  if (c_ == nullptr || c_->writer == nullptr || step == last_step_) return Status::Ok();
  const double now = timer_.Seconds();
  const bool due = force || StopRequested() ||
                   (c_->every_steps > 0 && step % c_->every_steps == 0) ||
                   (c_->every_seconds > 0 && now - last_seconds_ >= c_->every_seconds);
  if (!due) return Status::Ok();
  CheckpointContent content = c_->content;
  content.blobs = blobs();
  IPS_ASSIGN_OR_RETURN(const CheckpointInfo info, SaveCheckpoint(c_->writer, step, content));
  last_step_ = step;
  last_seconds_ = timer_.Seconds();
  if (c_->on_saved) c_->on_saved(info);
  return Status::Ok();
}

StatusOr<BinaryMetricsResult> EvaluateSyntheticHeldOut(Trainer* trainer,
                                                       const SyntheticRunOptions& options,
                                                       const SyntheticSchedule& schedule) {
  if (trainer == nullptr) return InvalidArgumentError("EvaluateSyntheticHeldOut: null trainer");
  IPS_ASSIGN_OR_RETURN(auto gen, SyntheticBatches::Create(options.data));
  // The held-out batches follow every batch the run's schedule trained.
  const uint64_t first = schedule.HeldOutFirst(options.warmup_steps + options.steps);
  std::vector<CtrBatch> bs;
  IPS_RETURN_IF_ERROR(gen->MakeCtrBatches(
      0, options.eval_batches, options.batch, [first](int64_t i) { return first + i; },
      "held-out (--eval_batches)", &bs));
  return internal::EvaluateSyntheticBatches(
      trainer, options.eval_batches,
      [&](int e) -> StatusOr<const CtrBatch*> { return &bs[static_cast<size_t>(e)]; },
      /*stop=*/nullptr);
}

StatusOr<SyntheticRunResult> RunSyntheticTraining(Trainer* trainer,
                                                  const SyntheticRunOptions& options,
                                                  const RunSinks& sinks,
                                                  const SyntheticSchedule* schedule) {
  if (trainer == nullptr) return InvalidArgumentError("RunSyntheticTraining: null trainer");
  if (options.steps < 1 || options.warmup_steps < 0 || options.eval_batches < 0)
    return InvalidArgumentError(
        "RunSyntheticTraining: steps must be >= 1, warmup_steps and "
        "eval_batches >= 0");
  // Like the peer, every batch exists before the timer starts: the training batches from the
  // resumed step on, then the held-out ones.
  const int64_t train_batches = options.warmup_steps + options.steps;
  const SyntheticSchedule one_worker(1);
  IPS_ASSIGN_OR_RETURN(auto gen, SyntheticBatches::Create(options.data));
  std::vector<CtrBatch> batches;
  IPS_RETURN_IF_ERROR(gen->MakeCtrBatches(
      internal::SyntheticFirstStep(sinks, train_batches), train_batches + options.eval_batches,
      options.batch,
      internal::SyntheticSlotIndex(schedule != nullptr ? *schedule : one_worker, train_batches),
      "warm-up, timed and held-out (--eval_batches)", &batches));

  SyntheticRunResult r;
  IPS_RETURN_IF_ERROR(
      internal::RunSyntheticSteps(trainer, batches, options, sinks, "samples", &r, schedule));
  if (r.stopped) return r;

  // The last step's checkpoint is saved (RunSyntheticSteps forces it): a stop during the
  // evaluation ends the run there, as one before it would.
  const std::atomic<bool>* stop = sinks.checkpoint != nullptr ? sinks.checkpoint->stop : nullptr;
  auto eval = internal::EvaluateSyntheticBatches(
      trainer, options.eval_batches,
      [&](int e) -> StatusOr<const CtrBatch*> {
        return &batches[static_cast<size_t>(train_batches + e)];
      },
      stop);
  if (!eval.ok() && StopSet(stop) && IsEvaluationAbandoned(eval.status())) {
    r.stopped = true;
    return r;
  }
  IPS_ASSIGN_OR_RETURN(r.eval, std::move(eval));
  if (sinks.metrics_out != nullptr)
    internal::SyntheticEvalMetricsLine(trainer->model().name(), trainer->steps(), r.eval)
        .WriteTo(sinks.metrics_out);
  return r;
}

// ---- Converted datasets -----------------------------------------------------------------------

std::vector<int> RankingCutoffs(const DatasetRunOptions& options) {
  return options.ranking_cutoffs.empty() ? std::vector<int>{options.top_k}
                                         : options.ranking_cutoffs;
}

std::vector<RankingCutoff> RankingCutoffsOf(const RankingEvalResult& eval) {
  if (!eval.cutoffs.empty()) return eval.cutoffs;
  return {RankingCutoff{eval.k, eval.hr, eval.ndcg}};
}

Status CheckRankingCutoffs(const char* fn, const std::vector<int>& cutoffs) {
  if (cutoffs.empty()) return InvalidArgumentError(std::string(fn) + ": no ranking cut-off");
  for (size_t i = 0; i < cutoffs.size(); ++i) {
    if (cutoffs[i] < 1)
      return InvalidArgumentError(std::string(fn) + ": cut-off " + std::to_string(cutoffs[i]) +
                                  " must be >= 1");
    for (size_t j = 0; j < i; ++j)
      if (cutoffs[j] == cutoffs[i])
        return InvalidArgumentError(std::string(fn) + ": cut-off " + std::to_string(cutoffs[i]) +
                                    " is given twice");
  }
  return Status::Ok();
}

namespace {

int MaxCutoff(const std::vector<int>& cutoffs) {
  int k = 1;
  for (int c : cutoffs) k = std::max(k, c);
  return k;
}

}  // namespace

RankingEvaluation::RankingEvaluation(std::vector<int> cutoffs)
    : cutoffs_(std::move(cutoffs)), ranking_(MaxCutoff(cutoffs_)) {
  if (cutoffs_.empty()) cutoffs_.push_back(1);
}

Status RankingEvaluation::Add(const float* scores, const uint64_t* users, int64_t lists,
                              int cands) {
  IPS_RETURN_IF_ERROR(ranking_.Add(scores, lists, cands));
  const auto n = static_cast<size_t>(lists * cands);
  probs_.resize(n);
  labels_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    probs_[i] = kernels::StableSigmoid(scores[i]);
    labels_[i] = i % static_cast<size_t>(cands) == 0 ? 1.f : 0.f;
  }
  return ctr_.Add(probs_.data(), labels_.data(), users, static_cast<int64_t>(n));
}

RankingEvalResult RankingEvaluation::Result(double seconds) const {
  RankingEvalResult r;
  r.users = ranking_.Users();
  // Every cut-off from the one rank histogram of the largest (RankingMetrics::HitRateAt).
  for (const int k : cutoffs_) {
    const int j = std::max(k, 1);
    r.cutoffs.push_back({k, ranking_.HitRateAt(j), ranking_.NdcgAt(j)});
  }
  r.k = r.cutoffs[0].k;
  r.hr = r.cutoffs[0].hr;
  r.ndcg = r.cutoffs[0].ndcg;
  r.auc = ranking_.SampledAuc();
  r.gauc = ctr_.Gauc();
  r.logloss = ctr_.LogLoss();
  r.seconds = seconds;
  return r;
}

namespace {

// EvaluateRanking of a given dataset: every EvalReader row is one labelled CTR example.
StatusOr<RankingEvalResult> EvaluateLabelledRows(Trainer* trainer, EvalReader* eval,
                                                 int64_t max_rows, const std::vector<int>& cutoffs,
                                                 const std::atomic<bool>* stop) {
  Timer timer;
  int64_t remaining = max_rows > 0 ? std::min(max_rows, eval->num_lists()) : eval->num_lists();
  BinaryMetrics metrics;
  Batch batch;
  std::vector<float> scores;
  while (remaining > 0 && eval->Next(&batch)) {
    if (StopSet(stop)) return EvaluationAbandonedError();
    scores.resize(static_cast<size_t>(batch.size));
    IPS_RETURN_IF_ERROR(trainer->PredictLogits(ViewOf(batch), scores.data()));
    const int64_t rows = std::min<int64_t>(batch.size, remaining);
    for (int64_t i = 0; i < rows; ++i) scores[i] = kernels::StableSigmoid(scores[i]);
    IPS_RETURN_IF_ERROR(metrics.Add(scores.data(), batch.label.data(),
                                    batch.user.empty() ? nullptr : batch.user.data(), rows));
    remaining -= rows;
  }
  const BinaryMetricsResult b = metrics.Compute();
  RankingEvalResult r;
  r.ranked = false;
  r.users = b.count;
  for (const int k : cutoffs) r.cutoffs.push_back({k, std::nan(""), std::nan("")});
  r.k = cutoffs[0];
  r.hr = r.ndcg = std::nan("");
  r.auc = b.auc;
  r.gauc = b.gauc;
  r.logloss = b.logloss;
  r.seconds = timer.Seconds();
  return r;
}

}  // namespace

StatusOr<RankingEvalResult> EvaluateRanking(Trainer* trainer, const Dataset& data,
                                            const ReaderOptions& reader, int64_t max_users, int k,
                                            const std::atomic<bool>* stop) {
  return EvaluateRanking(trainer, data, reader, max_users, std::vector<int>{k}, stop);
}

StatusOr<RankingEvalResult> EvaluateRanking(Trainer* trainer, const Dataset& data,
                                            const ReaderOptions& reader, int64_t max_users,
                                            const std::vector<int>& cutoffs,
                                            const std::atomic<bool>* stop) {
  if (trainer == nullptr) return InvalidArgumentError("EvaluateRanking: null trainer");
  IPS_RETURN_IF_ERROR(CheckRankingCutoffs("EvaluateRanking", cutoffs));
  Timer timer;
  ReaderOptions ro = reader;
  ro.shuffle = false;
  EvalReader eval(&data, {}, ro);
  if (data.manifest().eval_candidates == 0)
    return EvaluateLabelledRows(trainer, &eval, max_users, cutoffs, stop);
  const int cands = eval.candidates_per_list();
  if (cands < 2)
    return FailedPreconditionError("EvaluateRanking: the dataset has " + std::to_string(cands) +
                                   " candidates per evaluation list (need >= 2)");
  int64_t remaining = max_users > 0 ? std::min(max_users, eval.num_lists()) : eval.num_lists();
  RankingEvaluation metrics(cutoffs);
  Batch batch;
  std::vector<float> scores;
  while (remaining > 0 && eval.Next(&batch)) {
    if (StopSet(stop)) return EvaluationAbandonedError();
    if (batch.size % cands != 0)
      return DataLossError("EvaluateRanking: evaluation batch of " + std::to_string(batch.size) +
                           " rows is not whole lists of " + std::to_string(cands));
    scores.resize(static_cast<size_t>(batch.size));
    IPS_RETURN_IF_ERROR(trainer->PredictLogits(ViewOf(batch), scores.data()));
    const int64_t lists = std::min<int64_t>(batch.size / cands, remaining);
    IPS_RETURN_IF_ERROR(
        metrics.Add(scores.data(), batch.user.empty() ? nullptr : batch.user.data(), lists, cands));
    remaining -= lists;
  }
  return metrics.Result(timer.Seconds());
}

uint64_t AuxNegativesSeed(uint64_t reader_seed, int64_t step) {
  return Mix64(reader_seed ^ Mix64(static_cast<uint64_t>(step) + 1));
}

CtrBatchView ViewWithAuxNegatives(const Batch& batch, const Dataset& data, uint64_t seed,
                                  AuxNegatives* negatives) {
  const auto num_items = static_cast<uint32_t>(data.manifest().items);
  const ColumnView<uint32_t> item_cat = data.item_cat();
  const size_t n = static_cast<size_t>(batch.size) * static_cast<size_t>(batch.max_len);
  negatives->item.resize(n);
  negatives->cat.resize(n);
  Rng rng(seed);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t item = 1 + static_cast<uint32_t>(rng.UniformInt(num_items));
    negatives->item[i] = item;
    negatives->cat[i] = item < item_cat.size ? item_cat[item] : 0;
  }
  CtrBatchView view = ViewOf(batch);
  view.neg_item = negatives->item.data();
  view.neg_cat = negatives->cat.data();
  return view;
}

namespace {

// RunDatasetEpochs' source for the CTR trainer: a TrainReader's batches, with DIEN's auxiliary
// negatives drawn per step (see AuxNegatives), ranked by EvaluateRanking.
class CtrEpochSource {
 public:
  CtrEpochSource(Trainer* trainer, const Dataset& data, const DatasetRunOptions& options)
      : trainer_(trainer),
        data_(data),
        options_(options),
        reader_(&data, {}, options.reader),
        aux_(trainer->model().aux_negatives()) {}

  int64_t per_epoch() const { return reader_.examples_per_epoch(); }
  void StartEpoch(int epoch) { reader_.StartEpoch(epoch); }
  Status SkipTo(int epoch, int64_t position) { return reader_.SkipTo(epoch, position); }
  int64_t Position(int64_t /*epoch_samples*/) const { return reader_.position(); }
  StatusOr<bool> Step(double* loss, int64_t* samples) {
    if (!reader_.Next(&batch_)) return false;
    const CtrBatchView view =
        aux_ ? ViewWithAuxNegatives(batch_, data_,
                                    AuxNegativesSeed(options_.reader.seed, trainer_->steps()),
                                    &negatives_)
             : ViewOf(batch_);
    IPS_ASSIGN_OR_RETURN(*loss, trainer_->Step(view));
    *samples = batch_.size;
    return true;
  }
  StatusOr<RankingEvalResult> Evaluate(const std::atomic<bool>* stop) {
    return EvaluateRanking(trainer_, data_, options_.reader, options_.eval_max_users,
                           RankingCutoffs(options_), stop);
  }

 private:
  Trainer* trainer_;
  const Dataset& data_;
  const DatasetRunOptions& options_;
  TrainReader reader_;
  const bool aux_;
  Batch batch_;
  AuxNegatives negatives_;
};

}  // namespace

StatusOr<DatasetRunResult> RunDatasetTraining(Trainer* trainer, const Dataset& data,
                                              const DatasetRunOptions& options,
                                              const RunSinks& sinks) {
  if (trainer == nullptr) return InvalidArgumentError("RunDatasetTraining: null trainer");
  IPS_RETURN_IF_ERROR(internal::CheckDatasetRunOptions("RunDatasetTraining", options));
  if (trainer->model().aux_negatives() && data.manifest().items == 0)
    return FailedPreconditionError("dataset has no items");
  CtrEpochSource source(trainer, data, options);
  return internal::RunDatasetEpochs(trainer, &source, options, sinks, "samples");
}

}  // namespace ips
