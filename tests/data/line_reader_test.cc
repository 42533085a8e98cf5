#include "worker/line_reader.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/data/data_test_util.h"

namespace ips {
namespace {

std::vector<std::string> ReadAll(const std::string& path, std::vector<int64_t>* numbers = nullptr) {
  auto r = LineReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<std::string> lines;
  if (!r.ok()) return lines;
  std::string_view line;
  for (;;) {
    auto more = (*r)->Next(&line);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    lines.emplace_back(line);
    if (numbers) numbers->push_back((*r)->line_number());
  }
  return lines;
}

// Reads `path` to its end; returns the first error (OK when none) and counts the lines before it.
Status ReadToError(const std::string& path, int64_t* lines = nullptr) {
  auto r = LineReader::Open(path);
  if (!r.ok()) return r.status();
  std::string_view line;
  for (int64_t n = 0;; ++n) {
    auto more = (*r)->Next(&line);
    if (lines != nullptr) *lines = n;
    if (!more.ok()) return more.status();
    if (!*more) return Status::Ok();
  }
}

TEST(LineReader, PlainAndGzipGiveSameLinesWithNumbers) {
  testing::TempDir dir;
  const std::string content = "a b\r\nsecond\n\nlast-without-newline";
  testing::WriteFile(dir.File("p.txt"), content);
  testing::WriteGzip(dir.File("g.txt"), content);  // no .gz suffix: detected by magic bytes
  EXPECT_FALSE(*IsGzipFile(dir.File("p.txt")));
  EXPECT_TRUE(*IsGzipFile(dir.File("g.txt")));
  std::vector<int64_t> nums;
  const auto plain = ReadAll(dir.File("p.txt"), &nums);
  const std::vector<std::string> want = {"a b", "second", "", "last-without-newline"};
  EXPECT_EQ(plain, want);
  EXPECT_EQ(nums, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(ReadAll(dir.File("g.txt")), want);
}

// A UTF-8 byte order mark opening the file (Windows editors write one) is dropped from the first
// line, plain or gzip; anywhere else it is data. A file that is only a BOM is one empty line.
TEST(LineReader, LeadingUtf8ByteOrderMarkIsDroppedFromTheFirstLineOnly) {
  testing::TempDir dir;
  const std::string bom = "\xef\xbb\xbf";
  const std::string content = bom + "1 2\r\n" + bom + "3 4\nx" + bom + "\n";
  testing::WriteFile(dir.File("p.txt"), content);
  testing::WriteGzip(dir.File("g.txt.gz"), content);
  const std::vector<std::string> want = {"1 2", bom + "3 4", "x" + bom};
  EXPECT_EQ(ReadAll(dir.File("p.txt")), want);
  EXPECT_EQ(ReadAll(dir.File("g.txt.gz")), want);
  testing::WriteFile(dir.File("only.txt"), bom);
  EXPECT_EQ(ReadAll(dir.File("only.txt")), std::vector<std::string>{""});
  // Only a whole BOM: a first line starting with its first two bytes is left alone.
  testing::WriteFile(dir.File("part.txt"),
                     "\xef\xbb"
                     "a\n");
  EXPECT_EQ(ReadAll(dir.File("part.txt")), std::vector<std::string>{"\xef\xbb"
                                                                    "a"});
}

TEST(LineReader, LinesLongerThanTheBufferAndManyLines) {
  testing::TempDir dir;
  std::string content;
  const std::string long_line(3 << 20, 'x');  // 3 MiB > the 1 MiB buffer
  content += "short\n" + long_line + "\n";
  for (int i = 0; i < 100000; ++i) content += std::to_string(i) + "\n";
  testing::WriteGzip(dir.File("big.gz"), content);
  const auto lines = ReadAll(dir.File("big.gz"));
  ASSERT_EQ(lines.size(), 100002u);
  EXPECT_EQ(lines[0], "short");
  EXPECT_EQ(lines[1], long_line);
  EXPECT_EQ(lines[100001], "99999");
}

TEST(LineReader, MissingFileIsNotFound) {
  auto r = LineReader::Open("/nonexistent/file.txt");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/file.txt"), std::string::npos);
}

TEST(LineReader, CorruptGzipIsDataLoss) {
  testing::TempDir dir;
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "line " + std::to_string(i * 7919) + "\n";
  testing::WriteGzip(dir.File("c.gz"), content);
  std::string bytes = testing::ReadFile(dir.File("c.gz"));
  for (size_t i = bytes.size() / 3; i < bytes.size() / 3 + 64; ++i) bytes[i] ^= 0x5a;
  testing::WriteFile(dir.File("c.gz"), bytes);
  const Status error = ReadToError(dir.File("c.gz"));
  EXPECT_EQ(error.code(), StatusCode::kDataLoss) << error;
  EXPECT_NE(error.message().find("c.gz:"), std::string::npos) << error;
}

// zlib checks the CRC only at the end of the stream: the error says the stream is corrupt and
// how many lines were read, not just "read error" at whatever line the check happened to fail.
TEST(LineReader, GzipCrcMismatchSaysCorrupt) {
  testing::TempDir dir;
  std::string content;
  for (int i = 0; i < 100; ++i) content += "line " + std::to_string(i) + "\n";
  testing::WriteGzip(dir.File("crc.gz"), content);
  std::string bytes = testing::ReadFile(dir.File("crc.gz"));
  bytes[bytes.size() - 8] ^= 0x01;  // the trailer's CRC32
  testing::WriteFile(dir.File("crc.gz"), bytes);
  const Status error = ReadToError(dir.File("crc.gz"));
  EXPECT_EQ(error.code(), StatusCode::kDataLoss) << error;
  EXPECT_NE(error.message().find("crc.gz:"), std::string::npos) << error;
  EXPECT_NE(error.message().find("corrupt gzip stream"), std::string::npos) << error;
  EXPECT_NE(error.message().find("lines were read"), std::string::npos) << error;
}

// A gzip file cut short (in the middle of the compressed data, or only its 8-byte trailer) is an
// error naming the file, never a silently shorter input.
TEST(LineReader, TruncatedGzipIsDataLoss) {
  testing::TempDir dir;
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "line " + std::to_string(i * 7919) + "\n";
  testing::WriteGzip(dir.File("full.gz"), content);
  const std::string bytes = testing::ReadFile(dir.File("full.gz"));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 8, bytes.size() - 1}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(bytes.size()));
    testing::WriteFile(dir.File("t.gz"), bytes.substr(0, keep));
    int64_t lines = 0;
    const Status error = ReadToError(dir.File("t.gz"), &lines);
    EXPECT_EQ(error.code(), StatusCode::kDataLoss) << error << " after " << lines << " lines";
    EXPECT_NE(error.message().find("t.gz:"), std::string::npos) << error;
    EXPECT_NE(error.message().find("truncated gzip"), std::string::npos) << error;
  }
  EXPECT_EQ(ReadAll(dir.File("full.gz")).size(), 20000u);
}

}  // namespace
}  // namespace ips
