// Reductions: shape rules, backward formulas and the glue to the CPU kernels in
// kernels/cpu/reduction.h and kernels/cpu/softmax.h (and their CUDA twins in
// kernels/cuda/), registered in register_reduction_ops. Kernels see the input permuted so
// reduced dims come last and made contiguous: [outer, R] rows (Note [Reduction layout]);
// CPU softmax sees [outer, R, inner], CUDA softmax [outer, R] with the dim moved last.
#include "ops/reduction.h"

#include <algorithm>
#include <utility>

#include "core/dispatch.h"
#include "kernels/cpu/reduction.h"
#include "kernels/cpu/softmax.h"
#include "ops/elementwise.h"
#include "ops/op_utils.h"
#include "ops/reduction_utils.h"
#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/reduction.h"
#include "kernels/cuda/softmax.h"
#endif

namespace microflex {

// Note [Reduction layout]
// A reduction over dims D of a tensor of shape S is computed on the input permuted to
// (kept dims..., reduced dims...) and made contiguous, viewed as [outer, R] with
// R = prod(S[D]). Each output element reduces one contiguous row, and the output's own
// contiguous order (kept dims in order, keepdim or not) is the row order. Simple,
// cache-friendly for the common last-dim case, and the same layout serves every
// reduction. Backward kernels that produce an input-shaped gradient write it in the
// same permuted layout, and the glue permutes it back.

Shape reduction_dims(const Shape& dims, int64_t ndim, const char* op) {
  Shape out;
  if (dims.empty()) {
    for (int64_t i = 0; i < ndim; ++i) out.push_back(i);
    return out;
  }
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, ndim, op);
    MF_CHECK(std::find(out.begin(), out.end(), w) == out.end(), op, ": dim ", w,
             " appears more than once in ", shape_str(dims));
    out.push_back(w);
  }
  if (ndim == 0) return {};
  std::sort(out.begin(), out.end());
  return out;
}

Shape reduced_shape(const Shape& s, const Shape& rdims, bool keepdim) {
  Shape out;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    const bool r = std::find(rdims.begin(), rdims.end(), i) != rdims.end();
    if (!r) {
      out.push_back(s[i]);
    } else if (keepdim) {
      out.push_back(1);
    }
  }
  return out;
}

RowLayout row_layout(const Shape& sizes, const Shape& rdims) {
  RowLayout l;
  for (int64_t i = 0; i < static_cast<int64_t>(sizes.size()); ++i) {
    if (std::find(rdims.begin(), rdims.end(), i) != rdims.end()) continue;
    l.perm.push_back(i);
    l.outer *= sizes[i];
  }
  for (int64_t d : rdims) {
    l.perm.push_back(d);
    l.r *= sizes[d];
  }
  for (size_t i = 0; i < l.perm.size(); ++i) {
    l.permuted_sizes.push_back(sizes[l.perm[i]]);
    l.identity = l.identity && l.perm[i] == static_cast<int64_t>(i);
  }
  return l;
}

Tensor rows_of(const Tensor& t, const RowLayout& l) {
  return l.identity ? t.contiguous() : t.permute(l.perm).contiguous();
}

Tensor rows_for_reduction(const Tensor& t, const Shape& rdims, int64_t* outer, int64_t* r) {
  const RowLayout l = row_layout(t.sizes(), rdims);
  *outer = l.outer;
  *r = l.r;
  return rows_of(t, l);
}

Tensor expand_reduced_grad(const Tensor& g, const Shape& in_sizes, const Shape& rdims,
                           bool keepdim) {
  Tensor gk = g;
  if (!keepdim) gk = g.reshape(reduced_shape(in_sizes, rdims, true));
  return gk.expand(in_sizes);
}

namespace {

DType sum_dtype(DType t) {
  return is_floating(t) ? t : DType::Int64;
}

Shape dims_attr(const char* op, const Tensor& t, const Attrs& a) {
  return reduction_dims(a.ints("dims"), t.dim(), op);
}

TensorMeta reduced_meta(const Tensor& t, const Shape& rd, bool keepdim, DType dt) {
  return make_meta(reduced_shape(t.sizes(), rd, keepdim), dt, t.device());
}

#ifdef MICROFLEX_WITH_CUDA
int device_index(const Tensor& t) {
  return t.device().index;
}

// The [outer, R] layout of a softmax along `dim` on the GPU: `dim` moved last.
RowLayout softmax_layout(const Tensor& t, int64_t dim) {
  return row_layout(t.sizes(), t.dim() == 0 ? Shape{} : Shape{dim});
}
#endif

void check_floating(const char* op, const Tensor& t) {
  MF_CHECK(is_floating(t.dtype()), op, ": expected a floating input, got ", describe(t),
           "; convert with to() first");
}

// Max-like reductions have no identity element, so an empty reduced dim is an error.
void check_nonempty(const char* op, const Tensor& t, const Shape& rd) {
  for (int64_t d : rd)
    MF_CHECK(t.sizes()[d] != 0, op, ": cannot reduce over dim ", d, " of size 0 (input shape ",
             shape_str(t.sizes()), "): the reduction has no identity");
}

// Runs `fill(ptr)`, which writes [outer, R] rows in the layout `l`, so that `out`
// (contiguous, of the unpermuted shape) ends up holding them.
template <typename F>
void write_rows(const Tensor& out, const RowLayout& l, F fill) {
  if (l.identity) {
    fill(out.raw_data());
    return;
  }
  // A kernel's scratch buffer, allocated directly (as the dispatcher allocates outputs):
  // no op call, so it works on every backend.
  Tensor tmp = Tensor::make(l.permuted_sizes, out.dtype(), out.device(), false);
  fill(tmp.raw_data());
  Tensor v = out.permute(l.perm);
  v.copy_(tmp);
}

// Whether the sorted reduced dims `rd` are one adjacent run, and then the [outer, R, inner]
// view of `sizes` around it.
bool middle_block(const Shape& sizes, const Shape& rd, int64_t* outer, int64_t* r, int64_t* inner) {
  if (rd.empty() || rd.back() - rd.front() + 1 != static_cast<int64_t>(rd.size())) return false;
  *outer = *r = *inner = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(sizes.size()); ++i) {
    if (i < rd.front())
      *outer *= sizes[i];
    else if (i <= rd.back())
      *r *= sizes[i];
    else
      *inner *= sizes[i];
  }
  return true;
}

// [outer, R, inner] around `dim` of a tensor of `sizes`.
void split_at_dim(const Shape& sizes, int64_t dim, int64_t* outer, int64_t* r, int64_t* inner) {
  middle_block(sizes, {dim}, outer, r, inner);
}

Tensor amax_amin_backward(const Tensor& g, const Tensor& x, const Tensor& y, const Shape& dims,
                          bool keepdim) {
  static const OpDef& op = op_named("amax_amin_backward");
  return call_op1(op, {g, x, y}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor logsumexp_backward(const Tensor& g, const Tensor& x, const Tensor& lse, const Shape& dims,
                          bool keepdim) {
  static const OpDef& op = op_named("logsumexp_backward");
  return call_op1(op, {g, x, lse}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor value_selecting_reduction_backward(const Tensor& g, const Tensor& indices, int64_t dim,
                                          bool keepdim, const Shape& sizes) {
  static const OpDef& op = op_named("value_selecting_reduction_backward");
  return call_op1(op, {g, indices}, {{"dim", dim}, {"keepdim", keepdim}, {"sizes", sizes}});
}

// amax/amin (over `dims`) and max/min (over everything): values only, gradient split
// evenly among ties.
void def_extremum(Dispatcher& d, const char* name, bool is_max, bool has_dims) {
  auto dims_of = [name, has_dims](const Tensor& t, const Attrs& a) {
    return has_dims ? dims_attr(name, t, a) : reduction_dims({}, t.dim(), name);
  };
  auto keepdim_of = [has_dims](const Attrs& a) { return has_dims && a.b("keepdim"); };
  OpDef& op = d.def(name);
  op.set_meta([=](const TensorList& in, const Attrs& a) {
      const Shape rd = dims_of(in[0], a);
      check_nonempty(name, in[0], rd);
      return std::vector<TensorMeta>{reduced_meta(in[0], rd, keepdim_of(a), in[0].dtype())};
    })
      .set_cpu([=](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], dims_of(in[0], a), &outer, &r);
        cpu::minmax_rows(rows.raw_data(), rows.dtype(), outer, r, is_max, out[0].raw_data(),
                         nullptr);
      })
      .save(1, 1)
      .set_backward([=](const BackwardContext& ctx) {
        const Shape dims = has_dims ? ctx.attrs->ints("dims") : Shape{};
        return TensorList{amax_amin_backward(ctx.grad_output(0), ctx.inputs[0], ctx.outputs[0],
                                             dims, keepdim_of(*ctx.attrs))};
      });
#ifdef MICROFLEX_WITH_CUDA
  op.set_cuda([=](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r;
    const Tensor rows = rows_for_reduction(in[0], dims_of(in[0], a), &outer, &r);
    cuda::minmax_rows(device_index(rows), rows.raw_data(), rows.dtype(), outer, r, is_max,
                      out[0].raw_data(), nullptr);
  });
#endif
}

// max/min along one dim: (values, indices).
void def_extremum_dim(Dispatcher& d, const char* name, bool is_max) {
  OpDef& op = d.def(name);
  op.set_meta([=](const TensorList& in, const Attrs& a) {
      const Shape rd = reduction_dims({a.i("dim")}, in[0].dim(), name);
      check_nonempty(name, in[0], rd);
      const bool k = a.b("keepdim");
      return std::vector<TensorMeta>{reduced_meta(in[0], rd, k, in[0].dtype()),
                                     reduced_meta(in[0], rd, k, DType::Int64)};
    })
      .set_cpu([=](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Shape rd = reduction_dims({a.i("dim")}, in[0].dim(), name);
        const Tensor rows = rows_for_reduction(in[0], rd, &outer, &r);
        cpu::minmax_rows(rows.raw_data(), rows.dtype(), outer, r, is_max, out[0].raw_data(),
                         out[1].data_ptr<int64_t>());
      })
      .save(0, 0b10)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{value_selecting_reduction_backward(
            ctx.grad_output(0), ctx.outputs[1], ctx.attrs->i("dim"), ctx.attrs->b("keepdim"),
            ctx.input_metas[0].sizes)};
      });
#ifdef MICROFLEX_WITH_CUDA
  op.set_cuda([=](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r;
    const Shape rd = reduction_dims({a.i("dim")}, in[0].dim(), name);
    const Tensor rows = rows_for_reduction(in[0], rd, &outer, &r);
    cuda::minmax_rows(device_index(rows), rows.raw_data(), rows.dtype(), outer, r, is_max,
                      out[0].raw_data(), out[1].data_ptr<int64_t>());
  });
#endif
}

// argmax/argmin: int64 indices along "dim", or into the flattened tensor without it.
void def_arg_extremum(Dispatcher& d, const char* name, bool is_max) {
  auto dims_of = [name](const Tensor& t, const Attrs& a) {
    return reduction_dims(a.has("dim") ? Shape{a.i("dim")} : Shape{}, t.dim(), name);
  };
  OpDef& op = d.def(name);
  op.non_differentiable()
      .set_meta([=](const TensorList& in, const Attrs& a) {
        const Shape rd = dims_of(in[0], a);
        check_nonempty(name, in[0], rd);
        return std::vector<TensorMeta>{reduced_meta(in[0], rd, a.b("keepdim"), DType::Int64)};
      })
      .set_cpu([=](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], dims_of(in[0], a), &outer, &r);
        cpu::minmax_rows(rows.raw_data(), rows.dtype(), outer, r, is_max, nullptr,
                         out[0].data_ptr<int64_t>());
      });
#ifdef MICROFLEX_WITH_CUDA
  op.set_cuda([=](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r;
    const Tensor rows = rows_for_reduction(in[0], dims_of(in[0], a), &outer, &r);
    cuda::minmax_rows(device_index(rows), rows.raw_data(), rows.dtype(), outer, r, is_max, nullptr,
                      out[0].data_ptr<int64_t>());
  });
#endif
}

void def_softmax(Dispatcher& d, const char* name, bool log) {
  OpDef& fwd = d.def(name);
  fwd.set_meta([=](const TensorList& in, const Attrs& a) {
       check_floating(name, in[0]);
       wrap_dim(a.i("dim"), in[0].dim(), name);
       return std::vector<TensorMeta>{make_meta(in[0].sizes(), in[0].dtype(), in[0].device())};
     })
      .set_cpu([=](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Tensor x = in[0].contiguous();
        int64_t outer, r, inner;
        split_at_dim(x.sizes(), wrap_dim(a.i("dim"), x.dim(), name), &outer, &r, &inner);
        cpu::softmax_forward(x.raw_data(), out[0].raw_data(), x.dtype(), outer, r, inner, log);
      })
      .save(0, 1)
      .set_backward([=](const BackwardContext& ctx) {
        const int64_t dim = ctx.attrs->i("dim");
        const Tensor g = ctx.grad_output(0);
        const Tensor& y = ctx.outputs[0];
        return TensorList{log ? log_softmax_backward(g, y, dim) : softmax_backward(g, y, dim)};
      });

  const std::string bname = std::string(name) + "_backward";
  OpDef& bwd = d.def(bname);
  bwd.set_meta([=](const TensorList& in, const Attrs& a) {
       const char* op = log ? "log_softmax_backward" : "softmax_backward";
       const Tensor& g = in[0];
       const Tensor& y = in[1];
       check_floating(op, y);
       MF_CHECK(is_floating(g.dtype()), op, ": expected a floating grad, got ", describe(g));
       MF_CHECK(g.sizes() == y.sizes(), op, ": grad of shape ", shape_str(g.sizes()),
                " does not match the output of shape ", shape_str(y.sizes()));
       common_device(in, op);
       wrap_dim(a.i("dim"), y.dim(), op);
       return std::vector<TensorMeta>{make_meta(y.sizes(), y.dtype(), y.device())};
     })
      .set_cpu([=](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Tensor y = in[1].contiguous();
        const Tensor g = as_dtype(in[0], y.dtype()).contiguous();
        int64_t outer, r, inner;
        split_at_dim(y.sizes(), wrap_dim(a.i("dim"), y.dim(), "softmax_backward"), &outer, &r,
                     &inner);
        cpu::softmax_backward(g.raw_data(), y.raw_data(), out[0].raw_data(), y.dtype(), outer, r,
                              inner, log);
      });
#ifdef MICROFLEX_WITH_CUDA
  fwd.set_cuda([=](const TensorList& in, const TensorList& out, const Attrs& a) {
    const Tensor& x = in[0];
    const RowLayout l = softmax_layout(x, wrap_dim(a.i("dim"), x.dim(), name));
    const Tensor xr = rows_of(x, l);
    write_rows(out[0], l, [&](void* y) {
      cuda::softmax_forward(device_index(x), xr.raw_data(), y, x.dtype(), l.outer, l.r, log);
    });
  });
  bwd.set_cuda([=](const TensorList& in, const TensorList& out, const Attrs& a) {
    const Tensor& y = in[1];
    const RowLayout l = softmax_layout(y, wrap_dim(a.i("dim"), y.dim(), "softmax_backward"));
    const Tensor yr = rows_of(y, l);
    const Tensor gr = rows_of(as_dtype(in[0], y.dtype()), l);
    write_rows(out[0], l, [&](void* dx) {
      cuda::softmax_backward(device_index(y), gr.raw_data(), yr.raw_data(), dx, y.dtype(), l.outer,
                             l.r, log);
    });
  });
#endif
}

// Shape rule of a fused reduction backward (g, x, y): the gradient is shaped like x.
std::vector<TensorMeta> reduction_backward_meta(const char* op, const TensorList& in,
                                                const Attrs& a) {
  const Tensor& x = in[1];
  const Shape rd = dims_attr(op, x, a);
  const Shape expect = reduced_shape(x.sizes(), rd, a.b("keepdim"));
  MF_CHECK(is_floating(x.dtype()), op, ": expected a floating input, got ", describe(x));
  MF_CHECK(in[0].sizes() == expect && in[2].sizes() == expect, op, ": grad ",
           shape_str(in[0].sizes()), " and result ", shape_str(in[2].sizes()),
           " must have the reduced shape ", shape_str(expect), " of input ", shape_str(x.sizes()));
  common_device(in, op);
  return {make_meta(x.sizes(), x.dtype(), x.device())};
}

// Glue of a fused reduction backward: x in rows, g and y as [outer] in x's dtype; `kernel`
// is the CPU or CUDA row kernel (g, x, y, dx, dtype, outer, R).
template <typename Kernel>
void reduction_backward_rows(const TensorList& in, const Tensor& out, const Attrs& a,
                             const char* op, Kernel kernel) {
  const Tensor& x = in[1];
  const RowLayout l = row_layout(x.sizes(), dims_attr(op, x, a));
  const Tensor xr = rows_of(x, l);
  const Tensor g = as_dtype(in[0], x.dtype()).contiguous();
  const Tensor y = as_dtype(in[2], x.dtype()).contiguous();
  write_rows(out, l, [&](void* dx) {
    kernel(g.raw_data(), xr.raw_data(), y.raw_data(), dx, x.dtype(), l.outer, l.r);
  });
}

}  // namespace

void register_reduction_ops(Dispatcher& d) {
  OpDef& sum_op = d.def("sum");
  sum_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        return std::vector<TensorMeta>{reduced_meta(in[0], dims_attr("sum", in[0], a),
                                                    a.b("keepdim"), sum_dtype(in[0].dtype()))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], dims_attr("sum", in[0], a), &outer, &r);
        cpu::sum_rows(rows.raw_data(), rows.dtype(), out[0].raw_data(), out[0].dtype(), outer, r);
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Shape& s = ctx.input_metas[0].sizes;
        const Shape rd =
            reduction_dims(ctx.attrs->ints("dims"), static_cast<int64_t>(s.size()), "sum");
        return TensorList{expand_reduced_grad(ctx.grad_output(0), s, rd, ctx.attrs->b("keepdim"))};
      });

  OpDef& mean_op = d.def("mean");
  mean_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        check_floating("mean", in[0]);
        return std::vector<TensorMeta>{
            reduced_meta(in[0], dims_attr("mean", in[0], a), a.b("keepdim"), in[0].dtype())};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], dims_attr("mean", in[0], a), &outer, &r);
        cpu::mean_rows(rows.raw_data(), rows.dtype(), out[0].raw_data(), outer, r);
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Shape& s = ctx.input_metas[0].sizes;
        const Shape rd =
            reduction_dims(ctx.attrs->ints("dims"), static_cast<int64_t>(s.size()), "mean");
        int64_t n = 1;
        for (int64_t dd : rd) n *= s[dd];
        const Tensor g = expand_reduced_grad(ctx.grad_output(0), s, rd, ctx.attrs->b("keepdim"));
        return TensorList{g / static_cast<double>(n)};
      });

  def_extremum(d, "amax", true, true);
  def_extremum(d, "amin", false, true);
  def_extremum(d, "max", true, false);
  def_extremum(d, "min", false, false);
  def_extremum_dim(d, "max_dim", true);
  def_extremum_dim(d, "min_dim", false);
  def_arg_extremum(d, "argmax", true);
  def_arg_extremum(d, "argmin", false);

  OpDef& amax_bw_op = d.def("amax_amin_backward");
  amax_bw_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        return reduction_backward_meta("amax_amin_backward", in, a);
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        reduction_backward_rows(in, out[0], a, "amax_amin_backward", cpu::amax_backward_rows);
      });

  OpDef& select_bw_op = d.def("value_selecting_reduction_backward");
  select_bw_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        const char* op = "value_selecting_reduction_backward";
        const Shape& sizes = a.ints("sizes");
        const int64_t dim = wrap_dim(a.i("dim"), static_cast<int64_t>(sizes.size()), op);
        const Shape rd = sizes.empty() ? Shape{} : Shape{dim};
        const Shape expect = reduced_shape(sizes, rd, a.b("keepdim"));
        MF_CHECK(is_floating(in[0].dtype()), op, ": expected a floating grad, got ",
                 describe(in[0]));
        MF_CHECK(in[1].dtype() == DType::Int64, op, ": expected int64 indices, got ",
                 describe(in[1]));
        MF_CHECK(in[0].sizes() == expect && in[1].sizes() == expect, op, ": grad ",
                 shape_str(in[0].sizes()), " and indices ", shape_str(in[1].sizes()),
                 " must have the reduced shape ", shape_str(expect), " of input ",
                 shape_str(sizes));
        common_device(in, op);
        return std::vector<TensorMeta>{make_meta(sizes, in[0].dtype(), in[0].device())};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Shape& sizes = a.ints("sizes");
        int64_t outer, r, inner;
        split_at_dim(sizes,
                     wrap_dim(a.i("dim"), static_cast<int64_t>(sizes.size()),
                              "value_selecting_reduction_backward"),
                     &outer, &r, &inner);
        const Tensor g = in[0].contiguous();
        const Tensor idx = in[1].contiguous();
        cpu::scatter_selected(g.raw_data(), idx.data_ptr<int64_t>(), out[0].raw_data(), g.dtype(),
                              outer, r, inner);
      });

  OpDef& lse_op = d.def("logsumexp");
  lse_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const DType dt = is_floating(t.dtype()) ? t.dtype() : DType::Float32;
        return std::vector<TensorMeta>{
            reduced_meta(t, dims_attr("logsumexp", t, a), a.b("keepdim"), dt)};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Tensor x = as_dtype(in[0], out[0].dtype());
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(x, dims_attr("logsumexp", x, a), &outer, &r);
        cpu::logsumexp_rows(rows.raw_data(), rows.dtype(), out[0].raw_data(), outer, r);
      })
      .save(1, 1)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{logsumexp_backward(ctx.grad_output(0), ctx.inputs[0], ctx.outputs[0],
                                             ctx.attrs->ints("dims"), ctx.attrs->b("keepdim"))};
      });

  OpDef& lse_bw_op = d.def("logsumexp_backward");
  lse_bw_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        return reduction_backward_meta("logsumexp_backward", in, a);
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        reduction_backward_rows(in, out[0], a, "logsumexp_backward", cpu::logsumexp_backward_rows);
      });

  OpDef& var_op = d.def("var");
  var_op
      .set_meta([](const TensorList& in, const Attrs& a) {
        check_floating("var", in[0]);
        return std::vector<TensorMeta>{
            reduced_meta(in[0], dims_attr("var", in[0], a), a.b("keepdim"), in[0].dtype())};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], dims_attr("var", in[0], a), &outer, &r);
        cpu::var_rows(rows.raw_data(), rows.dtype(), out[0].raw_data(), outer, r,
                      a.f("correction"));
      })
      .save(1, 0)
      .set_backward([](const BackwardContext& ctx) {
        // d var / dx = 2 (x - mean) / (N - correction), broadcast from the reduced grad.
        const Tensor& x = ctx.inputs[0];
        const Shape rd = dims_attr("var", x, *ctx.attrs);
        int64_t n = 1;
        for (int64_t dd : rd) n *= x.sizes()[dd];
        const double denom = std::max(0.0, static_cast<double>(n) - ctx.attrs->f("correction"));
        const Tensor g =
            expand_reduced_grad(ctx.grad_output(0), x.sizes(), rd, ctx.attrs->b("keepdim"));
        const Tensor centered = x - mean(x, rd, true);
        return TensorList{g * centered * (2.0 / denom)};
      });

  def_softmax(d, "softmax", false);
  def_softmax(d, "log_softmax", true);

#ifdef MICROFLEX_WITH_CUDA
  sum_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r, inner;
    const Shape rd = dims_attr("sum", in[0], a);
    if (in[0].is_contiguous() && middle_block(in[0].sizes(), rd, &outer, &r, &inner) && inner > 1 &&
        outer <= 65535) {
      cuda::sum_columns(device_index(in[0]), in[0].raw_data(), in[0].dtype(), out[0].raw_data(),
                        out[0].dtype(), outer, r, inner);
      return;
    }
    const Tensor rows = rows_for_reduction(in[0], rd, &outer, &r);
    cuda::sum_rows(device_index(rows), rows.raw_data(), rows.dtype(), out[0].raw_data(),
                   out[0].dtype(), outer, r);
  });
  mean_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r;
    const Tensor rows = rows_for_reduction(in[0], dims_attr("mean", in[0], a), &outer, &r);
    cuda::mean_rows(device_index(rows), rows.raw_data(), rows.dtype(), out[0].raw_data(), outer, r);
  });
  amax_bw_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    const int dev = device_index(in[1]);
    reduction_backward_rows(
        in, out[0], a, "amax_amin_backward",
        [dev](const void* g, const void* x, const void* y, void* dx, DType t, int64_t outer,
              int64_t r) { cuda::amax_backward_rows(dev, g, x, y, dx, t, outer, r); });
  });
  select_bw_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    const Shape& sizes = a.ints("sizes");
    int64_t outer, r, inner;
    split_at_dim(sizes,
                 wrap_dim(a.i("dim"), static_cast<int64_t>(sizes.size()),
                          "value_selecting_reduction_backward"),
                 &outer, &r, &inner);
    const Tensor g = in[0].contiguous();
    const Tensor idx = in[1].contiguous();
    cuda::scatter_selected(device_index(g), g.raw_data(), idx.data_ptr<int64_t>(),
                           out[0].raw_data(), g.dtype(), outer, r, inner);
  });
  lse_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    const Tensor x = as_dtype(in[0], out[0].dtype());
    int64_t outer, r;
    const Tensor rows = rows_for_reduction(x, dims_attr("logsumexp", x, a), &outer, &r);
    cuda::logsumexp_rows(device_index(rows), rows.raw_data(), rows.dtype(), out[0].raw_data(),
                         outer, r);
  });
  lse_bw_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    const int dev = device_index(in[1]);
    reduction_backward_rows(
        in, out[0], a, "logsumexp_backward",
        [dev](const void* g, const void* x, const void* y, void* dx, DType t, int64_t outer,
              int64_t r) { cuda::logsumexp_backward_rows(dev, g, x, y, dx, t, outer, r); });
  });
  var_op.set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
    int64_t outer, r;
    const Tensor rows = rows_for_reduction(in[0], dims_attr("var", in[0], a), &outer, &r);
    cuda::var_rows(device_index(rows), rows.raw_data(), rows.dtype(), out[0].raw_data(), outer, r,
                   a.f("correction"));
  });
#endif
}

Tensor sum(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("sum");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor mean(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("mean");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

std::pair<Tensor, Tensor> max(const Tensor& t, int64_t dim, bool keepdim) {
  static const OpDef& op = op_named("max_dim");
  const TensorList r = call_op(op, {t}, {{"dim", dim}, {"keepdim", keepdim}});
  return {r.at(0), r.at(1)};
}

std::pair<Tensor, Tensor> min(const Tensor& t, int64_t dim, bool keepdim) {
  static const OpDef& op = op_named("min_dim");
  const TensorList r = call_op(op, {t}, {{"dim", dim}, {"keepdim", keepdim}});
  return {r.at(0), r.at(1)};
}

Tensor max(const Tensor& t) {
  static const OpDef& op = op_named("max");
  return call_op1(op, {t});
}

Tensor min(const Tensor& t) {
  static const OpDef& op = op_named("min");
  return call_op1(op, {t});
}

Tensor amax(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("amax");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor amin(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("amin");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

namespace {
Attrs arg_attrs(std::optional<int64_t> dim, bool keepdim) {
  Attrs a{{"keepdim", keepdim}};
  if (dim) a.set("dim", *dim);
  return a;
}
}  // namespace

Tensor argmax(const Tensor& t, std::optional<int64_t> dim, bool keepdim) {
  static const OpDef& op = op_named("argmax");
  return call_op1(op, {t}, arg_attrs(dim, keepdim));
}

Tensor argmin(const Tensor& t, std::optional<int64_t> dim, bool keepdim) {
  static const OpDef& op = op_named("argmin");
  return call_op1(op, {t}, arg_attrs(dim, keepdim));
}

Tensor logsumexp(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("logsumexp");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor var(const Tensor& t, const Shape& dims, double correction, bool keepdim) {
  static const OpDef& op = op_named("var");
  return call_op1(op, {t}, {{"dims", dims}, {"correction", correction}, {"keepdim", keepdim}});
}

Tensor softmax(const Tensor& t, int64_t dim) {
  static const OpDef& op = op_named("softmax");
  return call_op1(op, {t}, {{"dim", dim}});
}

Tensor log_softmax(const Tensor& t, int64_t dim) {
  static const OpDef& op = op_named("log_softmax");
  return call_op1(op, {t}, {{"dim", dim}});
}

Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) {
  static const OpDef& op = op_named("softmax_backward");
  return call_op1(op, {grad, y}, {{"dim", dim}});
}

Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim) {
  static const OpDef& op = op_named("log_softmax_backward");
  return call_op1(op, {grad, y}, {{"dim", dim}});
}

Tensor Tensor::sum() const {
  return microflex::sum(*this);
}
Tensor Tensor::sum(const Shape& dims, bool keepdim) const {
  return microflex::sum(*this, dims, keepdim);
}
Tensor Tensor::mean() const {
  return microflex::mean(*this);
}
Tensor Tensor::mean(const Shape& dims, bool keepdim) const {
  return microflex::mean(*this, dims, keepdim);
}

}  // namespace microflex
