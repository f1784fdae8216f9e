// matmul (every rank case, batch broadcasting, strided operands, dtypes), bmm and linear
// against a naive float64 reference; gradcheck for each; shape and dtype errors.
#include <random>

#include "test_util.h"

namespace mf = microflex;
using mf::DType;
using mf::Shape;
using mf::Tensor;

namespace {

// Uniform values in [-2, 2) (integers in [-5, 5] for integer dtypes), fixed seed.
Tensor random_tensor(const Shape& shape, uint32_t seed, DType dt = DType::Float64) {
  std::mt19937 gen(seed);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(shape)));
  if (mf::is_floating(dt)) {
    std::uniform_real_distribution<double> u(-2.0, 2.0);
    for (double& x : v) x = u(gen);
  } else {
    std::uniform_int_distribution<int> u(-5, 5);
    for (double& x : v) x = u(gen);
  }
  return mf::from_vector(v, shape, {.dtype = DType::Float64}).to(dt);
}

Tensor requires_grad(Tensor t) {
  t.requires_grad_();
  return t;
}

// Naive float64 matmul with PyTorch's rank rules, written independently of the library:
// promote 1-D operands, broadcast the batch dims index by index, triple loop.
std::pair<std::vector<double>, Shape> ref_matmul(const Tensor& a, const Tensor& b) {
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  Shape as = a.sizes(), bs = b.sizes();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const size_t nb = std::max(as.size(), bs.size()) - 2;
  Shape ab(nb, 1), bb(nb, 1), batch(nb);
  for (size_t i = 0; i < as.size() - 2; ++i) ab[nb - (as.size() - 2) + i] = as[i];
  for (size_t i = 0; i < bs.size() - 2; ++i) bb[nb - (bs.size() - 2) + i] = bs[i];
  int64_t nbatch = 1;
  for (size_t i = 0; i < nb; ++i) {
    batch[i] = std::max(ab[i], bb[i]);
    nbatch *= batch[i];
  }
  std::vector<double> out(static_cast<size_t>(nbatch * M * N), 0.0);
  for (int64_t bi = 0; bi < nbatch; ++bi) {
    // Flat batch index -> per-operand flat batch index (size-1 dims broadcast).
    int64_t rem = bi, ia = 0, ib = 0, sa = 1, sb = 1;
    for (size_t d = nb; d-- > 0;) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      ia += (ab[d] == 1 ? 0 : idx) * sa;
      ib += (bb[d] == 1 ? 0 : idx) * sb;
      sa *= ab[d];
      sb *= bb[d];
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0.0;
        for (int64_t k = 0; k < K; ++k)
          acc += av[static_cast<size_t>((ia * M + m) * K + k)] *
                 bv[static_cast<size_t>((ib * K + k) * N + n)];
        out[static_cast<size_t>((bi * M + m) * N + n)] = acc;
      }
  }
  Shape out_shape = batch;
  if (a.dim() > 1) out_shape.push_back(M);
  if (b.dim() > 1) out_shape.push_back(N);
  return {out, out_shape};
}

void expect_matmul(const Tensor& a, const Tensor& b, double atol, double rtol) {
  const Tensor c = mf::matmul(a, b);
  const auto [ref, shape] = ref_matmul(a, b);
  const std::string what =
      mf::shape_str(a.sizes()) + " @ " + mf::shape_str(b.sizes()) + " " + mf::dtype_name(a.dtype());
  ASSERT_EQ(c.sizes(), shape) << what;
  EXPECT_EQ(c.dtype(), a.dtype()) << what;
  mftest::expect_close(c.to_vector<double>(), ref, atol, rtol, what);
}

// Every rank case of matmul, with odd sizes.
const std::vector<std::pair<Shape, Shape>> kRankCases = {
    {{97}, {97}},               // dot
    {{5, 7}, {7}},              // matrix @ vector
    {{7}, {7, 3}},              // vector @ matrix
    {{5, 7}, {7, 3}},           // matrix @ matrix
    {{97, 33}, {33, 61}},       // larger, odd
    {{4, 5, 7}, {7, 3}},        // batched @ matrix
    {{5, 7}, {4, 7, 3}},        // matrix @ batched
    {{4, 5, 7}, {4, 7, 3}},     // batched, same batch
    {{2, 1, 5, 7}, {3, 7, 3}},  // batch dims broadcast both ways -> [2, 3, 5, 3]
    {{7}, {2, 7, 3}},           // vector @ batched -> [2, 3]
    {{2, 5, 7}, {7}},           // batched @ vector -> [2, 5]
    {{5, 0}, {0, 3}},           // K = 0: zeros
    {{0, 7}, {7, 3}},           // M = 0: empty
};

}  // namespace

TEST(Linalg, MatmulRankCasesFloat64) {
  uint32_t seed = 1;
  for (const auto& [sa, sb] : kRankCases) {
    // float64 against a float64 reference: only summation order differs.
    expect_matmul(random_tensor(sa, seed), random_tensor(sb, seed + 100), 1e-12, 1e-12);
    ++seed;
  }
}

TEST(Linalg, MatmulStridedOperandsAreReadInPlace) {
  // Transposed views (column-major operands), step slices (no unit stride at all) and
  // expanded (stride 0) batch dims.
  const Tensor at = random_tensor({7, 5}, 11).t();                             // [5, 7]
  const Tensor bt = random_tensor({3, 7}, 12).t();                             // [7, 3]
  const Tensor as = random_tensor({5, 14}, 13).slice(1, 0, 14, 2);             // [5, 7]
  const Tensor bs = random_tensor({14, 3}, 14).slice(0, 1, 14, 2);             // [7, 3]
  const Tensor ab = random_tensor({4, 7, 5}, 15).transpose(-1, -2);            // [4, 5, 7]
  const Tensor be = random_tensor({7, 3}, 16).unsqueeze(0).expand({4, 7, 3});  // [4, 7, 3]
  const Tensor v = random_tensor({14}, 17).slice(0, 0, 14, 2);                 // [7], stride 2
  ASSERT_FALSE(at.is_contiguous());
  ASSERT_FALSE(as.is_contiguous());
  for (const auto& [a, b] : std::vector<std::pair<Tensor, Tensor>>{{at, bt},
                                                                   {as, bs},
                                                                   {at, bs},
                                                                   {as, bt},
                                                                   {ab, be},
                                                                   {ab, bt},
                                                                   {at, v},
                                                                   {v, bt},
                                                                   {v, v},
                                                                   {ab, v}}) {
    expect_matmul(a, b, 1e-12, 1e-12);
  }
}

TEST(Linalg, MatmulDtypes) {
  // Inputs are drawn once and rounded to each dtype; the reference multiplies the
  // rounded values in float64, so only accumulation and output rounding differ:
  // float32 ~1e-6 relative (K = 33 terms of magnitude <= 4, so atol 1e-5);
  // float16 accumulates in float32 and rounds once (half ulp 4.9e-4): rtol 1e-3;
  // bfloat16 likewise (half ulp 3.9e-3): rtol 1e-2; integers are exact.
  struct Case {
    DType dt;
    double atol, rtol;
  };
  for (const Case& c :
       {Case{DType::Float32, 1e-5, 1e-6}, Case{DType::Float16, 1e-3, 1e-3},
        Case{DType::BFloat16, 1e-2, 1e-2}, Case{DType::Int32, 0, 0}, Case{DType::Int64, 0, 0}}) {
    for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{
             {{33}, {33}}, {{5, 33}, {33, 7}}, {{2, 1, 5, 33}, {3, 33, 7}}, {{33}, {2, 33, 7}}}) {
      expect_matmul(random_tensor(sa, 21, c.dt), random_tensor(sb, 22, c.dt), c.atol, c.rtol);
    }
    // A transposed operand in every dtype.
    expect_matmul(random_tensor({33, 5}, 23, c.dt).t(), random_tensor({7, 33}, 24, c.dt).t(),
                  c.atol, c.rtol);
  }
}

TEST(Linalg, MatmulGradcheckEveryRankCase) {
  uint32_t seed = 31;
  const std::vector<std::pair<Shape, Shape>> cases = {{{5}, {5}},
                                                      {{3, 5}, {5}},
                                                      {{5}, {5, 4}},
                                                      {{3, 5}, {5, 4}},
                                                      {{2, 3, 5}, {5, 4}},
                                                      {{3, 5}, {2, 5, 4}},
                                                      {{2, 1, 3, 5}, {3, 5, 4}},
                                                      {{5}, {2, 5, 4}},
                                                      {{2, 3, 5}, {5}}};
  for (const auto& [sa, sb] : cases) {
    const Tensor a = requires_grad(random_tensor(sa, seed++));
    const Tensor b = requires_grad(random_tensor(sb, seed++));
    const auto r =
        mf::gradcheck([](const mf::TensorList& x) { return mf::matmul(x[0], x[1]); }, {a, b});
    EXPECT_TRUE(r.ok) << mf::shape_str(sa) << " @ " << mf::shape_str(sb) << ": " << r.message;
  }
  // Non-contiguous inputs: a transposed matrix and a strided vector.
  const Tensor base = requires_grad(random_tensor({5, 3}, seed++));
  const Tensor vbase = requires_grad(random_tensor({10}, seed++));
  const auto r = mf::gradcheck(
      [](const mf::TensorList& x) {
        return mf::matmul(x[0].t(), x[1].slice(0, 0, 10, 2).unsqueeze(1).expand({5, 2}));
      },
      {base, vbase});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Linalg, MatmulBackwardSumsBroadcastBatch) {
  // a [2, 1, 3, 4] and b [5, 4, 2] broadcast to batch [2, 5]: grad_b sums over the
  // broadcast dim of size 2 -> b.grad = sum_i a_i^T @ g_i with g = ones.
  const Tensor a = requires_grad(random_tensor({2, 1, 3, 4}, 41));
  const Tensor b = requires_grad(random_tensor({5, 4, 2}, 42));
  mf::matmul(a, b).sum().backward();
  ASSERT_EQ(b.grad().sizes(), (Shape{5, 4, 2}));
  ASSERT_EQ(a.grad().sizes(), (Shape{2, 1, 3, 4}));
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> gb(40, 0.0), ga(24, 0.0);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 5; ++j)
      for (int m = 0; m < 3; ++m)
        for (int k = 0; k < 4; ++k)
          for (int n = 0; n < 2; ++n) {
            gb[(j * 4 + k) * 2 + n] += av[(i * 3 + m) * 4 + k];
            ga[(i * 3 + m) * 4 + k] += bv[(j * 4 + k) * 2 + n];
          }
  mftest::expect_close(b.grad().to_vector<double>(), gb, 1e-12, 1e-12, "grad b");
  mftest::expect_close(a.grad().to_vector<double>(), ga, 1e-12, 1e-12, "grad a");
}

TEST(Linalg, Bmm) {
  const Tensor a = random_tensor({3, 5, 7}, 51), b = random_tensor({3, 7, 2}, 52);
  expect_matmul(a, b, 1e-12, 1e-12);
  const Tensor c = mf::bmm(a, b);
  const auto [ref, shape] = ref_matmul(a, b);
  EXPECT_EQ(c.sizes(), (Shape{3, 5, 2}));
  mftest::expect_close(c.to_vector<double>(), ref, 1e-12, 1e-12);
  const auto r = mf::gradcheck(
      [](const mf::TensorList& x) { return mf::bmm(x[0], x[1]); },
      {requires_grad(random_tensor({2, 3, 4}, 53)), requires_grad(random_tensor({2, 4, 5}, 54))});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Linalg, Linear) {
  const Tensor x = random_tensor({2, 3, 5}, 61), w = random_tensor({4, 5}, 62);
  const Tensor bias = random_tensor({4}, 63);
  const Tensor y = mf::linear(x, w, bias);
  ASSERT_EQ(y.sizes(), (Shape{2, 3, 4}));
  const std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>(),
                            bv = bias.to_vector<double>();
  std::vector<double> ref(24);
  for (int r = 0; r < 6; ++r)
    for (int o = 0; o < 4; ++o) {
      double acc = bv[o];
      for (int i = 0; i < 5; ++i) acc += xv[r * 5 + i] * wv[o * 5 + i];
      ref[r * 4 + o] = acc;
    }
  mftest::expect_close(y.to_vector<double>(), ref, 1e-12, 1e-12);
  EXPECT_EQ(mf::linear(random_tensor({5}, 64), w).sizes(), (Shape{4}));

  const auto with_bias = mf::gradcheck(
      [](const mf::TensorList& t) { return mf::linear(t[0], t[1], t[2]); },
      {requires_grad(random_tensor({2, 3, 5}, 65)), requires_grad(random_tensor({4, 5}, 66)),
       requires_grad(random_tensor({4}, 67))});
  EXPECT_TRUE(with_bias.ok) << with_bias.message;
  const auto no_bias = mf::gradcheck(
      [](const mf::TensorList& t) { return mf::linear(t[0].t(), t[1]); },
      {requires_grad(random_tensor({5, 3}, 68)), requires_grad(random_tensor({4, 5}, 69))});
  EXPECT_TRUE(no_bias.ok) << no_bias.message;
}

TEST(Linalg, ShapeRuleUnderFakeTensors) {
  const Tensor a = Tensor::make({2, 1, 5, 7}, DType::Float32, mf::Device::cpu(), true);
  const Tensor b = Tensor::make({3, 7, 4}, DType::Float32, mf::Device::cpu(), true);
  const Tensor c = mf::matmul(a, b);
  EXPECT_TRUE(c.is_fake());
  EXPECT_EQ(c.sizes(), (Shape{2, 3, 5, 4}));
  const Tensor bad = Tensor::make({6, 4}, DType::Float32, mf::Device::cpu(), true);
  mftest::expect_error([&] { mf::matmul(a, bad); }, {"matmul", "[2, 1, 5, 7]", "[6, 4]", "7 != 6"});
}

TEST(Linalg, Errors) {
  const Tensor a = random_tensor({2, 3}, 71), b = random_tensor({4, 5}, 72);
  mftest::expect_error([&] { mf::matmul(a, b); },
                       {"matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)"});
  mftest::expect_error([&] { mf::matmul(random_tensor({3}, 73), random_tensor({4}, 74)); },
                       {"matmul", "[3]", "[4]", "3 != 4"});
  mftest::expect_error([&] { mf::matmul(random_tensor({}, 75), a); },
                       {"matmul", "at least 1 dim", "[]", "[2, 3]"});
  mftest::expect_error(
      [&] {
        mf::matmul(random_tensor({2, 2, 3}, 76), random_tensor({3, 3, 4}, 77));
      },
      {"matmul", "batch dims", "[2, 2, 3]", "[3, 3, 4]", "2 vs 3"});
  mftest::expect_error(
      [&] {
        mf::matmul(a, random_tensor({3, 2}, 78, DType::Float32));
      },
      {"matmul", "same dtype", "float64", "float32"});
  mftest::expect_error(
      [&] {
        mf::bmm(random_tensor({2, 3}, 79), random_tensor({2, 3, 4}, 80));
      },
      {"bmm", "3-D", "[2, 3]", "[2, 3, 4]"});
  mftest::expect_error(
      [&] {
        mf::bmm(random_tensor({2, 3, 4}, 81), random_tensor({3, 4, 5}, 82));
      },
      {"bmm", "batch", "[2, 3, 4]", "[3, 4, 5]", "2 != 3"});
  mftest::expect_error(
      [&] {
        mf::bmm(random_tensor({2, 3, 4}, 83), random_tensor({2, 5, 5}, 84));
      },
      {"bmm", "[2, 3, 4]", "[2, 5, 5]", "4 != 5"});
  mftest::expect_error(
      [&] {
        mf::linear(random_tensor({2, 6}, 85), random_tensor({4, 5}, 86));
      },
      {"linear", "[2, 6]", "[4, 5]"});
  mftest::expect_error(
      [&] {
        mf::linear(random_tensor({2, 5}, 87), random_tensor({5}, 88));
      },
      {"linear", "weight", "2-D", "[5]"});
  mftest::expect_error(
      [&] {
        mf::linear(random_tensor({2, 5}, 89), random_tensor({4, 5}, 90), random_tensor({3}, 91));
      },
      {"linear", "bias", "[3]", "[4, 5]"});
}
