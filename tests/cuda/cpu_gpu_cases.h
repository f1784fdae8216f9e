// A table of op invocations run on the CPU and on the GPU with the same random inputs;
// outputs and input gradients are compared (the CPU result is the reference). Used by the
// row-op tests (reductions, softmax, nn).
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"

namespace mftest {

// Tolerance of a GPU result against the CPU's, for inputs of dtype `dt`: relative per
// element, plus the same fraction of the tensor's largest finite magnitude as absolute
// slack (for outputs near 0 after cancellation). 16-bit results are rounded from a float
// computation on both devices, so they may differ by one unit in the last place: 2^-10 for
// float16 and 2^-7 for bfloat16 relative, allowed twice. float32: the GPU sums in float32
// (the CPU in float64) in a tree over at most 1e5 terms, measured well under 1e-6 of the
// largest value; 1e-5 leaves room. float64: 1e-12. Integer results are exact.
inline double gpu_tolerance(microflex::DType dt) {
  switch (dt) {
    case microflex::DType::Float16:
      return 2e-3;
    case microflex::DType::BFloat16:
      return 1.6e-2;
    case microflex::DType::Float32:
      return 1e-5;
    default:
      return 1e-12;
  }
}

// Expects the GPU tensor to match the CPU tensor: same shape and dtype, integers equal,
// floats within rtol (with rtol * max|cpu| absolute), NaN and inf in the same places.
inline void expect_gpu_matches(const microflex::Tensor& gpu, const microflex::Tensor& cpu,
                               double rtol, const std::string& what) {
  namespace mf = microflex;
  ASSERT_TRUE(gpu.defined() && cpu.defined()) << what;
  ASSERT_TRUE(gpu.is_cuda()) << what;
  ASSERT_EQ(gpu.dtype(), cpu.dtype()) << what;
  ASSERT_EQ(gpu.sizes(), cpu.sizes()) << what;
  const mf::Tensor g = gpu.to(mf::Device::cpu());
  if (!mf::is_floating(cpu.dtype())) {
    EXPECT_EQ(g.to_vector<int64_t>(), cpu.to_vector<int64_t>()) << what;
    return;
  }
  const std::vector<double> e = cpu.to_vector<double>();
  double scale = 0;
  for (double v : e)
    if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  expect_close(g.to_vector<double>(), e, rtol * scale, rtol, what);
}

// N(0, scale^2) values in a float64 CPU tensor.
inline microflex::Tensor normal_f64(const microflex::Shape& s, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(static_cast<size_t>(microflex::shape_numel(s)));
  for (double& x : v) x = dist(gen);
  return microflex::from_vector(v, s, {.dtype = microflex::DType::Float64});
}

// One row of the table: inputs drawn by `make` (default: N(0, scale^2) in the case's
// dtype, rounded for integer dtypes), `run` called on CPU inputs and on their GPU copies.
// With `grad`, output 0 is back-propagated with the same random gradient on both devices
// and the gradients of the floating inputs are compared too.
struct CpuGpuCase {
  using Make = std::function<microflex::Tensor(size_t k, const microflex::Shape& s, uint32_t seed,
                                               microflex::DType dt)>;
  std::string name;
  std::vector<microflex::Shape> shapes;
  std::function<microflex::TensorList(const microflex::TensorList&)> run;
  std::vector<microflex::DType> dtypes;
  bool grad = false;
  double scale = 1.0;
  Make make = nullptr;
  // A float32 tolerance for rows whose float32 error is larger than gpu_tolerance's by
  // construction (long sums, large offsets); each use states why.
  double f32_tol = 0.0;
};

inline std::string case_label(const CpuGpuCase& c, microflex::DType dt) {
  std::ostringstream os;
  os << c.name << " | " << dt << " | inputs";
  for (const auto& s : c.shapes) os << " " << microflex::shape_str(s);
  return os.str();
}

inline void run_cpu_gpu_case(const CpuGpuCase& c, uint32_t seed) {
  namespace mf = microflex;
  auto gpu_tolerance = [&c](mf::DType dt) {
    return dt == mf::DType::Float32 && c.f32_tol > 0 ? c.f32_tol : mftest::gpu_tolerance(dt);
  };
  for (mf::DType dt : c.dtypes) {
    const std::string label = case_label(c, dt);
    SCOPED_TRACE(label);
    mf::TensorList cpu_in, gpu_in;
    bool any_grad = false;
    for (size_t k = 0; k < c.shapes.size(); ++k) {
      const uint32_t s = seed + 101 * static_cast<uint32_t>(k);
      mf::Tensor t =
          c.make ? c.make(k, c.shapes[k], s, dt)
                 : (mf::is_floating(dt)
                        ? normal_f64(c.shapes[k], s, c.scale).to(dt)
                        : normal_f64(c.shapes[k], s, c.scale * 3).to(mf::DType::Int64).to(dt));
      mf::Tensor g = t.to(mf::Device::cuda());
      if (c.grad && t.defined() && mf::is_floating(t.dtype())) {
        t.requires_grad_();
        g.requires_grad_();
        any_grad = true;
      }
      cpu_in.push_back(t);
      gpu_in.push_back(g);
    }
    const mf::TensorList cpu_out = c.run(cpu_in);
    const mf::TensorList gpu_out = c.run(gpu_in);
    ASSERT_EQ(cpu_out.size(), gpu_out.size()) << label;
    // Outputs are judged by their own dtype (float32 statistics of float16 data are
    // computed in float32 on both devices), gradients by their input's.
    for (size_t i = 0; i < cpu_out.size(); ++i)
      expect_gpu_matches(gpu_out[i], cpu_out[i], gpu_tolerance(cpu_out[i].dtype()),
                         label + " | output " + std::to_string(i));
    if (!any_grad || !mf::is_floating(cpu_out[0].dtype())) continue;
    const mf::Tensor gy = normal_f64(cpu_out[0].sizes(), seed + 7).to(cpu_out[0].dtype());
    cpu_out[0].backward(gy);
    gpu_out[0].backward(gy.to(mf::Device::cuda()));
    for (size_t k = 0; k < cpu_in.size(); ++k) {
      if (!cpu_in[k].defined() || !cpu_in[k].requires_grad()) continue;
      expect_gpu_matches(gpu_in[k].grad(), cpu_in[k].grad(), gpu_tolerance(cpu_in[k].dtype()),
                         label + " | grad of input " + std::to_string(k));
    }
  }
}

}  // namespace mftest
