// Reductions over dims (with keepdim) and the normalised-exponential family:
// sum, mean, max/min (values and indices), amax/amin, argmax/argmin, logsumexp, var,
// softmax, log_softmax. An empty `dims` means all dims.
#pragma once
#include <utility>

#include "core/tensor.h"

namespace microflex {

Tensor sum(const Tensor& t, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& t, const Shape& dims = {}, bool keepdim = false);

}  // namespace microflex
