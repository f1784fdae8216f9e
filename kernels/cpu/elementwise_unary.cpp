// Unary elementwise CPU kernels: each op is an element function on the compute type
// (acc_t), run by the strided unary loop for every dtype the op supports.
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loops.h"

namespace microflex::cpu {

namespace {

// out[i] = T(f(A(a[i]))) with A = acc_t<T>; Out is T, or bool for predicates.
template <typename T, typename Out, typename F>
void run(void* out, const std::vector<int64_t>& os, const void* a, const std::vector<int64_t>& as,
         const std::vector<int64_t>& sizes, F f) {
  using A = acc_t<T>;
  unary_loop(static_cast<Out*>(out), static_cast<const T*>(a), sizes, os, as,
             [&](T x) -> Out { return static_cast<Out>(f(static_cast<A>(x))); });
}

}  // namespace

// One case per op: DISPATCH picks the dtypes it supports, the rest is its element
// function of `x` (of type A).
#define MF_UNARY_CASE(OP, NAME, DISPATCH, ...)                                       \
  case UnaryOp::OP:                                                                  \
    return DISPATCH(dtype, NAME, [&] {                                               \
      using A = acc_t<scalar_t>;                                                     \
      run<scalar_t, scalar_t>(out, os, a, as, sizes, [](A x) -> A { __VA_ARGS__; }); \
    })

void unary(UnaryOp op, DType dtype, void* out, const std::vector<int64_t>& os, const void* a,
           const std::vector<int64_t>& as, const std::vector<int64_t>& sizes) {
  switch (op) {
    MF_UNARY_CASE(Neg, "neg", MF_DISPATCH_NUMERIC, return wrap_neg(x));
    MF_UNARY_CASE(
        Abs, "abs", MF_DISPATCH_NUMERIC,
        if constexpr (std::is_floating_point_v<A>) { return std::abs(x); } else {
          return x < 0 ? wrap_neg(x) : x;
        });
    MF_UNARY_CASE(Sign, "sign", MF_DISPATCH_ALL, return A((A(0) < x) - (x < A(0))));
    MF_UNARY_CASE(Exp, "exp", MF_DISPATCH_FLOATING, return std::exp(x));
    MF_UNARY_CASE(Exp2, "exp2", MF_DISPATCH_FLOATING, return std::exp2(x));
    MF_UNARY_CASE(Log, "log", MF_DISPATCH_FLOATING, return std::log(x));
    MF_UNARY_CASE(Log2, "log2", MF_DISPATCH_FLOATING, return std::log2(x));
    MF_UNARY_CASE(Sqrt, "sqrt", MF_DISPATCH_FLOATING, return std::sqrt(x));
    MF_UNARY_CASE(Rsqrt, "rsqrt", MF_DISPATCH_FLOATING, return A(1) / std::sqrt(x));
    MF_UNARY_CASE(Sin, "sin", MF_DISPATCH_FLOATING, return std::sin(x));
    MF_UNARY_CASE(Cos, "cos", MF_DISPATCH_FLOATING, return std::cos(x));
    MF_UNARY_CASE(Tanh, "tanh", MF_DISPATCH_FLOATING, return std::tanh(x));
    MF_UNARY_CASE(Sigmoid, "sigmoid", MF_DISPATCH_FLOATING, return A(1) / (A(1) + std::exp(-x)));
    // NaN stays NaN: the comparison is false for it.
    MF_UNARY_CASE(Relu, "relu", MF_DISPATCH_NUMERIC, return x < A(0) ? A(0) : x);
    MF_UNARY_CASE(Gelu, "gelu", MF_DISPATCH_FLOATING, return gelu(x, false));
    MF_UNARY_CASE(GeluTanh, "gelu", MF_DISPATCH_FLOATING, return gelu(x, true));
    MF_UNARY_CASE(Silu, "silu", MF_DISPATCH_FLOATING, return x / (A(1) + std::exp(-x)));
    case UnaryOp::BitwiseNot:
      if (dtype == DType::Bool) {
        return run<bool, bool>(out, os, a, as, sizes, [](int64_t x) { return x == 0; });
      }
      return MF_DISPATCH_INTEGRAL(dtype, "bitwise_not", [&] {
        run<scalar_t, scalar_t>(out, os, a, as, sizes, [](scalar_t x) { return ~x; });
      });
    case UnaryOp::LogicalNot:
      return MF_DISPATCH_ALL(dtype, "logical_not", [&] {
        using A = acc_t<scalar_t>;
        run<scalar_t, bool>(out, os, a, as, sizes, [](A x) { return x == A(0); });
      });
  }
  MF_INTERNAL_ASSERT(false, "unary: unknown op ", int(op));
}

#undef MF_UNARY_CASE

}  // namespace microflex::cpu
