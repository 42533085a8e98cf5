// Runs the built `ips` binary as a user would and checks exit codes and messages.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/result_line.h"
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

// The lines of `text` that start with "RESULT ".
std::vector<std::string> ResultLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RESULT ", 0) == 0) out.push_back(line);
  return out;
}

// Whether `r` ended with its only RESULT line, and it starts with `prefix`.
::testing::AssertionResult EndsWithOneResultLine(const IpsRun& r, const std::string& prefix) {
  const std::vector<std::string> lines = ResultLines(r.output);
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << lines.size() << " RESULT lines in:\n" << r.output;
  if (LastLine(r.output) != lines[0])
    return ::testing::AssertionFailure() << "RESULT is not the last line of:\n" << r.output;
  if (lines[0].rfind(prefix, 0) != 0)
    return ::testing::AssertionFailure() << "want " << prefix << "\ngot  " << lines[0];
  return ::testing::AssertionSuccess();
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
  EXPECT_TRUE(EndsWithOneResultLine(r, "RESULT config_check status=error exit=1 error=\""));
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
  // The exception's message is the RESULT line's (ReportException notes it).
  EXPECT_TRUE(
      EndsWithOneResultLine(r,
                            "RESULT train status=error exit=1 error=\"out of memory "
                            "(std::bad_alloc) in `ips train`: lower the sizes of the config") ||
      EndsWithOneResultLine(r, "RESULT train status=error exit=1 error=\"RESOURCE_EXHAUSTED: "))
      << r.output;
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
  // No success line: the error's.
  EXPECT_TRUE(EndsWithOneResultLine(
      r, "RESULT train status=error exit=1 error=\"INVALID_ARGUMENT: training diverged at step "));
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
  EXPECT_TRUE(EndsWithOneResultLine(
      r, "RESULT train_stream status=error exit=1 error=\"INVALID_ARGUMENT: training diverged "));
}

// A repeated eval.top_k entry is refused (MIND reported recall10=.. twice).
TEST(Cli, RepeatedTopKIsRefused) {
  const auto r = RunIps("config check --config " + SourceConfig("din_ml100k.pbtxt") +
                        " --set eval.top_k=10,10");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Has(r, "eval.top_k[1] 10 repeats eval.top_k[0]")) << r.output;
}

// ---- The RESULT line of a run that fails or only prints its help -------------------------------

using ips::testing::RunIpsSplit;

// A usage error (exit 2) ends stdout with `RESULT <name> status=error exit=2 error="<message>"`:
// the name of the command's success line, the first line of its message, quoted. stderr keeps the
// message and the usage, and no RESULT line. (Nothing was printed on stdout: a script reading
// RESULT lines could not tell a usage error from a crash.)
TEST(CliResult, UsageErrorsEndStdoutWithAnErrorLine) {
  struct Case {
    std::string args, line;
  };
  for (
      const Case& c : std::vector<Case>{
          {"",
           R"r(RESULT ips status=error exit=2 error="no command given (usage: ips <command> [flags])")r"},
          {"frobnicate",
           R"r(RESULT ips status=error exit=2 error="unknown command 'frobnicate'")r"},
          // Quotes and backslashes are escaped: the value ends at its closing quote.
          {R"r('a"b\c')r", R"r(RESULT ips status=error exit=2 error="unknown command 'a\"b\\c'")r"},
          {"config check --config x.pbtxt --bogus 1",
           R"r(RESULT config_check status=error exit=2 error="ips config check: unknown flag '--bogus'")r"},
          {"train --config x.pbtxt stray",
           R"r(RESULT train status=error exit=2 error="unexpected argument 'stray'")r"},
          {"train --config x.pbtxt --stream - --stream_negatives 0",
           R"r(RESULT train_stream status=error exit=2 error="--stream_negatives 0: expected 1..1000 (sampled negatives per event: every event is a positive, so at least 1 is needed for the model to learn anything)")r"},
          {"eval",
           R"r(RESULT eval status=error exit=2 error="ips eval: missing required flag --config")r"},
          {"export",
           R"r(RESULT export status=error exit=2 error="ips export: missing required flag --checkpoint")r"},
          {"serve",
           R"r(RESULT serve status=error exit=2 error="ips serve: missing required flag --bundle")r"},
          {"data frobnicate",
           R"r(RESULT data status=error exit=2 error="unknown subcommand 'data frobnicate'")r"},
          {"config frobnicate --config x.pbtxt",
           R"r(RESULT config status=error exit=2 error="unknown subcommand 'config frobnicate'")r"},
          {"data convert --format parquet --input x --output y",
           R"r(RESULT data_convert status=error exit=2 error="unknown --format 'parquet' (expected one of movielens100k|movielens1m|seqrec|taobao|dien|events)")r"},
          // No "error: " line: the first line printed (the usage) is the message.
          {"config",
           R"r(RESULT config status=error exit=2 error="usage: ips config check|print --config FILE [--set path.to.field=value ...] [--np N] [--resume DIR] [--stream SOURCE]")r"},
      }) {
    SCOPED_TRACE("ips " + c.args);
    const IpsRun r = RunIpsSplit(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.error;
    EXPECT_EQ(r.output, c.line + "\n") << r.error;
    EXPECT_EQ(r.error.find("RESULT"), std::string::npos) << r.error;
  }
}

// A runtime error (exit 1) ends stdout the same way, its message the command's "error: "
// line.
TEST(CliResult, RuntimeErrorsEndStdoutWithTheirErrorLine) {
  const std::string missing = ::testing::TempDir() + "/cli_result_missing";
  struct Case {
    std::string args, name;
  };
  for (const Case& c : std::vector<Case>{
           {"config check --config " + missing + ".pbtxt", "config_check"},
           {"config print --config " + missing + ".pbtxt", "config_print"},
           {"data inspect " + missing, "data_inspect"},
           {"train --quiet --config " + missing + ".pbtxt", "train"},
           {"eval --config " + SourceConfig("din_synthetic.pbtxt") + " --checkpoint " + missing,
            "eval"},
           {"export --checkpoint " + missing + " --output " + missing + "_bundle", "export"},
           {"serve --bundle " + missing + " </dev/null", "serve"},
           {"train --quiet --config " + SourceConfig("din_stream.pbtxt") + " --stream " + missing +
                " --stream_no_follow",
            "train_stream"},
       }) {
    SCOPED_TRACE("ips " + c.args);
    const IpsRun r = RunIpsSplit(c.args);
    EXPECT_EQ(r.exit_code, 1) << r.error;
    const size_t at = r.error.rfind("error: ");
    ASSERT_NE(at, std::string::npos) << r.error;
    const std::string message = r.error.substr(at + 7, r.error.find('\n', at) - at - 7);
    EXPECT_NE(message.find(missing), std::string::npos) << r.error;
    EXPECT_EQ(r.output, "RESULT " + c.name +
                            " status=error exit=1 error=" + ips::QuoteResultValue(message) + "\n")
        << r.error;
  }
}

// `ips data synth --output -` writes the event log to stdout and its RESULT line to stderr:
// so does its error line.
TEST(CliResult, SynthToStdoutPrintsItsErrorLineOnStderr) {
  IpsRun r = RunIpsSplit("data synth --output - --events 0");
  EXPECT_EQ(r.exit_code, 2) << r.error;
  EXPECT_EQ(r.output, "");
  EXPECT_EQ(
      LastLine(r.error),
      R"r(RESULT data_synth status=error exit=2 error="ips data synth: --events must be >= 1, got 0")r")
      << r.error;
  // Written to a file, stdout has it.
  r = RunIpsSplit("data synth --output=" + ::testing::TempDir() + "/cli_result.tsv --events 0");
  EXPECT_EQ(r.exit_code, 2) << r.error;
  EXPECT_EQ(r.output,
            "RESULT data_synth status=error exit=2 error=\"ips data synth: --events must be >= 1, "
            "got 0\"\n")
      << r.error;
}

// A help text ends with `RESULT <name> status=help` on stdout: the run did nothing else.
TEST(CliResult, HelpEndsWithAHelpLine) {
  struct Case {
    std::string args, line;
  };
  for (const Case& c : std::vector<Case>{{"help", "RESULT help status=help"},
                                         {"--help", "RESULT help status=help"},
                                         {"train --help", "RESULT train status=help"},
                                         {"config --help", "RESULT config status=help"},
                                         {"data help", "RESULT data status=help"},
                                         {"data convert --help", "RESULT data_convert status=help"},
                                         {"data synth -h", "RESULT data_synth status=help"}}) {
    SCOPED_TRACE("ips " + c.args);
    const IpsRun r = RunIpsSplit(c.args);
    EXPECT_EQ(r.exit_code, 0) << r.error;
    EXPECT_EQ(ResultLines(r.output), std::vector<std::string>{c.line}) << r.output;
    EXPECT_EQ(LastLine(r.output), c.line) << r.output;
  }
}

// A successful command's line is its own, alone: nothing added, no second line.
TEST(CliResult, SuccessLinesAreUnchanged) {
  const IpsRun r = RunIpsSplit("config check --config " + SourceConfig("din_synthetic.pbtxt"));
  EXPECT_EQ(r.exit_code, 0) << r.error;
  const std::vector<std::string> lines = ResultLines(r.output);
  ASSERT_EQ(lines.size(), 1u) << r.output;
  EXPECT_EQ(lines[0].rfind("RESULT config_check config=", 0), 0u) << lines[0];
  EXPECT_EQ(lines[0].find(" status="), std::string::npos) << lines[0];
}

// QA: a bad flag value was a usage error (2) or a runtime error (1) depending on the flag and
// the command (`config check --np abc` 2, `--np -3` 1; `train --eval_batches -1` 1), and a --set
// without "=" was 1. Every one is a usage error now (exit 2, the message and the usage on stderr,
// `RESULT <command> status=error exit=2 ...` on stdout), in train, eval and config check alike;
// a --set of the right form whose field or value the config refuses stays a config error (exit 1),
// as the same value in the config file is.
TEST(CliResult, BadFlagValuesAndMalformedSetAreUsageErrorsInEveryCommand) {
  const std::string cfg = SourceConfig("din_synthetic.pbtxt");
  struct Case {
    std::string args, line;
  };
  for (
      const Case& c : std::vector<Case>{
          {"config check --config " + cfg + " --np -3",
           R"r(RESULT config_check status=error exit=2 error="--np must be in [0, 2147483647], got -3")r"},
          {"config check --config " + cfg + " --np 4294967298",
           R"r(RESULT config_check status=error exit=2 error="--np must be in [0, 2147483647], got 4294967298")r"},
          {"config check --config " + cfg + " --np abc",
           R"r(RESULT config_check status=error exit=2 error="flag --np: expected an integer, got 'abc'")r"},
          {"train --config " + cfg + " --eval_batches -1",
           R"r(RESULT train status=error exit=2 error="--eval_batches must be in [0, 2147483647], got -1")r"},
          {"config check --config " + cfg + " --set data.batch_size",
           R"r(RESULT config_check status=error exit=2 error="--set data.batch_size: expected path.to.field=value (e.g. --set data.batch_size=64)")r"},
          {"config print --config " + cfg + " --set =64",
           R"r(RESULT config_print status=error exit=2 error="--set =64: expected path.to.field=value (e.g. --set data.batch_size=64)")r"},
          {"train --config " + cfg + " --set data.batch_size=8 --set data.batch_size",
           R"r(RESULT train status=error exit=2 error="--set data.batch_size: expected path.to.field=value (e.g. --set data.batch_size=64)")r"},
          {"eval --config " + cfg + " --checkpoint /nonexistent --set data.batch_size",
           R"r(RESULT eval status=error exit=2 error="--set data.batch_size: expected path.to.field=value (e.g. --set data.batch_size=64)")r"},
      }) {
    SCOPED_TRACE("ips " + c.args);
    const IpsRun r = RunIpsSplit(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.error;
    EXPECT_EQ(r.output, c.line + "\n") << r.error;
    EXPECT_NE(r.error.find("usage: ips "), std::string::npos) << r.error;
  }
  // The form is right: the config refuses the field or the value, exit 1 in every command, with
  // the error the config file's line would get.
  for (const std::string& set :
       std::vector<std::string>{"data.batch_size=-4", "data.batch_size=abc", "data.no_such=1"}) {
    for (const std::string& command :
         {"config check --config " + cfg, "train --quiet --config " + cfg,
          "eval --config " + cfg + " --checkpoint /nonexistent"}) {
      SCOPED_TRACE(command + " --set " + set);
      const IpsRun r = RunIpsSplit(command + " --set " + set);
      EXPECT_EQ(r.exit_code, 1) << r.error;
      EXPECT_NE(r.error.find("error: INVALID_ARGUMENT: --set " + set + ": "), std::string::npos)
          << r.error;
      EXPECT_EQ(r.error.find("usage: "), std::string::npos) << r.error;
    }
  }
}

// ---- The header line of `ips train` ----------------------------------------------------------

// Synthetic runs small enough to train in a moment.
const char* kSmall =
    " --set data.synthetic.num_items=3000 --set data.synthetic.num_categories=20"
    " --set data.batch_size=32 --set data.max_history=10 --set data.synthetic.warmup_steps=2"
    " --set data.synthetic.steps=6 --set train.num_threads=1";

// The line of `ips train` after "train: " (its header), "" if none.
std::string HeaderLine(const std::string& output) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("train: model=", 0) == 0) return line;
  return "";
}

// The header line names the recurrent cell (model.cell) of DIEN and GRU4Rec, on synthetic data and
// on a dataset, right after the model; the models without one say nothing of it. (It named no
// cell: a GRU and an LSTM run of the same model read the same.)
TEST(Cli, TrainHeaderNamesTheRecurrentCell) {
  struct Case {
    std::string args, header;
  };
  const std::string dir = ::testing::TempDir() + "/cli_cell_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  {
    std::ofstream in(dir + "/seq.txt");
    for (int u = 1; u <= 100; ++u)
      for (int j = 0; j < 6; ++j) in << u << " " << (u * 7 + j * 13) % 200 + 1 << "\n";
  }
  const auto conv = RunIps("data convert --format seqrec --input " + dir + "/seq.txt --output " +
                           dir + "/ds --eval_negatives 20");
  ASSERT_EQ(conv.exit_code, 0) << conv.output;
  const std::string on_dataset = " --set data.train_dir=" + dir +
                                 "/ds --set train.epochs=1 --set train.num_threads=1"
                                 " --set data.batch_size=32 --set data.max_history=10"
                                 " --set eval.top_k=10";
  for (const Case& c : std::vector<Case>{
           {"--config " + SourceConfig("dien_synthetic.pbtxt") + kSmall + " --set model.cell=LSTM",
            "train: model=dien cell=LSTM batch=32 "},
           {"--config " + SourceConfig("dien_synthetic.pbtxt") + kSmall,
            "train: model=dien cell=GRU batch=32 "},
           {"--config " + SourceConfig("sasrec_synthetic.pbtxt") + kSmall +
                " --set model.type=GRU4REC",
            "train: model=gru4rec cell=GRU batch=32 "},
           {"--config " + SourceConfig("sasrec_games.pbtxt") + on_dataset +
                " --set model.type=GRU4REC --set model.cell=LSTM",
            "train: model=gru4rec cell=LSTM data=" + dir + "/ds "},
           {"--config " + SourceConfig("dien_games.pbtxt") + on_dataset,
            "train: model=dien cell=GRU data=" + dir + "/ds "},
           {"--config " + SourceConfig("din_synthetic.pbtxt") + kSmall,
            "train: model=din batch=32 "},
           {"--config " + SourceConfig("sasrec_synthetic.pbtxt") + kSmall,
            "train: model=sasrec batch=32 "}}) {
    SCOPED_TRACE(c.args);
    const auto r = RunIps("train --quiet " + c.args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(HeaderLine(r.output).rfind(c.header, 0), 0u) << r.output;
  }
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: a --metrics_out that cannot be opened failed with "cannot open --metrics_out file 'F'" and
// no reason, and NOT_FOUND whatever the reason. The reason is open(2)'s errno now, and the code
// follows it: NOT_FOUND for a missing directory (or a path under a file), INVALID_ARGUMENT for a
// directory, FAILED_PRECONDITION for a file that may not be written. The config's
// train.metrics_out is named as such. `ips eval --metrics_out` fails alike, before evaluating.
TEST(Cli, MetricsOutThatCannotBeOpenedSaysWhy) {
  const std::string dir = ::testing::TempDir() + "/cli_metrics_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  std::ofstream(dir + "/file") << "x\n";
  const std::string train =
      "train --quiet --config " + SourceConfig("din_synthetic.pbtxt") + kSmall;
  struct Case {
    std::string flags, error;
  };
  std::vector<Case> cases = {
      {"--metrics_out " + dir + "/missing/m.jsonl",
       "NOT_FOUND: cannot open --metrics_out file '" + dir +
           "/missing/m.jsonl': No such file or directory"},
      {"--metrics_out " + dir,
       "INVALID_ARGUMENT: cannot open --metrics_out file '" + dir + "': Is a directory"},
      {"--metrics_out " + dir + "/file/m.jsonl",
       "NOT_FOUND: cannot open --metrics_out file '" + dir + "/file/m.jsonl': Not a directory"},
      {"--set train.metrics_out=" + dir + "/missing/m.jsonl",
       "NOT_FOUND: cannot open train.metrics_out file '" + dir +
           "/missing/m.jsonl': No such file or directory"},
  };
  // Root writes anywhere: a read-only file only refuses another user.
  if (geteuid() != 0) {
    std::ofstream(dir + "/ro") << "";
    (void)std::system(("chmod 444 " + dir + "/ro").c_str());
    cases.push_back(
        {"--metrics_out " + dir + "/ro", "FAILED_PRECONDITION: cannot open --metrics_out file '" +
                                             dir + "/ro': Permission denied"});
  }
  // `ips eval` opens its --metrics_out alike (common/output_file.h OpenAppendFile), before it
  // reads the checkpoint (none here): it used to fail only after the whole evaluation, with
  // "DATA_LOSS: writing --metrics_out file 'F'" and no reason.
  const std::string eval = "eval --config " + SourceConfig("din_synthetic.pbtxt") +
                           " --checkpoint " + dir + "/no_checkpoint";
  for (const Case& c : cases) {
    for (const std::string& command : {std::string("train"), std::string("eval")}) {
      if (command == "eval" && c.flags.rfind("--metrics_out ", 0) != 0) continue;
      SCOPED_TRACE(command + " " + c.flags);
      const IpsRun r = RunIps((command == "train" ? train : eval) + " " + c.flags);
      EXPECT_EQ(r.exit_code, 1) << r.output;
      EXPECT_NE(r.output.find("error: " + c.error + "\n"), std::string::npos) << r.output;
      EXPECT_TRUE(EndsWithOneResultLine(
          r, "RESULT " + command + " status=error exit=1 error=" + ips::QuoteResultValue(c.error)));
    }
  }
  const IpsRun ok = RunIps(train + " --metrics_out " + dir + "/m.jsonl");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  // An eval --metrics_out that opens: the checkpoint's error is next.
  const IpsRun opened = RunIps(eval + " --metrics_out " + dir + "/m.jsonl");
  EXPECT_EQ(opened.exit_code, 1) << opened.output;
  EXPECT_NE(opened.output.find(dir + "/no_checkpoint"), std::string::npos) << opened.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

// QA: `ips serve` scored {"history":[007]} as item 7: RFC 8259 numbers have no leading zeros, so
// a client's JSON library refuses such a line, and the server answered it. Numbers are read by
// RFC 8259's grammar now: a leading zero, "-", "1.", ".5", "1e", "+1", "--1" are refused in the
// id fields, "top_n" and the echoed "user" alike, each with the serve error naming the line and
// the field; a well-formed non-integer id is refused as such; valid numbers are served.
TEST(Cli, ServeRefusesNumbersThatAreNotJson) {
  const std::string dir = ::testing::TempDir() + "/cli_serve_json_" + std::to_string(getpid());
  (void)std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  IpsRun r = RunIps("train --quiet --config " + SourceConfig("din_synthetic.pbtxt") + kSmall +
                    " --set checkpoint.dir=" + dir + "/ck");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunIps("export --checkpoint " + dir + "/ck --output " + dir + "/bundle");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  struct Case {
    std::string line, error;  // error "": served
  };
  const std::string lz = " (a JSON number has no leading zeros)";
  const std::string id = R"(field \"history\": expected a non-negative integer id, got )";
  const std::string value =
      R"(field \"user\": expected a value (a string, number, true, false, null, array or )"
      "object), got ";
  const std::vector<Case> cases = {
      {R"({"history":[01],"candidates":[3]})", "column 13: " + id + "01" + lz},
      {R"({"history":[1,007],"candidates":[3]})", "column 15: " + id + "007" + lz},
      {R"({"history":[00],"candidates":[3]})", "column 13: " + id + "00" + lz},
      {R"({"history":[1],"candidates":[05]})",
       R"(column 30: field \"candidates\": expected a non-negative integer id, got 05)" + lz},
      {R"({"history":[1],"candidates":[3],"top_n":01})",
       R"(column 41: field \"top_n\": expected an integer in 0..100000 (the number of items to )"
       "return), got 01" +
           lz},
      {R"({"user":01,"history":[1],"candidates":[3]})", "column 9: " + value + "01" + lz},
      {R"({"user":-007,"history":[1],"candidates":[3]})", "column 9: " + value + "-007" + lz},
      {R"({"history":[-],"candidates":[3]})", "column 13: " + id + "-"},
      {R"({"history":[1.],"candidates":[3]})", "column 13: " + id + "1."},
      {R"({"history":[.5],"candidates":[3]})", "column 13: " + id + ".5"},
      {R"({"history":[1e],"candidates":[3]})", "column 13: " + id + "1e"},
      {R"({"history":[+1],"candidates":[3]})", "column 13: " + id + "+1"},
      {R"({"history":[--1],"candidates":[3]})", "column 13: " + id + "--1"},
      {R"({"history":[12abc],"candidates":[3]})", "column 13: " + id + "12abc"},
      {R"({"user":-,"history":[1],"candidates":[3]})", "column 9: " + value + "-"},
      {R"({"user":1.,"history":[1],"candidates":[3]})", "column 9: " + value + "1."},
      {R"({"user":.5,"history":[1],"candidates":[3]})", "column 9: " + value + ".5"},
      {R"({"user":1e,"history":[1],"candidates":[3]})", "column 9: " + value + "1e"},
      {R"({"user":+1,"history":[1],"candidates":[3]})", "column 9: " + value + "+1"},
      {R"({"user":--1,"history":[1],"candidates":[3]})", "column 9: " + value + "--1"},
      {R"({"user":{"a":[01]},"history":[1],"candidates":[3]})", "column 15: " + value + "01" + lz},
      {R"({"history":[1],"candidates":[3],"top_n":1.})",
       R"(column 41: field \"top_n\": expected an integer in 0..100000 (the number of items to )"
       "return), got 1."},
      // Well-formed numbers that are not integers: refused as such.
      {R"({"history":[1e2],"candidates":[3]})",
       R"(column 13: field \"history\": ids are integers, got 1e2)"},
      {R"({"history":[2.5],"candidates":[3]})",
       R"(column 13: field \"history\": ids are integers, got 2.5)"},
      // Valid JSON numbers are served.
      {R"({"user":0,"history":[10,1],"candidates":[3,100],"top_n":0})", ""},
      {R"({"user":-0.5e-3,"history":[1],"candidates":[3]})", ""},
      {R"({"user":1E+2,"history":[1],"candidates":[3]})", ""},
      {R"({"user":-0,"history":[1],"candidates":[3]})", ""},
  };
  {
    std::ofstream in(dir + "/requests.jsonl");
    for (const Case& c : cases) in << c.line << "\n";
  }
  r = RunIpsSplit("serve --bundle " + dir + "/bundle <" + dir + "/requests.jsonl");
  EXPECT_EQ(r.exit_code, 0) << r.error;
  std::istringstream out(r.output);
  std::vector<std::string> responses;
  for (std::string line; std::getline(out, line);)
    if (line.rfind("RESULT ", 0) != 0) responses.push_back(line);
  ASSERT_EQ(responses.size(), cases.size()) << r.output;
  int errors = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].line);
    const std::string n = std::to_string(i + 1);
    if (cases[i].error.empty()) {
      EXPECT_EQ(responses[i].find("\"error\""), std::string::npos) << responses[i];
      EXPECT_NE(responses[i].find("\"scores\":["), std::string::npos) << responses[i];
      continue;
    }
    ++errors;
    EXPECT_NE(responses[i].find(",\"line\":" + n + ",\"error\":\"line " + n + ": " +
                                cases[i].error + "\"}"),
              std::string::npos)
        << responses[i];
    EXPECT_NE(r.error.find("error: stdin line " + n + ": request skipped"), std::string::npos)
        << r.error;
  }
  EXPECT_NE(LastLine(r.output).find(" requests=" + std::to_string(cases.size()) +
                                    " errors=" + std::to_string(errors) + " "),
            std::string::npos)
      << r.output;
  (void)std::system(("rm -rf " + dir).c_str());
}

}  // namespace
