#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ips::fuzz::ForEachLine(data, size, [](std::string_view line) {
    ips::Event e;
    ips::FieldError err;
    if (!ips::ParseMovieLens1mRating(line, &e, &err)) ips::fuzz::CheckError(line, err);
    uint64_t item = 0, cat = 0;
    if (!ips::ParseMovieLens1mMovie(line, &item, &cat, &err)) {
      ips::fuzz::CheckError(line, err);
    } else if (cat < 1 || cat > 18) {
      std::abort();
    }
  });
  return 0;
}
