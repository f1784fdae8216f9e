// CausalSelfAttention against a float64 loop reference for every attention pattern
// (causal, sliding window, prefix LM, document masking, ALiBi, softcap, rotary, no mask),
// the BlockMask cache, gradcheck of the parameters, and errors.
#include "models/attention.h"
#include "core/random.h"

#include "models/model_reference.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::normal_f64;
using mftest::values;

namespace {

constexpr int64_t B = 2, T = 7, C = 12, H = 3;

mftest::AttnWeights weights(const mf::CausalSelfAttention& a) {
  return {values(a.c_attn->weight), values(a.c_attn->bias), values(a.c_proj->weight),
          values(a.c_proj->bias)};
}

struct Case {
  const char* name;
  mf::AttentionPattern pattern;
  bool rotary;
  mftest::MaskFn mask;
  mftest::ScoreFn score;
};

double slope(int64_t h) {
  return std::pow(2.0, -8.0 * static_cast<double>(h + 1) / H);
}

std::vector<Case> cases() {
  std::vector<Case> v;
  auto causal = [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q; };
  v.push_back({"causal", {}, false, causal, {}});
  v.push_back({"full", {.causal = false}, false, {}, {}});
  v.push_back({"window3",
               {.window = 3},
               false,
               [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q && q - kv < 3; },
               {}});
  v.push_back({"two_sided_window2",
               {.causal = false, .window = 2},
               false,
               [](int64_t, int64_t, int64_t q, int64_t kv) { return std::abs(q - kv) < 2; },
               {}});
  v.push_back({"prefix3",
               {.prefix = 3},
               false,
               [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q || kv < 3; },
               {}});
  v.push_back({"alibi",
               {.alibi = true},
               false,
               causal,
               [](double s, int64_t, int64_t h, int64_t q, int64_t kv) {
                 return s + slope(h) * static_cast<double>(kv - q);
               }});
  v.push_back(
      {"softcap",
       {.softcap = 0.7},
       false,
       causal,
       [](double s, int64_t, int64_t, int64_t, int64_t) { return 0.7 * std::tanh(s / 0.7); }});
  v.push_back({"softcap_alibi",
               {.alibi = true, .softcap = 0.7},
               false,
               causal,
               [](double s, int64_t, int64_t h, int64_t q, int64_t kv) {
                 return 0.7 * std::tanh(s / 0.7) + slope(h) * static_cast<double>(kv - q);
               }});
  v.push_back({"rotary", {}, true, causal, {}});
  return v;
}

}  // namespace

TEST(Attention, PatternsMatchReference) {
  const mf::Tensor x = normal_f64({B, T, C}, 1);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    mf::manual_seed(2);
    // Block size 2 makes full, partial and empty blocks at T = 7.
    mf::AttentionPattern p = c.pattern;
    p.block_size = 2;
    mf::CausalSelfAttention attn(
        {.n_embd = C, .n_head = H, .pattern = p, .rotary = c.rotary, .max_len = 9});
    attn.to(mf::DType::Float64);
    const mf::Tensor y = attn(x);
    EXPECT_EQ(y.sizes(), (mf::Shape{B, T, C}));
    mftest::expect_close(
        values(y),
        mftest::attention_ref(values(x), weights(attn), B, T, C, H, c.mask, c.score, c.rotary),
        1e-12, 1e-12, c.name);
  }
}

TEST(Attention, Float32MatchesReference) {
  // float32 parameters and input, float32 working precision: 1e-5 relative.
  const mf::Tensor x = normal_f64({B, T, C}, 3);
  mf::CausalSelfAttention attn(
      {.n_embd = C, .n_head = H, .pattern = {.alibi = true}, .rotary = true, .max_len = T});
  const mf::Tensor y = attn(x.to(mf::DType::Float32));
  EXPECT_EQ(y.dtype(), mf::DType::Float32);
  mftest::expect_close(values(y),
                       mftest::attention_ref(
                           values(x.to(mf::DType::Float32)), weights(attn), B, T, C, H,
                           [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q; },
                           [](double s, int64_t, int64_t h, int64_t q, int64_t kv) {
                             return s + slope(h) * static_cast<double>(kv - q);
                           },
                           true),
                       1e-5, 1e-5, "f32");
}

TEST(Attention, DocumentMaskingPerBatch) {
  // Two packed rows with different document boundaries; causal within each document.
  const std::vector<int64_t> docs{0, 0, 0, 1, 1, 2, 2, /**/ 0, 1, 1, 1, 1, 1, 3};
  const mf::Tensor doc_ids = mf::from_vector(docs, {B, T});
  mf::CausalSelfAttention attn(
      {.n_embd = C, .n_head = H, .pattern = {.document = true, .block_size = 2}});
  attn.to(mf::DType::Float64);
  const mf::Tensor x = normal_f64({B, T, C}, 4);
  const std::optional<mf::BlockMask> bm = attn.build_block_mask(T, doc_ids);
  ASSERT_TRUE(bm.has_value());
  EXPECT_EQ(bm->batch(), B);
  mftest::expect_close(values(attn(x, &*bm)),
                       mftest::attention_ref(values(x), weights(attn), B, T, C, H,
                                             [&](int64_t b, int64_t, int64_t q, int64_t kv) {
                                               return kv <= q &&
                                                      docs[b * T + q] == docs[b * T + kv];
                                             },
                                             {}),
                       1e-12, 1e-12, "document [B, T]");
  // [T] ids shared by the batch.
  const std::vector<int64_t> shared(docs.begin(), docs.begin() + T);
  const std::optional<mf::BlockMask> bm1 = attn.build_block_mask(T, mf::from_vector(shared));
  EXPECT_EQ(bm1->batch(), 1);
  mftest::expect_close(values(attn(x, &*bm1)),
                       mftest::attention_ref(values(x), weights(attn), B, T, C, H,
                                             [&](int64_t, int64_t, int64_t q, int64_t kv) {
                                               return kv <= q && shared[q] == shared[kv];
                                             },
                                             {}),
                       1e-12, 1e-12, "document [T]");
  mftest::expect_error([&] { attn(x); }, {"masks documents", "build_block_mask"});
  mftest::expect_error(
      [&] { attn.build_block_mask(T, mf::zeros({5}, {.dtype = mf::DType::Int64})); },
      {"document ids", "T = 7", "[5]"});
}

TEST(Attention, BlockMaskIsCachedPerLength) {
  mf::CausalSelfAttention attn({.n_embd = C, .n_head = H, .pattern = {.window = 4}});
  const auto a = attn.block_mask(T, mf::Device::cpu());
  const auto b = attn.block_mask(T, mf::Device::cpu());
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(a->kv_num_blocks.is_same(b->kv_num_blocks));  // the same cached tensors
  const auto c = attn.block_mask(T + 2, mf::Device::cpu());
  EXPECT_EQ(c->q_len, T + 2);
  EXPECT_FALSE(c->kv_num_blocks.is_same(a->kv_num_blocks));
  mf::CausalSelfAttention full({.n_embd = C, .n_head = H, .pattern = {.causal = false}});
  EXPECT_FALSE(full.block_mask(T, mf::Device::cpu()).has_value());
}

// With dropout, a training forward draws twice from the default generator (the attention
// probabilities, then the output projection) and an eval forward not at all, so eval
// output is deterministic.
TEST(Attention, DropoutOnProbabilitiesInTrainingOnly) {
  mf::manual_seed(3);
  mf::CausalSelfAttention attn({.n_embd = C, .n_head = H, .dropout = 0.5});
  const mf::Tensor x = mf::randn({B, T, C});
  const uint64_t before = mf::default_generator_state().offset;
  (void)attn.forward(x);
  EXPECT_EQ(mf::default_generator_state().offset, before + 2);
  attn.eval();
  const mf::Tensor e1 = attn.forward(x), e2 = attn.forward(x);
  EXPECT_EQ(mf::default_generator_state().offset, before + 2);
  EXPECT_EQ(e1.to_vector<double>(), e2.to_vector<double>());
}

TEST(Attention, Gradcheck) {
  // Tiny: C = 4, 2 heads of 2, T = 5, with ALiBi, softcap, a window and rotary together.
  mf::CausalSelfAttention attn(
      {.n_embd = 4,
       .n_head = 2,
       .pattern = {.window = 3, .alibi = true, .softcap = 2.0, .block_size = 2},
       .rotary = true,
       .max_len = 5});
  attn.to(mf::DType::Float64);
  mf::Tensor x = normal_f64({1, 5, 4}, 5);
  x.requires_grad_();
  const mf::Tensor w = normal_f64({1, 5, 4}, 6);
  mf::TensorList inputs = attn.parameters();
  inputs.push_back(x);
  const mf::GradcheckResult r =
      mf::gradcheck([&](const mf::TensorList&) { return (attn(x) * w).sum(); }, inputs);
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Attention, Errors) {
  mftest::expect_error([] { mf::CausalSelfAttention({.n_embd = 10, .n_head = 3}); },
                       {"n_embd 10", "multiple of n_head 3"});
  mftest::expect_error([] { mf::CausalSelfAttention({.n_embd = 6, .n_head = 2, .rotary = true}); },
                       {"rotary", "even", "3"});
  mftest::expect_error(
      [] { mf::CausalSelfAttention({.n_embd = 4, .n_head = 2, .pattern = {.window = -1}}); },
      {"window", "-1"});
  mftest::expect_error(
      [] { mf::CausalSelfAttention({.n_embd = 4, .n_head = 2, .pattern = {.softcap = -1.0}}); },
      {"softcap", "-1"});
  mf::CausalSelfAttention attn({.n_embd = C, .n_head = H, .rotary = true, .max_len = 4});
  mftest::expect_error([&] { attn(mf::zeros({1, 5, C})); }, {"sequence length 5", "max_len 4"});
  mftest::expect_error([&] { attn(mf::zeros({1, 3, 5})); }, {"[B, T, C]", "C = 12", "[1, 3, 5]"});
}
