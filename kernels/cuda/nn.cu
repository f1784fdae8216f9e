// Fused nn kernels on the GPU. cross_entropy, layer_norm and rms_norm run one warp
// or one block per row (norm rows that fit are held in registers, Note [Rows in registers]
// in kernels/cuda/rows.cuh); the parameter gradients of the norms are a
// two-stage column reduction (Note [Norm parameter gradients]); dropout draws its mask
// from the header-only Philox of kernels/cpu/philox.h, so it equals the CPU mask.
#include <algorithm>

#include "kernels/cpu/philox.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/rows.cuh"

namespace microflex::cuda {

namespace {

template <typename A>
struct Pair {
  A a, b;
};

template <typename A>
__device__ __forceinline__ Pair<A> pair_sum(Pair<A> x, Pair<A> y) {
  return {x.a + y.a, x.b + y.b};
}

// Calls f with the target pointer typed as int32_t or int64_t.
template <typename F>
void with_target(DType target_type, const void* target, F f) {
  if (target_type == DType::Int64)
    f(static_cast<const int64_t*>(target));
  else
    f(static_cast<const int32_t*>(target));
}

// ---- cross_entropy ----

// One row of logits per group: lse, then the row's loss (written per row for "none",
// else into `partial` for ce_reduce_kernel). A bad target records its row in *bad and is
// clamped so no read goes out of the row.
template <typename T, typename I, bool kWarp>
__global__ void __launch_bounds__(1024)
    ce_forward_kernel(const T* x, const I* target, int64_t n, int64_t c, int64_t ignore_index,
                      acc<T> eps, bool per_row, T* loss, acc<T>* lse, acc<T>* partial,
                      unsigned long long* bad) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < n; row += grp.stride) {
    const T* xr = x + row * c;  // (C)
    int64_t t = static_cast<int64_t>(target[row]);
    const bool ignored = t == ignore_index;
    if (!ignored && (t < 0 || t >= c)) {
      if (grp.tid == 0) atomicMin(bad, static_cast<unsigned long long>(row));
      t = t < 0 ? 0 : c - 1;
    }
    ExpSum<A> st{-dinf<A>(), A(0)};
    row_read<T>(
        c, grp.tid, grp.nthr, [&](int64_t, A v) { expsum_step<false>(st, v); }, xr);
    st = grp.allreduce(st, [](ExpSum<A> a, ExpSum<A> b) { return expsum_combine<false>(a, b); });
    const A l = st.m + dlog(st.s);
    A smooth = 0;
    if (eps != A(0) && !ignored) {
      // -sum_j log_softmax_j as a sum of non-negative terms (no cancellation), as on the CPU.
      row_read<T>(
          c, grp.tid, grp.nthr, [&](int64_t, A v) { smooth += l - v; }, xr);
      smooth = grp.allreduce(smooth, [](A a, A b) { return a + b; });
    }
    if (grp.tid == 0) {
      lse[row] = l;
      A row_loss = 0;
      if (!ignored) {
        row_loss = (A(1) - eps) * (l - load(xr + t));
        if (eps != A(0)) row_loss += eps / static_cast<A>(c) * smooth;
      }
      if (per_row)
        store(loss + row, row_loss);
      else
        partial[row] = row_loss;
    }
  }
}

// loss[0] = sum of the row losses (in double, as on the CPU), divided by the number of
// non-ignored rows for "mean" (NaN when there are none). One block.
template <typename T, typename I>
__global__ void __launch_bounds__(1024)
    ce_reduce_kernel(const acc<T>* partial, const I* target, int64_t n, int64_t ignore_index,
                     bool mean, T* loss) {
  double total = 0;
  int64_t count = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    total += static_cast<double>(partial[i]);
    count += static_cast<int64_t>(target[i]) != ignore_index;
  }
  total = block_allreduce(total, [](double a, double b) { return a + b; });
  count = block_allreduce(count, [](int64_t a, int64_t b) { return a + b; });
  if (threadIdx.x == 0) {
    if (mean) total /= static_cast<double>(count);
    store(loss, static_cast<acc<T>>(total));
  }
}

// *scale = grad[0] (sum) or grad[0] / count (mean). One block.
template <typename T, typename I>
__global__ void __launch_bounds__(1024)
    ce_scale_kernel(const T* grad, const I* target, int64_t n, int64_t ignore_index, bool mean,
                    acc<T>* scale) {
  using A = acc<T>;
  int64_t count = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    count += static_cast<int64_t>(target[i]) != ignore_index;
  count = block_allreduce(count, [](int64_t a, int64_t b) { return a + b; });
  if (threadIdx.x == 0) {
    A s = load(grad);
    if (mean) s /= static_cast<A>(count);
    *scale = s;
  }
}

// dx[i, j] = (exp(x[i, j] - lse[i]) - onehot_smoothed[i, j]) * g_i; 0 on ignored rows.
template <typename T, typename I, bool kWarp>
__global__ void __launch_bounds__(1024)
    ce_backward_kernel(const T* grad, const T* x, const I* target, const acc<T>* lse, int64_t n,
                       int64_t c, int64_t ignore_index, acc<T> off_target, acc<T> on_target,
                       const acc<T>* scale, T* dx) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < n; row += grp.stride) {
    const int64_t t = static_cast<int64_t>(target[row]);
    T* dr = dx + row * c;  // (C)
    if (t == ignore_index) {
      row_write(dr, c, grp.tid, grp.nthr, [](int64_t) { return A(0); });
      continue;
    }
    const A gi = scale ? *scale : load(grad + row);
    const A l = lse[row];
    row_write(
        dr, c, grp.tid, grp.nthr,
        [&](int64_t j, A v) { return (dexp(v - l) - (j == t ? on_target : off_target)) * gi; },
        x + row * c);
  }
}

// ---- layer_norm / rms_norm ----

// Two passes over the row (mean, then the mean of squared deviations; the second read
// comes from cache), then the normalised output. kLayer: layer_norm, else rms_norm.
template <typename T, bool kWarp, bool kLayer>
__global__ void __launch_bounds__(1024)
    norm_forward_kernel(const T* x, const acc<T>* w, const acc<T>* b, int64_t m, int64_t d,
                        acc<T> eps, T* out, acc<T>* mean, acc<T>* rstd) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  auto add = [](A u, A v) { return u + v; };
  for (int64_t row = grp.first; row < m; row += grp.stride) {
    const T* xr = x + row * d;  // (D)
    A mu = 0;
    if constexpr (kLayer) {
      A s = 0;
      row_read<T>(
          d, grp.tid, grp.nthr, [&](int64_t, A v) { s += v; }, xr);
      mu = grp.allreduce(s, add) / static_cast<A>(d);
    }
    A ss = 0;
    row_read<T>(
        d, grp.tid, grp.nthr,
        [&](int64_t, A v) {
          const A dv = v - mu;
          ss += dv * dv;
        },
        xr);
    ss = grp.allreduce(ss, add);
    const A r = A(1) / dsqrt(ss / static_cast<A>(d) + eps);
    if (grp.tid == 0) {
      if constexpr (kLayer) mean[row] = mu;
      rstd[row] = r;
    }
    row_write(
        out + row * d, d, grp.tid, grp.nthr,
        [&](int64_t j, A v) {
          A y = (v - mu) * r;
          if (w) y *= w[j];
          if (b) y += b[j];
          return y;
        },
        xr);
  }
}

// The same computation with the row held in registers: one read of x, the mean and the
// mean of squared deviations from registers (two passes, as the CPU kernel), one write.
template <typename T, bool kWarp, bool kLayer>
__global__ void __launch_bounds__(kRegRowMaxThreads)
    norm_forward_regs_kernel(const T* x, const acc<T>* w, const acc<T>* b, int64_t m, int64_t d,
                             acc<T> eps, T* out, acc<T>* mean, acc<T>* rstd) {
  using A = acc<T>;
  constexpr int kElems = RegRow<T>::kElems;
  const RowGroup<kWarp> grp;
  auto add = [](A u, A v) { return u + v; };
  const int n = static_cast<int>(d);
  for (int64_t row = grp.first; row < m; row += grp.stride) {
    RegRow<T> rr;  // (D) in registers, 0 past the row
    rr.load(x + row * d, n, grp.tid, grp.nthr, A(0));
    A mu = 0;
    if constexpr (kLayer) {
      A s = 0;
#pragma unroll
      for (int i = 0; i < kElems; ++i) s += rr.v[i];
      mu = grp.allreduce(s, add) / static_cast<A>(d);
    }
    A ss = 0;
#pragma unroll
    for (int i = 0; i < kElems; ++i) {
      const A dv = rr.v[i] - mu;
      if (RegRow<T>::index(i, grp.tid, grp.nthr) < n) ss += dv * dv;
    }
    ss = grp.allreduce(ss, add);
    const A r = A(1) / dsqrt(ss / static_cast<A>(d) + eps);
    if (grp.tid == 0) {
      if constexpr (kLayer) mean[row] = mu;
      rstd[row] = r;
    }
    constexpr int V = RegRow<T>::V;
    rr.store_vectors(out + row * d, n, grp.tid, grp.nthr, [&](int j0, A(&y)[V]) {
      A p[V];
#pragma unroll
      for (int u = 0; u < V; ++u) y[u] = (y[u] - mu) * r;
      if (w) {
        RegRow<T>::load_acc(w + j0, p);
#pragma unroll
        for (int u = 0; u < V; ++u) y[u] *= p[u];
      }
      if (b) {
        RegRow<T>::load_acc(b + j0, p);
#pragma unroll
        for (int u = 0; u < V; ++u) y[u] += p[u];
      }
    });
  }
}

// dx per row (Note [Norm backward] in kernels/cpu/nn.cpp):
//   layer_norm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//   rms_norm:   dx = rstd * (g - xhat * mean(g * xhat))
template <typename T, bool kWarp, bool kLayer>
__global__ void __launch_bounds__(1024)
    norm_backward_kernel(const T* dout, const T* x, const acc<T>* mean, const acc<T>* rstd,
                         const acc<T>* w, int64_t m, int64_t d, T* dx) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < m; row += grp.stride) {
    const T* gr = dout + row * d;  // (D)
    const T* xr = x + row * d;     // (D)
    const A mu = kLayer ? mean[row] : A(0);
    const A rs = rstd[row];
    Pair<A> p{A(0), A(0)};  // sum g, sum g * xhat
    row_read<T>(
        d, grp.tid, grp.nthr,
        [&](int64_t j, A go, A xv) {
          const A xhat = (xv - mu) * rs;
          const A g = w ? go * w[j] : go;
          p.a += g;
          p.b += g * xhat;
        },
        gr, xr);
    p = grp.allreduce(p, pair_sum<A>);
    const A mean_g = p.a / static_cast<A>(d), mean_gx = p.b / static_cast<A>(d);
    row_write(
        dx + row * d, d, grp.tid, grp.nthr,
        [&](int64_t j, A go, A xv) {
          const A xhat = (xv - mu) * rs;
          const A g = w ? go * w[j] : go;
          return kLayer ? rs * (g - mean_g - xhat * mean_gx) : rs * (g - xhat * mean_gx);
        },
        gr, xr);
  }
}

// Note [Norm parameter gradients]
// dweight[j] = sum_i dout[i, j] * xhat[i, j] and dbias[j] = sum_i dout[i, j] need a sum
// down each column. Stage 1: block (column tile of 32, chunk of rows) with 32 x 8 threads
// sums its chunk into partial[chunk, j]; stage 2 sums the chunks of each column in order.
// Deterministic, no atomics.
constexpr int kColTile = 32;
constexpr int kColRows = 8;

template <typename T>
__global__ void norm_param_partial_kernel(const T* dout, const T* x, const acc<T>* mean,
                                          const acc<T>* rstd, int64_t m, int64_t d,
                                          int64_t rows_per_chunk, acc<T>* pdw, acc<T>* pdb) {
  using A = acc<T>;
  __shared__ A sdw[kColRows][kColTile + 1];
  __shared__ A sdb[kColRows][kColTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = int64_t(blockIdx.x) * kColTile + tx;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < m ? r0 + rows_per_chunk : m;
  A dw = 0, db = 0;
  if (col < d) {
    for (int64_t row = r0 + ty; row < r1; row += kColRows) {
      const A go = load(dout + row * d + col);
      const A xhat = (load(x + row * d + col) - (mean ? mean[row] : A(0))) * rstd[row];
      dw += go * xhat;
      db += go;
    }
  }
  sdw[ty][tx] = dw;
  sdb[ty][tx] = db;
  __syncthreads();
  if (ty == 0 && col < d) {
    for (int k = 1; k < kColRows; ++k) {
      dw += sdw[k][tx];
      db += sdb[k][tx];
    }
    pdw[blockIdx.y * d + col] = dw;
    if (pdb) pdb[blockIdx.y * d + col] = db;
  }
}

template <typename A>
__global__ void column_sum_kernel(const A* partial, int64_t chunks, int64_t d, A* out) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= d) return;
  A s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * d + col];
  out[col] = s;
}

// dweight (and dbias when non-null) of layer_norm (mean non-null) or rms_norm.
template <typename T>
void norm_param_grads(int device, cudaStream_t s, const T* dout, const T* x, const acc<T>* mean,
                      const acc<T>* rstd, int64_t m, int64_t d, acc<T>* dw, acc<T>* db) {
  using A = acc<T>;
  if (d == 0) return;
  const int64_t tiles = ceil_div(d, kColTile);
  int64_t chunks = 0, rows_per_chunk = 1;
  if (m > 0) {
    const int64_t want = std::max<int64_t>(1, ceil_div(4 * sm_count(device), tiles));
    chunks = std::min(want, ceil_div(m, kColRows));
    rows_per_chunk = ceil_div(m, chunks);
    chunks = ceil_div(m, rows_per_chunk);
  }
  Workspace ws(device, 2 * chunks * d * static_cast<int64_t>(sizeof(A)));
  A* pdw = ws.as<A>();
  A* pdb = db ? pdw + chunks * d : nullptr;
  if (chunks > 0) {
    norm_param_partial_kernel<T>
        <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks)),
           dim3(kColTile, kColRows), 0, s>>>(dout, x, mean, rstd, m, d, rows_per_chunk, pdw, pdb);
    MF_CUDA_CHECK(cudaGetLastError());
  }
  const int threads = 256;
  column_sum_kernel<A>
      <<<static_cast<unsigned>(ceil_div(d, threads)), threads, 0, s>>>(pdw, chunks, d, dw);
  MF_CUDA_CHECK(cudaGetLastError());
  if (db) {
    column_sum_kernel<A>
        <<<static_cast<unsigned>(ceil_div(d, threads)), threads, 0, s>>>(pdb, chunks, d, db);
    MF_CUDA_CHECK(cudaGetLastError());
  }
}

// ---- dropout ----

__global__ void dropout_keep_kernel(const int64_t* ids, int64_t n, double p, uint64_t seed,
                                    uint64_t offset, bool* keep) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    keep[i] = philox::dropout_keep(seed, offset, static_cast<uint64_t>(ids[i]), p);
}

template <typename T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, double p, uint64_t seed,
                               uint64_t offset, acc<T> scale) {
  using A = acc<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = philox::dropout_keep(seed, offset, static_cast<uint64_t>(i), p);
    store(out + i, keep ? load(x + i) * scale : A(0));
  }
}

}  // namespace

BadTarget cross_entropy_forward(int device, DType type, const void* logits, DType target_type,
                                const void* target, int64_t n, int64_t c, int64_t ignore_index,
                                double label_smoothing, cpu::LossReduction reduction, void* loss,
                                void* lse) {
  BadTarget result;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const bool per_row = reduction == cpu::LossReduction::None;
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    using A = acc<T>;
    with_target(target_type, target, [&](const auto* tgt) {
      using I = std::remove_const_t<std::remove_pointer_t<decltype(tgt)>>;
      // [flag | partial row losses (N)]
      Workspace ws(device, 16 + (per_row ? 0 : n) * static_cast<int64_t>(sizeof(A)));
      auto* bad = ws.as<unsigned long long>();
      A* partial = per_row ? nullptr : reinterpret_cast<A*>(ws.as<char>() + 16);
      MF_CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(unsigned long long), s));
      launch_rows(n, c, [&](auto warp, dim3 grid, dim3 block) {
        ce_forward_kernel<T, I, decltype(warp)::value><<<grid, block, 0, s>>>(
            static_cast<const T*>(logits), tgt, n, c, ignore_index, static_cast<A>(label_smoothing),
            per_row, static_cast<T*>(loss), static_cast<A*>(lse), partial, bad);
      });
      MF_CUDA_CHECK(cudaGetLastError());
      if (!per_row) {
        ce_reduce_kernel<T, I><<<1, 1024, 0, s>>>(partial, tgt, n, ignore_index,
                                                  reduction == cpu::LossReduction::Mean,
                                                  static_cast<T*>(loss));
        MF_CUDA_CHECK(cudaGetLastError());
      }
      // Target values are data: the flag is read back here (a stream sync) so the caller
      // can raise the same error as the CPU path.
      unsigned long long first_bad = 0;
      MF_CUDA_CHECK(cudaMemcpyAsync(&first_bad, bad, sizeof(first_bad), cudaMemcpyDeviceToHost, s));
      MF_CUDA_CHECK(cudaStreamSynchronize(s));
      if (first_bad < static_cast<unsigned long long>(n)) {
        I v = 0;
        MF_CUDA_CHECK(cudaMemcpyAsync(&v, tgt + first_bad, sizeof(I), cudaMemcpyDeviceToHost, s));
        MF_CUDA_CHECK(cudaStreamSynchronize(s));
        result.row = static_cast<int64_t>(first_bad);
        result.value = static_cast<int64_t>(v);
      }
    });
  });
  return result;
}

void cross_entropy_backward(int device, DType type, const void* grad, const void* logits,
                            DType target_type, const void* target, const void* lse, int64_t n,
                            int64_t c, int64_t ignore_index, double label_smoothing,
                            cpu::LossReduction reduction, void* dlogits) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const bool per_row = reduction == cpu::LossReduction::None;
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    using A = acc<T>;
    const A eps = static_cast<A>(label_smoothing);
    const A off_target = eps / static_cast<A>(c);  // smoothed one-hot away from the target
    const A on_target = A(1) - eps + off_target;
    with_target(target_type, target, [&](const auto* tgt) {
      using I = std::remove_const_t<std::remove_pointer_t<decltype(tgt)>>;
      Workspace ws(device, per_row ? 0 : static_cast<int64_t>(sizeof(A)));
      A* scale = ws.as<A>();
      if (!per_row) {
        ce_scale_kernel<T, I><<<1, 1024, 0, s>>>(static_cast<const T*>(grad), tgt, n, ignore_index,
                                                 reduction == cpu::LossReduction::Mean, scale);
        MF_CUDA_CHECK(cudaGetLastError());
      }
      launch_rows(n, c, [&](auto warp, dim3 grid, dim3 block) {
        ce_backward_kernel<T, I, decltype(warp)::value>
            <<<grid, block, 0, s>>>(static_cast<const T*>(grad), static_cast<const T*>(logits), tgt,
                                    static_cast<const A*>(lse), n, c, ignore_index, off_target,
                                    on_target, scale, static_cast<T*>(dlogits));
      });
      MF_CUDA_CHECK(cudaGetLastError());
    });
  });
}

namespace {

template <bool kLayer>
void norm_forward(int device, DType type, const void* x, const void* weight, const void* bias,
                  int64_t m, int64_t d, double eps, void* out, void* mean, void* rstd) {
  if (m == 0 || d == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    using A = acc<T>;
    if (reg_rows_apply<T>(d, {x, out, weight, bias})) {
      launch_reg_rows<T>(m, d, [&](auto warp, dim3 grid, dim3 block) {
        norm_forward_regs_kernel<T, decltype(warp)::value, kLayer><<<grid, block, 0, s>>>(
            static_cast<const T*>(x), static_cast<const A*>(weight), static_cast<const A*>(bias), m,
            d, static_cast<A>(eps), static_cast<T*>(out), static_cast<A*>(mean),
            static_cast<A*>(rstd));
      });
      return;
    }
    launch_rows(m, d, [&](auto warp, dim3 grid, dim3 block) {
      norm_forward_kernel<T, decltype(warp)::value, kLayer><<<grid, block, 0, s>>>(
          static_cast<const T*>(x), static_cast<const A*>(weight), static_cast<const A*>(bias), m,
          d, static_cast<A>(eps), static_cast<T*>(out), static_cast<A*>(mean),
          static_cast<A*>(rstd));
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

template <bool kLayer>
void norm_backward(int device, DType type, const void* dout, const void* x, const void* mean,
                   const void* rstd, const void* weight, int64_t m, int64_t d, void* dx,
                   void* dweight, void* dbias) {
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    using A = acc<T>;
    const T* gp = static_cast<const T*>(dout);
    const T* xp = static_cast<const T*>(x);
    const A* mp = static_cast<const A*>(mean);
    const A* rp = static_cast<const A*>(rstd);
    if (d > 0) {
      launch_rows(m, d, [&](auto warp, dim3 grid, dim3 block) {
        norm_backward_kernel<T, decltype(warp)::value, kLayer><<<grid, block, 0, s>>>(
            gp, xp, mp, rp, static_cast<const A*>(weight), m, d, static_cast<T*>(dx));
      });
      MF_CUDA_CHECK(cudaGetLastError());
    }
    norm_param_grads<T>(device, s, gp, xp, mp, rp, m, d, static_cast<A*>(dweight),
                        static_cast<A*>(dbias));
  });
}

}  // namespace

void layer_norm_forward(int device, DType type, const void* x, const void* weight, const void* bias,
                        int64_t m, int64_t d, double eps, void* out, void* mean, void* rstd) {
  norm_forward<true>(device, type, x, weight, bias, m, d, eps, out, mean, rstd);
}

void layer_norm_backward(int device, DType type, const void* dout, const void* x, const void* mean,
                         const void* rstd, const void* weight, int64_t m, int64_t d, void* dx,
                         void* dweight, void* dbias) {
  norm_backward<true>(device, type, dout, x, mean, rstd, weight, m, d, dx, dweight, dbias);
}

void rms_norm_forward(int device, DType type, const void* x, const void* weight, int64_t m,
                      int64_t d, double eps, void* out, void* rstd) {
  norm_forward<false>(device, type, x, weight, nullptr, m, d, eps, out, nullptr, rstd);
}

void rms_norm_backward(int device, DType type, const void* dout, const void* x, const void* rstd,
                       const void* weight, int64_t m, int64_t d, void* dx, void* dweight) {
  norm_backward<false>(device, type, dout, x, nullptr, rstd, weight, m, d, dx, dweight, nullptr);
}

void dropout_keep(int device, const int64_t* ids, int64_t n, double p, uint64_t seed,
                  uint64_t offset, bool* keep) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int threads = 256;
  dropout_keep_kernel<<<blocks_for(n, threads), threads, 0, s>>>(ids, n, p, seed, offset, keep);
  MF_CUDA_CHECK(cudaGetLastError());
}

void dropout_apply(int device, DType type, const void* x, int64_t n, double p, uint64_t seed,
                   uint64_t offset, void* out) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int threads = 256;
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    using A = acc<T>;
    // p = 1 keeps nothing; the scale is then never used (and would be inf).
    const A scale = p < 1.0 ? static_cast<A>(1.0 / (1.0 - p)) : A(0);
    dropout_kernel<T><<<blocks_for(n, threads), threads, 0, s>>>(
        static_cast<const T*>(x), static_cast<T*>(out), n, p, seed, offset, scale);
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
