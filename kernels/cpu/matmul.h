// Batched matrix product on the CPU: C[i] = A[i] @ B[i] over `batch` matrices whose
// operands are strided views (transposed or broadcast inputs are read in place, never
// copied). Eigen computes float32/float64; 16-bit types go through float32.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cpu {

// A strided [rows, cols] operand: element (r, c) of matrix i is at
// data + offsets[i] + r * rs + c * cs (element units of the dtype).
struct MatrixOperand {
  const void* data = nullptr;
  const int64_t* offsets = nullptr;  // one per batch entry
  int64_t rs = 0;
  int64_t cs = 0;
};

// C[i] ([M, N], contiguous, at c + i * M * N) = A[i] ([M, K]) @ B[i] ([K, N]) for
// i < batch. float16/bfloat16 accumulate in float32, int32/int64 in int64.
void matmul(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, const MatrixOperand& a,
            const MatrixOperand& b, void* c);

}  // namespace microflex::cpu
