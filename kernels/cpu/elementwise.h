// Elementwise CPU kernels: one entry point per arity, the operation picked by an enum.
// Raw pointers, sizes and element strides in (a 0 stride broadcasts). The element
// functions below are the reference semantics (Python-style remainder, integer pow, gelu).
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/fast_math.h"

namespace microflex::cpu {

enum class UnaryOp : uint8_t {
  Neg,
  Abs,
  Sign,
  Exp,
  Exp2,
  Log,
  Log2,
  Sqrt,
  Rsqrt,
  Sin,
  Cos,
  Tanh,
  Sigmoid,
  Relu,
  Gelu,
  GeluTanh,
  Silu,
  BitwiseNot,
  LogicalNot,  // writes bool
};

enum class BinaryOp : uint8_t {
  Add,
  Sub,
  Mul,
  Div,
  Pow,
  Minimum,
  Maximum,
  Remainder,
  FloorDivide,
  BitwiseAnd,
  BitwiseOr,
  BitwiseXor,
  GeluBackward,
  GeluTanhBackward,  // a = grad of the output, b = input
  // Predicates: write bool.
  Eq,
  Ne,
  Lt,
  Le,
  Gt,
  Ge,
  LogicalAnd,
  LogicalOr,
  LogicalXor,
};

inline bool writes_bool(BinaryOp op) {
  return op >= BinaryOp::Eq;
}

// out = op(a); a has `dtype`, out has `dtype` (bool for LogicalNot).
void unary(UnaryOp op, DType dtype, void* out, const std::vector<int64_t>& out_strides,
           const void* a, const std::vector<int64_t>& a_strides, const std::vector<int64_t>& sizes);

// out = op(a, b); a and b have `dtype`, out has `dtype` (bool for predicates). Integer
// remainder and floor_divide throw on division by zero.
void binary(BinaryOp op, DType dtype, void* out, const std::vector<int64_t>& out_strides,
            const void* a, const std::vector<int64_t>& a_strides, const void* b,
            const std::vector<int64_t>& b_strides, const std::vector<int64_t>& sizes);

// out = cond ? a : b; a, b and out have `dtype`.
void where(DType dtype, void* out, const std::vector<int64_t>& out_strides, const bool* cond,
           const std::vector<int64_t>& cond_strides, const void* a,
           const std::vector<int64_t>& a_strides, const void* b,
           const std::vector<int64_t>& b_strides, const std::vector<int64_t>& sizes);

// Bounds of clamp, already promoted: floating dtypes read lo_f/hi_f (rounded to the
// dtype first), integer dtypes lo_i/hi_i.
struct ClampBounds {
  bool has_lo = false, has_hi = false;
  double lo_f = 0, hi_f = 0;
  int64_t lo_i = 0, hi_i = 0;
};
void clamp(DType dtype, void* out, const std::vector<int64_t>& out_strides, const void* a,
           const std::vector<int64_t>& a_strides, const std::vector<int64_t>& sizes,
           const ClampBounds& bounds);

// ---- Element functions, on the compute type A (float for 16-bit types). ----

template <typename A>
bool is_nan(A x) {
  if constexpr (std::is_floating_point_v<A>) {
    return std::isnan(x);
  } else {
    return false;
  }
}

// Two's-complement negation without signed overflow (-INT_MIN wraps like PyTorch's).
template <typename A>
A wrap_neg(A x) {
  if constexpr (std::is_integral_v<A> && std::is_signed_v<A>) {
    return static_cast<A>(std::make_unsigned_t<A>(0) - static_cast<std::make_unsigned_t<A>>(x));
  } else {
    return -x;
  }
}

// Python's a % b: the result has the sign of b. Integer b must be nonzero.
template <typename A>
A py_remainder(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    if (b == -1) return 0;  // avoids INT_MIN % -1 overflow
    A r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else {
    A r = std::fmod(a, b);
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
}

// Python's a // b (floor of the true quotient). Integer b must be nonzero.
template <typename A>
A py_floor_divide(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    if (b == -1) return wrap_neg(a);
    A q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
  } else {
    // As PyTorch: divide the exact multiple a - fmod(a, b) so that the quotient is exact,
    // then round; a zero divisor gives a / b (inf or nan).
    if (b == 0) return a / b;
    const A mod = std::fmod(a, b);
    A div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= A(1);
    if (div == 0) return std::copysign(A(0), a / b);
    A fl = std::floor(div);
    if (div - fl > A(0.5)) fl += A(1);
    return fl;
  }
}

// Integer power by squaring; negative exponents follow PyTorch (1, -1 or 0). Wraps on
// overflow like the fixed-width arithmetic it stands for.
template <typename A>
A int_pow(A base, A exp) {
  if (exp < 0) {
    if (base == 1) return 1;
    if (base == -1) return (exp % 2 == 0) ? 1 : -1;
    return 0;
  }
  using U = std::make_unsigned_t<A>;
  U result = 1, b = static_cast<U>(base);
  for (U e = static_cast<U>(exp); e != 0; e >>= 1) {
    if (e & 1) result *= b;
    b *= b;
  }
  return static_cast<A>(result);
}

// gelu(x) = x * Phi(x), exact or with the tanh approximation. In float the tanh form is
// written x * sigmoid(2u) (= 0.5 x (1 + tanh u)), which has no cancellation for negative
// x, with the inlined exp_f32 (kernels/cpu/fast_math.h); float64 keeps the library tanh.
template <typename A>
A gelu(A x, bool tanh_approx) {
  if constexpr (std::is_same_v<A, float>) {
    if (tanh_approx) {
      const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
      return x / (1.0f + exp_f32(-2.0f * u));
    }
  }
  if (tanh_approx) {
    const A k = std::sqrt(A(2) / A(M_PI));
    return A(0.5) * x * (A(1) + std::tanh(k * (x + A(0.044715) * x * x * x)));
  }
  return A(0.5) * x * (A(1) + std::erf(x * A(M_SQRT1_2)));
}

// d gelu(x) / dx; for the float tanh form, with s = sigmoid(2u):
// s + 2 x s (1 - s) du/dx.
template <typename A>
A gelu_grad(A x, bool tanh_approx) {
  if constexpr (std::is_same_v<A, float>) {
    if (tanh_approx) {
      const float k = 0.7978845608f;
      const float u = k * (x + 0.044715f * x * x * x);
      const float s = 1.0f / (1.0f + exp_f32(-2.0f * u));
      return s + 2.0f * x * s * (1.0f - s) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
  }
  if (tanh_approx) {
    const A k = std::sqrt(A(2) / A(M_PI));
    const A inner = k * (x + A(0.044715) * x * x * x);
    const A t = std::tanh(inner);
    const A dinner = k * (A(1) + A(3) * A(0.044715) * x * x);
    return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * dinner;
  }
  const A cdf = A(0.5) * (A(1) + std::erf(x * A(M_SQRT1_2)));
  const A pdf = std::exp(A(-0.5) * x * x) * A(0.5 * M_2_SQRTPI * M_SQRT1_2);
  return cdf + x * pdf;
}

}  // namespace microflex::cpu
