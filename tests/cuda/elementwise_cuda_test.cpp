// Elementwise ops on CUDA against the CPU kernels: one table of rows (op, dtype, layout),
// each run on fresh random inputs on both devices and in float64 on the CPU; contiguous
// odd sizes (97, 1025, 1<<20 + 3), broadcasting, non-contiguous and misaligned inputs,
// wrapped scalars, in-place ops, and the input gradients of the differentiable ops.
#include <cmath>
#include <functional>
#include <iostream>
#include <random>

#include "core/dispatch.h"
#include "cuda/cuda_test_util.h"

namespace mf = microflex;

namespace {

using mf::DType;
using mf::Shape;
using mf::Tensor;
using mf::TensorList;

// What values an input holds (for integer dtypes the integer analogue).
enum class Domain {
  Normal,    // N(0, 1.5^2); ints in [-20, 20]
  WithNaN,   // Normal with ~5% NaN (ints as Normal)
  Positive,  // [0.2, 3]; ints in [1, 9]
  Nonzero,   // +-[0.5, 3]; ints +-[1, 9]
  Exponent,  // [-2, 2]; ints in [-2, 6]
  SmallInt,  // half-integers in about [-5, 5] (ties for comparisons); ints in [-5, 5]
};

struct Input {
  Shape shape;  // of the base tensor; the row's function may view it
  DType dtype;
  Domain domain = Domain::Normal;
};

struct Row {
  std::string name;  // op, dtypes and layout: names a failure
  std::vector<Input> inputs;
  std::function<Tensor(const TensorList&)> fn;
  bool grad = false;            // also compare the input gradients
  bool grad_needs_sum = false;  // the backward reduces over broadcast dims (needs sum on CUDA)
};

Tensor random_input(const Input& in, std::mt19937& gen) {
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(in.shape)));
  const bool fp = mf::is_floating(in.dtype);
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(gen);
  };
  auto integer = [&](int64_t lo, int64_t hi) {
    return static_cast<double>(std::uniform_int_distribution<int64_t>(lo, hi)(gen));
  };
  auto sign = [&] { return std::bernoulli_distribution(0.5)(gen) ? 1.0 : -1.0; };
  for (double& x : v) {
    if (in.dtype == DType::Bool) {
      x = std::bernoulli_distribution(0.5)(gen) ? 1 : 0;
      continue;
    }
    switch (in.domain) {
      case Domain::Normal:
        x = fp ? 1.5 * std::normal_distribution<double>()(gen) : integer(-20, 20);
        break;
      case Domain::WithNaN:
        if (!fp) {
          x = integer(-20, 20);
        } else {
          x = std::bernoulli_distribution(0.05)(gen)
                  ? NAN
                  : 1.5 * std::normal_distribution<double>()(gen);
        }
        break;
      case Domain::SmallInt:
        x = fp ? std::round(3 * std::normal_distribution<double>()(gen)) / 2 : integer(-5, 5);
        break;
      case Domain::Positive:
        x = fp ? uniform(0.2, 3) : integer(1, 9);
        break;
      case Domain::Nonzero:
        x = sign() * (fp ? uniform(0.5, 3) : integer(1, 9));
        break;
      case Domain::Exponent:
        x = fp ? uniform(-2, 2) : integer(-2, 6);
        break;
    }
  }
  return mf::from_vector(v, in.shape).to(in.dtype);
}

// Tolerance floor per dtype, on the error scaled as |x - ref| / (1 + |ref|) (relative for
// large values, absolute near 0). A CUDA result may be off float64 by twice what the CPU
// result of the same dtype is, plus this floor. 16-bit types: one unit of rounding (GPU
// and CPU both compute in float and can round the other way), doubled for gradients,
// whose formulas round after every op. float32: CUDA's float libm is within 1-4 ulp
// (glibc's within 1) and nvcc fuses multiply-adds; cancellation in 1 + erf(x),
// 1 - tanh^2 and 1 - sigmoid multiplies those absolute errors by |x * dy * d inner| (up to
// ~20 for these inputs), so GPU and CPU differ by up to ~5e-6 near |x| = 3-5: 1e-5, twice
// that for gradients. float64: the CPU result is the reference itself (its error is 0),
// and the same libm and cancellation effects stay below 1e-13.
double floor_for(DType dt, bool grad) {
  switch (dt) {
    case DType::Float64:
      return 1e-13;
    case DType::Float32:
      return grad ? 2e-5 : 1e-5;
    case DType::Float16:
      return (grad ? 2 : 1) * std::ldexp(1.0, -10);
    case DType::BFloat16:
      return (grad ? 2 : 1) * std::ldexp(1.0, -7);
    default:
      return 0;
  }
}

// gpu (brought back) against cpu: equal for integer and bool results; NaN and inf where
// the CPU has them; otherwise within the 2x rule against `ref` (the float64 result).
void expect_matches(const std::string& what, const Tensor& gpu_t, const Tensor& cpu_t,
                    const Tensor& ref_t, bool grad) {
  ASSERT_EQ(gpu_t.sizes(), cpu_t.sizes()) << what;
  ASSERT_EQ(gpu_t.dtype(), cpu_t.dtype()) << what;
  const std::vector<double> g = gpu_t.to_vector<double>(), c = cpu_t.to_vector<double>();
  if (!mf::is_floating(cpu_t.dtype())) {
    for (size_t i = 0; i < c.size(); ++i)
      ASSERT_EQ(g[i], c[i]) << what << ": element " << i << " of " << c.size();
    return;
  }
  const std::vector<double> r = ref_t.to_vector<double>();
  ASSERT_EQ(r.size(), c.size()) << what;
  double cpu_err = 0, gpu_err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (std::isnan(c[i]) || std::isnan(g[i])) {
      ASSERT_TRUE(std::isnan(c[i]) && std::isnan(g[i]))
          << what << ": element " << i << ": cuda " << g[i] << " vs cpu " << c[i];
      continue;
    }
    if (std::isinf(c[i]) || std::isinf(g[i]) || !std::isfinite(r[i])) {
      ASSERT_EQ(g[i], c[i]) << what << ": element " << i;
      continue;
    }
    const double scale = 1 + std::abs(r[i]);
    cpu_err = std::max(cpu_err, std::abs(c[i] - r[i]) / scale);
    const double e = std::abs(g[i] - r[i]) / scale;
    if (e > gpu_err) {
      gpu_err = e;
      worst = i;
    }
  }
  const double allowed = 2 * cpu_err + floor_for(cpu_t.dtype(), grad);
  EXPECT_LE(gpu_err, allowed) << what << ": worst element " << worst << " of " << c.size()
                              << ": cuda " << g[worst] << ", cpu " << c[worst] << ", float64 "
                              << r[worst] << " (cpu error " << cpu_err << ")";
}

TensorList on_device(const TensorList& ts, mf::Device d) {
  TensorList r;
  for (const Tensor& t : ts) r.push_back(t.to(d));
  return r;
}

// The inputs with floating ones as float64, for the reference.
TensorList as_float64(const TensorList& ts) {
  TensorList r;
  for (const Tensor& t : ts) r.push_back(mf::is_floating(t.dtype()) ? t.to(DType::Float64) : t);
  return r;
}

TensorList leaves(const TensorList& ts) {
  TensorList r;
  for (const Tensor& t : ts) {
    Tensor l = t.detach();
    if (mf::is_floating(l.dtype())) l.requires_grad_();
    r.push_back(l);
  }
  return r;
}

bool has_cuda_kernel(const char* op) {
  return mf::op_named(op).compute[1] != nullptr;
}

// Rows whose gradient was not compared because sum has no CUDA kernel in this build.
int g_grads_skipped = 0;

void run_row(const Row& row, uint32_t seed) {
  SCOPED_TRACE(row.name);
  std::mt19937 gen(seed);
  TensorList cpu_in;
  for (const Input& in : row.inputs) cpu_in.push_back(random_input(in, gen));
  const TensorList gpu_in = on_device(cpu_in, mf::Device::cuda());
  const Tensor cpu_out = row.fn(cpu_in);
  const Tensor gpu_out = row.fn(gpu_in);
  ASSERT_TRUE(gpu_out.is_cuda()) << row.name;
  const Tensor ref_out = mf::is_floating(cpu_out.dtype()) ? row.fn(as_float64(cpu_in)) : Tensor();
  expect_matches(row.name, gpu_out.to(mf::Device::cpu()), cpu_out, ref_out, false);
  if (!row.grad) return;
  if (row.grad_needs_sum && !has_cuda_kernel("sum")) {
    ++g_grads_skipped;
    return;
  }

  // The same upstream gradient on every device, random so that every element counts.
  std::vector<double> dy(static_cast<size_t>(cpu_out.numel()));
  for (double& v : dy) v = std::normal_distribution<double>()(gen);
  auto grads = [&](const TensorList& in, const Tensor& g) {
    const TensorList l = leaves(in);
    row.fn(l).backward(g.to(in[0].device()));
    TensorList r;
    for (const Tensor& t : l) r.push_back(t.requires_grad() ? t.grad() : Tensor());
    return r;
  };
  const Tensor g = mf::from_vector(dy, cpu_out.sizes()).to(cpu_out.dtype());
  const TensorList cpu_g = grads(cpu_in, g);
  const TensorList gpu_g = grads(gpu_in, g);
  const TensorList ref_g = grads(as_float64(cpu_in), g.to(DType::Float64));
  for (size_t i = 0; i < cpu_g.size(); ++i) {
    if (!cpu_g[i].defined()) continue;
    const std::string what = row.name + ", gradient of input " + std::to_string(i);
    ASSERT_TRUE(gpu_g[i].defined()) << what;
    ASSERT_TRUE(gpu_g[i].is_cuda()) << what;
    expect_matches(what, gpu_g[i].to(mf::Device::cpu()), cpu_g[i], ref_g[i], true);
  }
}

std::string dtype_str(DType dt) {
  return mf::dtype_name(dt);
}

const std::vector<DType> kFloat = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};
const std::vector<DType> kInt = {DType::Int32, DType::Int64};
const std::vector<DType> kNumeric = {DType::Float32,  DType::Float64, DType::Float16,
                                     DType::BFloat16, DType::Int32,   DType::Int64};
const std::vector<DType> kAll = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16,
                                 DType::Int32,   DType::Int64,   DType::Bool};
const std::vector<DType> kBitwise = {DType::Int32, DType::Int64, DType::Bool};

using Unary = std::function<Tensor(const Tensor&)>;
using Binary = std::function<Tensor(const Tensor&, const Tensor&)>;

struct UnaryOpSpec {
  std::string name;
  Unary f;
  std::vector<DType> dtypes;
  Domain domain;
  bool grad;
};

struct BinaryOpSpec {
  std::string name;
  Binary f;
  std::vector<DType> dtypes;
  Domain da, db;
  bool grad;
  bool inplace = false;  // self (a) must keep its shape: no layouts that broadcast it
};

// Unary layouts: contiguous odd sizes (vector body + tail), a 0-d tensor, a permuted
// view and a strided slice.
void add_unary_rows(std::vector<Row>& rows, const UnaryOpSpec& op) {
  for (DType dt : op.dtypes) {
    const bool grad = op.grad && mf::is_floating(dt);
    const std::string p = op.name + " " + dtype_str(dt) + " ";
    auto f = op.f;
    rows.push_back({p + "contiguous [1025]",
                    {{{1025}, dt, op.domain}},
                    [f](const TensorList& x) { return f(x[0]); },
                    grad});
    rows.push_back({p + "contiguous [97]",
                    {{{97}, dt, op.domain}},
                    [f](const TensorList& x) { return f(x[0]); },
                    false});
    rows.push_back(
        {p + "0-d", {{{}, dt, op.domain}}, [f](const TensorList& x) { return f(x[0]); }, false});
    rows.push_back({p + "permuted [7, 5, 3] -> [3, 7, 5]",
                    {{{7, 5, 3}, dt, op.domain}},
                    [f](const TensorList& x) {
                      return f(x[0].permute({2, 0, 1}));
                    },
                    grad});
    rows.push_back({p + "strided slice [2050] step 2",
                    {{{2050}, dt, op.domain}},
                    [f](const TensorList& x) { return f(x[0].slice(0, 0, 2050, 2)); },
                    false});
  }
}

// Binary layouts: contiguous (1025; misaligned 97), one- and two-sided broadcasting,
// non-contiguous views, and a wrapped scalar operand.
void add_binary_rows(std::vector<Row>& rows, const BinaryOpSpec& op) {
  for (DType dt : op.dtypes) {
    const bool grad = op.grad && mf::is_floating(dt);
    const std::string p = op.name + " " + dtype_str(dt) + " ";
    auto f = op.f;
    auto both = [f](const TensorList& x) { return f(x[0], x[1]); };
    rows.push_back(
        {p + "contiguous [1025] x [1025]", {{{1025}, dt, op.da}, {{1025}, dt, op.db}}, both, grad});
    rows.push_back({p + "misaligned slice [97] x [97]",
                    {{{98}, dt, op.da}, {{97}, dt, op.db}},
                    [f](const TensorList& x) { return f(x[0].slice(0, 1, 98), x[1]); },
                    false});
    rows.push_back({p + "broadcast [5, 7, 3] x [7, 1]",
                    {{{5, 7, 3}, dt, op.da}, {{7, 1}, dt, op.db}},
                    both,
                    grad,
                    true});
    // Rows of 64 against a row vector and against a column (Note [Vectorized inner rows]):
    // whole 16-byte vectors per row for every dtype width.
    rows.push_back({p + "row broadcast [97, 64] x [64]",
                    {{{97, 64}, dt, op.da}, {{64}, dt, op.db}},
                    both,
                    grad,
                    true});
    rows.push_back({p + "column broadcast [33, 64] x [33, 1]",
                    {{{33, 64}, dt, op.da}, {{33, 1}, dt, op.db}},
                    both,
                    false});
    if (!op.inplace) {
      rows.push_back({p + "broadcast [5, 1, 3] x [1, 7, 1]",
                      {{{5, 1, 3}, dt, op.da}, {{1, 7, 1}, dt, op.db}},
                      both,
                      false});
    }
    rows.push_back(
        {p + "transposed [3, 5, 7]^T x sliced [7, 10, 3][:, ::2]",
         {{{3, 5, 7}, dt, op.da}, {{7, 10, 3}, dt, op.db}},
         [f](const TensorList& x) { return f(x[0].transpose(0, 2), x[1].slice(1, 0, 10, 2)); },
         grad});
    // A scalar of the tensor's category (an integer for integer tensors), either side.
    const double s = op.db == Domain::Exponent ? 2.0
                     : dt == DType::Bool       ? 1.0
                     : mf::is_floating(dt)     ? 1.75
                                               : 3.0;
    const mf::Scalar scalar = dt == DType::Bool     ? mf::Scalar(true)
                              : mf::is_floating(dt) ? mf::Scalar(s)
                                                    : mf::Scalar(int64_t(s));
    rows.push_back({p + "[1025] x wrapped scalar",
                    {{{1025}, dt, op.da}},
                    [f, scalar](const TensorList& x) {
                      return f(x[0], mf::wrapped_scalar(scalar, x[0].device()));
                    },
                    false});
    if (op.inplace) continue;
    rows.push_back({p + "wrapped scalar x [5, 7]",
                    {{{5, 7}, dt, op.db}},
                    [f, scalar](const TensorList& x) {
                      return f(mf::wrapped_scalar(scalar, x[0].device()), x[0]);
                    },
                    false});
  }
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x, const std::string& approximate) {
  static const mf::OpDef& op = mf::op_named("gelu_backward");
  return mf::call_op1(op, {dy, x}, {{"approximate", approximate}});
}

std::vector<Row> all_rows() {
  std::vector<Row> rows;
  using D = Domain;
  const std::vector<DType> float_and_int = {DType::Float32, DType::Float64, DType::Float16,
                                            DType::BFloat16, DType::Int32};
  const std::vector<UnaryOpSpec> unary = {
      {"neg", [](const Tensor& x) { return mf::neg(x); }, kNumeric, D::Normal, true},
      {"abs", [](const Tensor& x) { return mf::abs(x); }, kNumeric, D::Normal, true},
      {"sign", [](const Tensor& x) { return mf::sign(x); }, kAll, D::Normal, true},
      {"relu", [](const Tensor& x) { return mf::relu(x); }, kNumeric, D::WithNaN, false},
      {"relu", [](const Tensor& x) { return mf::relu(x); }, kFloat, D::Normal, true},
      // Integer inputs of the floating ops give float32.
      {"exp", [](const Tensor& x) { return mf::exp(x); }, float_and_int, D::Normal, true},
      {"exp2", [](const Tensor& x) { return mf::exp2(x); }, float_and_int, D::Normal, true},
      {"log", [](const Tensor& x) { return mf::log(x); }, float_and_int, D::Positive, true},
      {"log2", [](const Tensor& x) { return mf::log2(x); }, float_and_int, D::Positive, true},
      {"sqrt", [](const Tensor& x) { return mf::sqrt(x); }, float_and_int, D::Positive, true},
      {"rsqrt", [](const Tensor& x) { return mf::rsqrt(x); }, float_and_int, D::Positive, true},
      {"sin", [](const Tensor& x) { return mf::sin(x); }, float_and_int, D::Normal, true},
      {"cos", [](const Tensor& x) { return mf::cos(x); }, float_and_int, D::Normal, true},
      {"tanh", [](const Tensor& x) { return mf::tanh(x); }, float_and_int, D::Normal, true},
      {"sigmoid", [](const Tensor& x) { return mf::sigmoid(x); }, float_and_int, D::Normal, true},
      {"silu", [](const Tensor& x) { return mf::silu(x); }, kFloat, D::Normal, true},
      {"gelu(none)", [](const Tensor& x) { return mf::gelu(x, "none"); }, kFloat, D::Normal, true},
      {"gelu(tanh)", [](const Tensor& x) { return mf::gelu(x, "tanh"); }, kFloat, D::Normal, true},
      {"logical_not", [](const Tensor& x) { return mf::logical_not(x); }, kAll, D::SmallInt, false},
      {"bitwise_not", [](const Tensor& x) { return mf::bitwise_not(x); }, kBitwise, D::Normal,
       false},
      {"clamp(min=-0.5)", [](const Tensor& x) { return mf::clamp(x, -0.5, std::nullopt); }, kFloat,
       D::WithNaN, false},
      {"clamp(min=-0.5)", [](const Tensor& x) { return mf::clamp(x, -0.5, std::nullopt); }, kFloat,
       D::Normal, true},
      {"clamp(max=0.7)", [](const Tensor& x) { return mf::clamp(x, std::nullopt, 0.7); }, kFloat,
       D::Normal, true},
      {"clamp(-1.1, 0.9)", [](const Tensor& x) { return mf::clamp(x, -1.1, 0.9); }, kFloat,
       D::WithNaN, false},
      {"clamp(-1.1, 0.9)", [](const Tensor& x) { return mf::clamp(x, -1.1, 0.9); }, kFloat,
       D::Normal, true},
      {"clamp(lo > hi)", [](const Tensor& x) { return mf::clamp(x, 1.0, -1.0); }, kNumeric,
       D::Normal, false},
      {"clamp(int -3, 4)", [](const Tensor& x) { return mf::clamp(x, int64_t(-3), int64_t(4)); },
       kInt, D::Normal, false},
      // A floating bound promotes an integer tensor to float32.
      {"clamp(int, 2.5)", [](const Tensor& x) { return mf::clamp(x, std::nullopt, 2.5); }, kInt,
       D::Normal, false},
      {"clamp(nan max)",
       [](const Tensor& x) { return mf::clamp(x, std::nullopt, NAN); },
       {DType::Float32},
       D::Normal,
       false},
      // dy * gelu'(x), the fused backward op; x is the input (dy is x here, fine for values).
      {"gelu_backward(none)", [](const Tensor& x) { return gelu_backward(x * 0.5, x, "none"); },
       kFloat, D::Normal, false},
      {"gelu_backward(tanh)", [](const Tensor& x) { return gelu_backward(x * 0.5, x, "tanh"); },
       kFloat, D::Normal, false},
  };
  for (const auto& op : unary) add_unary_rows(rows, op);

  const std::vector<DType> kNumericNoBool = kNumeric;
  const std::vector<BinaryOpSpec> binary = {
      {"add", [](const Tensor& a, const Tensor& b) { return mf::add(a, b); }, kAll, D::Normal,
       D::Normal, true},
      {"sub", [](const Tensor& a, const Tensor& b) { return mf::sub(a, b); }, kNumericNoBool,
       D::Normal, D::Normal, true},
      {"mul", [](const Tensor& a, const Tensor& b) { return mf::mul(a, b); }, kAll, D::Normal,
       D::Normal, true},
      {"div", [](const Tensor& a, const Tensor& b) { return mf::div(a, b); }, kNumeric, D::Normal,
       D::Nonzero, true},
      {"pow", [](const Tensor& a, const Tensor& b) { return mf::pow(a, b); }, kFloat, D::Positive,
       D::Exponent, true},
      {"pow", [](const Tensor& a, const Tensor& b) { return mf::pow(a, b); }, kInt, D::SmallInt,
       D::Exponent, false},
      {"remainder", [](const Tensor& a, const Tensor& b) { return mf::remainder(a, b); }, kNumeric,
       D::Normal, D::Nonzero, true},
      {"floor_divide", [](const Tensor& a, const Tensor& b) { return mf::floor_divide(a, b); },
       kNumeric, D::Normal, D::Nonzero, true},
      {"maximum", [](const Tensor& a, const Tensor& b) { return mf::maximum(a, b); }, kFloat,
       D::WithNaN, D::WithNaN, false},
      {"maximum", [](const Tensor& a, const Tensor& b) { return mf::maximum(a, b); }, kAll,
       D::Normal, D::Normal, true},
      {"minimum", [](const Tensor& a, const Tensor& b) { return mf::minimum(a, b); }, kFloat,
       D::WithNaN, D::WithNaN, false},
      {"minimum", [](const Tensor& a, const Tensor& b) { return mf::minimum(a, b); }, kAll,
       D::Normal, D::Normal, true},
      {"eq", [](const Tensor& a, const Tensor& b) { return mf::eq(a, b); }, kAll, D::SmallInt,
       D::SmallInt, false},
      {"ne", [](const Tensor& a, const Tensor& b) { return mf::ne(a, b); }, kAll, D::SmallInt,
       D::SmallInt, false},
      {"lt", [](const Tensor& a, const Tensor& b) { return mf::lt(a, b); }, kAll, D::WithNaN,
       D::SmallInt, false},
      {"le", [](const Tensor& a, const Tensor& b) { return mf::le(a, b); }, kAll, D::SmallInt,
       D::SmallInt, false},
      {"gt", [](const Tensor& a, const Tensor& b) { return mf::gt(a, b); }, kAll, D::WithNaN,
       D::Normal, false},
      {"ge", [](const Tensor& a, const Tensor& b) { return mf::ge(a, b); }, kAll, D::SmallInt,
       D::SmallInt, false},
      {"logical_and", [](const Tensor& a, const Tensor& b) { return mf::logical_and(a, b); }, kAll,
       D::SmallInt, D::SmallInt, false},
      {"logical_or", [](const Tensor& a, const Tensor& b) { return mf::logical_or(a, b); }, kAll,
       D::SmallInt, D::SmallInt, false},
      {"logical_xor", [](const Tensor& a, const Tensor& b) { return mf::logical_xor(a, b); }, kAll,
       D::SmallInt, D::SmallInt, false},
      {"bitwise_and", [](const Tensor& a, const Tensor& b) { return mf::bitwise_and(a, b); },
       kBitwise, D::Normal, D::Normal, false},
      {"bitwise_or", [](const Tensor& a, const Tensor& b) { return mf::bitwise_or(a, b); },
       kBitwise, D::Normal, D::Normal, false},
      {"bitwise_xor", [](const Tensor& a, const Tensor& b) { return mf::bitwise_xor(a, b); },
       kBitwise, D::Normal, D::Normal, false},
      // where(a > 0, a, b): the condition comes from a comparison on the same device.
      {"where", [](const Tensor& a, const Tensor& b) { return mf::where(a > 0, a, b); }, kAll,
       D::Normal, D::Normal, true},
      // In place: self (a copy of a) keeps its dtype and shape; b broadcasts into it.
      {"add_",
       [](const Tensor& a, const Tensor& b) {
         Tensor t = a.clone();
         t.add_(b);
         return t;
       },
       kNumeric, D::Normal, D::Normal, true, true},
      {"add_(alpha=2)",
       [](const Tensor& a, const Tensor& b) {
         Tensor t = a.clone();
         t.add_(b, 2);
         return t;
       },
       kFloat, D::Normal, D::Normal, true, true},
      {"mul_",
       [](const Tensor& a, const Tensor& b) {
         Tensor t = a.clone();
         t.mul_(b);
         return t;
       },
       kNumeric, D::Normal, D::Normal, true, true},
  };
  for (const auto& op : binary) add_binary_rows(rows, op);

  // where with a broadcast condition and operands of three shapes; a scalar branch.
  for (DType dt : kAll) {
    const bool grad = mf::is_floating(dt);
    rows.push_back({"where " + dtype_str(dt) + " cond [7, 1] x [5, 7, 3] x [3]",
                    {{{7, 1}, DType::Bool}, {{5, 7, 3}, dt}, {{3}, dt}},
                    [](const TensorList& x) { return mf::where(x[0], x[1], x[2]); },
                    grad,
                    true});
    rows.push_back({"where " + dtype_str(dt) + " cond [1025] x [1025] x scalar 0",
                    {{{1025}, DType::Bool}, {{1025}, dt}},
                    [](const TensorList& x) { return mf::where(x[0], x[1], 0); },
                    grad});
  }

  // Type promotion: operands of different dtypes are converted on the device first.
  rows.push_back({"add int32 + float16 [5, 7, 3] x [7, 1]",
                  {{{5, 7, 3}, DType::Int32}, {{7, 1}, DType::Float16}},
                  [](const TensorList& x) { return mf::add(x[0], x[1]); },
                  false});
  rows.push_back({"mul bfloat16 * float32 [1025]",
                  {{{1025}, DType::BFloat16}, {{1025}, DType::Float32}},
                  [](const TensorList& x) { return mf::mul(x[0], x[1]); },
                  true});
  rows.push_back({"div int64 / int32 [97] (float32 result)",
                  {{{97}, DType::Int64}, {{97}, DType::Int32, D::Nonzero}},
                  [](const TensorList& x) { return mf::div(x[0], x[1]); },
                  false});
  rows.push_back({"lt int64 < float32 [5, 7]",
                  {{{5, 7}, DType::Int64, D::SmallInt}, {{5, 7}, DType::Float32}},
                  [](const TensorList& x) { return mf::lt(x[0], x[1]); },
                  false});
  rows.push_back({"where bool ? int32 : float64 [97]",
                  {{{97}, DType::Bool}, {{97}, DType::Int32}, {{97}, DType::Float64}},
                  [](const TensorList& x) { return mf::where(x[0], x[1], x[2]); },
                  false});
  rows.push_back({"float16 * 2.5 (wrapped float64 keeps float16) [1025]",
                  {{{1025}, DType::Float16}},
                  [](const TensorList& x) { return x[0] * 2.5; },
                  true});
  rows.push_back({"int32 * 2.5 (float32 result) [1025]",
                  {{{1025}, DType::Int32}},
                  [](const TensorList& x) { return x[0] * 2.5; },
                  false});
  rows.push_back({"pow float32 [97] ** int 3",
                  {{{97}, DType::Float32}},
                  [](const TensorList& x) { return mf::pow(x[0], 3); },
                  true});
  rows.push_back({"pow int64 [97] ** int 3",
                  {{{97}, DType::Int64, D::SmallInt}},
                  [](const TensorList& x) { return mf::pow(x[0], 3); },
                  false});

  // In place into a non-contiguous self.
  for (DType dt : {DType::Float32, DType::Float16, DType::Int64}) {
    rows.push_back({"mul_ " + dtype_str(dt) + " transposed self [3, 5, 7]^T x [7, 5, 1]",
                    {{{3, 5, 7}, dt}, {{7, 5, 1}, dt}},
                    [](const TensorList& x) {
                      Tensor t = x[0].clone().transpose(0, 2);
                      t.mul_(x[1]);
                      return t;
                    },
                    false});
  }

  // Large contiguous inputs: many vectors in flight plus a 3-element tail (1<<20 + 3).
  const int64_t big = (int64_t(1) << 20) + 3;
  for (DType dt : {DType::Float32, DType::Float16}) {
    rows.push_back({"add " + dtype_str(dt) + " large [1<<20 + 3]",
                    {{{big}, dt}, {{big}, dt}},
                    [](const TensorList& x) { return mf::add(x[0], x[1]); },
                    false});
  }
  rows.push_back({"gt float32 large [1<<20 + 3] (bool out)",
                  {{{big}, DType::Float32}, {{big}, DType::Float32}},
                  [](const TensorList& x) { return mf::gt(x[0], x[1]); },
                  false});
  rows.push_back({"mul int64 large [1<<20 + 3] x scalar",
                  {{{big}, DType::Int64}},
                  [](const TensorList& x) { return x[0] * 7; },
                  false});
  return rows;
}

}  // namespace

class ElementwiseCuda : public mftest::CudaTest {};

TEST_F(ElementwiseCuda, MatchesCpuForEveryOpDtypeAndLayout) {
  const std::vector<Row> rows = all_rows();
  uint32_t seed = 1234;
  for (const Row& row : rows) {
    try {
      run_row(row, seed++);
    } catch (const std::exception& e) {
      FAIL() << row.name << ": " << e.what();
    }
    if (HasFatalFailure()) return;
  }
  if (g_grads_skipped > 0) {
    std::cout << "[ note ] " << g_grads_skipped
              << " broadcast gradients not compared: sum has no CUDA kernel in this build\n";
  }
}

// Note [Integer division by zero on the GPU]: the CPU raises; CUDA writes 0.
TEST_F(ElementwiseCuda, IntegerDivisionByZeroGivesZero) {
  for (DType dt : kInt) {
    const Tensor a = mf::from_vector(std::vector<double>{7, -7, 0, 5}, {4}).to(dt);
    const Tensor b = mf::from_vector(std::vector<double>{0, 0, 0, 2}, {4}).to(dt);
    mftest::expect_error([&] { mf::remainder(a, b); }, {"remainder", "division by zero"});
    mftest::expect_error([&] { mf::floor_divide(a, b); }, {"floor_divide", "division by zero"});
    const Tensor ga = mftest::on_gpu(a), gb = mftest::on_gpu(b);
    EXPECT_EQ(mf::remainder(ga, gb).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0, 1}))
        << dtype_str(dt);
    EXPECT_EQ(mf::floor_divide(ga, gb).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 0, 2}))
        << dtype_str(dt);
  }
}
