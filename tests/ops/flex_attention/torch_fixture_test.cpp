// flex_attention against PyTorch's FlexAttention: fixtures made by
// tools/make_flex_fixtures.py (eager, float64) hold inputs, out, lse and gradients for a
// dozen variants; the dense path must match them to 1e-10 relative.
#include <fstream>
#include <map>

#include "ops/flex_attention/flex_attention.h"
#include "test_util.h"

namespace mf = microflex;

namespace {

using Fixture = std::map<std::string, mf::Tensor>;

const Fixture& fixtures() {
  static const Fixture f = [] {
    Fixture m;
    for (auto& [name, t] : mf::load_safetensors(std::string(MICROFLEX_TEST_DATA_DIR) +
                                                "/flex_attention_fixtures.safetensors"))
      m[name] = t;
    return m;
  }();
  return f;
}

mf::MaskMod causal = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                        const mf::Tensor& kv) { return q >= kv; };

struct Case {
  std::string name;
  mf::MaskMod mask;
  int64_t block = 16;
  std::optional<double> scale;
  std::string learnable;  // name of the learnable captured tensor, if any
  std::function<mf::ScoreMod(const Fixture&, const mf::Tensor& learnable)> score;
};

std::vector<Case> cases() {
  const int64_t S = 45;
  std::vector<Case> c;
  c.push_back({"causal", causal});
  c.push_back({"sliding_window",
               mf::and_masks(causal, [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                        const mf::Tensor& kv) { return (q - kv) <= 12; })});
  c.push_back(
      {"prefix_lm", mf::or_masks(causal, [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor&,
                                            const mf::Tensor& kv) { return kv < 18; })});
  const mf::Tensor doc = fixtures().at("document.doc_ids");
  c.push_back({"document", [doc](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                 const mf::Tensor& kv) {
                 return (doc.index({q}) == doc.index({kv})) & (q >= kv);
               }});
  c.push_back({"alibi", causal, 16, {}, "", [](const Fixture& f, const mf::Tensor&) {
                 const mf::Tensor slopes = f.at("alibi.slopes");
                 return [slopes](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor& h,
                                 const mf::Tensor& q,
                                 const mf::Tensor& kv) { return s + slopes.index({h}) * (kv - q); };
               }});
  c.push_back({"softcap", {}, 16, {}, "", [](const Fixture&, const mf::Tensor&) {
                 return
                     [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                        const mf::Tensor&, const mf::Tensor&) { return mf::tanh(s / 2.0) * 2.0; };
               }});
  c.push_back({"relative_bias", {}, 16, {}, "bias", [S](const Fixture&, const mf::Tensor& rel) {
                 return [rel, S](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                                 const mf::Tensor& q, const mf::Tensor& kv) {
                   return s + rel.index({q - kv + (S - 1)});
                 };
               }});
  c.push_back({"learnable_bias", causal, 16, {}, "bias", [](const Fixture&, const mf::Tensor& b) {
                 return [b](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                            const mf::Tensor& q, const mf::Tensor& kv) {
                   return s + b.index({q, kv});
                 };
               }});
  c.push_back({"gqa", causal});
  c.push_back({"m_ne_n", {}});
  c.push_back({"tail_128", causal, 128});
  c.push_back({"custom_scale", causal, 16, 0.3});
  return c;
}

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

INSTANTIATE_TEST_SUITE_P(Variants, TorchFixture,
                         ::testing::Values("causal", "sliding_window", "prefix_lm", "document",
                                           "alibi", "softcap", "relative_bias", "learnable_bias",
                                           "gqa", "m_ne_n", "tail_128", "custom_scale"),
                         [](const auto& info) { return info.param; });

}  // namespace
