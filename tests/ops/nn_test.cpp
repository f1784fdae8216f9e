// nn ops against float64 references written with explicit loops: cross_entropy (every
// reduction, ignore_index, label smoothing), layer_norm and rms_norm (97 features, 5 rows),
// dropout; every floating dtype, non-contiguous inputs, gradcheck and errors.
#include <cmath>
#include <limits>
#include <random>

#include "test_util.h"

namespace mf = microflex;

namespace {

// from_vector with the dtype of the values spelled out (its default options say float32).
mf::Tensor f64(const std::vector<double>& v, const mf::Shape& s) {
  return mf::from_vector(v, s, {.dtype = mf::DType::Float64});
}
mf::Tensor i64(const std::vector<int64_t>& v, const mf::Shape& s) {
  return mf::from_vector(v, s, {.dtype = mf::DType::Int64});
}
mf::Tensor i64(const std::vector<int64_t>& v) {
  return i64(v, {static_cast<int64_t>(v.size())});
}

std::vector<double> normal_values(int64_t n, uint32_t seed, double scale = 1.0,
                                  double shift = 0.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(shift, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

mf::Tensor normal_tensor(const mf::Shape& s, uint32_t seed, double scale = 1.0,
                         double shift = 0.0) {
  return f64(normal_values(mf::shape_numel(s), seed, scale, shift), s);
}

// Class indices in [0, c), with the rows in `ignored` set to ignore_index.
mf::Tensor targets(int64_t n, int64_t c, uint32_t seed, const std::vector<int64_t>& ignored = {},
                   int64_t ignore_index = -100) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(0, c - 1);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t& t : v) t = dist(gen);
  for (int64_t i : ignored) v[static_cast<size_t>(i)] = ignore_index;
  return i64(v, {n});
}

// ---- references ----

// Per-row losses (0 on ignored rows) and the non-ignored count, for logits (N, C).
std::vector<double> ce_rows(const std::vector<double>& x, const std::vector<int64_t>& t, int64_t n,
                            int64_t c, int64_t ignore_index, double smoothing, int64_t* count) {
  std::vector<double> rows(static_cast<size_t>(n), 0.0);
  *count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    ++*count;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < c; ++j) mx = std::max(mx, x[i * c + j]);
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(x[i * c + j] - mx);
    const double lse = mx + std::log(s);
    double loss = 0;
    for (int64_t j = 0; j < c; ++j) {
      const double q = (j == t[i] ? 1.0 - smoothing : 0.0) + smoothing / static_cast<double>(c);
      loss += q * (lse - x[i * c + j]);  // -q_j * log_softmax_j
    }
    rows[i] = loss;
  }
  return rows;
}

std::vector<double> ce_reference(const mf::Tensor& logits, const mf::Tensor& target,
                                 int64_t ignore_index, const std::string& reduction,
                                 double smoothing) {
  const int64_t c = logits.size(-1);
  const int64_t n = logits.dim() == 2 ? logits.size(0) : 1;
  int64_t count;
  const std::vector<double> rows = ce_rows(logits.to_vector<double>(), target.to_vector<int64_t>(),
                                           n, c, ignore_index, smoothing, &count);
  if (reduction == "none") return rows;
  double s = 0;
  for (double r : rows) s += r;
  return {reduction == "mean" ? s / static_cast<double>(count) : s};
}

// layer_norm (weight/bias may be empty) or, with `rms`, rms_norm, over rows of d features.
std::vector<double> norm_reference(const std::vector<double>& x, int64_t d,
                                   const std::vector<double>& w, const std::vector<double>& b,
                                   double eps, bool rms) {
  std::vector<double> out(x.size());
  const int64_t m = static_cast<int64_t>(x.size()) / d;
  for (int64_t i = 0; i < m; ++i) {
    double mean = 0;
    if (!rms) {
      for (int64_t j = 0; j < d; ++j) mean += x[i * d + j];
      mean /= static_cast<double>(d);
    }
    double var = 0;
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mean) * (x[i * d + j] - mean);
    var /= static_cast<double>(d);
    const double r = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < d; ++j) {
      double y = (x[i * d + j] - mean) * r;
      if (!w.empty()) y *= w[j];
      if (!b.empty()) y += b[j];
      out[i * d + j] = y;
    }
  }
  return out;
}

struct DTypeTol {
  mf::DType dtype;
  double atol, rtol;
};

void expect_gradcheck(const std::function<mf::Tensor(const mf::TensorList&)>& fn,
                      const mf::TensorList& inputs, const std::string& what) {
  const mf::GradcheckResult r = mf::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

}  // namespace

// ---- cross_entropy ----

TEST(NNCrossEntropy, Float64AllReductions) {
  const int64_t n = 5, c = 97;
  const mf::Tensor x = normal_tensor({n, c}, 1, 3.0);
  for (double smoothing : {0.0, 0.1}) {
    for (const std::string red : {"mean", "sum", "none"}) {
      const mf::Tensor t = targets(n, c, 2, {2});  // row 2 ignored
      const mf::Tensor loss = mf::cross_entropy(x, t, -100, red, smoothing);
      EXPECT_EQ(loss.dtype(), mf::DType::Float64);
      EXPECT_EQ(loss.sizes(), red == "none" ? mf::Shape{n} : mf::Shape{});
      // float64 throughout: only rounding of sums of 97 terms, ~1e-14 relative.
      mftest::expect_close(loss.to_vector<double>(), ce_reference(x, t, -100, red, smoothing),
                           1e-12, 1e-12, red + " smoothing " + std::to_string(smoothing));
    }
  }
}

TEST(NNCrossEntropy, IgnoreIndexInt32TargetsAndOneRow) {
  const int64_t n = 5, c = 7;
  const mf::Tensor x = normal_tensor({n, c}, 3);
  // A custom ignore_index that is also a valid class: rows with target 3 drop out.
  const mf::Tensor t = i64({3, 0, 6, 3, 1}, {n});
  for (const std::string red : {"mean", "sum", "none"}) {
    mftest::expect_close(mf::cross_entropy(x, t, 3, red, 0.2).to_vector<double>(),
                         ce_reference(x, t, 3, red, 0.2), 1e-12, 1e-12, red);
    // int32 targets give the same numbers.
    mftest::expect_close(mf::cross_entropy(x, t.to(mf::DType::Int32), 3, red, 0.2),
                         mf::cross_entropy(x, t, 3, red, 0.2), 0, 0, red + " int32");
  }
  // logits (C) with a 0-d target.
  const mf::Tensor row = x.select(0, 1);
  const mf::Tensor t0 = mf::scalar_tensor(4, {.dtype = mf::DType::Int64});
  for (const std::string red : {"mean", "sum", "none"}) {
    const mf::Tensor l = mf::cross_entropy(row, t0, -100, red);
    EXPECT_EQ(l.sizes(), mf::Shape{});
    mftest::expect_close(l.to_vector<double>(), ce_reference(row, t0, -100, "none", 0.0), 1e-12,
                         1e-12, "1-d " + red);
  }
}

// Every target ignored: "mean" divides 0 by 0 and gives NaN as PyTorch does; "sum" is 0;
// the gradient is zero either way.
TEST(NNCrossEntropy, AllIgnored) {
  mf::Tensor x = normal_tensor({3, 4}, 4);
  x.requires_grad_();
  const mf::Tensor t = i64({-100, -100, -100}, {3});
  const mf::Tensor mean = mf::cross_entropy(x, t);
  EXPECT_TRUE(std::isnan(mean.item<double>()));
  EXPECT_EQ(mf::cross_entropy(x, t, -100, "sum").item<double>(), 0.0);
  mean.backward();
  for (double g : x.grad().to_vector<double>()) EXPECT_EQ(g, 0.0);
}

TEST(NNCrossEntropy, NonContiguousLogits) {
  const int64_t n = 5, c = 9;
  const mf::Tensor xt = normal_tensor({c, n}, 5).t();  // (N, C) with strides (1, N)
  ASSERT_FALSE(xt.is_contiguous());
  const mf::Tensor t = targets(n, c, 6);
  mftest::expect_close(mf::cross_entropy(xt, t, -100, "none", 0.05).to_vector<double>(),
                       ce_reference(xt, t, -100, "none", 0.05), 1e-12, 1e-12);
}

// Lower precision: logits are rounded to the dtype first and the reference uses the
// rounded values, so only the op's own error is measured. log_softmax runs in float
// (~1e-7 relative per op, sums of 97 terms) and the result is rounded to the dtype:
// float32 1e-5 atol + 1e-5 rel (losses ~5, 97-term sums), float16 1e-3 relative
// (2^-11 rounding), bfloat16 8e-3 relative (2^-8 rounding).
TEST(NNCrossEntropy, LowerPrecisionDTypes) {
  const int64_t n = 5, c = 97;
  const mf::Tensor x64 = normal_tensor({n, c}, 7, 2.0);
  const mf::Tensor t = targets(n, c, 8, {4});
  for (const DTypeTol& d :
       {DTypeTol{mf::DType::Float32, 1e-5, 1e-5}, DTypeTol{mf::DType::Float16, 1e-3, 1e-3},
        DTypeTol{mf::DType::BFloat16, 8e-3, 8e-3}}) {
    const mf::Tensor x = x64.to(d.dtype);
    const mf::Tensor xr = x.to(mf::DType::Float64);
    for (const std::string red : {"mean", "sum", "none"}) {
      const mf::Tensor l = mf::cross_entropy(x, t, -100, red, 0.1);
      EXPECT_EQ(l.dtype(), d.dtype);
      mftest::expect_close(l.to_vector<double>(), ce_reference(xr, t, -100, red, 0.1), d.atol,
                           d.rtol, red);
    }
  }
}

// Logits of +-1e4 in float32: the max is subtracted before exp, so nothing overflows;
// the loss is ~2e4 and the float32 tolerance is relative.
TEST(NNCrossEntropy, LargeLogitsStayFinite) {
  const int64_t n = 4, c = 6;
  std::vector<double> v(n * c);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 3 == 0 ? 1e4 : -1e4) + static_cast<double>(i);
  mf::Tensor x = f64(v, {n, c}).to(mf::DType::Float32);
  x.requires_grad_();
  const mf::Tensor t = i64({1, 0, 5, 3}, {n});
  for (double smoothing : {0.0, 0.1}) {
    const mf::Tensor l = mf::cross_entropy(x, t, -100, "none", smoothing);
    mftest::expect_close(l.to_vector<double>(), ce_reference(x, t, -100, "none", smoothing), 1e-3,
                         1e-6);
    x.zero_grad();
    mf::cross_entropy(x, t, -100, "mean", smoothing).backward();
    for (double g : x.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
  }
}

// The fused backward against the formula (softmax - smoothed one-hot) * g / count, in
// float32 (1e-6: softmax values of O(1) with float rounding).
TEST(NNCrossEntropy, BackwardFloat32) {
  const int64_t n = 5, c = 11;
  const mf::Tensor x64 = normal_tensor({n, c}, 9);
  mf::Tensor x = x64.to(mf::DType::Float32);
  x.requires_grad_();
  const mf::Tensor t = targets(n, c, 10, {1});
  const double e = 0.1;
  mf::cross_entropy(x, t, -100, "mean", e).backward();
  const std::vector<double> xv = x.to(mf::DType::Float64).to_vector<double>();
  const std::vector<int64_t> tv = t.to_vector<int64_t>();
  std::vector<double> want(n * c, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    if (tv[i] == -100) continue;
    double mx = -1e300, s = 0;
    for (int64_t j = 0; j < c; ++j) mx = std::max(mx, xv[i * c + j]);
    for (int64_t j = 0; j < c; ++j) s += std::exp(xv[i * c + j] - mx);
    for (int64_t j = 0; j < c; ++j) {
      const double p = std::exp(xv[i * c + j] - mx) / s;
      want[i * c + j] = (p - ((j == tv[i] ? 1 - e : 0) + e / c)) / (n - 1);
    }
  }
  mftest::expect_close(x.grad().to_vector<double>(), want, 1e-6, 1e-6);
}

TEST(NNCrossEntropy, Gradcheck) {
  const int64_t n = 4, c = 5;
  mf::Tensor x = normal_tensor({n, c}, 11);
  x.requires_grad_();
  mf::Tensor xt = normal_tensor({c, n}, 12);  // used transposed: non-contiguous
  xt.requires_grad_();
  const mf::Tensor t = targets(n, c, 13, {2});
  for (const std::string red : {"mean", "sum", "none"}) {
    for (double e : {0.0, 0.3}) {
      auto fn = [&](const mf::TensorList& in) { return mf::cross_entropy(in[0], t, -100, red, e); };
      expect_gradcheck(fn, {x}, red + " " + std::to_string(e));
      auto fn_t = [&](const mf::TensorList& in) {
        return mf::cross_entropy(in[0].t(), t, -100, red, e);
      };
      expect_gradcheck(fn_t, {xt}, "transposed " + red);
    }
  }
  mf::Tensor row = normal_tensor({c}, 14);
  row.requires_grad_();
  const mf::Tensor t0 = mf::scalar_tensor(2, {.dtype = mf::DType::Int64});
  expect_gradcheck([&](const mf::TensorList& in) { return mf::cross_entropy(in[0], t0); }, {row},
                   "1-d");
}

TEST(NNCrossEntropy, Errors) {
  const mf::Tensor x = normal_tensor({3, 5}, 15);
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 7, 1}, {3}));
      },
      {"cross_entropy", "target 7", "5 classes", "[0, 5)"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 1, -1}, {3}));
      },
      {"cross_entropy", "target -1", "5 classes"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 1, 2, 3}, {4}));
      },
      {"cross_entropy", "target shape [4]", "logits shape [3, 5]"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 1, 2}, {3, 1}));
      },
      {"cross_entropy", "[3, 1]", "[3, 5]"});
  mftest::expect_error([&] { mf::cross_entropy(x, normal_tensor({3}, 1)); },
                       {"cross_entropy", "int64 or int32 target", "float64[3]"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(normal_tensor({2, 3, 4}, 1), i64({0, 1}));
      },
      {"cross_entropy", "(N, C) or (C)", "[2, 3, 4]"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 1, 2}), -100, "avg");
      },
      {"cross_entropy", "reduction", "avg"});
  mftest::expect_error(
      [&] {
        mf::cross_entropy(x, i64({0, 1, 2}), -100, "mean", 1.5);
      },
      {"cross_entropy", "label_smoothing", "1.5"});
}

// ---- layer_norm ----

TEST(NNLayerNorm, Float64Reference) {
  const int64_t n = 5, d = 97;
  // A large mean next to a unit spread: the two-pass variance must not cancel.
  const mf::Tensor x = normal_tensor({n, d}, 20, 1.0, 50.0);
  const mf::Tensor w = normal_tensor({d}, 21);
  const mf::Tensor b = normal_tensor({d}, 22);
  const std::vector<double> xv = x.to_vector<double>();
  // float64 compute: rounding of 97-term sums, ~1e-14.
  mftest::expect_close(
      mf::layer_norm(x, {d}, w, b).to_vector<double>(),
      norm_reference(xv, d, w.to_vector<double>(), b.to_vector<double>(), 1e-5, false), 1e-12,
      1e-12, "weight and bias");
  mftest::expect_close(mf::layer_norm(x, {d}).to_vector<double>(),
                       norm_reference(xv, d, {}, {}, 1e-5, false), 1e-12, 1e-12, "plain");
  mftest::expect_close(mf::layer_norm(x, {d}, w, {}, 0.1).to_vector<double>(),
                       norm_reference(xv, d, w.to_vector<double>(), {}, 0.1, false), 1e-12, 1e-12,
                       "weight only, eps 0.1");
}

// Two normalised dims, and a non-contiguous x (5x7x3 built from a permuted 3x7x5).
TEST(NNLayerNorm, MultiDimNormalizedShapeNonContiguous) {
  const mf::Tensor x = normal_tensor({3, 7, 5}, 23).permute({2, 1, 0});  // (5, 7, 3)
  ASSERT_FALSE(x.is_contiguous());
  const mf::Tensor w = normal_tensor({7, 3}, 24);
  const mf::Tensor b = normal_tensor({7, 3}, 25);
  const mf::Tensor out = mf::layer_norm(x, {7, 3}, w, b);
  EXPECT_EQ(out.sizes(), (mf::Shape{5, 7, 3}));
  mftest::expect_close(out.to_vector<double>(),
                       norm_reference(x.to_vector<double>(), 21, w.to_vector<double>(),
                                      b.to_vector<double>(), 1e-5, false),
                       1e-12, 1e-12);
  // Every dim normalised: a single row.
  mftest::expect_close(mf::layer_norm(x, {5, 7, 3}).to_vector<double>(),
                       norm_reference(x.to_vector<double>(), 105, {}, {}, 1e-5, false), 1e-12,
                       1e-12, "all dims");
}

// x rounded to the dtype first (reference from the rounded values); weight and bias are
// float32 or the dtype. Outputs are O(1)-O(5): float32 statistics over 97 features give
// ~1e-6 absolute error (2e-6 + 2e-6 rel); float16 output rounding 2^-11 relative
// (1e-3 + 1e-3 rel); bfloat16 2^-8 (8e-3 + 8e-3 rel).
TEST(NNLayerNorm, LowerPrecisionDTypes) {
  const int64_t n = 5, d = 97;
  const mf::Tensor x64 = normal_tensor({n, d}, 26, 2.0, 1.0);
  const mf::Tensor w64 = normal_tensor({d}, 27);
  const mf::Tensor b64 = normal_tensor({d}, 28);
  for (const DTypeTol& t :
       {DTypeTol{mf::DType::Float32, 2e-6, 2e-6}, DTypeTol{mf::DType::Float16, 1e-3, 1e-3},
        DTypeTol{mf::DType::BFloat16, 8e-3, 8e-3}}) {
    const mf::Tensor x = x64.to(t.dtype), w = w64.to(t.dtype), b = b64.to(t.dtype);
    const mf::Tensor out = mf::layer_norm(x, {d}, w, b);
    EXPECT_EQ(out.dtype(), t.dtype);
    mftest::expect_close(out.to_vector<double>(),
                         norm_reference(x.to_vector<double>(), d, w.to_vector<double>(),
                                        b.to_vector<double>(), 1e-5, false),
                         t.atol, t.rtol, mf::dtype_name(t.dtype));
    // float32 weight with a lower-precision x: same numbers, x's dtype out.
    const mf::Tensor mixed =
        mf::layer_norm(x, {d}, w.to(mf::DType::Float32), b.to(mf::DType::Float32));
    EXPECT_EQ(mixed.dtype(), t.dtype);
    mftest::expect_close(mixed, out, 0, 0, "mixed");
  }
}

TEST(NNLayerNorm, Gradcheck) {
  mf::Tensor x = normal_tensor({3, 5}, 30);
  mf::Tensor w = normal_tensor({5}, 31);
  mf::Tensor b = normal_tensor({5}, 32);
  x.requires_grad_();
  w.requires_grad_();
  b.requires_grad_();
  expect_gradcheck(
      [](const mf::TensorList& in) { return mf::layer_norm(in[0], {5}, in[1], in[2]); }, {x, w, b},
      "x, weight, bias");
  expect_gradcheck([](const mf::TensorList& in) { return mf::layer_norm(in[0], {5}); }, {x},
                   "no affine");
  expect_gradcheck([](const mf::TensorList& in) { return mf::layer_norm(in[0], {5}, in[1]); },
                   {x, w}, "weight only");
  // Non-contiguous x (2, 3, 4) from a transposed (2, 4, 3), two normalised dims, and a
  // weight broadcast through an expand (its gradient sums over the expanded dim).
  mf::Tensor xt = normal_tensor({2, 4, 3}, 33);
  mf::Tensor w1 = normal_tensor({1, 4}, 34);
  xt.requires_grad_();
  w1.requires_grad_();
  expect_gradcheck(
      [](const mf::TensorList& in) {
        return mf::layer_norm(in[0].transpose(1, 2), {3, 4}, in[1].expand({3, 4}), in[2]);
      },
      {xt, w1, normal_tensor({3, 4}, 35).requires_grad_()}, "non-contiguous");
}

TEST(NNLayerNorm, FakeMode) {
  mf::IncludeKeyGuard fake(mf::DispatchKey::Fake);
  const mf::Tensor x = mf::empty({4, 6, 8}, {.dtype = mf::DType::BFloat16});
  const mf::Tensor y = mf::layer_norm(x, {8}, mf::empty({8}));
  EXPECT_TRUE(y.is_fake());
  EXPECT_EQ(y.sizes(), (mf::Shape{4, 6, 8}));
  EXPECT_EQ(y.dtype(), mf::DType::BFloat16);
  mftest::expect_error([&] { mf::layer_norm(x, {6}); }, {"layer_norm", "[6]", "[4, 6, 8]"});
}

TEST(NNLayerNorm, Errors) {
  const mf::Tensor x = normal_tensor({5, 97}, 36);
  mftest::expect_error([&] { mf::layer_norm(x, {96}); },
                       {"layer_norm", "normalized_shape [96]", "float64[5, 97]"});
  mftest::expect_error(
      [&] {
        mf::layer_norm(x, {3, 5, 97});
      },
      {"layer_norm", "[3, 5, 97]", "[5, 97]"});
  mftest::expect_error([&] { mf::layer_norm(x, {}); }, {"layer_norm", "at least one dim"});
  mftest::expect_error([&] { mf::layer_norm(x, {97}, normal_tensor({96}, 1)); },
                       {"layer_norm", "weight shape [96]", "normalized_shape [97]"});
  mftest::expect_error(
      [&] {
        mf::layer_norm(x, {97}, {}, normal_tensor({5, 97}, 1));
      },
      {"layer_norm", "bias shape [5, 97]", "[97]"});
  mftest::expect_error(
      [&] {
        mf::layer_norm(i64({1, 2, 3}), {3});
      },
      {"layer_norm", "floating", "int64[3]"});
}

// ---- rms_norm ----

TEST(NNRmsNorm, Float64Reference) {
  const int64_t n = 5, d = 97;
  const mf::Tensor x = normal_tensor({n, d}, 40, 2.0, 0.5);
  const mf::Tensor w = normal_tensor({d}, 41);
  const std::vector<double> xv = x.to_vector<double>();
  mftest::expect_close(mf::rms_norm(x, {d}, w, 1e-6).to_vector<double>(),
                       norm_reference(xv, d, w.to_vector<double>(), {}, 1e-6, true), 1e-12, 1e-12,
                       "eps 1e-6");
  // Default eps: the dtype's machine epsilon, as PyTorch.
  mftest::expect_close(mf::rms_norm(x, {d}).to_vector<double>(),
                       norm_reference(xv, d, {}, {}, std::numeric_limits<double>::epsilon(), true),
                       1e-12, 1e-12, "default eps");
  // Small inputs make eps visible: 1e-4 values, mean square 1e-8 next to eps 1e-2.
  const mf::Tensor small = normal_tensor({2, 4}, 42, 1e-4);
  mftest::expect_close(mf::rms_norm(small, {4}, {}, 1e-2).to_vector<double>(),
                       norm_reference(small.to_vector<double>(), 4, {}, {}, 1e-2, true), 1e-12,
                       1e-12, "eps dominates");
  // Non-contiguous x with two normalised dims.
  const mf::Tensor xt = normal_tensor({3, 7, 5}, 43).permute({2, 1, 0});
  mftest::expect_close(mf::rms_norm(xt, {7, 3}, {}, 1e-6).to_vector<double>(),
                       norm_reference(xt.to_vector<double>(), 21, {}, {}, 1e-6, true), 1e-12, 1e-12,
                       "non-contiguous");
}

// Tolerances as for layer_norm; the default eps of each dtype is used and stated.
TEST(NNRmsNorm, LowerPrecisionDTypes) {
  const int64_t n = 5, d = 97;
  const mf::Tensor x64 = normal_tensor({n, d}, 44, 2.0);
  const mf::Tensor w64 = normal_tensor({d}, 45);
  for (const auto& [t, eps] : {std::pair{DTypeTol{mf::DType::Float32, 2e-6, 2e-6}, 1.1920929e-7},
                               std::pair{DTypeTol{mf::DType::Float16, 1e-3, 1e-3}, 0.0009765625},
                               std::pair{DTypeTol{mf::DType::BFloat16, 8e-3, 8e-3}, 0.0078125}}) {
    const mf::Tensor x = x64.to(t.dtype), w = w64.to(t.dtype);
    const mf::Tensor out = mf::rms_norm(x, {d}, w);
    EXPECT_EQ(out.dtype(), t.dtype);
    mftest::expect_close(
        out.to_vector<double>(),
        norm_reference(x.to_vector<double>(), d, w.to_vector<double>(), {}, eps, true), t.atol,
        t.rtol, mf::dtype_name(t.dtype));
  }
}

TEST(NNRmsNorm, Gradcheck) {
  mf::Tensor x = normal_tensor({3, 5}, 46);
  mf::Tensor w = normal_tensor({5}, 47);
  x.requires_grad_();
  w.requires_grad_();
  expect_gradcheck([](const mf::TensorList& in) { return mf::rms_norm(in[0], {5}, in[1], 1e-6); },
                   {x, w}, "x, weight");
  expect_gradcheck([](const mf::TensorList& in) { return mf::rms_norm(in[0], {5}); }, {x},
                   "no weight");
  mf::Tensor xt = normal_tensor({4, 2}, 48);
  xt.requires_grad_();
  expect_gradcheck(
      [](const mf::TensorList& in) { return mf::rms_norm(in[0].t(), {4}, in[1], 0.1); },
      {xt, normal_tensor({4}, 49).requires_grad_()}, "non-contiguous");
}

TEST(NNRmsNorm, Errors) {
  const mf::Tensor x = normal_tensor({5, 97}, 50);
  mftest::expect_error([&] { mf::rms_norm(x, {5}); },
                       {"rms_norm", "normalized_shape [5]", "float64[5, 97]"});
  mftest::expect_error([&] { mf::rms_norm(x, {97}, normal_tensor({5}, 1)); },
                       {"rms_norm", "weight shape [5]", "normalized_shape [97]"});
}

// ---- dropout ----

TEST(NNDropout, IdentityAndExtremes) {
  const mf::Tensor x = normal_tensor({4, 5}, 60);
  EXPECT_TRUE(mf::dropout(x, 0.5, false).is_same(x));
  EXPECT_TRUE(mf::dropout(x, 0.0).is_same(x));
  const mf::Tensor z = mf::dropout(x, 1.0);
  EXPECT_EQ(z.sizes(), x.sizes());
  for (double v : z.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

// 100k elements with p = 0.3: the kept fraction has sd sqrt(0.21 / n) = 1.4e-3 (bound
// 6 sd); kept values are x / 0.7 (float32: one rounding, 1e-6 relative).
TEST(NNDropout, MaskStatisticsAndScale) {
  mf::manual_seed(3);
  const int64_t n = 100000;
  const mf::Tensor x = normal_tensor({n}, 61).to(mf::DType::Float32);
  const std::vector<double> xv = x.to_vector<double>();
  const std::vector<double> y = mf::dropout(x, 0.3).to_vector<double>();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] == 0.0) continue;
    ++kept;
    ASSERT_NEAR(y[i], xv[i] / 0.7, 1e-6 * std::abs(xv[i] / 0.7)) << i;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.7, 0.0087);
}

TEST(NNDropout, ReproducibleAndShapeIndependent) {
  const mf::Tensor x = normal_tensor({6, 7}, 62);
  mf::manual_seed(10);
  const mf::Tensor a = mf::dropout(x, 0.5);
  const mf::Tensor b = mf::dropout(x, 0.5);  // next offset: another mask
  mf::manual_seed(10);
  EXPECT_EQ(mf::dropout(x, 0.5).to_vector<double>(), a.to_vector<double>());
  EXPECT_NE(a.to_vector<double>(), b.to_vector<double>());
  // The mask follows the row-major element index, whatever the shape or strides.
  mf::manual_seed(10);
  EXPECT_EQ(mf::dropout(x.flatten(), 0.5).to_vector<double>(), a.to_vector<double>());
  const mf::Tensor xt = normal_tensor({7, 6}, 63).t();
  mf::manual_seed(10);
  const mf::Tensor c = mf::dropout(xt, 0.5);
  mf::manual_seed(10);
  EXPECT_EQ(c.to_vector<double>(), mf::dropout(xt.contiguous(), 0.5).to_vector<double>());
  for (mf::DType dt : {mf::DType::Float16, mf::DType::BFloat16}) {
    mf::manual_seed(10);
    const std::vector<double> h = mf::dropout(x.to(dt), 0.5).to_vector<double>();
    const std::vector<double> av = a.to_vector<double>();
    for (size_t i = 0; i < h.size(); ++i) EXPECT_EQ(h[i] == 0.0, av[i] == 0.0) << dt << " " << i;
  }
}

// The backward recomputes the forward's mask from (seed, offset): d(sum y)/dx = mask / (1-p).
TEST(NNDropout, BackwardUsesTheSameMask) {
  mf::Tensor x = normal_tensor({8, 9}, 64);
  x.requires_grad_();
  mf::manual_seed(21);
  const mf::Tensor y = mf::dropout(x, 0.25);
  mf::manual_seed(99);  // moving the generator must not change the backward
  y.sum().backward();
  const std::vector<double> yv = y.to_vector<double>(), g = x.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_EQ(g[i], yv[i] == 0.0 ? 0.0 : 1.0 / 0.75) << i;
  // p = 1: zero output, zero gradient.
  x.zero_grad();
  mf::dropout(x, 1.0).sum().backward();
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(NNDropout, Gradcheck) {
  mf::Tensor x = normal_tensor({4, 6}, 65);
  x.requires_grad_();
  // A fixed seed in the function: every evaluation draws the same mask.
  expect_gradcheck(
      [](const mf::TensorList& in) {
        mf::manual_seed(5);
        return mf::dropout(in[0], 0.4);
      },
      {x}, "contiguous");
  expect_gradcheck(
      [](const mf::TensorList& in) {
        mf::manual_seed(5);
        return mf::dropout(in[0].t(), 0.4);
      },
      {x}, "transposed");
}

TEST(NNDropout, Errors) {
  const mf::Tensor x = normal_tensor({3}, 66);
  mftest::expect_error([&] { mf::dropout(x, -0.1); }, {"dropout", "p", "[0, 1]", "-0.1"});
  mftest::expect_error([&] { mf::dropout(x, 1.5); }, {"dropout", "p", "1.5"});
  mftest::expect_error([&] { mf::dropout(x, std::nan("")); }, {"dropout", "p"});
  mftest::expect_error([&] { mf::dropout(x, 1.5, false); }, {"dropout", "1.5"});
  mftest::expect_error([&] { mf::dropout(i64({1, 2}), 0.5); }, {"dropout", "floating", "int64[2]"});
}
