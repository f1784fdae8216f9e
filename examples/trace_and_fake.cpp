// Tracing a function into a graph, and running a CUDA-sized model forward and backward in
// fake mode on a machine with no GPU: shapes and peak memory without data.
#include <iostream>

#include <microflex/microflex.h>

using mf::Tensor;

int main() {
  // 1. Trace a small function and print its graph.
  Tensor w = mf::randn({16, 8});
  auto mlp = [&](const mf::TensorList& in) {
    Tensor h = mf::gelu(mf::matmul(in[0], w));
    return mf::TensorList{mf::softmax(h, -1).sum({1})};
  };
  mf::graph::GraphModule gm = mf::graph::trace(mlp, {mf::randn({4, 16})});
  std::cout << "traced graph (w was captured and lifted to an input):\n" << gm.to_string() << "\n";

  // 2. A CUDA-shaped block (bf16, batch 8, context 2048, width 2048) in fake mode.
  mf::FakeModeGuard fake;
  const mf::TensorOptions cuda_bf16{.dtype = mf::DType::BFloat16, .device = mf::Device::cuda()};
  const int64_t B = 8, T = 2048, C = 2048, H = 16;
  Tensor x = mf::empty({B, T, C}, cuda_bf16);
  Tensor w_qkv = mf::empty({3 * C, C}, cuda_bf16).requires_grad_();
  Tensor w_out = mf::empty({C, C}, cuda_bf16).requires_grad_();
  Tensor qkv = mf::linear(x, w_qkv).view({B, T, 3, H, C / H}).permute({2, 0, 3, 1, 4});
  Tensor att = mf::flex_attention(qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2)).out;
  Tensor y = mf::linear(att.permute({0, 2, 1, 3}).reshape({B, T, C}), w_out);
  Tensor loss = mf::pow(y.to(mf::DType::Float32), 2).mean();
  loss.backward();
  std::cout << "fake forward+backward on " << x.device() << ": y " << mf::shape_str(y.sizes())
            << " " << y.dtype() << ", grad of w_qkv " << mf::shape_str(w_qkv.grad().sizes())
            << "\npeak device memory an eager run would need: "
            << fake.peak_bytes(mf::Device::cuda()) / (1024.0 * 1024.0) << " MiB\n";
  return 0;
}
