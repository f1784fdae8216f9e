// CPU op benchmarks: each microflex op through its public API next to the same
// computation written directly in Eigen over the same buffers, in one binary so both run
// under the same build flags. Counters report GFLOP/s (matmul) or GB/s (memory-bound ops).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>

#include <microflex/microflex.h>

namespace {

using mf::Tensor;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMat = Eigen::Map<RowMat>;
using ArrMap = Eigen::Map<Eigen::ArrayXf>;

constexpr int64_t kElems = int64_t(1) << 24;  // 16M float32 elements

// Eigen's outputs are preallocated and zero-filled (pages already mapped) outside the
// timed loop; microflex allocates each result, as a user of the public API does.

void set_gflops(benchmark::State& st, double flops_per_iter) {
  st.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void set_gbps(benchmark::State& st, double bytes_per_iter) {
  st.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

MapMat map(const Tensor& t, int64_t rows, int64_t cols) {
  return MapMat(t.data_ptr<float>(), rows, cols);
}

ArrMap flat(const Tensor& t) {
  return ArrMap(t.data_ptr<float>(), t.numel());
}

// ---- matmul [M, K] x [K, N] ----

void BM_matmul_microflex(benchmark::State& st) {
  const int64_t n = st.range(0);
  mf::manual_seed(0);
  Tensor a = mf::randn({n, n}), b = mf::randn({n, n});
  for (auto _ : st) {
    Tensor c = mf::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gflops(st, 2.0 * n * n * n);
}

void BM_matmul_eigen(benchmark::State& st) {
  const int64_t n = st.range(0);
  mf::manual_seed(0);
  Tensor a = mf::randn({n, n}), b = mf::randn({n, n}), c = mf::zeros({n, n});
  MapMat am = map(a, n, n), bm = map(b, n, n), cm = map(c, n, n);
  for (auto _ : st) {
    cm.noalias() = am * bm;
    benchmark::DoNotOptimize(cm.data());
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * n * n * n);
}

// ---- batched matmul [16, 128, 64] x [16, 64, 128] ----

constexpr int64_t kBB = 16, kBM = 128, kBK = 64, kBN = 128;

void BM_bmm_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kBB, kBM, kBK}), b = mf::randn({kBB, kBK, kBN});
  for (auto _ : st) {
    Tensor c = mf::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gflops(st, 2.0 * kBB * kBM * kBN * kBK);
}

void BM_bmm_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kBB, kBM, kBK}), b = mf::randn({kBB, kBK, kBN}),
         c = mf::zeros({kBB, kBM, kBN});
  float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>(), *pc = c.data_ptr<float>();
  for (auto _ : st) {
    for (int64_t i = 0; i < kBB; ++i) {
      MapMat cm(pc + i * kBM * kBN, kBM, kBN);
      cm.noalias() = MapMat(pa + i * kBM * kBK, kBM, kBK) * MapMat(pb + i * kBK * kBN, kBK, kBN);
    }
    benchmark::DoNotOptimize(pc);
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * kBB * kBM * kBN * kBK);
}

// ---- add / mul of two 16M-element tensors: 3 x 4 bytes per element ----

void BM_add_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kElems}), b = mf::randn({kElems});
  for (auto _ : st) {
    Tensor c = a + b;
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gbps(st, 12.0 * kElems);
}

// In place (no output allocation): separates the kernel from the cost of a fresh buffer.
void BM_add_inplace_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kElems}), b = mf::randn({kElems});
  for (auto _ : st) {
    a.add_(b);
    benchmark::DoNotOptimize(a.raw_data());
  }
  set_gbps(st, 12.0 * kElems);
}

void BM_add_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kElems}), b = mf::randn({kElems}), c = mf::zeros({kElems});
  ArrMap am = flat(a), bm = flat(b), cm = flat(c);
  for (auto _ : st) {
    cm = am + bm;
    benchmark::DoNotOptimize(cm.data());
    benchmark::ClobberMemory();
  }
  set_gbps(st, 12.0 * kElems);
}

void BM_mul_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kElems}), b = mf::randn({kElems});
  for (auto _ : st) {
    Tensor c = a * b;
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gbps(st, 12.0 * kElems);
}

void BM_mul_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kElems}), b = mf::randn({kElems}), c = mf::zeros({kElems});
  ArrMap am = flat(a), bm = flat(b), cm = flat(c);
  for (auto _ : st) {
    cm = am * bm;
    benchmark::DoNotOptimize(cm.data());
    benchmark::ClobberMemory();
  }
  set_gbps(st, 12.0 * kElems);
}

// ---- broadcast add [4096, 1024] + [1024] ----

constexpr int64_t kRows = 4096, kCols = 1024;

void BM_bcast_add_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kRows, kCols}), b = mf::randn({kCols});
  for (auto _ : st) {
    Tensor c = a + b;
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gbps(st, 4.0 * (2 * kRows * kCols + kCols));
}

void BM_bcast_add_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor a = mf::randn({kRows, kCols}), b = mf::randn({kCols}), c = mf::zeros({kRows, kCols});
  MapMat am = map(a, kRows, kCols), bm = map(b, 1, kCols), cm = map(c, kRows, kCols);
  for (auto _ : st) {
    cm.array() = am.array().rowwise() + bm.array().row(0);
    benchmark::DoNotOptimize(cm.data());
    benchmark::ClobberMemory();
  }
  set_gbps(st, 4.0 * (2 * kRows * kCols + kCols));
}

// ---- gelu (exact, erf form) over 16M floats: 2 x 4 bytes per element ----

void BM_gelu_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kElems});
  for (auto _ : st) {
    Tensor y = mf::gelu(x);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_gbps(st, 8.0 * kElems);
}

void BM_gelu_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kElems}), y = mf::zeros({kElems});
  ArrMap xm = flat(x), ym = flat(y);
  const float r = static_cast<float>(M_SQRT1_2);
  for (auto _ : st) {
    ym = 0.5f * xm * (1.0f + (xm * r).erf());
    benchmark::DoNotOptimize(ym.data());
    benchmark::ClobberMemory();
  }
  set_gbps(st, 8.0 * kElems);
}

// ---- sum over the last dim of [4096, 4096]: 4 bytes read per element ----

constexpr int64_t kSumN = 4096;

void BM_sum_lastdim_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kSumN, kSumN});
  for (auto _ : st) {
    Tensor s = mf::sum(x, {-1});
    benchmark::DoNotOptimize(s.raw_data());
  }
  set_gbps(st, 4.0 * kSumN * kSumN);
}

void BM_sum_lastdim_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kSumN, kSumN}), s = mf::zeros({kSumN});
  MapMat xm = map(x, kSumN, kSumN);
  Eigen::Map<Eigen::VectorXf> sm(s.data_ptr<float>(), kSumN);
  for (auto _ : st) {
    sm.noalias() = xm.rowwise().sum();
    benchmark::DoNotOptimize(sm.data());
    benchmark::ClobberMemory();
  }
  set_gbps(st, 4.0 * kSumN * kSumN);
}

// ---- softmax over the rows of [4096, 1024]: read + write, 2 x 4 bytes per element ----

void BM_softmax_microflex(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kRows, kCols});
  for (auto _ : st) {
    Tensor y = mf::softmax(x, -1);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_gbps(st, 8.0 * kRows * kCols);
}

// Row by row (a 4 KiB row stays in L1): max, exp of the shifted row, sum, scale.
void BM_softmax_eigen(benchmark::State& st) {
  mf::manual_seed(0);
  Tensor x = mf::randn({kRows, kCols}), y = mf::zeros({kRows, kCols});
  float *px = x.data_ptr<float>(), *py = y.data_ptr<float>();
  for (auto _ : st) {
    for (int64_t r = 0; r < kRows; ++r) {
      Eigen::Map<const Eigen::ArrayXf> xr(px + r * kCols, kCols);
      Eigen::Map<Eigen::ArrayXf> yr(py + r * kCols, kCols);
      yr = (xr - xr.maxCoeff()).exp();
      yr *= 1.0f / yr.sum();
    }
    benchmark::DoNotOptimize(py);
    benchmark::ClobberMemory();
  }
  set_gbps(st, 8.0 * kRows * kCols);
}

}  // namespace

BENCHMARK(BM_matmul_microflex)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_matmul_eigen)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_bmm_microflex)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_bmm_eigen)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_add_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_inplace_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_add_eigen)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_mul_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_mul_eigen)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_bcast_add_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_bcast_add_eigen)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gelu_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gelu_eigen)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum_lastdim_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum_lastdim_eigen)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_microflex)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_eigen)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
