// The per-tile math shared by flex_attention's tensor-core forward kernels (mma.sync in
// flex_fwd_tc.cuh, wgmma in flex_fwd_wg.cuh): score_mod, masks and the online softmax on
// a warp's score fragments, and the normalised store of out and lse. The including kernel
// defines MF_MT (16-row m tiles per warp), MF_BN (keys per tile) and MF_DVP (padded Dv).
#pragma once

#define MF_LOG2E 1.4426950408889634f
#define MF_LN2 0.6931471805599453f

// One tile's scores -> probabilities (in place), with the running max / sum of the online
// softmax in base 2 and each row's rescale factor alpha for the output (mf_rescale). row0 / kv0:
// this lane's first row and key. CHECK: apply the bounds (rows past M, keys past N) and, when
// partial, mask_mod.
template <bool CHECK>
__device__ __forceinline__ void mf_softmax_tile(
    float (&s)[MF_MT][MF_BN / 8][4], float (&m_run)[MF_MT][2], float (&l_run)[MF_MT][2],
    float (&alpha)[MF_MT][2], int row0, int kv0, int M, int N, float scale, bool partial, int b,
    int h, const FlexCaptured& score_cap, const FlexCaptured& mask_cap, const FlexDropout& drop) {
  unsigned keep_bits[2 * MF_MT];  // rows row0 + 8 (2 mt + r)
  if (CHECK)
    mf_keep_bits<MF_BN / 8, 2 * MF_MT, true>(keep_bits, row0, kv0, M, N, partial, b, h, mask_cap);
#pragma unroll
  for (int mt = 0; mt < MF_MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + mt * 16 + r * 8;
      const unsigned keep = CHECK ? keep_bits[2 * mt + r] : 0u;
      float mx = MF_NEG_INF;
#pragma unroll
      for (int nt = 0; nt < MF_BN / 8; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int kv = kv0 + nt * 8 + c;
          float x = MF_NEG_INF;
          if (!CHECK || (keep >> (2 * nt + c) & 1u))
            x = score_mod(s[mt][nt][2 * r + c] * scale, b, h, row, kv, score_cap) * MF_LOG2E;
          s[mt][nt][2 * r + c] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[mt][r], mx);
      const float m_use = m_new == MF_NEG_INF ? 0.0f : m_new;
      alpha[mt][r] = exp2f(m_run[mt][r] - m_use);
      m_run[mt][r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < MF_BN / 8; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float p = exp2f(s[mt][nt][2 * r + c] - m_use);
          sum += p;  // the softmax normaliser counts every probability, dropped or not
#if MF_DROPOUT
          s[mt][nt][2 * r + c] = p * mf_dropout_factor(drop, b, h, row, kv0 + nt * 8 + c);
#else
          s[mt][nt][2 * r + c] = p;
#endif
        }
      }
      l_run[mt][r] = l_run[mt][r] * alpha[mt][r] + sum;
    }
  }
}

// The online softmax's rescale of the output accumulators by each row's alpha.
__device__ __forceinline__ void mf_rescale(float (&acc)[MF_MT][MF_DVP / 8][4],
                                           const float (&alpha)[MF_MT][2]) {
#pragma unroll
  for (int mt = 0; mt < MF_MT; ++mt)
#pragma unroll
    for (int dn = 0; dn < MF_DVP / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][dn][e] *= alpha[mt][e / 2];
}

// Normalises and stores this warp's rows of out [B, Hq, M, Dv] and lse [B, Hq, M]
// (natural log; fully masked rows get zeros and -inf). obase: (b * Hq + h) * M; row0: this
// lane's first row. Each quad of lanes holds one row's partial sums.
__device__ __forceinline__ void mf_fwd_store(const float (&acc)[MF_MT][MF_DVP / 8][4],
                                             const float (&m_run)[MF_MT][2],
                                             const float (&l_run)[MF_MT][2], mf_in_t* out,
                                             float* lse, long long obase, int row0, int M, int t4) {
  unsigned short* og = reinterpret_cast<unsigned short*>(out);
#pragma unroll
  for (int mt = 0; mt < MF_MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_run[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = row0 + mt * 16 + r * 8;
      if (row >= M) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
      for (int dn = 0; dn < MF_DVP / 8; ++dn) {
        const int col = dn * 8 + 2 * t4;
        if (col < MF_DV)
          *reinterpret_cast<unsigned*>(og + (obase + row) * MF_DV + col) =
              mf_pack2(acc[mt][dn][2 * r] * inv, acc[mt][dn][2 * r + 1] * inv);
      }
      if (t4 == 0) lse[obase + row] = l > 0.0f ? m_run[mt][r] * MF_LN2 + logf(l) : MF_NEG_INF;
    }
  }
}
