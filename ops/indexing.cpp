// index, index_backward, gather, index_select, embedding and masked_fill: shape rules,
// backward formulas and the CPU and CUDA glue. Every gather-like op is advanced indexing
// of its source by a list of broadcasting index tensors (Note [Index lists]); all of them
// share one backward, the registered scatter-add op index_backward.
#include "ops/indexing.h"

#include <cstring>

#include "core/dispatch.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/indexing.h"
#include "kernels/cpu/loops.h"
#include "ops/elementwise.h"
#include "ops/op_utils.h"
#include "ops/reduction.h"

#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/indexing.h"
#endif

namespace microflex {

// Note [Index lists]
// index(t, {i_0, ..., i_{k-1}}) selects t[i_0[p], ..., i_{k-1}[p], :] for every position
// p of the index tensors' broadcast shape P. gather and index_select are the same with
// a list built from their arguments: the given index at `dim` and, at every other dim d
// before it (after it too, for gather), arange(n_d) shaped to vary along d only. So one
// CPU kernel computes all of them, and their backward is one scatter-add
// (index_backward), which runs in a fixed order and accumulates duplicate indices.

namespace {

bool is_index_dtype(DType t) {
  return t == DType::Int32 || t == DType::Int64;
}

// The broadcast shape P of an index list into a source of shape `src`; checks the
// count and dtypes of the indices.
Shape index_list_shape(const char* op, const Shape& src, const TensorList& idx) {
  MF_CHECK(!idx.empty(), op, ": expected at least one index tensor");
  MF_CHECK(idx.size() <= src.size(), op, ": too many indices (", idx.size(),
           ") for a tensor of shape ", shape_str(src));
  std::vector<Shape> shapes;
  for (size_t j = 0; j < idx.size(); ++j) {
    MF_CHECK(idx[j].defined(), op, ": index ", j, " is undefined");
    MF_CHECK(is_index_dtype(idx[j].dtype()), op, ": index ", j, " has dtype ", idx[j].dtype(),
             "; expected int32 or int64 (use masked_fill for bool masks)");
    shapes.push_back(idx[j].sizes());
  }
  return broadcast_shapes(shapes, op);
}

// P + src[k:]: the shape an index list of k tensors selects.
Shape indexed_shape(const Shape& P, const Shape& src, size_t k) {
  Shape out = P;
  out.insert(out.end(), src.begin() + static_cast<int64_t>(k), src.end());
  return out;
}

int64_t inner_numel(const Shape& src, size_t k) {
  int64_t n = 1;
  for (size_t d = k; d < src.size(); ++d) n *= src[d];
  return n;
}

// The rows of a contiguous source of shape `src` that an index list selects (CPU).
// Embedding ids are row numbers: unlike the other indexing ops, a negative id does not
// count from the end.
bool wraps_negative(const char* op) {
  return std::strcmp(op, "embedding") != 0;
}

std::vector<int64_t> index_rows_cpu(const char* op, const Shape& src, const TensorList& idx) {
  cpu::IndexList list;
  list.shape = index_list_shape(op, src, idx);
  TensorList keep;  // int64 copies of int32 indices live until the rows are computed
  for (const Tensor& i : idx) {
    const Tensor t = as_dtype(i, DType::Int64);
    keep.push_back(t);
    list.data.push_back(t.data_ptr<int64_t>());
    list.strides.push_back(broadcast_strides(t, list.shape));
  }
  return cpu::index_rows(list, Shape(src.begin(), src.begin() + static_cast<int64_t>(idx.size())),
                         op, wraps_negative(op));
}

void index_cpu(const char* op, const Tensor& src, const TensorList& idx, const Tensor& out) {
  const std::vector<int64_t> rows = index_rows_cpu(op, src.sizes(), idx);
  const Tensor s = src.contiguous();
  MF_INTERNAL_ASSERT(out.is_contiguous());
  cpu::index_gather(out.raw_data(), s.raw_data(), rows, inner_numel(src.sizes(), idx.size()),
                    s.element_size());
}

void index_backward_cpu(const Tensor& grad, const TensorList& idx, const Tensor& out) {
  const Shape& sizes = out.sizes();
  const std::vector<int64_t> rows = index_rows_cpu("index_backward", sizes, idx);
  // 16-bit gradients accumulate in float32 and are rounded once at the end.
  const DType acc = grad.dtype() == DType::Float16 || grad.dtype() == DType::BFloat16
                        ? DType::Float32
                        : grad.dtype();
  const Tensor g = as_dtype(grad, acc).contiguous();
  const Tensor buf = acc == out.dtype() ? out : Tensor::make(sizes, acc, out.device(), false);
  cpu::fill(buf.raw_data(), acc, buf.strides(), sizes, 0.0, 0, false);
  cpu::index_scatter_add(acc, buf.raw_data(), g.raw_data(), rows, inner_numel(sizes, idx.size()));
  if (!buf.is_same(out)) {
    cpu::copy_convert(out.raw_data(), out.dtype(), out.strides(), buf.raw_data(), acc,
                      buf.strides(), sizes);
  }
}

Tensor arange_along(int64_t n, int64_t d, int64_t ndim, Device device) {
  Shape s(static_cast<size_t>(ndim), 1);
  s[static_cast<size_t>(d)] = n;
  return arange(n, {.dtype = DType::Int64, .device = device}).view(s);
}

// Note [Index lists]: index(t, gather_list(index, dim)) == gather(t, dim, index).
TensorList gather_list(const Tensor& index, int64_t dim) {
  TensorList list;
  for (int64_t d = 0; d < index.dim(); ++d)
    list.push_back(d == dim ? index
                            : arange_along(index.sizes()[d], d, index.dim(), index.device()));
  return list;
}

// Note [Index lists]: index(t, select_list(t.sizes(), index, dim)) == index_select(t, dim, index).
TensorList select_list(const Shape& src, const Tensor& index, int64_t dim) {
  TensorList list;
  for (int64_t d = 0; d < dim; ++d)
    list.push_back(arange_along(src[d], d, dim + 1, index.device()));
  Shape s(static_cast<size_t>(dim + 1), 1);
  s.back() = index.numel();
  list.push_back(index.reshape(s));
  return list;
}

TensorList tail(const TensorList& in) {
  return TensorList(in.begin() + 1, in.end());
}

void masked_fill_cpu(const Tensor& t, const Tensor& mask, const Tensor& value, const Tensor& out) {
  // The 0-d value may live on a GPU (the shape rule only ties t and mask to one device).
  const Tensor v = as_dtype(value.is_cpu() ? value : value.to(Device::cpu()), out.dtype());
  const Shape st = broadcast_strides(t, out.sizes()), sm = broadcast_strides(mask, out.sizes());
  MF_DISPATCH_ALL(out.dtype(), "masked_fill", [&] {
    using T = scalar_t;
    const T fill = *v.data_ptr<T>();
    cpu::binary_loop(out.data_ptr<T>(), t.data_ptr<T>(), mask.data_ptr<bool>(), out.sizes(),
                     out.strides(), st, sm, [fill](T x, bool m) { return m ? fill : x; });
  });
}

#ifdef MICROFLEX_WITH_CUDA
// The GPU reads the index tensors in place (int32 or int64, broadcast by strides) and
// checks their bounds on the device: a bad index reads and writes nothing, is recorded
// in a small device buffer and read back after the kernel (a stream sync), then raised
// with the CPU path's message (naming a bad value the kernel saw, not necessarily the
// first one).

cuda::IndexArgs index_args_cuda(const char* op, const Shape& src, const TensorList& idx) {
  const Shape P = index_list_shape(op, src, idx);
  MF_CHECK(src.size() <= static_cast<size_t>(cuda::kMaxDims), op,
           ": CUDA kernels support sources of at most ", cuda::kMaxDims, " dims, got shape ",
           shape_str(src));
  MF_CHECK(P.size() <= static_cast<size_t>(cuda::kMaxDims), op,
           ": CUDA kernels support index shapes of at most ", cuda::kMaxDims, " dims, got ",
           shape_str(P));
  cuda::IndexArgs a;
  a.wrap_negative = wraps_negative(op);
  a.k = static_cast<int>(idx.size());
  a.ndim = static_cast<int>(P.size());
  for (size_t d = 0; d < P.size(); ++d) a.P[d] = P[d];
  for (size_t j = 0; j < idx.size(); ++j) {
    a.data[j] = idx[j].raw_data();
    a.is_int32[j] = idx[j].dtype() == DType::Int32;
    const Shape st = broadcast_strides(idx[j], P);
    for (size_t d = 0; d < P.size(); ++d) a.strides[j][d] = st[d];
  }
  return a;
}

Tensor fault_buffer(Device device) {
  return Tensor::make({static_cast<int64_t>(sizeof(cuda::IndexFault) / sizeof(int64_t))},
                      DType::Int64, device, false);
}

void raise_fault(const char* op, const cuda::IndexFault& f, const Shape& src) {
  MF_CHECK(f.bad == 0, op, ": index ", f.value, " is out of bounds for dim ", f.dim, " with size ",
           src[static_cast<size_t>(f.dim)]);
}

void index_cuda(const char* op, const Tensor& src, const TensorList& idx, const Tensor& out) {
  const cuda::IndexArgs a = index_args_cuda(op, src.sizes(), idx);
  const Tensor fault = fault_buffer(out.device());
  MF_INTERNAL_ASSERT(out.is_contiguous());
  const cuda::IndexFault f =
      cuda::index_gather(out.device().index, out.raw_data(), src.raw_data(), src.element_size(),
                         cuda::make_geometry(src.sizes(), src.strides(), op), a, fault.raw_data());
  raise_fault(op, f, src.sizes());
}

void index_backward_cuda(const Tensor& grad, const TensorList& idx, const Tensor& out) {
  const Shape& sizes = out.sizes();
  const cuda::IndexArgs a = index_args_cuda("index_backward", sizes, idx);
  // 16-bit gradients accumulate in float32 and are rounded once at the end.
  const bool half = out.dtype() == DType::Float16 || out.dtype() == DType::BFloat16;
  const Tensor acc = half ? Tensor::make(sizes, DType::Float32, out.device(), false) : Tensor();
  const Tensor fault = fault_buffer(out.device());
  MF_INTERNAL_ASSERT(out.is_contiguous());
  const cuda::IndexFault f = cuda::index_scatter_add(
      out.device().index, out.dtype(), out.raw_data(),
      cuda::make_geometry(sizes, out.strides(), "index_backward"), grad.raw_data(),
      cuda::make_geometry(grad.sizes(), grad.strides(), "index_backward"), a,
      half ? acc.raw_data() : nullptr, fault.raw_data());
  raise_fault("index_backward", f, sizes);
}

void masked_fill_cuda(const Tensor& t, const Tensor& mask, const Tensor& value, const Tensor& out) {
  const Shape& sz = out.sizes();
  const cuda::Geometry og = cuda::make_geometry(sz, out.strides(), "masked_fill");
  const cuda::Geometry tg = cuda::make_geometry(sz, broadcast_strides(t, sz), "masked_fill");
  const cuda::Geometry mg = cuda::make_geometry(sz, broadcast_strides(mask, sz), "masked_fill");
  const int dev = out.device().index;
  if (value.is_cuda()) {
    // Read on the device: no sync for a value that lives there.
    const Tensor v = as_dtype(value, out.dtype());
    cuda::masked_fill(dev, out.dtype(), out.raw_data(), og, t.raw_data(), tg, mask.raw_data(), mg,
                      v.raw_data(), 0.0, 0, false);
  } else {
    cuda::masked_fill(dev, out.dtype(), out.raw_data(), og, t.raw_data(), tg, mask.raw_data(), mg,
                      nullptr, value.item<double>(), value.item<int64_t>(),
                      is_floating(value.dtype()));
  }
}
#endif

}  // namespace

void register_indexing_ops(Dispatcher& d) {
  // in: {t, index_0, ..., index_{k-1}}
  d.def("index")
      .set_meta([](const TensorList& in, const Attrs&) {
        const TensorList idx = tail(in);
        const Shape P = index_list_shape("index", in[0].sizes(), idx);
        return std::vector<TensorMeta>{make_meta(indexed_shape(P, in[0].sizes(), idx.size()),
                                                 in[0].dtype(), common_device(in, "index"))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_cpu("index", in[0], tail(in), out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_cuda("index", in[0], tail(in), out[0]);
      })
#endif
      .save(~1ull, 0)
      .set_backward([](const BackwardContext& ctx) {
        TensorList r(ctx.input_metas.size());
        if (ctx.needs(0))
          r[0] = index_backward(ctx.grad_output(0), tail(ctx.inputs), ctx.input_metas[0].sizes);
        return r;
      });

  // in: {grad, index_0, ..., index_{k-1}}; attr sizes: the indexed source's shape.
  d.def("index_backward")
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Shape& sizes = a.ints("sizes");
        const TensorList idx = tail(in);
        const Shape P = index_list_shape("index_backward", sizes, idx);
        const Shape want = indexed_shape(P, sizes, idx.size());
        MF_CHECK(in[0].sizes() == want, "index_backward: grad of shape ", shape_str(in[0].sizes()),
                 " does not match the indexed shape ", shape_str(want), " of a source of shape ",
                 shape_str(sizes));
        MF_CHECK(in[0].dtype() != DType::Bool, "index_backward: grad must be numeric, got bool");
        return std::vector<TensorMeta>{
            make_meta(sizes, in[0].dtype(), common_device(in, "index_backward"))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_backward_cpu(in[0], tail(in), out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_backward_cuda(in[0], tail(in), out[0]);
      })
#endif
      .save(~1ull, 0)
      .set_backward([](const BackwardContext& ctx) {
        TensorList r(ctx.input_metas.size());
        if (ctx.needs(0)) r[0] = index(ctx.grad_output(0), tail(ctx.inputs));
        return r;
      });

  d.def("gather")
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const Tensor& idx = in[1];
        MF_CHECK(t.dim() >= 1, "gather: expected an input with at least 1 dim, got shape ",
                 shape_str(t.sizes()));
        const int64_t dim = wrap_dim(a.i("dim"), t.dim(), "gather");
        MF_CHECK(is_index_dtype(idx.dtype()), "gather: index must be int32 or int64, got ",
                 idx.dtype());
        MF_CHECK(idx.dim() == t.dim(), "gather: index of shape ", shape_str(idx.sizes()),
                 " must have as many dims as the input of shape ", shape_str(t.sizes()));
        for (int64_t k = 0; k < t.dim(); ++k) {
          MF_CHECK(k == dim || idx.sizes()[k] <= t.sizes()[k], "gather: index of shape ",
                   shape_str(idx.sizes()), " is larger than the input of shape ",
                   shape_str(t.sizes()), " in dim ", k, " (", idx.sizes()[k], " > ", t.sizes()[k],
                   ")");
        }
        return std::vector<TensorMeta>{
            make_meta(idx.sizes(), t.dtype(), common_device(in, "gather"))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), "gather");
        index_cpu("gather", in[0], gather_list(in[1], dim), out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), "gather");
        index_cuda("gather", in[0], gather_list(in[1], dim), out[0]);
      })
#endif
      .save(0b10, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Shape& sizes = ctx.input_metas[0].sizes;
        const int64_t dim =
            wrap_dim(ctx.attrs->i("dim"), static_cast<int64_t>(sizes.size()), "gather");
        return TensorList{
            index_backward(ctx.grad_output(0), gather_list(ctx.inputs[1], dim), sizes), Tensor()};
      });

  d.def("index_select")
      .set_meta([](const TensorList& in, const Attrs& a) {
        const Tensor& t = in[0];
        const Tensor& idx = in[1];
        MF_CHECK(t.dim() >= 1, "index_select: expected an input with at least 1 dim, got shape ",
                 shape_str(t.sizes()));
        const int64_t dim = wrap_dim(a.i("dim"), t.dim(), "index_select");
        MF_CHECK(idx.dim() <= 1, "index_select: index must be 0-d or 1-D, got shape ",
                 shape_str(idx.sizes()));
        MF_CHECK(is_index_dtype(idx.dtype()), "index_select: index must be int32 or int64, got ",
                 idx.dtype());
        Shape out = t.sizes();
        out[static_cast<size_t>(dim)] = idx.numel();
        return std::vector<TensorMeta>{
            make_meta(out, t.dtype(), common_device(in, "index_select"))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), "index_select");
        index_cpu("index_select", in[0], select_list(in[0].sizes(), in[1], dim), out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs& a) {
        const int64_t dim = wrap_dim(a.i("dim"), in[0].dim(), "index_select");
        index_cuda("index_select", in[0], select_list(in[0].sizes(), in[1], dim), out[0]);
      })
#endif
      .save(0b10, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Shape& sizes = ctx.input_metas[0].sizes;
        const int64_t dim =
            wrap_dim(ctx.attrs->i("dim"), static_cast<int64_t>(sizes.size()), "index_select");
        return TensorList{
            index_backward(ctx.grad_output(0), select_list(sizes, ctx.inputs[1], dim), sizes),
            Tensor()};
      });

  // weight [V, D], ids [*] -> [*, D]
  d.def("embedding")
      .set_meta([](const TensorList& in, const Attrs&) {
        const Tensor& w = in[0];
        const Tensor& ids = in[1];
        MF_CHECK(w.dim() == 2,
                 "embedding: weight must be 2-D [num_embeddings, embedding_dim], got shape ",
                 shape_str(w.sizes()));
        MF_CHECK(is_index_dtype(ids.dtype()), "embedding: ids must be int32 or int64, got ",
                 ids.dtype());
        Shape out = ids.sizes();
        out.push_back(w.sizes()[1]);
        return std::vector<TensorMeta>{make_meta(out, w.dtype(), common_device(in, "embedding"))};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_cpu("embedding", in[0], {in[1]}, out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        index_cuda("embedding", in[0], {in[1]}, out[0]);
      })
#endif
      .save(0b10, 0)
      .set_backward([](const BackwardContext& ctx) {
        return TensorList{
            index_backward(ctx.grad_output(0), {ctx.inputs[1]}, ctx.input_metas[0].sizes),
            Tensor()};
      });

  // in: {t, mask (bool), value (0-d)}
  d.def("masked_fill")
      .set_meta([](const TensorList& in, const Attrs&) {
        const Tensor& t = in[0];
        const Tensor& mask = in[1];
        const Tensor& value = in[2];
        MF_CHECK(mask.dtype() == DType::Bool, "masked_fill: mask must be bool, got ", mask.dtype(),
                 shape_str(mask.sizes()));
        MF_CHECK(value.dim() == 0, "masked_fill: value must be a 0-d tensor, got shape ",
                 shape_str(value.sizes()));
        const Device dev = common_device({t, mask}, "masked_fill");
        // A 0-d CPU value may fill a tensor on any device (it is read on the host).
        MF_CHECK(value.device() == dev || value.is_cpu(), "masked_fill: value is on ",
                 value.device(), " but the tensor is on ", dev);
        return std::vector<TensorMeta>{
            make_meta(broadcast_shapes(t.sizes(), mask.sizes(), "masked_fill"), t.dtype(), dev)};
      })
      .set_cpu([](const TensorList& in, const TensorList& out, const Attrs&) {
        masked_fill_cpu(in[0], in[1], in[2], out[0]);
      })
#ifdef MICROFLEX_WITH_CUDA
      .set_cuda([](const TensorList& in, const TensorList& out, const Attrs&) {
        masked_fill_cuda(in[0], in[1], in[2], out[0]);
      })
#endif
      .save(0b010, 0)
      .set_backward([](const BackwardContext& ctx) {
        const Tensor g = ctx.grad_output(0);
        const Tensor& mask = ctx.inputs[1];
        TensorList r(3);
        if (ctx.needs(0)) r[0] = sum_to(masked_fill(g, mask, Scalar(0)), ctx.input_metas[0].sizes);
        if (ctx.needs(2)) r[2] = sum(mul(g, mask));
        return r;
      });
}

Tensor index(const Tensor& t, const std::vector<Tensor>& indices) {
  static const OpDef& op = op_named("index");
  TensorList in{t};
  in.insert(in.end(), indices.begin(), indices.end());
  return call_op1(op, in);
}

Tensor Tensor::index(const std::vector<Tensor>& indices) const {
  return microflex::index(*this, indices);
}

Tensor index_backward(const Tensor& grad, const std::vector<Tensor>& indices, const Shape& sizes) {
  static const OpDef& op = op_named("index_backward");
  TensorList in{grad};
  in.insert(in.end(), indices.begin(), indices.end());
  return call_op1(op, in, {{"sizes", sizes}});
}

Tensor gather(const Tensor& t, int64_t dim, const Tensor& index) {
  static const OpDef& op = op_named("gather");
  return call_op1(op, {t, index}, {{"dim", dim}});
}

Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index) {
  static const OpDef& op = op_named("index_select");
  return call_op1(op, {t, index}, {{"dim", dim}});
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  static const OpDef& op = op_named("embedding");
  return call_op1(op, {weight, ids});
}

Tensor masked_fill(const Tensor& t, const Tensor& mask, const Scalar& value) {
  return masked_fill(t, mask,
                     scalar_tensor(value, {.dtype = t.dtype(), .device = t.device()}, true));
}

Tensor masked_fill(const Tensor& t, const Tensor& mask, const Tensor& value) {
  static const OpDef& op = op_named("masked_fill");
  return call_op1(op, {t, mask, value});
}

}  // namespace microflex
