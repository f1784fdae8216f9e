// Reductions: shape rules, backward formulas and CPU kernels, registered in
// register_reduction_ops. Kernels see the input permuted so reduced dims come last and
// made contiguous: [outer, R] rows (Note [Reduction layout]).
#include "ops/reduction.h"

#include <algorithm>

#include "core/dispatch.h"
#include "ops/elementwise.h"
#include "ops/op_utils.h"
#include "ops/reduction_utils.h"

namespace microflex {

// Note [Reduction layout]
// A reduction over dims D of a tensor of shape S is computed on the input permuted to
// (kept dims..., reduced dims...) and made contiguous, viewed as [outer, R] with
// R = prod(S[D]). Each output element reduces one contiguous row. Simple, cache-friendly
// for the common last-dim case, and the same layout serves every reduction.

// Sorted, wrapped, unique dims; empty input dims means all.
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

// The input as a contiguous [outer, R] tensor (Note [Reduction layout]).
Tensor rows_for_reduction(const Tensor& t, const Shape& rdims, int64_t* outer, int64_t* r) {
  Shape perm;
  *r = 1;
  for (int64_t i = 0; i < t.dim(); ++i)
    if (std::find(rdims.begin(), rdims.end(), i) == rdims.end()) perm.push_back(i);
  for (int64_t d : rdims) {
    perm.push_back(d);
    *r *= t.sizes()[d];
  }
  *outer = *r == 0 ? shape_numel(reduced_shape(t.sizes(), rdims, false)) : t.numel() / *r;
  if (t.dim() == 0) return t.reshape({1, 1});
  return t.permute(perm).contiguous();
}

// Gradient of a reduction broadcast back over the input's shape.
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

std::vector<TensorMeta> reduce_meta(const char* op, const TensorList& in, const Attrs& a,
                                    DType out) {
  const Shape rd = reduction_dims(a.ints("dims"), in[0].dim(), op);
  return {{reduced_shape(in[0].sizes(), rd, a.b("keepdim")), out, in[0].device()}};
}

}  // namespace

void register_reduction_ops(Dispatcher& d) {
  d.def("sum")
      .set_meta([](const TensorList& in, const Attrs& a) {
        return reduce_meta("sum", in, a, sum_dtype(in[0].dtype()));
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Shape rd = reduction_dims(a.ints("dims"), in[0].dim(), "sum");
        int64_t outer, r;
        const Tensor rows = rows_for_reduction(in[0], rd, &outer, &r);
        const Tensor o = out[0];
        MF_DISPATCH_ALL(rows.dtype(), "sum", [&] {
          using T = scalar_t;
          using A = std::conditional_t<std::is_integral_v<acc_t<T>>, int64_t, double>;
          const T* p = rows.data_ptr<T>();
          MF_DISPATCH_ALL(o.dtype(), "sum", [&] {
            scalar_t* q = o.data_ptr<scalar_t>();
            for (int64_t i = 0; i < outer; ++i) {
              A acc = 0;
              const T* row = p + i * r;
              for (int64_t j = 0; j < r; ++j) acc += static_cast<A>(static_cast<acc_t<T>>(row[j]));
              if constexpr (std::is_same_v<scalar_t, bool>) {
                q[i] = acc != 0;
              } else {
                q[i] = static_cast<scalar_t>(static_cast<acc_t<scalar_t>>(acc));
              }
            }
          });
        });
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Shape& s = ctx.input_metas[0].sizes;
        const Shape rd =
            reduction_dims(ctx.attrs->ints("dims"), static_cast<int64_t>(s.size()), "sum");
        return TensorList{expand_reduced_grad(ctx.grad_output(0), s, rd, ctx.attrs->b("keepdim"))};
      });
}

Tensor sum(const Tensor& t, const Shape& dims, bool keepdim) {
  static const OpDef& op = op_named("sum");
  return call_op1(op, {t}, {{"dims", dims}, {"keepdim", keepdim}});
}

Tensor mean(const Tensor& t, const Shape& dims, bool keepdim) {
  MF_CHECK(is_floating(t.dtype()), "mean: expected a floating input, got ", t.dtype(),
           "; convert with to() first");
  const Shape rd = reduction_dims(dims, t.dim(), "mean");
  int64_t n = 1;
  for (int64_t d : rd) n *= t.sizes()[d];
  return sum(t, dims, keepdim) / static_cast<double>(n);
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
