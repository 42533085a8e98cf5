// ColumnarFile: our binary container for dataset shards and vocabularies — a versioned header,
// named fixed-width little-endian column blocks each with its own CRC32C, and an index (footer).
//
// Layout (all integers little-endian):
//   [0, 64)    header: magic "IPSCOLF1", u32 version, u32 kind, u64 file_size, u64 index_offset,
//              u32 num_blocks, u32 index_crc, u64 schema_hash, 12 reserved bytes, u32 header_crc
//   blocks     column data, each starting at a 64-byte aligned offset (so an mmap of the file
//              gives aligned typed pointers), zero padding in between
//   index      num_blocks entries of 64 bytes: char name[32], u8 dtype, u8 elem_size, u16 0,
//              u32 crc32c(data), u64 count, u64 offset, u64 bytes
//   tail       16 bytes: "IPSTAIL1", u64 index_offset (lets tools find the index from the end)
// Readers validate the header CRC, the file size (truncation), the index CRC, every block's
// bounds and CRC before any column is handed out, and report DATA_LOSS naming the file, the
// block index and name, and "CRC mismatch (stored X, computed Y)" or
// "truncated: expected N bytes, found M".
#ifndef IPS_WORKER_COLUMNAR_FILE_H_
#define IPS_WORKER_COLUMNAR_FILE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ips {

enum class ColumnType : uint8_t { kU8 = 1, kU32 = 2, kU64 = 3, kI64 = 4, kF32 = 5 };

constexpr uint32_t kColumnarVersion = 1;
constexpr uint32_t kKindShard = 1;  // one shard of a converted dataset (worker/data_reader.h)
constexpr uint32_t kKindVocab = 2;  // dense id -> raw id tables, item categories, popularity

template <typename T>
constexpr ColumnType ColumnTypeOf();
template <>
constexpr ColumnType ColumnTypeOf<uint8_t>() {
  return ColumnType::kU8;
}
template <>
constexpr ColumnType ColumnTypeOf<uint32_t>() {
  return ColumnType::kU32;
}
template <>
constexpr ColumnType ColumnTypeOf<uint64_t>() {
  return ColumnType::kU64;
}
template <>
constexpr ColumnType ColumnTypeOf<int64_t>() {
  return ColumnType::kI64;
}
template <>
constexpr ColumnType ColumnTypeOf<float>() {
  return ColumnType::kF32;
}

// A read-only view of one column (valid while the ColumnarFile lives).
template <typename T>
struct ColumnView {
  const T* data = nullptr;
  size_t size = 0;
  const T& operator[](size_t i) const { return data[i]; }
  const T* begin() const { return data; }
  const T* end() const { return data + size; }
};

// Builds a file in memory column by column, then writes it atomically (tmp file + rename).
// Not thread-safe.
class ColumnarWriter {
 public:
  explicit ColumnarWriter(uint32_t kind) : kind_(kind) {}
  template <typename T>
  void Add(const std::string& name, const std::vector<T>& values) {
    AddRaw(name, ColumnTypeOf<T>(), sizeof(T), values.data(), values.size());
  }
  // name: at most 31 bytes (programmer error otherwise).
  void AddRaw(const std::string& name, ColumnType type, size_t elem_size, const void* data,
              size_t count);
  // Writes the file. Returns the file size and its whole-file CRC32C (for the manifest), or an
  // error naming the path when it cannot be written.
  struct Written {
    uint64_t bytes = 0;
    uint32_t crc = 0;
  };
  StatusOr<Written> Write(const std::string& path) const;
  // The serialized bytes (used by Write, tests and fuzz seeds).
  std::string Serialize() const;

 private:
  struct Block {
    std::string name;
    ColumnType type;
    uint8_t elem_size;
    uint64_t count;
    std::string bytes;
  };
  uint32_t kind_;
  std::vector<Block> blocks_;
};

// An opened, fully validated file (mmap'ed, or an aligned copy of a byte buffer). Immutable and
// thread-safe after Open.
class ColumnarFile {
 public:
  // Maps `path` and validates it (see the header comment). NOT_FOUND if it cannot be opened,
  // DATA_LOSS if corrupt or truncated, INVALID_ARGUMENT if its kind differs from expected_kind.
  static StatusOr<std::unique_ptr<ColumnarFile>> Open(const std::string& path,
                                                      uint32_t expected_kind);
  // Same checks on a copy of data[0, size); `name` is used in messages (fuzzing, tests).
  static StatusOr<std::unique_ptr<ColumnarFile>> FromBytes(const std::string& name,
                                                           const void* data, size_t size,
                                                           uint32_t expected_kind);
  ~ColumnarFile();
  ColumnarFile(const ColumnarFile&) = delete;
  ColumnarFile& operator=(const ColumnarFile&) = delete;

  // The column `name` typed as T. DATA_LOSS naming the file if it is missing or has another type.
  template <typename T>
  StatusOr<ColumnView<T>> Column(const std::string& name) const {
    IPS_ASSIGN_OR_RETURN(const BlockInfo* b, Find(name, ColumnTypeOf<T>(), sizeof(T)));
    ColumnView<T> v;
    v.data = reinterpret_cast<const T*>(base_ + b->offset);
    v.size = b->count;
    return v;
  }
  bool Has(const std::string& name) const { return blocks_.count(name) > 0; }
  const std::string& name() const { return name_; }
  uint64_t size_bytes() const { return size_; }
  uint32_t kind() const { return kind_; }

 private:
  struct BlockInfo {
    int index;
    ColumnType type;
    uint8_t elem_size;
    uint64_t count, offset, bytes;
  };
  ColumnarFile() = default;
  Status Validate(uint32_t expected_kind);
  StatusOr<const BlockInfo*> Find(const std::string& name, ColumnType type, size_t elem) const;

  std::string name_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;     // mmap'ed region (Open)
  int mapping_slot_ = -1;       // its entry in the SIGBUS handler's table of live mappings
  std::vector<uint64_t> copy_;  // 8-byte aligned copy (FromBytes)
  uint32_t kind_ = 0;
  std::map<std::string, BlockInfo> blocks_;
};

}  // namespace ips

#endif  // IPS_WORKER_COLUMNAR_FILE_H_
