#include "ps/checkpoint_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/crc32c.h"

namespace ips::ps {
namespace {

std::string Errno() { return std::strerror(errno); }

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

}  // namespace

// ---- CrcFileWriter ----------------------------------------------------------------------------

StatusOr<std::unique_ptr<CrcFileWriter>> CrcFileWriter::Create(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return InternalError(path + ": cannot create: " + Errno());
  // A large buffer: table files are written row by row.
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<CrcFileWriter>(new CrcFileWriter(path, f));
}

CrcFileWriter::~CrcFileWriter() {
  if (f_ != nullptr) std::fclose(f_);
}

Status CrcFileWriter::Write(const void* data, size_t n) {
  if (f_ == nullptr) return FailedPreconditionError(path_ + ": write after Finish");
  if (n == 0) return Status::Ok();
  if (std::fwrite(data, 1, n, f_) != n) return InternalError(path_ + ": write failed: " + Errno());
  crc_ = Crc32cExtend(crc_, data, n);
  bytes_ += static_cast<int64_t>(n);
  return Status::Ok();
}

Status CrcFileWriter::WriteString(const std::string& s) {
  IPS_RETURN_IF_ERROR(WritePod(static_cast<uint32_t>(s.size())));
  return Write(s.data(), s.size());
}

Status CrcFileWriter::Finish() {
  if (f_ == nullptr) return FailedPreconditionError(path_ + ": Finish called twice");
  const uint32_t body_crc = crc_;
  IPS_RETURN_IF_ERROR(WritePod(body_crc));
  file_crc_ = body_crc;
  FILE* f = f_;
  f_ = nullptr;
  if (std::fflush(f) != 0) {
    std::fclose(f);
    return InternalError(path_ + ": flush failed: " + Errno());
  }
  if (::fsync(fileno(f)) != 0) {
    std::fclose(f);
    return InternalError(path_ + ": fsync failed: " + Errno());
  }
  if (std::fclose(f) != 0) return InternalError(path_ + ": close failed: " + Errno());
  return Status::Ok();
}

// ---- CrcFileReader ----------------------------------------------------------------------------

StatusOr<std::unique_ptr<CrcFileReader>> CrcFileReader::Open(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError(path + ": cannot open: " + Errno());
  struct stat st;
  if (::fstat(fileno(f), &st) != 0) {
    std::fclose(f);
    return InternalError(path + ": stat failed: " + Errno());
  }
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<CrcFileReader>(new CrcFileReader(path, f, st.st_size));
}

CrcFileReader::~CrcFileReader() {
  if (f_ != nullptr) std::fclose(f_);
}

Status CrcFileReader::Read(void* data, size_t n, const char* what) {
  if (n == 0) return Status::Ok();
  const size_t got = std::fread(data, 1, n, f_);
  if (got != n) {
    return DataLossError(path_ + ": truncated at byte " +
                         std::to_string(offset_ + static_cast<int64_t>(got)) + " of " +
                         std::to_string(size_) + " (reading " + what + ")");
  }
  crc_ = Crc32cExtend(crc_, data, n);
  offset_ += static_cast<int64_t>(n);
  return Status::Ok();
}

Status CrcFileReader::ReadString(std::string* s, size_t max_len, const char* what) {
  uint32_t n = 0;
  IPS_RETURN_IF_ERROR(ReadPod(&n, what));
  if (n > max_len)
    return DataLossError(path_ + ": " + what + " length " + std::to_string(n) + " at byte " +
                         std::to_string(offset_ - 4) + " exceeds " + std::to_string(max_len));
  s->resize(n);
  return Read(s->data(), n, what);
}

Status CrcFileReader::FinishAndVerify() {
  const uint32_t expected = crc_;
  uint32_t stored = 0;
  IPS_RETURN_IF_ERROR(ReadPod(&stored, "checksum trailer"));
  if (stored != expected)
    return DataLossError(path_ + ": checksum mismatch (content crc32c " + Hex(expected) +
                         ", trailer says " + Hex(stored) + ")");
  if (offset_ != size_)
    return DataLossError(path_ + ": " + std::to_string(size_ - offset_) +
                         " unexpected bytes after the checksum trailer");
  return Status::Ok();
}

// ---- Whole-file helpers -----------------------------------------------------------------------

StatusOr<FileDigest> DigestFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError(path + ": missing (" + Errno() + ")");
  FileDigest d;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f);
    d.crc32c = Crc32cExtend(d.crc32c, buf.data(), n);
    d.bytes += static_cast<int64_t>(n);
    if (n < buf.size()) break;
  }
  const bool error = std::ferror(f) != 0;
  std::fclose(f);
  if (error) return InternalError(path + ": read error");
  return d;
}

namespace {

// Reads a CrcFileWriter file through and checks its trailer; returns the body's CRC32C.
StatusOr<uint32_t> VerifiedBodyCrc(const std::string& path) {
  IPS_ASSIGN_OR_RETURN(auto r, CrcFileReader::Open(path));
  if (r->file_size() < 4)
    return DataLossError(path + ": truncated (" + std::to_string(r->file_size()) + " bytes)");
  std::vector<char> buf(1 << 20);
  int64_t left = r->file_size() - 4;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(left, static_cast<int64_t>(buf.size())));
    IPS_RETURN_IF_ERROR(r->Read(buf.data(), n, "body"));
    left -= static_cast<int64_t>(n);
  }
  const uint32_t body_crc = r->crc32c();
  IPS_RETURN_IF_ERROR(r->FinishAndVerify());
  return body_crc;
}

}  // namespace

Status VerifyFile(const std::string& path, int64_t bytes, uint32_t crc32c) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFoundError(path + ": missing");
  if (st.st_size < bytes)
    return DataLossError(path + ": truncated (" + std::to_string(st.st_size) +
                         " bytes, manifest says " + std::to_string(bytes) + ")");
  if (st.st_size != bytes)
    return DataLossError(path + ": size " + std::to_string(st.st_size) + " bytes, manifest says " +
                         std::to_string(bytes));
  IPS_ASSIGN_OR_RETURN(const uint32_t body_crc, VerifiedBodyCrc(path));
  if (body_crc == crc32c) return Status::Ok();
  // An older manifest's CRC of the whole file (body + trailer; see the header).
  const uint32_t whole_file_crc = Crc32cExtend(body_crc, &body_crc, sizeof(body_crc));
  if (whole_file_crc == crc32c) return Status::Ok();
  return DataLossError(path + ": checksum mismatch (crc32c " + Hex(body_crc) + ", manifest says " +
                       Hex(crc32c) +
                       "): the file is corrupt or belongs to another checkpoint or bundle version");
}

Status VerifyTrailer(const std::string& path) { return VerifiedBodyCrc(path).status(); }

Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return InternalError(dir + ": cannot open directory: " + Errno());
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return InternalError(dir + ": fsync of directory failed: " + Errno());
  return Status::Ok();
}

namespace {
std::string DirOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) return InternalError(tmp + ": cannot create: " + Errno());
    const bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size() &&
                    std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    const std::string err = ok ? "" : Errno();
    std::fclose(f);
    if (!ok) return InternalError(tmp + ": write failed: " + err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return InternalError("rename " + tmp + " -> " + path + " failed: " + Errno());
  return FsyncDir(DirOf(path));
}

StatusOr<std::string> ReadSmallFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return NotFoundError(path + ": cannot open: " + Errno());
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  const bool error = std::ferror(f) != 0;
  std::fclose(f);
  if (error) return InternalError(path + ": read error");
  return out;
}

void RemoveTree(const std::string& path) {
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p) == 0 ? 0 : 0; },
      16, FTW_DEPTH | FTW_PHYS);
}

Status MakeDirs(const std::string& path) {
  if (path.empty()) return InvalidArgumentError("empty directory path");
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      return StatusFromErrno(errno, cur + ": cannot create directory");
  }
  if (!IsDirectory(path)) return InternalError(path + ": exists and is not a directory");
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return NotFoundError(dir + ": cannot list directory: " + Errno());
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string NearestExistingAncestor(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  for (;;) {
    const size_t slash = p.rfind('/');
    if (slash == std::string::npos) return "";
    p = slash == 0 ? "/" : p.substr(0, slash);
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    if (p == "/" || PathExists(p)) return p;
  }
}

std::string PseudoFileSystemOf(const std::string& path) {
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0) return "";
  static constexpr struct {
    uint32_t magic;  // <linux/magic.h>
    const char* name;
  } kPseudo[] = {{0x9fa0, "procfs"},          {0x62656572, "sysfs"},     {0x27e0eb, "cgroup"},
                 {0x63677270, "cgroup2"},     {0x64626720, "debugfs"},   {0x74726163, "tracefs"},
                 {0x73636673, "securityfs"},  {0xcafe4a11, "bpf"},       {0x6165676c, "pstore"},
                 {0xde5e81e4, "efivarfs"},    {0xf97cff8c, "selinuxfs"}, {0x1cd1, "devpts"},
                 {0x42494e4d, "binfmt_misc"}, {0x62656570, "configfs"},  {0x19800202, "mqueue"},
                 {0x958458f6, "hugetlbfs"},   {0x65735543, "fusectl"},   {0x6e736673, "nsfs"}};
  const uint32_t type = static_cast<uint32_t>(fs.f_type);
  for (const auto& p : kPseudo)
    if (type == p.magic) return p.name;
  return "";
}

Status CheckNotOnPseudoFileSystem(const std::string& dir, const std::string& what,
                                  const std::string& holds) {
  std::string target = dir;
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  // DIR itself, or the directory MakeDirs would create its first missing component in.
  std::string at = target;
  if (!PathExists(at)) {
    at = NearestExistingAncestor(target);
    if (at.empty()) at = ".";
  }
  const std::string fs = PseudoFileSystemOf(at);
  if (fs.empty()) return Status::Ok();
  return FailedPreconditionError(
      what + " " + dir + (at == target ? " is" : " would be created in " + at + ", which is") +
      " on " + fs + ", a kernel pseudo file system that holds no " + holds +
      ": choose a directory on a disk file system");
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace ips::ps
