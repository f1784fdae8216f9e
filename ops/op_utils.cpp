#include "ops/op_utils.h"

#include <algorithm>

#include "ops/copy_ops.h"
#include "ops/reduction.h"

namespace microflex {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    MF_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
             " cannot be broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_shapes(const std::vector<Shape>& shapes, const char* op) {
  Shape out;
  for (const Shape& s : shapes) out = broadcast_shapes(out, s, op);
  return out;
}

Shape broadcast_strides(const Tensor& t, const Shape& out) {
  const size_t n = out.size(), nd = static_cast<size_t>(t.dim());
  MF_INTERNAL_ASSERT(nd <= n);
  Shape st(n, 0);
  for (size_t i = 0; i < nd; ++i) {
    const size_t o = n - nd + i;
    st[o] = t.sizes()[i] == 1 && out[o] != 1 ? 0 : t.strides()[i];
  }
  return st;
}

namespace {
int category(DType t) {
  return t == DType::Bool ? 0 : is_floating(t) ? 2 : 1;
}
}  // namespace

DType result_type(const Tensor& a, const Tensor& b) {
  const bool wa = a.impl()->wrapped_number && a.dim() == 0;
  const bool wb = b.impl()->wrapped_number && b.dim() == 0;
  if (wa == wb) return promote_types(a.dtype(), b.dtype());
  const Tensor& t = wa ? b : a;
  const Tensor& s = wa ? a : b;
  if (category(s.dtype()) <= category(t.dtype())) return t.dtype();
  // The number is of a higher category: its default dtype.
  return is_floating(s.dtype()) ? DType::Float32 : DType::Int64;
}

DType result_type(const TensorList& ts) {
  MF_INTERNAL_ASSERT(!ts.empty());
  Tensor acc = ts[0];
  DType dt = ts[0].dtype();
  for (size_t i = 1; i < ts.size(); ++i) {
    dt = result_type(acc, ts[i]);
    if (!(ts[i].impl()->wrapped_number && ts[i].dim() == 0)) acc = ts[i];
    if (acc.dtype() != dt) acc = Tensor::make({}, dt, acc.device(), true);
  }
  return dt;
}

Device common_device(const TensorList& ts, const char* op) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    MF_CHECK(t.device() == first->device(), op, ": expected all tensors on the same device, got ",
             first->device(), " and ", t.device());
  }
  MF_INTERNAL_ASSERT(first != nullptr);
  return first->device();
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.sizes() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  MF_INTERNAL_ASSERT(lead >= 0, "sum_to: ", shape_str(grad.sizes()), " to ", shape_str(shape));
  Shape dims;
  for (int64_t i = 0; i < grad.dim(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && grad.sizes()[i] != 1)) dims.push_back(i);
  }
  Tensor r = dims.empty() ? grad : sum(grad, dims, true);
  return r.sizes() == shape ? r : r.reshape(shape);
}

Tensor as_dtype(const Tensor& t, DType dt) {
  return t.dtype() == dt ? t : t.to(dt);
}

std::string describe(const Tensor& t) {
  return detail::str_cat(dtype_name(t.dtype()), shape_str(t.sizes()), " on ", t.device());
}

}  // namespace microflex
