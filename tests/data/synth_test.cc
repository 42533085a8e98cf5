// Tests of the synthetic generator: determinism, the canonical format, and that each planted
// structure (Zipf popularity, interests, drift, domains, cold start, actions) is measurably in the
// stream and agrees with SynthModel's recomputation. Also bounded memory and write errors.
#include "worker/synth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "worker/line_reader.h"
#include "worker/record_parsers.h"

namespace ips {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/synth_test_" + std::to_string(getpid()) + "_" + name;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Generated {
  std::vector<Event> events;
  std::vector<SynthEventTruth> truth;
};

Generated Generate(const SynthModel& model) {
  Generated g;
  SynthGenerator gen(&model);
  Event e;
  SynthEventTruth t;
  while (gen.Next(&e, &t)) {
    g.events.push_back(e);
    g.truth.push_back(t);
  }
  return g;
}

std::unique_ptr<SynthModel> MakeModel(const SynthOptions& o) {
  auto m = SynthModel::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(m).value();
}

SynthOptions Small() {
  SynthOptions o;
  o.events = 300000;
  o.users = 2000;
  o.items = 50000;
  o.categories = 100;
  o.seed = 7;
  // Each test switches on the structure it checks.
  o.drift_at = 0;
  o.domain1_fraction = 0;
  o.cold_users = 0;
  o.cold_items = 0;
  return o;
}

TEST(ZipfSampler, AliasAndRejectionInversionMatchProbabilities) {
  for (uint64_t n : {uint64_t{1000}, uint64_t{1000000}}) {  // alias table / rejection-inversion
    for (double alpha : {0.8, 1.0, 1.3}) {
      ZipfSampler z(n, alpha);
      Rng rng(42);
      constexpr int kDraws = 400000;
      std::vector<int> counts(5, 0);
      for (int i = 0; i < kDraws; ++i) {
        const uint64_t k = z.Sample(rng);
        ASSERT_LT(k, n);
        if (k < 5) ++counts[k];
      }
      for (int k = 0; k < 5; ++k) {
        const double p = z.Probability(k);
        const double sd = std::sqrt(p * (1 - p) / kDraws);
        EXPECT_NEAR(counts[k] / double{kDraws}, p, 5 * sd + 1e-4)
            << "n=" << n << " alpha=" << alpha << " rank=" << k;
      }
    }
  }
}

// Ranks beyond the alias-table head come from rejection-inversion: check the mass of tail bins.
TEST(ZipfSampler, TailBinsMatchExactMass) {
  for (uint64_t n : {uint64_t{70000}, uint64_t{3000000}}) {
    for (double alpha : {0.5, 1.0, 1.2}) {
      ZipfSampler z(n, alpha);
      const uint64_t edges[] = {0, 1000, 65536, 68000, 200000, 1000000, n};
      std::vector<double> want(6, 0.0);
      double total = 0;
      for (uint64_t k = 0; k < n; ++k) {
        const double p = std::pow(static_cast<double>(k + 1), -alpha);
        total += p;
        for (int b = 0; b < 6; ++b)
          if (k >= edges[b] && k < edges[b + 1]) want[b] += p;
      }
      Rng rng(3);
      constexpr int kDraws = 400000;
      std::vector<int> got(6, 0);
      for (int i = 0; i < kDraws; ++i) {
        const uint64_t k = z.Sample(rng);
        ASSERT_LT(k, n);
        for (int b = 0; b < 6; ++b)
          if (k >= edges[b] && k < edges[b + 1]) ++got[b];
      }
      for (int b = 0; b < 6; ++b) {
        const double p = want[b] / total;
        const double sd = std::sqrt(p * (1 - p) / kDraws);
        EXPECT_NEAR(got[b] / double{kDraws}, p, 5 * sd + 1e-5)
            << "n=" << n << " alpha=" << alpha << " bin " << edges[b] << ".." << edges[b + 1];
      }
    }
  }
}

TEST(ZipfSampler, UniformAndSingleton) {
  Rng rng(1);
  ZipfSampler one(1, 1.1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(one.Sample(rng), 0u);
  ZipfSampler flat(10, 0.0);
  std::vector<int> c(10, 0);
  for (int i = 0; i < 100000; ++i) ++c[flat.Sample(rng)];
  for (int k = 0; k < 10; ++k) EXPECT_NEAR(c[k] / 1e5, 0.1, 0.006);
}

TEST(Synth, SameSeedSameBytesDifferentSeedDifferentBytes) {
  SynthOptions o = Small();
  o.events = 200000;
  o.drift_at = 0.5;
  o.domain1_fraction = 0.2;
  o.cold_users = 0.2;
  o.cold_items = 0.1;
  o.drift_rate = 1.5;
  const std::string a = TempPath("a.tsv"), b = TempPath("b.tsv"), c = TempPath("c.tsv");
  const std::string agz = TempPath("a.tsv.gz"), bgz = TempPath("b.tsv.gz");
  ASSERT_TRUE(WriteSynthEvents(o, a, a + ".truth.json", 1, 20, {}, nullptr).ok());
  ASSERT_TRUE(WriteSynthEvents(o, b, b + ".truth.json", 1, 20, {}, nullptr).ok());
  ASSERT_TRUE(WriteSynthEvents(o, agz, "", 6, 0, {}, nullptr).ok());
  ASSERT_TRUE(WriteSynthEvents(o, bgz, "", 6, 0, {}, nullptr).ok());
  o.seed += 1;
  ASSERT_TRUE(WriteSynthEvents(o, c, "", 1, 0, {}, nullptr).ok());
  const std::string da = ReadFile(a), db = ReadFile(b), dc = ReadFile(c);
  EXPECT_GT(da.size(), 1000000u);
  EXPECT_TRUE(da == db) << "same seed must give the same bytes";
  EXPECT_FALSE(da == dc) << "a different seed must give a different stream";
  EXPECT_TRUE(ReadFile(agz) == ReadFile(bgz));
  EXPECT_TRUE(ReadFile(a + ".truth.json") == ReadFile(b + ".truth.json"));
  for (const auto& p : {a, b, c, agz, bgz, a + ".truth.json", b + ".truth.json"})
    std::remove(p.c_str());
}

// Seek lands on exactly the event a generator run from the start produces there.
TEST(Synth, SeekMatchesTheFullStream) {
  SynthOptions o = Small();
  o.events = 4 * kSynthChunk + 100;
  o.drift_at = 0.3;
  o.drift_rate = 2;
  o.cold_users = 0.2;
  auto model = MakeModel(o);
  const Generated g = Generate(*model);
  ASSERT_EQ(static_cast<int64_t>(g.events.size()), o.events);
  for (int64_t start : {int64_t{0}, kSynthChunk, 3 * kSynthChunk + 17, o.events - 1, o.events}) {
    SynthGenerator gen(model.get());
    gen.Seek(start);
    Event e;
    for (int64_t i = start; i < std::min(o.events, start + 1000); ++i) {
      ASSERT_TRUE(gen.Next(&e));
      ASSERT_EQ(e.user, g.events[i].user) << i;
      ASSERT_EQ(e.item, g.events[i].item) << i;
      ASSERT_EQ(e.timestamp, g.events[i].timestamp) << i;
      ASSERT_EQ(e.action, g.events[i].action) << i;
    }
    if (start == o.events) {
      EXPECT_FALSE(gen.Next(&e));
    }
  }
}

// The gzip log parses line by line with the canonical event parser, in non-decreasing time.
TEST(Synth, GzipLogParsesAsCanonicalEvents) {
  SynthOptions o = Small();
  o.events = 100000;
  o.domain1_fraction = 0.3;
  o.drift_at = 0.4;
  const std::string path = TempPath("log.tsv.gz"), truth = path + ".truth.json";
  SynthStats stats;
  ASSERT_TRUE(WriteSynthEvents(o, path, truth, 1, 10, {}, &stats).ok());
  auto model = MakeModel(o);
  auto reader = LineReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->gzip());
  std::string_view line;
  int64_t n = 0, last_ts = INT64_MIN;
  for (;;) {
    auto more = (*reader)->Next(&line);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    Event e;
    FieldError err;
    ASSERT_TRUE(ParseEventLine(line, &e, &err))
        << "line " << n + 1 << ": " << err.field << " expected " << err.expected;
    ASSERT_GE(e.timestamp, last_ts);
    last_ts = e.timestamp;
    ASSERT_GE(e.user, 1u);
    ASSERT_LE(e.user, o.users);
    int d;
    uint32_t c;
    uint64_t rank;
    ASSERT_TRUE(model->LocateItem(e.item, &d, &c, &rank)) << e.item;
    ASSERT_EQ(d, e.domain);
    ASSERT_EQ(e.category, model->CategoryId(d, c)) << "item " << e.item;
    ++n;
  }
  EXPECT_EQ(n, o.events);
  EXPECT_EQ(stats.events, o.events);
  EXPECT_EQ(stats.domain_events[0] + stats.domain_events[1], o.events);
  EXPECT_EQ(last_ts, model->TimestampAt(o.events - 1));
  const std::string js = ReadFile(truth);
  EXPECT_NE(js.find("\"planted_drift\": {\"index\": 40000"), std::string::npos)
      << js.substr(0, 400);
  EXPECT_NE(js.find("\"interests_after_drift\""), std::string::npos);
  EXPECT_NE(js.find("\"domain1\": " + std::to_string(stats.domain_events[1])), std::string::npos);
  std::remove(path.c_str());
  std::remove(truth.c_str());
}

TEST(Synth, ItemsBelongToCategoryRangesAndLocateInverts) {
  SynthOptions o = Small();
  o.items = 1003;  // uneven category sizes (10 and 11)
  o.domain1_items = 517;
  o.domain1_fraction = 0.5;
  auto model = MakeModel(o);
  uint64_t expect_next = 1;
  for (int d = 0; d < 2; ++d) {
    for (uint32_t c = 0; c < o.categories; ++c) {
      ASSERT_EQ(model->CategoryFirstItem(d, c), expect_next);
      const uint64_t size = model->CategorySize(d, c);
      for (uint64_t r = 0; r < size; ++r) {
        int dd;
        uint32_t cc;
        uint64_t rr;
        ASSERT_TRUE(model->LocateItem(expect_next + r, &dd, &cc, &rr));
        ASSERT_EQ(dd, d);
        ASSERT_EQ(cc, c);
        ASSERT_EQ(rr, r);
      }
      expect_next += size;
    }
  }
  EXPECT_EQ(expect_next, o.items + o.domain1_items + 1);
  int d;
  uint32_t c;
  uint64_t r;
  EXPECT_FALSE(model->LocateItem(0, &d, &c, &r));
  EXPECT_FALSE(model->LocateItem(expect_next, &d, &c, &r));
}

// Within a category, item popularity follows the planted Zipf: the top item's share matches.
TEST(Synth, ItemPopularityWithinCategoryIsZipf) {
  SynthOptions o = Small();
  auto model = MakeModel(o);
  const Generated g = Generate(*model);
  const uint64_t size = model->CategorySize(0, 0);
  const ZipfSampler& z = model->RankSampler(size);
  std::vector<int64_t> by_rank(size, 0);
  int64_t total = 0;
  for (const auto& t : g.truth) {
    if (t.category_index != 0) continue;
    ++by_rank[t.item_rank];
    ++total;
  }
  ASSERT_GT(total, 10000);
  for (int r = 0; r < 3; ++r) {
    const double p = z.Probability(r);
    EXPECT_NEAR(by_rank[r] / double(total), p, 5 * std::sqrt(p * (1 - p) / total)) << "rank " << r;
  }
  // Popularity is heavy-tailed: the top 1% of a category's items get far more than 1%.
  int64_t top = 0;
  for (uint64_t r = 0; r < size / 100 + 1; ++r) top += by_rank[r];
  EXPECT_GT(top / double(total), 0.3);
}

// Users' events concentrate in their planted interests; the top-k observed categories of a user
// are (mostly) exactly the planted set.
TEST(Synth, EventsConcentrateInPlantedInterests) {
  SynthOptions o = Small();
  o.noise = 0.1;
  auto model = MakeModel(o);
  const Generated g = Generate(*model);
  std::unordered_map<uint64_t, std::map<uint32_t, int>> per_user;
  for (size_t i = 0; i < g.events.size(); ++i)
    ++per_user[g.events[i].user][g.truth[i].category_index];
  int users = 0, exact = 0;
  double in_planted_sum = 0, topk_sum = 0;
  for (const auto& [u, cats] : per_user) {
    int n = 0;
    for (const auto& kv : cats) n += kv.second;
    if (n < 100) continue;
    uint32_t planted[kSynthMaxInterests];
    const int k = model->Interests(u, 0, planted);
    std::set<uint32_t> want(planted, planted + k);
    ASSERT_EQ(static_cast<int>(want.size()), k) << "interests must be distinct";
    int in = 0;
    for (const auto& kv : cats)
      if (want.count(kv.first)) in += kv.second;
    std::vector<std::pair<int, uint32_t>> sorted;
    for (const auto& kv : cats) sorted.push_back({kv.second, kv.first});
    std::sort(sorted.rbegin(), sorted.rend());
    int topk = 0;
    std::set<uint32_t> got;
    for (int j = 0; j < k && j < static_cast<int>(sorted.size()); ++j) {
      topk += sorted[j].first;
      got.insert(sorted[j].second);
    }
    const double frac_topk = topk / double(n);
    EXPECT_GT(frac_topk, 0.7) << "user " << u;
    in_planted_sum += in / double(n);
    topk_sum += frac_topk;
    exact += got == want;
    ++users;
  }
  ASSERT_GT(users, 200);
  EXPECT_GT(in_planted_sum / users, 0.9);
  EXPECT_GT(topk_sum / users, 0.9);
  EXPECT_GT(exact / double(users), 0.8) << "top-k observed categories == planted set";
  // Every non-noise event used the slot the truth reports, of the user's current interests.
  for (size_t i = 0; i < g.events.size(); i += 97) {
    if (g.truth[i].noise) continue;
    uint32_t cats[kSynthMaxInterests];
    model->Interests(g.events[i].user, g.truth[i].index, cats);
    EXPECT_EQ(cats[g.truth[i].slot], g.truth[i].category_index);
  }
}

TEST(Synth, PlantedDriftReplacesInterestsForSelectedUsers) {
  SynthOptions o = Small();
  o.drift_at = 0.5;
  o.drift_users = 0.5;
  auto model = MakeModel(o);
  EXPECT_EQ(model->DriftIndex(), 150000);
  const Generated g = Generate(*model);
  std::unordered_map<uint64_t, std::array<int, 4>> c;  // pre in/total, post in-old/total
  for (size_t i = 0; i < g.events.size(); ++i) {
    const uint64_t u = g.events[i].user;
    uint32_t old_set[kSynthMaxInterests];
    const int k = model->Interests(u, model->DriftIndex() - 1, old_set);
    const bool in_old = std::find(old_set, old_set + k, g.truth[i].category_index) != old_set + k;
    auto& a = c[u];
    const int off = static_cast<int64_t>(i) < model->DriftIndex() ? 0 : 2;
    a[off] += in_old;
    a[off + 1] += 1;
  }
  int drifting = 0, staying = 0;
  double drift_post = 0, stay_post = 0, pre_sum = 0;
  for (const auto& [u, a] : c) {
    if (a[1] < 50 || a[3] < 50) continue;
    uint32_t before[kSynthMaxInterests], after[kSynthMaxInterests];
    const int k = model->Interests(u, model->DriftIndex() - 1, before);
    model->Interests(u, model->DriftIndex(), after);
    // Per user a loose bound (>= 50 events: 4+ standard deviations below 0.9), on average tight.
    EXPECT_GT(a[0] / double(a[1]), 0.7) << "user " << u << " before drift";
    pre_sum += a[0] / double(a[1]);
    if (model->DriftsAtPlantedPoint(u)) {
      for (int j = 0; j < k; ++j)
        EXPECT_EQ(std::find(before, before + k, after[j]), before + k)
            << "new set must be disjoint";
      drift_post += a[2] / double(a[3]);
      ++drifting;
    } else {
      EXPECT_TRUE(std::equal(before, before + k, after));
      stay_post += a[2] / double(a[3]);
      ++staying;
    }
  }
  ASSERT_GT(drifting, 50);
  ASSERT_GT(staying, 50);
  EXPECT_GT(pre_sum / (drifting + staying), 0.88);
  // After the drift, drifting users hit their old interests only through noise.
  EXPECT_LT(drift_post / drifting, 0.15);
  EXPECT_GT(stay_post / staying, 0.85);
}

TEST(Synth, GradualDriftChangesInterestsOverTime) {
  SynthOptions o = Small();
  o.drift_rate = 3;
  auto model = MakeModel(o);
  int changed = 0;
  for (uint64_t u = 1; u <= 500; ++u) {
    uint32_t a[kSynthMaxInterests], b[kSynthMaxInterests];
    const int k = model->Interests(u, 0, a);
    model->Interests(u, o.events - 1, b);
    std::set<uint32_t> sa(a, a + k), sb(b, b + k);
    changed += sa != sb;
  }
  EXPECT_GT(changed, 450);
  // Events follow the interests current at their own index.
  const Generated g = Generate(*model);
  int checked = 0;
  for (size_t i = 0; i < g.events.size(); i += 31) {
    if (g.truth[i].noise) continue;
    uint32_t cats[kSynthMaxInterests];
    model->Interests(g.events[i].user, g.truth[i].index, cats);
    ASSERT_EQ(cats[g.truth[i].slot], g.truth[i].category_index);
    ++checked;
  }
  EXPECT_GT(checked, 5000);
}

TEST(Synth, DomainFractionAndCrossDomainInterests) {
  SynthOptions o = Small();
  o.domain1_fraction = 0.3;
  o.domain1_items = 20000;
  auto model = MakeModel(o);
  const Generated g = Generate(*model);
  int64_t d1 = 0, d1_in = 0;
  for (size_t i = 0; i < g.events.size(); ++i) {
    const Event& e = g.events[i];
    if (e.domain != 1) {
      ASSERT_LE(e.item, o.items);
      ASSERT_LE(e.category, o.categories);
      continue;
    }
    ++d1;
    ASSERT_GT(e.item, o.items);
    ASSERT_LE(e.item, o.items + o.domain1_items);
    ASSERT_GT(e.category, o.categories);
    uint32_t cats[kSynthMaxInterests];
    const int k = model->Interests(e.user, g.truth[i].index, cats);
    d1_in += std::find(cats, cats + k, g.truth[i].category_index) != cats + k;
  }
  const double frac = d1 / double(g.events.size());
  EXPECT_NEAR(frac, 0.3, 0.005);
  // Domain-1 events follow the same users' interests (the transfer signal).
  EXPECT_GT(d1_in / double(d1), 0.88);
}

TEST(Synth, ColdUsersAndItemsNeverAppearBeforeTheirStart) {
  SynthOptions o = Small();
  o.cold_users = 0.3;
  o.cold_users_after = 0.5;
  o.cold_items = 0.3;
  o.cold_items_after = 0.4;
  auto model = MakeModel(o);
  int cold_users = 0;
  for (uint64_t u = 1; u <= o.users; ++u) {
    const int64_t s = model->UserStartIndex(u);
    if (s == 0) continue;
    ++cold_users;
    EXPECT_GE(s, o.events / 2);
  }
  EXPECT_NEAR(cold_users / double(o.users), 0.3, 0.04);
  const Generated g = Generate(*model);
  std::set<uint64_t> cold_seen;
  int64_t cold_item_events = 0;
  for (size_t i = 0; i < g.events.size(); ++i) {
    const Event& e = g.events[i];
    const int64_t us = model->UserStartIndex(e.user);
    ASSERT_LE(us, static_cast<int64_t>(i)) << "user " << e.user << " before its start";
    ASSERT_GE(e.timestamp, model->TimestampAt(us));
    if (us > 0) cold_seen.insert(e.user);
    const int64_t is = model->ItemStartIndex(e.item);
    ASSERT_LE(is, static_cast<int64_t>(i)) << "item " << e.item << " before its start";
    cold_item_events += is > 0;
  }
  EXPECT_GT(cold_seen.size(), cold_users / 2u) << "cold users do appear after their start";
  EXPECT_GT(cold_item_events, 1000);
}

TEST(Synth, ActionRatesFollowKnobsAndEngagementMarksInterest) {
  SynthOptions o = Small();
  auto model = MakeModel(o);
  const Generated g = Generate(*model);
  int64_t clicks_interest = 0, interest = 0, clicks_noise = 0, noise = 0, buys = 0;
  for (size_t i = 0; i < g.events.size(); ++i) {
    const bool click = g.events[i].action == Action::kClick;
    buys += g.events[i].action == Action::kBuy;
    if (g.truth[i].noise) {
      ++noise;
      clicks_noise += click;
    } else {
      ++interest;
      clicks_interest += click;
    }
  }
  EXPECT_NEAR(noise / double(g.events.size()), o.noise, 0.003);
  EXPECT_NEAR(clicks_interest / double(interest), o.click_prob, 0.003);
  EXPECT_NEAR(clicks_noise / double(noise), o.click_prob * o.noise_engagement, 0.004);
  EXPECT_NEAR(buys / double(g.events.size()), o.buy_prob * (0.9 + 0.1 * o.noise_engagement), 0.002);
}

long RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// 5M events (about 25x more than the buffers hold) must not grow memory: no per-event state.
TEST(Synth, MemoryIsConstantInTheNumberOfEvents) {
  SynthOptions o;
  o.events = 5000000;
  o.users = 1000000;
  o.drift_at = 0.5;
  o.cold_users = 0.1;
  o.domain1_fraction = 0.2;
  const long before = RssKb();
  ASSERT_GT(before, 0) << "no VmRSS in /proc/self/status";
  SynthStats stats;
  ASSERT_TRUE(WriteSynthEvents(o, "/dev/null", "", 1, 0, {}, &stats).ok());
  const long after = RssKb();
  EXPECT_EQ(stats.events, o.events);
  EXPECT_LT(after - before, 16 * 1024) << "RSS grew from " << before << " kB to " << after << " kB";
}

TEST(Synth, WriteErrorsNameThePath) {
  SynthOptions o = Small();
  o.events = 100000;
  Status s = WriteSynthEvents(o, "/dev/full", "", 1, 0, {}, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/dev/full"), std::string::npos) << s;
  s = WriteSynthEvents(o, "/nonexistent-dir/x.tsv.gz", "", 1, 0, {}, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent-dir/x.tsv.gz"), std::string::npos) << s;
  const std::string ok_path = TempPath("ok.tsv");
  s = WriteSynthEvents(o, ok_path, "/nonexistent-dir/t.json", 1, 0, {}, nullptr);
  EXPECT_NE(s.message().find("/nonexistent-dir/t.json"), std::string::npos) << s;
  std::remove(ok_path.c_str());
}

TEST(Synth, InvalidOptionsAreRejected) {
  auto bad = [](auto mutate) {
    SynthOptions o;
    mutate(o);
    return ValidateSynthOptions(o);
  };
  EXPECT_TRUE(ValidateSynthOptions(SynthOptions()).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.events = 0; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.noise = 1.5; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.items = 10; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.categories = 3; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.max_interests = 9; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.drift_at = 1.0; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.cold_users = 0.95; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) { o.click_prob = 0.6, o.buy_prob = 0.6; }).ok());
  EXPECT_FALSE(bad([](SynthOptions& o) {
                 o.categories = 6;
                 o.drift_at = 0.5;
               }).ok());  // 4 interests + 4 disjoint replacements need 8
  const Status s = bad([](SynthOptions& o) { o.domain1_fraction = -0.1; });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("domain1_fraction"), std::string::npos);
  // The value as given, not std::to_string's "-0.100000".
  EXPECT_NE(s.message().find("got -0.1"), std::string::npos) << s;
  EXPECT_EQ(s.message().find("-0.100000"), std::string::npos) << s;
}

}  // namespace
}  // namespace ips
