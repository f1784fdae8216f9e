// GPU op timings with CUDA events (warm-up, then the median of many runs) at sizes well
// past the 50 MB L2, printed as JSON lines next to what tools/torch_ops_bench.py prints
// for PyTorch on the same card. Run on the GPU machine: ./build/bench/cuda_ops_bench
#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include <microflex/microflex.h>

#include "core/cuda_backend.h"
#include "models/optim.h"

#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_utils.h"

namespace {

using mf::Tensor;

// Median milliseconds of `fn` over `iters` runs after `warmup` runs, timed with events
// on microflex's stream for cuda:0.
double time_ms(const std::function<void()>& fn, int warmup = 5, int iters = 30) {
  auto s = static_cast<cudaStream_t>(mf::cuda::stream(0));
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(a, s);
    fn();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void report(const char* name, double ms, double bytes, double flops) {
  std::printf(
      "{\"impl\": \"microflex\", \"op\": \"%s\", \"ms\": %.4f, \"GBps\": %.1f, \"TFLOPs\": %.1f}\n",
      name, ms, bytes / ms / 1e6, flops / ms / 1e9);
  std::fflush(stdout);
}

}  // namespace

int main() {
  if (!mf::cuda_available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  const mf::Device gpu = mf::Device::cuda();
  const mf::TensorOptions f32{.dtype = mf::DType::Float32, .device = gpu};
  const mf::TensorOptions bf16{.dtype = mf::DType::BFloat16, .device = gpu};
  mf::manual_seed(0);
  mf::NoGradGuard no_grad;
  {
    // 256 MB per float32 operand.
    const int64_t n = 64 * 1024 * 1024;
    Tensor a = mf::randn({n}, f32), b = mf::randn({n}, f32);
    Tensor c = a.clone();
    report("copy_256MB", time_ms([&] { c.copy_(a); }), 2.0 * n * 4, 0);
    report("add_256MB", time_ms([&] { Tensor r = a + b; }), 3.0 * n * 4, 0);
    report("mul_256MB", time_ms([&] { Tensor r = a * b; }), 3.0 * n * 4, 0);
    report("gelu_256MB", time_ms([&] { Tensor r = mf::gelu(a, "tanh"); }), 2.0 * n * 4, 0);
  }
  {
    const int64_t R = 32768, C = 4096;  // 512 MB
    Tensor x = mf::randn({R, C}, f32);
    report("sum_rows_32768x4096", time_ms([&] { Tensor r = mf::sum(x, {1}); }), 1.0 * R * C * 4, 0);
    report("softmax_rows_32768x4096", time_ms([&] { Tensor r = mf::softmax(x, 1); }),
           2.0 * R * C * 4, 0);
  }
  {
    const int64_t R = 8 * 1024, C = 4096;
    Tensor x = mf::randn({R, C}, bf16), w = mf::ones({C}, bf16), bias = mf::zeros({C}, bf16);
    report("layer_norm_bf16_8192x4096",
           time_ms([&] { Tensor r = mf::layer_norm(x, {C}, w, bias); }), 2.0 * R * C * 2, 0);
  }
  {
    const int64_t N = 8192, V = 50257;
    Tensor logits = mf::randn({N, V}, f32);
    Tensor target = mf::randint(0, V, {N}, {.dtype = mf::DType::Int64, .device = gpu});
    report("cross_entropy_8192x50257",
           time_ms([&] { Tensor r = mf::cross_entropy(logits, target); }), 1.0 * N * V * 4, 0);
    mf::EnableGradGuard grad;
    Tensor l = logits.detach().requires_grad_();
    report("cross_entropy_fwd_bwd_8192x50257", time_ms([&] {
             Tensor loss = mf::cross_entropy(l, target);
             loss.backward();
             l.zero_grad();
           }),
           3.0 * N * V * 4, 0);
  }
  {
    const int64_t n = 8192;
    Tensor a = mf::randn({n, n}, bf16), b = mf::randn({n, n}, bf16);
    report("matmul_bf16_8192", time_ms([&] { Tensor r = mf::matmul(a, b); }, 3, 10), 0,
           2.0 * n * n * n);
  }
  {
    // An AdamW step over 124M float32 parameters (GPT-2 small's count) in 4 tensors.
    std::vector<std::pair<std::string, Tensor>> params;
    const int64_t per = 124439808 / 4;
    for (int i = 0; i < 4; ++i) {
      Tensor p = mf::randn({per}, f32).requires_grad_();
      p.set_grad(mf::randn({per}, f32));
      params.emplace_back("p" + std::to_string(i), p);
    }
    mf::AdamW opt(params, {});
    report("adamw_step_124M", time_ms([&] { opt.step(); }, 3, 10), 124439808.0 * 4 * 4 * 2, 0);
  }
  return 0;
}
#else
int main() {
  std::printf("built without CUDA\n");
  return 0;
}
#endif
