// The fake-mode training-step estimate against hand counts on small GPTs: parameters per
// module, FLOPs of linears and of attention (full, causal, sliding window), activation bytes
// of single layers, the memory breakdown adding up (fp32 and bf16), agreement with
// GPT::forward, CUDA without a GPU, GPT-2 small's parameter count and errors.
#include "models/inspect.h"

#include "core/fake.h"
#include "test_util.h"

namespace mf = microflex;

namespace {

// Letters: B batch, T = block_size, C channels, H heads, D = C / H, V vocabulary, L layers.
constexpr int64_t B = 3, T = 8, C = 8, H = 2, D = C / H, V = 11, L = 2;

mf::GPTConfig small() {
  mf::GPTConfig c;
  c.vocab_size = V;
  c.block_size = T;
  c.n_layer = L;
  c.n_head = H;
  c.n_embd = C;
  return c;
}

const mf::ModuleEstimate& row(const mf::ModelEstimate& e, const std::string& name) {
  for (const auto& r : e.modules)
    if (r.name == name) return r;
  throw std::runtime_error("no row " + name);
}

}  // namespace

TEST(Inspect, ParametersPerModule) {
  const mf::ModelEstimate e = mf::estimate_training_step(small(), B, mf::Device::cpu());
  EXPECT_EQ(row(e, "wte").parameters, V * C);
  EXPECT_EQ(row(e, "wpe").parameters, T * C);
  EXPECT_EQ(row(e, "h.0.ln_1").parameters, 2 * C);
  EXPECT_EQ(row(e, "h.1.attn").parameters, (C * 3 * C + 3 * C) + (C * C + C));
  EXPECT_EQ(row(e, "h.0.mlp").parameters, (C * 4 * C + 4 * C) + (4 * C * C + C));
  EXPECT_EQ(row(e, "ln_f").parameters, 2 * C);
  EXPECT_EQ(row(e, "lm_head").parameters, 0);  // tied to wte
  // ln_1, ln_2: 2C each; attn: 3C^2 + 3C + C^2 + C; mlp: 4C^2 + 4C + 4C^2 + C.
  const int64_t per_layer = 12 * C * C + 13 * C;
  EXPECT_EQ(e.parameters, V * C + T * C + L * per_layer + 2 * C);
  int64_t sum = 0;
  for (const auto& r : e.modules) sum += r.parameters;
  EXPECT_EQ(sum, e.parameters);
  // One row per module call, in forward order.
  std::vector<std::string> names;
  for (const auto& r : e.modules) names.push_back(r.name);
  EXPECT_EQ(names, (std::vector<std::string>{"inputs", "wte", "wpe", "h.0.ln_1", "h.0.attn",
                                             "h.0.ln_2", "h.0.mlp", "h.1.ln_1", "h.1.attn",
                                             "h.1.ln_2", "h.1.mlp", "ln_f", "lm_head", "loss"}));
  EXPECT_EQ(row(e, "h.0.attn").output_shape, (mf::Shape{B, T, C}));
  EXPECT_EQ(row(e, "lm_head").output_shape, (mf::Shape{B, T, V}));
}

TEST(Inspect, GPT2SmallParameterCount) {
  const mf::ModelEstimate e =
      mf::estimate_training_step(mf::GPTConfig::gpt2(), 1, mf::Device::cuda());
  EXPECT_EQ(e.parameters, 124439808);
  EXPECT_EQ(e.memory.weights, 124439808LL * 4);
}

TEST(Inspect, FlopsOfLinearsAndAttention) {
  mf::GPTConfig full = small();
  full.attention.causal = false;
  const mf::ModelEstimate ef = mf::estimate_training_step(full, B, mf::Device::cpu());
  const mf::ModelEstimate ec = mf::estimate_training_step(small(), B, mf::Device::cpu());
  // Q K^T and P V: 2*B*H*T*T*D each, on every pair (full) or on (T+1)/(2T) of them (causal).
  const int64_t dense = 2 * (2 * B * H * T * T * D);
  EXPECT_DOUBLE_EQ(ef.unmasked_fraction, 1.0);
  EXPECT_EQ(ef.attention_flops_per_layer, dense);
  EXPECT_DOUBLE_EQ(ec.unmasked_fraction, double(T + 1) / double(2 * T));
  EXPECT_EQ(ec.attention_flops_per_layer, dense * (T + 1) / (2 * T));
  // Linears: 2*M*N*K with M = B*T.
  const int64_t M = B * T;
  EXPECT_EQ(row(ec, "h.0.mlp").flops, 2 * M * (4 * C) * C + 2 * M * C * (4 * C));
  EXPECT_EQ(row(ec, "h.0.attn").flops,
            2 * M * (3 * C) * C + 2 * M * C * C + ec.attention_flops_per_layer);
  EXPECT_EQ(row(ec, "lm_head").flops, 2 * M * V * C);
  EXPECT_EQ(row(ec, "h.0.ln_1").flops, 0);
  int64_t sum = 0;
  for (const auto& r : ec.modules) sum += r.flops;
  EXPECT_EQ(ec.forward_flops, sum);
  EXPECT_DOUBLE_EQ(ec.forward_flops_per_token, double(sum) / double(B * T));
  EXPECT_DOUBLE_EQ(ec.training_flops_per_token, 3.0 * ec.forward_flops_per_token);
}

TEST(Inspect, UnmaskedFractionUsesPartialBlocks) {
  // Causal sliding window of 3 keys at T = 8: query q keeps min(q + 1, 3) keys, 21 of 64.
  // Block size 2 gives full, partial and empty blocks.
  mf::AttentionPattern p;
  p.window = 3;
  const mf::BlockMask bm =
      mf::create_block_mask(mf::make_mask_mod(p), 1, 1, T, T, mf::Device::cpu(), 2);
  EXPECT_DOUBLE_EQ(mf::unmasked_fraction(bm), 21.0 / 64.0);
  // Lengths not a multiple of the block size: causal at 7 with blocks of 3 keeps 28 of 49.
  mf::AttentionPattern c;
  const mf::BlockMask bc =
      mf::create_block_mask(mf::make_mask_mod(c), 1, 1, 7, 7, mf::Device::cpu(), 3);
  EXPECT_DOUBLE_EQ(mf::unmasked_fraction(bc), 28.0 / 49.0);
  EXPECT_EQ(mf::attention_flops(2, 3, 5, 7, 4, 6, 0.5), 2 * 3 * 5 * 7 * (4 + 6));

  mf::GPTConfig cfg = small();
  cfg.attention.window = 3;
  cfg.attention.block_size = 2;
  const mf::ModelEstimate e = mf::estimate_training_step(cfg, B, mf::Device::cpu());
  EXPECT_DOUBLE_EQ(e.unmasked_fraction, 21.0 / 64.0);
  EXPECT_EQ(e.attention_flops_per_layer, 2 * (2 * B * H * 21 * D));
  EXPECT_GT(e.block_sparsity, 0.0);
}

TEST(Inspect, ActivationBytesOfSingleLayers) {
  const mf::ModelEstimate e = mf::estimate_training_step(small(), B, mf::Device::cpu());
  const int64_t f = 4;  // float32 bytes
  // idx and targets (int64) and the block mask: one block, so 8 int32 tensors of one entry.
  EXPECT_EQ(row(e, "inputs").activation_bytes, 2 * B * T * 8 + 8 * 4);
  // layer_norm keeps its output (the next linear saves it) and float32 mean and rstd [B, T].
  EXPECT_EQ(row(e, "h.0.ln_1").activation_bytes, B * T * C * f + 2 * B * T * f);
  // MLP: c_fc's output (gelu saves it), gelu's output (c_proj saves it) and the new
  // residual stream; c_proj's output dies in the residual add.
  EXPECT_EQ(row(e, "h.0.mlp").activation_bytes, 2 * B * T * 4 * C * f + B * T * C * f);
  // Attention: qkv (q, k, v are views of it), flex_attention's output and float32
  // log-sum-exp, the [B, T, C] copy of the output c_proj saves, the new residual stream.
  EXPECT_EQ(row(e, "h.0.attn").activation_bytes, 6 * B * T * C * f + B * H * T * f);
  // The head's logits, which cross_entropy keeps.
  EXPECT_EQ(row(e, "lm_head").activation_bytes, B * T * V * f);
}

TEST(Inspect, MemoryBreakdownAddsUp) {
  const mf::ModelEstimate e = mf::estimate_training_step(small(), B, mf::Device::cpu());
  const mf::MemoryEstimate& m = e.memory;
  const int64_t P = e.parameters, inputs = 2 * B * T * 8 + 8 * 4;
  EXPECT_EQ(m.weights, 4 * P);
  EXPECT_EQ(m.after_build, m.weights);
  int64_t rows = 0;
  for (const auto& r : e.modules) rows += r.activation_bytes;
  EXPECT_EQ(rows, m.activations);
  EXPECT_EQ(m.after_forward, m.weights + m.activations);
  EXPECT_EQ(m.grads, 4 * P);
  // The tape is gone after backward: weights, gradients and the inputs remain.
  EXPECT_EQ(m.after_backward, m.weights + m.grads + inputs);
  EXPECT_EQ(m.optimizer_state, 8 * P);  // exp_avg and exp_avg_sq
  EXPECT_EQ(m.after_step, m.after_backward + m.optimizer_state);
  EXPECT_GE(m.peak_forward_backward, m.after_forward);
  EXPECT_GE(m.peak_step, m.after_step);
  EXPECT_EQ(m.peak, std::max(m.peak_forward_backward, m.peak_step));
  EXPECT_EQ(m.steady_peak, std::max(m.peak_forward_backward + m.optimizer_state, m.peak_step));
}

TEST(Inspect, Bf16Breakdown) {
  const mf::ModelEstimate e =
      mf::estimate_training_step(small(), B, mf::Device::cpu(), mf::DTypePolicy::BF16);
  const mf::MemoryEstimate& m = e.memory;
  const int64_t P = e.parameters, inputs = 2 * B * T * 8 + 8 * 4;
  EXPECT_EQ(m.weights, 4 * P + 2 * P);  // float32 masters and the bf16 copy
  EXPECT_EQ(m.grads, 2 * P);            // bf16 gradients after backward
  EXPECT_EQ(m.after_backward, m.weights + m.grads + inputs);
  EXPECT_EQ(m.optimizer_state, 8 * P);
  // The step swaps the bf16 gradients for float32 master ones.
  EXPECT_EQ(m.after_step, m.after_backward - 2 * P + 4 * P + 8 * P);
  EXPECT_EQ(row(e, "h.0.mlp").output_dtype, mf::DType::BFloat16);
  // bf16 activations: the MLP row is half the float32 one.
  EXPECT_EQ(row(e, "h.0.mlp").activation_bytes, (2 * B * T * 4 * C + B * T * C) * 2);
  // Same FLOPs as float32.
  const mf::ModelEstimate f = mf::estimate_training_step(small(), B, mf::Device::cpu());
  EXPECT_EQ(e.forward_flops, f.forward_flops);
  EXPECT_LT(row(e, "h.0.attn").activation_bytes, row(f, "h.0.attn").activation_bytes);
}

TEST(Inspect, MatchesGPTForwardAndRunsOnCudaWithoutGpu) {
  const mf::ModelEstimate e = mf::estimate_training_step(small(), B, mf::Device::cpu());
  {
    // The walker keeps what GPT::forward keeps.
    mf::FakeModeGuard fake;
    const int64_t base = fake.current_bytes();
    mf::GPT m(small());
    const mf::Tensor idx = mf::zeros({B, T}, {.dtype = mf::DType::Int64});
    const mf::Tensor tgt = mf::zeros({B, T}, {.dtype = mf::DType::Int64});
    mf::GPTOutput out = m.forward(idx, tgt);
    out.logits = mf::Tensor();
    EXPECT_EQ(fake.current_bytes() - base, e.memory.after_forward);
  }
  const mf::ModelEstimate g = mf::estimate_training_step(small(), B, mf::Device::cuda());
  EXPECT_EQ(g.memory.after_forward, e.memory.after_forward);
  EXPECT_EQ(g.memory.after_step, e.memory.after_step);
  EXPECT_EQ(g.forward_flops, e.forward_flops);
}

TEST(Inspect, TraceBlockHasFlexAttentionAndModGraphs) {
  mf::GPTConfig c = small();
  c.attention.alibi = true;
  const std::string s = mf::trace_block(c, 2, mf::Device::cuda()).to_string();
  EXPECT_NE(s.find("flex_attention("), std::string::npos) << s;
  EXPECT_NE(s.find("score_mod = graph("), std::string::npos) << s;
  EXPECT_NE(s.find("mask_mod = graph("), std::string::npos) << s;
  EXPECT_NE(s.find("layer_norm("), std::string::npos) << s;
}

TEST(Inspect, TablePrintsRowsAndTotals) {
  const mf::ModelEstimate e = mf::estimate_training_step(small(), B, mf::Device::cpu());
  const std::string t = e.to_table();
  EXPECT_NE(t.find("h.0.attn"), std::string::npos) << t;
  EXPECT_NE(t.find("h.1-h.1 (1x h.0)"), std::string::npos) << t;
  EXPECT_EQ(t.find("h.1.attn"), std::string::npos) << t;
  EXPECT_NE(e.to_table(true).find("h.1.attn"), std::string::npos);
  EXPECT_NE(t.find("peak, first step"), std::string::npos) << t;
}

TEST(Inspect, Errors) {
  mf::GPTConfig c = small();
  c.n_embd = 10;
  c.n_head = 3;
  mftest::expect_error([&] { mf::estimate_training_step(c, 1, mf::Device::cpu()); },
                       {"inspect", "n_embd 10", "n_head 3"});
  mftest::expect_error([&] { mf::estimate_training_step(small(), 0, mf::Device::cpu()); },
                       {"inspect", "batch", "0"});
  c = small();
  c.attention.document = true;
  mftest::expect_error([&] { mf::estimate_training_step(c, 1, mf::Device::cpu()); },
                       {"inspect", "document"});
}

TEST(Inspect, CudaWithAlibiAndRotary) {
  // Converting to CUDA recomputes the ALiBi and rotary tables on the host and copies them
  // to the device.
  mf::GPTConfig c = small();
  c.attention.alibi = true;
  c.rotary = true;
  const mf::ModelEstimate g = mf::estimate_training_step(c, B, mf::Device::cuda());
  const mf::ModelEstimate h = mf::estimate_training_step(c, B, mf::Device::cpu());
  EXPECT_EQ(g.memory.after_step, h.memory.after_step);
  EXPECT_EQ(g.parameters, h.parameters);
  mftest::expect_error(
      [&] {
        mf::FakeModeGuard fake;
        mf::estimate_training_step(c, B, mf::Device::cpu());
      },
      {"estimate_training_step", "outside fake mode"});
}
