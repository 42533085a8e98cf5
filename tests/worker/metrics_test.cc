// Tests of worker/metrics.h against brute-force definitions, hand-computed cases and the peer's
// `rank_metrics` semantics. An optional cross-check against sklearn and the peer's Python code
// (PeerCheck.*) runs only when bench/peer_check/metrics_vs_peer.py provides its data file.
#include "worker/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/random.h"

namespace ips {
namespace {

// Scores on a coarse grid so that ties are frequent.
std::vector<float> TiedScores(Rng& rng, int64_t n, int levels) {
  std::vector<float> s(n);
  for (auto& x : s) x = static_cast<float>(rng.UniformInt(levels + 1)) / levels;
  return s;
}

std::vector<float> RandomLabels(Rng& rng, int64_t n, double rate) {
  std::vector<float> y(n);
  for (auto& v : y) v = rng.Uniform() < rate ? 1.0f : 0.0f;
  return y;
}

// O(n^2) pairwise definition: P(pos > neg) + 0.5 P(pos == neg).
double BruteAuc(const std::vector<float>& s, const std::vector<float>& y) {
  double wins = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (y[i] != 1) continue;
    for (size_t j = 0; j < s.size(); ++j) {
      if (y[j] != 0) continue;
      pairs += 1;
      wins += s[i] > s[j] ? 1.0 : (s[i] == s[j] ? 0.5 : 0.0);
    }
  }
  return wins / pairs;
}

TEST(BinaryMetrics, Auc_KnownCases) {
  const std::vector<float> y = {0, 0, 1, 1};
  BinaryMetrics perfect, reversed, constant, one_class;
  const std::vector<float> up = {0.1f, 0.2f, 0.3f, 0.4f}, down = {0.4f, 0.3f, 0.2f, 0.1f},
                           flat = {0.5f, 0.5f, 0.5f, 0.5f}, ones = {1, 1, 1, 1};
  ASSERT_TRUE(perfect.Add(up.data(), y.data(), nullptr, 4).ok());
  ASSERT_TRUE(reversed.Add(down.data(), y.data(), nullptr, 4).ok());
  ASSERT_TRUE(constant.Add(flat.data(), y.data(), nullptr, 4).ok());
  ASSERT_TRUE(one_class.Add(up.data(), ones.data(), nullptr, 4).ok());
  EXPECT_EQ(perfect.Auc(), 1.0);
  EXPECT_EQ(reversed.Auc(), 0.0);
  EXPECT_EQ(constant.Auc(), 0.5);
  EXPECT_TRUE(std::isnan(one_class.Auc()));
  EXPECT_TRUE(std::isnan(BinaryMetrics().Auc()));
  // Without user ids everything is user 0, so GAUC is the AUC.
  EXPECT_EQ(perfect.Gauc(), 1.0);
  EXPECT_EQ(perfect.GaucUsers(), 1);
}

TEST(BinaryMetrics, Auc_MatchesPairwiseBruteForce_RandomWithTies) {
  Rng rng(11);
  for (int levels : {3, 20, 1000000}) {
    for (int64_t n : {1, 2, 7, 500, 3000}) {
      const auto s = TiedScores(rng, n, levels);
      const auto y = RandomLabels(rng, n, 0.3);
      BinaryMetrics m;
      ASSERT_TRUE(m.Add(s.data(), y.data(), nullptr, n).ok());
      const bool both =
          std::count(y.begin(), y.end(), 1.0f) > 0 && std::count(y.begin(), y.end(), 0.0f) > 0;
      if (!both) {
        EXPECT_TRUE(std::isnan(m.Auc()));
        continue;
      }
      EXPECT_NEAR(m.Auc(), BruteAuc(s, y), 1e-12) << "levels=" << levels << " n=" << n;
    }
  }
}

TEST(BinaryMetrics, Gauc_TwoUsersHandComputed) {
  // User 7: positives 0.9, 0.3; negatives 0.8, 0.1 -> 3 of 4 pairs won: AUC 0.75, 4 examples.
  // User 3: positive 0.4 vs negatives 0.5 (loss) and 0.2 (win) -> 0.5, 3 examples.
  // User 9: only positives -> no AUC, skipped. GAUC = (4 * 0.75 + 3 * 0.5) / 7 = 4.5 / 7.
  const std::vector<float> p = {0.9f, 0.8f, 0.3f, 0.1f, 0.4f, 0.5f, 0.2f, 0.7f, 0.6f};
  const std::vector<float> y = {1, 0, 1, 0, 1, 0, 0, 1, 1};
  const std::vector<uint64_t> u = {7, 7, 7, 7, 3, 3, 3, 9, 9};
  BinaryMetrics m;
  ASSERT_TRUE(m.Add(p.data(), y.data(), u.data(), 9).ok());
  EXPECT_NEAR(m.Gauc(), 4.5 / 7, 1e-15);
  EXPECT_EQ(m.GaucUsers(), 2);

  // The same examples interleaved across users (and added one at a time): grouping is by id.
  BinaryMetrics shuffled;
  for (int i : {8, 4, 0, 1, 5, 2, 7, 6, 3}) ASSERT_TRUE(shuffled.Add(p[i], y[i], u[i]).ok());
  EXPECT_NEAR(shuffled.Gauc(), 4.5 / 7, 1e-15);
  EXPECT_EQ(shuffled.GaucUsers(), 2);
  // Plain AUC over all 9: positives {0.9, 0.3, 0.4, 0.7, 0.6} vs negatives {0.8, 0.1, 0.5, 0.2}:
  // wins 4 + 2 + 2 + 3 + 3 = 14 of 20.
  EXPECT_NEAR(m.Auc(), 14.0 / 20, 1e-15);
}

TEST(BinaryMetrics, Gauc_MatchesPerUserBruteForce_Random) {
  Rng rng(5);
  const int64_t n = 4000;
  const auto s = TiedScores(rng, n, 50);
  const auto y = RandomLabels(rng, n, 0.4);
  std::vector<uint64_t> u(n);
  for (auto& v : u) v = rng.UniformInt(300) * 1000003ULL;  // sparse, unordered user ids
  BinaryMetrics m;
  ASSERT_TRUE(m.Add(s.data(), y.data(), u.data(), n).ok());
  std::vector<uint64_t> users(u);
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  double num = 0, den = 0;
  int64_t counted = 0;
  for (uint64_t user : users) {
    std::vector<float> su, yu;
    for (int64_t i = 0; i < n; ++i)
      if (u[i] == user) su.push_back(s[i]), yu.push_back(y[i]);
    const auto pos = std::count(yu.begin(), yu.end(), 1.0f);
    if (pos == 0 || pos == static_cast<long>(yu.size())) continue;
    num += yu.size() * BruteAuc(su, yu);
    den += yu.size();
    ++counted;
  }
  ASSERT_GT(counted, 100);
  EXPECT_NEAR(m.Gauc(), num / den, 1e-12);
  EXPECT_EQ(m.GaucUsers(), counted);
}

TEST(BinaryMetrics, LogLossMeanAccuracy_AgainstDirectFormulas) {
  Rng rng(3);
  const int64_t n = 1000;
  std::vector<float> p(n);
  for (auto& v : p) v = rng.UniformFloat();
  p[0] = 0.0f;  // clipped: -log(eps) for a positive
  p[1] = 1.0f;
  p[2] = 0.5f;  // accuracy threshold: 0.5 predicts a click
  auto y = RandomLabels(rng, n, 0.5);
  y[0] = 1, y[1] = 1, y[2] = 1;
  BinaryMetrics m;
  ASSERT_TRUE(m.Add(p.data(), y.data(), nullptr, n).ok());
  double ll = 0, mean = 0, correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double c = std::min(std::max<double>(p[i], kLogLossEps), 1 - kLogLossEps);
    ll += y[i] == 1 ? -std::log(c) : -std::log(1 - c);
    mean += p[i];
    correct += (p[i] >= 0.5f) == (y[i] == 1);
  }
  EXPECT_NEAR(m.LogLoss(), ll / n, 1e-12);
  EXPECT_NEAR(m.MeanPrediction(), mean / n, 1e-12);
  EXPECT_NEAR(m.Accuracy(), correct / n, 1e-15);
  EXPECT_NEAR(m.PositiveRate(), std::count(y.begin(), y.end(), 1.0f) / double(n), 1e-15);
  EXPECT_GT(m.LogLoss(), -std::log(kLogLossEps) / n);  // the clipped term is in there

  BinaryMetrics single;
  ASSERT_TRUE(single.Add(0.0f, 1.0f).ok());
  EXPECT_NEAR(single.LogLoss(), -std::log(kLogLossEps), 1e-9);
  EXPECT_TRUE(std::isnan(BinaryMetrics().LogLoss()));
}

TEST(BinaryMetrics, MergeEqualsConcatenation) {
  Rng rng(8);
  const int64_t n = 3000, cut = 1234;
  const auto s = TiedScores(rng, n, 40);
  const auto y = RandomLabels(rng, n, 0.5);
  std::vector<uint64_t> u(n);
  for (auto& v : u) v = rng.UniformInt(100);
  BinaryMetrics all, a, b;
  ASSERT_TRUE(all.Add(s.data(), y.data(), u.data(), n).ok());
  ASSERT_TRUE(a.Add(s.data(), y.data(), u.data(), cut).ok());
  ASSERT_TRUE(b.Add(s.data() + cut, y.data() + cut, u.data() + cut, n - cut).ok());
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.Count(), all.Count());
  EXPECT_EQ(a.Auc(), all.Auc());  // same multiset of examples: bit-identical
  EXPECT_EQ(a.Gauc(), all.Gauc());
  EXPECT_EQ(a.Accuracy(), all.Accuracy());
  EXPECT_NEAR(a.LogLoss(), all.LogLoss(), 1e-13);
  EXPECT_NEAR(a.MeanPrediction(), all.MeanPrediction(), 1e-13);
  EXPECT_FALSE(a.Merge(BinaryMetrics(1e-3)).ok());
}

TEST(BinaryMetrics, RejectsBadInputAndAddsNothing) {
  BinaryMetrics m;
  const float p[3] = {0.2f, std::nanf(""), 0.4f}, y[3] = {1, 0, 1};
  Status s = m.Add(p, y, nullptr, 3);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("example 1"), std::string::npos) << s;
  EXPECT_EQ(m.Count(), 0);
  const float p2[2] = {0.2f, 1.5f}, y2[2] = {1, 0};
  EXPECT_FALSE(m.Add(p2, y2, nullptr, 2).ok());
  const float p3[2] = {0.2f, 0.5f}, y3[2] = {1, 2};
  s = m.Add(p3, y3, nullptr, 2);
  EXPECT_NE(s.message().find("label"), std::string::npos) << s;
  EXPECT_EQ(m.Count(), 0);
  EXPECT_TRUE(std::isnan(m.Auc()));
}

// ---------------------------------------------------------------------------------------------
// RankingMetrics

struct BruteRank {
  double hr = 0, ndcg = 0, auc = 0;
};

// The peer's rank_metrics, literally: rank = #neg >= pos; HR = [rank < k]; NDCG = HR / log2(rank
// + 2); AUC = (#neg < pos + 0.5 #neg == pos) / #neg; each averaged over users.
BruteRank PeerRankMetrics(const std::vector<std::vector<float>>& rows, int k) {
  BruteRank r;
  for (const auto& s : rows) {
    int rank = 0;
    double below = 0, ties = 0;
    for (size_t j = 1; j < s.size(); ++j) {
      rank += s[j] >= s[0];
      below += s[j] < s[0];
      ties += s[j] == s[0];
    }
    const bool hit = rank < k;
    r.hr += hit;
    r.ndcg += hit / std::log2(rank + 2.0);
    r.auc += (below + 0.5 * ties) / (s.size() - 1);
  }
  r.hr /= rows.size();
  r.ndcg /= rows.size();
  r.auc /= rows.size();
  return r;
}

TEST(RankingMetrics, HandComputed) {
  // User 0: negatives {0.9, 0.5, 0.1} vs 0.5: rank 2 (0.9 and the tie), AUC (1 + 0.5) / 3.
  // User 1: the positive beats all: rank 0, AUC 1.
  const std::vector<float> s = {0.5f, 0.9f, 0.5f, 0.1f, 1.0f, 0.0f, 0.0f, 0.0f};
  RankingMetrics k2(2), k3(3);
  ASSERT_TRUE(k2.Add(s.data(), 2, 4).ok());
  ASSERT_TRUE(k3.Add(s.data(), 2, 4).ok());
  EXPECT_EQ(k2.Users(), 2);
  EXPECT_DOUBLE_EQ(k2.HitRate(), 0.5);
  EXPECT_DOUBLE_EQ(k2.Ndcg(), 0.5 * 1.0);
  EXPECT_DOUBLE_EQ(k3.HitRate(), 1.0);
  EXPECT_DOUBLE_EQ(k3.Ndcg(), 0.5 * (1.0 + 1.0 / std::log2(4.0)));
  EXPECT_DOUBLE_EQ(k2.SampledAuc(), 0.5 * (1.5 / 3 + 1.0));
}

TEST(RankingMetrics, ConstantScorerHasZeroHitRate) {
  const std::vector<float> s(5 * 101, 0.25f);
  RankingMetrics m(10);
  ASSERT_TRUE(m.Add(s.data(), 5, 101).ok());
  EXPECT_EQ(m.HitRate(), 0.0);  // ties count against the held-out item
  EXPECT_EQ(m.Ndcg(), 0.0);
  EXPECT_EQ(m.SampledAuc(), 0.5);
}

TEST(RankingMetrics, MatchesPeerDefinition_RandomListsWithTies) {
  Rng rng(21);
  for (int k : {1, 5, 10, 200}) {
    RankingMetrics m(k);
    std::vector<std::vector<float>> rows;
    // Several calls with different candidate counts (1, 2, 11 and 101 negatives).
    for (int c : {2, 3, 12, 102}) {
      const int users = 50 + static_cast<int>(rng.UniformInt(100));
      const auto s = TiedScores(rng, static_cast<int64_t>(users) * c, c == 102 ? 30 : 4);
      ASSERT_TRUE(m.Add(s.data(), users, c).ok());
      for (int u = 0; u < users; ++u) rows.emplace_back(s.begin() + u * c, s.begin() + (u + 1) * c);
    }
    const BruteRank want = PeerRankMetrics(rows, k);
    EXPECT_EQ(m.Users(), static_cast<int64_t>(rows.size()));
    EXPECT_NEAR(m.HitRate(), want.hr, 1e-12) << "k=" << k;
    EXPECT_NEAR(m.Ndcg(), want.ndcg, 1e-12) << "k=" << k;
    EXPECT_NEAR(m.SampledAuc(), want.auc, 1e-12) << "k=" << k;
  }
}

// Several eval.top_k cut-offs are reported from one accumulator of the largest (each list
// ranked once): HR@j and NDCG@j of every j <= K equal those of an accumulator of cut-off j, bit
// for bit, and the peer's definition; j outside [1, K] has no figure (its ranks were not kept).
TEST(RankingMetrics, EveryCutoffUpToKFromOneAccumulator) {
  Rng rng(7);
  const int users = 400, c = 101, big = 50;
  const auto s = TiedScores(rng, static_cast<int64_t>(users) * c, 20);
  std::vector<std::vector<float>> rows;
  for (int u = 0; u < users; ++u) rows.emplace_back(s.begin() + u * c, s.begin() + (u + 1) * c);
  RankingMetrics all(big);
  ASSERT_TRUE(all.Add(s.data(), users, c).ok());
  for (int j = 1; j <= big; ++j) {
    RankingMetrics one(j);
    ASSERT_TRUE(one.Add(s.data(), users, c).ok());
    EXPECT_EQ(all.HitRateAt(j), one.HitRate()) << "j=" << j;
    EXPECT_EQ(all.NdcgAt(j), one.Ndcg()) << "j=" << j;
    const BruteRank want = PeerRankMetrics(rows, j);
    EXPECT_NEAR(all.HitRateAt(j), want.hr, 1e-12) << "j=" << j;
    EXPECT_NEAR(all.NdcgAt(j), want.ndcg, 1e-12) << "j=" << j;
  }
  EXPECT_EQ(all.HitRateAt(big), all.HitRate());
  EXPECT_EQ(all.NdcgAt(big), all.Ndcg());
  for (int j : {0, -1, big + 1}) {
    EXPECT_TRUE(std::isnan(all.HitRateAt(j))) << j;
    EXPECT_TRUE(std::isnan(all.NdcgAt(j))) << j;
  }
  EXPECT_TRUE(std::isnan(RankingMetrics(10).HitRateAt(5)));  // no users
}

TEST(RankingMetrics, AddCountsAndMergeEqualAdd) {
  Rng rng(4);
  const int users = 300, c = 101;
  const auto s = TiedScores(rng, users * c, 25);
  RankingMetrics all(10), a(10), b(10), counts(10);
  ASSERT_TRUE(all.Add(s.data(), users, c).ok());
  ASSERT_TRUE(b.Add(s.data() + 100 * c, users - 100, c).ok());
  ASSERT_TRUE(a.Add(s.data(), 100, c).ok());
  ASSERT_TRUE(b.Merge(a).ok());  // merge order reversed on purpose
  std::vector<int32_t> below(users), ties(users);
  for (int u = 0; u < users; ++u) {
    for (int j = 1; j < c; ++j) {
      below[u] += s[u * c + j] < s[u * c];
      ties[u] += s[u * c + j] == s[u * c];
    }
  }
  ASSERT_TRUE(counts.AddCounts(below.data(), ties.data(), users, c - 1).ok());
  for (const RankingMetrics* m : {&b, &counts}) {
    EXPECT_EQ(m->Users(), all.Users());
    EXPECT_EQ(m->HitRate(), all.HitRate());  // integer state: bit-identical
    EXPECT_EQ(m->Ndcg(), all.Ndcg());
    EXPECT_EQ(m->SampledAuc(), all.SampledAuc());
  }
  EXPECT_FALSE(b.Merge(RankingMetrics(5)).ok());
}

TEST(RankingMetrics, RejectsBadInput) {
  RankingMetrics m;
  const float one[1] = {0.3f};
  EXPECT_EQ(m.Add(one, 1, 1).code(), StatusCode::kInvalidArgument);
  const float s[6] = {0.1f, 0.2f, 0.3f, 0.4f, std::nanf(""), 0.6f};
  const Status st = m.Add(s, 2, 3);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("user 1 candidate 1"), std::string::npos) << st;
  EXPECT_EQ(m.Users(), 0);
  EXPECT_TRUE(std::isnan(m.HitRate()));
  const int32_t below[1] = {3}, ties[1] = {2};
  EXPECT_FALSE(m.AddCounts(below, ties, 1, 4).ok());
}

// ---------------------------------------------------------------------------------------------
// RecallMetrics

TEST(RecallMetrics, HandComputed) {
  RecallMetrics m(3);
  // Top-3 distinct of {5, 5, 2, 9, 4} = {5, 2, 9}; relevant {9, 4, 4, 7} = {4, 7, 9}: 1 of 3.
  const uint32_t r1[5] = {5, 5, 2, 9, 4}, rel1[4] = {9, 4, 4, 7};
  ASSERT_TRUE(m.AddRetrieved(r1, 5, rel1, 4).ok());
  // Only 2 retrieved, relevant {1, 2}: 2 of 2.
  const uint32_t r2[2] = {2, 1}, rel2[2] = {1, 2};
  ASSERT_TRUE(m.AddRetrieved(r2, 2, rel2, 2).ok());
  // No hit.
  const uint32_t r3[3] = {1, 2, 3}, rel3[1] = {8};
  ASSERT_TRUE(m.AddRetrieved(r3, 3, rel3, 1).ok());
  EXPECT_EQ(m.Users(), 3);
  EXPECT_NEAR(m.Recall(), (1.0 / 3 + 1.0 + 0.0) / 3, 1e-15);
  EXPECT_NEAR(m.HitRate(), 2.0 / 3, 1e-15);
}

TEST(RecallMetrics, AddScoresMatchesStableSort_RandomWithTies) {
  Rng rng(17);
  for (int k : {1, 10, 50, 500}) {
    RecallMetrics by_scores(k), by_list(k), a(k), b(k);
    for (int user = 0; user < 40; ++user) {
      const int64_t n = 300;
      const auto s = TiedScores(rng, n, 15);
      std::vector<uint32_t> rel(1 + rng.UniformInt(8));
      for (auto& r : rel) r = static_cast<uint32_t>(rng.UniformInt(n));
      std::vector<uint32_t> order(n);
      for (int64_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
      std::stable_sort(order.begin(), order.end(),
                       [&](uint32_t x, uint32_t y) { return s[x] > s[y]; });
      ASSERT_TRUE(by_scores.AddScores(s.data(), n, rel.data(), static_cast<int>(rel.size())).ok());
      ASSERT_TRUE(by_list
                      .AddRetrieved(order.data(), static_cast<int>(n), rel.data(),
                                    static_cast<int>(rel.size()))
                      .ok());
      RecallMetrics& half = user < 15 ? a : b;
      ASSERT_TRUE(half.AddScores(s.data(), n, rel.data(), static_cast<int>(rel.size())).ok());
    }
    EXPECT_NEAR(by_scores.Recall(), by_list.Recall(), 1e-15) << "k=" << k;
    EXPECT_EQ(by_scores.HitRate(), by_list.HitRate());
    ASSERT_TRUE(a.Merge(b).ok());
    EXPECT_NEAR(a.Recall(), by_scores.Recall(), 1e-14);
    EXPECT_EQ(a.Users(), by_scores.Users());
  }
}

TEST(RecallMetrics, RejectsBadInput) {
  RecallMetrics m(5);
  const uint32_t r[2] = {1, 2};
  EXPECT_EQ(m.AddRetrieved(r, 2, r, 0).code(), StatusCode::kInvalidArgument);
  const float s[3] = {0.1f, std::nanf(""), 0.2f};
  EXPECT_EQ(m.AddScores(s, 3, r, 1).code(), StatusCode::kInvalidArgument);
  const float ok[3] = {0.1f, 0.3f, 0.2f};
  const uint32_t far[1] = {3};
  EXPECT_EQ(m.AddScores(ok, 3, far, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.Users(), 0);
  EXPECT_FALSE(m.Merge(RecallMetrics(6)).ok());
}

// ---------------------------------------------------------------------------------------------
// Serialization (for merging across workers) and Compute()

TEST(MetricsSerialization, RoundTripThenMergeEqualsConcatenation) {
  Rng rng(30);
  const int64_t n = 500;
  const auto s = TiedScores(rng, n, 20);
  const auto y = RandomLabels(rng, n, 0.5);
  std::vector<uint64_t> u(n);
  for (auto& v : u) v = rng.UniformInt(20);
  BinaryMetrics all, a, b;
  ASSERT_TRUE(all.Add(s.data(), y.data(), u.data(), n).ok());
  ASSERT_TRUE(a.Add(s.data(), y.data(), u.data(), 200).ok());
  ASSERT_TRUE(b.Add(s.data() + 200, y.data() + 200, u.data() + 200, n - 200).ok());
  auto b2 = BinaryMetrics::Deserialize(b.Serialize());
  ASSERT_TRUE(b2.ok()) << b2.status();
  ASSERT_TRUE(a.Merge(*b2).ok());
  const BinaryMetricsResult got = a.Compute(), want = all.Compute();
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.positives, want.positives);
  EXPECT_EQ(got.auc, want.auc);
  EXPECT_EQ(got.gauc, want.gauc);
  EXPECT_EQ(got.gauc_users, want.gauc_users);
  EXPECT_EQ(got.accuracy, want.accuracy);
  EXPECT_NEAR(got.logloss, want.logloss, 1e-13);
  EXPECT_NEAR(got.mean_prediction, want.mean_prediction, 1e-13);
  EXPECT_EQ(want.auc, all.Auc());
  EXPECT_EQ(want.gauc, all.Gauc());
  EXPECT_EQ(want.logloss, all.LogLoss());

  const int users = 50, c = 21;
  const auto rs = TiedScores(rng, users * c, 10);
  RankingMetrics rall(10), ra(10), rb(10);
  ASSERT_TRUE(rall.Add(rs.data(), users, c).ok());
  ASSERT_TRUE(ra.Add(rs.data(), 20, c).ok());
  ASSERT_TRUE(rb.Add(rs.data() + 20 * c, users - 20, c).ok());
  auto rb2 = RankingMetrics::Deserialize(rb.Serialize());
  ASSERT_TRUE(rb2.ok()) << rb2.status();
  ASSERT_TRUE(ra.Merge(*rb2).ok());
  EXPECT_EQ(ra.HitRate(), rall.HitRate());
  EXPECT_EQ(ra.Ndcg(), rall.Ndcg());
  EXPECT_EQ(ra.SampledAuc(), rall.SampledAuc());

  RecallMetrics ca(3);
  const uint32_t ret[3] = {1, 2, 3}, rel[2] = {3, 4};
  ASSERT_TRUE(ca.AddRetrieved(ret, 3, rel, 2).ok());
  auto cb = RecallMetrics::Deserialize(ca.Serialize());
  ASSERT_TRUE(cb.ok()) << cb.status();
  EXPECT_EQ(cb->Recall(), 0.5);
  EXPECT_EQ(cb->HitRate(), 1.0);
  EXPECT_EQ(cb->k(), 3);
}

// Every truncation, a trailing byte, the wrong accumulator's bytes and corrupted fields give
// DATA_LOSS, never a crash.
TEST(MetricsSerialization, CorruptBytesAreRejected) {
  BinaryMetrics m;
  ASSERT_TRUE(m.Add(0.3f, 1.0f, 5).ok());
  ASSERT_TRUE(m.Add(0.6f, 0.0f, 5).ok());
  RankingMetrics r(4);
  const float s[6] = {0.5f, 0.1f, 0.9f, 0.2f, 0.2f, 0.3f};
  ASSERT_TRUE(r.Add(s, 2, 3).ok());
  RecallMetrics c(2);
  const uint32_t ids[2] = {1, 2};
  ASSERT_TRUE(c.AddRetrieved(ids, 2, ids, 1).ok());
  const std::string bm = m.Serialize(), rm = r.Serialize(), cm = c.Serialize();
  for (size_t len = 0; len < bm.size(); ++len) {
    EXPECT_EQ(BinaryMetrics::Deserialize(bm.substr(0, len)).status().code(), StatusCode::kDataLoss)
        << len;
  }
  for (size_t len = 0; len < rm.size(); ++len) {
    EXPECT_EQ(RankingMetrics::Deserialize(rm.substr(0, len)).status().code(), StatusCode::kDataLoss)
        << len;
  }
  for (size_t len = 0; len < cm.size(); ++len) {
    EXPECT_EQ(RecallMetrics::Deserialize(cm.substr(0, len)).status().code(), StatusCode::kDataLoss)
        << len;
  }
  EXPECT_FALSE(BinaryMetrics::Deserialize(bm + "x").ok());
  EXPECT_FALSE(RankingMetrics::Deserialize(rm + "x").ok());
  EXPECT_FALSE(BinaryMetrics::Deserialize(rm).ok());
  EXPECT_FALSE(RecallMetrics::Deserialize(bm).ok());
  // A NaN probability in the example block (offset 56 + 8 of example 0).
  std::string bad = bm;
  const float nan = std::nanf("");
  std::memcpy(&bad[56 + 8], &nan, sizeof(float));
  const Status st = BinaryMetrics::Deserialize(bad).status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("example 0"), std::string::npos) << st;
  // Flipping any single byte never crashes (it may or may not be detected).
  for (const std::string* src : {&bm, &rm, &cm}) {
    for (size_t i = 0; i < src->size(); ++i) {
      std::string x = *src;
      x[i] = static_cast<char>(x[i] ^ 0x5a);
      if (auto d = BinaryMetrics::Deserialize(x); d.ok()) (void)d->Compute();
      if (auto d = RankingMetrics::Deserialize(x); d.ok()) (void)d->Ndcg();
      if (auto d = RecallMetrics::Deserialize(x); d.ok()) (void)d->Recall();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Optional cross-check against sklearn and the peer's code. The file (written by
// bench/peer_check/metrics_vs_peer.py) holds blocks:
//   binary <n>  then n lines `prob label user`, then `expect auc logloss`
//   rank <users> <cands> <k>  then users lines of scores, then `expect hr ndcg auc`
TEST(PeerCheck, MatchesSklearnAndPeerRankMetrics) {
  const char* path = std::getenv("IPS_PEER_CHECK_FILE");
  if (path == nullptr) GTEST_SKIP() << "IPS_PEER_CHECK_FILE not set (see bench/peer_check/)";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "cannot open " << path;
  std::string kind;
  int blocks = 0;
  while (in >> kind) {
    std::string tag;
    if (kind == "binary") {
      int64_t n;
      in >> n;
      std::vector<float> p(n), y(n);
      std::vector<uint64_t> u(n);
      for (int64_t i = 0; i < n; ++i) in >> p[i] >> y[i] >> u[i];
      double auc, logloss;
      in >> tag >> auc >> logloss;
      ASSERT_EQ(tag, "expect");
      BinaryMetrics m;
      ASSERT_TRUE(m.Add(p.data(), y.data(), u.data(), n).ok());
      EXPECT_NEAR(m.Auc(), auc, 1e-12) << "block " << blocks;
      EXPECT_NEAR(m.LogLoss(), logloss, 1e-6 * std::max(1.0, logloss)) << "block " << blocks;
    } else if (kind == "rank") {
      int64_t users;
      int cands, k;
      in >> users >> cands >> k;
      std::vector<float> s(users * cands);
      for (auto& v : s) in >> v;
      double hr, ndcg, auc;
      in >> tag >> hr >> ndcg >> auc;
      ASSERT_EQ(tag, "expect");
      RankingMetrics m(k);
      ASSERT_TRUE(m.Add(s.data(), users, cands).ok());
      EXPECT_NEAR(m.HitRate(), hr, 1e-12) << "block " << blocks;
      EXPECT_NEAR(m.Ndcg(), ndcg, 1e-12) << "block " << blocks;
      EXPECT_NEAR(m.SampledAuc(), auc, 1e-12) << "block " << blocks;
    } else {
      FAIL() << "unknown block " << kind;
    }
    ++blocks;
  }
  EXPECT_GT(blocks, 0);
}

}  // namespace
}  // namespace ips
