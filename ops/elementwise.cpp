// Elementwise ops: shape/dtype rules, backward formulas and the glue to the CPU kernels
// (kernels/cpu/elementwise.h) and CUDA kernels (kernels/cuda/elementwise.h), registered
// in register_elementwise_ops. Binary ops broadcast; inputs are converted to the compute
// type before the kernel runs, which does its arithmetic in acc_t (float for 16-bit types).
#include "ops/elementwise.h"

#include <cmath>

#include "core/dispatch.h"
#include "kernels/cpu/elementwise.h"
#include "ops/op_utils.h"

#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/elementwise.h"
#endif

namespace microflex {

namespace {

using cpu::BinaryOp;
using cpu::UnaryOp;

Tensor scalar_like(const Scalar& s, const Tensor& t) {
  return wrapped_scalar(s, t.device());
}

// ---- Shape/dtype rules ----

// Shape rule of a broadcasting binary op.
// An undefined (default-constructed) operand has no shape to read.
void check_operands_defined(const char* op, const TensorList& in) {
  for (size_t i = 0; i < in.size(); ++i)
    MF_CHECK(in[i].defined(), op, ": operand ", i, " is an undefined tensor");
}

std::vector<TensorMeta> binary_meta(const char* op, const TensorList& in, DType out_dtype) {
  check_operands_defined(op, in);
  const Device dev = common_device(in, op);
  return {{broadcast_shapes(in[0].sizes(), in[1].sizes(), op), out_dtype, dev, {}}};
}

std::vector<TensorMeta> unary_meta(const Tensor& x, DType out_dtype) {
  return {{x.sizes(), out_dtype, x.device(), {}}};
}

void check_not_bool(const char* op, const Tensor& x) {
  MF_CHECK(x.dtype() != DType::Bool, op, ": not supported for bool tensors, got ", describe(x));
}

// The promoted type of two operands for an arithmetic op; `allow_bool` says whether a
// bool result is meaningful.
DType arith_type(const char* op, const TensorList& in, bool allow_bool) {
  check_operands_defined(op, in);
  const DType t = result_type(in[0], in[1]);
  MF_CHECK(allow_bool || t != DType::Bool, op, ": not supported for bool tensors (got ",
           describe(in[0]), " and ", describe(in[1]), ")");
  return t;
}

// The dtype a Scalar promotes `t` to, as a wrapped number would.
DType promote_with_scalar(DType t, const Scalar& s) {
  auto category = [](bool is_bool, bool is_float) { return is_bool ? 0 : is_float ? 2 : 1; };
  const int ct = category(t == DType::Bool, is_floating(t));
  const int cs = category(s.is_bool(), s.is_floating());
  if (cs <= ct) return t;
  return s.is_floating() ? DType::Float32 : DType::Int64;
}

// Floating unary ops (exp, log, ...): integer and bool inputs give float32.
DType float_type(const Tensor& x) {
  return is_floating(x.dtype()) ? x.dtype() : DType::Float32;
}

// ---- CPU glue ----

// out = op(in), computing in out's dtype (in's for predicates).
void unary_compute(UnaryOp op, const Tensor& in, const Tensor& out) {
  const DType ct = op == UnaryOp::LogicalNot ? in.dtype() : out.dtype();
  const Tensor a = as_dtype(in, ct);
  cpu::unary(op, ct, out.raw_data(), out.strides(), a.raw_data(), a.strides(), out.sizes());
}

// out = op(in[0], in[1]) over the broadcast shape, computing in `ct`.
void binary_compute(BinaryOp op, const TensorList& in, const Tensor& out, DType ct) {
  const Tensor a = as_dtype(in[0], ct), b = as_dtype(in[1], ct);
  cpu::binary(op, ct, out.raw_data(), out.strides(), a.raw_data(),
              broadcast_strides(a, out.sizes()), b.raw_data(), broadcast_strides(b, out.sizes()),
              out.sizes());
}

ComputeFn binary_cpu(BinaryOp op) {
  return [op](const TensorList& in, const TensorList& out, const Attrs&) {
    const DType ct = cpu::writes_bool(op) ? result_type(in[0], in[1]) : out[0].dtype();
    binary_compute(op, in, out[0], ct);
  };
}

ComputeFn unary_cpu(UnaryOp op) {
  return [op](const TensorList& in, const TensorList& out, const Attrs&) {
    unary_compute(op, in[0], out[0]);
  };
}

// clamp's Scalar attributes "min" and "max" as the kernels take them.
cpu::ClampBounds clamp_bounds(const Attrs& a) {
  cpu::ClampBounds bounds;
  if ((bounds.has_lo = a.has("min"))) {
    bounds.lo_f = a.scalar("min").to_double();
    bounds.lo_i = a.scalar("min").to_int();
  }
  if ((bounds.has_hi = a.has("max"))) {
    bounds.hi_f = a.scalar("max").to_double();
    bounds.hi_i = a.scalar("max").to_int();
  }
  return bounds;
}

// ---- CUDA glue: the same conversions as the CPU glue, then the CUDA launchers. ----
// In a build without CUDA these return no kernel, and the dispatcher reports that.

#ifdef MICROFLEX_WITH_CUDA

// t's geometry seen at the output's shape (stride 0 where it broadcasts).
cuda::Geometry geometry_at(const Tensor& t, const Shape& sizes, const char* op) {
  return cuda::make_geometry(sizes, broadcast_strides(t, sizes), op);
}

void unary_compute_cuda(const char* name, UnaryOp op, const Tensor& in, const Tensor& out) {
  const DType ct = op == UnaryOp::LogicalNot ? in.dtype() : out.dtype();
  const Tensor a = as_dtype(in, ct);
  cuda::unary(out.device().index, op, ct, out.raw_data(), geometry_at(out, out.sizes(), name),
              a.raw_data(), geometry_at(a, out.sizes(), name));
}

void binary_compute_cuda(const char* name, BinaryOp op, const TensorList& in, const Tensor& out,
                         DType ct) {
  const Tensor a = as_dtype(in[0], ct), b = as_dtype(in[1], ct);
  cuda::binary(out.device().index, op, ct, out.raw_data(), geometry_at(out, out.sizes(), name),
               a.raw_data(), geometry_at(a, out.sizes(), name), b.raw_data(),
               geometry_at(b, out.sizes(), name));
}

ComputeFn unary_cuda(const char* name, UnaryOp op) {
  return [name, op](const TensorList& in, const TensorList& out, const Attrs&) {
    unary_compute_cuda(name, op, in[0], out[0]);
  };
}

ComputeFn binary_cuda(const char* name, BinaryOp op) {
  return [name, op](const TensorList& in, const TensorList& out, const Attrs&) {
    const DType ct = cpu::writes_bool(op) ? result_type(in[0], in[1]) : out[0].dtype();
    binary_compute_cuda(name, op, in, out[0], ct);
  };
}

ComputeFn gelu_cuda() {
  return [](const TensorList& in, const TensorList& out, const Attrs& a) {
    const bool t = a.s("approximate") == "tanh";
    unary_compute_cuda("gelu", t ? UnaryOp::GeluTanh : UnaryOp::Gelu, in[0], out[0]);
  };
}

ComputeFn gelu_backward_cuda() {
  return [](const TensorList& in, const TensorList& out, const Attrs& a) {
    const bool t = a.s("approximate") == "tanh";
    binary_compute_cuda("gelu_backward", t ? BinaryOp::GeluTanhBackward : BinaryOp::GeluBackward,
                        in, out[0], out[0].dtype());
  };
}

ComputeFn where_cuda() {
  return [](const TensorList& in, const TensorList& out, const Attrs&) {
    const Tensor& o = out[0];
    const Tensor a = as_dtype(in[1], o.dtype()), b = as_dtype(in[2], o.dtype());
    cuda::where(o.device().index, o.dtype(), o.raw_data(), geometry_at(o, o.sizes(), "where"),
                in[0].data_ptr<bool>(), geometry_at(in[0], o.sizes(), "where"), a.raw_data(),
                geometry_at(a, o.sizes(), "where"), b.raw_data(),
                geometry_at(b, o.sizes(), "where"));
  };
}

ComputeFn clamp_cuda() {
  return [](const TensorList& in, const TensorList& out, const Attrs& a) {
    const Tensor& o = out[0];
    const Tensor x = as_dtype(in[0], o.dtype());
    cuda::clamp(o.device().index, o.dtype(), o.raw_data(), geometry_at(o, o.sizes(), "clamp"),
                x.raw_data(), geometry_at(x, o.sizes(), "clamp"), clamp_bounds(a));
  };
}

#else

ComputeFn unary_cuda(const char*, UnaryOp) {
  return nullptr;
}
ComputeFn binary_cuda(const char*, BinaryOp) {
  return nullptr;
}
ComputeFn gelu_cuda() {
  return nullptr;
}
ComputeFn gelu_backward_cuda() {
  return nullptr;
}
ComputeFn where_cuda() {
  return nullptr;
}
ComputeFn clamp_cuda() {
  return nullptr;
}

#endif

// ---- Backward helpers ----

// The gradient of input i: `g` summed back over the dims input i was broadcast along.
Tensor grad_for(const BackwardContext& ctx, size_t i, const Tensor& g) {
  return sum_to(g, ctx.input_metas[i].sizes);
}

Tensor zeros_for(const BackwardContext& ctx, size_t i) {
  const TensorMeta& m = ctx.input_metas[i];
  return zeros(m.sizes, {.dtype = m.dtype, .device = m.device});
}

// Input i converted to the output's dtype, so that formulas compute in the result type
// (a wrapped-number operand would otherwise promote them to float64).
Tensor input_as_out(const BackwardContext& ctx, size_t i) {
  return as_dtype(ctx.inputs[i], ctx.output_metas[0].dtype);
}

// The backward of a unary op whose input gradient is f(g, x, y) (x the input, y the output).
template <typename F>
BackwardFn unary_backward(F f) {
  return [f](const BackwardContext& ctx) {
    return TensorList{f(ctx.grad_output(0), ctx.inputs[0], ctx.outputs[0])};
  };
}

// maximum/minimum: the gradient goes to the larger (smaller) input, half to each on ties.
BackwardFn minmax_backward(bool is_max) {
  return [is_max](const BackwardContext& ctx) {
    const Tensor g = ctx.grad_output(0);
    const Tensor& a = ctx.inputs[0];
    const Tensor& b = ctx.inputs[1];
    const Tensor tie = eq(a, b);
    const Tensor half = g * 0.5;
    TensorList r(2);
    if (ctx.needs(0))
      r[0] = grad_for(ctx, 0, where(tie, half, where(is_max ? gt(a, b) : lt(a, b), g, 0)));
    if (ctx.needs(1))
      r[1] = grad_for(ctx, 1, where(tie, half, where(is_max ? gt(b, a) : lt(b, a), g, 0)));
    return r;
  };
}

void gelu_mode_check(const Attrs& a) {
  const std::string& m = a.s("approximate");
  MF_CHECK(m == "none" || m == "tanh", "gelu: approximate must be 'none' or 'tanh', got '", m, "'");
}

void register_unary_ops(Dispatcher& d) {
  // Unary ops that keep the dtype and reject bool.
  auto def_numeric = [&d](const char* name, UnaryOp op) -> OpDef& {
    return d.def(name)
        .set_meta([name](const TensorList& in, const Attrs&) {
          check_not_bool(name, in[0]);
          return unary_meta(in[0], in[0].dtype());
        })
        .set_cpu(unary_cpu(op))
        .set_cuda(unary_cuda(name, op));
  };
  // Floating unary ops: integer and bool inputs give float32.
  auto def_float = [&d](const char* name, UnaryOp op) -> OpDef& {
    return d.def(name)
        .set_meta(
            [](const TensorList& in, const Attrs&) { return unary_meta(in[0], float_type(in[0])); })
        .set_cpu(unary_cpu(op))
        .set_cuda(unary_cuda(name, op));
  };
  // Floating unary ops that reject integer inputs, as PyTorch's activations do.
  auto def_float_only = [&d](const char* name, UnaryOp op) -> OpDef& {
    return d.def(name)
        .set_meta([name](const TensorList& in, const Attrs&) {
          MF_CHECK(is_floating(in[0].dtype()), name, ": expected a floating tensor, got ",
                   describe(in[0]));
          return unary_meta(in[0], in[0].dtype());
        })
        .set_cpu(unary_cpu(op))
        .set_cuda(unary_cuda(name, op));
  };

  d.def("neg")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(in[0].dtype() != DType::Bool,
                 "neg: negating a bool tensor is not supported; use logical_not");
        return unary_meta(in[0], in[0].dtype());
      })
      .set_cpu(unary_cpu(UnaryOp::Neg))
      .set_cuda(unary_cuda("neg", UnaryOp::Neg))
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) { return TensorList{neg(ctx.grad_output(0))}; });

  // abs' = sign(x), 0 at 0 (the subgradient PyTorch picks).
  def_numeric("abs", UnaryOp::Abs)
      .save(1, 0)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor& x, const Tensor&) { return g * sign(x); }));
  d.def("sign")
      .set_meta([](const TensorList& in, const Attrs&) { return unary_meta(in[0], in[0].dtype()); })
      .set_cpu(unary_cpu(UnaryOp::Sign))
      .set_cuda(unary_cuda("sign", UnaryOp::Sign))
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) { return TensorList{zeros_for(ctx, 0)}; });
  // relu' = 1 where the output is positive, 0 elsewhere (0 at 0).
  def_numeric("relu", UnaryOp::Relu)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return where(y > 0, g, 0); }));

  def_float("exp", UnaryOp::Exp)
      .save(0, 1)
      .set_backward(
          unary_backward([](const Tensor& g, const Tensor&, const Tensor& y) { return g * y; }));
  def_float("exp2", UnaryOp::Exp2)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (y * M_LN2); }));
  def_float("log", UnaryOp::Log)
      .save(1, 0)
      .set_backward(
          unary_backward([](const Tensor& g, const Tensor& x, const Tensor&) { return g / x; }));
  def_float("log2", UnaryOp::Log2)
      .save(1, 0)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor& x, const Tensor&) { return g / (x * M_LN2); }));
  def_float("sqrt", UnaryOp::Sqrt)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return g / (y * 2); }));
  // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3.
  def_float("rsqrt", UnaryOp::Rsqrt)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (y * y * y * -0.5); }));
  def_float("sin", UnaryOp::Sin)
      .save(1, 0)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor& x, const Tensor&) { return g * cos(x); }));
  def_float("cos", UnaryOp::Cos)
      .save(1, 0)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor& x, const Tensor&) { return -(g * sin(x)); }));
  def_float("tanh", UnaryOp::Tanh)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (1 - y * y); }));
  def_float("sigmoid", UnaryOp::Sigmoid)
      .save(0, 1)
      .set_backward(unary_backward(
          [](const Tensor& g, const Tensor&, const Tensor& y) { return g * (y * (1 - y)); }));
  // silu' = s (1 + x (1 - s)) with s = sigmoid(x).
  def_float_only("silu", UnaryOp::Silu)
      .save(1, 0)
      .set_backward(unary_backward([](const Tensor& g, const Tensor& x, const Tensor&) {
        const Tensor s = sigmoid(x);
        return g * (s * (1 + x * (1 - s)));
      }));

  d.def("gelu")
      .set_meta([](const TensorList& in, const Attrs& a) {
        gelu_mode_check(a);
        MF_CHECK(is_floating(in[0].dtype()), "gelu: expected a floating tensor, got ",
                 describe(in[0]));
        return unary_meta(in[0], in[0].dtype());
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const bool t = a.s("approximate") == "tanh";
        unary_compute(t ? UnaryOp::GeluTanh : UnaryOp::Gelu, in[0], out[0]);
      })
      .set_cuda(gelu_cuda())
      .save(1, 0)
      .set_backward([](const BackwardContext& ctx) {
        static const OpDef& gb = op_named("gelu_backward");
        return TensorList{call_op1(gb, {ctx.grad_output(0), ctx.inputs[0]},
                                   {{"approximate", ctx.attrs->s("approximate")}})};
      });
  // The fused gelu gradient: dx = dy * gelu'(x). dy and x have one shape.
  d.def("gelu_backward")
      .set_meta([](const TensorList& in, const Attrs& a) {
        gelu_mode_check(a);
        MF_CHECK(in[0].sizes() == in[1].sizes() && in[0].dtype() == in[1].dtype() &&
                     is_floating(in[1].dtype()),
                 "gelu_backward: expected a gradient and an input of one floating dtype and "
                 "shape, got ",
                 describe(in[0]), " and ", describe(in[1]));
        return binary_meta("gelu_backward", in, in[1].dtype());
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const bool t = a.s("approximate") == "tanh";
        binary_compute(t ? BinaryOp::GeluTanhBackward : BinaryOp::GeluBackward, in, out[0],
                       out[0].dtype());
      })
      .set_cuda(gelu_backward_cuda());

  d.def("logical_not")
      .set_meta([](const TensorList& in, const Attrs&) { return unary_meta(in[0], DType::Bool); })
      .set_cpu(unary_cpu(UnaryOp::LogicalNot))
      .set_cuda(unary_cuda("logical_not", UnaryOp::LogicalNot))
      .non_differentiable();
  d.def("bitwise_not")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(is_integral(in[0].dtype(), true),
                 "bitwise_not: expected an integer or bool tensor, got ", describe(in[0]));
        return unary_meta(in[0], in[0].dtype());
      })
      .set_cpu(unary_cpu(UnaryOp::BitwiseNot))
      .set_cuda(unary_cuda("bitwise_not", UnaryOp::BitwiseNot))
      .non_differentiable();
}

void register_binary_ops(Dispatcher& d) {
  d.def("add")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("add", in, arith_type("add", in, true));
      })
      .set_cpu(binary_cpu(BinaryOp::Add))
      .set_cuda(binary_cuda("add", BinaryOp::Add))
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        return TensorList{grad_for(ctx, 0, g), grad_for(ctx, 1, g)};
      });

  d.def("sub")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(in[0].dtype() != DType::Bool || in[1].dtype() != DType::Bool,
                 "sub: subtracting two bool tensors is not supported; use logical_xor");
        return binary_meta("sub", in, arith_type("sub", in, true));
      })
      .set_cpu(binary_cpu(BinaryOp::Sub))
      .set_cuda(binary_cuda("sub", BinaryOp::Sub))
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        return TensorList{grad_for(ctx, 0, g), ctx.needs(1) ? grad_for(ctx, 1, neg(g)) : Tensor()};
      });

  d.def("mul")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("mul", in, arith_type("mul", in, true));
      })
      .set_cpu(binary_cpu(BinaryOp::Mul))
      .set_cuda(binary_cuda("mul", BinaryOp::Mul))
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        TensorList r(2);
        if (ctx.needs(0)) r[0] = grad_for(ctx, 0, mul(g, ctx.inputs[1]));
        if (ctx.needs(1)) r[1] = grad_for(ctx, 1, mul(g, ctx.inputs[0]));
        return r;
      });

  d.def("div")
      .set_meta([](const TensorList& in, const Attrs&) {
        DType t = arith_type("div", in, true);
        if (!is_floating(t)) t = DType::Float32;
        return binary_meta("div", in, t);
      })
      .set_cpu(binary_cpu(BinaryOp::Div))
      .set_cuda(binary_cuda("div", BinaryOp::Div))
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        const Tensor& a = ctx.inputs[0];
        const Tensor& b = ctx.inputs[1];
        TensorList r(2);
        if (ctx.needs(0)) r[0] = grad_for(ctx, 0, div(g, b));
        if (ctx.needs(1)) r[1] = grad_for(ctx, 1, neg(div(mul(g, a), mul(b, b))));
        return r;
      });

  // pow: d/da = b a^(b-1) (0 where b == 0); d/db = a^b log(a) (0 where a == 0 and
  // b >= 0), PyTorch's conventions.
  d.def("pow")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("pow", in, arith_type("pow", in, false));
      })
      .set_cpu(binary_cpu(BinaryOp::Pow))
      .set_cuda(binary_cuda("pow", BinaryOp::Pow))
      .save(0b11, 1)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        const Tensor a = input_as_out(ctx, 0), b = input_as_out(ctx, 1);
        TensorList r(2);
        if (ctx.needs(0)) r[0] = grad_for(ctx, 0, where(b == 0, 0, g * (b * pow(a, b - 1))));
        if (ctx.needs(1)) {
          const Tensor zero_base = logical_and(a == 0, b >= 0);
          r[1] = grad_for(ctx, 1, where(zero_base, 0, g * (ctx.outputs[0] * log(a))));
        }
        return r;
      });

  // remainder(a, b) = a - floor(a / b) b: d/da = 1, d/db = -floor(a / b). On CUDA,
  // integer remainder and floor_divide by zero give 0 instead of an error (Note [Integer
  // division by zero on the GPU] in kernels/cuda/elementwise.h).
  d.def("remainder")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("remainder", in, arith_type("remainder", in, false));
      })
      .set_cpu(binary_cpu(BinaryOp::Remainder))
      .set_cuda(binary_cuda("remainder", BinaryOp::Remainder))
      .save(0b11, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        TensorList r(2);
        if (ctx.needs(0)) r[0] = grad_for(ctx, 0, g);
        if (ctx.needs(1))
          r[1] = grad_for(ctx, 1, -(g * floor_divide(input_as_out(ctx, 0), input_as_out(ctx, 1))));
        return r;
      });
  // Piecewise constant: zero gradients, as PyTorch's.
  d.def("floor_divide")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("floor_divide", in, arith_type("floor_divide", in, false));
      })
      .set_cpu(binary_cpu(BinaryOp::FloorDivide))
      .set_cuda(binary_cuda("floor_divide", BinaryOp::FloorDivide))
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        TensorList r(2);
        for (size_t i = 0; i < 2; ++i)
          if (ctx.needs(i)) r[i] = zeros_for(ctx, i);
        return r;
      });

  d.def("maximum")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("maximum", in, arith_type("maximum", in, true));
      })
      .set_cpu(binary_cpu(BinaryOp::Maximum))
      .set_cuda(binary_cuda("maximum", BinaryOp::Maximum))
      .save(0b11, 0)
      .set_backward(minmax_backward(true));
  d.def("minimum")
      .set_meta([](const TensorList& in, const Attrs&) {
        return binary_meta("minimum", in, arith_type("minimum", in, true));
      })
      .set_cpu(binary_cpu(BinaryOp::Minimum))
      .set_cuda(binary_cuda("minimum", BinaryOp::Minimum))
      .save(0b11, 0)
      .set_backward(minmax_backward(false));

  // Predicates: bool outputs, computed in the promoted type of the operands.
  auto def_predicate = [&d](const char* name, BinaryOp op) {
    d.def(name)
        .set_meta([name](const TensorList& in, const Attrs&) {
          return binary_meta(name, in, DType::Bool);
        })
        .set_cpu(binary_cpu(op))
        .set_cuda(binary_cuda(name, op))
        .non_differentiable();
  };
  def_predicate("eq", BinaryOp::Eq);
  def_predicate("ne", BinaryOp::Ne);
  def_predicate("lt", BinaryOp::Lt);
  def_predicate("le", BinaryOp::Le);
  def_predicate("gt", BinaryOp::Gt);
  def_predicate("ge", BinaryOp::Ge);
  def_predicate("logical_and", BinaryOp::LogicalAnd);
  def_predicate("logical_or", BinaryOp::LogicalOr);
  def_predicate("logical_xor", BinaryOp::LogicalXor);

  auto def_bitwise = [&d](const char* name, BinaryOp op) {
    d.def(name)
        .set_meta([name](const TensorList& in, const Attrs&) {
          const DType t = result_type(in[0], in[1]);
          MF_CHECK(is_integral(t, true), name, ": expected integer or bool tensors, got ",
                   describe(in[0]), " and ", describe(in[1]));
          return binary_meta(name, in, t);
        })
        .set_cpu(binary_cpu(op))
        .set_cuda(binary_cuda(name, op))
        .non_differentiable();
  };
  def_bitwise("bitwise_and", BinaryOp::BitwiseAnd);
  def_bitwise("bitwise_or", BinaryOp::BitwiseOr);
  def_bitwise("bitwise_xor", BinaryOp::BitwiseXor);
}

void register_select_ops(Dispatcher& d) {
  // where(cond, a, b): the gradient of a (b) is g where cond is true (false), else 0.
  d.def("where")
      .set_meta([](const TensorList& in, const Attrs&) {
        MF_CHECK(in[0].dtype() == DType::Bool,
                 "where: expected the condition to be a bool tensor, got ", describe(in[0]));
        const Device dev = common_device(in, "where");
        const Shape s = broadcast_shapes({in[0].sizes(), in[1].sizes(), in[2].sizes()}, "where");
        return std::vector<TensorMeta>{{s, result_type(in[1], in[2]), dev, {}}};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        const Tensor& o = out[0];
        const Tensor a = as_dtype(in[1], o.dtype()), b = as_dtype(in[2], o.dtype());
        cpu::where(o.dtype(), o.raw_data(), o.strides(), in[0].data_ptr<bool>(),
                   broadcast_strides(in[0], o.sizes()), a.raw_data(),
                   broadcast_strides(a, o.sizes()), b.raw_data(), broadcast_strides(b, o.sizes()),
                   o.sizes());
      })
      .set_cuda(where_cuda())
      .save(0b001, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        const Tensor& cond = ctx.inputs[0];
        TensorList r(3);
        if (ctx.needs(1)) r[1] = grad_for(ctx, 1, where(cond, g, 0));
        if (ctx.needs(2)) r[2] = grad_for(ctx, 2, where(cond, 0, g));
        return r;
      });

  // clamp(x, min, max) with optional Scalar attributes "min" and "max".
  d.def("clamp")
      .set_meta([](const TensorList& in, const Attrs& a) {
        MF_CHECK(a.has("min") || a.has("max"), "clamp: at least one of min and max must be given");
        check_not_bool("clamp", in[0]);
        DType t = in[0].dtype();
        if (a.has("min")) t = promote_with_scalar(t, a.scalar("min"));
        if (a.has("max")) t = promote_with_scalar(t, a.scalar("max"));
        return unary_meta(in[0], t);
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Tensor& o = out[0];
        const Tensor x = as_dtype(in[0], o.dtype());
        cpu::clamp(o.dtype(), o.raw_data(), o.strides(), x.raw_data(), x.strides(), o.sizes(),
                   clamp_bounds(a));
      })
      .set_cuda(clamp_cuda())
      .save(1, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor& x = ctx.inputs[0];
        const Attrs& a = *ctx.attrs;
        Tensor inside;
        if (a.has("min")) inside = x >= a.scalar("min");
        if (a.has("max")) {
          const Tensor below = x <= a.scalar("max");
          inside = inside.defined() ? logical_and(inside, below) : below;
        }
        return TensorList{where(inside, ctx.grad_output(0), 0)};
      });
}

}  // namespace

void register_elementwise_ops(Dispatcher& d) {
  register_unary_ops(d);
  register_binary_ops(d);
  register_select_ops(d);
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
MF_BINARY_FN(pow)
MF_BINARY_FN(remainder)
MF_BINARY_FN(floor_divide)
MF_BINARY_FN(maximum)
MF_BINARY_FN(minimum)
MF_BINARY_FN(eq)
MF_BINARY_FN(ne)
MF_BINARY_FN(lt)
MF_BINARY_FN(le)
MF_BINARY_FN(gt)
MF_BINARY_FN(ge)
MF_BINARY_FN(logical_and)
MF_BINARY_FN(logical_or)
MF_BINARY_FN(logical_xor)
MF_BINARY_FN(bitwise_and)
MF_BINARY_FN(bitwise_or)
MF_BINARY_FN(bitwise_xor)
#undef MF_BINARY_FN

#define MF_UNARY_FN(NAME)                     \
  Tensor NAME(const Tensor& a) {              \
    static const OpDef& op = op_named(#NAME); \
    return call_op1(op, {a});                 \
  }
MF_UNARY_FN(neg)
MF_UNARY_FN(abs)
MF_UNARY_FN(sign)
MF_UNARY_FN(exp)
MF_UNARY_FN(exp2)
MF_UNARY_FN(log)
MF_UNARY_FN(log2)
MF_UNARY_FN(sqrt)
MF_UNARY_FN(rsqrt)
MF_UNARY_FN(sin)
MF_UNARY_FN(cos)
MF_UNARY_FN(tanh)
MF_UNARY_FN(sigmoid)
MF_UNARY_FN(relu)
MF_UNARY_FN(silu)
MF_UNARY_FN(logical_not)
MF_UNARY_FN(bitwise_not)
#undef MF_UNARY_FN

// Comparisons with a Scalar on either side.
#define MF_COMPARE_FNS(NAME, OPERATOR)                         \
  Tensor NAME(const Tensor& a, const Scalar& b) {              \
    return NAME(a, scalar_like(b, a));                         \
  }                                                            \
  Tensor operator OPERATOR(const Tensor& a, const Tensor& b) { \
    return NAME(a, b);                                         \
  }                                                            \
  Tensor operator OPERATOR(const Tensor& a, const Scalar& b) { \
    return NAME(a, b);                                         \
  }                                                            \
  Tensor operator OPERATOR(const Scalar& a, const Tensor& b) { \
    return NAME(scalar_like(a, b), b);                         \
  }
MF_COMPARE_FNS(eq, ==)
MF_COMPARE_FNS(ne, !=)
MF_COMPARE_FNS(lt, <)
MF_COMPARE_FNS(le, <=)
MF_COMPARE_FNS(gt, >)
MF_COMPARE_FNS(ge, >=)
#undef MF_COMPARE_FNS

Tensor pow(const Tensor& a, const Scalar& exponent) {
  // Checked here, where the value is known (a wrapped number may be fake in the rule).
  MF_CHECK(is_floating(a.dtype()) || exponent.is_floating() || exponent.to_int() >= 0,
           "pow: integers to negative integer powers are not allowed (", describe(a), " ** ",
           exponent, ")");
  return pow(a, scalar_like(exponent, a));
}
Tensor pow(const Scalar& base, const Tensor& exponent) {
  return pow(scalar_like(base, exponent), exponent);
}
Tensor remainder(const Tensor& a, const Scalar& b) {
  return remainder(a, scalar_like(b, a));
}
Tensor remainder(const Scalar& a, const Tensor& b) {
  return remainder(scalar_like(a, b), b);
}
Tensor floor_divide(const Tensor& a, const Scalar& b) {
  return floor_divide(a, scalar_like(b, a));
}

Tensor clamp(const Tensor& x, const std::optional<Scalar>& min, const std::optional<Scalar>& max) {
  static const OpDef& op = op_named("clamp");
  Attrs a;
  if (min) a.set_scalar("min", *min);
  if (max) a.set_scalar("max", *max);
  return call_op1(op, {x}, a);
}

Tensor gelu(const Tensor& x, const std::string& approximate) {
  static const OpDef& op = op_named("gelu");
  return call_op1(op, {x}, {{"approximate", approximate}});
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  static const OpDef& op = op_named("where");
  return call_op1(op, {cond, a, b});
}
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b) {
  return where(cond, a, scalar_like(b, a));
}
Tensor where(const Tensor& cond, const Scalar& a, const Tensor& b) {
  return where(cond, scalar_like(a, b), b);
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
Tensor operator&(const Tensor& a, const Tensor& b) {
  return bitwise_and(a, b);
}
Tensor operator|(const Tensor& a, const Tensor& b) {
  return bitwise_or(a, b);
}
Tensor operator^(const Tensor& a, const Tensor& b) {
  return bitwise_xor(a, b);
}
Tensor operator~(const Tensor& a) {
  return bitwise_not(a);
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
      .set_cpu(binary_cpu(BinaryOp::Add))
      .set_cuda(binary_cuda("add_", BinaryOp::Add))
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
      .set_cpu(binary_cpu(BinaryOp::Mul))
      .set_cuda(binary_cuda("mul_", BinaryOp::Mul))
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
