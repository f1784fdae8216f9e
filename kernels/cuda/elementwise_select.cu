// where and clamp CUDA kernels, run by the elementwise engine. clamp's bounds are rounded
// to the tensor's dtype on the host exactly as the CPU kernel rounds them.
#include "kernels/cuda/elementwise.cuh"

namespace microflex::cuda {

namespace {

using ew::Kinds;

struct WhereF {
  template <typename C, typename A>
  __device__ __forceinline__ A operator()(C c, A x, A y) const {
    return c ? x : y;
  }
};

// min(max(x, lo), hi): lo > hi gives hi everywhere; a NaN input or bound gives NaN.
template <typename A>
struct ClampF {
  A lo, hi;
  bool has_lo, has_hi;
  __device__ __forceinline__ A operator()(A x) const {
    if (ew::is_nan(x)) return x;
    if (has_lo && (x < lo || ew::is_nan(lo))) x = lo;
    if (has_hi && (x > hi || ew::is_nan(hi))) x = hi;
    return x;
  }
};

// The host type the CPU kernel stores T as (for rounding the bounds the same way).
template <typename T>
struct HostOf {
  using type = T;
};
template <>
struct HostOf<__half> {
  using type = Half;
};
template <>
struct HostOf<__nv_bfloat16> {
  using type = BFloat16;
};

// A bound as the CPU kernel sees it: cast to the dtype, then to the compute type.
template <typename T>
acc<T> bound_of(double f, int64_t i) {
  using A = acc<T>;
  if constexpr (std::is_integral_v<A>) {
    return static_cast<A>(i);
  } else if constexpr (std::is_same_v<T, double>) {
    return f;
  } else {
    using H = typename HostOf<T>::type;
    return static_cast<A>(static_cast<H>(static_cast<float>(f)));
  }
}

}  // namespace

void where(int device, DType dtype, void* out, const Geometry& out_g, const bool* cond,
           const Geometry& cond_g, const void* a, const Geometry& a_g, const void* b,
           const Geometry& b_g) {
  ew::dispatch<Kinds::All>(dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    ew::launch(device, WhereF{}, static_cast<T*>(out), out_g, {cond_g, a_g, b_g}, cond,
               static_cast<const T*>(a), static_cast<const T*>(b));
  });
}

void clamp(int device, DType dtype, void* out, const Geometry& out_g, const void* a,
           const Geometry& a_g, const cpu::ClampBounds& bounds) {
  ew::dispatch<Kinds::Numeric>(dtype, "clamp", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const ClampF<acc<T>> f{bound_of<T>(bounds.lo_f, bounds.lo_i),
                           bound_of<T>(bounds.hi_f, bounds.hi_i), bounds.has_lo, bounds.has_hi};
    ew::launch(device, f, static_cast<T*>(out), out_g, {a_g}, static_cast<const T*>(a));
  });
}

}  // namespace microflex::cuda
