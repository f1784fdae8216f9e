// CUDA launchers for strided copy with dtype conversion and fill (to(dtype), clone,
// contiguous, copy_, fill_, full). Pointers are device pointers on `device`.
#pragma once
#include "core/dtype.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex::cuda {

// dst[i] = convert(src[i]) over dst's geometry; src's geometry has dst's sizes (stride 0
// where it broadcasts).
void copy_convert(int device, void* dst, DType dst_type, const Geometry& dst_g, const void* src,
                  DType src_type, const Geometry& src_g);
void fill(int device, void* dst, DType type, const Geometry& g, double value_f, int64_t value_i,
          bool is_float);

}  // namespace microflex::cuda
