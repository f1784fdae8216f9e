// flex_attention's Hopper forward kernel for bf16 / fp16 inputs (sm_90a): the score and
// output products run as wgmma.mma_async on 128-byte-swizzled shared tiles; the per-tile
// math is flex_fwd_tc.cuh's. Compiled at run time with NVRTC for head dims D and Dv in
// {64, 128} and the key tile MF_BN and CTAs per SM MF_MIN_BLOCKS the launcher defines (Note
// [Flex wgmma forward tiles]); the launcher picks it on compute capability 9.0.
#include "flex_common.cuh"
#include "flex_mma.cuh"
#include "flex_wgmma.cuh"

#define MF_BM 128  // query rows per CTA: one BlockMask q block, 64 per warpgroup
#define MF_MT 1
#define MF_DVP MF_DV
#define MF_THREADS 256
#include "flex_fwd_common.cuh"

#define MF_Q_BYTES (MF_BM * MF_D * 2)
#define MF_K_BYTES (MF_BN * MF_D * 2)
#define MF_V_BYTES (MF_BN * MF_DV * 2)
// Shared memory bytes the launcher reserves: Q, two stages of K, three of V (Note [Flex
// wgmma forward pipeline]) and the slack that aligns the tiles to 1024 bytes (Note [Flex
// wgmma operands]).
#define MF_SMEM_BYTES (MF_Q_BYTES + 2 * MF_K_BYTES + 3 * MF_V_BYTES + 1024)

// The launcher reads the size from here (nvrtc_program), so it is written once.
extern "C" {
__constant__ int mf_smem_bytes = MF_SMEM_BYTES;
}

// Note [Flex wgmma forward tiles]
// With D = Dv = 64 the products are short next to the softmax (its exp2 per score costs as
// much SFU time as the two products' tensor time), and one CTA's warpgroups reach the
// softmax together, so the tensor cores idle through it. Tiles of 64 keys keep a thread
// under 128 registers, so two CTAs share an SM and one's products run through the other's
// softmax. Wider head dims keep 128-key tiles (one BlockMask kv block) and one CTA per SM:
// their accumulators do not fit twice.

// Note [Flex wgmma forward pipeline]
// Each warpgroup overlaps the softmax of tile j with the tensor cores' P V of tile j - 1:
// it issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back, waits for S_j only,
// runs score_mod, masks and the online softmax, then waits for the product and rescales
// O. So V_{j-1} is still being read while tile j + 1 loads: V has three shared stages, K
// two (S_{j-1} completed in iteration j - 1). Tile j + 1's loads are issued after the
// barrier at the top of iteration j, which every warpgroup reaches only once its iteration
// j - 1 products (the last readers of those stages) have completed; issued before it, a
// warpgroup that ran ahead could overwrite a stage another was still reading.

// One CTA per (query block of 128 rows, head, batch): two warpgroups of 64 rows each keep
// their output accumulators in registers. K and V tiles of MF_BN keys stream through shared
// memory (cp.async; tile j + 1 loads while tile j computes), in the order of the BlockMask
// row (MfKvTiles). Per tile and warpgroup: S = Q K^T (A and B from shared memory), the
// online softmax on the score registers, O += P V (P from registers, V transposed by the
// wgmma), pipelined as Note [Flex wgmma forward pipeline] says. Arguments as flex_fwd_tc.
extern "C" __global__ void __launch_bounds__(MF_THREADS, MF_MIN_BLOCKS)
    flex_fwd_wg(const mf_in_t* __restrict__ q, const mf_in_t* __restrict__ k,
                const mf_in_t* __restrict__ v, mf_in_t* __restrict__ out, float* __restrict__ lse,
                int Hq, int Hkv, int M, int N, float scale, const int* kv_num, const int* kv_idx,
                const int* full_num, const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
                FlexCaptured score_cap, FlexCaptured mask_cap, FlexDropout drop) {
  extern __shared__ unsigned char mf_smem_raw[];
  unsigned char* q_s = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<unsigned long long>(mf_smem_raw) + 1023) & ~1023ull);
  unsigned char* k_s = q_s + MF_Q_BYTES;      // [2][D / 64][BN][64]
  unsigned char* v_s = k_s + 2 * MF_K_BYTES;  // [3][Dv / 64][BN][64]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wg = warp / 4;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  // Heaviest query blocks first (under a causal mask the last rows see the most keys).
  const int m0 = (gridDim.x - 1 - blockIdx.x) * MF_BM;
  const unsigned short* qg =
      reinterpret_cast<const unsigned short*>(q) + ((long long)b * Hq + h) * M * MF_D;
  const unsigned short* kg =
      reinterpret_cast<const unsigned short*>(k) + ((long long)b * Hkv + hk) * N * MF_D;
  const unsigned short* vg =
      reinterpret_cast<const unsigned short*>(v) + ((long long)b * Hkv + hk) * N * MF_DV;
  auto load_kv = [&](int j, int n0) {
    mf_load_tile_sw128<MF_BN, MF_D, MF_THREADS>(k_s + (j % 2) * MF_K_BYTES, kg, n0, N, tid);
    mf_load_tile_sw128<MF_BN, MF_DV, MF_THREADS>(v_s + (j % 3) * MF_V_BYTES, vg, n0, N, tid);
    mf_cp_async_commit();
  };

  mf_load_tile_sw128<MF_BM, MF_D, MF_THREADS>(q_s, qg, m0, M, tid);
  const MfKvTiles<MF_KV_BLOCK / MF_BN> tiles(kv_num, kv_idx, full_num, full_idx, b, h, mask_b,
                                             mask_h, Mb, Nb, N, m0);
  const int n_tiles = tiles.count;
  int n0_next = n_tiles > 0 ? tiles.start(0) : 0;
  if (n_tiles > 0)
    load_kv(0, n0_next);
  else
    mf_cp_async_commit();

  float acc[1][MF_DV / 8][4];
  float m_run[1][2] = {{MF_NEG_INF, MF_NEG_INF}}, l_run[1][2] = {{0.0f, 0.0f}};
  mf_zero(acc[0]);
  unsigned p[MF_BN / 16][4];  // the previous tile's probabilities, A operand of P V
  const int wrow0 = wg * 64 + (warp % 4) * 16;  // this warp's first row in the CTA
  const unsigned q_addr = mf_smem_addr(q_s) + wg * 64 * 128;
  const unsigned k_addr = mf_smem_addr(k_s), v_addr = mf_smem_addr(v_s);

  for (int i = 0; i < n_tiles; ++i) {
    const int n0 = n0_next;
    const bool partial = tiles.partial(i);
    mf_cp_async_wait<0>();  // tile i, the only load in flight
    mf_fence_proxy_async();
    __syncthreads();
    // Every warpgroup is past iteration i - 1 here, so tile i + 1 may overwrite the stages
    // that iteration read (Note [Flex wgmma forward pipeline]).
    if (i + 1 < n_tiles) {
      n0_next = tiles.start(i + 1);
      load_kv(i + 1, n0_next);
    }

    float s[1][MF_BN / 8][4];
    mf_wgmma_fence_operands(acc[0]);
    mf_wgmma_arrive();
    mf_wg_abt<MF_D, MF_BM, MF_BN>(s[0], q_addr, k_addr + (i % 2) * MF_K_BYTES);  // S = Q K^T
    mf_wgmma_commit();
    if (i > 0) {
      mf_wg_pb<MF_BN>(acc[0], p, v_addr + ((i - 1) % 3) * MF_V_BYTES);  // O += P V
      mf_wgmma_commit();
      mf_wgmma_wait<1>();
    } else {
      mf_wgmma_wait<0>();
    }
    mf_wgmma_fence_operands(s[0]);

    float alpha[1][2];
    if (partial || n0 + MF_BN > N || m0 + MF_BM > M)
      mf_softmax_tile<true>(s, m_run, l_run, alpha, m0 + wrow0 + g, n0 + 2 * t4, M, N, scale,
                            partial, b, h, score_cap, mask_cap, drop);
    else
      mf_softmax_tile<false>(s, m_run, l_run, alpha, m0 + wrow0 + g, n0 + 2 * t4, M, N, scale,
                             false, b, h, score_cap, mask_cap, drop);
    mf_wgmma_wait<0>();
    mf_wgmma_fence_operands(acc[0]);
    mf_rescale(acc, alpha);
#pragma unroll
    for (int kk = 0; kk < MF_BN / 16; ++kk) mf_pack_a(p[kk], s[0], kk);
  }
  if (n_tiles > 0) {
    mf_wgmma_fence_operands(acc[0]);
    mf_wgmma_arrive();
    mf_wg_pb<MF_BN>(acc[0], p, v_addr + ((n_tiles - 1) % 3) * MF_V_BYTES);
    mf_wgmma_commit();
    mf_wgmma_wait<0>();
    mf_wgmma_fence_operands(acc[0]);
  }

  mf_cp_async_wait<0>();  // no tiles at all: the Q load is still in flight
  mf_fwd_store(acc, m_run, l_run, out, lse, ((long long)b * Hq + h) * M, m0 + wrow0 + g, M, t4);
}
