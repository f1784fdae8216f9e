// Attention dropout in flex_attention's dense path (Note [Flex dropout]): the output
// against a float64 loop reference that draws the mask from philox::dropout_keep itself,
// gradients by finite differences under a fixed seed, the keep rate, and bad input.
#include <random>

#include "core/fake.h"
#include "core/random.h"
#include "kernels/cpu/philox.h"
#include "ops/flex_attention/flex_attention.h"
#include "ops/flex_attention/flex_reference.h"
#include "ops/nn.h"
#include "test_util.h"

namespace mf = microflex;

namespace {

mf::Tensor rnd(const mf::Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
  for (auto& x : v) x = n(gen);
  return mf::from_vector(v, s);
}

mf::MaskMod causal() {
  return [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q, const mf::Tensor& kv) {
    return q >= kv;
  };
}

mf::ScoreMod alibi() {
  return [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor& h, const mf::Tensor& q,
            const mf::Tensor& kv) { return s - (h + 1) * 0.125 * (q - kv); };
}

// B=2, Hq=4 over Hkv=2 (GQA), M=37, N=45 in blocks of 16 (partial and full blocks, tails),
// D=8, Dv=5: out against the loop reference with the mask drawn from the same element ids.
TEST(FlexDropout, MatchesLoopReferenceWithTheSameMask) {
  const int64_t B = 2, Hq = 4, Hkv = 2, M = 37, N = 45;
  const mf::Tensor q = rnd({B, Hq, M, 8}, 1), k = rnd({B, Hkv, N, 8}, 2),
                   v = rnd({B, Hkv, N, 5}, 3);
  const mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, M, N, mf::Device::cpu(), 16);
  for (const double p : {0.1, 0.5, 0.9}) {
    mf::manual_seed(1234);
    const mf::PhiloxSeedOffset so = mf::default_generator_state();
    const mf::Tensor out =
        mf::flex_attention(
            q, k, v, {.score_mod = alibi(), .block_mask = bm, .enable_gqa = true, .dropout_p = p})
            .out;
    auto drop = [&](int64_t b, int64_t h, int64_t qi, int64_t kv) {
      const uint64_t id = static_cast<uint64_t>(((b * Hq + h) * M + qi) * N + kv);
      return mf::philox::dropout_keep(so.seed, so.offset, id, p) ? 1.0 / (1.0 - p) : 0.0;
    };
    const mftest::Reference ref = mftest::reference_attention(
        q, k, v, 1.0 / std::sqrt(8.0),
        [](double s, int64_t, int64_t h, int64_t qi, int64_t kv) {
          return s - (static_cast<double>(h) + 1) * 0.125 * static_cast<double>(qi - kv);
        },
        [](int64_t, int64_t, int64_t qi, int64_t kv) { return qi >= kv; }, drop);
    // float64 throughout: only summation order differs.
    mftest::expect_close(out.to_vector<double>(), ref.out, 1e-12, 1e-12,
                         "dropout p=" + std::to_string(p));
  }
}

// Without dropout (p = 0) the output is bitwise the plain call's; p = 1 drops everything.
TEST(FlexDropout, ZeroAndOne) {
  const mf::Tensor q = rnd({1, 2, 19, 8}, 4), k = rnd({1, 2, 23, 8}, 5), v = rnd({1, 2, 23, 8}, 6);
  const mf::Tensor plain = mf::flex_attention(q, k, v).out;
  const mf::Tensor zero = mf::flex_attention(q, k, v, {.dropout_p = 0.0}).out;
  EXPECT_EQ(plain.to_vector<double>(), zero.to_vector<double>());
  const mf::Tensor all = mf::flex_attention(q, k, v, {.dropout_p = 1.0}).out;
  for (double x : all.to_vector<double>()) ASSERT_EQ(x, 0.0);
}

// Each call draws a new (seed, offset); the same seed repeats the mask.
TEST(FlexDropout, SeededAndFreshPerCall) {
  const mf::Tensor q = rnd({1, 2, 19, 8}, 7), k = rnd({1, 2, 23, 8}, 8), v = rnd({1, 2, 23, 8}, 9);
  mf::manual_seed(5);
  const auto a = mf::flex_attention(q, k, v, {.dropout_p = 0.3}).out.to_vector<double>();
  const auto b = mf::flex_attention(q, k, v, {.dropout_p = 0.3}).out.to_vector<double>();
  mf::manual_seed(5);
  const auto c = mf::flex_attention(q, k, v, {.dropout_p = 0.3}).out.to_vector<double>();
  EXPECT_EQ(a, c);
  EXPECT_NE(a, b);
}

// dropout_keep keeps a fraction 1 - p: 200,000 draws, within 5 standard deviations.
TEST(FlexDropout, KeepRate) {
  const int64_t n = 200000;
  const mf::Tensor ids = mf::arange(0, n, 1, {.dtype = mf::DType::Int64});
  for (const double p : {0.1, 0.5}) {
    const mf::Tensor keep = mf::dropout_keep(ids, p, 99, 3);
    const double rate = mf::sum(keep).item<double>() / static_cast<double>(n);
    EXPECT_NEAR(rate, 1.0 - p, 5.0 * std::sqrt(p * (1 - p) / static_cast<double>(n))) << p;
  }
}

// Gradients of q, k, v and a learnable bias through the dropped probabilities, by central
// differences in float64; the seed is fixed inside the function so every evaluation
// draws the same mask.
TEST(FlexDropout, Gradcheck) {
  const mf::Tensor q = rnd({1, 2, 6, 4}, 10).requires_grad_();
  const mf::Tensor k = rnd({1, 2, 7, 4}, 11).requires_grad_();
  const mf::Tensor v = rnd({1, 2, 7, 3}, 12).requires_grad_();
  const mf::Tensor slope = rnd({2}, 13).requires_grad_();
  const mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, 6, 7, mf::Device::cpu(), 2);
  auto fn = [&](const mf::TensorList& in) {
    mf::manual_seed(77);
    const mf::Tensor sl = in[3];
    return mf::flex_attention(in[0], in[1], in[2],
                              {.score_mod =
                                   [sl](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor& h,
                                        const mf::Tensor& qi, const mf::Tensor& kv) {
                                     return s + mf::index(sl, {h}) * (qi - kv);
                                   },
                               .block_mask = bm,
                               .dropout_p = 0.4})
        .out;
  };
  const mf::GradcheckResult res = mf::gradcheck(fn, {q, k, v, slope});
  EXPECT_TRUE(res.ok) << res.message;
}

TEST(FlexDropout, BadProbabilityIsAnError) {
  const mf::Tensor q = rnd({1, 1, 3, 4}, 14);
  for (const double p : {-0.1, 1.5})
    mftest::expect_error([&] { (void)mf::flex_attention(q, q, q, {.dropout_p = p}); },
                         {"flex_attention", "dropout_p", "[0, 1]"});
  mftest::expect_error([&] { (void)mf::dropout_keep(mf::zeros({3}), 0.5, 1, 2); },
                       {"dropout_keep", "int64"});
}

TEST(FlexDropout, FakeModeShapes) {
  mf::FakeModeGuard fake;
  const mf::Tensor q = mf::empty({2, 4, 100, 16}), k = mf::empty({2, 4, 90, 16});
  const mf::Tensor out = mf::flex_attention(q, k, k, {.dropout_p = 0.2}).out;
  EXPECT_EQ(out.sizes(), (mf::Shape{2, 4, 100, 16}));
}

}  // namespace
