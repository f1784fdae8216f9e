// Built against an installed microflex: one include, one target.
#include <microflex/microflex.h>

int main() {
  mf::Tensor x = mf::arange(0, 4, 1, {.dtype = mf::DType::Float64});
  x.requires_grad_();
  mf::Tensor y = (x * x).sum();
  y.backward();
  // d/dx sum(x^2) = 2x: [0, 2, 4, 6]
  return x.grad().to_vector<double>() == std::vector<double>{0, 2, 4, 6} ? 0 : 1;
}
