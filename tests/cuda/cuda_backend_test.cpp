#include <random>

#include "cuda/cuda_test_util.h"

namespace mf = microflex;

namespace {
mf::Tensor rnd(const mf::Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
  for (auto& x : v) x = n(gen);
  return mf::from_vector(v, s);
}
}  // namespace

class CudaBackend : public mftest::CudaTest {};

TEST_F(CudaBackend, CopiesRoundTripEveryDtype) {
  for (mf::DType dt : {mf::DType::Float32, mf::DType::Float64, mf::DType::Float16,
                       mf::DType::BFloat16, mf::DType::Int32, mf::DType::Int64, mf::DType::Bool}) {
    mf::Tensor x = (rnd({37, 5}, 1) * 10.0).to(dt);
    mf::Tensor g = x.to(mf::Device::cuda());
    EXPECT_TRUE(g.is_cuda());
    EXPECT_EQ(g.to(mf::Device::cpu()).to_vector<double>(), x.to_vector<double>()) << dt;
    // Non-contiguous sources are made contiguous on the way, both directions.
    EXPECT_EQ(x.t().to(mf::Device::cuda()).to(mf::Device::cpu()).to_vector<double>(),
              x.t().contiguous().to_vector<double>());
    EXPECT_EQ(g.t().to(mf::Device::cpu()).to_vector<double>(), x.t().contiguous().to_vector<double>());
  }
}

TEST_F(CudaBackend, LargeCopiesGoThroughPinnedStaging) {
  mf::Tensor x = rnd({3, 1000, 1000}, 2).to(mf::DType::Float32);  // 12 MB: several chunks
  mftest::expect_close(x.to(mf::Device::cuda()).to(mf::Device::cpu()), x, 0, 0);
}

TEST_F(CudaBackend, ConversionsFillsAndFactoriesOnDevice) {
  mf::Tensor x = rnd({4, 6}, 3);
  mf::Tensor g = x.to(mf::Device::cuda());
  mftest::expect_close(g.to(mf::DType::BFloat16).to(mf::Device::cpu()), x.to(mf::DType::BFloat16), 0, 0);
  mftest::expect_close(g.t().clone().to(mf::Device::cpu()), x.t().contiguous(), 0, 0);
  mf::Tensor f = mf::full({3, 5}, 2.5, {.dtype = mf::DType::Float16, .device = mf::Device::cuda()});
  for (double v : f.to_vector<double>()) EXPECT_EQ(v, 2.5);
  mf::Tensor a = mf::arange(0, 7, 1, {.dtype = mf::DType::Int64, .device = mf::Device::cuda()});
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  mf::Tensor s = g.slice(1, 1, 5, 2);
  s.fill_(-1.0);
  mf::Tensor expect = x.clone();
  expect.slice(1, 1, 5, 2).fill_(-1.0);
  mftest::expect_close(g.to(mf::Device::cpu()), expect, 0, 0);
  mf::Tensor dst = mf::zeros({4, 6}, {.dtype = mf::DType::Float32, .device = mf::Device::cuda()});
  dst.copy_(x.slice(0, 0, 1));  // broadcast from the host
  for (int r = 0; r < 4; ++r)
    mftest::expect_close(dst.to(mf::Device::cpu()).select(0, r), x.select(0, 0).to(mf::DType::Float32), 0, 0);
}

TEST_F(CudaBackend, AllocatorStatsAndCache) {
  const mf::Device d = mf::Device::cuda();
  const int64_t before = mf::memory_stats(d).allocated;
  {
    mf::Tensor t = mf::empty({1 << 20}, {.dtype = mf::DType::Float32, .device = d});
    EXPECT_GE(mf::memory_stats(d).allocated - before, 4 << 20);
  }
  EXPECT_EQ(mf::memory_stats(d).allocated, before);
  EXPECT_GE(mf::memory_stats(d).reserved, 4 << 20);  // cached, not returned
  mf::Tensor again = mf::empty({1 << 20}, {.dtype = mf::DType::Float32, .device = d});
  EXPECT_EQ(mf::memory_stats(d).reserved, mf::memory_stats(d).reserved);
  mf::cuda::empty_cache();
  mftest::expect_error(
      [&] { mf::empty({int64_t(1) << 46}, {.dtype = mf::DType::Float32, .device = d}); },
      {"CUDA out of memory on cuda:0", "MiB"});
}
