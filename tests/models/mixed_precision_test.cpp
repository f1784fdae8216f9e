#include "models/mixed_precision.h"
#include "models/gpt.h"
#include "models/optim.h"
#include "test_util.h"

namespace mf = microflex;

namespace {
mf::GPTConfig tiny() {
  mf::GPTConfig c;
  c.vocab_size = 32;
  c.block_size = 8;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 16;
  return c;
}
}  // namespace

TEST(MixedPrecision, Bf16ComputeWithFloat32Masters) {
  mf::manual_seed(3);
  mf::GPT master(tiny());
  mf::manual_seed(99);  // the compute copy's own init is overwritten by the masters
  mf::GPT compute(tiny());
  mf::MixedPrecision mp(master, compute);
  for (const mf::Tensor& p : compute.parameters()) EXPECT_EQ(p.dtype(), mf::DType::BFloat16);
  const auto mps = master.parameters(), cps = compute.parameters();
  for (size_t i = 0; i < mps.size(); ++i)
    EXPECT_EQ(cps[i].to_vector<double>(), mps[i].to(mf::DType::BFloat16).to_vector<double>());

  std::vector<int64_t> ids(2 * 8);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7) % 32);
  const mf::Tensor idx = mf::from_vector(ids, {2, 8});
  // Reference gradients from the float32 model itself.
  master.forward(idx, idx).loss.backward();
  std::vector<mf::Tensor> ref;
  for (const mf::Tensor& p : mps) ref.push_back(p.grad().clone());
  master.zero_grad();

  compute.forward(idx, idx).loss.backward();
  mp.grads_to_master();
  for (size_t i = 0; i < mps.size(); ++i) {
    ASSERT_TRUE(mps[i].grad().defined());
    EXPECT_EQ(mps[i].grad().dtype(), mf::DType::Float32);
    EXPECT_FALSE(cps[i].grad().defined());
    // bf16 activations and weights: gradients agree to bf16's 2^-8 relative, scaled by the
    // largest gradient of the tensor (cancellation makes small entries noisier).
    const auto g = mps[i].grad().to_vector<double>(), r = ref[i].to_vector<double>();
    double scale = 0;
    for (double v : r) scale = std::max(scale, std::abs(v));
    mftest::expect_close(g, r, 0.05 * scale + 1e-6, 0.05, "parameter " + std::to_string(i));
  }
  mf::SGD opt(master.named_parameters(), {.lr = 0.1});
  opt.step();
  mp.master_to_compute();
  for (size_t i = 0; i < mps.size(); ++i)
    EXPECT_EQ(cps[i].to_vector<double>(), mps[i].to(mf::DType::BFloat16).to_vector<double>());
}
