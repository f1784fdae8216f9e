// Indexing: index with broadcasting index tensors (what score_mod uses to read captured
// buffers), gather, index_select, embedding, masked_fill.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace microflex {

// Advanced indexing on the leading k = indices.size() dims: the int32/int64 index
// tensors broadcast to a shape P and
//   out[p..., rest...] = t[indices[0][p], ..., indices[k-1][p], rest...]
// so out has shape P + t.sizes()[k:]. Negative indices wrap; out-of-range indices are
// an error. The backward scatter-adds into t's shape ("index_backward"), so duplicate
// indices accumulate. Same as t.index(indices).
Tensor index(const Tensor& t, const std::vector<Tensor>& indices);
// The gradient of index w.r.t. its source: zeros(sizes) with grad scatter-added at the
// indexed positions, in a fixed order (deterministic).
Tensor index_backward(const Tensor& grad, const std::vector<Tensor>& indices, const Shape& sizes);
// out[i...] = t[i_0, ..., index[i...], ..., i_{n-1}] with the index at `dim`; index has
// t's number of dims and is no larger than t in the other dims; out has index's shape.
Tensor gather(const Tensor& t, int64_t dim, const Tensor& index);
// The entries of t along `dim` at the positions of a 0-d or 1-D index: t's shape with
// size index.numel() at `dim`.
Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index);
// Rows of weight [V, D] at integer ids of any shape: ids.shape + [D].
Tensor embedding(const Tensor& weight, const Tensor& ids);
// t with `value` where the bool mask is true; t and mask broadcast, the result keeps
// t's dtype. The tensor overload takes a 0-d value, which gets a gradient too.
Tensor masked_fill(const Tensor& t, const Tensor& mask, const Scalar& value);
Tensor masked_fill(const Tensor& t, const Tensor& mask, const Tensor& value);

}  // namespace microflex
