// The fused CUDA kernels against PyTorch's FlexAttention fixtures (the dense-path test's
// dozen variants, tests/ops/flex_attention/torch_fixtures.h): inputs rounded to float32,
// bfloat16 and float16 on the GPU, out, lse and every gradient compared with PyTorch's
// float64 results.
#include <cmath>

#include "../ops/flex_attention/torch_fixtures.h"
#include "cuda_test_util.h"

namespace mf = microflex;

namespace {

using flex_fixtures::Case;
using flex_fixtures::Fixture;

class FlexFusedFixture : public mftest::CudaTest,
                         public ::testing::WithParamInterface<std::string> {};

// Tolerance, relative in the 2-norm against float64: float32 1e-4; bfloat16 1e-2 (inputs
// rounded to 8 bits of mantissa, P and dS rounded before the products); float16 2e-3
// (11 bits).
TEST_P(FlexFusedFixture, MatchesPyTorch) {
  const Fixture& host = flex_fixtures::fixtures();
  Fixture gpu;
  for (const auto& [name, t] : host) gpu[name] = t.to(mf::Device::cuda());
  Case cs;
  for (const Case& c : flex_fixtures::cases(gpu))
    if (c.name == GetParam()) cs = c;
  const std::string p = cs.name + ".";
  for (auto dt : {mf::DType::Float32, mf::DType::BFloat16, mf::DType::Float16}) {
    const double tol = dt == mf::DType::Float32 ? 1e-4 : dt == mf::DType::BFloat16 ? 1e-2 : 2e-3;
    mf::Tensor q = gpu.at(p + "q").to(dt).requires_grad_(),
               k = gpu.at(p + "k").to(dt).requires_grad_(),
               v = gpu.at(p + "v").to(dt).requires_grad_();
    mf::Tensor learn;
    if (!cs.learnable.empty()) learn = gpu.at(p + cs.learnable).clone().requires_grad_();
    mf::FlexAttentionOptions o;
    if (cs.mask)
      o.block_mask = mf::create_block_mask(cs.mask, 1, 1, q.size(2), k.size(2), mf::Device::cuda());
    if (cs.score) o.score_mod = cs.score(gpu, learn);
    o.scale = cs.scale;
    o.enable_gqa = q.size(1) != k.size(1);
    o.return_lse = true;
    // The fused kernels take head dims that are multiples of 8; the fixtures with D = 4 or
    // Dv = 12 check that Auto falls back to the dense path with the same results.
    const bool fusable = q.size(3) % 8 == 0 && v.size(3) % 8 == 0;
    o.kernel = fusable ? mf::FlexKernel::Fused : mf::FlexKernel::Auto;
    mf::FlexAttentionResult r = mf::flex_attention(q, k, v, o);
    r.out.backward(gpu.at(p + "grad_out").to(dt));
    const std::string what = p + mf::dtype_name(dt);
    EXPECT_LT(mftest::rel_error_2norm(r.out, host.at(p + "out"), true), tol) << what << " out";
    EXPECT_LT(mftest::rel_error_2norm(r.lse, host.at(p + "lse"), true), tol) << what << " lse";
    EXPECT_LT(mftest::rel_error_2norm(q.grad(), host.at(p + "dq"), true), tol) << what << " dq";
    EXPECT_LT(mftest::rel_error_2norm(k.grad(), host.at(p + "dk"), true), tol) << what << " dk";
    EXPECT_LT(mftest::rel_error_2norm(v.grad(), host.at(p + "dv"), true), tol) << what << " dv";
    if (learn.defined())
      EXPECT_LT(mftest::rel_error_2norm(learn.grad(), host.at(p + "dbias"), true), tol)
          << what << " dbias";
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, FlexFusedFixture, ::testing::ValuesIn(flex_fixtures::kVariants),
                         [](const auto& info) { return info.param; });

}  // namespace
