// One table-driven test over every op registered in the dispatcher. Each entry builds
// fresh random inputs (odd shapes, broadcasting, a non-contiguous input where the op
// takes one) and calls the op through its public function; the test checks that fake
// mode gives the eager outputs' metadata, that a traced graph replayed on new inputs
// equals eager bitwise, and gradcheck in float64 for differentiable ops, plus backward in
// fake mode and joint (forward + backward) graphs replayed against eager autograd.
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ops/op_utils.h"
#include "test_util.h"

namespace mf = microflex;
using mf::DType;
using mf::Shape;
using mf::Tensor;
using mf::TensorList;

namespace {

// Makes the inputs of one entry from a seeded generator. Floating inputs get `fdt`: each
// floating dtype in turn for the fake and trace checks, float64 for gradcheck.
struct Gen {
  std::mt19937 rng;
  DType fdt;

  Tensor values(const Shape& s, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
    for (double& x : v) x = u(rng);
    return mf::from_vector(v, s, {.dtype = DType::Float64}).to(fdt);
  }
  // Values spread over [-2, 2].
  Tensor uniform(const Shape& s) { return values(s, -2.0, 2.0); }
  // Values in [0.5, 2.5], for log, sqrt, pow bases.
  Tensor positive(const Shape& s) { return values(s, 0.5, 2.5); }
  // Values in +-[0.5, 2], for divisors.
  Tensor away_from_zero(const Shape& s) {
    const Tensor m = values(s, 0.5, 2.0);
    return mf::where(bools(s), m, -m);
  }
  // The same shape as a non-contiguous view: the last two dims transposed (a strided
  // slice for 1-D), with `make`'s values.
  template <typename Make>
  Tensor noncontig(const Shape& s, Make make) {
    if (s.size() >= 2) {
      Shape t = s;
      std::swap(t[t.size() - 1], t[t.size() - 2]);
      return make(t).transpose(-1, -2);
    }
    MF_INTERNAL_ASSERT(s.size() == 1, "noncontig needs a dim");
    return make(Shape{2 * s[0]}).slice(0, 0, 2 * s[0], 2);
  }
  Tensor uniform_nc(const Shape& s) {
    return noncontig(s, [this](const Shape& t) { return uniform(t); });
  }
  Tensor ints(const Shape& s, int64_t lo, int64_t hi, DType dt = DType::Int64) {
    std::uniform_int_distribution<int64_t> u(lo, hi - 1);
    std::vector<int64_t> v(static_cast<size_t>(mf::shape_numel(s)));
    for (int64_t& x : v) x = u(rng);
    return mf::from_vector(v, s, {.dtype = DType::Int64}).to(dt);
  }
  Tensor bools(const Shape& s) { return ints(s, 0, 2).to(DType::Bool); }
};

using MakeInputs = std::function<TensorList(Gen&)>;
using OpFn = std::function<TensorList(const TensorList&)>;

struct OpCase {
  std::string op;  // the registered op this entry covers
  MakeInputs inputs;
  OpFn fn;
  size_t grad_output = 0;  // the output gradcheck differentiates
  // gradcheck settings (the defaults of autograd/gradcheck.h unless an entry says why).
  double eps = 1e-6, atol = 1e-6, rtol = 1e-4;
  bool random = false;         // draws from the default generator: manual_seed before each run
  bool uninitialized = false;  // eager output values are unspecified: compare metadata only
};

constexpr uint64_t kRandomSeed = 1234;

TensorList run_case(const OpCase& c, const TensorList& in) {
  if (c.random) mf::manual_seed(kRandomSeed);
  return c.fn(in);
}

TensorList make_inputs(const OpCase& c, uint32_t seed, DType fdt) {
  Gen g{std::mt19937(seed), fdt};
  return c.inputs(g);
}

Tensor call(const char* name, const TensorList& in, const mf::Attrs& attrs = {}) {
  return mf::call_op1(mf::op_named(name), in, attrs);
}
TensorList call_all(const char* name, const TensorList& in, const mf::Attrs& attrs = {}) {
  return mf::call_op(mf::op_named(name), in, attrs);
}

// ---- Entry builders ----

OpCase unary(const std::string& op, std::function<Tensor(const Tensor&)> f, bool positive = false) {
  return {op,
          [positive](Gen& g) {
            return TensorList{
                positive ? g.noncontig({3, 5}, [&](const Shape& s) { return g.positive(s); })
                         : g.uniform_nc({3, 5})};
          },
          [f](const TensorList& in) { return TensorList{f(in[0])}; }};
}

// a [2, 1, 3] and a non-contiguous b [4, 3] broadcast to [2, 4, 3].
OpCase binary(const std::string& op, std::function<Tensor(const Tensor&, const Tensor&)> f,
              MakeInputs inputs = nullptr) {
  if (!inputs)
    inputs = [](Gen& g) { return TensorList{g.uniform({2, 1, 3}), g.uniform_nc({4, 3})}; };
  return {op, std::move(inputs), [f](const TensorList& in) { return TensorList{f(in[0], in[1])}; }};
}

// Small integers as floats (so that comparisons see ties) against an int64 tensor.
TensorList compare_inputs(Gen& g) {
  return {g.ints({2, 1, 3}, -2, 3).to(g.fdt),
          g.noncontig({4, 3}, [&](const Shape& s) { return g.ints(s, -2, 3); })};
}

// A float tensor with zeros (false) against a bool tensor.
TensorList logical_inputs(Gen& g) {
  return {g.ints({2, 1, 3}, -1, 2).to(g.fdt),
          g.noncontig({4, 3}, [&](const Shape& s) { return g.bools(s); })};
}

// int32 against non-contiguous int64 (promotes to int64).
TensorList bitwise_inputs(Gen& g) {
  return {g.ints({2, 1, 3}, -9, 9, DType::Int32),
          g.noncontig({4, 3}, [&](const Shape& s) { return g.ints(s, -9, 9); })};
}

std::vector<OpCase> build_cases() {
  std::vector<OpCase> t;

  // ---- Elementwise unary ----
  t.push_back(unary("abs", [](const Tensor& x) { return mf::abs(x); }));
  t.push_back(unary("sign", [](const Tensor& x) { return mf::sign(x); }));
  t.push_back(unary("neg", [](const Tensor& x) { return mf::neg(x); }));
  t.push_back(unary("exp", [](const Tensor& x) { return mf::exp(x); }));
  t.push_back(unary("exp2", [](const Tensor& x) { return mf::exp2(x); }));
  t.push_back(unary(
      "log", [](const Tensor& x) { return mf::log(x); }, true));
  t.push_back(unary(
      "log2", [](const Tensor& x) { return mf::log2(x); }, true));
  t.push_back(unary(
      "sqrt", [](const Tensor& x) { return mf::sqrt(x); }, true));
  t.push_back(unary(
      "rsqrt", [](const Tensor& x) { return mf::rsqrt(x); }, true));
  t.push_back(unary("sin", [](const Tensor& x) { return mf::sin(x); }));
  t.push_back(unary("cos", [](const Tensor& x) { return mf::cos(x); }));
  t.push_back(unary("tanh", [](const Tensor& x) { return mf::tanh(x); }));
  t.push_back(unary("sigmoid", [](const Tensor& x) { return mf::sigmoid(x); }));
  t.push_back(unary("relu", [](const Tensor& x) { return mf::relu(x); }));
  t.push_back(unary("silu", [](const Tensor& x) { return mf::silu(x); }));
  t.push_back(unary("gelu", [](const Tensor& x) { return mf::gelu(x); }));
  // The fused gelu gradient, tanh form (gelu above covers the erf form's forward).
  t.push_back(
      {"gelu_backward",
       [](Gen& g) {
         return TensorList{g.uniform({3, 5}), g.uniform_nc({3, 5})};
       },
       [](const TensorList& in) {
         return TensorList{call("gelu_backward", in, {{"approximate", std::string("tanh")}})};
       }});
  t.push_back({"logical_not",
               [](Gen& g) {
                 return TensorList{g.ints({3, 5}, -1, 2).to(g.fdt)};
               },
               [](const TensorList& in) { return TensorList{mf::logical_not(in[0])}; }});
  t.push_back({"bitwise_not",
               [](Gen& g) {
                 return TensorList{g.noncontig(
                     {3, 5}, [&](const Shape& s) { return g.ints(s, -9, 9, DType::Int32); })};
               },
               [](const TensorList& in) { return TensorList{mf::bitwise_not(in[0])}; }});

  // ---- Elementwise binary ----
  t.push_back(binary("add", [](const Tensor& a, const Tensor& b) { return mf::add(a, b); }));
  t.push_back(binary("sub", [](const Tensor& a, const Tensor& b) { return mf::sub(a, b); }));
  t.push_back(binary("mul", [](const Tensor& a, const Tensor& b) { return mf::mul(a, b); }));
  t.push_back(binary(
      "div", [](const Tensor& a, const Tensor& b) { return mf::div(a, b); },
      [](Gen& g) {
        return TensorList{g.uniform({2, 1, 3}),
                          g.noncontig({4, 3}, [&](const Shape& s) { return g.away_from_zero(s); })};
      }));
  t.push_back(binary(
      "pow", [](const Tensor& a, const Tensor& b) { return mf::pow(a, b); },
      [](Gen& g) {
        return TensorList{g.positive({2, 1, 3}), g.uniform_nc({4, 3})};
      }));
  const MakeInputs divisor_inputs = [](Gen& g) {
    return TensorList{g.values({2, 1, 3}, -5.0, 5.0),
                      g.noncontig({4, 3}, [&](const Shape& s) { return g.away_from_zero(s); })};
  };
  t.push_back(binary(
      "remainder", [](const Tensor& a, const Tensor& b) { return mf::remainder(a, b); },
      divisor_inputs));
  t.push_back(binary(
      "floor_divide", [](const Tensor& a, const Tensor& b) { return mf::floor_divide(a, b); },
      divisor_inputs));
  t.push_back(
      binary("maximum", [](const Tensor& a, const Tensor& b) { return mf::maximum(a, b); }));
  t.push_back(
      binary("minimum", [](const Tensor& a, const Tensor& b) { return mf::minimum(a, b); }));
  t.push_back(binary(
      "eq", [](const Tensor& a, const Tensor& b) { return mf::eq(a, b); }, compare_inputs));
  t.push_back(binary(
      "ne", [](const Tensor& a, const Tensor& b) { return mf::ne(a, b); }, compare_inputs));
  t.push_back(binary(
      "lt", [](const Tensor& a, const Tensor& b) { return mf::lt(a, b); }, compare_inputs));
  t.push_back(binary(
      "le", [](const Tensor& a, const Tensor& b) { return mf::le(a, b); }, compare_inputs));
  t.push_back(binary(
      "gt", [](const Tensor& a, const Tensor& b) { return mf::gt(a, b); }, compare_inputs));
  t.push_back(binary(
      "ge", [](const Tensor& a, const Tensor& b) { return mf::ge(a, b); }, compare_inputs));
  t.push_back(binary(
      "logical_and", [](const Tensor& a, const Tensor& b) { return mf::logical_and(a, b); },
      logical_inputs));
  t.push_back(binary(
      "logical_or", [](const Tensor& a, const Tensor& b) { return mf::logical_or(a, b); },
      logical_inputs));
  t.push_back(binary(
      "logical_xor", [](const Tensor& a, const Tensor& b) { return mf::logical_xor(a, b); },
      logical_inputs));
  t.push_back(binary(
      "bitwise_and", [](const Tensor& a, const Tensor& b) { return mf::bitwise_and(a, b); },
      bitwise_inputs));
  t.push_back(binary(
      "bitwise_or", [](const Tensor& a, const Tensor& b) { return mf::bitwise_or(a, b); },
      bitwise_inputs));
  t.push_back(binary(
      "bitwise_xor", [](const Tensor& a, const Tensor& b) { return mf::bitwise_xor(a, b); },
      bitwise_inputs));
  // cond [4, 1], a [4, 3] non-contiguous, b [3] -> [4, 3].
  t.push_back({"where",
               [](Gen& g) {
                 return TensorList{g.bools({4, 1}), g.uniform_nc({4, 3}), g.uniform({3})};
               },
               [](const TensorList& in) { return TensorList{mf::where(in[0], in[1], in[2])}; }});
  t.push_back({"clamp",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 5})};
               },
               [](const TensorList& in) { return TensorList{mf::clamp(in[0], -0.5, 0.7)}; }});

  // ---- In-place (on a clone: autograd refuses in-place writes into leaves) ----
  t.push_back({"add_",
               [](Gen& g) {
                 return TensorList{g.uniform({3, 4}), g.uniform_nc({4})};
               },
               [](const TensorList& in) {
                 Tensor a = in[0].clone();
                 a.add_(in[1], 2.5);
                 return TensorList{a};
               }});
  t.push_back({"mul_",
               [](Gen& g) {
                 return TensorList{g.uniform({3, 4}), g.uniform_nc({1, 4})};
               },
               [](const TensorList& in) {
                 Tensor a = in[0].clone();
                 a.mul_(in[1]);
                 return TensorList{a};
               }});
  t.push_back({"copy_",
               [](Gen& g) {
                 return TensorList{g.uniform({3, 4}), g.uniform_nc({4})};
               },
               [](const TensorList& in) {
                 Tensor a = in[0].clone();
                 a.copy_(in[1]);
                 return TensorList{a * in[0]};
               }});
  t.push_back({"fill_",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 4})};
               },
               [](const TensorList& in) {
                 Tensor a = in[0].clone();
                 a.fill_(1.25);
                 return TensorList{a, in[0] * a};
               },
               1});

  // ---- Copies and conversions ----
  t.push_back({"clone",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 5})};
               },
               [](const TensorList& in) { return TensorList{mf::clone(in[0])}; }});
  // float32 -> float64 for the fake and trace checks, float64 -> float32 for gradcheck,
  // where the output's rounding (ulp 2.4e-7 below 2) over a central difference of step
  // 2 eps = 2e-2 adds up to 1.2e-5 to the numeric derivative: atol 1e-4 covers it.
  OpCase to_dtype{"to_dtype",
                  [](Gen& g) {
                    return TensorList{g.uniform_nc({3, 5})};
                  },
                  [](const TensorList& in) {
                    const DType to =
                        in[0].dtype() == DType::Float64 ? DType::Float32 : DType::Float64;
                    return TensorList{mf::to_dtype(in[0], to)};
                  }};
  to_dtype.eps = 1e-2;
  to_dtype.atol = 1e-4;
  t.push_back(to_dtype);
  // Called directly: the public to_device returns its input when the device already
  // matches, and a CPU build has no other device.
  t.push_back({"to_device",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 5})};
               },
               [](const TensorList& in) {
                 return TensorList{call("to_device", in, {{"device", mf::Device::cpu()}})};
               }});

  // ---- Factories (no tensor inputs) ----
  const MakeInputs none = [](Gen&) { return TensorList{}; };
  OpCase empty{"empty", none, [](const TensorList&) {
                 return TensorList{mf::empty({3, 5}, {.dtype = DType::Float32})};
               }};
  empty.uninitialized = true;
  t.push_back(empty);
  t.push_back({"full", none, [](const TensorList&) {
                 return TensorList{mf::full({2, 3}, 1.5, {.dtype = DType::Float64})};
               }});
  t.push_back({"scalar_tensor", none, [](const TensorList&) {
                 return TensorList{mf::scalar_tensor(2.5, {.dtype = DType::Float32})};
               }});
  t.push_back({"arange", none, [](const TensorList&) {
                 return TensorList{mf::arange(1, 11, 3),
                                   mf::arange(-1.0, 1.0, 0.3, {.dtype = DType::Float32})};
               }});
  t.push_back(
      {"linspace", none, [](const TensorList&) { return TensorList{mf::linspace(-1.0, 2.0, 7)}; }});
  OpCase rand{"rand", none, [](const TensorList&) { return TensorList{mf::rand({3, 5})}; }};
  rand.random = true;
  t.push_back(rand);
  OpCase randn{"randn", none, [](const TensorList&) {
                 return TensorList{mf::randn({4, 3}, {.dtype = DType::Float64})};
               }};
  randn.random = true;
  t.push_back(randn);
  OpCase randint{"randint", none, [](const TensorList&) {
                   return TensorList{mf::randint(-3, 7, {5, 3})};
                 }};
  randint.random = true;
  t.push_back(randint);

  // ---- Views ----
  t.push_back({"view",
               [](Gen& g) {
                 return TensorList{g.uniform({3, 4})};
               },
               [](const TensorList& in) {
                 return TensorList{in[0].view({2, -1})};
               }});
  t.push_back({"permute",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({2, 3, 4})};
               },
               [](const TensorList& in) {
                 return TensorList{in[0].permute({2, 0, 1})};
               }});
  t.push_back({"expand",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 1})};
               },
               [](const TensorList& in) {
                 return TensorList{in[0].expand({2, 3, 4})};
               }});
  t.push_back({"slice",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({5, 4})};
               },
               [](const TensorList& in) { return TensorList{in[0].slice(0, 1, 5, 2)}; }});
  // Three parts of a non-contiguous input; gradcheck differentiates the middle one, so the
  // backward also fills the parts without a gradient with zeros.
  t.push_back({"split_with_sizes",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({7, 4})};
               },
               [](const TensorList& in) {
                 const std::vector<Tensor> p = mf::split(in[0], std::vector<int64_t>{2, 4, 1}, 0);
                 return TensorList(p.begin(), p.end());
               },
               1});
  t.push_back({"select",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 5})};
               },
               [](const TensorList& in) { return TensorList{in[0].select(1, -2)}; }});
  t.push_back({"unsqueeze",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 5})};
               },
               [](const TensorList& in) { return TensorList{in[0].unsqueeze(1)}; }});
  t.push_back({"squeeze",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 1, 5, 1})};
               },
               [](const TensorList& in) {
                 return TensorList{in[0].squeeze(1), in[0].squeeze()};
               }});

  // ---- Reductions ----
  const MakeInputs x253 = [](Gen& g) { return TensorList{g.uniform_nc({2, 5, 3})}; };
  t.push_back({"sum", x253, [](const TensorList& in) {
                 return TensorList{mf::sum(in[0], {0, 2}, true)};
               }});
  t.push_back(
      {"mean", x253, [](const TensorList& in) { return TensorList{mf::mean(in[0], {1})}; }});
  t.push_back(
      {"amax", x253, [](const TensorList& in) { return TensorList{mf::amax(in[0], {0}, true)}; }});
  t.push_back({"amin", x253, [](const TensorList& in) {
                 return TensorList{mf::amin(in[0], {2, 0})};
               }});
  t.push_back({"max", x253, [](const TensorList& in) { return TensorList{mf::max(in[0])}; }});
  t.push_back({"min", x253, [](const TensorList& in) { return TensorList{mf::min(in[0])}; }});
  t.push_back({"max_dim", x253, [](const TensorList& in) {
                 auto [v, i] = mf::max(in[0], 1, true);
                 return TensorList{v, i};
               }});
  t.push_back({"min_dim", x253, [](const TensorList& in) {
                 auto [v, i] = mf::min(in[0], -1);
                 return TensorList{v, i};
               }});
  t.push_back(
      {"argmax", x253, [](const TensorList& in) { return TensorList{mf::argmax(in[0], 1)}; }});
  t.push_back({"argmin", x253, [](const TensorList& in) { return TensorList{mf::argmin(in[0])}; }});
  t.push_back({"logsumexp", x253,
               [](const TensorList& in) { return TensorList{mf::logsumexp(in[0], {1})}; }});
  t.push_back({"var", x253, [](const TensorList& in) {
                 return TensorList{mf::var(in[0], {0, 1}, 1.0, true)};
               }});
  t.push_back(
      {"softmax", x253, [](const TensorList& in) { return TensorList{mf::softmax(in[0], 1)}; }});
  t.push_back({"log_softmax", x253,
               [](const TensorList& in) { return TensorList{mf::log_softmax(in[0], -1)}; }});
  // Fused backward ops, called directly on a forward output computed eagerly.
  t.push_back(
      {"softmax_backward",
       [](Gen& g) {
         return TensorList{g.uniform_nc({3, 4}), mf::softmax(g.uniform({3, 4}), 1)};
       },
       [](const TensorList& in) { return TensorList{mf::softmax_backward(in[0], in[1], 1)}; }});
  t.push_back(
      {"log_softmax_backward",
       [](Gen& g) {
         return TensorList{g.uniform_nc({3, 4}), mf::log_softmax(g.uniform({3, 4}), 0)};
       },
       [](const TensorList& in) { return TensorList{mf::log_softmax_backward(in[0], in[1], 0)}; }});
  t.push_back({"amax_amin_backward",
               [](Gen& g) {
                 const Tensor x = g.uniform_nc({3, 4});
                 return TensorList{g.uniform({3}), x, mf::amax(x, {1})};
               },
               [](const TensorList& in) {
                 return TensorList{
                     call("amax_amin_backward", in, {{"dims", Shape{1}}, {"keepdim", false}})};
               }});
  t.push_back({"logsumexp_backward",
               [](Gen& g) {
                 const Tensor x = g.uniform_nc({3, 4});
                 return TensorList{g.uniform({1, 1}), x, mf::logsumexp(x, {0, 1}, true)};
               },
               [](const TensorList& in) {
                 return TensorList{
                     call("logsumexp_backward", in, {{"dims", Shape{0, 1}}, {"keepdim", true}})};
               }});
  t.push_back({"value_selecting_reduction_backward",
               [](Gen& g) {
                 return TensorList{g.uniform({3}), mf::max(g.uniform({3, 4}), 1).second};
               },
               [](const TensorList& in) {
                 return TensorList{
                     call("value_selecting_reduction_backward", in,
                          {{"dim", int64_t(1)}, {"keepdim", false}, {"sizes", Shape{3, 4}}})};
               }});

  // ---- Linear algebra ----
  // [2, 1, 3, 2] @ [3, 2, 4] -> [2, 3, 3, 4] (batch dims broadcast).
  t.push_back({"matmul",
               [](Gen& g) {
                 return TensorList{g.uniform({2, 1, 3, 2}), g.uniform_nc({3, 2, 4})};
               },
               [](const TensorList& in) { return TensorList{mf::matmul(in[0], in[1])}; }});

  // ---- Indexing ----
  // t [5, 4, 3] at i0 [3, 1] (int64, negative ones wrap) and i1 [2] (int32) -> [3, 2, 3].
  const MakeInputs index_lists = [](Gen& g) {
    return TensorList{g.ints({3, 1}, -5, 5), g.ints({2}, 0, 4, DType::Int32)};
  };
  t.push_back({"index",
               [index_lists](Gen& g) {
                 TensorList in{g.uniform_nc({5, 4, 3})};
                 for (const Tensor& i : index_lists(g)) in.push_back(i);
                 return in;
               },
               [](const TensorList& in) {
                 return TensorList{mf::index(in[0], {in[1], in[2]})};
               }});
  t.push_back({"index_backward",
               [index_lists](Gen& g) {
                 TensorList in{g.uniform_nc({3, 2, 3})};
                 for (const Tensor& i : index_lists(g)) in.push_back(i);
                 return in;
               },
               [](const TensorList& in) {
                 return TensorList{mf::index_backward(in[0], {in[1], in[2]}, {5, 4, 3})};
               }});
  t.push_back({"gather",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({4, 5}), g.ints({3, 4}, 0, 5)};
               },
               [](const TensorList& in) { return TensorList{mf::gather(in[0], 1, in[1])}; }});
  t.push_back({"index_select",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({4, 5}), g.ints({6}, 0, 4, DType::Int32)};
               },
               [](const TensorList& in) { return TensorList{mf::index_select(in[0], 0, in[1])}; }});
  t.push_back({"embedding",
               [](Gen& g) {
                 return TensorList{g.uniform({7, 3}), g.ints({2, 3}, 0, 7)};
               },
               [](const TensorList& in) { return TensorList{mf::embedding(in[0], in[1])}; }});
  // t [4, 3] with mask [3] broadcast; the 0-d value tensor gets a gradient too.
  t.push_back(
      {"masked_fill",
       [](Gen& g) {
         return TensorList{g.uniform_nc({4, 3}), g.bools({3}), g.uniform({})};
       },
       [](const TensorList& in) { return TensorList{mf::masked_fill(in[0], in[1], in[2])}; }});

  // ---- Building and splitting ----
  t.push_back({"cat",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({2, 3}), g.uniform({4, 3}), g.uniform({1, 3})};
               },
               [](const TensorList& in) {
                 return TensorList{mf::cat({in[0], in[1], in[2]}, 0)};
               }});
  t.push_back({"tril",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({4, 5})};
               },
               [](const TensorList& in) { return TensorList{mf::tril(in[0], 1)}; }});
  t.push_back({"triu",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({2, 3, 4})};
               },
               [](const TensorList& in) { return TensorList{mf::triu(in[0], -1)}; }});
  t.push_back(
      {"one_hot",
       [](Gen& g) {
         return TensorList{g.noncontig({2, 3}, [&](const Shape& s) { return g.ints(s, 0, 4); })};
       },
       [](const TensorList& in) { return TensorList{mf::one_hot(in[0], 5)}; }});

  // ---- nn ----
  // logits [5, 4] with row 2 ignored, label smoothing 0.1.
  const MakeInputs ce_inputs = [](Gen& g) {
    Tensor target = g.ints({5}, 0, 4);
    target.select(0, 2).fill_(-100);
    return TensorList{g.uniform_nc({5, 4}), target};
  };
  const mf::Attrs ce_attrs{{"ignore_index", int64_t(-100)},
                           {"reduction", std::string("mean")},
                           {"label_smoothing", 0.1}};
  t.push_back({"cross_entropy", ce_inputs, [](const TensorList& in) {
                 return TensorList{mf::cross_entropy(in[0], in[1], -100, "mean", 0.1)};
               }});
  t.push_back({"cross_entropy_backward",
               [ce_inputs, ce_attrs](Gen& g) {
                 const TensorList in = ce_inputs(g);
                 const Tensor lse = call_all("cross_entropy", in, ce_attrs)[1];
                 return TensorList{g.uniform({}), in[0], in[1], lse};
               },
               [ce_attrs](const TensorList& in) {
                 return TensorList{call("cross_entropy_backward", in, ce_attrs)};
               }});
  // x [3, 4] (non-contiguous) normalized over [4], with weight and bias.
  const mf::Attrs ln_attrs{{"normalized_shape", Shape{4}}, {"eps", 1e-5}};
  t.push_back({"layer_norm",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({3, 4}), g.uniform({4}), g.uniform({4})};
               },
               [](const TensorList& in) {
                 return TensorList{mf::layer_norm(in[0], {4}, in[1], in[2], 1e-5)};
               }});
  t.push_back(
      {"layer_norm_backward",
       [ln_attrs](Gen& g) {
         const Tensor x = g.uniform_nc({3, 4}), w = g.uniform({4});
         const TensorList f = call_all("layer_norm", {x, w, Tensor()}, ln_attrs);
         return TensorList{g.uniform({3, 4}), x, f[1], f[2], w};
       },
       [ln_attrs](const TensorList& in) { return call_all("layer_norm_backward", in, ln_attrs); }});
  const mf::Attrs rms_attrs{{"normalized_shape", Shape{4}}, {"eps", 1e-6}};
  t.push_back(
      {"rms_norm",
       [](Gen& g) {
         return TensorList{g.uniform_nc({3, 4}), g.uniform({4})};
       },
       [](const TensorList& in) { return TensorList{mf::rms_norm(in[0], {4}, in[1], 1e-6)}; }});
  t.push_back(
      {"rms_norm_backward",
       [rms_attrs](Gen& g) {
         const Tensor x = g.uniform_nc({3, 4}), w = g.uniform({4});
         const TensorList f = call_all("rms_norm", {x, w}, rms_attrs);
         return TensorList{g.uniform({3, 4}), x, f[1], w};
       },
       [rms_attrs](const TensorList& in) { return call_all("rms_norm_backward", in, rms_attrs); }});
  OpCase dropout{"dropout",
                 [](Gen& g) {
                   return TensorList{g.uniform_nc({4, 5})};
                 },
                 [](const TensorList& in) { return TensorList{mf::dropout(in[0], 0.3)}; }};
  dropout.random = true;
  t.push_back(dropout);
  // Element ids (non-contiguous, with repeats) -> keep flags under a fixed stream.
  t.push_back(
      {"dropout_keep",
       [](Gen& g) {
         return TensorList{g.noncontig({3, 4}, [&](const Shape& s) { return g.ints(s, 0, 1000); })};
       },
       [](const TensorList& in) {
         return TensorList{mf::dropout_keep(in[0].to(DType::Int64), 0.4, 11, 5)};
       }});
  // The mask is a function of (seed, offset), given here as attributes.
  t.push_back({"dropout_backward",
               [](Gen& g) {
                 return TensorList{g.uniform_nc({4, 5})};
               },
               [](const TensorList& in) {
                 return TensorList{
                     call("dropout_backward", in,
                          {{"p", 0.3}, {"seed", int64_t(7)}, {"offset", int64_t(2)}})};
               }});
  return t;
}

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> c = build_cases();
  return c;
}

const OpCase& find_case(const std::string& op) {
  for (const OpCase& c : cases())
    if (c.op == op) return c;
  MF_INTERNAL_ASSERT(false, "no op table entry for ", op);
  return cases().front();
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const OpCase& c : cases()) names.push_back(c.op);
  return names;
}

std::string meta_string(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return mf::describe(t) + " strides " + mf::shape_str(t.strides()) + " offset " +
         std::to_string(t.storage_offset());
}

// Same dtype, shape and bytes of every element (NaNs compare by bit pattern).
bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.is_fake() || b.is_fake() || a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(),
                     static_cast<size_t>(ca.numel() * ca.element_size())) == 0;
}

// Runs `c` on `in`; returns the outputs, or sets `error` to the message it raised.
TensorList try_run(const OpCase& c, const TensorList& in, std::string* error) {
  try {
    return run_case(c, in);
  } catch (const mf::Error& e) {
    *error = e.what();
    return {};
  }
}

// (a) Fake mode gives the eager outputs' shapes, strides, storage offsets, dtypes and
// devices; where eager rejects the inputs, fake raises the same error (every user error
// belongs in the shape rule). Returns whether eager ran.
bool check_fake(const OpCase& c, DType fdt) {
  const TensorList in = make_inputs(c, 1, fdt);
  std::string eager_error, fake_error;
  const TensorList eager = try_run(c, in, &eager_error);
  TensorList fake;
  {
    mf::FakeModeGuard guard;
    TensorList fin;
    for (const Tensor& x : in) fin.push_back(x.defined() ? mf::to_fake(x) : x);
    fake = try_run(c, fin, &fake_error);
  }
  EXPECT_EQ(fake_error, eager_error);
  if (!eager_error.empty()) return false;
  EXPECT_EQ(fake.size(), eager.size());
  for (size_t i = 0; i < std::min(eager.size(), fake.size()); ++i) {
    EXPECT_TRUE(eager[i].defined() && fake[i].defined()) << "output " << i;
    if (!eager[i].defined() || !fake[i].defined()) continue;
    EXPECT_TRUE(fake[i].is_fake()) << "output " << i;
    EXPECT_EQ(meta_string(fake[i]), meta_string(eager[i])) << "output " << i;
    EXPECT_EQ(fake[i].device(), eager[i].device()) << "output " << i;
  }
  return true;
}

// (b) A graph traced on one set of inputs and run on new ones equals eager bitwise, and
// records a node of the entry's op.
void check_trace(const OpCase& c, DType fdt) {
  if (c.random) mf::manual_seed(kRandomSeed);
  const mf::graph::GraphModule gm =
      mf::graph::trace([&c](const TensorList& x) { return c.fn(x); }, make_inputs(c, 1, fdt));
  const auto& nodes = gm.graph().nodes();
  EXPECT_TRUE(std::any_of(nodes.begin(), nodes.end(),
                          [&](const mf::graph::Node& n) { return n.op == c.op; }))
      << "the entry never calls " << c.op << ":\n"
      << gm.to_string();
  const TensorList replay = gm.run(make_inputs(c, 2, fdt));
  const TensorList expect = run_case(c, make_inputs(c, 2, fdt));
  ASSERT_EQ(replay.size(), expect.size());
  for (size_t i = 0; i < expect.size(); ++i) {
    ASSERT_EQ(replay[i].sizes(), expect[i].sizes()) << "output " << i;
    ASSERT_EQ(replay[i].dtype(), expect[i].dtype()) << "output " << i;
    if (!c.uninitialized)
      EXPECT_TRUE(bitwise_equal(replay[i], expect[i]))
          << "output " << i << "\nreplay " << replay[i] << "\neager " << expect[i] << "\n"
          << gm.to_string();
  }
}

// The inputs with every floating one marked as requiring grad; empty when none is floating.
TensorList grad_inputs(TensorList in) {
  bool any = false;
  for (Tensor& x : in) {
    if (x.defined() && mf::is_floating(x.dtype())) {
      x.requires_grad_();
      any = true;
    }
  }
  return any ? in : TensorList{};
}

// The backward formulas are ordinary op calls, so backward also runs in fake mode, giving
// grads with the eager grads' metadata.
void check_fake_backward(const OpCase& c) {
  auto grads = [&c](const TensorList& in) {
    const Tensor y = run_case(c, in).at(c.grad_output);
    y.backward(mf::ones_like(y));
    TensorList out;
    for (const Tensor& x : in)
      if (x.defined() && x.requires_grad()) out.push_back(x.grad());
    return out;
  };
  const TensorList in = grad_inputs(make_inputs(c, 4, DType::Float64));
  const TensorList eager = grads(in);
  mf::FakeModeGuard guard;
  TensorList fin;
  for (const Tensor& x : in) fin.push_back(x.defined() ? mf::to_fake(x) : x);
  const TensorList fake = grads(fin);
  ASSERT_EQ(fake.size(), eager.size());
  for (size_t i = 0; i < eager.size(); ++i) {
    ASSERT_EQ(fake[i].defined(), eager[i].defined()) << "gradient " << i;
    if (!eager[i].defined()) continue;
    EXPECT_TRUE(fake[i].is_fake()) << "gradient " << i;
    EXPECT_EQ(mf::describe(fake[i]), mf::describe(eager[i])) << "gradient " << i;
  }
}

class OpTable : public ::testing::TestWithParam<std::string> {};

TEST_P(OpTable, FakeTraceGradcheck) {
  const OpCase& c = find_case(GetParam());
  const mf::OpDef& op = mf::Dispatcher::get().find(c.op);

  // Fake and tracing for every floating dtype of the entry's floating inputs; float32
  // must work for every op.
  for (DType fdt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16}) {
    SCOPED_TRACE(std::string("floating inputs ") + mf::dtype_name(fdt));
    const bool ran = check_fake(c, fdt);
    if (fdt == DType::Float32) ASSERT_TRUE(ran) << c.op << " rejects float32 inputs";
    if (ran) check_trace(c, fdt);
  }
  const TensorList eager = run_case(c, make_inputs(c, 1, DType::Float32));

  // (c) gradcheck in float64 with respect to every floating input.
  if (!op.differentiable || !is_floating(eager.at(c.grad_output).dtype())) return;
  TensorList in64 = grad_inputs(make_inputs(c, 3, DType::Float64));
  if (in64.empty()) return;
  auto f = [&c](const TensorList& x) { return run_case(c, x).at(c.grad_output); };
  if (!op.backward) {
    // Fused backward ops have no derivative of their own (no double backward).
    mftest::expect_error([&] { mf::gradcheck(f, in64); },
                         {c.op, "the derivative is not implemented"});
    return;
  }
  const mf::GradcheckResult r = mf::gradcheck(f, in64, c.eps, c.atol, c.rtol);
  EXPECT_TRUE(r.ok) << r.message;
  check_fake_backward(c);
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpTable, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// Ops whose joint graph is wrong today. graph::trace_joint records the forward op after
// the Autograd kernel below it has saved detached copies of the outputs (and, for
// in-place ops, an unrecorded clone of the old self); those copies are not proxies of the
// trace, so the backward's use of them lifts them as captured fake tensors, and the
// replayed graph returns fake gradients. Ops that save outputs for backward (or, like
// mul_, their old self) are affected. The test checks that the bug still shows, so that
// the fix removes this list.
const std::set<std::string>& joint_graph_known_bad() {
  static const std::set<std::string> s{};
  return s;
}

// The entries of differentiable ops with a backward formula and a floating input. Decided
// without running the entries: this runs when tests are registered, and must not move the
// default generator.
std::vector<std::string> joint_case_names() {
  std::vector<std::string> names;
  for (const OpCase& c : cases()) {
    const mf::OpDef& op = mf::Dispatcher::get().find(c.op);
    if (op.differentiable && op.backward && !grad_inputs(make_inputs(c, 1, DType::Float64)).empty())
      names.push_back(c.op);
  }
  return names;
}

class OpTableJoint : public ::testing::TestWithParam<std::string> {};

// A joint (forward + backward) graph traced on one set of inputs and replayed on new ones
// gives eager autograd's output and gradients bitwise: the backward formulas are op calls
// recorded like the forward.
TEST_P(OpTableJoint, ReplayEqualsEagerBackward) {
  const OpCase& c = find_case(GetParam());
  const mf::graph::TracedFn f = [&c](const TensorList& x) {
    return TensorList{run_case(c, x).at(c.grad_output)};
  };
  if (c.random) mf::manual_seed(kRandomSeed);
  const mf::graph::GraphModule joint =
      mf::graph::trace_joint(f, grad_inputs(make_inputs(c, 4, DType::Float64)));
  if (joint_graph_known_bad().count(c.op)) {
    const auto& caps = joint.captured();
    EXPECT_TRUE(std::any_of(caps.begin(), caps.end(), [](const Tensor& t) { return t.is_fake(); }))
        << c.op << "'s joint graph no longer captures a fake tensor: remove it from "
        << "joint_graph_known_bad\n"
        << joint.to_string();
    return;
  }
  EXPECT_TRUE(joint.captured().empty()) << joint.to_string();
  const TensorList replay = joint.run(make_inputs(c, 5, DType::Float64));
  const TensorList in = grad_inputs(make_inputs(c, 5, DType::Float64));
  const Tensor y = f(in)[0];
  y.backward(mf::ones_like(y));
  TensorList expect{y.detach()};
  for (const Tensor& x : in)
    if (x.defined() && x.requires_grad()) expect.push_back(x.grad());
  ASSERT_EQ(replay.size(), expect.size()) << joint.to_string();
  for (size_t i = 0; i < expect.size(); ++i) {
    // Joint graphs return zeros where eager leaves a gradient undefined.
    const Tensor e = expect[i].defined() ? expect[i] : mf::zeros_like(replay[i]);
    EXPECT_TRUE(bitwise_equal(replay[i], e))
        << "joint graph output " << i << "\nreplay " << replay[i] << "\neager " << e << "\n"
        << joint.to_string();
  }
}

INSTANTIATE_TEST_SUITE_P(DifferentiableOps, OpTableJoint, ::testing::ValuesIn(joint_case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// Every registered op has exactly one entry, and every entry names a registered op. The
// fused backward ops (softmax_backward, ...) have entries that call them directly, so no
// op is left to be "covered through" another.
TEST(OpTableCoverage, EveryRegisteredOpHasAnEntry) {
  std::map<std::string, int> count;
  for (const OpCase& c : cases()) ++count[c.op];
  const std::vector<std::string> registered = mf::Dispatcher::get().op_names();
  for (const std::string& name : registered)
    EXPECT_EQ(count[name], 1) << "op '" << name << "' needs one entry in the op table";
  const std::set<std::string> known(registered.begin(), registered.end());
  for (const OpCase& c : cases())
    EXPECT_TRUE(known.count(c.op)) << "entry '" << c.op << "' names no registered op";
}

}  // namespace
