// CPU matmul kernels. float32/float64 map each strided operand into Eigen without a
// copy (row-major when columns are contiguous, column-major for transposed views);
// 16-bit types are widened to float32 per matrix; integers use a plain loop.
#include "kernels/cpu/matmul.h"

#include <Eigen/Core>
#include <type_traits>
#include <vector>

namespace microflex::cpu {

namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using OuterStride = Eigen::OuterStride<>;
using AnyStride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;

// Calls f with an Eigen map of the [rows, cols] matrix at p with strides (rs, cs).
// A stride along a size-1 dim is never used, so it is normalised first: a row or a
// column vector then always maps without a general (slow, copying) stride.
template <typename T, typename F>
void with_map(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, F&& f) {
  if (rows == 1) rs = cs == 1 ? cols : 1;
  if (cols == 1) cs = rs == 1 ? rows : 1;
  if (cs == 1) {
    f(Eigen::Map<const RowMat<T>, 0, OuterStride>(p, rows, cols, OuterStride(rs)));
  } else if (rs == 1) {
    f(Eigen::Map<const ColMat<T>, 0, OuterStride>(p, rows, cols, OuterStride(cs)));
  } else {
    // Neither dim is contiguous (e.g. a strided slice): Eigen packs it itself.
    f(Eigen::Map<const RowMat<T>, 0, AnyStride>(p, rows, cols, AnyStride(rs, cs)));
  }
}

// c ([M, N], contiguous) = a ([M, K], strides ars/acs) @ b ([K, N], strides brs/bcs).
template <typename T>
void gemm_eigen(int64_t M, int64_t N, int64_t K, const T* a, int64_t ars, int64_t acs, const T* b,
                int64_t brs, int64_t bcs, T* c) {
  Eigen::Map<RowMat<T>> cm(c, M, N);
  if (K == 0) {
    cm.setZero();
    return;
  }
  with_map(a, M, K, ars, acs, [&](const auto& am) {
    with_map(b, K, N, brs, bcs, [&](const auto& bm) { cm.noalias() = am * bm; });
  });
}

// Integers: int64 accumulation, then a cast to T (wraps like PyTorch's int32 matmul).
template <typename T>
void gemm_loop(int64_t M, int64_t N, int64_t K, const T* a, int64_t ars, int64_t acs, const T* b,
               int64_t brs, int64_t bcs, T* c) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc +=
            static_cast<int64_t>(a[m * ars + k * acs]) * static_cast<int64_t>(b[k * brs + n * bcs]);
      c[m * N + n] = static_cast<T>(acc);
    }
  }
}

// Copies a strided [rows, cols] matrix of 16-bit floats into a contiguous float buffer.
template <typename T>
void widen(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < cols; ++q) out[r * cols + q] = static_cast<float>(p[r * rs + q * cs]);
}

template <typename T>
void matmul_typed(int64_t batch, int64_t M, int64_t N, int64_t K, const MatrixOperand& a,
                  const MatrixOperand& b, void* c) {
  const T* pa = static_cast<const T*>(a.data);
  const T* pb = static_cast<const T*>(b.data);
  T* pc = static_cast<T*>(c);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    for (int64_t i = 0; i < batch; ++i)
      gemm_eigen<T>(M, N, K, pa + a.offsets[i], a.rs, a.cs, pb + b.offsets[i], b.rs, b.cs,
                    pc + i * M * N);
  } else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    std::vector<float> fa(static_cast<size_t>(M * K)), fb(static_cast<size_t>(K * N)),
        fc(static_cast<size_t>(M * N));
    for (int64_t i = 0; i < batch; ++i) {
      widen(pa + a.offsets[i], M, K, a.rs, a.cs, fa.data());
      widen(pb + b.offsets[i], K, N, b.rs, b.cs, fb.data());
      gemm_eigen<float>(M, N, K, fa.data(), K, 1, fb.data(), N, 1, fc.data());
      T* out = pc + i * M * N;
      for (int64_t j = 0; j < M * N; ++j) out[j] = T(fc[static_cast<size_t>(j)]);
    }
  } else {
    for (int64_t i = 0; i < batch; ++i)
      gemm_loop<T>(M, N, K, pa + a.offsets[i], a.rs, a.cs, pb + b.offsets[i], b.rs, b.cs,
                   pc + i * M * N);
  }
}

}  // namespace

void matmul(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, const MatrixOperand& a,
            const MatrixOperand& b, void* c) {
  if (batch == 0 || M == 0 || N == 0) return;
  MF_DISPATCH_NUMERIC(dtype, "matmul", [&] { matmul_typed<scalar_t>(batch, M, N, K, a, b, c); });
}

}  // namespace microflex::cpu
