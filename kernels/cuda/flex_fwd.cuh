// flex_attention's fused forward kernel, compiled at run time with NVRTC (never by nvcc):
// kernels/cuda/nvrtc_compile.cpp adds the header "flex_mods.cuh" holding MF_D, MF_DV,
// MF_IN (0 float32, 1 float16, 2 bfloat16) and the generated score_mod / mask_mod
// (ops/flex_attention/codegen.h). No CUDA headers: 16-bit conversions are written here.

struct FlexTensorRef {
  const void* data;
  long long sizes[4];
  long long strides[4];
};

// The tensors a mod captured, plus the fault record for out-of-range indices:
// fault[0] = 1 once set, then which mod (0 score_mod, 1 mask_mod), slot, dim, index, size.
struct FlexCaptured {
  FlexTensorRef t[8];
  unsigned long long* fault;
  int which;
};

// The gradient buffers of score_mod's captured tensors for its generated backward
// (Note [Generated score_mod backward] in ops/flex_attention/codegen.h): data[slot] is a
// float32 buffer shaped like captured tensor `slot`, which is contiguous, so the forward's
// element offset addresses both; null for slots that need no grad. `deterministic` is for
// the backward kernel's choice of reduction: mf_grad_add always adds atomically, whose
// order (and so the float rounding) varies from run to run.
struct FlexCapturedGrad {
  float* data[8];
  int deterministic;
};

__device__ __forceinline__ void mf_grad_add(const FlexCapturedGrad& g, int slot, long long off,
                                            float v) {
  atomicAdd(g.data[slot] + off, v);
}

__device__ __forceinline__ float mf_bf16_to_f32(unsigned short x) {
  return __uint_as_float(static_cast<unsigned>(x) << 16);
}
__device__ __forceinline__ unsigned short mf_f32_to_bf16(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<unsigned short>(u >> 16);
}
__device__ __forceinline__ float mf_f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short mf_f32_to_f16(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ float mf_round_bf16(float x) { return mf_bf16_to_f32(mf_f32_to_bf16(x)); }
__device__ __forceinline__ float mf_round_f16(float x) { return mf_f16_to_f32(mf_f32_to_f16(x)); }
__device__ __forceinline__ float mf_load_bf16(const void* p, long long o) {
  return mf_bf16_to_f32(static_cast<const unsigned short*>(p)[o]);
}
__device__ __forceinline__ float mf_load_f16(const void* p, long long o) {
  return mf_f16_to_f32(static_cast<const unsigned short*>(p)[o]);
}

// NaN-propagating like the CPU maximum / minimum.
template <typename T>
__device__ __forceinline__ T mf_maximum(T a, T b) {
  return a != a ? a : b != b ? b : a > b ? a : b;
}
template <typename T>
__device__ __forceinline__ T mf_minimum(T a, T b) {
  return a != a ? a : b != b ? b : a < b ? a : b;
}
__device__ __forceinline__ float mf_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double mf_abs(double x) { return fabs(x); }
__device__ __forceinline__ int mf_abs(int x) { return x < 0 ? -x : x; }
__device__ __forceinline__ long long mf_abs(long long x) { return x < 0 ? -x : x; }
// Python's floor division and modulo (the sign of the divisor).
__device__ __forceinline__ float mf_floor_divide(float a, float b) { return floorf(a / b); }
__device__ __forceinline__ double mf_floor_divide(double a, double b) { return floor(a / b); }
template <typename T>
__device__ __forceinline__ T mf_floor_divide(T a, T b) {
  if (b == 0) return 0;
  T q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ float mf_remainder(float a, float b) { return a - floorf(a / b) * b; }
__device__ __forceinline__ double mf_remainder(double a, double b) { return a - floor(a / b) * b; }
template <typename T>
__device__ __forceinline__ T mf_remainder(T a, T b) {
  if (b == 0) return 0;
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

// Adds index i of dim d of captured tensor `slot` to off; false (and a fault record) when
// i is out of range after wrapping negatives.
__device__ __forceinline__ bool mf_index_dim(const FlexCaptured& c, int slot, int d, long long i,
                                             long long& off) {
  const long long n = c.t[slot].sizes[d];
  const long long w = i < 0 ? i + n : i;
  if (w < 0 || w >= n) {
    if (atomicCAS(c.fault, 0ull, 1ull) == 0ull) {
      c.fault[1] = static_cast<unsigned long long>(c.which);
      c.fault[2] = static_cast<unsigned long long>(slot);
      c.fault[3] = static_cast<unsigned long long>(d);
      c.fault[4] = static_cast<unsigned long long>(i);
      c.fault[5] = static_cast<unsigned long long>(n);
    }
    return false;
  }
  off += w * c.t[slot].strides[d];
  return true;
}

#include "flex_mods.cuh"

#if MF_IN == 0
typedef float mf_in_t;
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) { return p[i]; }
__device__ __forceinline__ mf_in_t mf_in_store(float x) { return x; }
#elif MF_IN == 1
typedef unsigned short mf_in_t;
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) { return mf_f16_to_f32(p[i]); }
__device__ __forceinline__ mf_in_t mf_in_store(float x) { return mf_f32_to_f16(x); }
#else
typedef unsigned short mf_in_t;
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) { return mf_bf16_to_f32(p[i]); }
__device__ __forceinline__ mf_in_t mf_in_store(float x) { return mf_f32_to_bf16(x); }
#endif

#define MF_ROWS 64          // query rows per CTA, one thread each
#define MF_KV_BLOCK 128     // BlockMask kv block size
#define MF_Q_BLOCK 128      // BlockMask q block size
#define MF_KT ((MF_D + MF_DV) > 192 ? 8 : 16)  // keys per shared-memory tile (<= 48 KiB)

// One CTA per (query block of 64 rows, head, batch); each thread owns one query row and
// runs an online softmax in float32 over the kv blocks of its BlockMask row: the partial
// ones (mask_mod applied) then the full ones. q, k, v, out contiguous; lse float32.
// out [B, Hq, M, Dv]; lse [B, Hq, M]; fully masked rows get zeros and -inf.
extern "C" __global__ void __launch_bounds__(MF_ROWS)
    flex_fwd(const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k,
             const mf_in_t* __restrict__ v, mf_in_t* __restrict__ out, float* __restrict__ lse,
             int Hq, int Hkv, int M, int N, float scale, const int* kv_num, const int* kv_idx,
             const int* full_num, const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
             FlexCaptured score_cap, FlexCaptured mask_cap) {
  __shared__ float q_s[MF_ROWS][MF_D + 1];
  __shared__ float k_s[MF_KT][MF_D];
  __shared__ float v_s[MF_KT][MF_DV];
  const int tid = threadIdx.x;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int m0 = blockIdx.x * MF_ROWS, row = m0 + tid;
  const bool valid = row < M;
  const long long qbase = ((long long)b * Hq + h) * M;
  const long long kbase = ((long long)b * Hkv + hk) * N;
  for (int i = tid; i < MF_ROWS * MF_D; i += MF_ROWS) {
    const int r = i / MF_D, d = i % MF_D;
    q_s[r][d] = m0 + r < M ? mf_in_load(q, (qbase + m0 + r) * MF_D + d) * scale : 0.0f;
  }
  const float neg_inf = __int_as_float(0xff800000);
  float m_i = neg_inf, l_i = 0.0f;
  float acc[MF_DV];
#pragma unroll
  for (int d = 0; d < MF_DV; ++d) acc[d] = 0.0f;

  // The mask row (broadcast over B or H of 1); without a mask every kv block is full.
  const long long mrow =
      ((long long)(mask_b == 1 ? 0 : b) * mask_h + (mask_h == 1 ? 0 : h)) * Mb + m0 / MF_Q_BLOCK;
  const int nkv_blocks = (N + MF_KV_BLOCK - 1) / MF_KV_BLOCK;
  for (int pass = 0; pass < 2; ++pass) {
    const bool partial = pass == 0;
    int count;
    if (kv_num == nullptr) count = partial ? 0 : nkv_blocks;
    else count = partial ? kv_num[mrow] : full_num[mrow];
    for (int j = 0; j < count; ++j) {
      int blk = j;
      if (kv_num != nullptr) blk = partial ? kv_idx[mrow * Nb + j] : full_idx[mrow * Nb + j];
      const int n_end = min(N, (blk + 1) * MF_KV_BLOCK);
      for (int n0 = blk * MF_KV_BLOCK; n0 < n_end; n0 += MF_KT) {
        __syncthreads();
        for (int i = tid; i < MF_KT * MF_D; i += MF_ROWS) {
          const int r = i / MF_D, d = i % MF_D;
          k_s[r][d] = n0 + r < n_end ? mf_in_load(k, (kbase + n0 + r) * MF_D + d) : 0.0f;
        }
        for (int i = tid; i < MF_KT * MF_DV; i += MF_ROWS) {
          const int r = i / MF_DV, d = i % MF_DV;
          v_s[r][d] = n0 + r < n_end ? mf_in_load(v, (kbase + n0 + r) * MF_DV + d) : 0.0f;
        }
        __syncthreads();
        if (!valid) continue;
        float s[MF_KT];
        float m_new = m_i;
#pragma unroll
        for (int t = 0; t < MF_KT; ++t) {
          const int kv = n0 + t;
          float x = neg_inf;
          if (kv < n_end) {
            float dot = 0.0f;
#pragma unroll 8
            for (int d = 0; d < MF_D; ++d) dot += q_s[tid][d] * k_s[t][d];
            x = score_mod(dot, b, h, row, kv, score_cap);
            if (partial && !mask_mod(b, h, row, kv, mask_cap)) x = neg_inf;
          }
          s[t] = x;
          m_new = fmaxf(m_new, x);
        }
        if (m_new == neg_inf) continue;  // everything so far masked
        const float alpha = __expf(m_i - m_new);
        l_i *= alpha;
#pragma unroll
        for (int d = 0; d < MF_DV; ++d) acc[d] *= alpha;
#pragma unroll
        for (int t = 0; t < MF_KT; ++t) {
          const float p = __expf(s[t] - m_new);
          l_i += p;
#pragma unroll
          for (int d = 0; d < MF_DV; ++d) acc[d] += p * v_s[t][d];
        }
        m_i = m_new;
      }
    }
  }
  if (!valid) return;
  const float inv = l_i > 0.0f ? 1.0f / l_i : 0.0f;
#pragma unroll
  for (int d = 0; d < MF_DV; ++d) out[(qbase + row) * MF_DV + d] = mf_in_store(acc[d] * inv);
  lse[qbase + row] = l_i > 0.0f ? m_i + logf(l_i) : neg_inf;
}
