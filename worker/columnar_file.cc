#include "worker/columnar_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>

#include "common/crc32c.h"

namespace ips {
namespace {

constexpr char kMagic[8] = {'I', 'P', 'S', 'C', 'O', 'L', 'F', '1'};
constexpr char kTailMagic[8] = {'I', 'P', 'S', 'T', 'A', 'I', 'L', '1'};
constexpr size_t kHeaderBytes = 64;
constexpr size_t kEntryBytes = 64;
constexpr size_t kTailBytes = 16;
constexpr size_t kAlign = 64;

// The format is little-endian; this build only targets little-endian hosts (x86-64, aarch64).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "big-endian hosts are not supported");

template <typename T>
void Put(std::string* s, size_t at, T v) {
  std::memcpy(&(*s)[at], &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

size_t ElemSizeOf(ColumnType t) {
  switch (t) {
    case ColumnType::kU8:
      return 1;
    case ColumnType::kU32:
    case ColumnType::kF32:
      return 4;
    case ColumnType::kU64:
    case ColumnType::kI64:
      return 8;
  }
  return 0;
}

}  // namespace

void ColumnarWriter::AddRaw(const std::string& name, ColumnType type, size_t elem_size,
                            const void* data, size_t count) {
  if (name.empty() || name.size() > 31 || elem_size != ElemSizeOf(type)) {
    std::cerr << "ColumnarWriter: bad column '" << name << "'" << std::endl;
    std::abort();
  }
  Block b;
  b.name = name;
  b.type = type;
  b.elem_size = static_cast<uint8_t>(elem_size);
  b.count = count;
  b.bytes.assign(static_cast<const char*>(data), count * elem_size);
  blocks_.push_back(std::move(b));
}

std::string ColumnarWriter::Serialize() const {
  std::string out(kHeaderBytes, '\0');
  std::vector<uint64_t> offsets;
  uint64_t schema = 0;
  for (const Block& b : blocks_) {
    out.resize((out.size() + kAlign - 1) / kAlign * kAlign, '\0');
    offsets.push_back(out.size());
    out += b.bytes;
    const uint8_t t = static_cast<uint8_t>(b.type);
    schema = Crc32cExtend(static_cast<uint32_t>(schema), b.name.data(), b.name.size());
    schema = Crc32cExtend(static_cast<uint32_t>(schema), &t, 1);
  }
  out.resize((out.size() + kAlign - 1) / kAlign * kAlign, '\0');
  const uint64_t index_offset = out.size();
  out.resize(out.size() + blocks_.size() * kEntryBytes, '\0');
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    const size_t e = index_offset + i * kEntryBytes;
    std::memcpy(&out[e], b.name.data(), b.name.size());
    out[e + 32] = static_cast<char>(b.type);
    out[e + 33] = static_cast<char>(b.elem_size);
    Put<uint32_t>(&out, e + 36, Crc32c(b.bytes.data(), b.bytes.size()));
    Put<uint64_t>(&out, e + 40, b.count);
    Put<uint64_t>(&out, e + 48, offsets[i]);
    Put<uint64_t>(&out, e + 56, b.bytes.size());
  }
  const uint32_t index_crc = Crc32c(out.data() + index_offset, blocks_.size() * kEntryBytes);
  out.append(kTailMagic, 8);
  out.resize(out.size() + 8, '\0');
  Put<uint64_t>(&out, out.size() - 8, index_offset);
  std::memcpy(&out[0], kMagic, 8);
  Put<uint32_t>(&out, 8, kColumnarVersion);
  Put<uint32_t>(&out, 12, kind_);
  Put<uint64_t>(&out, 16, out.size());
  Put<uint64_t>(&out, 24, index_offset);
  Put<uint32_t>(&out, 32, static_cast<uint32_t>(blocks_.size()));
  Put<uint32_t>(&out, 36, index_crc);
  Put<uint64_t>(&out, 40, schema);
  Put<uint32_t>(&out, 60, Crc32c(out.data(), 60));
  return out;
}

StatusOr<ColumnarWriter::Written> ColumnarWriter::Write(const std::string& path) const {
  const std::string bytes = Serialize();
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return NotFoundError(tmp + ": cannot create: " + std::strerror(errno));
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool ok = n == bytes.size() && std::fflush(f) == 0;
  std::fclose(f);
  if (!ok) return ResourceExhaustedError(tmp + ": short write: " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return InternalError(path + ": rename failed: " + std::strerror(errno));
  Written w;
  w.bytes = bytes.size();
  w.crc = Crc32c(bytes.data(), bytes.size());
  return w;
}

namespace {

// Shards are mmap'd: a file truncated in place under a running job (not replaced: the converter
// renames new files in, which leaves old mappings intact) makes the next read of a vanished page
// raise SIGBUS. The handler names the file instead of crashing with a bare stack trace. It reads
// a fixed table of the live mappings without locks (async-signal-safe); faults outside them go
// to the previous handler (glog's failure handler, or the default action).
struct MappedRange {
  std::atomic<bool> used{false};
  std::atomic<uintptr_t> begin{0};  // published last: 0 while being filled in or released
  uintptr_t end = 0;
  char path[240] = {};
};
constexpr int kMaxMappedRanges = 4096;
MappedRange g_mapped[kMaxMappedRanges];
struct sigaction g_previous_sigbus;

void WriteAll(const char* s, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}
void WriteStr(const char* s) { WriteAll(s, std::strlen(s)); }

void OnSigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const MappedRange& m : g_mapped) {
    const uintptr_t begin = m.begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr >= m.end) continue;
    char offset[24];
    int n = 0;
    for (uintptr_t v = addr - begin; n == 0 || v > 0; v /= 10) offset[n++] = '0' + v % 10;
    WriteStr("\nips: fatal: ");
    WriteStr(m.path);
    WriteStr(" shrank while this job had it mapped (SIGBUS reading byte ");
    while (n > 0) WriteAll(&offset[--n], 1);
    WriteStr(
        "): the file was truncated or rewritten in place under a running job. Restore it (or "
        "convert into a new directory) and resume from the last checkpoint.\n");
    ::_exit(1);
  }
  // Not one of ours: hand it to the previous disposition. A fault returns and its access repeats
  // under that one; a sent signal (kill, raise: si_code <= 0) is sent again.
  ::sigaction(sig, &g_previous_sigbus, nullptr);
  if (info->si_code <= 0) ::raise(sig);
  (void)context;
}

void InstallSigbusHandlerOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

// The slot holding the mapping, or -1 when the table is full (the mapping then works as before,
// only without the named message).
int RegisterMapping(const void* base, uint64_t size, const std::string& path) {
  InstallSigbusHandlerOnce();
  for (int i = 0; i < kMaxMappedRanges; ++i) {
    bool expected = false;
    if (!g_mapped[i].used.compare_exchange_strong(expected, true)) continue;
    MappedRange& m = g_mapped[i];
    const size_t n = std::min(path.size(), sizeof(m.path) - 1);
    std::memcpy(m.path, path.data(), n);
    m.path[n] = '\0';
    m.end = reinterpret_cast<uintptr_t>(base) + size;
    m.begin.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return i;
  }
  return -1;
}

void UnregisterMapping(int slot) {
  if (slot < 0) return;
  g_mapped[slot].begin.store(0, std::memory_order_release);
  g_mapped[slot].used.store(false, std::memory_order_release);
}

}  // namespace

StatusOr<std::unique_ptr<ColumnarFile>> ColumnarFile::Open(const std::string& path,
                                                           uint32_t expected_kind) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return NotFoundError(path + ": cannot stat: " + std::strerror(errno));
  }
  std::unique_ptr<ColumnarFile> f(new ColumnarFile());
  f->name_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return InternalError(path + ": mmap failed: " + std::strerror(errno));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
    f->mapping_slot_ = RegisterMapping(m, f->size_, path);
  }
  ::close(fd);
  IPS_RETURN_IF_ERROR(f->Validate(expected_kind));
  return f;
}

StatusOr<std::unique_ptr<ColumnarFile>> ColumnarFile::FromBytes(const std::string& name,
                                                                const void* data, size_t size,
                                                                uint32_t expected_kind) {
  std::unique_ptr<ColumnarFile> f(new ColumnarFile());
  f->name_ = name;
  f->size_ = size;
  f->copy_.resize((size + 7) / 8 + 1);
  if (size > 0) std::memcpy(f->copy_.data(), data, size);
  f->base_ = reinterpret_cast<const uint8_t*>(f->copy_.data());
  IPS_RETURN_IF_ERROR(f->Validate(expected_kind));
  return f;
}

ColumnarFile::~ColumnarFile() {
  if (mapping_ == nullptr) return;
  UnregisterMapping(mapping_slot_);
  ::munmap(mapping_, size_);
}

Status ColumnarFile::Validate(uint32_t expected_kind) {
  const auto truncated = [&](uint64_t expected) {
    return DataLossError(name_ + ": truncated: expected " + std::to_string(expected) +
                         " bytes, found " + std::to_string(size_));
  };
  if (size_ < kHeaderBytes) return truncated(kHeaderBytes);
  if (std::memcmp(base_, kMagic, 8) != 0)
    return DataLossError(name_ + ": header: bad magic (not an interest-ps columnar file)");
  const uint32_t stored_hcrc = Get<uint32_t>(base_ + 60);
  const uint32_t hcrc = Crc32c(base_, 60);
  if (stored_hcrc != hcrc)
    return DataLossError(name_ + ": header: CRC mismatch (stored " + Hex(stored_hcrc) +
                         ", computed " + Hex(hcrc) + ")");
  const uint32_t version = Get<uint32_t>(base_ + 8);
  if (version != kColumnarVersion)
    return FailedPreconditionError(name_ + ": header: unsupported version " +
                                   std::to_string(version) + " (this build reads " +
                                   std::to_string(kColumnarVersion) + ")");
  kind_ = Get<uint32_t>(base_ + 12);
  if (kind_ != expected_kind)
    return InvalidArgumentError(name_ + ": header: file kind " + std::to_string(kind_) +
                                ", expected " + std::to_string(expected_kind));
  const uint64_t file_size = Get<uint64_t>(base_ + 16);
  if (size_ < file_size) return truncated(file_size);
  if (size_ > file_size)
    return DataLossError(name_ + ": size mismatch: header says " + std::to_string(file_size) +
                         " bytes, found " + std::to_string(size_));
  const uint64_t index_offset = Get<uint64_t>(base_ + 24);
  const uint32_t num_blocks = Get<uint32_t>(base_ + 32);
  if (index_offset < kHeaderBytes || num_blocks > (1u << 20) ||
      index_offset + uint64_t{num_blocks} * kEntryBytes + kTailBytes != file_size)
    return DataLossError(name_ + ": header: index (offset " + std::to_string(index_offset) + ", " +
                         std::to_string(num_blocks) + " blocks) does not fit the file");
  const uint8_t* tail = base_ + file_size - kTailBytes;
  if (std::memcmp(tail, kTailMagic, 8) != 0 || Get<uint64_t>(tail + 8) != index_offset)
    return DataLossError(name_ + ": tail: bad magic or index offset");
  const uint32_t stored_icrc = Get<uint32_t>(base_ + 36);
  const uint32_t icrc = Crc32c(base_ + index_offset, num_blocks * kEntryBytes);
  if (stored_icrc != icrc)
    return DataLossError(name_ + ": index: CRC mismatch (stored " + Hex(stored_icrc) +
                         ", computed " + Hex(icrc) + ")");
  for (uint32_t i = 0; i < num_blocks; ++i) {
    const uint8_t* e = base_ + index_offset + uint64_t{i} * kEntryBytes;
    const char* raw_name = reinterpret_cast<const char*>(e);
    const std::string bname(raw_name, strnlen(raw_name, 32));
    const std::string where = name_ + ": block " + std::to_string(i) + " (" + bname + ")";
    BlockInfo b;
    b.index = static_cast<int>(i);
    b.type = static_cast<ColumnType>(e[32]);
    b.elem_size = e[33];
    const uint32_t stored = Get<uint32_t>(e + 36);
    b.count = Get<uint64_t>(e + 40);
    b.offset = Get<uint64_t>(e + 48);
    b.bytes = Get<uint64_t>(e + 56);
    const size_t want_elem = ElemSizeOf(b.type);
    if (bname.empty() || want_elem == 0 || want_elem != b.elem_size || b.count > b.bytes ||
        b.bytes != b.count * b.elem_size || b.offset % kAlign != 0 || b.offset < kHeaderBytes ||
        b.offset > index_offset || b.bytes > index_offset - b.offset)
      return DataLossError(where + ": bad index entry");
    const uint32_t crc = Crc32c(base_ + b.offset, b.bytes);
    if (crc != stored)
      return DataLossError(where + ": CRC mismatch (stored " + Hex(stored) + ", computed " +
                           Hex(crc) + ")");
    if (!blocks_.emplace(bname, b).second) return DataLossError(where + ": duplicate column");
  }
  return Status::Ok();
}

StatusOr<const ColumnarFile::BlockInfo*> ColumnarFile::Find(const std::string& name,
                                                            ColumnType type, size_t elem) const {
  auto it = blocks_.find(name);
  if (it == blocks_.end()) return DataLossError(name_ + ": missing column '" + name + "'");
  if (it->second.type != type || it->second.elem_size != elem)
    return DataLossError(name_ + ": block " + std::to_string(it->second.index) + " (" + name +
                         "): unexpected column type " +
                         std::to_string(static_cast<int>(it->second.type)));
  return &it->second;
}

}  // namespace ips
