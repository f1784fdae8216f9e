// Helpers for GPU tests: skip without a GPU, poison new allocations so unwritten outputs
// show up as NaN, and compare a CUDA result with the CPU one.
#pragma once
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

}  // namespace mftest
