// The case table entry and the forward + backward run that the fused flex_attention GPU
// tests share (tests/cuda/flex_fused_*_test.cpp).
#pragma once
#include "microflex/microflex.h"
#include "ops/flex_attention/flex_attention.h"

namespace mftest::flex {

namespace mf = microflex;
using T = mf::Tensor;

struct Case {
  const char* name;
  int64_t B, Hq, Hkv, M, N, D, Dv;
  mf::ScoreMod score_mod;
  mf::MaskMod mask_mod;  // empty: no BlockMask
  int64_t mask_b = 1, mask_h = 1;
  T learnable;  // a captured tensor whose gradient is compared, or undefined
};

struct Grads {
  T out, dq, dk, dv, dlearn;
};

// Forward and backward of flex_attention for case c on the given inputs (fresh leaves),
// with the kernel choice, the deterministic option and attention dropout (seeded the same
// on every call, so the fused and dense paths draw one mask).
inline Grads run(const Case& c, const T& q0, const T& k0, const T& v0, const T& go,
                 mf::FlexKernel kern, bool deterministic = false, double dropout_p = 0.0) {
  T q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(),
    v = v0.detach().requires_grad_();
  if (c.learnable.defined()) T(c.learnable).zero_grad();
  mf::FlexAttentionOptions o;
  o.score_mod = c.score_mod;
  if (c.mask_mod)
    o.block_mask =
        mf::create_block_mask(c.mask_mod, c.mask_b, c.mask_h, c.M, c.N, mf::Device::cuda());
  o.enable_gqa = c.Hq != c.Hkv;
  o.kernel = kern;
  o.deterministic = deterministic;
  o.dropout_p = dropout_p;
  if (dropout_p > 0.0) mf::manual_seed(2024);
  T out = mf::flex_attention(q, k, v, o).out;
  out.backward(go);
  Grads g{out, q.grad(), k.grad(), v.grad(), {}};
  if (c.learnable.defined()) g.dlearn = c.learnable.grad().clone();
  return g;
}

}  // namespace mftest::flex
