// Advanced indexing on the CPU: the source rows an index list selects, a gather by rows
// and a deterministic scatter-add by rows (the backward of every gather-like op).
// Raw pointers, sizes and element strides in; no Tensor.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace microflex::cpu {

// k int64 index arrays that broadcast together to `shape` (P).
struct IndexList {
  std::vector<int64_t> shape;                 // P
  std::vector<const int64_t*> data;           // k arrays
  std::vector<std::vector<int64_t>> strides;  // per array: element strides over P, 0 = broadcast
};

// For each position p of P (row-major), the row of a contiguous source
// [S_0, ..., S_{k-1}, inner...] that the indices select:
//   rows[p] = sum_j wrap(idx_j[p]) * prod(S[j+1 : k]).
// With wrap_negative, negative indices wrap once and an index outside [-S_j, S_j) throws;
// without (embedding ids, which are row numbers), one outside [0, S_j) does. The error
// names `op`, the dim j, the index value and S_j.
std::vector<int64_t> index_rows(const IndexList& idx, const std::vector<int64_t>& src_sizes,
                                const char* op, bool wrap_negative = true);

// out[p, :] = src[rows[p], :] for rows of `inner` elements of `itemsize` bytes (any dtype).
void index_gather(void* out, const void* src, const std::vector<int64_t>& rows, int64_t inner,
                  int64_t itemsize);

// dst[rows[p], :] += grad[p, :], in increasing p: deterministic, duplicates accumulate.
// dtype: float32, float64, int32 or int64 (16-bit types are accumulated in float32).
void index_scatter_add(DType dtype, void* dst, const void* grad, const std::vector<int64_t>& rows,
                       int64_t inner);

}  // namespace microflex::cpu
