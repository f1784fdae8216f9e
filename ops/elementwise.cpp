// Elementwise ops: shape/dtype rules, backward formulas and CPU kernels, registered in
// register_elementwise_ops. Binary ops broadcast; inputs are converted to the compute
// type before the kernel runs, which does its arithmetic in acc_t (float for 16-bit).
#include "ops/elementwise.h"

#include <cmath>

#include "core/dispatch.h"
#include "kernels/cpu/loops.h"
#include "ops/op_utils.h"

namespace microflex {

namespace {

Tensor scalar_like(const Scalar& s, const Tensor& t) {
  return wrapped_scalar(s, t.device());
}

// Shape rule of a broadcasting binary op.
std::vector<TensorMeta> binary_meta(const char* op, const TensorList& in, DType out_dtype) {
  const Device dev = common_device(in, op);
  return {{broadcast_shapes(in[0].sizes(), in[1].sizes(), op), out_dtype, dev}};
}

// out[0] = f(in[0], in[1]) over the broadcast shape, computing in acc_t of `ct`.
// out's dtype is either `ct` or bool (comparisons).
template <typename F>
void binary_cpu(const char* op, const TensorList& in, const Tensor& out, DType ct, F f) {
  const Tensor a = as_dtype(in[0], ct), b = as_dtype(in[1], ct);
  const Shape sa = broadcast_strides(a, out.sizes()), sb = broadcast_strides(b, out.sizes());
  MF_DISPATCH_ALL(ct, op, [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    if (out.dtype() == DType::Bool) {
      cpu::binary_loop(out.data_ptr<bool>(), pa, pb, out.sizes(), out.strides(), sa, sb,
                       [&](T x, T y) -> bool { return f(A(x), A(y)); });
    } else {
      MF_INTERNAL_ASSERT(out.dtype() == ct);
      cpu::binary_loop(out.data_ptr<T>(), pa, pb, out.sizes(), out.strides(), sa, sb,
                       [&](T x, T y) -> T { return static_cast<T>(f(A(x), A(y))); });
    }
  });
}

// out[0] = f(in[0]) computing in acc_t of the output dtype.
template <typename F>
void unary_cpu(const char* op, const Tensor& in, const Tensor& out, F f) {
  const Tensor a = as_dtype(in, out.dtype());
  MF_DISPATCH_ALL(out.dtype(), op, [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    cpu::unary_loop(out.data_ptr<T>(), a.data_ptr<T>(), out.sizes(), out.strides(), a.strides(),
                    [&](T x) -> T { return static_cast<T>(f(A(x))); });
  });
}

DType arith_type(const TensorList& in) {
  return result_type(in[0], in[1]);
}

}  // namespace

void register_elementwise_ops(Dispatcher& d) {
  d.def("add")
      .set_meta(
          [](const TensorList& in, const Attrs&) { return binary_meta("add", in, arith_type(in)); })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("add", in, out[0], out[0].dtype(), [](auto x, auto y) { return x + y; });
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        return TensorList{sum_to(g, ctx.input_metas[0].sizes), sum_to(g, ctx.input_metas[1].sizes)};
      });

  d.def("sub")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(in[0].dtype() != DType::Bool || in[1].dtype() != DType::Bool,
                 "sub: subtracting two bool tensors is not supported; use logical_xor");
        return binary_meta("sub", in, arith_type(in));
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("sub", in, out[0], out[0].dtype(), [](auto x, auto y) { return x - y; });
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        return TensorList{sum_to(g, ctx.input_metas[0].sizes),
                          ctx.needs(1) ? sum_to(neg(g), ctx.input_metas[1].sizes) : Tensor()};
      });

  d.def("mul")
      .set_meta(
          [](const TensorList& in, const Attrs&) { return binary_meta("mul", in, arith_type(in)); })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("mul", in, out[0], out[0].dtype(), [](auto x, auto y) { return x * y; });
      })
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        TensorList r(2);
        if (ctx.needs(0)) r[0] = sum_to(mul(g, ctx.inputs[1]), ctx.input_metas[0].sizes);
        if (ctx.needs(1)) r[1] = sum_to(mul(g, ctx.inputs[0]), ctx.input_metas[1].sizes);
        return r;
      });

  d.def("div")
      .set_meta([](const TensorList& in, const Attrs&) {
        DType t = arith_type(in);
        if (!is_floating(t)) t = DType::Float32;
        return binary_meta("div", in, t);
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("div", in, out[0], out[0].dtype(), [](auto x, auto y) { return x / y; });
      })
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        const Tensor& a = ctx.inputs[0];
        const Tensor& b = ctx.inputs[1];
        TensorList r(2);
        if (ctx.needs(0)) r[0] = sum_to(div(g, b), ctx.input_metas[0].sizes);
        if (ctx.needs(1)) r[1] = sum_to(neg(div(mul(g, a), mul(b, b))), ctx.input_metas[1].sizes);
        return r;
      });

  d.def("neg")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(in[0].dtype() != DType::Bool,
                 "neg: negating a bool tensor is not supported; "
                 "use logical_not");
        return std::vector<TensorMeta>{{in[0].sizes(), in[0].dtype(), in[0].device()}};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        unary_cpu("neg", in[0], out[0], [](auto x) { return -x; });
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) { return TensorList{neg(ctx.grad_output(0))}; });
}

#define MF_BINARY_FN(NAME)                        \
  Tensor NAME(const Tensor& a, const Tensor& b) { \
    static const OpDef& op = op_named(#NAME);     \
    return call_op1(op, {a, b});                  \
  }
MF_BINARY_FN(add)
MF_BINARY_FN(sub)
MF_BINARY_FN(mul)
MF_BINARY_FN(div)
#undef MF_BINARY_FN

Tensor neg(const Tensor& a) {
  static const OpDef& op = op_named("neg");
  return call_op1(op, {a});
}

Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
Tensor operator-(const Tensor& a) {
  return neg(a);
}
Tensor operator+(const Tensor& a, const Scalar& b) {
  return add(a, scalar_like(b, a));
}
Tensor operator-(const Tensor& a, const Scalar& b) {
  return sub(a, scalar_like(b, a));
}
Tensor operator*(const Tensor& a, const Scalar& b) {
  return mul(a, scalar_like(b, a));
}
Tensor operator/(const Tensor& a, const Scalar& b) {
  return div(a, scalar_like(b, a));
}
Tensor operator+(const Scalar& a, const Tensor& b) {
  return add(scalar_like(a, b), b);
}
Tensor operator-(const Scalar& a, const Tensor& b) {
  return sub(scalar_like(a, b), b);
}
Tensor operator*(const Scalar& a, const Tensor& b) {
  return mul(scalar_like(a, b), b);
}
Tensor operator/(const Scalar& a, const Tensor& b) {
  return div(scalar_like(a, b), b);
}

Tensor& Tensor::add_(const Tensor& other, const Scalar& alpha) {
  static const OpDef& op = op_named("add_");
  const bool one = !alpha.is_floating() && alpha.to_int() == 1;
  call_op(op, {*this, one ? other : mul(other, scalar_like(alpha, other))});
  return *this;
}

Tensor& Tensor::mul_(const Tensor& other) {
  static const OpDef& op = op_named("mul_");
  call_op(op, {*this, other});
  return *this;
}

Tensor& Tensor::mul_(const Scalar& other) {
  return mul_(scalar_like(other, *this));
}

// In-place arithmetic: the result keeps self's dtype and shape.
void register_inplace_arith_ops(Dispatcher& d) {
  auto inplace_meta = [](const char* op) {
    return [op](const TensorList& in, const Attrs&) {
      const Shape b = broadcast_shapes(in[0].sizes(), in[1].sizes(), op);
      MF_CHECK(b == in[0].sizes(), op, ": output of shape ", shape_str(in[0].sizes()),
               " does not match the broadcast shape ", shape_str(b));
      const DType rt = result_type(in[0], in[1]);
      MF_CHECK(promote_types(rt, in[0].dtype()) == in[0].dtype() ||
                   (is_floating(in[0].dtype()) && is_floating(rt)),
               op, ": result type ", rt, " cannot be cast to the output's dtype ", in[0].dtype());
      common_device(in, op);
      return std::vector<TensorMeta>{meta_of(in[0])};
    };
  };
  d.def("add_")
      .set_kind(OpKind::InPlace)
      .set_meta(inplace_meta("add_"))
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("add_", in, out[0], out[0].dtype(), [](auto x, auto y) { return x + y; });
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        return TensorList{g, ctx.needs(1) ? as_dtype(sum_to(g, ctx.input_metas[1].sizes),
                                                     ctx.input_metas[1].dtype)
                                          : Tensor()};
      });
  d.def("mul_")
      .set_kind(OpKind::InPlace)
      .set_meta(inplace_meta("mul_"))
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        binary_cpu("mul_", in, out[0], out[0].dtype(), [](auto x, auto y) { return x * y; });
      })
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        TensorList r(2);
        if (ctx.needs(0)) r[0] = mul(g, ctx.inputs[1]);
        if (ctx.needs(1))
          r[1] = as_dtype(sum_to(mul(g, ctx.inputs[0]), ctx.input_metas[1].sizes),
                          ctx.input_metas[1].dtype);
        return r;
      });
}

}  // namespace microflex
