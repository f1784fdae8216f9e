// matmul on the GPU: cuBLAS GEMM for floating types through one handle per device (made
// on first use, bound to the device's microflex stream, with its own workspace), and a
// shared-memory tiled kernel for integers, which cuBLAS does not multiply.
#include <cublas_v2.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>

#include "core/error.h"
#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/rows.cuh"

namespace microflex::cuda {

namespace {

void check_cublas(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  MF_CHECK(false, "cuBLAS error: ", cublasGetStatusString(status), " (", static_cast<int>(status),
           ") in ", what, " at ", file, ":", line);
}

#define MF_CUBLAS_CHECK(expr) check_cublas((expr), #expr, __FILE__, __LINE__)

constexpr int kMaxDevices = 64;
// 32 MiB: what cuBLAS asks for on Hopper to pick its split-K and stream-K kernels.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct DeviceHandle {
  std::once_flag once;
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// The handle lives as long as the process; every call on a device goes to the one stream,
// so the workspace is never used by two GEMMs at once.
cublasHandle_t handle(int device) {
  static DeviceHandle handles[kMaxDevices];
  MF_CHECK(device >= 0 && device < kMaxDevices, "matmul: bad CUDA device index ", device);
  DeviceHandle& d = handles[device];
  std::call_once(d.once, [&d, device] {
    set_device(device);
    cublasHandle_t h = nullptr;
    MF_CUBLAS_CHECK(cublasCreate(&h));
    MF_CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(stream(device))));
    void* ws = nullptr;
    MF_CUDA_CHECK(cudaMalloc(&ws, kWorkspaceBytes));
    MF_CUBLAS_CHECK(cublasSetWorkspace(h, ws, kWorkspaceBytes));
    // Split-K partial sums of float16/bfloat16 GEMMs stay in float32, so 16-bit results
    // are one rounding of a float32 sum, as on the CPU.
    MF_CUBLAS_CHECK(cublasSetMathMode(
        h, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                     CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    d.handle = h;
    d.workspace = ws;
  });
  return d.handle;
}

// How cuBLAS (column-major) sees a row-major view [rows, cols] with strides (rs, cs):
// a row-major matrix is its transpose stored column-major with leading dim rs; a
// transposed view (rs == 1) is a column-major matrix with leading dim cs.
struct Layout {
  bool ok = false;
  bool col_major = false;
  int64_t ld = 1;
};

Layout layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  const int64_t r1 = std::max<int64_t>(rows, 1), c1 = std::max<int64_t>(cols, 1);
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= c1)) return {true, false, rows == 1 ? c1 : rs};
  if ((rs == 1 || rows == 1) && (cols == 1 || cs >= r1)) return {true, true, cols == 1 ? r1 : cs};
  return {};
}

struct GemmTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
  bool double_scalars;
};

GemmTypes gemm_types(DType dtype, bool tf32) {
  switch (dtype) {
    case DType::Float32:
      return {CUDA_R_32F, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, false};
    case DType::Float64:
      return {CUDA_R_64F, CUBLAS_COMPUTE_64F, true};
    case DType::Float16:
      return {CUDA_R_16F, CUBLAS_COMPUTE_32F, false};
    case DType::BFloat16:
      return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, false};
    default:
      MF_INTERNAL_ASSERT(false, "matmul: no cuBLAS type for ", dtype_name(dtype));
  }
  return {};
}

void gemm_cublas(int device, DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K,
                 const MatrixBatch& a, const MatrixBatch& b, void* c, bool tf32) {
  Layout la = layout_of(M, K, a.rs, a.cs);
  const Layout lb = layout_of(K, N, b.rs, b.cs);
  MF_INTERNAL_ASSERT(la.ok && lb.ok, "matmul: operand strides cuBLAS cannot read");
  // A batch of row-major A against one shared B is a single GEMM with batch * M rows.
  if (batch > 1 && b.batch_stride == 0 && !la.col_major) {
    const int64_t ld = M == 1 ? a.batch_stride : la.ld;
    if (a.batch_stride == M * ld && ld >= std::max<int64_t>(K, 1)) {
      M *= batch;
      la.ld = ld;
      batch = 1;
    }
  }
  // Note [Aligned leading dimensions]
  // cuBLAS's fast tensor-core kernels want every leading dimension to be a multiple of 16
  // bytes. With an odd one (a 50257-token vocabulary) it falls back to kernels several
  // times slower: the GPT-2 head ran at about 100 TFLOP/s on an H100. For a large 16-bit
  // product, a misaligned operand is copied into a padded buffer (cudaMemcpy2DAsync, at
  // copy bandwidth) and a misaligned C is computed padded and then copied out.
  set_device(device);
  auto st = static_cast<cudaStream_t>(stream(device));
  const int64_t es = static_cast<int64_t>(itemsize(dtype));
  const bool pad_ok = batch == 1 && es == 2 && 2.0 * double(M) * double(N) * double(K) >= 1e9;
  std::unique_ptr<Workspace> wa, wb, wc;
  // A matrix stored as `height` rows of `width` elements `ld` apart, repacked with an
  // aligned pitch when its own is not; returns the pointer and leading dim to use.
  auto repack = [&](const void* data, int64_t ld, int64_t width, int64_t height,
                    std::unique_ptr<Workspace>& ws) -> std::pair<const void*, int64_t> {
    if (!pad_ok || height <= 1 || (ld * es) % 16 == 0) return {data, ld};
    const int64_t lp = ceil_div(width * es, 16) * 16 / es;
    ws = std::make_unique<Workspace>(device, height * lp * es);
    MF_CUDA_CHECK(cudaMemcpy2DAsync(ws->as<char>(), lp * es, data, ld * es, width * es, height,
                                    cudaMemcpyDeviceToDevice, st));
    return {ws->as<char>(), lp};
  };
  const auto [a_data, a_ld] =
      la.col_major ? repack(a.data, la.ld, M, K, wa) : repack(a.data, la.ld, K, M, wa);
  const auto [b_data, b_ld] =
      lb.col_major ? repack(b.data, lb.ld, K, N, wb) : repack(b.data, lb.ld, N, K, wb);
  int64_t ldc = N;
  void* c_out = c;
  if (pad_ok && M > 1 && (N * es) % 16 != 0) {
    ldc = ceil_div(N * es, 16) * 16 / es;
    wc = std::make_unique<Workspace>(device, M * ldc * es);
    c_out = wc->as<char>();
  }
  // Row-major C [M, N] is column-major C^T [N, M] = B^T [N, K] @ A^T [K, M].
  const GemmTypes t = gemm_types(dtype, tf32);
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = t.double_scalars ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = t.double_scalars ? static_cast<const void*>(&zero_d) : &zero_f;
  cublasHandle_t h = handle(device);
  MF_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      h, lb.col_major ? CUBLAS_OP_T : CUBLAS_OP_N, la.col_major ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
      K, alpha, b_data, t.data, b_ld, b.batch_stride, a_data, t.data, a_ld, a.batch_stride, beta,
      c_out, t.data, ldc, M * ldc, batch, t.compute, CUBLAS_GEMM_DEFAULT));
  if (c_out != c)
    MF_CUDA_CHECK(
        cudaMemcpy2DAsync(c, N * es, c_out, ldc * es, N * es, M, cudaMemcpyDeviceToDevice, st));
}

constexpr int kTile = 16;

// C[i] = A[i] @ B[i] with int64 accumulation, one kTile x kTile block of C per block;
// grid-stride over row tiles (y) and batch entries (z) for shapes beyond the grid limits.
template <typename T>
__global__ void int_gemm_kernel(T* c, const T* a, MatrixBatch ma, const T* b, MatrixBatch mb,
                                int64_t batch, int64_t M, int64_t N, int64_t K) {
  __shared__ int64_t as[kTile][kTile + 1];  // [m, k]
  __shared__ int64_t bs[kTile][kTile + 1];  // [k, n]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t n = blockIdx.x * int64_t(kTile) + tx;
  for (int64_t i = blockIdx.z; i < batch; i += gridDim.z) {
    const T* pa = a + i * ma.batch_stride;
    const T* pb = b + i * mb.batch_stride;
    for (int64_t m0 = blockIdx.y * int64_t(kTile); m0 < M; m0 += int64_t(gridDim.y) * kTile) {
      const int64_t m = m0 + ty;
      int64_t acc = 0;
      for (int64_t k0 = 0; k0 < K; k0 += kTile) {
        const int64_t ka = k0 + tx, kb = k0 + ty;
        as[ty][tx] = m < M && ka < K ? static_cast<int64_t>(pa[m * ma.rs + ka * ma.cs]) : 0;
        bs[ty][tx] = kb < K && n < N ? static_cast<int64_t>(pb[kb * mb.rs + n * mb.cs]) : 0;
        __syncthreads();
        for (int k = 0; k < kTile; ++k) acc += as[ty][k] * bs[k][tx];
        __syncthreads();
      }
      if (m < M && n < N) c[(i * M + m) * N + n] = static_cast<T>(acc);
    }
  }
}

void gemm_int(int device, DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K,
              const MatrixBatch& a, const MatrixBatch& b, void* c) {
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const dim3 threads(kTile, kTile);
  const dim3 grid(static_cast<unsigned int>((N + kTile - 1) / kTile),
                  static_cast<unsigned int>(std::min<int64_t>((M + kTile - 1) / kTile, 65535)),
                  static_cast<unsigned int>(std::min<int64_t>(batch, 65535)));
  if (dtype == DType::Int32) {
    int_gemm_kernel<<<grid, threads, 0, s>>>(
        static_cast<int32_t*>(c), static_cast<const int32_t*>(a.data), a,
        static_cast<const int32_t*>(b.data), b, batch, M, N, K);
  } else {
    int_gemm_kernel<<<grid, threads, 0, s>>>(
        static_cast<int64_t*>(c), static_cast<const int64_t*>(a.data), a,
        static_cast<const int64_t*>(b.data), b, batch, M, N, K);
  }
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool gemm_layout_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  return layout_of(rows, cols, rs, cs).ok;
}

void matmul(int device, DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K,
            const MatrixBatch& a, const MatrixBatch& b, void* c, bool tf32) {
  if (batch == 0 || M == 0 || N == 0) return;
  if (K == 0) {
    // An empty sum: all-zero bytes are zero in every dtype.
    set_device(device);
    MF_CUDA_CHECK(cudaMemsetAsync(c, 0, static_cast<size_t>(batch * M * N * itemsize(dtype)),
                                  static_cast<cudaStream_t>(stream(device))));
    return;
  }
  if (dtype == DType::Int32 || dtype == DType::Int64) {
    gemm_int(device, dtype, batch, M, N, K, a, b, c);
  } else {
    gemm_cublas(device, dtype, batch, M, N, K, a, b, c, tf32);
  }
}

}  // namespace microflex::cuda
