// The fused kernels' launchers: source assembly per (dtype, head dims, tile shape), NVRTC
// compile (cached), shared-memory limits, launch, and the fault read-back for mods that
// read captured tensors.
#include "kernels/cuda/flex_fused.h"

#include <cuda_runtime.h>

#include <mutex>
#include <set>

#include "core/error.h"
#include "flex_templates.h"  // generated at build time from kernels/cuda/*.cuh
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/nvrtc_compile.h"

namespace microflex::cuda {

namespace {

// Mirrors FlexTensorRef / FlexCaptured / FlexCapturedGrad / FlexDropout in flex_common.cuh.
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
struct CapturedGrad {
  float* data[8];
  int deterministic;
};
struct FlexDropout {
  unsigned long long seed, offset;
  double p;
  float scale;
  int Hq, M, N;
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

int pad16(int d) {
  return (d + 15) / 16 * 16;
}

// Forward tile shape (flex_fwd_tc.cuh): 4 warps of 2 m tiles and 64-key tiles up to head
// dim 128; 8 warps of one m tile and 32-key tiles beyond (the accumulators must fit).
struct FwdTiles {
  int warps, mt, bn;
};
FwdTiles fwd_tiles(int D, int Dv) {
  return std::max(pad16(D), pad16(Dv)) <= 128 ? FwdTiles{4, 2, 64} : FwdTiles{8, 1, 32};
}
// The Hopper kernels (flex_fwd_wg.cuh, flex_bwd_wg.cuh; `wg` below) cover 16-bit inputs with head
// dims of whole 128-byte swizzle panels whose tiles fit in shared memory.
bool use_wgmma(const FlexFusedArgs& a) {
  auto ok = [](int d) { return d == 64 || d == 128; };
  return a.in_dtype != 0 && ok(a.D) && ok(a.Dv) && device_arch(a.device) == 90;
}
// The Hopper forward's key tile and CTAs per SM (Note [Flex wgmma forward tiles]).
struct WgFwdTiles {
  int bn, min_blocks;
};
WgFwdTiles wg_fwd_tiles(int D, int Dv) {
  return D == 64 && Dv == 64 ? WgFwdTiles{64, 2} : WgFwdTiles{128, 1};
}
// The tensor-core backward's tiles (MF_WARPS, MF_BN in flex_bwd_tc.cuh): 16 rows per warp.
struct BwdTiles {
  int warps, bn;
};
BwdTiles bwd_tiles(int D, int Dv) {
  return std::max(pad16(D), pad16(Dv)) <= 128 ? BwdTiles{8, 64} : BwdTiles{4, 32};
}

std::string defines(const FlexFusedArgs& a) {
  return "#define MF_D " + std::to_string(a.D) + "\n#define MF_DV " + std::to_string(a.Dv) +
         "\n#define MF_IN " + std::to_string(a.in_dtype) + "\n#define MF_DROPOUT " +
         (a.dropout_p > 0.0 ? "1" : "0") + "\n";
}

// The headers every fused kernel includes, after its own.
void add_common_headers(NvrtcSource& s, const FlexFusedArgs& a, const std::string& mods) {
  s.headers.push_back({"flex_common.cuh", kFlexCommonCuh});
  s.headers.push_back({"flex_mods.cuh", mods + a.score_mod_src + a.mask_mod_src});
  if (a.dropout_p > 0.0) s.headers.push_back({"philox.h", kPhiloxH});
}

FlexDropout dropout_of(const FlexFusedArgs& a) {
  FlexDropout d{};
  d.seed = a.dropout_seed;
  d.offset = a.dropout_offset;
  d.p = a.dropout_p;
  d.scale = a.dropout_p < 1.0 ? static_cast<float>(1.0 / (1.0 - a.dropout_p)) : 0.0f;
  d.Hq = a.Hq;
  d.M = a.M;
  d.N = a.N;
  return d;
}

// The tensor-core kernels' product headers: mma.sync, and the wgmma ones for the Hopper
// kernels.
void add_mma_headers(NvrtcSource& s, bool wg) {
  s.headers.push_back({"flex_mma.cuh", kFlexMmaCuh});
  if (!wg) return;
  s.headers.push_back({"flex_wgmma.cuh", kFlexWgmmaCuh});
  s.headers.push_back({"flex_wgmma_ops.cuh", kFlexWgmmaOpsCuh});
}

NvrtcSource forward_source(const FlexFusedArgs& a, bool wg) {
  NvrtcSource s;
  std::string mods = defines(a);
  if (a.in_dtype == 0) {
    s.name = "flex_fwd.cu";
    s.source = kFlexFwdCuh;
  } else if (wg) {
    const WgFwdTiles t = wg_fwd_tiles(a.D, a.Dv);
    s.name = "flex_fwd_wg.cu";
    s.source = kFlexFwdWgCuh;
    mods += "#define MF_BN " + std::to_string(t.bn) + "\n#define MF_MIN_BLOCKS " +
            std::to_string(t.min_blocks) + "\n";
    add_mma_headers(s, true);
    s.headers.push_back({"flex_fwd_common.cuh", kFlexFwdCommonCuh});
  } else {
    const FwdTiles t = fwd_tiles(a.D, a.Dv);
    s.name = "flex_fwd_tc.cu";
    s.source = kFlexFwdTcCuh;
    mods += "#define MF_WARPS " + std::to_string(t.warps) + "\n#define MF_MT " +
            std::to_string(t.mt) + "\n#define MF_BN " + std::to_string(t.bn) +
            "\n#define MF_QREG 0\n";
    add_mma_headers(s, false);
    s.headers.push_back({"flex_fwd_common.cuh", kFlexFwdCommonCuh});
  }
  add_common_headers(s, a, mods);
  return s;
}

NvrtcSource backward_source(const FlexFusedArgs& a, bool wg) {
  NvrtcSource s;
  if (a.in_dtype == 0) {
    s.name = "flex_bwd.cu";
    s.source = kFlexBwdCuh;
  } else {
    s.name = wg ? "flex_bwd_wg.cu" : "flex_bwd_tc.cu";
    s.source = wg ? kFlexBwdWgCuh : kFlexBwdTcCuh;
    add_mma_headers(s, wg);
  }
  std::string mods = defines(a);
  if (a.in_dtype != 0 && !wg) {
    const BwdTiles t = bwd_tiles(a.D, a.Dv);
    mods += "#define MF_WARPS " + std::to_string(t.warps) + "\n#define MF_BN " +
            std::to_string(t.bn) + "\n";
  }
  s.headers.push_back({"flex_bwd_common.cuh", kFlexBwdCommonCuh});
  add_common_headers(s, a, mods);
  s.headers.push_back({"flex_mods_bwd.cuh", a.score_mod_backward_src});
  return s;
}

// Raises the kernel's dynamic shared-memory limit once per (kernel, device).
void allow_smem(void* kernel, int bytes, int device) {
  static std::mutex mu;
  static std::set<std::pair<void*, int>> done;
  std::lock_guard<std::mutex> lock(mu);
  if (bytes <= 48 * 1024 || done.count({kernel, device})) return;
  MF_CUDA_CHECK(cudaKernelSetAttributeForDevice(static_cast<cudaKernel_t>(kernel),
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, bytes,
                                                device));
  done.insert({kernel, device});
}

void check_faults(const FlexFusedArgs& a, cudaStream_t st) {
  if (!a.check_faults) return;
  unsigned long long f[6] = {};
  MF_CUDA_CHECK(cudaMemcpyAsync(f, a.fault, sizeof(f), cudaMemcpyDeviceToHost, st));
  MF_CUDA_CHECK(cudaStreamSynchronize(st));
  MF_CHECK(f[0] == 0, "flex_attention: ", f[1] == 0 ? "score_mod" : "mask_mod", ": index ",
           static_cast<long long>(f[4]), " is out of bounds for dim ", f[3], " with size ", f[5],
           " (captured tensor ", f[2], ")");
}

}  // namespace

bool flex_fused_forward_supported(int in_dtype, int D, int Dv) {
  const int limit = in_dtype == 0 ? 128 : 256;
  return D % 8 == 0 && Dv % 8 == 0 && D > 0 && Dv > 0 && D <= limit && Dv <= limit;
}

bool flex_fused_backward_supported(int in_dtype, int D, int Dv) {
  const int limit = in_dtype == 0 ? 128 : 256;
  return D % 8 == 0 && Dv % 8 == 0 && D > 0 && Dv > 0 && D <= limit && Dv <= limit;
}

void flex_fused_forward(const FlexFusedArgs& a) {
  MF_INTERNAL_ASSERT(flex_fused_forward_supported(a.in_dtype, a.D, a.Dv));
  const bool tc = a.in_dtype != 0, wg = use_wgmma(a);
  const NvrtcSource src = forward_source(a, wg);
  // Shared memory as the kernel sizes it (mf_smem_bytes); the float32 kernel's is static.
  const NvrtcProgram prog = nvrtc_program(
      src,
      {wg   ? "flex_fwd_wg"
       : tc ? "flex_fwd_tc"
            : "flex_fwd"},
      tc ? std::vector<std::string>{"mf_smem_bytes"} : std::vector<std::string>{}, a.device);
  void* kernel = prog.kernels[0];
  const int smem = tc ? prog.constants[0] : 0;
  set_device(a.device);
  auto st = static_cast<cudaStream_t>(stream(a.device));
  Captured sc = pack(a.score_captured, a.fault, 0), mc = pack(a.mask_captured, a.fault, 1);
  int Hq = a.Hq, Hkv = a.Hkv, M = a.M, N = a.N, mb = a.mask_b, mh = a.mask_h, Mb = a.Mb, Nb = a.Nb;
  float scale = a.scale;
  const void *q = a.q, *k = a.k, *v = a.v;
  void* out = a.out;
  float* lse = a.lse;
  const int *kn = a.kv.num, *ki = a.kv.idx, *fn = a.kv.full_num, *fi = a.kv.full_idx;
  FlexDropout drop = dropout_of(a);
  void* args[] = {&q,  &k,  &v,  &out, &lse, &Hq, &Hkv, &M,  &N,  &scale, &kn,
                  &ki, &fn, &fi, &mb,  &mh,  &Mb, &Nb,  &sc, &mc, &drop};
  if (wg) {
    allow_smem(kernel, smem, a.device);
    const dim3 grid((a.M + 127) / 128, a.Hq, a.B);
    MF_CUDA_CHECK(cudaLaunchKernel(kernel, grid, dim3(256), args, smem, st));
  } else if (tc) {
    const FwdTiles t = fwd_tiles(a.D, a.Dv);
    allow_smem(kernel, smem, a.device);
    const dim3 grid((a.M + 127) / 128, a.Hq, a.B);
    MF_CUDA_CHECK(cudaLaunchKernel(kernel, grid, dim3(32 * t.warps), args, smem, st));
  } else {
    const dim3 grid((a.M + 63) / 64, a.Hq, a.B);  // MF_ROWS in flex_fwd.cuh
    MF_CUDA_CHECK(cudaLaunchKernel(kernel, grid, dim3(64), args, 0, st));
  }
  MF_CUDA_CHECK(cudaGetLastError());
  check_faults(a, st);
}

void flex_fused_backward(const FlexFusedArgs& a) {
  MF_INTERNAL_ASSERT(flex_fused_backward_supported(a.in_dtype, a.D, a.Dv));
  const bool wg = use_wgmma(a), tc = a.in_dtype != 0;
  const NvrtcSource src = backward_source(a, wg);
  // 16-bit inputs with a captured tensor that needs a gradient: delta from P and dP, not
  // from the rounded output (Note [Flex exact delta] in flex_bwd_common.cuh).
  bool exact_delta = false;
  for (void* g : a.captured_grad) exact_delta = exact_delta || (tc && g != nullptr);
  const char* delta_kernel = !exact_delta ? "flex_bwd_delta"
                             : wg         ? "flex_bwd_delta_exact_wg"
                                          : "flex_bwd_delta_exact";
  // Shared memory as the kernels size it (mf_smem_bytes); the float32 kernels' is static.
  const NvrtcProgram prog = nvrtc_program(
      src,
      {delta_kernel, wg ? "flex_bwd_dq_wg" : "flex_bwd_dq",
       wg ? "flex_bwd_dkdv_wg" : "flex_bwd_dkdv"},
      tc ? std::vector<std::string>{"mf_smem_bytes"} : std::vector<std::string>{}, a.device);
  void *k_delta = prog.kernels[0], *k_dq = prog.kernels[1], *k_dkdv = prog.kernels[2];
  const int smem = tc ? prog.constants[0] : 0;
  set_device(a.device);
  auto st = static_cast<cudaStream_t>(stream(a.device));
  Captured sc = pack(a.score_captured, a.fault, 0), mc = pack(a.mask_captured, a.fault, 1);
  CapturedGrad gc{};
  MF_CHECK(a.captured_grad.size() <= 8,
           "flex_attention: at most 8 captured tensors per mod in fused kernels");
  for (size_t i = 0; i < a.captured_grad.size(); ++i)
    gc.data[i] = static_cast<float*>(a.captured_grad[i]);
  gc.deterministic = a.deterministic ? 1 : 0;
  int Hq = a.Hq, Hkv = a.Hkv, M = a.M, N = a.N, mb = a.mask_b, mh = a.mask_h, Mb = a.Mb, Nb = a.Nb;
  float scale = a.scale;
  const void *q = a.q, *k = a.k, *v = a.v, *o = a.out, *dout = a.grad_out;
  void *dq = a.dq, *dk = a.dk, *dv = a.dv;
  const float* lse = a.lse;
  float* delta = a.delta;

  FlexDropout drop = dropout_of(a);

  // Hopper: one warpgroup of 64 rows (MF_BM in flex_bwd_wg.cuh); mma.sync: 16 rows per
  // warp (bwd_tiles); float32 (SIMT): 32 rows of one thread each (MF_ROWS in flex_bwd.cuh),
  // static shared memory.
  const BwdTiles bt = bwd_tiles(a.D, a.Dv);
  const int rows_per_cta = wg ? 64 : tc ? 16 * bt.warps : 32;
  const int threads = wg ? 128 : tc ? 32 * bt.warps : 32;
  const dim3 dq_grid((a.M + rows_per_cta - 1) / rows_per_cta, a.Hq, a.B);
  const int *kn = a.kv.num, *ki = a.kv.idx, *kfn = a.kv.full_num, *kfi = a.kv.full_idx;
  void* qargs[] = {&q,  &k,  &v,   &dout, &lse, &delta, &dq, &Hq, &Hkv, &M,  &N,   &scale,
                   &kn, &ki, &kfn, &kfi,  &mb,  &mh,    &Mb, &Nb, &sc,  &mc, &drop};
  if (exact_delta) {  // the dQ kernel's walk, writing delta (flex_bwd_delta_exact)
    allow_smem(k_delta, smem, a.device);
    MF_CUDA_CHECK(cudaLaunchKernel(k_delta, dq_grid, dim3(threads), qargs, smem, st));
  } else {
    long long rows = static_cast<long long>(a.B) * a.Hq * a.M;
    void* dargs[] = {&o, &dout, &delta, &rows};
    MF_CUDA_CHECK(cudaLaunchKernel(k_delta, dim3(static_cast<unsigned>((rows + 7) / 8)), dim3(256),
                                   dargs, 0, st));
  }
  MF_CUDA_CHECK(cudaGetLastError());
  allow_smem(k_dq, smem, a.device);
  MF_CUDA_CHECK(cudaLaunchKernel(k_dq, dq_grid, dim3(threads), qargs, smem, st));
  MF_CUDA_CHECK(cudaGetLastError());

  const int *qn = a.q_of_kv.num, *qi = a.q_of_kv.idx, *qfn = a.q_of_kv.full_num,
            *qfi = a.q_of_kv.full_idx;
  void* kargs[] = {&q,  &k,  &v,   &dout, &lse, &delta, &dk, &dv, &Hq, &Hkv, &M,  &N,   &scale,
                   &qn, &qi, &qfn, &qfi,  &mb,  &mh,    &Mb, &Nb, &sc, &mc,  &gc, &drop};
  allow_smem(k_dkdv, smem, a.device);
  MF_CUDA_CHECK(cudaLaunchKernel(k_dkdv, dim3((a.N + rows_per_cta - 1) / rows_per_cta, a.Hkv, a.B),
                                 dim3(threads), kargs, smem, st));
  MF_CUDA_CHECK(cudaGetLastError());
  check_faults(a, st);
}

}  // namespace microflex::cuda
