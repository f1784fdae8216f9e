// Row reductions and their backward kernels. Sums accumulate in float64 (int64 for
// integers); elementwise math runs in acc_t (float for the 16-bit types).
#include "kernels/cpu/reduction.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace microflex::cpu {

namespace {

template <typename T>
using sum_acc_t = std::conditional_t<std::is_integral_v<acc_t<T>>, int64_t, double>;

// Stores an accumulator into an element of type T.
template <typename T, typename A>
T store(A v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v != A(0);
  } else {
    return static_cast<T>(static_cast<acc_t<T>>(v));
  }
}

// Whether `v` replaces `best` as the running extremum: NaN beats every number and the
// first NaN stays; ties keep the earlier element.
template <typename A>
bool beats(A v, A best, bool is_max) {
  if constexpr (std::is_floating_point_v<A>) {
    if (std::isnan(best)) return false;
    if (std::isnan(v)) return true;
  }
  return is_max ? v > best : v < best;
}

// The sum of row[0..r) in S. Eight independent partial sums let the adds overlap (one
// running sum is bound by the add latency and never vectorizes); each partial still
// accumulates in S, so float inputs keep float64 accumulation.
template <typename S, typename T>
S row_sum(const T* row, int64_t r) {
  constexpr int64_t kParts = 8;
  S part[kParts] = {};
  int64_t j = 0;
  for (; j + kParts <= r; j += kParts)
    for (int64_t k = 0; k < kParts; ++k)
      part[k] += static_cast<S>(static_cast<acc_t<T>>(row[j + k]));
  S tail = 0;
  for (; j < r; ++j) tail += static_cast<S>(static_cast<acc_t<T>>(row[j]));
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])) +
         tail;
}

}  // namespace

void sum_rows(const void* in, DType in_type, void* out, DType out_type, int64_t outer, int64_t r) {
  MF_DISPATCH_ALL(in_type, "sum", [&] {
    using T = scalar_t;
    using S = sum_acc_t<T>;
    const T* p = static_cast<const T*>(in);
    MF_DISPATCH_ALL(out_type, "sum", [&] {
      scalar_t* q = static_cast<scalar_t*>(out);
      for (int64_t o = 0; o < outer; ++o) q[o] = store<scalar_t>(row_sum<S>(p + o * r, r));
    });
  });
}

void mean_rows(const void* in, DType type, void* out, int64_t outer, int64_t r) {
  MF_DISPATCH_FLOATING(type, "mean", [&] {
    using T = scalar_t;
    const T* p = static_cast<const T*>(in);
    T* q = static_cast<T*>(out);
    for (int64_t o = 0; o < outer; ++o) {
      const double acc = row_sum<double>(p + o * r, r);
      q[o] = static_cast<T>(static_cast<acc_t<T>>(acc / static_cast<double>(r)));
    }
  });
}

void minmax_rows(const void* in, DType type, int64_t outer, int64_t r, bool is_max, void* values,
                 int64_t* indices) {
  MF_INTERNAL_ASSERT(r > 0, "minmax_rows: empty rows");
  MF_DISPATCH_ALL(type, is_max ? "max" : "min", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* p = static_cast<const T*>(in);
    T* v = static_cast<T*>(values);
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = p + o * r;
      int64_t best = 0;
      A bv = static_cast<A>(row[0]);
      for (int64_t j = 1; j < r; ++j) {
        const A x = static_cast<A>(row[j]);
        if (beats(x, bv, is_max)) {
          bv = x;
          best = j;
        }
      }
      if (v) v[o] = row[best];
      if (indices) indices[o] = best;
    }
  });
}

void logsumexp_rows(const void* in, DType type, void* out, int64_t outer, int64_t r) {
  MF_DISPATCH_FLOATING(type, "logsumexp", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* p = static_cast<const T*>(in);
    T* q = static_cast<T*>(out);
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = p + o * r;
      A m = -std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < r; ++j) m = std::max(m, static_cast<A>(row[j]));
      // An infinite max is not subtracted: inf - inf would make NaN where the answer is
      // +inf (some element is +inf) or -inf (all elements are -inf).
      const A shift = std::isinf(m) ? A(0) : m;
      double s = 0;
      for (int64_t j = 0; j < r; ++j) s += static_cast<double>(std::exp(A(row[j]) - shift));
      q[o] = static_cast<T>(static_cast<A>(std::log(s) + static_cast<double>(shift)));
    }
  });
}

void var_rows(const void* in, DType type, void* out, int64_t outer, int64_t r, double correction) {
  MF_DISPATCH_FLOATING(type, "var", [&] {
    using T = scalar_t;
    const T* p = static_cast<const T*>(in);
    T* q = static_cast<T*>(out);
    const double denom = std::max(0.0, static_cast<double>(r) - correction);
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = p + o * r;
      double s = 0;
      for (int64_t j = 0; j < r; ++j) s += static_cast<double>(static_cast<acc_t<T>>(row[j]));
      const double mean = s / static_cast<double>(r);
      double ss = 0;
      for (int64_t j = 0; j < r; ++j) {
        const double d = static_cast<double>(static_cast<acc_t<T>>(row[j])) - mean;
        ss += d * d;
      }
      q[o] = static_cast<T>(static_cast<acc_t<T>>(ss / denom));
    }
  });
}

void amax_backward_rows(const void* g, const void* x, const void* y, void* dx, DType type,
                        int64_t outer, int64_t r) {
  MF_DISPATCH_FLOATING(type, "amax_amin_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g);
    const T* px = static_cast<const T*>(x);
    const T* py = static_cast<const T*>(y);
    T* pd = static_cast<T*>(dx);
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = px + o * r;
      T* drow = pd + o * r;
      const A yv = static_cast<A>(py[o]);
      auto hit = [&](A v) { return v == yv || (std::isnan(v) && std::isnan(yv)); };
      int64_t count = 0;
      for (int64_t j = 0; j < r; ++j) count += hit(static_cast<A>(row[j]));
      const A share = count ? static_cast<A>(pg[o]) / static_cast<A>(count) : A(0);
      for (int64_t j = 0; j < r; ++j)
        drow[j] = static_cast<T>(hit(static_cast<A>(row[j])) ? share : A(0));
    }
  });
}

void logsumexp_backward_rows(const void* g, const void* x, const void* lse, void* dx, DType type,
                             int64_t outer, int64_t r) {
  MF_DISPATCH_FLOATING(type, "logsumexp_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pg = static_cast<const T*>(g);
    const T* px = static_cast<const T*>(x);
    const T* pl = static_cast<const T*>(lse);
    T* pd = static_cast<T*>(dx);
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = px + o * r;
      T* drow = pd + o * r;
      const A l = static_cast<A>(pl[o]);
      const A gv = static_cast<A>(pg[o]);
      // A row of -inf has no mass anywhere: its gradient is 0 (the softmax convention of
      // Note [Safe softmax]) instead of exp(-inf - -inf) = NaN.
      const bool dead = std::isinf(l) && l < 0;
      for (int64_t j = 0; j < r; ++j)
        drow[j] = static_cast<T>(dead ? A(0) : gv * std::exp(static_cast<A>(row[j]) - l));
    }
  });
}

void scatter_selected(const void* g, const int64_t* idx, void* dx, DType type, int64_t outer,
                      int64_t r, int64_t inner) {
  MF_DISPATCH_FLOATING(type, "value_selecting_reduction_backward", [&] {
    using T = scalar_t;
    const T* pg = static_cast<const T*>(g);
    T* pd = static_cast<T*>(dx);
    std::memset(static_cast<void*>(pd), 0, static_cast<size_t>(outer * r * inner) * sizeof(T));
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t k = idx[o * inner + i];
        MF_INTERNAL_ASSERT(k >= 0 && k < r, "scatter_selected: index ", k, " out of [0, ", r, ")");
        pd[(o * r + k) * inner + i] = pg[o * inner + i];
      }
    }
  });
}

}  // namespace microflex::cpu
