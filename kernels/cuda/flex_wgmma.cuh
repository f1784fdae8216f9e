// Hopper (sm_90a) building blocks of flex_attention's fused kernels: shared-memory matrix
// descriptors, 128-byte-swizzled cp.async tile loads, the fences and group waits of
// wgmma.mma_async, and the wrappers themselves (flex_wgmma_ops.cuh). Inline PTX only.
#pragma once

#if MF_IN == 1
#define MF_WG_TYPE "f16"
#else
#define MF_WG_TYPE "bf16"
#endif
#include "flex_wgmma_ops.cuh"

// Note [Flex wgmma operands]
// A warpgroup (4 consecutive warps, the first one's index divisible by 4) multiplies
// A [64 x 16] by B [16 x n] into float accumulators d[n / 8][4]. Warp w of the group holds
// rows 16 w .. 16 w + 15, laid out per warp exactly as an mma.sync m16n8k16 C tile per
// 8 columns (Note [Flex tensor-core fragments]); an A operand from registers is the
// mma.sync A fragment of the warp's 16 rows. So score tiles re-pack to the A operand of
// P @ V as in the mma.sync kernels.
//
// Shared tiles are stored in 128-byte swizzle atoms: 8 rows of 64 16-bit elements, the
// 16-byte chunk c of row r at chunk c ^ (r % 8), every atom 1024-byte aligned (the
// hardware applies the XOR to address bits 4-6 from bits 7-9). A tile of R rows and C
// columns (C a multiple of 64) is C / 64 column panels of R x 64, each R * 128 bytes.
//   K-major operand (the reduction dim contiguous: Q and K in Q K^T): the descriptor
//   starts at the panel holding k .. k + 15, plus 32 bytes per 16-column step inside
//   it; 8-row groups are 1024 bytes apart (stride byte offset); the leading byte offset
//   is unused.
//   MN-major operand (the output dim contiguous: V in P @ V, transposed by the wgmma's
//   trans-b bit): rows are the reduction dim, so a 16-row step is 2048 bytes; 8-row
//   groups are 1024 bytes apart (stride byte offset) and the 64-wide panels of the
//   output dim are R * 128 bytes apart (leading byte offset).
// Tiles written by cp.async (the generic proxy) are read by wgmma (the async proxy):
// each writing thread fences (fence.proxy.async) before the barrier that publishes them.

// Descriptor of a 128-byte-swizzled operand at shared address `addr` (bytes).
__device__ __forceinline__ unsigned long long mf_wg_desc(unsigned addr, unsigned lbo,
                                                         unsigned sbo) {
  return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) |
         static_cast<unsigned long long>((lbo & 0x3FFFF) >> 4) << 16 |
         static_cast<unsigned long long>((sbo & 0x3FFFF) >> 4) << 32 | 1ull << 62;
}

// A descriptor moved `bytes` (a multiple of 16) further into shared memory: the start
// address is the low field, and shared addresses stay under 2^18, so it never carries.
__device__ __forceinline__ unsigned long long mf_wg_desc_at(unsigned long long desc,
                                                            unsigned bytes) {
  return desc + (bytes >> 4);
}

__device__ __forceinline__ void mf_wgmma_arrive() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void mf_wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void mf_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void mf_fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Keeps the compiler from moving accesses to accumulators across the asynchronous
// products that own them.
template <int R>
__device__ __forceinline__ void mf_wgmma_fence_operands(float (&d)[R][4]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+f"(d[i][j])::"memory");
}

// c = A B^T for one warpgroup (the S = Q K^T shape): A is 64 rows of a swizzled
// [A_ROWS, KD] tile starting at a_addr, B a whole [B_ROWS, KD] tile, both K-major; c is
// [64, B_ROWS] (R = B_ROWS / 8).
template <int KD, int A_ROWS, int B_ROWS, int R>
__device__ __forceinline__ void mf_wg_abt(float (&c)[R][4], unsigned a_addr, unsigned b_addr) {
  static_assert(R * 8 == B_ROWS, "one accumulator tile per 8 rows of B");
  const unsigned long long ad = mf_wg_desc(a_addr, 0, 1024), bd = mf_wg_desc(b_addr, 0, 1024);
#pragma unroll
  for (int kk = 0; kk < KD / 16; ++kk)
    mf_wgmma_ss<0, 0>(c, mf_wg_desc_at(ad, (kk / 4) * A_ROWS * 128 + (kk % 4) * 32),
                      mf_wg_desc_at(bd, (kk / 4) * B_ROWS * 128 + (kk % 4) * 32), kk > 0);
}

// acc += P B for one warpgroup (the O += P V shape): P [64, K_ROWS] already packed to A
// fragments, B a swizzled [K_ROWS, 8 R] tile read MN-major (the trans-b bit).
template <int K_ROWS, int R>
__device__ __forceinline__ void mf_wg_pb(float (&acc)[R][4], const unsigned (&p)[K_ROWS / 16][4],
                                         unsigned b_addr) {
  const unsigned long long bd = mf_wg_desc(b_addr, K_ROWS * 128, 1024);
#pragma unroll
  for (int kk = 0; kk < K_ROWS / 16; ++kk)
    mf_wgmma_rs<1>(acc, p[kk], mf_wg_desc_at(bd, kk * 2048), 1);
}

// Loads rows [r0, r0 + ROWS) of a [*, COLS] row-major 16-bit matrix (COLS a multiple of
// 64) into a swizzled shared tile (Note [Flex wgmma operands]), zero-filling rows at or
// past `rows`, through mf_load_rows: a thread's rows advance by a multiple of 8, so its
// swizzled column never changes either.
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void mf_load_tile_sw128(unsigned char* dst, const unsigned short* src,
                                                   long long r0, long long rows, int tid) {
  constexpr int CH = COLS / 8;         // 16-byte chunks per row
  constexpr int RSTEP = THREADS / CH;  // rows per pass
  static_assert(RSTEP % 8 == 0, "the swizzle repeats every 8 rows");
  const int c = tid % CH, r = tid / CH;
  const unsigned d =
      mf_smem_addr(dst) + (c / 8) * (ROWS * 128) + r * 128 + ((c % 8) ^ (r % 8)) * 16;
  mf_load_rows<ROWS, COLS, THREADS>(d, RSTEP * 128, src, r0, rows, tid);
}
