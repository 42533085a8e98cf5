// Tests of the serving bundle and scorer (worker/serving.h): export/score parity with the
// model's inference logits (fp32: max abs diff <= 1e-5; fp16: AUC within 0.001), chunking,
// min_count, request parsing errors (item and category id 0 refused), "top_n" with candidates
// (their top_n, ranked), histories longer than max_history (newest scored, the rest counted in
// the response), ids without a row in the bundle (scored as zeros, counted in the response on
// the fast and the generic path, with no allocation), corrupt bundles (a file of another version
// named as such), and hot reload under a stream of requests with no request lost; --delta onto a
// root with no version writes a full bundle and says why, and onto a version of other table widths
// is refused. Writers: an output that is not a bundle root, a root another writer holds
// (ROOT/LOCK), a root of another model type, a sequence model and a min_count that keeps no row of
// a table are refused, writing nothing.
#include "worker/serving.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/allocation_counter.h"
#include "common/random.h"
#include "kernels/activation.h"
#include "proto/config.pb.h"
#include "proto/config_loader.h"
#include "ps/checkpoint_io.h"
#include "tests/testing/scoped_race_hook.h"
#include "worker/checkpoint.h"
#include "worker/metrics.h"
#include "worker/model_factory.h"
#include "worker/serving_fixture.h"
#include "worker/synthetic_batches.h"

namespace ips {
namespace {

constexpr char kConfig[] = R"(
version: 1
name: "serving_test"
data { batch_size: 128 max_history: 10 synthetic { num_items: 350 num_categories: 20 } }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: DICE }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
train { seed: 3 }
)";

constexpr int64_t kItems = 300, kCats = 20;

std::string TempDir() {
  char tmpl[] = "/tmp/ips_serving_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

// The synthetic catalogue's categories (the configs' data.synthetic: 350 items, 20 categories),
// which the export records as the bundle's item -> category map.
uint64_t CatOf(uint64_t item) { return SyntheticCategory(item, kCats); }

// A "trained" model: random dense weights and Dice statistics, tables after random traffic.
struct Trained {
  std::unique_ptr<models::CtrModel<float>> model;
  std::vector<std::unique_ptr<ps::DynamicTable>> tables;  // item, category
  CheckpointContent content;

  explicit Trained(uint64_t seed, const char* config_text = kConfig) {
    auto cfg = ParseConfigText(config_text, "config");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    auto m = CreateCtrModel(*cfg, 128);
    EXPECT_TRUE(m.ok()) << m.status();
    model = std::move(*m);
    Rng rng(seed);
    auto& p = model->params();
    for (int64_t i = 0; i < p.size(); ++i) p.values()[i] = static_cast<float>(0.5 * rng.Normal());
    for (auto& s : model->state())
      for (int64_t i = 0; i < s.size; ++i)
        s.data[i] = static_cast<float>(0.1 + std::fabs(rng.Normal()));
    for (const char* name : {"item", "category"}) {
      ps::TableOptions o;
      o.name = name;
      o.dim = 4;
      o.has_padding_key = true;
      o.num_shards = 4;
      o.rows_per_slab = 64;
      o.initializer.type = ps::InitializerOptions::Type::kNormal;
      o.initializer.stddev = 0.5;
      o.seed = seed;
      tables.push_back(std::move(ps::DynamicTable::Create(o)).value());
    }
    // Traffic: items 1..kItems (some pulled often, some once), categories 1..kCats.
    for (int step = 0; step < 20; ++step) {
      std::vector<uint64_t> items(64), cats(64);
      for (int i = 0; i < 64; ++i) {
        items[i] = 1 + rng.UniformInt(i < 32 ? 40 : kItems);
        cats[i] = CatOf(items[i]);
      }
      std::vector<float> rows(64 * 4), grads(64 * 4);
      for (int t = 0; t < 2; ++t) {
        auto& keys = t == 0 ? items : cats;
        EXPECT_TRUE(tables[t]->Pull(keys.data(), 64, rows.data()).ok());
        for (auto& g : grads) g = static_cast<float>(rng.Normal());
        EXPECT_TRUE(tables[t]->Push(keys.data(), 64, grads.data()).ok());
      }
    }
    AddModelState(model.get(), nullptr, &content);
    for (auto& t : tables) content.tables.push_back(t.get());
    content.config_text = config_text;
  }

  // The model's inference logits for (history, candidates), each position's row read with the
  // table's read-only Lookup (what the trainer's PredictLogits does).
  std::vector<float> Reference(const ScoreRequest& q) {
    const int64_t T = model->max_len(), D = 4;
    const int64_t B = static_cast<int64_t>(q.candidates.size());
    const int64_t len = std::min<int64_t>(T, static_cast<int64_t>(q.history.size()));
    std::vector<uint64_t> item_keys(B * T + B, 0), cat_keys(B * T + B, 0);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < len; ++t) {
        const size_t h = q.history.size() - len + t;
        item_keys[b * T + T - len + t] = q.history[h];
        cat_keys[b * T + T - len + t] = q.history_cats.empty() ? 0 : q.history_cats[h];
      }
      item_keys[B * T + b] = q.candidates[b];
      cat_keys[B * T + b] = q.candidate_cats.empty() ? 0 : q.candidate_cats[b];
    }
    std::vector<float> item_rows(item_keys.size() * D), cat_rows(cat_keys.size() * D);
    EXPECT_TRUE(tables[0]->Lookup(item_keys.data(), item_keys.size(), item_rows.data()).ok());
    EXPECT_TRUE(tables[1]->Lookup(cat_keys.data(), cat_keys.size(), cat_rows.data()).ok());
    std::vector<int64_t> index(item_keys.size());
    for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int64_t>(i);
    std::vector<int32_t> lengths(B, static_cast<int32_t>(len));
    models::CtrInputs<float> in;
    in.batch = B;
    in.lengths = lengths.data();
    in.item_index = index.data();
    in.cat_index = index.data();
    in.item_rows = item_rows.data();
    in.num_item_rows = static_cast<int64_t>(item_keys.size());
    in.cat_rows = cat_rows.data();
    in.num_cat_rows = static_cast<int64_t>(cat_keys.size());
    kernels::Context ctx;
    EXPECT_TRUE(model->Forward(ctx, in, /*training=*/false, nullptr).ok());
    return std::vector<float>(model->logits(), model->logits() + B);
  }
};

ScoreRequest RandomRequest(Rng& rng, int history, int candidates, bool cats) {
  ScoreRequest q;
  for (int i = 0; i < history; ++i) q.history.push_back(1 + rng.UniformInt(kItems + 50));
  for (int i = 0; i < candidates; ++i) q.candidates.push_back(1 + rng.UniformInt(kItems + 50));
  if (cats) {
    for (uint64_t h : q.history) q.history_cats.push_back(CatOf(h));
    for (uint64_t c : q.candidates) q.candidate_cats.push_back(CatOf(c));
  }
  return q;
}

std::string Checkpoint(Trained& t, const std::string& dir, int64_t step) {
  CheckpointOptions o;
  o.dir = dir;
  auto w = CheckpointWriter::Create(o);
  EXPECT_TRUE(w.ok()) << w.status();
  auto info = (*w)->Write(step, t.content);
  EXPECT_TRUE(info.ok()) << info.status();
  return info->path;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

TEST(Serving, ExportScoreParity_Fp32_MaxAbsDiffWithin1e5_WithChunking) {
  const std::string dir = TempDir();
  Trained t(1);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  auto ex = ExportBundle(eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->version, 1);
  EXPECT_EQ(ex->step, 20);
  auto bundle = Bundle::Load(eo.output);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ((*bundle)->rows("item"), t.tables[0]->Stats().rows);
  EXPECT_TRUE(ex->item_cats);
  ASSERT_NE((*bundle)->item_cats(), nullptr);
  EXPECT_EQ((*bundle)->item_cats()->size(), 351u);
  auto scorer = Scorer::Create(*bundle);
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  auto small = Scorer::Create(*bundle, 16);  // 100 candidates in 7 forwards
  ASSERT_TRUE(small.ok());
  Rng rng(9);
  double worst = 0;
  for (int r = 0; r < 20; ++r) {
    // Histories shorter and longer than max_len 10, with and without categories; candidates
    // include keys the tables never saw (zeros, as the store's Lookup).
    // Without categories in the request, the bundle's item -> category map fills them in: the
    // reference is given the true ones.
    ScoreRequest q = RandomRequest(rng, r % 15, 100, r % 4 != 3);
    ScoreResponse got, got_small;
    ASSERT_TRUE((*scorer)->Score(q, &got).ok());
    ASSERT_TRUE((*small)->Score(q, &got_small).ok());
    ScoreRequest with_cats = q;
    if (q.history_cats.empty()) {
      for (uint64_t h : q.history) with_cats.history_cats.push_back(CatOf(h));
      for (uint64_t c : q.candidates) with_cats.candidate_cats.push_back(CatOf(c));
    }
    const std::vector<float> want = t.Reference(with_cats);
    ASSERT_EQ(got.scores.size(), want.size());
    worst = std::max(worst, MaxAbsDiff(got.scores, want));
    worst = std::max(worst, MaxAbsDiff(got_small.scores, want));
  }
  std::printf("[ parity ] fp32 bundle vs model: max abs diff %.3g\n", worst);
  EXPECT_LE(worst, 1e-5);
  ps::RemoveTree(dir);
}

// The other CTR models through the same bundle and scorer.
class OtherModels : public ::testing::TestWithParam<const char*> {};

TEST_P(OtherModels, ExportScoreParity_Fp32_MaxAbsDiffWithin1e5) {
  const std::string config = std::string(R"(
version: 1
name: "serving_test_other"
data { batch_size: 128 max_history: 10 }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
model { embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] rnn_hidden: 8 type: )") +
                             GetParam() + " }\n";
  const std::string dir = TempDir();
  Trained t(21, config.c_str());
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  auto ex = ExportBundle(eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto scorer = std::move(Scorer::Create(std::move(Bundle::Load(eo.output)).value())).value();
  EXPECT_STREQ(scorer->model().name(), t.model->name());
  Rng rng(9);
  double worst = 0;
  for (int r = 0; r < 10; ++r) {
    ScoreRequest q = RandomRequest(rng, r % 13, 50, true);
    ScoreResponse got;
    ASSERT_TRUE(scorer->Score(q, &got).ok());
    worst = std::max(worst, MaxAbsDiff(got.scores, t.Reference(q)));
  }
  std::printf("[ parity ] %s fp32 bundle vs model: max abs diff %.3g\n", GetParam(), worst);
  EXPECT_LE(worst, 1e-5);
  ps::RemoveTree(dir);
}

INSTANTIATE_TEST_SUITE_P(Models, OtherModels, ::testing::Values("DIEN", "POOLED", "MIND"));

TEST(Serving, ExportScoreParity_Fp16_AucWithin0001) {
  const std::string dir = TempDir();
  Trained t(2);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  eo.fp16 = true;
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto bundle = Bundle::Load(eo.output);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_TRUE((*bundle)->fp16());
  auto scorer = std::move(Scorer::Create(*bundle)).value();
  // A synthetic eval set: 40 users x 100 candidates, labels drawn from the fp32 model's own
  // click probabilities (so AUC is well above 0.5 and sensitive to score perturbations).
  Rng rng(3);
  BinaryMetrics m32, m16;
  double worst = 0;
  for (int u = 0; u < 40; ++u) {
    ScoreRequest q = RandomRequest(rng, 10, 100, true);
    const std::vector<float> want = t.Reference(q);
    ScoreResponse got;
    ASSERT_TRUE(scorer->Score(q, &got).ok());
    worst = std::max(worst, MaxAbsDiff(got.scores, want));
    for (size_t i = 0; i < want.size(); ++i) {
      const float label = rng.Uniform() < kernels::StableSigmoid(want[i]) ? 1.0f : 0.0f;
      ASSERT_TRUE(m32.Add(kernels::StableSigmoid(want[i]), label, u).ok());
      ASSERT_TRUE(m16.Add(kernels::StableSigmoid(got.scores[i]), label, u).ok());
    }
  }
  std::printf("[ parity ] fp16 bundle: AUC %.5f vs fp32 %.5f, max abs logit diff %.3g\n", m16.Auc(),
              m32.Auc(), worst);
  EXPECT_GT(worst, 0.0) << "fp16 rows should perturb the scores a little";
  EXPECT_LE(std::fabs(m16.Auc() - m32.Auc()), 0.001);
  ps::RemoveTree(dir);
}

TEST(Serving, MinCountDropsRarelyUsedRows) {
  const std::string dir = TempDir();
  Trained t(3);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  eo.min_count = 4;
  auto ex = ExportBundle(eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  int64_t kept = 0;
  for (auto& table : t.tables)
    table->ForEachRowSince(0, [&](const ps::RowRecord& r) { kept += r.freq >= 4; });
  EXPECT_EQ(ex->rows, kept);
  EXPECT_GT(ex->rows_dropped, 0);
  ps::RemoveTree(dir);
}

TEST(Serving, CorruptBundleFile_RejectedNamingTheFile) {
  const std::string dir = TempDir();
  Trained t(4);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  const std::string rows = eo.output + "/v-1/rows-item.bin";
  FILE* f = std::fopen(rows.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, 100, SEEK_SET);
  std::fputc(0x5a, f);
  std::fclose(f);
  auto b = Bundle::Load(eo.output);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find(rows), std::string::npos) << b.status();
  EXPECT_FALSE(BundleServer::Create(eo.output, 10).ok());
  // An intact file (its trailer matches its body) that is not the one the manifest lists, as a
  // file copied in from another version is: the message named only a checkpoint as its origin.
  std::string bytes = std::move(ps::ReadSmallFile(rows)).value();
  bytes.resize(bytes.size() - 4);  // the trailer, rewritten below for the changed body
  {
    auto w = std::move(ps::CrcFileWriter::Create(rows)).value();
    ASSERT_TRUE(w->Write(bytes.data(), bytes.size()).ok());
    ASSERT_TRUE(w->Finish().ok());
  }
  const std::string want = rows + ": checksum mismatch (crc32c ";
  const std::string cause =
      "): the file is corrupt or belongs to another checkpoint or bundle version";
  for (const Status& s :
       {Bundle::Load(eo.output).status(), BundleServer::Create(eo.output, 10).status()}) {
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find(want), std::string::npos) << s;
    EXPECT_NE(s.message().find(cause), std::string::npos) << s;
  }
  ps::RemoveTree(dir);
}

TEST(Serving, BadRequestLines_AnsweredWithErrorsNamingLineAndField_NextLineServed) {
  const std::string dir = TempDir();
  Trained t(5);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto server = std::move(BundleServer::Create(eo.output, 50)).value();
  struct Case {
    std::string line, want;
  };
  const std::vector<Case> cases = {
      {"not json", "expected '{'"},
      // (The error text is JSON-escaped in the response: quotes appear as \".)
      {R"({"user":1,"history":[1,2],"candidates":[3],"colour":[1]})",
       R"(unknown field \"colour\")"},
      {R"({"user":1,"history":[1,-2],"candidates":[3]})", R"(field \"history\": expected)"},
      {R"({"user":1,"history":[1,2.5],"candidates":[3]})", "integers"},
      {R"({"user":1,"history":[1,2],"candidates":[3],"candidate_cats":[1,2]})", "candidate_cats"},
      {R"({"user":1,"candidates":[3]})", R"(missing field \"history\")"},
      {R"({"user":1,"history":[1,2],"candidates":[3])", "expected ',' or '}'"},
      {R"({"user":1,"history":[1,2],"candidates":[3]} x)", "trailing"},
      // Candidate 0 is the padding id (data convert refuses item 0): not scored silently.
      {R"({"user":1,"history":[1,2],"candidates":[3,0]})",
       R"(column 43: field \"candidates\": id 0 (entry 1) is the padding id, not an item)"},
      // So is history id 0: the scorer pads short histories itself, so a 0 is a client's bug
      // (it was read as a zero row without a word).
      {R"({"user":1,"history":[0,2],"candidates":[3]})",
       R"(column 22: field \"history\": id 0 (entry 0) is the padding id, not an item (item ids )"
       "are >= 1)"},
      {R"({"user":1,"history":[1,0],"candidates":[3]})",
       R"(column 24: field \"history\": id 0 (entry 1) is the padding id)"},
      // Category 0 is the padding category too (a real item's category is >= 1; only the padding
      // item 0 has category 0): it was scored as a zero row without a word.
      {R"({"user":1,"history":[1,2],"candidates":[3,4],"candidate_cats":[2,0]})",
       R"(column 66: field \"candidate_cats\": id 0 (entry 1) is the padding id, not a category )"
       "(category ids are >= 1"},
      {R"({"user":1,"history":[1,2],"history_cats":[0,2],"candidates":[3]})",
       R"(column 43: field \"history_cats\": id 0 (entry 0) is the padding id, not a category)"},
      // top_n is a count, not an id.
      {R"({"user":1,"history":[1,2],"top_n":-1})",
       R"(field \"top_n\": expected an integer in 0..100000 (the number of items to return), )"
       "got -1"},
      {R"({"user":1,"history":[1,2],"top_n":100001})",
       R"(field \"top_n\": expected an integer in 0..100000)"},
      {R"({"user":1,"history":[1,2],"top_n":2.5})", "got 2.5"},
      // What would be echoed into the response must be JSON.
      {R"({"user":abc,"history":[1,2],"candidates":[3]})", "expected a value"},
      {R"({"user":"a\q","history":[1,2],"candidates":[3]})", "invalid escape"},
      {R"({"user":"\u12","history":[1,2],"candidates":[3]})", "4 hex digits"},
      {"{\"user\":\"a\tb\",\"history\":[1,2],\"candidates\":[3]}", "control character 0x09"},
  };
  int64_t line = 0;
  for (const auto& c : cases) {
    bool ok = true;
    const std::string r = server->HandleLine(++line, c.line, &ok);
    EXPECT_FALSE(ok) << c.line;
    EXPECT_NE(r.find("\"error\":\"line " + std::to_string(line) + ":"), std::string::npos) << r;
    EXPECT_NE(r.find(c.want), std::string::npos) << c.line << " -> " << r;
    if (c.line.find("top_n") != std::string::npos) {
      EXPECT_EQ(r.find("id"), std::string::npos) << c.line << " -> " << r;
    }
    bool good = false;
    const std::string g = server->HandleLine(
        ++line, R"({"user":"u7","history":[1,2,3],"history_cats":[2,3,4],"candidates":[5,6]})",
        &good);
    EXPECT_TRUE(good) << g;
    EXPECT_EQ(g.rfind("{\"user\":\"u7\",\"version\":1,\"scores\":[", 0), 0u) << g;
  }
  ps::RemoveTree(dir);
}

// True when `s` is one RFC 8259 JSON value in valid UTF-8 (what a client's parser accepts).
class JsonChecker {
 public:
  static bool Valid(const std::string& s) {
    JsonChecker c(s);
    return c.Value(0) && (c.Ws(), c.i_ == s.size());
  }

 private:
  explicit JsonChecker(const std::string& s) : s_(s) {}
  void Ws() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_]) != nullptr && s_[i_] != '\0') ++i_;
  }
  bool Lit(const char* w) {
    const size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  unsigned At(size_t k) const { return i_ + k < s_.size() ? (unsigned char)s_[i_ + k] : 0x100; }
  bool Digits() {
    const size_t b = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > b;
  }
  bool Number() {
    if (At(0) == '-') ++i_;
    if (At(0) == '0') {
      ++i_;
    } else if (!Digits()) {
      return false;
    }
    if (At(0) == '.' && (++i_, !Digits())) return false;
    if (At(0) == 'e' || At(0) == 'E') {
      ++i_;
      if (At(0) == '+' || At(0) == '-') ++i_;
      if (!Digits()) return false;
    }
    return true;
  }
  bool String() {
    if (At(0) != '"') return false;
    ++i_;
    for (;;) {
      const unsigned c = At(0);
      if (c == 0x100 || c < 0x20) return false;
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c == '\\') {
        const unsigned e = At(1);
        if (e == 'u') {
          for (size_t k = 2; k < 6; ++k)
            if (At(k) == 0x100 || !std::isxdigit(static_cast<int>(At(k)))) return false;
          i_ += 6;
        } else if (e != 0x100 && std::strchr("\"\\/bfnrt", static_cast<int>(e)) != nullptr &&
                   e != 0) {
          i_ += 2;
        } else {
          return false;
        }
        continue;
      }
      // UTF-8: the sequence lengths and ranges of RFC 3629.
      size_t n = 1;
      unsigned lo = 0x80, hi = 0xbf;
      if (c < 0x80) {
        n = 1;
      } else if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
      } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
      } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
      } else {
        return false;
      }
      for (size_t k = 1; k < n; ++k) {
        const unsigned b = At(k);
        if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) return false;
      }
      i_ += n;
    }
  }
  bool Value(int depth) {
    if (depth > 64) return false;
    Ws();
    const unsigned c = At(0);
    if (c == '"') return String();
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      Ws();
      if (At(0) == static_cast<unsigned>(close)) return ++i_, true;
      for (;;) {
        if (c == '{') {
          Ws();
          if (!String()) return false;
          Ws();
          if (At(0) != ':') return false;
          ++i_;
        }
        if (!Value(depth + 1)) return false;
        Ws();
        if (At(0) == ',') {
          ++i_;
          continue;
        }
        if (At(0) == static_cast<unsigned>(close)) return ++i_, true;
        return false;
      }
    }
    if (Lit("true") || Lit("false") || Lit("null")) return true;
    return Number();
  }
  const std::string& s_;
  size_t i_ = 0;
};

TEST(JsonChecker, AcceptsJsonAndRefusesWhatClientsRefuse) {
  for (const char* ok :
       {R"({"a":[1,-2.5e3,true,null],"b":"\u00e9\n"})", "\"\xc3\xa9\xf0\x9f\x98\x80\"", "0"})
    EXPECT_TRUE(JsonChecker::Valid(ok)) << ok;
  for (const char* bad : {"{\"a\":abc}", "\"\xff\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"a\\q\"",
                          "\"\t\"", "01", "{\"a\":1,}", "\"\xe2\x82\""})
    EXPECT_FALSE(JsonChecker::Valid(bad)) << bad;
}

// Request bytes are echoed (the user value verbatim, a field name inside an error): invalid UTF-8
// there made the response line invalid JSON. Every response is valid JSON, invalid bytes replaced
// by U+FFFD; valid UTF-8 and escapes are echoed as sent.
// The numbers of the JSON array "field":[...] in a response line (empty when it has none).
std::vector<double> JsonNumbers(const std::string& line, const std::string& field) {
  std::vector<double> out;
  const size_t at = line.find("\"" + field + "\":[");
  if (at == std::string::npos) return out;
  const char* p = line.c_str() + at + field.size() + 4;
  while (*p != ']' && *p != '\0') {
    char* end = nullptr;
    out.push_back(std::strtod(p, &end));
    if (end == p) break;
    p = end + (*end == ',' ? 1 : 0);
  }
  return out;
}

// The request line of `q` with "top_n":n.
std::string WithTopN(ScoreRequest q, int n) {
  q.top_n = n;
  return ScoreRequestLine("1", q);
}

// "candidates" with "top_n" answers the top_n of those candidates, best first, as retrieval
// answers ("items" and their "scores"): their logits, ties in request order. Without top_n, one
// score per candidate in request order (top_n was ignored without a word).
TEST(Serving, CandidatesWithTopN_AnswersTheTopNOfThemBestFirst) {
  const std::string dir = TempDir();
  Trained t(5);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto server = std::move(BundleServer::Create(eo.output, 50, 16)).value();
  Rng rng(21);
  ScoreRequest q = RandomRequest(rng, 6, 40, false);  // 40 candidates: chunks of 16
  q.candidates[7] = q.candidates[3];                  // a tie: kept in request order
  bool ok = false;
  const std::string plain = server->HandleLine(1, ScoreRequestLine("1", q), &ok);
  ASSERT_TRUE(ok) << plain;
  const std::vector<double> scores = JsonNumbers(plain, "scores");
  ASSERT_EQ(scores.size(), q.candidates.size()) << plain;
  std::vector<size_t> order(scores.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  for (int n : {0, 1, 5, 40, 100}) {
    SCOPED_TRACE("top_n " + std::to_string(n));
    const std::string r = server->HandleLine(2, WithTopN(q, n), &ok);
    ASSERT_TRUE(ok) << r;
    EXPECT_EQ(r.rfind(R"({"user":1,"version":1,"items":[)", 0), 0u) << r;
    EXPECT_TRUE(JsonChecker::Valid(r)) << r;
    const std::vector<double> items = JsonNumbers(r, "items"), got = JsonNumbers(r, "scores");
    const size_t k = std::min<size_t>(n, q.candidates.size());
    ASSERT_EQ(items.size(), k) << r;
    ASSERT_EQ(got.size(), k) << r;
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(items[i], static_cast<double>(q.candidates[order[i]])) << "rank " << i;
      EXPECT_EQ(got[i], scores[order[i]]) << "rank " << i;
    }
    // The Scorer: the same ranking, and still every candidate's logit.
    auto scorer = std::move(Scorer::Create(std::move(Bundle::Load(eo.output)).value(), 16)).value();
    ScoreRequest ranked = q;
    ranked.top_n = n;
    ScoreResponse resp;
    ASSERT_TRUE(scorer->Score(ranked, &resp).ok());
    ASSERT_EQ(resp.scores.size(), q.candidates.size());
    ASSERT_EQ(resp.items.size(), k);
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(resp.items[i], q.candidates[order[i]]) << "rank " << i;
      EXPECT_EQ(resp.item_scores[i], resp.scores[order[i]]) << "rank " << i;
    }
  }
  // Without top_n (-1): no ranking.
  auto scorer = std::move(Scorer::Create(std::move(Bundle::Load(eo.output)).value(), 16)).value();
  ScoreResponse resp;
  ASSERT_TRUE(scorer->Score(q, &resp).ok());
  EXPECT_EQ(resp.scores.size(), q.candidates.size());
  EXPECT_TRUE(resp.items.empty());
  ps::RemoveTree(dir);
}

// A history longer than the model's data.max_history (10 here) is scored by its newest 10
// entries, as training builds its histories (the newest max_history events before the target,
// worker/data_reader.cc), but not silently: the response says how many of its oldest entries
// were dropped ("history_dropped"). A history that fits has no such field.
TEST(Serving, HistoryLongerThanMaxHistory_NewestScored_ResponseSaysHowManyDropped) {
  const std::string dir = TempDir();
  Trained t(5);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto server = std::move(BundleServer::Create(eo.output, 50)).value();
  Rng rng(23);
  for (bool cats : {true, false}) {
    const ScoreRequest q = RandomRequest(rng, 14, 5, cats);
    ScoreRequest newest = q;
    newest.history.erase(newest.history.begin(), newest.history.begin() + 4);
    if (cats)
      newest.history_cats.erase(newest.history_cats.begin(), newest.history_cats.begin() + 4);
    bool ok = false;
    const std::string fits = server->HandleLine(1, ScoreRequestLine("1", newest), &ok);
    ASSERT_TRUE(ok) << fits;
    EXPECT_EQ(fits.find("history_dropped"), std::string::npos) << fits;
    const std::string cut = server->HandleLine(2, ScoreRequestLine("1", q), &ok);
    ASSERT_TRUE(ok) << cut;
    EXPECT_EQ(cut, fits.substr(0, fits.size() - 1) + ",\"history_dropped\":4}");
    EXPECT_TRUE(JsonChecker::Valid(cut)) << cut;
    // With top_n too: the ranked answer says so as well (after "unknown_ids" when some of the
    // random ids have no row).
    const std::string ranked = server->HandleLine(3, WithTopN(q, 2), &ok);
    ASSERT_TRUE(ok) << ranked;
    EXPECT_NE(ranked.find(R"("history_dropped":4})"), std::string::npos) << ranked;
    EXPECT_TRUE(JsonChecker::Valid(ranked)) << ranked;
  }
  // The Scorer says so too; a history of exactly max_history drops nothing.
  auto scorer = std::move(Scorer::Create(std::move(Bundle::Load(eo.output)).value())).value();
  for (int n : {0, 3, 10, 11, 25}) {
    ScoreResponse r;
    ASSERT_TRUE(scorer->Score(RandomRequest(rng, n, 3, true), &r).ok());
    EXPECT_EQ(r.history_used, std::min(n, 10)) << n;
    EXPECT_EQ(r.history_dropped, std::max(n - 10, 0)) << n;
  }
  ps::RemoveTree(dir);
}

TEST(Serving, EveryResponseIsValidJson_InvalidUtf8InTheRequestIsReplaced) {
  const std::string dir = TempDir();
  Trained t(5);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto server = std::move(BundleServer::Create(eo.output, 50)).value();
  struct Case {
    std::string line, want;
    bool ok;
  };
  const std::string rest = R"(,"history":[1,2],"candidates":[3]})";
  const std::vector<Case> cases = {
      {"{\"user\":\"\xff\xfe\"" + rest, R"({"user":"\ufffd\ufffd","version":1,"scores":[)", true},
      {"{\"user\":{\"n\xc3\":[\"\xed\xa0\x80\"]}" + rest,
       R"({"user":{"n\ufffd":["\ufffd\ufffd\ufffd"]},"version":1,)", true},
      {"{\"user\":\"caf\xc3\xa9 \\u00e9 \\\"q\\\"\"" + rest,
       "{\"user\":\"caf\xc3\xa9 \\u00e9 \\\"q\\\"\",\"version\":1,", true},
      {"{\"user\":1,\"hist\xff\":[1]}",
       R"({"user":1,"line":4,"error":"line 4: column 19: unknown field \"hist\ufffd\" )", false},
      {"{\"user\":\"\xf0\x9f\x98\x80\",\"history\xe2\x82\":[1]}",
       "{\"user\":\"\xf0\x9f\x98\x80\",\"line\":5,\"error\":\"line 5: column 28: unknown field "
       "\\\"history\\ufffd\\ufffd\\\"",
       false},
      {"{\"user\":-1.5e3" + rest, R"({"user":-1.5e3,"version":1,)", true},
      {"{\"user\":123456789012345678901234567890" + rest,
       R"({"user":123456789012345678901234567890,"version":1,)", true},
      {"{\"user\":[true,false,null,{}]" + rest, R"({"user":[true,false,null,{}],"version":1,)",
       true},
      {"{\"user\":\"\xff\",\"history\":[1],\"top_n\":-1}",
       R"({"user":"\ufffd","line":9,"error":"line 9: column 35: field \"top_n\")", false},
  };
  std::string reused;
  int64_t line = 0;
  for (const Case& c : cases) {
    ++line;
    bool ok = !c.ok;
    const std::string r = server->HandleLine(line, c.line, &ok);
    EXPECT_EQ(ok, c.ok) << c.line << " -> " << r;
    EXPECT_TRUE(JsonChecker::Valid(r)) << c.line << " -> " << r;
    EXPECT_EQ(r.rfind(c.want, 0), 0u) << c.line << " -> " << r;
    server->HandleLine(line, c.line, &ok, &reused);
    EXPECT_EQ(reused, r);
  }
  ps::RemoveTree(dir);
}

// A bundle root nothing was exported into said "BUNDLE/CURRENT: cannot open", like a damaged
// bundle; a checkpoint directory given as the bundle is named as one.
TEST(Serving, EmptyBundleRoot_SaysThereIsNoVersionYet) {
  const std::string dir = TempDir();
  ASSERT_EQ(::mkdir((dir + "/root").c_str(), 0755), 0);
  for (const auto& b :
       {Bundle::Load(dir + "/root").status(), BundleServer::Create(dir + "/root", 10).status()}) {
    EXPECT_EQ(b.code(), StatusCode::kNotFound) << b;
    EXPECT_NE(b.message().find(dir +
                               "/root: no bundle version yet (no CURRENT, no MANIFEST): "
                               "run `ips export --checkpoint CKPT --output " +
                               dir + "/root` first"),
              std::string::npos)
        << b;
  }
  Trained t(5);
  Checkpoint(t, dir + "/ckpt", 20);
  const Status c = Bundle::Load(dir + "/ckpt").status();
  EXPECT_NE(c.message().find(dir + "/ckpt: is a training checkpoint directory (it holds LATEST), "
                                   "not a serving bundle"),
            std::string::npos)
      << c;
  ps::RemoveTree(dir);
}

TEST(Serving, DeltaBundle_LoadsToTheSameRowsAsAFullExport_AndIsPickedUp) {
  const std::string dir = TempDir();
  Trained t(8);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt1", 10);
  eo.output = dir + "/bundle";
  eo.delta = true;  // no version yet: a full bundle, and the result says why
  auto v1 = ExportBundle(eo);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->delta_of, 0);
  EXPECT_EQ(v1->delta_skipped, "no_base");
  auto server = std::move(BundleServer::Create(eo.output, 5)).value();
  // More training: a few rows change, one is removed, new keys appear.
  Rng rng(4);
  std::vector<uint64_t> keys = {1, 2, 3, 1000, 1001};
  std::vector<float> rows(keys.size() * 4), grads(keys.size() * 4);
  ASSERT_TRUE(t.tables[0]->Pull(keys.data(), 5, rows.data()).ok());
  for (auto& g : grads) g = static_cast<float>(rng.Normal());
  ASSERT_TRUE(t.tables[0]->Push(keys.data(), 5, grads.data()).ok());
  ASSERT_TRUE(t.tables[0]->Erase(7));
  eo.checkpoint = Checkpoint(t, dir + "/ckpt2", 20);
  auto v2 = ExportBundle(eo);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->delta_of, 1);
  EXPECT_EQ(v2->delta_skipped, "");
  EXPECT_EQ(v2->rows, 5);  // the 3 updated rows and the 2 new ones; categories unchanged
  EXPECT_EQ(v2->rows_removed, 1);
  ExportOptions full = eo;
  full.output = dir + "/full";
  full.delta = false;
  auto f1 = ExportBundle(full);
  ASSERT_TRUE(f1.ok()) << f1.status();
  EXPECT_EQ(f1->delta_skipped, "") << "no delta was asked for";
  auto a = std::move(Bundle::Load(eo.output)).value();
  auto b = std::move(Bundle::Load(full.output)).value();
  EXPECT_EQ(a->version(), 2);
  for (const char* table : {"item", "category"}) {
    ASSERT_EQ(a->rows(table), b->rows(table)) << table;
    for (uint64_t k : b->keys(table)) {
      const float* ra = a->Row(table, k);
      ASSERT_NE(ra, nullptr) << table << " key " << k;
      EXPECT_EQ(std::memcmp(ra, b->Row(table, k), 16), 0) << table << " key " << k;
    }
  }
  EXPECT_EQ(a->Row("item", 7), nullptr);
  // The server swaps to the delta version.
  for (int i = 0; i < 400 && server->version() != 2; ++i) ::usleep(5000);
  EXPECT_EQ(server->version(), 2);
  bool ok = false;
  server->HandleLine(1, R"({"history":[1,2],"candidates":[1000]})", &ok);
  EXPECT_TRUE(ok);
  ps::RemoveTree(dir);
}

// A failed `ips export --delta` (a base of another precision; a corrupt base) leaves no staging
// directory behind, and the current version stays current.
TEST(Serving, FailedDeltaExport_LeavesNoStagingDirectory) {
  const std::string dir = TempDir();
  Trained t(9);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 10);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto leftovers = [&] {
    std::vector<std::string> tmp;
    const std::vector<std::string> names = ps::ListDir(eo.output).value();
    for (const auto& n : names)
      if (n.rfind("tmp-", 0) == 0) tmp.push_back(n);
    return tmp;
  };
  ExportOptions delta = eo;
  delta.delta = true;
  delta.fp16 = true;  // the current version is fp32
  auto r = ExportBundle(delta);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("same precision"), std::string::npos) << r.status();
  EXPECT_TRUE(leftovers().empty()) << leftovers()[0];
  EXPECT_EQ(CurrentBundleVersion(eo.output).value(), 1);

  // A corrupt base: the delta cannot be computed.
  const std::string rows = eo.output + "/v-1/rows-item.bin";
  FILE* f = std::fopen(rows.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, 100, SEEK_SET);
  std::fputc(0x5a, f);
  std::fclose(f);
  delta.fp16 = false;
  r = ExportBundle(delta);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(rows), std::string::npos) << r.status();
  EXPECT_TRUE(leftovers().empty()) << leftovers()[0];
  EXPECT_EQ(CurrentBundleVersion(eo.output).value(), 1);
  ps::RemoveTree(dir);
}

// `ips export --delta` of a checkpoint whose tables have another width than the current version's
// (a checkpoint of another model exported into this model's bundle root) is refused naming both
// widths and models: the old code diffed rows of different widths (reading past the base's rows)
// and published a delta that Bundle::Load, and so every server, refuses.
TEST(Serving, DeltaExportOfAnotherWidth_RefusedNamingBothModels_NothingPublished) {
  const std::string dir = TempDir();
  Trained t(9);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 10);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  // The same model type (a model of another type is refused before widths are compared: see
  // ExportOfAnotherModelType_RefusedNamingBoth_NothingPublished).
  std::string wide = kConfig;
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"type: DIN embedding_dim: 4", "type: DIN embedding_dim: 8"},
           {"\"item\" dim: 4", "\"item\" dim: 8"},
           {"\"category\" dim: 4", "\"category\" dim: 8"}}) {
    ASSERT_NE(wide.find(from), std::string::npos) << from;
    wide.replace(wide.find(from), from.size(), to);
  }
  auto state = MakeServingState(wide, 8, {400, 30}, ps::TableOptions(), 0.5, 2);
  ASSERT_TRUE(state.ok()) << state.status();
  CheckpointOptions co;
  co.dir = dir + "/ckpt_wide";
  ASSERT_TRUE(std::move(CheckpointWriter::Create(co)).value()->Write(20, (*state)->content).ok());
  ExportOptions delta = eo;
  delta.checkpoint = co.dir;
  delta.delta = true;
  auto r = ExportBundle(delta);
  ASSERT_FALSE(r.ok()) << "published v-" << r->version << " delta_of=" << r->delta_of;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  for (const std::string& want :
       {"the current version 1 of " + eo.output + " has table 'category' of dim 4, " + co.dir +
            "/ckpt-20 has dim 8",
        std::string("(the base was exported from a DIN model (model.embedding_dim 4), this from a "
                    "DIN model (model.embedding_dim 8))"),
        std::string("export without --delta")})
    EXPECT_NE(r.status().message().find(want), std::string::npos) << want << "\n" << r.status();
  EXPECT_EQ(CurrentBundleVersion(eo.output).value(), 1);
  const std::vector<std::string> names = ps::ListDir(eo.output).value();
  for (const auto& n : names) EXPECT_NE(n.rfind("tmp-", 0), 0u) << n;
  // A full export of it is fine, and serves.
  delta.delta = false;
  auto full = ExportBundle(delta);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->version, 2);
  auto scorer = Scorer::Create(std::move(Bundle::Load(eo.output)).value());
  ASSERT_TRUE(scorer.ok()) << scorer.status();
  ps::RemoveTree(dir);
}

constexpr char kMindConfig[] = R"(
version: 1
name: "serving_test_mind"
data { batch_size: 128 max_history: 10 synthetic { num_items: 350 num_categories: 20 } }
model { type: MIND embedding_dim: 4 num_interests: 3 routing_iterations: 2 }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
)";

TEST(Serving, Retrieval_Mind_TopNEqualsBruteForceInTheItemPlusCategorySpace) {
  const std::string dir = TempDir();
  Trained t(12, kMindConfig);
  ASSERT_GT(t.model->num_user_vectors(), 0);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto scorer = std::move(Scorer::Create(std::move(Bundle::Load(eo.output)).value())).value();
  Rng rng(5);
  for (int r = 0; r < 5; ++r) {
    ScoreRequest q = RandomRequest(rng, 3 + r, 0, false);
    q.top_n = 7;
    ScoreResponse got;
    ASSERT_TRUE(scorer->Score(q, &got).ok());
    // Brute force: the model's user vectors for the history (one dummy candidate), scored
    // against every row of the item table.
    ScoreRequest one = q;
    one.candidates = {0};
    for (uint64_t h : q.history) one.history_cats.push_back(CatOf(h));
    one.candidate_cats = {0};
    t.Reference(one);
    const int64_t K = t.model->num_user_vectors(), V = t.model->vector_dim();
    const std::vector<float> u(t.model->user_vectors(), t.model->user_vectors() + K * V);
    // MIND's item space: item row + the row of its category (zeros for a category never seen).
    std::map<uint64_t, std::vector<float>> cat_rows;
    t.tables[1]->ForEachRowSince(
        0, [&](const ps::RowRecord& row) { cat_rows[row.key].assign(row.value, row.value + V); });
    std::vector<std::pair<float, uint64_t>> all;
    t.tables[0]->ForEachRowSince(0, [&](const ps::RowRecord& row) {
      std::vector<float> x(row.value, row.value + V);
      auto c = cat_rows.find(CatOf(row.key));
      if (c != cat_rows.end())
        for (int64_t j = 0; j < V; ++j) x[j] += c->second[j];
      float best = -INFINITY;
      for (int64_t k = 0; k < K; ++k) {
        float dot = 0;
        for (int64_t j = 0; j < V; ++j) dot += u[k * V + j] * x[j];
        best = std::max(best, dot);
      }
      all.emplace_back(best, row.key);
    });
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a > b; });
    ASSERT_EQ(got.items.size(), 7u);
    for (size_t i = 0; i < 7; ++i) {
      EXPECT_NEAR(got.item_scores[i], all[i].first, 1e-5) << "rank " << i;
      // Items agree except where two scores tie within the tolerance.
      if (i + 1 < all.size() && all[i].first - all[i + 1].first > 1e-4 &&
          (i == 0 || all[i - 1].first - all[i].first > 1e-4)) {
        EXPECT_EQ(got.items[i], all[i].second) << "rank " << i;
      }
    }
  }
  ps::RemoveTree(dir);
}

TEST(Serving, HotReloadUnderAStreamOfRequests_NoRequestLost) {
  const std::string dir = TempDir();
  Trained v1(6), v2(7);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(v1, dir + "/ckpt1", 10);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  auto server = std::move(BundleServer::Create(eo.output, 5)).value();

  Rng rng(11);
  const ScoreRequest q = RandomRequest(rng, 10, 20, true);
  std::string line = R"({"user":42,"history":[)";
  for (size_t i = 0; i < q.history.size(); ++i)
    line += (i ? "," : "") + std::to_string(q.history[i]);
  line += R"(],"history_cats":[)";
  for (size_t i = 0; i < q.history_cats.size(); ++i)
    line += (i ? "," : "") + std::to_string(q.history_cats[i]);
  line += R"(],"candidates":[)";
  for (size_t i = 0; i < q.candidates.size(); ++i)
    line += (i ? "," : "") + std::to_string(q.candidates[i]);
  line += R"(],"candidate_cats":[)";
  for (size_t i = 0; i < q.candidate_cats.size(); ++i)
    line += (i ? "," : "") + std::to_string(q.candidate_cats[i]);
  line += "]}";

  std::vector<std::string> responses;
  std::atomic<bool> exported{false};
  std::thread serving([&] {
    // Keep serving until well after the new version was published (bounded by 20 s).
    int64_t after = 0;
    for (int64_t n = 1; n <= 200000 && after < 5000; ++n) {
      bool ok = false;
      responses.push_back(server->HandleLine(n, line, &ok));
      if (!ok) break;
      if (exported.load()) ++after;
      if (exported.load() && responses.back().find("\"version\":2") != std::string::npos &&
          after > 50)
        break;
      ::usleep(200);
    }
  });
  ::usleep(20000);
  eo.checkpoint = Checkpoint(v2, dir + "/ckpt2", 20);
  auto ex = ExportBundle(eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->version, 2);
  exported = true;
  serving.join();

  // Every request was answered, versions never go back, and both versions served.
  int64_t v1_count = 0, v2_count = 0;
  int last = 1;
  for (const auto& r : responses) {
    ASSERT_EQ(r.find("error"), std::string::npos) << r;
    const int v = r.find("\"version\":2") != std::string::npos ? 2 : 1;
    ASSERT_GE(v, last) << "a response of the old version after the new one";
    last = v;
    (v == 1 ? v1_count : v2_count)++;
  }
  EXPECT_GT(v1_count, 0);
  EXPECT_GT(v2_count, 0);
  EXPECT_EQ(server->reloads(), 1);
  // The new version scores as model v2 does.
  auto& back = responses.back();
  const std::vector<float> want = v2.Reference(q);
  std::vector<float> got;
  size_t pos = back.find("\"scores\":[") + 10;
  while (pos < back.size() && back[pos] != ']') {
    char* end = nullptr;
    got.push_back(std::strtof(back.c_str() + pos, &end));
    pos = static_cast<size_t>(end - back.c_str()) + (back[end - back.c_str()] == ',' ? 1 : 0);
  }
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LE(MaxAbsDiff(got, want), 1e-5);
  std::printf("[ reload ] %zu requests: %lld on v1, %lld on v2\n", responses.size(),
              static_cast<long long>(v1_count), static_cast<long long>(v2_count));
  ps::RemoveTree(dir);
}

// A bundle whose checkpoint names no dataset has no item -> category map: a request must then
// carry its categories, and MIND top-N (which needs the category rows) is refused.
TEST(Serving, NoItemCategoryMap_RequiresRequestCategories_RefusesMindTopN) {
  const std::string dir = TempDir();
  std::string din = kConfig, mind = kMindConfig;
  const std::string synth = " synthetic { num_items: 350 num_categories: 20 }";
  din.erase(din.find(synth), synth.size());
  mind.erase(mind.find(synth), synth.size());
  for (const std::string* config : {&din, &mind}) {
    Trained t(31, config->c_str());
    ExportOptions eo;
    eo.checkpoint = Checkpoint(t, dir + "/ckpt", 20);
    eo.output = dir + "/bundle";
    auto ex = ExportBundle(eo);
    ASSERT_TRUE(ex.ok()) << ex.status();
    EXPECT_FALSE(ex->item_cats);
    auto bundle = std::move(Bundle::Load(eo.output)).value();
    EXPECT_EQ(bundle->item_cats(), nullptr);
    auto scorer = std::move(Scorer::Create(bundle)).value();
    Rng rng(3);
    ScoreRequest q = RandomRequest(rng, 5, 4, false);
    ScoreResponse r;
    Status s = scorer->Score(q, &r);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("history_cats"), std::string::npos) << s;
    q = RandomRequest(rng, 5, 4, true);
    EXPECT_TRUE(scorer->Score(q, &r).ok());
    EXPECT_LE(MaxAbsDiff(r.scores, t.Reference(q)), 1e-5);
    if (config == &mind) {
      q.candidates.clear();
      q.candidate_cats.clear();
      s = scorer->Score(q, &r);
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
      EXPECT_NE(s.message().find("item -> category map"), std::string::npos) << s;
    }
    ps::RemoveTree(dir + "/bundle");
    ps::RemoveTree(dir + "/ckpt");
  }
  ps::RemoveTree(dir);
}

// A delta bundle inherits its base's map; PublishBundle's in-memory copy equals the loaded one.
TEST(Serving, PublishBundle_DeltaInheritsTheMap_InMemoryBundleEqualsLoaded) {
  const std::string dir = TempDir();
  Trained t(41);
  BundleSource src;
  src.config_text = kConfig;
  src.step = 5;
  src.origin = "test";
  src.tensors = t.content.tensors;
  for (auto& tb : t.tables) src.tables.push_back(tb.get());
  auto cats = std::make_shared<std::vector<uint32_t>>(351);
  for (uint64_t i = 0; i <= 350; ++i) (*cats)[i] = static_cast<uint32_t>(CatOf(i));
  src.item_cats = cats;
  ExportOptions eo;
  eo.output = dir + "/bundle";
  auto full = PublishBundle(src, eo);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->delta_of, 0);
  // Change some rows and publish a delta against the in-memory base.
  Rng rng(2);
  std::vector<uint64_t> keys = {1, 2, 3, 999};
  std::vector<float> rows(16), grads(16);
  ASSERT_TRUE(t.tables[0]->Pull(keys.data(), 4, rows.data()).ok());
  for (auto& g : grads) g = static_cast<float>(rng.Normal());
  ASSERT_TRUE(t.tables[0]->Push(keys.data(), 4, grads.data()).ok());
  eo.delta = true;
  src.step = 6;
  auto delta = PublishBundle(src, eo, full->bundle);
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_EQ(delta->delta_of, 1);
  EXPECT_GE(delta->rows, 3);
  EXPECT_LT(delta->rows, t.tables[0]->Stats().rows);
  auto loaded = std::move(Bundle::Load(eo.output)).value();
  EXPECT_EQ(loaded->version(), 2);
  ASSERT_NE(loaded->item_cats(), nullptr);
  EXPECT_EQ(*loaded->item_cats(), *cats);
  for (const char* table : {"item", "category"}) {
    EXPECT_EQ(loaded->rows(table), delta->bundle->rows(table));
    for (uint64_t k : loaded->keys(table)) {
      const float* a = loaded->Row(table, k);
      const float* b = delta->bundle->Row(table, k);
      ASSERT_NE(b, nullptr);
      EXPECT_EQ(std::memcmp(a, b, 16), 0) << table << " " << k;
    }
  }
  EXPECT_EQ(loaded->tensors(), delta->bundle->tensors());
  ps::RemoveTree(dir);
}

// Every entry of `dir`, recursively, with the contents of its files: what a refused writer must
// leave as it was.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  auto names = ps::ListDir(dir);
  if (!names.ok()) return out;
  for (const auto& n : *names) {
    const std::string path = dir + "/" + n;
    if (ps::IsDirectory(path)) {
      out[path] = "<dir>";
      for (auto& [k, v] : Snapshot(path)) out[k] = v;
    } else {
      auto content = ps::ReadSmallFile(path);
      out[path] = content.ok() ? *content : "<unreadable>";
    }
  }
  return out;
}

// `ips export --output` and PublishBundle wrote v-<n> and CURRENT into whatever directory they were
// given: a checkpoint root (then `ips serve` of it served nothing and the checkpoint root held
// bundle versions), one checkpoint, a converted dataset, a bundle's version directory, any other
// non-empty directory. Each is refused naming what it is, and nothing is written; so is a new
// root inside a checkpoint or bundle root (whose writer's retention would remove it). New, empty
// (hidden files aside) and bundle roots (with the user's own files beside the versions) are
// written into.
TEST(Serving, ExportIntoWhatIsNotABundleRoot_RefusedNamingIt_NothingWritten) {
  const std::string dir = TempDir();
  Trained t(21);
  const std::string ckpt = Checkpoint(t, dir + "/ckpt", 10);  // dir/ckpt/ckpt-10
  ExportOptions eo;
  eo.checkpoint = ckpt;
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  ASSERT_EQ(::mkdir((dir + "/dataset").c_str(), 0755), 0);
  std::ofstream(dir + "/dataset/MANIFEST") << "ips_dataset_manifest 1\nformat=events\n";
  std::ofstream(dir + "/dataset/vocab.ips") << "v";
  ASSERT_EQ(::mkdir((dir + "/inputs").c_str(), 0755), 0);
  std::ofstream(dir + "/inputs/u.data") << "1 2 3\n";
  std::ofstream(dir + "/inputs/u.item") << "2|x\n";
  std::ofstream(dir + "/afile") << "not a directory";
  struct Case {
    std::string output, want;
  };
  const std::vector<Case> cases = {
      {dir + "/ckpt", "--output " + dir + "/ckpt: is a training checkpoint root (it holds "},
      {ckpt, "--output " + ckpt + ": looks like a training checkpoint (" + ckpt +
                 "/MANIFEST is a checkpoint manifest)"},
      {dir + "/dataset", "--output " + dir + "/dataset: is a converted dataset (" + dir +
                             "/dataset/MANIFEST is a dataset manifest)"},
      {dir + "/bundle/v-1", "--output " + dir +
                                "/bundle/v-1: looks like a serving bundle version (" + dir +
                                "/bundle/v-1/MANIFEST is a bundle manifest): pass its bundle "
                                "root"},
      {dir + "/inputs", "--output " + dir +
                            "/inputs: is a non-empty directory that is not a serving bundle root "
                            "(it holds 'u.data', 'u.item')"},
      {dir + "/afile", "--output " + dir + "/afile: exists and is not a directory"},
      {dir + "/ckpt/ckpt-11", "--output " + dir + "/ckpt/ckpt-11: would be created inside " + dir +
                                  "/ckpt, which is a training checkpoint root"},
      {dir + "/bundle/v-7/x", "--output " + dir + "/bundle/v-7/x: would be created inside " + dir +
                                  "/bundle, which is a serving bundle root"},
  };
  const auto before = Snapshot(dir);
  BundleSource src;
  src.config_text = kConfig;
  src.origin = "test";
  src.tensors = t.content.tensors;
  for (auto& tb : t.tables) src.tables.push_back(tb.get());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.output);
    eo.output = c.output;
    auto r = ExportBundle(eo);
    ASSERT_FALSE(r.ok()) << "wrote " << r->path;
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
    EXPECT_EQ(r.status().message().rfind(c.want, 0), 0u) << r.status() << "\nwant: " << c.want;
    auto p = PublishBundle(src, eo);
    ASSERT_FALSE(p.ok()) << "wrote " << p->path;
    EXPECT_EQ(p.status().message().rfind(c.want, 0), 0u) << p.status();
  }
  EXPECT_EQ(Snapshot(dir), before);
  // What may be written into.
  ASSERT_EQ(::mkdir((dir + "/empty").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir + "/hidden").c_str(), 0755), 0);
  std::ofstream(dir + "/hidden/.gitkeep") << "";
  std::ofstream(dir + "/bundle/NOTES.txt") << "mine";
  for (const std::string& out : {dir + "/new/deeper", dir + "/empty", dir + "/hidden/",
                                 dir + "/bundle", dir + "/new/deeper"}) {
    eo.output = out;
    auto r = ExportBundle(eo);
    EXPECT_TRUE(r.ok()) << out << ": " << r.status();
  }
  EXPECT_EQ(CurrentBundleVersion(dir + "/bundle").value(), 2);
  EXPECT_EQ(CurrentBundleVersion(dir + "/new/deeper").value(), 2);
  EXPECT_EQ(ps::ReadSmallFile(dir + "/bundle/NOTES.txt").value(), "mine");
  ps::RemoveTree(dir);
}

// A bundle root's current version holds one model type: exporting another (MIND into a DIN root)
// was accepted and a server following the root switched model type between two requests. Refused,
// naming both models, whether full or --delta; nothing is published. The same type with other
// sizes is a new full version as before.
TEST(Serving, ExportOfAnotherModelType_RefusedNamingBoth_NothingPublished) {
  const std::string dir = TempDir();
  Trained din(31);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(din, dir + "/din", 10);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  Trained mind(32, kMindConfig);
  ExportOptions other = eo;
  other.checkpoint = Checkpoint(mind, dir + "/mind", 10);
  const auto before = Snapshot(eo.output);
  for (const bool delta : {false, true}) {
    SCOPED_TRACE(delta ? "delta" : "full");
    other.delta = delta;
    auto r = ExportBundle(other);
    ASSERT_FALSE(r.ok()) << "published v-" << r->version;
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
    for (const std::string& want :
         {"--output " + eo.output + ": its current version v-1 holds a DIN model",
          std::string("the new version would hold a MIND model"),
          std::string("(model.type DIN -> MIND)"), std::string("write it into a new bundle root")})
      EXPECT_NE(r.status().message().find(want), std::string::npos) << want << "\n" << r.status();
    // The library's publish (a stream's) is refused the same way.
    BundleSource src;
    src.config_text = kMindConfig;
    src.origin = "test";
    src.tensors = mind.content.tensors;
    for (auto& tb : mind.tables) src.tables.push_back(tb.get());
    auto p = PublishBundle(src, other);
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.status().message().find("(model.type DIN -> MIND)"), std::string::npos)
        << p.status();
  }
  EXPECT_EQ(Snapshot(eo.output), before);
  // Into a new root it is fine.
  other.output = dir + "/mind_bundle";
  other.delta = false;
  EXPECT_TRUE(ExportBundle(other).ok());
  ps::RemoveTree(dir);
}

// --min_count above every row's use count dropped every row without a word (rows=0: every
// candidate then scored alike). Refused, naming the table, its rows and the count that keeps some;
// nothing is written (not even the output directory).
TEST(Serving, MinCountKeepingNoRowOfATable_RefusedNamingTheTable_NothingWritten) {
  const std::string dir = TempDir();
  Trained t(6);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 10);
  eo.output = dir + "/bundle";
  eo.min_count = 100000;
  auto r = ExportBundle(eo);
  ASSERT_FALSE(r.ok()) << "rows=" << r->rows << " rows_dropped=" << r->rows_dropped;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  // The tables in the checkpoint's order (by name): category first.
  uint32_t most[2] = {0, 0};
  for (int i = 0; i < 2; ++i)
    t.tables[i]->ForEachRowSince(
        0, [&](const ps::RowRecord& row) { most[i] = std::max(most[i], row.freq); });
  for (const std::string& want : {"export: --min_count 100000 keeps none of the " +
                                      std::to_string(t.tables[1]->Stats().rows) +
                                      " rows of table 'category' (its most used row was used " +
                                      std::to_string(most[1]) + " times)",
                                  "use --min_count " + std::to_string(most[1]) + " or less"})
    EXPECT_NE(r.status().message().find(want), std::string::npos) << want << "\n" << r.status();
  EXPECT_FALSE(ps::PathExists(eo.output));
  // The item table's turn: a count above its most used row but not the categories'.
  ASSERT_LT(most[0], most[1]);
  eo.min_count = most[0] + 1;
  r = ExportBundle(eo);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(" rows of table 'item' (its most used row was used " +
                                      std::to_string(most[0]) + " times)"),
            std::string::npos)
      << r.status();
  EXPECT_FALSE(ps::PathExists(eo.output));
  // The largest count that keeps a row of every table is accepted.
  eo.min_count = most[0];
  auto ok = ExportBundle(eo);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_GT(ok->rows, 0);
  ps::RemoveTree(dir);
}

// `ips export` of a SASRec or GRU4Rec checkpoint said "model sasrec is a sequence model, not a
// CTR model": now the command and the model types it supports.
TEST(Serving, ExportOfASequenceModel_NamesTheCommandAndTheSupportedTypes) {
  const std::string dir = TempDir();
  for (const char* type : {"SASREC", "GRU4REC"}) {
    SCOPED_TRACE(type);
    Trained t(7);
    std::string config = kConfig;
    const std::string din =
        "type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4]";
    ASSERT_NE(config.find(din), std::string::npos);
    config.replace(config.find(din), din.size(),
                   std::string("type: ") + type + " embedding_dim: 4 num_heads: 1");
    t.content.config_text = config;
    ExportOptions eo;
    eo.checkpoint = Checkpoint(t, dir + "/" + type, 10);
    eo.output = dir + "/bundle";
    auto r = ExportBundle(eo);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(),
              "`ips export`: the checkpoint at " + eo.checkpoint + ": model.type " + type +
                  " is a sequence model; `ips export` supports model.type DIN, DIEN, POOLED, MIND "
                  "or BST (the CTR models)")
        << r.status();
    EXPECT_FALSE(ps::PathExists(eo.output));
  }
  ps::RemoveTree(dir);
}

// Two writers publishing into one bundle root (two streams, an export beside a stream) staged the
// same tmp-v-<n>, and one published the other's half-written files: the root failed its checksums
// and the survivor reported success. The root's lock (ROOT/LOCK, flock, the holder's pid in it) is
// held by the writer: a second one is refused naming that pid and writes nothing, while servers
// (which take no lock) keep loading the root.
TEST(Serving, ExportIntoARootAnotherWriterHolds_RefusedWithItsPid_ServingGoesOn) {
  const std::string dir = TempDir();
  Trained t(11);
  ExportOptions eo;
  eo.checkpoint = Checkpoint(t, dir + "/ckpt", 10);
  eo.output = dir + "/bundle";
  ASSERT_TRUE(ExportBundle(eo).ok());
  // Another writer, as the protocol has it (the lock of this process's own writers is taken the
  // same way by an open file of their own, so this process's writers are refused too).
  const int fd = ::open((eo.output + "/LOCK").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string pid = std::to_string(::getpid());
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  ASSERT_EQ(::pwrite(fd, (pid + "\n").data(), pid.size() + 1, 0),
            static_cast<ssize_t>(pid.size() + 1));
  const auto before = Snapshot(eo.output);
  auto r = ExportBundle(eo);
  ASSERT_FALSE(r.ok()) << "published v-" << r->version << " beside another writer";
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
  EXPECT_EQ(r.status().message().rfind(
                "--output " + eo.output + " is in use by another run (pid " + pid + "): ", 0),
            0u)
      << r.status();
  EXPECT_NE(r.status().message().find("(lock: " + eo.output + "/LOCK)"), std::string::npos)
      << r.status();
  EXPECT_EQ(Snapshot(eo.output), before);
  // Serving goes on while the writer holds the root.
  auto server = BundleServer::Create(eo.output, 5);
  ASSERT_TRUE(server.ok()) << server.status();
  bool ok = false;
  (*server)->HandleLine(1, R"({"history":[1,2],"candidates":[3,4]})", &ok);
  EXPECT_TRUE(ok);
  ::close(fd);  // the other writer is done
  auto again = ExportBundle(eo);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version, 2);
  for (int i = 0; i < 400 && (*server)->version() != 2; ++i) ::usleep(5000);
  EXPECT_EQ((*server)->version(), 2);
  ps::RemoveTree(dir);
}

// ---- Tests of the writer's API (they do not compile against the code before it) ---------------

// A BundleWriter holds its root from Open until destroyed: a second writer (an export, another
// stream) is refused, readers are not; CheckModelType compares with the current version.
TEST(Serving, BundleWriter_HoldsTheRootUntilDestroyed) {
  const std::string dir = TempDir();
  Trained t(12);
  BundleSource src;
  src.config_text = kConfig;
  src.origin = "test";
  src.tensors = t.content.tensors;
  for (auto& tb : t.tables) src.tables.push_back(tb.get());
  auto writer = BundleWriter::Open(dir + "/bundle", "--stream_publish_dir");
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_TRUE((*writer)->CheckModelType(kMindConfig).ok()) << "no version yet";
  ExportOptions eo;
  auto first = (*writer)->Publish(src, eo);
  ASSERT_TRUE(first.ok()) << first.status();
  eo.delta = true;
  auto second = (*writer)->Publish(src, eo, first->bundle);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->delta_of, 1);
  const Status mind = (*writer)->CheckModelType(kMindConfig);
  EXPECT_NE(mind.message().find("--stream_publish_dir " + dir +
                                "/bundle: its current version v-2 "
                                "holds a DIN model"),
            std::string::npos)
      << mind;
  const std::string in_use = " is in use by another run (pid " + std::to_string(::getpid()) + ")";
  auto other = BundleWriter::Open(dir + "/bundle");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("--output " + dir + "/bundle" + in_use),
            std::string::npos)
      << other.status();
  eo.output = dir + "/bundle";
  auto publish = PublishBundle(src, eo);
  ASSERT_FALSE(publish.ok());
  EXPECT_NE(publish.status().message().find(in_use), std::string::npos) << publish.status();
  EXPECT_TRUE(Bundle::Load(dir + "/bundle").ok());
  writer->reset();
  EXPECT_TRUE(PublishBundle(src, eo).ok());
  ps::RemoveTree(dir);
}

// The model types a bundle holds are exactly those CreateCtrModel builds (the others are the
// sequence models), and every other type is refused naming the command and the supported list.
TEST(Serving, BundleModelTypes_AreTheCtrModels) {
  const google::protobuf::EnumDescriptor* types = config::ModelConfig::Type_descriptor();
  int checked = 0;
  for (int i = 0; i < types->value_count(); ++i) {
    config::Config cfg;
    cfg.mutable_model()->set_type(
        static_cast<config::ModelConfig::Type>(types->value(i)->number()));
    const std::string name = types->value(i)->name();
    SCOPED_TRACE(name);
    auto spec = ModelSpecFromConfig(cfg);
    const Status s = CheckBundleModelType(cfg, "`ips export`");
    if (spec.ok()) {
      EXPECT_EQ(s.ok(), !IsSequenceModel(spec->kind)) << s;
      ++checked;
    }
    if (!s.ok()) {
      EXPECT_EQ(s.message(), "`ips export`: model.type " + name +
                                 " is a sequence model; `ips export` supports model.type DIN, "
                                 "DIEN, POOLED, MIND or BST (the CTR models)");
    }
  }
  EXPECT_EQ(checked, types->value_count()) << "a type whose default model options do not build";
}

// ---- A checkpoint removed by a running job's retention while `ips export` reads it -------------

// A job writing checkpoints of `t` into `dir` with retention (keep_last).
struct RetainingJob {
  Trained& t;
  std::unique_ptr<CheckpointWriter> writer;
  int64_t step = 0;
  RetainingJob(Trained& trained, const std::string& dir, int keep_last) : t(trained) {
    CheckpointOptions o;
    o.dir = dir;
    o.keep_last = keep_last;
    writer = std::move(CheckpointWriter::Create(o)).value();
  }
  void Checkpoint() {
    auto info = writer->Write(++step, t.content);
    ASSERT_TRUE(info.ok()) << info.status();
  }
};

// QA: `ips export --checkpoint ROOT` of a job still training read the table files of the
// checkpoint it had opened after the job's retention had removed it, and failed with a raw
// "cannot open: No such file or directory". Like LoadCheckpoint, export now opens the root again
// (nothing is written before everything is read) and exports the newest checkpoint.
TEST(Serving, ExportOfARootWhoseCheckpointIsRemovedWhileRead_OpensTheRootAgain) {
  const std::string dir = TempDir();
  Trained t(31);
  RetainingJob job(t, dir + "/ck", /*keep_last=*/2);
  for (int k = 0; k < 2; ++k) job.Checkpoint();
  testing::ScopedRaceHook opened("opened", [&](size_t n, const std::string&) {
    if (n != 1) return;
    job.Checkpoint();  // retention removes ckpt-2 once ckpt-4 is written
    job.Checkpoint();
  });
  ExportOptions eo;
  eo.checkpoint = dir + "/ck";
  eo.output = dir + "/bundle";
  auto ex = ExportBundle(eo);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->step, 4);
  EXPECT_EQ(opened.seen(), (std::vector<std::string>{dir + "/ck/ckpt-2", dir + "/ck/ckpt-4"}));
  auto bundle = Bundle::Load(eo.output);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ((*bundle)->rows("item"), t.tables[0]->Stats().rows);
  ps::RemoveTree(dir);
}

// One ckpt-<step> directory replaced while export reads it (its dense file back, its table files
// gone, as a rewrite of the same step half done): the table file's error says the checkpoint was
// removed while being read, naming it, instead of a raw "cannot open"; a root whose checkpoint is
// removed on every attempt gives up the same way. Nothing is written either time.
TEST(Serving, ExportOfACheckpointReplacedWhileRead_SaysRemovedWhileBeingRead_WritesNothing) {
  const std::string dir = TempDir();
  Trained t(32);
  RetainingJob job(t, dir + "/ck", /*keep_last=*/1);
  job.Checkpoint();
  const std::string one = dir + "/ck/ckpt-1";
  ExportOptions eo;
  eo.checkpoint = one;
  eo.output = dir + "/bundle";
  StatusOr<ExportResult> r = InternalError("not run");
  {
    testing::ScopedRaceHook replace("opened", [&](size_t, const std::string&) {
      ASSERT_EQ(std::rename(one.c_str(), (dir + "/old").c_str()), 0);
      ASSERT_TRUE(ps::MakeDirs(one).ok());
      const auto names = ps::ListDir(dir + "/old");
      ASSERT_TRUE(names.ok()) << names.status();
      for (const auto& n : *names)
        if (n.rfind("table-", 0) != 0) std::filesystem::copy_file(dir + "/old/" + n, one + "/" + n);
    });
    r = ExportBundle(eo);
  }
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status();
  EXPECT_EQ(r.status().message().rfind(one + ": checkpoint removed while being read", 0), 0u)
      << r.status();
  EXPECT_NE(r.status().message().find("table-"), std::string::npos) << r.status();
  EXPECT_FALSE(ps::PathExists(eo.output));

  job.Checkpoint();  // retention removes the half-rewritten ckpt-1
  testing::ScopedRaceHook removed("opened", [&](size_t, const std::string&) { job.Checkpoint(); });
  eo.checkpoint = dir + "/ck";
  r = ExportBundle(eo);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(removed.seen().size(), 5u);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status();
  EXPECT_NE(r.status().message().find("checkpoint removed while being read"), std::string::npos)
      << r.status();
  EXPECT_FALSE(ps::PathExists(eo.output));
  ps::RemoveTree(dir);
}

// `ips export --output` on a kernel pseudo file system is refused before anything is read or
// created (as root, /proc and /sys pass every other check); only the check runs here.
TEST(Serving, ExportOutputOnAKernelPseudoFileSystem_Refused) {
  const Status s = CheckBundleRoot("/proc/ips_bundle_" + std::to_string(::getpid()), "--output");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(" would be created in /proc, which is on procfs, a kernel pseudo file "
                             "system that holds no serving bundle files"),
            std::string::npos)
      << s;
  EXPECT_EQ(CheckBundleRoot("/proc", "--output").message().rfind("--output /proc is on procfs", 0),
            0u);
}

// ---- Ids the bundle has no row for ------------------------------------------------------------

constexpr char kPreluConfig[] = R"(
version: 1
name: "serving_test_unknown"
data { batch_size: 128 max_history: 10 synthetic { num_items: 350 num_categories: 20 } }
model { type: DIN embedding_dim: 4 attention_hidden: [6, 5] mlp_hidden: [7, 4] activation: PRELU }
tables { name: "item" dim: 4 }
tables { name: "category" dim: 4 }
)";

// A bundle of kConfig-like sizes whose tables hold exactly items 1..kItems and categories
// 1..kCats (the synthetic catalogue's map covers items 1..350: 301..350 have a category, no row).
std::shared_ptr<const Bundle> ExportKnownRows(const std::string& dir, const char* config) {
  auto state = MakeServingState(config, 128, {kItems, kCats}, ps::TableOptions(), 0.3, 4);
  EXPECT_TRUE(state.ok()) << state.status();
  if (!state.ok()) return nullptr;
  auto bundle = ExportServingBundle(**state, dir, 1, /*fp16=*/false);
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  return bundle.ok() ? *bundle : nullptr;
}

// QA: a request of ids the bundle has no row for (raw dataset ids sent to a bundle of the
// dataset's dense ids) was scored with zero rows without a word. The scorer counts the ids the
// request gave that have no row (items, and categories the request carried; not the categories
// the map filled in, not 0, not the history entries beyond max_history, which are not scored)
// and names the first, identically on the DIN fast path and the generic Forward; the scores stay
// those of zero rows.
TEST(Serving, UnknownIds_CountedAndFirstNamed_FastAndGenericPaths_ScoresUnchanged) {
  const std::string dir = TempDir();
  auto bundle = ExportKnownRows(dir, kPreluConfig);
  ASSERT_NE(bundle, nullptr);
  auto fast = std::move(Scorer::Create(bundle, 16)).value();
  auto generic = std::move(Scorer::Create(bundle, 16, /*fast_path=*/false)).value();
  EXPECT_EQ(fast->scoring_path(),
            models::DinServing::CpuHasAvx512() ? "din_serving/avx512" : "forward");
  ASSERT_EQ(generic->scoring_path(), "forward");
  struct Case {
    std::string name;
    ScoreRequest q;
    int64_t unknown;
    std::string field;  // of the first unknown id ("" when none)
    int64_t entry;
    uint64_t id;
  };
  std::vector<Case> cases;
  {
    Case c{"all known", {}, 0, "", -1, 0};
    c.q.history = {1, 2, 3};
    c.q.history_cats = {1, 2, 3};
    c.q.candidates = {4, 300};
    c.q.candidate_cats = {1, 20};
    cases.push_back(c);
  }
  {
    // Item 1000001 and category 999 are raw ids; 5000 and 777 too.
    Case c{"every field", {}, 4, "history_cats", 1, 999};
    c.q.history = {1, 2, 1000001, 3};
    c.q.history_cats = {1, 999, 2, 3};
    c.q.candidates = {4, 5000, 7};
    c.q.candidate_cats = {1, 2, 777};
    cases.push_back(c);
  }
  {
    // Categories from the map: 1000001 and 5000 get category 0 (padding), 320 category
    // CatOf(320), which has a row; only the three items count.
    Case c{"categories from the map", {}, 3, "history", 2, 1000001};
    c.q.history = {1, 2, 1000001, 3};
    c.q.candidates = {320, 5000, 7};
    cases.push_back(c);
  }
  {
    // 14 entries, the newest 10 scored: the unknown entries 0 and 1 are not, entry 9 is.
    Case c{"beyond max_history", {}, 2, "history", 9, 900009};
    for (uint64_t i = 0; i < 14; ++i) c.q.history.push_back(1 + i);
    c.q.history[0] = 900000;
    c.q.history[1] = 900001;
    c.q.history[9] = 900009;
    c.q.candidates = {4, 800000};
    cases.push_back(c);
  }
  {
    Case c{"ranked candidates", {}, 1, "candidates", 2, 123456789012ull};
    c.q.history = {5};
    c.q.candidates = {1, 2, 123456789012ull, 4};
    c.q.top_n = 2;
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ScoreResponse got_fast, got_generic;
    got_fast.unknown_ids = 77;  // stale values must be replaced
    got_fast.first_unknown_field = "stale";
    ASSERT_TRUE(fast->Score(c.q, &got_fast).ok());
    ASSERT_TRUE(generic->Score(c.q, &got_generic).ok());
    for (const ScoreResponse* r : {&got_fast, &got_generic}) {
      SCOPED_TRACE(r == &got_fast ? "fast path" : "generic path");
      EXPECT_EQ(r->unknown_ids, c.unknown);
      EXPECT_EQ(r->first_unknown_field == nullptr ? "" : r->first_unknown_field, c.field);
      EXPECT_EQ(r->first_unknown_entry, c.entry);
      EXPECT_EQ(r->first_unknown_id, c.id);
    }
    EXPECT_LE(MaxAbsDiff(got_fast.scores, got_generic.scores), 1e-5);
    // The scores are those of zero rows: other unknown ids (and 0, the padding id, which a
    // Scorer call may hold and which is not counted) score exactly the same.
    ScoreRequest other = c.q, padded = c.q;
    // With the categories the map gave the original ids sent along (another item id may have
    // another category in the map).
    for (ScoreRequest* x : {&other, &padded}) {
      if (x->history_cats.empty())
        for (uint64_t h : c.q.history) x->history_cats.push_back(bundle->ItemCategory(h));
      if (x->candidate_cats.empty())
        for (uint64_t h : c.q.candidates) x->candidate_cats.push_back(bundle->ItemCategory(h));
    }
    const auto replace = [&](std::vector<uint64_t>* v, std::vector<uint64_t>* p, uint64_t n) {
      for (size_t i = 0; i < v->size(); ++i)
        if ((*v)[i] > n) {
          (*v)[i] += 17;
          (*p)[i] = 0;
        }
    };
    replace(&other.history, &padded.history, kItems);
    replace(&other.candidates, &padded.candidates, kItems);
    replace(&other.history_cats, &padded.history_cats, kCats);
    replace(&other.candidate_cats, &padded.candidate_cats, kCats);
    for (Scorer* s : {fast.get(), generic.get()}) {
      const ScoreResponse& base = s == fast.get() ? got_fast : got_generic;
      ScoreResponse r;
      ASSERT_TRUE(s->Score(other, &r).ok());
      EXPECT_EQ(r.scores, base.scores);
      EXPECT_EQ(r.item_scores, base.item_scores);
      EXPECT_EQ(r.unknown_ids, c.unknown);
      ASSERT_TRUE(s->Score(padded, &r).ok());
      EXPECT_EQ(r.scores, base.scores);
      EXPECT_EQ(r.unknown_ids, 0);
      EXPECT_EQ(r.first_unknown_field, nullptr);
    }
  }
  ps::RemoveTree(dir);
}

// MIND retrieval (no candidates) counts the history's unknown ids the same way.
TEST(Serving, UnknownIds_CountedInMindRetrieval) {
  const std::string dir = TempDir();
  auto bundle = ExportKnownRows(dir, kMindConfig);
  ASSERT_NE(bundle, nullptr);
  auto scorer = std::move(Scorer::Create(bundle)).value();
  ScoreRequest q;
  q.history = {1, 4000, 2};
  q.history_cats = {1, 2, 4000};
  q.top_n = 3;
  ScoreResponse r;
  ASSERT_TRUE(scorer->Score(q, &r).ok());
  EXPECT_EQ(r.items.size(), 3u);
  EXPECT_EQ(r.unknown_ids, 2);
  EXPECT_STREQ(r.first_unknown_field, "history");
  EXPECT_EQ(r.first_unknown_entry, 1);
  EXPECT_EQ(r.first_unknown_id, 4000u);
  ps::RemoveTree(dir);
}

// The JSON answer: ,"unknown_ids":N only when N > 0 (before "history_dropped", which stays last);
// the server counts the ids and the requests over the lines answered (error lines do not count),
// and a warm request with unknown ids allocates nothing on the fast path.
TEST(Serving, UnknownIds_InTheResponseAndCounted_NoAllocationOnceWarm) {
  const std::string dir = TempDir();
  ASSERT_NE(ExportKnownRows(dir, kPreluConfig), nullptr);
  auto server = std::move(BundleServer::Create(dir + "/bundle", 60000, 16)).value();
  struct Line {
    std::string request, suffix;  // the response ends with suffix
    bool ok;
  };
  const std::vector<Line> lines = {
      {R"({"user":1,"history":[1,2],"candidates":[3,4]})", "]}", true},
      {R"({"user":2,"history":[1,70001],"candidates":[3,90001]})", R"(],"unknown_ids":2})", true},
      {R"({"user":3,"history":[1],"history_cats":[5000],"candidates":[3],"candidate_cats":[7]})",
       R"(],"unknown_ids":1})", true},
      {R"({"user":4,"history":[1,2,3,4,5,6,7,8,9,10,11,70001],"candidates":[3,4],"top_n":1})",
       R"(],"unknown_ids":1,"history_dropped":2})", true},
      // An error line is not counted, unknown ids or not.
      {R"({"user":5,"history":[70001],"candidates":[0]})", "\"}", false},
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    bool ok = !lines[i].ok;
    const std::string out = server->HandleLine(int64_t(i + 1), lines[i].request, &ok);
    EXPECT_EQ(ok, lines[i].ok) << out;
    ASSERT_GE(out.size(), lines[i].suffix.size()) << out;
    EXPECT_EQ(out.substr(out.size() - lines[i].suffix.size()), lines[i].suffix) << out;
    EXPECT_EQ(out.find("unknown_ids") != std::string::npos,
              lines[i].suffix.find("unknown_ids") != std::string::npos)
        << out;
    EXPECT_TRUE(JsonChecker::Valid(out)) << out;
  }
  EXPECT_EQ(server->unknown_ids(), 4);
  EXPECT_EQ(server->requests_with_unknown_ids(), 3);
  EXPECT_EQ(server->truncated_histories(), 1);
  // The scores are those of the same request with other unknown ids.
  bool ok = false;
  const std::string a = server->HandleLine(6, lines[1].request, &ok);
  const std::string b =
      server->HandleLine(7, R"({"user":2,"history":[1,80002],"candidates":[3,99999]})", &ok);
  EXPECT_EQ(a, b);
  EXPECT_EQ(server->requests_with_unknown_ids(), 5);
  if (!models::DinServing::CpuHasAvx512()) {
    ps::RemoveTree(dir);
    GTEST_SKIP() << "no AVX-512: the Forward serves, and its allocations are not checked";
  }
  std::string out;
  for (int warm = 0; warm < 2; ++warm) server->HandleLine(8, lines[3].request, &ok, &out);
  const int64_t before = HeapAllocations();
  server->HandleLine(9, lines[3].request, &ok, &out);
  server->HandleLine(10, lines[1].request, &ok, &out);
  EXPECT_EQ(HeapAllocations() - before, 0);
  EXPECT_TRUE(ok) << out;
  EXPECT_NE(out.find(R"("unknown_ids":2})"), std::string::npos) << out;
  ps::RemoveTree(dir);
}

}  // namespace
}  // namespace ips
