// Comparison, logical and bitwise binary CUDA kernels: predicates compare in the
// operands' compute type and write bool; bitwise ops keep the integer or bool dtype.
#include "kernels/cuda/elementwise.cuh"

namespace microflex::cuda::ew {

namespace {

using cpu::BinaryOp;

#define MF_EW_PREDICATE(NAME, ...)                               \
  struct NAME {                                                  \
    template <typename A>                                        \
    __device__ __forceinline__ bool operator()(A x, A y) const { \
      __VA_ARGS__;                                               \
    }                                                            \
  };
MF_EW_PREDICATE(EqF, return x == y)
MF_EW_PREDICATE(NeF, return x != y)
MF_EW_PREDICATE(LtF, return x < y)
MF_EW_PREDICATE(LeF, return x <= y)
MF_EW_PREDICATE(GtF, return x > y)
MF_EW_PREDICATE(GeF, return x >= y)
MF_EW_PREDICATE(LogicalAndF, return (x != A(0)) && (y != A(0)))
MF_EW_PREDICATE(LogicalOrF, return (x != A(0)) || (y != A(0)))
MF_EW_PREDICATE(LogicalXorF, return (x != A(0)) != (y != A(0)))
#undef MF_EW_PREDICATE

// On bool the compute type is int64 holding 0 or 1, so these are the logical ops there.
#define MF_EW_BITWISE(NAME, OPERATOR)                         \
  struct NAME {                                               \
    template <typename A>                                     \
    __device__ __forceinline__ A operator()(A x, A y) const { \
      return x OPERATOR y;                                    \
    }                                                         \
  };
MF_EW_BITWISE(BitwiseAndF, &)
MF_EW_BITWISE(BitwiseOrF, |)
MF_EW_BITWISE(BitwiseXorF, ^)
#undef MF_EW_BITWISE

// out = f(a, b); Out is bool when kBoolOut, else the operands' type.
template <Kinds K, bool kBoolOut, typename F>
void run(const char* name, F f, int device, DType dtype, void* out, const Geometry& out_g,
         const void* a, const Geometry& a_g, const void* b, const Geometry& b_g) {
  dispatch<K>(dtype, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Out = std::conditional_t<kBoolOut, bool, T>;
    launch(device, f, static_cast<Out*>(out), out_g, {a_g, b_g}, static_cast<const T*>(a),
           static_cast<const T*>(b));
  });
}

}  // namespace

void binary_compare(int device, BinaryOp op, DType dtype, void* out, const Geometry& out_g,
                    const void* a, const Geometry& a_g, const void* b, const Geometry& b_g) {
#define MF_EW_CASE(OP, NAME, KINDS, BOOL_OUT) \
  case BinaryOp::OP:                          \
    return run<Kinds::KINDS, BOOL_OUT>(NAME, OP##F{}, device, dtype, out, out_g, a, a_g, b, b_g)
  switch (op) {
    MF_EW_CASE(Eq, "eq", All, true);
    MF_EW_CASE(Ne, "ne", All, true);
    MF_EW_CASE(Lt, "lt", All, true);
    MF_EW_CASE(Le, "le", All, true);
    MF_EW_CASE(Gt, "gt", All, true);
    MF_EW_CASE(Ge, "ge", All, true);
    MF_EW_CASE(LogicalAnd, "logical_and", All, true);
    MF_EW_CASE(LogicalOr, "logical_or", All, true);
    MF_EW_CASE(LogicalXor, "logical_xor", All, true);
    MF_EW_CASE(BitwiseAnd, "bitwise_and", Bitwise, false);
    MF_EW_CASE(BitwiseOr, "bitwise_or", Bitwise, false);
    MF_EW_CASE(BitwiseXor, "bitwise_xor", Bitwise, false);
    default:
      break;
  }
#undef MF_EW_CASE
  MF_INTERNAL_ASSERT(false, "binary: unknown op ", int(op));
}

}  // namespace microflex::cuda::ew
