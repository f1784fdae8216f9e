// CUDA launchers of the row reductions and their backward kernels: the same contract as
// kernels/cpu/reduction.h (contiguous [outer, R] rows, Note [Reduction layout] in
// ops/reduction.cpp) with device pointers on cuda:`device`. Sums accumulate in float
// (double for float64, int64 for integers and bool), not in double as on the CPU.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cuda {

// out[o] = sum of row o; out_type is in_type for floating types, int64 otherwise.
void sum_rows(int device, const void* in, DType in_type, void* out, DType out_type, int64_t outer,
              int64_t r);
// out[o, i] = sum over r of x[o, r, i] for a contiguous [outer, R, inner] input, without a
// transposing copy (Note [Column sums] in reduction.cu); dtypes as sum_rows.
void sum_columns(int device, const void* in, DType in_type, void* out, DType out_type,
                 int64_t outer, int64_t r, int64_t inner);
// out[o] = mean of row o (NaN for empty rows); floating types.
void mean_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r);
// Largest (is_max) or smallest element of each row and the index of its first occurrence;
// NaN wins. `values` and `indices` may each be null. Requires r > 0.
void minmax_rows(int device, const void* in, DType type, int64_t outer, int64_t r, bool is_max,
                 void* values, int64_t* indices);
// out[o] = log(sum(exp(row o))) (Note [Online softmax] in kernels/cuda/rows.cuh).
void logsumexp_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r);
// out[o] = sum((x - mean)^2) / max(0, R - correction), by Welford's update per thread and
// Chan's merge across threads.
void var_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r,
              double correction);
// dx[o, j] = g[o] * (x[o, j] == y[o]) / count[o] (ties share; NaN y matches NaN x).
void amax_backward_rows(int device, const void* g, const void* x, const void* y, void* dx,
                        DType type, int64_t outer, int64_t r);
// dx[o, j] = g[o] * exp(x[o, j] - lse[o]); 0 on rows whose lse is -inf.
void logsumexp_backward_rows(int device, const void* g, const void* x, const void* lse, void* dx,
                             DType type, int64_t outer, int64_t r);
// dx [outer, R, inner] = 0 except dx[o, idx[o, i], i] = g[o, i]; g, idx [outer, inner].
void scatter_selected(int device, const void* g, const int64_t* idx, void* dx, DType type,
                      int64_t outer, int64_t r, int64_t inner);

}  // namespace microflex::cuda
