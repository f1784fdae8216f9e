// The smallest microflex program: make tensors, compute, differentiate, print.
#include <iostream>

#include <microflex/microflex.h>

int main() {
  mf::Tensor x = mf::arange(0, 6, 1, {.dtype = mf::DType::Float32}).view({2, 3});
  x.requires_grad_();
  mf::Tensor y = (x * x + 1.0).sum();
  y.backward();
  std::cout << "x = " << x << "\n";
  std::cout << "y = sum(x*x + 1) = " << y.item<float>() << "\n";
  std::cout << "dy/dx = " << x.grad() << "\n";
  return 0;
}
