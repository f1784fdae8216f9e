// Matrix products: matmul (PyTorch's rules, batch broadcasting), bmm, linear.
#pragma once
#include "core/tensor.h"

namespace microflex {

// Matrix product with PyTorch's rank rules (Note [matmul ranks] in ops/linalg.cpp):
//   [K] @ [K] -> []                          (dot product)
//   [M, K] @ [K] -> [M],  [K] @ [K, N] -> [N]
//   [*A, M, K] @ [*B, K, N] -> [broadcast(*A, *B), M, N]
// Both inputs must have the same dtype (float32/64, float16, bfloat16, int32/64).
Tensor matmul(const Tensor& a, const Tensor& b);
// [B, M, K] @ [B, K, N] -> [B, M, N]: 3-D inputs only, equal batch sizes, no broadcasting.
Tensor bmm(const Tensor& a, const Tensor& b);
// x [*, in] @ w[out, in]^T (+ bias [out]) -> [*, out]. `bias` may be undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

}  // namespace microflex
