#include <random>

#include "test_util.h"

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

TEST(Autograd, BackwardTwiceOnFreedGraphIsAnError) {
  mf::Tensor x = rnd({3}, 1);
  x.requires_grad_();
  mf::Tensor y = (x * x).sum();
  y.backward();
  mftest::expect_error([&] { y.backward(); },
                       {"backward through the graph a second time", "retain_graph=true"});
}

TEST(Autograd, RetainGraphAccumulates) {
  mf::Tensor x = rnd({4}, 2);
  x.requires_grad_();
  mf::Tensor y = (x * x).sum();
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  mftest::expect_close(x.grad(), x.detach() * 4.0, 1e-14, 1e-14);
}

TEST(Autograd, NonScalarNeedsAGradient) {
  mf::Tensor x = rnd({2, 3}, 3);
  x.requires_grad_();
  mf::Tensor y = x * 2.0;
  mftest::expect_error([&] { y.backward(); }, {"implicitly created", "[2, 3]"});
  y.backward(mf::ones({2, 3}, {.dtype = mf::DType::Float64}));
  mftest::expect_close(x.grad(), mf::full({2, 3}, 2.0, {.dtype = mf::DType::Float64}), 0, 0);
  mftest::expect_error([&] { (x * 3.0).backward(mf::ones({3})); }, {"[3]", "[2, 3]"});
}

TEST(Autograd, InPlaceOverwriteOfSavedTensorIsDetected) {
  mf::Tensor x = rnd({5}, 4);
  x.requires_grad_();
  mf::Tensor a = x * 1.0;
  mf::Tensor y = (a * a).sum();  // mul saves `a`
  a.add_(mf::ones({5}, {.dtype = mf::DType::Float64}));
  mftest::expect_error([&] { y.backward(); },
                       {"backward of mul", "modified by an in-place operation"});
}

TEST(Autograd, InPlaceOnLeafIsAnError) {
  mf::Tensor x = rnd({5}, 5);
  x.requires_grad_();
  mftest::expect_error([&] { x.mul_(2.0); }, {"mul_", "leaf tensor that requires grad"});
  {
    mf::NoGradGuard g;
    x.mul_(2.0);  // fine without grad mode, as in PyTorch's optimizer steps
  }
}

TEST(Autograd, InPlaceOnNonLeafIsDifferentiated) {
  mf::Tensor x = rnd({4}, 6);
  x.requires_grad_();
  mf::Tensor a = x * 3.0;
  a.mul_(x);  // a = 3x^2
  a.sum().backward();
  mftest::expect_close(x.grad(), x.detach() * 6.0, 1e-13, 1e-13);
}

TEST(Autograd, OnlyEntriesLeadingToTheLossRun) {
  mf::Tensor x = rnd({3}, 7);
  x.requires_grad_();
  mf::Tensor side = (x * x).sum();  // not part of the loss
  mf::Tensor loss = (x * 2.0).sum();
  loss.backward();
  mftest::expect_close(x.grad(), mf::full({3}, 2.0, {.dtype = mf::DType::Float64}), 0, 0);
  // The side branch kept its saved tensors: its own backward still works.
  x.zero_grad();
  side.backward();
  mftest::expect_close(x.grad(), x.detach() * 2.0, 1e-14, 1e-14);
}

TEST(Autograd, NoGradAndDetach) {
  mf::Tensor x = rnd({3}, 8);
  x.requires_grad_();
  {
    mf::NoGradGuard g;
    EXPECT_FALSE((x * 2.0).requires_grad());
    mf::EnableGradGuard e;
    EXPECT_TRUE((x * 2.0).requires_grad());
  }
  mf::Tensor d = (x * 2.0).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  mftest::expect_error([&] { (x * 2.0).requires_grad_(false); }, {"only leaf tensors"});
  mftest::expect_error([&] { mf::arange(3).requires_grad_(); }, {"only floating", "int64"});
}

TEST(Autograd, ViewsBackwardAndInPlaceOnViewOfGradTensor) {
  mf::Tensor x = rnd({3, 4}, 9);
  x.requires_grad_();
  mf::Tensor y = x.t().slice(0, 1, 3).select(1, 2);  // x[2, 1:3]
  (y * y).sum().backward();
  std::vector<double> g(12, 0.0), xv = x.to_vector<double>();
  g[2 * 4 + 1] = 2 * xv[2 * 4 + 1];
  g[2 * 4 + 2] = 2 * xv[2 * 4 + 2];
  mftest::expect_close(x.grad().to_vector<double>(), g, 0, 0);
  mf::Tensor v = (x * 1.0).view({12});
  mftest::expect_error([&] { v.mul_(2.0); }, {"mul_", "view of a tensor that requires grad"});
}

// A long training loop does not grow memory: every tape entry frees what it saved once
// it has run, and nothing keeps old graphs alive.
TEST(Autograd, MemoryStaysFlatOverATrainingLoop) {
  mf::Tensor w = rnd({64}, 10);
  w.requires_grad_();
  const mf::Tensor x = rnd({32, 64}, 11);
  const mf::Tensor target = rnd({32, 64}, 12);
  auto step = [&] {
    mf::Tensor pred = x * w;
    mf::Tensor diff = pred - target;
    mf::Tensor loss = (diff * diff).mean();
    loss.backward();
    mf::NoGradGuard g;
    w.add_(w.grad(), -0.01);
    w.zero_grad();
    return loss.item<double>();
  };
  double first = step();
  for (int i = 0; i < 10; ++i) step();
  const int64_t after_warmup = mf::memory_stats(mf::Device::cpu()).allocated;
  double last = 0;
  for (int i = 0; i < 1000; ++i) last = step();
  EXPECT_EQ(mf::memory_stats(mf::Device::cpu()).allocated, after_warmup);
  EXPECT_LT(last, first);
}

TEST(Autograd, GradcheckReportsTheWorstElement) {
  // A deliberately wrong backward: gradcheck must fail and name the element.
  mf::Tensor x = rnd({2, 2}, 13);
  x.requires_grad_();
  mf::GradcheckResult ok =
      mf::gradcheck([](const mf::TensorList& in) { return in[0] * in[0] * in[0]; }, {x});
  EXPECT_TRUE(ok.ok) << ok.message;
  // detach() inside the function hides a dependency: analytic gradient is too small.
  mf::GradcheckResult bad =
      mf::gradcheck([](const mf::TensorList& in) { return in[0] * in[0].detach(); }, {x});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("input 0 element"), std::string::npos) << bad.message;
}
