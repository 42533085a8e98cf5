#include "worker/record_parsers.h"

#include "gtest/gtest.h"
#include "worker/line_reader.h"

namespace ips {
namespace {

TEST(RecordParsers, MovieLens100kRating) {
  Event e;
  FieldError err;
  ASSERT_TRUE(ParseMovieLens100kRating("196\t242\t3\t881250949", &e, &err));
  EXPECT_EQ(e.user, 196u);
  EXPECT_EQ(e.item, 242u);
  EXPECT_EQ(e.timestamp, 881250949);
  EXPECT_EQ(e.action, Action::kRate);
  EXPECT_FALSE(ParseMovieLens100kRating("196\tx42\t3\t881250949", &e, &err));
  EXPECT_STREQ(err.field, "item");
  EXPECT_EQ(err.got, "x42");
  EXPECT_FALSE(ParseMovieLens100kRating("196\t242\t3", &e, &err));
  EXPECT_STREQ(err.field, "line");
  EXPECT_FALSE(ParseMovieLens100kRating("1\t2\t3\t4\t5", &e, &err));
  EXPECT_FALSE(ParseMovieLens100kRating("1\t2\t99\t4", &e, &err));
  EXPECT_STREQ(err.field, "rating");
  EXPECT_FALSE(ParseMovieLens100kRating("1\t2\t3\t-", &e, &err));
  EXPECT_STREQ(err.field, "timestamp");
  EXPECT_FALSE(ParseMovieLens100kRating("99999999999999999999\t2\t3\t4", &e, &err));
  EXPECT_STREQ(err.field, "user");
}

TEST(RecordParsers, MovieLens100kItemFirstGenre) {
  uint64_t item = 0, cat = 0;
  FieldError err;
  ASSERT_TRUE(ParseMovieLens100kItem(
      "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0", &item, &cat,
      &err));
  EXPECT_EQ(item, 1u);
  EXPECT_EQ(cat, 4u);  // first set flag is index 3 (Animation): 1 + 3
  ASSERT_TRUE(
      ParseMovieLens100kItem("7|t|d||u|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0", &item, &cat, &err));
  EXPECT_EQ(cat, 1u);  // no flag: genre 0 ("unknown"), like the peer
  EXPECT_FALSE(
      ParseMovieLens100kItem("7|t|d||u|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|2", &item, &cat, &err));
  EXPECT_STREQ(err.field, "genre_flag");
  EXPECT_FALSE(ParseMovieLens100kItem("7|t|d", &item, &cat, &err));
  EXPECT_STREQ(err.field, "line");
}

TEST(RecordParsers, MovieLens1m) {
  Event e;
  FieldError err;
  ASSERT_TRUE(ParseMovieLens1mRating("1::1193::5::978300760", &e, &err));
  EXPECT_EQ(e.user, 1u);
  EXPECT_EQ(e.item, 1193u);
  EXPECT_EQ(e.timestamp, 978300760);
  EXPECT_FALSE(ParseMovieLens1mRating("1::1193::5", &e, &err));
  EXPECT_FALSE(ParseMovieLens1mRating("1:1193:5:978300760", &e, &err));
  uint64_t item = 0, cat = 0;
  ASSERT_TRUE(
      ParseMovieLens1mMovie("1::Toy Story (1995)::Animation|Children's|Comedy", &item, &cat, &err));
  EXPECT_EQ(item, 1u);
  EXPECT_EQ(cat, 3u);
  ASSERT_TRUE(ParseMovieLens1mMovie("2::B\xe9la (1999)::Western", &item, &cat, &err));
  EXPECT_EQ(cat, 18u);
  EXPECT_FALSE(ParseMovieLens1mMovie("3::X (1999)::Cartoon", &item, &cat, &err));
  EXPECT_STREQ(err.field, "genres");
  EXPECT_EQ(err.got, "Cartoon");
}

TEST(RecordParsers, SeqRecTaobaoEvents) {
  Event e;
  FieldError err;
  ASSERT_TRUE(ParseSeqRecLine("12 34", &e, &err));
  EXPECT_EQ(e.user, 12u);
  EXPECT_EQ(e.item, 34u);
  EXPECT_FALSE(ParseSeqRecLine("12", &e, &err));
  EXPECT_FALSE(ParseSeqRecLine("12 -4", &e, &err));
  EXPECT_STREQ(err.field, "item");
  // Item 0 is the padding id of every reader (and of the peer's histories): refused.
  EXPECT_FALSE(ParseSeqRecLine("12 0", &e, &err));
  EXPECT_STREQ(err.field, "item");
  EXPECT_EQ(err.got, "0");
  EXPECT_STREQ(err.expected, "an unsigned 64-bit integer id >= 1 (0 is padding)");
  // Columns after the second are ignored (the peer reads `line.split()[:2]`); users are never
  // padded, so user 0 is accepted.
  ASSERT_TRUE(ParseSeqRecLine("0 34	5.0 x", &e, &err));
  EXPECT_EQ(e.user, 0u);
  EXPECT_EQ(e.item, 34u);

  ASSERT_TRUE(ParseTaobaoLine("1,2268318,2520377,pv,1511544070", &e, &err));
  EXPECT_EQ(e.category, 2520377u);
  EXPECT_EQ(e.action, Action::kView);
  ASSERT_TRUE(ParseTaobaoLine("1,2,3,buy,-5", &e, &err));
  EXPECT_EQ(e.action, Action::kBuy);
  EXPECT_EQ(e.timestamp, -5);
  EXPECT_FALSE(ParseTaobaoLine("1,2,3,click,5", &e, &err));
  EXPECT_STREQ(err.field, "behavior");

  Event in;
  in.user = 7;
  in.item = 8;
  in.category = 9;
  in.timestamp = -12;
  in.action = Action::kFav;
  in.domain = 3;
  std::string line;
  AppendEventLine(in, &line);
  EXPECT_EQ(line, "7\t8\t9\t-12\tfav\t3\n");
  line.pop_back();
  ASSERT_TRUE(ParseEventLine(line, &e, &err));
  EXPECT_EQ(e.user, 7u);
  EXPECT_EQ(e.item, 8u);
  EXPECT_EQ(e.category, 9u);
  EXPECT_EQ(e.timestamp, -12);
  EXPECT_EQ(e.action, Action::kFav);
  EXPECT_EQ(e.domain, 3);
  EXPECT_FALSE(ParseEventLine("0\t8\t9\t1\tpv\t0", &e, &err));
  EXPECT_STREQ(err.field, "user");
  EXPECT_FALSE(ParseEventLine("1\t8\t9\t1\tpv\t256", &e, &err));
  EXPECT_STREQ(err.field, "domain");
  EXPECT_FALSE(ParseEventLine("1\t8\t9\t1\tlike\t0", &e, &err));
  EXPECT_STREQ(err.field, "action");
}

TEST(RecordParsers, Dien) {
  DienRecord r;
  FieldError err;
  ASSERT_TRUE(
      ParseDienLine("1\tA1\tB7\tBooks\tB1\x02"
                    "B2\tBooks\x02Toys",
                    &r, &err));
  EXPECT_EQ(r.label, 1);
  EXPECT_EQ(r.user, StringId("A1"));
  EXPECT_EQ(r.item, StringId("B7"));
  ASSERT_EQ(r.hist_items.size(), 2u);
  EXPECT_EQ(r.hist_items[1], StringId("B2"));
  EXPECT_EQ(r.hist_cats[1], StringId("Toys"));
  EXPECT_NE(StringId(""), 0u);
  EXPECT_FALSE(
      ParseDienLine("1\tA1\tB7\tBooks\tB1\x02"
                    "B2\tBooks",
                    &r, &err));
  EXPECT_STREQ(err.field, "hist_cats");
  EXPECT_FALSE(ParseDienLine("2\tA1\tB7\tBooks\tB1\tBooks", &r, &err));
  EXPECT_STREQ(err.field, "label");
  EXPECT_FALSE(
      ParseDienLine("1\tA1\tB7\tBooks\tB1\x02\x02"
                    "B2\tBooks\x02Toys\x02Z",
                    &r, &err));
  EXPECT_STREQ(err.field, "hist_mids");
}

TEST(RecordParsers, FieldErrorMessageFormat) {
  EXPECT_EQ(FormatFieldError("u.data", 3, "item", "an id", "x'\x01"),
            "u.data:3: item: expected an id (got 'x\\x27\\x01')");
  const std::string long_got(500, 'a');
  EXPECT_LT(FormatFieldError("f", 1, "line", "x", long_got).size(), 120u);
}

}  // namespace
}  // namespace ips
