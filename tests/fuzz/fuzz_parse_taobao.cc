#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ips::fuzz::ForEachLine(data, size, [](std::string_view line) {
    ips::Event e;
    ips::FieldError err;
    if (!ips::ParseTaobaoLine(line, &e, &err)) ips::fuzz::CheckError(line, err);
  });
  return 0;
}
