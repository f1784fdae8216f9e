// cat, stack, split, chunk, tril, triu and one_hot: shape rules, backward formulas and
// CPU and CUDA glue. cat and the triangles are registered ops; stack is cat of unsqueezed
// views, split and chunk return narrow views.
#include "ops/shape_ops.h"

#include <algorithm>
#include <string_view>

#include "core/dispatch.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/shape.h"
#include "ops/op_utils.h"

#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/copy.h"
#include "kernels/cuda/shape.h"
#endif

namespace microflex {

namespace {

// PyTorch skips 1-D empty tensors in cat whatever the other shapes are.
bool skipped_in_cat(const Tensor& t) {
  return t.dim() == 1 && t.sizes()[0] == 0;
}

// The first tensor cat does not skip (its shape is the reference), or -1 if none.
int64_t cat_reference(const TensorList& in) {
  for (size_t i = 0; i < in.size(); ++i)
    if (!skipped_in_cat(in[i])) return static_cast<int64_t>(i);
  return -1;
}

std::vector<TensorMeta> cat_meta(const TensorList& in, const Attrs& a) {
  MF_CHECK(!in.empty(), "cat: expected a non-empty list of tensors");
  for (size_t i = 0; i < in.size(); ++i)
    MF_CHECK(in[i].defined(), "cat: tensor ", i, " is undefined");
  const Device dev = common_device(in, "cat");
  const DType dt = result_type(in);
  const int64_t ref = cat_reference(in);
  if (ref < 0) return {make_meta({0}, dt, dev)};
  const Tensor& r = in[static_cast<size_t>(ref)];
  MF_CHECK(r.dim() > 0, "cat: tensor ", ref,
           " is 0-d; zero-dimensional tensors cannot be concatenated");
  const int64_t dim = wrap_dim(a.i("dim"), r.dim(), "cat");
  Shape out = r.sizes();
  out[dim] = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const Tensor& t = in[i];
    if (skipped_in_cat(t)) continue;
    MF_CHECK(t.dim() == r.dim(), "cat: tensor ", i, " has shape ", shape_str(t.sizes()),
             " but tensor ", ref, " has shape ", shape_str(r.sizes()),
             " (they must have the same number of dims)");
    for (int64_t k = 0; k < r.dim(); ++k) {
      MF_CHECK(k == dim || t.sizes()[k] == r.sizes()[k], "cat: tensor ", i, " has shape ",
               shape_str(t.sizes()), " but tensor ", ref, " has shape ", shape_str(r.sizes()),
               " (sizes must match except in dim ", dim, ")");
    }
    out[dim] += t.sizes()[dim];
  }
  return {make_meta(out, dt, dev)};
}

void cat_cpu(const TensorList& in, const Tensor& out, const Attrs& a) {
  if (cat_reference(in) < 0) return;
  const int64_t dim = wrap_dim(a.i("dim"), out.dim(), "cat");
  char* base = static_cast<char*>(out.raw_data());
  int64_t offset = 0;
  for (const Tensor& t : in) {
    if (skipped_in_cat(t)) continue;
    // The slice of out this input fills: t's sizes with out's strides.
    char* dst = base + offset * out.strides()[dim] * out.element_size();
    cpu::copy_convert(dst, out.dtype(), out.strides(), t.raw_data(), t.dtype(), t.strides(),
                      t.sizes());
    offset += t.sizes()[dim];
  }
}

std::vector<TensorMeta> triangle_meta(const char* op, const TensorList& in) {
  MF_CHECK(in[0].dim() >= 2, op, ": expected a tensor with at least 2 dims, got shape ",
           shape_str(in[0].sizes()));
  return {make_meta(in[0].sizes(), in[0].dtype(), in[0].device())};
}

void triangle_cpu(const Tensor& in, const Tensor& out, int64_t diagonal, bool lower) {
  const Tensor s = in.contiguous();
  const int64_t rows = s.sizes()[s.dim() - 2], cols = s.sizes()[s.dim() - 1];
  const int64_t batch = rows * cols == 0 ? 0 : s.numel() / (rows * cols);
  MF_INTERNAL_ASSERT(out.is_contiguous());
  cpu::triangle(out.raw_data(), s.raw_data(), s.element_size(), batch, rows, cols, diagonal, lower);
}

#ifdef MICROFLEX_WITH_CUDA
void cat_cuda(const TensorList& in, const Tensor& out, const Attrs& a) {
  if (cat_reference(in) < 0) return;
  const int64_t dim = wrap_dim(a.i("dim"), out.dim(), "cat");
  char* base = static_cast<char*>(out.raw_data());
  int64_t offset = 0;
  for (const Tensor& t : in) {
    if (skipped_in_cat(t)) continue;
    // The slice of out this input fills: t's sizes with out's strides.
    char* dst = base + offset * out.strides()[dim] * out.element_size();
    cuda::copy_convert(out.device().index, dst, out.dtype(),
                       cuda::make_geometry(t.sizes(), out.strides(), "cat"), t.raw_data(),
                       t.dtype(), cuda::make_geometry(t.sizes(), t.strides(), "cat"));
    offset += t.sizes()[dim];
  }
}

void triangle_cuda(const Tensor& in, const Tensor& out, int64_t diagonal, bool lower) {
  MF_INTERNAL_ASSERT(out.is_contiguous());
  cuda::triangle(out.device().index, out.raw_data(), in.raw_data(), in.element_size(),
                 cuda::make_geometry(in.sizes(), in.strides(), lower ? "tril" : "triu"), diagonal,
                 lower);
}

void one_hot_cuda(const Tensor& ids, const Tensor& out, int64_t num_classes) {
  const Tensor fault =
      Tensor::make({static_cast<int64_t>(sizeof(cuda::IndexFault) / sizeof(int64_t))}, DType::Int64,
                   out.device(), false);
  const cuda::IndexFault f = cuda::one_hot(
      out.device().index, out.data_ptr<int64_t>(), ids.raw_data(), ids.dtype() == DType::Int32,
      cuda::make_geometry(ids.sizes(), ids.strides(), "one_hot"), num_classes, fault.raw_data());
  // The CPU kernel's messages; the id is one the kernel saw, not necessarily the first.
  MF_CHECK(f.bad == 0 || f.value >= 0, "one_hot: class id ", f.value, " is negative");
  MF_CHECK(f.bad == 0, "one_hot: class id ", f.value, " is out of range for num_classes ",
           num_classes);
}
#endif

Tensor triangle_call(const char* name, const Tensor& t, int64_t diagonal) {
  static const OpDef& tril_op = op_named("tril");
  static const OpDef& triu_op = op_named("triu");
  const OpDef& op = std::string_view(name) == "tril" ? tril_op : triu_op;
  return call_op1(op, {t}, {{"diagonal", diagonal}});
}

}  // namespace

void register_shape_ops(Dispatcher& d) {
  d.def("cat")
      .set_meta(cat_meta)
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        cat_cpu(in, out[0], a);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
        cat_cuda(in, out[0], a);
      })
#endif
      .save(0, 0)
      .set_backward([](const BackwardContext& ctx) {
        const std::vector<TensorMeta>& m = ctx.input_metas;
        TensorList r(m.size());
        const Tensor g = ctx.grad_output(0);
        if (g.dim() == 1 && g.sizes()[0] == 0) return r;
        const int64_t dim = wrap_dim(ctx.attrs->i("dim"), g.dim(), "cat");
        int64_t offset = 0;
        for (size_t i = 0; i < m.size(); ++i) {
          if (m[i].sizes.size() == 1 && m[i].sizes[0] == 0) continue;
          const int64_t n = m[i].sizes[static_cast<size_t>(dim)];
          if (ctx.needs(i)) r[i] = g.narrow(dim, offset, n);
          offset += n;
        }
        return r;
      });

  for (const bool lower : {true, false}) {
    const char* name = lower ? "tril" : "triu";
    d.def(name)
        .set_meta([name](const TensorList& in, const Attrs&) { return triangle_meta(name, in); })
        .set_cpu([lower](const TensorList& in, const TensorList& out, const Attrs& a) {
          triangle_cpu(in[0], out[0], a.i("diagonal"), lower);
        })
#ifdef MICROFLEX_WITH_CUDA
        .set_cuda([lower](const TensorList& in, const TensorList& out, const Attrs& a) {
          triangle_cuda(in[0], out[0], a.i("diagonal"), lower);
        })
#endif
        .save(0, 0)
        .set_backward([name](const BackwardContext& ctx) {
          return TensorList{triangle_call(name, ctx.grad_output(0), ctx.attrs->i("diagonal"))};
        });
  }

  d.def("one_hot")
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Tensor& ids = in[0];
        MF_CHECK(ids.dtype() == DType::Int32 || ids.dtype() == DType::Int64,
                 "one_hot: expected an int32 or int64 tensor of class ids, got ", ids.dtype(),
                 shape_str(ids.sizes()));
        const int64_t c = a.i("num_classes");
        MF_CHECK(c >= 1, "one_hot: num_classes must be positive (or -1 to infer it), got ", c);
        Shape out = ids.sizes();
        out.push_back(c);
        return std::vector<TensorMeta>{make_meta(out, DType::Int64, ids.device())};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const Tensor ids = as_dtype(in[0], DType::Int64).contiguous();
        cpu::one_hot(out[0].data_ptr<int64_t>(), ids.data_ptr<int64_t>(), ids.numel(),
                     a.i("num_classes"));
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
        one_hot_cuda(in[0], out[0], a.i("num_classes"));
      })
#endif
      .non_differentiable();
}

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  static const OpDef& op = op_named("cat");
  return call_op1(op, tensors, {{"dim", dim}});
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  MF_CHECK(!tensors.empty(), "stack: expected a non-empty list of tensors");
  const Tensor& r = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) {
    MF_CHECK(tensors[i].defined(), "stack: tensor ", i, " is undefined");
    MF_CHECK(tensors[i].sizes() == r.sizes(), "stack: tensor ", i, " has shape ",
             shape_str(tensors[i].sizes()), " but tensor 0 has shape ", shape_str(r.sizes()),
             " (all tensors must have the same shape)");
  }
  common_device(tensors, "stack");
  const int64_t d = wrap_dim(dim, r.dim() + 1, "stack");
  std::vector<Tensor> parts;
  parts.reserve(tensors.size());
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(d));
  return cat(parts, d);
}

namespace {

// The parts as one split_with_sizes node (Note [split as one node]); `d` is wrapped.
std::vector<Tensor> split_call(const Tensor& t, const std::vector<int64_t>& sizes, int64_t d) {
  static const OpDef& op = op_named("split_with_sizes");
  if (sizes.size() == 1) return {t};
  const TensorList parts = call_op(op, {t}, {{"dim", d}, {"sizes", Shape(sizes)}});
  return std::vector<Tensor>(parts.begin(), parts.end());
}

}  // namespace

std::vector<Tensor> split(const Tensor& t, int64_t split_size, int64_t dim) {
  MF_CHECK(t.defined(), "split: the tensor is undefined");
  MF_CHECK(t.dim() > 0, "split: cannot split a 0-d tensor");
  const int64_t d = wrap_dim(dim, t.dim(), "split");
  const int64_t n = t.sizes()[d];
  MF_CHECK(split_size > 0 || (split_size == 0 && n == 0),
           "split: split_size must be positive, got ", split_size, " for dim ", d, " of size ", n);
  if (n == 0) return {t};
  std::vector<int64_t> sizes;
  for (int64_t start = 0; start < n; start += split_size)
    sizes.push_back(std::min(split_size, n - start));
  return split_call(t, sizes, d);
}

std::vector<Tensor> split(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim) {
  MF_CHECK(t.defined(), "split: the tensor is undefined");
  MF_CHECK(t.dim() > 0, "split: cannot split a 0-d tensor");
  const int64_t d = wrap_dim(dim, t.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    MF_CHECK(s >= 0, "split: sizes must be non-negative, got ", shape_str(sizes));
    total += s;
  }
  MF_CHECK(total == t.sizes()[d], "split: sizes ", shape_str(sizes), " sum to ", total, " but dim ",
           d, " of shape ", shape_str(t.sizes()), " has size ", t.sizes()[d]);
  return split_call(t, sizes, d);
}

std::vector<Tensor> chunk(const Tensor& t, int64_t chunks, int64_t dim) {
  MF_CHECK(chunks > 0, "chunk: chunks must be positive, got ", chunks);
  MF_CHECK(t.defined(), "chunk: the tensor is undefined");
  MF_CHECK(t.dim() > 0, "chunk: cannot chunk a 0-d tensor");
  const int64_t d = wrap_dim(dim, t.dim(), "chunk");
  const int64_t n = t.sizes()[d];
  return split(t, std::max<int64_t>((n + chunks - 1) / chunks, 1), d);
}

Tensor tril(const Tensor& t, int64_t diagonal) {
  return triangle_call("tril", t, diagonal);
}
Tensor triu(const Tensor& t, int64_t diagonal) {
  return triangle_call("triu", t, diagonal);
}

Tensor one_hot(const Tensor& ids, int64_t num_classes) {
  MF_CHECK(num_classes == -1 || num_classes >= 1,
           "one_hot: num_classes must be positive (or -1 to infer it), got ", num_classes);
  if (num_classes == -1) {
    MF_CHECK(!ids.is_fake(),
             "one_hot: num_classes=-1 reads the ids to find the class count, "
             "which a fake tensor cannot; pass num_classes");
    MF_CHECK(ids.numel() > 0, "one_hot: cannot infer num_classes from an empty tensor of shape ",
             shape_str(ids.sizes()), "; pass num_classes");
    MF_CHECK(ids.dtype() == DType::Int32 || ids.dtype() == DType::Int64,
             "one_hot: expected an int32 or int64 tensor of class ids, got ", ids.dtype(),
             shape_str(ids.sizes()));
    int64_t mx = 0;
    for (int64_t v : ids.to_vector<int64_t>()) mx = std::max(mx, v);
    num_classes = mx + 1;  // negative ids are reported by the kernel
  }
  static const OpDef& op = op_named("one_hot");
  return call_op1(op, {ids}, {{"num_classes", num_classes}});
}

}  // namespace microflex
