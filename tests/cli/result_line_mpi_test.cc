// `mpirun -np N ips train` that fails ends the job's stdout with exactly one RESULT line, the
// error line of launch/main.cc, printed by the rank that prints the job's RESULT line: rank 0 while
// the layout is unknown (a config that does not load fails alike on every rank), worker 0 once it
// is (a data.train_dir every rank refuses). Before, a failing job printed no RESULT line at all;
// printed by every failing rank, it would have printed N.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testing/mpi_run.h"

namespace ips {
namespace {

using testing::MpiRun;

// The lines of `text` that start with "RESULT ".
std::vector<std::string> ResultLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RESULT ", 0) == 0) out.push_back(line);
  return out;
}

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

}  // namespace
}  // namespace ips
