// The fused AdamW update: one memory-bound pass per parameter tensor (7 x 4 bytes per
// element) with 16-byte vector accesses, instead of the ~12 elementwise ops (each a full
// pass over one or more tensors) of the composed update.
#include <algorithm>

#include "kernels/cuda/optim.h"
#include "kernels/cuda/rows.cuh"

namespace microflex::cuda {

namespace {

// One element of the update: the composed update's operations in its order, each rounded
// to float32 (no contraction into fma), so the two paths agree to the last bit; sqrt and
// division are IEEE-rounded on both.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v,
                                              const AdamWFactors& f) {
  p = __fmul_rn(p, f.decay);
  m = __fadd_rn(__fmul_rn(m, f.beta1), __fmul_rn(g, f.one_minus_b1));
  v = __fadd_rn(__fmul_rn(v, f.beta2), __fmul_rn(__fmul_rn(g, g), f.one_minus_b2));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), f.sqrt_bc2), f.eps);
  p = __fadd_rn(p, __fmul_rn(__fdiv_rn(m, denom), f.neg_step_size));
}

// kVec: every pointer 16-byte aligned; float4 accesses over the first n / 4 * 4 elements,
// the rest (fewer than 4) one at a time. Grid-stride loop.
template <bool kVec>
__global__ void __launch_bounds__(256)
    adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                 float* __restrict__ v, int64_t n, AdamWFactors f) {
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t nthr = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec) {
    const int64_t nvec = n / 4;
    for (int64_t i = tid; i < nvec; i += nthr) {
      float4 pv = reinterpret_cast<const float4*>(p)[i];
      const float4 gv = reinterpret_cast<const float4*>(g)[i];
      float4 mv = reinterpret_cast<const float4*>(m)[i];
      float4 vv = reinterpret_cast<const float4*>(v)[i];
      adamw_element(pv.x, gv.x, mv.x, vv.x, f);
      adamw_element(pv.y, gv.y, mv.y, vv.y, f);
      adamw_element(pv.z, gv.z, mv.z, vv.z, f);
      adamw_element(pv.w, gv.w, mv.w, vv.w, f);
      reinterpret_cast<float4*>(p)[i] = pv;
      reinterpret_cast<float4*>(m)[i] = mv;
      reinterpret_cast<float4*>(v)[i] = vv;
    }
    done = nvec * 4;
  }
  for (int64_t i = done + tid; i < n; i += nthr) {
    float pv = p[i], mv = m[i], vv = v[i];
    adamw_element(pv, g[i], mv, vv, f);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
  }
}

}  // namespace

void adamw_step(int device, float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                int64_t n, const AdamWFactors& f) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const uintptr_t any = reinterpret_cast<uintptr_t>(param) | reinterpret_cast<uintptr_t>(grad) |
                        reinterpret_cast<uintptr_t>(exp_avg) |
                        reinterpret_cast<uintptr_t>(exp_avg_sq);
  const bool vec = any % 16 == 0;
  // Enough blocks to fill every SM (8 x 256 threads = 2048, the SM's limit), each thread
  // then looping over several vectors of large tensors; fewer blocks for small tensors.
  const int threads = 256;
  const int64_t work = vec ? ceil_div(n, 4) : n;
  const int64_t cap = int64_t(sm_count(device)) * 8;
  const int64_t blocks = std::max<int64_t>(1, std::min(ceil_div(work, threads), cap));
  if (vec)
    adamw_kernel<true>
        <<<static_cast<unsigned>(blocks), threads, 0, s>>>(param, grad, exp_avg, exp_avg_sq, n, f);
  else
    adamw_kernel<false>
        <<<static_cast<unsigned>(blocks), threads, 0, s>>>(param, grad, exp_avg, exp_avg_sq, n, f);
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
