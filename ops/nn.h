// Neural-network ops: cross_entropy, layer_norm, rms_norm, dropout. Each has a fused
// forward op and a fused backward op ("<name>_backward") with its own kernels.
#pragma once
#include <optional>
#include <string>

#include "core/tensor.h"

namespace microflex {

// Cross entropy between logits (N, C) and class indices target (N) of int64 or int32, or
// logits (C) with a 0-d target. log_softmax runs in float32 (float64 for float64 logits).
// reduction: "mean" (over the rows whose target is not ignore_index; NaN when every row
// is ignored, as in PyTorch), "sum" or "none" (shape (N), 0 on ignored rows). With
// label_smoothing e, the target distribution is (1 - e) * one_hot + e / C. A target
// outside [0, C) that is not ignore_index is an error. Differentiable in logits.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100,
                     const std::string& reduction = "mean", double label_smoothing = 0.0);

// Layer normalisation over the trailing dims `normalized_shape` of x: (x - mean) / sqrt(var
// + eps) * weight + bias, var biased. weight and bias are optional (undefined Tensors) and
// shaped normalized_shape; statistics run in float32 (float64 for float64 x) and the
// result has x's dtype.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                  const Tensor& bias = {}, double eps = 1e-5);

// RMS normalisation over the trailing dims: x / sqrt(mean(x^2) + eps) * weight. As in
// PyTorch, eps defaults to the machine epsilon of x's dtype (float32: 1.19e-7, float64:
// 2.2e-16, float16: 9.8e-4, bfloat16: 7.8e-3).
Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                std::optional<double> eps = std::nullopt);

// Zeroes each element with probability p and scales the rest by 1 / (1 - p), with a mask
// drawn from the default generator (one (seed, offset) per call, see core/random.h).
// Returns x itself when !train or p == 0; zeros when p == 1; p outside [0, 1] is an error.
Tensor dropout(const Tensor& x, double p, bool train = true);
// Bool mask: element ids[i] (int64) kept by dropout with probability 1 - p under the
// Philox stream (seed, offset) (Note [Random element layout] in kernels/cpu/philox.h).
Tensor dropout_keep(const Tensor& ids, double p, uint64_t seed, uint64_t offset);

}  // namespace microflex
