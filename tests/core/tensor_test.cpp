#include "test_util.h"

namespace mf = microflex;

TEST(Tensor, FactoriesAndViews) {
  mf::Tensor a = mf::arange(0, 12, 1, {.dtype = mf::DType::Float64}).view({3, 4});
  EXPECT_EQ(a.sizes(), (mf::Shape{3, 4}));
  mf::Tensor t = a.t();
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.contiguous().to_vector<double>(),
            (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  mf::Tensor s = a.slice(1, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.to_vector<double>(), (std::vector<double>{1, 3, 5, 7, 9, 11}));
  s.fill_(-1.0);
  EXPECT_EQ(a.to_vector<double>()[1], -1.0);  // writes through the view
}

TEST(Tensor, AddBroadcastAndBackward) {
  mf::Tensor x = mf::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  mf::Tensor b = mf::from_vector<double>({10, 20, 30}, {3});
  x.requires_grad_();
  b.requires_grad_();
  mf::Tensor y = (x + b) * x;
  y.sum().backward();
  // d/dx = 2x + b, d/db = sum over rows of x
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{12, 24, 36, 18, 30, 42}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{5, 7, 9}));
}
