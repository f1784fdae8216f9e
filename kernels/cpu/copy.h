// Strided copy with dtype conversion, and fill: the CPU kernels behind to(dtype), clone,
// contiguous, copy_ and fill_. Raw pointers, sizes and element strides in.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace microflex::cpu {

// dst[i] = convert(src[i]) over `sizes`; src_strides may hold 0s (broadcast).
void copy_convert(void* dst, DType dst_type, const std::vector<int64_t>& dst_strides,
                  const void* src, DType src_type, const std::vector<int64_t>& src_strides,
                  const std::vector<int64_t>& sizes);

void fill(void* dst, DType type, const std::vector<int64_t>& strides,
          const std::vector<int64_t>& sizes, double value_f, int64_t value_i, bool is_float);

}  // namespace microflex::cpu
