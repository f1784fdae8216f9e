// flex_attention: attention whose scores pass through a user score_mod and whose
// sparsity comes from a BlockMask, modelled on PyTorch's FlexAttention. A higher-order
// op (ops/higher_order.h) with dense, fake, autograd and tracing implementations.
#pragma once
#include <functional>
#include <optional>

#include "core/graph.h"
#include "ops/flex_attention/block_mask.h"

namespace microflex {

// score_mod(score, b, h, q_idx, kv_idx) -> new score. Pointwise tensor code: the dense
// path calls it on a [B, H, rows, cols] score block with broadcastable int32 indices;
// tracing and fused kernels call it on 0-d proxies. Captured tensors are read with
// `t.index({...})` and receive gradients when they require grad.
using ScoreMod = std::function<Tensor(const Tensor& score, const Tensor& b, const Tensor& h,
                                      const Tensor& q_idx, const Tensor& kv_idx)>;

// Which implementation runs, forward and backward: Auto takes the fused CUDA kernels
// (NVRTC-compiled from the traced mods, ops/flex_attention/fused.h) for CUDA inputs when
// the mods can be generated and the dtype and head dims are supported, else the dense
// path; Fused raises when a fused kernel cannot run; Dense never uses them.
enum class FlexKernel { Auto, Dense, Fused };

struct FlexAttentionOptions {
  ScoreMod score_mod;                   // empty: scores unchanged
  std::optional<BlockMask> block_mask;  // empty: every key attends
  std::optional<double> scale;          // default 1/sqrt(D)
  bool enable_gqa = false;              // Hq a multiple of Hkv
  bool return_lse = false;
  FlexKernel kernel = FlexKernel::Auto;
  // The fused backward sums captured-tensor gradients in 32.32 fixed point (int64 atomics,
  // independent of the order) instead of float atomics: bitwise reproducible runs, for
  // gradient sums of magnitude below 2^31 with 2^-32 resolution per contribution.
  bool deterministic = false;
  // Attention dropout: each probability P[q, kv] is zeroed with this chance and the kept
  // ones scaled by 1 / (1 - p), before P V; lse is unchanged. Seeded from the default
  // generator (manual_seed), the same mask on every path and in the backward.
  double dropout_p = 0.0;
};

struct FlexAttentionResult {
  Tensor out;  // [B, Hq, M, Dv], q's dtype
  Tensor lse;  // [B, Hq, M], float32 (float64 for float64 inputs); only when asked
};

// q [B, Hq, M, D], k [B, Hkv, N, D], v [B, Hkv, N, Dv].
FlexAttentionResult flex_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const FlexAttentionOptions& opts = {});

// The traced per-element graphs of score_mod and mask_mod (0-d proxies; captured tensors
// lifted to inputs after the five/four index arguments). Used by the dense path, the
// backward and the fused kernels' code generator.
graph::GraphModule trace_score_mod(const ScoreMod& score_mod, DType score_dtype, Device device);
graph::GraphModule trace_mask_mod(const MaskMod& mask_mod, Device device);

}  // namespace microflex
