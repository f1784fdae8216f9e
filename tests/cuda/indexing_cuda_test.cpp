// Indexing and shape ops on the GPU against the CPU, one table: index (the flex_attention
// bias pattern, negative and duplicate indices, strided sources), gather, index_select,
// embedding, masked_fill, cat, tril/triu and one_hot, forward and input gradients on both
// devices; out-of-range indices raise the CPU path's error on the GPU.
#include <cmath>
#include <functional>
#include <random>

#include "cuda/cuda_test_util.h"

namespace mf = microflex;
using mf::DType;
using mf::Shape;
using mf::Tensor;
using mf::TensorList;

namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, DType dt) {
  std::mt19937 gen(seed);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(shape)));
  if (mf::is_floating(dt)) {
    std::uniform_real_distribution<double> u(-2.0, 2.0);
    for (double& x : v) x = u(gen);
  } else {
    std::uniform_int_distribution<int> u(-50, 50);
    for (double& x : v) x = u(gen);
  }
  return mf::from_vector(v, shape, {.dtype = DType::Float64}).to(dt);
}

// Integers in [lo, hi] (duplicates are likely when the range is small).
Tensor random_ids(const Shape& shape, int64_t lo, int64_t hi, uint32_t seed,
                  DType dt = DType::Int64) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> u(lo, hi);
  std::vector<int64_t> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (int64_t& x : v) x = u(gen);
  return mf::from_vector(v, shape, {.dtype = DType::Int64}).to(dt);
}

Tensor random_mask(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::bernoulli_distribution b(0.4);
  std::vector<bool> v(static_cast<size_t>(mf::shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = b(gen);
  return mf::from_vector(v, shape, {.dtype = DType::Bool});
}

// Gradient tolerance (atol, rtol). Forward results are data movement and must match
// exactly. Gradients are index_backward's sums of duplicate entries: the CPU adds them
// in index order, the GPU with atomics in any order, so float32/float64 sums of up to
// ~40 terms of size <= 2 differ by a few ulps of the sum; float16/bfloat16 sum in float32
// on both devices and round once, so they differ by at most one ulp of the result
// (2^-10 / 2^-7 relative) plus a float32-sized absolute slack near zero.
std::pair<double, double> grad_tolerance(DType dt) {
  switch (dt) {
    case DType::Float64:
      return {1e-13, 1e-13};
    case DType::Float32:
      return {1e-5, 1e-6};
    case DType::Float16:
      return {1e-5, 2e-3};
    case DType::BFloat16:
      return {1e-5, 1.6e-2};
    default:
      return {0.0, 0.0};
  }
}

const std::vector<DType> kFloats = {DType::Float32, DType::Float64, DType::Float16,
                                    DType::BFloat16};

// One op invocation: fresh CPU leaves for a dtype, the op (which may take views of its
// leaves), and the leaves whose gradients are compared.
struct Row {
  std::string name;
  std::vector<DType> dtypes;
  std::function<TensorList(DType, uint32_t)> inputs;
  std::function<Tensor(const TensorList&)> op;
  std::vector<size_t> grads;
};

std::vector<Row> rows() {
  std::vector<Row> r;
  // flex_attention's captured bias: bias[q_idx [1, 1, M, 1], kv_idx [1, 1, 1, N]] ->
  // [1, 1, M, N]; indices include negatives and many duplicates.
  r.push_back({"index bias[37, 41] by q_idx [1, 1, 29, 1], kv_idx [1, 1, 1, 53]",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({37, 41}, s, dt),
                                   random_ids({1, 1, 29, 1}, -37, 36, s + 1),
                                   random_ids({1, 1, 1, 53}, -41, 40, s + 2, DType::Int32)};
               },
               [](const TensorList& in) {
                 return in[0].index({in[1], in[2]});
               },
               {0}});
  r.push_back({"index transposed bias [41, 37]^T by [5, 1] x [1, 97]",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({41, 37}, s, dt), random_ids({5, 1}, 0, 6, s + 1),
                                   random_ids({1, 97}, -41, 40, s + 2)};
               },
               [](const TensorList& in) {
                 return in[0].t().index({in[1], in[2]});
               },
               {0}});
  r.push_back(
      {"index [7, 5, 3] (dims 0 and 1 swapped) by one index [4, 6]",
       {DType::Float32, DType::Float16, DType::Int64, DType::Bool},
       [](DType dt, uint32_t s) {
         return TensorList{random_tensor({5, 7, 3}, s, dt), random_ids({4, 6}, -7, 6, s + 1)};
       },
       [](const TensorList& in) { return in[0].transpose(0, 1).index({in[1]}); },
       {}});
  r.push_back(
      {"index [7, 5, 3] by one index [4, 6] (gradient)",
       kFloats,
       [](DType dt, uint32_t s) {
         return TensorList{random_tensor({7, 5, 3}, s, dt), random_ids({4, 6}, -7, 6, s + 1)};
       },
       [](const TensorList& in) { return in[0].index({in[1]}); },
       {0}});
  r.push_back(
      {"gather [5, 7, 3] dim 1 by [5, 4, 3]",
       kFloats,
       [](DType dt, uint32_t s) {
         return TensorList{random_tensor({5, 7, 3}, s, dt), random_ids({5, 4, 3}, 0, 6, s + 1)};
       },
       [](const TensorList& in) { return mf::gather(in[0], 1, in[1]); },
       {0}});
  r.push_back({"gather [7, 5]^T dim -1 by int32 [5, 9]",
               {DType::Float32, DType::Int32},
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({7, 5}, s, dt),
                                   random_ids({5, 9}, 0, 6, s + 1, DType::Int32)};
               },
               [](const TensorList& in) { return mf::gather(in[0].t(), -1, in[1]); },
               {}});
  r.push_back({"index_select [97, 5] dim 0 by [50]",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({97, 5}, s, dt), random_ids({50}, -97, 96, s + 1)};
               },
               [](const TensorList& in) { return mf::index_select(in[0], 0, in[1]); },
               {0}});
  r.push_back({"index_select [5, 97] dim 1 by int32 [1025]",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({5, 97}, s, dt),
                                   random_ids({1025}, 0, 96, s + 1, DType::Int32)};
               },
               [](const TensorList& in) { return mf::index_select(in[0], 1, in[1]); },
               {0}});
  r.push_back(
      {"embedding [1025, 16] by [3, 97]",
       kFloats,
       [](DType dt, uint32_t s) {
         return TensorList{random_tensor({1025, 16}, s, dt), random_ids({3, 97}, 0, 40, s + 1)};
       },
       [](const TensorList& in) { return mf::embedding(in[0], in[1]); },
       {0}});
  r.push_back({"embedding [33, 7] by int32 [2, 97]^T-view",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({33, 7}, s, dt),
                                   random_ids({2, 97}, 0, 32, s + 1, DType::Int32)};
               },
               [](const TensorList& in) { return mf::embedding(in[0], in[1].t()); },
               {0}});
  r.push_back({"masked_fill [5, 7, 3] mask [7, 1] scalar 1.5",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({5, 7, 3}, s, dt), random_mask({7, 1}, s + 1)};
               },
               [](const TensorList& in) { return mf::masked_fill(in[0], in[1], mf::Scalar(1.5)); },
               {0}});
  r.push_back(
      {"masked_fill [3, 5]^T mask [5, 3] scalar 7",
       {DType::Float32, DType::Int32, DType::Int64, DType::Bool, DType::BFloat16},
       [](DType dt, uint32_t s) {
         return TensorList{random_tensor({3, 5}, s, dt), random_mask({5, 3}, s + 1)};
       },
       [](const TensorList& in) { return mf::masked_fill(in[0].t(), in[1], mf::Scalar(7)); },
       {}});
  // A 0-d value tensor on the host also fills a GPU tensor (read on the host).
  r.push_back({"masked_fill [97] mask [97] value tensor on the host",
               {DType::Float32, DType::Float16, DType::Int64},
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({97}, s, dt), random_mask({97}, s + 1)};
               },
               [](const TensorList& in) {
                 return mf::masked_fill(
                     in[0], in[1], mf::scalar_tensor(mf::Scalar(-3.25), {.dtype = DType::Float64}));
               },
               {}});
  r.push_back({"cat dim 1 of [5, 7, 3], [3, 2, 5]^T-view, empty [5, 0, 3], skipped [0]",
               kFloats,
               [](DType dt, uint32_t s) {
                 return TensorList{
                     random_tensor({5, 7, 3}, s, dt), random_tensor({3, 2, 5}, s + 1, dt),
                     random_tensor({5, 0, 3}, s + 2, dt), random_tensor({0}, s + 3, dt)};
               },
               [](const TensorList& in) {
                 return mf::cat({in[0], in[1].transpose(0, 2), in[2], in[3]}, 1);
               },
               {0, 1}});
  r.push_back({"cat dim 0 of float32 [4, 97] and float16 [2, 97] (promoted)",
               {DType::Float16},
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({4, 97}, s, DType::Float32),
                                   random_tensor({2, 97}, s + 1, dt)};
               },
               [](const TensorList& in) {
                 return mf::cat({in[0], in[1]}, 0);
               },
               {}});
  r.push_back({"stack of two [5, 7] at dim 1",
               {DType::Float32, DType::Int64},
               [](DType dt, uint32_t s) {
                 return TensorList{random_tensor({5, 7}, s, dt), random_tensor({5, 7}, s + 1, dt)};
               },
               [](const TensorList& in) {
                 return mf::stack({in[0], in[1]}, 1);
               },
               {}});
  for (const int64_t diag : {int64_t(0), int64_t(-2), int64_t(5)}) {
    const std::string d = std::to_string(diag);
    r.push_back({"tril [3, 97, 33] diagonal " + d,
                 kFloats,
                 [](DType dt, uint32_t s) {
                   return TensorList{random_tensor({3, 97, 33}, s, dt)};
                 },
                 [diag](const TensorList& in) { return mf::tril(in[0], diag); },
                 {0}});
    r.push_back({"triu [3, 33, 97]^T-view diagonal " + d,
                 {DType::Float32, DType::Float64, DType::BFloat16, DType::Int64, DType::Bool},
                 [](DType dt, uint32_t s) {
                   return TensorList{random_tensor({3, 97, 33}, s, dt)};
                 },
                 [diag](const TensorList& in) { return mf::triu(in[0].transpose(1, 2), diag); },
                 {}});
  }
  r.push_back({"one_hot [5, 7] num_classes 10",
               {DType::Int64, DType::Int32},
               [](DType dt, uint32_t s) {
                 return TensorList{random_ids({5, 7}, 0, 9, s, dt)};
               },
               [](const TensorList& in) { return mf::one_hot(in[0], 10); },
               {}});
  r.push_back({"one_hot [7, 5]^T-view num_classes inferred",
               {DType::Int32},
               [](DType dt, uint32_t s) {
                 return TensorList{random_ids({7, 5}, 0, 12, s, dt)};
               },
               [](const TensorList& in) { return mf::one_hot(in[0].t(), -1); },
               {}});
  return r;
}

}  // namespace

class IndexingCuda : public mftest::CudaTest {};

TEST_F(IndexingCuda, EveryOpMatchesCpuForwardAndBackward) {
  uint32_t seed = 1000;
  for (const Row& row : rows()) {
    for (DType dt : row.dtypes) {
      const std::string what = row.name + " " + mf::dtype_name(dt);
      seed += 10;
      TensorList cpu = row.inputs(dt, seed), gpu;
      for (const Tensor& t : cpu) gpu.push_back(mftest::on_gpu(t));
      for (size_t i : row.grads) {
        cpu[i].requires_grad_();
        gpu[i].requires_grad_();
      }
      const Tensor yc = row.op(cpu);
      const Tensor yg = row.op(gpu);
      ASSERT_TRUE(yg.is_cuda()) << what;
      ASSERT_EQ(yg.dtype(), yc.dtype()) << what;
      mftest::expect_close(yg, yc, 0.0, 0.0, what + " forward");
      if (row.grads.empty()) continue;
      const Tensor g = random_tensor(yc.sizes(), seed + 7, yc.dtype());
      yc.backward(g);
      yg.backward(mftest::on_gpu(g));
      const auto [atol, rtol] = grad_tolerance(dt);
      for (size_t i : row.grads) {
        ASSERT_TRUE(gpu[i].grad().defined() && cpu[i].grad().defined()) << what;
        ASSERT_TRUE(gpu[i].grad().is_cuda()) << what;
        mftest::expect_close(gpu[i].grad(), cpu[i].grad(), atol, rtol,
                             what + " gradient of input " + std::to_string(i));
      }
    }
  }
}

// The fused backward op directly, with int64 gradients (no atomics rounding).
TEST_F(IndexingCuda, IndexBackwardAccumulatesDuplicatesExactlyForIntegers) {
  const Tensor g = random_tensor({1, 1, 29, 53}, 3, DType::Int64);
  const Tensor q = random_ids({1, 1, 29, 1}, -5, 4, 4), kv = random_ids({1, 1, 1, 53}, 0, 3, 5);
  const Tensor cpu = mf::index_backward(g, {q, kv}, {5, 4});
  const Tensor gpu =
      mf::index_backward(mftest::on_gpu(g), {mftest::on_gpu(q), mftest::on_gpu(kv)}, {5, 4});
  mftest::expect_close(gpu, cpu, 0.0, 0.0, "index_backward int64 [1, 1, 29, 53] into [5, 4]");
}

TEST_F(IndexingCuda, OutOfRangeIndicesRaiseTheCpuError) {
  const Tensor bias = mftest::on_gpu(random_tensor({37, 41}, 1, DType::Float32));
  const Tensor q = mftest::on_gpu(mf::from_vector(std::vector<int64_t>{0, 5, 37, 2}, {1, 1, 4, 1}));
  const Tensor kv = mftest::on_gpu(random_ids({1, 1, 1, 6}, 0, 40, 2));
  mftest::expect_error(
      [&] {
        bias.index({q, kv});
      },
      {"index: index 37 is out of bounds for dim 0 with size 37"});
  const Tensor kv_neg = mftest::on_gpu(mf::from_vector(std::vector<int32_t>{-42, 1}, {1, 1, 1, 2}));
  const Tensor q_ok = mftest::on_gpu(random_ids({1, 1, 4, 1}, 0, 36, 3));
  mftest::expect_error(
      [&] {
        bias.index({q_ok, kv_neg});
      },
      {"index: index -42 is out of bounds for dim 1 with size 41"});
  mftest::expect_error(
      [&] {
        mf::gather(bias, 1, mftest::on_gpu(random_ids({37, 3}, 41, 41, 4)));
      },
      {"gather: index 41 is out of bounds for dim 1 with size 41"});
  mftest::expect_error(
      [&] {
        mf::embedding(bias, mftest::on_gpu(random_ids({2, 3}, 37, 37, 5)));
      },
      {"embedding: index 37 is out of bounds for dim 0 with size 37"});
  mftest::expect_error(
      [&] {
        mf::embedding(bias, mftest::on_gpu(random_ids({2, 3}, -1, -1, 10)));
      },
      {"embedding: index -1 is out of bounds for dim 0 with size 37"});
  mftest::expect_error(
      [&] { mf::index_select(bias, 1, mftest::on_gpu(random_ids({3}, -50, -50, 6))); },
      {"index_select: index -50 is out of bounds for dim 1 with size 41"});
  mftest::expect_error(
      [&] {
        mf::index_backward(mftest::on_gpu(random_tensor({1, 1, 4, 6}, 7, DType::Float32)), {q, kv},
                           {37, 41});
      },
      {"index_backward: index 37 is out of bounds for dim 0 with size 37"});
  mftest::expect_error([&] { mf::one_hot(mftest::on_gpu(random_ids({4}, 12, 12, 8)), 10); },
                       {"one_hot: class id 12 is out of range for num_classes 10"});
  mftest::expect_error([&] { mf::one_hot(mftest::on_gpu(random_ids({4}, -1, -1, 9)), 10); },
                       {"one_hot: class id -1 is negative"});
  // The device is still usable after the errors.
  const Tensor ok = bias.index({q_ok, mftest::on_gpu(random_ids({1, 1, 1, 6}, 0, 40, 10))});
  EXPECT_EQ(ok.sizes(), (Shape{1, 1, 4, 6}));
  for (double v : ok.to_vector<double>()) EXPECT_FALSE(std::isnan(v));
}
