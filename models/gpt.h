// GPT, modelled on nanoGPT: token (and, without rotary, position) embeddings, pre-norm
// blocks h.N, a final LayerNorm and a language-model head tied to the token embedding.
// Letters: B batch, T sequence, C = n_embd, V = vocab_size.
#pragma once
#include <optional>

#include "models/attention.h"
#include "models/layers.h"

namespace microflex {

struct GPTConfig {
  int64_t vocab_size = 50257;
  int64_t block_size = 1024;  // longest context
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  double dropout = 0.0;
  bool bias = true;            // biases in Linear layers and LayerNorms
  AttentionPattern attention;  // causal by default
  bool rotary = false;         // rotary embeddings on q and k instead of wpe
  double rope_base = 10000.0;

  // GPT-2 small: 124,439,808 parameters.
  static GPTConfig gpt2();
};

// Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class Block : public Module {
 public:
  explicit Block(const GPTConfig& cfg);
  Tensor forward(const Tensor& x, const BlockMask* mask = nullptr);  // [B, T, C] -> [B, T, C]

  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<MLP> mlp;
};

struct GPTOutput {
  Tensor logits;  // [B, T, V]
  Tensor loss;    // 0-d mean cross entropy; undefined without targets
};

// Parameters: wte.weight, wpe.weight (without rotary), h.N.{ln_1, attn.c_attn,
// attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}.{weight, bias}, ln_f.{weight, bias}. lm_head
// is wte.weight itself, so it is counted and saved once. Initialisation (GPT-2, from the
// current manual_seed): Linear and Embedding weights N(0, 0.02), c_proj weights
// N(0, 0.02 / sqrt(2 n_layer)), biases zero, norm weights one.
class GPT : public Module {
 public:
  explicit GPT(const GPTConfig& cfg);

  // idx [B, T] int64 (or int32) token ids, T <= block_size; targets [B, T] (positions
  // with -1 ignored, as in nanoGPT). Uses each layer's cached BlockMask for T.
  GPTOutput forward(const Tensor& idx, const Tensor& targets = {});
  // Same with a precomputed BlockMask for all layers (built for T x T).
  GPTOutput forward(const Tensor& idx, const Tensor& targets, const BlockMask& mask);
  // Packed sequences: doc_ids [T] or [B, T] gives each position's document; attention
  // stays inside documents (and follows the pattern within them). The mask is built once
  // for all layers.
  GPTOutput forward_packed(const Tensor& idx, const Tensor& doc_ids, const Tensor& targets = {});
  // The mask forward_packed uses, for reuse across steps with the same packing.
  std::optional<BlockMask> document_block_mask(const Tensor& doc_ids) const;

  const GPTConfig cfg;
  std::shared_ptr<Embedding> wte, wpe;  // wpe null with rotary
  std::shared_ptr<Dropout> drop;
  std::shared_ptr<ModuleList> h;
  std::vector<std::shared_ptr<Block>> blocks;  // h's entries, typed
  std::shared_ptr<LayerNorm> ln_f;

 private:
  GPTOutput run(const Tensor& idx, const Tensor& targets, const BlockMask* mask);
};

}  // namespace microflex
