// Arbitrary text as a MANIFEST (with a valid trailing CRC appended half of the time, so the
// parser behind the CRC check is reached). Parse must return a Status, never crash; a parsed
// manifest must re-serialise and parse to the same text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/crc32c.h"
#include "worker/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "manifest_crc32c=0x%08x\n",
                  ips::Crc32c(text.data(), text.size()));
    text += buf;
  }
  auto m = ips::Manifest::Parse("MANIFEST", text);
  if (!m.ok()) return 0;
  const std::string again = m->ToText();
  auto m2 = ips::Manifest::Parse("MANIFEST", again);
  if (!m2.ok() || m2->ToText() != again) std::abort();
  return 0;
}
