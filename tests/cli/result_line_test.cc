// common/result_line.h: the quoting of free text in a RESULT line (the error message of a failing
// `ips` command), and the process state launch/main.cc reads to print exactly one RESULT line.
#include "common/result_line.h"

#include <gtest/gtest.h>

#include <string>

namespace ips {
namespace {

TEST(QuoteResultValue, EscapesQuotesBackslashesAndControlBytes) {
  EXPECT_EQ(QuoteResultValue(""), "\"\"");
  EXPECT_EQ(QuoteResultValue("plain words = fine"), "\"plain words = fine\"");
  EXPECT_EQ(QuoteResultValue("a \"b\" c\\d"), R"("a \"b\" c\\d")");
  EXPECT_EQ(QuoteResultValue("tab\tcr\rnl\n"), R"("tab\tcr\rnl\n")");
  constexpr char kControl[] =
      "nul\0bell\x07"
      "del\x7f";
  EXPECT_EQ(QuoteResultValue(std::string(kControl, sizeof(kControl) - 1)),
            R"("nul\x00bell\x07del\x7f")");
  // UTF-8 passes through (paths, messages).
  EXPECT_EQ(QuoteResultValue("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
}

TEST(QuoteResultValue, CutsLongValues) {
  const std::string v(kMaxQuotedResultValue + 5, 'x');
  EXPECT_EQ(QuoteResultValue(v), "\"" + std::string(kMaxQuotedResultValue, 'x') + "...\"");
  const std::string exact(kMaxQuotedResultValue, 'y');
  EXPECT_EQ(QuoteResultValue(exact), "\"" + exact + "\"");
}

TEST(ResultLine, AddQuotedKeepsTheValueOneToken) {
  ResultLine line("train");
  line.Add("status", "error").Add("exit", 1).AddQuoted("error", "x=1 \"y\"");
  EXPECT_EQ(line.str(), R"(RESULT train status=error exit=1 error="x=1 \"y\"")");
}

TEST(ResultLine, NotedErrorIsTheFirstLineOfTheLastMessage) {
  EXPECT_EQ(NotedResultError(), "");
  NoteResultError("first\nsecond line");
  EXPECT_EQ(NotedResultError(), "first");
  NoteResultError("NOT_FOUND: the last one");
  EXPECT_EQ(NotedResultError(), "NOT_FOUND: the last one");
}

TEST(ResultLine, PrintMarksTheProcessAsHavingPrintedItsLine) {
  EXPECT_TRUE(PrintsResultLine());  // every process, until mpirun's worker 0 is known
  EXPECT_FALSE(ResultLinePrinted());
  ResultLine line("x");
  (void)line.str();
  EXPECT_FALSE(ResultLinePrinted()) << "str() prints nothing";
  testing::internal::CaptureStdout();
  line.Add("k", 1).Print();
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "RESULT x k=1\n");
  EXPECT_TRUE(ResultLinePrinted());
  SetPrintsResultLine(false);
  EXPECT_FALSE(PrintsResultLine());
  SetPrintsResultLine(true);
}

}  // namespace
}  // namespace ips
