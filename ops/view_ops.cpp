// View ops: view/reshape, permute/transpose, expand, slice/narrow, select,
// unsqueeze/squeeze, flatten. Outputs share storage with their input (Note [Views]).
#include <algorithm>
#include <numeric>
#include <optional>

#include "core/dispatch.h"
#include "ops/copy_ops.h"
#include "ops/op_utils.h"
#include "ops/shape_ops.h"

namespace microflex {

// Note [Views]
// A view is a new TensorImpl over the same Storage with its own sizes, strides and
// offset, so writes through it land in the base and the version counter is shared.
// View kernels touch only metadata, so the same function serves every backend and fake
// mode (a view of a fake tensor is fake and aliases the same fake storage).

namespace {

Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  impl->storage = base.storage();
  return Tensor(std::move(impl));
}

Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Shape& from) {
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      MF_CHECK(infer < 0, op, ": only one dimension can be -1, got ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MF_CHECK(out[i] >= 0, op, ": invalid size ", out[i], " in shape ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    MF_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(shape),
             " is invalid for input of shape ", shape_str(from), " (", numel, " elements)");
    out[infer] = numel / known;
  }
  MF_CHECK(shape_numel(out) == numel, op, ": shape ", shape_str(shape),
           " is invalid for input of shape ", shape_str(from), " (", numel, " elements)");
  return out;
}

// Strides for viewing (old_sizes, old_strides) as new_sizes without a copy, if any.
std::optional<Shape> view_strides(const Shape& old_sizes, const Shape& old_strides,
                                  const Shape& new_sizes) {
  Shape ns(new_sizes.size(), 0);
  if (old_sizes.empty()) return contiguous_strides(new_sizes);
  if (shape_numel(old_sizes) == 0) return contiguous_strides(new_sizes);
  int64_t view_d = static_cast<int64_t>(new_sizes.size()) - 1;
  int64_t chunk_base = old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_sizes.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_sizes[d];
    // A chunk ends where the next-outer dim is not contiguous with this one.
    if (d == 0 || (old_sizes[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_sizes[view_d] == 1)) {
        ns[view_d] = view_numel * chunk_base;
        view_numel *= new_sizes[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return ns;
}

Shape inverse_perm(const Shape& p) {
  Shape inv(p.size());
  for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = static_cast<int64_t>(i);
  return inv;
}

TensorMeta shaped(const Tensor& t, const Shape& s) {
  return {s, t.dtype(), t.device()};
}

}  // namespace

void register_view_ops(Dispatcher& d) {
  d.def("view")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const Shape s = infer_shape(a.ints("shape"), t.numel(), "view", t.sizes());
        auto st = view_strides(t.sizes(), t.strides(), s);
        MF_CHECK(st.has_value(), "view: cannot view a tensor of shape ", shape_str(t.sizes()),
                 " and strides ", shape_str(t.strides()), " as ", shape_str(s),
                 " without a copy; use reshape");
        return TensorList{make_view(t, s, *st, t.storage_offset())};
      })
      .set_meta([](const TensorList& in, const Attrs& a) {
        return std::vector<TensorMeta>{
            shaped(in[0], infer_shape(a.ints("shape"), in[0].numel(), "view", in[0].sizes()))};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{ctx.grad_output(0).reshape(ctx.input_metas[0].sizes)};
      });

  d.def("permute")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const Shape& p = a.ints("dims");
        MF_CHECK(static_cast<int64_t>(p.size()) == t.dim(), "permute: ", p.size(),
                 " dims given for a tensor with ", t.dim(), " dims");
        Shape sizes(p.size()), strides(p.size());
        std::vector<bool> seen(p.size(), false);
        for (size_t i = 0; i < p.size(); ++i) {
          const int64_t s = wrap_dim(p[i], t.dim(), "permute");
          MF_CHECK(!seen[s], "permute: dim ", s, " repeats in ", shape_str(p));
          seen[s] = true;
          sizes[i] = t.sizes()[s];
          strides[i] = t.strides()[s];
        }
        return TensorList{make_view(t, sizes, strides, t.storage_offset())};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        Shape p = ctx.attrs->ints("dims");
        for (auto& x : p) x = wrap_dim(x, static_cast<int64_t>(p.size()), "permute");
        return TensorList{ctx.grad_output(0).permute(inverse_perm(p))};
      });

  d.def("expand")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const Shape& want = a.ints("shape");
        MF_CHECK(static_cast<int64_t>(want.size()) >= t.dim(), "expand: cannot expand shape ",
                 shape_str(t.sizes()), " to ", shape_str(want), " (fewer dims)");
        const size_t lead = want.size() - static_cast<size_t>(t.dim());
        Shape sizes(want.size()), strides(want.size(), 0);
        for (size_t i = 0; i < want.size(); ++i) {
          if (i < lead) {
            MF_CHECK(want[i] >= 0, "expand: invalid size ", want[i], " in ", shape_str(want));
            sizes[i] = want[i];
            continue;
          }
          const int64_t have = t.sizes()[i - lead];
          const int64_t w = want[i] == -1 ? have : want[i];
          MF_CHECK(w >= 0, "expand: invalid size ", want[i], " in ", shape_str(want));
          MF_CHECK(have == w || have == 1, "expand: cannot expand shape ", shape_str(t.sizes()),
                   " to ", shape_str(want), " (dim ", i, ": ", have, " vs ", w, ")");
          sizes[i] = w;
          strides[i] = have == w ? t.strides()[i - lead] : 0;
        }
        return TensorList{make_view(t, sizes, strides, t.storage_offset())};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{sum_to(ctx.grad_output(0), ctx.input_metas[0].sizes)};
      });

  d.def("slice")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        MF_CHECK(t.dim() > 0, "slice: cannot slice a 0-d tensor");
        const int64_t dim = wrap_dim(a.i("dim"), t.dim(), "slice");
        const int64_t n = t.sizes()[dim];
        int64_t start = a.i("start"), end = a.i("end");
        const int64_t step = a.i("step");
        MF_CHECK(step > 0, "slice: step must be positive, got ", step);
        if (start < 0) start += n;
        if (end < 0) end += n;
        start = std::clamp<int64_t>(start, 0, n);
        end = std::clamp<int64_t>(end, start, n);
        Shape sizes = t.sizes(), strides = t.strides();
        sizes[dim] = (end - start + step - 1) / step;
        strides[dim] *= step;
        return TensorList{
            make_view(t, sizes, strides, t.storage_offset() + start * t.strides()[dim])};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const TensorMeta& m = ctx.input_metas[0];
        Tensor g = zeros(m.sizes, {.dtype = m.dtype, .device = m.device});
        Tensor part = g.slice(ctx.attrs->i("dim"), ctx.attrs->i("start"), ctx.attrs->i("end"),
                              ctx.attrs->i("step"));
        part.copy_(ctx.grad_output(0));
        return TensorList{g};
      });

  // Note [split as one node]
  // split returns narrow views of its input from one op with an output per part, so its
  // backward is a single cat of the parts' gradients (zeros for a part without one). As
  // separate slices, each part's backward would fill a full-size zero tensor, copy its
  // part in and sum the results: three full writes and two adds for a q/k/v split.
  d.def("split_with_sizes")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const int64_t dim = a.i("dim");  // wrapped and checked by split()
        TensorList out;
        int64_t start = 0;
        for (int64_t n : a.ints("sizes")) {
          Shape sizes = t.sizes();
          sizes[dim] = n;
          out.push_back(
              make_view(t, sizes, t.strides(), t.storage_offset() + start * t.strides()[dim]));
          start += n;
        }
        return out;
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        TensorList parts;
        for (size_t i = 0; i < ctx.output_metas.size(); ++i) parts.push_back(ctx.grad_output(i));
        return TensorList{cat(parts, ctx.attrs->i("dim"))};
      });

  d.def("select")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        MF_CHECK(t.dim() > 0, "select: cannot select from a 0-d tensor");
        const int64_t dim = wrap_dim(a.i("dim"), t.dim(), "select");
        const int64_t n = t.sizes()[dim];
        int64_t idx = a.i("index");
        MF_CHECK(idx >= -n && idx < n, "select: index ", idx, " is out of range for dim ", dim,
                 " of size ", n);
        if (idx < 0) idx += n;
        Shape sizes = t.sizes(), strides = t.strides();
        sizes.erase(sizes.begin() + dim);
        strides.erase(strides.begin() + dim);
        return TensorList{
            make_view(t, sizes, strides, t.storage_offset() + idx * t.strides()[dim])};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const TensorMeta& m = ctx.input_metas[0];
        Tensor g = zeros(m.sizes, {.dtype = m.dtype, .device = m.device});
        Tensor part = g.select(ctx.attrs->i("dim"), ctx.attrs->i("index"));
        part.copy_(ctx.grad_output(0));
        return TensorList{g};
      });

  // Inserting or removing size-1 dims is a reshape that always succeeds as a view.
  d.def("unsqueeze")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const int64_t dim = wrap_dim(a.i("dim"), t.dim() + 1, "unsqueeze");
        Shape sizes = t.sizes(), strides = t.strides();
        const int64_t st = dim < t.dim() ? t.strides()[dim] * t.sizes()[dim] : 1;
        sizes.insert(sizes.begin() + dim, 1);
        strides.insert(strides.begin() + dim, st);
        return TensorList{make_view(t, sizes, strides, t.storage_offset())};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{ctx.grad_output(0).reshape(ctx.input_metas[0].sizes)};
      });

  d.def("squeeze")
      .set_view([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        Shape sizes, strides;
        const bool all = !a.has("dim");
        const int64_t dim = all ? -1 : wrap_dim(a.i("dim"), t.dim(), "squeeze");
        for (int64_t i = 0; i < t.dim(); ++i) {
          if (t.sizes()[i] == 1 && (all || i == dim)) continue;
          sizes.push_back(t.sizes()[i]);
          strides.push_back(t.strides()[i]);
        }
        return TensorList{make_view(t, sizes, strides, t.storage_offset())};
      })
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{ctx.grad_output(0).reshape(ctx.input_metas[0].sizes)};
      });
}

Tensor Tensor::view(const Shape& shape) const {
  static const OpDef& op = op_named("view");
  return call_op1(op, {*this}, {{"shape", shape}});
}

Tensor Tensor::reshape(const Shape& shape) const {
  const Shape s = infer_shape(shape, numel(), "reshape", sizes());
  if (s == sizes()) return *this;
  if (view_strides(sizes(), strides(), s)) return view(s);
  return contiguous().view(s);
}

Tensor Tensor::permute(const Shape& dims) const {
  static const OpDef& op = op_named("permute");
  return call_op1(op, {*this}, {{"dims", dims}});
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  if (d0 == d1) return *this;
  Shape p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[d0], p[d1]);
  return permute(p);
}

Tensor Tensor::t() const {
  MF_CHECK(dim() <= 2, "t: expects a tensor with at most 2 dims, got shape ", shape_str(sizes()));
  return dim() < 2 ? *this : transpose(0, 1);
}

Tensor Tensor::expand(const Shape& shape) const {
  if (shape == sizes()) return *this;
  static const OpDef& op = op_named("expand");
  return call_op1(op, {*this}, {{"shape", shape}});
}

Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  static const OpDef& op = op_named("slice");
  return call_op1(op, {*this}, {{"dim", dim}, {"start", start}, {"end", end}, {"step", step}});
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  const int64_t d = wrap_dim(dim_, dim(), "narrow");
  const int64_t n = sizes()[d];
  MF_CHECK(start >= -n && start <= n, "narrow: start ", start, " is out of range for dim ", d,
           " of size ", n);
  if (start < 0) start += n;
  MF_CHECK(length >= 0 && start + length <= n, "narrow: start ", start, " + length ", length,
           " exceeds dim ", d, " of size ", n);
  return slice(d, start, start + length, 1);
}

Tensor Tensor::select(int64_t dim, int64_t index) const {
  static const OpDef& op = op_named("select");
  return call_op1(op, {*this}, {{"dim", dim}, {"index", index}});
}

Tensor Tensor::unsqueeze(int64_t dim) const {
  static const OpDef& op = op_named("unsqueeze");
  return call_op1(op, {*this}, {{"dim", dim}});
}

Tensor Tensor::squeeze() const {
  static const OpDef& op = op_named("squeeze");
  return call_op1(op, {*this});
}

Tensor Tensor::squeeze(int64_t dim) const {
  static const OpDef& op = op_named("squeeze");
  return call_op1(op, {*this}, {{"dim", dim}});
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int64_t s = wrap_dim(start_dim, dim(), "flatten");
  const int64_t e = wrap_dim(end_dim, dim(), "flatten");
  MF_CHECK(s <= e, "flatten: start_dim ", s, " is after end_dim ", e);
  Shape out(sizes().begin(), sizes().begin() + s);
  int64_t n = 1;
  for (int64_t i = s; i <= e; ++i) n *= sizes()[i];
  out.push_back(n);
  out.insert(out.end(), sizes().begin() + e + 1, sizes().end());
  return reshape(out);
}

}  // namespace microflex
