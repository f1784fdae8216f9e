// A naive float64 reference for flex_attention: explicit loops over every (b, h, m, n),
// with score_mod and mask_mod given as scalar functions.
#pragma once
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "microflex/microflex.h"

namespace mftest {

using ScalarScoreMod = std::function<double(double s, int64_t b, int64_t h, int64_t q, int64_t kv)>;
using ScalarMaskMod = std::function<bool(int64_t b, int64_t h, int64_t q, int64_t kv)>;
// Attention dropout: the factor (0 or 1 / (1 - p)) multiplying probability (b, h, q, kv).
using ScalarDropout = std::function<double(int64_t b, int64_t h, int64_t q, int64_t kv)>;

struct Reference {
  std::vector<double> out;  // [B, Hq, M, Dv]
  std::vector<double> lse;  // [B, Hq, M]
};

inline Reference reference_attention(const microflex::Tensor& q, const microflex::Tensor& k,
                                     const microflex::Tensor& v, double scale,
                                     const ScalarScoreMod& score_mod, const ScalarMaskMod& mask_mod,
                                     const ScalarDropout& dropout = {}) {
  const int64_t B = q.size(0), Hq = q.size(1), M = q.size(2), D = q.size(3);
  const int64_t Hkv = k.size(1), N = k.size(2), Dv = v.size(3), G = Hq / Hkv;
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  Reference r;
  r.out.assign(B * Hq * M * Dv, 0.0);
  r.lse.assign(B * Hq * M, -std::numeric_limits<double>::infinity());
  std::vector<double> s(N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t m = 0; m < M; ++m) {
        const int64_t kh = h / G;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t n = 0; n < N; ++n) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[((b * Hq + h) * M + m) * D + d] * kv[((b * Hkv + kh) * N + n) * D + d];
          double x = dot * scale;
          if (score_mod) x = score_mod(x, b, h, m, n);
          if (mask_mod && !mask_mod(b, h, m, n)) x = -std::numeric_limits<double>::infinity();
          s[n] = x;
          mx = std::max(mx, x);
        }
        if (std::isinf(mx) && mx < 0) continue;  // fully masked: out 0, lse -inf
        double l = 0;
        for (int64_t n = 0; n < N; ++n) l += std::exp(s[n] - mx);
        r.lse[(b * Hq + h) * M + m] = mx + std::log(l);
        for (int64_t n = 0; n < N; ++n) {
          double p = std::exp(s[n] - mx) / l;
          if (dropout) p *= dropout(b, h, m, n);
          for (int64_t e = 0; e < Dv; ++e)
            r.out[((b * Hq + h) * M + m) * Dv + e] += p * vv[((b * Hkv + kh) * N + n) * Dv + e];
        }
      }
  return r;
}

}  // namespace mftest
