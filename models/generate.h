// Autoregressive sampling from a GPT with a key/value cache: each layer keeps the keys and
// values of every position seen so far, so a new token costs one query row per layer
// instead of a forward over the whole sequence. Letters: B batch, M new positions,
// N = positions so far, H heads, D head dim, V vocabulary.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "models/gpt.h"

namespace microflex {

// Per-layer keys and values [B, H, block_size, D] for one model, filled from position 0.
// Attention for the new rows runs through flex_attention with M query rows against the
// N cached keys; the pattern's mask and score_mod see absolute positions (the query index
// is offset by the number of cached positions), and rotary angles / wpe rows are those of
// the absolute positions, so the logits equal a full forward's. A document pattern treats
// the cached sequence as one document. Causal patterns only (an error otherwise: with
// bidirectional attention earlier positions change when later ones arrive); with a prefix
// LM the first call must hold the whole prefix.
class KVCache {
 public:
  explicit KVCache(GPT& model);

  // Feeds idx [B, M] (int64) at positions length() ... length() + M - 1 and returns the
  // logits [B, M, V]; no autograd. length() + M must not exceed block_size, and B must
  // stay the same until clear().
  Tensor forward(const Tensor& idx);
  int64_t length() const { return len_; }
  void clear();

 private:
  GPT& model_;
  std::vector<Tensor> k_, v_;  // per layer [B, H, block_size, D]; undefined until first use
  int64_t len_ = 0;
};

// Picks a token from logits [V] (host values): temperature <= 0 or top_k == 1 is greedy
// (the first maximum); otherwise logits / temperature, the top_k largest kept (top_k <= 0:
// all; ties with the k-th value kept, as nanoGPT), softmax in float64 and one uniform draw
// from `rng` (53 bits, inverse CDF), so results do not depend on the standard library.
int64_t sample_token(const std::vector<double>& logits, double temperature, int64_t top_k,
                     std::mt19937_64& rng);

// Called after each new token with the logits [V] it was drawn from (float64 host values).
using TokenCallback = std::function<void(int64_t token, const std::vector<double>& logits)>;

// Continues `prompt` (non-empty token ids) by max_new_tokens tokens and returns only the
// new ones. The model runs in eval mode (restored after) without autograd. While the
// sequence fits in block_size the cache is used; beyond it each step is a full forward
// over the last block_size tokens, as nanoGPT crops its context. Non-causal patterns, and
// prefix LMs while the sequence is shorter than the prefix, run full forwards too.
std::vector<int64_t> generate(GPT& model, const std::vector<int64_t>& prompt,
                              int64_t max_new_tokens, double temperature = 1.0, int64_t top_k = 0,
                              uint64_t seed = 0, const TokenCallback& on_token = {});

}  // namespace microflex
