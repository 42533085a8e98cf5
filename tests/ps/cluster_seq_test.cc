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
//  - checkpoint.dir or --resume with a sequence model fails on every rank, cleanly and at once.
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
      LinesStartingWith(single_metrics.str(), "{\"epoch\":");
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
      LinesStartingWith(testing::ReadFile(metrics), "{\"epoch\":");
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

// Checkpoints of a sequence model under mpirun are not implemented: checkpoint.dir or --resume
// ends every rank at once with exit code 1 and a message naming the field and the model.
TEST_F(ClusterSeqData, CheckpointOrResumeFailsCleanlyOnEveryRank) {
  ScratchDir dir("seq_ckpt");
  const std::string ckpt = dir / "ckpt";
  for (const bool resume : {false, true}) {
    const std::string config =
        dir.Write("c.pbtxt",
                  DatasetConfig(Data(), 1, resume ? "" : "checkpoint { dir: \"" + ckpt + "\" }\n"));
    MpiRun r = Train(3, config, resume ? "--resume=" + ckpt : "", 45);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
    for (const char* rank : {"rank 0 (ps 0)", "rank 1 (worker 0)", "rank 2 (worker 1)"})
      EXPECT_NE(r.err.find(std::string("error: ") + rank +
                           ": UNIMPLEMENTED: checkpoints of the "
                           "sequence model 'sasrec' under mpirun"),
                std::string::npos)
          << rank << "\n"
          << r.err;
    EXPECT_NE(r.err.find(resume ? "--resume '" + ckpt + "'" : "checkpoint.dir '" + ckpt + "'"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.out.find("RESULT"), std::string::npos) << r.out;
    EXPECT_LT(r.seconds, 40) << r.err;
  }
  // Nothing was written.
  EXPECT_NE(std::system(("test -e " + ckpt).c_str()), 0);
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) {
  return ips::testing::MpiTestMain(
      argc, argv, {{"train", [] { return ips::testing::CaseTrain(/*eval_batches=*/0); }}});
}
