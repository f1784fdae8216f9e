// Launcher of flex_attention's fused forward kernel (kernels/cuda/flex_fwd.cuh), compiled
// with NVRTC together with the generated score_mod / mask_mod. Plain C++ header.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace microflex::cuda {

struct FlexCapturedTensor {
  const void* data;
  std::vector<int64_t> sizes, strides;  // at most 4 dims
};

struct FlexFusedArgs {
  int device = 0;
  int in_dtype = 0;       // 0 float32, 1 float16, 2 bfloat16
  const void *q, *k, *v;  // contiguous [B, Hq, M, D], [B, Hkv, N, D], [B, Hkv, N, Dv]
  void* out;              // [B, Hq, M, Dv], q's dtype
  float* lse;             // [B, Hq, M]
  int B, Hq, Hkv, M, N, D, Dv;
  float scale;
  // BlockMask (128 x 128 blocks), contiguous int32; null kv_num: every block full.
  const int *kv_num = nullptr, *kv_idx = nullptr, *full_num = nullptr, *full_idx = nullptr;
  int mask_b = 1, mask_h = 1, Mb = 0, Nb = 0;
  std::string score_mod_src, mask_mod_src;  // ops/flex_attention/codegen.h
  std::vector<FlexCapturedTensor> score_captured, mask_captured;
  bool check_faults = false;  // a mod reads captured tensors: read the fault record back
  void* fault = nullptr;      // device buffer of 6 uint64, zeroed
};

// The full NVRTC source set for these arguments (template + generated header).
struct NvrtcSource;
NvrtcSource flex_fused_source(const FlexFusedArgs& a);
// Launches on the device's stream. With check_faults, waits for the stream and throws the
// dense path's error for an out-of-range index in a mod.
void flex_fused_forward(const FlexFusedArgs& a);

}  // namespace microflex::cuda
