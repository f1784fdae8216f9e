// nn ops on the GPU against the CPU kernels: cross_entropy (every reduction,
// ignore_index, label smoothing, a 50257-word vocabulary, int32 targets, 1-d logits),
// layer_norm and rms_norm (odd and wide rows, with and without affine parameters, zero
// rows), dropout; every floating dtype, transposed inputs, all outputs (lse, mean, rstd)
// and gradients. Random factories and dropout masks must equal the CPU's bit for bit.
// Tolerances: gpu_tolerance in cuda/cpu_gpu_cases.h.
#include <limits>

#include "cuda/cpu_gpu_cases.h"

namespace mf = microflex;

namespace {

using mf::DType;
using mftest::CpuGpuCase;
using L = mf::TensorList;

const std::vector<DType> kFloat = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};

// cross_entropy through the dispatcher: (loss, lse).
L ce(const L& in, int64_t ignore_index, const std::string& reduction, double smoothing) {
  static const mf::OpDef& op = mf::op_named("cross_entropy");
  return mf::call_op(
      op, {in[0], in[1]},
      {{"ignore_index", ignore_index}, {"reduction", reduction}, {"label_smoothing", smoothing}});
}

// Logits N(0, scale^2) (input 0) and class indices in [0, c) (input 1) of `target_dtype`,
// with the rows in `ignored` set to ignore_index.
CpuGpuCase::Make ce_inputs(int64_t c, std::vector<int64_t> ignored, int64_t ignore_index,
                           double scale, DType target_dtype = DType::Int64) {
  return [=](size_t k, const mf::Shape& s, uint32_t seed, DType dt) {
    if (k == 0) return mftest::normal_f64(s, seed, scale).to(dt);
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int64_t> dist(0, c - 1);
    std::vector<int64_t> t(static_cast<size_t>(mf::shape_numel(s)));
    for (int64_t& v : t) v = dist(gen);
    for (int64_t i : ignored) t[static_cast<size_t>(i)] = ignore_index;
    return mf::from_vector(t, s, {.dtype = DType::Int64}).to(target_dtype);
  };
}

// layer_norm / rms_norm through the dispatcher: (out, mean, rstd) / (out, rstd).
L ln(const L& in, const mf::Shape& ns, bool weight, bool bias) {
  static const mf::OpDef& op = mf::op_named("layer_norm");
  return mf::call_op(op, {in[0], weight ? in[1] : mf::Tensor(), bias ? in[2] : mf::Tensor()},
                     {{"normalized_shape", ns}, {"eps", 1e-5}});
}
L rms(const L& in, const mf::Shape& ns, bool weight) {
  static const mf::OpDef& op = mf::op_named("rms_norm");
  return mf::call_op(op, {in[0], weight ? in[1] : mf::Tensor()},
                     {{"normalized_shape", ns}, {"eps", 1e-6}});
}

// Input 0 shifted by +100: the two-pass mean/variance must not cancel.
mf::Tensor shifted(size_t k, const mf::Shape& s, uint32_t seed, DType dt) {
  return (mftest::normal_f64(s, seed) + (k == 0 ? 100.0 : 0.0)).to(dt);
}

std::vector<CpuGpuCase> nn_cases() {
  const int64_t kVocab = 50257;
  return {
      // cross_entropy: (N, C) logits, targets; wide rows take a block per row, narrow a warp.
      {"cross_entropy mean, vocab 50257",
       {{3, kVocab}, {3}},
       [](const L& in) { return ce(in, -100, "mean", 0.0); },
       kFloat,
       true,
       1.0,
       ce_inputs(kVocab, {}, -100, 3.0)},
      // Label smoothing sums every one of the 50257 logits in float32 on the GPU (the CPU
      // in float64): ~sqrt(50257) * 2^-24 = 1.3e-5 relative, so 3e-5.
      {"cross_entropy sum, smoothing 0.1, vocab 50257",
       {{3, kVocab}, {3}},
       [](const L& in) { return ce(in, -100, "sum", 0.1); },
       kFloat,
       true,
       1.0,
       ce_inputs(kVocab, {}, -100, 3.0),
       3e-5},
      {"cross_entropy none, ignore_index 2, vocab 50257",
       {{4, kVocab}, {4}},
       [](const L& in) { return ce(in, 2, "none", 0.0); },
       kFloat,
       true,
       1.0,
       ce_inputs(kVocab, {1, 3}, 2, 3.0)},
      {"cross_entropy mean, ignored rows, smoothing 0.2, int32 targets",
       {{97, 33}, {97}},
       [](const L& in) { return ce(in, -1, "mean", 0.2); },
       kFloat,
       true,
       1.0,
       ce_inputs(33, {0, 5, 96}, -1, 2.0, DType::Int32)},
      {"cross_entropy none, rows of 1025",
       {{9, 1025}, {9}},
       [](const L& in) { return ce(in, -100, "none", 0.0); },
       kFloat,
       true,
       1.0,
       ce_inputs(1025, {4}, -100, 2.0)},
      {"cross_entropy mean of transposed logits",
       {{1025, 7}, {7}},
       [](const L& in) {
         return ce({in[0].t(), in[1]}, -100, "mean", 0.05);
       },
       kFloat,
       true,
       1.0,
       ce_inputs(1025, {}, -100, 2.0)},
      {"cross_entropy 1-d logits, 0-d target",
       {{97}, {}},
       [](const L& in) { return ce(in, -100, "mean", 0.1); },
       kFloat,
       true,
       1.0,
       ce_inputs(97, {}, -100, 2.0)},
      {"cross_entropy mean, every row ignored (NaN)",
       {{4, 33}, {4}},
       [](const L& in) { return ce(in, -100, "mean", 0.0); },
       kFloat,
       true,
       1.0,
       ce_inputs(33, {0, 1, 2, 3}, -100, 1.0)},
      {"cross_entropy logits of 1e4, smoothing 0.1",
       {{5, 2049}, {5}},
       [](const L& in) { return ce(in, -100, "sum", 0.1); },
       {DType::Float32, DType::Float64},
       true,
       1.0,
       ce_inputs(2049, {}, -100, 1e4)},
      // layer_norm: inputs x, weight, bias.
      {"layer_norm D=97 weight bias",
       {{5, 7, 97}, {97}, {97}},
       [](const L& in) { return ln(in, {97}, true, true); },
       kFloat,
       true},
      {"layer_norm D=7x97 weight only",
       {{5, 7, 97}, {7, 97}},
       [](const L& in) {
         return ln(in, {7, 97}, true, false);
       },
       kFloat,
       true},
      {"layer_norm D=1025 no affine",
       {{13, 1025}},
       [](const L& in) { return ln(in, {1025}, false, false); },
       kFloat,
       true},
      {"layer_norm D=5000 few rows",
       {{4, 5000}, {5000}, {5000}},
       [](const L& in) { return ln(in, {5000}, true, true); },
       kFloat,
       true},
      // Inputs near 100 with unit spread: the float32 mean of 257 values near 100 carries
      // about 100 * 2^-24 * sqrt(257) = 1e-4 absolute, which is 1e-4 of xhat (the CPU
      // reference is float64); a float32 CPU two-pass reference has the same error. 3e-4.
      {"layer_norm mean 100",
       {{33, 257}, {257}, {257}},
       [](const L& in) { return ln(in, {257}, true, true); },
       kFloat,
       true,
       1.0,
       shifted,
       3e-4},
      {"layer_norm of a transposed view",
       {{6, 97}, {6}, {6}},
       [](const L& in) {
         return ln({in[0].t(), in[1], in[2]}, {6}, true, true);
       },
       kFloat,
       true},
      {"layer_norm many rows of 64",
       {{2000, 64}, {64}, {64}},
       [](const L& in) { return ln(in, {64}, true, true); },
       kFloat,
       true},
      {"layer_norm zero rows",
       {{0, 97}, {97}, {97}},
       [](const L& in) { return ln(in, {97}, true, true); },
       kFloat,
       true},
      // Rows held in registers (D a multiple of 8, aligned buffers): a warp per row (256)
      // and a block per row (4096).
      {"layer_norm D=4096 weight bias in registers",
       {{9, 4096}, {4096}, {4096}},
       [](const L& in) { return ln(in, {4096}, true, true); },
       kFloat,
       true},
      {"layer_norm D=256 no affine in registers",
       {{37, 256}},
       [](const L& in) { return ln(in, {256}, false, false); },
       kFloat,
       true},
      // As "layer_norm mean 100" with 2048 values: about 100 * 2^-24 * sqrt(2048) = 3e-4 of
      // float32 error in the mean, so 1e-3.
      {"layer_norm D=2048 mean 100 in registers",
       {{5, 2048}, {2048}, {2048}},
       [](const L& in) { return ln(in, {2048}, true, true); },
       kFloat,
       true,
       1.0,
       shifted,
       1e-3},
      // rms_norm: inputs x, weight.
      {"rms_norm D=97 weight",
       {{5, 7, 97}, {97}},
       [](const L& in) { return rms(in, {97}, true); },
       kFloat,
       true},
      {"rms_norm D=1025 no weight",
       {{13, 1025}},
       [](const L& in) { return rms(in, {1025}, false); },
       kFloat,
       true},
      {"rms_norm D=7x97 of a transposed view",
       {{97, 7, 5}, {7, 97}},
       [](const L& in) {
         return rms({in[0].permute({2, 1, 0}), in[1]}, {7, 97}, true);
       },
       kFloat,
       true},
      {"rms_norm D=5000 few rows",
       {{3, 5000}, {5000}},
       [](const L& in) { return rms(in, {5000}, true); },
       kFloat,
       true},
      {"rms_norm D=4096 weight in registers",
       {{7, 4096}, {4096}},
       [](const L& in) { return rms(in, {4096}, true); },
       kFloat,
       true},
      {"rms_norm D=512 no weight in registers",
       {{19, 512}},
       [](const L& in) { return rms(in, {512}, false); },
       kFloat,
       true},
      // dropout: the same (seed, offset) on both devices gives the same mask.
      {"dropout p=0.3",
       {{97, 1025}},
       [](const L& in) {
         mf::manual_seed(4321);
         return L{mf::dropout(in[0], 0.3)};
       },
       kFloat,
       true},
      {"dropout p=0.5 of a transposed view",
       {{1025, 97}},
       [](const L& in) {
         mf::manual_seed(77);
         return L{mf::dropout(in[0].t(), 0.5)};
       },
       kFloat,
       true},
      {"dropout p=1",
       {{5, 7, 3}},
       [](const L& in) {
         mf::manual_seed(5);
         return L{mf::dropout(in[0], 1.0)};
       },
       kFloat,
       true},
  };
}

}  // namespace

class CudaNn : public mftest::CudaTest {};

TEST_F(CudaNn, EveryOpMatchesCpu) {
  uint32_t seed = 2000;
  for (const CpuGpuCase& c : nn_cases()) mftest::run_cpu_gpu_case(c, seed += 13);
}

// Out-of-range targets on the GPU are found by the kernel (a flag read back with a
// stream sync) and raise the CPU path's error; the stream stays usable afterwards.
TEST_F(CudaNn, BadTargetRaisesTheCpuError) {
  const mf::Tensor x = mftest::normal_f64({3, 50257}, 1).to(DType::Float32).to(mf::Device::cuda());
  const mf::Tensor t64 = mf::from_vector<int64_t>({5, 50257, -3}, {3}).to(mf::Device::cuda());
  mftest::expect_error([&] { mf::cross_entropy(x, t64); },
                       {"cross_entropy: target 50257 (row 1) is out of bounds for 50257 classes",
                        "ignore_index -100"});
  const mf::Tensor t32 =
      mf::from_vector<int64_t>({5, -3, -7}, {3}).to(DType::Int32).to(mf::Device::cuda());
  mftest::expect_error([&] { mf::cross_entropy(x, t32, -3); },
                       {"cross_entropy: target -7 (row 2) is out of bounds", "ignore_index -3"});
  const mf::Tensor ok = mf::from_vector<int64_t>({5, 50256, 0}, {3});
  mftest::expect_gpu_matches(mf::cross_entropy(x, ok.to(mf::Device::cuda())),
                             mf::cross_entropy(x.to(mf::Device::cpu()), ok), 1e-5,
                             "cross_entropy after an error");
}

// rand, randint and dropout masks are bit for bit the CPU's for the same seed (Note
// [Random element layout]). randn goes through log/cos in double, whose device versions
// may differ from glibc's in the last bits: float64 within a few units in the last place
// (1e-14 relative), float32 within 1e-6 relative, the 16-bit types within one unit in the
// last place.
class CudaRandom : public mftest::CudaTest {};

TEST_F(CudaRandom, SameNumbersAsCpu) {
  const mf::Shape shape{97, 1025};
  for (DType dt : kFloat) {
    const mf::TensorOptions on_cpu{.dtype = dt}, on_gpu{.dtype = dt, .device = mf::Device::cuda()};
    mf::manual_seed(11);
    const mf::Tensor u_cpu = mf::rand(shape, on_cpu);
    mf::manual_seed(11);
    const mf::Tensor u_gpu = mf::rand(shape, on_gpu);
    EXPECT_EQ(u_gpu.to_vector<double>(), u_cpu.to_vector<double>()) << "rand " << dt;

    mf::manual_seed(12);
    const mf::Tensor n_cpu = mf::randn(shape, on_cpu);
    mf::manual_seed(12);
    const mf::Tensor n_gpu = mf::randn(shape, on_gpu);
    const double rtol = dt == DType::Float64   ? 1e-14
                        : dt == DType::Float32 ? 1e-6
                        : dt == DType::Float16 ? 9.8e-4
                                               : 7.9e-3;
    mftest::expect_close(n_gpu.to(mf::Device::cpu()), n_cpu, 0, rtol,
                         std::string("randn ") + mf::dtype_name(dt));

    // Dropout of ones: the scaled mask itself.
    const mf::Tensor ones_cpu = mf::ones(shape, on_cpu);
    mf::manual_seed(13);
    const mf::Tensor d_cpu = mf::dropout(ones_cpu, 0.37);
    mf::manual_seed(13);
    const mf::Tensor d_gpu = mf::dropout(ones_cpu.to(mf::Device::cuda()), 0.37);
    EXPECT_EQ(d_gpu.to_vector<double>(), d_cpu.to_vector<double>()) << "dropout mask " << dt;
  }
  for (DType dt : {DType::Int32, DType::Int64}) {
    for (auto [low, high] : {std::pair<int64_t, int64_t>{-5, 17}, {0, 1}, {-1000000, 999999937}}) {
      mf::manual_seed(14);
      const mf::Tensor a = mf::randint(low, high, shape, {.dtype = dt});
      mf::manual_seed(14);
      const mf::Tensor b =
          mf::randint(low, high, shape, {.dtype = dt, .device = mf::Device::cuda()});
      EXPECT_EQ(b.to_vector<int64_t>(), a.to_vector<int64_t>())
          << "randint " << dt << " [" << low << ", " << high << ")";
    }
  }
  // The full int64 range: high - low overflows int64 but not the unsigned range.
  mf::manual_seed(15);
  const mf::Tensor a =
      mf::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {1025});
  mf::manual_seed(15);
  const mf::Tensor b =
      mf::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {1025},
                  {.dtype = DType::Int64, .device = mf::Device::cuda()});
  EXPECT_EQ(b.to_vector<int64_t>(), a.to_vector<int64_t>()) << "randint int64 full range";
}
