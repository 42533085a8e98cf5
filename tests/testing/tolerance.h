// The one tolerance comparator for all tests: |got - want| <= atol + rtol * |want| element-wise,
// NaN never passes. On failure it reports the count of mismatches, the first few with their
// indices, and the max absolute / relative errors.
#ifndef IPS_TESTS_TESTING_TOLERANCE_H_
#define IPS_TESTS_TESTING_TOLERANCE_H_

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <vector>

namespace ips::testing {

struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-4;
};

template <typename A, typename B>
::testing::AssertionResult AllClose(const A* got, const B* want, int64_t n, Tolerance tol = {}) {
  int64_t bad = 0;
  double max_abs = 0, max_rel = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    const double err = std::fabs(g - w);
    const bool ok = !std::isnan(g) && !std::isnan(w) && err <= tol.atol + tol.rtol * std::fabs(w);
    if (!std::isnan(err)) {
      max_abs = std::max(max_abs, err);
      max_rel = std::max(max_rel, err / std::max(std::fabs(w), 1e-30));
    }
    if (!ok) {
      if (bad < 8) first << "\n  [" << i << "] got " << g << " want " << w << " err " << err;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << n << " elements differ (atol " << tol.atol << ", rtol " << tol.rtol
         << "; max abs err " << max_abs << ", max rel err " << max_rel << "):" << first.str();
}

template <typename A, typename B>
::testing::AssertionResult AllClose(const std::vector<A>& got, const std::vector<B>& want,
                                    Tolerance tol = {}) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << " want " << want.size();
  return AllClose(got.data(), want.data(), static_cast<int64_t>(got.size()), tol);
}

// Relative L2 error ||got - want|| / ||want|| (METHOD.md's measure for float32 vs float64).
template <typename A, typename B>
double RelativeL2(const A* got, const B* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// Fills outputs with NaN before a kernel runs, so an unwritten element fails AllClose.
template <typename T>
void Poison(std::vector<T>& v) {
  for (auto& x : v) x = std::numeric_limits<T>::quiet_NaN();
}

}  // namespace ips::testing

#endif  // IPS_TESTS_TESTING_TOLERANCE_H_
