// Multi-head self-attention through flex_attention, with the attention pattern (causal,
// sliding window, prefix LM, document masking, ALiBi, tanh softcap) chosen by config and
// optional rotary position embeddings. Letters: B batch, T sequence, C = H * D channels,
// H heads, D head dim.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "models/layers.h"
#include "ops/flex_attention/flex_attention.h"

namespace microflex {

// Which keys each query sees and how scores are changed. The mask is
//   ((causal ? kv <= q : true) & (window ? q - kv < window : true)   [*]
//    | (prefix ? kv < prefix : false))
//   & (document ? doc[q] == doc[kv] : true)
// [*] without causal the window is two-sided: |q - kv| < window.
// The score is softcap * tanh(score / softcap) when softcap > 0, then ALiBi adds
// slope_h * (kv - q) with slope_h = 2^(-8 (h + 1) / H).
struct AttentionPattern {
  bool causal = true;
  int64_t window = 0;        // > 0: sliding window of `window` keys (the query's own included)
  int64_t prefix = 0;        // > 0: prefix LM, keys kv < prefix are seen by every query
  bool document = false;     // packed sequences: needs doc ids at forward
  bool alibi = false;        // per-head linear biases
  double softcap = 0.0;      // > 0: tanh soft cap on scores
  int64_t block_size = 128;  // BlockMask block size

  bool has_mask() const { return causal || window > 0 || prefix > 0 || document; }
  bool has_score_mod() const { return alibi || softcap > 0.0; }
};

// The pattern's mask_mod; `doc_ids` ([T] or [B, T] integers) is captured when the pattern
// masks documents and ignored otherwise.
MaskMod make_mask_mod(const AttentionPattern& p, const Tensor& doc_ids = {});
// The pattern's score_mod (empty without ALiBi and softcap); `alibi_slopes` [H].
ScoreMod make_score_mod(const AttentionPattern& p, const Tensor& alibi_slopes = {});
// 2^(-8 (h + 1) / H) for h in [0, H), computed in float64 and returned as `dtype`.
Tensor alibi_slopes(int64_t n_head, DType dtype = DType::Float32);

// Rotary position embeddings (GPT-NeoX layout: the first and second halves of the head
// dim rotate as pairs), angle t * base^(-2i / D) for position t and pair i.
// x [B, H, T, D]; cos, sin [T_max, D/2] with T <= T_max.
Tensor apply_rotary(const Tensor& x, const Tensor& cos, const Tensor& sin);
// cos and sin tables [T_max, D/2], computed in float64 and returned as `dtype`.
std::pair<Tensor, Tensor> rotary_tables(int64_t max_len, int64_t head_dim, double base = 10000.0,
                                        DType dtype = DType::Float32);

struct AttentionConfig {
  int64_t n_embd = 768;
  int64_t n_head = 12;
  bool bias = true;
  // In training: on the attention probabilities (flex_attention's dropout_p) and on the
  // output projection, as nanoGPT's attn_dropout and resid_dropout.
  double dropout = 0.0;
  AttentionPattern pattern;
  bool rotary = false;
  double rope_base = 10000.0;
  int64_t max_len = 1024;  // longest sequence (for the rotary tables)
};

// nanoGPT's CausalSelfAttention: c_attn (C -> 3C) gives q, k, v; heads attend through
// flex_attention; c_proj (C -> C), dropout. Buffers (non-persistent): alibi_slopes [H]
// with ALiBi, rope_cos / rope_sin [max_len, D/2] with rotary.
class CausalSelfAttention : public Module {
 public:
  explicit CausalSelfAttention(const AttentionConfig& cfg);

  // x [B, T, C] -> [B, T, C]. Without `mask` the module's cached BlockMask for T is used
  // (an error when the pattern masks documents: pass a mask built with doc ids).
  Tensor forward(const Tensor& x, const BlockMask* mask = nullptr);
  Tensor operator()(const Tensor& x, const BlockMask* mask = nullptr) { return forward(x, mask); }

  // The BlockMask for length T on `device`, built once per (T, device) and cached; empty
  // when the pattern masks nothing. Not for document patterns.
  std::optional<BlockMask> block_mask(int64_t T, Device device);
  // A fresh BlockMask for T with document ids [T] or [B, T] (not cached: ids change per
  // batch); batch 1 for [T] ids.
  std::optional<BlockMask> build_block_mask(int64_t T, const Tensor& doc_ids) const;

  const AttentionConfig cfg;
  int64_t head_dim;
  std::shared_ptr<Linear> c_attn, c_proj;
  std::shared_ptr<Dropout> resid_drop;
  Tensor slopes, rope_cos, rope_sin;  // undefined when unused

 protected:
  void on_converted() override;

 private:
  ScoreMod score_mod_;
  std::map<std::pair<int64_t, std::string>, std::optional<BlockMask>> mask_cache_;
};

}  // namespace microflex
