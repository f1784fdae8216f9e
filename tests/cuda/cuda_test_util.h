// Helpers for GPU tests: skip without a GPU, poison new allocations so unwritten outputs
// show up as NaN, and compare a CUDA result with the CPU one.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/cuda_backend.h"
#include "test_util.h"

namespace mftest {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!microflex::cuda_available()) GTEST_SKIP() << "no CUDA device";
    microflex::cuda::set_poison_allocations(true);
  }
  void TearDown() override {
    if (microflex::cuda_available()) microflex::cuda::set_poison_allocations(false);
  }
};

inline microflex::Tensor on_gpu(const microflex::Tensor& t) {
  return t.to(microflex::Device::cuda());
}

// Normal(0, sd) values from a fixed seed, as dtype `dt` on the GPU.
inline microflex::Tensor randn_on_gpu(const microflex::Shape& s, uint32_t seed, microflex::DType dt,
                                      double sd = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> n(0.0, sd);
  std::vector<double> v(static_cast<size_t>(microflex::shape_numel(s)));
  for (auto& x : v) x = n(gen);
  return microflex::from_vector(v, s).to(dt).to(microflex::Device::cuda());
}

// ||got - want|| / ||want|| over all elements, in float64. A non-finite difference counts
// as a failure, except equal infinities when `equal_inf_ok` (lse of fully masked rows).
inline double rel_error_2norm(const microflex::Tensor& got, const microflex::Tensor& want,
                              bool equal_inf_ok = false) {
  const auto g = got.to(microflex::Device::cpu()).to_vector<double>();
  const auto w = want.to(microflex::Device::cpu()).to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (equal_inf_ok && std::isinf(w[i]) && g[i] == w[i]) continue;
    const double d = g[i] - w[i];
    num += std::isfinite(d) ? d * d : 1e300;
    den += std::isfinite(w[i]) ? w[i] * w[i] : 0.0;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace mftest
