// Unary elementwise CUDA kernels: one functor per op on the compute type (float for the
// 16-bit types), run by the elementwise engine for every dtype the CPU op supports.
#include "kernels/cuda/elementwise.cuh"

namespace microflex::cuda {

namespace {

using cpu::UnaryOp;
using ew::Kinds;

// One functor per op: NAME's element function of `x` (of compute type A).
#define MF_EW_UNARY(NAME, ...)                           \
  struct NAME {                                          \
    template <typename A>                                \
    __device__ __forceinline__ A operator()(A x) const { \
      __VA_ARGS__;                                       \
    }                                                    \
  };

MF_EW_UNARY(NegF, return ew::wrap_neg(x))
MF_EW_UNARY(
    AbsF, if constexpr (std::is_floating_point_v<A>) { return ew::m::fabs(x); } else {
      return x < 0 ? ew::wrap_neg(x) : x;
    })
MF_EW_UNARY(SignF, return A((A(0) < x) - (x < A(0))))
MF_EW_UNARY(ExpF, return ew::m::exp(x))
MF_EW_UNARY(Exp2F, return ew::m::exp2(x))
MF_EW_UNARY(LogF, return ew::m::log(x))
MF_EW_UNARY(Log2F, return ew::m::log2(x))
MF_EW_UNARY(SqrtF, return ew::m::sqrt(x))
// 1 / sqrt rather than rsqrt(): the intrinsic is 2 ulp off, the division is rounded once.
MF_EW_UNARY(RsqrtF, return A(1) / ew::m::sqrt(x))
MF_EW_UNARY(SinF, return ew::m::sin(x))
MF_EW_UNARY(CosF, return ew::m::cos(x))
MF_EW_UNARY(TanhF, return ew::m::tanh(x))
MF_EW_UNARY(SigmoidF, return A(1) / (A(1) + ew::m::exp(-x)))
// NaN stays NaN: the comparison is false for it.
MF_EW_UNARY(ReluF, return x < A(0) ? A(0) : x)
MF_EW_UNARY(GeluF, return ew::gelu(x, false))
MF_EW_UNARY(GeluTanhF, return ew::gelu(x, true))
MF_EW_UNARY(SiluF, return x / (A(1) + ew::m::exp(-x)))
MF_EW_UNARY(BitwiseNotF, return ~x)

#undef MF_EW_UNARY

// Writes bool; also bitwise_not of bool.
struct LogicalNotF {
  template <typename A>
  __device__ __forceinline__ bool operator()(A x) const {
    return x == A(0);
  }
};

// out = f(a) for the dtypes in K; Out is bool when kBoolOut, else a's type.
template <Kinds K, bool kBoolOut = false, typename F>
void run(const char* name, F f, int device, DType dtype, void* out, const Geometry& out_g,
         const void* a, const Geometry& a_g) {
  ew::dispatch<K>(dtype, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Out = std::conditional_t<kBoolOut, bool, T>;
    ew::launch(device, f, static_cast<Out*>(out), out_g, {a_g}, static_cast<const T*>(a));
  });
}

}  // namespace

void unary(int device, UnaryOp op, DType dtype, void* out, const Geometry& out_g, const void* a,
           const Geometry& a_g) {
  switch (op) {
    case UnaryOp::Neg:
      return run<Kinds::Numeric>("neg", NegF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Abs:
      return run<Kinds::Numeric>("abs", AbsF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Sign:
      return run<Kinds::All>("sign", SignF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Exp:
      return run<Kinds::Floating>("exp", ExpF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Exp2:
      return run<Kinds::Floating>("exp2", Exp2F{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Log:
      return run<Kinds::Floating>("log", LogF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Log2:
      return run<Kinds::Floating>("log2", Log2F{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Sqrt:
      return run<Kinds::Floating>("sqrt", SqrtF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Rsqrt:
      return run<Kinds::Floating>("rsqrt", RsqrtF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Sin:
      return run<Kinds::Floating>("sin", SinF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Cos:
      return run<Kinds::Floating>("cos", CosF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Tanh:
      return run<Kinds::Floating>("tanh", TanhF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Sigmoid:
      return run<Kinds::Floating>("sigmoid", SigmoidF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Relu:
      return run<Kinds::Numeric>("relu", ReluF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Gelu:
      return run<Kinds::Floating>("gelu", GeluF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::GeluTanh:
      return run<Kinds::Floating>("gelu", GeluTanhF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::Silu:
      return run<Kinds::Floating>("silu", SiluF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::BitwiseNot:
      // On bool, ~ is logical negation (the CPU kernel's x == 0).
      if (dtype == DType::Bool) {
        return run<Kinds::Bool, true>("bitwise_not", LogicalNotF{}, device, dtype, out, out_g, a,
                                      a_g);
      }
      return run<Kinds::Integral>("bitwise_not", BitwiseNotF{}, device, dtype, out, out_g, a, a_g);
    case UnaryOp::LogicalNot:
      return run<Kinds::All, true>("logical_not", LogicalNotF{}, device, dtype, out, out_g, a, a_g);
  }
  MF_INTERNAL_ASSERT(false, "unary: unknown op ", int(op));
}

}  // namespace microflex::cuda
