// Durable binary files for checkpoints and serving bundles: a buffered writer that checksums
// (CRC32C) everything it writes, appends the checksum as a 4-byte trailer and fsyncs; a reader
// whose every short read is a DATA_LOSS naming the file, the byte offset and what was being read;
// whole-file checksum checks; and the atomic publish steps (fsync a directory, write a small file
// by rename). Used by ps/table_checkpoint.h, worker/checkpoint.h and worker/serving.h.
//
// Byte order is the host's (little-endian on every platform we build for); the format headers
// carry a magic number, so a file from a big-endian host is rejected, not misread.
//
// Thread safety: a writer or reader object is used by one thread.
#ifndef IPS_PS_CHECKPOINT_IO_H_
#define IPS_PS_CHECKPOINT_IO_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/status.h"

namespace ips::ps {

class CrcFileWriter {
 public:
  // Creates (truncates) `path`. INTERNAL naming the path and errno text when it cannot.
  static StatusOr<std::unique_ptr<CrcFileWriter>> Create(const std::string& path);
  ~CrcFileWriter();  // closes without the trailer if Finish() was not called (an aborted write)
  CrcFileWriter(const CrcFileWriter&) = delete;
  CrcFileWriter& operator=(const CrcFileWriter&) = delete;

  // Appends bytes. INTERNAL on a write error (disk full), naming the file.
  Status Write(const void* data, size_t n);
  template <typename T>
  Status WritePod(const T& v) {
    static_assert(std::is_trivially_copyable<T>::value, "POD only");
    return Write(&v, sizeof(T));
  }
  // u32 length + bytes.
  Status WriteString(const std::string& s);

  // Appends the CRC32C of every byte written so far (u32), flushes, fsyncs and closes.
  Status Finish();
  // After Finish: the file's size and the CRC32C of its body (the trailer's value), the values a
  // manifest records. Not the CRC of the whole file: a CRC over data followed by its own CRC is the
  // same constant for every file, so a manifest holding it could not tell two files apart.
  int64_t file_bytes() const { return bytes_; }
  uint32_t file_crc32c() const { return file_crc_; }
  const std::string& path() const { return path_; }

 private:
  CrcFileWriter(std::string path, FILE* f) : path_(std::move(path)), f_(f) {}
  std::string path_;
  FILE* f_ = nullptr;
  uint32_t crc_ = 0;       // of the body
  uint32_t file_crc_ = 0;  // of the body, after Finish
  int64_t bytes_ = 0;
};

class CrcFileReader {
 public:
  // NOT_FOUND naming the path when it cannot be opened.
  static StatusOr<std::unique_ptr<CrcFileReader>> Open(const std::string& path);
  ~CrcFileReader();
  CrcFileReader(const CrcFileReader&) = delete;
  CrcFileReader& operator=(const CrcFileReader&) = delete;

  // Reads exactly n bytes; DATA_LOSS "<path>: truncated at byte B (reading <what>)" when the file
  // ends first. The body CRC is accumulated.
  Status Read(void* data, size_t n, const char* what);
  template <typename T>
  Status ReadPod(T* v, const char* what) {
    static_assert(std::is_trivially_copyable<T>::value, "POD only");
    return Read(v, sizeof(T), what);
  }
  // u32 length (at most max_len, else DATA_LOSS) + bytes.
  Status ReadString(std::string* s, size_t max_len, const char* what);
  // Reads the 4-byte trailer and compares it with the CRC of everything read so far, then checks
  // that the file ends there. DATA_LOSS naming the file on a mismatch or trailing bytes.
  Status FinishAndVerify();
  int64_t offset() const { return offset_; }
  int64_t file_size() const { return size_; }
  uint32_t crc32c() const { return crc_; }  // of everything read so far
  const std::string& path() const { return path_; }

 private:
  CrcFileReader(std::string path, FILE* f, int64_t size)
      : path_(std::move(path)), f_(f), size_(size) {}
  std::string path_;
  FILE* f_ = nullptr;
  int64_t size_ = 0;
  int64_t offset_ = 0;
  uint32_t crc_ = 0;
};

// Size and CRC32C of a whole file. NOT_FOUND when missing, INTERNAL on read errors.
struct FileDigest {
  int64_t bytes = 0;
  uint32_t crc32c = 0;
};
StatusOr<FileDigest> DigestFile(const std::string& path);

// Checks a file written by CrcFileWriter against its manifest entry (CrcFileWriter's file_bytes
// and file_crc32c): NOT_FOUND "<path>: missing", DATA_LOSS "<path>: truncated (N bytes, manifest
// says M)" / "size N bytes, manifest says M" / "checksum mismatch (...)" when the body's CRC32C
// differs from the trailer or from the manifest's (a corrupt file, or one from another checkpoint
// or bundle version). Manifests written before the body CRC was recorded hold the CRC of the whole
// file, which every intact file shares: they are accepted on the trailer alone.
Status VerifyFile(const std::string& path, int64_t bytes, uint32_t crc32c);

// Checks the trailer of a file written by CrcFileWriter (the last 4 bytes are the CRC32C of the
// rest). DATA_LOSS naming the file otherwise.
Status VerifyTrailer(const std::string& path);

// fsync of a directory, so that the names created or renamed in it are durable.
Status FsyncDir(const std::string& dir);
// Writes `content` to path + ".tmp", fsyncs it, renames it onto `path` and fsyncs the directory:
// a reader sees the old content or the new one, never a mix.
Status WriteFileAtomically(const std::string& path, const std::string& content);
// Reads a whole (small) file. NOT_FOUND when missing.
StatusOr<std::string> ReadSmallFile(const std::string& path);
// Removes a directory tree (best effort; errors are ignored: a leftover is cleaned next time).
void RemoveTree(const std::string& path);
// Creates a directory (and parents). On failure "<dir>: cannot create directory: <reason>" with
// the code of mkdir(2)'s errno (StatusFromErrno: NOT_FOUND, FAILED_PRECONDITION for no
// permission, ...); INTERNAL when `path` exists and is not a directory.
Status MakeDirs(const std::string& path);
// Names of the entries of a directory (no "." / ".."); NOT_FOUND when it cannot be read.
StatusOr<std::vector<std::string>> ListDir(const std::string& dir);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
// The nearest ancestor of `path` that exists (any stat failure counts as missing), where MakeDirs
// would create the first missing directory: "/" at the top, "" for a relative path none of whose
// ancestors exist (it would be created in the working directory). Trailing and repeated slashes
// are dropped.
std::string NearestExistingAncestor(const std::string& path);

// The kernel pseudo file system the existing path `path` lies on ("procfs", "sysfs", "cgroup2",
// "configfs", ...), or "" for any other (and when statfs(2) fails). Their directories take no
// files a command writes: procfs and sysfs refuse new files and directories (even to root, whose
// permission bits pass an access(2) test there), and cgroup, configfs, tracefs and the like make
// a kernel object of a new directory or file.
std::string PseudoFileSystemOf(const std::string& path);
// Refuses the directory `dir`, which a writer writes into and creates with its missing parents
// (MakeDirs), when it is on a kernel pseudo file system (PseudoFileSystemOf of DIR, or of the
// nearest ancestor it would be created in): FAILED_PRECONDITION "<what> DIR is on procfs" or
// "<what> DIR would be created in AT, which is on procfs", then ", a kernel pseudo file system
// that holds no <holds>: choose a directory on a disk file system". `what` names the setting
// ("checkpoint.dir", "--output"), `holds` what DIR would hold ("checkpoint files"). Creates
// nothing; OK for any other file system.
Status CheckNotOnPseudoFileSystem(const std::string& dir, const std::string& what,
                                  const std::string& holds);

}  // namespace ips::ps

#endif  // IPS_PS_CHECKPOINT_IO_H_
