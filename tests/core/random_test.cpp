// The Philox generator and the random factories: known answers, reproducibility that
// does not depend on the shape, sample statistics and ranges, and errors.
#include <algorithm>
#include <cmath>

#include "core/random.h"
#include "kernels/cpu/philox.h"
#include "test_util.h"

namespace mf = microflex;
namespace ph = microflex::philox;

namespace {

// Sample mean and (biased) variance of a tensor's values.
void moments(const mf::Tensor& t, double* mean, double* var) {
  const std::vector<double> v = t.to_vector<double>();
  double s = 0;
  for (double x : v) s += x;
  *mean = s / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - *mean) * (x - *mean);
  *var = ss / static_cast<double>(v.size());
}

constexpr int64_t kSamples = 100000;

}  // namespace

// Random123's published known-answer vectors for Philox4x32-10.
TEST(Random, PhiloxKnownAnswers) {
  auto check = [](ph::Block ctr, uint32_t k0, uint32_t k1, ph::Block want) {
    const ph::Block got = ph::philox4x32_10(ctr, k0, k1);
    for (int j = 0; j < 4; ++j) EXPECT_EQ(got.x[j], want.x[j]) << "word " << j;
  };
  check({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  check({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
        {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  check({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
        {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

// Element i of a call is the Philox block (counter {i, offset}, key seed): seed 0,
// offset 0, element 0 is the all-zero known answer.
TEST(Random, ElementLayout) {
  mf::manual_seed(0);
  const std::vector<float> v = mf::rand({3}).to_vector<float>();
  EXPECT_EQ(v[0], static_cast<float>(0x6627e8d5u >> 8) / 16777216.0f);
  const uint64_t seed = 0x123456789abcdefull;
  mf::manual_seed(seed);
  mf::rand({1});
  mf::rand({1});
  const std::vector<double> w = mf::rand({7}, {.dtype = mf::DType::Float64}).to_vector<double>();
  for (uint64_t i = 0; i < 7; ++i) {
    const ph::Block b = ph::element_block(seed, 2, i);
    EXPECT_EQ(w[i], ph::uniform_double(b.x[0], b.x[1])) << i;
  }
}

TEST(Random, SameSeedSameNumbersAnyShape) {
  for (mf::DType dt :
       {mf::DType::Float32, mf::DType::Float64, mf::DType::Float16, mf::DType::BFloat16}) {
    mf::manual_seed(1234);
    const mf::Tensor a = mf::rand({6}, {.dtype = dt});
    mf::manual_seed(1234);
    const mf::Tensor b = mf::rand({2, 3}, {.dtype = dt});
    EXPECT_EQ(a.to_vector<double>(), b.flatten().to_vector<double>()) << dt;
    mf::manual_seed(1234);
    const mf::Tensor c = mf::randn({6}, {.dtype = dt});
    mf::manual_seed(1234);
    const mf::Tensor d = mf::randn({3, 1, 2}, {.dtype = dt});
    EXPECT_EQ(c.to_vector<double>(), d.flatten().to_vector<double>()) << dt;
  }
  mf::manual_seed(99);
  const mf::Tensor a = mf::randint(-5, 1000, {12});
  mf::manual_seed(99);
  const mf::Tensor b = mf::randint(-5, 1000, {4, 3});
  EXPECT_EQ(a.to_vector<int64_t>(), b.flatten().to_vector<int64_t>());
  // A longer call starts with the numbers of a shorter one (same seed and offset).
  mf::manual_seed(99);
  const std::vector<float> s = mf::rand({5}).to_vector<float>();
  mf::manual_seed(99);
  const std::vector<float> l = mf::rand({50}).to_vector<float>();
  EXPECT_TRUE(std::equal(s.begin(), s.end(), l.begin()));
}

TEST(Random, OffsetAdvancesPerCall) {
  mf::manual_seed(5);
  EXPECT_EQ(mf::default_generator_state().offset, 0u);
  const std::vector<float> a = mf::rand({64}).to_vector<float>();
  EXPECT_EQ(mf::default_generator_state().offset, 1u);
  const std::vector<float> b = mf::rand({64}).to_vector<float>();
  EXPECT_EQ(mf::default_generator_state().offset, 2u);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  EXPECT_LE(same, 1);  // two independent 24-bit draws collide with probability 2^-24
  // Different seeds give different numbers too.
  mf::manual_seed(6);
  const std::vector<float> c = mf::rand({64}).to_vector<float>();
  EXPECT_NE(a, c);
  // Restoring a state replays the numbers.
  mf::manual_seed(5);
  mf::rand({1});
  const mf::PhiloxSeedOffset st = mf::default_generator_state();
  const std::vector<float> d = mf::rand({64}).to_vector<float>();
  mf::set_default_generator_state(st);
  EXPECT_EQ(mf::rand({64}).to_vector<float>(), d);
  EXPECT_EQ(d, b);
}

// The op's (seed, offset) attributes alone decide the numbers: calling the op again with
// the same attributes (as a replayed graph does) gives the same tensor.
TEST(Random, AttributesReplay) {
  const mf::OpDef& op = mf::op_named("randn");
  mf::Attrs a{
      {"shape", mf::Shape{4, 5}}, {"dtype", mf::DType::Float32}, {"device", mf::Device::cpu()}};
  mf::set_philox_attrs(a, {77, 3});
  const mf::Tensor x = mf::call_op1(op, {}, a);
  mf::manual_seed(1);  // the global generator plays no part
  const mf::Tensor y = mf::call_op1(op, {}, a);
  EXPECT_EQ(x.to_vector<float>(), y.to_vector<float>());
  mf::manual_seed(77);
  for (int i = 0; i < 3; ++i) mf::randn({1});
  EXPECT_EQ(mf::randn({4, 5}).to_vector<float>(), x.to_vector<float>());
}

// 100k samples: the sample mean of U[0,1) has sd sqrt(1/12/n) = 9.1e-4, the sample
// variance has sd sqrt((1/80 - 1/144)/n) = 2.4e-4; the bounds are 6 sd.
TEST(Random, UniformStatistics) {
  mf::manual_seed(2024);
  for (mf::DType dt :
       {mf::DType::Float32, mf::DType::Float64, mf::DType::Float16, mf::DType::BFloat16}) {
    const mf::Tensor u = mf::rand({kSamples}, {.dtype = dt});
    EXPECT_EQ(u.dtype(), dt);
    const std::vector<double> v = u.to_vector<double>();
    EXPECT_GE(*std::min_element(v.begin(), v.end()), 0.0) << dt;
    EXPECT_LT(*std::max_element(v.begin(), v.end()), 1.0) << dt;
    double m, var;
    moments(u, &m, &var);
    // bfloat16 keeps 8 bits: its values are multiples of 2^-8 with mean 0.5 - 2^-9; the
    // 2e-3 shift is allowed for on top of the statistical bound.
    const double shift = dt == mf::DType::BFloat16 ? 2.0e-3 : 0.0;
    EXPECT_NEAR(m, 0.5, 5.5e-3 + shift) << dt;
    EXPECT_NEAR(var, 1.0 / 12.0, 1.5e-3 + shift) << dt;
  }
}

// Normal: sample mean sd 1/sqrt(n) = 3.2e-3, sample variance sd sqrt(2/n) = 4.5e-3, the
// fraction within one sd has sd sqrt(0.68 * 0.32 / n) = 1.5e-3; bounds are 6 sd.
TEST(Random, NormalStatistics) {
  mf::manual_seed(7);
  for (mf::DType dt : {mf::DType::Float32, mf::DType::Float64, mf::DType::BFloat16}) {
    const mf::Tensor z = mf::randn({kSamples}, {.dtype = dt});
    double m, var;
    moments(z, &m, &var);
    EXPECT_NEAR(m, 0.0, 0.019) << dt;
    EXPECT_NEAR(var, 1.0, 0.027 + (dt == mf::DType::BFloat16 ? 0.01 : 0.0)) << dt;
    const std::vector<double> v = z.to_vector<double>();
    int64_t within = 0;
    for (double x : v) {
      ASSERT_TRUE(std::isfinite(x));
      within += std::abs(x) < 1.0;
    }
    EXPECT_NEAR(static_cast<double>(within) / kSamples, 0.682689, 0.009) << dt;
  }
}

// randint: every value in [low, high) appears, nothing outside; the mean of a uniform
// over {-3..3} (variance 4) has sd sqrt(4/n) = 6.3e-3, bound 6 sd.
TEST(Random, RandintRange) {
  mf::manual_seed(11);
  for (mf::DType dt : {mf::DType::Int64, mf::DType::Int32}) {
    const mf::Tensor r = mf::randint(-3, 4, {kSamples}, {.dtype = dt});
    EXPECT_EQ(r.dtype(), dt);
    const std::vector<int64_t> v = r.to_vector<int64_t>();
    std::vector<int64_t> counts(7, 0);
    double s = 0;
    for (int64_t x : v) {
      ASSERT_GE(x, -3);
      ASSERT_LT(x, 4);
      ++counts[x + 3];
      s += static_cast<double>(x);
    }
    for (int64_t c : counts) EXPECT_GT(c, 0);
    EXPECT_NEAR(s / kSamples, 0.0, 0.038);
  }
  // A range wider than int32 and one as wide as int64 allows.
  const std::vector<int64_t> big = mf::randint(0, int64_t(1) << 40, {1000}).to_vector<int64_t>();
  EXPECT_GT(*std::max_element(big.begin(), big.end()), int64_t(1) << 38);
  const int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  for (int64_t x : mf::randint(lo, hi, {100}).to_vector<int64_t>()) EXPECT_LT(x, hi);
  // high - low == 1: always low.
  for (int64_t x : mf::randint(41, 42, {10}).to_vector<int64_t>()) EXPECT_EQ(x, 41);
}

TEST(Random, Errors) {
  mftest::expect_error([] { mf::randint(5, 5, {3}); }, {"randint", "low < high", "5"});
  mftest::expect_error([] { mf::randint(0, 10, {3}, {.dtype = mf::DType::Float32}); },
                       {"randint", "integer dtype", "float32"});
  mftest::expect_error([] { mf::randint(0, int64_t(1) << 33, {3}, {.dtype = mf::DType::Int32}); },
                       {"randint", "int32", "8589934592"});
  mftest::expect_error([] { mf::rand({3}, {.dtype = mf::DType::Int64}); },
                       {"rand", "floating dtype", "int64"});
  mftest::expect_error([] { mf::randn({2, -1}); }, {"randn", "negative", "[2, -1]"});
}

TEST(Random, FakeModeShapesOnly) {
  mf::IncludeKeyGuard fake(mf::DispatchKey::Fake);
  const mf::Tensor t = mf::randn({3, 4}, {.dtype = mf::DType::BFloat16});
  EXPECT_TRUE(t.is_fake());
  EXPECT_EQ(t.sizes(), (mf::Shape{3, 4}));
  EXPECT_EQ(t.dtype(), mf::DType::BFloat16);
}
