// Shared pieces of reduction shape rules and backward formulas (Note [Reduction layout]
// in ops/reduction.cpp).
#pragma once
#include "core/tensor.h"

namespace microflex {

Shape reduction_dims(const Shape& dims, int64_t ndim, const char* op);
Shape reduced_shape(const Shape& s, const Shape& rdims, bool keepdim);
Tensor rows_for_reduction(const Tensor& t, const Shape& rdims, int64_t* outer, int64_t* r);
Tensor expand_reduced_grad(const Tensor& g, const Shape& in_sizes, const Shape& rdims,
                           bool keepdim);

}  // namespace microflex
