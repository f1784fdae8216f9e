#include "kernels/cpu/copy.h"

#include <cstring>

#include "kernels/cpu/loops.h"

namespace microflex::cpu {

namespace {
template <typename D, typename S>
D convert(S v) {
  if constexpr (std::is_same_v<D, bool>) {
    return static_cast<acc_t<S>>(v) != acc_t<S>(0);
  } else if constexpr (std::is_same_v<D, Half> || std::is_same_v<D, BFloat16>) {
    return D(static_cast<float>(static_cast<acc_t<S>>(v)));
  } else {
    return static_cast<D>(static_cast<acc_t<S>>(v));
  }
}
}  // namespace

void copy_convert(void* dst, DType dst_type, const std::vector<int64_t>& dst_strides,
                  const void* src, DType src_type, const std::vector<int64_t>& src_strides,
                  const std::vector<int64_t>& sizes) {
  MF_DISPATCH_ALL(dst_type, "copy", [&] {
    using D = scalar_t;
    MF_DISPATCH_ALL(src_type, "copy", [&] {
      using S = scalar_t;
      D* d = static_cast<D*>(dst);
      const S* s = static_cast<const S*>(src);
      strided_loop<2>(sizes, {&dst_strides, &src_strides},
                      [&](const int64_t* off, int64_t n, const int64_t* st) {
                        D* o = d + off[0];
                        const S* x = s + off[1];
                        if constexpr (std::is_same_v<D, S>) {
                          if (st[0] == 1 && st[1] == 1) {
                            std::memcpy(o, x, static_cast<size_t>(n) * sizeof(D));
                            return;
                          }
                        }
                        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = convert<D>(x[i * st[1]]);
                      });
    });
  });
}

void fill(void* dst, DType type, const std::vector<int64_t>& strides,
          const std::vector<int64_t>& sizes, double value_f, int64_t value_i, bool is_float) {
  MF_DISPATCH_ALL(type, "fill_", [&] {
    scalar_t v = is_float ? convert<scalar_t>(value_f) : convert<scalar_t>(value_i);
    scalar_t* d = static_cast<scalar_t*>(dst);
    strided_loop<1>(sizes, {&strides}, [&](const int64_t* off, int64_t n, const int64_t* st) {
      for (int64_t i = 0; i < n; ++i) d[off[0] + i * st[0]] = v;
    });
  });
}

}  // namespace microflex::cpu
