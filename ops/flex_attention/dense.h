// The dense math path of flex_attention: scores in working precision, block by block
// over the BlockMask, never more than one query block of scores per call. It is the
// backend implementation on every device and the reference the fused kernels match.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "ops/higher_order.h"

namespace microflex {

// A flex_attention call unpacked from the higher-order op's operands and attributes.
struct FlexArgs {
  Tensor q, k, v;         // [B, Hq, M, D], [B, Hkv, N, D], [B, Hkv, N, Dv]
  TensorList block_mask;  // the 8 BlockMask tensors, or empty for no mask
  int64_t q_block = 128, kv_block = 128;
  TensorList score_captured, mask_captured;
  SubgraphFn score_fn;  // (score, b, h, q_idx, kv_idx, score_captured...) -> score
  SubgraphFn mask_fn;   // (b, h, q_idx, kv_idx, mask_captured...) -> bool
  double scale = 1.0;
  // Attention dropout on the probabilities (Note [Flex dropout] in dense.cpp).
  double dropout_p = 0.0;
  uint64_t dropout_seed = 0, dropout_offset = 0;
};

DType flex_working_dtype(DType input);

// {out [B, Hq, M, Dv] in q's dtype, lse [B, Hq, M] in float32 or float64}.
TensorList flex_dense_forward(const FlexArgs& a);

// {dq, dk, dv, d(score_captured)...}: recomputes each query block with the tape on and
// differentiates it against grad_out (the seed's sdpa_dense_backward, block by block).
TensorList flex_dense_backward(const FlexArgs& a, const Tensor& grad_out);

}  // namespace microflex
