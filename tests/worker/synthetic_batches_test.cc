// Tests of worker/synthetic_batches.h: the exact inverse-CDF map, the Zipf distribution, the
// category function, the planted signal of CTR batches, SASRec shifting and determinism.
#include "worker/synthetic_batches.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace ips {
namespace {

std::unique_ptr<SyntheticBatches> Make(const SyntheticOptions& o) {
  auto s = SyntheticBatches::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

// numpy's algorithm, `cdf = cumsum(arange(1, n + 1) ** -alpha); cdf /= cdf[-1]`, with libm pow.
std::vector<double> NumpyCdf(uint32_t n, double alpha) {
  std::vector<double> cdf(n);
  double acc = 0;
  for (uint32_t r = 1; r <= n; ++r) cdf[r - 1] = (acc += std::pow(r, -alpha));
  for (auto& c : cdf) c /= acc;
  return cdf;
}

// The peer's `minimum(searchsorted(cdf, u, side="right"), n - 1) + 1`, by a linear count.
uint32_t PeerInverse(const std::vector<double>& cdf, double u) {
  size_t count = 0;
  for (double c : cdf) count += c <= u;
  return static_cast<uint32_t>(std::min(count, cdf.size() - 1) + 1);
}

TEST(BoundedZipf, CdfAndFromUniformEqualPeerSearchsorted) {
  Rng rng(1);
  for (uint32_t n : {1u, 2u, 7u, 1000u}) {
    for (double alpha : {0.0, 0.5, 1.1, 2.5}) {
      BoundedZipf z(n, alpha);
      const auto cdf = NumpyCdf(n, alpha);
      ASSERT_EQ(z.cdf(), cdf);  // bit-identical table
      EXPECT_EQ(z.cdf().back(), 1.0);
      std::vector<double> us = {0.0, std::nextafter(1.0, 0.0), 0.5};
      for (int i = 0; i < 2000; ++i) us.push_back(rng.Uniform());
      // Exactly on, just below and just above table entries.
      for (int i = 0; i < 300; ++i) {
        const double c = cdf[rng.UniformInt(n)];
        us.push_back(c);
        us.push_back(std::nextafter(c, 0.0));
        if (c < 1.0) us.push_back(std::nextafter(c, 1.0));
      }
      for (double u : us) {
        if (u < 0 || u >= 1) continue;
        ASSERT_EQ(z.FromUniform(u), PeerInverse(cdf, u))
            << "n=" << n << " alpha=" << alpha << " u=" << u;
      }
    }
  }
}

TEST(BoundedZipf, AliasTablePmfEqualsAnalytic_1M) {
  for (double alpha : {1.1, 0.0, 3.0}) {
    const uint32_t n = 1000000;
    BoundedZipf z(n, alpha);
    const auto pmf = z.SamplerPmf();
    ASSERT_EQ(pmf.size(), n + 1u);
    EXPECT_EQ(pmf[0], 0.0);
    double worst = 0;
    for (uint32_t r = 1; r <= n; ++r) {
      const double want = z.Probability(r);
      worst = std::max(worst, std::fabs(pmf[r] - want) / want);
    }
    EXPECT_LT(worst, 1e-9) << "alpha=" << alpha;
  }
}

TEST(BoundedZipf, ProbabilityMatchesAnalyticPmf) {
  const uint32_t n = 5000;
  const double alpha = 1.1;
  BoundedZipf z(n, alpha);
  double h = 0;
  for (uint32_t r = 1; r <= n; ++r) h += std::pow(r, -alpha);
  double total = 0;
  for (uint32_t r = 1; r <= n; ++r) {
    ASSERT_NEAR(z.Probability(r), std::pow(r, -alpha) / h, 1e-12 * std::pow(r, -alpha) / h + 1e-17)
        << r;
    total += z.Probability(r);
  }
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_EQ(z.Probability(0), 0.0);
  EXPECT_EQ(z.Probability(n + 1), 0.0);
}

TEST(BoundedZipf, EmpiricalFrequenciesChiSquare_N50_1M) {
  const uint32_t n = 50;
  for (double alpha : {1.1, 0.0}) {
    BoundedZipf z(n, alpha);
    Rng rng(123);
    const int64_t draws = 1000000;
    std::vector<int64_t> count(n + 1, 0);
    for (int64_t i = 0; i < draws; ++i) {
      const uint32_t id = z.Sample(rng);
      ASSERT_GE(id, 1u);
      ASSERT_LE(id, n);
      ++count[id];
    }
    double chi2 = 0;
    for (uint32_t r = 1; r <= n; ++r) {
      const double e = draws * z.Probability(r);
      chi2 += (count[r] - e) * (count[r] - e) / e;
    }
    // 49 degrees of freedom: mean 49, sd 9.9. 120 is beyond 7 sd (seeded, so not flaky; a wrong
    // pmf, e.g. exponent 1.0 instead of 1.1, gives chi2 in the thousands).
    EXPECT_LT(chi2, 120.0) << "alpha=" << alpha;
    EXPECT_GT(chi2, 10.0) << "alpha=" << alpha;  // suspiciously perfect fits fail too
  }
}

TEST(SyntheticBatches, ValidatesOptions) {
  SyntheticOptions o;
  o.num_items = 0;
  EXPECT_EQ(SyntheticBatches::Create(o).status().code(), StatusCode::kInvalidArgument);
  o = SyntheticOptions();
  o.num_categories = 0;
  EXPECT_FALSE(SyntheticBatches::Create(o).ok());
  o = SyntheticOptions();
  o.seq_len = 0;
  EXPECT_FALSE(SyntheticBatches::Create(o).ok());
  o = SyntheticOptions();
  o.alpha = std::nan("");
  EXPECT_FALSE(SyntheticBatches::Create(o).ok());
  o = SyntheticOptions();
  o.planted_rate = 1.5;
  EXPECT_FALSE(SyntheticBatches::Create(o).ok());
  o = SyntheticOptions();
  o.num_items = 1000;
  auto s = Make(o);
  CtrBatch b;
  Rng rng(1);
  EXPECT_EQ(s->MakeCtrBatch(rng, 0, &b).code(), StatusCode::kInvalidArgument);
  SeqBatch q;
  EXPECT_FALSE(s->SeqBatchAt(0, -3, &q).ok());
}

// Each rule reports its option's name and the rule through the caller's `fail` (a config's check
// blames the config field with it), and ValidateSyntheticOptions words it "synthetic: <field>
// <what>". The counts are capped at 2^28 on 64 bits: a config's 2^32 + 1 categories would read
// as 1 in SyntheticOptions, and 2^32 - 1 overflowed the category index (num_categories + 2).
TEST(SyntheticBatches, OptionRulesNameTheOptionAtFault) {
  struct Case {
    void (*mutate)(SyntheticOptions*);
    const char* field;
    const char* what;
  };
  const Case cases[] = {
      {[](SyntheticOptions* o) { o->num_items = 0; }, "num_items", "must be >= 1, got 0"},
      {[](SyntheticOptions* o) { o->num_items = (1u << 28) + 1; }, "num_items",
       "must be <= 2^28, got 268435457"},
      {[](SyntheticOptions* o) { o->num_categories = 0; }, "num_categories", "must be >= 1, got 0"},
      {[](SyntheticOptions* o) { o->num_categories = 4294967295u; }, "num_categories",
       "must be <= 2^28, got 4294967295"},
      {[](SyntheticOptions* o) { o->seq_len = 65536; }, "seq_len",
       "must be in [1, 65535], got 65536"},
      {[](SyntheticOptions* o) { o->alpha = -1; }, "alpha", "must be finite and >= 0, got -1"},
      {[](SyntheticOptions* o) { o->alpha = std::nan(""); }, "alpha",
       "must be finite and >= 0, got nan"},
      {[](SyntheticOptions* o) { o->positive_rate = 2; }, "positive_rate",
       "must be in [0, 1], got 2"},
      {[](SyntheticOptions* o) { o->planted_rate = -0.5; }, "planted_rate",
       "must be in [0, 1], got -0.5"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    SyntheticOptions o;
    c.mutate(&o);
    std::string field, what;
    const Status s = CheckSyntheticOptions(o, [&](const std::string& f, const std::string& w) {
      field = f;
      what = w;
      return DataLossError("reported");
    });
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);  // the caller's error, as made
    EXPECT_EQ(field, c.field);
    EXPECT_EQ(what, c.what);
    const Status v = ValidateSyntheticOptions(o);
    EXPECT_EQ(v.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(v.message(), std::string("synthetic: ") + c.field + " " + c.what);
  }
  EXPECT_TRUE(ValidateSyntheticOptions(SyntheticOptions()).ok());
  SyntheticOptions largest;
  largest.num_items = largest.num_categories = 1u << 28;
  largest.seq_len = 65535;
  EXPECT_TRUE(ValidateSyntheticOptions(largest).ok());
  // A count on 64 bits, as a config holds it.
  auto count = [](int64_t n) {
    return CheckSyntheticCount("num_items", n, [](const std::string& f, const std::string& w) {
      return InvalidArgumentError(f + " " + w);
    });
  };
  EXPECT_EQ(count((int64_t{1} << 32) + 1).message(), "num_items must be <= 2^28, got 4294967297");
  EXPECT_EQ(count(-5).message(), "num_items must be >= 1, got -5");
  EXPECT_TRUE(count(int64_t{1} << 28).ok());
}

TEST(SyntheticBatches, CategoryIsPureFunctionAndIndexPartitionsItems) {
  SyntheticOptions o;
  o.num_items = 20000;
  o.num_categories = 37;
  auto s = Make(o);
  EXPECT_EQ(s->Category(0), 0u);  // padding
  EXPECT_EQ(s->CategoryRows(), 38u);
  EXPECT_EQ(s->ItemRows(), 20001u);
  std::vector<int> seen(o.num_items + 1, 0);
  for (uint32_t c = 0; c <= o.num_categories + 1; ++c) {
    uint32_t count = 0;
    const uint32_t* items = s->CategoryItems(c, &count);
    if (c == 0 || c > o.num_categories) {
      EXPECT_EQ(count, 0u);
      continue;
    }
    for (uint32_t i = 0; i < count; ++i) {
      EXPECT_EQ(SyntheticCategory(items[i], o.num_categories), c);
      if (i > 0) {
        EXPECT_LT(items[i - 1], items[i]);
      }
      ++seen[items[i]];
    }
  }
  for (uint32_t item = 1; item <= o.num_items; ++item) {
    ASSERT_EQ(seen[item], 1) << item;
    // fmix64(item) % C, shifted by one (the peer's category plus one).
    ASSERT_EQ(s->Category(item), Mix64(item) % 37 + 1);
  }
  // Known values of MurmurHash3's fmix64 pin the function itself.
  EXPECT_EQ(Mix64(1), 0xb456bcfc34c2cb2cULL);
  // The mapping of a second generator with the same options (or another seed) is the same.
  o.seed = 99;
  auto t = Make(o);
  for (uint32_t item = 1; item <= 1000; ++item) EXPECT_EQ(t->Category(item), s->Category(item));
}

TEST(SyntheticBatches, ModeCategoryTiesGoToLowestId) {
  std::vector<int32_t> counts(10, 0);
  const uint32_t a[6] = {5, 3, 5, 3, 9, 1};
  EXPECT_EQ(SyntheticBatches::ModeCategory(a, 6, counts), 3u);
  const uint32_t b[4] = {7, 2, 7, 2};
  EXPECT_EQ(SyntheticBatches::ModeCategory(b, 4, counts), 2u);
  const uint32_t c[5] = {4, 8, 8, 4, 8};
  EXPECT_EQ(SyntheticBatches::ModeCategory(c, 5, counts), 8u);
  EXPECT_EQ(SyntheticBatches::ModeCategory(c, 1, counts), 4u);
  for (int32_t v : counts) EXPECT_EQ(v, 0);  // scratch restored
}

TEST(SyntheticBatches, CtrBatchShapesRangesAndDeterminism) {
  SyntheticOptions o;
  o.num_items = 100000;
  o.num_categories = 100;
  o.seq_len = 50;
  o.seed = 7;
  auto s = Make(o);
  CtrBatch a, b, c;
  ASSERT_TRUE(s->CtrBatchAt(3, 256, &a).ok());
  ASSERT_TRUE(s->CtrBatchAt(3, 256, &b).ok());
  ASSERT_TRUE(s->CtrBatchAt(4, 256, &c).ok());
  EXPECT_EQ(a.hist_item, b.hist_item);
  EXPECT_EQ(a.item, b.item);
  EXPECT_EQ(a.label, b.label);
  EXPECT_EQ(a.neg_item, b.neg_item);
  EXPECT_NE(a.hist_item, c.hist_item);
  // A different seed gives different data; the same Rng state gives the same batch.
  SyntheticOptions o2 = o;
  o2.seed = 8;
  CtrBatch d;
  ASSERT_TRUE(Make(o2)->CtrBatchAt(3, 256, &d).ok());
  EXPECT_NE(a.hist_item, d.hist_item);
  Rng r1(42), r2(42);
  CtrBatch e, f;
  ASSERT_TRUE(s->MakeCtrBatch(r1, 64, &e).ok());
  ASSERT_TRUE(s->MakeCtrBatch(r2, 64, &f).ok());
  EXPECT_EQ(e.hist_item, f.hist_item);
  EXPECT_EQ(e.item, f.item);

  ASSERT_EQ(a.batch, 256);
  ASSERT_EQ(a.seq_len, 50);
  ASSERT_EQ(a.hist_item.size(), 256u * 50);
  ASSERT_EQ(a.hist_cat.size(), 256u * 50);
  ASSERT_EQ(a.neg_item.size(), 256u * 50);
  ASSERT_EQ(a.neg_cat.size(), 256u * 50);
  ASSERT_EQ(a.item.size(), 256u);
  ASSERT_EQ(a.cat.size(), 256u);
  ASSERT_EQ(a.label.size(), 256u);
  ASSERT_EQ(a.length.size(), 256u);
  for (int32_t len : a.length) EXPECT_EQ(len, 50);
  for (size_t i = 0; i < a.hist_item.size(); ++i) {
    ASSERT_GE(a.hist_item[i], 1u);
    ASSERT_LE(a.hist_item[i], o.num_items);
    ASSERT_EQ(a.hist_cat[i], s->Category(a.hist_item[i]));
    ASSERT_GE(a.neg_item[i], 1u);
    ASSERT_LE(a.neg_item[i], o.num_items);
    ASSERT_EQ(a.neg_cat[i], s->Category(a.neg_item[i]));
  }
  for (int i = 0; i < 256; ++i) {
    ASSERT_GE(a.item[i], 1u);
    ASSERT_LE(a.item[i], o.num_items);
    ASSERT_EQ(a.cat[i], s->Category(a.item[i]));
    ASSERT_TRUE(a.label[i] == 0.0f || a.label[i] == 1.0f);
  }
  // Reusing a batch object for a smaller batch resizes it.
  ASSERT_TRUE(s->CtrBatchAt(5, 8, &a).ok());
  EXPECT_EQ(a.hist_item.size(), 8u * 50);
  EXPECT_EQ(a.item.size(), 8u);
}

// The planted signal: a positive's target is in its history's mode category with probability
// 0.8 + 0.2 q, a negative's with probability q, where q = Zipf mass of the mode category.
TEST(SyntheticBatches, CtrPlantedSignalAndLabelRate) {
  SyntheticOptions o;
  o.num_items = 100000;
  o.num_categories = 100;
  o.seq_len = 50;
  auto s = Make(o);
  std::vector<double> mass(s->CategoryRows(), 0.0);
  for (uint32_t item = 1; item <= o.num_items; ++item) {
    mass[s->Category(item)] += s->zipf().Probability(item);
  }
  std::vector<int32_t> counts(s->CategoryRows(), 0);
  double pos = 0, neg = 0, pos_in = 0, neg_in = 0, pos_expect = 0, neg_expect = 0;
  double pos_var = 0, neg_var = 0;
  CtrBatch b;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(s->CtrBatchAt(i, 512, &b).ok());
    for (int r = 0; r < b.batch; ++r) {
      const uint32_t mode =
          SyntheticBatches::ModeCategory(&b.hist_cat[r * b.seq_len], b.seq_len, counts);
      const double q = mass[mode];
      const bool in = b.cat[r] == mode;
      if (b.label[r] == 1.0f) {
        const double p = o.planted_rate + (1 - o.planted_rate) * q;
        pos += 1, pos_in += in, pos_expect += p, pos_var += p * (1 - p);
      } else {
        neg += 1, neg_in += in, neg_expect += q, neg_var += q * (1 - q);
      }
    }
  }
  const double n = pos + neg;
  EXPECT_NEAR(pos / n, 0.5, 5 * std::sqrt(0.25 / n));
  EXPECT_NEAR(pos_in, pos_expect, 5 * std::sqrt(pos_var)) << "positives in mode category";
  EXPECT_NEAR(neg_in, neg_expect, 5 * std::sqrt(neg_var)) << "negatives in mode category";
  // The signal is there at all: positives are far more often in the mode category.
  EXPECT_GT(pos_in / pos, neg_in / neg + 0.5);
}

TEST(SyntheticBatches, PositiveRateAndPlantedRateOptions) {
  SyntheticOptions o;
  o.num_items = 5000;
  o.num_categories = 10;
  o.seq_len = 5;
  o.positive_rate = 1.0;
  o.planted_rate = 1.0;
  auto s = Make(o);
  std::vector<int32_t> counts(s->CategoryRows(), 0);
  CtrBatch b;
  ASSERT_TRUE(s->CtrBatchAt(0, 1000, &b).ok());
  // Planted targets are uniform over ALL items of the mode category (the peer's `by_cat`), not
  // over the history's items and not Zipf: most are not in the history, and their position in
  // the category's item list averages (size - 1) / 2.
  double outside_history = 0, rel_position = 0;
  for (int r = 0; r < b.batch; ++r) {
    ASSERT_EQ(b.label[r], 1.0f);
    const uint32_t mode = SyntheticBatches::ModeCategory(&b.hist_cat[r * 5], 5, counts);
    ASSERT_EQ(b.cat[r], mode);
    const uint32_t* h = &b.hist_item[r * 5];
    outside_history += std::find(h, h + 5, b.item[r]) == h + 5;
    uint32_t size = 0;
    const uint32_t* items = s->CategoryItems(mode, &size);
    const auto at = std::lower_bound(items, items + size, b.item[r]) - items;
    ASSERT_EQ(items[at], b.item[r]);
    rel_position += (at + 0.5) / size;
  }
  EXPECT_GT(outside_history / b.batch, 0.9);
  // Uniform: mean 0.5, sd of the mean sqrt(1/12/1000) = 0.009; Zipf would give about 0.1.
  EXPECT_NEAR(rel_position / b.batch, 0.5, 0.05);
}

TEST(SyntheticBatches, SeqBatchShiftsAndDeterminism) {
  SyntheticOptions o;
  o.num_items = 100000;
  o.seq_len = 50;
  auto s = Make(o);
  SeqBatch a, b;
  ASSERT_TRUE(s->SeqBatchAt(2, 128, &a).ok());
  ASSERT_TRUE(s->SeqBatchAt(2, 128, &b).ok());
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.pos, b.pos);
  EXPECT_EQ(a.neg, b.neg);
  ASSERT_EQ(a.seq.size(), 128u * 50);
  ASSERT_EQ(a.pos.size(), 128u * 50);
  ASSERT_EQ(a.neg.size(), 128u * 50);
  ASSERT_EQ(a.length.size(), 128u);
  for (int r = 0; r < 128; ++r) {
    EXPECT_EQ(a.length[r], 50);
    for (int t = 0; t + 1 < 50; ++t) ASSERT_EQ(a.pos[r * 50 + t], a.seq[r * 50 + t + 1]);
    for (int t = 0; t < 50; ++t) {
      ASSERT_GE(a.seq[r * 50 + t], 1u);
      ASSERT_LE(a.seq[r * 50 + t], o.num_items);
      ASSERT_GE(a.pos[r * 50 + t], 1u);
      ASSERT_GE(a.neg[r * 50 + t], 1u);
      ASSERT_LE(a.neg[r * 50 + t], o.num_items);
    }
  }
  // Item 1 is the most popular: its share of all draws is close to its probability.
  int64_t ones = 0;
  for (uint32_t v : a.neg) ones += v == 1;
  const double p1 = s->zipf().Probability(1), n = a.neg.size();
  EXPECT_NEAR(ones / n, p1, 5 * std::sqrt(p1 * (1 - p1) / n));
}

// Optional parity check against the peer's data.Synthetic, fed by
// bench/peer_check/metrics_vs_peer.py (IPS_PEER_CHECK_FILE): the CDF table to 1e-14, the
// u -> item map (equal but at boundaries an ulp apart), the categories (EQUAL, shifted by one)
// and the batch statistics within sampling error.
TEST(PeerCheck, MatchesPeerSynthetic) {
  const char* path = std::getenv("IPS_PEER_CHECK_FILE");
  if (path == nullptr) GTEST_SKIP() << "IPS_PEER_CHECK_FILE not set (see bench/peer_check/)";
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << "cannot open " << path;
  std::string tag;
  SyntheticOptions o;
  in >> tag >> o.num_items >> o.num_categories >> o.seq_len >> o.alpha;
  ASSERT_EQ(tag, "options");
  auto s = Make(o);
  int64_t n;
  in >> tag >> n;
  ASSERT_EQ(tag, "u");
  int64_t boundary_differences = 0;
  for (int64_t i = 0; i < n; ++i) {
    double u;
    uint32_t id;
    in >> u >> id;
    const uint32_t ours = s->zipf().FromUniform(u);
    if (ours == id) continue;
    // numpy's pow differs from libm's by 1 ulp in some entries, so a u exactly on (or an ulp
    // from) a peer CDF entry may fall on the other side of ours. Anything else is a bug.
    ASSERT_EQ(std::max(ours, id) - std::min(ours, id), 1u) << "u=" << u;
    const double boundary = s->zipf().cdf()[std::min(ours, id) - 1];
    ASSERT_LE(std::fabs(u - boundary), 1e-14 * boundary) << "u=" << u;
    ++boundary_differences;
  }
  EXPECT_LT(boundary_differences, n / 10);
  in >> tag >> n;
  ASSERT_EQ(tag, "cdf");
  for (int64_t i = 0; i < n; ++i) {
    int64_t index;
    double value;
    in >> index >> value;
    ASSERT_NEAR(s->zipf().cdf()[index], value, 1e-14 * value) << "cdf[" << index << "]";
  }
  in >> tag >> n;
  ASSERT_EQ(tag, "cat");
  for (int64_t i = 0; i < n; ++i) {
    uint32_t item, cat;
    in >> item >> cat;
    ASSERT_EQ(s->Category(item), cat) << "item " << item;
  }
  double rows, pos, pos_in, neg_in;
  in >> tag >> rows >> pos >> pos_in >> neg_in;
  ASSERT_EQ(tag, "stats");
  ASSERT_TRUE(in.good());
  std::vector<int32_t> counts(s->CategoryRows(), 0);
  double our_rows = 0, our_pos = 0, our_pos_in = 0, our_neg_in = 0;
  CtrBatch b;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(s->CtrBatchAt(i, 512, &b).ok());
    for (int r = 0; r < b.batch; ++r) {
      const bool in_mode =
          b.cat[r] == SyntheticBatches::ModeCategory(&b.hist_cat[r * b.seq_len], b.seq_len, counts);
      our_rows += 1;
      if (b.label[r] == 1.0f) {
        our_pos += 1, our_pos_in += in_mode;
      } else {
        our_neg_in += in_mode;
      }
    }
  }
  // Two-sample difference of proportions, 5 standard errors.
  auto close = [](double a, double na, double b, double nb) {
    const double p = (a + b) / (na + nb);
    const double se = std::sqrt(std::max(p * (1 - p), 1e-4) * (1 / na + 1 / nb));
    return std::fabs(a / na - b / nb) <= 5 * se;
  };
  EXPECT_TRUE(close(our_pos, our_rows, pos, rows)) << our_pos / our_rows << " vs " << pos / rows;
  EXPECT_TRUE(close(our_pos_in, our_pos, pos_in, pos))
      << "positives in mode category: ours " << our_pos_in / our_pos << " peer " << pos_in / pos;
  EXPECT_TRUE(close(our_neg_in, our_rows - our_pos, neg_in, rows - pos))
      << "negatives in mode category: ours " << our_neg_in / (our_rows - our_pos) << " peer "
      << neg_in / (rows - pos);
}

}  // namespace
}  // namespace ips
