// Shared pieces of reduction shape rules and backward formulas (Note [Reduction layout]
// in ops/reduction.cpp).
#pragma once
#include "core/tensor.h"

namespace microflex {

// Sorted, wrapped, unique dims (empty `dims`: all of them); errors name `op`. A 0-d
// tensor accepts dim 0 and -1 and has nothing to reduce, so its result is empty.
Shape reduction_dims(const Shape& dims, int64_t ndim, const char* op);
// `s` without the dims in `rdims` (or with them set to 1 when keepdim).
Shape reduced_shape(const Shape& s, const Shape& rdims, bool keepdim);

// How a tensor of `sizes` is laid out as [outer, R] rows for a reduction over `rdims`.
struct RowLayout {
  Shape perm;            // kept dims in order, then the reduced dims
  Shape permuted_sizes;  // sizes in perm order
  int64_t outer = 1;     // number of rows (product of the kept sizes)
  int64_t r = 1;         // row length (product of the reduced sizes)
  bool identity = true;  // perm is the identity: a contiguous tensor is already in rows
};
RowLayout row_layout(const Shape& sizes, const Shape& rdims);
// `t` as a contiguous tensor in the layout's row order (a copy unless already so).
Tensor rows_of(const Tensor& t, const RowLayout& l);
// The input as a contiguous [outer, R] tensor, with outer and R.
Tensor rows_for_reduction(const Tensor& t, const Shape& rdims, int64_t* outer, int64_t* r);

// Gradient of a reduction broadcast back over the input's shape.
Tensor expand_reduced_grad(const Tensor& g, const Shape& in_sizes, const Shape& rdims,
                           bool keepdim);

}  // namespace microflex
