// Attention dropout in the fused kernels (Note [Flex dropout]): forward and every
// gradient against the dense path drawing the same mask (same seed), for bf16, fp16 and
// float32, with a causal BlockMask and a score_mod, GQA, and tails (M, N not multiples of
// the tiles).
#include "cuda/cuda_test_util.h"
#include "cuda/flex_fused_run.h"
#include "ops/flex_attention/flex_attention.h"

namespace mf = microflex;
using T = mf::Tensor;

namespace {

using mftest::flex::Case;
using mftest::flex::Grads;
using mftest::flex::run;

class FlexFusedDropoutTest : public mftest::CudaTest {};

// Tolerances as FlexFusedBackwardTest.MatchesDense (bf16 1e-2, fp16 2e-3, float32 1e-4,
// relative in the 2-norm): dropout only rescales kept probabilities by 1 / (1 - p).
TEST_F(FlexFusedDropoutTest, MatchesDenseWithTheSameMask) {
  const mf::ScoreMod alibi = [](const T& s, const T&, const T& h, const T& qi, const T& kv) {
    return s - (h + 1) * 0.0625 * (qi - kv);
  };
  const mf::MaskMod causal = [](const T&, const T&, const T& qi, const T& kv) { return qi >= kv; };
  const std::vector<Case> cases = {
      {"causal_alibi", 2, 3, 3, 300, 300, 64, 64, alibi, causal},
      {"gqa_tails", 1, 4, 2, 197, 261, 72, 40, alibi, {}},
  };
  uint32_t seed = 900;
  for (const Case& c : cases) {
    for (auto dt : {mf::DType::BFloat16, mf::DType::Float16, mf::DType::Float32}) {
      const T q = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.D}, seed++, dt);
      const T k = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.D}, seed++, dt);
      const T v = mftest::randn_on_gpu({c.B, c.Hkv, c.N, c.Dv}, seed++, dt);
      const T go = mftest::randn_on_gpu({c.B, c.Hq, c.M, c.Dv}, seed++, dt);
      const double tol = dt == mf::DType::BFloat16 ? 1e-2 : dt == mf::DType::Float16 ? 2e-3 : 1e-4;
      const std::string what = std::string(c.name) + " " + mf::dtype_name(dt);
      const Grads f = run(c, q, k, v, go, mf::FlexKernel::Fused, false, 0.2);
      const Grads d = run(c, q, k, v, go, mf::FlexKernel::Dense, false, 0.2);
      EXPECT_LT(mftest::rel_error_2norm(f.out, d.out), tol) << what << " out";
      EXPECT_LT(mftest::rel_error_2norm(f.dq, d.dq), tol) << what << " dq";
      EXPECT_LT(mftest::rel_error_2norm(f.dk, d.dk), tol) << what << " dk";
      EXPECT_LT(mftest::rel_error_2norm(f.dv, d.dv), tol) << what << " dv";
      // The mask does something: a fifth of the probabilities gone moves the output far
      // more than rounding does.
      const Grads none = run(c, q, k, v, go, mf::FlexKernel::Fused);
      EXPECT_GT(mftest::rel_error_2norm(f.out, none.out), 0.05) << what;
    }
  }
}

}  // namespace
