#include "worker/line_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
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
  EXPECT_FALSE((*LineReader::Open(dir.File("p.txt")))->gzip());
  EXPECT_TRUE((*LineReader::Open(dir.File("g.txt")))->gzip());
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
  // The file is named by its path, not by zlib's "<fd:N>" for a descriptor.
  EXPECT_EQ(error.message().find("<fd:"), std::string::npos) << error;
}

TEST(LineReader, DirectoryIsAReadErrorNamingIt) {
  testing::TempDir dir;
  const Status error = ReadToError(dir.path());
  EXPECT_EQ(error.code(), StatusCode::kDataLoss) << error;
  EXPECT_EQ(error.message().rfind(dir.path() + ":1: read error: ", 0), 0u) << error;
  EXPECT_EQ(error.message().find("<fd:"), std::string::npos) << error;
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

// Non-regular inputs: `ips data convert --input /dev/stdin` (a pipe), a shell's `<(...)`
// (/dev/fd/N) and a named FIFO. Sniffing the gzip magic through a separate stdio open took the
// first 4 KiB off a pipe (lines lost, or gzip read as text) and made the second open of a FIFO wait
// forever.

// `count` lines "u i\n": several of the 4 KiB stdio buffers and of a 64 KiB pipe.
std::string NumberedLines(int count) {
  std::string content;
  for (int i = 0; i < count; ++i)
    content += std::to_string(i % 97 + 1) + " " + std::to_string(i + 1) + "\n";
  return content;
}

std::string Gzipped(const std::string& content) {
  testing::TempDir dir;
  testing::WriteGzip(dir.File("z.gz"), content);
  return testing::ReadFile(dir.File("z.gz"));
}

// Writes every byte it can to `fd`, then closes it. A reader closing early (EPIPE) ends it.
void WriteAllAndClose(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::close(fd);
}

// ReadAll(path) on its own thread; after 10 s (a hang) calls `unblock` and fails the test, then
// returns what was read.
std::vector<std::string> ReadAllOrTimeOut(const std::string& path, bool want_gzip,
                                          const std::function<void()>& unblock) {
  auto read = std::async(std::launch::async, [&] {
    auto r = LineReader::Open(path);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<std::string> lines;
    if (!r.ok()) return lines;
    EXPECT_EQ((*r)->gzip(), want_gzip);
    std::string_view line;
    for (;;) {
      auto more = (*r)->Next(&line);
      EXPECT_TRUE(more.ok()) << more.status();
      if (!more.ok() || !*more) break;
      lines.emplace_back(line);
    }
    return lines;
  });
  if (read.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << path << ": reading did not finish in 10 s";
    unblock();
  }
  return read.get();
}

std::vector<std::string> SplitLines(const std::string& content) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = content.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(content.substr(start, nl - start));
  return lines;
}

TEST(LineReader, PipeAsDevFdReadsEveryLinePlainAndGzip) {
  std::signal(SIGPIPE, SIG_IGN);  // a reader closing early must not kill the test
  const std::string content = NumberedLines(30000);
  const std::vector<std::string> want = SplitLines(content);
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    std::thread writer(WriteAllAndClose, fds[1], gzip ? Gzipped(content) : content);
    // What `--input /dev/stdin` and `<(cmd)` open: the pipe through /dev/fd/N.
    const std::string path = "/dev/fd/" + std::to_string(fds[0]);
    const auto lines = ReadAllOrTimeOut(path, gzip, [&] { ::close(fds[0]); });
    writer.join();
    ::close(fds[0]);
    EXPECT_EQ(lines.size(), want.size());
    EXPECT_TRUE(lines == want);
  }
}

TEST(LineReader, NamedFifoReadsEveryLinePlainAndGzipWithoutHanging) {
  std::signal(SIGPIPE, SIG_IGN);
  testing::TempDir dir;
  // 1000 lines fit in the FIFO at once (the writer is gone before the reader is done: the case
  // that hung), 30000 do not (the writer is still writing while the reader reads).
  for (int count : {1000, 30000}) {
    const std::string content = NumberedLines(count);
    const std::vector<std::string> want = SplitLines(content);
    for (bool gzip : {false, true}) {
      SCOPED_TRACE(std::to_string(count) + (gzip ? " lines gzip" : " lines plain"));
      const std::string fifo = dir.File("fifo" + std::to_string(count) + (gzip ? ".gz" : ""));
      ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
      const std::string bytes = gzip ? Gzipped(content) : content;
      // Like `cat file > fifo &`: opens (waiting for the reader), writes, closes.
      std::thread writer([&] {
        const int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0) WriteAllAndClose(fd, bytes);
      });
      // A reader stuck in open() waits for a writer: open one and close it to end the wait.
      const auto lines = ReadAllOrTimeOut(fifo, gzip, [&] {
        const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) ::close(fd);
      });
      writer.join();
      EXPECT_EQ(lines.size(), want.size());
      EXPECT_TRUE(lines == want);
    }
  }
}

}  // namespace
}  // namespace ips
