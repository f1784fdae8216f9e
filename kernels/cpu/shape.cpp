// CPU kernels for tril/triu (byte copies with a zeroed band) and one_hot.
#include "kernels/cpu/shape.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace microflex::cpu {

void triangle(void* dst, const void* src, int64_t itemsize, int64_t batch, int64_t rows,
              int64_t cols, int64_t diagonal, bool lower) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  const size_t row_bytes = static_cast<size_t>(cols * itemsize);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      const size_t off = static_cast<size_t>((b * rows + r) * cols * itemsize);
      std::memcpy(d + off, s + off, row_bytes);
      // Columns [lo, hi) of this row are zeroed.
      const int64_t edge = std::clamp<int64_t>(r + diagonal + (lower ? 1 : 0), 0, cols);
      const int64_t lo = lower ? edge : 0, hi = lower ? cols : edge;
      if (hi > lo)
        std::memset(d + off + static_cast<size_t>(lo * itemsize), 0,
                    static_cast<size_t>((hi - lo) * itemsize));
    }
  }
}

void one_hot(int64_t* out, const int64_t* ids, int64_t n, int64_t num_classes) {
  std::fill(out, out + n * num_classes, int64_t(0));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = ids[i];
    MF_CHECK(c >= 0, "one_hot: class id ", c, " is negative");
    MF_CHECK(c < num_classes, "one_hot: class id ", c, " is out of range for num_classes ",
             num_classes);
    out[i * num_classes + c] = 1;
  }
}

}  // namespace microflex::cpu
