// Cached incremental forward of a GPT (keys and values per layer, attention for the new
// rows only), token sampling and the generation loop.
#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/shape_ops.h"

namespace microflex {

KVCache::KVCache(GPT& model) : model_(model) {
  MF_CHECK(model.cfg.attention.causal,
           "KVCache: the attention pattern is not causal, so earlier positions depend on later "
           "ones and cannot be cached");
  k_.resize(model.blocks.size());
  v_.resize(model.blocks.size());
}

void KVCache::clear() {
  len_ = 0;
}

Tensor KVCache::forward(const Tensor& idx) {
  const GPTConfig& cfg = model_.cfg;
  MF_CHECK(idx.defined() && idx.dim() == 2 && idx.size(1) >= 1 &&
               (idx.dtype() == DType::Int64 || idx.dtype() == DType::Int32),
           "KVCache: idx must be [B, M] int64 or int32 with M >= 1, got ",
           idx.defined() ? shape_str(idx.sizes()) : "undefined");
  const int64_t B = idx.size(0), M = idx.size(1), pos = len_, N = pos + M;
  const int64_t C = cfg.n_embd, H = cfg.n_head, D = C / H;
  MF_CHECK(N <= cfg.block_size, "KVCache: ", pos, " cached positions + ", M,
           " new ones exceed block size ", cfg.block_size);
  MF_CHECK(pos == 0 || k_[0].size(0) == B, "KVCache: batch ", B, " differs from the cached ",
           k_[0].size(0), "; clear() first");
  MF_CHECK(pos == 0 || pos >= cfg.attention.prefix, "KVCache: positions ", pos, " ... ", N - 1,
           " fall in the bidirectional prefix of ", cfg.attention.prefix,
           " after others were cached; feed the whole prefix in the first call");
  NoGradGuard no_grad;
  const Device device = idx.device();

  // The pattern seen from absolute positions: query row m is position pos + m. One
  // sequence is one document, so the document mask is dropped.
  AttentionPattern pattern = cfg.attention;
  pattern.document = false;
  FlexAttentionOptions opts;
  const bool causal_only = pattern.causal && pattern.window == 0 && pattern.prefix == 0;
  if (pattern.has_mask() && !(causal_only && M == 1)) {
    const MaskMod base = make_mask_mod(pattern);
    const MaskMod shifted = [base, pos](const Tensor& b, const Tensor& h, const Tensor& q,
                                        const Tensor& kv) { return base(b, h, q + pos, kv); };
    opts.block_mask = create_block_mask(shifted, 1, 1, M, N, device, pattern.block_size);
  }
  const CausalSelfAttention& attn0 = *model_.blocks[0]->attn;
  if (pattern.has_score_mod()) {
    const ScoreMod base = make_score_mod(pattern, attn0.slopes);
    opts.score_mod = [base, pos](const Tensor& s, const Tensor& b, const Tensor& h, const Tensor& q,
                                 const Tensor& kv) { return base(s, b, h, q + pos, kv); };
  }

  Tensor x = model_.wte->forward(idx);  // [B, M, C]
  if (model_.wpe)
    x = x + model_.wpe->forward(arange(pos, N, 1, {.dtype = DType::Int64, .device = device}));
  x = model_.drop->forward(x);
  for (size_t i = 0; i < model_.blocks.size(); ++i) {
    Block& blk = *model_.blocks[i];
    CausalSelfAttention& attn = *blk.attn;
    const std::vector<Tensor> qkv = split(attn.c_attn->forward(blk.ln_1->forward(x)), C, 2);
    auto heads = [&](const Tensor& t) { return t.reshape({B, M, H, D}).transpose(1, 2); };
    Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);  // [B, H, M, D]
    if (cfg.rotary) {
      const Tensor cs = attn.rope_cos.narrow(0, pos, M), sn = attn.rope_sin.narrow(0, pos, M);
      q = apply_rotary(q, cs, sn);
      k = apply_rotary(k, cs, sn);
    }
    if (pos == 0) {
      const TensorOptions o{.dtype = q.dtype(), .device = device};
      k_[i] = zeros({B, H, cfg.block_size, D}, o);
      v_[i] = zeros({B, H, cfg.block_size, D}, o);
    }
    k_[i].narrow(2, pos, M).copy_(k);
    v_[i].narrow(2, pos, M).copy_(v);
    const Tensor kk = k_[i].narrow(2, 0, N), vv = v_[i].narrow(2, 0, N);  // [B, H, N, D]
    const Tensor y = flex_attention(q, kk, vv, opts).out;                 // [B, H, M, D]
    x = x + attn.resid_drop->forward(attn.c_proj->forward(y.transpose(1, 2).reshape({B, M, C})));
    x = x + blk.mlp->forward(blk.ln_2->forward(x));
  }
  x = model_.ln_f->forward(x);
  len_ = N;
  return linear(x, model_.wte->weight);  // [B, M, V]
}

int64_t sample_token(const std::vector<double>& logits, double temperature, int64_t top_k,
                     std::mt19937_64& rng) {
  const int64_t V = static_cast<int64_t>(logits.size());
  MF_CHECK(V > 0, "sample_token: empty logits");
  for (double l : logits) MF_CHECK(!std::isnan(l), "sample_token: logits contain NaN");
  MF_CHECK(!std::isnan(temperature), "sample_token: temperature is NaN");
  if (temperature <= 0.0 || top_k == 1)
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<double> s(logits.size());
  for (int64_t i = 0; i < V; ++i) s[i] = logits[i] / temperature;
  double threshold = -INFINITY;
  if (top_k > 0 && top_k < V) {
    std::vector<double> sorted = s;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(),
                     std::greater<double>());
    threshold = sorted[top_k - 1];
  }
  const double mx = *std::max_element(s.begin(), s.end());
  std::vector<double> p(s.size(), 0.0);
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i)
    if (s[i] >= threshold) total += p[i] = std::exp(s[i] - mx);
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;
  double cum = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (p[i] == 0.0) continue;
    cum += p[i];
    last = i;
    if (u < cum) return i;
  }
  return last;  // rounding left u at the very end
}

namespace {

// Restores the model's training flag when generation ends, also on errors.
class EvalScope {
 public:
  explicit EvalScope(Module& m) : m_(m), was_training_(m.is_training()) { m.eval(); }
  ~EvalScope() { m_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  Module& m_;
  bool was_training_;
};

}  // namespace

std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt,
                              int64_t max_new_tokens, double temperature, int64_t top_k,
                              uint64_t seed, const TokenCallback& on_token) {
  MF_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
  MF_CHECK(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", max_new_tokens);
  const int64_t V = model.cfg.vocab_size, ctx = model.cfg.block_size;
  for (int64_t t : prompt)
    MF_CHECK(t >= 0 && t < V, "generate: prompt token ", t, " is outside the vocabulary [0, ", V,
             ")");
  EvalScope eval(model);
  NoGradGuard no_grad;
  const Device device = model.wte->weight.device();
  std::mt19937_64 rng(seed);
  // Non-causal patterns cannot be cached, and a prefix LM only once the whole prefix is
  // known: those steps run a full forward instead.
  const bool cacheable = model.cfg.attention.causal;
  std::optional<KVCache> cache;
  if (cacheable) cache.emplace(model);
  std::vector<int64_t> seq = prompt, out;
  auto ids = [&](size_t begin) {
    std::vector<int64_t> part(seq.begin() + static_cast<std::ptrdiff_t>(begin), seq.end());
    const int64_t n = static_cast<int64_t>(part.size());
    Tensor t = from_vector(part, {1, n});
    return device.is_cpu() ? t : t.to(device);
  };
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const int64_t T = static_cast<int64_t>(seq.size());
    Tensor logits;  // [1, M, V]
    if (cacheable && T <= ctx && T >= model.cfg.attention.prefix) {
      logits = cache->forward(ids(static_cast<size_t>(cache->length())));
    } else {
      if (cache) cache->clear();
      const Tensor idx = ids(static_cast<size_t>(std::max<int64_t>(0, T - ctx)));
      // The sequence is one document.
      logits = model.cfg.attention.document
                   ? model
                         .forward_packed(
                             idx, zeros({idx.size(1)}, {.dtype = DType::Int32, .device = device}))
                         .logits
                   : model.forward(idx).logits;
    }
    const Tensor last = logits.select(0, 0).select(0, logits.size(1) - 1);  // [V]
    const std::vector<double> lv = last.to(Device::cpu()).to(DType::Float64).to_vector<double>();
    const int64_t tok = sample_token(lv, temperature, top_k, rng);
    seq.push_back(tok);
    out.push_back(tok);
    if (on_token) on_token(tok, lv);
  }
  return out;
}

}  // namespace microflex
