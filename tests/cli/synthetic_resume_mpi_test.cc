// Synthetic runs of the `ips` binary resumed across process layouts (`mpirun ... ips train
// --resume` and single-process `ips train --resume`; worker/synthetic_batches.h SyntheticSchedule):
//   * a resumed job's RESULT line and worker traffic lines are over the steps this job ran (they
//     divided a resumed job's traffic by every step of the run), and a job resumed at its last
//     step still reports the dense floats per all-reduce (it printed 0);
//   * a cluster checkpoint of 2 workers continues in one process on the batches the cluster
//     would have trained next (it retrained the cluster's batches from batch `step` on), and
//     evaluates the cluster run's held-out batches (it evaluated batches the cluster trained);
//     its checkpoints record that, so `ips eval` of them and a resume under mpirun again take the
//     same batches (the mpirun job skipped the batches the single process had not reached).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "tests/ps/cluster_train_case.h"
#include "tests/testing/mpi_run.h"
#include "tests/testing/run_ips.h"

namespace ips {
namespace {

using testing::Field;
using testing::MpiRun;
using testing::ScratchDir;

std::string SourceConfig(const std::string& name) {
  return std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/" + name;
}

// The tests' small DIN job on synthetic data: 2 warm-up + 18 timed steps of 16 rows, a train line
// per step; `more` adds flags.
std::string Job(const std::string& more) {
  return "--config " + SourceConfig("din_synthetic.pbtxt") +
         " --set data.synthetic.num_items=1000 --set data.batch_size=16"
         " --set data.synthetic.warmup_steps=2 --set data.synthetic.steps=18"
         " --set train.num_threads=1 --set train.log_every_steps=1" +
         more;
}

// `mpirun -np np ips train JOB` (1 server, np - 1 workers).
MpiRun TrainMpi(int np, const std::string& more) {
  return testing::RunMpi(IPS_BINARY, np, "train --quiet " + Job(more), 90);
}

// `ips train --quiet JOB` or `ips eval JOB`: stdout and stderr apart.
testing::IpsRun Ips(const std::string& command, const std::string& more) {
  return testing::RunIpsSplit(command + (command == "train" ? " --quiet " : " ") + Job(more));
}

// A RESULT figure (`ips eval` prints 6 decimals) with the 4 decimals of `ips train`'s lines.
std::string FourDecimals(const std::string& v) {
  if (v.empty()) return "<missing>";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.4f", std::strtod(v.c_str(), nullptr));
  return buf;
}

// QA: resumed at step 8 of 20, worker 0 divided its parameter-server bytes by all 20 steps
// (ps_bytes_per_step 2/3 of a fresh run's) and its traffic line said steps=20; resumed at the last
// step, the all-reduce hook never ran and dense_floats was 0. Both are now over the steps this
// job ran, and dense_floats is the model's whatever ran. A resume without checkpoint.dir warns
// that the job saves nothing.
TEST(SyntheticResumeMpi, ResumedJobsReportTheirOwnStepsTrafficAndDenseFloats) {
  ScratchDir dir("syn_resume_traffic");
  const std::string ck = dir / "ck";
  const MpiRun full =
      TrainMpi(3, " --set checkpoint.dir=" + ck + " --set checkpoint.every_steps=8");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::string dense = Field(full.out, "RESULT train_cluster", "dense_floats");
  ASSERT_FALSE(dense.empty()) << full.out;
  EXPECT_GT(std::stoll(dense), 0);
  EXPECT_EQ(Field(full.err, "rank 1 (worker 0): steps=", "steps"), "20") << full.err;

  const MpiRun mid = TrainMpi(3, " --resume " + ck + "/ckpt-8");
  ASSERT_EQ(mid.exit_code, 0) << mid.output;
  const std::string line = "rank 1 (worker 0): steps=";
  EXPECT_EQ(Field(mid.err, line, "steps"), "12") << mid.err;
  const std::string sent = Field(mid.err, line, "bytes_sent"),
                    received = Field(mid.err, line, "bytes_received");
  ASSERT_FALSE(sent.empty() || received.empty()) << mid.err;
  EXPECT_EQ(Field(mid.out, "RESULT train_cluster", "ps_bytes_per_step"),
            std::to_string((std::stoll(sent) + std::stoll(received)) / 12))
      << mid.output;
  EXPECT_EQ(Field(mid.out, "RESULT train_cluster", "dense_floats"), dense) << mid.out;
  EXPECT_NE(mid.err.find("warning: --resume " + ck +
                         "/ckpt-8: this run writes no checkpoints "
                         "(no checkpoint.dir); add --set checkpoint.dir=" +
                         ck + " to keep saving"),
            std::string::npos)
      << mid.err;

  const MpiRun end = TrainMpi(3, " --resume " + ck);  // ckpt-20: nothing left to train
  ASSERT_EQ(end.exit_code, 0) << end.output;
  EXPECT_EQ(Field(end.err, line, "steps"), "0") << end.err;
  EXPECT_EQ(Field(end.out, "RESULT train_cluster", "ps_bytes_per_step"), "0") << end.out;
  EXPECT_EQ(Field(end.out, "RESULT train_cluster", "dense_floats"), dense) << end.out;
  EXPECT_EQ(Field(end.out, "RESULT train_cluster", "auc"),
            Field(full.out, "RESULT train_cluster", "auc"))
      << end.out;
}

// QA: a checkpoint of 2 workers at step s (worker w trained batch 2i + w at step i: batches
// 0 .. 2s - 1) resumed in one process continued at batch index = step, training batches s .. 2s - 1
// again, and evaluated batches 20 .. 23 of a 20-step run, which the cluster trained (heldout_auc
// 0.9356 where `ips eval` of the checkpoint said 0.8839). It now continues with batch 2s, 2s + 1,
// ... (its first step trains what the cluster's worker 0 trained at that step: the same loss bit
// for bit), evaluates the cluster run's held-out batches (40 ..), and records that in its
// checkpoints: `ips eval` of them agrees with it, and mpirun with 2 workers continuing one of them
// trains on where the single process was (the same loss as the single process's next step).
TEST(SyntheticResumeMpi, AClusterCheckpointContinuesInOneProcessWhereTheClusterLeft) {
  ScratchDir dir("syn_resume_layout");
  const std::string ck = dir / "ck", single = dir / "single";
  const MpiRun full =
      TrainMpi(3, " --set checkpoint.dir=" + ck +
                      " --set checkpoint.every_steps=10 --metrics_out " + (dir / "full.jsonl"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::string cluster_auc = Field(full.out, "RESULT train_cluster", "auc");
  ASSERT_FALSE(cluster_auc.empty()) << full.out;

  // The finished checkpoint (step 20) in one process: nothing to train, the cluster's evaluation.
  const testing::IpsRun finished = Ips("train", " --resume " + ck);
  ASSERT_EQ(finished.exit_code, 0) << finished.error << finished.output;
  EXPECT_EQ(Field(finished.output, "RESULT train", "auc"), cluster_auc) << finished.output;
  const testing::IpsRun eval_cluster = Ips("eval", " --checkpoint " + ck);
  ASSERT_EQ(eval_cluster.exit_code, 0) << eval_cluster.error << eval_cluster.output;
  EXPECT_EQ(FourDecimals(Field(eval_cluster.output, "RESULT eval", "auc")), cluster_auc)
      << eval_cluster.output;

  // From step 10: step 11 trains batch 20, worker 0's batch of the cluster's step 11.
  const testing::IpsRun resumed =
      Ips("train", " --resume " + ck + "/ckpt-10 --set checkpoint.dir=" + single +
                       " --set checkpoint.every_steps=5 --metrics_out " + (dir / "single.jsonl"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.error << resumed.output;
  const std::map<int64_t, double> cluster_losses = testing::LossesOf(dir / "full.jsonl"),
                                  single_losses = testing::LossesOf(dir / "single.jsonl");
  ASSERT_EQ(cluster_losses.count(11), 1u);
  ASSERT_EQ(single_losses.count(11), 1u);
  ASSERT_EQ(single_losses.count(16), 1u);
  EXPECT_EQ(single_losses.at(11), cluster_losses.at(11)) << "step 11 trained another batch";
  EXPECT_NE(single_losses.at(12), cluster_losses.at(12));  // batch 21 (worker 1's), not 22
  const std::string single_auc = Field(resumed.output, "RESULT train", "auc");
  const testing::IpsRun eval_single = Ips("eval", " --checkpoint " + single);
  ASSERT_EQ(eval_single.exit_code, 0) << eval_single.error << eval_single.output;
  EXPECT_EQ(FourDecimals(Field(eval_single.output, "RESULT eval", "auc")), single_auc)
      << eval_single.output;

  // The single-process checkpoint of step 15 under mpirun with 2 workers: worker 0's step 16
  // trains the batch the single process trained at step 16.
  const MpiRun again =
      TrainMpi(3, " --resume " + single + "/ckpt-15 --set checkpoint.dir=" + (dir / "again") +
                      " --metrics_out " + (dir / "again.jsonl"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const std::map<int64_t, double> again_losses = testing::LossesOf(dir / "again.jsonl");
  ASSERT_EQ(again_losses.count(16), 1u) << again.output;
  EXPECT_EQ(again_losses.at(16), single_losses.at(16)) << "step 16 trained another batch";
  const testing::IpsRun eval_again = Ips("eval", " --checkpoint " + (dir / "again"));
  ASSERT_EQ(eval_again.exit_code, 0) << eval_again.error << eval_again.output;
  EXPECT_EQ(FourDecimals(Field(eval_again.output, "RESULT eval", "auc")),
            Field(again.out, "RESULT train_cluster", "auc"))
      << eval_again.output << again.out;
}

}  // namespace
}  // namespace ips
