// Elementwise math for the CPU kernels' hot loops: a branch-free float exp that GCC vectorises
// (libm's expf is a scalar call and does not vectorise without -ffast-math), and sigmoid/tanh/exp
// built on it for float, libm for double (gradient checks, references).
//
// Everything is force-inlined (IPS_FORCE_INLINE) so that it is compiled for the target of the
// function it lands in: the attention and recurrent kernels compile their loops as AVX2/AVX-512
// clones. The clamps vectorise only with -fno-trapping-math, set per file in kernels/*.cmake.
// Cephes' polynomial: ~1 ulp on [-87, 88]; inputs are clamped there, which only matters where
// sigmoid saturates anyway.
#ifndef IPS_KERNELS_CPU_FAST_MATH_H_
#define IPS_KERNELS_CPU_FAST_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__)
#define IPS_FORCE_INLINE __attribute__((always_inline)) inline
#else
#define IPS_FORCE_INLINE inline
#endif

namespace ips::kernels::cpu {

IPS_FORCE_INLINE float FastExp(float x) {
  x = x < -87.0f ? -87.0f : x;  // clamps as selects
  x = x > 88.0f ? 88.0f : x;
  // Round x·log2(e) to nearest with the 1.5·2^23 trick (no SSE4.1 round instruction needed).
  const float kMagic = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// exp: FastExp for float (vectorisable), libm for double.
template <typename T>
IPS_FORCE_INLINE T Exp(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return FastExp(x);
  } else {
    return std::exp(x);
  }
}

template <typename T>
IPS_FORCE_INLINE T Sigmoid(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return 1.0f / (1.0f + FastExp(-x));
  } else {
    return T(1) / (T(1) + std::exp(-x));
  }
}

template <typename T>
IPS_FORCE_INLINE T Tanh(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return 1.0f - 2.0f / (1.0f + FastExp(2.0f * x));
  } else {
    return std::tanh(x);
  }
}

}  // namespace ips::kernels::cpu

#endif  // IPS_KERNELS_CPU_FAST_MATH_H_
