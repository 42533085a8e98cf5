#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ips {
namespace {

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) test vectors.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), inc(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(inc.data(), 32), 0x46DD794Eu);
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c(s.data(), s.size()), 0xE3069283u);
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::string s = "interest-ps checksums every shard block and checkpoint file";
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    uint32_t c = Crc32cExtend(Crc32c(s.data(), cut), s.data() + cut, s.size() - cut);
    EXPECT_EQ(c, Crc32c(s.data(), s.size())) << cut;
  }
}

}  // namespace
}  // namespace ips
