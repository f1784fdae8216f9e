// CPU kernels behind index, gather, index_select, embedding and their shared backward:
// row offsets from broadcast index arrays, then byte copies (gather) or ordered
// accumulation (scatter-add).
#include "kernels/cpu/indexing.h"

#include <cstring>

namespace microflex::cpu {

std::vector<int64_t> index_rows(const IndexList& idx, const std::vector<int64_t>& src_sizes,
                                const char* op, bool wrap_negative) {
  const size_t k = idx.data.size(), nd = idx.shape.size();
  MF_INTERNAL_ASSERT(src_sizes.size() == k && idx.strides.size() == k);
  // Rows of the source per unit of index j.
  std::vector<int64_t> row_stride(k, 1);
  for (size_t j = k; j-- > 1;) row_stride[j - 1] = row_stride[j] * src_sizes[j];
  int64_t total = 1;
  for (int64_t s : idx.shape) total *= s;
  std::vector<int64_t> rows(static_cast<size_t>(total));
  std::vector<int64_t> pos(nd, 0);
  std::vector<int64_t> off(k, 0);  // element offset of position `pos` in each index array
  for (int64_t p = 0; p < total; ++p) {
    int64_t r = 0;
    for (size_t j = 0; j < k; ++j) {
      int64_t v = idx.data[j][off[j]];
      const int64_t n = src_sizes[j];
      MF_CHECK(v >= (wrap_negative ? -n : 0) && v < n, op, ": index ", v,
               " is out of bounds for dim ", j, " with size ", n);
      if (v < 0) v += n;
      r += v * row_stride[j];
    }
    rows[static_cast<size_t>(p)] = r;
    for (size_t d = nd; d-- > 0;) {
      for (size_t j = 0; j < k; ++j) off[j] += idx.strides[j][d];
      if (++pos[d] < idx.shape[d]) break;
      for (size_t j = 0; j < k; ++j) off[j] -= idx.strides[j][d] * idx.shape[d];
      pos[d] = 0;
    }
  }
  return rows;
}

void index_gather(void* out, const void* src, const std::vector<int64_t>& rows, int64_t inner,
                  int64_t itemsize) {
  const size_t row_bytes = static_cast<size_t>(inner * itemsize);
  char* o = static_cast<char*>(out);
  const char* s = static_cast<const char*>(src);
  for (size_t p = 0; p < rows.size(); ++p)
    std::memcpy(o + p * row_bytes, s + static_cast<size_t>(rows[p]) * row_bytes, row_bytes);
}

namespace {
template <typename T>
void scatter_add_typed(T* dst, const T* grad, const std::vector<int64_t>& rows, int64_t inner) {
  for (size_t p = 0; p < rows.size(); ++p) {
    T* d = dst + rows[p] * inner;
    const T* g = grad + static_cast<int64_t>(p) * inner;
    for (int64_t i = 0; i < inner; ++i) d[i] += g[i];
  }
}
}  // namespace

void index_scatter_add(DType dtype, void* dst, const void* grad, const std::vector<int64_t>& rows,
                       int64_t inner) {
  switch (dtype) {
    case DType::Float32:
      return scatter_add_typed(static_cast<float*>(dst), static_cast<const float*>(grad), rows,
                               inner);
    case DType::Float64:
      return scatter_add_typed(static_cast<double*>(dst), static_cast<const double*>(grad), rows,
                               inner);
    case DType::Int32:
      return scatter_add_typed(static_cast<int32_t*>(dst), static_cast<const int32_t*>(grad), rows,
                               inner);
    case DType::Int64:
      return scatter_add_typed(static_cast<int64_t*>(dst), static_cast<const int64_t*>(grad), rows,
                               inner);
    default:
      MF_INTERNAL_ASSERT(false, "index_scatter_add: unsupported dtype ", dtype_name(dtype));
  }
}

}  // namespace microflex::cpu
