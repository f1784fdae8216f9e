// CUDA launchers for advanced indexing (index and, through index lists, gather,
// index_select and embedding), its scatter-add backward, and masked_fill. Pointers are
// device pointers on `device`; no CUDA types here, so ops/ can include it.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex::cuda {

// k index arrays (int32 or int64) broadcasting together to the shape P: index j at
// position p of P is data[j][sum_d p_d * strides[j][d]] (0 strides broadcast).
struct IndexArgs {
  int k = 0;
  int ndim = 0;              // dims of P
  int64_t P[kMaxDims] = {};  // P
  const void* data[kMaxDims] = {};
  bool is_int32[kMaxDims] = {};
  int64_t strides[kMaxDims][kMaxDims] = {};  // [j][d]
  bool wrap_negative = true;                 // false: indices are in [0, S_j) (embedding ids)
};

// The first out-of-range index a kernel saw (device memory, zeroed by the launcher):
// `bad` is 1 when there was one; `dim` is its position j in the list, `value` its value.
struct IndexFault {
  int64_t bad = 0;
  int64_t dim = 0;
  int64_t value = 0;
};

// out (contiguous [P, inner...]) = src[idx_0[p], ..., idx_{k-1}[p], inner...], with src
// any strided tensor (geometry `src_g`, its first k dims indexed) of `itemsize`-byte
// elements. Negative indices wrap once (with idx.wrap_negative); an index outside
// [-S_j, S_j) (or [0, S_j)) reads nothing (0 is written), is recorded in `fault` (3 int64 of device
// scratch) and returned after a stream sync.
IndexFault index_gather(int device, void* out, const void* src, int64_t itemsize,
                        const Geometry& src_g, const IndexArgs& idx, void* fault);

// out (contiguous, shape `sizes` with its first k dims indexed) = 0, then
// out[idx[p], :] += grad[p, :] for every p (grad: geometry [P, inner...]). float32,
// float64, int32 and int64 accumulate atomically in `out` itself; float16/bfloat16
// accumulate atomically into `acc32` (float32 scratch of out's size) and are rounded into
// `out` once. The order of duplicates' additions is not fixed (atomics), so float results
// can differ from run to run in the last bits. Faults as in index_gather.
IndexFault index_scatter_add(int device, DType dtype, void* out, const Geometry& out_g,
                             const void* grad, const Geometry& grad_g, const IndexArgs& idx,
                             void* acc32, void* fault);

// out (geometry `out_g`) = mask ? value : t, with t and mask (bool) strided to out's
// sizes (0 strides broadcast). The value is read on the device from `value_dev` (one
// element of `dtype`) when it is not null, else taken from value_f / value_i.
void masked_fill(int device, DType dtype, void* out, const Geometry& out_g, const void* t,
                 const Geometry& t_g, const void* mask, const Geometry& mask_g,
                 const void* value_dev, double value_f, int64_t value_i, bool value_is_float);

}  // namespace microflex::cuda
