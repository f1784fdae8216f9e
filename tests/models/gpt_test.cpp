// Block and GPT against float64 loop references (logits and loss), packed sequences with
// document ids, the tied head, GPT-2 initialisation, gradcheck through the tied embedding,
// a fake-mode forward and backward at GPT-2 small size, and errors.
#include "models/gpt.h"

#include "core/fake.h"
#include "models/model_reference.h"
#include "models/optim.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::normal_f64;
using mftest::values;

namespace {

mf::GPTConfig tiny(int64_t V = 11, int64_t ctx = 9, int64_t layers = 2, int64_t heads = 3,
                   int64_t C = 12) {
  mf::GPTConfig c;
  c.vocab_size = V;
  c.block_size = ctx;
  c.n_layer = layers;
  c.n_head = heads;
  c.n_embd = C;
  c.attention.block_size = 4;
  return c;
}

mf::Tensor random_ids(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> d(0, V - 1);
  std::vector<int64_t> v(static_cast<size_t>(B * T));
  for (auto& x : v) x = d(gen);
  return mf::from_vector(v, {B, T});
}

// The GPT forward written with the loop references: logits [B, T, V].
std::vector<double> gpt_ref(const mf::GPT& m, const mf::Tensor& idx, const mftest::MaskFn& mask) {
  const int64_t B = idx.size(0), T = idx.size(1), C = m.cfg.n_embd, V = m.cfg.vocab_size;
  const auto ids = idx.to_vector<int64_t>();
  const auto wte = values(m.wte->weight);
  const auto wpe = m.wpe ? values(m.wpe->weight) : std::vector<double>();
  std::vector<double> x(static_cast<size_t>(B * T * C));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        x[(b * T + t) * C + c] = wte[ids[b * T + t] * C + c] + (wpe.empty() ? 0.0 : wpe[t * C + c]);
  for (const auto& blk : m.blocks)
    x = mftest::block_ref(x, mftest::block_weights(*blk), B, T, C, m.cfg.n_head, mask, {},
                          m.cfg.rotary);
  x = mftest::layer_norm_ref(x, values(m.ln_f->weight), values(m.ln_f->bias), B * T, C, 1e-5);
  return mftest::linear_ref(x, wte, {}, B * T, C, V);
}

auto causal = [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q; };

}  // namespace

TEST(GPT, BlockMatchesReference) {
  mf::manual_seed(1);
  mf::Block blk(tiny());
  blk.to(mf::DType::Float64);
  const mf::Tensor x = normal_f64({2, 7, 12}, 1);
  mftest::expect_close(
      values(blk.forward(x)),
      mftest::block_ref(values(x), mftest::block_weights(blk), 2, 7, 12, 3, causal, {}, false),
      1e-12, 1e-12, "block");
}

TEST(GPT, LogitsAndLossMatchReference) {
  for (bool rotary : {false, true}) {
    SCOPED_TRACE(rotary ? "rotary" : "wpe");
    mf::manual_seed(2);
    mf::GPTConfig cfg = tiny();
    cfg.rotary = rotary;
    mf::GPT m(cfg);
    EXPECT_EQ(m.wpe == nullptr, rotary);
    m.to(mf::DType::Float64);
    const mf::Tensor idx = random_ids(2, 7, 11, 3), tgt = random_ids(2, 7, 11, 4);
    const mf::GPTOutput out = m.forward(idx, tgt);
    EXPECT_EQ(out.logits.sizes(), (mf::Shape{2, 7, 11}));
    const auto ref = gpt_ref(m, idx, causal);
    mftest::expect_close(values(out.logits), ref, 1e-12, 1e-12, "logits");
    EXPECT_NEAR(out.loss.item<double>(),
                mftest::cross_entropy_ref(ref, tgt.to_vector<int64_t>(), 14, 11), 1e-12);
    EXPECT_FALSE(m.forward(idx).loss.defined());
  }
}

TEST(GPT, IgnoredTargetsAndFloat32) {
  mf::manual_seed(3);
  mf::GPT m(tiny());
  const mf::Tensor idx = random_ids(1, 5, 11, 5);
  std::vector<int64_t> t = random_ids(1, 5, 11, 6).to_vector<int64_t>();
  t[1] = -1;
  t[4] = -1;  // nanoGPT's ignore index
  const mf::GPTOutput out = m.forward(idx, mf::from_vector(t, {1, 5}));
  EXPECT_EQ(out.logits.dtype(), mf::DType::Float32);
  const auto ref = gpt_ref(m, idx, causal);
  // float32 through two blocks: 1e-5 relative.
  mftest::expect_close(values(out.logits), ref, 1e-5, 1e-5, "f32 logits");
  const std::vector<int64_t> kept{t[0], t[2], t[3]};
  std::vector<double> rows;
  for (int64_t r : {0, 2, 3})
    rows.insert(rows.end(), ref.begin() + r * 11, ref.begin() + (r + 1) * 11);
  EXPECT_NEAR(out.loss.item<double>(), mftest::cross_entropy_ref(rows, kept, 3, 11), 1e-5);
}

TEST(GPT, PackedSequencesWithDocumentIds) {
  mf::manual_seed(4);
  mf::GPTConfig cfg = tiny();
  cfg.attention.document = true;
  mf::GPT m(cfg);
  m.to(mf::DType::Float64);
  const std::vector<int64_t> docs{0, 0, 0, 1, 1, 1, 1, 2, 2, /**/ 5, 5, 6, 6, 6, 6, 6, 6, 7};
  const mf::Tensor doc_ids = mf::from_vector(docs, {2, 9});
  const mf::Tensor idx = random_ids(2, 9, 11, 7);
  const auto ref = gpt_ref(m, idx, [&](int64_t b, int64_t, int64_t q, int64_t kv) {
    return kv <= q && docs[b * 9 + q] == docs[b * 9 + kv];
  });
  mftest::expect_close(values(m.forward_packed(idx, doc_ids).logits), ref, 1e-12, 1e-12, "packed");
  // The same through a precomputed mask.
  const auto bm = m.document_block_mask(doc_ids);
  mftest::expect_close(values(m.forward(idx, {}, *bm).logits), ref, 1e-12, 1e-12, "precomputed");
  mftest::expect_error([&] { m.forward(idx); }, {"masks documents"});
  mftest::expect_error(
      [&] {
        m.forward_packed(idx, mf::from_vector(docs, {3, 6}));
      },
      {"doc_ids", "[2, 9]", "[3, 6]"});
}

TEST(GPT, TiedHeadAndInitialisation) {
  mf::manual_seed(5);
  mf::GPTConfig cfg = tiny(64, 16, 4, 2, 32);
  mf::GPT m(cfg);
  // No separate head parameter: the head is wte.weight.
  for (const auto& [n, p] : m.named_parameters()) EXPECT_EQ(n.find("lm_head"), std::string::npos);
  const int64_t per_block =
      2 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + 2 * 32 + (32 * 128 + 128) + (128 * 32 + 32);
  EXPECT_EQ(m.num_parameters(), 64 * 32 + 16 * 32 + 4 * per_block + 2 * 32);
  auto stdev = [](const mf::Tensor& t) {
    double s = 0, s2 = 0;
    const auto v = values(t);
    for (double x : v) {
      s += x;
      s2 += x * x;
    }
    const double n = static_cast<double>(v.size());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  // N(0, 0.02) weights, c_proj weights N(0, 0.02 / sqrt(2 * 4)); 2048+ samples each, so
  // the sample std is within 10%.
  EXPECT_NEAR(stdev(m.wte->weight), 0.02, 0.002);
  EXPECT_NEAR(stdev(m.blocks[0]->attn->c_attn->weight), 0.02, 0.002);
  EXPECT_NEAR(stdev(m.blocks[0]->mlp->c_proj->weight), 0.02 / std::sqrt(8.0), 0.0007);
  EXPECT_NEAR(stdev(m.blocks[3]->attn->c_proj->weight), 0.02 / std::sqrt(8.0), 0.0007);
  for (double v : values(m.blocks[1]->mlp->c_fc->bias)) EXPECT_EQ(v, 0.0);
  for (double v : values(m.ln_f->weight)) EXPECT_EQ(v, 1.0);
  // Deterministic given the seed.
  mf::manual_seed(5);
  mf::GPT again(cfg);
  EXPECT_EQ(values(again.blocks[2]->mlp->c_fc->weight), values(m.blocks[2]->mlp->c_fc->weight));
}

TEST(GPT, GradcheckThroughTiedEmbedding) {
  // wte feeds both the embedding and the head; wpe, ln_f and one attention matrix too.
  mf::manual_seed(6);
  mf::GPT m(tiny(5, 4, 1, 2, 4));
  m.to(mf::DType::Float64);
  const mf::Tensor idx = mf::from_vector<int64_t>({1, 4, 1, 0}, {1, 4});
  const mf::Tensor tgt = mf::from_vector<int64_t>({4, 1, 3, 2}, {1, 4});
  const mf::GradcheckResult r = mf::gradcheck(
      [&](const mf::TensorList&) { return m.forward(idx, tgt).loss; },
      {m.wte->weight, m.wpe->weight, m.ln_f->weight, m.blocks[0]->attn->c_attn->weight});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(GPT, FakeForwardBackwardAtGPT2Size) {
  mf::FakeModeGuard fake;
  mf::GPT m(mf::GPTConfig::gpt2());
  const mf::Tensor idx = mf::zeros({2, 1024}, {.dtype = mf::DType::Int64});
  const mf::GPTOutput out = m.forward(idx, idx);
  EXPECT_TRUE(out.logits.is_fake());
  EXPECT_EQ(out.logits.sizes(), (mf::Shape{2, 1024, 50257}));
  EXPECT_EQ(out.loss.dim(), 0);
  out.loss.backward();
  EXPECT_EQ(m.wte->weight.grad().sizes(), (mf::Shape{50257, 768}));
  // At least parameters, gradients and the float32 logits were alive at the peak.
  EXPECT_GT(fake.peak_bytes(), 2 * 124439808LL * 4 + 2LL * 1024 * 50257 * 4);
  // An AdamW step adds its two state tensors per parameter.
  const int64_t before = fake.current_bytes();
  mf::AdamW opt(m.named_parameters());
  opt.step();
  EXPECT_EQ(fake.current_bytes() - before, 2 * 124439808LL * 4);
}

TEST(GPT, Errors) {
  mf::GPT m(tiny());
  mftest::expect_error([&] { m.forward(random_ids(1, 10, 11, 1)); },
                       {"sequence of length 10", "block size is only 9"});
  mftest::expect_error([&] { m.forward(mf::zeros({1, 3})); }, {"idx", "int64", "float32"});
  mftest::expect_error([&] { m.forward(random_ids(1, 3, 11, 1), random_ids(1, 4, 11, 1)); },
                       {"targets [1, 4]", "idx [1, 3]"});
  mftest::expect_error([] { mf::GPT(tiny(11, 9, 0)); }, {"GPT", "positive", "0"});
}
