// The generated backward of score_mod (Note [Generated score_mod backward] in
// ops/flex_attention/codegen.h): golden strings for the classic mods, the gradient
// scatters into captured tensors, the derivative conventions, and the errors.
#include "microflex/microflex.h"
#include "ops/flex_attention/codegen.h"
#include "ops/flex_attention/flex_attention.h"
#include "test_util.h"

namespace mf = microflex;
namespace cg = microflex::flex_codegen;

namespace {

using T = mf::Tensor;

std::string bwd_src(const mf::ScoreMod& f, const std::vector<bool>& needs_grad = {}) {
  return cg::generate_score_mod_backward(
      mf::trace_score_mod(f, mf::DType::Float32, mf::Device::cpu()).graph(), needs_grad);
}

T f32(std::vector<double> v, mf::Shape shape) {
  return mf::from_vector(v, shape, {.dtype = mf::DType::Float32});
}

// Mods shared by the golden tests.
T slopes() {
  return f32({0.5, 0.25, 0.125, 0.0625}, {4});
}
T bias() {
  std::vector<double> v(2 * 3 * 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1 * static_cast<double>(i) - 1.0;
  return f32(v, {2, 3, 4});
}

// The mods compute one operand per statement so that the order of the graph's nodes (and
// so the value ids in the goldens) does not depend on the compiler's evaluation order.
mf::ScoreMod alibi(const T& slope) {
  return [slope](const T& s, const T&, const T& h, const T& q, const T& kv) {
    const T m = slope.index({h});
    const T d = q - kv;
    return s + m * d;
  };
}
mf::ScoreMod biased(const T& b) {
  return [b](const T& s, const T&, const T& h, const T& q, const T& kv) {
    return s + b.index({h, q, kv});
  };
}
mf::ScoreMod softcap() {
  return
      [](const T& s, const T&, const T&, const T&, const T&) { return mf::tanh(s / 30.0) * 30.0; };
}
// maximum (ties split the gradient), relu (0 at 0) and where (the chosen branch).
mf::ScoreMod where_mod() {
  return [](const T& s, const T&, const T&, const T& q, const T& kv) {
    const T causal = q >= kv;
    const T half = s * 0.5;
    const T big = mf::maximum(s, half);
    const T small = mf::relu(-s);
    return mf::where(causal, big, small);
  };
}

const char* const kIdentity =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  return grad;
}
)";
const char* const kAlibi =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o7);
  const int v8 = q - kv;
  const float v11 = grad * static_cast<float>(v8);
  if (k7) mf_grad_add(gcap, 0, o7, v11);
  return grad;
}
)";
const char* const kSoftcap =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  const float v7 = score / 30.0f;
  const float v8 = tanhf(v7);
  const float v11 = grad * 30.0f;
  const float v12 = v8 * v8;
  const float v14 = 1.0f - v12;
  const float v15 = v11 * v14;
  const float v16 = v15 / 30.0f;
  return v16;
}
)";
const char* const kBias =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o7) && mf_index_dim(cap, 0, 1, static_cast<long long>(q), o7) && mf_index_dim(cap, 0, 2, static_cast<long long>(kv), o7);
  if (k7) mf_grad_add(gcap, 0, o7, grad);
  return grad;
}
)";
const char* const kWhere =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  const bool v6 = q >= kv;
  const float v8 = score * 0.5f;
  const float v10 = -score;
  const float v11 = (v10 < 0 ? static_cast<float>(0) : v10);
  const float v14 = v6 ? grad : 0.0f;
  const float v16 = v6 ? 0.0f : grad;
  const bool v18 = v11 > 0.0f;
  const float v20 = v18 ? v16 : 0.0f;
  const float v21 = -v20;
  const bool v22 = score == v8;
  const float v24 = v14 * 0.5f;
  const bool v25 = score > v8;
  const float v27 = v25 ? v14 : 0.0f;
  const float v28 = v22 ? v24 : v27;
  const bool v29 = v8 > score;
  const float v31 = v29 ? v14 : 0.0f;
  const float v32 = v22 ? v24 : v31;
  const float v33 = v21 + v28;
  const float v34 = v32 * 0.5f;
  const float v35 = v33 + v34;
  return v35;
}
)";
const char* const kScaleNoGrad =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o7);
  const float v7 = k7 ? static_cast<const float*>(cap.t[0].data)[o7] : 0.0f;
  const float v9 = grad * v7;
  return v9;
}
)";
const char* const kPowAbsClamp =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  const float v6 = mf_abs(score);
  const bool v12 = score >= (-1.0f);
  const bool v14 = score <= 1.0f;
  const bool v15 = v12 && v14;
  const float v17 = v15 ? grad : 0.0f;
  const float v18 = 1.5f;
  const float v20 = v18 - 1.0f;
  const float v21 = powf(v6, v20);
  const float v22 = v18 * v21;
  const float v23 = grad * v22;
  const bool v25 = v18 == 0.0f;
  const float v27 = v25 ? 0.0f : v23;
  const float v28 = static_cast<float>((score > 0) - (score < 0));
  const float v29 = v27 * v28;
  const float v30 = v17 + v29;
  return v30;
}
)";
const char* const kTwoBiases =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o8 = 0;
  const bool k8 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o8) && mf_index_dim(cap, 0, 1, static_cast<long long>(q), o8) && mf_index_dim(cap, 0, 2, static_cast<long long>(kv), o8);
  const float v8 = k8 ? static_cast<const float*>(cap.t[0].data)[o8] : 0.0f;
  long long o10 = 0;
  const bool k10 = mf_index_dim(cap, 1, 0, static_cast<long long>(h), o10) && mf_index_dim(cap, 1, 1, static_cast<long long>(q), o10) && mf_index_dim(cap, 1, 2, static_cast<long long>(kv), o10);
  if (k10) mf_grad_add(gcap, 1, o10, grad);
  const float v13 = grad * v8;
  const float v14 = grad * score;
  if (k8) mf_grad_add(gcap, 0, o8, v14);
  return v13;
}
)";
const char* const kMixedDtypes =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o8 = 0;
  const bool k8 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o8) && mf_index_dim(cap, 0, 1, static_cast<long long>(q), o8) && mf_index_dim(cap, 0, 2, static_cast<long long>(kv), o8);
  const float v8 = mf_round_bf16(k8 ? mf_load_bf16(cap.t[0].data, o8) : 0.0f);
  long long o10 = 0;
  const bool k10 = mf_index_dim(cap, 1, 0, static_cast<long long>(h), o10);
  const int v11 = q - kv;
  const double v15 = static_cast<double>(grad);
  const float v16 = static_cast<float>(v15);
  const double v17 = v15 * static_cast<double>(v11);
  if (k10) mf_grad_add(gcap, 1, o10, static_cast<float>(v17));
  const float v19 = v16 * v8;
  const float v20 = v16 * score;
  const float v21 = mf_round_bf16(mf_round_bf16(static_cast<float>(v20)));
  if (k8) mf_grad_add(gcap, 0, o8, v21);
  return v19;
}
)";
const char* const kNoScore =
    R"(__device__ __forceinline__ float score_mod_backward(float score, int b, int h, int q, int kv,
                                                    const FlexCaptured& cap, float grad,
                                                    const FlexCapturedGrad& gcap) {
  long long o7 = 0;
  const bool k7 = mf_index_dim(cap, 0, 0, static_cast<long long>(h), o7) && mf_index_dim(cap, 0, 1, static_cast<long long>(q), o7) && mf_index_dim(cap, 0, 2, static_cast<long long>(kv), o7);
  if (k7) mf_grad_add(gcap, 0, o7, grad);
  const float v13 = grad * 2.0f;
  if (k7) mf_grad_add(gcap, 0, o7, v13);
  return 0.0f;
}
)";

// score_mod = score: the gradient passes through.
TEST(FlexCodegenBackward, Identity) {
  EXPECT_EQ(bwd_src([](const T& s, const T&, const T&, const T&, const T&) { return s; }),
            kIdentity);
}

// A learnable ALiBi slope: d/dscore = grad; d/dslope[h] = grad * (q - kv), added at the
// forward's offset only when h was in range.
TEST(FlexCodegenBackward, Alibi) {
  EXPECT_EQ(bwd_src(alibi(slopes()), {true}), kAlibi);
}

// The same mod with a frozen slope: no accumulation code, and the slope is not even read.
TEST(FlexCodegenBackward, AlibiFrozenSlope) {
  const std::string src = bwd_src(alibi(slopes()), {false});
  EXPECT_EQ(src, kIdentity);
  EXPECT_EQ(src.find("mf_grad_add"), std::string::npos);
}

// tanh's registered derivative 1 - y^2, through the two scalings.
TEST(FlexCodegenBackward, Softcap) {
  EXPECT_EQ(bwd_src(softcap()), kSoftcap);
}

// A full [H, M, N]-style learnable bias: only the offset is computed, no load.
TEST(FlexCodegenBackward, LearnableBias) {
  EXPECT_EQ(bwd_src(biased(bias()), {true}), kBias);
}

// where routes grad to the chosen branch; maximum's tie (score == score / 2 at 0) gives
// each side half, as its registered backward does; relu' is 0 at 0 (y > 0).
TEST(FlexCodegenBackward, WhereMaximumRelu) {
  EXPECT_EQ(bwd_src(where_mod()), kWhere);
}

// A captured tensor that needs no grad but enters the derivative: read, never accumulated.
TEST(FlexCodegenBackward, CapturedWithoutGrad) {
  T scale = f32({2.0, 3.0}, {2});
  const std::string src = bwd_src([scale](const T& s, const T&, const T& h, const T&,
                                          const T&) { return s * scale.index({h}); },
                                  {false});
  EXPECT_EQ(src, kScaleNoGrad);
  EXPECT_EQ(src.find("mf_grad_add"), std::string::npos);
}

// pow's guard for a zero exponent, abs' = sign (0 at 0), clamp's inclusive bounds.
TEST(FlexCodegenBackward, PowAbsClamp) {
  EXPECT_EQ(bwd_src([](const T& s, const T&, const T&, const T&, const T&) {
              const T p = mf::pow(mf::abs(s), 1.5);
              const T c = mf::clamp(s, -1.0, 1.0);
              return p + c;
            }),
            kPowAbsClamp);
}

// Two captured tensors of one shape read at the same indices: each scatter goes to its
// own slot (the multiplier's slot gets grad * score, the shift's slot gets grad).
TEST(FlexCodegenBackward, TwoCapturedSameIndices) {
  T b1 = bias(), b2 = bias();
  EXPECT_EQ(bwd_src(
                [b1, b2](const T& s, const T&, const T& h, const T& q, const T& kv) {
                  const T scaled = s * b1.index({h, q, kv});
                  const T shift = b2.index({h, q, kv});
                  return scaled + shift;
                },
                {true, true}),
            kTwoBiases);
}

// A bfloat16 bias and a float64 slope: the engine's dtype conversions (and bfloat16
// rounding) are part of the graph; scatters add float32.
TEST(FlexCodegenBackward, MixedDtypes) {
  T dsl = mf::from_vector(std::vector<double>{0.5, 0.25});
  T hb = bias().to(mf::DType::BFloat16);
  EXPECT_EQ(bwd_src(
                [dsl, hb](const T& s, const T&, const T& h, const T& q, const T& kv) {
                  const T scaled = s * hb.index({h, q, kv});
                  const T m = dsl.index({h});
                  const T d = q - kv;
                  return scaled + m * d;
                },
                {true, true}),
            kMixedDtypes);
}

// A mod that ignores the score: its gradient is 0; a tensor read twice gets two scatters.
TEST(FlexCodegenBackward, ScoreUnused) {
  T b = bias();
  EXPECT_EQ(bwd_src(
                [b](const T&, const T&, const T& h, const T& q, const T& kv) {
                  const T twice = b.index({h, q, kv}) * 2.0;
                  const T once = b.index({h, q, kv});
                  return twice + once;
                },
                {true}),
            kNoScore);
  // Nothing needs a gradient at all: no code but the zero.
  const std::string frozen = bwd_src(
      [b](const T&, const T&, const T& h, const T& q, const T& kv) {
        return b.index({h, q, kv});
      },
      {false});
  const std::string sig = std::string(kIdentity).substr(0, std::string(kIdentity).find("  return"));
  EXPECT_EQ(frozen, sig + "  return 0.0f;\n}\n");
}

TEST(FlexCodegenBackward, Errors) {
  // An op the generator has no code for.
  mftest::expect_error(
      [] {
        bwd_src([](const T& s, const T&, const T&, const T&, const T&) { return mf::gelu(s); });
      },
      {"flex_attention: cannot generate the GPU backward of op 'gelu' in score_mod",
       "use the dense path"});
  // An op without a registered derivative on the score's path.
  mftest::expect_error(
      [] {
        bwd_src([](const T& s, const T&, const T&, const T&, const T&) {
          static const mf::OpDef& gb = mf::op_named("gelu_backward");
          return mf::call_op1(gb, {s, s}, {{"approximate", std::string("none")}});
        });
      },
      {"cannot generate the GPU backward of op 'gelu_backward' in score_mod", "no derivative",
       "dense path"});
  // One flag per captured tensor.
  mftest::expect_error([] { bwd_src(alibi(slopes()), {}); },
                       {"score_mod captures 1 tensors", "0 needs-grad flags"});
  // Integer captured tensors cannot need a gradient.
  T idx = mf::from_vector(std::vector<int64_t>{0, 1}, {2}, {.dtype = mf::DType::Int32});
  mftest::expect_error(
      [idx] {
        bwd_src([idx](const T& s, const T&, const T& h, const T&,
                      const T&) { return s + idx.index({h}); },
                {true});
      },
      {"captured tensor 0 of score_mod is int32", "only floating tensors"});
}

}  // namespace
