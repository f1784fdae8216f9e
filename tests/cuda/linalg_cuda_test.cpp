// matmul, bmm and linear on the GPU against the CPU: every rank case, broadcast batch
// dims, transposed / row-strided / column-strided / expanded operands, odd sizes, K = 0,
// every dtype, TF32, and the gradients of both operands on both devices.
#include <cmath>
#include <functional>
#include <random>

#include "cuda/cuda_test_util.h"

namespace mf = microflex;
using mf::Device;
using mf::DType;
using mf::Shape;
using mf::Tensor;

namespace {

// Uniform values in [-2, 2) (integers in [-5, 5] for integer dtypes), fixed seed.
Tensor random_tensor(const Shape& shape, uint32_t seed, DType dt) {
  std::mt19937 gen(seed);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(shape)));
  if (mf::is_floating(dt)) {
    std::uniform_real_distribution<double> u(-2.0, 2.0);
    for (double& x : v) x = u(gen);
  } else {
    std::uniform_int_distribution<int> u(-5, 5);
    for (double& x : v) x = u(gen);
  }
  return mf::from_vector(v, shape, {.dtype = DType::Float64}).to(dt);
}

Tensor abs_f64(const Tensor& t) {
  std::vector<double> v = t.to_vector<double>();
  for (double& x : v) x = std::abs(x);
  return mf::from_vector(v, t.sizes());
}

// One matmul operand: the tensor allocated (`storage`) and the view the case reads of it,
// taken the same way on both devices.
struct Operand {
  Shape storage;
  std::function<Tensor(const Tensor&)> view;
  std::string how;
};

Operand plain(const Shape& s) {
  return {s, [](const Tensor& t) { return t; }, mf::shape_str(s)};
}
// A [.., R, C] view with strides (1, R): the transpose of a [.., C, R] tensor.
Operand transposed(const Shape& s) {
  Shape st = s;
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return {st, [](const Tensor& t) { return t.transpose(t.dim() - 2, t.dim() - 1); },
          mf::shape_str(s) + " (transposed view)"};
}
// Every second row of a [.., 2R, C] tensor: rows 2C apart, read in place by cuBLAS.
Operand row_strided(const Shape& s) {
  Shape st = s;
  st[st.size() - 2] *= 2;
  return {st, [](const Tensor& t) { return t.slice(t.dim() - 2, 0, t.sizes()[t.dim() - 2], 2); },
          mf::shape_str(s) + " (every 2nd row)"};
}
// Every second column (or element, for 1-D): no unit stride.
Operand col_strided(const Shape& s) {
  Shape st = s;
  st.back() *= 2;
  return {st, [](const Tensor& t) { return t.slice(t.dim() - 1, 0, t.sizes().back(), 2); },
          mf::shape_str(s) + " (every 2nd column)"};
}
// Dim 0 expanded from 1: batch stride 0.
Operand expanded(const Shape& s) {
  Shape st = s;
  st[0] = 1;
  return {st, [s](const Tensor& t) { return t.expand(s); }, mf::shape_str(s) + " (expanded)"};
}

struct MatmulCase {
  Operand a, b;
};

const std::vector<MatmulCase>& matmul_cases() {
  static const std::vector<MatmulCase> cases = {
      {plain({97}), plain({97})},                           // dot
      {plain({5, 7}), plain({7})},                          // matrix @ vector
      {plain({97, 1025}), plain({1025})},                   // matrix @ vector, odd and long
      {plain({7}), plain({7, 3})},                          // vector @ matrix
      {plain({5, 7}), plain({7, 3})},                       // matrix @ matrix
      {plain({97, 33}), plain({33, 61})},                   // odd sizes
      {plain({97, 1025}), plain({1025, 33})},               // long K
      {plain({4, 5, 7}), plain({7, 3})},                    // batched @ matrix (one GEMM)
      {plain({5, 7}), plain({4, 7, 3})},                    // matrix @ batched
      {plain({4, 5, 7}), plain({4, 7, 3})},                 // same batch
      {plain({2, 1, 5, 7}), plain({3, 7, 3})},              // batch broadcast both ways
      {plain({7}), plain({2, 7, 3})},                       // vector @ batched
      {plain({2, 5, 7}), plain({7})},                       // batched @ vector
      {transposed({5, 7}), plain({7, 3})},                  // A^T read in place
      {plain({5, 7}), transposed({7, 3})},                  // B^T read in place
      {transposed({4, 5, 7}), transposed({4, 7, 3})},       // both, batched
      {transposed({3, 97, 1025}), transposed({1025, 33})},  // large, both transposed
      {row_strided({4, 5, 7}), plain({7, 3})},              // leading dim 2K, folded batch
      {plain({5, 7}), row_strided({2, 7, 3})},              // leading dim 2N
      {col_strided({5, 7}), plain({7, 3})},                 // copied
      {plain({5, 7}), col_strided({2, 7, 3})},              // copied
      {col_strided({97}), col_strided({97})},               // strided vectors
      {expanded({4, 5, 7}), plain({4, 7, 3})},              // batch stride 0 on A
      {plain({4, 5, 7}), expanded({4, 7, 3})},              // batch stride 0 on B
      {plain({5, 0}), plain({0, 3})},                       // K = 0: zeros
      {plain({2, 5, 0}), plain({0, 3})},                    // K = 0, batched
      {plain({0, 7}), plain({7, 3})},                       // M = 0: empty
  };
  return cases;
}

// Unit roundoff of the float32 accumulator (float16/bfloat16/float32) or float64.
double accumulate_u(DType dt) {
  return dt == DType::Float64 ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}
// Unit roundoff of the final rounding to the output dtype (already counted for float32
// and float64, whose output is the accumulator).
double output_u(DType dt) {
  if (dt == DType::Float16) return std::ldexp(1.0, -11);
  if (dt == DType::BFloat16) return std::ldexp(1.0, -8);
  return 0.0;
}

// Element (i) of a matmul of the same inputs on the two devices may differ by twice the
// worst-case error of one computation against float64:
//   |C_gpu - C_cpu| <= 2 * ((K + 2) * u_acc * (|A| @ |B|) + u_out * |C|),
// K terms summed in the accumulator (float32 for every 16/32-bit dtype, float64 for
// float64), then one rounding to a 16-bit output. Integers must match exactly.
void expect_matmul_close(const Tensor& gpu, const Tensor& cpu, const Tensor& a, const Tensor& b,
                         int64_t K, double extra_u, const std::string& what) {
  ASSERT_TRUE(gpu.is_cuda()) << what;
  ASSERT_EQ(gpu.sizes(), cpu.sizes()) << what;
  ASSERT_EQ(gpu.dtype(), cpu.dtype()) << what;
  const DType dt = cpu.dtype();
  const std::vector<double> g = gpu.to_vector<double>(), c = cpu.to_vector<double>();
  if (!mf::is_floating(dt)) {
    mftest::expect_close(g, c, 0, 0, what);
    return;
  }
  const std::vector<double> bound =
      mf::matmul(abs_f64(a.to(DType::Float64)), abs_f64(b.to(DType::Float64))).to_vector<double>();
  ASSERT_EQ(bound.size(), c.size()) << what;
  const double ua = accumulate_u(dt) * static_cast<double>(K + 2) + extra_u, uo = output_u(dt);
  for (size_t i = 0; i < c.size(); ++i) {
    const double tol = 2.0 * (ua * bound[i] + uo * std::abs(c[i]));
    ASSERT_LE(std::abs(g[i] - c[i]), tol)
        << what << " element " << i << ": gpu " << g[i] << " vs cpu " << c[i];
  }
}

int64_t inner_dim(const Tensor& a) {
  return a.sizes().back();
}

std::string case_name(const MatmulCase& c, DType dt) {
  return std::string("matmul ") + c.a.how + " @ " + c.b.how + " " + mf::dtype_name(dt);
}

}  // namespace

class LinalgCuda : public mftest::CudaTest {};

TEST_F(LinalgCuda, MatmulMatchesCpuEveryCaseAndDtype) {
  uint32_t seed = 100;
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64}) {
    for (const MatmulCase& c : matmul_cases()) {
      const std::string what = case_name(c, dt);
      const Tensor sa = random_tensor(c.a.storage, ++seed, dt);
      const Tensor sb = random_tensor(c.b.storage, ++seed, dt);
      const Tensor a = c.a.view(sa), b = c.b.view(sb);
      const Tensor ga = c.a.view(mftest::on_gpu(sa)), gb = c.b.view(mftest::on_gpu(sb));
      const Tensor cpu = mf::matmul(a, b);
      const Tensor gpu = mf::matmul(ga, gb);
      expect_matmul_close(gpu, cpu, a, b, inner_dim(a), 0.0, what);
    }
  }
}

// Large 16-bit products whose leading dims are not multiples of 16 bytes go through padded
// copies (Note [Aligned leading dimensions]): odd N (C and B padded), odd K (A and B), and
// a transposed A with an odd leading dim. Same bound as every other case.
TEST_F(LinalgCuda, MisalignedLeadingDimsOfLargeProducts) {
  struct Dims {
    Operand a, b;
  };
  const std::vector<Dims> cases = {
      {plain({1024, 768}), plain({768, 1001})},
      {plain({1024, 1001}), plain({1001, 768})},
      {transposed({1001, 1024}), plain({1024, 640})},
      {plain({4, 256, 768}), transposed({768, 1001})},
  };
  uint32_t seed = 700;
  for (DType dt : {DType::BFloat16, DType::Float16}) {
    for (const Dims& c : cases) {
      const std::string what = std::string("misaligned ") + c.a.how + " @ " + c.b.how + " " +
                               mf::dtype_name(dt) + " " + mf::shape_str(c.a.storage);
      const Tensor sa = random_tensor(c.a.storage, ++seed, dt);
      const Tensor sb = random_tensor(c.b.storage, ++seed, dt);
      const Tensor a = c.a.view(sa), b = c.b.view(sb);
      const Tensor gpu = mf::matmul(c.a.view(mftest::on_gpu(sa)), c.b.view(mftest::on_gpu(sb)));
      expect_matmul_close(gpu, mf::matmul(a, b), a, b, inner_dim(a), 0.0, what);
    }
  }
}

TEST_F(LinalgCuda, MatmulTf32IsOptIn) {
  const Tensor a = random_tensor({97, 1025}, 1, DType::Float32);
  const Tensor b = random_tensor({1025, 33}, 2, DType::Float32);
  const Tensor cpu = mf::matmul(a, b);
  EXPECT_FALSE(mf::cuda::allow_tf32());
  mf::cuda::set_allow_tf32(true);
  const Tensor gpu = mf::matmul(mftest::on_gpu(a), mftest::on_gpu(b));
  mf::cuda::set_allow_tf32(false);
  // TF32 keeps 10 mantissa bits of each input (2^-10 relative if truncated), so each
  // product is off by up to 2^-9 relative before the float32 sum.
  expect_matmul_close(gpu, cpu, a, b, 1025, std::ldexp(1.0, -9),
                      "matmul tf32 [97, 1025] @ [1025, 33]");
}

TEST_F(LinalgCuda, BmmAndLinear) {
  for (DType dt : {DType::Float32, DType::BFloat16}) {
    const Tensor a = random_tensor({3, 5, 7}, 11, dt), b = random_tensor({3, 7, 97}, 12, dt);
    expect_matmul_close(mf::bmm(mftest::on_gpu(a), mftest::on_gpu(b)), mf::bmm(a, b), a, b, 7, 0.0,
                        std::string("bmm ") + mf::dtype_name(dt));
    // linear reads the weight [out, in] transposed, in place.
    const Tensor x = random_tensor({2, 5, 33}, 13, dt), w = random_tensor({61, 33}, 14, dt);
    expect_matmul_close(mf::linear(mftest::on_gpu(x), mftest::on_gpu(w), Tensor()),
                        mf::linear(x, w, Tensor()), x, w.t(), 33, 0.0,
                        std::string("linear without bias ") + mf::dtype_name(dt));
  }
  const Tensor x = random_tensor({2, 5, 33}, 15, DType::Float32);
  const Tensor w = random_tensor({61, 33}, 16, DType::Float32);
  const Tensor bias = random_tensor({61}, 17, DType::Float32);
  // linear(x, w, bias) == [x, 1] @ [w, bias]^T: the bias is one more term of the sum.
  const Tensor xa = mf::cat({x, mf::ones({2, 5, 1}, {.dtype = DType::Float32})}, 2);
  const Tensor wa = mf::cat({w, bias.unsqueeze(1)}, 1);
  expect_matmul_close(mf::linear(mftest::on_gpu(x), mftest::on_gpu(w), mftest::on_gpu(bias)),
                      mf::linear(x, w, bias), xa, wa.t(), 34, 0.0, "linear with bias float32");
}

// Gradients of both operands, on both devices, for every rank case (sum_to undoes the
// batch broadcast) and strided operands. Each gradient is a matmul with the upstream
// gradient (plus a sum over broadcast batch entries), so the GPU may differ from float64
// by at most twice what the same-precision CPU computation does, plus a float64 floor.
TEST_F(LinalgCuda, MatmulGradientsMatchCpu) {
  const std::vector<MatmulCase> cases = {
      {plain({97}), plain({97})},
      {plain({5, 7}), plain({7})},
      {plain({7}), plain({7, 3})},
      {plain({97, 33}), plain({33, 61})},
      {plain({4, 5, 7}), plain({7, 3})},
      {plain({5, 7}), plain({4, 7, 3})},
      {plain({2, 1, 5, 7}), plain({3, 7, 3})},
      {plain({7}), plain({2, 7, 3})},
      {plain({2, 5, 7}), plain({7})},
      {transposed({4, 5, 7}), transposed({4, 7, 3})},
      {col_strided({5, 7}), row_strided({7, 3})},
      {plain({5, 0}), plain({0, 3})},
  };
  uint32_t seed = 500;
  for (DType dt : {DType::Float64, DType::Float32}) {
    for (const MatmulCase& c : cases) {
      const std::string what = case_name(c, dt) + " gradient";
      const Tensor sa = random_tensor(c.a.storage, ++seed, dt);
      const Tensor sb = random_tensor(c.b.storage, ++seed, dt);
      // Leaves on each device (and float64 copies for the reference).
      Tensor ca = sa.clone(), cb = sb.clone(), ra = sa.to(DType::Float64),
             rb = sb.to(DType::Float64), ga = mftest::on_gpu(sa), gb = mftest::on_gpu(sb);
      for (Tensor* t : {&ca, &cb, &ra, &rb, &ga, &gb}) t->requires_grad_();
      const Tensor yc = mf::matmul(c.a.view(ca), c.b.view(cb));
      const Tensor yr = mf::matmul(c.a.view(ra), c.b.view(rb));
      const Tensor yg = mf::matmul(c.a.view(ga), c.b.view(gb));
      const Tensor g = random_tensor(yc.sizes(), ++seed, dt);
      yc.backward(g);
      yr.backward(g.to(DType::Float64));
      yg.backward(mftest::on_gpu(g));
      const std::vector<std::pair<Tensor, Tensor>> grads = {{ga, ca}, {gb, cb}};
      const std::vector<Tensor> refs = {ra, rb};
      for (size_t i = 0; i < 2; ++i) {
        const Tensor gg = grads[i].first.grad(), cg = grads[i].second.grad(), rg = refs[i].grad();
        ASSERT_TRUE(gg.defined() && cg.defined() && rg.defined()) << what;
        ASSERT_TRUE(gg.is_cuda()) << what;
        ASSERT_EQ(gg.sizes(), cg.sizes()) << what;
        const std::vector<double> gv = gg.to_vector<double>(), cv = cg.to_vector<double>(),
                                  rv = rg.to_vector<double>();
        double cpu_err = 0.0, scale = 0.0;
        for (size_t k = 0; k < rv.size(); ++k) {
          cpu_err = std::max(cpu_err, std::abs(cv[k] - rv[k]));
          scale = std::max(scale, std::abs(rv[k]));
        }
        const double tol = 2.0 * cpu_err + 64.0 * accumulate_u(dt) * scale;
        mftest::expect_close(gv, rv, tol, 0.0, what + (i == 0 ? " (input a)" : " (input b)"));
      }
    }
  }
}
