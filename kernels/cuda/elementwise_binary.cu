// Binary arithmetic CUDA kernels (add .. floor_divide, minimum/maximum, gelu_backward):
// one functor per op on the compute type, run by the elementwise engine for every dtype
// the CPU op supports. Predicates and bitwise ops are in elementwise_compare.cu.
#include "kernels/cuda/elementwise.cuh"

namespace microflex::cuda {

namespace {

using cpu::BinaryOp;
using ew::Kinds;

// One functor per op: NAME's element function of `x` and `y` (of compute type A).
#define MF_EW_BINARY(NAME, ...)                               \
  struct NAME {                                               \
    template <typename A>                                     \
    __device__ __forceinline__ A operator()(A x, A y) const { \
      __VA_ARGS__;                                            \
    }                                                         \
  };

MF_EW_BINARY(AddF, return x + y)
MF_EW_BINARY(SubF, return x - y)
MF_EW_BINARY(MulF, return x * y)
MF_EW_BINARY(DivF, return x / y)
MF_EW_BINARY(
    PowF, if constexpr (std::is_integral_v<A>) { return ew::int_pow(x, y); } else {
      return ew::m::pow(x, y);
    })
// Both propagate NaN, as PyTorch's maximum/minimum do; otherwise std::min / std::max.
MF_EW_BINARY(MinimumF, return ew::is_nan(x) ? x : ew::is_nan(y) ? y : (y < x) ? y : x)
MF_EW_BINARY(MaximumF, return ew::is_nan(x) ? x : ew::is_nan(y) ? y : (x < y) ? y : x)
MF_EW_BINARY(RemainderF, return ew::py_remainder(x, y))
MF_EW_BINARY(FloorDivideF, return ew::py_floor_divide(x, y))
// x is the gradient of the output, y the input.
MF_EW_BINARY(GeluBackwardF, return x * ew::gelu_grad(y, false))
MF_EW_BINARY(GeluTanhBackwardF, return x * ew::gelu_grad(y, true))

#undef MF_EW_BINARY

template <Kinds K, typename F>
void run(const char* name, F f, int device, DType dtype, void* out, const Geometry& out_g,
         const void* a, const Geometry& a_g, const void* b, const Geometry& b_g) {
  ew::dispatch<K>(dtype, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    ew::launch(device, f, static_cast<T*>(out), out_g, {a_g, b_g}, static_cast<const T*>(a),
               static_cast<const T*>(b));
  });
}

}  // namespace

void binary(int device, BinaryOp op, DType dtype, void* out, const Geometry& out_g, const void* a,
            const Geometry& a_g, const void* b, const Geometry& b_g) {
#define MF_EW_CASE(OP, NAME, KINDS) \
  case BinaryOp::OP:                \
    return run<Kinds::KINDS>(NAME, OP##F{}, device, dtype, out, out_g, a, a_g, b, b_g)
  switch (op) {
    MF_EW_CASE(Add, "add", All);
    MF_EW_CASE(Sub, "sub", Numeric);
    MF_EW_CASE(Mul, "mul", All);
    MF_EW_CASE(Div, "div", Floating);
    MF_EW_CASE(Pow, "pow", Numeric);
    MF_EW_CASE(Minimum, "minimum", All);
    MF_EW_CASE(Maximum, "maximum", All);
    MF_EW_CASE(Remainder, "remainder", Numeric);
    MF_EW_CASE(FloorDivide, "floor_divide", Numeric);
    MF_EW_CASE(GeluBackward, "gelu_backward", Floating);
    MF_EW_CASE(GeluTanhBackward, "gelu_backward", Floating);
    default:
      return ew::binary_compare(device, op, dtype, out, out_g, a, a_g, b, b_g);
  }
#undef MF_EW_CASE
}

}  // namespace microflex::cuda
