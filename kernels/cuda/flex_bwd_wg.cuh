// flex_attention's Hopper backward kernels for bf16 / fp16 inputs (sm_90a), the
// counterparts of flex_bwd_tc.cuh's with every product a wgmma.mma_async on
// 128-byte-swizzled shared tiles (Note [Flex wgmma operands]); head dims D and Dv in
// {64, 128}. flex_bwd_delta (flex_bwd_common.cuh) runs first, then:
//   flex_bwd_dq_wg    one CTA per 64 query rows, kv tiles of 64 keys: dQ;
//   flex_bwd_dkdv_wg  one CTA per 64 keys (half a kv block), q tiles of 64 rows over the
//                     GQA group: dK, dV and the captured-tensor gradients.
// One warpgroup (64 rows) per CTA; no CTA writes another's output.
#include "flex_bwd_common.cuh"
#include "flex_mma.cuh"
#include "flex_wgmma.cuh"

// Two CTAs share a multiprocessor: one CTA's score math overlaps the other's tensor-core
// products (a CTA of two warpgroups keeps them in step at its barriers; measured slower).
#define MF_THREADS 128
#define MF_BM 64                     // resident rows per CTA: queries (dq) or keys (dkdv)
#define MF_BN 64                     // streamed tile rows: keys (dq) or queries (dkdv)
#define MF_RES_D (MF_BM * MF_D * 2)  // bytes of a resident [BM, D] tile
#define MF_RES_DV (MF_BM * MF_DV * 2)
#define MF_STR_D (MF_BN * MF_D * 2)  // bytes of a streamed [BN, D] tile
#define MF_STR_DV (MF_BN * MF_DV * 2)
// Shared memory of either kernel: two resident tiles, two stages of two streamed tiles,
// lse and delta per streamed row (dkdv), and the 1024-byte alignment slack.
#define MF_BWD_SMEM_BYTES \
  (MF_RES_D + MF_RES_DV + 2 * (MF_STR_D + MF_STR_DV) + 2 * 2 * MF_BN * 4 + 1024)

// The launcher reads the size from here (nvrtc_program), so it is written once.
extern "C" {
__constant__ int mf_smem_bytes = MF_BWD_SMEM_BYTES;
}

// The dynamic shared memory of every kernel here, declared once: the dQ body is a template
// that the extern "C" kernels share.
extern __shared__ unsigned char mf_smem_raw[];

// dQ for the MF_BM query rows of (b, h) of one CTA: walks the BlockMask row's kv blocks
// like the forward (MfKvTiles, two tiles of 64 keys per block), recomputing P from lse. DELTA:
// instead of dQ, write delta = sum_j P z dP for the rows (Note [Flex exact delta]).
template <bool DELTA>
__device__ __forceinline__ void mf_bwd_dq_wg(
    const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k, const mf_in_t* __restrict__ v,
    const mf_in_t* __restrict__ dout, const float* __restrict__ lse, const float* delta,
    float* delta_out, mf_in_t* __restrict__ dq, int Hq, int Hkv, int M, int N, float scale,
    const int* kv_num, const int* kv_idx, const int* full_num, const int* full_idx, int mask_b,
    int mask_h, int Mb, int Nb, const FlexCaptured& score_cap, const FlexCaptured& mask_cap,
    const FlexDropout& drop) {
  unsigned char* q_s = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<unsigned long long>(mf_smem_raw) + 1023) & ~1023ull);
  unsigned char* do_s = q_s + MF_RES_D;
  unsigned char* k_s = do_s + MF_RES_DV;    // [2] streamed K
  unsigned char* v_s = k_s + 2 * MF_STR_D;  // [2] streamed V
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int m0 = (gridDim.x - 1 - blockIdx.x) * MF_BM;
  const long long qrow0 = ((long long)b * Hq + h) * M;
  const unsigned short* kg =
      reinterpret_cast<const unsigned short*>(k) + ((long long)b * Hkv + hk) * N * MF_D;
  const unsigned short* vg =
      reinterpret_cast<const unsigned short*>(v) + ((long long)b * Hkv + hk) * N * MF_DV;
  const FlexCapturedGrad no_grad{};
  auto load_kv = [&](int stage, int n0) {
    mf_load_tile_sw128<MF_BN, MF_D, MF_THREADS>(k_s + stage * MF_STR_D, kg, n0, N, tid);
    mf_load_tile_sw128<MF_BN, MF_DV, MF_THREADS>(v_s + stage * MF_STR_DV, vg, n0, N, tid);
    mf_cp_async_commit();
  };

  mf_load_tile_sw128<MF_BM, MF_D, MF_THREADS>(
      q_s, reinterpret_cast<const unsigned short*>(q) + qrow0 * MF_D, m0, M, tid);
  mf_load_tile_sw128<MF_BM, MF_DV, MF_THREADS>(
      do_s, reinterpret_cast<const unsigned short*>(dout) + qrow0 * MF_DV, m0, M, tid);
  const MfKvTiles<MF_KV_BLOCK / MF_BN> tiles(kv_num, kv_idx, full_num, full_idx, b, h, mask_b,
                                             mask_h, Mb, Nb, N, m0);
  const int n_tiles = tiles.count;
  int n0_next = n_tiles > 0 ? tiles.start(0) : 0;
  if (n_tiles > 0)
    load_kv(0, n0_next);
  else
    mf_cp_async_commit();

  // This lane's two rows: lse (base 2) and delta.
  const int row0 = m0 + warp * 16 + g;
  float lse2[2], dlt[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + r * 8;
    const float l = row < M ? lse[qrow0 + row] : MF_NEG_INF;
    lse2[r] = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
    dlt[r] = !DELTA && row < M ? delta[qrow0 + row] : 0.0f;
  }
  float acc[MF_D / 8][4];
  mf_zero(acc);
  float rsum[2] = {0.0f, 0.0f};  // DELTA: this lane's part of each row's sum
  const unsigned q_addr = mf_smem_addr(q_s);
  const unsigned do_addr = mf_smem_addr(do_s);
  const unsigned k_addr = mf_smem_addr(k_s), v_addr = mf_smem_addr(v_s);

  for (int i = 0; i < n_tiles; ++i) {
    const int n0 = n0_next;
    const bool partial = tiles.partial(i);
    const int stage = i & 1;
    if (i + 1 < n_tiles) {
      n0_next = tiles.start(i + 1);
      load_kv(stage ^ 1, n0_next);
      mf_cp_async_wait<1>();
    } else {
      mf_cp_async_wait<0>();
    }
    mf_fence_proxy_async();
    __syncthreads();
    if (n0 < N) {
      const unsigned ks = k_addr + stage * MF_STR_D;
      float s[MF_BN / 8][4], dp[MF_BN / 8][4];
      mf_wgmma_arrive();
      mf_wg_abt<MF_D, MF_BM, MF_BN>(s, q_addr, ks);                             // S = Q K^T
      mf_wg_abt<MF_DV, MF_BM, MF_BN>(dp, do_addr, v_addr + stage * MF_STR_DV);  // dP = dO V^T
      mf_wgmma_commit();
      mf_wgmma_wait<0>();
      mf_wgmma_fence_operands(s);
      mf_wgmma_fence_operands(dp);
      auto elems = [&](bool check) {
        unsigned keep[2] = {0u, 0u};
        if (check)
          mf_keep_bits<MF_BN / 8, 2, true>(keep, row0, n0 + 2 * t4, M, N, partial, b, h, mask_cap);
#pragma unroll
        for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2, row = row0 + r * 8, kv = n0 + nt * 8 + 2 * t4 + (e & 1);
            const bool ok = !check || (keep[r] >> (2 * nt + (e & 1)) & 1u);
            if (DELTA) {
              rsum[r] += mf_bwd_prob(s[nt][e], lse2[r], ok, b, h, row, kv, scale, score_cap, drop) *
                         dp[nt][e];
            } else {
              float p;
              s[nt][e] = mf_bwd_elem(s[nt][e], dp[nt][e], lse2[r], dlt[r], ok, false, b, h, row, kv,
                                     scale, score_cap, mask_cap, no_grad, drop, p, check);
            }
          }
      };
      // Both calls inline with a constant flag: the full-tile one drops the checks.
      if (partial || n0 + MF_BN > N || m0 + MF_BM > M)
        elems(true);
      else
        elems(false);
      if (!DELTA) {
        unsigned ds[MF_BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < MF_BN / 16; ++kk) mf_pack_a(ds[kk], s, kk);
        mf_wgmma_fence_operands(acc);
        mf_wgmma_arrive();
        mf_wg_pb<MF_BN>(acc, ds, ks);  // dQ += dS K
        mf_wgmma_commit();
        mf_wgmma_wait<0>();
        mf_wgmma_fence_operands(acc);
      }
    }
    __syncthreads();  // the stage read here is the one the next iteration's prefetch fills
  }
  mf_cp_async_wait<0>();
  if (DELTA) {
    const int rows[2] = {row0, row0 + 8};
    mf_store_row_sums(delta_out + qrow0, rsum, rows, M, t4);
  } else {
    mf_store_rows<MF_D, MF_D>(reinterpret_cast<unsigned short*>(dq) + qrow0 * MF_D, acc, row0, M,
                              t4);
  }
}

#define MF_DQ_ARGS                                                                                 \
  const mf_in_t *__restrict__ q, const mf_in_t *__restrict__ k, const mf_in_t *__restrict__ v,     \
      const mf_in_t *__restrict__ dout, const float *__restrict__ lse, const float *delta,         \
      mf_in_t *__restrict__ dq, int Hq, int Hkv, int M, int N, float scale, const int *kv_num,     \
      const int *kv_idx, const int *full_num, const int *full_idx, int mask_b, int mask_h, int Mb, \
      int Nb, FlexCaptured score_cap, FlexCaptured mask_cap, FlexDropout drop

// Arguments as flex_bwd_dq (flex_bwd_tc.cuh).
extern "C" __global__ void __launch_bounds__(MF_THREADS, 2) flex_bwd_dq_wg(MF_DQ_ARGS) {
  mf_bwd_dq_wg<false>(q, k, v, dout, lse, delta, nullptr, dq, Hq, Hkv, M, N, scale, kv_num, kv_idx,
                      full_num, full_idx, mask_b, mask_h, Mb, Nb, score_cap, mask_cap, drop);
}

// delta for the rows of flex_bwd_dq_wg's CTA, written to `delta` (the same arguments, dq
// unused).
extern "C" __global__ void __launch_bounds__(MF_THREADS, 2) flex_bwd_delta_exact_wg(MF_DQ_ARGS) {
  mf_bwd_dq_wg<true>(q, k, v, dout, lse, nullptr, const_cast<float*>(delta), dq, Hq, Hkv, M, N,
                     scale, kv_num, kv_idx, full_num, full_idx, mask_b, mask_h, Mb, Nb, score_cap,
                     mask_cap, drop);
}

// dK and dV for the MF_BM keys of one CTA (within one kv block) of (b, kv head hk): for
// each query head of the group, walks the transposed BlockMask row (MfQTiles, two tiles of
// 64 queries per q block), recomputing P from lse; captured-tensor gradients accumulate here
// (each score element is visited once). Arguments as flex_bwd_dkdv.
extern "C" __global__ void __launch_bounds__(MF_THREADS, 2)
    flex_bwd_dkdv_wg(const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k,
                     const mf_in_t* __restrict__ v, const mf_in_t* __restrict__ dout,
                     const float* __restrict__ lse, const float* __restrict__ delta,
                     mf_in_t* __restrict__ dk, mf_in_t* __restrict__ dv, int Hq, int Hkv, int M,
                     int N, float scale, const int* q_num, const int* q_idx, const int* full_num,
                     const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
                     FlexCaptured score_cap, FlexCaptured mask_cap, FlexCapturedGrad gcap,
                     FlexDropout drop) {
  unsigned char* k_s = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<unsigned long long>(mf_smem_raw) + 1023) & ~1023ull);
  unsigned char* v_s = k_s + MF_RES_D;
  unsigned char* q_s = v_s + MF_RES_DV;                           // [2] streamed Q
  unsigned char* do_s = q_s + 2 * MF_STR_D;                       // [2] streamed dO
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * MF_STR_DV);  // [2][BN]
  float* dlt_s = lse_s + 2 * MF_BN;                               // [2][BN]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.z, hk = blockIdx.y, group = Hq / Hkv;
  const int n0 = blockIdx.x * MF_BM;
  const long long krow0 = ((long long)b * Hkv + hk) * N;

  mf_load_tile_sw128<MF_BM, MF_D, MF_THREADS>(
      k_s, reinterpret_cast<const unsigned short*>(k) + krow0 * MF_D, n0, N, tid);
  mf_load_tile_sw128<MF_BM, MF_DV, MF_THREADS>(
      v_s, reinterpret_cast<const unsigned short*>(v) + krow0 * MF_DV, n0, N, tid);
  MfQTiles<MF_Q_BLOCK / MF_BN> tiles(q_num, q_idx, full_num, full_idx, b, mask_b, mask_h, Mb, Nb, M,
                                     n0, hk * group, group);
  auto load = [&](int stage, int hh, int m0) {
    const long long qrow0 = ((long long)b * Hq + hh) * M;
    mf_load_tile_sw128<MF_BN, MF_D, MF_THREADS>(
        q_s + stage * MF_STR_D, reinterpret_cast<const unsigned short*>(q) + qrow0 * MF_D, m0, M,
        tid);
    mf_load_tile_sw128<MF_BN, MF_DV, MF_THREADS>(
        do_s + stage * MF_STR_DV, reinterpret_cast<const unsigned short*>(dout) + qrow0 * MF_DV, m0,
        M, tid);
    // lse and delta by cp.async too, so the loads overlap this tile's products; rows past M
    // read 0 (their scores are masked).
    for (int i = tid; i < 2 * MF_BN; i += MF_THREADS) {
      const int row = m0 + i % MF_BN;
      const float* src = (i < MF_BN ? lse : delta) + qrow0 + (row < M ? row : 0);
      float* dst = (i < MF_BN ? lse_s : dlt_s) + stage * MF_BN + i % MF_BN;
      mf_cp_async4_to(mf_smem_addr(dst), src, row < M);
    }
    mf_cp_async_commit();
  };

  bool have = tiles.valid();
  int t_h = tiles.h, t_m0 = have ? tiles.m0() : 0;
  bool t_partial = tiles.partial();
  if (have)
    load(0, t_h, t_m0);
  else
    mf_cp_async_commit();

  float dk_acc[MF_D / 8][4], dv_acc[MF_DV / 8][4];
  mf_zero(dk_acc);
  mf_zero(dv_acc);
  const int key0 = n0 + warp * 16 + g;  // this lane's keys: key0, key0 + 8
  const unsigned k_addr = mf_smem_addr(k_s);
  const unsigned v_addr = mf_smem_addr(v_s);
  const unsigned q_addr = mf_smem_addr(q_s), do_addr = mf_smem_addr(do_s);

  for (int stage = 0; have; stage ^= 1) {
    const int h = t_h, m0 = t_m0;
    const bool partial = t_partial;
    tiles.advance();
    have = tiles.valid();
    if (have) {
      t_h = tiles.h, t_m0 = tiles.m0(), t_partial = tiles.partial();
      load(stage ^ 1, t_h, t_m0);
      mf_cp_async_wait<1>();
    } else {
      mf_cp_async_wait<0>();
    }
    mf_fence_proxy_async();
    __syncthreads();
    if (m0 < M) {
      const unsigned qs = q_addr + stage * MF_STR_D, dos = do_addr + stage * MF_STR_DV;
      const float* ls = lse_s + stage * MF_BN;
      const float* ds = dlt_s + stage * MF_BN;
      // S^T = K Q^T and dP^T = V dO^T: rows are this warpgroup's keys, columns the queries.
      float s[MF_BN / 8][4], dp[MF_BN / 8][4];
      mf_wgmma_arrive();
      mf_wg_abt<MF_D, MF_BM, MF_BN>(s, k_addr, qs);
      mf_wg_abt<MF_DV, MF_BM, MF_BN>(dp, v_addr, dos);
      mf_wgmma_commit();
      mf_wgmma_wait<0>();
      mf_wgmma_fence_operands(s);
      mf_wgmma_fence_operands(dp);
      auto elems = [&](bool check) {
        unsigned keep[2] = {0u, 0u};
        if (check)
          mf_keep_bits<MF_BN / 8, 2, false>(keep, key0, m0 + 2 * t4, M, N, partial, b, h, mask_cap);
#pragma unroll
        for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int col = nt * 8 + 2 * t4 + c, row = m0 + col;
            const float l = ls[col], lse2 = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
            const float dlt = ds[col];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int e = 2 * r + c, key = key0 + r * 8;
              float p;
              const bool ok = !check || (keep[r] >> (2 * nt + c) & 1u);
              const float d = mf_bwd_elem(s[nt][e], dp[nt][e], lse2, dlt, ok, false, b, h, row, key,
                                          scale, score_cap, mask_cap, gcap, drop, p, check);
              s[nt][e] = p;
              dp[nt][e] = d;
            }
          }
      };
      // Both calls inline with a constant flag: the full-tile one drops the checks.
      if (partial || m0 + MF_BN > M || n0 + MF_BM > N)
        elems(true);
      else
        elems(false);
      unsigned pa[MF_BN / 16][4], da[MF_BN / 16][4];
#pragma unroll
      for (int kk = 0; kk < MF_BN / 16; ++kk) {
        mf_pack_a(pa[kk], s, kk);
        mf_pack_a(da[kk], dp, kk);
      }
      mf_wgmma_fence_operands(dv_acc);
      mf_wgmma_fence_operands(dk_acc);
      mf_wgmma_arrive();
      mf_wg_pb<MF_BN>(dv_acc, pa, dos);  // dV += P^T dO
      mf_wg_pb<MF_BN>(dk_acc, da, qs);   // dK += dS^T Q
      mf_wgmma_commit();
      mf_wgmma_wait<0>();
      mf_wgmma_fence_operands(dv_acc);
      mf_wgmma_fence_operands(dk_acc);
    }
    __syncthreads();
  }
  mf_cp_async_wait<0>();
  mf_store_rows<MF_D, MF_D>(reinterpret_cast<unsigned short*>(dk) + krow0 * MF_D, dk_acc, key0, N,
                            t4);
  mf_store_rows<MF_DV, MF_DV>(reinterpret_cast<unsigned short*>(dv) + krow0 * MF_DV, dv_acc, key0,
                              N, t4);
}
