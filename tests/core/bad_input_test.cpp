// The bad-input matrix: invalid calls of every public op and factory, one row each. Every
// row must raise microflex::Error (never crash, never succeed) with a message naming the
// op and the offending shape, dtype, device, dim or value. Mixed-device rows pair a CPU
// tensor with a fake CUDA one, which needs no GPU.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/fake.h"
#include "test_util.h"

namespace mf = microflex;

namespace {

using mf::DType;
using mf::Shape;
using mf::Tensor;

struct Row {
  std::string name;
  std::function<void()> call;
  std::vector<std::string> parts;  // substrings the message must contain
};

Tensor f32(const Shape& s) {
  return mf::arange(0, mf::shape_numel(s), 1, {.dtype = DType::Float32}).reshape(s);
}
Tensor i64(const Shape& s) {
  return mf::zeros(s, {.dtype = DType::Int64});
}
Tensor of(const Shape& s, DType dt) {
  return mf::zeros(s, {.dtype = dt});
}
// A CUDA tensor without a GPU: fake, so only the shape rules run.
Tensor cuda(const Shape& s, DType dt = DType::Float32) {
  mf::FakeModeGuard fake;
  return mf::zeros(s, {.dtype = dt, .device = mf::Device::cuda()});
}
Tensor ids(const std::vector<int64_t>& v) {
  return mf::from_vector(v);
}

mf::MaskMod causal() {
  return [](const Tensor&, const Tensor&, const Tensor& q, const Tensor& kv) { return q >= kv; };
}

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<Row> factory_rows() {
  return {
      {"empty negative size",
       [] {
         mf::empty({2, -1});
       },
       {"empty", "[2, -1]"}},
      {"zeros negative size", [] { mf::zeros({-3}); }, {"zeros", "[-3]"}},
      {"ones negative size",
       [] {
         mf::ones({4, -2});
       },
       {"ones", "[4, -2]"}},
      {"full negative size", [] { mf::full({-1}, 2.0); }, {"full", "[-1]"}},
      {"zeros too many elements",
       [] {
         mf::zeros({int64_t(1) << 40, int64_t(1) << 40});
       },
       {"zeros", "[1099511627776, 1099511627776]", "too many"}},
      {"empty_strided rank mismatch",
       [] {
         mf::empty_strided({2, 3}, {1});
       },
       {"empty_strided", "2 sizes", "1 strides"}},
      {"empty_strided negative stride",
       [] {
         mf::empty_strided({2, 3}, {-1, 1});
       },
       {"empty_strided", "[-1, 1]"}},
      {"full int32 overflow",
       [] { mf::full({2}, 1e10, {.dtype = DType::Int32}); },
       {"full", "1e+10", "int32"}},
      {"full nan into int64",
       [] { mf::full({2}, std::nan(""), {.dtype = DType::Int64}); },
       {"full", "nan", "int64"}},
      {"zeros int requires_grad",
       [] { mf::zeros({3}, {.dtype = DType::Int64, .requires_grad = true}); },
       {"requires_grad", "int64"}},
      {"arange zero step", [] { mf::arange(0, 10, 0); }, {"arange", "step"}},
      {"arange wrong direction", [] { mf::arange(10, 0, 1); }, {"arange", "[10, 0)", "step 1"}},
      {"arange infinite bound", [] { mf::arange(0.0, kInf); }, {"arange", "inf"}},
      {"arange int32 overflow",
       [] { mf::arange(0, int64_t(1) << 40, int64_t(1) << 38, {.dtype = DType::Int32}); },
       {"arange", "int32"}},
      {"linspace negative steps", [] { mf::linspace(0, 1, -1); }, {"linspace", "-1"}},
      {"from_vector count mismatch",
       [] {
         mf::from_vector<float>({1, 2, 3}, {2, 2});
       },
       {"from_vector", "3 values", "[2, 2]"}},
      {"rand int dtype", [] { mf::rand({2}, {.dtype = DType::Int64}); }, {"rand", "int64"}},
      {"randn negative size", [] { mf::randn({-1}); }, {"randn", "[-1]"}},
      {"randint empty range", [] { mf::randint(5, 5, {2}); }, {"randint", "low=5", "high=5"}},
      {"randint float dtype",
       [] { mf::randint(0, 5, {2}, {.dtype = DType::Float32}); },
       {"randint", "float32"}},
      {"device parse", [] { mf::Device::parse("gpu"); }, {"Device", "'gpu'"}},
      {"device parse index", [] { mf::Device::parse("cuda:x"); }, {"Device", "'cuda:x'"}},
  };
}

std::vector<Row> tensor_rows() {
  return {
      {"item of many",
       [] {
         f32({2, 3}).item<float>();
       },
       {"item", "6 elements", "[2, 3]"}},
      {"data_ptr wrong dtype",
       [] { f32({2}).data_ptr<int64_t>(); },
       {"data_ptr", "float32", "int64"}},
      {"to_vector of fake", [] { cuda({3}).to_vector<float>(); }, {"to_vector", "fake", "[3]"}},
      {"size dim out of range",
       [] {
         f32({2, 3}).size(2);
       },
       {"size", "dim 2", "2 dims"}},
      {"stride dim out of range",
       [] {
         f32({2, 3}).stride(-3);
       },
       {"stride", "dim -3"}},
      {"view wrong numel",
       [] {
         f32({2, 3}).view({4, 4});
       },
       {"view", "[4, 4]", "6"}},
      {"view two -1",
       [] {
         f32({2, 3}).view({-1, -1});
       },
       {"view", "only one dimension", "[-1, -1]"}},
      {"view negative size",
       [] {
         f32({2, 3}).view({-2, 3});
       },
       {"view", "-2", "[-2, 3]"}},
      {"view non-contiguous",
       [] {
         f32({2, 3}).t().view({6});
       },
       {"view", "[3, 2]"}},
      {"reshape wrong numel",
       [] {
         f32({2, 3}).reshape({5});
       },
       {"reshape", "[5]"}},
      {"permute wrong rank",
       [] {
         f32({2, 3}).permute({0});
       },
       {"permute", "1 dims", "2 dims"}},
      {"permute repeated dim",
       [] {
         f32({2, 3}).permute({1, 1});
       },
       {"permute", "dim 1", "repeats"}},
      {"permute dim out of range",
       [] {
         f32({2, 3}).permute({0, 2});
       },
       {"permute", "dim 2"}},
      {"transpose dim out of range",
       [] {
         f32({2, 3}).transpose(0, 2);
       },
       {"transpose", "dim 2"}},
      {"t of 3-d",
       [] {
         f32({2, 3, 4}).t();
       },
       {"t:", "[2, 3, 4]"}},
      {"expand incompatible", [] { f32({2}).expand({3}); }, {"expand", "[2]", "[3]"}},
      {"expand fewer dims",
       [] {
         f32({2, 3}).expand({3});
       },
       {"expand", "[2, 3]", "[3]"}},
      {"expand negative",
       [] {
         f32({1, 3}).expand({-2, 3});
       },
       {"expand", "-2"}},
      {"slice dim out of range",
       [] {
         f32({2, 3}).slice(3, 0, 1);
       },
       {"slice", "dim 3"}},
      {"slice zero step",
       [] {
         f32({2, 3}).slice(0, 0, 2, 0);
       },
       {"slice", "step", "0"}},
      {"slice of 0-d", [] { f32({}).slice(0, 0, 1); }, {"slice", "0-d"}},
      {"select index out of range",
       [] {
         f32({2, 3}).select(0, 5);
       },
       {"select", "index 5"}},
      {"select negative index",
       [] {
         f32({2, 3}).select(1, -4);
       },
       {"select", "index -4"}},
      {"select of 0-d", [] { f32({}).select(0, 0); }, {"select", "0-d"}},
      {"unsqueeze dim out of range",
       [] {
         f32({2, 3}).unsqueeze(4);
       },
       {"unsqueeze", "dim 4"}},
      {"squeeze dim out of range",
       [] {
         f32({2, 3}).squeeze(-3);
       },
       {"squeeze", "dim -3"}},
      {"narrow past the end",
       [] {
         f32({2, 3}).narrow(1, 1, 5);
       },
       {"narrow", "length 5"}},
      {"narrow negative length",
       [] {
         f32({2, 3}).narrow(1, 0, -1);
       },
       {"narrow", "length -1"}},
      {"flatten start after end",
       [] {
         f32({2, 3, 4}).flatten(2, 1);
       },
       {"flatten", "start_dim 2"}},
      {"copy_ shape mismatch",
       [] {
         Tensor d = f32({2, 3});
         d.copy_(f32({4}));
       },
       {"copy_", "[4]", "[2, 3]"}},
      {"copy_ mixed devices",
       [] {
         Tensor d = f32({3});
         d.copy_(cuda({3}));
       },
       {"copy_", "cpu", "cuda:0"}},
      {"requires_grad_ on int", [] { i64({2}).requires_grad_(); }, {"requires_grad_", "int64"}},
      {"requires_grad_ on non-leaf",
       [] {
         Tensor a = f32({2}).requires_grad_();
         (a * 2).requires_grad_(false);
       },
       {"requires_grad_", "leaf"}},
      {"backward without grad",
       [] { f32({2}).sum().backward(); },
       {"backward", "does not require grad"}},
      {"backward of non-scalar",
       [] { (f32({2}).requires_grad_() * 2).backward(); },
       {"backward", "[2]"}},
      {"backward grad shape",
       [] { (f32({2}).requires_grad_() * 2).backward(f32({3})); },
       {"backward", "[3]", "[2]"}},
      {"in-place on leaf requiring grad",
       [] {
         Tensor a = f32({2}).requires_grad_();
         a.add_(f32({2}));
       },
       {"add_", "leaf"}},
  };
}

std::vector<Row> elementwise_rows() {
  return {
      {"add shapes",
       [] {
         mf::add(f32({2, 3}), f32({4}));
       },
       {"add", "[2, 3]", "[4]"}},
      {"add devices", [] { mf::add(f32({3}), cuda({3})); }, {"add", "cpu", "cuda:0"}},
      {"add undefined", [] { mf::add(Tensor(), f32({3})); }, {"add", "undefined"}},
      {"sub shapes", [] { mf::sub(f32({5}), f32({3})); }, {"sub", "[5]", "[3]"}},
      {"sub bool", [] { mf::sub(of({2}, DType::Bool), of({2}, DType::Bool)); }, {"sub", "bool"}},
      {"sub devices", [] { mf::sub(cuda({3}), f32({3})); }, {"sub", "cuda:0", "cpu"}},
      {"mul shapes",
       [] {
         mf::mul(f32({2, 3}), f32({3, 2}));
       },
       {"mul", "[2, 3]", "[3, 2]"}},
      {"mul devices", [] { f32({2}) * cuda({2}); }, {"mul", "cpu", "cuda:0"}},
      {"div shapes",
       [] {
         mf::div(f32({4}), f32({2, 3}));
       },
       {"div", "[4]", "[2, 3]"}},
      {"neg bool", [] { mf::neg(of({2}, DType::Bool)); }, {"neg", "bool"}},
      {"pow shapes", [] { mf::pow(f32({2}), f32({3})); }, {"pow", "[2]", "[3]"}},
      {"pow int negative exponent", [] { mf::pow(i64({2}), -1); }, {"pow", "-1"}},
      {"remainder int by zero",
       [] {
         mf::remainder(ids({1, 2}), ids({1, 0}));
       },
       {"remainder", "zero"}},
      {"floor_divide int by zero", [] { mf::floor_divide(ids({3}), 0); }, {"floor_divide", "zero"}},
      {"maximum devices", [] { mf::maximum(f32({2}), cuda({2})); }, {"maximum", "cpu", "cuda:0"}},
      {"minimum shapes", [] { mf::minimum(f32({2}), f32({3})); }, {"minimum", "[2]", "[3]"}},
      {"clamp no bounds", [] { mf::clamp(f32({2}), std::nullopt, std::nullopt); }, {"clamp"}},
      {"gelu int", [] { mf::gelu(i64({2})); }, {"gelu", "int64"}},
      {"gelu approximate", [] { mf::gelu(f32({2}), "fast"); }, {"gelu", "'fast'"}},
      {"silu int", [] { mf::silu(i64({2})); }, {"silu", "int64"}},
      {"where float condition",
       [] { mf::where(f32({2}), f32({2}), f32({2})); },
       {"where", "float32"}},
      {"where shapes",
       [] { mf::where(of({2}, DType::Bool), f32({3}), f32({2})); },
       {"where", "[3]", "[2]"}},
      {"where devices",
       [] { mf::where(of({2}, DType::Bool), cuda({2}), f32({2})); },
       {"where", "cpu", "cuda:0"}},
      {"eq shapes", [] { mf::eq(f32({2}), f32({3})); }, {"eq", "[2]", "[3]"}},
      {"lt devices", [] { mf::lt(cuda({2}), f32({2})); }, {"lt", "cuda:0", "cpu"}},
      {"logical_and shapes",
       [] { mf::logical_and(f32({4}), f32({3})); },
       {"logical_and", "[4]", "[3]"}},
      {"bitwise_and float",
       [] { mf::bitwise_and(f32({2}), f32({2})); },
       {"bitwise_and", "float32"}},
      {"bitwise_not float", [] { mf::bitwise_not(f32({2})); }, {"bitwise_not", "float32"}},
      {"add_ broadcast into smaller",
       [] {
         Tensor a = f32({3});
         a.add_(f32({2, 3}));
       },
       {"add_", "[3]", "[2, 3]"}},
      {"mul_ float into int",
       [] {
         Tensor a = i64({3});
         a.mul_(f32({3}));
       },
       {"mul_", "int64", "float32"}},
      {"add_ devices",
       [] {
         Tensor a = f32({3});
         a.add_(cuda({3}));
       },
       {"add_", "cpu", "cuda:0"}},
  };
}

std::vector<Row> reduction_rows() {
  return {
      {"sum dim out of range",
       [] {
         mf::sum(f32({2, 3}), {2});
       },
       {"sum", "dim 2"}},
      {"sum repeated dim",
       [] {
         mf::sum(f32({2, 3}), {1, -1});
       },
       {"sum", "dim 1"}},
      {"mean int", [] { mf::mean(i64({2})); }, {"mean", "int64"}},
      {"mean dim out of range", [] { mf::mean(f32({2}), {-2}); }, {"mean", "dim -2"}},
      {"max over empty dim",
       [] {
         mf::max(f32({2, 0}), 1);
       },
       {"max", "size 0", "[2, 0]"}},
      {"max of empty", [] { mf::max(f32({0})); }, {"max", "[0]"}},
      {"min dim out of range", [] { mf::min(f32({2}), 1); }, {"min", "dim 1"}},
      {"amax dim out of range",
       [] {
         mf::amax(f32({2, 3}), {3});
       },
       {"amax", "dim 3"}},
      {"amin over empty dim",
       [] {
         mf::amin(f32({0, 3}), {0});
       },
       {"amin", "size 0"}},
      {"argmax dim out of range", [] { mf::argmax(f32({2}), 5); }, {"argmax", "dim 5"}},
      {"argmin of empty", [] { mf::argmin(f32({0})); }, {"argmin", "[0]"}},
      {"logsumexp dim out of range", [] { mf::logsumexp(f32({2}), {3}); }, {"logsumexp", "dim 3"}},
      {"var int", [] { mf::var(i64({3})); }, {"var", "int64"}},
      {"softmax dim out of range",
       [] {
         mf::softmax(f32({2, 3}), 2);
       },
       {"softmax", "dim 2"}},
      {"softmax int",
       [] {
         mf::softmax(i64({2, 3}), 1);
       },
       {"softmax", "int64"}},
      {"log_softmax bool",
       [] { mf::log_softmax(of({2}, DType::Bool), 0); },
       {"log_softmax", "bool"}},
      {"softmax_backward shapes",
       [] {
         mf::softmax_backward(f32({2, 3}), f32({3, 2}), 1);
       },
       {"softmax_backward", "[2, 3]", "[3, 2]"}},
      {"log_softmax_backward devices",
       [] { mf::log_softmax_backward(f32({2}), cuda({2}), 0); },
       {"log_softmax_backward", "cpu", "cuda:0"}},
  };
}

std::vector<Row> linalg_rows() {
  return {
      {"matmul inner dims",
       [] {
         mf::matmul(f32({2, 3}), f32({4, 5}));
       },
       {"matmul", "[2, 3]", "[4, 5]"}},
      {"matmul 0-d", [] { mf::matmul(f32({}), f32({3})); }, {"matmul", "at least 1 dim", "[]"}},
      {"matmul dtypes",
       [] {
         mf::matmul(f32({2, 2}), of({2, 2}, DType::Float64));
       },
       {"matmul", "float32", "float64"}},
      {"matmul bool",
       [] {
         mf::matmul(of({2, 2}, DType::Bool), of({2, 2}, DType::Bool));
       },
       {"matmul", "bool"}},
      {"matmul devices",
       [] {
         mf::matmul(f32({2, 2}), cuda({2, 2}));
       },
       {"matmul", "cpu", "cuda:0"}},
      {"matmul batch dims",
       [] {
         mf::matmul(f32({2, 2, 3}), f32({3, 3, 4}));
       },
       {"matmul", "[2, 2, 3]", "[3, 3, 4]"}},
      {"bmm 2-d",
       [] {
         mf::bmm(f32({2, 3}), f32({3, 2}));
       },
       {"bmm", "3-D", "[2, 3]"}},
      {"bmm batch",
       [] {
         mf::bmm(f32({2, 2, 3}), f32({3, 3, 2}));
       },
       {"bmm", "[2, 2, 3]", "[3, 3, 2]"}},
      {"bmm inner",
       [] {
         mf::bmm(f32({2, 2, 3}), f32({2, 4, 2}));
       },
       {"bmm", "[2, 2, 3]", "[2, 4, 2]"}},
      {"bmm devices",
       [] {
         mf::bmm(cuda({1, 2, 2}), f32({1, 2, 2}));
       },
       {"bmm", "cuda:0", "cpu"}},
      {"linear 1-d weight",
       [] {
         mf::linear(f32({2, 3}), f32({3}));
       },
       {"linear", "weight", "[3]"}},
      {"linear in features",
       [] {
         mf::linear(f32({2, 3}), f32({4, 5}));
       },
       {"linear", "[2, 3]", "[4, 5]"}},
      {"linear bias",
       [] {
         mf::linear(f32({2, 3}), f32({4, 3}), f32({3}));
       },
       {"linear", "bias", "[3]"}},
      {"linear devices",
       [] {
         mf::linear(f32({2, 3}), f32({4, 3}), cuda({4}));
       },
       {"linear", "cpu", "cuda:0"}},
      {"linear int",
       [] {
         mf::linear(i64({2, 3}), f32({4, 3}));
       },
       {"linear", "int64", "float32"}},
  };
}

std::vector<Row> indexing_rows() {
  return {
      {"index float indices", [] { mf::index(f32({3}), {f32({1})}); }, {"index", "float32"}},
      {"index too many",
       [] {
         mf::index(f32({3}), {ids({0}), ids({0})});
       },
       {"index", "too many"}},
      {"index out of range", [] { mf::index(f32({3}), {ids({7})}); }, {"index", "7", "3"}},
      {"index no indices", [] { mf::index(f32({3}), {}); }, {"index", "at least one"}},
      {"index devices",
       [] { mf::index(f32({3}), {cuda({1}, DType::Int64)}); },
       {"index", "cpu", "cuda:0"}},
      {"gather dim",
       [] {
         mf::gather(f32({2, 3}), 2, i64({2, 3}));
       },
       {"gather", "dim 2"}},
      {"gather float index",
       [] {
         mf::gather(f32({2, 3}), 1, f32({2, 3}));
       },
       {"gather", "float32"}},
      {"gather rank",
       [] {
         mf::gather(f32({2, 3}), 1, i64({2}));
       },
       {"gather", "[2]", "[2, 3]"}},
      {"gather out of range",
       [] {
         mf::gather(f32({1, 3}), 1, ids({5}).reshape({1, 1}));
       },
       {"gather", "5"}},
      {"index_select 2-d index",
       [] {
         mf::index_select(f32({3}), 0, i64({1, 1}));
       },
       {"index_select", "[1, 1]"}},
      {"index_select out of range",
       [] {
         mf::index_select(f32({3, 2}), 0, ids({3}));
       },
       {"index_select", "3"}},
      {"index_select dim",
       [] { mf::index_select(f32({3}), 1, ids({0})); },
       {"index_select", "dim 1"}},
      {"embedding 1-d weight", [] { mf::embedding(f32({4}), ids({0})); }, {"embedding", "[4]"}},
      {"embedding float ids",
       [] {
         mf::embedding(f32({4, 2}), f32({1}));
       },
       {"embedding", "float32"}},
      {"embedding out of range",
       [] {
         mf::embedding(f32({4, 2}), ids({4}));
       },
       {"embedding", "4"}},
      {"embedding negative id",
       [] {
         mf::embedding(f32({4, 2}), ids({-1}));
       },
       {"embedding", "-1"}},
      {"embedding devices",
       [] {
         mf::embedding(f32({4, 2}), cuda({1}, DType::Int64));
       },
       {"embedding", "cpu", "cuda:0"}},
      {"masked_fill float mask",
       [] { mf::masked_fill(f32({2}), f32({2}), 0.0); },
       {"masked_fill", "float32"}},
      {"masked_fill shapes",
       [] { mf::masked_fill(f32({2}), of({3}, DType::Bool), 0.0); },
       {"masked_fill", "[2]", "[3]"}},
      {"masked_fill value not 0-d",
       [] { mf::masked_fill(f32({2}), of({2}, DType::Bool), f32({2})); },
       {"masked_fill", "[2]"}},
      {"masked_fill devices",
       [] { mf::masked_fill(f32({2}), cuda({2}, DType::Bool), 0.0); },
       {"masked_fill", "cpu", "cuda:0"}},
      {"masked_fill value device",
       [] { mf::masked_fill(f32({2}), of({2}, DType::Bool), cuda({})); },
       {"masked_fill", "cpu", "cuda:0"}},
      {"index_backward shape",
       [] { mf::index_backward(f32({2}), {ids({0})}, {3}); },
       {"index_backward", "[2]"}},
  };
}

std::vector<Row> shape_rows() {
  return {
      {"cat empty list", [] { mf::cat({}); }, {"cat", "non-empty"}},
      {"cat shapes",
       [] {
         mf::cat({f32({2, 3}), f32({2, 4})}, 0);
       },
       {"cat", "[2, 4]", "[2, 3]"}},
      {"cat ranks",
       [] {
         mf::cat({f32({2, 3}), f32({3})});
       },
       {"cat", "[3]"}},
      {"cat dim",
       [] {
         mf::cat({f32({2}), f32({2})}, 1);
       },
       {"cat", "dim 1"}},
      {"cat 0-d",
       [] {
         mf::cat({f32({}), f32({})});
       },
       {"cat", "0-d"}},
      {"cat devices",
       [] {
         mf::cat({f32({2}), cuda({2})});
       },
       {"cat", "cpu", "cuda:0"}},
      {"cat undefined",
       [] {
         mf::cat({f32({2}), Tensor()});
       },
       {"cat", "input 1", "undefined"}},
      {"stack shapes",
       [] {
         mf::stack({f32({2}), f32({3})});
       },
       {"stack", "[3]", "[2]"}},
      {"stack empty list", [] { mf::stack({}); }, {"stack", "non-empty"}},
      {"stack dim",
       [] {
         mf::stack({f32({2}), f32({2})}, 3);
       },
       {"stack", "dim 3"}},
      {"stack devices",
       [] {
         mf::stack({f32({2}), cuda({2})});
       },
       {"stack", "cpu", "cuda:0"}},
      {"split negative size", [] { mf::split(f32({4}), -1); }, {"split", "-1"}},
      {"split sizes sum",
       [] {
         mf::split(f32({4}), std::vector<int64_t>{1, 2});
       },
       {"split", "[1, 2]", "4"}},
      {"split 0-d", [] { mf::split(f32({}), 1); }, {"split", "0-d"}},
      {"chunk zero", [] { mf::chunk(f32({4}), 0); }, {"chunk", "0"}},
      {"chunk dim", [] { mf::chunk(f32({4}), 2, 1); }, {"chunk", "dim 1"}},
      {"tril 1-d", [] { mf::tril(f32({3})); }, {"tril", "[3]"}},
      {"triu 0-d", [] { mf::triu(f32({})); }, {"triu", "[]"}},
      {"one_hot float", [] { mf::one_hot(f32({2}), 3); }, {"one_hot", "float32"}},
      {"one_hot out of range",
       [] {
         mf::one_hot(ids({0, 3}), 3);
       },
       {"one_hot", "3"}},
      {"one_hot negative id", [] { mf::one_hot(ids({-1}), 3); }, {"one_hot", "-1"}},
      {"one_hot zero classes", [] { mf::one_hot(ids({0}), 0); }, {"one_hot", "num_classes", "0"}},
      {"one_hot infer from empty", [] { mf::one_hot(i64({0})); }, {"one_hot", "empty"}},
  };
}

std::vector<Row> nn_rows() {
  return {
      {"cross_entropy float target",
       [] {
         mf::cross_entropy(f32({2, 3}), f32({2}));
       },
       {"cross_entropy", "float32"}},
      {"cross_entropy int logits",
       [] {
         mf::cross_entropy(i64({2, 3}), ids({0, 1}));
       },
       {"cross_entropy", "int64"}},
      {"cross_entropy 3-d logits",
       [] {
         mf::cross_entropy(f32({2, 3, 4}), ids({0, 1}));
       },
       {"cross_entropy", "[2, 3, 4]"}},
      {"cross_entropy target shape",
       [] {
         mf::cross_entropy(f32({2, 3}), ids({0, 1, 2}));
       },
       {"cross_entropy", "[3]", "[2]"}},
      {"cross_entropy target out of range",
       [] {
         mf::cross_entropy(f32({2, 3}), ids({0, 3}));
       },
       {"cross_entropy", "3"}},
      {"cross_entropy negative target",
       [] {
         mf::cross_entropy(f32({2, 3}), ids({-2, 0}));
       },
       {"cross_entropy", "-2"}},
      {"cross_entropy reduction",
       [] {
         mf::cross_entropy(f32({2, 3}), ids({0, 1}), -100, "avg");
       },
       {"cross_entropy", "\"avg\""}},
      {"cross_entropy label_smoothing",
       [] {
         mf::cross_entropy(f32({2, 3}), ids({0, 1}), -100, "mean", 2.0);
       },
       {"cross_entropy", "label_smoothing", "2"}},
      {"cross_entropy devices",
       [] {
         mf::cross_entropy(f32({2, 3}), cuda({2}, DType::Int64));
       },
       {"cross_entropy", "cpu", "cuda:0"}},
      {"cross_entropy no classes",
       [] {
         mf::cross_entropy(f32({2, 0}), ids({0, 0}));
       },
       {"cross_entropy", "[2, 0]"}},
      {"layer_norm int",
       [] {
         mf::layer_norm(i64({2, 3}), {3});
       },
       {"layer_norm", "int64"}},
      {"layer_norm shape",
       [] {
         mf::layer_norm(f32({2, 3}), {4});
       },
       {"layer_norm", "[4]", "[2, 3]"}},
      {"layer_norm empty normalized_shape",
       [] {
         mf::layer_norm(f32({2, 3}), {});
       },
       {"layer_norm", "normalized_shape"}},
      {"layer_norm weight shape",
       [] {
         mf::layer_norm(f32({2, 3}), {3}, f32({2}));
       },
       {"layer_norm", "weight", "[2]"}},
      {"layer_norm bias dtype",
       [] {
         mf::layer_norm(f32({2, 3}), {3}, f32({3}), i64({3}));
       },
       {"layer_norm", "bias", "int64"}},
      {"layer_norm devices",
       [] {
         mf::layer_norm(f32({2, 3}), {3}, cuda({3}));
       },
       {"layer_norm", "cpu", "cuda:0"}},
      {"layer_norm 0-d input", [] { mf::layer_norm(f32({}), {1}); }, {"layer_norm", "[1]", "[]"}},
      {"rms_norm shape",
       [] {
         mf::rms_norm(f32({2, 3}), {2});
       },
       {"rms_norm", "[2]", "[2, 3]"}},
      {"rms_norm bool", [] { mf::rms_norm(of({2}, DType::Bool), {2}); }, {"rms_norm", "bool"}},
      {"rms_norm devices",
       [] {
         mf::rms_norm(cuda({2, 3}), {3}, f32({3}));
       },
       {"rms_norm", "cuda:0", "cpu"}},
      {"rms_norm weight shape",
       [] {
         mf::rms_norm(f32({2, 3}), {3}, f32({3, 1}));
       },
       {"rms_norm", "weight", "[3, 1]"}},
      {"dropout p", [] { mf::dropout(f32({2}), 1.5); }, {"dropout", "1.5"}},
      {"dropout negative p", [] { mf::dropout(f32({2}), -0.1); }, {"dropout", "-0.1"}},
      {"dropout int", [] { mf::dropout(i64({2}), 0.5); }, {"dropout", "int64"}},
  };
}

std::vector<Row> flex_rows() {
  auto q = [](const Shape& s = {1, 2, 4, 8}) { return f32(s); };
  return {
      {"flex q rank",
       [=] {
         mf::flex_attention(q({2, 4, 8}), q(), q());
       },
       {"flex_attention", "q", "[2, 4, 8]"}},
      {"flex k rank",
       [=] {
         mf::flex_attention(q(), q({4, 8}), q());
       },
       {"flex_attention", "k", "[4, 8]"}},
      {"flex dtypes",
       [=] {
         mf::flex_attention(q(), q(), of({1, 2, 4, 8}, DType::Float64));
       },
       {"flex_attention", "float32", "float64"}},
      {"flex int",
       [=] {
         mf::flex_attention(i64({1, 1, 2, 2}), i64({1, 1, 2, 2}), i64({1, 1, 2, 2}));
       },
       {"flex_attention", "int64"}},
      {"flex devices",
       [=] {
         mf::flex_attention(q(), cuda({1, 2, 4, 8}), q());
       },
       {"flex_attention", "cpu", "cuda:0"}},
      {"flex batch",
       [=] {
         mf::flex_attention(q(), q({2, 2, 4, 8}), q({2, 2, 4, 8}));
       },
       {"flex_attention", "1", "2"}},
      {"flex head dim",
       [=] {
         mf::flex_attention(q(), q({1, 2, 4, 6}), q());
       },
       {"flex_attention", "D = 8", "6"}},
      {"flex k v length",
       [=] {
         mf::flex_attention(q(), q({1, 2, 5, 8}), q());
       },
       {"flex_attention", "[1, 2, 5, 8]", "[1, 2, 4, 8]"}},
      {"flex heads without gqa",
       [=] {
         mf::flex_attention(q({1, 4, 4, 8}), q(), q());
       },
       {"flex_attention", "4 heads", "2"}},
      {"flex gqa not a multiple",
       [=] {
         mf::flex_attention(q({1, 3, 4, 8}), q(), q(), {.enable_gqa = true});
       },
       {"flex_attention", "3", "2"}},
      {"flex empty sequence",
       [=] {
         mf::flex_attention(q({1, 2, 0, 8}), q(), q());
       },
       {"flex_attention", "M = 0"}},
      {"flex block mask length",
       [=] {
         mf::flex_attention(q(), q(), q(),
                            {.block_mask = mf::create_block_mask(causal(), 1, 1, 8, 8)});
       },
       {"flex_attention", "BlockMask", "8"}},
      {"flex scale",
       [=] { mf::flex_attention(q(), q(), q(), {.scale = kInf}); },
       {"flex_attention", "scale", "inf"}},
      {"flex score_mod shape",
       [=] {
         mf::flex_attention(q(), q(), q(),
                            {.score_mod = [](const Tensor& s, const Tensor&, const Tensor&,
                                             const Tensor&, const Tensor&) { return s.sum({3}); }});
       },
       {"flex_attention", "score_mod", "sum: dim 3"}},
      {"create_block_mask sizes",
       [] { mf::create_block_mask(causal(), 0, 1, 8, 8); },
       {"create_block_mask", "0"}},
      {"create_block_mask block size",
       [] { mf::create_block_mask(causal(), 1, 1, 8, 8, mf::Device::cpu(), 0); },
       {"create_block_mask", "block_size", "0"}},
      {"create_block_mask empty mask_mod",
       [] { mf::create_block_mask(mf::MaskMod(), 1, 1, 8, 8); },
       {"create_block_mask", "mask_mod"}},
      {"block mask adjust longer",
       [] { mf::create_block_mask(causal(), 1, 1, 8, 8).adjust(16, 8); },
       {"adjust", "16"}},
      {"cond float predicate",
       [] {
         mf::cond(
             f32({}), [](const mf::TensorList& t) { return t; },
             [](const mf::TensorList& t) { return t; }, {f32({2})});
       },
       {"cond", "float32"}},
      {"cond branch shapes",
       [] {
         mf::cond(
             mf::full({}, true, {.dtype = DType::Bool}),
             [](const mf::TensorList& t) { return mf::TensorList{t[0]}; },
             [](const mf::TensorList& t) { return mf::TensorList{t[0].sum()}; }, {f32({2})});
       },
       {"cond", "[2]", "[]"}},
  };
}

// A default-constructed Tensor where a tensor is required: an Error naming the op, never
// a null dereference.
std::vector<Row> undefined_rows() {
  const Tensor u;
  return {
      {"neg undefined", [=] { mf::neg(u); }, {"neg", "undefined"}},
      {"exp undefined", [=] { mf::exp(u); }, {"exp", "undefined"}},
      {"where undefined", [=] { mf::where(u, f32({2}), f32({2})); }, {"where", "undefined"}},
      {"clamp undefined", [=] { mf::clamp(u, 0.0, 1.0); }, {"clamp", "undefined"}},
      {"sum undefined", [=] { mf::sum(u); }, {"sum", "undefined"}},
      {"softmax undefined", [=] { mf::softmax(u, 0); }, {"softmax", "undefined"}},
      {"matmul undefined",
       [=] {
         mf::matmul(f32({2, 2}), u);
       },
       {"matmul", "input 1", "undefined"}},
      {"bmm undefined",
       [=] {
         mf::bmm(u, f32({1, 2, 2}));
       },
       {"bmm", "undefined"}},
      {"linear undefined",
       [=] {
         mf::linear(f32({2, 3}), u);
       },
       {"linear", "undefined"}},
      {"gather undefined", [=] { mf::gather(f32({2}), 0, u); }, {"gather", "undefined"}},
      {"embedding undefined", [=] { mf::embedding(u, ids({0})); }, {"embedding", "undefined"}},
      {"masked_fill undefined",
       [=] { mf::masked_fill(f32({2}), u, 0.0); },
       {"masked_fill", "undefined"}},
      {"tril undefined", [=] { mf::tril(u); }, {"tril", "undefined"}},
      {"cross_entropy undefined",
       [=] {
         mf::cross_entropy(f32({2, 3}), u);
       },
       {"cross_entropy", "undefined"}},
      {"layer_norm undefined input",
       [=] { mf::layer_norm(u, {3}); },
       {"layer_norm", "input 0", "undefined"}},
      {"rms_norm undefined input", [=] { mf::rms_norm(u, {3}); }, {"rms_norm", "undefined"}},
      {"dropout undefined", [=] { mf::dropout(u, 0.5); }, {"dropout", "undefined"}},
      {"clone undefined", [=] { mf::clone(u); }, {"clone", "undefined"}},
      {"to_dtype undefined", [=] { mf::to_dtype(u, DType::Float64); }, {"undefined"}},
      {"view undefined", [=] { u.view({2}); }, {"view", "undefined"}},
      {"split undefined", [=] { mf::split(u, 1); }, {"split", "undefined"}},
      {"index undefined source", [=] { mf::index(u, {ids({0})}); }, {"index", "undefined"}},
      {"empty_like undefined", [=] { mf::empty_like(u); }, {"undefined"}},
      {"sizes of undefined", [=] { (void)u.sizes(); }, {"tensor is undefined"}},
  };
}

void run_rows(const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    SCOPED_TRACE(r.name);
    try {
      r.call();
      ADD_FAILURE() << r.name << ": expected microflex::Error, the call succeeded";
    } catch (const mf::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find("internal error"), std::string::npos) << r.name << ": " << msg;
      for (const auto& p : r.parts)
        EXPECT_NE(msg.find(p), std::string::npos)
            << r.name << ": message \"" << msg << "\" lacks \"" << p << "\"";
    } catch (const std::exception& e) {
      ADD_FAILURE() << r.name << ": expected microflex::Error, got another exception: " << e.what();
    }
  }
}

}  // namespace

TEST(BadInput, Factories) {
  run_rows(factory_rows());
}
TEST(BadInput, TensorMethodsAndViews) {
  std::vector<Row> rows = tensor_rows();
  // Only an error where there is no GPU (CI); on a GPU machine the copy succeeds.
  if (!mf::cuda_available())
    rows.push_back({"to cuda without a GPU",
                    [] { f32({3}).to(mf::Device::cuda()); },
                    {"to", "cuda:0", "float32[3] on cpu"}});
  run_rows(rows);
}
TEST(BadInput, Elementwise) {
  run_rows(elementwise_rows());
}
TEST(BadInput, Reductions) {
  run_rows(reduction_rows());
}
TEST(BadInput, Linalg) {
  run_rows(linalg_rows());
}
TEST(BadInput, Indexing) {
  run_rows(indexing_rows());
}
TEST(BadInput, ShapeOps) {
  run_rows(shape_rows());
}
TEST(BadInput, NN) {
  run_rows(nn_rows());
}
TEST(BadInput, FlexAttentionAndHigherOrder) {
  run_rows(flex_rows());
}

TEST(BadInput, UndefinedTensors) {
  run_rows(undefined_rows());
}

// The matrix covers about a hundred invalid calls; keep it from shrinking unnoticed.
TEST(BadInput, RowCount) {
  const size_t n = factory_rows().size() + tensor_rows().size() + elementwise_rows().size() +
                   reduction_rows().size() + linalg_rows().size() + indexing_rows().size() +
                   shape_rows().size() + nn_rows().size() + flex_rows().size() +
                   undefined_rows().size();
  EXPECT_GE(n, 100u);
  RecordProperty("rows", static_cast<int>(n));
}
