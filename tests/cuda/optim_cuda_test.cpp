// AdamW on the GPU (the fused kernel for contiguous float32 parameters, the composed ops
// otherwise) against AdamW on the CPU: a few steps with the same random parameters and
// gradients, then parameters and both moments compared.
#include <random>
#include <string>
#include <vector>

#include "cuda/cpu_gpu_cases.h"
#include "models/optim.h"

namespace mf = microflex;
using mf::DType;

namespace {

struct OptimCase {
  std::string name;
  std::vector<mf::Shape> shapes;  // one parameter each; dim >= 2 ones are decayed
  DType dtype;
  mf::AdamWOptions opts;
  bool transposed_grad = false;  // a non-contiguous gradient takes the composed path
};

// Float32: both paths round the same float32 operations in the same order (Note in
// kernels/cuda/optim.cu), so they agree to a few units in the last place after a few
// steps; 1e-5 relative (of the largest value) leaves room. Float64 runs the composed ops
// on both devices: 1e-12.
double tolerance(DType dt) {
  return dt == DType::Float32 ? 1e-5 : 1e-12;
}

void run_case(const OptimCase& c, uint32_t seed) {
  const std::string label = c.name + " | " + mf::dtype_name(c.dtype);
  SCOPED_TRACE(label);
  mf::NamedTensors cpu_params, gpu_params;
  for (size_t k = 0; k < c.shapes.size(); ++k) {
    mf::Tensor p =
        mftest::normal_f64(c.shapes[k], seed + 31 * static_cast<uint32_t>(k)).to(c.dtype);
    mf::Tensor q = p.to(mf::Device::cuda());
    p.requires_grad_();
    q.requires_grad_();
    cpu_params.emplace_back("p" + std::to_string(k), p);
    gpu_params.emplace_back("p" + std::to_string(k), q);
  }
  mf::AdamW cpu_opt(cpu_params, c.opts), gpu_opt(gpu_params, c.opts);
  for (int step = 0; step < 4; ++step) {
    for (size_t k = 0; k < c.shapes.size(); ++k) {
      const uint32_t s = seed + 1000 * static_cast<uint32_t>(step + 1) + static_cast<uint32_t>(k);
      // Gradients of mixed scales, so the second moment spans several orders of magnitude.
      mf::Tensor g = mftest::normal_f64(c.shapes[k], s, step % 2 ? 0.01 : 3.0).to(c.dtype);
      mf::Tensor gg = g.to(mf::Device::cuda());
      if (c.transposed_grad && g.dim() == 2) gg = gg.t().contiguous().t();
      cpu_params[k].second.set_grad(g);
      gpu_params[k].second.set_grad(gg);
    }
    // A changed learning rate must reach the fused kernel too.
    cpu_opt.set_lr(c.opts.lr * (1.0 + 0.5 * step));
    gpu_opt.set_lr(c.opts.lr * (1.0 + 0.5 * step));
    cpu_opt.step();
    gpu_opt.step();
  }
  const mf::NamedTensors cpu_sd = cpu_opt.state_dict(), gpu_sd = gpu_opt.state_dict();
  ASSERT_EQ(cpu_sd.size(), gpu_sd.size()) << label;
  for (size_t i = 0; i < cpu_sd.size(); ++i) {
    if (cpu_sd[i].first == "step") continue;
    mftest::expect_gpu_matches(gpu_sd[i].second, cpu_sd[i].second, tolerance(c.dtype),
                               label + " | " + cpu_sd[i].first);
  }
  for (size_t k = 0; k < c.shapes.size(); ++k)
    mftest::expect_gpu_matches(gpu_params[k].second.detach(), cpu_params[k].second.detach(),
                               tolerance(c.dtype), label + " | " + cpu_params[k].first);
}

}  // namespace

class CudaOptim : public mftest::CudaTest {};

TEST_F(CudaOptim, AdamWMatchesCpu) {
  const mf::AdamWOptions base{
      .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  const std::vector<OptimCase> cases = {
      // Sizes with a float4 tail (1025, 97 = 4k + 1) and a decayed matrix.
      {"matrix, bias, odd vector", {{37, 41}, {1025}, {97}}, DType::Float32, base},
      {"large matrix", {{513, 257}}, DType::Float32, base},
      {"no weight decay", {{64, 33}, {7}}, DType::Float32, {.lr = 3e-3, .weight_decay = 0.0}},
      {"non-contiguous gradient", {{37, 41}}, DType::Float32, base, true},
      {"float64 (composed on both)", {{37, 41}, {97}}, DType::Float64, base},
  };
  uint32_t seed = 5000;
  for (const OptimCase& c : cases) run_case(c, seed += 17);
}
