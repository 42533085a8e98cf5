// Converts the real datasets of ../shared/data (IPS_SHARED_DATA; skipped when absent) and checks
// the exact counts of shared/data/README.md and the peer's protocol numbers (peers/README.md).
#include <sys/stat.h>

#include <cstdlib>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"

namespace ips {
namespace {

std::string SharedPath(const std::string& rel) {
  const char* root = std::getenv("IPS_SHARED_DATA");
  if (root == nullptr) return "";
  const std::string p = std::string(root) + "/" + rel;
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 ? p : "";
}

StatusOr<Manifest> Convert(const std::string& format, const std::string& input,
                           const std::string& out, int shards = 2) {
  ConvertOptions o;
  o.format = format;
  o.input = input;
  o.output = out;
  o.shards = shards;
  return ConvertDataset(o);
}

// Reads every batch of an epoch and of the evaluation set, checking they add up.
void ReadAll(const std::string& dir, const Manifest& m) {
  auto d = Dataset::Open(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  ReaderOptions ro;
  ro.batch_size = 512;
  TrainReader r(d->get(), {}, ro);
  Batch b;
  int64_t rows = 0, positives = 0;
  while (r.Next(&b)) {
    rows += b.size;
    for (int i = 0; i < b.size; ++i) positives += b.label[i] == 1.0f;
  }
  EXPECT_EQ(rows, static_cast<int64_t>(m.train_examples_per_epoch));
  EXPECT_EQ(positives, static_cast<int64_t>(m.train_examples));
  EvalReader e(d->get(), {}, ro);
  int64_t lists = 0;
  while (e.Next(&b)) lists += b.size / e.candidates_per_list();
  EXPECT_EQ(lists, static_cast<int64_t>(m.eval_examples));
}

TEST(SharedData, MovieLens100k) {
  const std::string in = SharedPath("movielens-100k");
  if (in.empty()) GTEST_SKIP() << "IPS_SHARED_DATA/movielens-100k not available";
  testing::TempDir dir;
  auto m = Convert("movielens100k", in, dir.File("out"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->events, 100000u);
  EXPECT_EQ(m->users, 943u);
  EXPECT_EQ(m->items, 1682u);
  EXPECT_EQ(m->bad_records, 0u);
  EXPECT_EQ(m->train_events, 98114u);  // peer: train interactions
  EXPECT_EQ(m->eval_examples, 943u);   // every user has >= 20 ratings
  EXPECT_LE(m->categories, 19u);
  ReadAll(dir.File("out"), *m);
}

TEST(SharedData, AmazonGames) {
  const std::string in = SharedPath("amazon-games-sasrec/Video.txt.gz");
  if (in.empty()) GTEST_SKIP() << "IPS_SHARED_DATA/amazon-games-sasrec not available";
  testing::TempDir dir;
  auto m = Convert("seqrec", in, dir.File("out"), 4);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->events, 287107u);
  EXPECT_EQ(m->users, 31013u);
  EXPECT_EQ(m->items, 23715u);
  EXPECT_EQ(m->categories, 1u);
  EXPECT_EQ(m->train_events, 225305u);
  EXPECT_EQ(m->train_examples, 182324u);
  EXPECT_EQ(m->train_examples_per_epoch, 364648u);  // DIN/DIEN CTR samples per epoch
  EXPECT_EQ(m->eval_examples, 10000u);
  ReadAll(dir.File("out"), *m);
  // SASRec: 30,711 sequences per epoch (peers/README.md).
  auto d = Dataset::Open(dir.File("out"));
  ASSERT_TRUE(d.ok()) << d.status();
  SequenceReader seqs(d->get(), {}, ReaderOptions());
  EXPECT_EQ(seqs.sequences_per_epoch(), 30711);
}

TEST(SharedData, TaobaoSample) {
  const std::string in = SharedPath("taobao-userbehavior-sample/UserBehavior.head.csv.gz");
  if (in.empty()) GTEST_SKIP() << "IPS_SHARED_DATA/taobao-userbehavior-sample not available";
  testing::TempDir dir;
  auto m = Convert("taobao", in, dir.File("out"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->events, 84287u);
  EXPECT_EQ(m->users, 814u);
  EXPECT_EQ(m->items, 55233u);
  EXPECT_EQ(m->categories, 2911u);
  EXPECT_EQ(m->protocol, "ctr");
  ReadAll(dir.File("out"), *m);
}

TEST(SharedData, MovieLens1mPartial) {
  const std::string in = SharedPath("movielens-1m");
  if (in.empty()) GTEST_SKIP() << "IPS_SHARED_DATA/movielens-1m not available";
  testing::TempDir dir;
  auto m = Convert("movielens1m", in, dir.File("out"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->events, 487650u);
  EXPECT_EQ(m->users, 2999u);
  EXPECT_EQ(m->items, 3615u);
  EXPECT_EQ(m->eval_examples, 2999u);
  ReadAll(dir.File("out"), *m);
}

}  // namespace
}  // namespace ips
