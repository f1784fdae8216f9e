// softmax / log_softmax on the GPU: one warp (R <= 1024) or one block per row. The
// forward reads the row once for the online (max, sum) state (Note [Online softmax] in
// kernels/cuda/rows.cuh) and once more to write; the backward reads g and y once for the
// row sum and once more to write dx.
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/softmax.h"

namespace microflex::cuda {

namespace {

template <typename T, bool kWarp, bool kLog>
__global__ void __launch_bounds__(1024)
    softmax_forward_kernel(const T* x, T* y, int64_t outer, int64_t r) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    const T* xr = x + row * r;  // (R)
    ExpSum<A> st{-dinf<A>(), A(0)};
    row_read<T>(
        r, grp.tid, grp.nthr, [&](int64_t, A v) { expsum_step<false>(st, v); }, xr);
    st = grp.allreduce(st, [](ExpSum<A> a, ExpSum<A> b) { return expsum_combine<false>(a, b); });
    // A row of all -inf (m = -inf): softmax 0, log_softmax -inf (Note [Safe softmax]).
    const bool dead = st.m == -dinf<A>();
    const A m = st.m;
    const A norm = kLog ? dlog(st.s) : A(1) / st.s;
    row_write(
        y + row * r, r, grp.tid, grp.nthr,
        [&](int64_t, A v) -> A {
          if (dead) return kLog ? -dinf<A>() : A(0);
          return kLog ? (v - m) - norm : dexp(v - m) * norm;
        },
        xr);
  }
}

template <typename T, bool kWarp, bool kLog>
__global__ void __launch_bounds__(1024)
    softmax_backward_kernel(const T* g, const T* y, T* dx, int64_t outer, int64_t r) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    const T* gr = g + row * r;  // (R)
    const T* yr = y + row * r;  // (R)
    // softmax: s = sum_R(g * y); log_softmax: s = sum_R(g).
    A s = 0;
    row_read<T>(
        r, grp.tid, grp.nthr, [&](int64_t, A gv, A yv) { s += kLog ? gv : gv * yv; }, gr, yr);
    s = grp.allreduce(s, [](A a, A b) { return a + b; });
    row_write(
        dx + row * r, r, grp.tid, grp.nthr,
        [&](int64_t, A gv, A yv) { return kLog ? gv - dexp(yv) * s : yv * (gv - s); }, gr, yr);
  }
}

}  // namespace

void softmax_forward(int device, const void* x, void* y, DType type, int64_t outer, int64_t r,
                     bool log) {
  if (outer == 0 || r == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
      constexpr bool kW = decltype(warp)::value;
      if (log)
        softmax_forward_kernel<T, kW, true>
            <<<grid, block, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), outer, r);
      else
        softmax_forward_kernel<T, kW, false>
            <<<grid, block, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), outer, r);
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void softmax_backward(int device, const void* g, const void* y, void* dx, DType type, int64_t outer,
                      int64_t r, bool log) {
  if (outer == 0 || r == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    const T* gp = static_cast<const T*>(g);
    const T* yp = static_cast<const T*>(y);
    T* dp = static_cast<T*>(dx);
    launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
      constexpr bool kW = decltype(warp)::value;
      if (log)
        softmax_backward_kernel<T, kW, true><<<grid, block, 0, s>>>(gp, yp, dp, outer, r);
      else
        softmax_backward_kernel<T, kW, false><<<grid, block, 0, s>>>(gp, yp, dp, outer, r);
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
