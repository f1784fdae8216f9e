// The fused forward's launcher: source assembly, NVRTC compile (cached), launch, and the
// fault read-back for mods that read captured tensors.
#include "kernels/cuda/flex_fused.h"

#include <cuda_runtime.h>

#include "core/error.h"
#include "flex_fwd_cuh.h"  // generated at build time from kernels/cuda/flex_fwd.cuh
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/nvrtc_compile.h"

namespace microflex::cuda {

namespace {

constexpr int kRows = 64;  // MF_ROWS in flex_fwd.cuh

// Mirrors FlexTensorRef / FlexCaptured in flex_fwd.cuh.
struct TensorRef {
  const void* data;
  long long sizes[4];
  long long strides[4];
};
struct Captured {
  TensorRef t[8];
  unsigned long long* fault;
  int which;
};

Captured pack(const std::vector<FlexCapturedTensor>& ts, void* fault, int which) {
  Captured c{};
  MF_CHECK(ts.size() <= 8, "flex_attention: at most 8 captured tensors per mod in fused kernels");
  for (size_t i = 0; i < ts.size(); ++i) {
    c.t[i].data = ts[i].data;
    for (size_t d = 0; d < ts[i].sizes.size() && d < 4; ++d) {
      c.t[i].sizes[d] = ts[i].sizes[d];
      c.t[i].strides[d] = ts[i].strides[d];
    }
  }
  c.fault = static_cast<unsigned long long*>(fault);
  c.which = which;
  return c;
}

}  // namespace

NvrtcSource flex_fused_source(const FlexFusedArgs& a) {
  NvrtcSource s;
  s.name = "flex_fwd.cu";
  s.source = kFlexFwdCuh;
  std::string mods = "#define MF_D " + std::to_string(a.D) + "\n#define MF_DV " +
                     std::to_string(a.Dv) + "\n#define MF_IN " + std::to_string(a.in_dtype) + "\n" +
                     a.score_mod_src + a.mask_mod_src;
  s.headers.push_back({"flex_mods.cuh", mods});
  return s;
}

void flex_fused_forward(const FlexFusedArgs& a) {
  const NvrtcSource src = flex_fused_source(a);
  void* kernel = nvrtc_kernel(src, "flex_fwd", a.device);
  set_device(a.device);
  auto st = static_cast<cudaStream_t>(stream(a.device));
  Captured sc = pack(a.score_captured, a.fault, 0), mc = pack(a.mask_captured, a.fault, 1);
  int Hq = a.Hq, Hkv = a.Hkv, M = a.M, N = a.N, mb = a.mask_b, mh = a.mask_h, Mb = a.Mb, Nb = a.Nb;
  float scale = a.scale;
  const void *q = a.q, *k = a.k, *v = a.v;
  void* out = a.out;
  float* lse = a.lse;
  const int *kn = a.kv_num, *ki = a.kv_idx, *fn = a.full_num, *fi = a.full_idx;
  void* args[] = {&q,  &k,  &v,  &out, &lse, &Hq, &Hkv, &M,  &N,  &scale,
                  &kn, &ki, &fn, &fi,  &mb,  &mh, &Mb,  &Nb, &sc, &mc};
  const dim3 grid((a.M + kRows - 1) / kRows, a.Hq, a.B);
  MF_CUDA_CHECK(cudaLaunchKernel(kernel, grid, dim3(kRows), args, 0, st));
  MF_CUDA_CHECK(cudaGetLastError());
  if (a.check_faults) {
    unsigned long long f[6] = {};
    MF_CUDA_CHECK(cudaMemcpyAsync(f, a.fault, sizeof(f), cudaMemcpyDeviceToHost, st));
    MF_CUDA_CHECK(cudaStreamSynchronize(st));
    MF_CHECK(f[0] == 0, "flex_attention: ", f[1] == 0 ? "score_mod" : "mask_mod", ": index ",
             static_cast<long long>(f[4]), " is out of bounds for dim ", f[3], " with size ", f[5],
             " (captured tensor ", f[2], ")");
  }
}

}  // namespace microflex::cuda
