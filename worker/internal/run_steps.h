// Internal to the training drivers (worker/trainer.cc, worker/seq_trainer.cc and the distributed
// driver launch/cluster_train.cc): the parts of a training run they share (the synthetic
// protocol's steps, a dataset run's epochs, the checkpoint blobs), so each exists once
// (and a 1-worker cluster run prints and checkpoints exactly what single-process training does).
#ifndef IPS_WORKER_INTERNAL_RUN_STEPS_H_
#define IPS_WORKER_INTERNAL_RUN_STEPS_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/progress.h"
#include "common/status.h"
#include "common/stop_signals.h"
#include "common/timer.h"
#include "worker/metrics_line.h"
#include "worker/retrieval.h"
#include "worker/trainer.h"

namespace ips::internal {

// An evaluation's metrics as JSON members (no braces): "hr<k>", "ndcg<k>" for every cut-off k
// (RankingCutoffsOf, in eval.top_k order; ranked lists only: a given dataset has none), "auc",
// "gauc", "logloss"; every value null when not `evaluated`. fixed_digits >= 0 prints that many
// decimals (the result lines: the same figures as `ips eval`'s RESULT line), else JsonNumber's 8
// significant digits.
inline std::string EvalJsonMembers(const RankingEvalResult& eval, bool evaluated,
                                   int fixed_digits = -1) {
  auto metric = [&](double v) {
    if (!evaluated) return std::string("null");
    return fixed_digits < 0 ? JsonNumber(v) : JsonFixed(v, fixed_digits);
  };
  std::string s;
  if (eval.ranked) {
    for (const RankingCutoff& c : RankingCutoffsOf(eval)) {
      const std::string k = std::to_string(c.k);
      s += "\"hr" + k + "\":" + metric(c.hr) + ",\"ndcg" + k + "\":" + metric(c.ndcg) + ",";
    }
  }
  return s + "\"auc\":" + metric(eval.auc) + ",\"gauc\":" + metric(eval.gauc) +
         ",\"logloss\":" + metric(eval.logloss);
}

// The options RunDatasetTraining and RunSeqDatasetTraining (`fn`, for the message) need.
inline Status CheckDatasetRunOptions(const char* fn, const DatasetRunOptions& o) {
  if (o.epochs < 1 || o.eval_every_epochs < 1 || o.max_steps < 0 || o.top_k < 1 ||
      o.reader.batch_size < 1 || o.log_every_steps < 1)
    return InvalidArgumentError(std::string(fn) +
                                ": epochs, eval_every_epochs, top_k, reader.batch_size and "
                                "log_every_steps must be >= 1, max_steps >= 0");
  return CheckRankingCutoffs(fn, RankingCutoffs(o));
}

// The --metrics_out lines of a training run (worker/metrics_line.h), built here for every
// writer: single-process training (RunSyntheticSteps, RunDatasetEpochs and the synthetic
// held-out evaluation of worker/trainer.cc), a cluster run's worker 0 (launch/cluster_worker.cc,
// cluster_train.cc, cluster_seq_train.cc) and the result lines of `ips train`
// (launch/train_command.cc), so the same quantity has the same name and format in each.

// A "train" line, every log_every_steps steps and after the run's last step: the trainer's step
// count (a resumed run's included), the epoch (dataset runs) or the timed steps done (synthetic
// runs: warm-up excluded, 0 in the warm-up), the mean step loss since the previous train line
// ("loss", 8 digits), the logged step's own loss ("step_loss", 17 digits: runs are compared bit
// for bit with it), the samples trained per second so far and the seconds so far (synthetic: the
// timed steps'; dataset: reading and steps, evaluations excluded), both of this process's run (not
// a resumed checkpoint's). A cluster run's worker 0 writes its own losses and time, its samples
// counting every worker's, and appends its rank and parameter-server traffic.
struct TrainLineFigures {
  int64_t step = 0;
  std::optional<int64_t> epoch;        // dataset runs (1-based)
  std::optional<int64_t> timed_steps;  // synthetic runs
  double loss = 0, step_loss = 0, samples_per_s = 0, elapsed_s = 0;
};
inline MetricsLine TrainMetricsLine(std::string_view model, const TrainLineFigures& f) {
  MetricsLine line("train", model);
  line.Int("step", f.step);
  if (f.epoch) line.Int("epoch", *f.epoch);
  if (f.timed_steps) line.Int("timed_steps", *f.timed_steps);
  line.Num("loss", f.loss)
      .Num("step_loss", f.step_loss, 17)
      .Num("samples_per_s", f.samples_per_s)
      .Num("elapsed_s", f.elapsed_s);
  return line;
}

// The step losses since the previous train line.
class LossWindow {
 public:
  void Add(double loss) {
    sum_ += loss;
    ++steps_;
  }
  bool empty() const { return steps_ == 0; }
  // Their mean (NaN when none); starts the next window.
  double Take() {
    const double mean = steps_ > 0 ? sum_ / static_cast<double>(steps_) : std::nan("");
    sum_ = 0;
    steps_ = 0;
    return mean;
  }

 private:
  double sum_ = 0;
  int64_t steps_ = 0;
};

// samples / seconds, NaN before any time has passed (null on the line).
inline double PerSecond(double samples, double seconds) {
  return seconds > 0 ? samples / seconds : std::nan("");
}

// An epoch line's EvalJsonMembers: an epoch not evaluated (a default-constructed eval) names the
// fields an evaluation of the run would have (every RankingCutoffs(options); no hr/ndcg for a
// given dataset), all null.
inline std::string EpochEvalJsonMembers(const RankingEvalResult& eval, bool evaluated,
                                        const DatasetRunOptions& options) {
  if (evaluated) return EvalJsonMembers(eval, true);
  RankingEvalResult shown;
  for (const int k : RankingCutoffs(options)) shown.cutoffs.push_back({k, 0, 0});
  shown.k = shown.cutoffs[0].k;
  shown.ranked = options.ranked_eval;
  return EvalJsonMembers(shown, false);
}

// An "epoch" line, the same for single-process training (RunDatasetEpochs) and a cluster run's
// worker 0 (launch/cluster_worker.cc): the epoch, its EpochEvalJsonMembers, mean step loss,
// throughput, the trainer's step count, what the evaluation covered and its time. That count is
// "eval_users" for ranked candidate lists (one per user) and "eval_rows" for a given dataset
// (RankingEvalResult::users holds its labelled rows); 0 in an epoch not evaluated, under the key
// an evaluation of the run would use.
inline MetricsLine EpochMetricsLine(std::string_view model, int64_t epoch,
                                    const RankingEvalResult& eval, bool evaluated,
                                    const DatasetRunOptions& options, double loss,
                                    double samples_per_s, int64_t steps) {
  const bool ranked = evaluated ? eval.ranked : options.ranked_eval;
  MetricsLine line("epoch", model);
  line.Int("epoch", epoch)
      .Members(EpochEvalJsonMembers(eval, evaluated, options))
      .Num("loss", loss)
      .Num("samples_per_s", samples_per_s)
      .Int("steps", steps)
      .Int(ranked ? "eval_users" : "eval_rows", evaluated ? eval.users : 0)
      .Num("eval_s", evaluated ? eval.seconds : 0);
  return line;
}

// The "eval" line of a synthetic run's held-out batches (single-process and a cluster run's
// worker 0) after trainer step `step`.
inline MetricsLine SyntheticEvalMetricsLine(std::string_view model, int64_t step,
                                            const BinaryMetricsResult& eval) {
  MetricsLine line("eval", model);
  line.Int("step", step)
      .Int("examples", eval.count)
      .Num("auc", eval.auc)
      .Num("gauc", eval.gauc)
      .Num("logloss", eval.logloss)
      .Num("accuracy", eval.accuracy);
  return line;
}

// The "result" line of a synthetic run: throughput (every worker's samples over the slowest
// worker's time in a cluster run), the timed steps, the batch (per worker) and the mean of the
// last 10 step losses. Single-process runs add "threads" (and the CTR held-out "auc"), cluster
// runs "workers", "ps" (and "auc") and "staleness_max".
inline MetricsLine SyntheticResultMetricsLine(std::string_view model, double samples_per_s,
                                              int64_t steps, int64_t batch, double loss) {
  MetricsLine line("result", model);
  line.Decimals("samples_per_s", samples_per_s, 1)
      .Int("steps", steps)
      .Int("batch", batch)
      .Decimals("loss", loss, 6);
  return line;
}

// The "result" line of a dataset run: epochs, the run's steps, throughput, the last epoch's mean
// step loss, the last evaluation (EvalJsonMembers, 6 decimals: the figures `ips eval` prints) and
// a MIND run's full-ranking "recall<k>" and "retrieval_hr<k>". Cluster runs add "workers", "ps"
// and "staleness_max".
inline MetricsLine DatasetResultMetricsLine(std::string_view model, int64_t epochs, int64_t steps,
                                            double samples_per_s, double loss,
                                            const RankingEvalResult& eval,
                                            const std::vector<RetrievalCutoff>& recall) {
  MetricsLine line("result", model);
  line.Int("epochs", epochs)
      .Int("steps", steps)
      .Decimals("samples_per_s", samples_per_s, 1)
      .Decimals("loss", loss, 6)
      .Members(EvalJsonMembers(eval, true, 6));
  for (const RetrievalCutoff& c : recall)
    line.Decimals("recall" + std::to_string(c.k), c.recall, 6)
        .Decimals("retrieval_hr" + std::to_string(c.k), c.hit_rate, 6);
  return line;
}

// The progress line's view of an evaluation: " hr<k>=.. ndcg<k>=.." for every cut-off, then
// " auc=.." (given: " auc=.. gauc=..").
inline std::string EvalProgressText(const RankingEvalResult& eval) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(4);
  if (eval.ranked) {
    for (const RankingCutoff& c : RankingCutoffsOf(eval))
      os << " hr" << c.k << "=" << c.hr << " ndcg" << c.k << "=" << c.ndcg;
    os << " auc=" << eval.auc;
  } else {
    os << " auc=" << eval.auc << " gauc=" << eval.gauc;
  }
  return os.str();
}

// Mean of v[begin, end); NaN when empty.
inline double Mean(const std::vector<double>& v, size_t begin, size_t end) {
  if (end <= begin) return std::nan("");
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

// The model's dropout step as the checkpoint blob "model/dropout_step" (only for models that have
// one, see models/model.h), and back.
template <typename ModelT>
void SaveDropoutStep(const ModelT& model, std::map<std::string, std::string>* blobs) {
  if (model.has_dropout_step())
    (*blobs)["model/dropout_step"] =
        PackBlob(std::vector<int64_t>{static_cast<int64_t>(model.dropout_step())});
}
template <typename ModelT>
Status RestoreDropoutStep(const std::map<std::string, std::string>& blobs, ModelT* model) {
  if (!model->has_dropout_step()) return Status::Ok();
  std::vector<int64_t> v;
  IPS_RETURN_IF_ERROR(UnpackBlob(blobs, "model/dropout_step", 1, &v));
  model->set_dropout_step(static_cast<uint64_t>(v[0]));
  return Status::Ok();
}

// The step a synthetic run starts at: its resumed checkpoint's run/synthetic_step (clamped to
// [0, train_steps]; RunSyntheticSteps reports a blob that does not fit), 0 for a fresh run. The
// batches of the steps before it are not made.
inline int64_t SyntheticFirstStep(const RunSinks& sinks, int64_t train_steps) {
  const RunCheckpointing* ckpt = sinks.checkpoint;
  if (ckpt == nullptr || ckpt->resume == nullptr) return 0;
  std::vector<int64_t> st;
  if (!UnpackBlob(*ckpt->resume, "run/synthetic_step", 1, &st).ok()) return 0;
  return std::clamp<int64_t>(st[0], 0, train_steps);
}

// Which batch of the stream slot i of a synthetic run's batches holds: for i < train_steps the
// one `schedule` gives worker 0 (this process) at step i, after them the held-out batches from
// schedule.HeldOutFirst(train_steps) on.
inline std::function<uint64_t(int64_t)> SyntheticSlotIndex(const SyntheticSchedule& schedule,
                                                           int64_t train_steps) {
  const uint64_t held_out = schedule.HeldOutFirst(train_steps);
  return [&schedule, train_steps, held_out](int64_t i) {
    return i < train_steps ? schedule.BatchIndex(i, 0)
                           : held_out + static_cast<uint64_t>(i - train_steps);
  };
}

// The training part of the peer's synthetic protocol for either trainer: resume from the
// checkpoint's run blobs, the untimed warm-up steps, then the timed steps (Step only inside the
// timer; progress line in `unit`s; a train line (TrainMetricsLine) whenever the trainer's step
// count is a multiple of log_every_steps, warm-up included, and after the last step), with
// checkpoints after every step. `batches` holds the training batches of steps [resumed step,
// warmup + steps): batch i is the one `schedule` gives worker 0 at step i, a single-process run
// being one worker (null: the single-process stream, batch i = step i, SyntheticSchedule(1)).
// Its checkpoints record the schedule (kSyntheticScheduleBlob). A resumed checkpoint must
// continue with the schedule: with a null one, a checkpoint that another number of workers
// trained (a cluster checkpoint of 2 workers trained batches 0 .. 2 * step - 1) is refused, as
// those batches would be trained again; launch/train_command.cc passes the schedule continued
// from the checkpoint (SyntheticScheduleOf + ContinuedAt). Fills r's batch, steps, losses,
// seconds, samples_per_s, loss_first10/last10; sets r->stopped and returns early when a stop was
// requested.
template <typename TrainerT, typename BatchT, typename ResultT>
Status RunSyntheticSteps(TrainerT* trainer, const std::vector<BatchT>& batches,
                         const SyntheticRunOptions& options, const RunSinks& sinks,
                         const char* unit, ResultT* r,
                         const SyntheticSchedule* schedule = nullptr) {
  const int train_batches = options.warmup_steps + options.steps;
  r->batch = options.batch;
  r->steps = options.steps;
  r->losses.reserve(static_cast<size_t>(train_batches));
  const SyntheticSchedule one_worker(1);
  if (schedule == nullptr) schedule = &one_worker;
  // Resume: the trainer continues at the saved step with the saved losses.
  const RunCheckpointing* ckpt = sinks.checkpoint;
  if (ckpt != nullptr && ckpt->resume != nullptr) {
    std::vector<int64_t> st;
    IPS_RETURN_IF_ERROR(UnpackBlob(*ckpt->resume, "run/synthetic_step", 1, &st));
    IPS_RETURN_IF_ERROR(UnpackBlob(*ckpt->resume, "run/losses", 0, &r->losses));
    if (st[0] < 0 || st[0] > train_batches || static_cast<int64_t>(r->losses.size()) != st[0])
      return DataLossError("checkpoint blob 'run/synthetic_step' = " + std::to_string(st[0]) +
                           " does not fit a run of " + std::to_string(train_batches) +
                           " steps with " + std::to_string(r->losses.size()) + " losses");
    if (schedule == &one_worker) {
      IPS_ASSIGN_OR_RETURN(const SyntheticSchedule saved,
                           SyntheticScheduleOf("the resumed checkpoint", *ckpt->resume, st[0]));
      if (saved.ContinuedAt(st[0], 1) != one_worker)
        return FailedPreconditionError(
            "the resumed checkpoint (step " + std::to_string(st[0]) + ") was trained by " +
            saved.Describe() +
            ": its batches are not the single-process stream's, which this "
            "run trains (batch index = step); continue it with `ips train --resume`");
    }
    trainer->set_steps(st[0]);
    IPS_RETURN_IF_ERROR(RestoreDropoutStep(*ckpt->resume, &trainer->model()));
  }
  CheckpointTrigger trigger(ckpt);
  auto blobs = [&] {
    std::map<std::string, std::string> b;
    b["run/synthetic_step"] = PackBlob(std::vector<int64_t>{trainer->steps()});
    b["run/losses"] = PackBlob(r->losses);
    b[kSyntheticScheduleBlob] = EncodeSyntheticSchedule(*schedule);
    SaveDropoutStep(trainer->model(), &b);
    return b;
  };
  const int first = static_cast<int>(trainer->steps());
  const int first_timed = std::max(0, first - options.warmup_steps);
  double timed = 0;  // the timed steps' seconds so far
  LossWindow window;
  // After trainer step i + 1 (loss: its loss; timed_done: the timed steps done).
  auto after_step = [&](int i, double loss, int timed_done) -> Status {
    r->losses.push_back(loss);
    window.Add(loss);
    const int done = i + 1;
    if (sinks.metrics_out != nullptr &&
        (done % options.log_every_steps == 0 || done == train_batches)) {
      TrainLineFigures f;
      f.step = trainer->steps();
      f.timed_steps = timed_done;
      f.loss = window.Take();
      f.step_loss = loss;
      f.samples_per_s =
          PerSecond(static_cast<double>(timed_done - first_timed) * options.batch, timed);
      f.elapsed_s = timed;
      TrainMetricsLine(trainer->model().name(), f).WriteTo(sinks.metrics_out);
    }
    if (sinks.on_step) sinks.on_step(trainer->steps(), loss);
    return trigger.AfterStep(trainer->steps(), done == train_batches, blobs);
  };
  for (int i = first; i < options.warmup_steps; ++i) {
    IPS_ASSIGN_OR_RETURN(const double loss, trainer->Step(ViewOf(batches[i])));
    IPS_RETURN_IF_ERROR(after_step(i, loss, 0));
    if (trigger.StopRequested()) {
      r->stopped = true;
      return Status::Ok();
    }
  }

  std::unique_ptr<ProgressLine> progress;
  if (sinks.progress != nullptr) {
    progress = std::make_unique<ProgressLine>(
        "train", static_cast<int64_t>(options.steps) * options.batch, unit, sinks.progress);
    // A resumed run's timed steps so far count in the position, not in this process's rate.
    progress->StartFrom(static_cast<int64_t>(first_timed) * options.batch);
  }
  Timer timer;  // the timed region: the steps themselves (logging is outside it)
  size_t progress_begin = r->losses.size();  // the losses the progress line's mean covers
  for (int s = first_timed; s < options.steps; ++s) {
    const auto view = ViewOf(batches[static_cast<size_t>(options.warmup_steps + s)]);
    timer.Reset();
    auto loss = trainer->Step(view);
    timed += timer.Seconds();
    if (!loss.ok()) return loss.status();
    const int done = s + 1;
    IPS_RETURN_IF_ERROR(after_step(options.warmup_steps + s, *loss, done));
    if (progress) {
      std::ostringstream extra;
      extra << "loss=" << std::fixed << std::setprecision(4)
            << Mean(r->losses, progress_begin, r->losses.size());
      progress->Update(static_cast<int64_t>(done) * options.batch, extra.str());
    }
    if (done % options.log_every_steps == 0) progress_begin = r->losses.size();
    if (trigger.StopRequested() && done < options.steps) {
      r->stopped = true;
      r->seconds = timed;
      return Status::Ok();
    }
  }
  r->seconds = timed;
  r->samples_per_s =
      timed > 0 ? static_cast<double>(options.steps - first_timed) * options.batch / timed : 0;
  r->loss_first10 = Mean(r->losses, 0, std::min<size_t>(10, r->losses.size()));
  r->loss_last10 =
      Mean(r->losses, r->losses.size() - std::min<size_t>(10, r->losses.size()), r->losses.size());
  if (progress) {
    std::ostringstream extra;
    extra << "loss=" << std::fixed << std::setprecision(4) << r->loss_last10;
    progress->Finish(extra.str());
  }
  return Status::Ok();
}

// A synthetic run's held-out evaluation: Predict over `count` batches, batch_at(e) giving the e-th
// (from SyntheticSchedule::HeldOutFirst on), AUC / GAUC / logloss / accuracy. Abandoned
// (EvaluationAbandonedError) once *stop is set (checked before every batch; may be null).
// Single-process `ips train` and worker 0 of its mpirun form.
inline StatusOr<BinaryMetricsResult> EvaluateSyntheticBatches(
    Trainer* trainer, int count, const std::function<StatusOr<const CtrBatch*>(int)>& batch_at,
    const std::atomic<bool>* stop) {
  BinaryMetrics metrics;
  std::vector<float> probs;
  for (int e = 0; e < count; ++e) {
    if (StopSet(stop)) return EvaluationAbandonedError();
    IPS_ASSIGN_OR_RETURN(const CtrBatch* b, batch_at(e));
    probs.resize(static_cast<size_t>(b->batch));
    IPS_RETURN_IF_ERROR(trainer->Predict(ViewOf(*b), probs.data()));
    IPS_RETURN_IF_ERROR(metrics.Add(probs.data(), b->label.data(), nullptr, b->batch));
  }
  return metrics.Compute();
}

// The epochs of a dataset run for either trainer: resume from the checkpoint's run blobs (epoch,
// reader position, counters and the epoch's loss sum), each epoch's steps (a progress line in
// `unit`s with the loss of the last log_every_steps steps, a checkpoint trigger after every
// step), evaluation every eval_every_epochs epochs and after the last, a train line
// (TrainMetricsLine) whenever the trainer's step count is a multiple of log_every_steps and after
// the run's last step, and an epoch line (EpochMetricsLine) per epoch. `source` owns the reader and
// the step:
//   int64_t per_epoch() const;                    examples (or sequences) per epoch
//   void StartEpoch(int epoch);
//   Status SkipTo(int epoch, int64_t position);   a checkpoint's reader position
//   int64_t Position(int64_t epoch_samples) const;  the reader's position now, for a checkpoint
//   StatusOr<bool> Step(double* loss, int64_t* samples);  one training step; false at epoch end
//   StatusOr<RankingEvalResult> Evaluate(const std::atomic<bool>* stop);  abandoned once *stop
//                                                 is set (EvaluationAbandonedError)
// A stop requested during an evaluation abandons it: the run saves the checkpoint of the epoch's
// last step (unless saved already: the run's last step always is) and returns stopped, as a stop
// after that step would have; a resumed run re-enters the epoch at its end and evaluates again.
template <typename TrainerT, typename SourceT>
StatusOr<DatasetRunResult> RunDatasetEpochs(TrainerT* trainer, SourceT* source,
                                            const DatasetRunOptions& options, const RunSinks& sinks,
                                            const char* unit) {
  int64_t total = source->per_epoch() * options.epochs;
  if (options.max_steps > 0)
    total = std::min<int64_t>(total, options.max_steps * options.reader.batch_size);
  std::unique_ptr<ProgressLine> progress;
  if (sinks.progress != nullptr)
    progress = std::make_unique<ProgressLine>("train", total, unit, sinks.progress);

  DatasetRunResult r;
  // Resume: the saved epoch, reader position, counters and the epoch's loss accumulators.
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
    IPS_RETURN_IF_ERROR(RestoreDropoutStep(*ckpt->resume, &trainer->model()));
    r.steps = resume_state[2];
    r.samples = resume_state[3];
    // The progress line's position counts the resumed samples, its rate only this process's.
    if (progress) progress->StartFrom(r.samples);
  }
  // Throughput counts what this process trains, not the resumed checkpoint's steps and samples.
  const int64_t first_steps = r.steps, first_samples = r.samples;
  CheckpointTrigger trigger(ckpt);
  Timer timer;
  bool stop = false;
  const char* model = trainer->model().name();
  LossWindow train_window;  // the losses since the last train line
  // The train line after the step of loss `loss` in epoch e (0-based).
  auto train_line = [&](int e, double loss) {
    TrainLineFigures f;
    f.step = trainer->steps();
    f.epoch = e + 1;
    f.loss = train_window.Take();
    f.step_loss = loss;
    f.elapsed_s = r.train_seconds + timer.Seconds();
    f.samples_per_s = PerSecond(static_cast<double>(r.samples - first_samples), f.elapsed_s);
    TrainMetricsLine(model, f).WriteTo(sinks.metrics_out);
  };
  double last_loss = 0;  // of the last step
  const int first_epoch = resume_state.empty() ? 0 : static_cast<int>(resume_state[0]);
  for (int e = first_epoch; e < options.epochs && !stop; ++e) {
    EpochResult er;
    er.epoch = e + 1;
    double loss_sum = 0, window_sum = 0;
    int64_t epoch_samples = 0, window_steps = 0, samples_here = 0;
    if (e == first_epoch && !resume_state.empty()) {
      IPS_RETURN_IF_ERROR(source->SkipTo(e, resume_state[1]).WithContext("checkpoint reader"));
      er.steps = resume_state[4];
      epoch_samples = resume_state[5];
      loss_sum = resume_loss[0];
    } else {
      source->StartEpoch(e);
    }
    auto blobs = [&] {
      std::map<std::string, std::string> b;
      b["run/dataset"] =
          PackBlob(std::vector<int64_t>{e, source->Position(epoch_samples), r.steps, r.samples,
                                        er.steps, epoch_samples, trainer->steps()});
      b["run/loss_sum"] = PackBlob(std::vector<double>{loss_sum});
      SaveDropoutStep(trainer->model(), &b);
      return b;
    };
    timer.Reset();
    while (true) {
      if (options.max_steps > 0 && r.steps >= options.max_steps) {
        stop = true;
        break;
      }
      double loss = 0;
      int64_t samples = 0;
      StatusOr<bool> stepped = source->Step(&loss, &samples);
      if (!stepped.ok()) return stepped.status().WithContext("epoch " + std::to_string(e + 1));
      if (!*stepped) break;
      loss_sum += loss;
      window_sum += loss;
      ++window_steps;
      ++er.steps;
      ++r.steps;
      epoch_samples += samples;
      samples_here += samples;
      r.samples += samples;
      if (progress && (window_steps >= options.log_every_steps || er.steps == 1)) {
        std::ostringstream extra;
        extra << "epoch " << (e + 1) << "/" << options.epochs << " loss=" << std::fixed
              << std::setprecision(4) << window_sum / static_cast<double>(window_steps);
        progress->Update(r.samples, extra.str());
        window_sum = 0;
        window_steps = 0;
      }
      train_window.Add(loss);
      last_loss = loss;
      if (sinks.metrics_out != nullptr && trainer->steps() % options.log_every_steps == 0)
        train_line(e, loss);
      if (sinks.on_step) sinks.on_step(trainer->steps(), loss);
      IPS_RETURN_IF_ERROR(trigger.AfterStep(trainer->steps(), false, blobs));
      if (trigger.StopRequested()) {
        r.stopped = true;
        r.epochs = e + 1;
        return r;
      }
    }
    // The run's last step: its train line (unless its step count was a multiple), and the final
    // state (before the last evaluation) is always saved: `ips eval` and `ips export` read it.
    if (stop || e + 1 == options.epochs) {
      if (sinks.metrics_out != nullptr && !train_window.empty()) train_line(e, last_loss);
      IPS_RETURN_IF_ERROR(trigger.AfterStep(trainer->steps(), true, blobs));
    }
    const double epoch_seconds = timer.Seconds();
    r.train_seconds += epoch_seconds;
    r.epochs = e + 1;
    er.loss = er.steps > 0 ? loss_sum / static_cast<double>(er.steps) : std::nan("");
    er.samples_per_s = epoch_seconds > 0 ? static_cast<double>(samples_here) / epoch_seconds : 0;
    const bool last = stop || e + 1 == options.epochs;
    if ((e + 1) % options.eval_every_epochs == 0 || last) {
      const std::atomic<bool>* stop_flag = ckpt != nullptr ? ckpt->stop : nullptr;
      StatusOr<RankingEvalResult> eval = source->Evaluate(stop_flag);
      if (!eval.ok() && trigger.StopRequested() && IsEvaluationAbandoned(eval.status())) {
        // The evaluation only read the model and tables: the state is the step boundary the
        // blobs describe (epoch e at its end), the same checkpoint a stop after the step saves.
        IPS_RETURN_IF_ERROR(trigger.AfterStep(trainer->steps(), true, blobs));
        r.stopped = true;
        r.epochs = e + 1;
        return r;
      }
      if (!eval.ok()) return eval.status();
      er.eval = *eval;
      er.evaluated = true;
      r.eval = er.eval;
    }
    if (progress) {
      std::ostringstream extra;
      extra << "epoch " << (e + 1) << "/" << options.epochs << " loss=" << std::fixed
            << std::setprecision(4) << er.loss;
      if (er.evaluated) extra << EvalProgressText(er.eval);
      progress->Update(r.samples, extra.str());
    }
    if (sinks.metrics_out != nullptr)
      EpochMetricsLine(model, er.epoch, er.eval, er.evaluated, options, er.loss, er.samples_per_s,
                       trainer->steps())
          .WriteTo(sinks.metrics_out);
    r.loss = er.loss;
    r.per_epoch.push_back(er);
  }
  r.steps_run = r.steps - first_steps;
  r.samples_per_s =
      r.train_seconds > 0 ? static_cast<double>(r.samples - first_samples) / r.train_seconds : 0;
  if (progress) {
    std::ostringstream extra;
    extra << "loss=" << std::fixed << std::setprecision(4) << r.loss;
    progress->Finish(extra.str());
  }
  return r;
}

}  // namespace ips::internal

#endif  // IPS_WORKER_INTERNAL_RUN_STEPS_H_
