// Distributed training of the sequence models (SASRec, GRU4Rec) under mpirun
// (launch/cluster_seq_train.cc): this binary launches `mpirun --oversubscribe` on itself, every
// rank running RunClusterTrain (tests/ps/cluster_train_case.h), and compares with single-process
// training computed here in-process:
//  - 1 worker in sync mode, with 1 or 2 PS, repeats single-process training's step losses bit for
//    bit on synthetic data (SASRec with dropout, GRU4Rec): same batches, same rows (the servers
//    run the single-process table optimizer on the same gradients in the same order), the
//    all-reduce mean of one replica is the identity, and the prefetch changes nothing;
//  - 2 workers + 1 PS (sync and async) train with finite, decreasing losses and replicas that
//    pass the periodic checksum (the job aborts on a mismatch);
//  - on a dataset directory (made with `ips data synth` + `ips data convert`), 1 worker repeats
//    single-process RunSeqDatasetTraining's step losses and per-epoch HR@10 / NDCG@10 / AUC, and
//    2 workers + 2 PS report an HR@10 far above a random scorer's;
//  - checkpoints: SASRec (dropout) stopped by SIGTERM or checkpointed periodically resumes with
//    the uninterrupted run's remaining step losses bit for bit (synthetic, 1 worker), and on a
//    dataset mid-epoch with the same losses and per-epoch lines on a different number of PS
//    (1 worker: 1 -> 2 PS, 2 workers: 2 -> 1 PS, also synthetic); single-process
//    `ips train --resume` of a cluster checkpoint ends with the same metrics; a missing checkpoint
//    fails on every rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/local_embedding_store.h"
#include "tests/ps/cluster_train_case.h"
#include "tests/testing/mpi_run.h"
#include "tests/testing/run_ips.h"
#include "tests/testing/tolerance.h"
#include "worker/data_reader.h"
#include "worker/seq_trainer.h"
#include "worker/synthetic_batches.h"
#include "worker/trainer.h"

namespace ips {
namespace {

using testing::Field;
using testing::MpiRun;
using testing::RunMpiSelf;
using testing::ScratchDir;

constexpr char kSasrec[] = "type: SASREC embedding_dim: 8 num_blocks: 1 num_heads: 1 dropout: 0.3";
constexpr char kGru4rec[] = "type: GRU4REC embedding_dim: 8";

// A sequence model on synthetic data: 2 warm-up + `steps` steps of 16 sequences of 8.
std::string SyntheticConfig(const std::string& model, int num_ps, const std::string& sync,
                            int steps = 20) {
  return "version: 1\nname: \"seq_mpi\"\ndata { batch_size: 16 max_history: 8 seed: 0 "
         "synthetic { num_items: 500 num_categories: 10 zipf_alpha: 1.1 warmup_steps: 2 steps: " +
         std::to_string(steps) + " } }\nmodel { " + model +
         " }\noptimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }\n"
         "tables { name: \"item\" dim: 8 initializer { type: XAVIER_NORMAL } }\n"
         "train { epochs: 1 num_threads: 1 seed: 0 log_every_steps: 1 }\n"
         "cluster { num_ps: " +
         std::to_string(num_ps) + " sync: " + sync + " }\n";
}

// A sequence model on the dataset directory `dir`: 3 epochs of batch 32, evaluated every epoch.
std::string DatasetConfig(const std::string& dir, int num_ps, const std::string& extra = "") {
  return "version: 1\nname: \"seq_mpi_data\"\ndata { train_dir: \"" + dir +
         "\" batch_size: 32 max_history: 10 seed: 0 }\nmodel { " + std::string(kSasrec) +
         " }\noptimizer { type: ADAM learning_rate: 0.01 beta1: 0.9 beta2: 0.999 }\n"
         "tables { name: \"item\" dim: 8 initializer { type: XAVIER_NORMAL } }\n"
         "train { epochs: 3 num_threads: 1 seed: 0 log_every_steps: 1 }\n"
         "eval { top_k: 10 every_epochs: 1 }\ncluster { num_ps: " +
         std::to_string(num_ps) + " sync: SYNC }\n" + extra;
}

// `timeout mpirun -np NP <this binary> --mpi_case=train --config=... ARGS`.
MpiRun Train(int np, const std::string& config_path, const std::string& args = "",
             int timeout_s = 60) {
  return RunMpiSelf(np, "--mpi_case=train --config=" + config_path + " " + args, timeout_s);
}

std::vector<double> ClusterLosses(const std::string& metrics_path) {
  std::vector<double> out;
  for (const auto& [step, loss] : testing::LossesOf(metrics_path)) out.push_back(loss);
  return out;
}

// Single-process training of a config as `ips train` runs it: the job (fitted to its dataset
// when it has one), an in-process store and a SeqTrainer.
struct SingleProcess {
  TrainJob job;
  std::unique_ptr<Dataset> data;
  std::unique_ptr<ps::LocalEmbeddingStore> store;
  std::unique_ptr<SeqTrainer> trainer;
};
void MakeSingleProcess(const std::string& text, SingleProcess* sp) {
  auto cfg = ParseConfigText(text, "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto job = TrainJobFromConfig(*cfg);
  ASSERT_TRUE(job.ok()) << job.status();
  sp->job = *job;
  if (!sp->job.synthetic) {
    auto data = Dataset::Open(sp->job.dataset.train_dir);
    ASSERT_TRUE(data.ok()) << data.status();
    sp->data = std::move(data).value();
    ASSERT_TRUE(FitJobToDataset(*sp->data, &sp->job).ok());
  }
  auto store = ps::LocalEmbeddingStore::Create(sp->job.tables);
  ASSERT_TRUE(store.ok()) << store.status();
  sp->store = std::move(store).value();
  auto trainer = CreateSeqTrainer(sp->job.trainer, sp->store.get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  sp->trainer = std::move(trainer).value();
}

// 1 worker + `ps` servers, sync: every step loss equal to single-process training's, bit for bit
// (tolerance 0: nothing in the distributed path changes a float operation or its order).
void ExpectOneWorkerEqualsSingleProcess(const std::string& model, int ps) {
  const std::string text = SyntheticConfig(model, ps, "SYNC");
  SingleProcess sp;
  ASSERT_NO_FATAL_FAILURE(MakeSingleProcess(text, &sp));
  auto run = RunSeqSyntheticTraining(sp.trainer.get(), sp.job.run, RunSinks{});
  ASSERT_TRUE(run.ok()) << run.status();
  const std::vector<double>& single = run->losses;
  ASSERT_EQ(single.size(), 22u);
  ScratchDir dir("seq_one_" + std::to_string(ps));
  const std::string metrics = dir / "metrics.jsonl";
  MpiRun r = Train(ps + 1, dir.Write("c.pbtxt", text), "--metrics_out=" + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string name = model.find("SASREC") != std::string::npos ? "sasrec" : "gru4rec";
  EXPECT_NE(r.out.find("RESULT train_cluster model=" + name +
                       " workers=1 ps=" + std::to_string(ps) + " sync=sync"),
            std::string::npos)
      << r.output;
  const std::vector<double> got = ClusterLosses(metrics);
  ASSERT_EQ(got.size(), single.size()) << r.output;
  EXPECT_TRUE(testing::AllClose(got, single, testing::Tolerance{0, 0}))
      << name << ", " << ps << " PS\n"
      << r.output;
  // Every step's pull but the first was served by the previous step's prefetch.
  EXPECT_NE(r.err.find("(worker 0): pulls=22 prefetch_hits=21"), std::string::npos) << r.err;
  // The RESULT loss is single-process training's last-10 mean.
  double last10 = 0;
  for (size_t i = single.size() - 10; i < single.size(); ++i) last10 += single[i] / 10;
  EXPECT_NEAR(std::stod(Field(r.out, "RESULT train_cluster", "loss")), last10, 1e-4) << r.out;
}

TEST(ClusterSeq, SasrecOneWorkerEqualsSingleProcess_1And2Ps) {
  ExpectOneWorkerEqualsSingleProcess(kSasrec, 1);
  ExpectOneWorkerEqualsSingleProcess(kSasrec, 2);
}

TEST(ClusterSeq, Gru4recOneWorkerEqualsSingleProcess) {
  ExpectOneWorkerEqualsSingleProcess(kGru4rec, 1);
}

// 2 workers + 1 PS: both train (worker 0 reports), losses finite and decreasing, the dense
// replicas equal at every 5th step (CaseTrain's replica check aborts the job otherwise).
void ExpectTwoWorkersTrain(const std::string& sync) {
  ScratchDir dir("seq_two");
  const std::string metrics = dir / "metrics.jsonl";
  MpiRun r = Train(3, dir.Write("c.pbtxt", SyntheticConfig(kSasrec, 1, sync, 60)),
                   "--metrics_out=" + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.out.find("RESULT train_cluster model=sasrec workers=2 ps=1"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.err.find("replica"), std::string::npos) << r.err;
  const std::vector<double> losses = ClusterLosses(metrics);
  ASSERT_EQ(losses.size(), 62u) << r.output;
  for (double l : losses) ASSERT_TRUE(std::isfinite(l)) << r.output;
  double first = 0, last = 0;
  for (size_t i = 0; i < 10; ++i) first += losses[i] / 10;
  for (size_t i = losses.size() - 10; i < losses.size(); ++i) last += losses[i] / 10;
  // Zipf positives and Zipf negatives carry no signal: the loss (positive + negative BCE) falls
  // from its initial ~1.40 to the chance level 2 ln 2 = 1.386 (untrained it stays at ~1.40).
  EXPECT_LT(last, first - 0.005) << sync << ": first10 " << first << " last10 " << last;
  EXPECT_LT(last, 1.395) << sync;
  // Both workers all-reduce the same number of dense floats (SASRec's weights, not 0).
  EXPECT_GT(std::stoll(Field(r.out, "RESULT train_cluster", "dense_floats")), 0) << r.out;
}

TEST(ClusterSeq, TwoWorkersSyncTrainWithEqualReplicas) { ExpectTwoWorkersTrain("SYNC"); }

TEST(ClusterSeq, TwoWorkersAsyncTrainWithEqualReplicas) {
  ExpectTwoWorkersTrain("ASYNC staleness: 2");
}

// ---- SeqTrainer's hook and prefetch (in-process) -------------------------------------------

// The dense_grad_allreduce hook sees every dense gradient before the update (a hook zeroing them
// leaves the Adam-updated weights unchanged, while the embedding rows still train), and a bad
// `next` batch is rejected before anything is pulled.
TEST(ClusterSeqTrainer, HookSeesTheDenseGradientsAndABadNextBatchTouchesNothing) {
  SingleProcess sp;
  ASSERT_NO_FATAL_FAILURE(MakeSingleProcess(SyntheticConfig(kSasrec, 1, "SYNC"), &sp));
  int64_t calls = 0, floats = 0;
  sp.job.trainer.dense_grad_allreduce = [&](float* g, int64_t n) {
    ++calls;
    floats = n;
    std::fill(g, g + n, 0.0f);
    return Status::Ok();
  };
  auto hooked = CreateSeqTrainer(sp.job.trainer, sp.store.get());
  ASSERT_TRUE(hooked.ok()) << hooked.status();
  SeqTrainer* t = hooked->get();
  auto gen = SyntheticBatches::Create(sp.job.run.data);
  ASSERT_TRUE(gen.ok()) << gen.status();
  SeqBatch b0, b1;
  ASSERT_TRUE((*gen)->SeqBatchAt(0, sp.job.run.batch, &b0).ok());
  ASSERT_TRUE((*gen)->SeqBatchAt(1, sp.job.run.batch, &b1).ok());

  // A next batch of the wrong length: INVALID_ARGUMENT, no row pulled, no step taken.
  SeqBatchView bad = ViewOf(b1);
  bad.seq_len = 3;
  auto rejected = t->Step(ViewOf(b0), &bad);
  EXPECT_EQ(rejected.status().code(), StatusCode::kInvalidArgument) << rejected.status();
  auto stats = sp.store->Stats(0);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->rows, 0);
  EXPECT_EQ(t->steps(), 0);
  EXPECT_EQ(calls, 0);

  auto& params = t->model().params();
  const std::vector<float> before(params.values(), params.values() + params.size());
  const SeqBatchView next = ViewOf(b1);
  ASSERT_TRUE(t->Step(ViewOf(b0), &next).ok());
  ASSERT_TRUE(t->Step(ViewOf(b1)).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(floats, params.size());
  EXPECT_TRUE(
      testing::AllClose(std::vector<float>(params.values(), params.values() + params.size()),
                        before, testing::Tolerance{0, 0}));
  stats = sp.store->Stats(0);
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->rows, 0);
  // Without the hook a step changes the dense weights (the check above can fail).
  const auto& p2 = sp.trainer->model().params();
  const std::vector<float> before2(p2.values(), p2.values() + p2.size());
  ASSERT_TRUE(sp.trainer->Step(ViewOf(b0)).ok());
  EXPECT_FALSE(testing::AllClose(std::vector<float>(p2.values(), p2.values() + p2.size()), before2,
                                 testing::Tolerance{0, 0}));
}

// ---- Dataset directory --------------------------------------------------------------------

// The lines of `text` that start with `prefix`.
std::vector<std::string> LinesStartingWith(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  return out;
}
// The number at "key": in a JSON line (NaN if absent or null).
double JsonValue(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\":");
  return at == std::string::npos ? std::nan("") : std::strtod(&line[at + key.size() + 3], nullptr);
}

// A tiny seqrec dataset (199 users, 320 items: 199 training sequences, 7 batches of 32).
class ClusterSeqData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("cluster_seq_data");
    auto synth = testing::RunIps("data synth --output " + *dir_ / "events.txt" +
                                 " --truth none --events 6000 --users 200 --items 300 "
                                 "--categories 20 --seed 3");
    ASSERT_EQ(synth.exit_code, 0) << synth.output;
    auto conv = testing::RunIps("data convert --format events --protocol seqrec --input " +
                                *dir_ / "events.txt" + " --output " + Data() +
                                " --max_history 10 --shards 2");
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Data() { return *dir_ / "ds"; }
  static ScratchDir* dir_;
};
ScratchDir* ClusterSeqData::dir_ = nullptr;

TEST_F(ClusterSeqData, OneWorkerEqualsSingleProcessAndTwoWorkersRank) {
  const std::string text = DatasetConfig(Data(), 1);
  // Single-process RunSeqDatasetTraining: step losses and per-epoch lines.
  std::vector<double> single;
  std::ostringstream single_metrics;
  SingleProcess sp;
  ASSERT_NO_FATAL_FAILURE(MakeSingleProcess(text, &sp));
  RunSinks sinks;
  sinks.metrics_out = &single_metrics;
  sinks.on_step = [&single](int64_t, double loss) { single.push_back(loss); };
  auto run = RunSeqDatasetTraining(sp.trainer.get(), *sp.data, sp.job.dataset, sinks);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(single.size(), 21u);  // 3 epochs of ceil(199 / 32) = 7 batches
  const std::vector<std::string> single_epochs =
      LinesStartingWith(single_metrics.str(), "{\"phase\":\"epoch\"");
  ASSERT_EQ(single_epochs.size(), 3u);

  ScratchDir dir("seq_data_one");
  const std::string metrics = dir / "metrics.jsonl";
  MpiRun r = Train(2, dir.Write("c.pbtxt", text), "--metrics_out=" + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::AllClose(ClusterLosses(metrics), single, testing::Tolerance{0, 0}))
      << r.output;
  // The prefetch stays within an epoch: 7 steps, 6 of them prefetched, in each of 3 epochs.
  EXPECT_NE(r.err.find("(worker 0): pulls=21 prefetch_hits=18"), std::string::npos) << r.err;
  const std::vector<std::string> epochs =
      LinesStartingWith(testing::ReadFile(metrics), "{\"phase\":\"epoch\"");
  ASSERT_EQ(epochs.size(), 3u) << r.output;
  for (size_t e = 0; e < 3; ++e)
    for (const char* key : {"epoch", "hr10", "ndcg10", "auc", "loss", "steps", "eval_users"})
      EXPECT_EQ(JsonValue(epochs[e], key), JsonValue(single_epochs[e], key)) << key << "\n"
                                                                             << epochs[e] << "\n"
                                                                             << single_epochs[e];
  const std::string hr = Field(r.out, "RESULT train_cluster", "hr10");
  ASSERT_FALSE(hr.empty()) << r.out;
  EXPECT_NEAR(std::stod(hr), JsonValue(single_epochs[2], "hr10"), 1e-4) << r.out;

  // 2 workers + 2 PS: 3 rounds of 2 batches per epoch (one batch left out), HR@10 far above a
  // random scorer's 10/101.
  ScratchDir dir2("seq_data_two");
  r = Train(4, dir2.Write("c.pbtxt", DatasetConfig(Data(), 2)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.out.find("RESULT train_cluster model=sasrec workers=2 ps=2 sync=sync epochs=3 "
                       "steps=9 "),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.err.find("3 steps/epoch"), std::string::npos) << r.err;
  const std::string hr2 = Field(r.out, "RESULT train_cluster", "hr10");
  ASSERT_FALSE(hr2.empty()) << r.out;
  EXPECT_GT(std::stod(hr2), 0.2) << r.out;
  EXPECT_TRUE(std::isfinite(std::stod(Field(r.out, "RESULT train_cluster", "loss")))) << r.out;
}

// The per-epoch lines of a --metrics_out file without their timings (samples_per_s, eval_s).
std::vector<std::string> EpochLinesWithoutTimings(const std::string& metrics_path) {
  std::vector<std::string> out;
  for (std::string line :
       LinesStartingWith(testing::ReadFile(metrics_path), "{\"phase\":\"epoch\"")) {
    for (const char* key : {"\"samples_per_s\":", "\"eval_s\":"}) {
      const size_t at = line.find(key);
      if (at != std::string::npos) line.erase(at, line.find_first_of(",}", at) - at);
    }
    out.push_back(line);
  }
  return out;
}

// Resumed step losses (step -> loss) equal to the uninterrupted run's from `first` on, bit for bit.
void ExpectSameLossesFrom(const std::map<int64_t, double>& full,
                          const std::map<int64_t, double>& resumed, int64_t first,
                          const std::string& what) {
  ASSERT_FALSE(resumed.empty()) << what;
  EXPECT_EQ(resumed.begin()->first, first) << what;
  EXPECT_EQ(resumed.rbegin()->first, full.rbegin()->first) << what;
  for (const auto& [step, loss] : resumed) {
    auto it = full.find(step);
    ASSERT_NE(it, full.end()) << what << ": step " << step;
    EXPECT_EQ(loss, it->second) << what << ": step " << step;
  }
}

// Synthetic SASRec (dropout 0.3), 1 worker + 1 PS, sync: SIGTERM at the start of step 13 (index
// 12) checkpoints after it and stops; --resume of that checkpoint (the root's LATEST) and of the
// periodic ckpt-8 both repeat the uninterrupted run's remaining step losses bit for bit (the
// dropout masks follow the restored dropout step, the rows and Adam states the servers' shards).
TEST(ClusterSeq, CheckpointSigtermAndResumeRepeatTheLosses) {
  ScratchDir dir("seq_ckpt_synth");
  const std::string ckpt = dir / "ckpt";
  const std::string plain = dir.Write("plain.pbtxt", SyntheticConfig(kSasrec, 1, "SYNC"));
  MpiRun full = Train(2, plain, "--metrics_out=" + (dir / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::map<int64_t, double> ref = testing::LossesOf(dir / "full.jsonl");
  ASSERT_EQ(ref.size(), 22u) << full.output;

  const std::string config =
      dir.Write("ckpt.pbtxt", SyntheticConfig(kSasrec, 1, "SYNC") + "checkpoint { dir: \"" + ckpt +
                                  "\" every_steps: 8 }\n");
  MpiRun stopped =
      Train(2, config, "--kill_rank=1 --term_step=12 --metrics_out=" + (dir / "stopped.jsonl"));
  EXPECT_NE(stopped.exit_code, 0) << stopped.output;  // the worker exits 3 (kExitStopped)
  EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "status"), "stopped") << stopped.output;
  EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "step"), "13") << stopped.output;
  EXPECT_EQ(std::system(("test -d " + ckpt + "/ckpt-8 && test -d " + ckpt + "/ckpt-13").c_str()),
            0);
  EXPECT_EQ(testing::LossesOf(dir / "stopped.jsonl").size(), 13u);

  MpiRun resumed = Train(2, plain, "--resume=" + ckpt + " --metrics_out=" + (dir / "r13.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.err.find("resumed from " + ckpt + " at step 13"), std::string::npos)
      << resumed.err;
  ExpectSameLossesFrom(ref, testing::LossesOf(dir / "r13.jsonl"), 14, "resumed at 13");
  // The RESULT loss (last-10 mean) needs the checkpoint's losses of steps 13 and before.
  EXPECT_EQ(Field(resumed.out, "RESULT train_cluster", "loss"),
            Field(full.out, "RESULT train_cluster", "loss"))
      << resumed.out;

  resumed = Train(2, plain, "--resume=" + ckpt + "/ckpt-8 --metrics_out=" + (dir / "r8.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  ExpectSameLossesFrom(ref, testing::LossesOf(dir / "r8.jsonl"), 9, "resumed at 8");

  // Single-process `ips train --resume` of the cluster checkpoint: the same last-10 mean loss
  // (6 decimals on --metrics_out's result line).
  auto single = testing::RunIpsSplit("train --quiet --config " + plain + " --resume " + ckpt +
                                     "/ckpt-8 --metrics_out " + (dir / "single.jsonl"));
  ASSERT_EQ(single.exit_code, 0) << single.error << single.output;
  auto result_loss = [](const std::string& path) {
    const auto lines = LinesStartingWith(testing::ReadFile(path), "{\"phase\":\"result\"");
    return lines.empty() ? std::nan("") : JsonValue(lines.back(), "loss");
  };
  EXPECT_EQ(result_loss(dir / "single.jsonl"), result_loss(dir / "full.jsonl")) << single.output;
}

// Synthetic SASRec, 2 workers + 2 PS, sync: ckpt-8 resumes on 2 workers + 1 PS (the rows
// re-sharded) with worker 0's step losses of the uninterrupted run, bit for bit.
TEST(ClusterSeq, CheckpointTwoWorkersResumesOnFewerPs) {
  ScratchDir dir("seq_ckpt_two");
  const std::string ckpt = dir / "ckpt";
  MpiRun full =
      Train(4,
            dir.Write("c.pbtxt", SyntheticConfig(kSasrec, 2, "SYNC") + "checkpoint { dir: \"" +
                                     ckpt + "\" every_steps: 8 }\n"),
            "--metrics_out=" + (dir / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::map<int64_t, double> ref = testing::LossesOf(dir / "full.jsonl");
  ASSERT_EQ(ref.size(), 22u) << full.output;
  MpiRun resumed = Train(3, dir.Write("r.pbtxt", SyntheticConfig(kSasrec, 1, "SYNC")),
                         "--resume=" + ckpt + "/ckpt-8 --metrics_out=" + (dir / "r.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.out.find("RESULT train_cluster model=sasrec workers=2 ps=1"), std::string::npos)
      << resumed.output;
  ExpectSameLossesFrom(ref, testing::LossesOf(dir / "r.jsonl"), 9, "2 -> 1 PS");
}

// A dataset run on `workers` workers + `ps` servers that checkpoints every `every` steps, and a
// run resumed from its ckpt-<at> on resumed_ps servers: the resumed run starts at `where`
// ("epoch E position P step S") and repeats worker 0's step losses (bit for bit) and the per-epoch
// lines of the uninterrupted run, which has `steps` steps over 3 epochs and resumes in epoch 2.
struct ResumedDataRun {
  MpiRun full, resumed;
  std::string ckpt, resumed_config;
};
void ExpectResumeRepeatsTheRun(const ScratchDir& dir, const std::string& data, int workers, int ps,
                               int every, int at, int resumed_ps, size_t steps,
                               const std::string& where, ResumedDataRun* out) {
  out->ckpt = dir / "ckpt";
  const std::string full_metrics = dir / "full.jsonl", resumed_metrics = dir / "resumed.jsonl";
  const std::string ck = "checkpoint { dir: \"" + out->ckpt +
                         "\" every_steps: " + std::to_string(every) + " keep_last: 5 }\n";
  out->full = Train(workers + ps, dir.Write("c.pbtxt", DatasetConfig(data, ps, ck)),
                    "--metrics_out=" + full_metrics);
  ASSERT_EQ(out->full.exit_code, 0) << out->full.output;
  const std::map<int64_t, double> ref = testing::LossesOf(full_metrics);
  ASSERT_EQ(ref.size(), steps) << out->full.output;

  out->resumed_config = dir.Write("r.pbtxt", DatasetConfig(data, resumed_ps));
  out->resumed = Train(workers + resumed_ps, out->resumed_config,
                       "--resume=" + out->ckpt + "/ckpt-" + std::to_string(at) +
                           " --metrics_out=" + resumed_metrics);
  ASSERT_EQ(out->resumed.exit_code, 0) << out->resumed.output;
  EXPECT_NE(out->resumed.err.find("resumed from " + out->ckpt + "/ckpt-" + std::to_string(at) +
                                  " at " + where + "\n"),
            std::string::npos)
      << out->resumed.err;
  ExpectSameLossesFrom(ref, testing::LossesOf(resumed_metrics), at + 1,
                       std::to_string(ps) + " -> " + std::to_string(resumed_ps) + " PS");
  // The resumed epoch 2 (its loss over all its steps) and epoch 3.
  const std::vector<std::string> a = EpochLinesWithoutTimings(full_metrics),
                                 b = EpochLinesWithoutTimings(resumed_metrics);
  ASSERT_EQ(a.size(), 3u) << out->full.output;
  ASSERT_EQ(b.size(), 2u) << out->resumed.output;
  EXPECT_EQ(b[0], a[1]);
  EXPECT_EQ(b[1], a[2]);
  EXPECT_EQ(Field(out->resumed.out, "RESULT train_cluster", "hr10"),
            Field(out->full.out, "RESULT train_cluster", "hr10"))
      << out->resumed.out;
}

// 1 worker: a checkpoint in the middle of epoch 2 (step 10, 7 steps per epoch) of a run on 1 PS
// resumes on 2 PS (the rows re-sharded); single-process `ips train --resume` of it ends with the
// same metrics.
TEST_F(ClusterSeqData, CheckpointMidEpochResumesOnMorePsAndSingleProcess) {
  ScratchDir dir("seq_ckpt_data");
  ResumedDataRun r;
  ASSERT_NO_FATAL_FAILURE(ExpectResumeRepeatsTheRun(dir, Data(), 1, 1, 10, 10, 2, 21,
                                                    "epoch 2 position 96 step 10", &r));
  auto single = testing::RunIpsSplit("train --quiet --config " + r.resumed_config + " --resume " +
                                     r.ckpt + "/ckpt-10");
  ASSERT_EQ(single.exit_code, 0) << single.error << single.output;
  for (const char* key : {"loss", "hr10", "ndcg10", "auc"})
    EXPECT_EQ(Field(single.output, "RESULT", key), Field(r.full.out, "RESULT train_cluster", key))
        << key << "\n"
        << single.output << "\n"
        << r.full.out;
}

// 2 workers + 2 PS (3 rounds per epoch): a checkpoint after step 4 (epoch 2, round 1) resumes on
// 2 workers + 1 PS (sync: every row's pushes are applied in worker order on whichever server
// holds it). A missing checkpoint fails on every rank without a hang.
TEST_F(ClusterSeqData, ResumeTwoWorkersOnFewerPs) {
  ScratchDir dir("seq_resume_two");
  ResumedDataRun r;
  ASSERT_NO_FATAL_FAILURE(
      ExpectResumeRepeatsTheRun(dir, Data(), 2, 2, 4, 4, 1, 9, "epoch 2 position 64 step 4", &r));
  const std::string& config = r.resumed_config;
  MpiRun missing = Train(3, config, "--resume=" + (dir / "nowhere"), 45);
  EXPECT_NE(missing.exit_code, 0) << missing.output;
  EXPECT_NE(missing.exit_code, 124) << "hung: " << missing.output;
  EXPECT_NE(missing.err.find("--resume " + (dir / "nowhere")), std::string::npos) << missing.err;
  EXPECT_EQ(missing.out.find("RESULT"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) {
  return ips::testing::MpiTestMain(
      argc, argv, {{"train", [] { return ips::testing::CaseTrain(/*eval_batches=*/0); }}});
}
