// flex_attention's tensor-core backward kernels for bf16 / fp16 inputs (FlashAttention-2
// style, mma.sync), compiled at run time with NVRTC together with flex_common.cuh,
// flex_mma.cuh and the generated score_mod, mask_mod and score_mod_backward:
//   flex_bwd_delta  delta = rowsum(dO * O);
//   flex_bwd_dq     one CTA per 128 query rows: dQ over the row's kv blocks (kv_indices);
//   flex_bwd_dkdv   one CTA per 128-key kv block: dK, dV over its q blocks (q_indices),
//                   for every query head of the GQA group; captured-tensor gradients.
// Neither writes another CTA's output, so dQ, dK and dV are deterministic. Each warp owns
// 16 rows (queries or keys); Note [Flex tensor-core fragments] in flex_mma.cuh.
#include "flex_bwd_common.cuh"
#include "flex_mma.cuh"

// Tiles (set by the launcher): head dims up to 128 take 8 warps (128 rows per CTA) and
// streamed tiles of 64; larger ones 4 warps (64 rows) and tiles of 32, so shared memory
// stays under the limit (a warp's dK and dV accumulators then spill for D = 256).
#ifndef MF_WARPS
#define MF_WARPS 8
#endif
#ifndef MF_BN
#define MF_BN 64  // streamed tile: keys (dq) or queries (dkdv)
#endif
#define MF_THREADS (MF_WARPS * 32)
#define MF_BM (MF_WARPS * 16)  // rows per CTA: 16 per warp
#define MF_DP ((MF_D + 15) / 16 * 16)
#define MF_DVP ((MF_DV + 15) / 16 * 16)
#define MF_QLD (MF_DP + 8)
#define MF_VLD (MF_DVP + 8)

// Shared memory of each kernel: two resident [128, *] tiles and two stages of two streamed
// [64, *] tiles (+ lse and delta per streamed row for dkdv).
#define MF_DQ_SMEM_BYTES ((MF_BM * (MF_QLD + MF_VLD) + 2 * MF_BN * (MF_QLD + MF_VLD)) * 2)
#define MF_DKDV_SMEM_BYTES (MF_DQ_SMEM_BYTES + 2 * 2 * MF_BN * 4)

// The launcher reads the size from here (nvrtc_program), so it is written once.
extern "C" {
__constant__ int mf_smem_bytes = MF_DKDV_SMEM_BYTES;
}

// c[nt] = A_rows @ B^T for this warp: A [16 rows of a_s, K cols], B [MF_BN rows of b_s, K
// cols], both row-major in shared memory (the S = Q K^T shape).
template <int KP, int LDA, int LDB>
__device__ __forceinline__ void mf_mm_abt(float (&c)[MF_BN / 8][4], const unsigned short* a_s,
                                          const unsigned short* b_s, int lane) {
#pragma unroll
  for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) c[nt][e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < KP / 16; ++kk) {
    unsigned a[4];
    mf_ldmatrix_x4(a, a_s + (lane % 16) * LDA + kk * 16 + (lane / 16) * 8);
#pragma unroll
    for (int np = 0; np < MF_BN / 16; ++np) {
      unsigned bf[4];
      mf_ldmatrix_x4(
          bf, b_s + (np * 16 + (lane / 16) * 8 + lane % 8) * LDB + kk * 16 + ((lane / 8) & 1) * 8);
      mf_mma(c[2 * np], a, bf[0], bf[1]);
      mf_mma(c[2 * np + 1], a, bf[2], bf[3]);
    }
  }
}

// acc[dn] += P @ B for this warp: P [16, MF_BN] in C fragments (re-packed to 16-bit), B
// [MF_BN rows of b_s, NP cols] row-major in shared memory (the O += P V shape).
template <int NP, int LDB>
__device__ __forceinline__ void mf_mm_pb(float (&acc)[NP / 8][4], const float (&p)[MF_BN / 8][4],
                                         const unsigned short* b_s, int lane) {
#pragma unroll
  for (int kk = 0; kk < MF_BN / 16; ++kk) {
    unsigned a[4];
    mf_pack_a(a, p, kk);
#pragma unroll
    for (int dp = 0; dp < NP / 16; ++dp) {
      unsigned bf[4];
      mf_ldmatrix_x4_trans(
          bf, b_s + (kk * 16 + ((lane / 8) & 1) * 8 + lane % 8) * LDB + dp * 16 + (lane / 16) * 8);
      mf_mma(acc[2 * dp], a, bf[0], bf[1]);
      mf_mma(acc[2 * dp + 1], a, bf[2], bf[3]);
    }
  }
}

// The dynamic shared memory of every kernel here, declared once: the dQ body is a template
// that the extern "C" kernels share.
extern __shared__ __align__(16) unsigned short mf_smem[];

// dQ for MF_BM query rows of (b, h): walks the kv blocks of the BlockMask row like the
// forward (partial ones with mask_mod, then full ones), recomputing P from lse. DELTA:
// instead of dQ, write delta = sum_j P z dP for the rows (Note [Flex exact delta]).
template <bool DELTA>
__device__ __forceinline__ void mf_bwd_dq(
    const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k, const mf_in_t* __restrict__ v,
    const mf_in_t* __restrict__ dout, const float* __restrict__ lse, const float* delta,
    float* delta_out, mf_in_t* __restrict__ dq, int Hq, int Hkv, int M, int N, float scale,
    const int* kv_num, const int* kv_idx, const int* full_num, const int* full_idx, int mask_b,
    int mask_h, int Mb, int Nb, const FlexCaptured& score_cap, const FlexCaptured& mask_cap,
    const FlexDropout& drop) {
  unsigned short* q_s = mf_smem;                   // [BM][QLD]
  unsigned short* do_s = q_s + MF_BM * MF_QLD;     // [BM][VLD]
  unsigned short* k_s = do_s + MF_BM * MF_VLD;     // [2][BN][QLD]
  unsigned short* v_s = k_s + 2 * MF_BN * MF_QLD;  // [2][BN][VLD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int m0 = (gridDim.x - 1 - blockIdx.x) * MF_BM;
  const long long qrow0 = ((long long)b * Hq + h) * M;
  const unsigned short* qg = reinterpret_cast<const unsigned short*>(q) + qrow0 * MF_D;
  const unsigned short* dog = reinterpret_cast<const unsigned short*>(dout) + qrow0 * MF_DV;
  const unsigned short* kg =
      reinterpret_cast<const unsigned short*>(k) + ((long long)b * Hkv + hk) * N * MF_D;
  const unsigned short* vg =
      reinterpret_cast<const unsigned short*>(v) + ((long long)b * Hkv + hk) * N * MF_DV;
  const FlexCapturedGrad no_grad{};

  if (MF_DP != MF_D || MF_DVP != MF_DV) {
    for (int i = tid; i < MF_BM + 2 * MF_BN; i += MF_THREADS) {
      unsigned short* qr = i < MF_BM ? q_s + i * MF_QLD : k_s + (i - MF_BM) * MF_QLD;
      unsigned short* vr = i < MF_BM ? do_s + i * MF_VLD : v_s + (i - MF_BM) * MF_VLD;
      for (int c = MF_D; c < MF_DP; ++c) qr[c] = 0;
      for (int c = MF_DV; c < MF_DVP; ++c) vr[c] = 0;
    }
  }
  mf_load_tile<MF_BM, MF_D, MF_QLD, MF_THREADS>(q_s, qg, m0, M, tid);
  mf_load_tile<MF_BM, MF_DV, MF_VLD, MF_THREADS>(do_s, dog, m0, M, tid);

  const MfKvTiles<MF_KV_BLOCK / MF_BN> tiles(kv_num, kv_idx, full_num, full_idx, b, h, mask_b,
                                             mask_h, Mb, Nb, N, m0);
  const int n_tiles = tiles.count;
  int n0_next = n_tiles > 0 ? tiles.start(0) : 0;
  if (n_tiles > 0) {
    mf_load_tile<MF_BN, MF_D, MF_QLD, MF_THREADS>(k_s, kg, n0_next, N, tid);
    mf_load_tile<MF_BN, MF_DV, MF_VLD, MF_THREADS>(v_s, vg, n0_next, N, tid);
  }
  mf_cp_async_commit();

  // This lane's two rows: lse (base 2) and delta.
  float lse2[2], dlt[2];
  int rows[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rows[r] = m0 + warp * 16 + g + r * 8;
    const float l = rows[r] < M ? lse[qrow0 + rows[r]] : MF_NEG_INF;
    lse2[r] = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
    dlt[r] = !DELTA && rows[r] < M ? delta[qrow0 + rows[r]] : 0.0f;
  }
  float acc[MF_DP / 8][4];
  mf_zero(acc);
  float rsum[2] = {0.0f, 0.0f};  // DELTA: this lane's part of each row's sum

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
    if (n0 < N) {
      const unsigned short* ks = k_s + stage * MF_BN * MF_QLD;
      const unsigned short* vs = v_s + stage * MF_BN * MF_VLD;
      float s[MF_BN / 8][4], dp[MF_BN / 8][4];
      mf_mm_abt<MF_DP, MF_QLD, MF_QLD>(s, q_s + warp * 16 * MF_QLD, ks, lane);
      mf_mm_abt<MF_DVP, MF_VLD, MF_VLD>(dp, do_s + warp * 16 * MF_VLD, vs, lane);
      unsigned keep[2];  // bounds, and mask_mod on partial tiles (split, as the forward)
      mf_keep_bits<MF_BN / 8, 2, true>(keep, rows[0], n0 + 2 * t4, M, N, partial, b, h, mask_cap);
      if (DELTA) {
#pragma unroll
        for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2, kv = n0 + nt * 8 + 2 * t4 + (e & 1);
            const bool ok = keep[r] >> (2 * nt + (e & 1)) & 1u;
            rsum[r] +=
                mf_bwd_prob(s[nt][e], lse2[r], ok, b, h, rows[r], kv, scale, score_cap, drop) *
                dp[nt][e];
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = e / 2, kv = n0 + nt * 8 + 2 * t4 + (e & 1);
            const bool ok = keep[r] >> (2 * nt + (e & 1)) & 1u;
            float p;
            s[nt][e] = mf_bwd_elem(s[nt][e], dp[nt][e], lse2[r], dlt[r], ok, false, b, h, rows[r],
                                   kv, scale, score_cap, mask_cap, no_grad, drop, p);
          }
        mf_mm_pb<MF_DP, MF_QLD>(acc, s, ks, lane);
      }
    }
    __syncthreads();
  }
  mf_cp_async_wait<0>();
  if (DELTA)
    mf_store_row_sums(delta_out + qrow0, rsum, rows, M, t4);
  else
    mf_store_rows<MF_DP, MF_D>(reinterpret_cast<unsigned short*>(dq) + qrow0 * MF_D, acc,
                               m0 + warp * 16 + g, M, t4);
}

#define MF_DQ_ARGS                                                                                 \
  const mf_in_t *__restrict__ q, const mf_in_t *__restrict__ k, const mf_in_t *__restrict__ v,     \
      const mf_in_t *__restrict__ dout, const float *__restrict__ lse, const float *delta,         \
      mf_in_t *__restrict__ dq, int Hq, int Hkv, int M, int N, float scale, const int *kv_num,     \
      const int *kv_idx, const int *full_num, const int *full_idx, int mask_b, int mask_h, int Mb, \
      int Nb, FlexCaptured score_cap, FlexCaptured mask_cap, FlexDropout drop

extern "C" __global__ void __launch_bounds__(MF_THREADS) flex_bwd_dq(MF_DQ_ARGS) {
  mf_bwd_dq<false>(q, k, v, dout, lse, delta, nullptr, dq, Hq, Hkv, M, N, scale, kv_num, kv_idx,
                   full_num, full_idx, mask_b, mask_h, Mb, Nb, score_cap, mask_cap, drop);
}

// delta for the rows of flex_bwd_dq's CTA, written to `delta` (the same arguments, dq
// unused), for flex_bwd_dq and flex_bwd_dkdv to read.
extern "C" __global__ void __launch_bounds__(MF_THREADS) flex_bwd_delta_exact(MF_DQ_ARGS) {
  mf_bwd_dq<true>(q, k, v, dout, lse, nullptr, const_cast<float*>(delta), dq, Hq, Hkv, M, N, scale,
                  kv_num, kv_idx, full_num, full_idx, mask_b, mask_h, Mb, Nb, score_cap, mask_cap,
                  drop);
}

// dK and dV for MF_BM keys (within one kv block) of (b, kv head hk): for each query head of the
// group, walks the q blocks of the transposed BlockMask row (q_indices: partial, with
// mask_mod; full_q_indices: full), recomputing P from lse. Captured-tensor gradients are
// accumulated here (each score element is visited once).
extern "C" __global__ void __launch_bounds__(MF_THREADS)
    flex_bwd_dkdv(const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k,
                  const mf_in_t* __restrict__ v, const mf_in_t* __restrict__ dout,
                  const float* __restrict__ lse, const float* __restrict__ delta,
                  mf_in_t* __restrict__ dk, mf_in_t* __restrict__ dv, int Hq, int Hkv, int M, int N,
                  float scale, const int* q_num, const int* q_idx, const int* full_num,
                  const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
                  FlexCaptured score_cap, FlexCaptured mask_cap, FlexCapturedGrad gcap,
                  FlexDropout drop) {
  unsigned short* k_s = mf_smem;                                       // [BM][QLD]
  unsigned short* v_s = k_s + MF_BM * MF_QLD;                          // [BM][VLD]
  unsigned short* q_s = v_s + MF_BM * MF_VLD;                          // [2][BN][QLD]
  unsigned short* do_s = q_s + 2 * MF_BN * MF_QLD;                     // [2][BN][VLD]
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * MF_BN * MF_VLD);  // [2][BN], base 2
  float* dlt_s = lse_s + 2 * MF_BN;                                    // [2][BN]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.z, hk = blockIdx.y, group = Hq / Hkv;
  const int n0 = blockIdx.x * MF_BM;
  const long long krow0 = ((long long)b * Hkv + hk) * N;
  const unsigned short* kg = reinterpret_cast<const unsigned short*>(k) + krow0 * MF_D;
  const unsigned short* vg = reinterpret_cast<const unsigned short*>(v) + krow0 * MF_DV;

  if (MF_DP != MF_D || MF_DVP != MF_DV) {
    for (int i = tid; i < MF_BM + 2 * MF_BN; i += MF_THREADS) {
      unsigned short* kr = i < MF_BM ? k_s + i * MF_QLD : q_s + (i - MF_BM) * MF_QLD;
      unsigned short* vr = i < MF_BM ? v_s + i * MF_VLD : do_s + (i - MF_BM) * MF_VLD;
      for (int c = MF_D; c < MF_DP; ++c) kr[c] = 0;
      for (int c = MF_DV; c < MF_DVP; ++c) vr[c] = 0;
    }
  }
  mf_load_tile<MF_BM, MF_D, MF_QLD, MF_THREADS>(k_s, kg, n0, N, tid);
  mf_load_tile<MF_BM, MF_DV, MF_VLD, MF_THREADS>(v_s, vg, n0, N, tid);

  MfQTiles<MF_Q_BLOCK / MF_BN> tiles(q_num, q_idx, full_num, full_idx, b, mask_b, mask_h, Mb, Nb, M,
                                     n0, hk * group, group);
  auto load = [&](int stage, int hh, int m0) {
    const long long qrow0 = ((long long)b * Hq + hh) * M;
    mf_load_tile<MF_BN, MF_D, MF_QLD, MF_THREADS>(
        q_s + stage * MF_BN * MF_QLD, reinterpret_cast<const unsigned short*>(q) + qrow0 * MF_D, m0,
        M, tid);
    mf_load_tile<MF_BN, MF_DV, MF_VLD, MF_THREADS>(
        do_s + stage * MF_BN * MF_VLD,
        reinterpret_cast<const unsigned short*>(dout) + qrow0 * MF_DV, m0, M, tid);
    for (int i = tid; i < MF_BN; i += MF_THREADS) {
      const int row = m0 + i;
      const float l = row < M ? lse[qrow0 + row] : MF_NEG_INF;
      lse_s[stage * MF_BN + i] = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
      dlt_s[stage * MF_BN + i] = row < M ? delta[qrow0 + row] : 0.0f;
    }
  };

  bool have = tiles.valid();
  int t_h = tiles.h, t_m0 = have ? tiles.m0() : 0;
  bool t_partial = tiles.partial();
  if (have) load(0, t_h, t_m0);
  mf_cp_async_commit();

  float dk_acc[MF_DP / 8][4], dv_acc[MF_DVP / 8][4];
  mf_zero(dk_acc);
  mf_zero(dv_acc);
  int keys[2];
  keys[0] = n0 + warp * 16 + g;
  keys[1] = keys[0] + 8;

  for (int stage = 0; have; stage ^= 1) {
    const int h = t_h, m0 = t_m0;
    const bool partial = t_partial;
    tiles.advance();
    have = tiles.valid();
    if (have) {
      t_h = tiles.h, t_m0 = tiles.m0(), t_partial = tiles.partial();
      load(stage ^ 1, t_h, t_m0);
      mf_cp_async_commit();
      mf_cp_async_wait<1>();
    } else {
      mf_cp_async_wait<0>();
    }
    __syncthreads();
    if (m0 < M) {
      const unsigned short* qs = q_s + stage * MF_BN * MF_QLD;
      const unsigned short* dos = do_s + stage * MF_BN * MF_VLD;
      const float* ls = lse_s + stage * MF_BN;
      const float* ds = dlt_s + stage * MF_BN;
      // S^T = K Q^T and dP^T = V dO^T: rows are this warp's keys, columns the tile's queries.
      float s[MF_BN / 8][4], dp[MF_BN / 8][4];
      mf_mm_abt<MF_DP, MF_QLD, MF_QLD>(s, k_s + warp * 16 * MF_QLD, qs, lane);
      mf_mm_abt<MF_DVP, MF_VLD, MF_VLD>(dp, v_s + warp * 16 * MF_VLD, dos, lane);
      unsigned keep[2];  // bounds, and mask_mod on partial tiles (split, as the forward)
      mf_keep_bits<MF_BN / 8, 2, false>(keep, keys[0], m0 + 2 * t4, M, N, partial, b, h, mask_cap);
#pragma unroll
      for (int nt = 0; nt < MF_BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nt * 8 + 2 * t4 + (e & 1), row = m0 + col, key = keys[e / 2];
          const bool ok = keep[e / 2] >> (2 * nt + (e & 1)) & 1u;
          float p;
          const float d = mf_bwd_elem(s[nt][e], dp[nt][e], ls[col], ds[col], ok, false, b, h, row,
                                      key, scale, score_cap, mask_cap, gcap, drop, p);
          s[nt][e] = p;
          dp[nt][e] = d;
        }
      mf_mm_pb<MF_DVP, MF_VLD>(dv_acc, s, dos, lane);  // dV += P^T dO
      mf_mm_pb<MF_DP, MF_QLD>(dk_acc, dp, qs, lane);   // dK += dS^T Q
    }
    __syncthreads();
  }
  mf_cp_async_wait<0>();
  mf_store_rows<MF_DP, MF_D>(reinterpret_cast<unsigned short*>(dk) + krow0 * MF_D, dk_acc, keys[0],
                             N, t4);
  mf_store_rows<MF_DVP, MF_DV>(reinterpret_cast<unsigned short*>(dv) + krow0 * MF_DV, dv_acc,
                               keys[0], N, t4);
}
