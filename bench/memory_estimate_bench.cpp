// Checks microflex-inspect's fake-mode memory estimate against the allocator's real
// figures for the same training step: GPT-2 small, batch 8, context 1024, bf16 policy,
// on cuda:0 (falls back to a small config on the CPU when there is no GPU).
#include <cstdio>

#include <microflex/microflex.h>

#include "models/inspect.h"

int main(int argc, char** argv) {
  const bool gpu = mf::cuda_available();
  mf::GPTConfig cfg = mf::GPTConfig::gpt2();
  int64_t batch = 8;
  if (!gpu) {
    cfg.n_layer = 2;
    cfg.n_head = 4;
    cfg.n_embd = 128;
    cfg.block_size = 256;
    cfg.vocab_size = 512;
    batch = 4;
  }
  const mf::Device dev = gpu ? mf::Device::cuda() : mf::Device::cpu();
  const mf::DTypePolicy policy =
      argc > 1 && std::string(argv[1]) == "fp32" ? mf::DTypePolicy::FP32 : mf::DTypePolicy::BF16;
  mf::manual_seed(0);
  const mf::ModelEstimate est = mf::estimate_training_step(cfg, batch, dev, policy);
  const mf::ModelEstimate real = mf::measure_training_step(cfg, batch, dev, policy);
  auto mib = [](int64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
  std::printf("config: %ld layers, %ld heads, width %ld, context %ld, batch %ld, %s, %s\n",
              long(cfg.n_layer), long(cfg.n_head), long(cfg.n_embd), long(cfg.block_size),
              long(batch), mf::dtype_policy_name(policy), dev.str().c_str());
  std::printf("%-14s %12s %12s %8s\n", "", "estimate", "measured", "ratio");
  const std::pair<const char*, std::pair<int64_t, int64_t>> rows[] = {
      {"weights", {est.memory.weights, real.memory.weights}},
      {"activations", {est.memory.activations, real.memory.activations}},
      {"grads", {est.memory.grads, real.memory.grads}},
      {"optimizer", {est.memory.optimizer_state, real.memory.optimizer_state}},
      {"peak", {est.memory.peak, real.memory.peak}},
  };
  for (const auto& [name, v] : rows)
    std::printf("%-14s %10.1f MiB %10.1f MiB %8.3f\n", name, mib(v.first), mib(v.second),
                v.second ? static_cast<double>(v.first) / static_cast<double>(v.second) : 0.0);
  return 0;
}
