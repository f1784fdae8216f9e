// Branch-free float32 exp for the CPU kernels' hot element functions (GELU): the compiler
// can inline and vectorize it, where glibc's expf / tanhf are calls with branches.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace microflex::cpu {

// exp(x) within 1 ulp of float32 for x in [-87, 88] (Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2 / 2, degree-7 Taylor polynomial: truncation below 6e-9 relative); clamped
// outside that range (so exp(-inf) ~ 1.6e-38, exp(+inf) ~ 1.7e38); NaN stays NaN.
inline float exp_f32(float x) {
  const bool nan = x != x;
  const float xc = nan ? 0.0f : std::min(std::max(x, -87.0f), 88.0f);
  const float n =
      static_cast<float>(static_cast<int32_t>(xc * 1.44269504f + (xc < 0 ? -0.5f : 0.5f)));
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return nan ? x : p * scale;
}

}  // namespace microflex::cpu
