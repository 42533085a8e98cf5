// Shared by the parser fuzz targets: feeds each input line to a parser. A parser must never
// crash, hang or trip ASan/UBSan, and a rejected line must name a field and keep `got` inside
// the line (so the error message never reads outside the input).
#ifndef IPS_TESTS_FUZZ_FUZZ_UTIL_H_
#define IPS_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "worker/line_reader.h"
#include "worker/record_parsers.h"

namespace ips::fuzz {

inline void CheckError(std::string_view line, const FieldError& err) {
  if (err.field == nullptr || std::strlen(err.field) == 0 || err.expected == nullptr) std::abort();
  if (!err.got.empty() &&
      (err.got.data() < line.data() || err.got.data() + err.got.size() > line.data() + line.size()))
    std::abort();
  const std::string msg = FormatFieldError("fuzz", 1, err.field, err.expected, err.got);
  if (msg.empty()) std::abort();
}

template <typename Fn>
void ForEachLine(const uint8_t* data, size_t size, Fn fn) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  while (!all.empty()) {
    const size_t nl = all.find('\n');
    fn(all.substr(0, nl));
    if (nl == std::string_view::npos) break;
    all.remove_prefix(nl + 1);
  }
}

}  // namespace ips::fuzz

#endif  // IPS_TESTS_FUZZ_FUZZ_UTIL_H_
