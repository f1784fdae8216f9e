// Training throughput on the GPU: tokens/s and peak memory of full training steps
// (forward, backward, AdamW) with bf16 mixed precision, plus the share of the step spent in
// attention (flex_attention forward+backward timed alone at the same shapes).
// Usage: train_bench [small|gpt2] [--profile]   (small: 6 layers, 6 heads, 384 wide,
// context 256, batch 64, byte vocabulary; gpt2: GPT-2 small at context 1024, batch 8).
// --profile also prints the op profiler's table over 3 steps and the host time it takes to
// queue one step (the step is launch-bound when that is close to the step time).
#include <chrono>
#include <cstdio>
#include <string>

#include <microflex/microflex.h>

#include "core/cuda_backend.h"
#include "models/gpt.h"
#include "models/mixed_precision.h"
#include "models/optim.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  mf::cuda::synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "small";
  const bool profile = argc > 2 && std::string(argv[2]) == "--profile";
  if (!mf::cuda_available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  mf::GPTConfig cfg;
  int64_t B = 64;
  if (which == "gpt2") {
    cfg = mf::GPTConfig::gpt2();
    B = 8;
  } else {
    cfg.vocab_size = 256;
    cfg.block_size = 256;
    cfg.n_layer = 6;
    cfg.n_head = 6;
    cfg.n_embd = 384;
  }
  const int64_t T = cfg.block_size;
  const mf::Device gpu = mf::Device::cuda();
  mf::manual_seed(0);
  mf::GPT master(cfg);
  master.to(gpu);
  mf::GPT model(cfg);
  model.to(gpu);
  mf::MixedPrecision mp(master, model);
  mf::AdamW opt(master.named_parameters(), {.lr = 3e-4, .weight_decay = 0.1});
  const mf::Tensor idx =
      mf::randint(0, cfg.vocab_size, {B, T}, {.dtype = mf::DType::Int64, .device = gpu});
  const mf::Tensor tgt =
      mf::randint(0, cfg.vocab_size, {B, T}, {.dtype = mf::DType::Int64, .device = gpu});
  auto step = [&] {
    mf::Tensor loss = model.forward(idx, tgt).loss;
    loss.backward();
    mp.grads_to_master();
    opt.step();
    opt.zero_grad();
    mp.master_to_compute();
  };
  for (int i = 0; i < 3; ++i) step();
  mf::reset_peak_memory_stats(gpu);
  const int steps = 10;
  const auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  const double secs = seconds_since(t0);
  const double tok_s = static_cast<double>(steps * B * T) / secs;
  const double peak_gib = static_cast<double>(mf::memory_stats(gpu).peak) / (1 << 30);

  // Attention alone: flex_attention forward+backward at the model's shapes, per layer.
  const int64_t H = cfg.n_head, D = cfg.n_embd / cfg.n_head;
  const mf::TensorOptions bf{.dtype = mf::DType::BFloat16, .device = gpu};
  mf::Tensor q = mf::randn({B, H, T, D}, bf).requires_grad_();
  mf::Tensor k = mf::randn({B, H, T, D}, bf).requires_grad_();
  mf::Tensor v = mf::randn({B, H, T, D}, bf).requires_grad_();
  const mf::BlockMask bm = mf::create_block_mask(mf::make_mask_mod(cfg.attention), 1, 1, T, T, gpu);
  auto attn = [&] {
    mf::Tensor o = mf::flex_attention(q, k, v, {.block_mask = bm}).out;
    o.backward(mf::ones_like(o));
  };
  attn();
  const auto t1 = Clock::now();
  for (int i = 0; i < 3; ++i) attn();
  const double attn_secs = seconds_since(t1) / 3 * cfg.n_layer;
  std::printf(
      "{\"impl\": \"microflex\", \"model\": \"%s\", \"B\": %ld, \"T\": %ld, \"tokens_per_s\": "
      "%.0f, "
      "\"step_ms\": %.1f, \"peak_GiB\": %.2f, \"attention_ms_per_step\": %.1f, "
      "\"attention_share\": %.2f}\n",
      which.c_str(), long(B), long(T), tok_s, 1e3 * secs / steps, peak_gib, 1e3 * attn_secs,
      attn_secs / (secs / steps));
  if (profile) {
    mf::cuda::synchronize();
    const auto t2 = Clock::now();
    step();
    const double queue_ms = 1e3 * std::chrono::duration<double>(Clock::now() - t2).count();
    mf::cuda::synchronize();
    const int prof_steps = 3;
    mf::profiler::start({.record_shapes = true});
    const auto t3 = Clock::now();
    for (int i = 0; i < prof_steps; ++i) step();
    const double prof_ms = 1e3 * seconds_since(t3);
    const auto rows = mf::profiler::stop();
    std::printf("host time to queue one step: %.1f ms (step %.1f ms)\n", queue_ms,
                1e3 * secs / steps);
    std::printf("op profile over %d steps:\n%s", prof_steps,
                mf::profiler::format_table(rows, prof_ms, 60).c_str());
  }
  return 0;
}
