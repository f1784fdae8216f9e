// Reductions and softmax against naive float64 references on odd shapes, every dims
// combination kind (several, negative, unsorted, all), keepdim both ways, non-contiguous
// inputs and every supported dtype; gradcheck of each differentiable op; error messages.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "test_util.h"

namespace {

namespace mf = microflex;
using mf::DType;
using mf::Shape;
using mf::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Tolerances (used as both atol and rtol; inputs are O(1)). The reference runs in
// float64 on the values already rounded to the input dtype, so only the op's own error
// counts: float64 sums of ~100 terms stay near 1e-14; float32 exp/log in float plus the
// final rounding is a few ulp (1.2e-7 each); float16 and bfloat16 results are computed in
// float and rounded to 11 / 8 significant bits (unit roundoff 4.9e-4 / 3.9e-3), with
// exp/log of the 16-bit softmax family adding a little more.
double tol(DType t) {
  switch (t) {
    case DType::Float64:
      return 1e-12;
    case DType::Float32:
      return 1e-5;
    case DType::Float16:
      return 2e-3;
    case DType::BFloat16:
      return 1e-2;
    default:
      return 0.0;
  }
}

const std::vector<DType> kFloatTypes = {DType::Float64, DType::Float32, DType::Float16,
                                        DType::BFloat16};

Tensor f64(const std::vector<double>& v, const Shape& shape) {
  return mf::from_vector(v, shape, {.dtype = DType::Float64});
}

Tensor random_tensor(const Shape& shape, uint32_t seed, double lo = -3.0, double hi = 3.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (double& x : v) x = dist(gen);
  return mf::from_vector(v, shape, {.dtype = DType::Float64});
}

Tensor random_ints(const Shape& shape, uint32_t seed, int64_t lo, int64_t hi, DType dt) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  std::vector<int64_t> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (int64_t& x : v) x = dist(gen);
  return mf::from_vector(v, shape, {.dtype = dt});
}

// ---- Naive float64 references ----

// Dims as PyTorch reads them: wrapped, sorted; empty means all.
Shape norm_dims(Shape dims, int64_t ndim) {
  if (dims.empty())
    for (int64_t i = 0; i < ndim; ++i) dims.push_back(i);
  for (int64_t& d : dims) d = d < 0 ? d + ndim : d;
  std::sort(dims.begin(), dims.end());
  return dims;
}

Shape out_shape(const Shape& s, const Shape& rd, bool keepdim) {
  Shape o;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    const bool r = std::count(rd.begin(), rd.end(), i) > 0;
    if (!r) o.push_back(s[i]);
    if (r && keepdim) o.push_back(1);
  }
  return o;
}

// Groups the row-major values `x` of shape `s` into one row per output element (the
// reduced elements in row-major order of the reduced dims) and applies `f` to each.
struct Ref {
  Shape shape;
  std::vector<double> values;
};
Ref reduce_ref(const std::vector<double>& x, const Shape& s, const Shape& dims, bool keepdim,
               const std::function<double(const std::vector<double>&)>& f) {
  const Shape rd = norm_dims(dims, static_cast<int64_t>(s.size()));
  int64_t n_out = 1;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i)
    if (!std::count(rd.begin(), rd.end(), i)) n_out *= s[i];
  std::vector<std::vector<double>> rows(static_cast<size_t>(n_out));
  Shape idx(s.size(), 0);
  for (size_t flat = 0; flat < x.size(); ++flat) {
    int64_t o = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i)
      if (!std::count(rd.begin(), rd.end(), i)) o = o * s[i] + idx[i];
    rows[static_cast<size_t>(o)].push_back(x[flat]);
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  Ref r{out_shape(s, rd, keepdim), {}};
  for (const auto& row : rows) r.values.push_back(f(row));
  return r;
}

double ref_sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}
double ref_mean(const std::vector<double>& v) {
  return ref_sum(v) / double(v.size());
}
double ref_max(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end());
}
double ref_min(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}
double ref_argmax(const std::vector<double>& v) {
  return double(std::max_element(v.begin(), v.end()) - v.begin());  // first occurrence
}
double ref_argmin(const std::vector<double>& v) {
  return double(std::min_element(v.begin(), v.end()) - v.begin());
}
double ref_lse(const std::vector<double>& v) {
  const double m = ref_max(v);
  if (std::isinf(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}
std::function<double(const std::vector<double>&)> ref_var(double correction) {
  return [correction](const std::vector<double>& v) {
    const double m = ref_mean(v);
    double ss = 0;
    for (double x : v) ss += (x - m) * (x - m);
    return ss / std::max(0.0, double(v.size()) - correction);
  };
}

// softmax / log_softmax along `dim` of row-major `x` of shape `s`.
std::vector<double> softmax_ref(const std::vector<double>& x, const Shape& s, int64_t dim,
                                bool log) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= s[i];
  for (int64_t i = dim + 1; i < static_cast<int64_t>(s.size()); ++i) inner *= s[i];
  const int64_t r = s[dim];
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      std::vector<double> row;
      for (int64_t j = 0; j < r; ++j) row.push_back(x[(o * r + j) * inner + i]);
      const double lse = ref_lse(row);
      for (int64_t j = 0; j < r; ++j) {
        const double v = row[j] - lse;
        double out = log ? v : std::exp(v);
        if (std::isinf(lse) && lse < 0) out = log ? -kInf : 0.0;  // Note [Safe softmax]
        y[(o * r + j) * inner + i] = out;
      }
    }
  }
  return y;
}

// Inputs to test every op on: contiguous odd shapes, a transposed view, a strided slice.
struct Input {
  std::string name;
  Tensor x;  // float64
};
std::vector<Input> test_inputs() {
  std::vector<Input> in;
  in.push_back({"5x7x3", random_tensor({5, 7, 3}, 1)});
  in.push_back({"97", random_tensor({97}, 2)});
  in.push_back({"transposed 3x7x5", random_tensor({5, 7, 3}, 3).transpose(0, 2)});
  in.push_back({"sliced 5x4x3", random_tensor({5, 8, 3}, 4).slice(1, 1, 8, 2)});
  return in;
}

std::vector<Shape> dims_cases(int64_t ndim) {
  if (ndim == 1) return {{}, {0}, {-1}};
  return {{}, {0}, {1}, {-1}, {0, 2}, {-1, 0}, {2, 1, 0}, {1, -1}};
}

std::string label(const std::string& op, const Input& in, DType dt, const Shape& dims, bool k) {
  return op + " on " + in.name + " " + mf::dtype_name(dt) + " dims " + mf::shape_str(dims) +
         (k ? " keepdim" : "");
}

void check_ref(const Tensor& got, const Ref& ref, double atol, double rtol, const std::string& w) {
  ASSERT_EQ(got.sizes(), ref.shape) << w;
  mftest::expect_close(got.to_vector<double>(), ref.values, atol, rtol, w);
}

using ReduceFn = std::function<Tensor(const Tensor&, const Shape&, bool)>;
using RefFn = std::function<double(const std::vector<double>&)>;

// Runs `op` over every input, float dtype, dims case and keepdim against `ref`.
void sweep_float(const std::string& name, const ReduceFn& op, const RefFn& ref) {
  for (const Input& in : test_inputs()) {
    for (DType dt : kFloatTypes) {
      const Tensor x = in.x.to(dt);
      const std::vector<double> xv = x.to_vector<double>();
      for (const Shape& dims : dims_cases(x.dim())) {
        for (bool k : {false, true}) {
          const std::string w = label(name, in, dt, dims, k);
          const Tensor y = op(x, dims, k);
          EXPECT_EQ(y.dtype(), dt) << w;
          check_ref(y, reduce_ref(xv, x.sizes(), dims, k, ref), tol(dt), tol(dt), w);
        }
      }
    }
  }
}

// ---- Forward values ----

TEST(Reduction, SumMatchesReference) {
  sweep_float(
      "sum", [](const Tensor& x, const Shape& d, bool k) { return mf::sum(x, d, k); }, ref_sum);
}

TEST(Reduction, MeanMatchesReference) {
  sweep_float(
      "mean", [](const Tensor& x, const Shape& d, bool k) { return mf::mean(x, d, k); }, ref_mean);
}

TEST(Reduction, AmaxAminMatchReference) {
  sweep_float(
      "amax", [](const Tensor& x, const Shape& d, bool k) { return mf::amax(x, d, k); }, ref_max);
  sweep_float(
      "amin", [](const Tensor& x, const Shape& d, bool k) { return mf::amin(x, d, k); }, ref_min);
}

TEST(Reduction, LogsumexpMatchesReference) {
  sweep_float(
      "logsumexp", [](const Tensor& x, const Shape& d, bool k) { return mf::logsumexp(x, d, k); },
      ref_lse);
}

TEST(Reduction, VarMatchesReference) {
  for (double c : {1.0, 0.0, 2.5}) {
    sweep_float(
        "var c=" + std::to_string(c),
        [c](const Tensor& x, const Shape& d, bool k) { return mf::var(x, d, c, k); }, ref_var(c));
  }
}

TEST(Reduction, MaxMinAlongDimGiveValuesAndFirstIndices) {
  for (const Input& in : test_inputs()) {
    for (DType dt : kFloatTypes) {
      const Tensor x = in.x.to(dt);
      const std::vector<double> xv = x.to_vector<double>();
      for (int64_t dim = -x.dim(); dim < x.dim(); ++dim) {
        for (bool k : {false, true}) {
          const std::string w = label("max", in, dt, {dim}, k);
          auto [v, i] = mf::max(x, dim, k);
          EXPECT_EQ(v.dtype(), dt) << w;
          EXPECT_EQ(i.dtype(), DType::Int64) << w;
          check_ref(v, reduce_ref(xv, x.sizes(), {dim}, k, ref_max), 0, 0, w);
          check_ref(i, reduce_ref(xv, x.sizes(), {dim}, k, ref_argmax), 0, 0, w);
          auto [vn, in_] = mf::min(x, dim, k);
          check_ref(vn, reduce_ref(xv, x.sizes(), {dim}, k, ref_min), 0, 0, w + " (min)");
          check_ref(in_, reduce_ref(xv, x.sizes(), {dim}, k, ref_argmin), 0, 0, w + " (min)");
        }
      }
      check_ref(mf::max(x), reduce_ref(xv, x.sizes(), {}, false, ref_max), 0, 0, in.name);
      check_ref(mf::min(x), reduce_ref(xv, x.sizes(), {}, false, ref_min), 0, 0, in.name);
    }
  }
}

TEST(Reduction, ArgmaxArgminWithAndWithoutDim) {
  for (const Input& in : test_inputs()) {
    const std::vector<double> xv = in.x.to_vector<double>();
    for (int64_t dim = -in.x.dim(); dim < in.x.dim(); ++dim) {
      for (bool k : {false, true}) {
        const std::string w = label("argmax", in, DType::Float64, {dim}, k);
        const Tensor a = mf::argmax(in.x, dim, k);
        EXPECT_EQ(a.dtype(), DType::Int64);
        check_ref(a, reduce_ref(xv, in.x.sizes(), {dim}, k, ref_argmax), 0, 0, w);
        check_ref(mf::argmin(in.x, dim, k), reduce_ref(xv, in.x.sizes(), {dim}, k, ref_argmin), 0,
                  0, w);
      }
    }
    // No dim: an index into the flattened (row-major) tensor.
    check_ref(mf::argmax(in.x), reduce_ref(xv, in.x.sizes(), {}, false, ref_argmax), 0, 0, in.name);
    const Tensor ak = mf::argmin(in.x, std::nullopt, true);
    check_ref(ak, reduce_ref(xv, in.x.sizes(), {}, true, ref_argmin), 0, 0, in.name);
    EXPECT_EQ(ak.sizes(), Shape(in.x.dim(), 1));
  }
}

TEST(Reduction, IntegerAndBoolInputs) {
  // Many ties (values in [0, 3]) check first-occurrence indices; results are exact.
  for (DType dt : {DType::Int32, DType::Int64}) {
    const Tensor x = random_ints({5, 7, 3}, 11, 0, 3, dt).transpose(0, 1);
    const std::vector<double> xv = x.to_vector<double>();
    for (const Shape& dims : dims_cases(3)) {
      for (bool k : {false, true}) {
        const std::string w = std::string(mf::dtype_name(dt)) + " dims " + mf::shape_str(dims);
        const Tensor s = mf::sum(x, dims, k);
        EXPECT_EQ(s.dtype(), DType::Int64) << w;
        check_ref(s, reduce_ref(xv, x.sizes(), dims, k, ref_sum), 0, 0, w);
        const Tensor m = mf::amax(x, dims, k);
        EXPECT_EQ(m.dtype(), dt) << w;
        check_ref(m, reduce_ref(xv, x.sizes(), dims, k, ref_max), 0, 0, w);
        check_ref(mf::amin(x, dims, k), reduce_ref(xv, x.sizes(), dims, k, ref_min), 0, 0, w);
      }
    }
    for (int64_t dim = 0; dim < 3; ++dim) {
      auto [v, i] = mf::max(x, dim);
      check_ref(v, reduce_ref(xv, x.sizes(), {dim}, false, ref_max), 0, 0, "max ints");
      check_ref(i, reduce_ref(xv, x.sizes(), {dim}, false, ref_argmax), 0, 0, "max ints");
      check_ref(mf::argmin(x, dim), reduce_ref(xv, x.sizes(), {dim}, false, ref_argmin), 0, 0,
                "argmin ints");
    }
    EXPECT_EQ(mf::max(x).item<int64_t>(), 3);
    // logsumexp promotes integers to float32.
    const Tensor l = mf::logsumexp(x, {1});
    EXPECT_EQ(l.dtype(), DType::Float32);
    check_ref(l, reduce_ref(xv, x.sizes(), {1}, false, ref_lse), 1e-5, 1e-5, "logsumexp ints");
  }
  const Tensor b =
      mf::from_vector<bool>({true, false, true, true, false, true}, {2, 3}, {.dtype = DType::Bool});
  const Tensor bs = mf::sum(b, {1});
  EXPECT_EQ(bs.dtype(), DType::Int64);
  EXPECT_EQ(bs.to_vector<int64_t>(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(mf::argmax(b, 1).to_vector<int64_t>(), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(mf::amin(b, {1}).to_vector<double>(), (std::vector<double>{0, 0}));
}

TEST(Reduction, ZeroDimTensor) {
  const Tensor s = mf::scalar_tensor(2.5, {.dtype = DType::Float64});
  EXPECT_EQ(mf::sum(s, {0}).sizes(), Shape{});
  EXPECT_EQ(mf::sum(s, {-1}, true).item<double>(), 2.5);
  EXPECT_EQ(mf::amax(s).item<double>(), 2.5);
  auto [v, i] = mf::max(s, 0);
  EXPECT_EQ(v.item<double>(), 2.5);
  EXPECT_EQ(i.item<int64_t>(), 0);
  EXPECT_EQ(mf::softmax(s, 0).item<double>(), 1.0);
  EXPECT_EQ(mf::log_softmax(s, -1).item<double>(), 0.0);
  EXPECT_EQ(mf::logsumexp(s, {0}).item<double>(), 2.5);
}

TEST(Reduction, NanPropagatesThroughMaxLike) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = f64({1, nan, 3, 5, 2, 4}, {2, 3});
  EXPECT_TRUE(std::isnan(mf::amax(x, {1}).to_vector<double>()[0]));
  EXPECT_EQ(mf::amax(x, {1}).to_vector<double>()[1], 5);
  EXPECT_TRUE(std::isnan(mf::max(x).item<double>()));
  EXPECT_TRUE(std::isnan(mf::min(x).item<double>()));
  EXPECT_EQ(mf::argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(mf::argmin(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 1}));
  EXPECT_TRUE(std::isnan(mf::logsumexp(x, {1}).to_vector<double>()[0]));
}

TEST(Reduction, SizeZeroDims) {
  const Tensor e = mf::zeros({3, 0, 2}, {.dtype = DType::Float32});
  const Tensor s = mf::sum(e, {1});
  EXPECT_EQ(s.sizes(), (Shape{3, 2}));
  EXPECT_EQ(s.to_vector<double>(), std::vector<double>(6, 0.0));
  EXPECT_EQ(mf::sum(e).item<double>(), 0.0);
  for (double v : mf::mean(e, {1}).to_vector<double>()) EXPECT_TRUE(std::isnan(v));
  for (double v : mf::logsumexp(e, {1}).to_vector<double>()) EXPECT_EQ(v, -kInf);
  // Reducing only non-empty dims of an empty tensor is fine: the result is empty.
  EXPECT_EQ(mf::amax(e, {2}).sizes(), (Shape{3, 0}));
  EXPECT_EQ(mf::max(e, 0).first.sizes(), (Shape{0, 2}));
  EXPECT_EQ(mf::softmax(e, 1).sizes(), e.sizes());
}

// ---- softmax family ----

TEST(Softmax, MatchesReference) {
  for (const Input& in : test_inputs()) {
    for (DType dt : kFloatTypes) {
      const Tensor x = in.x.to(dt);
      const std::vector<double> xv = x.to_vector<double>();
      for (int64_t dim = -x.dim(); dim < x.dim(); ++dim) {
        const int64_t d = dim < 0 ? dim + x.dim() : dim;
        for (bool log : {false, true}) {
          const std::string w = label(log ? "log_softmax" : "softmax", in, dt, {dim}, false);
          const Tensor y = log ? mf::log_softmax(x, dim) : mf::softmax(x, dim);
          EXPECT_EQ(y.dtype(), dt) << w;
          ASSERT_EQ(y.sizes(), x.sizes()) << w;
          mftest::expect_close(y.to_vector<double>(), softmax_ref(xv, x.sizes(), d, log), tol(dt),
                               tol(dt), w);
        }
      }
    }
  }
}

TEST(Softmax, LargeMagnitudeScoresStayFinite) {
  // Scores of ±1e4 in float32: exp without the max shift would overflow to inf.
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> dist(-1e4, 1e4);
  std::vector<double> v(4 * 97);
  for (double& x : v) x = dist(gen);
  v[3] = 1e4;
  v[4] = 1e4;  // a tie at the top
  const Tensor x = mf::from_vector(v, {4, 97}, {.dtype = DType::Float32});
  const std::vector<double> xv = x.to_vector<double>();
  const Tensor y = mf::softmax(x, 1), ly = mf::log_softmax(x, 1), l = mf::logsumexp(x, {1});
  for (const Tensor& t : {y, ly, l})
    for (double a : t.to_vector<double>()) EXPECT_TRUE(std::isfinite(a));
  // Absolute error of log-space results scales with |x| ~ 1e4 (float32 ulp there ~1e-3).
  mftest::expect_close(y.to_vector<double>(), softmax_ref(xv, {4, 97}, 1, false), 1e-6, 1e-5,
                       "softmax");
  mftest::expect_close(ly.to_vector<double>(), softmax_ref(xv, {4, 97}, 1, true), 2e-3, 1e-6,
                       "log_softmax");
  check_ref(l, reduce_ref(xv, {4, 97}, {1}, false, ref_lse), 2e-3, 1e-6, "logsumexp");
  EXPECT_NEAR(y.to_vector<double>()[3], 0.5, 1e-6);
}

TEST(Softmax, AllNegInfRowIsSafe) {
  // Row 0 is fully masked; row 1 is partly masked.
  const Tensor x = f64({-kInf, -kInf, -kInf, 0.5, -kInf, 1.5}, {2, 3});
  for (DType dt : kFloatTypes) {
    const Tensor xd = x.to(dt);
    const std::vector<double> y = mf::softmax(xd, 1).to_vector<double>();
    const std::vector<double> ly = mf::log_softmax(xd, 1).to_vector<double>();
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(y[j], 0.0);
      EXPECT_EQ(ly[j], -kInf);
    }
    EXPECT_EQ(y[4], 0.0);
    EXPECT_NEAR(y[3] + y[5], 1.0, tol(dt));
    EXPECT_EQ(mf::logsumexp(xd, {1}).to_vector<double>()[0], -kInf);
  }
  // The gradients through a fully masked row are 0, not NaN.
  Tensor xg = x.clone();
  xg.requires_grad_();
  mf::Tensor w = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  mf::sum(mf::softmax(xg, 1) * w).backward();
  for (double g : xg.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
  xg.zero_grad();
  mf::sum(mf::logsumexp(xg, {1})).backward();
  const std::vector<double> g = xg.grad().to_vector<double>();
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], 0.0);
  EXPECT_EQ(g[4], 0.0);
  EXPECT_NEAR(g[3] + g[5], 1.0, 1e-12);
}

TEST(Softmax, FusedBackwardOpsMatchFormulas) {
  // 5x7x3 over dim 1, float32 y and g, against the formulas in float64.
  const Tensor y = mf::softmax(random_tensor({5, 7, 3}, 21), 1).to(DType::Float32);
  const Tensor ly = mf::log_softmax(random_tensor({5, 7, 3}, 22), 1).to(DType::Float32);
  const Tensor g = random_tensor({5, 7, 3}, 23)
                       .to(DType::Float32)
                       .transpose(0, 2)
                       .contiguous()
                       .transpose(0, 2);  // non-contiguous grad
  const std::vector<double> yv = y.to_vector<double>(), lyv = ly.to_vector<double>(),
                            gv = g.to_vector<double>();
  std::vector<double> e_soft(yv.size()), e_log(yv.size());
  for (int64_t o = 0; o < 5; ++o) {
    for (int64_t i = 0; i < 3; ++i) {
      double dot = 0, gs = 0;
      for (int64_t j = 0; j < 7; ++j) {
        const size_t k = static_cast<size_t>((o * 7 + j) * 3 + i);
        dot += gv[k] * yv[k];
        gs += gv[k];
      }
      for (int64_t j = 0; j < 7; ++j) {
        const size_t k = static_cast<size_t>((o * 7 + j) * 3 + i);
        e_soft[k] = yv[k] * (gv[k] - dot);
        e_log[k] = gv[k] - std::exp(lyv[k]) * gs;
      }
    }
  }
  mftest::expect_close(mf::softmax_backward(g, y, 1).to_vector<double>(), e_soft, 1e-5, 1e-5,
                       "softmax_backward");
  mftest::expect_close(mf::log_softmax_backward(g, ly, -2).to_vector<double>(), e_log, 1e-5, 1e-5,
                       "log_softmax_backward");
}

// ---- Gradients ----

void expect_gradcheck(const std::function<Tensor(const mf::TensorList&)>& fn,
                      const mf::TensorList& inputs, const std::string& what) {
  const mf::GradcheckResult r = mf::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

// Float64 inputs that require grad: contiguous 3x4x5, a transposed view, and 7.
std::vector<Tensor> grad_inputs(uint32_t seed) {
  Tensor a = random_tensor({3, 4, 5}, seed);
  Tensor t = random_tensor({5, 4, 3}, seed + 1).transpose(0, 2).detach();  // strided leaf
  t.requires_grad_();
  a.requires_grad_();
  return {a, t};
}

TEST(ReductionGrad, SumMeanVarLogsumexpAmax) {
  const std::vector<Shape> dims = {{}, {1}, {-1}, {0, 2}, {2, 0, 1}};
  using Op = std::function<Tensor(const Tensor&, const Shape&, bool)>;
  const std::vector<std::pair<std::string, Op>> ops = {
      {"sum", [](const Tensor& x, const Shape& d, bool k) { return mf::sum(x, d, k); }},
      {"mean", [](const Tensor& x, const Shape& d, bool k) { return mf::mean(x, d, k); }},
      {"var", [](const Tensor& x, const Shape& d, bool k) { return mf::var(x, d, 1.0, k); }},
      {"var0", [](const Tensor& x, const Shape& d, bool k) { return mf::var(x, d, 0.0, k); }},
      {"logsumexp", [](const Tensor& x, const Shape& d, bool k) { return mf::logsumexp(x, d, k); }},
      {"amax", [](const Tensor& x, const Shape& d, bool k) { return mf::amax(x, d, k); }},
      {"amin", [](const Tensor& x, const Shape& d, bool k) { return mf::amin(x, d, k); }},
  };
  uint32_t seed = 100;
  for (const auto& [name, op] : ops) {
    for (const Tensor& x : grad_inputs(seed++)) {
      for (const Shape& d : dims) {
        for (bool k : {false, true}) {
          expect_gradcheck([&](const mf::TensorList& in) { return op(in[0], d, k); }, {x},
                           name + " dims " + mf::shape_str(d) + (x.is_contiguous() ? "" : " (T)"));
        }
      }
    }
  }
}

TEST(ReductionGrad, BroadcastInputs) {
  // (x + b) with b [4, 1] broadcast over x [3, 4, 5]: gradients reach b through sum_to.
  Tensor x = random_tensor({3, 4, 5}, 31);
  Tensor b = random_tensor({4, 1}, 32);
  x.requires_grad_();
  b.requires_grad_();
  expect_gradcheck(
      [](const mf::TensorList& in) {
        return mf::logsumexp(in[0] + in[1], {0, 2});
      },
      {x, b}, "logsumexp broadcast");
  expect_gradcheck([](const mf::TensorList& in) { return mf::softmax(in[0] + in[1], 1); }, {x, b},
                   "softmax broadcast");
  expect_gradcheck(
      [](const mf::TensorList& in) {
        return mf::var(in[0] * in[1], {1, 2});
      },
      {x, b}, "var broadcast");
}

TEST(ReductionGrad, MaxValuesAlongDimAndOverAll) {
  for (const Tensor& x : grad_inputs(40)) {
    for (int64_t dim : {0, 1, -1}) {
      for (bool k : {false, true}) {
        expect_gradcheck([&](const mf::TensorList& in) { return mf::max(in[0], dim, k).first; },
                         {x}, "max dim " + std::to_string(dim));
        expect_gradcheck([&](const mf::TensorList& in) { return mf::min(in[0], dim, k).first; },
                         {x}, "min dim " + std::to_string(dim));
      }
    }
    expect_gradcheck([](const mf::TensorList& in) { return mf::max(in[0]); }, {x}, "max all");
    expect_gradcheck([](const mf::TensorList& in) { return mf::min(in[0]); }, {x}, "min all");
  }
}

TEST(ReductionGrad, SoftmaxLogSoftmax) {
  for (const Tensor& x : grad_inputs(50)) {
    for (int64_t dim : {0, 1, 2, -1}) {
      expect_gradcheck([&](const mf::TensorList& in) { return mf::softmax(in[0], dim); }, {x},
                       "softmax dim " + std::to_string(dim));
      expect_gradcheck([&](const mf::TensorList& in) { return mf::log_softmax(in[0], dim); }, {x},
                       "log_softmax dim " + std::to_string(dim));
    }
  }
}

TEST(ReductionGrad, TiesSplitForAmaxButNotForMaxDim) {
  Tensor x = f64({1, 3, 3, 2, 0, 5, 4, 5}, {2, 4});
  x.requires_grad_();
  mf::sum(mf::amax(x, {1})).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0.5, 0.5, 0, 0, 0.5, 0, 0.5}));
  x.zero_grad();
  mf::max(x).backward();  // ties over the whole tensor: 5 appears twice
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0, 0, 0, 0.5, 0, 0.5}));
  x.zero_grad();
  mf::sum(mf::max(x, 1).first).backward();  // the selected (first) index only
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 0, 0, 1, 0, 0}));
  x.zero_grad();
  auto [v, i] = mf::min(x, 0, true);
  EXPECT_FALSE(i.requires_grad());
  mf::sum(v).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 1, 1, 1, 0, 0, 0}));
}

TEST(ReductionGrad, SixteenBitGradients) {
  // Backward kernels run in float for bfloat16; compare with float64 autograd.
  const Tensor x64 = random_tensor({5, 7, 3}, 60);
  Tensor xb = x64.to(DType::BFloat16);
  Tensor xr = xb.to(DType::Float64);
  xb.requires_grad_();
  xr.requires_grad_();
  const Tensor w = random_tensor({5, 7, 3}, 61);
  const Tensor wb = w.to(DType::BFloat16);
  mf::sum(mf::softmax(xb, 1) * wb).backward();
  mf::sum(mf::softmax(xr, 1) * wb.to(DType::Float64)).backward();
  mftest::expect_close(xb.grad(), xr.grad(), 1e-2, 2e-2, "softmax bf16 grad");
  xb.zero_grad();
  xr.zero_grad();
  mf::sum(mf::logsumexp(xb, {0, 2})).backward();
  mf::sum(mf::logsumexp(xr, {0, 2})).backward();
  mftest::expect_close(xb.grad(), xr.grad(), 1e-2, 2e-2, "logsumexp bf16 grad");
}

// ---- Shape rules and errors ----

TEST(ReductionErrors, DimOutOfRangeNamesOpDimAndNdim) {
  const Tensor x = random_tensor({5, 7, 3}, 70);
  mftest::expect_error([&] { mf::sum(x, {3}); }, {"sum", "dim 3", "3 dims"});
  mftest::expect_error([&] { mf::amax(x, {-4}); }, {"amax", "dim -4", "3 dims"});
  mftest::expect_error([&] { mf::max(x, 5); }, {"max_dim", "dim 5", "3 dims"});
  mftest::expect_error([&] { mf::argmin(x, -9); }, {"argmin", "dim -9", "3 dims"});
  mftest::expect_error([&] { mf::logsumexp(x, {0, 3}); }, {"logsumexp", "dim 3", "3 dims"});
  mftest::expect_error([&] { mf::var(x, {7}); }, {"var", "dim 7", "3 dims"});
  mftest::expect_error([&] { mf::softmax(x, 3); }, {"softmax", "dim 3", "3 dims"});
  mftest::expect_error([&] { mf::log_softmax(x, -4); }, {"log_softmax", "dim -4", "3 dims"});
}

TEST(ReductionErrors, RepeatedDim) {
  const Tensor x = random_tensor({5, 7, 3}, 71);
  mftest::expect_error([&] { mf::sum(x, {1, -2}); }, {"sum", "dim 1", "more than once", "[1, -2]"});
  mftest::expect_error([&] { mf::amin(x, {0, 0}); }, {"amin", "dim 0", "more than once"});
  mftest::expect_error([&] { mf::var(x, {2, -1}); }, {"var", "dim 2", "more than once"});
}

TEST(ReductionErrors, MaxLikeOverEmptyDim) {
  const Tensor e = mf::zeros({3, 0, 2});
  mftest::expect_error([&] { mf::max(e, 1); }, {"max_dim", "dim 1", "size 0", "[3, 0, 2]"});
  mftest::expect_error([&] { mf::max(e); }, {"max", "size 0", "[3, 0, 2]"});
  mftest::expect_error([&] { mf::amin(e, {-2, 0}); }, {"amin", "dim 1", "[3, 0, 2]"});
  mftest::expect_error([&] { mf::argmax(e); }, {"argmax", "size 0", "[3, 0, 2]"});
  mftest::expect_error([&] { mf::argmin(e, 1); }, {"argmin", "size 0", "[3, 0, 2]"});
}

TEST(ReductionErrors, DtypeAndShapeMismatch) {
  const Tensor i = random_ints({4, 5}, 72, -3, 3, DType::Int32);
  mftest::expect_error([&] { mf::mean(i); }, {"mean", "int32"});
  mftest::expect_error([&] { mf::var(i, {1}); }, {"var", "int32[4, 5]"});
  mftest::expect_error([&] { mf::softmax(i, 1); }, {"softmax", "int32[4, 5]"});
  mftest::expect_error([&] { mf::log_softmax(i, 0); }, {"log_softmax", "int32"});
  const Tensor y = mf::softmax(random_tensor({4, 5}, 73), 1);
  mftest::expect_error(
      [&] {
        mf::softmax_backward(random_tensor({4, 6}, 74), y, 1);
      },
      {"softmax_backward", "[4, 6]", "[4, 5]"});
}

TEST(Reduction, FakeModeRunsShapeRulesOnly) {
  mf::IncludeKeyGuard fake(mf::DispatchKey::Fake);
  const Tensor x = mf::empty({5, 7, 3}, {.dtype = DType::BFloat16});
  ASSERT_TRUE(x.is_fake());
  EXPECT_EQ(mf::sum(x, {0, -1}, true).sizes(), (Shape{1, 7, 1}));
  auto [v, i] = mf::max(x, 1);
  EXPECT_EQ(v.sizes(), (Shape{5, 3}));
  EXPECT_EQ(i.dtype(), DType::Int64);
  EXPECT_EQ(mf::argmax(x).sizes(), Shape{});
  EXPECT_EQ(mf::logsumexp(x, {2}).dtype(), DType::BFloat16);
  EXPECT_EQ(mf::var(x, {}, 1.0, true).sizes(), (Shape{1, 1, 1}));
  EXPECT_EQ(mf::softmax(x, -1).sizes(), x.sizes());
  mftest::expect_error([&] { mf::amax(x, {1, 1}); }, {"amax", "more than once"});
  mftest::expect_error([&] { mf::max(mf::empty({0, 3}), 0); }, {"max_dim", "size 0"});
}

}  // namespace
