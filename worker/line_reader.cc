#include "worker/line_reader.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ips {
namespace {
constexpr size_t kBufferBytes = 1 << 20;
// A line longer than this is certainly not one of our formats: fail instead of eating memory.
constexpr size_t kMaxLineBytes = 64 << 20;

// zlib's message without the "<fd:N>: " prefix it puts before messages of a gzdopen()ed file:
// the caller names the file itself.
std::string ZlibMessage(const char* msg) {
  std::string what = msg ? msg : "unknown";
  if (what.rfind("<fd:", 0) == 0) {
    const size_t end = what.find(">: ");
    if (end != std::string::npos) what.erase(0, end + 3);
  }
  return what.empty() ? "unknown" : what;
}
}  // namespace

std::string_view WithoutUtf8Bom(std::string_view first_line) {
  constexpr std::string_view kBom = "\xef\xbb\xbf";
  if (first_line.substr(0, kBom.size()) == kBom) first_line.remove_prefix(kBom.size());
  return first_line;
}

std::string_view LineReader::StripBom(std::string_view piece) const {
  // Without this every format would refuse the first line of a file that starts with a byte
  // order mark ("user: expected ... (got '\xef\xbb\xbf1')").
  return line_number_ == 0 ? WithoutUtf8Bom(piece) : piece;
}

StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path) {
  // The path is opened exactly once and zlib both detects and reads through that descriptor.
  // Sniffing the magic bytes through a separate open and then opening again
  // loses data on anything that is not a regular file: on a pipe (/dev/stdin, <(...)) the first
  // read consumed bytes the second open never sees, and on a named FIFO the second open waits
  // forever for a writer that has already finished.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  // gzdopen reads non-gzip data transparently, so one code path serves both.
  gzFile gz = gzdopen(fd, "rb");
  if (gz == nullptr) {
    const int err = errno;
    ::close(fd);
    return NotFoundError(path + ": cannot open: " + std::strerror(err));
  }
  gzbuffer(gz, 256 << 10);  // before gzdirect, which allocates the buffers
  // gzdirect reads the first bytes into zlib's own buffer (nothing is lost) to look for the
  // gzip magic 1f 8b: 0 means a gzip stream, 1 plain data.
  const bool gzip = gzdirect(gz) == 0;
  return std::unique_ptr<LineReader>(new LineReader(path, gz, gzip));
}

LineReader::LineReader(std::string path, void* gz, bool gzip)
    : path_(std::move(path)), gz_(gz), gzip_(gzip), buf_(kBufferBytes) {}

LineReader::~LineReader() { gzclose(static_cast<gzFile>(gz_)); }

int64_t LineReader::compressed_offset() const {
  return static_cast<int64_t>(gzoffset(static_cast<gzFile>(gz_)));
}

Status LineReader::Fill() {
  // Move the unread tail to the front, then append as much as fits.
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  const int n = gzread(static_cast<gzFile>(gz_), buf_.data() + end_,
                       static_cast<unsigned>(buf_.size() - end_));
  if (n < 0) {
    int err = 0;
    const std::string what = ZlibMessage(gzerror(static_cast<gzFile>(gz_), &err));
    // zlib checks a stream's CRC only at its end, so a corrupt file often fails here, lines
    // after the corruption: say that the data is corrupt, not where it went wrong.
    if (gzip_ && err == Z_DATA_ERROR)
      return DataLossError(path_ + ":" + std::to_string(line_number_ + 1) +
                           ": corrupt gzip stream (zlib: " + what + "), found after " +
                           std::to_string(line_number_) +
                           " lines were read; the file's content cannot be trusted");
    return DataLossError(path_ + ":" + std::to_string(line_number_ + 1) + ": read error: " + what);
  }
  if (n == 0) {
    // zlib ends a gzip stream cut short (a truncated download or copy) like a complete one and
    // only says so through gzerror: without this check the rest of the file would be silently
    // missing.
    int err = Z_OK;
    gzerror(static_cast<gzFile>(gz_), &err);
    if (gzip_ && err == Z_BUF_ERROR)
      return DataLossError(path_ + ":" + std::to_string(line_number_ + 1) +
                           ": truncated gzip stream (the file ends before the compressed data "
                           "does)");
    eof_ = true;
  }
  end_ += static_cast<size_t>(n);
  return Status::Ok();
}

StatusOr<bool> LineReader::Next(std::string_view* line) {
  long_line_.clear();
  bool using_long = false;
  for (;;) {
    const char* start = buf_.data() + begin_;
    const void* nl = std::memchr(start, '\n', end_ - begin_);
    if (nl != nullptr) {
      const size_t len = static_cast<const char*>(nl) - start;
      std::string_view piece(start, len);
      begin_ += len + 1;
      if (using_long) {
        long_line_.append(piece);
        piece = long_line_;
      }
      if (!piece.empty() && piece.back() == '\r') piece.remove_suffix(1);
      *line = StripBom(piece);
      ++line_number_;
      return true;
    }
    if (eof_) {
      if (begin_ == end_ && !using_long) return false;
      std::string_view piece(start, end_ - begin_);
      begin_ = end_;
      if (using_long) {
        long_line_.append(piece);
        piece = long_line_;
      }
      if (!piece.empty() && piece.back() == '\r') piece.remove_suffix(1);
      *line = StripBom(piece);
      ++line_number_;
      return true;
    }
    if (begin_ == 0 && end_ == buf_.size()) {
      // The buffer holds one incomplete line: spill it and keep reading.
      long_line_.append(buf_.data(), end_);
      using_long = true;
      begin_ = end_ = 0;
      if (long_line_.size() > kMaxLineBytes)
        return DataLossError(path_ + ":" + std::to_string(line_number_ + 1) +
                             ": line longer than " + std::to_string(kMaxLineBytes) + " bytes");
    }
    IPS_RETURN_IF_ERROR(Fill());
  }
}

std::string FormatFieldError(const std::string& path, int64_t line, std::string_view field,
                             std::string_view expected, std::string_view got) {
  std::string shown;
  constexpr size_t kMaxShown = 60;
  for (size_t i = 0; i < got.size() && i < kMaxShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(got[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      shown.push_back(static_cast<char>(c));
    } else {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\x%02x", c);
      shown += esc;
    }
  }
  if (got.size() > kMaxShown) shown += "...";
  std::string out = path + ":" + std::to_string(line) + ": ";
  out.append(field);
  out += ": expected ";
  out.append(expected);
  out += " (got '" + shown + "')";
  return out;
}

}  // namespace ips
