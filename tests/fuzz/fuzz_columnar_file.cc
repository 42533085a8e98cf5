// Arbitrary bytes as a columnar file: either rejected with a Status or fully valid, in which
// case every column can be read in bounds.
#include <cstdint>
#include <cstdlib>

#include "worker/columnar_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (uint32_t kind : {ips::kKindShard, ips::kKindVocab}) {
    auto f = ips::ColumnarFile::FromBytes("fuzz.ips", data, size, kind);
    if (!f.ok()) {
      if (f.status().message().find("fuzz.ips") == std::string::npos) std::abort();
      continue;
    }
    uint64_t sum = 0;
    for (const char* name : {"a", "rec_user", "ev_item", "item_raw"}) {
      if (auto c = (*f)->Column<uint8_t>(name); c.ok())
        for (uint8_t v : *c) sum += v;
      if (auto c = (*f)->Column<uint64_t>(name); c.ok())
        for (uint64_t v : *c) sum += v;
    }
    if (sum == 0xdeadbeefULL) return 0;  // keep the loop from being optimised away
  }
  return 0;
}
