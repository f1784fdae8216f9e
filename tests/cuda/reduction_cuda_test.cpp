// Reductions, softmax and log_softmax on the GPU against the CPU kernels: every op of
// ops/reduction.cpp over each dtype, reduced-dims combinations, odd sizes (97, 1025,
// 5x7x3, 3x50257), transposed (non-contiguous) inputs, NaN / inf rows, and the gradients
// of the fused backward ops. Tolerances: gpu_tolerance in cuda/cpu_gpu_cases.h.
#include <limits>

#include "cuda/cpu_gpu_cases.h"

namespace mf = microflex;

namespace {

using mf::DType;
using mftest::CpuGpuCase;

const std::vector<DType> kFloat = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};
const std::vector<DType> kAll = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16,
                                 DType::Int32,   DType::Int64,   DType::Bool};

// (6, 37) rows: normal; all -inf; a NaN; a +inf; some -inf; all NaN. Exercises NaN
// propagation and first-occurrence NaN in max, Note [Safe softmax] and logsumexp's
// -inf / +inf rows.
mf::Tensor special_rows(size_t, const mf::Shape& s, uint32_t seed, DType dt) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> v = mftest::normal_f64(s, seed).to_vector<double>();
  const int64_t c = s[1];
  for (int64_t j = 0; j < c; ++j) v[c * 1 + j] = -inf;
  v[c * 2 + 5] = nan;
  v[c * 2 + 9] = nan;
  v[c * 3 + 7] = inf;
  for (int64_t j = 0; j < c; j += 3) v[c * 4 + j] = -inf;
  for (int64_t j = 0; j < c; ++j) v[c * 5 + j] = nan;
  return mf::from_vector(v, s, {.dtype = DType::Float64}).to(dt);
}

std::vector<CpuGpuCase> reduction_cases() {
  using L = mf::TensorList;
  const mf::Shape big{97, 1025};  // a full reduction of it takes the split-row path
  const mf::Shape tall{1025, 97};
  const mf::Shape cube{5, 7, 3};
  return {
      // sum: integers and bool sum to int64.
      {"sum all", {big}, [](const L& in) { return L{mf::sum(in[0])}; }, kAll, true},
      {"sum dim -1", {big}, [](const L& in) { return L{mf::sum(in[0], {-1})}; }, kAll, true},
      {"sum dim 1 keepdim",
       {cube},
       [](const L& in) { return L{mf::sum(in[0], {1}, true)}; },
       kAll,
       true},
      {"sum dims 0,2",
       {cube},
       [](const L& in) {
         return L{mf::sum(in[0], {0, 2})};
       },
       kAll,
       true},
      {"sum dim 1 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::sum(in[0].t(), {1})}; },
       kAll,
       true},
      {"sum dim 0 (rows of 3)",
       {{3, 4001}},
       [](const L& in) { return L{mf::sum(in[0], {0})}; },
       kAll,
       true},
      // Column sums (Note [Column sums]): many rows split over blocks, leading and middle
      // dims, as a bias gradient over [B, T, C] needs.
      {"sum dim 0 of a tall matrix (split columns)",
       {{16411, 97}},
       [](const L& in) { return L{mf::sum(in[0], {0})}; },
       kAll,
       true},
      {"sum dims 0,1 (bias gradient)",
       {{7, 1025, 33}},
       [](const L& in) { return L{mf::sum(in[0], {0, 1})}; },
       kAll,
       true},
      {"sum middle dim, split",
       {{3, 4099, 65}},
       [](const L& in) { return L{mf::sum(in[0], {1})}; },
       kFloat,
       true},
      // mean
      {"mean all", {big}, [](const L& in) { return L{mf::mean(in[0])}; }, kFloat, true},
      {"mean dims 0,2 keepdim",
       {cube},
       [](const L& in) {
         return L{mf::mean(in[0], {0, 2}, true)};
       },
       kFloat,
       true},
      {"mean dim 0 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::mean(in[0].t(), {0})}; },
       kFloat,
       true},
      // max / min over everything, amax / amin over dims (values; ties share the gradient)
      {"max all", {big}, [](const L& in) { return L{mf::max(in[0])}; }, kAll, true},
      {"min all", {cube}, [](const L& in) { return L{mf::min(in[0])}; }, kAll, true},
      {"amax dims 0,2",
       {cube},
       [](const L& in) {
         return L{mf::amax(in[0], {0, 2})};
       },
       kAll,
       true},
      {"amin dim -1 keepdim",
       {big},
       [](const L& in) { return L{mf::amin(in[0], {-1}, true)}; },
       kAll,
       true},
      {"amax dim 0 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::amax(in[0].t(), {0})}; },
       kAll,
       true},
      // max / min along a dim: values and first-occurrence indices (16-bit and integer
      // inputs have many ties)
      {"max dim 1",
       {big},
       [](const L& in) {
         auto [v, i] = mf::max(in[0], 1);
         return L{v, i};
       },
       kAll,
       true},
      {"min dim 0 keepdim",
       {cube},
       [](const L& in) {
         auto [v, i] = mf::min(in[0], 0, true);
         return L{v, i};
       },
       kAll,
       true},
      {"max dim -1 of a transposed view",
       {tall},
       [](const L& in) {
         auto [v, i] = mf::max(in[0].t(), -1);
         return L{v, i};
       },
       kAll,
       true},
      {"min dim 0 (rows of 20000)",
       {{20000, 3}},
       [](const L& in) {
         auto [v, i] = mf::min(in[0], 0);
         return L{v, i};
       },
       kAll,
       true},
      // argmax / argmin
      {"argmax flattened", {big}, [](const L& in) { return L{mf::argmax(in[0])}; }, kAll},
      {"argmin dim 1", {cube}, [](const L& in) { return L{mf::argmin(in[0], 1)}; }, kAll},
      {"argmax dim 0 keepdim of a transposed view",
       {tall},
       [](const L& in) { return L{mf::argmax(in[0].t(), 0, true)}; },
       kAll},
      {"argmin flattened keepdim",
       {cube},
       [](const L& in) { return L{mf::argmin(in[0], std::nullopt, true)}; },
       kAll},
      // logsumexp: integer inputs give float32
      {"logsumexp dim -1",
       {big},
       [](const L& in) { return L{mf::logsumexp(in[0], {-1})}; },
       {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int64},
       true},
      {"logsumexp all",
       {big},
       [](const L& in) { return L{mf::logsumexp(in[0], {})}; },
       kFloat,
       true},
      {"logsumexp dims 0,2 keepdim",
       {cube},
       [](const L& in) {
         return L{mf::logsumexp(in[0], {0, 2}, true)};
       },
       kFloat,
       true},
      {"logsumexp dim 0 of a transposed view, large values",
       {tall},
       [](const L& in) { return L{mf::logsumexp(in[0].t(), {0})}; },
       kFloat,
       true,
       300.0},
      // var
      {"var dim -1", {big}, [](const L& in) { return L{mf::var(in[0], {-1})}; }, kFloat, true},
      {"var all", {big}, [](const L& in) { return L{mf::var(in[0])}; }, kFloat, true},
      {"var dims 0,2 correction 0 keepdim",
       {cube},
       [](const L& in) {
         return L{mf::var(in[0], {0, 2}, 0.0, true)};
       },
       kFloat,
       true},
      {"var dim 0 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::var(in[0].t(), {0})}; },
       kFloat,
       true},
      // softmax / log_softmax: warp rows (33), block rows (1025, 50257), a middle dim, a
      // transposed view, large logits
      {"softmax dim -1",
       {big},
       [](const L& in) { return L{mf::softmax(in[0], -1)}; },
       kFloat,
       true},
      {"softmax dim -1 rows of 33",
       {{97, 33}},
       [](const L& in) { return L{mf::softmax(in[0], -1)}; },
       kFloat,
       true},
      {"softmax dim 1", {cube}, [](const L& in) { return L{mf::softmax(in[0], 1)}; }, kFloat, true},
      {"softmax rows of 50257",
       {{3, 50257}},
       [](const L& in) { return L{mf::softmax(in[0], 1)}; },
       kFloat,
       true,
       4.0},
      {"softmax dim 0 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::softmax(in[0].t(), 0)}; },
       kFloat,
       true},
      {"softmax large logits",
       {{7, 1025}},
       [](const L& in) { return L{mf::softmax(in[0], -1)}; },
       kFloat,
       true,
       1e4},
      {"log_softmax dim -1",
       {big},
       [](const L& in) { return L{mf::log_softmax(in[0], -1)}; },
       kFloat,
       true},
      {"log_softmax dim -1 rows of 33",
       {{97, 33}},
       [](const L& in) { return L{mf::log_softmax(in[0], -1)}; },
       kFloat,
       true},
      {"log_softmax dim 0",
       {cube},
       [](const L& in) { return L{mf::log_softmax(in[0], 0)}; },
       kFloat,
       true},
      {"log_softmax rows of 50257",
       {{3, 50257}},
       [](const L& in) { return L{mf::log_softmax(in[0], -1)}; },
       kFloat,
       true,
       4.0},
      {"log_softmax dim 1 of a transposed view",
       {tall},
       [](const L& in) { return L{mf::log_softmax(in[0].t(), 1)}; },
       kFloat,
       true},
      // Rows held in registers (R a multiple of 8, aligned buffers): a warp per row (256,
      // 1024) and a block per row (4096, 8192), NaN / inf rows among them.
      {"softmax rows of 256 in registers",
       {{97, 256}},
       [](const L& in) { return L{mf::softmax(in[0], -1)}; },
       kFloat,
       true},
      {"softmax rows of 4096 in registers",
       {{9, 4096}},
       [](const L& in) { return L{mf::softmax(in[0], -1)}; },
       kFloat,
       true},
      {"log_softmax rows of 1024 in registers",
       {{33, 1024}},
       [](const L& in) { return L{mf::log_softmax(in[0], -1)}; },
       kFloat,
       true},
      {"log_softmax rows of 8192 in registers, large logits",
       {{3, 8192}},
       [](const L& in) { return L{mf::log_softmax(in[0], -1)}; },
       kFloat,
       true,
       1e4},
      {"special rows in registers: softmax",
       {{6, 4096}},
       [](const L& in) { return L{mf::softmax(in[0], 1)}; },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows in registers: log_softmax",
       {{6, 64}},
       [](const L& in) { return L{mf::log_softmax(in[0], 1)}; },
       kFloat,
       true,
       1.0,
       special_rows},
      // NaN / inf rows
      {"special rows: softmax",
       {{6, 37}},
       [](const L& in) { return L{mf::softmax(in[0], 1)}; },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows: log_softmax",
       {{6, 37}},
       [](const L& in) { return L{mf::log_softmax(in[0], 1)}; },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows: logsumexp",
       {{6, 37}},
       [](const L& in) { return L{mf::logsumexp(in[0], {1})}; },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows: max dim 1",
       {{6, 37}},
       [](const L& in) {
         auto [v, i] = mf::max(in[0], 1);
         return L{v, i};
       },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows: min dim 1",
       {{6, 37}},
       [](const L& in) {
         auto [v, i] = mf::min(in[0], 1);
         return L{v, i};
       },
       kFloat,
       false,
       1.0,
       special_rows},
      {"special rows: amax dim 1",
       {{6, 37}},
       [](const L& in) { return L{mf::amax(in[0], {1})}; },
       kFloat,
       true,
       1.0,
       special_rows},
      {"special rows: argmin, argmax",
       {{6, 37}},
       [](const L& in) {
         return L{mf::argmin(in[0], 1), mf::argmax(in[0], 1)};
       },
       kFloat,
       false,
       1.0,
       special_rows},
      {"special rows: sum, mean, var",
       {{6, 37}},
       [](const L& in) {
         return L{mf::sum(in[0], {1}), mf::mean(in[0], {1}), mf::var(in[0], {1})};
       },
       kFloat,
       false,
       1.0,
       special_rows},
  };
}

}  // namespace

class CudaReduction : public mftest::CudaTest {};

TEST_F(CudaReduction, EveryOpMatchesCpu) {
  uint32_t seed = 1000;
  for (const CpuGpuCase& c : reduction_cases()) mftest::run_cpu_gpu_case(c, seed += 17);
}
