// flex_attention on the GPU: the fused kernels' forward and forward+backward for the
// patterns of tools/torch_flex_bench.py (full, causal, ALiBi, softcap, sliding window 1024,
// prefix LM 1024, document mask) at B=4, H=16, S=4096, D=128 and 64, bf16. CUDA events,
// warm-up (which also compiles), median. TFLOP/s counted on unmasked pairs: forward
// 4*B*H*pairs*D, forward+backward 3.5x that. JSON lines; tools/flex_bench_compare.py puts
// them next to PyTorch's numbers from the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <microflex/microflex.h>

#include "core/cuda_backend.h"

#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_utils.h"

namespace {

using T = mf::Tensor;

double time_ms(const std::function<void()>& fn, int iters) {
  auto s = static_cast<cudaStream_t>(mf::cuda::stream(0));
  for (int i = 0; i < 3; ++i) fn();
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

// Document ids: lengths 256 + x % 1792 from the LCG x <- (1103515245 x + 12345) mod 2^31
// (x0 = 1) until S is covered; tools/torch_flex_bench.py draws the same documents.
T doc_ids(int64_t S) {
  std::vector<int64_t> ids;
  uint64_t x = 1;
  for (int64_t doc = 0; static_cast<int64_t>(ids.size()) < S; ++doc) {
    x = (1103515245u * x + 12345u) % (1u << 31);
    for (int64_t n = 256 + static_cast<int64_t>(x % 1792);
         n > 0 && static_cast<int64_t>(ids.size()) < S; --n)
      ids.push_back(doc);
  }
  return mf::from_vector(ids, {S}, {.dtype = mf::DType::Int32}).to(mf::Device::cuda());
}

// Comma-separated items of `env`, or of `fallback` when it is unset or empty.
std::vector<std::string> split_list(const char* env, const std::string& fallback) {
  const std::string text = env && *env ? env : fallback;
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

struct Pattern {
  const char* name;
  mf::ScoreMod score_mod;
  mf::MaskMod mask_mod;
};

}  // namespace

int main() {
  if (!mf::cuda_available()) return 0;
  const int64_t B = 4, H = 16, S = 4096;
  const mf::Device gpu = mf::Device::cuda();
  mf::manual_seed(0);
  const T ids = doc_ids(S);
  std::vector<Pattern> patterns{
      {"full", {}, {}},
      {"causal", {}, [](const T&, const T&, const T& q, const T& kv) { return q >= kv; }},
      {"alibi",
       [](const T& s, const T&, const T& h, const T& q, const T& kv) {
         return s + mf::exp2((h + 1) * -0.5) * (kv - q);
       },
       {}},
      {"softcap",
       [](const T& s, const T&, const T&, const T&, const T&) { return mf::tanh(s / 30.0) * 30.0; },
       {}},
      {"sliding_window_1024",
       {},
       [](const T&, const T&, const T& q, const T& kv) {
         return mf::logical_and(q >= kv, (q - kv) <= 1024);
       }},
      {"prefix_lm_1024",
       {},
       [](const T&, const T&, const T& q, const T& kv) {
         return mf::logical_or(kv <= 1024, q >= kv);
       }},
      {"document",
       {},
       [ids](const T&, const T&, const T& q, const T& kv) {
         return ids.index({q}) == ids.index({kv});
       }},
  };
  // HEAD_DIMS="128,64" and PATTERNS="causal,alibi" select rows, as tools/torch_flex_bench.py.
  std::vector<int64_t> dims;
  for (const std::string& d : split_list(std::getenv("HEAD_DIMS"), "128,64"))
    dims.push_back(std::stoll(d));
  const std::vector<std::string> only = split_list(std::getenv("PATTERNS"), "");
  for (int64_t D : dims) {
    const mf::TensorOptions bf{.dtype = mf::DType::BFloat16, .device = gpu};
    T q = mf::randn({B, H, S, D}, bf).requires_grad_(),
      k = mf::randn({B, H, S, D}, bf).requires_grad_(),
      v = mf::randn({B, H, S, D}, bf).requires_grad_();
    const T g = mf::randn({B, H, S, D}, bf);
    for (const Pattern& p : patterns) {
      if (!only.empty() && std::find(only.begin(), only.end(), p.name) == only.end()) continue;
      std::optional<mf::BlockMask> bm;
      double density = 1.0;
      if (p.mask_mod) {
        bm = mf::create_block_mask(p.mask_mod, 1, 1, S, S, gpu);
        density = mf::create_mask(p.mask_mod, 1, 1, S, S, gpu)
                      .to(mf::DType::Float32)
                      .mean()
                      .item<double>();
      }
      const double flops = 4.0 * B * H * double(S) * S * D * density;
      const mf::FlexAttentionOptions o{
          .score_mod = p.score_mod, .block_mask = bm, .kernel = mf::FlexKernel::Fused};
      double fwd;
      {
        mf::NoGradGuard no_grad;
        fwd = time_ms([&] { mf::flex_attention(q, k, v, o); }, 20);
      }
      const double fb = time_ms(
          [&] {
            q.zero_grad();
            k.zero_grad();
            v.zero_grad();
            mf::flex_attention(q, k, v, o).out.backward(g);
          },
          10);
      std::printf(
          "{\"pattern\": \"%s\", \"D\": %ld, \"density\": %.4f, \"fwd_ms\": %.3f, "
          "\"fwd_tflops\": %.1f, \"fwdbwd_ms\": %.3f, \"fwdbwd_tflops\": %.1f}\n",
          p.name, long(D), density, fwd, flops / fwd / 1e9, fb, 3.5 * flops / fb / 1e9);
      std::fflush(stdout);
    }
  }
  return 0;
}
#else
int main() {
  return 0;
}
#endif
