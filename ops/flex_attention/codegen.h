// CUDA C++ code generation for flex_attention's fused kernels: a traced score_mod or
// mask_mod graph (0-d proxies, ops/flex_attention/flex_attention.h) becomes the source of
// one __device__ function that kernels/cuda/flex_fwd.cuh calls per score element.
#pragma once
#include <string>
#include <vector>

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

// Note [Split mask_mod]
// A partial block evaluates mask_mod on every element, and a mask that gathers from
// captured tensors (doc[q] == doc[kv]) would gather twice per element. Split, the values
// that depend on q_idx but not kv_idx (b, h and captured reads of them included) are
// computed once per query row, those that depend on kv_idx alone once per key, and only
// what depends on both once per element:
//   struct MfMaskQ { ... };  MfMaskQ mask_mod_q(int b, int h, int q, const FlexCaptured&);
//   struct MfMaskKv { ... }; MfMaskKv mask_mod_kv(int b, int h, int kv, const FlexCaptured&);
//   bool mask_mod_pair(int b, int h, int q, int kv, const MfMaskQ&, const MfMaskKv&,
//                      const FlexCaptured&);
// mask_mod_pair(b, h, q, kv, mask_mod_q(b, h, q), mask_mod_kv(b, h, kv)) == mask_mod(...).
// The structs hold only the values the pair function reads; constants are repeated where
// used. A first line defines MF_MASK_PAIR_GATHERS: whether the pair function reads
// captured tensors. mask_mod_shfl(x, lane) reads a struct from another lane of the warp.
// mf_keep_bits (kernels/cuda/flex_common.cuh) calls them for in-range rows and keys
// only, so a gather the result depends on faults exactly where the whole mask_mod's would
// (a captured read whose value is never used is dropped, so it cannot fault).
std::string generate_mask_mod_split(const graph::Graph& g);
// mask_mod and its split functions for a call without a mask (every element kept).
std::string no_mask_mod();

// Note [Generated score_mod backward]
// The derivative is not written here: the score_mod graph is rerun on 0-d proxies with
// autograd on and backward is called with the kernel's `grad` as the seed while tracing,
// so the joint graph holds the ops' own registered backward formulas (relu'(0) = 0,
// abs'(0) = 0, maximum/minimum ties split half/half, where routes to the chosen branch,
// dtype conversions as the engine makes them). That graph is emitted like a forward one,
// keeping only the nodes the gradients need. A captured tensor's gradient appears as
// index_backward scatters (summed by the engine into one buffer); each becomes
//   if (k<i>) mf_grad_add(gcap, slot, o<i>, value);
// at the offset o<i> of the forward `index` of that slot with the same indices, only when
// that index was in range. mf_grad_add adds float32 into gcap.data[slot] at the same
// element offset, so the launcher passes captured tensors that need grad contiguous and
// float32 gradient buffers of their shape. Captured tensors that need no grad are not
// differentiated and get no accumulation code. The forward values the derivative needs are
// recomputed (index loads included, which record faults like the forward's). Per element
// the result equals the dense path's autograd; the sum over elements differs in order, and
// for a 16-bit captured tensor in precision (the dense path accumulates in its dtype).

// `float score_mod_backward(float score, int b, int h, int q, int kv,
//                           const FlexCaptured& cap, float grad, const FlexCapturedGrad& gcap)`:
// returns grad * d score_mod / d score and adds grad * d score_mod / d captured[idx] into
// gcap for every slot i with captured_needs_grad[i] (one flag per captured tensor).
// Throws Error naming the op for anything it cannot emit or differentiate.
std::string generate_score_mod_backward(const graph::Graph& g,
                                        const std::vector<bool>& captured_needs_grad);

// Whether the graph reads a captured tensor (the launcher then checks for faults).
bool uses_index(const graph::Graph& g);

// Whether every captured-tensor read of a mod graph is in range (negative indices wrap, as
// mf_index_dim) for all argument values: graph input first_arg + i lies in
// [0, extents[i]) (score_mod: first_arg 1, {B, Hq, M, N}; mask_mod: first_arg 0, the same).
// An interval pass over integer add, sub, mul, neg, abs, clamp, minimum, maximum, where,
// casts, and remainder / floor_divide by a positive constant; a value it cannot bound
// (anything read from a captured tensor, say) makes an index that uses it unprovable. With
// every read proven, the launcher skips reading the fault record back, a stream sync per
// call: doc[q] == doc[kv] with doc of length M = N, slopes[h], bias[q - kv + N] when M <= N + 1.
bool indices_in_range(const graph::Graph& g, size_t first_arg, const std::vector<int64_t>& extents);

}  // namespace microflex::flex_codegen
