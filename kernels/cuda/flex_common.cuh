// What flex_attention's fused kernels share, compiled at run time with NVRTC (never by
// nvcc): the launcher (kernels/cuda/flex_fused.cpp) adds the header "flex_mods.cuh" holding
// MF_D, MF_DV, MF_IN (0 float32, 1 float16, 2 bfloat16) and the generated score_mod /
// mask_mod (ops/flex_attention/codegen.h). No CUDA headers: 16-bit conversions are here.
#pragma once

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
// element offset addresses both; null for slots that need no grad.
struct FlexCapturedGrad {
  float* data[8];
  int deterministic;
};

// Attention dropout (Note [Flex dropout] in ops/flex_attention/dense.cpp): element
// ((b * Hq + h) * M + q) * N + kv of the call's Philox stream decides whether probability
// P[q, kv] is kept (and scaled by 1 / (1 - p)); the backward redraws the same bits.
struct FlexDropout {
  unsigned long long seed, offset;
  double p;
  float scale;
  int Hq, M, N;
};

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
__device__ __forceinline__ float mf_round_bf16(float x) {
  return mf_bf16_to_f32(mf_f32_to_bf16(x));
}
__device__ __forceinline__ float mf_round_f16(float x) {
  return mf_f16_to_f32(mf_f32_to_f16(x));
}
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
__device__ __forceinline__ float mf_abs(float x) {
  return fabsf(x);
}
__device__ __forceinline__ double mf_abs(double x) {
  return fabs(x);
}
__device__ __forceinline__ int mf_abs(int x) {
  return x < 0 ? -x : x;
}
__device__ __forceinline__ long long mf_abs(long long x) {
  return x < 0 ? -x : x;
}
// Python's floor division and modulo (the sign of the divisor).
__device__ __forceinline__ float mf_floor_divide(float a, float b) {
  return floorf(a / b);
}
__device__ __forceinline__ double mf_floor_divide(double a, double b) {
  return floor(a / b);
}
template <typename T>
__device__ __forceinline__ T mf_floor_divide(T a, T b) {
  if (b == 0) return 0;
  T q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ float mf_remainder(float a, float b) {
  return a - floorf(a / b) * b;
}
__device__ __forceinline__ double mf_remainder(double a, double b) {
  return a - floor(a / b) * b;
}
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
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) {
  return p[i];
}
__device__ __forceinline__ mf_in_t mf_in_store(float x) {
  return x;
}
#elif MF_IN == 1
typedef unsigned short mf_in_t;
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) {
  return mf_f16_to_f32(p[i]);
}
__device__ __forceinline__ mf_in_t mf_in_store(float x) {
  return mf_f32_to_f16(x);
}
#else
typedef unsigned short mf_in_t;
__device__ __forceinline__ float mf_in_load(const mf_in_t* p, long long i) {
  return mf_bf16_to_f32(p[i]);
}
__device__ __forceinline__ mf_in_t mf_in_store(float x) {
  return mf_f32_to_bf16(x);
}
#endif

#define MF_KV_BLOCK 128  // BlockMask kv block size
#define MF_Q_BLOCK 128   // BlockMask q block size
#define MF_NEG_INF __int_as_float(0xff800000)

// The BlockMask row of (b, h, q block): broadcast over B or H of 1.
__device__ __forceinline__ long long mf_mask_row(int b, int h, int mask_b, int mask_h, int Mb,
                                                 int q_block) {
  return ((long long)(mask_b == 1 ? 0 : b) * mask_h + (mask_h == 1 ? 0 : h)) * Mb + q_block;
}

// The key tiles one query block visits in the tensor-core kernels: the BlockMask row's
// partial kv blocks (mask_mod applied), then its full ones, each split into TPB tiles of
// MF_KV_BLOCK / TPB keys; without a mask (kv_num null) every kv block is full.
template <int TPB>
struct MfKvTiles {
  const int *idx, *full_idx;
  long long row;  // the mask row's offset into kv_indices / full_kv_indices
  int n_partial, count;
  __device__ MfKvTiles(const int* kv_num, const int* kv_idx, const int* full_num,
                       const int* full_kv_idx, int b, int h, int mask_b, int mask_h, int Mb, int Nb,
                       int N, int m0)
      : idx(kv_idx), full_idx(full_kv_idx) {
    const long long mrow = mf_mask_row(b, h, mask_b, mask_h, Mb, m0 / MF_Q_BLOCK);
    row = mrow * Nb;
    n_partial = kv_num == nullptr ? 0 : kv_num[mrow];
    const int n_full = kv_num == nullptr ? (N + MF_KV_BLOCK - 1) / MF_KV_BLOCK : full_num[mrow];
    count = (n_partial + n_full) * TPB;
    if (kv_num == nullptr) idx = nullptr;
  }
  __device__ bool partial(int i) const { return i / TPB < n_partial; }
  // First key of tile i.
  __device__ int start(int i) const {
    const int j = i / TPB;
    const int blk = idx == nullptr  ? j
                    : j < n_partial ? idx[row + j]
                                    : full_idx[row + j - n_partial];
    return blk * MF_KV_BLOCK + (i % TPB) * (MF_KV_BLOCK / TPB);
  }
};

// The split mask_mod's per-row and per-key halves (Note [Split mask_mod] in
// ops/flex_attention/codegen.h), chosen by whether the index is a query.
template <bool Q>
struct MfMaskSide {
  typedef MfMaskQ T;
  static __device__ __forceinline__ T at(int b, int h, int i, const FlexCaptured& c) {
    return mask_mod_q(b, h, i, c);
  }
};
template <>
struct MfMaskSide<false> {
  typedef MfMaskKv T;
  static __device__ __forceinline__ T at(int b, int h, int i, const FlexCaptured& c) {
    return mask_mod_kv(b, h, i, c);
  }
};
__device__ __forceinline__ bool mf_mask_pair(int b, int h, int q, int kv, const MfMaskQ& qv,
                                             const MfMaskKv& kvv, const FlexCaptured& c) {
  return mask_mod_pair(b, h, q, kv, qv, kvv, c);
}
__device__ __forceinline__ bool mf_mask_pair(int b, int h, int kv, int q, const MfMaskKv& kvv,
                                             const MfMaskQ& qv, const FlexCaptured& c) {
  return mask_mod_pair(b, h, q, kv, qv, kvv, c);
}

// Which elements of R fragment rows (row0 + 8 r) of a score tile pass the bounds and, when
// the tile is partial, mask_mod: bit 2 nt + c of bits[r] for column col0 + 8 nt + c
// (nt < NT; the C fragment layout of Note [Flex tensor-core fragments], col0 = the tile's
// first column + 2 (lane % 4)). Q_ROWS: rows are queries and columns keys (S = Q K^T); else
// the transpose (S^T in the dK/dV kernels). Every lane of the warp calls it together.
// The split mask_mod runs once per row a thread owns, once per column of the tile and only
// the pair function per element: lane l evaluates columns l, l + 32, ... of the tile, and
// the 8 lanes that hold a column in the fragment layout read its values by shuffle, so a
// mask_mod that gathers from captured tensors (doc[kv]) gathers 8 NT / 32 times per lane
// per tile, all before the element loop, instead of 2 NT times in a dependent chain.
template <int NT, int R, bool Q_ROWS>
__device__ __forceinline__ void mf_keep_bits(unsigned (&bits)[R], int row0, int col0, int M, int N,
                                             bool partial, int b, int h,
                                             const FlexCaptured& mask_cap) {
  static_assert(2 * NT <= 32, "one bit per element of the row");
  typedef typename MfMaskSide<Q_ROWS>::T RowT;
  typedef typename MfMaskSide<!Q_ROWS>::T ColT;
  const int row_end = Q_ROWS ? M : N, col_end = Q_ROWS ? N : M;
  const int lane = threadIdx.x & 31, base = col0 - 2 * (lane & 3);
#pragma unroll
  for (int r = 0; r < R; ++r) bits[r] = 0u;
  if (!partial) {  // bounds only
#pragma unroll
    for (int i = 0; i < 2 * NT; ++i) {
      const bool col_ok = col0 + (i / 2) * 8 + i % 2 < col_end;
#pragma unroll
      for (int r = 0; r < R; ++r)
        bits[r] |= static_cast<unsigned>(col_ok && row0 + 8 * r < row_end) << i;
    }
    return;
  }
  RowT rv[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rv[r] = RowT();
    if (row0 + 8 * r < row_end) rv[r] = MfMaskSide<Q_ROWS>::at(b, h, row0 + 8 * r, mask_cap);
  }
  ColT own[(NT + 3) / 4];  // columns lane + 32 s of the tile
#pragma unroll
  for (int s = 0; s < (NT + 3) / 4; ++s) {
    const int j = lane + 32 * s;
    own[s] = ColT();
    if (j < 8 * NT && base + j < col_end)
      own[s] = MfMaskSide<!Q_ROWS>::at(b, h, base + j, mask_cap);
  }
#pragma unroll
  for (int s = 0; s < (NT + 3) / 4; ++s) {
    // A pair function that gathers (table[b][h][q][kv]) keeps its loop rolled 4 deep, so its
    // loads add little register pressure to the score math around it.
#if MF_MASK_PAIR_GATHERS
#pragma unroll 4
#else
#pragma unroll
#endif
    for (int i = 8 * s; i < 8 * s + 8 && i < 2 * NT; ++i) {
      const int j = (i / 2) * 8 + 2 * (lane & 3) + i % 2, col = base + j;  // j / 32 == s
      const ColT cv = mask_mod_shfl(own[s], j & 31);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int row = row0 + 8 * r;
        const bool ok =
            col < col_end && row < row_end && mf_mask_pair(b, h, row, col, rv[r], cv, mask_cap);
        bits[r] |= static_cast<unsigned>(ok) << i;
      }
    }
  }
}

#if MF_DROPOUT
#include "philox.h"
// 1 / (1 - dropout p) where P[q, kv] is kept, 0 where dropout removes it.
__device__ __forceinline__ float mf_dropout_factor(const FlexDropout& d, int b, int h, int q,
                                                   int kv) {
  const unsigned long long id =
      ((static_cast<unsigned long long>(b) * d.Hq + h) * d.M + q) * d.N + kv;
  return microflex::philox::dropout_keep(d.seed, d.offset, id, d.p) ? d.scale : 0.0f;
}
#endif
