// flex_attention forward on the GPU, fused kernel vs the dense path, at B=4, H=16, S=4096,
// bf16 (CUDA events, warm-up, median). TFLOP/s counted on unmasked pairs (4*B*H*pairs*D).
// Compare with tools/torch_flex_bench.py run in the same call on the same card.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include <microflex/microflex.h>

#include "core/cuda_backend.h"

#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_utils.h"

namespace {

double time_ms(const std::function<void()>& fn, int iters) {
  auto s = static_cast<cudaStream_t>(mf::cuda::stream(0));
  fn();
  fn();
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
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  if (!mf::cuda_available()) return 0;
  const int64_t B = 4, H = 16, S = 4096;
  const mf::Device gpu = mf::Device::cuda();
  mf::manual_seed(0);
  mf::NoGradGuard no_grad;
  for (int64_t D : {128, 64}) {
    const mf::TensorOptions bf{.dtype = mf::DType::BFloat16, .device = gpu};
    mf::Tensor q = mf::randn({B, H, S, D}, bf), k = mf::randn({B, H, S, D}, bf),
               v = mf::randn({B, H, S, D}, bf);
    mf::MaskMod causal = [](const mf::Tensor&, const mf::Tensor&, const mf::Tensor& qi,
                            const mf::Tensor& kv) { return qi >= kv; };
    for (bool is_causal : {false, true}) {
      std::optional<mf::BlockMask> bm;
      if (is_causal) bm = mf::create_block_mask(causal, 1, 1, S, S, gpu);
      const double pairs = is_causal ? S * (S + 1) / 2.0 : double(S) * S;
      const double flops = 4.0 * B * H * pairs * D;
      for (mf::FlexKernel kern : {mf::FlexKernel::Fused, mf::FlexKernel::Dense}) {
        const double ms = time_ms(
            [&] { mf::flex_attention(q, k, v, {.block_mask = bm, .kernel = kern}); },
            kern == mf::FlexKernel::Fused ? 10 : 3);
        std::printf("{\"impl\": \"microflex_%s\", \"pattern\": \"%s\", \"D\": %ld, \"fwd_ms\": %.2f, "
                    "\"fwd_TFLOPs\": %.1f}\n",
                    kern == mf::FlexKernel::Fused ? "fused" : "dense", is_causal ? "causal" : "full",
                    long(D), ms, flops / ms / 1e9);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
#else
int main() { return 0; }
#endif
