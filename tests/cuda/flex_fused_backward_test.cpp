// The fused CUDA backward of flex_attention (dQ, dK, dV and captured-tensor gradients)
// against the dense path's autograd on the same GPU inputs, the deterministic option, and
// the memory bound at 64k tokens (no [M, N] intermediate).
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <random>

#include "cuda_test_util.h"
#include "flex_fused_run.h"
#include "microflex/microflex.h"
#include "ops/flex_attention/flex_attention.h"

namespace mf = microflex;
using T = mf::Tensor;

namespace {

using mftest::flex::Case;
using mftest::flex::Grads;
using mftest::flex::run;

mf::MaskMod causal() {
  return [](const T&, const T&, const T& q, const T& kv) { return q >= kv; };
}

// A per-(b, h) random mask: each 128 x 128 block is empty, full or random per element,
// so the BlockMask has all three kinds of blocks and differs across B and H.
T random_mask_table(int64_t B, int64_t H, int64_t M, int64_t N, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int64_t Mb = (M + 127) / 128, Nb = (N + 127) / 128;
  std::vector<double> kind(static_cast<size_t>(B * H * Mb * Nb));
  for (auto& k : kind) k = u(gen);
  std::vector<int64_t> t(static_cast<size_t>(B * H * M * N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          const double k = kind[static_cast<size_t>(((b * H + h) * Mb + i / 128) * Nb + j / 128)];
          const bool on = k < 0.3 ? false : k < 0.6 ? true : u(gen) < 0.5;
          t[static_cast<size_t>(((b * H + h) * M + i) * N + j)] = on || j == 0;
        }
  return mf::from_vector(t, {B, H, M, N}, {.dtype = mf::DType::Int32})
      .to(mf::DType::Bool)
      .to(mf::Device::cuda());
}

std::vector<Case> cases() {
  std::vector<Case> c;
  T slopes = mf::abs(mftest::randn_on_gpu({4}, 11, mf::DType::Float32, 0.3)).requires_grad_();
  mf::ScoreMod alibi = [slopes](const T& s, const T&, const T& h, const T& q, const T& kv) {
    return s + slopes.index({h}) * (kv - q);
  };
  const int64_t N = 300;
  T bias = mftest::randn_on_gpu({2 * N + 1}, 12, mf::DType::Float32, 0.5).requires_grad_();
  mf::ScoreMod relbias = [bias, N](const T& s, const T&, const T&, const T& q, const T& kv) {
    return s + bias.index({q - kv + N});
  };
  T hbias = mftest::randn_on_gpu({4, 200, 250}, 13, mf::DType::Float32, 0.5).requires_grad_();
  mf::ScoreMod fullbias = [hbias](const T& s, const T&, const T& h, const T& q, const T& kv) {
    return s + hbias.index({h, q, kv});
  };
  mf::ScoreMod softcap = [](const T& s, const T&, const T&, const T&, const T&) {
    return mf::tanh(s / 30.0) * 30.0;
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
  T table = random_mask_table(2, 3, 300, 333, 14);
  mf::MaskMod random_blocks = [table](const T& b, const T& h, const T& q, const T& kv) {
    return table.index({b, h, q, kv});
  };
  c.push_back({"full", 2, 4, 4, 200, 200, 64, 64, {}, {}});
  c.push_back({"causal", 1, 4, 4, 389, 389, 128, 128, {}, causal()});
  c.push_back({"sliding_window", 1, 4, 4, 300, 300, 64, 64, {}, sliding});
  c.push_back({"softcap", 2, 2, 2, 130, 190, 128, 64, softcap, {}});
  c.push_back({"document", 1, 4, 4, 300, 300, 64, 64, {}, document});
  c.push_back({"alibi_learnable", 1, 4, 4, 257, 257, 64, 64, alibi, causal(), 1, 1, slopes});
  c.push_back(
      {"relative_bias_learnable", 1, 4, 4, 300, 300, 64, 64, relbias, causal(), 1, 1, bias});
  c.push_back({"full_bias_learnable", 1, 4, 4, 200, 250, 64, 64, fullbias, {}, 1, 1, hbias});
  c.push_back({"document_dv_32", 1, 2, 2, 300, 300, 64, 32, {}, document});
  c.push_back({"gqa", 2, 4, 2, 97, 333, 64, 64, {}, causal()});
  c.push_back({"m_ne_n_tails", 1, 2, 2, 65, 1025, 128, 96, {}, {}});
  c.push_back({"head_dim_80", 1, 2, 2, 300, 300, 80, 80, softcap, causal()});
  c.push_back({"head_dim_72_dv_40", 1, 2, 2, 200, 250, 72, 40, {}, {}});
  c.push_back({"random_blocks_per_b_h", 2, 3, 3, 300, 333, 64, 64, {}, random_blocks, 2, 3});
  // Dv = 40 takes the mma.sync kernels everywhere: a table mask that is not symmetric in q
  // and kv there.
  c.push_back({"random_blocks_dv_40", 2, 3, 3, 300, 333, 64, 40, {}, random_blocks, 2, 3});
  // Head dims past 128: the 4-warp tiles (bf16 / fp16; float32 takes the dense path).
  c.push_back({"head_dim_256", 1, 2, 2, 200, 231, 256, 256, softcap, causal()});
  c.push_back({"head_dim_136_dv_200", 1, 4, 2, 150, 170, 136, 200, alibi, {}, 1, 1, slopes});
  return c;
}

class FlexFusedBackwardTest : public mftest::CudaTest {};

// A captured tensor's gradient sums M x N signed terms dS * f(q, kv) that largely cancel
// (each row's dS sums to zero in exact arithmetic). With delta taken from the 16-bit output
// (rowsum(dO * O)) each row's dS summed to about u * |delta| instead, a bias that does not
// cancel: an H100 measured bfloat16 errors up to 4.7e-2. The fused backward now takes delta
// from P and dP when a captured tensor needs a gradient (Note [Flex exact delta]), so the
// captured gradients are held to the outputs' tolerance.
//
// Tolerance, relative in the 2-norm: bfloat16 1e-2 (8-bit mantissa: besides the rounded
// inputs and outputs, the fused kernels round P and dS to bfloat16 before their products,
// as FlashAttention does); float16 2e-3 (11-bit mantissa, the same roundings). The dense
// path computes in float32 and rounds only the results. float32 1e-4 (the SIMT kernels
// and the dense path both compute in float32, in different orders).
double tolerance(mf::DType dt) {
  return dt == mf::DType::BFloat16 ? 1e-2 : dt == mf::DType::Float16 ? 2e-3 : 1e-4;
}

// Case c in dtype dt on fresh inputs (seeds seed .. seed + 3), fused against dense: out,
// dq, dk, dv and a learnable captured tensor's gradient within tolerance(dt).
void expect_matches_dense(const Case& c, mf::DType dt, uint32_t seed) {
  const T q = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.D}, seed, dt);
  const T k = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.D}, seed + 1, dt);
  const T v = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.Dv}, seed + 2, dt);
  const T go = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.Dv}, seed + 3, dt);
  const double tol = tolerance(dt);
  const Grads f = run(c, q, k, v, go, mf::FlexKernel::Fused);
  const Grads d = run(c, q, k, v, go, mf::FlexKernel::Dense);
  const std::string what = std::string(c.name) + " " + mf::dtype_name(dt) + " M" +
                           std::to_string(c.M) + " N" + std::to_string(c.N);
  EXPECT_LT(mftest::rel_error_2norm(f.out, d.out), tol) << what << " out";
  EXPECT_LT(mftest::rel_error_2norm(f.dq, d.dq), tol) << what << " dq";
  EXPECT_LT(mftest::rel_error_2norm(f.dk, d.dk), tol) << what << " dk";
  EXPECT_LT(mftest::rel_error_2norm(f.dv, d.dv), tol) << what << " dv";
  if (c.learnable.defined()) {
    ASSERT_TRUE(f.dlearn.defined()) << what;
    EXPECT_LT(mftest::rel_error_2norm(f.dlearn, d.dlearn), tol) << what << " d(captured)";
  }
}

// The named cases shrunk to M = 70, N = 90 in bf16 (seeds from `seed`, 10 apart): a short
// run for compute-sanitizer (racecheck) over one kernel family.
void expect_small_bf16(std::initializer_list<const char*> names, uint32_t seed) {
  const std::vector<Case> all = cases();
  for (const char* name : names) {
    auto it = std::find_if(all.begin(), all.end(),
                           [name](const Case& c) { return std::string(c.name) == name; });
    ASSERT_NE(it, all.end()) << name;
    Case c = *it;
    c.M = 70;
    c.N = 90;
    expect_matches_dense(c, mf::DType::BFloat16, seed);
    seed += 10;
  }
}

TEST_F(FlexFusedBackwardTest, MatchesDense) {
  uint32_t seed = 500;
  for (const Case& c : cases()) {
    for (auto dt : {mf::DType::BFloat16, mf::DType::Float16, mf::DType::Float32}) {
      if (dt == mf::DType::Float32 && std::max(c.D, c.Dv) > 128) continue;  // no SIMT kernel
      expect_matches_dense(c, dt, seed);
      seed += 4;
    }
  }
}

// The float32 (SIMT) backward on two small cases, one with a learnable captured tensor: a
// short run for compute-sanitizer (racecheck) over the float32 kernels.
TEST_F(FlexFusedBackwardTest, Float32Small) {
  expect_matches_dense(cases()[2], mf::DType::Float32, 800);
  expect_matches_dense(cases()[5], mf::DType::Float32, 804);
}

// The 4-warp tensor-core backward (head dims past 128): D = Dv = 256 causal, and D = 136,
// Dv = 200 with GQA and a learnable captured tensor.
TEST_F(FlexFusedBackwardTest, LargeHeadDimSmall) {
  expect_small_bf16({"head_dim_256", "head_dim_136_dv_200"}, 850);
}

// The Hopper (wgmma) forward and backward where the GPU has them (head dims 64): the
// document mask (split mask_mod gathers) and ALiBi with learnable slopes (exact delta).
TEST_F(FlexFusedBackwardTest, HopperKernelsSmall) {
  expect_small_bf16({"document", "alibi_learnable"}, 870);
}

// The mma.sync forward and backward at head dims up to 128 that the Hopper kernels do not
// take (they take 64 and 128): D = 80 with softcap and causal, and the split mask_mod on
// the mma.sync fragments with the document mask (Dv = 32) and a per-(b, h) table (Dv = 40).
TEST_F(FlexFusedBackwardTest, TensorCoreKernelsSmall) {
  expect_small_bf16({"document_dv_32", "head_dim_80", "random_blocks_dv_40"}, 890);
}

// With `deterministic`, captured-tensor gradients are bitwise equal across runs (fixed-point
// sums) and still match the dense path.
TEST_F(FlexFusedBackwardTest, DeterministicCapturedGrads) {
  const Case c = cases()[6];  // relative_bias_learnable
  ASSERT_STREQ(c.name, "relative_bias_learnable");
  const auto dt = mf::DType::BFloat16;
  const T q = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.D}, 1, dt),
          k = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.D}, 2, dt),
          v = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.Dv}, 3, dt),
          go = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.Dv}, 4, dt);
  const Grads a = run(c, q, k, v, go, mf::FlexKernel::Fused, true);
  const Grads b = run(c, q, k, v, go, mf::FlexKernel::Fused, true);
  const Grads d = run(c, q, k, v, go, mf::FlexKernel::Dense);
  EXPECT_EQ(a.dlearn.to(mf::Device::cpu()).to_vector<float>(),
            b.dlearn.to(mf::Device::cpu()).to_vector<float>());
  EXPECT_EQ(a.dq.to(mf::Device::cpu()).to_vector<float>(),
            b.dq.to(mf::Device::cpu()).to_vector<float>());
  EXPECT_LT(mftest::rel_error_2norm(a.dlearn, d.dlearn), 1e-2);
}

// B=1, H=16, M=N=65536, D=128 bf16, causal: forward and backward take under 64 MB of device
// memory beyond the inputs, outputs and gradients (no [M, N] scores anywhere).
TEST_F(FlexFusedBackwardTest, LargeSequenceMemory) {
  const int64_t H = 16, S = 65536, D = 128;
  const auto dt = mf::DType::BFloat16;
  const mf::Device dev = mf::Device::cuda();
  const T q0 = mftest::randn_on_gpu({1, H, 1024, D}, 5, dt)
                   .expand({64, H, 1024, D})
                   .permute({1, 0, 2, 3})
                   .contiguous()
                   .reshape({1, H, S, D});
  const T k0 = mftest::randn_on_gpu({1, H, 1024, D}, 6, dt)
                   .expand({64, H, 1024, D})
                   .permute({1, 0, 2, 3})
                   .contiguous()
                   .reshape({1, H, S, D});
  const T v0 = mftest::randn_on_gpu({1, H, 1024, D}, 7, dt)
                   .expand({64, H, 1024, D})
                   .permute({1, 0, 2, 3})
                   .contiguous()
                   .reshape({1, H, S, D});
  const T go = mftest::randn_on_gpu({1, H, 1024, D}, 8, dt)
                   .expand({64, H, 1024, D})
                   .permute({1, 0, 2, 3})
                   .contiguous()
                   .reshape({1, H, S, D});
  T q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(),
    v = v0.detach().requires_grad_();
  mf::FlexAttentionOptions o;
  o.block_mask = mf::create_block_mask(causal(), 1, 1, S, S, dev);
  o.kernel = mf::FlexKernel::Fused;
  mf::cuda::synchronize(dev.index);
  const int64_t base = mf::memory_stats(dev).allocated;
  mf::reset_peak_memory_stats(dev);
  T out = mf::flex_attention(q, k, v, o).out;
  out.backward(go);
  mf::cuda::synchronize(dev.index);
  const int64_t peak = mf::memory_stats(dev).peak - base;
  const int64_t tensor_bytes = H * S * D * 2;  // one of out, dq, dk, dv
  const int64_t extra = peak - 4 * tensor_bytes;
  EXPECT_LT(extra, int64_t{64} << 20) << "peak beyond inputs " << peak << " bytes";
  // Spot check: the first query row attends only to key 0, so out[0] = v[0].
  const auto o0 = out.narrow(2, 0, 1).to(mf::Device::cpu()).to_vector<float>();
  const auto v00 = v0.narrow(2, 0, 1).to(mf::Device::cpu()).to_vector<float>();
  EXPECT_EQ(o0, v00);
  const auto dq_all = mf::abs(q.grad().to(mf::DType::Float32)).sum().item<double>();
  EXPECT_TRUE(std::isfinite(dq_all));
}

}  // namespace
