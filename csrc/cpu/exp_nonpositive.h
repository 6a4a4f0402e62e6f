// exp(x) for x <= 0, branch-free, for the online log-sum-exp / softmax loops of the CPU ops.
//
// Why it exists: setup.py builds without -ffast-math, so libm's exp / expf stay opaque scalar
// calls and a loop that calls them does not vectorise (at small D the exps would cost more than
// the distances in gaussian_lse). These versions are plain arithmetic the compiler vectorises.
//
// Method: x = n ln2 + r with n = round(x / ln2) taken from the low mantissa bits of
// x / ln2 + 1.5 * 2^p (p = 23 / 52), |r| <= ln2 / 2 (Cody-Waite split of ln2, so r is exact to
// an ulp), exp(r) by its Taylor polynomial, times 2^n put into the exponent field.
//
// Accuracy and range:
//  * double: degree 13 (truncation < 1e-17), within 2e-16 relative (measured max 1.8e-16 over
//    [-708, 0]) for x in [kExpNonpositiveMinArg, 0] = [-708, 0].
//  * float: degree 7, within a few ulps for x in [kExpNonpositiveMinArgF, 0] = [-87, 0].
//  * Below that (-inf included) the result is exactly +0: such a term is below e^-708 (double) /
//    e^-87 (float) of the largest one, which contributes exp(0) = 1, so dropping it is far below
//    rounding (and 2^n stays a normal number). NaN propagates. x > 0 is not supported.
// The zeroing is an integer bit mask, not a floating-point ?: or an input clamp: under gcc's
// default -ftrapping-math those keep the loop scalar.
#pragma once

#include <cstdint>
#include <cstring>

constexpr double kExpNonpositiveMinArg = -708.0;
constexpr float kExpNonpositiveMinArgF = -87.0f;

[[gnu::always_inline]] inline double exp_nonpositive(double x) {
  constexpr double kShifter = 0x1.8p52;  // 1.5 * 2^52
  const double z = x * 1.4426950408889634074 + kShifter;
  const double n = z - kShifter;
  // fdlibm's split of ln2: ln2_hi has 32 trailing zero bits, so n * ln2_hi is exact for |n| < 2^20.
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  // exp(r) = 1 + r (1 + r q(r)), q = c2 + ... + c13 r^11 = lo(r) + r^6 hi(r): two Horner chains of
  // half the latency; the last two steps are Horner so q's rounding is damped by r^2 <= 0.12.
  double lo = 1.0 / 5040.0, hi = 1.0 / 6227020800.0;  // 1 / 7!, 1 / 13!
  hi = hi * r + 1.0 / 479001600.0;
  hi = hi * r + 1.0 / 39916800.0;
  hi = hi * r + 1.0 / 3628800.0;
  hi = hi * r + 1.0 / 362880.0;
  hi = hi * r + 1.0 / 40320.0;
  lo = lo * r + 1.0 / 720.0;
  lo = lo * r + 1.0 / 120.0;
  lo = lo * r + 1.0 / 24.0;
  lo = lo * r + 1.0 / 6.0;
  lo = lo * r + 0.5;
  const double r2 = r * r;
  const double q = lo + (r2 * r2 * r2) * hi;
  double p = q * r + 1.0;
  p = p * r + 1.0;
  // Multiply by 2^n by adding n to the exponent field: the low 12 bits of z are n modulo 2^12, so
  // the shift also works for negative n; p * 2^n is normal for x >= -708 (n >= -1021).
  uint64_t zbits, pbits;
  std::memcpy(&zbits, &z, sizeof z);
  std::memcpy(&pbits, &p, sizeof p);
  pbits += zbits << 52;
  pbits &= x < kExpNonpositiveMinArg ? uint64_t{0} : ~uint64_t{0};  // -inf, too small: +0; NaN kept
  std::memcpy(&p, &pbits, sizeof p);
  return p;
}

[[gnu::always_inline]] inline float exp_nonpositive(float x) {
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n built in the exponent field (bits(t) = bits(1.5 * 2^23) + n; the shift pushes the
  // constant's bits out of the word) and multiplied in, so that results below 2^-126 round to
  // the right subnormal. n >= -126 for x >= -87, so 2^n is normal.
  uint32_t tbits;
  std::memcpy(&tbits, &t, sizeof t);
  const uint32_t sbits = (tbits + 127u) << 23;
  float scale;
  std::memcpy(&scale, &sbits, sizeof scale);
  p *= scale;
  uint32_t pbits;
  std::memcpy(&pbits, &p, sizeof p);
  pbits &= x < kExpNonpositiveMinArgF ? uint32_t{0} : ~uint32_t{0};  // -inf, too small: +0; NaN kept
  std::memcpy(&p, &pbits, sizeof p);
  return p;
}
