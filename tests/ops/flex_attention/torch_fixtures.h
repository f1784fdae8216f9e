// PyTorch FlexAttention fixtures (tools/make_flex_fixtures.py: eager, float64 inputs,
// out, lse and gradients for a dozen variants) and the microflex mods that reproduce each
// variant; shared by the dense-path test and the fused GPU kernels' test.
#pragma once
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "microflex/microflex.h"
#include "ops/flex_attention/flex_attention.h"

namespace flex_fixtures {

namespace mf = microflex;

using Fixture = std::map<std::string, mf::Tensor>;

inline const Fixture& fixtures() {
  static const Fixture f = [] {
    Fixture m;
    for (auto& [name, t] : mf::load_safetensors(std::string(MICROFLEX_TEST_DATA_DIR) +
                                                "/flex_attention_fixtures.safetensors"))
      m[name] = t;
    return m;
  }();
  return f;
}

inline const mf::MaskMod causal = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                     const mf::Tensor& kv) { return q >= kv; };

struct Case {
  std::string name;
  mf::MaskMod mask;
  int64_t block = 16;
  std::optional<double> scale;
  std::string learnable;  // name of the learnable captured tensor, if any
  std::function<mf::ScoreMod(const Fixture&, const mf::Tensor& learnable)> score;
};

// `f`: the fixtures, or a copy of them moved to another device.
inline std::vector<Case> cases(const Fixture& f = fixtures()) {
  const int64_t S = 45;
  std::vector<Case> c;
  c.push_back({"causal", causal});
  c.push_back({"sliding_window",
               mf::and_masks(causal, [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                        const mf::Tensor& kv) { return (q - kv) <= 12; })});
  c.push_back(
      {"prefix_lm", mf::or_masks(causal, [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor&,
                                            const mf::Tensor& kv) { return kv < 18; })});
  const mf::Tensor doc = f.at("document.doc_ids");
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

inline const std::vector<std::string> kVariants{
    "causal",        "sliding_window", "prefix_lm", "document", "alibi",    "softcap",
    "relative_bias", "learnable_bias", "gqa",       "m_ne_n",   "tail_128", "custom_scale"};

}  // namespace flex_fixtures
