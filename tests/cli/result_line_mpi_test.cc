// `mpirun -np N ips train` that fails ends the job's stdout with exactly one RESULT line, the
// error line of launch/main.cc, printed by the rank that prints the job's RESULT line: rank 0 while
// the layout is unknown (a config that does not load fails alike on every rank), worker 0 once it
// is (a data.train_dir every rank refuses). Before, a failing job printed no RESULT line at all;
// printed by every failing rank, it would have printed N.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "tests/testing/mpi_run.h"

namespace ips {
namespace {

using testing::MpiRun;
using testing::ResultLines;

std::string SourceConfig(const std::string& name) {
  return std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/" + name;
}

TEST(ResultLineMpi, AConfigThatDoesNotLoadPrintsOneErrorLineFromRankZero) {
  const std::string missing = testing::TempRoot() + "/result_line_mpi_no_such.pbtxt";
  const MpiRun r = testing::RunMpi(IPS_BINARY, 3, "train --quiet --config " + missing, 60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0], "RESULT train_cluster status=error exit=1 error=\"NOT_FOUND: " + missing +
                          ": cannot open the config file\"")
      << r.output;
}

TEST(ResultLineMpi, ADataDirEveryRankRefusesPrintsOneErrorLineFromWorkerZero) {
  const std::string missing = testing::TempRoot() + "/result_line_mpi_no_such_dir";
  const MpiRun r = testing::RunMpi(IPS_BINARY, 3,
                                   "train --quiet --config " + SourceConfig("din_ml100k.pbtxt") +
                                       " --set data.train_dir=" + missing,
                                   60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  // Every rank says why on stderr (tests/ps/cluster_data_test.cc); one RESULT line, worker 0's.
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0].rfind("RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): "
                           "NOT_FOUND: data.train_dir '" +
                               missing + "'",
                           0),
            0u)
      << r.output;
}

TEST(ResultLineMpi, StreamUnderMpirunPrintsOneErrorLine) {
  const MpiRun r = testing::RunMpi(
      IPS_BINARY, 2, "train --quiet --config " + SourceConfig("din_stream.pbtxt") + " --stream -",
      60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  // A usage error (exit 2): --stream does not go with mpirun.
  EXPECT_EQ(lines[0],
            "RESULT train_stream status=error exit=2 error=\"--stream runs in one process, not "
            "under mpirun\"")
      << r.output;
}

// QA: a layout that cannot work (cluster.num_ps = 0 from a --set) failed with "rank 0:
// INVALID_ARGUMENT: cluster: cluster.num_ps = 0; ..." naming neither the --set nor the file's
// line. Blamed as a config check's error now, on every rank's line and in the job's RESULT line.
TEST(ResultLineMpi, ALayoutThatCannotWorkNamesTheSetOfNumPs) {
  const MpiRun r = testing::RunMpi(
      IPS_BINARY, 2,
      "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") + " --set cluster.num_ps=0",
      60);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  const std::string error =
      "INVALID_ARGUMENT: --set cluster.num_ps=0: cluster.num_ps: must be >= 1 under mpirun (the "
      "parameter-server ranks; a single-process run ignores it), got 0";
  EXPECT_NE(r.output.find("error: rank 0: " + error), std::string::npos) << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0], "RESULT train_cluster status=error exit=1 error=\"rank 0: " + error + "\"")
      << r.output;
}

// A rank killed (SIGKILL) in the middle of training: the ranks that see it die end the job, and
// its stdout ends with one RESULT line, status=error, naming the dead rank and its role. mpirun
// runs with --enable-recovery, so that the ranks end the job themselves rather than mpirun
// killing them all when the rank dies (what it does by default, racing the ranks' own end).
// Before, an ended job printed no RESULT line, and a worker whose comm thread and trainer thread
// both ended the job crashed inside MPI_Abort ("Segmentation fault" in Open MPI's help parser).
MpiRun KillRankWhileTraining(int rank) {
  const std::string metrics =
      testing::TempRoot() + "/result_line_mpi_kill_" + std::to_string(getpid()) + ".jsonl";
  std::remove(metrics.c_str());
  const MpiRun r = testing::RunMpiActing(
      IPS_BINARY, 3,
      "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
          " --set cluster.num_ps=1 --set data.synthetic.steps=1000 --set "
          "data.synthetic.warmup_steps=0"
          " --set train.log_every_steps=2 --metrics_out " +
          metrics,
      // Training has started once worker 0 has written a metrics line.
      [&] { return !testing::ReadFile(metrics).empty(); },
      [rank](pid_t mpirun) {
        const pid_t pid = testing::RankPid(mpirun, rank);
        EXPECT_GT(pid, 0) << "no rank " << rank << " under mpirun " << mpirun;
        if (pid > 0) kill(pid, SIGKILL);
      },
      90);
  std::remove(metrics.c_str());
  return r;
}

void ExpectOneErrorLineNaming(const MpiRun& r, const std::string& dead) {
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  EXPECT_EQ(r.err.find("Segmentation fault"), std::string::npos) << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(
      lines[0].rfind("RESULT train_cluster status=error exit=1 error=\"" + dead + " died (", 0), 0u)
      << r.output;
}

// QA: worker 0 alone failing (a checkpoint.dir only it creates) ends the job itself; the server,
// finding worker 0's process gone, reported "rank 1 (worker 0) died" and printed a second RESULT
// line. A rank that ends the job marks it first (ps/transport.h AbortJob), and its peers follow.
TEST(ResultLineMpi, WorkerZeroEndingTheJobIsNotReportedAsDeadBySomeoneElse) {
  const MpiRun r = testing::RunMpi(
      IPS_BINARY, 3,
      "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
          " --set cluster.num_ps=1 --set data.synthetic.steps=5 --set "
          "data.synthetic.warmup_steps=0 --set checkpoint.dir=/proc/ips_no_such_dir",
      60);
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  EXPECT_EQ(r.err.find("died"), std::string::npos) << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0].rfind("RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): "
                           "FAILED_PRECONDITION: checkpoint.dir /proc/ips_no_such_dir would be "
                           "created in /proc, which is on procfs",
                           0),
            0u)
      << r.output;
}

// QA: worker 0 failing to write --metrics_out at the end exited 1 after printing the job's
// success RESULT line, with no message. Now the write error is the job's error.
TEST(ResultLineMpi, AMetricsOutThatCannotBeWrittenIsTheJobsError) {
  const MpiRun r =
      testing::RunMpi(IPS_BINARY, 2,
                      "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                          " --set data.synthetic.steps=3 --set data.synthetic.warmup_steps=0 --set "
                          "data.synthetic.num_items=1000 --metrics_out /dev/full",
                      60);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.err.find("error: rank 1 (worker 0): DATA_LOSS: writing --metrics_out file "
                       "'/dev/full'"),
            std::string::npos)
      << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0],
            "RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): DATA_LOSS: "
            "writing --metrics_out file '/dev/full'\"")
      << r.output;
}

// QA: worker 0 failing to open --metrics_out said "NOT_FOUND: cannot open --metrics_out file 'F'",
// with no reason and NOT_FOUND for any reason. open(2)'s errno is the reason and picks the code,
// as in single-process `ips train`.
TEST(ResultLineMpi, AMetricsOutThatCannotBeOpenedSaysWhy) {
  const std::string dir =
      testing::TempRoot() + "/result_line_mpi_metrics_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  const std::string train = "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                            " --set data.synthetic.steps=3 --set data.synthetic.warmup_steps=0 "
                            "--set data.synthetic.num_items=1000 --metrics_out ";
  for (const auto& [path, error] : std::vector<std::pair<std::string, std::string>>{
           {dir + "/missing/m.jsonl", "NOT_FOUND: cannot open --metrics_out file '" + dir +
                                          "/missing/m.jsonl': No such file or directory"},
           {dir, "INVALID_ARGUMENT: cannot open --metrics_out file '" + dir + "': Is a directory"},
       }) {
    SCOPED_TRACE(path);
    const MpiRun r = testing::RunMpi(IPS_BINARY, 2, train + path, 60);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    const std::vector<std::string> lines = ResultLines(r.out);
    ASSERT_EQ(lines.size(), 1u) << r.output;
    EXPECT_EQ(
        lines[0].rfind(
            "RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): " + error, 0),
        0u)
        << r.output;
  }
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: resuming a checkpoint beyond the run (data.synthetic.steps lowered below its step; a dataset
// run's train.epochs below its epoch) failed with "DATA_LOSS: ...: blob 'run/synthetic_step' = 3
// does not fit a run of 2 steps": the checkpoint is intact, the config ends before it. Now
// FAILED_PRECONDITION naming the checkpoint and the value to set, as single-process `ips train`.
// Every rank refuses it before anything loads: the server loaded its shards of the checkpoint
// ("resumed from ... rows") while the workers refused it.
TEST(ResultLineMpi, AResumeBeyondTheRunNamesTheCheckpointAndTheFix) {
  const std::string dir =
      testing::TempRoot() + "/result_line_mpi_resume_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  const std::string train = "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                            " --set data.synthetic.warmup_steps=1 --set data.synthetic.num_items="
                            "1000 --set data.batch_size=16 --set train.num_threads=1";
  const MpiRun first = testing::RunMpi(
      IPS_BINARY, 2, train + " --set data.synthetic.steps=2 --set checkpoint.dir=" + dir + "/ck",
      60);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const MpiRun r = testing::RunMpi(
      IPS_BINARY, 2, train + " --set data.synthetic.steps=1 --resume " + dir + "/ck", 60);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const std::vector<std::string> lines = ResultLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0].rfind("RESULT train_cluster status=error exit=1 error=\"rank 1 (worker 0): "
                           "FAILED_PRECONDITION: --resume " +
                               dir + "/ck: the checkpoint at " + dir +
                               "/ck/ckpt-3 was saved at step 3, beyond this run's 2 steps "
                               "(data.synthetic.warmup_steps 1 + data.synthetic.steps 1): set "
                               "data.synthetic.steps to at least 2 to continue it (--set "
                               "data.synthetic.steps=2)",
                           0),
            0u)
      << r.output;
  EXPECT_EQ(r.err.find("resumed from"), std::string::npos) << r.err;
  (void)std::system(("rm -rf " + dir).c_str());
}

TEST(ResultLineMpi, AKilledWorkerEndsTheJobWithOneErrorLineNamingIt) {
  const MpiRun r = KillRankWhileTraining(2);
  ExpectOneErrorLineNaming(r, "rank 2 (worker 1)");
}

TEST(ResultLineMpi, AKilledServerEndsTheJobWithOneErrorLineNamingIt) {
  const MpiRun r = KillRankWhileTraining(0);
  ExpectOneErrorLineNaming(r, "rank 0 (ps 0)");
}

// Worker 0, the rank that prints the job's RESULT line, killed: the lowest other rank (the
// server, rank 0) prints it at once; worker 1, which sees the death too, would print only after
// a grace period, which the server's MPI_Abort (or mpirun) ends first.
TEST(ResultLineMpi, AKilledWorkerZeroEndsTheJobWithOneErrorLineFromAnotherRank) {
  const MpiRun r = KillRankWhileTraining(1);
  ExpectOneErrorLineNaming(r, "rank 1 (worker 0)");
}

}  // namespace
}  // namespace ips
