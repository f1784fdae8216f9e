// CUDA C++ code generation for flex_attention's fused kernels: a traced score_mod or
// mask_mod graph (0-d proxies, ops/flex_attention/flex_attention.h) becomes the source of
// one __device__ function that kernels/cuda/flex_fwd.cuh calls per score element.
#pragma once
#include <string>

#include "core/graph.h"

namespace microflex::flex_codegen {

// The most captured tensors per mod and dims per captured tensor the kernels take
// (FlexCaptured in kernels/cuda/flex_fwd.cuh).
constexpr int kMaxCaptured = 8;
constexpr int kMaxCapturedDims = 4;

// Note [Generated mods]
// Each graph value becomes one local of its dtype's C type (float32/float16/bfloat16 ->
// float, float64 -> double, int32 -> int, int64 -> long long, bool -> bool); float16 and
// bfloat16 values are rounded after every op like the CPU kernels' storage. Binary ops
// cast their operands to the promoted type (wrapped scalars do not promote), so the
// arithmetic matches the dense path's. Constants are printed inline. `index` reads a
// captured tensor through mf_index_offset (negative indices wrap like the CPU op); an
// out-of-range index loads 0 and records a fault in cap.fault, which the launcher turns
// into the dense path's error after the kernel (never an out-of-bounds read).
// The captured tensors are the graph's lifted inputs, in order: cap.t[0], cap.t[1], ...

// `float score_mod(float score, int b, int h, int q, int kv, const FlexCaptured& cap)`.
// Throws Error naming the op for anything it cannot emit.
std::string generate_score_mod(const graph::Graph& g);
// `bool mask_mod(int b, int h, int q, int kv, const FlexCaptured& cap)`.
std::string generate_mask_mod(const graph::Graph& g);
// Whether the graph reads a captured tensor (the launcher then checks for faults).
bool uses_index(const graph::Graph& g);

}  // namespace microflex::flex_codegen
