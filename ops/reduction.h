// Reductions over dims (with keepdim) and the normalised-exponential family:
// sum, mean, max/min (values and indices), amax/amin, argmax/argmin, logsumexp, var,
// softmax, log_softmax. An empty `dims` means all dims; dims may be negative and must
// not repeat. Semantics follow PyTorch except where a comment says otherwise.
#pragma once
#include <optional>
#include <utility>

#include "core/tensor.h"

namespace microflex {

// Sum; integer and bool inputs give int64. Over a size-0 dim the sum is 0.
Tensor sum(const Tensor& t, const Shape& dims = {}, bool keepdim = false);
// Mean of a floating tensor; over a size-0 dim it is NaN.
Tensor mean(const Tensor& t, const Shape& dims = {}, bool keepdim = false);

// (values, int64 indices) of the largest / smallest element along `dim`; the index is the
// first occurrence, NaN counts as the largest and smallest. The gradient flows to the
// selected element only.
std::pair<Tensor, Tensor> max(const Tensor& t, int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& t, int64_t dim, bool keepdim = false);
// The largest / smallest element of the whole tensor, 0-d; the gradient is split evenly
// among ties.
Tensor max(const Tensor& t);
Tensor min(const Tensor& t);
// Max / min over several dims; the gradient is split evenly among ties.
Tensor amax(const Tensor& t, const Shape& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& t, const Shape& dims = {}, bool keepdim = false);
// Index (int64) of the first largest / smallest element along `dim`, or into the
// flattened tensor when no dim is given (keepdim then gives all-1 dims). Not
// differentiable. max/min/amax/amin/argmax/argmin raise an error over a size-0 dim.
Tensor argmax(const Tensor& t, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);
Tensor argmin(const Tensor& t, std::optional<int64_t> dim = std::nullopt, bool keepdim = false);

// log(sum(exp(t))) over dims, stable (the max is subtracted first); a row of all -inf
// gives -inf and a gradient of 0. Integer inputs give float32.
Tensor logsumexp(const Tensor& t, const Shape& dims, bool keepdim = false);
// Variance sum((x - mean)^2) / max(0, N - correction) of a floating tensor, N being the
// number of reduced elements (correction = 1: the unbiased estimate).
Tensor var(const Tensor& t, const Shape& dims = {}, double correction = 1.0, bool keepdim = false);

// softmax / log_softmax along `dim` of a floating tensor, stable, computed in float for
// 16-bit types. A row of all -inf gives 0s (softmax) and -inf (log_softmax), not NaN
// (Note [Safe softmax] in kernels/cpu/softmax.cpp).
Tensor softmax(const Tensor& t, int64_t dim);
Tensor log_softmax(const Tensor& t, int64_t dim);
// The fused backward ops, given the forward output y and the gradient g of y:
// softmax: y * (g - sum_dim(g * y)); log_softmax: g - exp(y) * sum_dim(g).
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t dim);

}  // namespace microflex
