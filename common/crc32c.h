// CRC32C (Castagnoli), used to checksum shard blocks, checkpoints and bundles.
// Uses the SSE4.2 instruction when the CPU has it, a table otherwise; both give the same value.
#ifndef IPS_COMMON_CRC32C_H_
#define IPS_COMMON_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace ips {

// Extends `crc` (the value returned for the preceding bytes, 0 to start) over data[0, n).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace ips

#endif  // IPS_COMMON_CRC32C_H_
