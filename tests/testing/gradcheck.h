// Finite-difference gradient checking in float64.
//
// Usage: describe the scalar loss L(params) as a callable that runs the forward pass in double
// and returns sum(out * upstream) for a fixed random `upstream`; compute the analytic gradient
// with the backward pass (upstream as dL/dout); then CheckGradient compares every element of the
// analytic gradient with the central difference (L(x + h) - L(x - h)) / 2h.
#ifndef IPS_TESTS_TESTING_GRADCHECK_H_
#define IPS_TESTS_TESTING_GRADCHECK_H_

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <vector>

#include "common/random.h"

namespace ips::testing {

// Fills v with values uniform in [lo, hi) (never all zeros).
inline void FillUniform(std::vector<double>& v, Rng& rng, double lo = -1.0, double hi = 1.0) {
  for (auto& x : v) x = lo + (hi - lo) * rng.Uniform();
}
inline void FillUniform(std::vector<float>& v, Rng& rng, float lo = -1.f, float hi = 1.f) {
  for (auto& x : v) x = lo + (hi - lo) * rng.UniformFloat();
}

// n values uniform in [lo, hi).
inline std::vector<double> RandomUniform(int64_t n, Rng& rng, double lo, double hi) {
  std::vector<double> v(static_cast<size_t>(n));
  FillUniform(v, rng, lo, hi);
  return v;
}

// Compares analytic[i] with the central difference of loss() wrt param[i], for every i (or a
// deterministic sample of max_checks indices when param is larger). `loss` must read `param`.
inline ::testing::AssertionResult CheckGradient(const char* name, std::vector<double>& param,
                                                const std::vector<double>& analytic,
                                                const std::function<double()>& loss,
                                                double h = 1e-6, double tol = 1e-6,
                                                int64_t max_checks = 4096) {
  if (param.size() != analytic.size())
    return ::testing::AssertionFailure() << name << ": gradient size " << analytic.size()
                                         << " != parameter size " << param.size();
  const int64_t n = static_cast<int64_t>(param.size());
  const int64_t stride = n > max_checks ? (n + max_checks - 1) / max_checks : 1;
  int64_t bad = 0;
  double max_err = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < n; i += stride) {
    const double saved = param[i];
    param[i] = saved + h;
    const double lp = loss();
    param[i] = saved - h;
    const double lm = loss();
    param[i] = saved;
    const double numeric = (lp - lm) / (2 * h);
    const double err = std::fabs(numeric - analytic[i]) / std::max(1.0, std::fabs(numeric));
    if (std::isnan(analytic[i])) ++bad;
    max_err = std::max(max_err, err);
    if (err > tol || std::isnan(analytic[i])) {
      if (bad < 8) first << "\n  " << name << "[" << i << "] analytic " << analytic[i]
                         << " numeric " << numeric;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << name << ": " << bad << " gradient mismatches (max err "
                                       << max_err << ", tol " << tol << "):" << first.str();
}

// sum_i out[i] * upstream[i]: the scalar whose gradient wrt out is `upstream`.
inline double Dot(const std::vector<double>& out, const std::vector<double>& upstream) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * upstream[i];
  return s;
}

}  // namespace ips::testing

#endif  // IPS_TESTS_TESTING_GRADCHECK_H_
