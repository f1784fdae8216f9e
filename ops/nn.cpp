// nn ops: shape rules, backward formulas and the CPU and CUDA glue for cross_entropy,
// layer_norm, rms_norm and dropout. Each forward op returns what its fused backward op
// needs (lse, mean/rstd) as extra outputs; the public functions return the first output
// only.
#include "ops/nn.h"

#include <cmath>
#include <limits>

#include "core/dispatch.h"
#include "core/random.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/philox.h"
#include "ops/op_utils.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/nn.h"
#endif

namespace microflex {

namespace {

// A contiguous output meta.
TensorMeta out_meta(const Shape& sizes, DType dtype, Device device) {
  TensorMeta m;
  m.sizes = sizes;
  m.dtype = dtype;
  m.device = device;
  return m;
}

// The dtype statistics and log-sum-exp are kept in: float64 for float64, else float32.
DType acc_dtype(DType t) {
  return t == DType::Float64 ? DType::Float64 : DType::Float32;
}

cpu::LossReduction parse_reduction(const std::string& r) {
  if (r == "mean") return cpu::LossReduction::Mean;
  if (r == "sum") return cpu::LossReduction::Sum;
  MF_CHECK(r == "none", "cross_entropy: reduction must be \"mean\", \"sum\" or \"none\", got \"", r,
           "\"");
  return cpu::LossReduction::None;
}

// ---- cross_entropy ----

// logits (N, C) or (C); target (N) or ().
std::vector<TensorMeta> cross_entropy_meta(const TensorList& in, const Attrs& a) {
  const Tensor& x = in[0];
  const Tensor& t = in[1];
  const Device dev = common_device({x, t}, "cross_entropy");
  MF_CHECK(is_floating(x.dtype()), "cross_entropy: expected floating logits, got ", describe(x));
  MF_CHECK(t.dtype() == DType::Int64 || t.dtype() == DType::Int32,
           "cross_entropy: expected an int64 or int32 target (class indices), got ", describe(t));
  MF_CHECK(x.dim() == 1 || x.dim() == 2,
           "cross_entropy: expected logits of shape (N, C) or (C), got ", describe(x));
  const Shape want = x.dim() == 2 ? Shape{x.size(0)} : Shape{};
  MF_CHECK(t.sizes() == want, "cross_entropy: target shape ", shape_str(t.sizes()),
           " does not match logits shape ", shape_str(x.sizes()), "; expected target shape ",
           shape_str(want));
  MF_CHECK(x.size(-1) > 0, "cross_entropy: logits ", shape_str(x.sizes()), " have no classes");
  const double e = a.f("label_smoothing");
  MF_CHECK(e >= 0.0 && e <= 1.0, "cross_entropy: label_smoothing must be in [0, 1], got ", e);
  const cpu::LossReduction r = parse_reduction(a.s("reduction"));
  const Shape loss_shape = r == cpu::LossReduction::None ? want : Shape{};
  return {out_meta(loss_shape, x.dtype(), dev), out_meta(want, acc_dtype(x.dtype()), dev)};
}

void check_target(int64_t bad, int64_t value, int64_t c, int64_t ignore) {
  MF_CHECK(bad < 0, "cross_entropy: target ", value, " (row ", bad, ") is out of bounds for ", c,
           " classes; expected a value in [0, ", c, ") or ignore_index ", ignore);
}

void cross_entropy_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();  // (N, C)
  const Tensor t = in[1].contiguous();  // (N)
  const int64_t c = x.size(-1);
  const int64_t n = x.dim() == 2 ? x.size(0) : 1;
  const int64_t ignore = a.i("ignore_index");
  int64_t value = 0;
  const int64_t bad = cpu::first_bad_target(t.raw_data(), t.dtype(), n, c, ignore, &value);
  check_target(bad, value, c, ignore);
  cpu::cross_entropy_forward(x.dtype(), x.raw_data(), t.dtype(), t.raw_data(), n, c, ignore,
                             a.f("label_smoothing"), parse_reduction(a.s("reduction")),
                             out[0].raw_data(), out[1].raw_data());
}

// inputs: grad (like loss), logits, target, lse; output: dlogits (like logits).
void cross_entropy_backward_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor t = in[2].contiguous();
  const Tensor lse = in[3].contiguous();
  const int64_t c = x.size(-1);
  const int64_t n = x.dim() == 2 ? x.size(0) : 1;
  cpu::cross_entropy_backward(x.dtype(), g.raw_data(), x.raw_data(), t.dtype(), t.raw_data(),
                              lse.raw_data(), n, c, a.i("ignore_index"), a.f("label_smoothing"),
                              parse_reduction(a.s("reduction")), out[0].raw_data());
}

// ---- layer_norm / rms_norm ----

// Checks x against normalized_shape and returns the leading (outer) shape.
Shape norm_outer_shape(const char* op, const Tensor& x, const Shape& ns) {
  MF_CHECK(is_floating(x.dtype()), op, ": expected a floating input, got ", describe(x));
  MF_CHECK(!ns.empty(), op, ": normalized_shape must have at least one dim, got ", shape_str(ns));
  const int64_t lead = x.dim() - static_cast<int64_t>(ns.size());
  bool match = lead >= 0;
  for (size_t k = 0; match && k < ns.size(); ++k) match = x.sizes()[lead + k] == ns[k];
  MF_CHECK(match, op, ": normalized_shape ", shape_str(ns),
           " does not match the trailing dims of input ", describe(x));
  return Shape(x.sizes().begin(), x.sizes().begin() + lead);
}

void check_affine(const char* op, const char* what, const Tensor& p, const Shape& ns) {
  if (!p.defined()) return;
  MF_CHECK(is_floating(p.dtype()), op, ": expected a floating ", what, ", got ", describe(p));
  MF_CHECK(p.sizes() == ns, op, ": ", what, " shape ", shape_str(p.sizes()),
           " does not match normalized_shape ", shape_str(ns));
}

// An optional weight/bias as a contiguous acc-dtype buffer (null when undefined).
Tensor affine_acc(const Tensor& p, DType x_dtype) {
  return p.defined() ? as_dtype(p, acc_dtype(x_dtype)).contiguous() : Tensor();
}
const void* data_or_null(const Tensor& t) {
  return t.defined() ? t.raw_data() : nullptr;
}

// x viewed as (M, D) rows of normalized_shape.
void norm_rows(const Tensor& x, const Shape& ns, int64_t* m, int64_t* d) {
  *d = shape_numel(ns);
  *m = *d == 0 ? 0 : x.numel() / *d;
}

// inputs: x, weight?, bias?; outputs: out (like x), mean and rstd (outer shape, acc).
std::vector<TensorMeta> layer_norm_meta(const TensorList& in, const Attrs& a) {
  const Shape& ns = a.ints("normalized_shape");
  const Device dev = common_device(in, "layer_norm");
  const Shape outer = norm_outer_shape("layer_norm", in[0], ns);
  check_affine("layer_norm", "weight", in[1], ns);
  check_affine("layer_norm", "bias", in[2], ns);
  const DType acc = acc_dtype(in[0].dtype());
  return {out_meta(in[0].sizes(), in[0].dtype(), dev), out_meta(outer, acc, dev),
          out_meta(outer, acc, dev)};
}

void layer_norm_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const Tensor w = affine_acc(in[1], x.dtype());
  const Tensor b = affine_acc(in[2], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cpu::layer_norm_forward(x.dtype(), x.raw_data(), data_or_null(w), data_or_null(b), m, d,
                          a.f("eps"), out[0].raw_data(), out[1].raw_data(), out[2].raw_data());
}

// inputs: dout, x, mean, rstd, weight?; outputs: dx (like x), dweight and dbias
// (normalized_shape, acc; computed whether or not weight and bias exist).
std::vector<TensorMeta> layer_norm_backward_meta(const TensorList& in, const Attrs& a) {
  const Tensor& x = in[1];
  const DType acc = acc_dtype(x.dtype());
  const Shape& ns = a.ints("normalized_shape");
  return {out_meta(x.sizes(), x.dtype(), x.device()), out_meta(ns, acc, x.device()),
          out_meta(ns, acc, x.device())};
}

void layer_norm_backward_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor mean = in[2].contiguous(), rstd = in[3].contiguous();
  const Tensor w = affine_acc(in[4], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cpu::layer_norm_backward(x.dtype(), g.raw_data(), x.raw_data(), mean.raw_data(), rstd.raw_data(),
                           data_or_null(w), m, d, out[0].raw_data(), out[1].raw_data(),
                           out[2].raw_data());
}

// inputs: x, weight?; outputs: out (like x), rstd (outer shape, acc).
std::vector<TensorMeta> rms_norm_meta(const TensorList& in, const Attrs& a) {
  const Shape& ns = a.ints("normalized_shape");
  const Device dev = common_device(in, "rms_norm");
  const Shape outer = norm_outer_shape("rms_norm", in[0], ns);
  check_affine("rms_norm", "weight", in[1], ns);
  return {out_meta(in[0].sizes(), in[0].dtype(), dev),
          out_meta(outer, acc_dtype(in[0].dtype()), dev)};
}

void rms_norm_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const Tensor w = affine_acc(in[1], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cpu::rms_norm_forward(x.dtype(), x.raw_data(), data_or_null(w), m, d, a.f("eps"),
                        out[0].raw_data(), out[1].raw_data());
}

// inputs: dout, x, rstd, weight?; outputs: dx (like x), dweight (normalized_shape, acc).
std::vector<TensorMeta> rms_norm_backward_meta(const TensorList& in, const Attrs& a) {
  const Tensor& x = in[1];
  return {out_meta(x.sizes(), x.dtype(), x.device()),
          out_meta(a.ints("normalized_shape"), acc_dtype(x.dtype()), x.device())};
}

void rms_norm_backward_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor rstd = in[2].contiguous();
  const Tensor w = affine_acc(in[3], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cpu::rms_norm_backward(x.dtype(), g.raw_data(), x.raw_data(), rstd.raw_data(), data_or_null(w), m,
                         d, out[0].raw_data(), out[1].raw_data());
}

// ---- dropout ----

void check_dropout_p(double p) {
  MF_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p must be in [0, 1], got ", p);
}

std::vector<TensorMeta> dropout_meta(const TensorList& in, const Attrs& a) {
  check_dropout_p(a.f("p"));
  MF_CHECK(is_floating(in[0].dtype()), "dropout: expected a floating input, got ", describe(in[0]));
  return {out_meta(in[0].sizes(), in[0].dtype(), in[0].device())};
}

// Output i is row-major element i: the mask is indexed the same way in both directions.
void dropout_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const PhiloxSeedOffset so = philox_attrs(a);
  cpu::dropout_apply(x.dtype(), x.raw_data(), x.numel(), a.f("p"), so.seed, so.offset,
                     out[0].raw_data());
}

// dropout_keep: element ids (int64, any shape) -> whether Philox keeps each one
// (philox::dropout_keep with the op's seed and offset); the mask of flex_attention's
// dense path, drawn per element id so any block of it matches the fused kernels.
std::vector<TensorMeta> dropout_keep_meta(const TensorList& in, const Attrs& a) {
  check_dropout_p(a.f("p"));
  MF_CHECK(in[0].dtype() == DType::Int64, "dropout_keep: expected int64 element ids, got ",
           describe(in[0]));
  return {out_meta(in[0].sizes(), DType::Bool, in[0].device())};
}

void dropout_keep_cpu(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor ids = in[0].contiguous();
  const PhiloxSeedOffset so = philox_attrs(a);
  const double p = a.f("p");
  const int64_t* id = ids.data_ptr<int64_t>();
  bool* keep = out[0].data_ptr<bool>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    keep[i] = philox::dropout_keep(so.seed, so.offset, static_cast<uint64_t>(id[i]), p);
}

#ifdef MICROFLEX_WITH_CUDA
// ---- CUDA glue: the same preparation as the CPU glue above, CUDA launchers. ----

void dropout_keep_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor ids = in[0].contiguous();
  const PhiloxSeedOffset so = philox_attrs(a);
  cuda::dropout_keep(ids.device().index, static_cast<const int64_t*>(ids.raw_data()), ids.numel(),
                     a.f("p"), so.seed, so.offset, static_cast<bool*>(out[0].raw_data()));
}

int device_index(const Tensor& t) {
  return t.device().index;
}

// Targets live on the GPU: the launcher reports the first bad one (reading a flag back
// with a stream sync) and the error is the CPU path's.
void cross_entropy_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();  // (N, C)
  const Tensor t = in[1].contiguous();  // (N)
  const int64_t c = x.size(-1);
  const int64_t n = x.dim() == 2 ? x.size(0) : 1;
  const int64_t ignore = a.i("ignore_index");
  const cuda::BadTarget bad = cuda::cross_entropy_forward(
      device_index(x), x.dtype(), x.raw_data(), t.dtype(), t.raw_data(), n, c, ignore,
      a.f("label_smoothing"), parse_reduction(a.s("reduction")), out[0].raw_data(),
      out[1].raw_data());
  check_target(bad.row, bad.value, c, ignore);
}

void cross_entropy_backward_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor t = in[2].contiguous();
  const Tensor lse = in[3].contiguous();
  const int64_t c = x.size(-1);
  const int64_t n = x.dim() == 2 ? x.size(0) : 1;
  cuda::cross_entropy_backward(device_index(x), x.dtype(), g.raw_data(), x.raw_data(), t.dtype(),
                               t.raw_data(), lse.raw_data(), n, c, a.i("ignore_index"),
                               a.f("label_smoothing"), parse_reduction(a.s("reduction")),
                               out[0].raw_data());
}

void layer_norm_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const Tensor w = affine_acc(in[1], x.dtype());
  const Tensor b = affine_acc(in[2], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cuda::layer_norm_forward(device_index(x), x.dtype(), x.raw_data(), data_or_null(w),
                           data_or_null(b), m, d, a.f("eps"), out[0].raw_data(), out[1].raw_data(),
                           out[2].raw_data());
}

void layer_norm_backward_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor mean = in[2].contiguous(), rstd = in[3].contiguous();
  const Tensor w = affine_acc(in[4], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cuda::layer_norm_backward(device_index(x), x.dtype(), g.raw_data(), x.raw_data(), mean.raw_data(),
                            rstd.raw_data(), data_or_null(w), m, d, out[0].raw_data(),
                            out[1].raw_data(), out[2].raw_data());
}

void rms_norm_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const Tensor w = affine_acc(in[1], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cuda::rms_norm_forward(device_index(x), x.dtype(), x.raw_data(), data_or_null(w), m, d,
                         a.f("eps"), out[0].raw_data(), out[1].raw_data());
}

void rms_norm_backward_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[1].contiguous();
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor rstd = in[2].contiguous();
  const Tensor w = affine_acc(in[3], x.dtype());
  int64_t m, d;
  norm_rows(x, a.ints("normalized_shape"), &m, &d);
  cuda::rms_norm_backward(device_index(x), x.dtype(), g.raw_data(), x.raw_data(), rstd.raw_data(),
                          data_or_null(w), m, d, out[0].raw_data(), out[1].raw_data());
}

void dropout_cuda(const TensorList& in, const TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const PhiloxSeedOffset so = philox_attrs(a);
  cuda::dropout_apply(device_index(x), x.dtype(), x.raw_data(), x.numel(), a.f("p"), so.seed,
                      so.offset, out[0].raw_data());
}
#endif

}  // namespace

void register_nn_ops(Dispatcher& d) {
  OpDef& ce = d.def("cross_entropy");
  ce.set_meta(cross_entropy_meta)
      .set_cpu(cross_entropy_cpu)
      .save(0b11, 0b10)  // logits, target; lse
      .set_backward([](const BackwardContext& ctx) {
        if (!ctx.needs(0)) return TensorList{};
        static const OpDef& bw = op_named("cross_entropy_backward");
        return TensorList{call_op1(
            bw, {ctx.grad_output(0), ctx.inputs[0], ctx.inputs[1], ctx.outputs[1]}, *ctx.attrs)};
      });
  OpDef& ce_bw = d.def("cross_entropy_backward");
  ce_bw
      .set_meta([](const TensorList& in, const Attrs&) {
        return std::vector<TensorMeta>{out_meta(in[1].sizes(), in[1].dtype(), in[1].device())};
      })
      .set_cpu(cross_entropy_backward_cpu);

  OpDef& ln = d.def("layer_norm");
  ln.set_meta(layer_norm_meta)
      .set_cpu(layer_norm_cpu)
      .optional(0b110)     // weight, bias
      .save(0b011, 0b110)  // x, weight; mean, rstd
      .set_backward([](const BackwardContext& ctx) {
        // mean and rstd are internal outputs: gradients flowing into them are ignored.
        static const OpDef& bw = op_named("layer_norm_backward");
        const TensorList g = call_op(
            bw, {ctx.grad_output(0), ctx.inputs[0], ctx.outputs[1], ctx.outputs[2], ctx.inputs[1]},
            *ctx.attrs);
        return TensorList{ctx.needs(0) ? g[0] : Tensor(), ctx.needs(1) ? g[1] : Tensor(),
                          ctx.needs(2) ? g[2] : Tensor()};
      });
  OpDef& ln_bw = d.def("layer_norm_backward");
  ln_bw.set_meta(layer_norm_backward_meta)
      .set_cpu(layer_norm_backward_cpu)
      .optional(0b10000);  // weight

  OpDef& rms = d.def("rms_norm");
  rms.set_meta(rms_norm_meta)
      .set_cpu(rms_norm_cpu)
      .optional(0b10)    // weight
      .save(0b11, 0b10)  // x, weight; rstd
      .set_backward([](const BackwardContext& ctx) {
        static const OpDef& bw = op_named("rms_norm_backward");
        const TensorList g = call_op(
            bw, {ctx.grad_output(0), ctx.inputs[0], ctx.outputs[1], ctx.inputs[1]}, *ctx.attrs);
        return TensorList{ctx.needs(0) ? g[0] : Tensor(), ctx.needs(1) ? g[1] : Tensor()};
      });
  OpDef& rms_bw = d.def("rms_norm_backward");
  rms_bw.set_meta(rms_norm_backward_meta)
      .set_cpu(rms_norm_backward_cpu)
      .optional(0b1000);  // weight

  // Note [Dropout mask]
  // The mask is not saved: element i is kept iff philox::dropout_keep(seed, offset, i, p),
  // a pure function of the op's attributes, so the backward recomputes it exactly. That
  // saves a mask tensor per dropout layer for the whole forward-backward window, costs one
  // Philox block per element (cheap next to the memory traffic), and works unchanged in a
  // replayed traced graph and in the CUDA kernel (kernels/cuda/nn.cu), which includes the
  // same header and so draws the same mask.
  OpDef& drop = d.def("dropout");
  drop.set_meta(dropout_meta)
      .set_cpu(dropout_cpu)
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        static const OpDef& bw = op_named("dropout_backward");
        return TensorList{call_op1(bw, {ctx.grad_output(0)}, *ctx.attrs)};
      });
  // dx = mask * g / (1 - p): the same map as the forward, applied to the gradient. It is
  // itself differentiable (linear in g), so it reuses the forward's formula.
  OpDef& drop_bw = d.def("dropout_backward");
  drop_bw.set_meta(dropout_meta)
      .set_cpu(dropout_cpu)
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        static const OpDef& bw = op_named("dropout_backward");
        return TensorList{call_op1(bw, {ctx.grad_output(0)}, *ctx.attrs)};
      });

  OpDef& keep = d.def("dropout_keep");
  keep.set_meta(dropout_keep_meta).set_cpu(dropout_keep_cpu).non_differentiable();

#ifdef MICROFLEX_WITH_CUDA
  keep.set_cuda(dropout_keep_cuda);
  ce.set_cuda(cross_entropy_cuda);
  ce_bw.set_cuda(cross_entropy_backward_cuda);
  ln.set_cuda(layer_norm_cuda);
  ln_bw.set_cuda(layer_norm_backward_cuda);
  rms.set_cuda(rms_norm_cuda);
  rms_bw.set_cuda(rms_norm_backward_cuda);
  drop.set_cuda(dropout_cuda);
  drop_bw.set_cuda(dropout_cuda);
#endif
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                     const std::string& reduction, double label_smoothing) {
  static const OpDef& op = op_named("cross_entropy");
  return call_op(op, {logits, target},
                 {{"ignore_index", ignore_index},
                  {"reduction", reduction},
                  {"label_smoothing", label_smoothing}})
      .at(0);
}

Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps) {
  static const OpDef& op = op_named("layer_norm");
  return call_op(op, {x, weight, bias}, {{"normalized_shape", normalized_shape}, {"eps", eps}})
      .at(0);
}

Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                std::optional<double> eps) {
  static const OpDef& op = op_named("rms_norm");
  MF_CHECK(x.defined(), "rms_norm: input 0 is an undefined tensor");
  double e = 0.0;
  if (eps) {
    e = *eps;
  } else {
    switch (x.dtype()) {
      case DType::Float64:
        e = std::numeric_limits<double>::epsilon();
        break;
      case DType::Float16:
        e = 0.0009765625;
        break;  // 2^-10
      case DType::BFloat16:
        e = 0.0078125;
        break;  // 2^-7
      default:
        e = std::numeric_limits<float>::epsilon();
        break;
    }
  }
  return call_op(op, {x, weight}, {{"normalized_shape", normalized_shape}, {"eps", e}}).at(0);
}

Tensor dropout_keep(const Tensor& ids, double p, uint64_t seed, uint64_t offset) {
  static const OpDef& op = op_named("dropout_keep");
  Attrs a{{"p", p}};
  set_philox_attrs(a, {seed, offset});
  return call_op1(op, {ids}, a);
}

Tensor dropout(const Tensor& x, double p, bool train) {
  check_dropout_p(p);
  if (!train || p == 0.0) return x;
  static const OpDef& op = op_named("dropout");
  Attrs a{{"p", p}};
  set_philox_attrs(a, next_philox_seed_offset());
  return call_op1(op, {x}, a);
}

}  // namespace microflex
