// Runs the built `ips` binary as a user would and checks exit codes and messages.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/testing/run_ips.h"

namespace {

using ips::testing::IpsRun;
using ips::testing::LastLine;
using ips::testing::RunIps;

std::string SourceConfig(const std::string& name) {
  return std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/" + name;
}

// `ips ARGS 2>&1` under the shell's `ulimit` settings `limits` (e.g. "-v 4000000": KiB of
// address space), so that memory and thread limits are the same on any machine.
IpsRun RunIpsLimited(const std::string& limits, const std::string& args) {
  return RunIps(args, "ulimit " + limits + " && ");
}

bool Has(const IpsRun& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

TEST(Cli, NoCommandOrUnknownCommandIsUsageExit2) {
  auto r = RunIps("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("usage: ips"), std::string::npos);
  r = RunIps("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos);
}

TEST(Cli, HelpListsCommands) {
  auto r = RunIps("help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("data"), std::string::npos);
  EXPECT_NE(r.output.find("config"), std::string::npos);
}

TEST(Cli, ConfigCheckEndsWithResultLine) {
  const std::string cfg =
      std::string(std::getenv("IPS_SOURCE_DIR")) + "/launch/configs/din_synthetic.pbtxt";
  auto r = RunIps("config check --config " + cfg + " --set data.batch_size=128");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(LastLine(r.output).rfind("RESULT config_check ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("overrides=1"), std::string::npos);
  r = RunIps("config print --config " + cfg + " --set model.type=DIEN");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("type: DIEN"), std::string::npos) << r.output;
}

TEST(Cli, UnknownFlagIsUsageExit2) {
  auto r = RunIps("config check --config x.pbtxt --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown flag '--bogus'"), std::string::npos) << r.output;
}

TEST(Cli, BadConfigIsExit1NamingFileAndLine) {
  const std::string path = ::testing::TempDir() + "/bad_cli.pbtxt";
  std::ofstream(path) << "version: 1\nmodel {\n  embedding_dim: -3\n}\n";
  auto r = RunIps("config check --config " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path + ":3: model.embedding_dim: must be positive"), std::string::npos)
      << r.output;
  r = RunIps("config check --config " + path + " --set model.embedding_dim=oops");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("'oops' is not a valid int32"), std::string::npos) << r.output;
}

// ---- Errors that were aborts (exit 134) or went unnoticed ------------------------------------

// Layer sizes whose dense parameters cannot be allocated: RESOURCE_EXHAUSTED naming the
// parameter count and the largest tensors, exit 1 (it was std::bad_alloc and std::terminate).
TEST(Cli, ModelTooLargeForMemoryIsAnErrorNotAnAbort) {
  const auto r =
      RunIpsLimited("-v 4000000", "config check --config " + SourceConfig("din_synthetic.pbtxt") +
                                      " --set model.attention_hidden=100000,100000");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r,
                  "error: RESOURCE_EXHAUSTED: din model: out of memory allocating "
                  "10014738242 dense parameters"))
      << r.output;
  EXPECT_TRUE(Has(r, "attn.net.2.weight (10000000000)")) << r.output;
  EXPECT_FALSE(Has(r, "terminate called")) << r.output;
}

// More threads than the process's limits can start (8 MiB stacks, 8 GB of address space, the
// in-process store's 600 threads started first): the trainer's pool fails as a Status naming
// train.num_threads (it was std::system_error and std::terminate).
TEST(Cli, TrainerThreadsThatCannotStartNameTrainNumThreads) {
  const auto r = RunIpsLimited("-s 8192 && ulimit -v 8000000",
                               "config check --config " + SourceConfig("din_synthetic.pbtxt") +
                                   " --set train.num_threads=600");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r,
                  "error: RESOURCE_EXHAUSTED: Trainer: train.num_threads 600: cannot start a "
                  "pool of 600 threads"))
      << r.output;
  EXPECT_FALSE(Has(r, "terminate called")) << r.output;
}

// An exception nobody turns into a Status reaches main: `error: internal: <what>` (or `error: out
// of memory` for std::bad_alloc), exit 1, never std::terminate's abort. Here the in-process
// store's thread pool (ps/local_embedding_store.cc) fails to start under a 2 GB limit.
TEST(Cli, UncaughtExceptionIsAnInternalErrorExit1) {
  const auto r = RunIpsLimited("-s 8192 && ulimit -v 2000000",
                               "config check --config " + SourceConfig("din_synthetic.pbtxt") +
                                   " --set train.num_threads=600");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "cannot start a pool of 600 threads")) << r.output;
  EXPECT_TRUE(Has(r, "error: ")) << r.output;
  EXPECT_FALSE(Has(r, "terminate called")) << r.output;
}

// std::bad_alloc from a size nobody checked (the synthetic protocol's pre-generated batches,
// about 1.3 GB here, under a 1 GB limit): `error: out of memory (std::bad_alloc) in `ips train``,
// exit 1. (A machine with less than 2.6 GB of memory refuses the batches up front instead; a
// build with CUDA maps more at start-up and may fail at an earlier allocation, which says "out of
// host memory".) OpenBLAS keeps its default threads: see the next test.
TEST(Cli, OutOfMemoryIsAnErrorExit1) {
  const auto r = RunIps("train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                            " --set data.synthetic.steps=3000 --set train.num_threads=1",
                        "ulimit -v 1000000 && timeout -s KILL 120 ");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "error: out of memory (std::bad_alloc) in `ips train`") ||
              Has(r, "error: RESOURCE_EXHAUSTED: data.synthetic:") ||
              Has(r, "error: RESOURCE_EXHAUSTED: out of host memory allocating"))
      << r.output;
  EXPECT_FALSE(Has(r, "terminate called")) << r.output;
}

// OpenBLAS starts a worker thread per core when the library is loaded, and each allocates a
// 128 MiB buffer, retrying forever when it cannot; its exit handler joins them. Under an
// address-space limit that leaves no room for those buffers, `ips` used to hang at exit whatever
// it did (a failed `ips train` after printing its error, `ips help`), unless OPENBLAS_NUM_THREADS
// was 1. It ends with _exit after flushing its output, so no library's exit handler runs. (With
// one core OpenBLAS starts no worker thread and nothing could hang.)
TEST(Cli, ExitDoesNotWaitForOpenBlasThreadsStuckUnderAnAddressSpaceLimit) {
  const std::string limited = "ulimit -v 150000 && timeout -s KILL 60 ";
  if (RunIps("help", "export OPENBLAS_NUM_THREADS=1 && " + limited).exit_code != 0)
    GTEST_SKIP() << "this build of ips does not start under a 150 MB address-space limit";
  const std::string defaults = "unset OPENBLAS_NUM_THREADS GOTO_NUM_THREADS OMP_NUM_THREADS; ";
  auto r = RunIps("train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                      " --set data.synthetic.steps=3000 --set train.num_threads=1",
                  defaults + limited);
  EXPECT_EQ(r.exit_code, 1) << "(137: killed by the timeout, hung at exit)\n" << r.output;
  EXPECT_TRUE(Has(r, "error: out of memory (std::bad_alloc) in `ips train`") ||
              Has(r, "error: RESOURCE_EXHAUSTED: "))
      << r.output;
  r = RunIps("help", defaults + limited);
  EXPECT_EQ(r.exit_code, 0) << "(137: killed by the timeout, hung at exit)\n" << r.output;
  EXPECT_TRUE(Has(r, "usage: ips")) << r.output;
}

// A learning rate that makes training diverge stops the run at the first non-finite loss, naming
// the step (it trained on and failed only in the evaluation: "score is NaN").
TEST(Cli, DivergedTrainingStopsWithAnError) {
  const auto r = RunIps("train --quiet --config " + SourceConfig("din_synthetic.pbtxt") +
                        " --set optimizer.learning_rate=1e30 --set data.synthetic.steps=20"
                        " --set data.synthetic.warmup_steps=2 --set train.num_threads=1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "error: INVALID_ARGUMENT: training diverged at step ")) << r.output;
  EXPECT_TRUE(Has(r, "(lower optimizer.learning_rate or check the input)")) << r.output;
  EXPECT_FALSE(Has(r, "RESULT train")) << r.output;
}

// The stream's driver stops on a diverged model too: its prequential evaluation scores each
// batch before training on it, so the divergence shows in the scores of the batch after.
TEST(Cli, DivergedStreamTrainingStopsWithAnError) {
  const std::string events = ::testing::TempDir() + "/cli_diverged_stream.txt";
  auto synth = RunIps("data synth --output " + events +
                      " --truth none --events 3000 --users 100 --items 500 --categories 10");
  ASSERT_EQ(synth.exit_code, 0) << synth.output;
  const auto r =
      RunIps("train --quiet --config " + SourceConfig("din_stream.pbtxt") + " --stream " + events +
             " --stream_no_follow --set optimizer.learning_rate=1e30"
             " --set train.num_threads=1");
  std::remove(events.c_str());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "error: INVALID_ARGUMENT: training diverged ")) << r.output;
  EXPECT_TRUE(Has(r, "(lower optimizer.learning_rate or check the input)")) << r.output;
}

// A repeated eval.top_k entry is refused (MIND reported recall10=.. twice).
TEST(Cli, RepeatedTopKIsRefused) {
  const auto r = RunIps("config check --config " + SourceConfig("din_ml100k.pbtxt") +
                        " --set eval.top_k=10,10");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "eval.top_k[1] 10 repeats eval.top_k[0]")) << r.output;
}

}  // namespace
