// softmax / log_softmax over the middle dim of contiguous [outer, R, inner] buffers,
// forward and fused backward. Each (outer, inner) position is one row of R elements at
// stride `inner`; the loops run over R outside and inner inside so memory is read in order.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace microflex::cpu {

// Note [Safe softmax]
// softmax(x)_j = exp(x_j - m) / sum_k exp(x_k - m) with m = max_k x_k, so no exp overflows
// (scores of ±1e4 in float32 stay finite). A row whose elements are all -inf (a fully
// masked attention row) has m = -inf and x - m = NaN; instead of PyTorch's NaN we define
// softmax = 0 and log_softmax = -inf there, which is what attention with an empty mask
// row needs (its output is 0 and its backward gives 0). logsumexp of such a row is -inf.
// Sums accumulate in float64; exp runs in acc_t (float for 16-bit types and float32).

namespace {

// softmax over contiguous rows (inner == 1, the last dim) of float or double, where the
// output can hold exp(x - m) exactly as computed: each exp is evaluated once, stored, and
// scaled in a second pass, instead of once for the sum and again for the output. The
// results are the same as the general loop's.
template <typename T>
void softmax_last_dim(const T* px, T* py, int64_t outer, int64_t r) {
  for (int64_t o = 0; o < outer; ++o) {
    const T* xr = px + o * r;
    T* yr = py + o * r;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < r; ++j) m = std::max(m, xr[j]);
    if (std::isinf(m) && m < 0) {
      std::fill(yr, yr + r, T(0));
      continue;
    }
    double s = 0;
    for (int64_t j = 0; j < r; ++j) {
      const T e = std::exp(xr[j] - m);
      yr[j] = e;
      s += static_cast<double>(e);
    }
    const T norm = static_cast<T>(1.0 / s);
    for (int64_t j = 0; j < r; ++j) yr[j] *= norm;
  }
}

}  // namespace

void softmax_forward(const void* x, void* y, DType type, int64_t outer, int64_t r, int64_t inner,
                     bool log) {
  MF_DISPATCH_FLOATING(type, log ? "log_softmax" : "softmax", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* px = static_cast<const T*>(x);
    T* py = static_cast<T*>(y);
    if constexpr (std::is_same_v<T, A>) {
      if (inner == 1 && !log) return softmax_last_dim(px, py, outer, r);
    }
    std::vector<A> m(static_cast<size_t>(inner));
    std::vector<double> s(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) {
      const T* xo = px + o * r * inner;
      T* yo = py + o * r * inner;
      std::fill(m.begin(), m.end(), -std::numeric_limits<A>::infinity());
      std::fill(s.begin(), s.end(), 0.0);
      for (int64_t j = 0; j < r; ++j)
        for (int64_t i = 0; i < inner; ++i)
          m[i] = std::max(m[i], static_cast<A>(xo[j * inner + i]));
      for (int64_t j = 0; j < r; ++j)
        for (int64_t i = 0; i < inner; ++i)
          s[i] += static_cast<double>(std::exp(static_cast<A>(xo[j * inner + i]) - m[i]));
      for (int64_t i = 0; i < inner; ++i) {
        const bool dead = std::isinf(m[i]) && m[i] < 0;
        const A mi = m[i];
        const A norm = static_cast<A>(log ? std::log(s[i]) : 1.0 / s[i]);
        for (int64_t j = 0; j < r; ++j) {
          const A v = static_cast<A>(xo[j * inner + i]) - mi;
          A out;
          if (dead) {
            out = log ? -std::numeric_limits<A>::infinity() : A(0);
          } else {
            out = log ? v - norm : std::exp(v) * norm;
          }
          yo[j * inner + i] = static_cast<T>(out);
        }
      }
    }
  });
}

void softmax_backward(const void* g, const void* y, void* dx, DType type, int64_t outer, int64_t r,
                      int64_t inner, bool log) {
  MF_DISPATCH_FLOATING(type, log ? "log_softmax_backward" : "softmax_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g);
    const T* py = static_cast<const T*>(y);
    T* pd = static_cast<T*>(dx);
    std::vector<double> s(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) {
      const int64_t base = o * r * inner;
      std::fill(s.begin(), s.end(), 0.0);
      // softmax: s = sum_R(g * y); log_softmax: s = sum_R(g).
      for (int64_t j = 0; j < r; ++j) {
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = base + j * inner + i;
          const double gv = static_cast<double>(static_cast<A>(pg[k]));
          s[i] += log ? gv : gv * static_cast<double>(static_cast<A>(py[k]));
        }
      }
      for (int64_t j = 0; j < r; ++j) {
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = base + j * inner + i;
          const A gv = static_cast<A>(pg[k]);
          const A yv = static_cast<A>(py[k]);
          const A si = static_cast<A>(s[i]);
          pd[k] = static_cast<T>(log ? gv - std::exp(yv) * si : yv * (gv - si));
        }
      }
    }
  });
}

}  // namespace microflex::cpu
