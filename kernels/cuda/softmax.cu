// softmax / log_softmax on the GPU: one warp or one block per row. Forward rows that fit
// in registers (Note [Rows in registers] in kernels/cuda/rows.cuh) are read from memory
// once; longer rows are read once for the online (max, sum) state (Note [Online softmax])
// and once more to write. The backward reads g and y once for the row sum and once more
// to write dx.
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

// The row lives in registers: max, then sum of exp(x - max) from registers, then the
// write. Matches the CPU kernel in the corners (Note [Safe softmax]): NaN is skipped by the
// max and makes the sum (so every output) NaN; a row with no element above -inf has max
// -inf and gives softmax 0, log_softmax -inf.
template <typename T, bool kWarp, bool kLog>
__global__ void __launch_bounds__(kRegRowMaxThreads)
    softmax_forward_regs_kernel(const T* x, T* y, int64_t outer, int64_t r) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  const int n = static_cast<int>(r);
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    RegRow<T> rr;  // (R) in registers, -inf past the row
    rr.load(x + row * r, n, grp.tid, grp.nthr, -dinf<A>());
    A m = -dinf<A>();
#pragma unroll
    for (int i = 0; i < RegRow<T>::kElems; ++i) m = rr.v[i] > m ? rr.v[i] : m;
    m = grp.allreduce(m, [](A a, A b) { return b > a ? b : a; });
    if (m == -dinf<A>()) {  // the same for the whole group
      rr.store(y + row * r, n, grp.tid, grp.nthr, [](A) { return kLog ? -dinf<A>() : A(0); });
      continue;
    }
    A s = 0;
#pragma unroll
    for (int i = 0; i < RegRow<T>::kElems; ++i) {
      const A e = dexp(rr.v[i] - m);  // 0 for the -inf padding
      s += e;
      if (!kLog) rr.v[i] = e;
    }
    s = grp.allreduce(s, [](A a, A b) { return a + b; });
    if constexpr (kLog) {
      const A ls = dlog(s);
      rr.store(y + row * r, n, grp.tid, grp.nthr, [&](A v) { return (v - m) - ls; });
    } else {
      const A norm = A(1) / s;
      rr.store(y + row * r, n, grp.tid, grp.nthr, [&](A e) { return e * norm; });
    }
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
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    if (reg_rows_apply<T>(r, {x, y})) {
      launch_reg_rows<T>(outer, r, [&](auto warp, dim3 grid, dim3 block) {
        constexpr bool kW = decltype(warp)::value;
        if (log)
          softmax_forward_regs_kernel<T, kW, true><<<grid, block, 0, s>>>(xp, yp, outer, r);
        else
          softmax_forward_regs_kernel<T, kW, false><<<grid, block, 0, s>>>(xp, yp, outer, r);
      });
      return;
    }
    launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
      constexpr bool kW = decltype(warp)::value;
      if (log)
        softmax_forward_kernel<T, kW, true><<<grid, block, 0, s>>>(xp, yp, outer, r);
      else
        softmax_forward_kernel<T, kW, false><<<grid, block, 0, s>>>(xp, yp, outer, r);
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
