#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ips::fuzz::ForEachLine(data, size, [](std::string_view line) {
    ips::DienRecord r;
    ips::FieldError err;
    if (!ips::ParseDienLine(line, &r, &err)) {
      ips::fuzz::CheckError(line, err);
    } else if (r.hist_items.size() != r.hist_cats.size() || r.user == 0 || r.item == 0) {
      std::abort();
    }
  });
  return 0;
}
