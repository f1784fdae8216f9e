// CUDA launchers for matmul: cuBLAS strided-batched GEMM for floating types (one handle
// per device, bound to that device's stream) and a plain kernel for int32/int64.
// Pointers are device pointers on `device`; operands are strided views read in place.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cuda {

// A batch of strided [rows, cols] matrices: element (r, c) of matrix i is at
// data + i * batch_stride + r * rs + c * cs (element units; batch_stride 0 broadcasts).
struct MatrixBatch {
  const void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t rs = 0;
  int64_t cs = 0;
};

// Whether cuBLAS can read a [rows, cols] operand with strides (rs, cs) in place: as a
// row-major matrix (cs == 1, rs >= cols) or a transposed one (rs == 1, cs >= rows).
// Strides along size-1 dims are ignored.
bool gemm_layout_ok(int64_t rows, int64_t cols, int64_t rs, int64_t cs);

// C[i] ([M, N], contiguous at c + i * M * N) = A[i] ([M, K]) @ B[i] ([K, N]) for
// i < batch. Floating types go through cuBLAS (operands must pass gemm_layout_ok):
// float32 accumulates in float32 (TF32 tensor cores when `tf32`), float64 in float64,
// float16/bfloat16 in float32 on tensor cores. int32/int64 use a tiled kernel with
// int64 accumulation that reads any strides. K == 0 writes zeros.
void matmul(int device, DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K,
            const MatrixBatch& a, const MatrixBatch& b, void* c, bool tf32);

}  // namespace microflex::cuda
