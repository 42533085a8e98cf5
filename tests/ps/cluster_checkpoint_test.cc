// Checkpoints of distributed training (launch/cluster_train.h) under mpirun: a 1-worker sync run
// resumed from a checkpoint repeats the uninterrupted run's losses bit for bit; a worker or a
// parameter server killed with SIGKILL (mid-run, or mid-checkpoint) ends the job non-zero and
// leaves the last complete checkpoint intact and no partial one visible, and --resume finishes
// with the uninterrupted run's held-out AUC (within 0.002); a checkpoint written by 2 servers
// resumes on 3 (re-sharded by PsOfKey) with the same tables and losses as on 2; a stop signal
// during worker 0's evaluation abandons it and stops every worker at the step before it.
//
// One binary plays two parts (as tests/ps/mpi_cluster_test.cc). Run by ctest, its tests launch
// `mpirun ... <this binary> --mpi_case=train ...`; run by mpirun with --mpi_case=train, every rank
// calls RunClusterTrain with the flags given.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "ps/dynamic_table.h"
#include "tests/ps/cluster_train_case.h"
#include "tests/testing/mpi_run.h"
#include "tests/testing/tolerance.h"
#include "worker/checkpoint.h"
#include "worker/dataset_builder.h"
#include "worker/trainer.h"

namespace ips {
namespace {

using testing::Field;
using testing::LossesOf;
using testing::MpiRun;
using testing::RunMpiSelf;
using testing::ScratchDir;

struct TrainSetup {
  int num_ps = 1;
  int steps = 18;  // after 2 warm-up steps
  int batch = 32;
  int every_steps = 10;
  int keep_last = 3;
  bool incremental = false;
  std::string checkpoint_dir;
};

std::string ConfigText(const TrainSetup& s) {
  testing::SyntheticDinJob job;
  job.name = "cluster_ckpt";
  job.batch = s.batch;
  job.steps = s.steps;
  job.num_ps = s.num_ps;
  job.extra = "checkpoint { dir: \"" + s.checkpoint_dir +
              "\" every_steps: " + std::to_string(s.every_steps) +
              " keep_last: " + std::to_string(s.keep_last) +
              (s.incremental ? " incremental: true" : "") + " }\n";
  return job.Text();
}

std::string WriteConfig(const ScratchDir& dir, const std::string& name, const TrainSetup& s) {
  return dir.Write(name, ConfigText(s));
}

// The losses of `got`'s steps, and the same steps of `ref` (missing ones: NaN, so they differ).
void Aligned(const std::map<int64_t, double>& got, const std::map<int64_t, double>& ref,
             std::vector<double>* a, std::vector<double>* b) {
  for (const auto& [step, loss] : got) {
    a->push_back(loss);
    auto it = ref.find(step);
    b->push_back(it == ref.end() ? std::nan("") : it->second);
  }
}

// The checkpoints a reader can see under `root`: each validated (manifest, sizes, CRC32Cs, table
// structure) by CheckpointReader::Open. Returns their steps; fails the test on an invalid one.
std::vector<int64_t> ValidCheckpoints(const std::string& root) {
  std::vector<int64_t> steps;
  auto list = ListCheckpoints(root);
  EXPECT_TRUE(list.ok()) << list.status();
  if (!list.ok()) return steps;
  for (const auto& [step, name] : *list) {
    auto reader = CheckpointReader::Open(root + "/" + name);
    EXPECT_TRUE(reader.ok()) << name << ": " << reader.status();
    if (reader.ok()) steps.push_back((*reader)->step());
  }
  return steps;
}

// Loads every table of a checkpoint (all writers' files) into fresh tables: key -> value + state.
std::map<std::string, std::map<uint64_t, std::vector<float>>> TablesOf(
    const std::string& checkpoint, const std::string& config_path) {
  std::map<std::string, std::map<uint64_t, std::vector<float>>> out;
  auto cfg = LoadConfig(config_path, {});
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  if (!cfg.ok()) return out;
  auto job = TrainJobFromConfig(*cfg);
  EXPECT_TRUE(job.ok()) << job.status();
  if (!job.ok()) return out;
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;
  CheckpointContent into;
  for (const ps::TableOptions& o : job->tables) {
    auto t = ps::DynamicTable::Create(o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return out;
    into.tables.push_back(t->get());
    tables.push_back(std::move(t).value());
  }
  auto reader = CheckpointReader::Open(checkpoint);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  std::map<std::string, std::string> blobs;
  EXPECT_TRUE((*reader)->Restore(into, &blobs).ok());
  for (const auto& t : tables) {
    auto& rows = out[t->options().name];
    const int64_t dim = t->options().dim, state = t->state_count() * dim;
    t->ForEachRowSince(0, [&](const ps::RowRecord& r) {
      std::vector<float> v(r.value, r.value + dim);
      v.insert(v.end(), r.state, r.state + state);
      v.push_back(static_cast<float>(r.freq));
      rows[r.key] = std::move(v);
    });
  }
  return out;
}

// (a) 1 PS + 1 worker, sync: checkpoints at steps 10 and 20; resuming from step 10 repeats the
// uninterrupted run's losses of steps 11..20 exactly and its held-out AUC. The checkpoint has
// the single-process layout: `ips train --resume` reads it (TablesOf loads it the same way).
TEST(ClusterCheckpoint, OneWorkerSyncResumeEqualsUninterruptedBitwise) {
  ScratchDir dir("a");
  TrainSetup s;
  s.checkpoint_dir = dir / "ckpt";
  const std::string config = WriteConfig(dir, "a.pbtxt", s);
  MpiRun full = RunMpiSelf(
      2, "--mpi_case=train --config=" + config + " --metrics_out=" + (dir / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  EXPECT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{10, 20})) << full.output;
  const auto reference = LossesOf(dir / "full.jsonl");
  ASSERT_EQ(reference.size(), 20u) << full.output;

  s.checkpoint_dir = dir / "ckpt_resumed";
  const std::string config2 = WriteConfig(dir, "a2.pbtxt", s);
  MpiRun resumed = RunMpiSelf(2, "--mpi_case=train --config=" + config2 +
                                     " --metrics_out=" + (dir / "resumed.jsonl") +
                                     " --resume=" + (dir / "ckpt/ckpt-10"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  const auto got = LossesOf(dir / "resumed.jsonl");
  ASSERT_EQ(got.size(), 10u) << resumed.output;
  EXPECT_EQ(got.begin()->first, 11);
  std::vector<double> a, b;
  Aligned(got, reference, &a, &b);
  EXPECT_TRUE(testing::AllClose(a, b, testing::Tolerance{0, 0}));
  EXPECT_EQ(Field(resumed.out, "RESULT train_cluster", "auc"),
            Field(full.out, "RESULT train_cluster", "auc"));
  // The final checkpoints of both runs hold the same tables.
  EXPECT_EQ(TablesOf(dir / "ckpt/ckpt-20", config), TablesOf(dir / "ckpt_resumed", config));
  std::printf("uninterrupted %.1f s, resumed %.1f s\n", full.seconds, resumed.seconds);
}

// Worker 0 owns the job's writer. A fresh job pointed at a DIR holding another run's checkpoints
// used to train, with keep_last retention (newest by step) deleting its own checkpoints and
// LATEST naming a deleted one; a job resumed from an older checkpoint than DIR's newest would
// overwrite or remove the newer ones. Both are refused on worker 0, once it holds DIR/LOCK, with
// single-process `ips train`'s message; the job ends on every rank without hanging and DIR is
// left as it was. Continuing the newest into DIR goes on.
TEST(ClusterCheckpoint, OneWorkerRefusesACheckpointDirOfAnotherRun) {
  ScratchDir dir("mix");
  TrainSetup s;
  s.checkpoint_dir = dir / "ckpt";
  const std::string config = WriteConfig(dir, "mix.pbtxt", s);
  MpiRun first = RunMpiSelf(2, "--mpi_case=train --config=" + config);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{10, 20})) << first.output;

  TrainSetup shorter = s;
  shorter.steps = 8;
  shorter.every_steps = 5;
  MpiRun fresh =
      RunMpiSelf(2, "--mpi_case=train --config=" + WriteConfig(dir, "fresh.pbtxt", shorter), 45);
  EXPECT_NE(fresh.exit_code, 0) << fresh.output;
  EXPECT_NE(fresh.exit_code, 124) << "hung: " << fresh.output;
  EXPECT_NE(fresh.err.find("(worker 0): FAILED_PRECONDITION: checkpoint.dir " + s.checkpoint_dir +
                           " already holds 2 checkpoint(s) of an earlier run (newest: " +
                           s.checkpoint_dir + "/ckpt-20)"),
            std::string::npos)
      << fresh.output;
  EXPECT_NE(fresh.err.find("Continue that run with --resume " + s.checkpoint_dir),
            std::string::npos)
      << fresh.output;
  EXPECT_EQ(fresh.out.find("RESULT"), std::string::npos) << fresh.output;
  EXPECT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(ps::ReadSmallFile(s.checkpoint_dir + "/LATEST").value(), "ckpt-20\n");

  MpiRun older = RunMpiSelf(
      2, "--mpi_case=train --config=" + config + " --resume=" + s.checkpoint_dir + "/ckpt-10", 45);
  EXPECT_NE(older.exit_code, 0) << older.output;
  EXPECT_NE(older.exit_code, 124) << "hung: " << older.output;
  EXPECT_NE(older.err.find("FAILED_PRECONDITION: checkpoint.dir " + s.checkpoint_dir +
                           " holds 1 checkpoint(s) newer than the resumed step 10 (newest: " +
                           s.checkpoint_dir + "/ckpt-20)"),
            std::string::npos)
      << older.output;
  EXPECT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{10, 20}));

  TrainSetup longer = s;
  longer.steps = 28;
  MpiRun resumed =
      RunMpiSelf(2, "--mpi_case=train --config=" + WriteConfig(dir, "longer.pbtxt", longer) +
                        " --resume=" + s.checkpoint_dir);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{10, 20, 30}));
}

// The uninterrupted reference of the 2 PS + 2 worker tests: 40 steps of batch 64, AUC on 8
// held-out batches; incremental checkpoints every 8 steps (8 full, 16 incremental on 8, ...; the
// first one after a resume is full), so resuming from 16 loads a chain.
TrainSetup TwoByTwo(const std::string& checkpoint_dir) {
  TrainSetup s;
  s.num_ps = 2;
  s.steps = 38;
  s.batch = 64;
  s.every_steps = 8;
  s.keep_last = 2;
  s.incremental = true;
  s.checkpoint_dir = checkpoint_dir;
  return s;
}

// Kills `kill_args` into a 2 PS + 2 worker job, checks what is left, resumes it and compares the
// AUC and worker 0's losses with an uninterrupted run's. `expect_latest` is the step of the
// newest complete checkpoint.
void KillAndResume(const std::string& name, const std::string& kill_args, int64_t expect_latest) {
  ScratchDir dir(name);
  const TrainSetup ref_setup = TwoByTwo(dir / "ref_ckpt");
  const std::string ref_config = WriteConfig(dir, "ref.pbtxt", ref_setup);
  MpiRun ref = RunMpiSelf(
      4, "--mpi_case=train --config=" + ref_config + " --metrics_out=" + (dir / "ref.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const std::string ref_auc = Field(ref.out, "RESULT train_cluster", "auc");
  ASSERT_FALSE(ref_auc.empty()) << ref.output;

  const TrainSetup s = TwoByTwo(dir / "ckpt");
  const std::string config = WriteConfig(dir, "kill.pbtxt", s);
  MpiRun killed = RunMpiSelf(4, "--mpi_case=train --config=" + config + " " + kill_args);
  EXPECT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_NE(killed.output.find("kills itself with SIGKILL"), std::string::npos) << killed.output;
  EXPECT_EQ(killed.out.find("RESULT train_cluster"), std::string::npos) << killed.output;
  // Only complete checkpoints are visible, every one verifies, the newest is the expected one
  // and LATEST names it.
  const std::vector<int64_t> steps = ValidCheckpoints(s.checkpoint_dir);
  ASSERT_FALSE(steps.empty()) << killed.output;
  EXPECT_EQ(steps.back(), expect_latest) << killed.output;
  auto latest = CheckpointReader::Open(s.checkpoint_dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ((*latest)->step(), expect_latest);
  EXPECT_EQ((*latest)->incremental(), expect_latest == 16);  // 16 = 8 + its changes
  auto names = ps::ListDir(s.checkpoint_dir);
  ASSERT_TRUE(names.ok());
  for (const std::string& n : *names)  // LOCK: the coordinator's writer lock (worker/checkpoint.h)
    EXPECT_TRUE(n == "LATEST" || n == "LOCK" || n.rfind("ckpt-", 0) == 0 || n.rfind("tmp-", 0) == 0)
        << n;

  MpiRun resumed =
      RunMpiSelf(4, "--mpi_case=train --config=" + config + " --resume=" + s.checkpoint_dir +
                        " --metrics_out=" + (dir / "resumed.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step " + std::to_string(expect_latest)), std::string::npos)
      << resumed.output;
  const std::string auc = Field(resumed.out, "RESULT train_cluster", "auc");
  ASSERT_FALSE(auc.empty()) << resumed.output;
  EXPECT_GT(std::stod(ref_auc), 0.6) << "the reference did not learn: the comparison is vacuous";
  EXPECT_NEAR(std::stod(auc), std::stod(ref_auc), 0.002) << resumed.output;
  // Stronger, since the servers apply a sync step's pushes in worker order (ps/server.h): the
  // resumed run repeats the reference's losses exactly.
  const auto got = LossesOf(dir / "resumed.jsonl");
  EXPECT_EQ(got.size(), static_cast<size_t>(40 - expect_latest));
  std::vector<double> a, b;
  Aligned(got, LossesOf(dir / "ref.jsonl"), &a, &b);
  EXPECT_TRUE(testing::AllClose(a, b, testing::Tolerance{0, 0}));
  // The resumed run's own writer removed the killed run's staging leftovers.
  auto after = ps::ListDir(s.checkpoint_dir);
  ASSERT_TRUE(after.ok());
  for (const std::string& n : *after) EXPECT_NE(n.rfind("tmp-", 0), 0u) << n;
  std::printf("%s: reference auc %s (%.1f s), killed after %.1f s, resumed auc %s (%.1f s)\n",
              name.c_str(), ref_auc.c_str(), ref.seconds, killed.seconds, auc.c_str(),
              resumed.seconds);
}

// (b) Worker 1 (rank 3) kills itself at step 21: checkpoints 8 and 16 exist, 24 never started.
TEST(ClusterCheckpoint, KilledWorkerLeavesLastCheckpointAndResumes_2Ps2Workers) {
  KillAndResume("b", "--kill_rank=3 --kill_step=21", 16);
}

// (c) PS 1 (rank 1) kills itself mid-run, after 84 pushes (each PS gets a push per table from
// each worker every step: during step 21): checkpoint 16 is the newest.
TEST(ClusterCheckpoint, KilledPsLeavesLastCheckpointAndResumes_2Ps2Workers) {
  KillAndResume("c", "--kill_rank=1 --kill_step=84", 16);
}

// (c2) PS 1 kills itself after writing its shards of checkpoint 16, before acknowledging them:
// checkpoint 8 is the newest complete one; the staging directory of 16 is left behind but is not
// a visible checkpoint.
TEST(ClusterCheckpoint, PsKilledMidCheckpointLeavesPreviousAndResumes_2Ps2Workers) {
  KillAndResume("c2", "--kill_rank=1 --kill_in_checkpoint_step=16", 8);
}

// (c3) Worker 0 (rank 2, the coordinator) kills itself with every file of checkpoint 16 and its
// manifest written, just before the rename that publishes it: checkpoint 8 stays the newest.
TEST(ClusterCheckpoint, WorkerKilledMidCheckpointLeavesPreviousAndResumes_2Ps2Workers) {
  KillAndResume("c3", "--kill_rank=2 --kill_in_checkpoint_step=16", 8);
}

// (e) SIGTERM reaching only worker 1 (rank 3) at the start of step 13: both workers checkpoint
// after step 13 and stop (`RESULT ... status=stopped step=14`); --resume repeats the
// uninterrupted run's losses of steps 15..40 bit for bit and its AUC.
TEST(ClusterCheckpoint, SigtermCheckpointsAndStops_2Ps2Workers) {
  ScratchDir dir("e");
  const TrainSetup ref_setup = TwoByTwo(dir / "ref_ckpt");
  const std::string ref_config = WriteConfig(dir, "ref.pbtxt", ref_setup);
  MpiRun ref = RunMpiSelf(
      4, "--mpi_case=train --config=" + ref_config + " --metrics_out=" + (dir / "ref.jsonl"));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;

  const TrainSetup s = TwoByTwo(dir / "ckpt");
  const std::string config = WriteConfig(dir, "term.pbtxt", s);
  MpiRun stopped =
      RunMpiSelf(4, "--mpi_case=train --config=" + config +
                        " --kill_rank=3 --term_step=13 --metrics_out=" + (dir / "stopped.jsonl"));
  EXPECT_NE(stopped.exit_code, 0) << stopped.output;  // the workers exit 3 (kExitStopped)
  EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "status"), "stopped") << stopped.output;
  EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "step"), "14") << stopped.output;
  EXPECT_EQ(ValidCheckpoints(s.checkpoint_dir), (std::vector<int64_t>{8, 14})) << stopped.output;
  EXPECT_EQ(LossesOf(dir / "stopped.jsonl").size(), 14u);

  MpiRun resumed =
      RunMpiSelf(4, "--mpi_case=train --config=" + config + " --resume=" + s.checkpoint_dir +
                        " --metrics_out=" + (dir / "resumed.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at step 14"), std::string::npos) << resumed.output;
  const auto got = LossesOf(dir / "resumed.jsonl");
  EXPECT_EQ(got.size(), 26u);
  std::vector<double> a, b;
  Aligned(got, LossesOf(dir / "ref.jsonl"), &a, &b);
  EXPECT_TRUE(testing::AllClose(a, b, testing::Tolerance{0, 0}));
  const std::string auc = Field(resumed.out, "RESULT train_cluster", "auc");
  EXPECT_FALSE(auc.empty()) << resumed.output;
  EXPECT_EQ(auc, Field(ref.out, "RESULT train_cluster", "auc"));
}

// (f) SIGUSR1 sent to mpirun itself once the first periodic checkpoint exists: Open MPI
// forwards SIGUSR1 to every rank and waits for them (a SIGTERM to mpirun gives the ranks
// odls_base_sigkill_timeout, 1 s, before SIGKILL: too short for a large checkpoint). The worker
// stops at the next step with a checkpoint, the server ignores the signal and is shut down by the
// worker, and mpirun exits with the workers' code 3.
TEST(ClusterCheckpoint, Sigusr1ToMpirunCheckpointsAndStops_1Ps1Worker) {
  ScratchDir dir("f");
  TrainSetup s;
  s.steps = 1000000;  // runs until stopped
  s.every_steps = 10;
  s.keep_last = 2;
  s.checkpoint_dir = dir / "ckpt";
  const std::string config = WriteConfig(dir, "f.pbtxt", s);
  const auto checkpointed = [&] {
    auto list = ListCheckpoints(s.checkpoint_dir);
    return list.ok() && !list->empty();
  };
  MpiRun stopped = testing::RunMpiSignalled(
      testing::SelfPath(), 2,
      "--mpi_case=train --config=" + config + " --metrics_out=" + (dir / "stopped.jsonl"), SIGUSR1,
      checkpointed, 90);
  EXPECT_EQ(stopped.exit_code, 3) << stopped.output;  // kExitStopped, passed on by mpirun
  EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "status"), "stopped") << stopped.output;
  const std::string step = Field(stopped.out, "RESULT train_cluster", "step");
  ASSERT_FALSE(step.empty()) << stopped.output;
  const std::vector<int64_t> valid = ValidCheckpoints(s.checkpoint_dir);
  ASSERT_FALSE(valid.empty()) << stopped.output;
  EXPECT_EQ(std::to_string(valid.back()), step) << stopped.output;
  EXPECT_GT(valid.back(), 10);
  EXPECT_NE(stopped.err.find("stopped by"), std::string::npos) << stopped.output;
}

// (g) SIGUSR1 to mpirun while worker 0 evaluates (1 PS + 2 workers on a dataset whose evaluation,
// 400 lists of 1001 candidates, outlasts an epoch's training several times): worker 0 abandons
// the evaluation, the workers learn it together after it (an all-reduce) and stop with the
// checkpoint of the epoch's last step, exit 3. (Before, the evaluation ran to its end and the
// workers stopped one step later; during the final evaluation the run finished, exit 0.) Resumed,
// the run repeats the evaluation and ends with the uninterrupted run's metrics.
TEST(ClusterCheckpoint, Sigusr1ToMpirunDuringAnEvaluationAbandonsIt_1Ps2Workers) {
  ScratchDir dir("g");
  {
    std::FILE* in = std::fopen((dir / "in.txt").c_str(), "w");
    ASSERT_NE(in, nullptr);
    for (int u = 1; u <= 400; ++u)  // user u walks through group u % 40 of 10 items
      for (int j = 0; j < 12; ++j) std::fprintf(in, "%d %d\n", u, (u - 1) % 40 * 10 + j % 10 + 1);
    std::fclose(in);
  }
  ConvertOptions convert;
  convert.format = "seqrec";
  convert.input = dir / "in.txt";
  convert.output = dir / "ds";
  convert.max_history = 10;
  convert.eval_negatives = 1000;
  ASSERT_TRUE(ConvertDataset(convert).ok());
  auto config = [&](const std::string& name, const std::string& checkpoint,
                    const std::string& every = "") {
    return dir.Write(
        name,
        "version: 1\nname: \"cluster_eval_stop\"\ndata { train_dir: \"" + (dir / "ds") +
            "\" batch_size: 32 max_history: 10 seed: 3 }\nmodel { type: DIN embedding_dim: 8 "
            "attention_hidden: [64, 32] mlp_hidden: [256, 128] activation: PRELU }\noptimizer { "
            "type: ADAM learning_rate: 0.01 }\ntables { name: \"item\" dim: 8 }\ntables { name: "
            "\"category\" dim: 8 }\ntrain { epochs: 2 num_threads: 1 seed: 0 }\neval { top_k: 10 "
            "every_epochs: 1 }\ncluster { num_ps: 1 sync: SYNC }\ncheckpoint { dir: \"" +
            (dir / checkpoint) + "\" " + every + "}\n");
  };
  MpiRun ref = RunMpiSelf(3,
                          "--mpi_case=train --config=" + config("ref.pbtxt", "ref") +
                              " --metrics_out=" + (dir / "ref.jsonl"),
                          120);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  const std::string steps = Field(ref.out, "RESULT train_cluster", "steps");
  ASSERT_FALSE(steps.empty()) << ref.output;
  const int64_t last = std::stoll(steps), per_epoch = last / 2;
  ASSERT_GT(per_epoch, 10);

  for (const int64_t at : {per_epoch, last}) {
    SCOPED_TRACE("evaluation after step " + std::to_string(at));
    const std::string ck = "ck" + std::to_string(at);
    // The epoch's checkpoint is saved right before its evaluation (the last step's always is).
    const std::string c = config(
        ck + ".pbtxt", ck, at == last ? "" : "every_steps: " + std::to_string(per_epoch) + " ");
    const auto evaluating = [&] {
      auto list = ListCheckpoints(dir / ck);
      return list.ok() && !list->empty() && list->back().first == at;
    };
    MpiRun stopped = testing::RunMpiSignalled(
        testing::SelfPath(), 3, "--mpi_case=train --config=" + c, SIGUSR1, evaluating, 110);
    EXPECT_EQ(stopped.exit_code, 3) << stopped.output;
    EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "status"), "stopped") << stopped.output;
    EXPECT_EQ(Field(stopped.out, "RESULT train_cluster", "step"), std::to_string(at))
        << stopped.output;
    EXPECT_EQ(ValidCheckpoints(dir / ck), (std::vector<int64_t>{at})) << stopped.output;

    MpiRun resumed =
        RunMpiSelf(3, "--mpi_case=train --config=" + c + " --resume=" + (dir / ck), 120);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    for (const char* key : {"steps", "loss", "hr10", "ndcg10", "auc", "gauc", "logloss"})
      EXPECT_EQ(Field(resumed.out, "RESULT train_cluster", key),
                Field(ref.out, "RESULT train_cluster", key))
          << key << "\n"
          << resumed.output;
  }
}

// (d) A checkpoint written by 2 PS resumed on 2 and on 3 PS (1 worker, sync): the same losses
// bit for bit and the same tables at the end (each PS loads the keys PsOfKey gives it).
TEST(ClusterCheckpoint, ReshardTwoPsCheckpointOntoThreePs) {
  ScratchDir dir("d");
  TrainSetup s;
  s.num_ps = 2;
  s.checkpoint_dir = dir / "ckpt";
  const std::string config = WriteConfig(dir, "d.pbtxt", s);
  MpiRun written = RunMpiSelf(3, "--mpi_case=train --config=" + config);
  ASSERT_EQ(written.exit_code, 0) << written.output;
  std::map<int64_t, double> losses[2];
  std::string final_checkpoint[2];
  for (int k = 0; k < 2; ++k) {
    TrainSetup r = s;
    r.num_ps = 2 + k;
    r.checkpoint_dir = dir / ("resumed" + std::to_string(r.num_ps));
    const std::string c = WriteConfig(dir, "d" + std::to_string(r.num_ps) + ".pbtxt", r);
    const std::string metrics = dir / ("m" + std::to_string(r.num_ps) + ".jsonl");
    MpiRun run =
        RunMpiSelf(r.num_ps + 1, "--mpi_case=train --config=" + c + " --metrics_out=" + metrics +
                                     " --resume=" + (dir / "ckpt/ckpt-10"));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    losses[k] = LossesOf(metrics);
    ASSERT_EQ(losses[k].size(), 10u) << run.output;
    final_checkpoint[k] = r.checkpoint_dir;
    auto reader = CheckpointReader::Open(r.checkpoint_dir);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->TableFiles("item").back().size(), static_cast<size_t>(r.num_ps));
  }
  std::vector<double> a, b;
  Aligned(losses[1], losses[0], &a, &b);
  EXPECT_TRUE(testing::AllClose(a, b, testing::Tolerance{0, 0}));
  const auto t2 = TablesOf(final_checkpoint[0], config);
  const auto t3 = TablesOf(final_checkpoint[1], config);
  ASSERT_EQ(t2.size(), 2u);
  EXPECT_GT(t2.at("item").size(), 100u);
  EXPECT_TRUE(t2 == t3) << "tables differ after resuming on 2 and on 3 servers";
}

}  // namespace
}  // namespace ips

int main(int argc, char** argv) {
  return ips::testing::MpiTestMain(
      argc, argv, {{"train", [] { return ips::testing::CaseTrain(/*eval_batches=*/8); }}});
}
