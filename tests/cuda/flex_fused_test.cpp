// The fused CUDA forward of flex_attention against the dense path on the same GPU inputs
// (fresh random data per row), the fully masked rows, and the on-disk kernel cache.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "cuda_test_util.h"
#include "microflex/microflex.h"
#include "ops/flex_attention/flex_attention.h"

namespace mf = microflex;
using T = mf::Tensor;

namespace {

mf::MaskMod causal() {
  return [](const T&, const T&, const T& q, const T& kv) { return q >= kv; };
}

struct Case {
  const char* name;
  int64_t B, Hq, Hkv, M, N, D, Dv;
  mf::DType dtype;
  mf::ScoreMod score_mod;
  mf::MaskMod mask_mod;  // empty: no BlockMask
};

std::vector<Case> cases() {
  const auto f32 = mf::DType::Float32, bf16 = mf::DType::BFloat16, f16 = mf::DType::Float16;
  std::vector<double> sl{0.5, 0.25, 0.125, 0.0625};
  T slopes = mf::from_vector(sl).to(mf::Device::cuda());
  mf::ScoreMod alibi = [slopes](const T& s, const T&, const T& h, const T& q, const T& kv) {
    return s + slopes.index({h}) * (kv - q);
  };
  mf::ScoreMod softcap = [](const T& s, const T&, const T&, const T&, const T&) {
    return mf::tanh(s / 20.0) * 20.0;
  };
  mf::MaskMod sliding = [](const T&, const T&, const T& q, const T& kv) {
    return mf::logical_and(q >= kv, (q - kv) <= 40);
  };
  std::vector<int64_t> docs;
  for (int64_t i = 0; i < 300; ++i) docs.push_back(i < 70 ? 0 : i < 200 ? 1 : 2);
  T doc = mf::from_vector(docs, {300}, {.dtype = mf::DType::Int32}).to(mf::Device::cuda());
  mf::MaskMod document = [doc](const T&, const T&, const T& q, const T& kv) {
    return doc.index({q}) == doc.index({kv});
  };
  // Key padding with a per-batch length: each side of the split mask_mod reads it
  // (Note [Split mask_mod]); queries past length + 20 have no keys (out 0, lse -inf).
  T lens = mf::from_vector(std::vector<int64_t>{230}, {1}, {.dtype = mf::DType::Int64})
               .to(mf::Device::cuda());
  mf::MaskMod padding = [lens](const T& b, const T&, const T& q, const T& kv) {
    return mf::logical_and(kv < lens.index({b}), q < lens.index({b}) + 20);
  };
  const int64_t N = 300;
  T bias = mftest::randn_on_gpu({2 * N + 1}, 7, f32);
  mf::ScoreMod relbias = [bias, N](const T& s, const T&, const T&, const T& q, const T& kv) {
    return s + bias.index({q - kv + N});
  };
  std::vector<Case> c;
  for (auto dt : {f32, bf16}) {
    c.push_back({"full", 2, 4, 4, 200, 200, 64, 64, dt, {}, {}});
    c.push_back({"causal", 2, 4, 4, 300, 300, 64, 64, dt, {}, causal()});
    c.push_back({"sliding_window", 1, 4, 4, 300, 300, 128, 128, dt, {}, sliding});
    c.push_back({"alibi", 1, 4, 4, 257, 257, 64, 64, dt, alibi, causal()});
    c.push_back({"softcap", 2, 4, 4, 130, 190, 128, 64, dt, softcap, {}});
    c.push_back({"document", 1, 4, 4, 300, 300, 64, 32, dt, {}, document});
    c.push_back({"relative_bias", 1, 4, 4, 300, 300, 64, 64, dt, relbias, causal()});
    c.push_back({"key_padding", 1, 2, 2, 300, 300, 128, 64, dt, softcap, padding});
    c.push_back({"gqa", 2, 4, 2, 97, 333, 64, 64, dt, {}, {}});
    c.push_back({"m_ne_n_tails", 1, 4, 4, 65, 1025, 128, 96, dt, {}, {}});
    c.push_back({"dv_wider_than_d", 1, 2, 2, 190, 211, 64, 128, dt, alibi, causal()});
  }
  // Tensor-core kernels only: float16, and head dims past 128 or not multiples of 16.
  for (auto dt : {bf16, f16}) {
    c.push_back({"causal_f16_or_bf16", 1, 3, 3, 389, 389, 64, 64, dt, softcap, causal()});
    c.push_back({"head_dim_80", 1, 2, 2, 300, 300, 80, 80, dt, {}, causal()});
    c.push_back({"head_dim_72_dv_40", 1, 2, 2, 200, 250, 72, 40, dt, alibi, {}});
    c.push_back({"head_dim_256", 1, 2, 2, 257, 257, 256, 256, dt, {}, causal()});
    c.push_back({"head_dim_200_dv_256", 1, 2, 1, 130, 300, 200, 256, dt, {}, sliding});
  }
  return c;
}

// out and lse of one call with the given kernel choice.
mf::FlexAttentionResult run(const Case& c, const T& q, const T& k, const T& v,
                            mf::FlexKernel kern) {
  mf::FlexAttentionOptions o;
  o.score_mod = c.score_mod;
  if (c.mask_mod)
    o.block_mask = mf::create_block_mask(c.mask_mod, 1, 1, c.M, c.N, mf::Device::cuda());
  o.enable_gqa = c.Hq != c.Hkv;
  o.return_lse = true;
  o.kernel = kern;
  return mf::flex_attention(q, k, v, o);
}

void expect_close_named(const T& got, const T& want, double rtol, const std::string& what) {
  const auto g = got.to(mf::Device::cpu()).to_vector<double>();
  const auto w = want.to(mf::Device::cpu()).to_vector<double>();
  ASSERT_EQ(g.size(), w.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isinf(w[i]) && g[i] == w[i]) continue;
    if (!(std::abs(g[i] - w[i]) <= rtol * (1.0 + std::abs(w[i])))) {
      if (bad++ < 3)
        ADD_FAILURE() << what << " at " << i << ": fused " << g[i] << ", dense " << w[i];
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

class FlexFusedTest : public mftest::CudaTest {};

// Tolerances: float32 1e-4 relative (both accumulate in float32, in different orders);
// bfloat16 1e-2 (the outputs are rounded to bfloat16, 8 bits of mantissa; the fused kernel
// also rounds P to bfloat16 before P V); float16 1e-2 for the same P rounding (11 bits).
TEST_F(FlexFusedTest, MatchesDense) {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    const T q = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.D}, seed++, c.dtype);
    const T k = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.D}, seed++, c.dtype);
    const T v = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.Dv}, seed++, c.dtype);
    const double tol = c.dtype == mf::DType::Float32 ? 1e-4 : 1e-2;
    if (c.dtype == mf::DType::Float32 && std::max(c.D, c.Dv) > 128) continue;
    const auto fused = run(c, q, k, v, mf::FlexKernel::Fused);
    const auto dense = run(c, q, k, v, mf::FlexKernel::Dense);
    const std::string what =
        std::string(c.name) + " " + mf::dtype_name(c.dtype) + " B" + std::to_string(c.B) + " Hq" +
        std::to_string(c.Hq) + " Hkv" + std::to_string(c.Hkv) + " M" + std::to_string(c.M) + " N" +
        std::to_string(c.N) + " D" + std::to_string(c.D) + " Dv" + std::to_string(c.Dv);
    expect_close_named(fused.out, dense.out, tol, what + " out");
    expect_close_named(fused.lse, dense.lse, tol, what + " lse");
  }
}

// Rows whose keys are all masked: out 0, lse -inf (no NaN).
TEST_F(FlexFusedTest, FullyMaskedRows) {
  Case c{"masked_rows",
         1,
         2,
         2,
         200,
         200,
         64,
         64,
         mf::DType::Float32,
         {},
         [](const T&, const T&, const T& q, const T& kv) {
           return mf::logical_and(q >= 100, q >= kv);
         }};
  const T q = mftest::randn_on_gpu({1, 2, 200, 64}, 1, c.dtype),
          k = mftest::randn_on_gpu({1, 2, 200, 64}, 2, c.dtype),
          v = mftest::randn_on_gpu({1, 2, 200, 64}, 3, c.dtype);
  const auto r = run(c, q, k, v, mf::FlexKernel::Fused);
  const auto out = r.out.to(mf::Device::cpu()).to_vector<double>();
  const auto lse = r.lse.to(mf::Device::cpu()).to_vector<double>();
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t m = 0; m < 100; ++m) {
      EXPECT_TRUE(std::isinf(lse[h * 200 + m]) && lse[h * 200 + m] < 0) << "row " << m;
      for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(out[(h * 200 + m) * 64 + d], 0.0);
    }
  const auto dense = run(c, q, k, v, mf::FlexKernel::Dense);
  expect_close_named(r.out, dense.out, 1e-4, "masked_rows out");
}

// float32 head dims past 128 have no fused kernel (SIMT limit): Auto falls back to the
// dense path, Fused says why it cannot run.
TEST_F(FlexFusedTest, LargeHeadDimFloat32IsDense) {
  T q = mftest::randn_on_gpu({1, 2, 64, 192}, 4, mf::DType::Float32).requires_grad_();
  const T k = mftest::randn_on_gpu({1, 2, 64, 192}, 5, mf::DType::Float32),
          v = mftest::randn_on_gpu({1, 2, 64, 192}, 6, mf::DType::Float32);
  mf::FlexAttentionOptions o;
  o.kernel = mf::FlexKernel::Fused;
  mftest::expect_error([&] { (void)mf::flex_attention(q, k, v, o); },
                       {"fused kernel cannot run", "D = 192"});
  o.kernel = mf::FlexKernel::Auto;
  T out = mf::flex_attention(q, k, v, o).out;
  out.sum().backward();
  EXPECT_TRUE(q.grad().defined());
}

// An out-of-range captured index raises like the dense path instead of reading past it.
TEST_F(FlexFusedTest, IndexOutOfRange) {
  T bias = mftest::randn_on_gpu({10}, 8, mf::DType::Float32);
  mf::FlexAttentionOptions o;
  o.kernel = mf::FlexKernel::Fused;
  o.score_mod = [bias](const T& s, const T&, const T&, const T& q, const T&) {
    return s + bias.index({q});
  };
  const T x = mftest::randn_on_gpu({1, 1, 64, 64}, 9, mf::DType::Float32);
  mftest::expect_error(
      [&] { mf::flex_attention(x, x, x, o); },
      {"flex_attention: score_mod: index", "out of bounds for dim 0 with size 10"});
}

// A fresh cache directory gets one CUBIN per distinct kernel; compiling the same kernel in
// another process would load that file (checked here through the file's presence and the
// count staying the same on a second call with new shapes of the same head dims).
TEST_F(FlexFusedTest, DiskCache) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("microflex_cache_test_" + std::to_string(std::random_device{}()));
  setenv("MICROFLEX_CACHE_DIR", dir.c_str(), 1);
  mf::FlexAttentionOptions o;
  o.kernel = mf::FlexKernel::Fused;
  // A score_mod with a constant no other test uses, so the kernel is not in memory yet.
  o.score_mod = [](const T& s, const T&, const T&, const T&, const T&) { return s * 0.987654321; };
  const T x = mftest::randn_on_gpu({1, 2, 100, 64}, 10, mf::DType::Float32);
  mf::flex_attention(x, x, x, o);
  auto count = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      n += e.path().extension() == ".cubin";
    return n;
  };
  ASSERT_TRUE(std::filesystem::exists(dir));
  EXPECT_EQ(count(), 1u);
  const T y = mftest::randn_on_gpu({2, 2, 77, 64}, 11, mf::DType::Float32);
  mf::flex_attention(y, y, y, o);
  EXPECT_EQ(count(), 1u);
  unsetenv("MICROFLEX_CACHE_DIR");
  std::filesystem::remove_all(dir);
}

}  // namespace
