#include "common/flags.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ips
