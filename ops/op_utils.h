// Helpers shared by op definitions: broadcasting, result types, device checks, and
// reducing a gradient back to an input's shape. Used by shape rules and backward
// formulas, never by kernels.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/dispatch.h"

namespace microflex {

// The broadcast of two shapes; the error names `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
Shape broadcast_shapes(const std::vector<Shape>& shapes, const char* op);
// Element strides of `t` seen at shape `out` (0 for broadcast dims).
Shape broadcast_strides(const Tensor& t, const Shape& out);
// PyTorch's result_type: wrapped numbers (C++ scalars) only pick the category.
DType result_type(const Tensor& a, const Tensor& b);
DType result_type(const TensorList& ts);
// All defined tensors on one device; returns it.
Device common_device(const TensorList& ts, const char* op);
// Sums `grad` over broadcast dims so it has `shape` (the reverse of broadcasting).
Tensor sum_to(const Tensor& grad, const Shape& shape);
// `t` as dtype `dt` (no copy when it already is).
Tensor as_dtype(const Tensor& t, DType dt);
std::string describe(const Tensor& t);  // "float32[2, 3] on cpu"
// A contiguous output meta (the shape rules' usual answer).
inline TensorMeta make_meta(Shape sizes, DType dtype, Device device) {
  TensorMeta m;
  m.sizes = std::move(sizes);
  m.dtype = dtype;
  m.device = device;
  return m;
}

}  // namespace microflex
