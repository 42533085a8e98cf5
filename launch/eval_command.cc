// `ips eval --config FILE --checkpoint DIR [--set ...] [--metrics_out FILE]`: rebuilds the
// config's store and model, restores a checkpoint written by `ips train` and runs the evaluation
// of that model family, exactly as the trainer runs it at the end of training:
//   * data.train_dir: the peer's leave-one-out ranking (EvaluateRanking for CTR models,
//     EvaluateSeqRanking for sequence models: HR@K, NDCG@K, sampled AUC, GAUC, logloss) and, for
//     models with user vectors (MIND), the full-ranking retrieval (EvaluateRetrieval: recall@K,
//     HR@K for every eval.top_k);
//   * data.synthetic (CTR models): AUC / GAUC / logloss on the protocol's held-out batches of the
//     run that wrote the checkpoint: its recorded data.synthetic.*, data.seed, data.batch_size,
//     data.max_history and train.max_steps (noted when this config differs) and its batch
//     schedule (the batches after every one it trained, whatever number of workers trained them).
// Ends with `RESULT eval model=... step=... key=value ...`. Evaluation is read-only: no row is
// created, nothing in the checkpoint changes. A checkpoint trained on a dataset of another
// vocabulary than data.train_dir's is refused (worker/checkpoint.h CheckCheckpointVocabulary).
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/output_file.h"
#include "common/result_line.h"
#include "launch/commands.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "worker/checkpoint.h"
#include "worker/config_validation.h"
#include "worker/data_reader.h"
#include "worker/metrics_line.h"
#include "worker/retrieval.h"
#include "worker/seq_trainer.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace {

std::string Fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

// One number of the evaluation, under its RESULT key and its --metrics_out key: the name the
// training run's epoch and eval lines give the same quantity (README.md "Metrics lines"), which
// differs for the count of evaluated candidate lists (RESULT "users", as scripts read it; the
// epoch lines' "eval_users"). A count is an integer, a metric has 6 decimals in both (the result
// lines' figures); a metric that is not finite is null on the metrics line.
struct Figure {
  std::string key;
  std::string metrics_key;
  bool count = false;
  int64_t n = 0;
  double v = 0;
};
Figure Count(const std::string& key, int64_t n, const std::string& metrics_key = "") {
  return {key, metrics_key.empty() ? key : metrics_key, true, n, 0};
}
Figure Metric(const std::string& key, double v) { return {key, key, false, 0, v}; }

// The evaluation's numbers in RESULT order (also written as one metrics line, phase "eval").
using Metrics = std::vector<Figure>;

// Builds the job's trainer over `store` and restores the checkpoint into it; returns the step.
// `vocabulary`: the evaluated dataset's (null for synthetic data); a checkpoint trained on
// another vocabulary is refused (its rows would stand for other items).
StatusOr<int64_t> Restore(const config::Config& cfg, const TrainJob& job,
                          const std::string& checkpoint, const DatasetVocabulary* vocabulary,
                          ps::LocalEmbeddingStore* store, std::unique_ptr<Trainer>* ctr,
                          std::unique_ptr<SeqTrainer>* seq,
                          std::map<std::string, std::string>* blobs = nullptr) {
  const std::string text = ConfigToText(cfg);
  CheckpointContent content;
  IPS_RETURN_IF_ERROR(MakeTrainer(job, store, ctr, seq));
  if (*ctr != nullptr) {
    IPS_ASSIGN_OR_RETURN(content, TrainerCheckpointContent(
                                      &(*ctr)->model(), &(*ctr)->dense_optimizer(), store, text));
  } else {
    IPS_ASSIGN_OR_RETURN(content, SeqTrainerCheckpointContent(seq->get(), store, text));
  }
  if (vocabulary != nullptr) content.vocabulary = *vocabulary;
  return LoadCheckpoint(checkpoint, content, blobs);
}

Status EvalDataset(const config::Config& cfg, TrainJob job, const std::string& checkpoint,
                   int64_t* step, Metrics* out) {
  const DatasetRunOptions& run = job.dataset;
  auto opened = Dataset::Open(run.train_dir);
  if (!opened.ok()) return opened.status().WithContext("data.train_dir '" + run.train_dir + "'");
  std::unique_ptr<Dataset> data = std::move(*opened);
  IPS_RETURN_IF_ERROR(
      FitJobToDataset(*data, &job).WithContext("data.train_dir '" + run.train_dir + "'"));
  IPS_ASSIGN_OR_RETURN(
      auto store, ps::LocalEmbeddingStore::CreateThreaded(job.tables, job.trainer.num_threads));
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  const DatasetVocabulary vocabulary = VocabularyOf(run.train_dir, data->manifest());
  IPS_ASSIGN_OR_RETURN(*step, Restore(cfg, job, checkpoint, &vocabulary, store.get(), &ctr, &seq));
  RankingEvalResult r;
  if (ctr != nullptr) {
    IPS_ASSIGN_OR_RETURN(
        r, EvaluateRanking(ctr.get(), *data, run.reader, run.eval_max_users, RankingCutoffs(run)));
  } else {
    IPS_ASSIGN_OR_RETURN(r, EvaluateSeqRanking(seq.get(), *data, run.reader, run.eval_max_users,
                                               RankingCutoffs(run)));
  }
  if (r.ranked) {
    // hr<k> and ndcg<k> for every cut-off (eval.top_k; MIND: its first), as `ips train` reports.
    *out = {Count("users", r.users, "eval_users")};
    for (const RankingCutoff& c : RankingCutoffsOf(r)) {
      out->push_back(Metric("hr" + std::to_string(c.k), c.hr));
      out->push_back(Metric("ndcg" + std::to_string(c.k), c.ndcg));
    }
  } else {  // a given dataset: labelled rows, no candidate lists
    *out = {Count("examples", r.users, "eval_rows")};
  }
  out->insert(out->end(),
              {Metric("auc", r.auc), Metric("gauc", r.gauc), Metric("logloss", r.logloss)});
  if (ctr != nullptr && ctr->model().num_user_vectors() > 0) {
    RetrievalOptions o;
    o.cutoffs = run.retrieval_cutoffs;
    o.max_users = run.eval_max_users;
    IPS_ASSIGN_OR_RETURN(const int item, store->FindTable(job.trainer.item_table));
    IPS_ASSIGN_OR_RETURN(o.category_table, store->FindTable(job.trainer.category_table));
    IPS_ASSIGN_OR_RETURN(const RetrievalResult rr, EvaluateRetrieval(ctr->context(), &ctr->model(),
                                                                     store.get(), item, *data, o));
    for (const RetrievalCutoff& c : rr.cutoffs) {
      out->push_back(Metric("recall" + std::to_string(c.k), c.recall));
      out->push_back(Metric("retrieval_hr" + std::to_string(c.k), c.hit_rate));
    }
    out->push_back(Count("retrieval_items", rr.items));
  }
  return Status::Ok();
}

// The settings that decide a synthetic run's batches, training and held-out alike (the stream:
// data.seed, data.batch_size, data.max_history, the catalogue; where the held-out batches start:
// data.synthetic.warmup_steps and steps, capped by train.max_steps), as text for a note.
struct SyntheticSetting {
  const char* field;
  std::string (*value)(const config::Config&);
};
std::string Num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
constexpr SyntheticSetting kSyntheticSettings[] = {
    {"data.seed", [](const config::Config& c) { return std::to_string(c.data().seed()); }},
    {"data.batch_size",
     [](const config::Config& c) { return std::to_string(c.data().batch_size()); }},
    {"data.max_history",
     [](const config::Config& c) { return std::to_string(c.data().max_history()); }},
    {"data.synthetic.num_items",
     [](const config::Config& c) { return std::to_string(c.data().synthetic().num_items()); }},
    {"data.synthetic.num_categories",
     [](const config::Config& c) { return std::to_string(c.data().synthetic().num_categories()); }},
    {"data.synthetic.zipf_alpha",
     [](const config::Config& c) { return Num(c.data().synthetic().zipf_alpha()); }},
    {"data.synthetic.warmup_steps",
     [](const config::Config& c) { return std::to_string(c.data().synthetic().warmup_steps()); }},
    {"data.synthetic.steps",
     [](const config::Config& c) { return std::to_string(c.data().synthetic().steps()); }},
    {"train.max_steps",
     [](const config::Config& c) { return std::to_string(c.train().max_steps()); }},
};

// `cfg` with the synthetic settings of the run that wrote the checkpoint at `checkpoint` (the
// config its manifest records): its held-out batches are those that follow that run's training
// batches in that run's stream, whatever this config says, so that `ips eval` reports what
// `ips train` reported. A setting that differs is noted on stderr, naming both values. A
// checkpoint without a recorded synthetic config (older ones, or one trained on a dataset) leaves
// `cfg` as it is.
StatusOr<config::Config> WithCheckpointSyntheticSettings(const config::Config& cfg,
                                                         const std::string& checkpoint) {
  IPS_ASSIGN_OR_RETURN(const CheckpointHead head, PeekCheckpoint(checkpoint));
  if (head.config_text.empty()) return cfg;
  auto recorded = ParseConfigText(head.config_text, head.dir + "/MANIFEST config");
  if (!recorded.ok() || !recorded->data().has_synthetic()) return cfg;
  std::string differ;
  for (const SyntheticSetting& s : kSyntheticSettings) {
    const std::string mine = s.value(cfg), theirs = s.value(*recorded);
    if (mine != theirs)
      differ += std::string(differ.empty() ? "" : ", ") + s.field + " " + theirs +
                " (this config: " + mine + ")";
  }
  if (differ.empty()) return cfg;
  std::cerr << "eval: " << head.dir << " was trained with " << differ
            << ": evaluating the held-out batches of that run, with its settings\n";
  config::Config out = cfg;
  *out.mutable_data()->mutable_synthetic() = recorded->data().synthetic();
  out.mutable_data()->set_seed(recorded->data().seed());
  out.mutable_data()->set_batch_size(recorded->data().batch_size());
  out.mutable_data()->set_max_history(recorded->data().max_history());
  out.mutable_train()->set_max_steps(recorded->train().max_steps());
  return out;
}

Status EvalSynthetic(const config::Config& eval_cfg, const TrainJob& eval_job,
                     const std::string& checkpoint, int64_t* step, Metrics* out) {
  if (IsSequenceModel(eval_job.trainer.model.kind))
    return FailedPreconditionError(
        "ips eval: sequence models on data.synthetic have no evaluation (i.i.d. Zipf sequences "
        "carry no sequential signal); use data.train_dir");
  IPS_ASSIGN_OR_RETURN(const config::Config cfg,
                       WithCheckpointSyntheticSettings(eval_cfg, checkpoint));
  IPS_ASSIGN_OR_RETURN(TrainJob job, TrainJobFromConfig(cfg));
  job.run.eval_batches = eval_job.run.eval_batches;
  IPS_ASSIGN_OR_RETURN(
      auto store, ps::LocalEmbeddingStore::CreateThreaded(job.tables, job.trainer.num_threads));
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  std::map<std::string, std::string> blobs;
  IPS_ASSIGN_OR_RETURN(*step,
                       Restore(cfg, job, checkpoint, nullptr, store.get(), &ctr, &seq, &blobs));
  // The held-out batches follow every batch the run trained (SyntheticSchedule::HeldOutFirst):
  // W workers from step 0 trained batches 0 .. W * (warm-up + steps) - 1, as the cluster run's
  // own evaluation took them; a run resumed onto another number of workers follows its schedule.
  IPS_ASSIGN_OR_RETURN(const SyntheticSchedule schedule,
                       SyntheticScheduleOf(checkpoint, blobs, *step));
  IPS_ASSIGN_OR_RETURN(const BinaryMetricsResult r,
                       EvaluateSyntheticHeldOut(ctr.get(), job.run, schedule));
  *out = {Count("examples", r.count), Metric("auc", r.auc), Metric("gauc", r.gauc),
          Metric("logloss", r.logloss), Metric("accuracy", r.accuracy)};
  return Status::Ok();
}

}  // namespace

int RunEvalCommand(const std::vector<std::string>& args) {
  FlagSet flags("eval");
  flags.Required("config", "Protobuf text-format config file of the run that wrote the checkpoint");
  flags.Required("checkpoint", "checkpoint root (LATEST) or one ckpt-<step> directory");
  flags.Repeated("set", "override one field: path.to.field=value");
  flags.String("metrics_out", "", "append the result as one JSON line to this file");
  flags.Int("eval_batches", 4,
            "CTR models on data.synthetic only (refused otherwise): held-out batches to "
            "evaluate (>= 1)");
  if (auto rc = ParseCommandFlags(&flags, args)) return *rc;
  // A usage error, like a bad flag: 0 batches would evaluate nothing and print auc=nan (unlike
  // `ips train`, where 0 skips the final evaluation, eval has nothing else to do).
  const int64_t eval_batches = flags.GetInt("eval_batches");
  if (eval_batches < 1 || eval_batches > std::numeric_limits<int>::max()) {
    std::cerr << "ips eval: --eval_batches must be in [1, " << std::numeric_limits<int>::max()
              << "], got " << flags.GetString("eval_batches") << "\n"
              << flags.Usage();
    return kExitUsage;
  }
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return kExitError;
  };
  auto cfg = LoadConfigForRun(flags.GetString("config"), flags.GetRepeated("set"));
  if (!cfg.ok()) return fail(cfg.status());
  auto job = TrainJobFromConfig(*cfg);
  if (!job.ok()) return fail(job.status().WithContext(flags.GetString("config")));
  // Given where nothing takes it, the flag would be ignored silently.
  if (flags.WasSet("eval_batches")) {
    if (const std::string unused = EvalBatchesUnused(*cfg, "eval"); !unused.empty())
      return UsageError(flags, unused);
  }
  job->run.eval_batches = static_cast<int>(eval_batches);
  // Opened before the evaluation, as `ips train` opens it before training: a path that cannot be
  // written fails at once, with open(2)'s reason, not after a long evaluation.
  const std::string metrics_path = flags.GetString("metrics_out");
  std::ofstream metrics_file;
  if (!metrics_path.empty()) {
    if (Status s = OpenAppendFile(metrics_path, "--metrics_out", &metrics_file); !s.ok())
      return fail(s);
  }
  const std::string checkpoint = flags.GetString("checkpoint");
  int64_t step = 0;
  Metrics metrics;
  const Status s = job->synthetic ? EvalSynthetic(*cfg, *job, checkpoint, &step, &metrics)
                                  : EvalDataset(*cfg, *job, checkpoint, &step, &metrics);
  if (!s.ok()) return fail(s);
  const std::string model = ModelKindName(job->trainer.model.kind);
  if (!metrics_path.empty()) {
    MetricsLine json("eval", model);
    json.Int("step", step);
    for (const Figure& m : metrics) {
      if (m.count)
        json.Int(m.metrics_key, m.n);
      else
        json.Decimals(m.metrics_key, m.v, 6);
    }
    json.WriteTo(&metrics_file);
    if (!metrics_file)
      return fail(DataLossError("writing --metrics_out file '" + metrics_path + "'"));
  }
  ResultLine line("eval");
  line.Add("model", model).Add("step", step);
  for (const Figure& m : metrics) line.Add(m.key, m.count ? std::to_string(m.n) : Fixed(m.v, 6));
  line.Print();
  return kExitOk;
}

}  // namespace ips
