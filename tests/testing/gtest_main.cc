// main() of every test binary: runs the tests and exits 77 (ctest's SKIP_RETURN_CODE, see
// ips_add_test) when every test that ran was skipped (GTEST_SKIP, e.g. no CUDA device or no
// ../shared/data) and none failed, so ctest reports "skipped" instead of "passed". A binary with
// any failure exits 1 as usual.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  if (failed != 0) return failed;
  const ::testing::UnitTest& u = *::testing::UnitTest::GetInstance();
  if (u.successful_test_count() == 0 && u.skipped_test_count() > 0) return 77;
  return 0;
}
