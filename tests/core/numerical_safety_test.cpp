// Numerical safety of the normalised-exponential family: softmax, log_softmax,
// logsumexp, cross_entropy and flex_attention stay finite (values and gradients) for
// scores of +-1e4 in float32 and +-60000 in float16, where a naive exp overflows, and
// give the documented values for fully masked rows.
#include <cmath>
#include <limits>
#include <vector>

#include "test_util.h"

namespace mf = microflex;
using mf::DType;
using mf::Tensor;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Rows [B=3, C=5] of extreme scores: mixed signs, all equal and huge, one dominant.
Tensor extreme_scores(double big, DType dt) {
  const std::vector<double> v = {big,  -big, 0.0, big / 2, -big / 2,  //
                                 big,  big,  big, big,     big,       //
                                 -big, -big, big, -big,    -big};
  return mf::from_vector(v, {3, 5}).to(dt);
}

void expect_all_finite(const Tensor& t, const std::string& what) {
  ASSERT_TRUE(t.defined()) << what;
  for (double v : t.to_vector<double>()) ASSERT_TRUE(std::isfinite(v)) << what << ": " << v;
}

// float64 log_softmax over the rows of an [R, C] tensor.
std::vector<double> ref_log_softmax(const Tensor& x) {
  const std::vector<double> v = x.to(DType::Float64).to_vector<double>();
  const int64_t R = x.size(0), C = x.size(1);
  std::vector<double> out(v.size());
  for (int64_t r = 0; r < R; ++r) {
    double m = -kInf, s = 0;
    for (int64_t c = 0; c < C; ++c) m = std::max(m, v[r * C + c]);
    for (int64_t c = 0; c < C; ++c) s += std::exp(v[r * C + c] - m);
    for (int64_t c = 0; c < C; ++c) out[r * C + c] = v[r * C + c] - m - std::log(s);
  }
  return out;
}

// Where the exact value fits the dtype the result is finite and close (float16: 2e-3
// relative, a few ulps; float32: 1e-5); where it does not (|v| > 65504 in float16) the
// result is the correctly signed infinity. Never NaN.
void expect_like_reference(const Tensor& t, const std::vector<double>& ref, double max_finite,
                           double rtol, const std::string& what) {
  const std::vector<double> v = t.to_vector<double>();
  ASSERT_EQ(v.size(), ref.size()) << what;
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_FALSE(std::isnan(v[i])) << what << " element " << i;
    if (std::abs(ref[i]) > max_finite) {
      EXPECT_EQ(v[i], std::copysign(kInf, ref[i])) << what << " element " << i;
    } else {
      ASSERT_TRUE(std::isfinite(v[i])) << what << " element " << i << ": " << v[i];
      EXPECT_NEAR(v[i], ref[i], 1e-2 + rtol * std::abs(ref[i])) << what << " element " << i;
    }
  }
}

struct Case {
  double big;
  DType dt;
  double max_finite;  // the dtype's largest finite value
  double rtol;
};

const Case kCases[] = {{1e4, DType::Float32, 3.4e38, 1e-5},
                       {60000.0, DType::Float16, 65504.0, 2e-3}};

}  // namespace

TEST(NumericalSafety, SoftmaxFamilyExtremeScores) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(mf::dtype_name(c.dt));
    Tensor x = extreme_scores(c.big, c.dt).requires_grad_();
    Tensor p = mf::softmax(x, 1);
    expect_all_finite(p, "softmax");
    // Row sums are 1 (float16 resolution: 1e-3); the dominant entry gets all the mass.
    for (double s : p.to(DType::Float64).sum({1}).to_vector<double>()) EXPECT_NEAR(s, 1.0, 1e-3);
    EXPECT_NEAR(p.to_vector<double>()[12], 1.0, 1e-3);
    Tensor lp = mf::log_softmax(x, 1);
    // Row 0 spans 2 * big: in float16 its smallest log-probability, -120000, overflows.
    expect_like_reference(lp, ref_log_softmax(x), c.max_finite, c.rtol, "log_softmax");
    Tensor lse = mf::logsumexp(x, {1});
    expect_all_finite(lse, "logsumexp");
    // logsumexp of a row of five equal values b is b + log(5) (float16 spacing at 6e4: 32).
    EXPECT_NEAR(lse.to_vector<double>()[1], c.big + std::log(5.0),
                c.dt == DType::Float16 ? 32 : 1e-2);

    // The gradient of log_softmax is finite even where its value overflowed.
    Tensor w = mf::linspace(-1, 1, 15).reshape({3, 5}).to(c.dt);
    (mf::sum(p * w) + mf::sum(mf::where(lp > -kInf, lp, 0.0) * w) + mf::sum(lse)).backward();
    expect_all_finite(x.grad(), "softmax/log_softmax/logsumexp gradient");
  }
}

TEST(NumericalSafety, CrossEntropyExtremeLogits) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(mf::dtype_name(c.dt));
    Tensor x = extreme_scores(c.big, c.dt).requires_grad_();
    // Row losses of about big / 2, log(5) and 0: large, but representable in the dtype.
    Tensor target = mf::from_vector<int64_t>({3, 0, 2});
    for (const char* red : {"mean", "sum", "none"}) {
      Tensor loss = mf::cross_entropy(x, target, -100, red, 0.1);
      expect_all_finite(loss, std::string("cross_entropy ") + red);
    }
    const std::vector<double> lp = ref_log_softmax(x);
    const std::vector<double> ref = {-lp[3], -lp[5], -lp[12]};
    expect_like_reference(mf::cross_entropy(x, target, -100, "none"), ref, c.max_finite, c.rtol,
                          "cross_entropy none");
    Tensor loss = mf::cross_entropy(x, target);
    EXPECT_NEAR(loss.item<double>(), (ref[0] + ref[1] + ref[2]) / 3, 1e-2 + c.rtol * c.big);
    loss.backward();
    expect_all_finite(x.grad(), "cross_entropy gradient");
  }
}

TEST(NumericalSafety, FullyMaskedRows) {
  for (DType dt : {DType::Float32, DType::Float16}) {
    SCOPED_TRACE(mf::dtype_name(dt));
    // Row 1 is all -inf: softmax gives 0s, log_softmax and logsumexp -inf, no NaN.
    Tensor x = mf::from_vector<double>({1, 2, 3, -kInf, -kInf, -kInf}, {2, 3}).to(dt);
    x.requires_grad_();
    Tensor p = mf::softmax(x, 1);
    expect_all_finite(p, "softmax of a masked row");
    EXPECT_EQ(p.to_vector<double>()[3], 0.0);
    const std::vector<double> lp = mf::log_softmax(x, 1).to_vector<double>();
    const std::vector<double> lse = mf::logsumexp(x, {1}).to_vector<double>();
    EXPECT_EQ(lp[4], -kInf);
    EXPECT_EQ(lse[1], -kInf);
    for (double v : lp) EXPECT_FALSE(std::isnan(v));
    mf::sum(p * mf::ones({2, 3}, {.dtype = dt})).backward();
    expect_all_finite(x.grad(), "softmax gradient with a masked row");
    x.zero_grad();
    mf::sum(mf::logsumexp(x, {1}).slice(0, 0, 1)).backward();
    expect_all_finite(x.grad(), "logsumexp gradient with a masked row");
  }
}

TEST(NumericalSafety, CrossEntropyAllRowsIgnored) {
  // Every row ignored: "sum" and "none" are 0, "mean" is NaN (0 / 0, as in PyTorch).
  Tensor x = extreme_scores(1e4, DType::Float32);
  Tensor target = mf::from_vector<int64_t>({-100, -100, -100});
  EXPECT_EQ(mf::cross_entropy(x, target, -100, "sum").item<double>(), 0.0);
  expect_all_finite(mf::cross_entropy(x, target, -100, "none"), "ignored rows");
  EXPECT_TRUE(std::isnan(mf::cross_entropy(x, target).item<double>()));
}

TEST(NumericalSafety, FlexAttentionExtremeScoresAndMaskedRows) {
  // q . k = +-4 * 120 * 125 = +-60000 with scale 1: scores at the edge of float16.
  for (const Case& c : kCases) {
    SCOPED_TRACE(mf::dtype_name(c.dt));
    const double qv = c.dt == DType::Float16 ? 120.0 : 50.0;
    const double kv = c.big / (4 * qv);
    std::vector<double> q(1 * 2 * 3 * 4), k(1 * 2 * 5 * 4), v(1 * 2 * 5 * 4);
    for (size_t i = 0; i < q.size(); ++i) q[i] = (i / 4) % 2 ? -qv : qv;
    for (size_t i = 0; i < k.size(); ++i) k[i] = ((i / 4) % 3 == 0 ? -kv : kv);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * static_cast<double>(i % 7) - 0.5;
    Tensor Q = mf::from_vector(q, {1, 2, 3, 4}).to(c.dt).requires_grad_();
    Tensor K = mf::from_vector(k, {1, 2, 5, 4}).to(c.dt).requires_grad_();
    Tensor V = mf::from_vector(v, {1, 2, 5, 4}).to(c.dt).requires_grad_();
    // Query 1 of every head sees no key: a fully masked row.
    mf::MaskMod mask = [](const Tensor&, const Tensor&, const Tensor& qi, const Tensor&) {
      return qi != 1;
    };
    mf::FlexAttentionResult r = mf::flex_attention(
        Q, K, V,
        {.block_mask = mf::create_block_mask(mask, 1, 1, 3, 5, mf::Device::cpu(), 2),
         .scale = 1.0,
         .return_lse = true});
    expect_all_finite(r.out, "flex_attention out");
    const std::vector<double> out = r.out.to_vector<double>();
    for (int64_t d = 0; d < 4; ++d) EXPECT_EQ(out[4 + d], 0.0);  // the masked row is 0
    const std::vector<double> lse = r.lse.to_vector<double>();
    for (size_t i = 0; i < lse.size(); ++i) {
      if (i % 3 == 1)
        EXPECT_EQ(lse[i], -kInf);
      else
        EXPECT_TRUE(std::isfinite(lse[i])) << i;
    }
    mf::sum(r.out.to(DType::Float32)).backward();
    expect_all_finite(Q.grad(), "flex_attention dq");
    expect_all_finite(K.grad(), "flex_attention dk");
    expect_all_finite(V.grad(), "flex_attention dv");
  }
}
