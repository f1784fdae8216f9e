// CPU kernels of the reductions over rows: the input is a contiguous [outer, R] buffer
// (Note [Reduction layout] in ops/reduction.cpp) and each output element reduces one row.
// The backward kernels write gradients in the same [outer, R] layout. No Tensor here.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cpu {

// out[o] = sum of row o, accumulated in float64 (floating types) or int64 (integers,
// bool); out_type may differ from in_type (int32 -> int64).
void sum_rows(const void* in, DType in_type, void* out, DType out_type, int64_t outer, int64_t r);

// out[o] = mean of row o (NaN for empty rows), accumulated in float64; floating types.
void mean_rows(const void* in, DType type, void* out, int64_t outer, int64_t r);

// The largest (is_max) or smallest element of each row and the index of its first
// occurrence in the row; a NaN wins over every number (NaN propagates, as in PyTorch).
// `values` and `indices` may each be null when not wanted. Requires r > 0.
void minmax_rows(const void* in, DType type, int64_t outer, int64_t r, bool is_max, void* values,
                 int64_t* indices);

// out[o] = log(sum(exp(row o))), shifted by the row's max (Note [Safe softmax]).
void logsumexp_rows(const void* in, DType type, void* out, int64_t outer, int64_t r);

// out[o] = sum((x - mean)^2) / max(0, R - correction), two passes in float64.
void var_rows(const void* in, DType type, void* out, int64_t outer, int64_t r, double correction);

// dx[o, j] = g[o] * (x[o, j] == y[o]) / count[o], count[o] = #{j : x[o, j] == y[o]}: the
// gradient of amax/amin, split evenly among ties (a NaN y matches the NaN elements).
void amax_backward_rows(const void* g, const void* x, const void* y, void* dx, DType type,
                        int64_t outer, int64_t r);

// dx[o, j] = g[o] * exp(x[o, j] - lse[o]); 0 for a row whose lse is -inf.
void logsumexp_backward_rows(const void* g, const void* x, const void* lse, void* dx, DType type,
                             int64_t outer, int64_t r);

// dx is [outer, R, inner]: zero except dx[o, idx[o, i], i] = g[o, i] (g and idx are
// [outer, inner]); the gradient of max/min along a dim.
void scatter_selected(const void* g, const int64_t* idx, void* dx, DType type, int64_t outer,
                      int64_t r, int64_t inner);

}  // namespace microflex::cpu
