// flex_attention's SIMT forward kernel (float32 inputs; one thread per query row),
// compiled at run time with NVRTC together with flex_common.cuh and the generated mods.
#include "flex_common.cuh"

#define MF_ROWS 64                             // query rows per CTA, one thread each
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
             FlexCaptured score_cap, FlexCaptured mask_cap, FlexDropout drop) {
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
  const float neg_inf = MF_NEG_INF;
  float m_i = neg_inf, l_i = 0.0f;
  float acc[MF_DV];
#pragma unroll
  for (int d = 0; d < MF_DV; ++d) acc[d] = 0.0f;

  // The mask row (broadcast over B or H of 1); without a mask every kv block is full.
  const long long mrow = mf_mask_row(b, h, mask_b, mask_h, Mb, m0 / MF_Q_BLOCK);
  const int nkv_blocks = (N + MF_KV_BLOCK - 1) / MF_KV_BLOCK;
  for (int pass = 0; pass < 2; ++pass) {
    const bool partial = pass == 0;
    int count;
    if (kv_num == nullptr)
      count = partial ? 0 : nkv_blocks;
    else
      count = partial ? kv_num[mrow] : full_num[mrow];
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
          l_i += p;  // the normaliser counts every probability, dropped or not
#if MF_DROPOUT
          const float pv = p * mf_dropout_factor(drop, b, h, row, n0 + t);
#else
          const float pv = p;
#endif
#pragma unroll
          for (int d = 0; d < MF_DV; ++d) acc[d] += pv * v_s[t][d];
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
