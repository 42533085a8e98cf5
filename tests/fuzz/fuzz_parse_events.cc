// Also checks the round trip: a parsed event formats back to a line that parses to the same event.
#include <string>

#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ips::fuzz::ForEachLine(data, size, [](std::string_view line) {
    ips::Event e;
    ips::FieldError err;
    if (!ips::ParseEventLine(line, &e, &err)) {
      ips::fuzz::CheckError(line, err);
      return;
    }
    std::string text;
    ips::AppendEventLine(e, &text);
    text.pop_back();
    ips::Event back;
    if (!ips::ParseEventLine(text, &back, &err) || back.user != e.user || back.item != e.item ||
        back.category != e.category || back.timestamp != e.timestamp || back.action != e.action ||
        back.domain != e.domain)
      std::abort();
  });
  return 0;
}
