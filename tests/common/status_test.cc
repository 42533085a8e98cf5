#include "common/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace ips {
namespace {

StatusOr<int> ParsePositive(int x) {
  if (x <= 0) return InvalidArgumentError("x must be positive, got " + std::to_string(x));
  return x;
}

Status UsesMacros(int x, int* out) {
  IPS_ASSIGN_OR_RETURN(int v, ParsePositive(x));
  *out = v * 2;
  return Status::Ok();
}

TEST(Status, OkAndErrorsCarryCodeAndMessage) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = DataLossError("crc mismatch").WithContext("shard-00001.ips: block 3");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.ToString(), "DATA_LOSS: shard-00001.ips: block 3: crc mismatch");
}

TEST(StatusOr, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(UsesMacros(21, &out).ok());
  EXPECT_EQ(out, 42);
  Status s = UsesMacros(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("-1"), std::string::npos);
}

// One errno -> code mapping for every file error (--metrics_out, checkpoint directories): the
// code says what the user can do, the message the reason.
TEST(Status, FromErrno_CodeFollowsTheReason) {
  const Status missing = StatusFromErrno(ENOENT, "cannot open --metrics_out file 'a/m'");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "cannot open --metrics_out file 'a/m': No such file or directory");
  EXPECT_EQ(StatusCodeFromErrno(ENOTDIR), StatusCode::kNotFound);
  for (int err : {EISDIR, ENAMETOOLONG, ELOOP})
    EXPECT_EQ(StatusCodeFromErrno(err), StatusCode::kInvalidArgument) << err;
  for (int err : {ENOSPC, EDQUOT, EMFILE, ENFILE})
    EXPECT_EQ(StatusCodeFromErrno(err), StatusCode::kResourceExhausted) << err;
  for (int err : {EACCES, EPERM, EROFS, ETXTBSY, EINVAL})
    EXPECT_EQ(StatusCodeFromErrno(err), StatusCode::kFailedPrecondition) << err;
  const Status none = StatusFromErrno(0, "x");
  EXPECT_EQ(none.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(none.message(), "x: no reason given");
}

}  // namespace
}  // namespace ips
