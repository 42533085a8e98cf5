// Runs the built `ips` binary: a malformed input exits 1 naming file:line:field, an unknown flag
// or format exits 2 with usage, and convert + inspect end with their RESULT lines. Inputs and
// flag values that would yield a dataset the readers reject (or one evaluating to NaN, one
// without training rows, or one with a user no negative can be drawn for) are refused.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"
#include "tests/testing/run_ips.h"

namespace ips {
namespace {

testing::IpsRun Ips(const std::string& args) { return testing::RunIps(args); }

TEST(DataCli, MalformedLineExitsOneNamingFileLineField) {
  testing::TempDir dir;
  // User 2 (2 events) gives the training row; item 5 is one user 1 never interacted with.
  testing::WriteFile(dir.File("ub.csv"),
                     "1,2,3,pv,100\n1,2,3,pv,101\n1,2,3,like,102\n1,4,3,pv,103\n2,5,3,pv,104\n"
                     "2,2,3,pv,105\n");
  const testing::IpsRun r = Ips("data convert --format taobao --input " + dir.File("ub.csv") +
                                " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir.File("ub.csv") +
                          ":3: behavior: expected one of pv, buy, cart, fav (got 'like')"),
            std::string::npos)
      << r.output;
  // With --max_bad_records the line is skipped and counted.
  const testing::IpsRun ok = Ips("data convert --format taobao --input " + dir.File("ub.csv") +
                                 " --output " + dir.File("out") + " --max_bad_records 1");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("RESULT data_convert "), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find(" bad_records=1 "), std::string::npos) << ok.output;
  const testing::IpsRun inspect = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("RESULT data_inspect users=2 items=3 categories=1 events=5"),
            std::string::npos)
      << inspect.output;
  // A corrupted shard makes inspect fail with DATA_LOSS.
  std::string bytes = testing::ReadFile(dir.File("out/shard-00000-of-00001.ips"));
  bytes[70] ^= 1;
  testing::WriteFile(dir.File("out/shard-00000-of-00001.ips"), bytes);
  const testing::IpsRun bad = Ips("data inspect " + dir.File("out"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("DATA_LOSS"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("CRC mismatch"), std::string::npos) << bad.output;
}

TEST(DataCli, UsageErrorsExitTwo) {
  testing::IpsRun r = Ips("data convert --format taobao --input x --output y --no_such_flag 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--no_such_flag"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("usage:"), std::string::npos) << r.output;
  r = Ips("data convert --format parquet --input x --output y");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown --format 'parquet'"), std::string::npos) << r.output;
  r = Ips("data convert --input x --output y");  // --format missing
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = Ips("data frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = Ips("data inspect");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(DataCli, EmptyInputExitsOneNamingTheFile) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("empty.txt"), "");
  const testing::IpsRun r = Ips("data convert --format seqrec --input " + dir.File("empty.txt") +
                                " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: " + dir.File("empty.txt") + ": no usable events"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(
      testing::LastLine(r.output).rfind("RESULT data_convert status=error exit=1 error=\"", 0), 0u)
      << r.output;
}

TEST(DataCli, DegenerateFlagValuesAreUsageErrorsNamingTheFlag) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("s.txt"), "1 1\n1 2\n1 3\n2 1\n2 2\n2 3\n2 4\n");
  const std::string base = "data convert --format seqrec --input " + dir.File("s.txt") +
                           " --output " + dir.File("out") + " ";
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--min_user_events -1", "--min_user_events must be >= 0 (got -1)"},
           {"--eval_users 0", "--eval_users must be >= 1"},
           {"--eval_negatives 0", "--eval_negatives must be in 1..100000"},
           {"--protocol ctr --eval_negatives 0", "--eval_negatives must be in 1..100000"}}) {
    const testing::IpsRun r = Ips(base + flags);
    EXPECT_EQ(r.exit_code, 2) << flags << "\n" << r.output;
    EXPECT_NE(r.output.find("error: " + message), std::string::npos) << flags << "\n" << r.output;
    EXPECT_NE(r.output.find("usage:"), std::string::npos) << flags << "\n" << r.output;
  }
  // --min_user_events above every user is a data error (exit 1) that says what the data holds.
  const testing::IpsRun r = Ips(base + "--min_user_events 5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(
      r.output.find(dir.File("s.txt") + ": no user has >= 5 events (the most any user has is 4)"),
      std::string::npos)
      << r.output;
  // The help documents the seqrec format's extra columns and the evaluation flags' ranges.
  const testing::IpsRun help = Ips("data convert --help");
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("extra columns are ignored"), std::string::npos) << help.output;
}

TEST(DataCli, DatasetsThatCannotTrainOrHaveNoNegativeExitOneNamingTheInput) {
  testing::TempDir dir;
  // Every user keeps < 2 training events: nothing to train on.
  testing::WriteFile(dir.File("s.txt"), "1 1\n1 2\n1 3\n2 2\n2 3\n2 4\n3 5\n");
  testing::IpsRun r = Ips("data convert --format seqrec --input " + dir.File("s.txt") +
                          " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: " + dir.File("s.txt") +
                          ": no training rows: no user has >= 2 training events"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("the input needs a user with 2 events, or with >= 4"), std::string::npos)
      << r.output;
  EXPECT_EQ(
      testing::LastLine(r.output).rfind("RESULT data_convert status=error exit=1 error=\"", 0), 0u)
      << r.output;
  // User 1 interacted with all 4 items: no evaluation negative can be drawn for it.
  testing::WriteFile(dir.File("all.txt"), "1 1\n1 2\n1 3\n1 4\n2 1\n2 2\n");
  r = Ips("data convert --format seqrec --input " + dir.File("all.txt") + " --output " +
          dir.File("out") + " --eval_negatives 5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: " + dir.File("all.txt") +
                          ": user 1 interacted with every one of the 4 items (4 events), so no "
                          "negative can be drawn for it: the --eval_negatives=5 candidates"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(
      testing::LastLine(r.output).rfind("RESULT data_convert status=error exit=1 error=\"", 0), 0u)
      << r.output;
  EXPECT_NE(::access(dir.File("out").c_str(), F_OK), 0)
      << "a refused conversion wrote " << dir.File("out");
}

// `cat f | ips data convert --input /dev/stdin` lost the first 4 KiB of the pipe (the gzip check
// read them through stdio before the file was opened again) and exited 0 with fewer lines; a
// gzip stream piped in was read as text and refused. Every line is read, plain and gzip alike.
TEST(DataCli, InputFromAPipeReadsEveryLinePlainAndGzip) {
  testing::TempDir dir;
  std::string lines;
  // 2000 lines (~16 KiB): 20 users, each seeing 25 of the 500 items.
  for (int i = 0; i < 2000; ++i)
    lines += std::to_string(i % 20 + 1) + " " + std::to_string(i % 500 + 1) + "\n";
  testing::WriteFile(dir.File("s.txt"), lines);
  testing::WriteGzip(dir.File("s.txt.gz"), lines);
  for (const std::string name : {"s.txt", "s.txt.gz"}) {
    SCOPED_TRACE(name);
    const testing::IpsRun r = testing::RunIps(
        "data convert --format seqrec --input /dev/stdin --output " + dir.File("out_" + name),
        "cat " + dir.File(name) + " | ");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("RESULT data_convert format=seqrec protocol=seqrec lines=2000 "
                            "events=2000 users=20 items=500 "),
              std::string::npos)
        << r.output;
  }
}

TEST(DataCli, MovieLensItemMissingFromTheItemTableExitsOne) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("ratings.dat"), "1::10::5::1\n1::20::5::2\n1::77::5::3\n");
  testing::WriteFile(dir.File("movies.dat"), "10::A (1990)::Action\n20::B (1991)::Drama\n");
  const testing::IpsRun r = Ips("data convert --format movielens1m --input " + dir.path() +
                                " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir.File("ratings.dat") +
                          ":3: item: expected a movie id listed in movies.dat (got '77')"),
            std::string::npos)
      << r.output;
}

// `ips data convert --output` pointed at a checkpoint's ckpt-<step> exited 0 after replacing its
// MANIFEST (`ips eval` then failed "not a checkpoint manifest"). Refused, exit 1, before the
// input is read (no progress line, the malformed input is not reported), naming the path and
// what it looks like; the checkpoint is left as it was. A --output that is a file is refused the
// same way (it failed only after parsing, on "vocab.ips.tmp: cannot create").
TEST(DataCli, OutputThatIsACheckpointBundleOrFileIsRefusedUpFront) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("bad.txt"), "1 1\n1 x\n");
  ASSERT_EQ(::mkdir(dir.File("ckpt").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir.File("ckpt/ckpt-20").c_str(), 0755), 0);
  const std::string manifest = std::string("IPSMAN01") + '\x07' + std::string(3, '\0') + "proto";
  testing::WriteFile(dir.File("ckpt/ckpt-20/MANIFEST"), manifest);
  testing::WriteFile(dir.File("ckpt/LATEST"), "ckpt-20\n");
  ASSERT_EQ(::mkdir(dir.File("bundle").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir.File("bundle/v-1").c_str(), 0755), 0);
  testing::WriteFile(dir.File("bundle/v-1/MANIFEST"), "IPSBND01...");
  testing::WriteFile(dir.File("bundle/CURRENT"), "v-1\n");
  testing::WriteFile(dir.File("afile"), "keep");
  for (const auto& [out, what] : std::vector<std::pair<std::string, std::string>>{
           {dir.File("ckpt/ckpt-20"), "looks like a training checkpoint"},
           {dir.File("ckpt"), "is a training checkpoint root"},
           {dir.File("bundle/v-1"), "looks like a serving bundle version"},
           {dir.File("bundle"), "is a serving bundle root"},
           {dir.File("afile"), "exists and is not a directory"}}) {
    const testing::IpsRun r =
        Ips("data convert --format seqrec --input " + dir.File("bad.txt") + " --output " + out);
    EXPECT_EQ(r.exit_code, 1) << out << "\n" << r.output;
    EXPECT_NE(r.output.find("error: --output " + out + ": " + what), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("bad.txt:2"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("convert seqrec:"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find(".tmp"), std::string::npos) << r.output;
  }
  EXPECT_EQ(testing::ReadFile(dir.File("ckpt/ckpt-20/MANIFEST")), manifest);
  EXPECT_EQ(testing::ReadFile(dir.File("bundle/v-1/MANIFEST")), "IPSBND01...");
  EXPECT_EQ(testing::ReadFile(dir.File("afile")), "keep");
  EXPECT_NE(::access(dir.File("ckpt/ckpt-20/vocab.ips").c_str(), F_OK), 0);
}

// A leading UTF-8 BOM (Notepad's "UTF-8 with BOM") converts like the file without it.
TEST(DataCli, LeadingUtf8BomIsSkipped) {
  testing::TempDir dir;
  const std::string data = "1 1\n1 2\n1 3\n2 1\n2 4\n";
  testing::WriteFile(dir.File("bom.txt"), "\xef\xbb\xbf" + data);
  testing::WriteFile(dir.File("plain.txt"), data);
  const testing::IpsRun r = Ips("data convert --format seqrec --input " + dir.File("bom.txt") +
                                " --output " + dir.File("a"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("RESULT data_convert format=seqrec protocol=seqrec lines=5 events=5 "
                          "users=2 items=4 "),
            std::string::npos)
      << r.output;
  ASSERT_EQ(Ips("data convert --format seqrec --input " + dir.File("plain.txt") + " --output " +
                dir.File("b"))
                .exit_code,
            0);
  EXPECT_EQ(testing::ReadFile(dir.File("a/shard-00000-of-00001.ips")),
            testing::ReadFile(dir.File("b/shard-00000-of-00001.ips")));
}

// --seed -1 became 18446744073709551615 silently: a usage error like the other ranges.
TEST(DataCli, NegativeSeedIsAUsageError) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("s.txt"), "1 1\n1 2\n1 3\n2 1\n2 4\n");
  const testing::IpsRun r = Ips("data convert --format seqrec --input " + dir.File("s.txt") +
                                " --output " + dir.File("out") + " --seed -1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("error: --seed must be >= 0 (got -1)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("usage:"), std::string::npos) << r.output;
  EXPECT_NE(::access(dir.File("out").c_str(), F_OK), 0);
  const testing::IpsRun s = Ips("data synth --output " + dir.File("e.tsv") + " --seed -1");
  EXPECT_EQ(s.exit_code, 2) << s.output;
  EXPECT_NE(s.output.find("--seed must be >= 0, got -1"), std::string::npos) << s.output;
  EXPECT_NE(::access(dir.File("e.tsv").c_str(), F_OK), 0);
}

// QA: `ips data inspect` without DIR printed two usage lines ("usage: ips data inspect DIR", then
// FlagSet's "usage: ips data inspect [flags]"). One now, after an error line saying what is
// missing; --help prints the same usage (exit 0); two DIRs are refused the same way.
TEST(DataCli, InspectWithoutDirPrintsOneUsageLine) {
  const auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  testing::IpsRun r = Ips("data inspect");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(count(r.output, "usage:"), 1u) << r.output;
  EXPECT_NE(r.output.find("usage: ips data inspect DIR [flags]\n  --help"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("error: ips data inspect: missing DIR"), std::string::npos) << r.output;
  EXPECT_EQ(testing::LastLine(r.output),
            "RESULT data_inspect status=error exit=2 error=\"ips data inspect: missing DIR (a "
            "dataset directory written by `ips data convert`)\"")
      << r.output;
  r = Ips("data inspect a b");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(count(r.output, "usage:"), 1u) << r.output;
  EXPECT_NE(r.output.find("expected one DIR, got 2 arguments"), std::string::npos) << r.output;
  r = Ips("data inspect --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(count(r.output, "usage:"), 1u) << r.output;
}

// A failing conversion's progress line counts the lines it read (it said "0 lines").
TEST(DataCli, FailingConversionProgressShowsTheLinesRead) {
  testing::TempDir dir;
  testing::WriteFile(dir.File("bad.txt"), "1 1\n1 2\n1 3\n1 x\n2 1\n");
  const testing::IpsRun r = Ips("data convert --format seqrec --input " + dir.File("bad.txt") +
                                " --output " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("convert seqrec: 4 lines"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("convert seqrec: 0 lines"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(dir.File("bad.txt") + ":4: item: expected"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace ips
