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

// Loads rows [r0, r0 + ROWS) of a [*, COLS] row-major 16-bit matrix (COLS a multiple of
// 64) into a swizzled shared tile (Note [Flex wgmma operands]), zero-filling rows at or
// past `rows`. Consecutive threads take consecutive 16-byte chunks of a row.
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void mf_load_tile_sw128(unsigned char* dst, const unsigned short* src,
                                                   long long r0, long long rows, int tid) {
  constexpr int CH = COLS / 8;  // 16-byte chunks per row
#pragma unroll
  for (int i = tid; i < ROWS * CH; i += THREADS) {
    const int r = i / CH, c = i % CH;
    const bool ok = r0 + r < rows;
    mf_cp_async16(dst + (c / 8) * (ROWS * 128) + r * 128 + (((c % 8) ^ (r % 8)) * 16),
                  src + ((ok ? r0 + r : 0) * COLS + c * 8), ok);
  }
}
