#include "common/flags.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace ips {
namespace {

FlagSet MakeFlags() {
  FlagSet f("data convert");
  f.Required("input", "input path");
  f.String("format", "events", "format");
  f.Int("shards", 1, "number of shards");
  f.Double("rate", 0.5, "a rate");
  f.Bool("fp16", "half precision");
  f.Repeated("set", "override");
  return f;
}

TEST(Flags, ParsesBothSpellingsDefaultsAndRepeats) {
  FlagSet f = MakeFlags();
  ASSERT_TRUE(
      f.Parse({"--input", "a.txt", "--shards=4", "--fp16", "--set", "x=1", "--set=y=2", "pos"})
          .ok());
  EXPECT_EQ(f.GetString("input"), "a.txt");
  EXPECT_EQ(f.GetString("format"), "events");
  EXPECT_EQ(f.GetInt("shards"), 4);
  EXPECT_DOUBLE_EQ(f.GetDouble("rate"), 0.5);
  EXPECT_TRUE(f.GetBool("fp16"));
  EXPECT_EQ(f.GetRepeated("set"), (std::vector<std::string>{"x=1", "y=2"}));
  EXPECT_EQ(f.positional(), (std::vector<std::string>{"pos"}));
  EXPECT_TRUE(f.WasSet("shards"));
  EXPECT_FALSE(f.WasSet("format"));
}

TEST(Flags, ErrorsNameTheFlag) {
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input", "a", "--shard", "3"});
    EXPECT_NE(s.message().find("unknown flag '--shard'"), std::string::npos) << s;
  }
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input", "a", "--shards", "three"});
    EXPECT_NE(s.message().find("--shards: expected an integer, got 'three'"), std::string::npos)
        << s;
  }
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--shards", "3"});
    EXPECT_NE(s.message().find("missing required flag --input"), std::string::npos) << s;
  }
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input"});
    EXPECT_NE(s.message().find("--input: missing value"), std::string::npos) << s;
  }
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input", "a", "-x"});
    EXPECT_NE(s.message().find("unknown flag '-x'"), std::string::npos) << s;
  }
}

// QA: `--shards 2 --shards 3` took 3 silently. A flag given twice with different values is
// refused; the same value twice, or a repeatable flag, is fine.
TEST(Flags, AFlagGivenTwiceWithDifferentValuesIsRefused) {
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input", "a", "--shards", "2", "--shards=3"});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("flag --shards given twice, as '2' and as '3': give it once"),
              std::string::npos)
        << s;
  }
  {
    FlagSet f = MakeFlags();
    Status s = f.Parse({"--input", "a", "--input", "b"});
    EXPECT_NE(s.message().find("flag --input given twice, as 'a' and as 'b'"), std::string::npos)
        << s;
  }
  FlagSet f = MakeFlags();
  ASSERT_TRUE(f.Parse({"--input", "a", "--shards", "2", "--shards", "2", "--fp16", "--fp16",
                       "--set", "x=1", "--set", "x=2"})
                  .ok());
  EXPECT_EQ(f.GetInt("shards"), 2);
  EXPECT_EQ(f.GetRepeated("set"), (std::vector<std::string>{"x=1", "x=2"}));
}

TEST(Flags, UsageListsEveryFlag) {
  FlagSet f = MakeFlags();
  const std::string u = f.Usage();
  for (const char* name : {"--input", "--format", "--shards", "--rate", "--fp16", "--set"})
    EXPECT_NE(u.find(name), std::string::npos) << name;
}

// The usage printed after a rejected value (out of range for the command, or a later bad flag)
// shows each flag's declared default, not the value given.
TEST(Flags, UsageShowsTheDeclaredDefaultNotTheGivenValue) {
  {
    FlagSet f = MakeFlags();
    ASSERT_TRUE(f.Parse({"--input", "a", "--shards", "-7", "--rate=9.5", "--format", "tsv"}).ok());
    EXPECT_EQ(f.GetInt("shards"), -7);  // a command rejects it and prints the usage
    const std::string u = f.Usage();
    EXPECT_NE(u.find("number of shards (default 1)"), std::string::npos) << u;
    EXPECT_NE(u.find("a rate (default 0.5)"), std::string::npos) << u;
    EXPECT_NE(u.find("format (default events)"), std::string::npos) << u;
    EXPECT_EQ(u.find("-7"), std::string::npos) << u;
    EXPECT_EQ(u.find("9.5"), std::string::npos) << u;
    EXPECT_EQ(u.find("tsv"), std::string::npos) << u;
  }
  {
    FlagSet f = MakeFlags();
    EXPECT_FALSE(f.Parse({"--input", "a", "--shards", "12", "--bogus"}).ok());
    const std::string u = f.Usage();
    EXPECT_NE(u.find("number of shards (default 1)"), std::string::npos) << u;
    EXPECT_EQ(u.find("12"), std::string::npos) << u;
  }
  {
    FlagSet f = MakeFlags();
    EXPECT_FALSE(f.Parse({"--input", "a", "--shards", "abc"}).ok());
    EXPECT_NE(f.Usage().find("number of shards (default 1)"), std::string::npos) << f.Usage();
  }
}

// A message about a number flag quotes its value as given ("--noise must be in [0, 1], got -1",
// not "-1.000000"): GetString gives the text of any flag, FormatNumber the shortest text of a
// number that reads back as the same double (for values checked after parsing).
TEST(Flags, NumbersAreQuotedAsGivenNotWithSixDecimals) {
  FlagSet f = MakeFlags();
  ASSERT_TRUE(f.Parse({"--input", "a", "--rate", "-1", "--shards", "7"}).ok());
  EXPECT_EQ(f.GetString("rate"), "-1");
  EXPECT_EQ(f.GetString("shards"), "7");
  EXPECT_EQ(FormatNumber(f.GetDouble("rate")), "-1");
  const std::vector<std::pair<double, std::string>> cases = {
      {-1, "-1"},
      {0, "0"},
      {0.1, "0.1"},
      {2.5, "2.5"},
      {1e-7, "1e-07"},
      {123456789, "123456789"},
      {0.123456789, "0.123456789"},
      {1.0 / 3, "0.3333333333333333"},
      {1e300, "1e+300"},
  };
  for (const auto& [v, want] : cases) EXPECT_EQ(FormatNumber(v), want);
  EXPECT_EQ(FormatNumber(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatNumber(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(FormatNumber(std::nan("")), "nan");
  // Every value reads back exactly.
  for (double v : {0.1 + 0.2, 1.0 / 7, -2.0e-310, 6.02214076e23})
    EXPECT_EQ(std::strtod(FormatNumber(v).c_str(), nullptr), v) << FormatNumber(v);
  // The usage shows a number default the same way (not rounded to 6 digits).
  FlagSet g("synth");
  g.Double("alpha", 0.123456789, "an exponent");
  EXPECT_NE(g.Usage().find("an exponent (default 0.123456789)"), std::string::npos) << g.Usage();
}

}  // namespace
}  // namespace ips
