// Elementwise ops against naive float64 references: unary, binary, comparison, logical,
// bitwise, where and clamp over every supported dtype, with broadcasting and
// non-contiguous inputs; type promotion; gradchecks; error messages.
#include <cmath>
#include <functional>
#include <random>

#include "test_util.h"

namespace mf = microflex;

namespace {

using mf::DType;
using mf::Shape;
using mf::Tensor;

const std::vector<DType> kFloatTypes = {DType::Float64, DType::Float32, DType::Float16,
                                        DType::BFloat16};
const std::vector<DType> kIntTypes = {DType::Int32, DType::Int64};

// Relative (and absolute, for results near 0) tolerance of a result of dtype `dt`: the
// kernels compute in float (float64 for float64) and round once, so half an ulp of the
// dtype plus float's own error: float16 2^-11, bfloat16 2^-8, float32 a few 2^-24.
double tol(DType dt) {
  switch (dt) {
    case DType::Float64:
      return 1e-12;
    case DType::Float32:
      return 1e-6;
    case DType::Float16:
      return 1e-3;
    case DType::BFloat16:
      return 1e-2;
    default:
      return 0;  // integers and bool are exact
  }
}

// Random values in [lo, hi] (integers when `integer`), with a fixed seed. `nonzero`
// keeps them at least 0.5 (or 1) away from 0, with either sign.
std::vector<double> rand_values(int64_t n, double lo, double hi, uint32_t seed, bool integer,
                                bool nonzero = false) {
  std::mt19937 gen(seed);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) {
    if (integer) {
      std::uniform_int_distribution<int64_t> d(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
      x = static_cast<double>(d(gen));
      while (nonzero && x == 0) x = static_cast<double>(d(gen));
    } else if (nonzero) {
      std::uniform_real_distribution<double> d(0.5, hi);
      x = d(gen) * (std::bernoulli_distribution(0.5)(gen) ? 1 : -1);
    } else {
      std::uniform_real_distribution<double> d(lo, hi);
      x = d(gen);
    }
  }
  return v;
}

// A random tensor of `shape`; `transposed` makes it a non-contiguous view (the last two
// dims swapped in memory), `integer` integer-valued.
Tensor rand_tensor(const Shape& shape, DType dt, double lo, double hi, uint32_t seed,
                   bool transposed = false, bool integer = false, bool nonzero = false) {
  integer = integer || !mf::is_floating(dt);
  const int64_t n = mf::shape_numel(shape);
  const std::vector<double> v = rand_values(n, lo, hi, seed, integer, nonzero);
  if (!transposed || shape.size() < 2) return mf::from_vector(v, shape, {.dtype = dt});
  Shape s = shape;
  std::swap(s[s.size() - 1], s[s.size() - 2]);
  const int64_t d = static_cast<int64_t>(shape.size());
  Tensor t = mf::from_vector(v, s, {.dtype = dt}).transpose(d - 1, d - 2);
  EXPECT_FALSE(t.is_contiguous());
  return t;
}

// A random bool tensor; `transposed` as for rand_tensor.
Tensor rand_bool(const Shape& shape, uint32_t seed, bool transposed = false) {
  if (!transposed) return rand_tensor(shape, DType::Int64, 0, 1, seed) != 0;
  Shape s = shape;
  std::swap(s[s.size() - 1], s[s.size() - 2]);
  const int64_t d = static_cast<int64_t>(shape.size());
  return (rand_tensor(s, DType::Int64, 0, 1, seed) != 0).transpose(d - 1, d - 2);
}

// t's values broadcast to `out`, in row-major order of `out`.
std::vector<double> broadcast_values(const Tensor& t, const Shape& out) {
  const std::vector<double> v = t.to_vector<double>();
  const Shape& s = t.sizes();
  const size_t lead = out.size() - s.size();
  std::vector<double> r(static_cast<size_t>(mf::shape_numel(out)));
  Shape idx(out.size(), 0);
  for (double& x : r) {
    int64_t off = 0;
    for (size_t d = 0; d < s.size(); ++d) off = off * s[d] + (s[d] == 1 ? 0 : idx[lead + d]);
    x = v[static_cast<size_t>(off)];
    for (int64_t d = static_cast<int64_t>(out.size()) - 1; d >= 0; --d) {
      if (++idx[d] < out[d]) break;
      idx[d] = 0;
    }
  }
  return r;
}

// A tensor from host values, of T's dtype unless `dt` is given (the factory's default
// options would make it float32).
template <typename T>
Tensor vec(const std::vector<T>& values, const Shape& shape = {},
           std::optional<DType> dt = std::nullopt) {
  const Shape s = shape.empty() ? Shape{static_cast<int64_t>(values.size())} : shape;
  return mf::from_vector(values, s, {.dtype = dt.value_or(mf::dtype_of<T>::value)});
}

std::string dt_name(DType dt) {
  return mf::dtype_name(dt);
}

// ---- References ----
double ref_gelu(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}
double ref_gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ref_sigmoid(double x) {
  return 1 / (1 + std::exp(-x));
}
double ref_remainder(double a, double b) {
  return a - std::floor(a / b) * b;
}
double ref_floor_divide(double a, double b) {
  return std::floor(a / b);
}

// ---- Unary ops ----

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> fn;
  std::function<double(double)> ref;
  double lo, hi;    // input range (positive for log, sqrt, ...)
  bool keeps_int;   // integer inputs keep their dtype (else float32)
  bool float_only;  // integer inputs are an error
  bool differentiable;
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return -x; }, [](double x) { return -x; }, -4, 4, true, false,
       true},
      {"abs", [](const Tensor& x) { return mf::abs(x); }, [](double x) { return std::abs(x); }, -4,
       4, true, false, true},
      {"sign", [](const Tensor& x) { return mf::sign(x); },
       [](double x) { return double((0 < x) - (x < 0)); }, -4, 4, true, false, true},
      {"exp", [](const Tensor& x) { return mf::exp(x); }, [](double x) { return std::exp(x); }, -4,
       4, false, false, true},
      {"exp2", [](const Tensor& x) { return mf::exp2(x); }, [](double x) { return std::exp2(x); },
       -4, 4, false, false, true},
      {"log", [](const Tensor& x) { return mf::log(x); }, [](double x) { return std::log(x); }, 0.2,
       6, false, false, true},
      {"log2", [](const Tensor& x) { return mf::log2(x); }, [](double x) { return std::log2(x); },
       0.2, 6, false, false, true},
      {"sqrt", [](const Tensor& x) { return mf::sqrt(x); }, [](double x) { return std::sqrt(x); },
       0.2, 6, false, false, true},
      {"rsqrt", [](const Tensor& x) { return mf::rsqrt(x); },
       [](double x) { return 1 / std::sqrt(x); }, 0.2, 6, false, false, true},
      {"sin", [](const Tensor& x) { return mf::sin(x); }, [](double x) { return std::sin(x); }, -4,
       4, false, false, true},
      {"cos", [](const Tensor& x) { return mf::cos(x); }, [](double x) { return std::cos(x); }, -4,
       4, false, false, true},
      {"tanh", [](const Tensor& x) { return mf::tanh(x); }, [](double x) { return std::tanh(x); },
       -4, 4, false, false, true},
      {"sigmoid", [](const Tensor& x) { return mf::sigmoid(x); }, ref_sigmoid, -6, 6, false, false,
       true},
      {"relu", [](const Tensor& x) { return mf::relu(x); }, [](double x) { return x > 0 ? x : 0; },
       -4, 4, true, false, true},
      {"gelu", [](const Tensor& x) { return mf::gelu(x); }, ref_gelu, -4, 4, false, true, true},
      {"gelu_tanh", [](const Tensor& x) { return mf::gelu(x, "tanh"); }, ref_gelu_tanh, -4, 4,
       false, true, true},
      {"silu", [](const Tensor& x) { return mf::silu(x); },
       [](double x) { return x * ref_sigmoid(x); }, -6, 6, false, true, true},
  };
}

TEST(Elementwise, UnaryOpsAllDtypes) {
  uint32_t seed = 1;
  for (const UnaryCase& c : unary_cases()) {
    for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16, DType::Int32,
                     DType::Int64}) {
      const bool is_int = !mf::is_floating(dt);
      if (is_int && c.float_only) continue;  // an error, tested below
      for (bool transposed : {false, true}) {
        const std::string what =
            std::string(c.name) + " " + dt_name(dt) + (transposed ? " transposed" : "");
        const Tensor x = rand_tensor({5, 7, 3}, dt, c.lo, c.hi, seed++, transposed);
        const Tensor y = c.fn(x);
        const DType out = is_int && !c.keeps_int ? DType::Float32 : dt;
        ASSERT_EQ(y.dtype(), out) << what;
        ASSERT_EQ(y.sizes(), x.sizes()) << what;
        std::vector<double> ref = x.to_vector<double>();
        for (double& v : ref) v = c.ref(v);
        mftest::expect_close(y.to_vector<double>(), ref, tol(out), tol(out), what);
      }
    }
  }
}

TEST(Elementwise, UnaryOddSizesAndBoolInputs) {
  // A 1-d odd length and a 0-d tensor.
  const Tensor x = rand_tensor({97}, DType::Float32, -3, 3, 7);
  std::vector<double> ref = x.to_vector<double>();
  for (double& v : ref) v = std::tanh(v);
  mftest::expect_close(mf::tanh(x).to_vector<double>(), ref, 1e-6, 1e-6, "tanh 97");
  const Tensor s = mf::scalar_tensor(0.5, {.dtype = DType::Float64});
  EXPECT_EQ(mf::exp(s).dim(), 0);
  EXPECT_NEAR(mf::exp(s).item<double>(), std::exp(0.5), 1e-15);
  // Floating unary ops of bool give float32, like PyTorch's.
  const Tensor b = vec<bool>({true, false});
  const Tensor e = mf::exp(b);
  EXPECT_EQ(e.dtype(), DType::Float32);
  mftest::expect_close(e.to_vector<double>(), {std::exp(1.0), 1.0}, 1e-6, 1e-6);
  EXPECT_EQ(mf::sign(b).dtype(), DType::Bool);
  // Integer abs, relu and neg stay integers, exactly.
  const Tensor i = vec<int64_t>({-7, 0, 5, -1});
  EXPECT_EQ(mf::abs(i).to_vector<int64_t>(), (std::vector<int64_t>{7, 0, 5, 1}));
  EXPECT_EQ(mf::relu(i).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 5, 0}));
  EXPECT_EQ(mf::sign(i).to_vector<int64_t>(), (std::vector<int64_t>{-1, 0, 1, -1}));
  // relu keeps NaN, like PyTorch.
  const Tensor n = vec<float>({NAN, -1.0f});
  EXPECT_TRUE(std::isnan(mf::relu(n).to_vector<double>()[0]));
}

// ---- Binary arithmetic ----

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> fn;
  std::function<double(double, double)> ref;
  double a_lo, a_hi, b_lo, b_hi;
  bool b_nonzero;  // b stays away from 0 (division)
  bool ints;       // integer dtypes supported
  bool int_to_float;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; },
       [](double a, double b) { return a + b; }, -5, 5, -5, 5, false, true, false},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; },
       [](double a, double b) { return a - b; }, -5, 5, -5, 5, false, true, false},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; },
       [](double a, double b) { return a * b; }, -5, 5, -5, 5, false, true, false},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; },
       [](double a, double b) { return a / b; }, -5, 5, -4, 4, true, true, true},
      {"maximum", [](const Tensor& a, const Tensor& b) { return mf::maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }, -5, 5, -5, 5, false, true, false},
      {"minimum", [](const Tensor& a, const Tensor& b) { return mf::minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }, -5, 5, -5, 5, false, true, false},
      {"remainder", [](const Tensor& a, const Tensor& b) { return mf::remainder(a, b); },
       ref_remainder, -9, 9, -4, 4, true, true, false},
      {"floor_divide", [](const Tensor& a, const Tensor& b) { return mf::floor_divide(a, b); },
       ref_floor_divide, -9, 9, -4, 4, true, true, false},
  };
}

TEST(Elementwise, BinaryOpsBroadcastAllDtypes) {
  uint32_t seed = 100;
  // a [5, 7, 3] with b [7, 1]; the transposed variant also makes b a strided slice.
  for (const BinaryCase& c : binary_cases()) {
    for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16, DType::Int32,
                     DType::Int64}) {
      const bool is_int = !mf::is_floating(dt);
      if (is_int && !c.ints) continue;
      for (bool strided : {false, true}) {
        const std::string what =
            std::string(c.name) + " " + dt_name(dt) + (strided ? " strided" : "");
        const Tensor a = rand_tensor({5, 7, 3}, dt, c.a_lo, c.a_hi, seed++, strided);
        Tensor b = rand_tensor({7, strided ? 2 : 1}, dt, c.b_lo, c.b_hi, seed++, false, false,
                               c.b_nonzero);
        if (strided) b = b.slice(1, 1, 2);  // [7, 1] with row stride 2
        const Tensor y = c.fn(a, b);
        const DType out = is_int && c.int_to_float ? DType::Float32 : dt;
        ASSERT_EQ(y.dtype(), out) << what;
        ASSERT_EQ(y.sizes(), (Shape{5, 7, 3})) << what;
        const std::vector<double> va = broadcast_values(a, y.sizes());
        const std::vector<double> vb = broadcast_values(b, y.sizes());
        std::vector<double> ref(va.size());
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = c.ref(va[i], vb[i]);
        mftest::expect_close(y.to_vector<double>(), ref, tol(out), tol(out), what);
      }
    }
  }
}

TEST(Elementwise, PowAllDtypes) {
  uint32_t seed = 200;
  for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16}) {
    // Positive bases, exponents in [-2, 2]; b [3] broadcasts along the last dim.
    const Tensor a = rand_tensor({5, 7, 3}, dt, 0.5, 3, seed++, true);
    const Tensor b = rand_tensor({3}, dt, -2, 2, seed++);
    const Tensor y = mf::pow(a, b);
    ASSERT_EQ(y.dtype(), dt);
    const std::vector<double> va = broadcast_values(a, y.sizes());
    const std::vector<double> vb = broadcast_values(b, y.sizes());
    std::vector<double> ref(va.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = std::pow(va[i], vb[i]);
    mftest::expect_close(y.to_vector<double>(), ref, tol(dt), tol(dt), "pow " + dt_name(dt));
    // Scalar exponent and Scalar base.
    const std::vector<double> xa = a.to_vector<double>();
    std::vector<double> r2, r3;
    for (double v : xa) {
      r2.push_back(v * v);
      r3.push_back(std::pow(1.5, v));
    }
    mftest::expect_close(mf::pow(a, 2).to_vector<double>(), r2, tol(dt), tol(dt), "pow ^2");
    EXPECT_EQ(mf::pow(1.5, a).dtype(), dt);
    mftest::expect_close(mf::pow(1.5, a).to_vector<double>(), r3, tol(dt), tol(dt), "1.5^x");
  }
  for (DType dt : kIntTypes) {
    const Tensor a = rand_tensor({4, 6}, dt, -4, 4, seed++);
    const Tensor b = rand_tensor({6}, dt, 0, 5, seed++);
    const Tensor y = mf::pow(a, b);
    ASSERT_EQ(y.dtype(), dt);
    const std::vector<double> va = broadcast_values(a, y.sizes());
    const std::vector<double> vb = broadcast_values(b, y.sizes());
    std::vector<double> ref(va.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = std::pow(va[i], vb[i]);
    mftest::expect_close(y.to_vector<double>(), ref, 0, 0, "pow " + dt_name(dt));
  }
  // Negative integer exponents of integer tensors: 1, -1 or 0, as PyTorch.
  const Tensor base = vec<int64_t>({1, -1, -1, 2, -3, 0});
  const Tensor e = vec<int64_t>({-3, -3, -2, -1, -2, 2});
  EXPECT_EQ(mf::pow(base, e).to_vector<int64_t>(), (std::vector<int64_t>{1, -1, 1, 0, 0, 0}));
  // An integer tensor to a float power is float32.
  const Tensor r = mf::pow(vec<int64_t>({4, 9}), 0.5);
  EXPECT_EQ(r.dtype(), DType::Float32);
  mftest::expect_close(r.to_vector<double>(), {2, 3}, 1e-6, 1e-6);
}

TEST(Elementwise, IntegerRemainderFloorDivideNegatives) {
  // Python semantics: the remainder has the divisor's sign, the quotient rounds to -inf.
  for (DType dt : kIntTypes) {
    const Tensor a = vec<int64_t>({7, -7, 7, -7, 0, 6, -6, 1}, {8}, dt);
    const Tensor b = vec<int64_t>({3, 3, -3, -3, 5, -2, -1, 4}, {8}, dt);
    EXPECT_EQ(mf::remainder(a, b).to_vector<int64_t>(),
              (std::vector<int64_t>{1, 2, -2, -1, 0, 0, 0, 1}));
    EXPECT_EQ(mf::floor_divide(a, b).to_vector<int64_t>(),
              (std::vector<int64_t>{2, -3, -3, 2, 0, -3, 6, 0}));
    EXPECT_EQ(mf::remainder(a, 3).dtype(), dt);
    EXPECT_EQ(mf::remainder(a, 3).to_vector<int64_t>(),
              (std::vector<int64_t>{1, 2, 1, 2, 0, 0, 0, 1}));
    EXPECT_EQ(mf::floor_divide(a, -4).to_vector<int64_t>(),
              (std::vector<int64_t>{-2, 1, -2, 1, 0, -2, 1, -1}));
    EXPECT_EQ(mf::remainder(10, b).to_vector<int64_t>(),
              (std::vector<int64_t>{1, 1, -2, -2, 0, 0, 0, 2}));
  }
  // Floats too, including the sign of a zero quotient.
  const Tensor fa = vec<double>({5.5, -5.5, 5.5, -5.5, 1.0});
  const Tensor fb = vec<double>({2, 2, -2, -2, -4});
  mftest::expect_close(mf::remainder(fa, fb).to_vector<double>(), {1.5, 0.5, -0.5, -1.5, -3}, 0, 0);
  mftest::expect_close(mf::floor_divide(fa, fb).to_vector<double>(), {2, -3, -3, 2, -1}, 0, 0);
  // Floating division by zero is IEEE, not an error.
  const Tensor z = mf::floor_divide(vec<double>({1.0, -1.0}), 0.0);
  EXPECT_EQ(z.to_vector<double>(), (std::vector<double>{INFINITY, -INFINITY}));
  EXPECT_TRUE(std::isnan(mf::remainder(vec<double>({1.0}), 0.0).item<double>()));
}

TEST(Elementwise, MaximumMinimumNaNAndBool) {
  const Tensor a = vec<double>({1, NAN, 3});
  const Tensor b = vec<double>({NAN, 2, 1});
  const std::vector<double> mx = mf::maximum(a, b).to_vector<double>();
  EXPECT_TRUE(std::isnan(mx[0]) && std::isnan(mx[1]));
  EXPECT_EQ(mx[2], 3);
  const Tensor p = vec<bool>({true, false, false});
  const Tensor q = vec<bool>({false, false, true});
  EXPECT_EQ(mf::maximum(p, q).to_vector<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(mf::minimum(p, q).to_vector<bool>(), (std::vector<bool>{false, false, false}));
}

TEST(Elementwise, TypePromotion) {
  const Tensor i32 = vec<int32_t>({1, 2, 3});
  const Tensor i64 = vec<int64_t>({4, 5, 6});
  const Tensor f16 = vec<double>({1, 2, 3}, {3}, DType::Float16);
  const Tensor f32 = vec<float>({1, 2, 3});
  const Tensor b = vec<bool>({true, false, true});
  EXPECT_EQ((i32 + i64).dtype(), DType::Int64);
  EXPECT_EQ((i32 + 2).dtype(), DType::Int32);      // an int number keeps int32
  EXPECT_EQ((i32 * 2.5).dtype(), DType::Float32);  // a float number: default float
  EXPECT_EQ((f16 * 2.5).dtype(), DType::Float16);  // same category: tensor wins
  EXPECT_EQ((f16 + f32).dtype(), DType::Float32);
  EXPECT_EQ((b + b).dtype(), DType::Bool);
  EXPECT_EQ((b + b).to_vector<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ((b * 3).dtype(), DType::Int64);
  EXPECT_EQ((i32 / i32).dtype(), DType::Float32);
  EXPECT_EQ(mf::maximum(i32, f16).dtype(), DType::Float16);
  EXPECT_EQ(mf::remainder(i32, 2.5).dtype(), DType::Float32);
  mftest::expect_close(mf::remainder(i32, 2.5).to_vector<double>(), {1, 2, 0.5}, 0, 0);
  EXPECT_EQ(mf::where(b, i32, f32).dtype(), DType::Float32);
  EXPECT_EQ(mf::where(b, i32, 2.5).dtype(), DType::Float32);
  EXPECT_EQ(mf::where(b, 7, i64).dtype(), DType::Int64);
  EXPECT_EQ(mf::clamp(i32, 0, 2).dtype(), DType::Int32);
  EXPECT_EQ(mf::clamp(i32, 0.5, std::nullopt).dtype(), DType::Float32);
  EXPECT_EQ(mf::clamp(f16, 0, 1).dtype(), DType::Float16);
  // Comparing an integer tensor with a float number compares in floating point.
  EXPECT_EQ((i32 < 2.5).to_vector<bool>(), (std::vector<bool>{true, true, false}));
  EXPECT_EQ((i32 == 2.0).to_vector<bool>(), (std::vector<bool>{false, true, false}));
}

// ---- Comparisons, logical and bitwise ----

TEST(Elementwise, ComparisonsAllDtypes) {
  using Cmp = std::function<Tensor(const Tensor&, const Tensor&)>;
  using Ref = std::function<bool(double, double)>;
  const std::vector<std::tuple<const char*, Cmp, Ref>> cases = {
      {"eq", [](const Tensor& a, const Tensor& b) { return a == b; },
       [](double a, double b) { return a == b; }},
      {"ne", [](const Tensor& a, const Tensor& b) { return a != b; },
       [](double a, double b) { return a != b; }},
      {"lt", [](const Tensor& a, const Tensor& b) { return a < b; },
       [](double a, double b) { return a < b; }},
      {"le", [](const Tensor& a, const Tensor& b) { return mf::le(a, b); },
       [](double a, double b) { return a <= b; }},
      {"gt", [](const Tensor& a, const Tensor& b) { return a > b; },
       [](double a, double b) { return a > b; }},
      {"ge", [](const Tensor& a, const Tensor& b) { return a >= b; },
       [](double a, double b) { return a >= b; }},
  };
  uint32_t seed = 300;
  for (const auto& [name, fn, ref] : cases) {
    for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16, DType::Int32,
                     DType::Int64, DType::Bool}) {
      // Small integer values so that ties occur; b [3] broadcasts, a is transposed.
      const bool is_bool = dt == DType::Bool;
      const Tensor a = is_bool ? rand_bool({4, 5, 3}, seed++, true)
                               : rand_tensor({4, 5, 3}, dt, -2, 2, seed++, true, true);
      const Tensor b =
          is_bool ? rand_bool({3}, seed++) : rand_tensor({3}, dt, -2, 2, seed++, false, true);
      const Tensor y = fn(a, b);
      const std::string what = std::string(name) + " " + dt_name(dt);
      ASSERT_EQ(y.dtype(), DType::Bool) << what;
      EXPECT_FALSE(y.requires_grad());
      const std::vector<double> va = broadcast_values(a, y.sizes());
      const std::vector<double> vb = broadcast_values(b, y.sizes());
      const std::vector<bool> got = y.to_vector<bool>();
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], ref(va[i], vb[i])) << what << " element " << i;
    }
  }
}

TEST(Elementwise, ComparisonsWithScalarsBothOrders) {
  const Tensor x = vec<double>({-1, 0, 1, 2});
  EXPECT_EQ((x == 1).to_vector<bool>(), (std::vector<bool>{false, false, true, false}));
  EXPECT_EQ((x != 1).to_vector<bool>(), (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ((x < 1).to_vector<bool>(), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ((x <= 1).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ((x > 1).to_vector<bool>(), (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ((x >= 1).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ((1 == x).to_vector<bool>(), (std::vector<bool>{false, false, true, false}));
  EXPECT_EQ((1 != x).to_vector<bool>(), (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ((1 < x).to_vector<bool>(), (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ((1 <= x).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ((1 > x).to_vector<bool>(), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ((1 >= x).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(mf::ge(x, 0.5).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  // NaN compares unequal to everything, itself included.
  const Tensor n = vec<double>({NAN});
  EXPECT_EQ((n == n).to_vector<bool>(), (std::vector<bool>{false}));
  EXPECT_EQ((n != n).to_vector<bool>(), (std::vector<bool>{true}));
}

TEST(Elementwise, LogicalOps) {
  uint32_t seed = 400;
  for (DType dt : {DType::Float32, DType::Float16, DType::Int64, DType::Int32, DType::Bool}) {
    const Tensor a = dt == DType::Bool ? rand_bool({6, 5}, seed++, true)
                                       : rand_tensor({6, 5}, dt, -1, 1, seed++, true, true);
    // b is int64 in [-1, 1] with a broadcast dim: mixed dtypes too.
    const Tensor b = rand_tensor({6, 1}, DType::Int64, -1, 1, seed++);
    const std::vector<double> va = broadcast_values(a, {6, 5}), vb = broadcast_values(b, {6, 5});
    const std::vector<bool> land = mf::logical_and(a, b).to_vector<bool>();
    const std::vector<bool> lor = mf::logical_or(a, b).to_vector<bool>();
    const std::vector<bool> lxor = mf::logical_xor(a, b).to_vector<bool>();
    const std::vector<bool> lnot = mf::logical_not(a).to_vector<bool>();
    for (size_t i = 0; i < va.size(); ++i) {
      const bool x = va[i] != 0, y = vb[i] != 0;
      ASSERT_EQ(land[i], x && y) << dt_name(dt) << " " << i;
      ASSERT_EQ(lor[i], x || y) << dt_name(dt) << " " << i;
      ASSERT_EQ(lxor[i], x != y) << dt_name(dt) << " " << i;
      ASSERT_EQ(lnot[i], !x) << dt_name(dt) << " " << i;
    }
    EXPECT_EQ(mf::logical_and(a, b).dtype(), DType::Bool);
  }
  // NaN is true.
  EXPECT_EQ(mf::logical_not(vec<float>({NAN, 0.0f})).to_vector<bool>(),
            (std::vector<bool>{false, true}));
}

TEST(Elementwise, BitwiseOpsAndOperators) {
  uint32_t seed = 500;
  for (DType dt : kIntTypes) {
    const Tensor a = rand_tensor({5, 4}, dt, -100, 100, seed++, true);
    const Tensor b = rand_tensor({4}, dt, -100, 100, seed++);
    const std::vector<double> va = broadcast_values(a, {5, 4}), vb = broadcast_values(b, {5, 4});
    const std::vector<int64_t> band = (a & b).to_vector<int64_t>();
    const std::vector<int64_t> bor = (a | b).to_vector<int64_t>();
    const std::vector<int64_t> bxor = (a ^ b).to_vector<int64_t>();
    const std::vector<int64_t> bnot = (~a).to_vector<int64_t>();
    EXPECT_EQ((a & b).dtype(), dt);
    for (size_t i = 0; i < va.size(); ++i) {
      const int64_t x = static_cast<int64_t>(va[i]), y = static_cast<int64_t>(vb[i]);
      ASSERT_EQ(band[i], x & y);
      ASSERT_EQ(bor[i], x | y);
      ASSERT_EQ(bxor[i], x ^ y);
      ASSERT_EQ(bnot[i], -x - 1);  // two's complement
    }
  }
  // int32 & int64 promotes to int64.
  EXPECT_EQ((vec<int32_t>({6}) & vec<int64_t>({3})).dtype(), DType::Int64);
  // On bool tensors the operators are logical.
  const Tensor p = vec<bool>({true, true, false, false});
  const Tensor q = vec<bool>({true, false, true, false});
  EXPECT_EQ((p & q).to_vector<bool>(), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ((p | q).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ((p ^ q).to_vector<bool>(), (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ((~p).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ((p & q).dtype(), DType::Bool);
}

// ---- where and clamp ----

TEST(Elementwise, WhereBroadcastAllDtypes) {
  uint32_t seed = 600;
  for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    // cond [5, 1, 3] (transposed), a [7, 1], b [3].
    const Tensor cond = rand_bool({5, 2, 3}, seed++).slice(1, 1, 2);
    const Tensor a =
        dt == DType::Bool ? rand_bool({7, 1}, seed++) : rand_tensor({7, 1}, dt, -5, 5, seed++);
    const Tensor b =
        dt == DType::Bool ? rand_bool({3}, seed++) : rand_tensor({3}, dt, -5, 5, seed++);
    const Tensor y = mf::where(cond, a, b);
    ASSERT_EQ(y.sizes(), (Shape{5, 7, 3}));
    ASSERT_EQ(y.dtype(), dt);
    const std::vector<double> vc = broadcast_values(cond, y.sizes());
    const std::vector<double> va = broadcast_values(a, y.sizes());
    const std::vector<double> vb = broadcast_values(b, y.sizes());
    std::vector<double> ref(vc.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = vc[i] != 0 ? va[i] : vb[i];
    mftest::expect_close(y.to_vector<double>(), ref, 0, 0, "where " + dt_name(dt));
  }
  const Tensor c = vec<bool>({true, false});
  const Tensor x = vec<float>({1, 2});
  EXPECT_EQ(mf::where(c, x, -1).to_vector<double>(), (std::vector<double>{1, -1}));
  EXPECT_EQ(mf::where(c, -1, x).to_vector<double>(), (std::vector<double>{-1, 2}));
}

TEST(Elementwise, ClampAllDtypes) {
  uint32_t seed = 700;
  struct Bounds {
    std::optional<double> lo, hi;
  };
  const std::vector<Bounds> bounds = {{-1, 2}, {-1, std::nullopt}, {std::nullopt, 2}, {3, 1}};
  for (DType dt : {DType::Float64, DType::Float32, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64}) {
    for (const Bounds& bd : bounds) {
      const Tensor x = rand_tensor({5, 7, 3}, dt, -4, 4, seed++, true);
      std::optional<mf::Scalar> lo, hi;
      if (bd.lo) lo = mf::Scalar(static_cast<int64_t>(*bd.lo));
      if (bd.hi) hi = mf::Scalar(static_cast<int64_t>(*bd.hi));
      const Tensor y = mf::clamp(x, lo, hi);
      ASSERT_EQ(y.dtype(), dt);
      std::vector<double> ref = x.to_vector<double>();
      for (double& v : ref) {
        if (bd.lo) v = std::max(v, *bd.lo);
        if (bd.hi) v = std::min(v, *bd.hi);
      }
      mftest::expect_close(y.to_vector<double>(), ref, 0, 0, "clamp " + dt_name(dt));
    }
  }
  // Float bounds of an integer tensor promote it; NaN stays NaN.
  const Tensor i = vec<int64_t>({-3, 0, 3});
  mftest::expect_close(mf::clamp(i, -0.5, 1.5).to_vector<double>(), {-0.5, 0, 1.5}, 0, 0);
  const Tensor n = vec<double>({NAN, 5});
  const std::vector<double> cn = mf::clamp(n, 0, 1).to_vector<double>();
  EXPECT_TRUE(std::isnan(cn[0]));
  EXPECT_EQ(cn[1], 1);
}

// ---- Gradients ----

void expect_gradcheck(const std::string& what,
                      const std::function<Tensor(const mf::TensorList&)>& fn,
                      const mf::TensorList& inputs) {
  const mf::GradcheckResult r = mf::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

Tensor leaf(const Shape& shape, double lo, double hi, uint32_t seed, bool transposed = false,
            bool nonzero = false) {
  Tensor t = rand_tensor(shape, DType::Float64, lo, hi, seed, transposed, false, nonzero);
  t.requires_grad_();
  return t;
}

TEST(Elementwise, GradcheckUnary) {
  uint32_t seed = 800;
  for (const UnaryCase& c : unary_cases()) {
    if (!c.differentiable) continue;
    if (std::string(c.name) == "sign") continue;  // zero gradient, checked below
    // abs and relu are not differentiable at 0: keep away from it.
    const bool kink = std::string(c.name) == "abs" || std::string(c.name) == "relu";
    for (bool transposed : {false, true}) {
      const Tensor x = leaf({3, 4}, kink ? 0.1 : c.lo, c.hi, seed++, transposed, kink);
      expect_gradcheck(std::string(c.name) + (transposed ? " transposed" : ""),
                       [&](const mf::TensorList& in) { return c.fn(in[0]); }, {x});
    }
  }
}

TEST(Elementwise, GradcheckBinaryBroadcast) {
  uint32_t seed = 900;
  for (const BinaryCase& c : binary_cases()) {
    if (std::string(c.name) == "floor_divide") continue;  // zero gradient, checked below
    // a [3, 4] with b [4]; then a transposed with b [3, 1].
    for (bool transposed : {false, true}) {
      const Tensor a = leaf({3, 4}, c.a_lo, c.a_hi, seed++, transposed);
      const Tensor b =
          leaf(transposed ? Shape{3, 1} : Shape{4}, c.b_lo, c.b_hi, seed++, false, c.b_nonzero);
      expect_gradcheck(std::string(c.name) + (transposed ? " transposed" : ""),
                       [&](const mf::TensorList& in) { return c.fn(in[0], in[1]); }, {a, b});
    }
  }
}

TEST(Elementwise, GradcheckPowWhereClamp) {
  const Tensor a = leaf({3, 4}, 0.5, 2.5, 1000, true);
  const Tensor b = leaf({4}, -2, 2, 1001);
  expect_gradcheck("pow", [](const mf::TensorList& in) { return mf::pow(in[0], in[1]); }, {a, b});
  expect_gradcheck("pow scalar exponent",
                   [](const mf::TensorList& in) { return mf::pow(in[0], 2.5); }, {a});
  expect_gradcheck("pow integer exponent",
                   [](const mf::TensorList& in) { return mf::pow(in[0], 3); }, {b});
  expect_gradcheck("pow scalar base", [](const mf::TensorList& in) { return mf::pow(1.7, in[0]); },
                   {b});

  const Tensor cond = rand_bool({3, 1}, 1002);
  const Tensor x = leaf({3, 4}, -2, 2, 1003, true);
  const Tensor y = leaf({4}, -2, 2, 1004);
  expect_gradcheck("where", [&](const mf::TensorList& in) { return mf::where(cond, in[0], in[1]); },
                   {x, y});
  expect_gradcheck("where scalar",
                   [&](const mf::TensorList& in) { return mf::where(cond, in[0], 0.5); }, {x});

  // Values on a grid away from the bounds, so the finite differences never cross them.
  const Tensor z =
      vec<double>({-1.7, -0.3, 0.2, 0.9, 1.4, 2.6}, {2, 3}).t().detach().requires_grad_();
  expect_gradcheck("clamp", [](const mf::TensorList& in) { return mf::clamp(in[0], -1, 1); }, {z});
  expect_gradcheck("clamp min",
                   [](const mf::TensorList& in) { return mf::clamp(in[0], 0.5, std::nullopt); },
                   {z});
  expect_gradcheck("clamp max",
                   [](const mf::TensorList& in) { return mf::clamp(in[0], std::nullopt, 0.5); },
                   {z});
}

TEST(Elementwise, SubgradientConventions) {
  // maximum/minimum split the gradient in half on ties.
  Tensor a = vec<double>({1, 2, 3}).requires_grad_();
  Tensor b = vec<double>({1, 1, 4}).requires_grad_();
  mf::maximum(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 1, 0}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 0, 1}));
  a.zero_grad();
  b.zero_grad();
  mf::minimum(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 0, 1}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 1, 0}));
  // Broadcast ties: b [1] gets the sum of its shares.
  Tensor s = vec<double>({2}).requires_grad_();
  Tensor t = vec<double>({2, 2, 5}).requires_grad_();
  mf::maximum(s, t).sum().backward();
  EXPECT_EQ(s.grad().to_vector<double>(), (std::vector<double>{1}));
  EXPECT_EQ(t.grad().to_vector<double>(), (std::vector<double>{0.5, 0.5, 1}));

  // abs and relu at 0 give 0; clamp passes the gradient at the bounds themselves.
  Tensor x = vec<double>({-1, 0, 2}).requires_grad_();
  mf::abs(x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{-1, 0, 1}));
  x.zero_grad();
  mf::relu(x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 1}));
  x.zero_grad();
  mf::clamp(x, 0, 2).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 1}));
  x.zero_grad();
  // sign and floor_divide: zero gradients; pow at a zero base: 0 for the exponent.
  mf::sign(x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
  x.zero_grad();
  mf::floor_divide(x, 2.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
  Tensor e = vec<double>({2, 0}).requires_grad_();
  Tensor base = vec<double>({0, 0}).requires_grad_();
  mf::pow(base, e).sum().backward();
  EXPECT_EQ(e.grad().to_vector<double>(), (std::vector<double>{0, 0}));
  EXPECT_EQ(base.grad().to_vector<double>(), (std::vector<double>{0, 0}));

  // where routes the gradient by the condition.
  Tensor p = vec<double>({1, 2, 3}).requires_grad_();
  Tensor q = vec<double>({4}).requires_grad_();
  const Tensor cond = vec<bool>({true, false, false});
  (mf::where(cond, p, q) * 3.0).sum().backward();
  EXPECT_EQ(p.grad().to_vector<double>(), (std::vector<double>{3, 0, 0}));
  EXPECT_EQ(q.grad().to_vector<double>(), (std::vector<double>{6}));
}

TEST(Elementwise, GradientDtypeFollowsInput) {
  // A float32 input with a float64 number: the gradient is float32.
  Tensor x = vec<float>({0.5f, 2.0f}).requires_grad_();
  mf::pow(x, 2.5).sum().backward();
  EXPECT_EQ(x.grad().dtype(), DType::Float32);
  mftest::expect_close(x.grad().to_vector<double>(),
                       {2.5 * std::pow(0.5, 1.5), 2.5 * std::pow(2.0, 1.5)}, 1e-6, 1e-6);
}

// ---- Errors ----

TEST(Elementwise, Errors) {
  const Tensor a = mf::zeros({2, 3});
  const Tensor b = mf::zeros({4});
  const Tensor bl = mf::zeros({2, 3}, {.dtype = DType::Bool});
  const Tensor i = mf::zeros({2, 3}, {.dtype = DType::Int64});
  mftest::expect_error([&] { mf::add(a, b); }, {"add", "[2, 3]", "[4]"});
  mftest::expect_error([&] { mf::maximum(a, b); }, {"maximum", "[2, 3]", "[4]"});
  mftest::expect_error([&] { (void)(a < b); }, {"lt", "[2, 3]", "[4]"});
  mftest::expect_error(
      [&] {
        mf::logical_and(a, mf::zeros({3, 2}));
      },
      {"logical_and", "[2, 3]", "[3, 2]"});
  mftest::expect_error([&] { mf::where(bl, a, b); }, {"where", "[2, 3]", "[4]"});
  mftest::expect_error([&] { mf::where(a, a, a); }, {"where", "bool", "float32[2, 3]"});
  mftest::expect_error([&] { mf::where(i, a, 1.0); }, {"where", "bool", "int64[2, 3]"});
  mftest::expect_error([&] { mf::pow(bl, bl); }, {"pow", "bool"});
  mftest::expect_error([&] { mf::pow(i, -1); }, {"pow", "negative integer", "int64[2, 3]"});
  mftest::expect_error([&] { mf::remainder(bl, bl); }, {"remainder", "bool"});
  mftest::expect_error([&] { mf::floor_divide(bl, bl); }, {"floor_divide", "bool"});
  mftest::expect_error([&] { mf::remainder(i, 0); }, {"remainder", "division by zero"});
  mftest::expect_error([&] { mf::floor_divide(i, mf::zeros({3}, {.dtype = DType::Int64})); },
                       {"floor_divide", "division by zero"});
  mftest::expect_error([&] { (void)(a & a); }, {"bitwise_and", "float32[2, 3]"});
  mftest::expect_error([&] { (void)(i | a); }, {"bitwise_or", "int64[2, 3]", "float32[2, 3]"});
  mftest::expect_error([&] { (void)(a ^ i); }, {"bitwise_xor", "float32"});
  mftest::expect_error([&] { (void)(~a); }, {"bitwise_not", "float32[2, 3]"});
  mftest::expect_error([&] { mf::abs(bl); }, {"abs", "bool"});
  mftest::expect_error([&] { mf::relu(bl); }, {"relu", "bool"});
  mftest::expect_error([&] { (void)(-bl); }, {"neg", "bool"});
  mftest::expect_error([&] { (void)(bl - bl); }, {"sub", "bool"});
  mftest::expect_error([&] { mf::gelu(i); }, {"gelu", "floating", "int64[2, 3]"});
  mftest::expect_error([&] { mf::silu(i); }, {"silu", "floating", "int64[2, 3]"});
  mftest::expect_error([&] { mf::gelu(a, "erf"); }, {"gelu", "approximate", "'erf'"});
  mftest::expect_error([&] { mf::clamp(a, std::nullopt, std::nullopt); }, {"clamp", "min", "max"});
  mftest::expect_error([&] { mf::clamp(bl, 0, 1); }, {"clamp", "bool"});
}

}  // namespace
