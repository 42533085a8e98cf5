#include "worker/columnar_file.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"

namespace ips {
namespace {

ColumnarWriter MakeWriter() {
  ColumnarWriter w(kKindShard);
  w.Add<uint64_t>("a64", {1, 2, 0xffffffffffffffffULL});
  w.Add<uint32_t>("b32", {7, 8, 9, 10, 11});
  w.Add<uint8_t>("c8", {1, 0, 1});
  w.Add<int64_t>("ts", {-5, 0, 5});
  w.Add<float>("f", {0.5f, -1.25f});
  w.Add<uint32_t>("empty", {});
  return w;
}

TEST(ColumnarFile, RoundTripEveryColumnAligned) {
  testing::TempDir dir;
  auto written = MakeWriter().Write(dir.File("x.ips"));
  ASSERT_TRUE(written.ok()) << written.status();
  auto f = ColumnarFile::Open(dir.File("x.ips"), kKindShard);
  ASSERT_TRUE(f.ok()) << f.status();
  auto a = (*f)->Column<uint64_t>("a64");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(std::vector<uint64_t>(a->begin(), a->end()),
            (std::vector<uint64_t>{1, 2, 0xffffffffffffffffULL}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 64, 0u);
  auto b = (*f)->Column<uint32_t>("b32");
  EXPECT_EQ(std::vector<uint32_t>(b->begin(), b->end()), (std::vector<uint32_t>{7, 8, 9, 10, 11}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data) % 64, 0u);
  auto c = (*f)->Column<uint8_t>("c8");
  EXPECT_EQ(std::vector<uint8_t>(c->begin(), c->end()), (std::vector<uint8_t>{1, 0, 1}));
  auto ts = (*f)->Column<int64_t>("ts");
  EXPECT_EQ(std::vector<int64_t>(ts->begin(), ts->end()), (std::vector<int64_t>{-5, 0, 5}));
  auto fl = (*f)->Column<float>("f");
  EXPECT_EQ(std::vector<float>(fl->begin(), fl->end()), (std::vector<float>{0.5f, -1.25f}));
  EXPECT_EQ((*f)->Column<uint32_t>("empty")->size, 0u);
  // Wrong type or missing column: DATA_LOSS naming the file.
  EXPECT_EQ((*f)->Column<uint32_t>("a64").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ((*f)->Column<uint32_t>("nope").status().code(), StatusCode::kDataLoss);
  // Wrong kind.
  EXPECT_EQ(ColumnarFile::Open(dir.File("x.ips"), kKindVocab).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ColumnarFile, EveryFlippedBlockByteIsDetectedWithBlockAndCrc) {
  const std::string good = MakeWriter().Serialize();
  ASSERT_TRUE(ColumnarFile::FromBytes("x.ips", good.data(), good.size(), kKindShard).ok());
  // Block 1 ("b32") starts at offset 64 + 64 = 128 (block 0 is 24 bytes at 64).
  for (size_t at = 128; at < 128 + 20; ++at) {
    std::string bad = good;
    bad[at] ^= 0x01;
    auto f = ColumnarFile::FromBytes("x.ips", bad.data(), bad.size(), kKindShard);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(f.status().message().find("x.ips: block 1 (b32): CRC mismatch (stored 0x"),
              std::string::npos)
        << f.status();
    EXPECT_NE(f.status().message().find(", computed 0x"), std::string::npos);
  }
  // Every single-byte flip anywhere in header, blocks, index or tail is rejected; only the zero
  // alignment padding between blocks is not covered by a CRC.
  int rejected = 0;
  for (size_t at = 0; at < good.size(); ++at) {
    std::string bad = good;
    bad[at] ^= 0x80;
    if (!ColumnarFile::FromBytes("x.ips", bad.data(), bad.size(), kKindShard).ok()) {
      ++rejected;
    } else {
      EXPECT_EQ(good[at], 0) << "undetected flip of a non-padding byte at " << at;
      EXPECT_GE(at, 64u);
    }
  }
  EXPECT_GT(rejected, 64 + 24 + 20 + 3 + 24 + 8 + 6 * 64 + 16 - 1);
}

// A mapped file truncated in place under a reader (a job whose dataset is cut while it trains):
// the read of a vanished page ends the process with a message naming the file, not a bare
// SIGBUS crash.
TEST(ColumnarFileDeathTest, TruncatedWhileMappedNamesTheFile) {
  testing::TempDir dir;
  ColumnarWriter w(kKindShard);
  w.Add<uint32_t>("big", std::vector<uint32_t>(1 << 16, 7));  // 256 KiB: many pages
  ASSERT_TRUE(w.Write(dir.File("big.ips")).ok());
  auto f = ColumnarFile::Open(dir.File("big.ips"), kKindShard);
  ASSERT_TRUE(f.ok()) << f.status();
  auto big = (*f)->Column<uint32_t>("big");
  ASSERT_TRUE(big.ok());
  EXPECT_EXIT(
      {
        if (::truncate(dir.File("big.ips").c_str(), 4096) != 0) std::_Exit(9);
        volatile uint32_t sum = 0;
        for (size_t i = 0; i < big->size; i += 1024) sum = sum + big->data[i];
        std::_Exit(8);  // not reached: the reads past 4 KiB fault
      },
      ::testing::ExitedWithCode(1), "big.ips shrank while this job had it mapped");
  // Unrelated faults still reach the default action (the handler only claims its mappings).
  EXPECT_EXIT(::raise(SIGBUS), ::testing::KilledBySignal(SIGBUS), "");
}

TEST(ColumnarFile, TruncationNamesExpectedAndFoundBytes) {
  testing::TempDir dir;
  ASSERT_TRUE(MakeWriter().Write(dir.File("x.ips")).ok());
  const std::string good = testing::ReadFile(dir.File("x.ips"));
  for (size_t keep : {size_t{0}, size_t{10}, size_t{64}, good.size() / 2, good.size() - 1}) {
    testing::WriteFile(dir.File("t.ips"), good.substr(0, keep));
    auto f = ColumnarFile::Open(dir.File("t.ips"), kKindShard);
    ASSERT_FALSE(f.ok()) << keep;
    EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
    const std::string expected = keep < 64 ? "64" : std::to_string(good.size());
    EXPECT_NE(f.status().message().find("t.ips: truncated: expected " + expected +
                                        " bytes, found " + std::to_string(keep)),
              std::string::npos)
        << f.status();
  }
  EXPECT_EQ(ColumnarFile::Open(dir.File("missing.ips"), kKindShard).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace ips
