// Checkpointed runs of `ips train` (worker/trainer.h RunCheckpointing): a run stopped after k
// steps (the SIGTERM path: the stop flag set between steps) and resumed from its checkpoint in
// fresh objects continues with a loss sequence bit-identical to an uninterrupted run's and ends
// with the same evaluation, for DIN, DIEN (aux negatives drawn from (seed, step)) and SASRec
// (dropout step) on a converted dataset and DIN on the synthetic protocol. The CLI part runs the
// `ips` binary: `ips eval` of the final checkpoint reproduces the trainer's final evaluation
// numbers, SIGTERM stops with exit code 3 and a checkpoint that --resume continues (also one sent
// before the first step, and one during an evaluation, which is abandoned), a corrupt checkpoint
// is rejected naming the file, bad flags exit 2. `--resume DIR` after a kill between the publishing
// rename of a checkpoint and the update of LATEST continues from the newest checkpoint, bit for
// bit; a mid-epoch resume with another data.seed, data.shuffle, data.batch_size or --shards
// layout is refused, one at an epoch's end accepted.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/progress.h"
#include "common/random.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "tests/models/trainer_test_util.h"
#include "tests/testing/status_matchers.h"
#include "worker/checkpoint.h"
#include "worker/dataset_builder.h"
#include "worker/seq_trainer.h"
#include "worker/trainer.h"

namespace ips {
namespace {

constexpr char kDinConfig[] = R"(
version: 1
name: "resume_din"
data { batch_size: 32 max_history: 10 seed: 3 }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: DICE }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 4 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 4 initializer { type: XAVIER_NORMAL } }
train { epochs: 2 num_threads: 1 seed: 0 }
eval { top_k: 10 every_epochs: 1 max_users: 0 }
)";

constexpr char kDienConfig[] = R"(
version: 1
name: "resume_dien"
data { batch_size: 32 max_history: 10 seed: 3 }
model { type: DIEN embedding_dim: 4 rnn_hidden: 8 cell: GRU aux_loss_weight: 1.0
        attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: PRELU }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 4 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 4 initializer { type: XAVIER_NORMAL } }
train { epochs: 2 num_threads: 1 seed: 0 }
eval { top_k: 10 every_epochs: 1 max_users: 0 }
)";

constexpr char kSasrecConfig[] = R"(
version: 1
name: "resume_sasrec"
data { batch_size: 32 max_history: 10 seed: 3 }
model { type: SASREC embedding_dim: 8 num_blocks: 1 num_heads: 1 dropout: 0.3 }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 8 initializer { type: XAVIER_NORMAL } }
train { epochs: 2 num_threads: 1 seed: 0 }
eval { top_k: 10 every_epochs: 1 max_users: 0 }
)";

constexpr char kSyntheticConfig[] = R"(
version: 1
name: "resume_synthetic"
data {
  batch_size: 32
  max_history: 8
  seed: 0
  synthetic { num_items: 2000 num_categories: 50 zipf_alpha: 1.1 warmup_steps: 3 steps: 30 }
}
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: DICE }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 4 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 4 initializer { type: XAVIER_NORMAL } }
train { epochs: 1 num_threads: 1 seed: 0 }
)";

std::string TempRoot(const std::string& name) {
  const std::string dir =
      ::testing::TempDir() + "/resume_test_" + name + "_" + std::to_string(::getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  return dir;
}

// The planted seqrec dataset of trainer_test.
std::string MakeDataset(const std::string& root) {
  return testing_util::MakePlantedGroupsDataset(root, 10);
}

// MakeDataset's input (root/in.txt) converted again into root/ds2 with 2 shards: the same
// examples, another layout (the order of an epoch runs over every shard's rows in turn).
void ConvertInTwoShards(const std::string& root) {
  ConvertOptions two;
  two.format = "seqrec";
  two.input = root + "/in.txt";
  two.output = root + "/ds2";
  two.max_history = 10;
  two.shards = 2;
  ASSERT_OK(ConvertDataset(two).status());
}

// One single-process run as `ips train` does it, in fresh objects: stop_after > 0 raises the stop
// flag after that step (SIGTERM's path); `resume` restores a checkpoint first.
struct RunOutcome {
  std::vector<std::pair<int64_t, double>> losses;  // (step, loss) of every step run here
  DatasetRunResult dataset;
  SyntheticRunResult synthetic;
  bool stopped = false;
};

// The dataset, store, trainer and checkpoint content of one run as `ips train` builds them: a
// run on a dataset records its vocabulary (and layout) in its checkpoints.
struct JobSetup {
  std::unique_ptr<Dataset> data;
  TrainJob job;
  std::unique_ptr<ps::LocalEmbeddingStore> store;
  std::unique_ptr<Trainer> ctr;
  std::unique_ptr<SeqTrainer> seq;
  CheckpointContent content;
};

std::unique_ptr<JobSetup> SetUpJob(const std::string& config_text, const std::string& train_dir) {
  auto out = std::make_unique<JobSetup>();
  auto cfg = ParseConfigText(config_text, "config");
  EXPECT_OK(cfg.status());
  if (!train_dir.empty()) cfg->mutable_data()->set_train_dir(train_dir);
  auto job = TrainJobFromConfig(*cfg);
  EXPECT_OK(job.status());
  out->job = *job;
  if (!out->job.synthetic) {
    auto d = Dataset::Open(train_dir);
    EXPECT_OK(d.status());
    out->data = std::move(*d);
    EXPECT_OK(FitJobToDataset(*out->data, &out->job));
  }
  auto store = ps::LocalEmbeddingStore::Create(out->job.tables);
  EXPECT_OK(store.status());
  out->store = std::move(*store);
  const std::string text = ConfigToText(*cfg);
  if (!IsSequenceModel(out->job.trainer.model.kind)) {
    auto t = Trainer::Create(out->job.trainer, out->store.get());
    EXPECT_OK(t.status());
    out->ctr = std::move(*t);
    auto c = TrainerCheckpointContent(&out->ctr->model(), &out->ctr->dense_optimizer(),
                                      out->store.get(), text);
    EXPECT_OK(c.status());
    out->content = *c;
  } else {
    auto model = CreateSeqModel(out->job.trainer.model);
    EXPECT_OK(model.status());
    SeqTrainerOptions o;
    o.dense_optimizer = out->job.trainer.dense_optimizer;
    o.num_threads = 1;
    auto t = SeqTrainer::Create(o, out->store.get(), std::move(*model));
    EXPECT_OK(t.status());
    out->seq = std::move(*t);
    auto c = SeqTrainerCheckpointContent(out->seq.get(), out->store.get(), text);
    EXPECT_OK(c.status());
    out->content = *c;
  }
  if (out->data != nullptr)
    out->content.vocabulary = VocabularyOf(train_dir, out->data->manifest());
  return out;
}

// Restores `resume` as `ips train --resume` does (a dataset run checks that the saved position
// means the same examples under this config); the step.
StatusOr<int64_t> RestoreForResume(JobSetup* s, const std::string& resume,
                                   std::map<std::string, std::string>* blobs) {
  if (s->data != nullptr)
    s->content.resume_examples_per_epoch = TrainingRowsPerEpoch(*s->data, s->job);
  return LoadCheckpoint(resume, s->content, blobs);
}

RunOutcome RunJob(const std::string& config_text, const std::string& train_dir,
                  const std::string& ckpt_dir, const std::string& resume, int64_t stop_after,
                  int64_t every_steps = 0, bool incremental = false) {
  RunOutcome out;
  std::unique_ptr<JobSetup> setup = SetUpJob(config_text, train_dir);
  TrainJob* job = &setup->job;
  const Dataset* data = setup->data.get();
  Trainer* ctr = setup->ctr.get();
  SeqTrainer* seq = setup->seq.get();
  RunCheckpointing ck;
  std::map<std::string, std::string> blobs;
  int64_t resumed_step = -1;
  if (!resume.empty()) {
    auto step = RestoreForResume(setup.get(), resume, &blobs);
    EXPECT_OK(step.status());
    if (step.ok()) resumed_step = *step;
    ck.resume = &blobs;
  }
  ck.content = setup->content;
  CheckpointOptions co;
  co.dir = ckpt_dir;
  co.keep_last = 100;
  co.incremental = incremental;
  co.full_every = 1000;
  auto writer = CheckpointWriter::Create(co);
  EXPECT_OK(writer.status());
  // As `ips train`: holding DIR/LOCK, refuse a DIR this run's checkpoints would mix with.
  EXPECT_OK(CheckCheckpointDirForRun(ckpt_dir, resumed_step));
  ck.writer = writer->get();
  ck.every_steps = every_steps;
  std::atomic<bool> stop{false};
  ck.stop = &stop;
  RunSinks sinks;
  sinks.checkpoint = &ck;
  sinks.on_step = [&](int64_t step, double loss) {
    out.losses.emplace_back(step, loss);
    if (stop_after > 0 && step == stop_after) stop.store(true);
  };
  if (job->synthetic && seq != nullptr) {
    auto r = RunSeqSyntheticTraining(seq, job->run, sinks);
    EXPECT_OK(r.status());
    out.synthetic.losses = r->losses;
    out.synthetic.loss_first10 = r->loss_first10;
    out.synthetic.loss_last10 = r->loss_last10;
    out.stopped = r->stopped;
  } else if (job->synthetic) {
    auto r = RunSyntheticTraining(ctr, job->run, sinks);
    EXPECT_OK(r.status());
    out.synthetic = *r;
    out.stopped = r->stopped;
  } else {
    auto r = ctr != nullptr ? RunDatasetTraining(ctr, *data, job->dataset, sinks)
                            : RunSeqDatasetTraining(seq, *data, job->dataset, sinks);
    EXPECT_OK(r.status());
    out.dataset = *r;
    out.stopped = r->stopped;
  }
  return out;
}

// Uninterrupted vs stopped after k steps + resumed: the losses after k and the final results.
void ExpectBitwiseResume(const std::string& name, const char* config, bool dataset, int64_t k,
                         int64_t every_steps = 0, bool incremental = false) {
  const std::string root = TempRoot(name);
  const std::string ds = dataset ? MakeDataset(root) : "";
  const RunOutcome full = RunJob(config, ds, root + "/full", "", 0);
  ASSERT_FALSE(full.stopped);
  ASSERT_GT(static_cast<int64_t>(full.losses.size()), k + 5) << "the run is too short for k";
  const RunOutcome first = RunJob(config, ds, root + "/part", "", k, every_steps, incremental);
  ASSERT_TRUE(first.stopped);
  ASSERT_EQ(static_cast<int64_t>(first.losses.size()), k);
  if (incremental) {
    // The stop checkpoint is the tip of a chain of incremental ones.
    auto reader = CheckpointReader::Open(root + "/part");
    ASSERT_OK(reader.status());
    EXPECT_EQ((*reader)->step(), k);
    EXPECT_GT((*reader)->chain().size(), 2u);
  }
  const RunOutcome second = RunJob(config, ds, root + "/part2", root + "/part", 0);
  ASSERT_FALSE(second.stopped);
  ASSERT_EQ(first.losses.size() + second.losses.size(), full.losses.size());
  for (size_t i = 0; i < full.losses.size(); ++i) {
    const auto& got =
        i < first.losses.size() ? first.losses[i] : second.losses[i - first.losses.size()];
    ASSERT_EQ(got.first, full.losses[i].first) << "step index " << i;
    // Bit for bit: == on doubles, no tolerance.
    ASSERT_EQ(got.second, full.losses[i].second) << name << ": loss of step " << got.first;
  }
  if (dataset) {
    const DatasetRunResult& a = full.dataset;
    const DatasetRunResult& b = second.dataset;
    EXPECT_EQ(a.steps, b.steps);
    EXPECT_EQ(a.samples, b.samples);
    // Throughput is over what the resumed run trained itself: its samples (not the run's
    // total) in its own seconds.
    EXPECT_EQ(a.steps_run, a.steps);
    EXPECT_EQ(b.steps_run, a.steps - k);
    EXPECT_EQ(first.dataset.steps_run, 0) << "a stopped run returns before its result";
    EXPECT_NEAR(a.samples_per_s * a.train_seconds, static_cast<double>(a.samples), 0.5);
    const double resumed_samples = b.samples_per_s * b.train_seconds;
    EXPECT_GT(resumed_samples, 0.0);
    EXPECT_LE(resumed_samples, static_cast<double>(a.samples - k) + 0.5)
        << "the k steps before the resume trained at least one sample each";
    EXPECT_EQ(a.loss, b.loss);  // the last epoch's mean loss, accumulators restored
    EXPECT_EQ(a.eval.users, b.eval.users);
    EXPECT_EQ(a.eval.hr, b.eval.hr);
    EXPECT_EQ(a.eval.ndcg, b.eval.ndcg);
    EXPECT_EQ(a.eval.auc, b.eval.auc);
    EXPECT_EQ(a.eval.gauc, b.eval.gauc);
    EXPECT_EQ(a.eval.logloss, b.eval.logloss);
  } else {
    EXPECT_EQ(full.synthetic.losses, second.synthetic.losses);
    EXPECT_EQ(full.synthetic.loss_first10, second.synthetic.loss_first10);
    EXPECT_EQ(full.synthetic.loss_last10, second.synthetic.loss_last10);
    EXPECT_EQ(full.synthetic.eval.auc, second.synthetic.eval.auc);
    EXPECT_EQ(full.synthetic.eval.logloss, second.synthetic.eval.logloss);
  }
  (void)std::system(("rm -rf " + root).c_str());
}

// k inside the first epoch (mid-epoch reader position) and inside the second.
TEST(Resume, DinDatasetMidFirstEpochIsBitwise) {
  ExpectBitwiseResume("din_a", kDinConfig, true, 17);
}
TEST(Resume, DinDatasetSecondEpochIsBitwise) {
  ExpectBitwiseResume("din_b", kDinConfig, true, 140);
}
TEST(Resume, DinDatasetFromAnIncrementalChainIsBitwise) {
  ExpectBitwiseResume("din_inc", kDinConfig, true, 47, 10, true);
}
TEST(Resume, DienDatasetAuxNegativesAreBitwise) {
  ExpectBitwiseResume("dien", kDienConfig, true, 23);
}
TEST(Resume, SasrecDatasetDropoutIsBitwise) {
  ExpectBitwiseResume("sasrec", kSasrecConfig, true, 9);
}
TEST(Resume, DinSyntheticWarmupAndTimedStepsAreBitwise) {
  ExpectBitwiseResume("syn_a", kSyntheticConfig, false, 2);   // inside the warm-up
  ExpectBitwiseResume("syn_b", kSyntheticConfig, false, 20);  // inside the timed steps
}

constexpr char kSasrecSyntheticConfig[] = R"(
version: 1
name: "resume_sasrec_synthetic"
data {
  batch_size: 16
  max_history: 8
  seed: 0
  synthetic { num_items: 2000 num_categories: 50 zipf_alpha: 1.1 warmup_steps: 3 steps: 20 }
}
model { type: SASREC embedding_dim: 8 num_blocks: 1 num_heads: 1 dropout: 0.3 }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 8 initializer { type: XAVIER_NORMAL } }
train { epochs: 1 num_threads: 1 seed: 0 }
)";

TEST(Resume, SasrecSyntheticIsBitwise) {
  ExpectBitwiseResume("sasrec_syn", kSasrecSyntheticConfig, false, 11);
}

// RunSyntheticTraining trains the single-process stream (batch i at step i). A checkpoint that 2
// workers wrote (its "cluster/layout" blob; they trained batches 0 .. 2 * step - 1) used to
// continue there silently, training the cluster's batches again; it is refused, naming the
// workers (`ips train --resume` continues it on the batches the cluster left,
// tests/cli/synthetic_resume_mpi_test.cc).
TEST(Resume, SyntheticRunRefusesACheckpointOfAnotherNumberOfWorkers) {
  const std::string root = TempRoot("syn_layout");
  ASSERT_TRUE(RunJob(kSyntheticConfig, "", root + "/part", "", 6).stopped);
  std::unique_ptr<JobSetup> setup = SetUpJob(kSyntheticConfig, "");
  std::map<std::string, std::string> blobs;
  ASSERT_OK(RestoreForResume(setup.get(), root + "/part", &blobs).status());
  blobs.erase("run/synthetic_schedule");  // as a cluster checkpoint written before it existed
  blobs["cluster/layout"] = PackBlob(std::vector<int64_t>{1, 2});
  RunCheckpointing ck;
  ck.content = setup->content;
  ck.resume = &blobs;
  RunSinks sinks;
  sinks.checkpoint = &ck;
  auto r = RunSyntheticTraining(setup->ctr.get(), setup->job.run, sinks);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("was trained by 2 workers from step 0"), std::string::npos)
      << r.status();
  (void)std::system(("rm -rf " + root).c_str());
}

// ---- The batch schedule of a synthetic run (worker/synthetic_batches.h) ----------------------

TEST(SyntheticSchedule, ContinuesTheStreamAcrossWorkerCountsWithoutRepeatsOrGaps) {
  // 2 workers from step 0, 1 from step 10 (a single process), 3 from step 15.
  const SyntheticSchedule s =
      SyntheticSchedule(2).ContinuedAt(10, 1).ContinuedAt(15, 3).ContinuedAt(15, 3);
  EXPECT_EQ(s.Describe(), "2 workers from step 0, 1 from step 10, 3 from step 15");
  EXPECT_EQ(s.BatchIndex(0, 1), 1u);
  EXPECT_EQ(s.BatchIndex(9, 1), 19u);
  EXPECT_EQ(s.BatchIndex(10, 0), 20u);
  EXPECT_EQ(s.BatchIndex(14, 0), 24u);
  EXPECT_EQ(s.BatchIndex(15, 2), 27u);
  const int64_t train_steps = 20;
  std::vector<int> trained(100, 0);
  for (int64_t i = 0; i < train_steps; ++i) {
    const int workers = i < 10 ? 2 : i < 15 ? 1 : 3;
    for (int w = 0; w < workers; ++w) ++trained[s.BatchIndex(i, w)];
  }
  const uint64_t held_out = s.HeldOutFirst(train_steps);
  EXPECT_EQ(held_out, 60u);
  for (size_t b = 0; b < trained.size(); ++b) {
    EXPECT_LE(trained[b], 1) << "batch " << b;
    EXPECT_EQ(trained[b], b < 20 + 5 + 15 ? 1 : 0) << "batch " << b;
  }
  // The same number of workers continues the schedule unchanged; a part that trained nothing is
  // replaced.
  EXPECT_EQ(SyntheticSchedule(2).ContinuedAt(7, 2), SyntheticSchedule(2));
  EXPECT_EQ(SyntheticSchedule(2).ContinuedAt(0, 1), SyntheticSchedule(1));
  EXPECT_EQ(SyntheticSchedule(2).ContinuedAt(5, 1).ContinuedAt(5, 3).Describe(),
            "2 workers from step 0, 3 from step 5");
  EXPECT_EQ(SyntheticSchedule(2).ContinuedAt(5, 1).ContinuedAt(5, 2), SyntheticSchedule(2));
  // One worker throughout: the single-process stream and its held-out batches.
  EXPECT_EQ(SyntheticSchedule(1).BatchIndex(7, 0), 7u);
  EXPECT_EQ(SyntheticSchedule(1).HeldOutFirst(23), 23u);
  EXPECT_EQ(SyntheticSchedule(4).HeldOutFirst(23), 92u);
}

TEST(SyntheticSchedule, CheckpointBlobRoundTripsAndOlderCheckpointsReadAsTheirLayout) {
  const SyntheticSchedule s = SyntheticSchedule(2).ContinuedAt(10, 1);
  std::map<std::string, std::string> blobs = {{kSyntheticScheduleBlob, EncodeSyntheticSchedule(s)}};
  auto read = SyntheticScheduleOf("ck", blobs, 12);
  ASSERT_OK(read.status());
  EXPECT_EQ(*read, s);
  // A part after the checkpoint's step, a malformed blob: DATA_LOSS naming the checkpoint.
  auto after = SyntheticScheduleOf("ck", blobs, 9);
  EXPECT_EQ(after.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(after.status().message().find("ck: checkpoint blob 'run/synthetic_schedule' starts a "
                                          "part at step 10, after the checkpoint's step 9"),
            std::string::npos)
      << after.status();
  blobs[kSyntheticScheduleBlob] = "abc";
  EXPECT_EQ(SyntheticScheduleOf("ck", blobs, 12).status().code(), StatusCode::kDataLoss);
  // Without the blob: the cluster's layout (2 workers), or one worker.
  EXPECT_EQ(
      *SyntheticScheduleOf("ck", {{"cluster/layout", PackBlob(std::vector<int64_t>{1, 2})}}, 12),
      SyntheticSchedule(2));
  EXPECT_EQ(*SyntheticScheduleOf("ck", {}, 12), SyntheticSchedule(1));
}

// The stop message's advice: the checkpoint.dir to set unless the config file sets it.
TEST(SyntheticSchedule, ContinueAdviceNamesACheckpointDirTheConfigFileDoesNotSet) {
  EXPECT_EQ(ContinueAdvice("/tmp/ck", "checkpoint { dir: \"/tmp/ck\" }"), "--resume /tmp/ck");
  EXPECT_EQ(ContinueAdvice("/tmp/ck", "checkpoint { dir: \"/tmp/other\" }"),
            "--resume /tmp/ck --set checkpoint.dir=/tmp/ck");
  EXPECT_EQ(ContinueAdvice("/tmp/ck", "version: 1"),
            "--resume /tmp/ck --set checkpoint.dir=/tmp/ck");
  EXPECT_EQ(ContinueAdvice("/tmp/ck", ""), "--resume /tmp/ck --set checkpoint.dir=/tmp/ck");
}

// `kill -9` between the publishing rename of ckpt-<step> and the replacement of LATEST leaves a
// complete ckpt-30 and LATEST naming ckpt-20. `--resume DIR` into the same DIR used to resume
// ckpt-20 and be refused for the newer ckpt-30, advising `--resume DIR`. It now continues from
// ckpt-30 and repeats the uninterrupted run bit for bit.
TEST(Resume, KilledBetweenPublishAndLatest_ResumeDirContinuesTheNewestBitwise) {
  const std::string root = TempRoot("killed_latest");
  const std::string ds = MakeDataset(root);
  const RunOutcome full = RunJob(kDinConfig, ds, root + "/full", "", 0, /*every_steps=*/10);
  ASSERT_FALSE(full.stopped);
  ASSERT_GT(full.losses.size(), 40u);
  const std::string dir = root + "/killed";
  ASSERT_EQ(std::system(("mkdir -p " + dir + " && cp -r " + root + "/full/ckpt-20 " + root +
                         "/full/ckpt-30 " + dir + "/ && echo ckpt-20 > " + dir + "/LATEST")
                            .c_str()),
            0);
  const RunOutcome resumed = RunJob(kDinConfig, ds, dir, dir, 0, /*every_steps=*/10);
  ASSERT_FALSE(resumed.stopped);
  ASSERT_FALSE(resumed.losses.empty());
  EXPECT_EQ(resumed.losses.front().first, 31) << "resumed from ckpt-30, the newest";
  ASSERT_EQ(resumed.losses.size() + 30, full.losses.size());
  for (size_t i = 0; i < resumed.losses.size(); ++i) {
    ASSERT_EQ(resumed.losses[i].first, full.losses[i + 30].first);
    ASSERT_EQ(resumed.losses[i].second, full.losses[i + 30].second)
        << "loss of step " << resumed.losses[i].first;
  }
  EXPECT_EQ(resumed.dataset.steps, full.dataset.steps);
  EXPECT_EQ(resumed.dataset.loss, full.dataset.loss);
  EXPECT_EQ(resumed.dataset.eval.hr, full.dataset.eval.hr);
  EXPECT_EQ(resumed.dataset.eval.auc, full.dataset.eval.auc);
  EXPECT_EQ(resumed.dataset.eval.logloss, full.dataset.eval.logloss);
  // The resumed run's checkpoints put LATEST right.
  EXPECT_EQ(ps::ReadSmallFile(dir + "/LATEST").value(),
            "ckpt-" + std::to_string(full.losses.back().first) + "\n");
  (void)std::system(("rm -rf " + root).c_str());
}

// A run resumed mid-epoch continues that epoch's order at the saved position. Another data.seed
// or data.shuffle (the permutation and the negatives), data.batch_size (the batches) or the same
// input converted with another --shards (the order is over every shard's rows in turn) used to
// continue silently with other examples. Each is refused before anything is loaded, naming the
// field, both values and how to continue; the unchanged config resumes.
TEST(Resume, MidEpochChangesOfSeedShuffleBatchSizeOrShardsAreRefused) {
  const std::string root = TempRoot("order");
  const std::string ds = MakeDataset(root);
  ASSERT_NO_FATAL_FAILURE(ConvertInTwoShards(root));
  const RunOutcome first = RunJob(kDinConfig, ds, root + "/part", "", 17);
  ASSERT_TRUE(first.stopped);
  const std::string ck = root + "/part/ckpt-17";
  const std::string mid = "the checkpoint at " + ck + " was saved in the middle of epoch 1";
  auto replace = [](std::string text, const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
  };
  struct Case {
    std::string config, train_dir;
    std::vector<std::string> parts;
  };
  const std::string din = kDinConfig;
  const std::vector<Case> cases = {
      {replace(din, "seed: 3", "seed: 4"),
       ds,
       {"data.seed is 4, the checkpoint's run had 3", "set data.seed back to 3"}},
      {replace(din, "batch_size: 32", "batch_size: 16"),
       ds,
       {"data.batch_size is 16, the checkpoint's run had 32", "set data.batch_size back to 32"}},
      {replace(din, "seed: 3 }", "seed: 3 shuffle: false }"),
       ds,
       {"data.shuffle is false, the checkpoint's run had true", "set data.shuffle back to true"}},
      {din,
       root + "/ds2",
       {"data.train_dir is '" + root + "/ds2' (2 shards of ",
        "the checkpoint's run had '" + ds + "' (1 shard of ",
        "set data.train_dir back to '" + ds +
            "' (or to the same input converted again with --shards 1)"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.parts[0]);
    std::unique_ptr<JobSetup> setup = SetUpJob(c.config, c.train_dir);
    auto step = RestoreForResume(setup.get(), root + "/part", nullptr);
    ASSERT_FALSE(step.ok());
    EXPECT_EQ(step.status().code(), StatusCode::kInvalidArgument) << step.status();
    EXPECT_NE(step.status().message().find(mid), std::string::npos) << step.status();
    for (const std::string& part : c.parts)
      EXPECT_NE(step.status().message().find(part), std::string::npos) << part << "\n"
                                                                       << step.status();
    EXPECT_EQ(setup->store->table(0).value()->Stats().rows, 0) << "nothing loaded";
  }
  // The same vocabulary in either layout: another --shards is not another vocabulary.
  std::unique_ptr<JobSetup> same = SetUpJob(kDinConfig, ds);
  auto step = RestoreForResume(same.get(), root + "/part", nullptr);
  ASSERT_OK(step.status());
  EXPECT_EQ(*step, 17);
  (void)std::system(("rm -rf " + root).c_str());
}

// At an epoch's end (where a finished run's last checkpoint is) the position means the same in
// any order, and the epochs after it are drawn afresh: continuing with another data.seed and
// data.batch_size (e.g. with more train.epochs) is accepted, and trains the second epoch
// exactly as that config's run does from the same checkpoint.
TEST(Resume, EpochEndCheckpointAcceptsAnotherSeedAndBatchSize) {
  const std::string root = TempRoot("order_end");
  const std::string ds = MakeDataset(root);
  const std::string one_epoch =
      std::string(kDinConfig).replace(std::string(kDinConfig).find("epochs: 2"), 9, "epochs: 1");
  const RunOutcome first = RunJob(one_epoch, ds, root + "/one", "", 0);
  ASSERT_FALSE(first.stopped);
  const int64_t end = first.losses.back().first;
  std::string other = kDinConfig;
  other.replace(other.find("seed: 3"), 7, "seed: 4");
  other.replace(other.find("batch_size: 32"), 14, "batch_size: 16");
  const RunOutcome a = RunJob(other, ds, root + "/a", root + "/one", 0);
  const RunOutcome b = RunJob(other, ds, root + "/b", root + "/one", 0);
  ASSERT_FALSE(a.losses.empty());
  EXPECT_EQ(a.losses.front().first, end + 1);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.dataset.steps, end + (a.dataset.samples - first.dataset.samples + 15) / 16)
      << "the second epoch in batches of 16";
  (void)std::system(("rm -rf " + root).c_str());
}

// Resuming a checkpoint of another model does not half-load: the error names the tensor.
TEST(Resume, CheckpointOfAnotherModelIsRejected) {
  const std::string root = TempRoot("other");
  const std::string ds = MakeDataset(root);
  (void)RunJob(kDinConfig, ds, root + "/din", "", 5);
  auto cfg = ParseConfigText(kDienConfig, "config");
  ASSERT_OK(cfg.status());
  cfg->mutable_data()->set_train_dir(ds);
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_OK(job.status());
  auto store = ps::LocalEmbeddingStore::Create(job->tables);
  ASSERT_OK(store.status());
  auto t = Trainer::Create(job->trainer, store->get());
  ASSERT_OK(t.status());
  auto c = TrainerCheckpointContent(&(*t)->model(), &(*t)->dense_optimizer(), store->get(), "");
  ASSERT_OK(c.status());
  auto step = LoadCheckpoint(root + "/din", *c, nullptr);
  ASSERT_FALSE(step.ok());
  EXPECT_NE(step.status().message().find("dense/"), std::string::npos) << step.status();
  (void)std::system(("rm -rf " + root).c_str());
}

// ---- The progress line after a resume ---------------------------------------------------------

// A progress line "train: DONE[/TOTAL (P%)] samples, RATE samples/s, ..." (RATE as ProgressLine
// prints it: 950, 12.3k, 1.23M): its position and rate; false if it is not one.
bool ParseProgress(const std::string& line, int64_t* done, double* rate) {
  const size_t colon = line.find(": "), per = line.find(" samples/s");
  if (colon == std::string::npos || per == std::string::npos) return false;
  *done = std::stoll(line.substr(colon + 2));
  const size_t begin = line.rfind(' ', per - 1) + 1;
  std::string token = line.substr(begin, per - begin);
  double unit = 1;
  if (!token.empty() && (token.back() == 'k' || token.back() == 'M')) {
    unit = token.back() == 'k' ? 1e3 : 1e6;
    token.pop_back();
  }
  *rate = std::stod(token) * unit;
  return true;
}

// The lines `run` wrote to its progress FILE.
std::vector<std::string> ProgressLines(const std::string& path,
                                       const std::function<void(FILE*)>& run) {
  FILE* f = std::fopen(path.c_str(), "w");
  EXPECT_NE(f, nullptr) << path;
  if (f == nullptr) return {};
  run(f);
  std::fclose(f);
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// A printed rate `shown` is at most `rate` (the rounding of the printed digits allowed).
void ExpectRateAtMost(const std::string& line, double shown, double rate) {
  EXPECT_LE(shown, rate * 1.006 + 1) << line << "\nthis process's throughput: " << rate;
}

// QA: after --resume the progress line divided every sample of the run, the resumed checkpoint's
// included, by this process's seconds ("39287/61422 (63%) sequences, 42.5k sequences/s" where it
// trained ~7k/s). Its position still counts them, and the rate only what this process trained:
// at the end it cannot exceed the run's own throughput (this process's samples over its training
// seconds, which the line's elapsed time includes). Resumed a few steps before the end, the old
// rate was several times that. Nothing is saved in the resumed runs (their time is the steps').
TEST(Resume, ProgressRateAfterAResumeCountsOnlyThisProcesssSamples) {
  const std::string root = TempRoot("progress");
  const std::string ds = MakeDataset(root);
  // Few evaluation lists: the line's time is mostly the steps'.
  std::string config = kDinConfig;
  config.replace(config.find("max_users: 0"), 12, "max_users: 10");
  std::unique_ptr<JobSetup> setup = SetUpJob(config, ds);
  const int64_t batch = setup->job.dataset.reader.batch_size;
  const int64_t per_epoch = TrainingRowsPerEpoch(*setup->data, setup->job);
  const int64_t steps = 2 * ((per_epoch + batch - 1) / batch);
  const int64_t k = steps - 4;
  ASSERT_GT(k, 10 * 4) << "resume late: the resumed samples are most of the run";
  const RunOutcome first = RunJob(config, ds, root + "/part", "", k);
  ASSERT_TRUE(first.stopped);
  std::map<std::string, std::string> blobs;
  ASSERT_OK(RestoreForResume(setup.get(), root + "/part", &blobs).status());
  RunCheckpointing ck;
  ck.resume = &blobs;
  ck.content = setup->content;
  StatusOr<DatasetRunResult> r = InternalError("not run");
  const std::vector<std::string> lines = ProgressLines(root + "/dataset.txt", [&](FILE* f) {
    RunSinks sinks;
    sinks.checkpoint = &ck;
    sinks.progress = f;
    r = RunDatasetTraining(setup->ctr.get(), *setup->data, setup->job.dataset, sinks);
  });
  ASSERT_OK(r.status());
  ASSERT_EQ(r->steps_run, 4);
  ASSERT_FALSE(lines.empty());
  int64_t done = 0;
  double rate = 0;
  ASSERT_TRUE(ParseProgress(lines.back(), &done, &rate)) << lines.back();
  EXPECT_EQ(done, 2 * per_epoch) << lines.back();  // the position: the whole run
  EXPECT_NE(lines.back().find("(100%)"), std::string::npos) << lines.back();
  ExpectRateAtMost(lines.back(), rate, r->samples_per_s);

  // The synthetic protocol: resumed 2 timed steps before the end of 30.
  const std::string syn_root = root + "/syn";
  const RunOutcome syn_first = RunJob(kSyntheticConfig, "", syn_root, "", 3 + 28);
  ASSERT_TRUE(syn_first.stopped);
  std::unique_ptr<JobSetup> syn = SetUpJob(kSyntheticConfig, "");
  std::map<std::string, std::string> syn_blobs;
  ASSERT_OK(RestoreForResume(syn.get(), syn_root, &syn_blobs).status());
  RunCheckpointing syn_ck;
  syn_ck.resume = &syn_blobs;
  syn_ck.content = syn->content;
  StatusOr<SyntheticRunResult> sr = InternalError("not run");
  const std::vector<std::string> syn_lines = ProgressLines(root + "/synthetic.txt", [&](FILE* f) {
    RunSinks sinks;
    sinks.checkpoint = &syn_ck;
    sinks.progress = f;
    sr = RunSyntheticTraining(syn->ctr.get(), syn->job.run, sinks);
  });
  ASSERT_OK(sr.status());
  ASSERT_FALSE(syn_lines.empty());
  ASSERT_TRUE(ParseProgress(syn_lines.back(), &done, &rate)) << syn_lines.back();
  EXPECT_EQ(done, 30 * syn->job.run.batch) << syn_lines.back();
  ExpectRateAtMost(syn_lines.back(), rate, sr->samples_per_s);
  (void)std::system(("rm -rf " + root).c_str());
}

// ProgressLine::StartFrom: the position counts the units before it, the rate and the ETA only the
// units since (at a given elapsed time, the line is exact).
TEST(ProgressLine, RateAndEtaCountOnlyTheUnitsAfterStartFrom) {
  ProgressLine fresh("train", 1000, "samples", stderr);
  EXPECT_EQ(fresh.Format(700, "loss=0.5", 10.0),
            "train: 700/1000 (70%) samples, 70 samples/s, loss=0.5, elapsed 10s, ETA 4s");
  ProgressLine resumed("train", 1000, "samples", stderr);
  resumed.StartFrom(600);
  EXPECT_EQ(resumed.Format(700, "loss=0.5", 10.0),
            "train: 700/1000 (70%) samples, 10 samples/s, loss=0.5, elapsed 10s, ETA 30s");
  EXPECT_EQ(resumed.Format(1000, "", 40.0),
            "train: 1000/1000 (100%) samples, 10 samples/s, elapsed 40s");
}

// ---- The `ips` binary -------------------------------------------------------------------------

#ifdef IPS_BINARY
struct Cmd {
  int rc = -1;
  std::string out, err;
};

Cmd Exec(const std::string& args, const std::string& root) {
  Cmd c;
  const std::string o = root + "/stdout", e = root + "/stderr";
  const int status =
      std::system((std::string(IPS_BINARY) + " " + args + " >" + o + " 2>" + e).c_str());
  c.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream fo(o), fe(e);
  std::stringstream so, se;
  so << fo.rdbuf();
  se << fe.rdbuf();
  c.out = so.str();
  c.err = se.str();
  return c;
}

std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// key=value of a RESULT line or "key":value of a JSON line.
std::string Field(const std::string& line, const std::string& key, bool json) {
  const std::string pat = json ? "\"" + key + "\":" : " " + key + "=";
  const size_t p = line.find(pat);
  if (p == std::string::npos) return "<missing " + key + ">";
  const size_t b = p + pat.size();
  const size_t e = line.find_first_of(json ? ",}" : " \n", b);
  return line.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

void WriteConfig(const std::string& path, const char* text) { std::ofstream(path) << text; }

TEST(ResumeCli, EvalOfTheFinalCheckpointEqualsTheTrainersFinalEvaluation) {
  const std::string root = TempRoot("cli_eval");
  const std::string ds = MakeDataset(root);
  WriteConfig(root + "/din.pbtxt", kDinConfig);
  const std::string sets = " --set data.train_dir=" + ds + " --set checkpoint.dir=" + root +
                           "/ck --set checkpoint.every_steps=50";
  Cmd train = Exec("train --quiet --config " + root + "/din.pbtxt" + sets + " --metrics_out " +
                       root + "/train.json",
                   root);
  ASSERT_EQ(train.rc, 0) << train.err;
  ASSERT_EQ(LastLine(train.out).rfind("RESULT train ", 0), 0u) << train.out;
  Cmd eval = Exec("eval --config " + root + "/din.pbtxt" + sets + " --checkpoint " + root +
                      "/ck --metrics_out " + root + "/eval.json",
                  root);
  ASSERT_EQ(eval.rc, 0) << eval.err;
  const std::string line = LastLine(eval.out);
  ASSERT_EQ(line.rfind("RESULT eval model=din ", 0), 0u) << eval.out;
  std::ifstream tj(root + "/train.json");
  std::string json, result;
  while (std::getline(tj, json))
    if (json.find("\"phase\":\"result\"") != std::string::npos) result = json;
  ASSERT_FALSE(result.empty());
  // Six decimals in both outputs: the same numbers, not merely close ones.
  for (const char* key : {"hr10", "ndcg10", "auc"})
    EXPECT_EQ(Field(line, key, false), Field(result, key, true)) << key;
  EXPECT_EQ(Field(line, "step", false), Field(result, "steps", true));
  // The RESULT of train (4 decimals) agrees too.
  EXPECT_EQ(Field(LastLine(train.out), "gauc", false),
            Field(line, "gauc", false).substr(0, Field(LastLine(train.out), "gauc", false).size()));

  // A corrupt checkpoint file is rejected by eval and by --resume, naming the file.
  const std::string newest = root + "/ck/ckpt-" + Field(line, "step", false);
  const std::string dense = newest + "/dense.bin";
  {
    std::fstream f(dense, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  Cmd bad = Exec("eval --config " + root + "/din.pbtxt" + sets + " --checkpoint " + newest, root);
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find(dense), std::string::npos) << bad.err;
  // The root resolves to its newest checkpoint that loads, saying which one it skipped and why.
  Cmd older =
      Exec("eval --config " + root + "/din.pbtxt" + sets + " --checkpoint " + root + "/ck", root);
  EXPECT_EQ(older.rc, 0) << older.err;
  EXPECT_NE(older.err.find("checkpoint " + newest + " cannot be loaded (DATA_LOSS: " + dense),
            std::string::npos)
      << older.err;
  EXPECT_LT(std::stoll(Field(LastLine(older.out), "step", false)),
            std::stoll(Field(line, "step", false)))
      << older.out;
  // --resume of the root into the same checkpoint.dir: refused while the damaged one is there.
  Cmd bad_resume = Exec(
      "train --quiet --config " + root + "/din.pbtxt" + sets + " --resume " + root + "/ck", root);
  EXPECT_EQ(bad_resume.rc, 1);
  EXPECT_NE(bad_resume.err.find(dense), std::string::npos) << bad_resume.err;
  EXPECT_NE(bad_resume.err.find("Move the damaged checkpoint(s) out of"), std::string::npos)
      << bad_resume.err;
  (void)std::system(("rm -rf " + root).c_str());
}

constexpr char kMindConfig[] = R"(
version: 1
name: "resume_mind"
data { batch_size: 32 max_history: 10 seed: 3 }
model { type: MIND embedding_dim: 4 num_interests: 2 routing_iterations: 3 }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 4 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 4 initializer { type: XAVIER_NORMAL } }
train { epochs: 1 num_threads: 1 seed: 0 }
eval { top_k: [10, 50] every_epochs: 1 max_users: 0 }
)";

// MIND: `ips train` adds the full-ranking recall@K to its RESULT and metrics; `ips eval` of the
// final checkpoint reproduces them.
TEST(ResumeCli, MindTrainReportsRetrievalAndEvalReproducesIt) {
  const std::string root = TempRoot("cli_mind");
  const std::string ds = MakeDataset(root);
  WriteConfig(root + "/mind.pbtxt", kMindConfig);
  const std::string sets = " --set data.train_dir=" + ds + " --set checkpoint.dir=" + root + "/ck";
  Cmd train = Exec("train --quiet --config " + root + "/mind.pbtxt" + sets + " --metrics_out " +
                       root + "/train.json",
                   root);
  ASSERT_EQ(train.rc, 0) << train.err;
  const std::string tline = LastLine(train.out);
  ASSERT_EQ(tline.rfind("RESULT train model=mind ", 0), 0u) << train.out;
  ASSERT_NE(tline.find(" recall10="), std::string::npos) << tline;
  ASSERT_NE(tline.find(" recall50="), std::string::npos) << tline;
  Cmd eval =
      Exec("eval --config " + root + "/mind.pbtxt" + sets + " --checkpoint " + root + "/ck", root);
  ASSERT_EQ(eval.rc, 0) << eval.err;
  const std::string line = LastLine(eval.out);
  std::ifstream tj(root + "/train.json");
  std::string json, result;
  while (std::getline(tj, json))
    if (json.find("\"phase\":\"result\"") != std::string::npos) result = json;
  ASSERT_FALSE(result.empty());
  for (const char* key : {"hr10", "ndcg10", "auc", "recall10", "recall50", "retrieval_hr50"})
    EXPECT_EQ(Field(line, key, false), Field(result, key, true)) << key << "\n"
                                                                 << line << "\n"
                                                                 << result;
  // recall@50 over 400 items of a learnable pattern is well above chance (50/400).
  EXPECT_GT(std::stod(Field(line, "recall50", false)), 0.125);
  (void)std::system(("rm -rf " + root).c_str());
}

// `ips train` of the synthetic config with `sets`, sent `sig` once training started; returns
// its exit status and streams. The RESULT line must say status=stopped at a step of the run.
struct Stopped {
  int status = -1;
  std::string out, err;
  int64_t step = -1;
};
Stopped TrainAndSignal(const std::string& root, const std::string& sets, int sig) {
  Stopped r;
  const std::string cmd =
      std::string(IPS_BINARY) + " train --quiet --config " + root + "/syn.pbtxt" + sets;
  const pid_t pid = fork();
  EXPECT_GE(pid, 0);
  if (pid < 0) return r;
  if (pid == 0) {
    const std::string redirected =
        "exec " + cmd + " >" + root + "/term.out 2>" + root + "/term.err";
    execl("/bin/sh", "sh", "-c", redirected.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // The signal once training started (the header line is printed after the handler is
  // installed).
  for (int i = 0; i < 600; ++i) {
    std::ifstream e(root + "/term.err");
    std::stringstream ss;
    ss << e.rdbuf();
    if (ss.str().find("train: model=") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(kill(pid, sig), 0);
  EXPECT_EQ(waitpid(pid, &r.status, 0), pid);
  std::ifstream fo(root + "/term.out"), fe(root + "/term.err");
  std::stringstream so, se;
  so << fo.rdbuf();
  se << fe.rdbuf();
  r.out = so.str();
  r.err = se.str();
  const std::string stopped = LastLine(r.out);
  EXPECT_EQ(stopped.rfind("RESULT train model=din status=stopped step=", 0), 0u) << stopped;
  const std::string step = Field(stopped, "step", false);
  if (!step.empty()) r.step = std::stoll(step);
  return r;
}

TEST(ResumeCli, SigtermCheckpointsExitsThreeAndResumeFinishesLikeAnUninterruptedRun) {
  const std::string root = TempRoot("cli_term");
  WriteConfig(root + "/syn.pbtxt", kSyntheticConfig);
  const std::string sets =
      " --set data.synthetic.steps=20000 --set data.synthetic.num_items=500 --set "
      "data.batch_size=8 --set checkpoint.dir=" +
      root + "/ck";
  const Stopped stopped = TrainAndSignal(root, sets, SIGTERM);
  ASSERT_TRUE(WIFEXITED(stopped.status));
  ASSERT_EQ(WEXITSTATUS(stopped.status), 3) << stopped.out << stopped.err;
  EXPECT_NE(stopped.err.find("stopped by SIGTERM"), std::string::npos);
  const int64_t step = stopped.step;
  ASSERT_GT(step, 0);
  ASSERT_LT(step, 20003);
  // checkpoint.dir came from a --set, not the config file: `--resume DIR` alone would save
  // nothing, so the advice names it too.
  EXPECT_NE(stopped.err.find("; continue with --resume " + root +
                             "/ck --set checkpoint.dir=" + root + "/ck\n"),
            std::string::npos)
      << stopped.err;

  // Resume to the end and compare with an uninterrupted run of fewer steps? The same steps:
  // shorten both to keep the test quick is impossible (the stop step is not known in advance),
  // so the comparison is of the final RESULT of a resumed run against a fresh full run.
  Cmd resumed = Exec(
      "train --quiet --config " + root + "/syn.pbtxt" + sets + " --resume " + root + "/ck", root);
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  Cmd fresh = Exec("train --quiet --config " + root + "/syn.pbtxt" + sets +
                       " --set checkpoint.dir=" + root + "/ck_fresh",
                   root);
  ASSERT_EQ(fresh.rc, 0) << fresh.err;
  EXPECT_EQ(Field(LastLine(resumed.out), "loss", false), Field(LastLine(fresh.out), "loss", false));
  EXPECT_EQ(Field(LastLine(resumed.out), "auc", false), Field(LastLine(fresh.out), "auc", false));
  (void)std::system(("rm -rf " + root).c_str());
}

// QA: `ips train --resume DIR` with a config without checkpoint.dir trained on silently saving
// nothing (a stop then said "nothing saved"). It says so when it starts, with the --set to add.
TEST(ResumeCli, ResumeWithoutACheckpointDirWarnsThatItSavesNothing) {
  const std::string root = TempRoot("cli_no_dir");
  WriteConfig(root + "/syn.pbtxt", kSyntheticConfig);
  const std::string train = "train --quiet --config " + root + "/syn.pbtxt";
  Cmd first =
      Exec(train + " --set data.synthetic.steps=2 --set checkpoint.dir=" + root + "/ck", root);
  ASSERT_EQ(first.rc, 0) << first.err;
  const std::string warning =
      ": this run writes no checkpoints (no checkpoint.dir); add --set "
      "checkpoint.dir=" +
      root + "/ck to keep saving\n";
  for (const std::string& resume : {root + "/ck", root + "/ck/ckpt-5"}) {
    Cmd resumed = Exec(train + " --set data.synthetic.steps=4 --resume " + resume, root);
    ASSERT_EQ(resumed.rc, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("warning: --resume " + resume + warning), std::string::npos)
        << resumed.err;
  }
  // With checkpoint.dir there is nothing to warn about.
  Cmd saving = Exec(train + " --set data.synthetic.steps=4 --resume " + root +
                        "/ck --set checkpoint.dir=" + root + "/ck",
                    root);
  ASSERT_EQ(saving.rc, 0) << saving.err;
  EXPECT_EQ(saving.err.find("warning: --resume"), std::string::npos) << saving.err;
  (void)std::system(("rm -rf " + root).c_str());
}

// SIGUSR1 stops like SIGTERM: `mpirun -np 1 ips train` trains in one process, and mpirun forwards
// SIGUSR1 to it and waits, where a SIGTERM to mpirun is followed by SIGKILL after 1 s.
TEST(ResumeCli, Sigusr1StopsLikeSigtermWithACheckpoint) {
  const std::string root = TempRoot("cli_usr1");
  WriteConfig(root + "/syn.pbtxt", kSyntheticConfig);
  const std::string sets =
      " --set data.synthetic.steps=20000 --set data.synthetic.num_items=500 --set "
      "data.batch_size=8 --set checkpoint.dir=" +
      root + "/ck";
  const Stopped stopped = TrainAndSignal(root, sets, SIGUSR1);
  ASSERT_TRUE(WIFEXITED(stopped.status)) << stopped.err;
  EXPECT_EQ(WEXITSTATUS(stopped.status), 3) << stopped.out << stopped.err;
  EXPECT_NE(stopped.err.find("stopped by SIGUSR1"), std::string::npos) << stopped.err;
  ASSERT_GT(stopped.step, 0);
  auto list = ListCheckpoints(root + "/ck");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_FALSE(list->empty());
  EXPECT_EQ(list->back().first, stopped.step);
  (void)std::system(("rm -rf " + root).c_str());
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The ckpt-<step> names under `dir`, oldest first.
std::vector<std::string> CheckpointNames(const std::string& dir) {
  std::vector<std::string> names;
  auto list = ListCheckpoints(dir);
  EXPECT_TRUE(list.ok()) << list.status();
  if (list.ok())
    for (const auto& entry : *list) names.push_back(entry.second);
  return names;
}

// A fresh run pointed at a checkpoint.dir holding an earlier run's checkpoints used to train,
// have keep_last retention (newest by step) delete its own checkpoints, leave LATEST naming a
// deleted one and a later --resume pick the earlier run's newest. It is refused before its first
// step, naming DIR, the newest checkpoint and the remedies, and DIR is left as it was; so is a
// run resumed from an older checkpoint than DIR's newest. Resuming the newest into DIR goes on.
TEST(ResumeCli, RunsThatWouldMixWithAnotherRunsCheckpointsAreRefusedAndLeaveThemAlone) {
  const std::string root = TempRoot("cli_mix");
  WriteConfig(root + "/syn.pbtxt", kSyntheticConfig);
  const std::string ck = root + "/ck";
  const std::string train = "train --quiet --config " + root +
                            "/syn.pbtxt --set checkpoint.dir=" + ck +
                            " --set checkpoint.keep_last=3";
  // 3 warm-up + 30 steps: checkpoints 10, 20, 30 and 33, of which 20, 30, 33 are kept.
  Cmd first = Exec(train + " --set checkpoint.every_steps=10", root);
  ASSERT_EQ(first.rc, 0) << first.err;
  const std::vector<std::string> kept = {"ckpt-20", "ckpt-30", "ckpt-33"};
  ASSERT_EQ(CheckpointNames(ck), kept);
  ASSERT_EQ(ReadAll(ck + "/LATEST"), "ckpt-33\n");

  // A fresh, shorter run into the same DIR.
  Cmd fresh = Exec(train + " --set data.synthetic.steps=12 --set checkpoint.every_steps=5", root);
  EXPECT_EQ(fresh.rc, 1) << fresh.out << fresh.err;
  EXPECT_NE(fresh.err.find("error: FAILED_PRECONDITION: checkpoint.dir " + ck +
                           " already holds 3 checkpoint(s) of an earlier run (newest: " + ck +
                           "/ckpt-33)"),
            std::string::npos)
      << fresh.err;
  EXPECT_NE(fresh.err.find("Continue that run with --resume " + ck +
                           ", or give this run an empty or new checkpoint.dir"),
            std::string::npos)
      << fresh.err;
  // No success line: the error's, alone (launch/main.cc).
  EXPECT_EQ(fresh.out.rfind("RESULT train status=error exit=1 error=\"FAILED_PRECONDITION: "
                            "checkpoint.dir " +
                                ck + " already holds 3 checkpoint(s) of an earlier run",
                            0),
            0u)
      << fresh.out;
  EXPECT_EQ(fresh.out.find('\n'), fresh.out.size() - 1) << fresh.out;
  EXPECT_EQ(CheckpointNames(ck), kept);
  EXPECT_EQ(ReadAll(ck + "/LATEST"), "ckpt-33\n");

  // Resumed from an older checkpoint of DIR: ckpt-30 and ckpt-33 would be overwritten or removed.
  Cmd older = Exec(train + " --set checkpoint.every_steps=5 --resume " + ck + "/ckpt-20", root);
  EXPECT_EQ(older.rc, 1) << older.out << older.err;
  EXPECT_NE(older.err.find("error: FAILED_PRECONDITION: checkpoint.dir " + ck +
                           " holds 2 checkpoint(s) newer than the resumed step 20 (newest: " + ck +
                           "/ckpt-33)"),
            std::string::npos)
      << older.err;
  EXPECT_NE(older.err.find("--resume " + ck + ","), std::string::npos) << older.err;
  EXPECT_EQ(CheckpointNames(ck), kept);
  EXPECT_EQ(ReadAll(ck + "/LATEST"), "ckpt-33\n");
  // The same checkpoint resumed into a new DIR is fine.
  Cmd elsewhere = Exec(
      train + " --set checkpoint.dir=" + root + "/ck_branch --resume " + ck + "/ckpt-20", root);
  EXPECT_EQ(elsewhere.rc, 0) << elsewhere.err;

  // Continuing the newest into DIR, which is what --resume DIR is for, goes on (and ends at the
  // same step: a final checkpoint replacing ckpt-33).
  Cmd resumed = Exec(train + " --resume " + ck, root);
  EXPECT_EQ(resumed.rc, 0) << resumed.err;
  EXPECT_EQ(ReadAll(ck + "/LATEST"), "ckpt-33\n");
  (void)std::system(("rm -rf " + root).c_str());
}

// Item ids are numbered per dataset (its vocabulary): a checkpoint trained on one dataset and
// resumed or evaluated on another used to run silently with every row meaning another item. Both
// are refused naming the two datasets; the same input converted again with other evaluation
// lists (--eval_negatives, --seed) has the same vocabulary and is accepted.
TEST(ResumeCli, ResumeAndEvalOnAnotherVocabularyAreRefusedSameVocabularyIsAccepted) {
  const std::string root = TempRoot("cli_vocab");
  const std::string ds = MakeDataset(root);  // from root/in.txt
  // The same input with other evaluation lists.
  ConvertOptions again;
  again.format = "seqrec";
  again.input = root + "/in.txt";
  again.output = root + "/ds_again";
  again.max_history = 10;
  again.eval_negatives = 50;
  again.seed = 9;
  ASSERT_OK(ConvertDataset(again).status());
  // Another input with as many users, items and categories: every raw item id shifted by one.
  {
    std::ifstream in(root + "/in.txt");
    std::ofstream out(root + "/other.txt");
    int64_t user = 0, item = 0;
    while (in >> user >> item) out << user << " " << item + 1 << "\n";
  }
  ConvertOptions other = again;
  other.input = root + "/other.txt";
  other.output = root + "/ds_other";
  other.eval_negatives = 100;
  other.seed = 0;
  ASSERT_OK(ConvertDataset(other).status());

  WriteConfig(root + "/din.pbtxt", kDinConfig);
  const std::string config = " --config " + root + "/din.pbtxt --set train.max_steps=20";
  Cmd train = Exec("train --quiet" + config + " --set data.train_dir=" + ds +
                       " --set checkpoint.dir=" + root + "/ck",
                   root);
  ASSERT_EQ(train.rc, 0) << train.err;

  const std::string other_dir = root + "/ds_other";
  Cmd eval =
      Exec("eval" + config + " --set data.train_dir=" + other_dir + " --checkpoint " + root + "/ck",
           root);
  EXPECT_EQ(eval.rc, 1) << eval.out << eval.err;
  const std::string want = "error: INVALID_ARGUMENT: the checkpoint at " + root +
                           "/ck/ckpt-20 was trained on data.train_dir '" + ds +
                           "' (seqrec: 400 users, 400 items, 1 categories, vocab.ips crc32c ";
  EXPECT_NE(eval.err.find(want), std::string::npos) << eval.err;
  EXPECT_NE(eval.err.find("but data.train_dir '" + other_dir +
                          "' (seqrec: 400 users, 400 items, 1 categories, vocab.ips crc32c "),
            std::string::npos)
      << eval.err;
  EXPECT_NE(eval.err.find("has another vocabulary"), std::string::npos) << eval.err;
  EXPECT_EQ(eval.out.rfind("RESULT eval status=error exit=1 error=\"INVALID_ARGUMENT: the "
                           "checkpoint at " +
                               root + "/ck/ckpt-20 was trained on data.train_dir '",
                           0),
            0u)
      << eval.out;
  EXPECT_EQ(eval.out.find('\n'), eval.out.size() - 1) << eval.out;

  Cmd resume = Exec("train --quiet" + config +
                        " --set train.max_steps=30 --set data.train_dir=" + other_dir +
                        " --set checkpoint.dir=" + root + "/ck2 --resume " + root + "/ck",
                    root);
  EXPECT_EQ(resume.rc, 1) << resume.out << resume.err;
  EXPECT_NE(resume.err.find(want), std::string::npos) << resume.err;
  EXPECT_FALSE(ps::IsDirectory(root + "/ck2/ckpt-30")) << "trained on the other vocabulary";

  // The same vocabulary with other evaluation lists: eval and resume go on.
  const std::string same = " --set data.train_dir=" + root + "/ds_again";
  Cmd eval_again = Exec("eval" + config + same + " --checkpoint " + root + "/ck", root);
  EXPECT_EQ(eval_again.rc, 0) << eval_again.err;
  EXPECT_EQ(LastLine(eval_again.out).rfind("RESULT eval model=din step=20 ", 0), 0u)
      << eval_again.out;
  Cmd resume_again = Exec("train --quiet" + config + " --set train.max_steps=30" + same +
                              " --set checkpoint.dir=" + root + "/ck --resume " + root + "/ck",
                          root);
  EXPECT_EQ(resume_again.rc, 0) << resume_again.err;
  // Its checkpoint records the dataset it was trained on now.
  auto reader = CheckpointReader::Open(root + "/ck");
  ASSERT_OK(reader.status());
  EXPECT_EQ((*reader)->step(), 30);
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> blobs;
  ASSERT_OK((*reader)->ReadDense(&tensors, &blobs));
  ASSERT_EQ(blobs.count(kVocabularyBlob), 1u);
  auto recorded = DecodeVocabulary(blobs[kVocabularyBlob]);
  ASSERT_OK(recorded.status());
  EXPECT_EQ(recorded->train_dir, root + "/ds_again");
  EXPECT_EQ(recorded->items, 400u);
  (void)std::system(("rm -rf " + root).c_str());
}

// QA: a random `kill -9` of `ips train` (1 in 8, checkpoint.every_steps=7) left a complete
// ckpt-<step> and LATEST naming the one before (killed between the publishing rename and the
// replacement of LATEST). `ips train --resume DIR` (and `ips config check --resume DIR`) then
// failed: "DIR holds 1 checkpoint(s) newer than the resumed step ... Continue from the newest
// with --resume DIR", the command just run. It now continues from the newest, with a warning, and
// ends as the uninterrupted run. A newer checkpoint damaged since is skipped with a warning, and
// the refusal says to move it away, not to run --resume DIR.
TEST(ResumeCli, ResumeDirAfterAKillBetweenPublishAndLatestContinuesTheNewest) {
  const std::string root = TempRoot("cli_killed_latest");
  const std::string ds = MakeDataset(root);
  WriteConfig(root + "/din.pbtxt", kDinConfig);
  const std::string config =
      " --config " + root + "/din.pbtxt --set data.train_dir=" + ds +
      " --set checkpoint.every_steps=10 --set checkpoint.keep_last=100 --set checkpoint.dir=";
  Cmd full = Exec("train --quiet" + config + root + "/ck", root);
  ASSERT_EQ(full.rc, 0) << full.err;
  const std::string want = LastLine(full.out);
  ASSERT_EQ(want.rfind("RESULT train model=din ", 0), 0u) << full.out;

  const std::string ckz = root + "/ckz";
  ASSERT_EQ(std::system(("mkdir -p " + ckz + " && cp -r " + root + "/ck/ckpt-20 " + root +
                         "/ck/ckpt-30 " + ckz + "/ && echo ckpt-20 > " + ckz + "/LATEST")
                            .c_str()),
            0);
  Cmd check = Exec("config check" + config + ckz + " --resume " + ckz, root);
  EXPECT_EQ(check.rc, 0) << check.out << check.err;
  Cmd resumed = Exec("train --quiet" + config + ckz + " --resume " + ckz, root);
  ASSERT_EQ(resumed.rc, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.err.find(ckz + "/LATEST names 'ckpt-20', but " + ckz +
                             "/ckpt-30 is newer and complete"),
            std::string::npos)
      << resumed.err;
  EXPECT_NE(resumed.err.find("train: resumed from '" + ckz + "' at step 30"), std::string::npos)
      << resumed.err;
  const std::string got = LastLine(resumed.out);
  for (const char* key : {"steps", "loss", "hr10", "ndcg10", "auc", "gauc", "logloss"})
    EXPECT_EQ(Field(got, key, false), Field(want, key, false)) << key << ": " << got;

  // ckpt-30 damaged since it was published: resumed from ckpt-20, refused while ckpt-30 is there.
  const std::string ckd = root + "/ckd";
  ASSERT_EQ(std::system(("mkdir -p " + ckd + " && cp -r " + root + "/ck/ckpt-20 " + root +
                         "/ck/ckpt-30 " + ckd + "/ && echo ckpt-30 > " + ckd + "/LATEST && " +
                         "printf XXXX | dd of=" + ckd +
                         "/ckpt-30/dense.bin bs=1 seek=100 conv=notrunc 2>/dev/null")
                            .c_str()),
            0);
  for (const std::string command : {"train --quiet", "config check"}) {
    SCOPED_TRACE(command);
    Cmd refused = Exec(command + config + ckd + " --resume " + ckd, root);
    EXPECT_EQ(refused.rc, 1) << refused.out << refused.err;
    EXPECT_NE(refused.err.find("holds 1 checkpoint(s) newer than the resumed step 20"),
              std::string::npos)
        << refused.err;
    EXPECT_NE(refused.err.find("Of these, 1 cannot be loaded: " + ckd +
                               "/ckpt-30 (DATA_LOSS: " + ckd + "/ckpt-30/dense.bin"),
              std::string::npos)
        << refused.err;
    EXPECT_NE(refused.err.find("Move the damaged checkpoint(s) out of " + ckd +
                               " and run this command again"),
              std::string::npos)
        << refused.err;
    EXPECT_EQ(refused.err.find("Continue from the newest with --resume"), std::string::npos)
        << refused.err;
  }
  ASSERT_EQ(std::system(("mv " + ckd + "/ckpt-30 " + root + "/damaged").c_str()), 0);
  Cmd after = Exec("train --quiet" + config + ckd + " --resume " + ckd, root);
  EXPECT_EQ(after.rc, 0) << after.err;
  EXPECT_NE(after.err.find("train: resumed from '" + ckd + "' at step 20"), std::string::npos)
      << after.err;
  EXPECT_EQ(Field(LastLine(after.out), "auc", false), Field(want, "auc", false)) << after.out;
  (void)std::system(("rm -rf " + root).c_str());
}

// `ips train --resume` (and `ips config check --resume`) of a checkpoint saved mid-epoch with
// another data.seed, data.batch_size or the same input converted with another --shards used to
// continue the epoch silently with other examples. Each is refused naming the field, both
// values and how to continue, before anything is trained; the unchanged config resumes, and a
// checkpoint at the end of an epoch accepts the changes (with a warning).
TEST(ResumeCli, MidEpochResumeWithAnotherSeedBatchSizeOrShardsIsRefused) {
  const std::string root = TempRoot("cli_order");
  const std::string ds = MakeDataset(root);
  ASSERT_NO_FATAL_FAILURE(ConvertInTwoShards(root));
  WriteConfig(root + "/din.pbtxt", kDinConfig);
  const std::string config = " --config " + root + "/din.pbtxt --set data.train_dir=";
  Cmd train = Exec("train --quiet" + config + ds + " --set train.max_steps=17 " +
                       "--set checkpoint.dir=" + root + "/ck",
                   root);
  ASSERT_EQ(train.rc, 0) << train.err;
  const std::string mid =
      "the checkpoint at " + root + "/ck/ckpt-17 was saved in the middle of epoch 1";
  struct Case {
    std::string command, sets;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {"train --quiet",
       ds + " --set data.seed=4",
       {"data.seed is 4, the checkpoint's run had 3", "set data.seed back to 3"}},
      {"config check",
       ds + " --set data.batch_size=16",
       {"data.batch_size is 16, the checkpoint's run had 32", "set data.batch_size back to 32"}},
      {"train --quiet",
       root + "/ds2",
       {"data.train_dir is '" + root + "/ds2' (2 shards of ",
        "set data.train_dir back to '" + ds +
            "' (or to the same input converted again with --shards 1)"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.command + " " + c.sets);
    Cmd refused = Exec(c.command + config + c.sets + " --set checkpoint.dir=" + root +
                           "/ck2 --resume " + root + "/ck",
                       root);
    EXPECT_EQ(refused.rc, 1) << refused.out << refused.err;
    EXPECT_NE(refused.err.find("error: INVALID_ARGUMENT: " + mid), std::string::npos)
        << refused.err;
    for (const std::string& part : c.parts)
      EXPECT_NE(refused.err.find(part), std::string::npos) << part << "\n" << refused.err;
    EXPECT_FALSE(ps::IsDirectory(root + "/ck2")) << "refused before the writer was made";
  }
  Cmd same = Exec("train --quiet" + config + ds + " --set train.max_steps=30 " +
                      "--set checkpoint.dir=" + root + "/ck --resume " + root + "/ck",
                  root);
  EXPECT_EQ(same.rc, 0) << same.err;

  // A finished one-epoch run's last checkpoint is at the epoch's end: a second epoch with
  // another seed and batch size goes on, and says that the run no longer repeats either.
  Cmd one = Exec(
      "train --quiet" + config + ds + " --set train.epochs=1 --set checkpoint.dir=" + root + "/one",
      root);
  ASSERT_EQ(one.rc, 0) << one.err;
  Cmd more = Exec("train --quiet" + config + ds +
                      " --set data.seed=4 --set data.batch_size=16 --set checkpoint.dir=" + root +
                      "/one --resume " + root + "/one",
                  root);
  EXPECT_EQ(more.rc, 0) << more.err;
  EXPECT_NE(more.err.find("at the end of epoch 1 with other settings than the run that wrote "
                          "it: data.seed is 4, the checkpoint's run had 3"),
            std::string::npos)
      << more.err;
  EXPECT_EQ(LastLine(more.out).rfind("RESULT train model=din epochs=2 ", 0), 0u) << more.out;
  (void)std::system(("rm -rf " + root).c_str());
}

TEST(ResumeCli, BadFlagsAreUsageErrors) {
  const std::string root = TempRoot("cli_flags");
  WriteConfig(root + "/syn.pbtxt", kSyntheticConfig);
  EXPECT_EQ(Exec("eval --config " + root + "/syn.pbtxt", root).rc, 2);  // --checkpoint missing
  EXPECT_EQ(Exec("eval --bogus 1", root).rc, 2);
  EXPECT_EQ(Exec("train --config " + root + "/syn.pbtxt --resume", root).rc, 2);
  Cmd missing =
      Exec("eval --config " + root + "/syn.pbtxt --checkpoint " + root + "/nothing", root);
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.err.find(root + "/nothing"), std::string::npos) << missing.err;
  (void)std::system(("rm -rf " + root).c_str());
}

// ---- Stop signals that arrive early, or during an evaluation ----------------------------------

// `ips ARGS` (split at spaces; stdout and stderr to root/signalled.out and .err), sent `sig` once
// ready(pid) holds (polled every 2 ms), or at once to a child that starts with `sig` blocked when
// `pending` (sent before the child even execs ips, so it is pending when ips starts). Killed after
// 120 s.
struct Signalled {
  int status = -1;  // waitpid's
  std::string out, err;
  std::string err_at_signal;  // stderr when the signal was sent
  bool sent = false;
  double after_signal_s = 0;  // from the signal to the exit
};
Signalled RunSignalled(const std::string& args, const std::string& root, int sig,
                       const std::function<bool(pid_t)>& ready, bool pending = false) {
  Signalled r;
  std::vector<std::string> words{IPS_BINARY};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const std::string out = root + "/signalled.out", err = root + "/signalled.err";
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, sig);
  if (pending) pthread_sigmask(SIG_BLOCK, &block, &old);  // the child inherits the mask
  const pid_t pid = fork();
  if (pid == 0) {
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0) _exit(126);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (pending) pthread_sigmask(SIG_SETMASK, &old, nullptr);
  EXPECT_GT(pid, 0) << "fork failed";
  if (pid <= 0) return r;
  if (pending) {
    EXPECT_EQ(kill(pid, sig), 0);
    r.sent = true;
  }
  const auto start = std::chrono::steady_clock::now();
  auto signalled_at = start;
  for (;;) {
    if (waitpid(pid, &r.status, WNOHANG) == pid) break;
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(120)) {
      kill(pid, SIGKILL);
      waitpid(pid, &r.status, 0);
      ADD_FAILURE() << "killed after 120 s: " << args;
      break;
    }
    if (!r.sent && ready(pid)) {
      r.err_at_signal = ReadAll(err);
      EXPECT_EQ(kill(pid, sig), 0);
      r.sent = true;
      signalled_at = std::chrono::steady_clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  r.after_signal_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled_at).count();
  r.out = ReadAll(out);
  r.err = ReadAll(err);
  return r;
}

// The process's resident memory in KiB (/proc/PID/status VmRSS; 0 when unreadable).
int64_t ResidentKib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10);
  return 0;
}

// Whether the process has a handler for `sig` (SigCgt of /proc/PID/status).
bool CatchesSignal(pid_t pid, int sig) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("SigCgt:", 0) == 0)
      return (std::strtoull(line.c_str() + 7, nullptr, 16) >> (sig - 1)) & 1;
  return false;
}

std::string Describe(const Signalled& r) {
  std::ostringstream os;
  if (WIFSIGNALED(r.status))
    os << "killed by signal " << WTERMSIG(r.status);
  else
    os << "exit " << WEXITSTATUS(r.status);
  return os.str() + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// A dense layer of 4096 x 4096 weights (64 MiB, with its Adam state and gradients about 260 MiB)
// takes `ips train` a few hundred ms to allocate and initialise before its first step.
constexpr char kLargeModelConfig[] = R"(
version: 1
name: "early_stop"
data {
  batch_size: 4
  max_history: 4
  seed: 0
  synthetic { num_items: 500 num_categories: 50 zipf_alpha: 1.1 warmup_steps: 1 steps: 3 }
}
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [4096, 4096] activation: PRELU }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 4 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 4 initializer { type: XAVIER_NORMAL } }
train { epochs: 1 num_threads: 1 seed: 0 }
)";

// A stop signal that arrives before the run's first step stops it after that step with its
// checkpoint (exit 3, status=stopped step=1), never the default action: `ips train` installs the
// handler before it loads anything. (It did so only once the model was built and the checkpoint
// directory checked: a SIGTERM in the first ~20 ms, or while a large model or dataset loaded,
// killed the process.) Sent (a) while the large model is being initialised (the process's memory
// passes 100 MiB), (b) before ips even runs, to a child that starts with SIGUSR1 blocked: ips
// unblocks it once its handler is in place, and the pending signal stops the run.
TEST(ResumeCli, StopSignalBeforeTheFirstStepStopsTheRunAfterIt) {
  const std::string root = TempRoot("cli_early");
  WriteConfig(root + "/big.pbtxt", kLargeModelConfig);
  const std::string args = "train --quiet --config " + root + "/big.pbtxt --set checkpoint.dir=";
  // Once ips's handler is in place (SigCgt): in a CUDA build the loader alone maps and relocates
  // more than 100 MiB of libraries before any code of ips has run (a signal then is the ~4 ms
  // window no program can close).
  const Signalled starting = RunSignalled(args + root + "/ck_a", root, SIGTERM, [](pid_t pid) {
    return CatchesSignal(pid, SIGTERM) && ResidentKib(pid) > 100 * 1024;
  });
  ASSERT_TRUE(starting.sent) << Describe(starting);
  EXPECT_EQ(starting.err_at_signal.find("train: model="), std::string::npos)
      << "the signal came after the run started training: " << starting.err_at_signal;
  ASSERT_TRUE(WIFEXITED(starting.status)) << Describe(starting);
  EXPECT_EQ(WEXITSTATUS(starting.status), 3) << Describe(starting);
  EXPECT_EQ(LastLine(starting.out),
            "RESULT train model=din status=stopped step=1 checkpoint=" + root + "/ck_a/ckpt-1")
      << Describe(starting);
  EXPECT_NE(starting.err.find("stopped by SIGTERM at step 1"), std::string::npos)
      << Describe(starting);

  const Signalled pending = RunSignalled(
      args + root + "/ck_b", root, SIGUSR1, [](pid_t) { return true; },
      /*pending=*/true);
  ASSERT_TRUE(WIFEXITED(pending.status)) << Describe(pending);
  EXPECT_EQ(WEXITSTATUS(pending.status), 3) << Describe(pending);
  EXPECT_EQ(LastLine(pending.out),
            "RESULT train model=din status=stopped step=1 checkpoint=" + root + "/ck_b/ckpt-1")
      << Describe(pending);
  EXPECT_NE(pending.err.find("stopped by SIGUSR1 at step 1"), std::string::npos)
      << Describe(pending);
  (void)std::system(("rm -rf " + root).c_str());
}

// The planted dataset with 1000 sampled negatives per evaluation list: 400 lists of 1001 rows,
// an evaluation of about a second on one core, ten times an epoch's training.
std::string MakeLongEvaluationDataset(const std::string& root) {
  {
    std::ofstream out(root + "/in.txt");
    Rng rng(1);
    for (int u = 1; u <= 400; ++u) {
      const int g = (u - 1) % 40, s = static_cast<int>(rng.UniformInt(10));
      for (int j = 0; j < 12; ++j) out << u << " " << g * 10 + (s + j) % 10 + 1 << "\n";
    }
  }
  ConvertOptions o;
  o.format = "seqrec";
  o.input = root + "/in.txt";
  o.output = root + "/ds";
  o.max_history = 10;
  o.eval_negatives = 1000;
  EXPECT_OK(ConvertDataset(o).status());
  return root + "/ds";
}

constexpr char kLongEvaluationConfig[] = R"(
version: 1
name: "eval_stop"
data { batch_size: 32 max_history: 10 seed: 3 }
model { type: DIN embedding_dim: 8 attention_hidden: [64, 32] mlp_hidden: [256, 128] activation: PRELU }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 8 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 8 initializer { type: XAVIER_NORMAL } }
train { epochs: 2 num_threads: 1 seed: 0 }
eval { top_k: 10 every_epochs: 1 max_users: 0 }
)";

// Whether `dir` holds the published checkpoint of `step` (the runs save one right before an
// evaluation here: the last step's always, epoch 1's with every_steps = the epoch's steps).
bool HasCheckpoint(const std::string& dir, int64_t step) {
  auto list = ListCheckpoints(dir);
  if (!list.ok()) return false;
  for (const auto& entry : *list)
    if (entry.first == step) return true;
  return false;
}

// A stop signal during an evaluation abandons it (between two batches) and the run stops at once,
// with the checkpoint of the step before the evaluation: exit 3, status=stopped at that step, in
// a fraction of the evaluation's time. (It used to finish the evaluation, train one more step and
// stop there; during the final evaluation it finished the run, exit 0.) Resumed, the run repeats
// the evaluation and ends with the uninterrupted run's RESULT.
TEST(ResumeCli, StopDuringAnEvaluationAbandonsItAndResumesLikeAnUninterruptedRun) {
  const std::string root = TempRoot("cli_eval_stop");
  const std::string ds = MakeLongEvaluationDataset(root);
  WriteConfig(root + "/ev.pbtxt", kLongEvaluationConfig);
  const std::string base =
      "train --quiet --config " + root + "/ev.pbtxt --set data.train_dir=" + ds;
  Cmd full = Exec(
      base + " --set checkpoint.dir=" + root + "/full --metrics_out " + root + "/full.json", root);
  ASSERT_EQ(full.rc, 0) << full.err;
  std::string epoch1;  // the first epoch line (train lines come before it)
  {
    std::ifstream f(root + "/full.json");
    while (std::getline(f, epoch1) && epoch1.find("\"phase\":\"epoch\"") == std::string::npos) {
    }
  }
  const int64_t per_epoch = std::stoll(Field(epoch1, "steps", true));
  const double eval_s = std::stod(Field(epoch1, "eval_s", true));
  ASSERT_GT(per_epoch, 10);
  const std::string full_result = LastLine(full.out);
  ASSERT_EQ(full_result.rfind("RESULT train model=din epochs=2 steps=", 0), 0u) << full.out;
  // The RESULT but its throughput (a resumed run's counts only its own steps).
  auto without_throughput = [](std::string line) {
    const size_t b = line.find(" samples_per_s="), e = line.find(' ', b + 1);
    return b == std::string::npos ? line : line.erase(b, e - b);
  };

  struct Case {
    const char* name;
    std::string extra;  // every_steps for epoch 1's checkpoint
    int64_t step;       // the checkpoint saved before the evaluation hit
  };
  for (const Case& c :
       {Case{"mid", " --set checkpoint.every_steps=" + std::to_string(per_epoch), per_epoch},
        Case{"final", "", 2 * per_epoch}}) {
    SCOPED_TRACE(c.name);
    const std::string dir = root + "/" + c.name;
    const std::string args = base + " --set checkpoint.dir=" + dir + c.extra;
    // The signal a quarter of an evaluation after the checkpoint: in the evaluation, not in the
    // moment between the checkpoint and the check of the stop flag that follows it in the loop.
    // The evaluation may run quicker than the full run's did (another job's load ended): a run
    // that ended before the signal went is tried again, up to 3 times.
    Signalled stopped;
    for (int attempt = 0; attempt < 3 && !stopped.sent; ++attempt) {
      (void)std::system(("rm -rf " + dir).c_str());
      std::optional<std::chrono::steady_clock::time_point> saved;
      stopped = RunSignalled(args, root, SIGUSR1, [&](pid_t) {
        if (!saved && HasCheckpoint(dir, c.step)) saved = std::chrono::steady_clock::now();
        return saved &&
               std::chrono::duration<double>(std::chrono::steady_clock::now() - *saved).count() >=
                   eval_s / 4;
      });
    }
    ASSERT_TRUE(stopped.sent) << Describe(stopped);
    ASSERT_TRUE(WIFEXITED(stopped.status)) << Describe(stopped);
    EXPECT_EQ(WEXITSTATUS(stopped.status), 3) << Describe(stopped);
    EXPECT_EQ(LastLine(stopped.out),
              "RESULT train model=din status=stopped step=" + std::to_string(c.step) +
                  " checkpoint=" + dir + "/ckpt-" + std::to_string(c.step))
        << Describe(stopped);
    EXPECT_LT(stopped.after_signal_s, eval_s / 2)
        << "the stop waited for the evaluation (" << eval_s << " s)";
    Cmd resumed = Exec(args + " --resume " + dir, root);
    ASSERT_EQ(resumed.rc, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("resumed from '" + dir + "' at step " + std::to_string(c.step)),
              std::string::npos)
        << resumed.err;
    EXPECT_EQ(without_throughput(LastLine(resumed.out)), without_throughput(full_result));
  }
  (void)std::system(("rm -rf " + root).c_str());
}

// 6000 users of 12 events on items drawn from 200000 ids (about 66000 distinct): MIND's
// full-ranking retrieval evaluation (6000 users x every item) takes about two seconds on one
// core, several times the sampled ranking evaluation before it (20 negatives per list).
std::string MakeLongRetrievalDataset(const std::string& root) {
  {
    std::ofstream out(root + "/in.txt");
    Rng rng(1);
    for (int u = 1; u <= 6000; ++u)
      for (int j = 0; j < 12; ++j) out << u << " " << 1 + rng.UniformInt(199999) << "\n";
  }
  ConvertOptions o;
  o.format = "seqrec";
  o.input = root + "/in.txt";
  o.output = root + "/ds";
  o.max_history = 10;
  o.eval_negatives = 20;
  EXPECT_OK(ConvertDataset(o).status());
  return root + "/ds";
}

constexpr char kLongRetrievalConfig[] = R"(
version: 1
name: "retrieval_stop"
data { batch_size: 64 max_history: 10 seed: 3 }
model { type: MIND embedding_dim: 32 num_interests: 2 routing_iterations: 3 }
optimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }
tables { name: "item" dim: 32 initializer { type: XAVIER_NORMAL } }
tables { name: "category" dim: 32 initializer { type: XAVIER_NORMAL } }
train { epochs: 1 num_threads: 1 seed: 0 }
eval { top_k: [10, 20] every_epochs: 1 max_users: 0 }
)";

// MIND's full-ranking retrieval evaluation, which single-process `ips train` runs after the last
// epoch's ranking evaluation, is abandoned by a stop signal like the other evaluations: exit 3,
// one RESULT line status=stopped at the last step, whose checkpoint (saved before the
// evaluations) is there, in a fraction of the evaluation's time. Resumed, the run evaluates again
// and ends with the uninterrupted run's RESULT. (It finished the retrieval evaluation and the run:
// exit 0.)
TEST(ResumeCli, StopDuringMindRetrievalEvaluationAbandonsItAndResumesLikeAnUninterruptedRun) {
  const std::string root = TempRoot("cli_retrieval_stop");
  const std::string ds = MakeLongRetrievalDataset(root);
  WriteConfig(root + "/mind.pbtxt", kLongRetrievalConfig);
  const std::string base =
      "train --quiet --config " + root + "/mind.pbtxt --set data.train_dir=" + ds;
  Cmd full = Exec(base + " --set checkpoint.dir=" + root + "/full", root);
  ASSERT_EQ(full.rc, 0) << full.err;
  const std::string full_result = LastLine(full.out);
  ASSERT_EQ(full_result.rfind("RESULT train model=mind epochs=1 steps=", 0), 0u) << full.out;
  ASSERT_NE(full_result.find(" recall20="), std::string::npos) << full_result;
  const int64_t steps = std::stoll(Field(full_result, "steps", false));
  // "retrieval: U users x I items in S s"
  const size_t at = full.err.find("retrieval: ");
  ASSERT_NE(at, std::string::npos) << full.err;
  const size_t in = full.err.find(" in ", at);
  ASSERT_NE(in, std::string::npos) << full.err;
  const double retrieval_s = std::stod(full.err.substr(in + 4));
  ASSERT_GE(retrieval_s, 0.4) << "too quick to be signalled in the middle: " << full.err;
  auto without_throughput = [](std::string line) {
    const size_t b = line.find(" samples_per_s="), e = line.find(' ', b + 1);
    return b == std::string::npos ? line : line.erase(b, e - b);
  };

  const std::string dir = root + "/stop", metrics = root + "/stop.json";
  const std::string args = base + " --set checkpoint.dir=" + dir + " --metrics_out " + metrics;
  // The signal a quarter of the retrieval evaluation after it started: the epoch's JSON line (the
  // first with the ranking metrics) is written after the ranking evaluation, right before the
  // retrieval one.
  // Tried again (up to 3 times) if the run ended before the signal went, as above.
  Signalled stopped;
  for (int attempt = 0; attempt < 3 && !stopped.sent; ++attempt) {
    (void)std::system(("rm -rf " + dir + " " + metrics).c_str());
    std::optional<std::chrono::steady_clock::time_point> started;
    stopped = RunSignalled(args, root, SIGTERM, [&](pid_t) {
      if (!started && ReadAll(metrics).find("\"hr10\":") != std::string::npos)
        started = std::chrono::steady_clock::now();
      return started &&
             std::chrono::duration<double>(std::chrono::steady_clock::now() - *started).count() >=
                 retrieval_s / 4;
    });
  }
  ASSERT_TRUE(stopped.sent) << Describe(stopped);
  ASSERT_TRUE(WIFEXITED(stopped.status)) << Describe(stopped);
  EXPECT_EQ(WEXITSTATUS(stopped.status), 3) << Describe(stopped);
  EXPECT_EQ(stopped.out, "RESULT train model=mind status=stopped step=" + std::to_string(steps) +
                             " checkpoint=" + dir + "/ckpt-" + std::to_string(steps) + "\n")
      << Describe(stopped);
  EXPECT_NE(stopped.err.find("stopped by SIGTERM at step " + std::to_string(steps)),
            std::string::npos)
      << Describe(stopped);
  EXPECT_EQ(stopped.err.find("retrieval: "), std::string::npos) << "it finished the evaluation";
  EXPECT_TRUE(HasCheckpoint(dir, steps)) << Describe(stopped);
  EXPECT_LT(stopped.after_signal_s, retrieval_s / 2)
      << "the stop waited for the retrieval evaluation (" << retrieval_s << " s)";

  Cmd resumed = Exec(args + " --resume " + dir, root);
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from '" + dir + "' at step " + std::to_string(steps)),
            std::string::npos)
      << resumed.err;
  EXPECT_EQ(without_throughput(LastLine(resumed.out)), without_throughput(full_result));
  (void)std::system(("rm -rf " + root).c_str());
}
#endif  // IPS_BINARY

}  // namespace
}  // namespace ips
