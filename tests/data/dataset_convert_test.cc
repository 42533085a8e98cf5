// Converter tests: one per input format on small fixtures written here (plain and gzip), the
// columns read back through Dataset/ShardView, malformed-line messages and bad-record accounting,
// sharding, corruption/truncation of converted shards, and the inputs/options refused because
// they would yield a dataset the readers reject, one that evaluates to NaN, one without training
// rows, or one with a user no negative can be drawn for; outputs that are not a dataset's
// directory (a checkpoint, a bundle, a directory on a kernel pseudo file system) are refused
// before anything is read or created.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "ps/checkpoint_io.h"
#include "tests/data/data_test_util.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

using testing::TempDir;
using testing::WriteFile;
using testing::WriteGzip;

std::string ItemLine(int id, int first_genre) {
  std::string s = std::to_string(id) + "|Movie " + std::to_string(id) + " (1995)|01-Jan-1995||u";
  for (int g = 0; g < 19; ++g)
    s += (g == first_genre || (first_genre >= 0 && g == 18)) ? "|1" : "|0";
  return s + "\n";
}

// 3 users. User 10: ts ties keep input order; user 20: 2 events (train only); user 30: 4 events.
const char kUData[] =
    "10\t1\t5\t100\n"
    "10\t2\t3\t200\n"
    "10\t3\t4\t200\n"
    "10\t4\t1\t50\n"
    "20\t2\t2\t10\n"
    "20\t5\t2\t5\n"
    "30\t5\t1\t1\n"
    "30\t1\t1\t2\n"
    "30\t3\t1\t3\n"
    "30\t2\t1\t4\n";

std::string UItem() {
  return ItemLine(1, 3) + ItemLine(2, -1) + ItemLine(3, 0) + ItemLine(4, 7) + ItemLine(5, 18);
}

ConvertOptions Options(const std::string& format, const std::string& in, const std::string& out) {
  ConvertOptions o;
  o.format = format;
  o.input = in;
  o.output = out;
  return o;
}

std::unique_ptr<Dataset> OpenOrDie(const std::string& dir) {
  auto d = Dataset::Open(dir);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? std::move(*d) : nullptr;
}

template <typename T>
std::vector<T> Vec(ColumnView<T> v) {
  return std::vector<T>(v.begin(), v.end());
}

TEST(ConvertMovieLens100k, PlainAndGzipGiveIdenticalShardsAndExpectedColumns) {
  TempDir dir;
  ASSERT_EQ(::mkdir(dir.File("plain").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir.File("gz").c_str(), 0755), 0);
  WriteFile(dir.File("plain/u.data"), kUData);
  WriteFile(dir.File("plain/u.item"), UItem());
  WriteGzip(dir.File("gz/u.data.gz"), kUData);
  WriteGzip(dir.File("gz/u.item.gz"), UItem());
  auto a = ConvertDataset(Options("movielens100k", dir.File("plain"), dir.File("out_a")));
  ASSERT_TRUE(a.ok()) << a.status();
  // A u.data path works too (u.item.gz found beside it).
  auto b = ConvertDataset(Options("movielens100k", dir.File("gz/u.data.gz"), dir.File("out_b")));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(testing::ReadFile(dir.File("out_a/shard-00000-of-00001.ips")),
            testing::ReadFile(dir.File("out_b/shard-00000-of-00001.ips")));
  EXPECT_EQ(a->input_lines, 10u);
  EXPECT_EQ(a->events, 10u);
  EXPECT_EQ(a->users, 3u);
  EXPECT_EQ(a->items, 5u);
  EXPECT_EQ(a->categories, 4u);  // 1 + first genre: 4, 1 (none), 1, 8, 19
  EXPECT_EQ(a->protocol, "seqrec");
  EXPECT_EQ(a->train_events, 2u + 2u + 2u);

  auto d = OpenOrDie(dir.File("out_a"));
  ASSERT_NE(d, nullptr);
  const ShardView& s = d->shard(0);
  EXPECT_EQ(Vec(s.rec_user), (std::vector<uint64_t>{10, 20, 30}));
  EXPECT_EQ(Vec(s.rec_offset), (std::vector<uint64_t>{0, 4, 6, 10}));
  EXPECT_EQ(Vec(s.rec_train_len), (std::vector<uint32_t>{2, 2, 2}));
  // Items keep their ids (1..5 dense already). User 10 sorted by ts, ties in input order.
  EXPECT_EQ(Vec(s.ev_item), (std::vector<uint32_t>{4, 1, 2, 3, 5, 2, 5, 1, 3, 2}));
  EXPECT_EQ(Vec(s.ev_ts), (std::vector<int64_t>{50, 100, 200, 200, 5, 10, 1, 2, 3, 4}));
  // Raw categories 1+genre: item1 -> 4, item2 -> 1, item3 -> 1, item4 -> 8, item5 -> 19; dense
  // over {1,4,8,19} -> 1,2,3,4.
  EXPECT_EQ(Vec(d->item_cat()), (std::vector<uint32_t>{0, 2, 1, 1, 3, 4}));
  EXPECT_EQ(Vec(s.ev_cat), (std::vector<uint32_t>{3, 2, 1, 1, 4, 1, 4, 2, 1, 1}));
  EXPECT_EQ(Vec(s.ev_action), std::vector<uint8_t>(10, static_cast<uint8_t>(Action::kRate)));
  EXPECT_EQ(Vec(s.ev_domain), std::vector<uint8_t>(10, 0));
  // seqrec: positions t >= 1 of each train sequence.
  EXPECT_EQ(Vec(s.train_rec), (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(Vec(s.train_pos), (std::vector<uint32_t>{1, 1, 1}));
  EXPECT_EQ(Vec(s.train_label), (std::vector<uint8_t>{1, 1, 1}));
  // Eval: users with >= 3 events; position = last event; candidate 0 = the test item.
  EXPECT_EQ(Vec(s.eval_rec), (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(Vec(s.eval_pos), (std::vector<uint32_t>{3, 3}));
  ASSERT_EQ(s.eval_cand.size, 2u * 101);
  EXPECT_EQ(s.eval_cand[0], 3u);
  EXPECT_EQ(s.eval_cand[101], 2u);
  // User 10 saw every item but 5, user 30 every item but 4.
  for (int k = 1; k < 101; ++k) {
    EXPECT_EQ(s.eval_cand[k], 5u);
    EXPECT_EQ(s.eval_cand[101 + k], 4u);
  }
  EXPECT_EQ(Vec(s.seen_offset), (std::vector<uint64_t>{0, 4, 6, 10}));
  EXPECT_EQ(Vec(s.seen_item), (std::vector<uint32_t>{1, 2, 3, 4, 2, 5, 1, 2, 3, 5}));
  EXPECT_EQ(a->history_histogram[1], 3u);
}

TEST(ConvertMovieLens1m, RatingsAndMoviesLatin1) {
  TempDir dir;
  // User 2's two ratings give the training row; movie 40 is one user 1 never rated (its
  // evaluation negatives).
  WriteGzip(dir.File("ratings.users_0001-0002.dat.gz"),
            "1::20::5::978300760\n1::10::3::978300761\n1::30::4::978300700\n2::10::4::1\n"
            "2::40::3::2\n");
  WriteGzip(dir.File("movies.dat.gz"),
            "10::Caf\xe9 (1995)::Comedy|Drama\n20::X (1999)::Western\n30::Y::Action\n"
            "40::Z (2000)::Comedy\n");
  auto m = ConvertDataset(Options("movielens1m", dir.path(), dir.File("out")));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->events, 5u);
  EXPECT_EQ(m->users, 2u);
  EXPECT_EQ(m->items, 4u);
  EXPECT_EQ(m->categories, 3u);
  EXPECT_EQ(m->train_examples, 1u);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  // Raw ids 10, 20, 30, 40 -> dense 1, 2, 3, 4; user 1 in time order: 30, 20, 10.
  EXPECT_EQ(Vec(d->item_raw()), (std::vector<uint64_t>{0, 10, 20, 30, 40}));
  EXPECT_EQ(Vec(d->shard(0).ev_item), (std::vector<uint32_t>{3, 2, 1, 1, 4}));
  // Categories: Comedy=5, Western=18, Action=1 -> dense over {1,5,18}.
  EXPECT_EQ(Vec(d->item_cat()), (std::vector<uint32_t>{0, 2, 3, 1, 2}));
}

TEST(ConvertSeqRec, GzipLineOrderIsTimeOrderAndOneCategory) {
  TempDir dir;
  // User 3's item 4 is one evaluated user 1 never interacted with (its negatives).
  WriteGzip(dir.File("Video.txt.gz"), "1 3\n2 1\n1 1\n1 2\n2 3\n3 4\n");
  auto m = ConvertDataset(Options("seqrec", dir.File("Video.txt.gz"), dir.File("out")));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->categories, 1u);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(Vec(d->shard(0).ev_item), (std::vector<uint32_t>{3, 1, 2, 1, 3, 4}));
  EXPECT_EQ(Vec(d->shard(0).ev_ts), (std::vector<int64_t>{0, 2, 3, 1, 4, 5}));
  EXPECT_EQ(Vec(d->shard(0).ev_cat), std::vector<uint32_t>(6, 1));
}

TEST(ConvertTaobao, CtrProtocolAllPositionsDenseCategories) {
  TempDir dir;
  WriteFile(dir.File("ub.csv"),
            "7,500,90,pv,30\n7,501,91,buy,10\n7,500,90,cart,20\n7,502,90,fav,40\n7,503,92,pv,"
            "50\n8,504,91,pv,1\n");
  auto m = ConvertDataset(Options("taobao", dir.File("ub.csv"), dir.File("out")));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->protocol, "ctr");
  EXPECT_EQ(m->train_negatives, "popularity");
  EXPECT_EQ(m->users, 2u);
  EXPECT_EQ(m->items, 5u);  // 504 (user 8's, category 91) is the one user 7 never interacted with
  EXPECT_EQ(m->categories, 3u);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  const ShardView& s = d->shard(0);
  EXPECT_EQ(Vec(s.ev_item), (std::vector<uint32_t>{2, 1, 1, 3, 4, 5}));
  EXPECT_EQ(Vec(s.ev_cat), (std::vector<uint32_t>{2, 1, 1, 1, 3, 2}));
  EXPECT_EQ(Vec(s.ev_action),
            (std::vector<uint8_t>{
                static_cast<uint8_t>(Action::kBuy), static_cast<uint8_t>(Action::kCart),
                static_cast<uint8_t>(Action::kView), static_cast<uint8_t>(Action::kFav),
                static_cast<uint8_t>(Action::kView), static_cast<uint8_t>(Action::kView)}));
  // User 7 (5 events): train = first 3, positives at t = 1, 2. User 8 (1 event): none.
  EXPECT_EQ(Vec(s.train_pos), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(m->train_examples_per_epoch, 4u);
  // Popularity over train events: item 2 (x1), item 1 (x2; user 7 has 1 twice in train).
  auto counts = d->sampler();
  EXPECT_TRUE(counts.popularity());
}

TEST(ConvertDien, GivenExamplesWithLabelsAndHistories) {
  TempDir dir;
  WriteFile(dir.File("train"),
            "1\tU1\tM3\tC1\tM1\x02M2\tC1\x02"
            "C2\n"
            "0\tU1\tM9\tC2\tM1\x02M2\tC1\x02"
            "C2\n"
            "1\tU2\tM1\tC1\tM2\tC2\n");
  WriteGzip(dir.File("test.gz"), "1\tU3\tM2\tC2\tM3\tC1\n");
  ConvertOptions o = Options("dien", dir.File("train"), dir.File("out"));
  o.eval_input = dir.File("test.gz");
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->protocol, "given");
  EXPECT_EQ(m->events, 4u);
  EXPECT_EQ(m->users, 3u);
  EXPECT_EQ(m->items, 4u);
  EXPECT_EQ(m->categories, 2u);
  EXPECT_EQ(m->train_examples, 3u);
  EXPECT_EQ(m->train_examples_per_epoch, 3u);
  EXPECT_EQ(m->eval_examples, 1u);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  ReaderOptions ro;
  ro.batch_size = 8;
  ro.max_len = 3;
  ro.shuffle = false;
  TrainReader r(d.get(), {}, ro);
  Batch b;
  ASSERT_TRUE(r.Next(&b));
  ASSERT_EQ(b.size, 3);
  std::map<uint64_t, std::vector<uint64_t>> raw_rows;  // target raw -> [label, hist raw...]
  for (int i = 0; i < b.size; ++i) {
    std::vector<uint64_t> row = {static_cast<uint64_t>(b.label[i])};
    for (int t = 0; t < 3; ++t) row.push_back(d->item_raw()[b.hist_item[i * 3 + t]]);
    raw_rows[d->item_raw()[b.item[i]]] = row;
    EXPECT_EQ(b.length[i], b.hist_item[i * 3] == 0 ? (b.hist_item[i * 3 + 1] == 0 ? 1 : 2) : 3);
  }
  EXPECT_EQ(raw_rows[StringId("M3")],
            (std::vector<uint64_t>{1, 0, StringId("M1"), StringId("M2")}));
  EXPECT_EQ(raw_rows[StringId("M9")],
            (std::vector<uint64_t>{0, 0, StringId("M1"), StringId("M2")}));
  EXPECT_EQ(raw_rows[StringId("M1")], (std::vector<uint64_t>{1, 0, 0, StringId("M2")}));
  EXPECT_FALSE(r.Next(&b));
  EvalReader e(d.get(), {}, ro);
  ASSERT_TRUE(e.Next(&b));
  ASSERT_EQ(b.size, 1);
  EXPECT_EQ(d->item_raw()[b.item[0]], StringId("M2"));
  EXPECT_EQ(b.label[0], 1.0f);
  EXPECT_EQ(b.user[0], StringId("U3"));
}

TEST(ConvertEvents, CanonicalTsvRoundTripsThroughTheReader) {
  TempDir dir;
  std::string tsv;
  std::vector<Event> events;
  for (int i = 0; i < 12; ++i) {
    Event e;
    e.user = 100 + i % 2;
    e.item = 1000 + i;
    e.category = 7 + i % 3;
    e.timestamp = 1000 - i;  // reverse time order in the file
    e.action = static_cast<Action>(i % 6);
    e.domain = static_cast<uint8_t>(i % 4);
    AppendEventLine(e, &tsv);
    events.push_back(e);
  }
  WriteGzip(dir.File("events.tsv.gz"), tsv);
  ConvertOptions o = Options("events", dir.File("events.tsv.gz"), dir.File("out"));
  o.protocol = "seqrec";
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  const ShardView& s = d->shard(0);
  ASSERT_EQ(s.ev_item.size, 12u);
  for (size_t r = 0; r < 2; ++r) {
    for (uint64_t k = s.rec_offset[r]; k < s.rec_offset[r + 1]; ++k) {
      // Find the input event by its raw item id and compare every column.
      const uint64_t raw = d->item_raw()[s.ev_item[k]];
      const Event& e = events[raw - 1000];
      EXPECT_EQ(e.user, s.rec_user[r]);
      EXPECT_EQ(e.timestamp, s.ev_ts[k]);
      EXPECT_EQ(static_cast<uint8_t>(e.action), s.ev_action[k]);
      EXPECT_EQ(e.domain, s.ev_domain[k]);
      EXPECT_EQ(s.ev_cat[k], e.category - 6);  // raw 7, 8, 9 -> dense 1, 2, 3
      if (k > s.rec_offset[r]) {
        EXPECT_LT(s.ev_ts[k - 1], s.ev_ts[k]);
      }
    }
  }
}

TEST(ConvertErrors, MalformedLineNamesFileLineFieldAndValue) {
  TempDir dir;
  WriteFile(dir.File("u.data"), "1\t1\t5\t100\n1\t2\t5\t100\n1\tabc\t5\t100\n");
  WriteFile(dir.File("u.item"), UItem());
  auto m = ConvertDataset(Options("movielens100k", dir.File("u.data"), dir.File("out")));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(),
            dir.File("u.data") + ":3: item: expected an unsigned 64-bit integer id (got 'abc')");

  WriteFile(dir.File("tb.csv"), "1,2,3,pv,4\n1,2,3,pv\n");
  m = ConvertDataset(Options("taobao", dir.File("tb.csv"), dir.File("out")));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(),
            dir.File("tb.csv") +
                ":2: line: expected 5 comma-separated fields: user,item,category,behavior,"
                "timestamp (got '1,2,3,pv')");
  // A bad u.item line is always fatal and named.
  WriteFile(dir.File("u.item"), "1|x|y\n");
  m = ConvertDataset(Options("movielens100k", dir.File("u.data"), dir.File("out")));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(dir.File("u.item") + ":1: line: expected 24"),
            std::string::npos)
      << m.status();
  EXPECT_EQ(ConvertDataset(Options("nope", "x", dir.File("out"))).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ConvertDataset(Options("seqrec", dir.File("missing"), dir.File("out"))).status().code(),
            StatusCode::kNotFound);
}

TEST(ConvertErrors, MaxBadRecordsSkipsCountsAndAccountsForEveryLine) {
  TempDir dir;
  // User 1 keeps 3 events (>= 3, so there is an evaluation list), user 4 two (the training
  // row), and item 5 is one user 1 never interacted with (its negatives; see ConvertRefuses).
  WriteFile(dir.File("s.txt"), "1 1\n1 x\n\n1 2\n2 1\n2 -\n3 3\n1 4\n4 5\n4 1\n");
  ConvertOptions o = Options("seqrec", dir.File("s.txt"), dir.File("out"));
  o.max_bad_records = 2;
  o.min_user_events = 2;
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->input_lines, 10u);
  EXPECT_EQ(m->bad_records, 2u);
  EXPECT_EQ(m->filtered.at("blank_line"), 1u);
  EXPECT_EQ(m->filtered.at("user_below_min_events"), 2u);  // users 2 and 3 have one event each
  EXPECT_EQ(m->events, 5u);
  EXPECT_EQ(m->items, 4u);  // item 3 belonged only to a dropped user
  EXPECT_EQ(m->users, 2u);
  EXPECT_EQ(m->train_examples, 1u);
  EXPECT_EQ(m->events + m->bad_records + 1 + 2, m->input_lines);
  // The manifest round-trips the accounting.
  auto back = Manifest::ReadFrom(dir.File("out"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToText(), m->ToText());

  o.max_bad_records = 1;
  auto fail = ConvertDataset(o);
  ASSERT_FALSE(fail.ok());
  EXPECT_EQ(fail.status().message(),
            dir.File("s.txt") +
                ":6: item: expected an unsigned 64-bit integer id >= 1 (0 is padding) (got '-') "
                "[more than --max_bad_records=1 bad records]");
}

TEST(ConvertShards, UsersAreDisjointAcrossShardsAndCountsAddUp) {
  TempDir dir;
  std::string text;
  for (int u = 1; u <= 200; ++u)
    for (int k = 0; k < 1 + u % 7; ++k)
      text += std::to_string(u) + " " + std::to_string(1 + (u * 31 + k * 17) % 97) + "\n";
  WriteFile(dir.File("s.txt"), text);
  ConvertOptions o = Options("seqrec", dir.File("s.txt"), dir.File("one"));
  auto one = ConvertDataset(o);
  ASSERT_TRUE(one.ok()) << one.status();
  o.output = dir.File("four");
  o.shards = 4;
  auto four = ConvertDataset(o);
  ASSERT_TRUE(four.ok()) << four.status();
  std::set<uint64_t> users;
  uint64_t events = 0, train = 0, eval = 0;
  auto d = OpenOrDie(dir.File("four"));
  ASSERT_NE(d, nullptr);
  for (int s = 0; s < 4; ++s) {
    EXPECT_GT(d->shard(s).rec_user.size, 10u);  // hashing spreads users
    for (uint64_t u : d->shard(s).rec_user) EXPECT_TRUE(users.insert(u).second) << u;
    events += d->shard(s).ev_item.size;
    train += d->shard(s).train_rec.size;
    eval += d->shard(s).eval_rec.size;
  }
  EXPECT_EQ(users.size(), 200u);
  EXPECT_EQ(events, one->events);
  EXPECT_EQ(train, one->train_examples);
  EXPECT_EQ(eval, one->eval_examples);
  EXPECT_EQ(four->eval_examples, one->eval_examples);
}

TEST(ConvertCorruption, FlippedShardByteAndTruncationAreDataLossNamingShardAndBlock) {
  TempDir dir;
  WriteFile(dir.File("u.data"), kUData);
  WriteFile(dir.File("u.item"), UItem());
  ASSERT_TRUE(ConvertDataset(Options("movielens100k", dir.path(), dir.File("out"))).ok());
  const std::string shard = dir.File("out/shard-00000-of-00001.ips");
  const std::string good = testing::ReadFile(shard);
  ASSERT_NE(OpenOrDie(dir.File("out")), nullptr);
  // Block 0 (rec_user) starts at offset 64.
  std::string bad = good;
  bad[64 + 3] ^= 0x10;
  WriteFile(shard, bad);
  auto d = Dataset::Open(dir.File("out"));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(d.status().message().find(shard + ": block 0 (rec_user): CRC mismatch (stored 0x"),
            std::string::npos)
      << d.status();
  WriteFile(shard, good.substr(0, good.size() - 100));
  d = Dataset::Open(dir.File("out"));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(
      d.status().message().find(shard + ": truncated: expected " + std::to_string(good.size()) +
                                " bytes, found " + std::to_string(good.size() - 100)),
      std::string::npos)
      << d.status();
  // A manifest edited by hand is rejected by its CRC.
  WriteFile(shard, good);
  std::string manifest = testing::ReadFile(dir.File("out/MANIFEST"));
  manifest.replace(manifest.find("users=3"), 7, "users=4");
  WriteFile(dir.File("out/MANIFEST"), manifest);
  d = Dataset::Open(dir.File("out"));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("MANIFEST: CRC mismatch"), std::string::npos) << d.status();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The names in `dir` (without . and ..), sorted.
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Expects an INVALID_ARGUMENT whose message contains every one of `parts`.
void ExpectInvalid(const StatusOr<Manifest>& m, const std::vector<std::string>& parts) {
  ASSERT_FALSE(m.ok()) << "converted, expected an error containing '" << parts[0] << "'";
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << m.status();
  for (const std::string& p : parts)
    EXPECT_NE(m.status().message().find(p), std::string::npos) << m.status() << "\nmissing: " << p;
}

// A directory holding the ratings in several ratings*.dat[.gz] pieces (shared/data's ML-1M is
// ratings.users_0001-2999.dat.gz; the rest of the users would come as more pieces) is one input:
// every piece is read, in sorted name order, as if concatenated. Only the first was read (the
// others silently dropped).
TEST(ConvertMovieLens1m, EveryRatingsPieceInADirectoryIsRead) {
  TempDir dir;
  const std::string ratings = "1::20::5::3\n1::10::3::4\n1::30::4::1\n2::10::4::1\n2::40::3::2\n";
  const std::string movies = "10::A::Comedy\n20::B::Western\n30::C::Action\n40::D::Comedy\n";
  ASSERT_EQ(::mkdir(dir.File("one").c_str(), 0755), 0);
  WriteFile(dir.File("one/ratings.dat"), ratings);
  WriteFile(dir.File("one/movies.dat"), movies);
  auto whole = ConvertDataset(Options("movielens1m", dir.File("one"), dir.File("one_out")));
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->events, 5u);

  // Cut inside user 1 (as `head`/`tail` would); a plain and a gzip piece, names sorting in file
  // order: the same dataset as the whole file.
  ASSERT_EQ(::mkdir(dir.File("split").c_str(), 0755), 0);
  WriteFile(dir.File("split/ratings.users_0001-0001.dat"), "1::20::5::3\n1::10::3::4\n");
  WriteGzip(dir.File("split/ratings.users_0001-0002.dat.gz"),
            "1::30::4::1\n2::10::4::1\n2::40::3::2\n");
  WriteGzip(dir.File("split/movies.dat.gz"), movies);
  for (bool with_others : {false, true}) {
    SCOPED_TRACE(with_others ? "with other files" : "only the pieces");
    if (with_others) {
      // A piece present both plain and gzipped is read once (the plain one), and files that are
      // not ratings*.dat[.gz] are left alone.
      WriteGzip(dir.File("split/ratings.users_0001-0001.dat.gz"), "1::20::5::3\n1::10::3::4\n");
      WriteFile(dir.File("split/ratings.dat.bak"), "not::a::rating\n");
      WriteFile(dir.File("split/ratings.csv"), "1,2,3\n");
    }
    auto split = ConvertDataset(Options("movielens1m", dir.File("split"), dir.File("split_out")));
    ASSERT_TRUE(split.ok()) << split.status();
    EXPECT_EQ(split->input_lines, 5u);
    EXPECT_EQ(split->events, 5u);
    EXPECT_EQ(split->users, 2u);
    EXPECT_EQ(testing::ReadFile(dir.File("split_out/shard-00000-of-00001.ips")),
              testing::ReadFile(dir.File("one_out/shard-00000-of-00001.ips")));
    EXPECT_EQ(testing::ReadFile(dir.File("split_out/vocab.ips")),
              testing::ReadFile(dir.File("one_out/vocab.ips")));
  }

  // A bad line names its own piece and its line in that piece.
  WriteFile(dir.File("split/ratings.users_0001-0001.dat"),
            "1::20::5::3\n1::10::3::4\n1::x::4::1\n");
  ExpectInvalid(ConvertDataset(Options("movielens1m", dir.File("split"), dir.File("split_out"))),
                {dir.File("split/ratings.users_0001-0001.dat") + ":3: item: expected"});
  WriteFile(dir.File("split/ratings.users_0001-0001.dat"), "1::20::5::3\n1::10::3::4\n");
  WriteGzip(dir.File("split/ratings.users_0001-0002.dat.gz"),
            "1::30::4::1\n2::10::4::1\n2::77::3::2\n");
  ExpectInvalid(ConvertDataset(Options("movielens1m", dir.File("split"), dir.File("split_out"))),
                {dir.File("split/ratings.users_0001-0002.dat.gz") +
                 ":3: item: expected a movie id listed in movies.dat (got '77')"});

  // Overlapping pieces (the complete ratings.dat beside a piece of it) would duplicate events:
  // a rating already read from an earlier file is a bad line naming both files.
  ASSERT_EQ(::mkdir(dir.File("overlap").c_str(), 0755), 0);
  WriteFile(dir.File("overlap/ratings.dat"), ratings);
  WriteFile(dir.File("overlap/ratings.users_0002-0002.dat"), "2::10::4::1\n2::40::3::2\n");
  WriteFile(dir.File("overlap/movies.dat"), movies);
  ConvertOptions o = Options("movielens1m", dir.File("overlap"), dir.File("overlap_out"));
  ExpectInvalid(ConvertDataset(o),
                {dir.File("overlap/ratings.users_0002-0002.dat") +
                 ":1: item: expected a movie user 2 did not rate in " +
                 dir.File("overlap/ratings.dat") + " (the ratings files overlap) (got '10')"});
  // Skipped and counted under --max_bad_records, like any bad line: the events of one copy.
  o.max_bad_records = 2;
  auto skipped = ConvertDataset(o);
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  EXPECT_EQ(skipped->input_lines, 7u);
  EXPECT_EQ(skipped->bad_records, 2u);
  EXPECT_EQ(skipped->events, 5u);

  // No ratings file at all: NOT_FOUND naming the directory.
  ASSERT_EQ(::mkdir(dir.File("none").c_str(), 0755), 0);
  WriteFile(dir.File("none/movies.dat"), movies);
  auto none = ConvertDataset(Options("movielens1m", dir.File("none"), dir.File("none_out")));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound) << none.status();
  EXPECT_EQ(none.status().message().rfind(dir.File("none") + ": no MovieLens-1M ratings file", 0),
            0u)
      << none.status();
}

TEST(ConvertRefuses, EmptyInputNamesTheFileAndWritesNothing) {
  TempDir dir;
  WriteFile(dir.File("empty.txt"), "");
  ExpectInvalid(ConvertDataset(Options("seqrec", dir.File("empty.txt"), dir.File("out"))),
                {dir.File("empty.txt") + ": no usable events", "0 lines"});
  // Blank lines only, and every line bad under --max_bad_records: still nothing usable.
  WriteFile(dir.File("blank.txt"), "\n  \n\t\n");
  ExpectInvalid(ConvertDataset(Options("seqrec", dir.File("blank.txt"), dir.File("out"))),
                {dir.File("blank.txt") + ": no usable events", "3 lines", "3 filtered"});
  WriteFile(dir.File("bad.csv"), "1,2,3,like,4\nx\n");
  ConvertOptions o = Options("taobao", dir.File("bad.csv"), dir.File("out"));
  o.max_bad_records = 5;
  ExpectInvalid(ConvertDataset(o), {dir.File("bad.csv") + ": no usable events", "2 bad"});
  // MovieLens: the ratings file is named (not the directory).
  ASSERT_EQ(::mkdir(dir.File("ml").c_str(), 0755), 0);
  WriteFile(dir.File("ml/u.data"), "");
  WriteFile(dir.File("ml/u.item"), UItem());
  ExpectInvalid(ConvertDataset(Options("movielens100k", dir.File("ml"), dir.File("out"))),
                {dir.File("ml/u.data") + ": no usable events"});
  // DIEN: an empty training file, and an empty --eval_input.
  WriteFile(dir.File("train"), "");
  WriteFile(dir.File("test"), "1\tU3\tM2\tC2\tM3\tC1\n");
  o = Options("dien", dir.File("train"), dir.File("out"));
  o.eval_input = dir.File("test");
  ExpectInvalid(ConvertDataset(o), {dir.File("train") + ": no usable examples"});
  WriteFile(dir.File("train"), "1\tU1\tM1\tC1\tM2\tC2\n");
  WriteFile(dir.File("test"), "\n");
  ExpectInvalid(ConvertDataset(o), {dir.File("test") + ": no usable examples"});
  EXPECT_FALSE(Exists(dir.File("out"))) << "a refused conversion must not create the output";
}

// Users 1 (3 events), 2 and 3 (4 events each; both have items they never interacted with).
const char kThreeUsers[] = "1 1\n1 2\n1 3\n2 1\n2 2\n2 3\n2 4\n3 5\n3 4\n3 6\n3 7\n";

TEST(ConvertRefuses, MinUserEventsAboveEveryUserAndNegative) {
  TempDir dir;
  WriteFile(dir.File("s.txt"), kThreeUsers);
  ConvertOptions o = Options("seqrec", dir.File("s.txt"), dir.File("out"));
  o.min_user_events = 5;
  ExpectInvalid(ConvertDataset(o),
                {dir.File("s.txt") + ": no user has >= 5 events (the most any user has is 4)",
                 "--min_user_events"});
  o.min_user_events = -1;
  ExpectInvalid(ConvertDataset(o), {"--min_user_events must be >= 0 (got -1)"});
  EXPECT_FALSE(Exists(dir.File("out")));
  o.min_user_events = 4;
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->users, 2u);
  EXPECT_EQ(m->filtered.at("user_below_min_events"), 3u);
  ASSERT_NE(OpenOrDie(dir.File("out")), nullptr);
}

TEST(ConvertRefuses, EvalUsersAndNegativesThatLeaveNothingToRank) {
  TempDir dir;
  WriteFile(dir.File("s.txt"), kThreeUsers);
  for (const char* protocol : {"seqrec", "ctr"}) {
    SCOPED_TRACE(protocol);
    const std::string out = dir.File(std::string("out_") + protocol);
    ConvertOptions o = Options("seqrec", dir.File("s.txt"), out);
    o.protocol = protocol;
    o.eval_users = 0;
    ExpectInvalid(ConvertDataset(o), {"--eval_users must be >= 1", protocol, "(got 0)"});
    o.eval_users = 10000;
    o.eval_negatives = 0;
    ExpectInvalid(ConvertDataset(o), {"--eval_negatives must be in 1..100000", protocol});
    EXPECT_FALSE(Exists(out));
    o.eval_negatives = 1;
    o.eval_users = 1;  // a seeded sample of one of the three eligible users
    auto m = ConvertDataset(o);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->eval_examples, 1u);
    EXPECT_EQ(m->eval_candidates, 2u);
  }
  // DIEN files carry their own evaluation rows: neither flag is used, so 0 is accepted.
  WriteFile(dir.File("train"), "1\tU1\tM1\tC1\tM2\tC2\n");
  WriteFile(dir.File("test"), "1\tU3\tM2\tC2\tM1\tC1\n");
  ConvertOptions o = Options("dien", dir.File("train"), dir.File("dien"));
  o.eval_input = dir.File("test");
  o.eval_users = 0;
  o.eval_negatives = 0;
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->eval_examples, 1u);
}

TEST(ConvertRefuses, NoUserWithThreeEventsLeavesNothingToEvaluate) {
  TempDir dir;
  WriteFile(dir.File("s.txt"), "1 1\n1 2\n2 1\n");
  ExpectInvalid(ConvertDataset(Options("seqrec", dir.File("s.txt"), dir.File("out"))),
                {dir.File("s.txt") +
                 ": no user has >= 3 events (the most any user has is 2): the leave-one-out "
                 "split leaves nothing to evaluate"});
  EXPECT_FALSE(Exists(dir.File("out")));
}

TEST(ConvertRefuses, NoTrainingRowsNamesTheFileAndWritesNothing) {
  TempDir dir;
  // Users 1 and 2 (3 events) keep one training event each, user 3 has one event: nothing for
  // a training row (a position t >= 1 of a train sequence), though evaluation has two lists.
  WriteFile(dir.File("s.txt"), "1 1\n1 2\n1 3\n2 2\n2 3\n2 4\n3 5\n");
  for (const char* protocol : {"seqrec", "ctr"}) {
    SCOPED_TRACE(protocol);
    ConvertOptions o = Options("seqrec", dir.File("s.txt"), dir.File("out"));
    o.protocol = protocol;
    ExpectInvalid(ConvertDataset(o),
                  {dir.File("s.txt") +
                       ": no training rows: no user has >= 2 training events (the most any user "
                       "keeps is 1; the leave-one-out split holds out the last 2 events of users "
                       "with >= 3",
                   "the input needs a user with 2 events, or with >= 4"});
  }
  EXPECT_FALSE(Exists(dir.File("out")));
  // A user with 2 events keeps both for training: one row. --min_user_events 3 drops it, and the
  // message says so.
  WriteFile(dir.File("two.txt"), "1 1\n1 2\n1 3\n2 4\n2 5\n");
  ConvertOptions o = Options("seqrec", dir.File("two.txt"), dir.File("out"));
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->train_examples, 1u);
  const std::string manifest = testing::ReadFile(dir.File("out/MANIFEST"));
  o.min_user_events = 3;
  ExpectInvalid(ConvertDataset(o),
                {dir.File("two.txt") + ": no training rows", "(the most any user keeps is 1;",
                 "(--min_user_events 3 dropped the users with fewer)"});
  // Refused before anything is written: the earlier dataset in the directory is untouched.
  EXPECT_EQ(testing::ReadFile(dir.File("out/MANIFEST")), manifest);
  ASSERT_NE(OpenOrDie(dir.File("out")), nullptr);
}

TEST(ConvertRefuses, UserWhoInteractedWithEveryItemHasNoNegativeToDraw) {
  TempDir dir;
  // User 1 (4 events: training rows and an evaluation list) interacted with all 4 items.
  WriteFile(dir.File("all.txt"), "1 1\n1 2\n1 3\n1 4\n2 1\n2 2\n");
  for (const char* protocol : {"seqrec", "ctr"}) {
    SCOPED_TRACE(protocol);
    ConvertOptions o = Options("seqrec", dir.File("all.txt"), dir.File("out"));
    o.protocol = protocol;
    ExpectInvalid(
        ConvertDataset(o),
        {dir.File("all.txt") +
         ": user 1 interacted with every one of the 4 items (4 events), so no negative can be "
         "drawn for it: the --eval_negatives=100 candidates of its evaluation list and the "
         "per-epoch negatives of its training rows must be items it never interacted with (1 of "
         "the 2 users with training rows or an evaluation list interacted with every item); "
         "convert a catalogue with items these users never interacted with, or remove their "
         "events"});
    // Fewer negatives do not help: there is no item to draw any of them from.
    o.eval_negatives = 1;
    ExpectInvalid(ConvertDataset(o), {": user 1 interacted with every one of the 4 items",
                                      "the --eval_negatives=1 candidates"});
  }
  EXPECT_FALSE(Exists(dir.File("out")));
  // Some users affected, not all: still refused (the first named, all counted). Users 1 and 2
  // interacted with every item; user 3 (evaluated) and user 4 (training) did not.
  WriteFile(dir.File("some.txt"),
            "1 1\n1 2\n1 3\n1 4\n2 1\n2 2\n2 3\n2 4\n2 1\n"
            "3 1\n3 1\n3 1\n4 2\n4 3\n");
  ExpectInvalid(ConvertDataset(Options("seqrec", dir.File("some.txt"), dir.File("out"))),
                {dir.File("some.txt") + ": user 1 interacted with every one of the 4 items",
                 "(2 of the 4 users with training rows or an evaluation list"});
  // A user with an evaluation list and no training row (3 events), and one with training rows
  // and no evaluation list (2 events): each message names what needs the negatives.
  WriteFile(dir.File("eval.txt"), "1 1\n1 2\n1 3\n2 1\n2 1\n");
  auto m = ConvertDataset(Options("seqrec", dir.File("eval.txt"), dir.File("out")));
  ExpectInvalid(m, {dir.File("eval.txt") +
                    ": user 1 interacted with every one of the 3 items (3 events), so no "
                    "negative can be drawn for it: the --eval_negatives=100 candidates of its "
                    "evaluation list must be items it never interacted with (1 of the 2 users"});
  WriteFile(dir.File("train.txt"), "1 1\n1 2\n2 1\n2 1\n2 1\n");
  m = ConvertDataset(Options("seqrec", dir.File("train.txt"), dir.File("out")));
  ExpectInvalid(m, {dir.File("train.txt") +
                    ": user 1 interacted with every one of the 2 items (2 events), so no "
                    "negative can be drawn for it: the per-epoch negatives of its training rows "
                    "must be items it never interacted with (1 of the 2 users"});
  EXPECT_EQ(m.status().message().find("--eval_negatives"), std::string::npos) << m.status();
  EXPECT_FALSE(Exists(dir.File("out")));
  // One item user 1 never interacted with is enough (negatives are drawn with replacement):
  // every one of its negatives is that item.
  WriteFile(dir.File("all.txt"), "1 1\n1 2\n1 3\n1 4\n2 1\n2 5\n");
  m = ConvertDataset(Options("seqrec", dir.File("all.txt"), dir.File("out")));
  ASSERT_TRUE(m.ok()) << m.status();
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  const ShardView& s = d->shard(0);
  EXPECT_EQ(Vec(s.eval_rec), (std::vector<uint32_t>{0}));
  ASSERT_EQ(s.eval_cand.size, 101u);
  EXPECT_EQ(s.eval_cand[0], 4u);  // the held-out item
  for (int k = 1; k < 101; ++k) EXPECT_EQ(s.eval_cand[k], 5u) << k;
}

TEST(ConvertRefuses, MovieLensRatingOfAnItemMissingFromTheItemTable) {
  TempDir dir;
  ASSERT_EQ(::mkdir(dir.File("ml").c_str(), 0755), 0);
  // User 2 (2 ratings, the training row) rates item 4, one user 1 never rated.
  WriteFile(dir.File("ml/u.data"),
            "1\t1\t5\t10\n1\t2\t5\t11\n1\t99\t5\t12\n1\t3\t5\t13\n2\t4\t5\t14\n2\t1\t5\t15\n");
  WriteFile(dir.File("ml/u.item"), UItem());
  ConvertOptions o = Options("movielens100k", dir.File("ml"), dir.File("out"));
  auto m = ConvertDataset(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(),
            dir.File("ml/u.data") + ":3: item: expected a movie id listed in u.item (got '99')");
  // Like any bad record it can be skipped and counted.
  o.max_bad_records = 1;
  m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bad_records, 1u);
  EXPECT_EQ(m->items, 4u);  // 1..4, not 99

  ASSERT_EQ(::mkdir(dir.File("m1").c_str(), 0755), 0);
  WriteFile(dir.File("m1/ratings.dat"), "1::10::5::1\n1::20::5::2\n1::77::5::3\n");
  WriteFile(dir.File("m1/movies.dat"), "10::A (1990)::Action\n20::B (1991)::Drama\n");
  m = ConvertDataset(Options("movielens1m", dir.File("m1"), dir.File("out1")));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(
      m.status().message(),
      dir.File("m1/ratings.dat") + ":3: item: expected a movie id listed in movies.dat (got '77')");
}

TEST(ConvertRefuses, SeqRecItemZeroIsPaddingExtraColumnsAndUserZeroAreKept) {
  TempDir dir;
  WriteFile(dir.File("s.txt"), "1 1\n1 0\n1 2\n");
  auto m = ConvertDataset(Options("seqrec", dir.File("s.txt"), dir.File("out")));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(),
            dir.File("s.txt") +
                ":2: item: expected an unsigned 64-bit integer id >= 1 (0 is padding) (got '0')");
  // Like the peer (`line.split()[:2]`): columns after the second are ignored; user ids are not
  // padded anywhere, so user 0 is an ordinary user.
  // (User 1's two events give the training row; item 4 is one user 0 never interacted with.)
  WriteFile(dir.File("s.txt"), "0 1 5.0 x\n0 2\t7\n0 3\n1 1 9\n1 4 y z\n");
  m = ConvertDataset(Options("seqrec", dir.File("s.txt"), dir.File("out")));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->users, 2u);
  EXPECT_EQ(m->items, 4u);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(Vec(d->shard(0).rec_user), (std::vector<uint64_t>{0, 1}));
  EXPECT_EQ(Vec(d->item_raw()), (std::vector<uint64_t>{0, 1, 2, 3, 4}));
}

TEST(ConvertShards, ReconvertingWithFewerShardsRemovesOnlyStaleShardFiles) {
  TempDir dir;
  std::string text;
  for (int u = 1; u <= 60; ++u)
    for (int k = 0; k < 4; ++k)
      text += std::to_string(u) + " " + std::to_string(1 + (u * 7 + k) % 30) + "\n";
  WriteFile(dir.File("s.txt"), text);
  ConvertOptions o = Options("seqrec", dir.File("s.txt"), dir.File("out"));
  o.shards = 4;
  ASSERT_TRUE(ConvertDataset(o).ok());
  // Files that only resemble shard names are not ours to delete.
  const std::vector<std::string> keep = {"notes.txt", "shard-00009-of-00004.ips.bak",
                                         "shard-0001-of-00004.ips", "myshard-00000-of-00004.ips",
                                         "shard-00000-of-00004.ips.tmp"};
  for (const std::string& k : keep) WriteFile(dir.File("out/" + k), "x");
  o.shards = 2;
  auto m = ConvertDataset(o);
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> want = keep;
  for (const char* f :
       {"MANIFEST", "shard-00000-of-00002.ips", "shard-00001-of-00002.ips", kVocabFile})
    want.push_back(f);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ListDir(dir.File("out")), want);
  auto d = OpenOrDie(dir.File("out"));
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->num_shards(), 2);
  uint64_t users = 0;
  for (int s = 0; s < d->num_shards(); ++s) users += d->shard(s).rec_user.size;
  EXPECT_EQ(users, 60u);
  // Same shard count again: the files are rewritten in place, nothing removed.
  ASSERT_TRUE(ConvertDataset(o).ok());
  EXPECT_EQ(ListDir(dir.File("out")), want);
}

// A mistyped --output must not cost a checkpoint, a bundle or an input directory its files: only
// new, empty and earlier conversions' directories are written into, checked before any input is
// read (here the input does not even exist), and a refused output is left exactly as it was.
TEST(ConvertOutput, NotADatasetDirectoryIsRefusedBeforeReadingAndLeftUntouched) {
  TempDir dir;
  const auto mkdir = [&](const std::string& name) {
    ASSERT_EQ(::mkdir(dir.File(name).c_str(), 0755), 0) << name;
  };
  mkdir("ckpt");
  mkdir("ckpt/ckpt-20");
  WriteFile(dir.File("ckpt/LATEST"), "ckpt-20\n");
  const std::string ckpt_manifest = std::string("IPSMAN01") + '\x05' + std::string(3, '\0') + "xyz";
  WriteFile(dir.File("ckpt/ckpt-20/MANIFEST"), ckpt_manifest);
  WriteFile(dir.File("ckpt/ckpt-20/dense.bin"), "d");
  mkdir("bundle");
  mkdir("bundle/v-1");
  WriteFile(dir.File("bundle/CURRENT"), "v-1\n");
  WriteFile(dir.File("bundle/v-1/MANIFEST"), "IPSBND01abc");
  mkdir("other");
  WriteFile(dir.File("other/MANIFEST"), "name: something else\n");
  mkdir("inputs");
  WriteFile(dir.File("inputs/u.data"), kUData);
  WriteFile(dir.File("inputs/u.item"), UItem());
  WriteFile(dir.File("afile"), "not a directory");
  const std::string missing_input = dir.File("no_such_input.txt");
  struct Case {
    std::string output;
    std::vector<std::string> want;
  };
  const std::vector<Case> cases = {
      {dir.File("ckpt/ckpt-20"),
       {"looks like a training checkpoint",
        dir.File("ckpt/ckpt-20/MANIFEST") + " is a checkpoint manifest"}},
      {dir.File("ckpt"), {"is a training checkpoint root (it holds "}},
      {dir.File("bundle/v-1"),
       {"looks like a serving bundle version",
        dir.File("bundle/v-1/MANIFEST") + " is a bundle manifest"}},
      {dir.File("bundle"), {"is a serving bundle root (it holds "}},
      {dir.File("other"), {dir.File("other/MANIFEST") + " is not a dataset manifest"}},
      {dir.File("inputs"),
       {"is a non-empty directory without a dataset MANIFEST (it holds 'u.data', 'u.item')"}},
      {dir.File("afile"), {"exists and is not a directory"}},
      {dir.File("afile/sub/out"),
       {dir.File("afile") + " exists and is not a directory, so " + dir.File("afile/sub/out") +
        " cannot be created"}},
  };
  const auto snapshot = [&] {
    std::map<std::string, std::string> files;
    for (const char* f :
         {"ckpt/LATEST", "ckpt/ckpt-20/MANIFEST", "ckpt/ckpt-20/dense.bin", "bundle/CURRENT",
          "bundle/v-1/MANIFEST", "other/MANIFEST", "inputs/u.data", "inputs/u.item", "afile"})
      files[f] = testing::ReadFile(dir.File(f));
    for (const char* d : {"", "ckpt", "ckpt/ckpt-20", "bundle", "bundle/v-1", "other", "inputs"})
      for (const std::string& n : ListDir(dir.File(d))) files[std::string("ls ") + d] += n + ",";
    return files;
  };
  const auto before = snapshot();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.output);
    const Status checked = CheckConvertOutput(c.output);
    auto m = ConvertDataset(Options("seqrec", missing_input, c.output));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), StatusCode::kFailedPrecondition) << m.status();
    EXPECT_EQ(checked.ToString(), m.status().ToString());
    EXPECT_EQ(m.status().message().rfind("--output " + c.output + ": ", 0), 0u) << m.status();
    for (const std::string& w : c.want)
      EXPECT_NE(m.status().message().find(w), std::string::npos) << m.status() << "\nmissing " << w;
    if (c.output != dir.File("afile/sub/out")) {  // (that one cannot exist: no remedy needed)
      EXPECT_NE(m.status().message().find("choose a new or empty directory"), std::string::npos);
    }
    EXPECT_EQ(m.status().message().find(missing_input), std::string::npos) << m.status();
  }
  EXPECT_EQ(snapshot(), before);
}

// Bundle roots now hold their writer's lock too (LOCK, as checkpoint roots do): a bundle root was
// then named "a training checkpoint root (it holds LOCK)". Each is named for what it holds, the
// description `ips export --output` gives (worker/manifest_magic.h InspectDirectory), and a
// directory holding only a lock for what it may be.
TEST(ConvertOutput, RootsHoldingTheirWritersLockAreNamedForWhatTheyAre) {
  TempDir dir;
  const auto mkdir = [&](const std::string& name) {
    ASSERT_EQ(::mkdir(dir.File(name).c_str(), 0755), 0) << name;
  };
  mkdir("bundle");
  mkdir("bundle/v-1");
  WriteFile(dir.File("bundle/v-1/MANIFEST"), "IPSBND01abc");
  WriteFile(dir.File("bundle/CURRENT"), "v-1\n");
  WriteFile(dir.File("bundle/LOCK"), "123\n");
  mkdir("ckpt");
  mkdir("ckpt/ckpt-20");
  WriteFile(dir.File("ckpt/LATEST"), "ckpt-20\n");
  WriteFile(dir.File("ckpt/LOCK"), "123\n");
  mkdir("locked");
  WriteFile(dir.File("locked/LOCK"), "123\n");
  for (const auto& [output, want] : std::vector<std::pair<std::string, std::string>>{
           {dir.File("bundle"), "is a serving bundle root (it holds CURRENT)"},
           {dir.File("ckpt"), "is a training checkpoint root (it holds LATEST)"},
           {dir.File("locked"),
            "is a training checkpoint or serving bundle root (it holds LOCK)"}}) {
    const Status s = CheckConvertOutput(output);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(s.message().rfind("--output " + output + ": " + want + ": refusing to write", 0), 0u)
        << s << "\nwant: " << want;
  }
}

// What may be written into: a new directory (and its parents), an empty one, one holding only
// hidden files, what a failed conversion left (no MANIFEST yet), and an earlier conversion (even
// with the user's own files beside it).
TEST(ConvertOutput, NewEmptyLeftoverAndEarlierDatasetDirectoriesAreWrittenInto) {
  TempDir dir;
  WriteFile(dir.File("s.txt"), kThreeUsers);
  const auto convert = [&](const std::string& out) {
    SCOPED_TRACE(out);
    EXPECT_TRUE(CheckConvertOutput(out).ok()) << CheckConvertOutput(out);
    auto m = ConvertDataset(Options("seqrec", dir.File("s.txt"), out));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_NE(OpenOrDie(out), nullptr);
  };
  convert(dir.File("new/deeper/out"));
  convert(dir.File("new/deeper/out"));  // an earlier conversion
  WriteFile(dir.File("new/deeper/out/NOTES.txt"), "mine");
  convert(dir.File("new/deeper/out"));
  EXPECT_EQ(testing::ReadFile(dir.File("new/deeper/out/NOTES.txt")), "mine");
  ASSERT_EQ(::mkdir(dir.File("empty").c_str(), 0755), 0);
  convert(dir.File("empty"));
  ASSERT_EQ(::mkdir(dir.File("hidden").c_str(), 0755), 0);
  WriteFile(dir.File("hidden/.gitkeep"), "");
  convert(dir.File("hidden/"));
  ASSERT_EQ(::mkdir(dir.File("leftover").c_str(), 0755), 0);
  for (const char* f : {"vocab.ips", "vocab.ips.tmp", "shard-00000-of-00002.ips",
                        "shard-00001-of-00002.ips.tmp", "MANIFEST.tmp"})
    WriteFile(dir.File(std::string("leftover/") + f), "partial");
  convert(dir.File("leftover"));
}

// `ips data convert --output` under /proc or /sys passed the output check (its nearest existing
// ancestor is a directory), parsed the whole input and only then failed to mkdir; on a cgroup or
// configfs mount the conversion would create a kernel object. Refused first, before anything is
// read or created, naming the file system (ps::CheckNotOnPseudoFileSystem). Only paths under
// /proc and /sys that procfs and sysfs never let anyone create are used, and the conversion runs
// only once the check has refused them.
TEST(ConvertOutput, OutputOnAKernelPseudoFileSystemIsRefusedBeforeAnythingIsCreated) {
  if (ps::PseudoFileSystemOf("/proc") != "procfs" || ps::PseudoFileSystemOf("/sys") != "sysfs")
    GTEST_SKIP() << "/proc or /sys is not mounted here";
  TempDir dir;
  WriteFile(dir.File("s.txt"), kThreeUsers);
  const std::string pid = std::to_string(::getpid());
  struct Case {
    std::string output, want;
  };
  const std::vector<Case> cases = {
      {"/proc/ips_convert_" + pid + "/out",
       "--output /proc/ips_convert_" + pid +
           "/out would be created in /proc, which is on procfs, a kernel pseudo file system that "
           "holds no dataset files: choose a directory on a disk file system"},
      {"/proc/ips_convert_" + pid,
       "--output /proc/ips_convert_" + pid + " would be created in /proc, which is on procfs"},
      {"/proc", "--output /proc is on procfs, a kernel pseudo file system"},
      {"/proc/self/", "--output /proc/self/ is on procfs"},
      {"/sys/ips_convert_" + pid + "/out",
       "--output /sys/ips_convert_" + pid + "/out would be created in /sys, which is on sysfs"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.output);
    const Status checked = CheckConvertOutput(c.output);
    ASSERT_EQ(checked.code(), StatusCode::kFailedPrecondition) << checked;
    EXPECT_EQ(checked.message().rfind(c.want, 0), 0u) << checked << "\nwant: " << c.want;
    // The conversion itself refuses the same way, before reading its (valid) input.
    auto m = ConvertDataset(Options("seqrec", dir.File("s.txt"), c.output));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().ToString(), checked.ToString());
  }
  for (const std::string& p : {"/proc/ips_convert_" + pid, "/sys/ips_convert_" + pid}) {
    struct stat st;
    EXPECT_NE(::stat(p.c_str(), &st), 0) << p << " was created";
  }
}

// A UTF-8 byte order mark (what Windows editors put first) is not part of the first field in any
// format: the conversion equals the one without it, byte for byte.
TEST(ConvertBom, EveryFormatSkipsALeadingUtf8ByteOrderMark) {
  TempDir dir;
  const std::string bom = "\xef\xbb\xbf";
  struct Input {
    std::string format;
    std::map<std::string, std::string> files;  // name -> content; the first is the input
    std::string input, eval_input;
  };
  std::string events;
  for (int i = 0; i < 8; ++i) {
    Event e;
    e.user = 1 + i % 2;
    e.item = 10 + i;
    e.category = 3;
    e.timestamp = i;
    AppendEventLine(e, &events);
  }
  const std::vector<Input> inputs = {
      {"movielens100k", {{"u.data", kUData}, {"u.item", UItem()}}, "", ""},
      {"movielens1m",
       {{"ratings.dat", "1::20::5::3\n1::10::3::4\n1::30::4::1\n2::10::4::1\n2::40::3::2\n"},
        {"movies.dat", "10::A::Comedy\n20::B::Western\n30::C::Action\n40::D::Comedy\n"}},
       "",
       ""},
      {"seqrec", {{"s.txt", kThreeUsers}}, "s.txt", ""},
      {"taobao",
       {{"ub.csv",
         "7,500,90,pv,30\n7,501,91,buy,10\n7,500,90,cart,20\n7,502,90,fav,40\n7,503,92,pv,50\n"
         "8,504,91,pv,1\n"}},
       "ub.csv",
       ""},
      {"events", {{"events.tsv", events}}, "events.tsv", ""},
      {"dien",
       {{"train",
         "1\tU1\tM3\tC1\tM1\x02M2\tC1\x02"
         "C2\n1\tU2\tM1\tC1\tM2\tC2\n"},
        {"test", "1\tU3\tM2\tC2\tM3\tC1\n"}},
       "train",
       "test"},
  };
  for (const Input& in : inputs) {
    for (bool gzip : {false, true}) {
      SCOPED_TRACE(in.format + (gzip ? " gzip" : " plain"));
      std::string outs[2];
      for (int with_bom = 0; with_bom < 2; ++with_bom) {
        const std::string sub = in.format + (gzip ? "_gz" : "") + (with_bom ? "_bom" : "");
        ASSERT_EQ(::mkdir(dir.File(sub).c_str(), 0755), 0);
        for (const auto& [name, content] : in.files) {
          const std::string path = dir.File(sub + "/" + name) + (gzip ? ".gz" : "");
          const std::string text = (with_bom ? bom : "") + content;
          if (gzip) {
            WriteGzip(path, text);
          } else {
            WriteFile(path, text);
          }
        }
        const std::string g = gzip ? ".gz" : "";
        ConvertOptions o = Options(
            in.format, in.input.empty() ? dir.File(sub) : dir.File(sub + "/" + in.input) + g,
            dir.File(sub + "/out"));
        if (!in.eval_input.empty()) o.eval_input = dir.File(sub + "/" + in.eval_input) + g;
        auto m = ConvertDataset(o);
        ASSERT_TRUE(m.ok()) << m.status();
        EXPECT_EQ(m->bad_records, 0u);
        outs[with_bom] = testing::ReadFile(dir.File(sub + "/out/shard-00000-of-00001.ips")) +
                         testing::ReadFile(dir.File(sub + "/out/vocab.ips"));
      }
      EXPECT_FALSE(outs[0].empty());
      EXPECT_EQ(outs[0], outs[1]);
    }
  }
  // Only at the very start: a BOM on a later line is still a malformed field.
  WriteFile(dir.File("late.txt"), "1 1\n" + bom + "1 2\n");
  ExpectInvalid(ConvertDataset(Options("seqrec", dir.File("late.txt"), dir.File("late_out"))),
                {dir.File("late.txt") + ":2: user: expected"});
}

// The progress callback's last count is the lines read, also when the conversion fails (the
// CLI's progress line said "0 lines" after reading the input).
TEST(ConvertProgress, LastCountIsTheLinesReadAlsoOnFailure) {
  TempDir dir;
  WriteFile(dir.File("bad.txt"), "1 1\n1 2\n\n1 x\n1 3\n");
  ConvertOptions o = Options("seqrec", dir.File("bad.txt"), dir.File("out"));
  uint64_t last = 0;
  o.progress = [&](uint64_t lines) { last = lines; };
  ASSERT_FALSE(ConvertDataset(o).ok());
  EXPECT_EQ(last, 4u);  // the bad line is the 4th
  // Refused after reading everything (nobody has 9 events).
  WriteFile(dir.File("ok.txt"), kThreeUsers);
  o.input = dir.File("ok.txt");
  o.min_user_events = 9;
  last = 0;
  ExpectInvalid(ConvertDataset(o), {"no user has >= 9 events"});
  EXPECT_EQ(last, 11u);
  o.min_user_events = 1;
  last = 0;
  ASSERT_TRUE(ConvertDataset(o).ok());
  EXPECT_EQ(last, 11u);
}

}  // namespace
}  // namespace ips
