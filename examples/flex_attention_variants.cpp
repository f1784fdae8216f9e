// The six classic attention variants as mask_mod / score_mod, each with its block mask's
// picture and sparsity, run through flex_attention on random inputs.
#include <cmath>
#include <iostream>

#include <microflex/microflex.h>

using mf::Tensor;

int main() {
  const int64_t B = 1, H = 4, S = 1024, D = 64;
  mf::manual_seed(0);
  Tensor q = mf::randn({B, H, S, D}), k = mf::randn({B, H, S, D}), v = mf::randn({B, H, S, D});

  mf::MaskMod causal = [](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) {
    return q >= kv;
  };
  mf::MaskMod window = [](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) {
    return (q - kv) <= 256;
  };
  mf::MaskMod prefix = [](const Tensor&, const Tensor&, const Tensor&, const Tensor& kv) {
    return kv < 384;
  };
  // Three packed documents of 300, 500 and 224 tokens.
  std::vector<int32_t> ids(S);
  for (int64_t i = 0; i < S; ++i) ids[i] = i < 300 ? 0 : i < 800 ? 1 : 2;
  Tensor doc = mf::from_vector(ids);
  mf::MaskMod document = [doc](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) {
    return (doc.index({q}) == doc.index({kv})) & (q >= kv);
  };
  std::vector<float> slope_values;
  for (int64_t h = 0; h < H; ++h) slope_values.push_back(std::pow(2.0f, -8.0f * (h + 1) / H));
  Tensor slopes = mf::from_vector(slope_values);
  mf::ScoreMod alibi = [slopes](const Tensor& s, const Tensor&, const Tensor& h, const Tensor& q,
                                const Tensor& kv) { return s + slopes.index({h}) * (kv - q); };
  mf::ScoreMod softcap = [](const Tensor& s, const Tensor&, const Tensor&, const Tensor&,
                            const Tensor&) { return mf::tanh(s / 30.0) * 30.0; };

  struct Variant {
    const char* name;
    mf::MaskMod mask;
    mf::ScoreMod score;
  };
  const Variant variants[] = {
      {"causal", causal, {}},
      {"sliding window 256", mf::and_masks(causal, window), {}},
      {"prefix LM 384", mf::or_masks(causal, prefix), {}},
      {"document masking", document, {}},
      {"ALiBi (causal)", causal, alibi},
      {"tanh softcap 30 (causal)", causal, softcap},
  };
  for (const Variant& var : variants) {
    mf::BlockMask bm = mf::create_block_mask(var.mask, 1, 1, S, S);
    Tensor out = mf::flex_attention(q, k, v, {.score_mod = var.score, .block_mask = bm}).out;
    std::cout << "== " << var.name << ": out " << mf::shape_str(out.sizes())
              << ", mean |out| = " << mf::abs(out).mean().item<float>() << "\n"
              << bm.to_string(8) << "\n";
  }
  return 0;
}
