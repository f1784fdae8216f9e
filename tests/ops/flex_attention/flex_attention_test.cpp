#include <chrono>
#include <cmath>
#include <fstream>
#include <random>

#include "core/fake.h"
#include "ops/flex_attention/flex_attention.h"
#include "ops/flex_attention/flex_reference.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::ScalarMaskMod;
using mftest::ScalarScoreMod;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

mf::Tensor rnd(const mf::Shape& s, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> n(0.0, scale);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
  for (auto& x : v) x = n(gen);
  return mf::from_vector(v, s);
}

// The six classic variants, each as (tensor mask_mod, scalar mask) and
// (tensor score_mod, scalar score_mod).
mf::MaskMod causal() {
  return [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q, const mf::Tensor& kv) {
    return q >= kv;
  };
}
bool causal_s(int64_t, int64_t, int64_t q, int64_t kv) {
  return q >= kv;
}

struct Variant {
  const char* name;
  mf::ScoreMod score_mod;
  ScalarScoreMod score_s;
  mf::MaskMod mask_mod;
  ScalarMaskMod mask_s;
};

std::vector<Variant> variants(int64_t H) {
  std::vector<Variant> v;
  v.push_back({"full", {}, {}, {}, {}});
  v.push_back({"causal", {}, {}, causal(), causal_s});
  v.push_back({"sliding_window",
               {},
               {},
               mf::and_masks(causal(), [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                                          const mf::Tensor& kv) { return (q - kv) <= 20; }),
               [](int64_t, int64_t, int64_t q, int64_t kv) { return q >= kv && q - kv <= 20; }});
  v.push_back({"prefix_lm",
               {},
               {},
               mf::or_masks(causal(), [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor&,
                                         const mf::Tensor& kv) { return kv < 30; }),
               [](int64_t, int64_t, int64_t q, int64_t kv) { return q >= kv || kv < 30; }});
  std::vector<double> slopes;
  for (int64_t i = 0; i < H; ++i) slopes.push_back(std::pow(2.0, -8.0 * (i + 1) / H));
  mf::Tensor slope_t = mf::from_vector(slopes);
  v.push_back(
      {"alibi",
       [slope_t](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor& h, const mf::Tensor& q,
                 const mf::Tensor& kv) { return s + slope_t.index({h}) * (kv - q); },
       [slopes](double s, int64_t, int64_t h, int64_t q, int64_t kv) {
         return s + slopes[h] * static_cast<double>(kv - q);
       },
       causal(), causal_s});
  v.push_back(
      {"softcap",
       [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&, const mf::Tensor&,
          const mf::Tensor&) { return mf::tanh(s / 2.0) * 2.0; },
       [](double s, int64_t, int64_t, int64_t, int64_t) { return 2.0 * std::tanh(s / 2.0); },
       {},
       {}});
  return v;
}

void check_against_reference(const Variant& var, int64_t B, int64_t Hq, int64_t Hkv, int64_t M,
                             int64_t N, int64_t D, int64_t Dv, int64_t block, mf::DType dt,
                             double tol, uint32_t seed) {
  mf::Tensor q = rnd({B, Hq, M, D}, seed), k = rnd({B, Hkv, N, D}, seed + 1),
             v = rnd({B, Hkv, N, Dv}, seed + 2);
  mf::FlexAttentionOptions o;
  o.score_mod = var.score_mod;
  if (var.mask_mod)
    o.block_mask = mf::create_block_mask(var.mask_mod, 1, 1, M, N, mf::Device::cpu(), block);
  o.enable_gqa = Hq != Hkv;
  o.return_lse = true;
  mf::FlexAttentionResult r = mf::flex_attention(q.to(dt), k.to(dt), v.to(dt), o);
  ASSERT_EQ(r.out.sizes(), (mf::Shape{B, Hq, M, Dv}));
  ASSERT_EQ(r.out.dtype(), dt);
  ASSERT_EQ(r.lse.sizes(), (mf::Shape{B, Hq, M}));
  // The reference sees the inputs rounded to dt, so only the working precision differs.
  const mftest::Reference ref = mftest::reference_attention(
      q.to(dt).to(mf::DType::Float64), k.to(dt).to(mf::DType::Float64),
      v.to(dt).to(mf::DType::Float64), 1.0 / std::sqrt(double(D)), var.score_s, var.mask_s);
  mftest::expect_close(r.out.to_vector<double>(), ref.out, tol, tol,
                       std::string(var.name) + " out");
  mftest::expect_close(r.lse.to_vector<double>(), ref.lse, tol, tol,
                       std::string(var.name) + " lse");
}

}  // namespace

// float64: the dense path and the naive reference differ only in summation order.
TEST(FlexAttention, MatchesNaiveReferenceFloat64) {
  for (const Variant& var : variants(2)) {
    SCOPED_TRACE(var.name);
    check_against_reference(var, 2, 2, 2, 97, 130, 7, 7, 32, mf::DType::Float64, 1e-12, 1);
  }
}

// float32 working precision over ~100-term dot products and sums: 2e-5 relative.
TEST(FlexAttention, MatchesNaiveReferenceFloat32OddSizes) {
  for (const Variant& var : variants(4)) {
    SCOPED_TRACE(var.name);
    check_against_reference(var, 1, 4, 2, 75, 59, 59, 13, 16, mf::DType::Float32, 2e-5, 7);
  }
}

// bfloat16 inputs and output: the output is rounded to 8 bits of mantissa (2^-8 relative).
TEST(FlexAttention, Bfloat16OutputRounding) {
  const Variant var = variants(2)[1];
  check_against_reference(var, 1, 2, 2, 40, 40, 16, 16, 16, mf::DType::BFloat16, 1e-2, 3);
}

TEST(FlexAttention, DefaultBlockSizeWithTailsAndMNotN) {
  const Variant var = variants(2)[1];
  check_against_reference(var, 1, 2, 2, 129, 200, 8, 8, 128, mf::DType::Float64, 1e-12, 5);
  check_against_reference(variants(2)[0], 1, 2, 2, 50, 90, 8, 12, 128, mf::DType::Float64, 1e-12,
                          6);
}

TEST(FlexAttention, FullyMaskedRowsGiveZeroAndMinusInf) {
  // Rows q < 3 see no key at all.
  mf::MaskMod mm = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& q,
                      const mf::Tensor& kv) { return (q >= 3) & (kv <= q); };
  mf::Tensor q = rnd({1, 1, 10, 4}, 1), k = rnd({1, 1, 10, 4}, 2), v = rnd({1, 1, 10, 4}, 3);
  mf::FlexAttentionResult r = mf::flex_attention(
      q, k, v,
      {.block_mask = mf::create_block_mask(mm, 1, 1, 10, 10, mf::Device::cpu(), 4),
       .return_lse = true});
  const auto out = r.out.to_vector<double>(), lse = r.lse.to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(lse[i], -kInf);
    for (int e = 0; e < 4; ++e) EXPECT_EQ(out[i * 4 + e], 0.0);
  }
  for (double x : out) EXPECT_FALSE(std::isnan(x));
  // Gradients stay finite too.
  q.requires_grad_();
  mf::flex_attention(q, k, v,
                     {.block_mask = mf::create_block_mask(mm, 1, 1, 10, 10, mf::Device::cpu(), 4)})
      .out.sum()
      .backward();
  for (double x : q.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(x));
}

TEST(FlexAttention, LargeScoresStayFinite) {
  mf::Tensor q = rnd({1, 1, 8, 4}, 1, 100.0).to(mf::DType::Float32);
  mf::Tensor k = rnd({1, 1, 8, 4}, 2, 100.0).to(mf::DType::Float32);
  mf::Tensor v = rnd({1, 1, 8, 4}, 3).to(mf::DType::Float32);
  mf::FlexAttentionResult r = mf::flex_attention(q, k, v, {.return_lse = true});
  for (double x : r.out.to_vector<double>()) EXPECT_TRUE(std::isfinite(x));
  for (double x : r.lse.to_vector<double>()) EXPECT_TRUE(std::isfinite(x));
}

TEST(FlexAttention, GradcheckQKVAndLearnableBias) {
  const int64_t M = 6, N = 7;
  mf::Tensor q = rnd({1, 2, M, 3}, 11), k = rnd({1, 2, N, 3}, 12), v = rnd({1, 2, N, 2}, 13);
  mf::Tensor bias = rnd({M, N}, 14, 0.5);
  mf::Tensor rel = rnd({M + N - 1}, 15, 0.5);
  for (mf::Tensor* t : {&q, &k, &v, &bias, &rel}) t->requires_grad_();
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, M, N, mf::Device::cpu(), 4);
  auto fn = [&](const mf::TensorList& in) {
    mf::Tensor b = in[3], r = in[4];
    mf::ScoreMod sm = [b, r](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                             const mf::Tensor& qi, const mf::Tensor& kv) {
      return s + b.index({qi, kv}) + r.index({qi - kv + (N - 1)});
    };
    return mf::flex_attention(in[0], in[1], in[2], {.score_mod = sm, .block_mask = bm}).out;
  };
  mf::GradcheckResult res = mf::gradcheck(fn, {q, k, v, bias, rel});
  EXPECT_TRUE(res.ok) << res.message;
}

TEST(FlexAttention, GradcheckGqaWithSoftcapAndPerHeadMask) {
  mf::Tensor q = rnd({1, 4, 5, 3}, 21), k = rnd({1, 2, 6, 3}, 22), v = rnd({1, 2, 6, 3}, 23);
  for (mf::Tensor* t : {&q, &k, &v}) t->requires_grad_();
  // A mask that differs per head: head h sees keys kv <= q + h - 2.
  mf::MaskMod mm = [](const mf::Tensor&, const mf::Tensor& h, const mf::Tensor& qi,
                      const mf::Tensor& kv) { return kv <= qi + h - 1; };
  mf::BlockMask bm = mf::create_block_mask(mm, 1, 4, 5, 6, mf::Device::cpu(), 2);
  auto fn = [&](const mf::TensorList& in) {
    return mf::flex_attention(
               in[0], in[1], in[2],
               {.score_mod = [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                                const mf::Tensor&, const mf::Tensor&) { return mf::tanh(s) * 3.0; },
                .block_mask = bm,
                .enable_gqa = true})
        .out;
  };
  mf::GradcheckResult res = mf::gradcheck(fn, {q, k, v});
  EXPECT_TRUE(res.ok) << res.message;
}

TEST(FlexAttention, FakeModeShapes) {
  mf::FakeModeGuard fake;
  mf::Tensor q =
      mf::empty({2, 8, 1000, 64}, {.dtype = mf::DType::BFloat16, .device = mf::Device::cuda()});
  mf::Tensor k =
      mf::empty({2, 2, 1500, 64}, {.dtype = mf::DType::BFloat16, .device = mf::Device::cuda()});
  mf::Tensor v =
      mf::empty({2, 2, 1500, 32}, {.dtype = mf::DType::BFloat16, .device = mf::Device::cuda()});
  mf::FlexAttentionResult r = mf::flex_attention(q, k, v, {.enable_gqa = true, .return_lse = true});
  EXPECT_TRUE(r.out.is_fake());
  EXPECT_EQ(r.out.sizes(), (mf::Shape{2, 8, 1000, 32}));
  EXPECT_EQ(r.out.dtype(), mf::DType::BFloat16);
  EXPECT_EQ(r.lse.sizes(), (mf::Shape{2, 8, 1000}));
  EXPECT_EQ(r.lse.dtype(), mf::DType::Float32);
}

TEST(FlexAttention, FakeModeBackward) {
  mf::FakeModeGuard fake;
  mf::Tensor q = mf::empty({1, 2, 16, 8}, {.dtype = mf::DType::Float32});
  q.requires_grad_();
  mf::Tensor kv = mf::empty({1, 2, 16, 8}, {.dtype = mf::DType::Float32});
  mf::flex_attention(q, kv, kv).out.sum().backward();
  EXPECT_TRUE(q.grad().is_fake());
  EXPECT_EQ(q.grad().sizes(), (mf::Shape{1, 2, 16, 8}));
}

TEST(FlexAttention, TracingGoldenGraph) {
  mf::Tensor slopes = mf::from_vector<double>({0.5, 0.25});
  auto fn = [&](const mf::TensorList& in) {
    mf::ScoreMod alibi = [&](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor& h,
                             const mf::Tensor& q,
                             const mf::Tensor& kv) { return s + slopes.index({h}) * (kv - q); };
    return mf::TensorList{mf::flex_attention(in[0], in[1], in[2], {.score_mod = alibi}).out};
  };
  mf::Tensor q = rnd({1, 2, 4, 3}, 1), k = rnd({1, 2, 5, 3}, 2), v = rnd({1, 2, 5, 3}, 3);
  mf::graph::GraphModule gm = mf::graph::trace(fn, {q, k, v});
  const std::string s = gm.to_string();
  EXPECT_NE(s.find("= flex_attention(%0, %1, %2, %3, scale="), std::string::npos) << s;
  EXPECT_NE(s.find("score_mod = graph(%0: f64[], %1: i32[], %2: i32[], %3: i32[], %4: i32[], "
                   "%5: f64[2]):"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("index(%5, %2)"), std::string::npos) << s;
  EXPECT_NE(s.find("mask_mod = graph("), std::string::npos) << s;
  // The graph runs and gives the eager numbers on fresh inputs.
  mf::Tensor q2 = rnd({1, 2, 4, 3}, 7), k2 = rnd({1, 2, 5, 3}, 8), v2 = rnd({1, 2, 5, 3}, 9);
  mftest::expect_close(gm.run({q2, k2, v2})[0], fn({q2, k2, v2})[0], 1e-14, 1e-14);
}

TEST(FlexAttention, MutatingScoreModIsRejected) {
  mf::Tensor counter = mf::zeros({1}, {.dtype = mf::DType::Float64});
  mf::ScoreMod bad = [&](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                         const mf::Tensor&, const mf::Tensor&) {
    counter.add_(mf::ones({1}, {.dtype = mf::DType::Float64}));
    return s;
  };
  mf::Tensor q = rnd({1, 1, 4, 2}, 1);
  mftest::expect_error([&] { mf::flex_attention(q, q, q, {.score_mod = bad}); },
                       {"Mutations detected in score_mod"});
}

TEST(FlexAttention, BadInputErrors) {
  mf::Tensor q = rnd({2, 4, 8, 16}, 1), k = rnd({2, 4, 8, 16}, 2);
  mftest::expect_error(
      [&] {
        mf::flex_attention(q, rnd({3, 4, 8, 16}, 1), rnd({3, 4, 8, 16}, 1));
      },
      {"flex_attention: batch sizes differ", "[2, 4, 8, 16]", "[3, 4, 8, 16]"});
  mftest::expect_error(
      [&] {
        mf::flex_attention(q, rnd({2, 2, 8, 16}, 1), rnd({2, 2, 8, 16}, 1));
      },
      {"4 heads", "2", "enable_gqa"});
  mftest::expect_error(
      [&] {
        mf::flex_attention(q, rnd({2, 3, 8, 16}, 1), rnd({2, 3, 8, 16}, 1), {.enable_gqa = true});
      },
      {"multiple", "4", "3"});
  mftest::expect_error(
      [&] {
        mf::flex_attention(q, rnd({2, 4, 8, 8}, 1), rnd({2, 4, 8, 16}, 1));
      },
      {"head dim D = 16", "8"});
  mftest::expect_error([&] { mf::flex_attention(q, k.to(mf::DType::Float32), k); },
                       {"one dtype", "float64", "float32"});
  mftest::expect_error([&] { mf::flex_attention(q.flatten(0, 1), k, k); },
                       {"q must be 4-D", "[8, 8, 16]"});
  mf::BlockMask bm = mf::create_block_mask(causal(), 1, 1, 256, 256);
  mftest::expect_error(
      [&] {
        mf::flex_attention(rnd({1, 1, 200, 4}, 1), rnd({1, 1, 300, 4}, 1), rnd({1, 1, 300, 4}, 1),
                           {.block_mask = bm});
      },
      {"BlockMask built for 256x256, inputs are 200x300"});
  mf::ScoreMod wrong_shape = [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                                const mf::Tensor&, const mf::Tensor&) { return s.sum(); };
  mftest::expect_error([&] { mf::flex_attention(q, k, k, {.score_mod = wrong_shape}); },
                       {"score_mod must be pointwise", "sum"});
  mf::ScoreMod to_vector = [](const mf::Tensor& s, const mf::Tensor&, const mf::Tensor&,
                              const mf::Tensor&, const mf::Tensor&) {
    return s + mf::ones({3}, {.dtype = mf::DType::Float64});
  };
  mftest::expect_error([&] { mf::flex_attention(q, k, k, {.score_mod = to_vector}); },
                       {"score_mod must return one value per score element", "[3]"});
  mf::MaskMod not_bool = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& qi,
                            const mf::Tensor& kv) { return qi - kv; };
  mftest::expect_error([&] { mf::create_block_mask(not_bool, 1, 1, 8, 8); },
                       {"mask_mod must return a bool tensor", "int32"});
}
