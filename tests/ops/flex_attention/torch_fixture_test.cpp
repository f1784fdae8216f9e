// flex_attention against PyTorch's FlexAttention: fixtures made by
// tools/make_flex_fixtures.py (eager, float64) hold inputs, out, lse and gradients for a
// dozen variants; the dense path must match them to 1e-10 relative.
#include "ops/flex_attention/flex_attention.h"
#include "test_util.h"
#include "torch_fixtures.h"

namespace mf = microflex;

namespace {

using flex_fixtures::Case;
using flex_fixtures::cases;
using flex_fixtures::Fixture;
using flex_fixtures::fixtures;

class TorchFixture : public ::testing::TestWithParam<std::string> {};

// float64 on both sides; the only differences are summation orders: 1e-10 relative.
TEST_P(TorchFixture, OutLseAndGradientsMatchPyTorch) {
  const Fixture& f = fixtures();
  Case cs;
  for (const Case& c : cases())
    if (c.name == GetParam()) cs = c;
  const std::string p = cs.name + ".";
  mf::Tensor q = f.at(p + "q").clone(), k = f.at(p + "k").clone(), v = f.at(p + "v").clone();
  for (mf::Tensor* t : {&q, &k, &v}) t->requires_grad_();
  mf::Tensor learn;
  if (!cs.learnable.empty()) learn = f.at(p + cs.learnable).clone().requires_grad_();
  mf::FlexAttentionOptions o;
  if (cs.mask)
    o.block_mask =
        mf::create_block_mask(cs.mask, 1, 1, q.size(2), k.size(2), mf::Device::cpu(), cs.block);
  if (cs.score) o.score_mod = cs.score(f, learn);
  o.scale = cs.scale;
  o.enable_gqa = q.size(1) != k.size(1);
  o.return_lse = true;
  mf::FlexAttentionResult r = mf::flex_attention(q, k, v, o);
  mftest::expect_close(r.out, f.at(p + "out"), 1e-12, 1e-10, p + "out");
  mftest::expect_close(r.lse, f.at(p + "lse"), 1e-12, 1e-10, p + "lse");
  r.out.backward(f.at(p + "grad_out"));
  mftest::expect_close(q.grad(), f.at(p + "dq"), 1e-12, 1e-10, p + "dq");
  mftest::expect_close(k.grad(), f.at(p + "dk"), 1e-12, 1e-10, p + "dk");
  mftest::expect_close(v.grad(), f.at(p + "dv"), 1e-12, 1e-10, p + "dv");
  if (learn.defined())
    mftest::expect_close(learn.grad(), f.at(p + "dbias"), 1e-12, 1e-10, p + "dbias");
}

INSTANTIATE_TEST_SUITE_P(Variants, TorchFixture, ::testing::ValuesIn(flex_fixtures::kVariants),
                         [](const auto& info) { return info.param; });

}  // namespace
