// CUDA launchers for tril/triu and one_hot (cat uses the strided copy of
// kernels/cuda/copy.h). Pointers are device pointers on `device`.
#pragma once
#include <cstdint>

#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/indexing.h"

namespace microflex::cuda {

// dst (contiguous, src_g's sizes [..., rows, cols]) = src with the elements outside the
// band zeroed: the lower triangle keeps col - row <= diagonal, the upper one
// col - row >= diagonal. Any dtype of `itemsize` bytes (all-zero bits are zero in each).
void triangle(int device, void* dst, const void* src, int64_t itemsize, const Geometry& src_g,
              int64_t diagonal, bool lower);

// out [n, num_classes] (int64, contiguous) = 0 except out[i, ids[i]] = 1, for ids (int32
// or int64, geometry ids_g with n elements). An id outside [0, num_classes) is recorded in
// `fault` (3 int64 of device scratch; its `value`) and returned after a stream sync.
IndexFault one_hot(int device, int64_t* out, const void* ids, bool ids_int32, const Geometry& ids_g,
                   int64_t num_classes, void* fault);

}  // namespace microflex::cuda
