// Protocol tests on a random dataset written here: leave-one-out split, training windows (the
// peer's `windows`), negatives never interacted with, determinism given the seed, fresh
// negatives every epoch, resume with SkipTo, sharded reading, popularity sampling.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "common/random.h"
#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"
#include "worker/data_reader.h"
#include "worker/dataset_builder.h"

namespace ips {
namespace {

constexpr int kUsers = 60;
constexpr int kItems = 150;
constexpr int kL = 5;

class ProtocolTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    Rng rng(42);
    std::string text;
    for (int u = 1; u <= kUsers; ++u) {
      const int n = 1 + static_cast<int>(rng.UniformInt(25));
      for (int k = 0; k < n; ++k) {
        // Skewed items so popularity sampling has something to follow.
        const uint32_t item =
            1 + static_cast<uint32_t>(rng.UniformInt(rng.UniformInt(2) ? 10 : kItems));
        seq_[u].push_back(item);
        text += std::to_string(u) + " " + std::to_string(item) + "\n";
      }
    }
    testing::WriteFile(dir_.File("seq.txt"), text);
    ConvertOptions o;
    o.format = "seqrec";
    o.protocol = GetParam();
    o.input = dir_.File("seq.txt");
    o.output = dir_.File("out");
    o.max_history = kL;
    o.eval_negatives = 20;
    o.eval_users = 30;
    o.seed = 7;
    o.shards = 3;
    auto m = ConvertDataset(o);
    ASSERT_TRUE(m.ok()) << m.status();
    auto d = Dataset::Open(dir_.File("out"));
    ASSERT_TRUE(d.ok()) << d.status();
    data_ = std::move(*d);
    // Items were numbered by ascending raw id; map back for comparisons with seq_.
    for (auto& [u, s] : seq_)
      for (uint32_t& it : s) it = Dense(it);
  }
  uint32_t Dense(uint64_t raw) const {
    const auto& r = data_->item_raw();
    return static_cast<uint32_t>(std::lower_bound(r.begin() + 1, r.end(), raw) - r.begin());
  }
  std::vector<std::vector<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>>> Epoch(
      TrainReader* r, int64_t epoch) {
    r->StartEpoch(epoch);
    std::vector<std::vector<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>>> out;
    Batch b;
    while (r->Next(&b)) {
      out.emplace_back();
      for (int i = 0; i < b.size; ++i)
        out.back().emplace_back(b.user[i],
                                std::vector<uint32_t>(b.hist_item.begin() + i * b.max_len,
                                                      b.hist_item.begin() + (i + 1) * b.max_len),
                                b.item[i], b.label[i]);
    }
    return out;
  }
  testing::TempDir dir_;
  std::map<uint64_t, std::vector<uint32_t>> seq_;  // user -> dense items in time order
  std::unique_ptr<Dataset> data_;
};

TEST_P(ProtocolTest, LeaveOneOutSplitAndTrainingWindows) {
  const bool seqrec = GetParam() == "seqrec";
  ReaderOptions ro;
  ro.batch_size = 16;
  ro.shuffle = false;
  TrainReader r(data_.get(), {}, ro);
  // Expected positives: (user, left-padded window, target) for each train position t >= 1
  // (seqrec: the last kL of them).
  std::multiset<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t>> want, got;
  uint64_t eligible = 0;
  for (const auto& [u, s] : seq_) {
    const int n = static_cast<int>(s.size());
    const int train = n >= 3 ? n - 2 : n;
    eligible += n >= 3;
    const int first = seqrec ? std::max(1, train - kL) : 1;
    for (int t = first; t < train; ++t) {
      std::vector<uint32_t> w(kL, 0);
      const int len = std::min(t, kL);
      for (int k = 0; k < len; ++k) w[kL - len + k] = s[t - len + k];
      want.emplace(u, w, s[t]);
    }
  }
  int negatives = 0;
  for (const auto& batch : Epoch(&r, 0))
    for (const auto& [u, h, item, label] : batch) {
      if (label == 1.0f) {
        got.emplace(u, h, item);
      } else {
        ++negatives;
      }
    }
  EXPECT_EQ(got, want);
  EXPECT_EQ(negatives, static_cast<int>(want.size()));
  EXPECT_EQ(r.examples_per_epoch(), static_cast<int64_t>(2 * want.size()));
  // Evaluation: a seeded sample of 30 of the eligible users; history = last kL before the test
  // item; candidate 0 = the test item, others never interacted.
  ASSERT_GT(eligible, 30u);
  EvalReader e(data_.get(), {}, ro);
  EXPECT_EQ(e.num_lists(), 30);
  EXPECT_EQ(e.candidates_per_list(), 21);
  Batch b;
  int lists = 0;
  while (e.Next(&b)) {
    ASSERT_EQ(b.size % 21, 0);
    for (int i = 0; i < b.size; ++i) {
      const auto& s = seq_.at(b.user[i]);
      const int n = static_cast<int>(s.size());
      ASSERT_GE(n, 3);
      const int len = std::min(n - 1, kL);
      EXPECT_EQ(b.length[i], len);
      for (int k = 0; k < len; ++k)
        EXPECT_EQ(b.hist_item[i * kL + kL - len + k], s[n - 1 - len + k]);
      if (i % 21 == 0) {
        ++lists;
        EXPECT_EQ(b.item[i], s[n - 1]);
        EXPECT_EQ(b.label[i], 1.0f);
      } else {
        EXPECT_EQ(std::count(s.begin(), s.end(), b.item[i]), 0) << "eval negative interacted";
        EXPECT_EQ(b.label[i], 0.0f);
      }
      EXPECT_EQ(b.cat[i], data_->item_cat()[b.item[i]]);
    }
  }
  EXPECT_EQ(lists, 30);
}

TEST_P(ProtocolTest, NegativesNeverInteractedAndFreshEveryEpochAndDeterministic) {
  ReaderOptions ro;
  ro.batch_size = 32;
  ro.seed = 3;
  TrainReader a(data_.get(), {}, ro), b(data_.get(), {}, ro);
  const auto e0 = Epoch(&a, 0);
  EXPECT_EQ(e0, Epoch(&b, 0)) << "same seed and epoch must give identical batches";
  const auto e1 = Epoch(&a, 1);
  EXPECT_NE(e0, e1);
  // Collect negatives per (user, history): multisets across epochs must differ (fresh), while
  // the positives are the same set.
  auto split = [](const auto& epoch, bool positive) {
    std::multiset<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t>> out;
    for (const auto& batch : epoch)
      for (const auto& [u, h, item, label] : batch)
        if ((label == 1.0f) == positive) out.emplace(u, h, item);
    return out;
  };
  EXPECT_EQ(split(e0, true), split(e1, true));
  EXPECT_NE(split(e0, false), split(e1, false));
  for (const auto* e : {&e0, &e1})
    for (const auto& batch : *e)
      for (const auto& [u, h, item, label] : batch)
        if (label == 0.0f) {
          const auto& s = seq_.at(u);
          EXPECT_EQ(std::count(s.begin(), s.end(), item), 0) << "user " << u << " item " << item;
          EXPECT_GE(item, 1u);
          EXPECT_LE(item, data_->manifest().items);
        }
  ReaderOptions other = ro;
  other.seed = 4;
  TrainReader c(data_.get(), {}, other);
  EXPECT_NE(Epoch(&c, 0), e0);
}

TEST_P(ProtocolTest, SkipToResumesExactlyAndShardsPartitionTheEpoch) {
  ReaderOptions ro;
  ro.batch_size = 7;
  ro.seed = 11;
  TrainReader full(data_.get(), {}, ro);
  std::vector<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>> rows;
  for (const auto& batch : Epoch(&full, 2)) rows.insert(rows.end(), batch.begin(), batch.end());
  TrainReader resumed(data_.get(), {}, ro);
  ASSERT_TRUE(resumed.SkipTo(2, 23).ok());
  std::vector<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>> tail;
  Batch b;
  while (resumed.Next(&b))
    for (int i = 0; i < b.size; ++i)
      tail.emplace_back(b.user[i],
                        std::vector<uint32_t>(b.hist_item.begin() + i * b.max_len,
                                              b.hist_item.begin() + (i + 1) * b.max_len),
                        b.item[i], b.label[i]);
  ASSERT_EQ(tail.size(), rows.size() - 23);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), rows.begin() + 23));
  {
    // A checkpoint of another (larger) dataset: the message says so, naming both numbers.
    const int64_t total = full.examples_per_epoch();
    const Status past = resumed.SkipTo(0, total + 77);
    EXPECT_EQ(past.code(), StatusCode::kOutOfRange);
    EXPECT_NE(past.message().find("the checkpoint's position " + std::to_string(total + 77) +
                                  " is past this dataset's epoch size of " + std::to_string(total) +
                                  " examples"),
              std::string::npos)
        << past;
    EXPECT_NE(past.message().find("written for another dataset"), std::string::npos) << past;
    SequenceReader seqs(data_.get(), {}, ro);
    const Status seq_past = seqs.SkipTo(0, seqs.sequences_per_epoch() + 5);
    EXPECT_EQ(seq_past.code(), StatusCode::kOutOfRange);
    EXPECT_NE(seq_past.message().find("is past this dataset's epoch size of " +
                                      std::to_string(seqs.sequences_per_epoch()) + " sequences"),
              std::string::npos)
        << seq_past;
  }
  // Workers reading disjoint shard sets see, together, exactly the full epoch's examples.
  std::multiset<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>> all(rows.begin(),
                                                                                  rows.end());
  std::multiset<std::tuple<uint64_t, std::vector<uint32_t>, uint32_t, float>> parts;
  for (std::vector<int> shards : {std::vector<int>{0, 2}, std::vector<int>{1}}) {
    TrainReader part(data_.get(), shards, ro);
    for (const auto& batch : Epoch(&part, 2)) parts.insert(batch.begin(), batch.end());
  }
  EXPECT_EQ(parts, all);
}

TEST_P(ProtocolTest, NegativeDistributionFollowsTheProtocol) {
  // Items 1..10 are ~20x as frequent as the others: popularity sampling (ctr) must pick them
  // far more often than uniform sampling (seqrec) does.
  ReaderOptions ro;
  ro.batch_size = 256;
  TrainReader r(data_.get(), {}, ro);
  int64_t head = 0, total = 0;
  for (int epoch = 0; epoch < 20; ++epoch)
    for (const auto& batch : Epoch(&r, epoch))
      for (const auto& [u, h, item, label] : batch)
        if (label == 0.0f) {
          ++total;
          head += data_->item_raw()[item] <= 10;
        }
  const double share = static_cast<double>(head) / total;
  if (GetParam() == "ctr") {
    EXPECT_GT(share, 0.2) << "popularity sampling should favour the head items";
  } else {
    EXPECT_LT(share, 0.1) << "uniform sampling over ~150 items";
  }
}

INSTANTIATE_TEST_SUITE_P(Protocols, ProtocolTest, ::testing::Values("seqrec", "ctr"));

}  // namespace
}  // namespace ips

namespace ips {
namespace {

// The SASRec reader (peer's sasrec_epoch): every user with >= 2 training events once per epoch;
// seq/pos aligned windows of the train sequence; negatives never interacted, fresh per epoch.
TEST_P(ProtocolTest, SequenceBatchesMatchThePeersSasrecEpoch) {
  ReaderOptions ro;
  ro.batch_size = 8;
  ro.seed = 2;
  SequenceReader r(data_.get(), {}, ro);
  int64_t want_users = 0;
  for (const auto& [u, s] : seq_) want_users += (s.size() >= 3 ? s.size() - 2 : s.size()) >= 2;
  EXPECT_EQ(r.sequences_per_epoch(), want_users);
  std::map<int64_t, std::multiset<uint32_t>> negs;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    r.StartEpoch(epoch);
    SequenceBatch b;
    std::set<uint64_t> users;
    while (r.Next(&b)) {
      for (int i = 0; i < b.size; ++i) {
        EXPECT_TRUE(users.insert(b.user[i]).second) << "user twice in one epoch";
        const auto& s = seq_.at(b.user[i]);
        const int n = static_cast<int>(s.size());
        const int train = n >= 3 ? n - 2 : n;
        const int len = std::min(train - 1, kL);
        ASSERT_EQ(b.length[i], len);
        for (int k = 0; k < kL; ++k) {
          const size_t c = static_cast<size_t>(i) * kL + k;
          if (k < kL - len) {
            EXPECT_EQ(b.seq[c] | b.pos[c] | b.neg[c], 0u);
            continue;
          }
          const int t = train - 1 - len + (k - (kL - len));  // index of seq[c] in s
          EXPECT_EQ(b.seq[c], s[t]);
          EXPECT_EQ(b.pos[c], s[t + 1]);
          EXPECT_EQ(std::count(s.begin(), s.end(), b.neg[c]), 0);
          EXPECT_EQ(b.neg_cat[c], data_->item_cat()[b.neg[c]]);
          negs[epoch].insert(b.neg[c]);
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(users.size()), want_users);
  }
  EXPECT_NE(negs[0], negs[1]);
}

}  // namespace
}  // namespace ips
