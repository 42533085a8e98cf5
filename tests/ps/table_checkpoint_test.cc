// Tests of the table checkpoint files (ps/table_checkpoint.h): bit-exact round trips of rows,
// optimizer state, TTL/LFU metadata, clock and admission sketches; incremental chains; re-sharding
// N writers into M tables; corrupt, truncated and missing files rejected before any row loads.
#include "ps/table_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/random.h"
#include "ps/checkpoint_io.h"

namespace ips::ps {
namespace {

struct Row {
  std::vector<float> value, state;
  uint32_t last_step = 0, freq = 0;
  bool operator==(const Row& o) const {
    // Bitwise: memcmp, so -0.0 vs 0.0 or NaN payloads would count as differences.
    return value.size() == o.value.size() && state.size() == o.state.size() &&
           std::memcmp(value.data(), o.value.data(), value.size() * 4) == 0 &&
           std::memcmp(state.data(), o.state.data(), state.size() * 4) == 0 &&
           last_step == o.last_step && freq == o.freq;
  }
};

std::map<uint64_t, Row> Dump(const DynamicTable& t) {
  std::map<uint64_t, Row> rows;
  const int64_t dim = t.dim();
  const int sc = t.state_count();
  t.ForEachRowSince(0, [&](const RowRecord& r) {
    Row& row = rows[r.key];
    row.value.assign(r.value, r.value + dim);
    if (sc > 0) row.state.assign(r.state, r.state + sc * dim);
    row.last_step = r.last_step;
    row.freq = r.freq;
  });
  return rows;
}

void ExpectSameTables(const DynamicTable& got, const DynamicTable& want) {
  const auto g = Dump(got), w = Dump(want);
  ASSERT_EQ(g.size(), w.size());
  for (const auto& [key, row] : w) {
    auto it = g.find(key);
    ASSERT_TRUE(it != g.end()) << "key " << key << " missing";
    EXPECT_TRUE(it->second == row) << "key " << key << " differs";
  }
  EXPECT_EQ(got.step(), want.step());
  EXPECT_EQ(got.optimizer_step(), want.optimizer_step());
  EXPECT_EQ(got.last_sweep_step(), want.last_sweep_step());
  const auto gs = got.Sketches(), ws = want.Sketches();
  ASSERT_EQ(gs.size(), ws.size());
  for (size_t s = 0; s < ws.size(); ++s) {
    EXPECT_EQ(gs[s].counters, ws[s].counters) << "sketch " << s;
    EXPECT_EQ(gs[s].additions, ws[s].additions) << "sketch " << s;
  }
}

TableOptions Options(OptimizerOptions::Type type) {
  TableOptions o;
  o.name = "item";
  o.dim = 8;
  o.optimizer.type = type;
  o.optimizer.learning_rate = 0.05;
  o.optimizer.initial_accumulator = 0.1;
  o.initializer.type = InitializerOptions::Type::kNormal;
  o.initializer.stddev = 0.1;
  o.seed = 7;
  o.num_shards = 4;
  o.rows_per_slab = 64;
  o.min_count = 2;
  o.sketch_width = 1024;
  o.ttl_steps = 6;
  o.ttl_sweep_interval = 3;
  o.has_padding_key = true;
  return o;
}

std::unique_ptr<DynamicTable> Make(const TableOptions& o) {
  auto t = DynamicTable::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

// Steps of random pulls and pushes over a key universe whose active range drifts, so that rows
// are created, admitted late, expire (TTL) and get swept.
void Train(DynamicTable* t, int64_t first_step, int64_t steps, uint64_t seed) {
  Rng rng(seed);
  const int64_t dim = t->dim();
  for (int64_t s = first_step; s < first_step + steps; ++s) {
    t->AdvanceStep(s);
    std::vector<uint64_t> keys(64);
    for (auto& k : keys)
      k = static_cast<uint64_t>(s * 7 + static_cast<int64_t>(rng.UniformInt(200)));
    std::vector<float> out(keys.size() * dim), grads(keys.size() * dim);
    ASSERT_TRUE(t->Pull(keys.data(), static_cast<int64_t>(keys.size()), out.data()).ok());
    for (auto& g : grads) g = static_cast<float>(rng.Uniform() * 2 - 1);
    ASSERT_TRUE(t->Push(keys.data(), static_cast<int64_t>(keys.size()), grads.data()).ok());
  }
}

std::string TempDir() {
  char tmpl[] = "/tmp/ips_table_ckpt_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

class TableRoundTrip : public ::testing::TestWithParam<OptimizerOptions::Type> {};

TEST_P(TableRoundTrip, FullFile_BitExact_AndTrainingContinuesIdentically) {
  const TableOptions o = Options(GetParam());
  auto original = Make(o);
  Train(original.get(), 1, 30, 11);
  ASSERT_GT(original->Stats().rows, 100);
  ASSERT_GT(original->Stats().evicted_ttl, 0) << "the workload should exercise TTL";
  const std::string dir = TempDir();
  const std::string path = dir + "/item.tbl";
  auto info = WriteTableFile(original.get(), path, {});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->rows, original->Stats().rows);
  auto digest = DigestFile(path);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(digest->bytes, info->bytes);
  EXPECT_TRUE(VerifyFile(path, info->bytes, info->crc32c).ok());

  auto restored = Make(o);
  TableLoadStats st;
  ASSERT_TRUE(LoadTableChain({{path}}, restored.get(), nullptr, &st).ok());
  EXPECT_EQ(st.rows_loaded, info->rows);
  EXPECT_TRUE(st.sketches_restored);
  ExpectSameTables(*restored, *original);
  // Admission counts, TTL ages and Adam's step count came back too: more training on both
  // tables gives bit-identical tables.
  Train(original.get(), 31, 10, 12);
  Train(restored.get(), 31, 10, 12);
  ExpectSameTables(*restored, *original);
  RemoveTree(dir);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, TableRoundTrip,
                         ::testing::Values(OptimizerOptions::Type::kSgd,
                                           OptimizerOptions::Type::kAdagrad,
                                           OptimizerOptions::Type::kAdam,
                                           OptimizerOptions::Type::kFtrl));

TEST(TableCheckpoint, IncrementalChain_RestoresTheFullState_WithRemovals) {
  const TableOptions o = Options(OptimizerOptions::Type::kAdam);
  auto t = Make(o);
  const std::string dir = TempDir();
  Train(t.get(), 1, 20, 1);
  auto full = WriteTableFile(t.get(), dir + "/full.tbl", {});
  ASSERT_TRUE(full.ok()) << full.status();
  // The key range drifts: old rows expire and are swept (removals); rows last used in the final
  // steps before the full file stay live and unchanged.
  Train(t.get(), 21, 2, 2);
  TableWriteOptions inc;
  inc.incremental = true;
  inc.since_epoch = full->epoch;
  auto inc1 = WriteTableFile(t.get(), dir + "/inc1.tbl", inc);
  ASSERT_TRUE(inc1.ok()) << inc1.status();
  EXPECT_GT(inc1->removed, 0);
  EXPECT_LT(inc1->rows, static_cast<int64_t>(Dump(*t).size()))
      << "an incremental file holds only changed rows";
  std::printf("[ incremental ] %lld changed rows of %zu live (%lld in the stats), %lld removed\n",
              static_cast<long long>(inc1->rows), Dump(*t).size(),
              static_cast<long long>(t->Stats().rows), static_cast<long long>(inc1->removed));
  t->DiscardChangesThrough(full->epoch);
  Train(t.get(), 23, 10, 3);
  ASSERT_TRUE(t->Erase(Dump(*t).begin()->first));  // an explicit removal too
  inc.since_epoch = inc1->epoch;
  auto inc2 = WriteTableFile(t.get(), dir + "/inc2.tbl", inc);
  ASSERT_TRUE(inc2.ok()) << inc2.status();

  auto restored = Make(o);
  ASSERT_TRUE(LoadTableChain({{dir + "/full.tbl"}, {dir + "/inc1.tbl"}, {dir + "/inc2.tbl"}},
                             restored.get(), nullptr, nullptr)
                  .ok());
  ExpectSameTables(*restored, *t);
  // The full file alone is an older state, not the current one.
  auto older = Make(o);
  ASSERT_TRUE(LoadTableChain({{dir + "/full.tbl"}}, older.get(), nullptr, nullptr).ok());
  EXPECT_FALSE(Dump(*older) == Dump(*t)) << "the incremental files carried no change";
  // A chain whose link has the wrong kind is rejected.
  EXPECT_FALSE(LoadTableChain({{dir + "/inc1.tbl"}}, Make(o).get(), nullptr, nullptr).ok());
  RemoveTree(dir);
}

uint64_t Owner(uint64_t key, int n) { return Mix64(key * 0x9e3779b97f4a7c15ULL) % n; }

TEST(TableCheckpoint, Reshard_TwoWritersIntoThreeTables_ByKeyHash) {
  TableOptions o = Options(OptimizerOptions::Type::kAdagrad);
  o.ttl_steps = 0;
  // Two "servers", each owning the keys with Owner(key, 2) == rank.
  auto whole = Make(o);
  Train(whole.get(), 1, 20, 5);
  const auto all = Dump(*whole);
  std::vector<std::unique_ptr<DynamicTable>> writers;
  for (int r = 0; r < 2; ++r) {
    writers.push_back(Make(o));
    for (const auto& [key, row] : all) {
      if (Owner(key, 2) != static_cast<uint64_t>(r)) continue;
      RowRecord rec{key, row.value.data(), row.state.data(), row.last_step, row.freq};
      ASSERT_TRUE(writers.back()->RestoreRow(rec).ok());
    }
    writers.back()->RestoreClock(whole->step(), whole->last_sweep_step(), whole->optimizer_step());
  }
  const std::string dir = TempDir();
  std::vector<std::string> files;
  for (int r = 0; r < 2; ++r) {
    files.push_back(dir + "/item-r" + std::to_string(r) + ".tbl");
    ASSERT_TRUE(WriteTableFile(writers[r].get(), files.back(), {}).ok());
  }
  std::map<uint64_t, Row> merged;
  for (int r = 0; r < 3; ++r) {
    auto target = Make(o);
    TableLoadStats st;
    ASSERT_TRUE(LoadTableChain(
                    {files}, target.get(),
                    [r](uint64_t k) { return Owner(k, 3) == static_cast<uint64_t>(r); }, &st)
                    .ok());
    EXPECT_EQ(st.rows_read, static_cast<int64_t>(all.size()));
    EXPECT_EQ(target->optimizer_step(), whole->optimizer_step());
    for (const auto& [key, row] : Dump(*target)) {
      EXPECT_EQ(Owner(key, 3), static_cast<uint64_t>(r)) << "key " << key << " in the wrong table";
      EXPECT_TRUE(merged.emplace(key, row).second) << "key " << key << " loaded twice";
    }
  }
  ASSERT_EQ(merged.size(), all.size());
  for (const auto& [key, row] : all) EXPECT_TRUE(merged.at(key) == row) << "key " << key;
  RemoveTree(dir);
}

void FlipByte(const std::string& path, long offset) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, offset, SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, offset, SEEK_SET);
  std::fputc(c ^ 0x40, f);
  std::fclose(f);
}

// A manifest's CRC32C tells files apart: two intact files of the same size, one checked against
// the other's entry (a file copied in from another checkpoint), are told apart; an older
// manifest's whole-file CRC is still accepted for the file it was written for.
TEST(CheckpointIo, ManifestCrcTellsIntactFilesApart) {
  const std::string dir = TempDir();
  FileDigest entry[2];
  for (int i = 0; i < 2; ++i) {
    auto w = CrcFileWriter::Create(dir + "/f" + std::to_string(i));
    ASSERT_TRUE(w.ok());
    std::vector<uint64_t> body(100);
    Rng rng(7 + i);
    for (auto& v : body) v = rng.Next();
    ASSERT_TRUE((*w)->Write(body.data(), body.size() * sizeof(uint64_t)).ok());
    ASSERT_TRUE((*w)->Finish().ok());
    entry[i] = {(*w)->file_bytes(), (*w)->file_crc32c()};
  }
  ASSERT_EQ(entry[0].bytes, entry[1].bytes);
  EXPECT_NE(entry[0].crc32c, entry[1].crc32c);
  EXPECT_TRUE(VerifyFile(dir + "/f0", entry[0].bytes, entry[0].crc32c).ok());
  const Status swapped = VerifyFile(dir + "/f1", entry[0].bytes, entry[0].crc32c);
  EXPECT_EQ(swapped.code(), StatusCode::kDataLoss);
  EXPECT_NE(swapped.message().find("f1: checksum mismatch"), std::string::npos)
      << swapped.ToString();
  auto whole = DigestFile(dir + "/f0");
  ASSERT_TRUE(whole.ok());
  EXPECT_TRUE(VerifyFile(dir + "/f0", whole->bytes, whole->crc32c).ok());
}

TEST(TableCheckpoint, CorruptTruncatedMissingFiles_RejectedNamingTheFile_TableUntouched) {
  const TableOptions o = Options(OptimizerOptions::Type::kAdam);
  auto t = Make(o);
  Train(t.get(), 1, 10, 9);
  const std::string dir = TempDir();
  const std::string good = dir + "/good.tbl", bad = dir + "/bad.tbl";
  auto info = WriteTableFile(t.get(), good, {});
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(WriteTableFile(t.get(), bad, {}).ok());

  auto expect_rejected = [&](const std::string& what) {
    auto fresh = Make(o);
    const Status s = LoadTableChain({{good, bad}}, fresh.get(), nullptr, nullptr);
    EXPECT_FALSE(s.ok()) << what;
    EXPECT_NE(s.message().find(bad), std::string::npos) << what << ": " << s;
    EXPECT_EQ(fresh->Stats().rows, 0) << what << ": rows loaded from the good file";
    return s;
  };
  FlipByte(bad, info->bytes / 2);  // a row byte: only the checksum can tell
  Status s = expect_rejected("corrupt");
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s;

  ASSERT_TRUE(WriteTableFile(t.get(), bad, {}).ok());
  ASSERT_EQ(::truncate(bad.c_str(), info->bytes - 100), 0);
  s = expect_rejected("truncated");
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;

  ASSERT_EQ(std::remove(bad.c_str()), 0);
  s = expect_rejected("missing");
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;

  // A file of another table or dim does not load either.
  TableOptions other = o;
  other.dim = 4;
  auto wrong = Make(other);
  s = LoadTableChain({{good}}, wrong.get(), nullptr, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dim"), std::string::npos) << s;
  RemoveTree(dir);
}

TEST(TableCheckpoint, EveryFlippedByteAndEveryTruncation_RejectedWithoutCrashing) {
  TableOptions o = Options(OptimizerOptions::Type::kAdagrad);
  o.sketch_width = 16;  // a small file, so every byte can be tried
  auto t = Make(o);
  Train(t.get(), 1, 3, 4);
  const std::string dir = TempDir();
  const std::string path = dir + "/t.tbl", copy = dir + "/c.tbl";
  auto info = WriteTableFile(t.get(), path, {});
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(VerifyTableFile(path).ok());
  const std::string bytes = ReadSmallFile(path).value();
  auto write = [&](const std::string& b) {
    FILE* f = std::fopen(copy.c_str(), "wb");
    std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
  };
  for (size_t i = 0; i < bytes.size(); i += 3) {
    std::string b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x81);
    write(b);
    EXPECT_FALSE(VerifyTableFile(copy).ok()) << "flipped byte " << i;
  }
  for (size_t n = 0; n < bytes.size(); n += 5) {
    write(bytes.substr(0, n));
    const auto h = VerifyTableFile(copy);
    ASSERT_FALSE(h.ok()) << "truncated to " << n;
    EXPECT_NE(h.status().message().find(copy), std::string::npos) << h.status();
  }
  RemoveTree(dir);
}

}  // namespace
}  // namespace ips::ps
