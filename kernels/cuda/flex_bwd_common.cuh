// What flex_attention's backward kernels share (NVRTC, with flex_common.cuh and the
// generated mods): captured-tensor gradient accumulation, the per-element backward of the
// softmax and score_mod, and the delta = rowsum(dO * O) kernel.
#pragma once
#include "flex_common.cuh"

#define MF_LOG2E 1.4426950408889634f
#define MF_POS_INF __int_as_float(0x7f800000)

// Captured-tensor gradients: float atomics, or with `deterministic` 32.32 fixed point in
// int64 (integer addition is associative, so the sum does not depend on the order; the
// launcher converts back). Null slots need no gradient.
__device__ __forceinline__ void mf_grad_add(const FlexCapturedGrad& g, int slot, long long off,
                                            float v) {
  float* p = g.data[slot];
  if (p == nullptr) return;
  if (g.deterministic) {
    const long long fx = __double2ll_rn(static_cast<double>(v) * 4294967296.0);
    atomicAdd(reinterpret_cast<unsigned long long*>(p) + off, static_cast<unsigned long long>(fx));
  } else {
    atomicAdd(p + off, v);
  }
}

// The query tiles one kv block visits in the dK / dV kernels: for each query head of the
// GQA group in turn, the transposed BlockMask row's partial q blocks (q_indices, mask_mod
// applied), then its full ones, each split into TPB tiles of MF_Q_BLOCK / TPB rows;
// without a mask (q_num null) every q block is full.
template <int TPB>
struct MfQTiles {
  const int *num, *idx, *full_num, *full_idx;
  int b, mask_b, mask_h, Mb, Nb, nblk, nq_blocks, h_end;
  int h, j = 0, half = 0, np = 0, nf = 0;
  long long row = 0;  // the mask row of (b, h, kv block)
  __device__ MfQTiles(const int* q_num, const int* q_idx, const int* full_q_num,
                      const int* full_q_idx, int b_, int mask_b_, int mask_h_, int Mb_, int Nb_,
                      int M, int n0, int h_begin, int group)
      : num(q_num),
        idx(q_idx),
        full_num(full_q_num),
        full_idx(full_q_idx),
        b(b_),
        mask_b(mask_b_),
        mask_h(mask_h_),
        Mb(Mb_),
        Nb(Nb_),
        nblk(n0 / MF_KV_BLOCK),
        nq_blocks((M + MF_Q_BLOCK - 1) / MF_Q_BLOCK),
        h_end(h_begin + group),
        h(h_begin) {
    counts();
  }
  __device__ void counts() {
    row = mf_mask_row(b, h, mask_b, mask_h, Nb, nblk);  // the transposed mask has Nb rows
    np = num == nullptr ? 0 : num[row];
    nf = num == nullptr ? nq_blocks : full_num[row];
  }
  // Moves past heads with no tiles left; false once the last head is done.
  __device__ bool valid() {
    while (h < h_end && j >= np + nf)
      if (++h < h_end) counts(), j = 0, half = 0;
    return h < h_end;
  }
  __device__ int m0() const {
    const int blk = num == nullptr ? j : j < np ? idx[row * Mb + j] : full_idx[row * Mb + j - np];
    return blk * MF_Q_BLOCK + half * (MF_Q_BLOCK / TPB);
  }
  __device__ bool partial() const { return j < np; }
  __device__ void advance() {
    if (++half == TPB) half = 0, ++j;
  }
};

#include "flex_mods_bwd.cuh"

// The probability that multiplied V in the forward, after dropout (P z), 0 where !ok (masked
// or out of range: the caller's keep bits): the terms of delta = sum_j P z dP (Note [Flex
// exact delta]).
__device__ __forceinline__ float mf_bwd_prob(float s, float lse2, bool ok, int b, int h, int q,
                                             int kv, float scale, const FlexCaptured& score_cap,
                                             const FlexDropout& drop) {
  if (!ok) return 0.0f;
  const float prob = exp2f(score_mod(s * scale, b, h, q, kv, score_cap) * MF_LOG2E - lse2);
#if MF_DROPOUT
  return prob * mf_dropout_factor(drop, b, h, q, kv);
#else
  (void)drop;
  return prob;
#endif
}

// Note [Flex exact delta]
// The softmax backward needs delta_i = sum_j P_ij dP_ij per query row. FlashAttention takes
// it as rowsum(dO * O) (flex_bwd_delta), which is the same sum when O is exact; with O
// rounded to bf16 each row's dS = P (dP - delta) then sums to about 2^-8 |delta| instead
// of 0. dQ, dK and dV hardly notice, but a captured tensor's gradient sums dS over whole
// rows (a learnable ALiBi slope: sum_ij dS_ij (i - j)), so the bias dominates it. When a
// captured tensor needs a gradient and the inputs are 16-bit, delta comes instead from a
// pass of the dQ kernel that recomputes P and dP and sums their product in float32
// (flex_bwd_delta_exact): two of its three matrix products, once.

// One score element's backward: returns d(loss)/d(q.k) (the scale included), 0 where
// masked or out of range, and sets p to the probability that multiplied V in the forward
// (after dropout). dp = dO . v; lse2 = lse * log2(e) (+inf for rows that attend to
// nothing). With dropout factor z (0 or 1 / (1 - p_drop)), O = (P z) V, so dS = P (dp z -
// delta): delta = rowsum(dO * O) already is sum_j P z dp.
// check false: the caller knows the element is in range and its tile not partial (a
// constant after inlining, so the checks compile away).
__device__ __forceinline__ float mf_bwd_elem(float s, float dp, float lse2, float delta, bool ok,
                                             bool partial, int b, int h, int q, int kv, float scale,
                                             const FlexCaptured& score_cap,
                                             const FlexCaptured& mask_cap,
                                             const FlexCapturedGrad& gcap, const FlexDropout& drop,
                                             float& p, bool check = true) {
  p = 0.0f;
  if (check && (!ok || (partial && !mask_mod(b, h, q, kv, mask_cap)))) return 0.0f;
  const float x = score_mod(s * scale, b, h, q, kv, score_cap);
  const float prob = exp2f(x * MF_LOG2E - lse2);
  if (prob == 0.0f) return 0.0f;
#if MF_DROPOUT
  const float z = mf_dropout_factor(drop, b, h, q, kv);
  p = prob * z;
  dp *= z;
#else
  (void)drop;
  p = prob;
#endif
  return score_mod_backward(s * scale, b, h, q, kv, score_cap, prob * (dp - delta), gcap) * scale;
}

// Writes a warp's per-row sums (this lane's parts for rows rows[0] and rows[1], the two
// halves of an mma C fragment), summed over the quad of lanes that shares each row.
__device__ __forceinline__ void mf_store_row_sums(float* dst, const float (&part)[2],
                                                  const int (&rows)[2], int M, int t4) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float v = part[r];
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    if (t4 == 0 && rows[r] < M) dst[rows[r]] = v;
  }
}

// delta[row] = sum_d dO[row, d] * O[row, d] in float32, one warp per row; rows = B Hq M.
extern "C" __global__ void __launch_bounds__(256)
    flex_bwd_delta(const mf_in_t* __restrict__ o, const mf_in_t* __restrict__ dout,
                   float* __restrict__ delta, long long rows) {
  const long long row = (long long)blockIdx.x * 8 + threadIdx.x / 32;
  if (row >= rows) return;
  float sum = 0.0f;
  for (int d = threadIdx.x % 32; d < MF_DV; d += 32)
    sum += mf_in_load(o, row * MF_DV + d) * mf_in_load(dout, row * MF_DV + d);
#pragma unroll
  for (int w = 16; w > 0; w /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, w);
  if (threadIdx.x % 32 == 0) delta[row] = sum;
}
