// flex_attention's SIMT backward kernels for float32 inputs (one thread per query row for
// dQ, one per key for dK / dV; float32 FMAs, no rounding of P or dS), compiled at run time
// with NVRTC together with flex_bwd_common.cuh and the generated mods. Same arguments and
// walk over the BlockMask as the tensor-core kernels in flex_bwd_tc.cuh.
#include "flex_bwd_common.cuh"

#define MF_ROWS 32  // rows (queries or keys) per CTA, one thread each
#define MF_KT 8     // streamed rows per shared-memory tile

// dQ for 32 query rows of (b, h): the kv blocks of the BlockMask row, partial (mask_mod)
// then full, recomputing P from lse.
extern "C" __global__ void __launch_bounds__(MF_ROWS)
    flex_bwd_dq(const float* __restrict__ q, const float* __restrict__ k,
                const float* __restrict__ v, const float* __restrict__ dout,
                const float* __restrict__ lse, const float* __restrict__ delta,
                float* __restrict__ dq, int Hq, int Hkv, int M, int N, float scale,
                const int* kv_num, const int* kv_idx, const int* full_num, const int* full_idx,
                int mask_b, int mask_h, int Mb, int Nb, FlexCaptured score_cap,
                FlexCaptured mask_cap, FlexDropout drop) {
  __shared__ float q_s[MF_ROWS][MF_D + 1];
  __shared__ float do_s[MF_ROWS][MF_DV + 1];
  __shared__ float k_s[MF_KT][MF_D];
  __shared__ float v_s[MF_KT][MF_DV];
  const int tid = threadIdx.x;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int m0 = blockIdx.x * MF_ROWS, row = m0 + tid;
  const bool valid = row < M;
  const long long qbase = ((long long)b * Hq + h) * M;
  const long long kbase = ((long long)b * Hkv + hk) * N;
  const FlexCapturedGrad no_grad{};
  for (int i = tid; i < MF_ROWS * MF_D; i += MF_ROWS) {
    const int r = i / MF_D, d = i % MF_D;
    q_s[r][d] = m0 + r < M ? q[(qbase + m0 + r) * MF_D + d] : 0.0f;
  }
  for (int i = tid; i < MF_ROWS * MF_DV; i += MF_ROWS) {
    const int r = i / MF_DV, d = i % MF_DV;
    do_s[r][d] = m0 + r < M ? dout[(qbase + m0 + r) * MF_DV + d] : 0.0f;
  }
  const float l = valid ? lse[qbase + row] : MF_NEG_INF;
  const float lse2 = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
  const float dlt = valid ? delta[qbase + row] : 0.0f;
  float acc[MF_D];
#pragma unroll
  for (int d = 0; d < MF_D; ++d) acc[d] = 0.0f;

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
          k_s[r][d] = n0 + r < n_end ? k[(kbase + n0 + r) * MF_D + d] : 0.0f;
        }
        for (int i = tid; i < MF_KT * MF_DV; i += MF_ROWS) {
          const int r = i / MF_DV, d = i % MF_DV;
          v_s[r][d] = n0 + r < n_end ? v[(kbase + n0 + r) * MF_DV + d] : 0.0f;
        }
        __syncthreads();
        if (!valid) continue;
        for (int t = 0; t < MF_KT && n0 + t < n_end; ++t) {
          float s = 0.0f, dp = 0.0f;
#pragma unroll 8
          for (int d = 0; d < MF_D; ++d) s += q_s[tid][d] * k_s[t][d];
#pragma unroll 8
          for (int d = 0; d < MF_DV; ++d) dp += do_s[tid][d] * v_s[t][d];
          float p;
          const float ds = mf_bwd_elem(s, dp, lse2, dlt, true, partial, b, h, row, n0 + t, scale,
                                       score_cap, mask_cap, no_grad, drop, p);
          if (ds != 0.0f) {
#pragma unroll
            for (int d = 0; d < MF_D; ++d) acc[d] += ds * k_s[t][d];
          }
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int d = 0; d < MF_D; ++d) dq[(qbase + row) * MF_D + d] = acc[d];
}

// dK and dV for 32 keys of (b, kv head hk): for each query head of the group, the q blocks
// of the transposed BlockMask row of the keys' kv block (q_indices with mask_mod, then
// full_q_indices). Captured-tensor gradients are accumulated here.
extern "C" __global__ void __launch_bounds__(MF_ROWS)
    flex_bwd_dkdv(const float* __restrict__ q, const float* __restrict__ k,
                  const float* __restrict__ v, const float* __restrict__ dout,
                  const float* __restrict__ lse, const float* __restrict__ delta,
                  float* __restrict__ dk, float* __restrict__ dv, int Hq, int Hkv, int M, int N,
                  float scale, const int* q_num, const int* q_idx, const int* full_num,
                  const int* full_idx, int mask_b, int mask_h, int Mb, int Nb,
                  FlexCaptured score_cap, FlexCaptured mask_cap, FlexCapturedGrad gcap,
                  FlexDropout drop) {
  __shared__ float k_s[MF_ROWS][MF_D + 1];
  __shared__ float v_s[MF_ROWS][MF_DV + 1];
  __shared__ float q_t[MF_KT][MF_D];
  __shared__ float do_t[MF_KT][MF_DV];
  __shared__ float lse_t[MF_KT], dl_t[MF_KT];
  const int tid = threadIdx.x;
  const int b = blockIdx.z, hk = blockIdx.y, group = Hq / Hkv;
  const int n0 = blockIdx.x * MF_ROWS, key = n0 + tid, nblk = n0 / MF_KV_BLOCK;
  const bool valid = key < N;
  const long long kbase = ((long long)b * Hkv + hk) * N;
  for (int i = tid; i < MF_ROWS * MF_D; i += MF_ROWS) {
    const int r = i / MF_D, d = i % MF_D;
    k_s[r][d] = n0 + r < N ? k[(kbase + n0 + r) * MF_D + d] : 0.0f;
  }
  for (int i = tid; i < MF_ROWS * MF_DV; i += MF_ROWS) {
    const int r = i / MF_DV, d = i % MF_DV;
    v_s[r][d] = n0 + r < N ? v[(kbase + n0 + r) * MF_DV + d] : 0.0f;
  }
  float dk_acc[MF_D], dv_acc[MF_DV];
#pragma unroll
  for (int d = 0; d < MF_D; ++d) dk_acc[d] = 0.0f;
#pragma unroll
  for (int d = 0; d < MF_DV; ++d) dv_acc[d] = 0.0f;

  const int nq_blocks = (M + MF_Q_BLOCK - 1) / MF_Q_BLOCK;
  for (int h = hk * group; h < (hk + 1) * group; ++h) {
    const long long qbase = ((long long)b * Hq + h) * M;
    const long long mrow =
        ((long long)(mask_b == 1 ? 0 : b) * mask_h + (mask_h == 1 ? 0 : h)) * Nb + nblk;
    for (int pass = 0; pass < 2; ++pass) {
      const bool partial = pass == 0;
      int count;
      if (q_num == nullptr)
        count = partial ? 0 : nq_blocks;
      else
        count = partial ? q_num[mrow] : full_num[mrow];
      for (int j = 0; j < count; ++j) {
        int blk = j;
        if (q_num != nullptr) blk = partial ? q_idx[mrow * Mb + j] : full_idx[mrow * Mb + j];
        const int m_end = min(M, (blk + 1) * MF_Q_BLOCK);
        for (int m0 = blk * MF_Q_BLOCK; m0 < m_end; m0 += MF_KT) {
          __syncthreads();
          for (int i = tid; i < MF_KT * MF_D; i += MF_ROWS) {
            const int r = i / MF_D, d = i % MF_D;
            q_t[r][d] = m0 + r < m_end ? q[(qbase + m0 + r) * MF_D + d] : 0.0f;
          }
          for (int i = tid; i < MF_KT * MF_DV; i += MF_ROWS) {
            const int r = i / MF_DV, d = i % MF_DV;
            do_t[r][d] = m0 + r < m_end ? dout[(qbase + m0 + r) * MF_DV + d] : 0.0f;
          }
          if (tid < MF_KT) {
            const float l = m0 + tid < m_end ? lse[qbase + m0 + tid] : MF_NEG_INF;
            lse_t[tid] = l == MF_NEG_INF ? MF_POS_INF : l * MF_LOG2E;
            dl_t[tid] = m0 + tid < m_end ? delta[qbase + m0 + tid] : 0.0f;
          }
          __syncthreads();
          if (!valid) continue;
          for (int t = 0; t < MF_KT && m0 + t < m_end; ++t) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll 8
            for (int d = 0; d < MF_D; ++d) s += k_s[tid][d] * q_t[t][d];
#pragma unroll 8
            for (int d = 0; d < MF_DV; ++d) dp += v_s[tid][d] * do_t[t][d];
            float p;
            const float ds = mf_bwd_elem(s, dp, lse_t[t], dl_t[t], true, partial, b, h, m0 + t, key,
                                         scale, score_cap, mask_cap, gcap, drop, p);
            if (p != 0.0f) {
#pragma unroll
              for (int d = 0; d < MF_DV; ++d) dv_acc[d] += p * do_t[t][d];
            }
            if (ds != 0.0f) {
#pragma unroll
              for (int d = 0; d < MF_D; ++d) dk_acc[d] += ds * q_t[t][d];
            }
          }
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int d = 0; d < MF_D; ++d) dk[(kbase + key) * MF_D + d] = dk_acc[d];
#pragma unroll
  for (int d = 0; d < MF_DV; ++d) dv[(kbase + key) * MF_DV + d] = dv_acc[d];
}
