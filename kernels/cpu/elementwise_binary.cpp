// Binary, ternary (where) and clamp CPU kernels: each op is an element function on the
// compute type (acc_t), run by the strided loops for every dtype the op supports.
#include <algorithm>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loops.h"

namespace microflex::cpu {

namespace {

using Strides = std::vector<int64_t>;

// out[i] = Out(f(A(a[i]), A(b[i]))) with A = acc_t<T>; Out is T, or bool for predicates.
template <typename T, typename Out, typename F>
void run(void* out, const Strides& os, const void* a, const Strides& as, const void* b,
         const Strides& bs, const Strides& sizes, F f) {
  using A = acc_t<T>;
  binary_loop(
      static_cast<Out*>(out), static_cast<const T*>(a), static_cast<const T*>(b), sizes, os, as, bs,
      [&](T x, T y) -> Out { return static_cast<Out>(f(static_cast<A>(x), static_cast<A>(y))); });
}

}  // namespace

// One case per op: DISPATCH picks the dtypes it supports, OUT is scalar_t or bool, the
// rest is its element function of `x` and `y` (of type A).
#define MF_BINARY_CASE(OP, NAME, DISPATCH, OUT, ...)                                        \
  case BinaryOp::OP:                                                                        \
    return DISPATCH(dtype, NAME, [&] {                                                      \
      using A = acc_t<scalar_t>;                                                            \
      run<scalar_t, OUT>(out, os, a, as, b, bs, sizes, [](A x, A y) -> A { __VA_ARGS__; }); \
    })

#define MF_DISPATCH_BITWISE(dtype, opname, ...)              \
  [&] {                                                      \
    if (dtype == DType::Bool) {                              \
      using scalar_t = bool;                                 \
      return __VA_ARGS__();                                  \
    }                                                        \
    return MF_DISPATCH_INTEGRAL(dtype, opname, __VA_ARGS__); \
  }()

void binary(BinaryOp op, DType dtype, void* out, const Strides& os, const void* a,
            const Strides& as, const void* b, const Strides& bs, const Strides& sizes) {
  switch (op) {
    MF_BINARY_CASE(Add, "add", MF_DISPATCH_ALL, scalar_t, return x + y);
    MF_BINARY_CASE(Sub, "sub", MF_DISPATCH_NUMERIC, scalar_t, return x - y);
    MF_BINARY_CASE(Mul, "mul", MF_DISPATCH_ALL, scalar_t, return x * y);
    MF_BINARY_CASE(Div, "div", MF_DISPATCH_FLOATING, scalar_t, return x / y);
    MF_BINARY_CASE(
        Pow, "pow", MF_DISPATCH_NUMERIC, scalar_t,
        if constexpr (std::is_integral_v<A>) { return int_pow(x, y); } else {
          return std::pow(x, y);
        });
    // Both propagate NaN, as PyTorch's maximum/minimum do.
    MF_BINARY_CASE(Minimum, "minimum", MF_DISPATCH_ALL, scalar_t,
                   return is_nan(x)   ? x
                          : is_nan(y) ? y
                                      : std::min(x, y));
    MF_BINARY_CASE(Maximum, "maximum", MF_DISPATCH_ALL, scalar_t,
                   return is_nan(x)   ? x
                          : is_nan(y) ? y
                                      : std::max(x, y));
    MF_BINARY_CASE(
        Remainder, "remainder", MF_DISPATCH_NUMERIC, scalar_t,
        if constexpr (std::is_integral_v<A>) {
          MF_CHECK(y != 0, "remainder: integer division by zero");
        } return py_remainder(x, y));
    MF_BINARY_CASE(
        FloorDivide, "floor_divide", MF_DISPATCH_NUMERIC, scalar_t,
        if constexpr (std::is_integral_v<A>) {
          MF_CHECK(y != 0, "floor_divide: integer division by zero");
        } return py_floor_divide(x, y));
    MF_BINARY_CASE(BitwiseAnd, "bitwise_and", MF_DISPATCH_BITWISE, scalar_t, return x & y);
    MF_BINARY_CASE(BitwiseOr, "bitwise_or", MF_DISPATCH_BITWISE, scalar_t, return x | y);
    MF_BINARY_CASE(BitwiseXor, "bitwise_xor", MF_DISPATCH_BITWISE, scalar_t, return x ^ y);
    MF_BINARY_CASE(GeluBackward, "gelu_backward", MF_DISPATCH_FLOATING, scalar_t,
                   return x * gelu_grad(y, false));
    MF_BINARY_CASE(GeluTanhBackward, "gelu_backward", MF_DISPATCH_FLOATING, scalar_t,
                   return x * gelu_grad(y, true));
    MF_BINARY_CASE(Eq, "eq", MF_DISPATCH_ALL, bool, return x == y);
    MF_BINARY_CASE(Ne, "ne", MF_DISPATCH_ALL, bool, return x != y);
    MF_BINARY_CASE(Lt, "lt", MF_DISPATCH_ALL, bool, return x < y);
    MF_BINARY_CASE(Le, "le", MF_DISPATCH_ALL, bool, return x <= y);
    MF_BINARY_CASE(Gt, "gt", MF_DISPATCH_ALL, bool, return x > y);
    MF_BINARY_CASE(Ge, "ge", MF_DISPATCH_ALL, bool, return x >= y);
    MF_BINARY_CASE(LogicalAnd, "logical_and", MF_DISPATCH_ALL, bool,
                   return (x != A(0)) && (y != A(0)));
    MF_BINARY_CASE(LogicalOr, "logical_or", MF_DISPATCH_ALL, bool,
                   return (x != A(0)) || (y != A(0)));
    MF_BINARY_CASE(LogicalXor, "logical_xor", MF_DISPATCH_ALL, bool,
                   return (x != A(0)) != (y != A(0)));
  }
  MF_INTERNAL_ASSERT(false, "binary: unknown op ", int(op));
}

#undef MF_BINARY_CASE
#undef MF_DISPATCH_BITWISE

void where(DType dtype, void* out, const Strides& os, const bool* cond, const Strides& cs,
           const void* a, const Strides& as, const void* b, const Strides& bs,
           const Strides& sizes) {
  MF_DISPATCH_ALL(dtype, "where", [&] {
    using T = scalar_t;
    ternary_loop(static_cast<T*>(out), cond, static_cast<const T*>(a), static_cast<const T*>(b),
                 sizes, os, cs, as, bs, [](bool c, T x, T y) { return c ? x : y; });
  });
}

void clamp(DType dtype, void* out, const Strides& os, const void* a, const Strides& as,
           const Strides& sizes, const ClampBounds& bounds) {
  MF_DISPATCH_NUMERIC(dtype, "clamp", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    // The bounds in the tensor's dtype, as PyTorch casts Scalar bounds before comparing.
    A lo, hi;
    if constexpr (std::is_integral_v<A>) {
      lo = static_cast<A>(bounds.lo_i);
      hi = static_cast<A>(bounds.hi_i);
    } else {
      lo = static_cast<A>(static_cast<T>(bounds.lo_f));
      hi = static_cast<A>(static_cast<T>(bounds.hi_f));
    }
    const bool has_lo = bounds.has_lo, has_hi = bounds.has_hi;
    // min(max(x, lo), hi): lo > hi gives hi everywhere; a NaN input or bound gives NaN.
    unary_loop(static_cast<T*>(out), static_cast<const T*>(a), sizes, os, as, [&](T t) -> T {
      A x = static_cast<A>(t);
      if (is_nan(x)) return t;
      if (has_lo && (x < lo || is_nan(lo))) x = lo;
      if (has_hi && (x > hi || is_nan(hi))) x = hi;
      return static_cast<T>(x);
    });
  });
}

}  // namespace microflex::cpu
