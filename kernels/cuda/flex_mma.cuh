// Tensor-core building blocks of flex_attention's fused kernels (sm_80 and later): cp.async
// tile loads into padded shared memory, ldmatrix fragment loads, mma.sync m16n8k16 with
// float32 accumulation, and bf16/fp16 packing. Inline PTX only (NVRTC, no CUDA headers).
#pragma once

// Note [Flex tensor-core fragments]
// mma.sync m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"); lane = 4 g + t:
//   A 16x16 (row-major):  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8  (k x n):      b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16x8  (float):      c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1)
// so a C tile pair (n 0-7 and 8-15) re-packed to 16-bit is the A fragment of the next
// product (P in P @ V) without touching shared memory. Shared tiles are row-major with
// rows padded by 8 elements (16 bytes): the 8 row addresses of one ldmatrix then fall in
// distinct bank groups.

__device__ __forceinline__ unsigned mf_smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

// 16 bytes global -> shared (at shared address dst); zero-fills when !valid (src is then
// not read).
__device__ __forceinline__ void mf_cp_async16_to(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void mf_cp_async16(void* dst, const void* src, bool valid) {
  mf_cp_async16_to(mf_smem_addr(dst), src, valid);
}
// 4 bytes global -> shared, as mf_cp_async16_to (through L1: .ca).
__device__ __forceinline__ void mf_cp_async4_to(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void mf_cp_async_commit() {
  asm volatile("cp.async.commit_group;\n");
}
template <int N>
__device__ __forceinline__ void mf_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mf_ldmatrix_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mf_smem_addr(p)));
}
__device__ __forceinline__ void mf_ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mf_smem_addr(p)));
}

// c += a @ b for one 16x8x16 tile; MF_IN selects bf16 (2) or fp16 (1) operands.
__device__ __forceinline__ void mf_mma(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                       unsigned b1) {
#if MF_IN == 1
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Zeroes a row of float accumulator tiles.
template <int R>
__device__ __forceinline__ void mf_zero(float (&c)[R][4]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) c[i][e] = 0.0f;
}

// Two floats as one 16-bit pair of the input type, lo in the low half.
__device__ __forceinline__ unsigned mf_pack2(float lo, float hi) {
  unsigned r;
#if MF_IN == 1
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#else
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}

// The 16-bit A fragment of k step kk of a product whose A is a row of float C tiles
// (P in P @ V): C tiles 2 kk and 2 kk + 1 (Note [Flex tensor-core fragments]).
template <int NT>
__device__ __forceinline__ void mf_pack_a(unsigned (&a)[4], const float (&c)[NT][4], int kk) {
  a[0] = mf_pack2(c[2 * kk][0], c[2 * kk][1]);
  a[1] = mf_pack2(c[2 * kk][2], c[2 * kk][3]);
  a[2] = mf_pack2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = mf_pack2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// Stores a warp's [16, NP] float accumulator rows (row0, row0 + 8 per lane) to a
// [*, COLS] row-major 16-bit matrix, skipping rows at or past `rows`.
template <int NP, int COLS>
__device__ __forceinline__ void mf_store_rows(unsigned short* dst, const float (&acc)[NP / 8][4],
                                              int row0, int rows, int t4) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + r * 8;
    if (row >= rows) continue;
#pragma unroll
    for (int dn = 0; dn < NP / 8; ++dn) {
      const int col = dn * 8 + 2 * t4;
      if (col < COLS)
        *reinterpret_cast<unsigned*>(dst + (long long)row * COLS + col) =
            mf_pack2(acc[dn][2 * r], acc[dn][2 * r + 1]);
    }
  }
}

// The fixed-column walk of a tile load: this thread copies 16-byte chunk c = tid % CH of
// rows r0 + r + k RSTEP (r = tid / CH, RSTEP = THREADS / CH rows per pass, CH = COLS / 8)
// of a [*, COLS] row-major 16-bit matrix to shared address d + k d_step, zero-filling rows
// at or past `rows`. One address computation per tile: per-chunk divisions and 64-bit
// offsets dominated the wgmma kernels' instructions before it. The caller maps (r, c) to d.
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void mf_load_rows(unsigned d, unsigned d_step, const unsigned short* src,
                                             long long r0, long long rows, int tid) {
  constexpr int CH = COLS / 8, RSTEP = THREADS / CH;
  static_assert(THREADS % CH == 0 && ROWS % RSTEP == 0, "the threads cover whole rows per pass");
  const int c = tid % CH, r = tid / CH;
  const unsigned short* s = src + (r0 + r) * COLS + c * 8;
  const long long left = rows - r0 - r;  // rows of this thread's column still in the matrix
#pragma unroll
  for (int k = 0; k < ROWS / RSTEP; ++k) {
    const bool ok = k * RSTEP < left;
    mf_cp_async16_to(d + k * d_step, ok ? s + k * RSTEP * COLS : src, ok);
  }
}

// Loads rows [r0, r0 + ROWS) of a [*, COLS] row-major matrix (COLS a multiple of 8 16-bit
// elements) into a shared tile with row stride LD, zero-filling rows at or past `rows`:
// mf_load_rows when the threads cover whole rows per pass, else a chunk-by-chunk walk.
template <int ROWS, int COLS, int LD, int THREADS>
__device__ __forceinline__ void mf_load_tile(unsigned short* dst, const unsigned short* src,
                                             long long r0, long long rows, int tid) {
  constexpr int CH = COLS / 8;  // 16-byte chunks per row
  if constexpr (THREADS % CH == 0 && ROWS % (THREADS / CH) == 0) {
    const int c = tid % CH, r = tid / CH;
    mf_load_rows<ROWS, COLS, THREADS>(mf_smem_addr(dst + r * LD + c * 8), THREADS / CH * LD * 2,
                                      src, r0, rows, tid);
  } else {
#pragma unroll
    for (int i = tid; i < ROWS * CH; i += THREADS) {
      const int r = i / CH, c = i % CH;
      const bool ok = r0 + r < rows;
      mf_cp_async16(dst + r * LD + c * 8, src + ((ok ? r0 + r : 0) * COLS + c * 8), ok);
    }
  }
}
