// Launchers of flex_attention's fused kernels (kernels/cuda/flex_fwd.cuh,
// flex_fwd_tc.cuh, flex_bwd_tc.cuh), compiled with NVRTC together with the generated
// score_mod / mask_mod (and score_mod's backward). Plain C++ header.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace microflex::cuda {

struct FlexCapturedTensor {
  const void* data;
  std::vector<int64_t> sizes, strides;  // at most 4 dims
};

// BlockMask tensors (128 x 128 blocks, contiguous int32); null num: every block full.
struct FlexMaskRefs {
  const int *num = nullptr, *idx = nullptr, *full_num = nullptr, *full_idx = nullptr;
};

struct FlexFusedArgs {
  int device = 0;
  int in_dtype = 0;       // 0 float32, 1 float16, 2 bfloat16
  const void *q, *k, *v;  // contiguous [B, Hq, M, D], [B, Hkv, N, D], [B, Hkv, N, Dv]
  void* out;              // [B, Hq, M, Dv], q's dtype
  float* lse;             // [B, Hq, M]
  int B, Hq, Hkv, M, N, D, Dv;
  float scale;
  FlexMaskRefs kv;       // rows per (b, h, q block): kv_num_blocks, kv_indices, full_kv_*
  FlexMaskRefs q_of_kv;  // rows per (b, h, kv block): q_num_blocks, q_indices, full_q_*
  int mask_b = 1, mask_h = 1, Mb = 0, Nb = 0;
  std::string score_mod_src, mask_mod_src;  // ops/flex_attention/codegen.h
  std::vector<FlexCapturedTensor> score_captured, mask_captured;
  // Attention dropout on P (Note [Flex dropout]): probability, Philox seed and offset.
  double dropout_p = 0.0;
  uint64_t dropout_seed = 0, dropout_offset = 0;
  bool check_faults = false;  // a mod reads captured tensors: read the fault record back
  void* fault = nullptr;      // device buffer of 6 uint64, zeroed

  // Backward only.
  std::string score_mod_backward_src;
  const void* grad_out = nullptr;  // [B, Hq, M, Dv] contiguous, q's dtype
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;
  float* delta = nullptr;            // [B, Hq, M] scratch
  std::vector<void*> captured_grad;  // per score_mod captured tensor, or null
  bool deterministic = false;        // captured_grad buffers are int64 32.32 fixed point
};

// Whether the fused kernels take this dtype / head dims: multiples of 8 up to 256 on
// tensor cores (bf16 / fp16), up to 128 in SIMT (float32), forward and backward.
bool flex_fused_forward_supported(int in_dtype, int D, int Dv);
bool flex_fused_backward_supported(int in_dtype, int D, int Dv);

// Launch on the device's stream. With check_faults, they wait for the stream and throw
// the dense path's error for an out-of-range index in a mod.
void flex_fused_forward(const FlexFusedArgs& a);
void flex_fused_backward(const FlexFusedArgs& a);

}  // namespace microflex::cuda
