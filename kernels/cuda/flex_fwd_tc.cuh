// flex_attention's tensor-core forward kernel for bf16 / fp16 inputs (FlashAttention-2
// style, mma.sync), compiled at run time with NVRTC together with flex_common.cuh,
// flex_mma.cuh and the generated mods. The launcher defines the tile shape:
//   MF_WARPS warps per CTA, MF_MT 16-row m tiles per warp (BM = 16 MF_WARPS MF_MT = 128
//   query rows, one BlockMask q block), MF_BN keys per tile (divides 128).
#include "flex_common.cuh"
#include "flex_mma.cuh"

#define MF_BM (16 * MF_WARPS * MF_MT)
#define MF_THREADS (32 * MF_WARPS)
#define MF_DP ((MF_D + 15) / 16 * 16)    // D padded to the mma k step
#define MF_DVP ((MF_DV + 15) / 16 * 16)  // Dv padded to pairs of 8-wide n tiles
#define MF_QLD (MF_DP + 8)               // shared row strides (Note [Flex tensor-core fragments])
#define MF_VLD (MF_DVP + 8)
#include "flex_fwd_common.cuh"

// Shared memory bytes the launcher reserves: Q, then two stages of K and of V.
#define MF_SMEM_BYTES ((MF_BM * MF_QLD + 2 * MF_BN * MF_QLD + 2 * MF_BN * MF_VLD) * 2)

// The launcher reads the size from here (nvrtc_program), so it is written once.
extern "C" {
__constant__ int mf_smem_bytes = MF_SMEM_BYTES;
}

// One CTA per (query block of 128 rows, head, batch). Each warp owns MF_MT x 16 query rows
// and keeps their output accumulators in registers; K and V tiles of MF_BN keys stream
// through two shared-memory stages (cp.async, the next tile loads while this one
// computes). Tiles come from the BlockMask row: partial kv blocks (mask_mod applied), then
// full ones; without a mask every kv block is full. q, k, v, out contiguous; lse float32.
// out [B, Hq, M, Dv]; lse [B, Hq, M]; fully masked rows get zeros and -inf.
extern "C" __global__ void __launch_bounds__(MF_THREADS)
    flex_fwd_tc(const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k,
                const mf_in_t* __restrict__ v, mf_in_t* __restrict__ out, float* __restrict__ lse,
                int Hq, int Hkv, int M, int N, float scale, const int* kv_num, const int* kv_idx,
                const int* full_num, const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
                FlexCaptured score_cap, FlexCaptured mask_cap, FlexDropout drop) {
  extern __shared__ __align__(16) unsigned short mf_smem[];
  unsigned short* q_s = mf_smem;                   // [BM][QLD]
  unsigned short* k_s = q_s + MF_BM * MF_QLD;      // [2][BN][QLD]
  unsigned short* v_s = k_s + 2 * MF_BN * MF_QLD;  // [2][BN][VLD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  // Heaviest query blocks first (under a causal mask the last rows see the most keys), so
  // the grid's tail is short.
  const int m0 = (gridDim.x - 1 - blockIdx.x) * MF_BM;
  const unsigned short* qg =
      reinterpret_cast<const unsigned short*>(q) + ((long long)b * Hq + h) * M * MF_D;
  const unsigned short* kg =
      reinterpret_cast<const unsigned short*>(k) + ((long long)b * Hkv + hk) * N * MF_D;
  const unsigned short* vg =
      reinterpret_cast<const unsigned short*>(v) + ((long long)b * Hkv + hk) * N * MF_DV;

  // Padding columns (D or Dv not a multiple of 16) stay zero: cp.async never writes them.
  if (MF_DP != MF_D || MF_DVP != MF_DV) {
    for (int i = tid; i < MF_BM + 2 * MF_BN; i += MF_THREADS) {
      unsigned short* row = i < MF_BM ? q_s + i * MF_QLD : k_s + (i - MF_BM) * MF_QLD;
      for (int c = MF_D; c < MF_DP; ++c) row[c] = 0;
    }
    for (int i = tid; i < 2 * MF_BN; i += MF_THREADS)
      for (int c = MF_DV; c < MF_DVP; ++c) v_s[i * MF_VLD + c] = 0;
  }
  mf_load_tile<MF_BM, MF_D, MF_QLD, MF_THREADS>(q_s, qg, m0, M, tid);

  const MfKvTiles<MF_KV_BLOCK / MF_BN> tiles(kv_num, kv_idx, full_num, full_idx, b, h, mask_b,
                                             mask_h, Mb, Nb, N, m0);
  const int n_tiles = tiles.count;
  int n0_next = n_tiles > 0 ? tiles.start(0) : 0;
  if (n_tiles > 0) {
    mf_load_tile<MF_BN, MF_D, MF_QLD, MF_THREADS>(k_s, kg, n0_next, N, tid);
    mf_load_tile<MF_BN, MF_DV, MF_VLD, MF_THREADS>(v_s, vg, n0_next, N, tid);
  }
  mf_cp_async_commit();

  float acc[MF_MT][MF_DVP / 8][4];
  float m_run[MF_MT][2], l_run[MF_MT][2];
#pragma unroll
  for (int mt = 0; mt < MF_MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) m_run[mt][r] = MF_NEG_INF, l_run[mt][r] = 0.0f;
#pragma unroll
    for (int dn = 0; dn < MF_DVP / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][dn][e] = 0.0f;
  }
  const int wrow0 = warp * MF_MT * 16;  // this warp's first row in the CTA
#if MF_QREG
  // With one m tile per warp the Q fragments fit in registers: loaded once.
  unsigned qf[MF_DP / 16][4];
  bool q_loaded = false;
#endif

  for (int i = 0; i < n_tiles; ++i) {
    const int n0 = n0_next;
    const bool partial = tiles.partial(i);
    const int stage = i & 1;
    if (i + 1 < n_tiles) {
      n0_next = tiles.start(i + 1);
      mf_load_tile<MF_BN, MF_D, MF_QLD, MF_THREADS>(k_s + (stage ^ 1) * MF_BN * MF_QLD, kg, n0_next,
                                                    N, tid);
      mf_load_tile<MF_BN, MF_DV, MF_VLD, MF_THREADS>(v_s + (stage ^ 1) * MF_BN * MF_VLD, vg,
                                                     n0_next, N, tid);
      mf_cp_async_commit();
      mf_cp_async_wait<1>();
    } else {
      mf_cp_async_wait<0>();
    }
    __syncthreads();
#if MF_QREG
    if (!q_loaded) {
#pragma unroll
      for (int kk = 0; kk < MF_DP / 16; ++kk)
        mf_ldmatrix_x4(qf[kk], q_s + (wrow0 + lane % 16) * MF_QLD + kk * 16 + (lane / 16) * 8);
      q_loaded = true;
    }
#endif
    if (n0 < N) {
      const unsigned short* ks = k_s + stage * MF_BN * MF_QLD;
      const unsigned short* vs = v_s + stage * MF_BN * MF_VLD;
      // S = Q K^T for this warp's rows: s[mt][n tile][c].
      float s[MF_MT][MF_BN / 8][4];
#pragma unroll
      for (int mt = 0; mt < MF_MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < MF_DP / 16; ++kk) {
#if MF_QREG
        const unsigned(&a)[MF_MT][4] = reinterpret_cast<const unsigned(&)[1][4]>(qf[kk]);
#else
        unsigned a[MF_MT][4];
#pragma unroll
        for (int mt = 0; mt < MF_MT; ++mt)
          mf_ldmatrix_x4(a[mt],
                         q_s + (wrow0 + mt * 16 + lane % 16) * MF_QLD + kk * 16 + (lane / 16) * 8);
#endif
#pragma unroll
        for (int np = 0; np < MF_BN / 16; ++np) {
          unsigned bf[4];
          mf_ldmatrix_x4(bf, ks + (np * 16 + (lane / 16) * 8 + lane % 8) * MF_QLD + kk * 16 +
                                 ((lane / 8) & 1) * 8);
#pragma unroll
          for (int mt = 0; mt < MF_MT; ++mt) {
            mf_mma(s[mt][2 * np], a[mt], bf[0], bf[1]);
            mf_mma(s[mt][2 * np + 1], a[mt], bf[2], bf[3]);
          }
        }
      }
      // score_mod, masks, then the online softmax; the bounds and mask_mod checks only
      // where the tile is partial or crosses M or N.
      float alpha[MF_MT][2];
      if (partial || n0 + MF_BN > N || m0 + MF_BM > M)
        mf_softmax_tile<true>(s, m_run, l_run, alpha, m0 + wrow0 + g, n0 + 2 * t4, M, N, scale,
                              partial, b, h, score_cap, mask_cap, drop);
      else
        mf_softmax_tile<false>(s, m_run, l_run, alpha, m0 + wrow0 + g, n0 + 2 * t4, M, N, scale,
                               false, b, h, score_cap, mask_cap, drop);
      mf_rescale(acc, alpha);
      // O += P V, P re-packed from the S fragments.
#pragma unroll
      for (int kk = 0; kk < MF_BN / 16; ++kk) {
        unsigned a[MF_MT][4];
#pragma unroll
        for (int mt = 0; mt < MF_MT; ++mt) mf_pack_a(a[mt], s[mt], kk);
#pragma unroll
        for (int dp = 0; dp < MF_DVP / 16; ++dp) {
          unsigned bf[4];
          mf_ldmatrix_x4_trans(bf, vs + (kk * 16 + ((lane / 8) & 1) * 8 + lane % 8) * MF_VLD +
                                       dp * 16 + (lane / 16) * 8);
#pragma unroll
          for (int mt = 0; mt < MF_MT; ++mt) {
            mf_mma(acc[mt][2 * dp], a[mt], bf[0], bf[1]);
            mf_mma(acc[mt][2 * dp + 1], a[mt], bf[2], bf[3]);
          }
        }
      }
    }
    __syncthreads();  // the stage read here is the one the next iteration's prefetch fills
  }

  mf_cp_async_wait<0>();  // no tiles at all: the Q load is still in flight

  mf_fwd_store(acc, m_run, l_run, out, lse, ((long long)b * Hq + h) * M, m0 + wrow0 + g, M, t4);
}
