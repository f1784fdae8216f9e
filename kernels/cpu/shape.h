// CPU kernels for ops that build tensors from others: the triangle masks behind
// tril/triu and one_hot. Raw pointers and sizes in; no Tensor.
#pragma once
#include <cstdint>

namespace microflex::cpu {

// dst = src over contiguous [batch, rows, cols] buffers of any dtype (`itemsize` bytes a
// value), with elements outside the band zeroed: the lower triangle keeps
// col - row <= diagonal, the upper one col - row >= diagonal. An all-zero bit pattern
// is zero in every dtype, so this needs no dtype dispatch.
void triangle(void* dst, const void* src, int64_t itemsize, int64_t batch, int64_t rows,
              int64_t cols, int64_t diagonal, bool lower);

// out [n, num_classes] = 0 except out[i, ids[i]] = 1; ids must lie in [0, num_classes)
// (an error names the offending id).
void one_hot(int64_t* out, const int64_t* ids, int64_t n, int64_t num_classes);

}  // namespace microflex::cpu
