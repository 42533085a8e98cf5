// gtest assertions on ips::Status: ASSERT_OK(expr) / EXPECT_OK(expr) print the status on failure.
#ifndef IPS_TESTS_TESTING_STATUS_MATCHERS_H_
#define IPS_TESTS_TESTING_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include "common/status.h"

#define ASSERT_OK(expr)                      \
  do {                                       \
    const ::ips::Status _st = (expr);        \
    ASSERT_TRUE(_st.ok()) << _st.ToString(); \
  } while (0)

#define EXPECT_OK(expr)                      \
  do {                                       \
    const ::ips::Status _st = (expr);        \
    EXPECT_TRUE(_st.ok()) << _st.ToString(); \
  } while (0)

#endif  // IPS_TESTS_TESTING_STATUS_MATCHERS_H_
