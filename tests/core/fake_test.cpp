#include "core/fake.h"
#include "test_util.h"

namespace mf = microflex;

TEST(Fake, ShapesWithoutData) {
  mf::FakeModeGuard fake;
  mf::Tensor a = mf::zeros({128, 64});
  mf::Tensor b = mf::ones({64});
  mf::Tensor c = (a + b).sum({0});
  EXPECT_TRUE(c.is_fake());
  EXPECT_EQ(c.sizes(), (mf::Shape{64}));
  EXPECT_EQ(c.dtype(), mf::DType::Float32);
  mftest::expect_error([&] { c.item<float>(); }, {"fake tensor", "[64]"});
  mftest::expect_error([&] { (void)(a + mf::ones({3})); }, {"add", "[128, 64]", "[3]"});
}

TEST(Fake, CudaTensorsWithoutAGpu) {
  mf::FakeModeGuard fake;
  mf::Tensor x =
      mf::empty({1024, 1024}, {.dtype = mf::DType::BFloat16, .device = mf::Device::cuda()});
  mf::Tensor y = x * x;
  EXPECT_EQ(y.device(), mf::Device::cuda());
  EXPECT_EQ(fake.peak_bytes(mf::Device::cuda()), 2 * 1024 * 1024 * 2);
}

TEST(Fake, ViewsKeepAliasing) {
  mf::FakeModeGuard fake;
  mf::Tensor x = mf::empty({4, 6});
  mf::Tensor v = x.t().slice(0, 1, 5);
  EXPECT_EQ(v.storage().get(), x.storage().get());
  EXPECT_EQ(v.strides(), (mf::Shape{1, 6}));
  EXPECT_EQ(v.storage_offset(), 1);
}

TEST(Fake, BackwardGivesFakeGrads) {
  mf::Tensor w = mf::empty({3, 3}, {.dtype = mf::DType::Float64});
  mf::FakeModeGuard fake;
  mf::Tensor wf = mf::to_fake(w);
  wf.requires_grad_();
  mf::Tensor loss = (wf * wf).sum();
  loss.backward();
  ASSERT_TRUE(wf.grad().defined());
  EXPECT_TRUE(wf.grad().is_fake());
  EXPECT_EQ(wf.grad().sizes(), (mf::Shape{3, 3}));
}

// The fake peak of a program equals the allocator's peak for the eager run of the same
// program (within 10%), on the CPU.
TEST(Fake, PeakBytesMatchesEagerPeak) {
  auto program = [](const mf::Tensor& x) {
    mf::Tensor a = x * x;  // 4 MB
    mf::Tensor b = a + x;  // 4 MB
    mf::Tensor c = (b * a).sum({1});
    return c;
  };
  mf::Tensor x = mf::ones({1024, 1024});
  mf::reset_peak_memory_stats(mf::Device::cpu());
  const int64_t base = mf::memory_stats(mf::Device::cpu()).allocated;
  { mf::Tensor r = program(x); }
  const int64_t eager_peak = mf::memory_stats(mf::Device::cpu()).peak - base;

  mf::FakeModeGuard fake;
  mf::Tensor xf = mf::to_fake(x);
  const int64_t fbase = fake.current_bytes();
  { mf::Tensor r = program(xf); }
  const int64_t fake_peak = fake.peak_bytes() - fbase;
  EXPECT_GT(eager_peak, 0);
  EXPECT_NEAR(static_cast<double>(fake_peak), static_cast<double>(eager_peak), 0.1 * eager_peak);
}
