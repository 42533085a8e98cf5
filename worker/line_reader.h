// LineReader: streaming, line-numbered reading of a plain or gzip-compressed text file.
//
// Every converter reads its input through this class so that gzip handling, line numbering and
// the "file:line:" prefix of error messages are the same for all formats. Compression is detected
// from the magic bytes (1f 8b), never from the file name. Lines are returned without the trailing
// "\n" (and without a trailing "\r", so CRLF files parse like LF files); a UTF-8 byte order mark
// (EF BB BF) at the start of the file is dropped from the first line. Not thread-safe.
#ifndef IPS_WORKER_LINE_READER_H_
#define IPS_WORKER_LINE_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace ips {

// `first_line` without a leading UTF-8 byte order mark (EF BB BF). Editors on Windows (Notepad,
// Excel's "CSV UTF-8") start text files with it; it is not part of the first field. For the
// first line of a file (or a pipe) only: anywhere else the mark is part of the line.
std::string_view WithoutUtf8Bom(std::string_view first_line);

class LineReader {
 public:
  // Opens `path` for reading. NOT_FOUND if the file does not exist or cannot be opened. The path
  // is opened once and every byte is read once, so it may be a pipe, a FIFO, /dev/stdin or a
  // shell's <(...) as well as a regular file (plain or gzip alike). Opening a FIFO waits for its
  // writer, as any reader of it does.
  static StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into *line (a view valid until the next call). Returns false at the end
  // of the file; a read error (corrupt gzip stream, I/O error) is returned as DATA_LOSS naming the
  // file and the line it happened on. A final line without "\n" is still returned.
  StatusOr<bool> Next(std::string_view* line);

  // 1-based number of the line last returned by Next() (0 before the first).
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }
  bool gzip() const { return gzip_; }
  // Compressed bytes consumed so far (for progress against the file size); -1 when the input is
  // not seekable (a pipe or FIFO).
  int64_t compressed_offset() const;

 private:
  LineReader(std::string path, void* gz, bool gzip);
  Status Fill();
  // `piece` without a leading UTF-8 byte order mark when it is the file's first line.
  std::string_view StripBom(std::string_view piece) const;

  std::string path_;
  void* gz_;  // gzFile; void* keeps zlib.h out of this header
  bool gzip_;
  std::vector<char> buf_;
  size_t begin_ = 0;  // unread data is buf_[begin_, end_)
  size_t end_ = 0;
  bool eof_ = false;
  std::string long_line_;  // holds a line longer than the buffer
  int64_t line_number_ = 0;
};

// "file:line: field: expected <expected> (got '<got>')", with `got` shortened and escaped so a
// binary or huge field cannot flood the terminal.
std::string FormatFieldError(const std::string& path, int64_t line, std::string_view field,
                             std::string_view expected, std::string_view got);

}  // namespace ips

#endif  // IPS_WORKER_LINE_READER_H_
