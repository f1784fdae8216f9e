// KV-cached generation: logits equal a full forward over the sequence at every step for
// each attention pattern (float64, 1e-10), greedy tokens equal a full-forward greedy loop,
// the nanoGPT context crop beyond block_size, batched chunked feeding, token sampling
// (greedy, top-k, distribution, seeds) and errors.
#include "models/generate.h"

#include <map>

#include "test_util.h"

namespace mf = microflex;

namespace {

mf::GPTConfig config(const mf::AttentionPattern& p, bool rotary = false, int64_t ctx = 16) {
  mf::GPTConfig c;
  c.vocab_size = 13;
  c.block_size = ctx;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.attention = p;
  c.attention.block_size = 4;  // several blocks, so partial and full blocks both occur
  c.rotary = rotary;
  return c;
}

// The last position's logits [V] of a full forward over the last block_size tokens.
std::vector<double> full_last_logits(mf::GPT& m, const std::vector<int64_t>& seq) {
  const int64_t ctx = m.cfg.block_size;
  const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(seq.size()) - ctx);
  std::vector<int64_t> win(seq.begin() + start, seq.end());
  const int64_t T = static_cast<int64_t>(win.size());
  const mf::Tensor idx = mf::from_vector(win, {1, T});
  // A document pattern sees the sequence as one document.
  const mf::Tensor logits =
      m.cfg.attention.document
          ? m.forward_packed(idx, mf::zeros({T}, {.dtype = mf::DType::Int32})).logits
          : m.forward(idx).logits;
  return logits.select(0, 0).select(0, T - 1).to_vector<double>();
}

struct Case {
  const char* name;
  mf::AttentionPattern pattern;
  bool rotary;
};

std::vector<Case> cases() {
  mf::AttentionPattern causal, window, alibi, softcap, prefix, long_prefix, document, bidirectional;
  window.window = 3;
  alibi.alibi = true;
  softcap.softcap = 0.5;   // small, so the cap changes the scores noticeably
  prefix.prefix = 5;       // the prompt's length: cached from the first step
  long_prefix.prefix = 8;  // longer than the prompt: full forwards until it is complete
  document.document = true;
  bidirectional.causal = false;  // not cacheable: full forwards
  return {{"causal", causal, false},     {"window", window, false},
          {"alibi", alibi, false},       {"softcap", softcap, false},
          {"prefix", prefix, false},     {"long prefix", long_prefix, false},
          {"rotary", causal, true},      {"window+rotary", window, true},
          {"document", document, false}, {"bidirectional", bidirectional, false}};
}

}  // namespace

TEST(Generate, CachedLogitsEqualFullForwardForEveryPattern) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    mf::manual_seed(17);
    mf::GPT model(config(c.pattern, c.rotary));
    model.to(mf::DType::Float64);
    model.eval();
    const std::vector<int64_t> prompt{3, 1, 4, 1, 5};
    std::vector<int64_t> seq = prompt;
    int checked = 0;
    // Sampled tokens (temperature 1), so the sequence is not a fixed point of the model.
    const std::vector<int64_t> out = mf::generate(
        model, prompt, 13, 1.0, 0, 5, [&](int64_t tok, const std::vector<double>& logits) {
          // Before `tok` is appended the logits are those of the sequence so far. Float64
          // throughout; the cache changes only summation order: 1e-10.
          mftest::expect_close(logits, full_last_logits(model, seq), 1e-10, 1e-10);
          seq.push_back(tok);
          ++checked;
        });
    EXPECT_EQ(checked, 13);  // the last one past block_size 16: cropped
    EXPECT_EQ(std::vector<int64_t>(seq.begin() + 5, seq.end()), out);
  }
}

TEST(Generate, GreedyMatchesFullForwardLoopAndCropsBeyondBlockSize) {
  for (const bool rotary : {false, true}) {
    mf::manual_seed(23);
    mf::GPT model(config({}, rotary, /*ctx=*/7));
    model.to(mf::DType::Float64);
    const std::vector<int64_t> prompt{2, 7, 1};
    // 12 new tokens with block size 7: the last steps crop the context as nanoGPT does.
    const std::vector<int64_t> cached = mf::generate(model, prompt, 12, 1.0, /*top_k=*/1);
    std::vector<int64_t> seq = prompt, plain;
    for (int i = 0; i < 12; ++i) {
      const std::vector<double> l = full_last_logits(model, seq);
      const int64_t tok = std::max_element(l.begin(), l.end()) - l.begin();
      seq.push_back(tok);
      plain.push_back(tok);
    }
    EXPECT_EQ(cached, plain);
    // Temperature 0 is greedy as well.
    EXPECT_EQ(mf::generate(model, prompt, 12, 0.0, 0, 99), plain);
    EXPECT_TRUE(model.is_training());  // restored after generation
  }
}

TEST(Generate, BatchedChunkedFeedingMatchesFullForward) {
  mf::AttentionPattern p;
  p.window = 4;
  p.alibi = true;
  mf::manual_seed(29);
  mf::GPT model(config(p, false, 11));
  model.to(mf::DType::Float64);
  model.eval();
  std::vector<int64_t> ids(2 * 11);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7 + 3) % 13);
  const mf::Tensor idx = mf::from_vector(ids, {2, 11});
  const mf::Tensor full = model.forward(idx).logits;  // [2, 11, V]
  mf::KVCache cache(model);
  int64_t pos = 0;
  for (const int64_t m : {5, 1, 3, 1, 1}) {
    const mf::Tensor got = cache.forward(idx.narrow(1, pos, m).contiguous());
    mftest::expect_close(got.contiguous(), full.narrow(1, pos, m).contiguous(), 1e-10, 1e-10,
                         "positions " + std::to_string(pos));
    pos += m;
  }
  EXPECT_EQ(cache.length(), 11);
  mftest::expect_error([&] { cache.forward(idx.narrow(1, 0, 1).contiguous()); },
                       {"KVCache", "exceed block size 11"});
  cache.clear();
  mftest::expect_error([&] { cache.forward(mf::zeros({2, 2})); }, {"KVCache", "[2, 2]"});
  cache.forward(idx.narrow(1, 0, 2).contiguous());
  mftest::expect_error(
      [&] {
        cache.forward(mf::from_vector(std::vector<int64_t>{1}, {1, 1}));
      },
      {"KVCache", "batch 1 differs from the cached 2"});
}

TEST(Generate, SampleToken) {
  std::mt19937_64 rng(1);
  const std::vector<double> logits{0.5, 2.0, -1.0, 2.0, 1.0};
  EXPECT_EQ(mf::sample_token(logits, 0.0, 0, rng), 1);  // first maximum
  EXPECT_EQ(mf::sample_token(logits, 1.0, 1, rng), 1);
  // top_k = 2 keeps the two 2.0 entries only; top_k = 3 adds 1.0.
  std::map<int64_t, int> counts;
  for (int i = 0; i < 2000; ++i) ++counts[mf::sample_token(logits, 1.0, 2, rng)];
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts[1], 850);
  EXPECT_GT(counts[3], 850);
  counts.clear();
  for (int i = 0; i < 2000; ++i) ++counts[mf::sample_token(logits, 1.0, 3, rng)];
  EXPECT_EQ(counts.size(), 3u);
  // The full distribution at temperature 2: frequencies within 5 standard deviations of
  // softmax(logits / 2) over 20000 draws.
  const int n = 20000;
  counts.clear();
  for (int i = 0; i < n; ++i) ++counts[mf::sample_token(logits, 2.0, 0, rng)];
  double z = 0.0;
  for (double l : logits) z += std::exp(l / 2.0);
  for (int64_t i = 0; i < 5; ++i) {
    const double p = std::exp(logits[i] / 2.0) / z;
    EXPECT_NEAR(counts[i] / double(n), p, 5.0 * std::sqrt(p * (1 - p) / n)) << "token " << i;
  }
  // Same seed, same draws.
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(mf::sample_token(logits, 1.0, 0, a), mf::sample_token(logits, 1.0, 0, b));
  mftest::expect_error([&] { mf::sample_token({}, 1.0, 0, rng); }, {"sample_token", "empty"});
  mftest::expect_error([&] { mf::sample_token({1.0, NAN}, 1.0, 0, rng); }, {"sample_token", "NaN"});
}

TEST(Generate, SeedsAndErrors) {
  mf::manual_seed(31);
  mf::GPT model(config({}));
  const std::vector<int64_t> prompt{1, 2};
  EXPECT_EQ(mf::generate(model, prompt, 10, 1.0, 0, 7), mf::generate(model, prompt, 10, 1.0, 0, 7));
  EXPECT_NE(mf::generate(model, prompt, 30, 1.0, 0, 7), mf::generate(model, prompt, 30, 1.0, 0, 8));
  EXPECT_TRUE(mf::generate(model, prompt, 0).empty());
  mftest::expect_error([&] { mf::generate(model, {}, 3); }, {"generate", "prompt is empty"});
  mftest::expect_error(
      [&] {
        mf::generate(model, {1, 13}, 3);
      },
      {"generate", "token 13", "[0, 13)"});
}
