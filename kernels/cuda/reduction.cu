// Row reductions on the GPU. Every reduction is an Op (State, init, step, combine,
// write) run by one generic kernel: a warp or a block per row, or, for few long rows, each
// row split over several blocks whose partial states a second kernel combines
// (Note [Split rows]).
#include "kernels/cuda/reduction.h"
#include "kernels/cuda/rows.cuh"

namespace microflex::cuda {

namespace {

template <typename A>
__device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>)
    return v != v;
  else
    return false;
}

// ---- Ops: State is a trivially copyable struct of 32-bit words; init() is the identity
// of combine(). ----

template <typename T, typename S, typename O>
struct SumOp {
  using State = S;
  O* out;
  __device__ State init() const { return S(0); }
  __device__ void step(State& st, acc<T> v, int64_t) const { st += static_cast<S>(v); }
  __device__ State combine(State a, State b) const { return a + b; }
  __device__ void write(int64_t row, State st, int64_t) const { store(out + row, st); }
};

template <typename T>
struct MeanOp {
  using A = acc<T>;
  using State = A;
  T* out;
  __device__ State init() const { return A(0); }
  __device__ void step(State& st, A v, int64_t) const { st += v; }
  __device__ State combine(State a, State b) const { return a + b; }
  // An empty row gives 0 / 0 = NaN.
  __device__ void write(int64_t row, State st, int64_t r) const {
    store(out + row, st / static_cast<A>(r));
  }
};

template <typename A>
struct ValueIndex {
  A v;
  int64_t i;  // -1: no element yet
};

template <typename T>
struct MinMaxOp {
  using A = acc<T>;
  using State = ValueIndex<A>;
  bool is_max;
  T* values;
  int64_t* indices;
  // NaN beats every number; a NaN best is never replaced.
  __device__ bool beats(A x, A best) const {
    if (is_nan(best)) return false;
    if (is_nan(x)) return true;
    return is_max ? x > best : x < best;
  }
  __device__ State init() const { return {A(0), -1}; }
  // Each thread sees its elements in increasing order: a tie keeps the earlier one.
  __device__ void step(State& st, A v, int64_t j) const {
    if (st.i < 0 || beats(v, st.v)) st = {v, j};
  }
  __device__ State combine(State a, State b) const {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    if (beats(b.v, a.v)) return b;
    if (beats(a.v, b.v)) return a;
    return b.i < a.i ? b : a;  // equal (or both NaN): the first occurrence
  }
  __device__ void write(int64_t row, State st, int64_t) const {
    if (values) store(values + row, st.v);
    if (indices) indices[row] = st.i;
  }
};

template <typename T>
struct LogSumExpOp {
  using A = acc<T>;
  using State = ExpSum<A>;
  T* out;
  __device__ State init() const { return {-dinf<A>(), A(0)}; }
  __device__ void step(State& st, A v, int64_t) const { expsum_step<true>(st, v); }
  __device__ State combine(State a, State b) const { return expsum_combine<true>(a, b); }
  // All -inf: -inf + log(0) = -inf; a +inf max: +inf + log(count) = +inf.
  __device__ void write(int64_t row, State st, int64_t) const {
    store(out + row, st.m + dlog(st.s));
  }
};

template <typename A>
struct Welford {
  A mean;
  A m2;  // sum of squared deviations from mean
  int64_t n;
};

template <typename T>
struct VarOp {
  using A = acc<T>;
  using State = Welford<A>;
  T* out;
  double correction;
  __device__ State init() const { return {A(0), A(0), 0}; }
  __device__ void step(State& st, A v, int64_t) const {
    ++st.n;
    const A d = v - st.mean;
    st.mean += d / static_cast<A>(st.n);
    st.m2 += d * (v - st.mean);
  }
  // Chan et al.'s parallel merge.
  __device__ State combine(State a, State b) const {
    if (a.n == 0) return b;
    if (b.n == 0) return a;
    const int64_t n = a.n + b.n;
    const A fa = static_cast<A>(a.n), fb = static_cast<A>(b.n), fn = static_cast<A>(n);
    const A d = b.mean - a.mean;
    return {a.mean + d * (fb / fn), a.m2 + b.m2 + d * d * (fa * fb / fn), n};
  }
  // An empty row, or R <= correction, gives 0 / 0 = NaN or x / 0 as on the CPU.
  __device__ void write(int64_t row, State st, int64_t r) const {
    const double denom = fmax(0.0, static_cast<double>(r) - correction);
    store(out + row, st.m2 / static_cast<A>(denom));
  }
};

// Note [Split rows]
// A block per row leaves most of the GPU idle when there are few long rows (a full
// reduction is one row). Then each row is cut into `splits` chunks, item g = (row, chunk)
// reduces its chunk into partial[g], and combine_partials merges a row's partial states
// in chunk order. With splits = 1 the item writes its row directly.
template <typename T, typename Op, bool kWarp>
__global__ void __launch_bounds__(1024)
    reduce_rows_kernel(const T* in, int64_t items, int64_t splits, int64_t r, int64_t chunk, Op op,
                       typename Op::State* partial) {
  using State = typename Op::State;
  const RowGroup<kWarp> grp;
  for (int64_t g = grp.first; g < items; g += grp.stride) {
    const int64_t row = g / splits;
    const int64_t begin = (g % splits) * chunk;
    const int64_t len = begin + chunk < r ? chunk : r - begin;
    State st = op.init();
    row_read<T>(
        len, grp.tid, grp.nthr, [&](int64_t j, acc<T> v) { op.step(st, v, begin + j); },
        in + row * r + begin);
    st = grp.allreduce(st, [&](State a, State b) { return op.combine(a, b); });
    if (grp.tid == 0) {
      if (partial)
        partial[g] = st;
      else
        op.write(row, st, r);
    }
  }
}

// One warp per row merges the row's `splits` partial states.
template <typename Op>
__global__ void combine_partials_kernel(const typename Op::State* partial, int64_t outer,
                                        int64_t splits, int64_t r, Op op) {
  using State = typename Op::State;
  const RowGroup<true> grp;
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    State st = op.init();
    for (int64_t k = grp.tid; k < splits; k += grp.nthr)
      st = op.combine(st, partial[row * splits + k]);
    st = grp.allreduce(st, [&](State a, State b) { return op.combine(a, b); });
    if (grp.tid == 0) op.write(row, st, r);
  }
}

// Rows at least this long are split when there are few of them.
constexpr int64_t kSplitMinRow = 16384;
constexpr int64_t kSplitChunk = 8192;

template <typename T, typename Op>
void reduce_rows(int device, const void* in, int64_t outer, int64_t r, const Op& op) {
  using State = typename Op::State;
  if (outer == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const T* x = static_cast<const T*>(in);
  const int sms = sm_count(device);
  int64_t splits = 1;
  if (r >= kSplitMinRow && outer < 2 * sms)
    splits = std::min(ceil_div(r, kSplitChunk), ceil_div(4 * sms, outer));
  if (splits > 1) {
    // Chunks of a multiple of 16 elements keep every chunk's vector alignment.
    const int64_t chunk = ceil_div(ceil_div(r, splits), 16) * 16;
    splits = ceil_div(r, chunk);
    Workspace ws(device, outer * splits * static_cast<int64_t>(sizeof(State)));
    const int64_t items = outer * splits;
    reduce_rows_kernel<T, Op, false><<<static_cast<unsigned>(items), 512, 0, s>>>(
        x, items, splits, r, chunk, op, ws.as<State>());
    MF_CUDA_CHECK(cudaGetLastError());
    combine_partials_kernel<Op>
        <<<static_cast<unsigned>(ceil_div(outer, kWarpsPerBlock)), kWarpSize * kWarpsPerBlock, 0,
           s>>>(ws.as<State>(), outer, splits, r, op);
    MF_CUDA_CHECK(cudaGetLastError());
    return;
  }
  launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
    reduce_rows_kernel<T, Op, decltype(warp)::value>
        <<<grid, block, 0, s>>>(x, outer, 1, r, r, op, static_cast<State*>(nullptr));
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

template <typename T, bool kWarp>
__global__ void __launch_bounds__(1024)
    amax_backward_kernel(const T* g, const T* x, const T* y, T* dx, int64_t outer, int64_t r) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    const A yv = load(y + row);
    auto hit = [yv](A v) { return v == yv || (is_nan(v) && is_nan(yv)); };
    int64_t count = 0;
    row_read<T>(
        r, grp.tid, grp.nthr, [&](int64_t, A v) { count += hit(v); }, x + row * r);
    count = grp.allreduce(count, [](int64_t a, int64_t b) { return a + b; });
    const A share = count ? load(g + row) / static_cast<A>(count) : A(0);
    row_write(
        dx + row * r, r, grp.tid, grp.nthr, [&](int64_t, A v) { return hit(v) ? share : A(0); },
        x + row * r);
  }
}

template <typename T, bool kWarp>
__global__ void __launch_bounds__(1024)
    logsumexp_backward_kernel(const T* g, const T* x, const T* lse, T* dx, int64_t outer,
                              int64_t r) {
  using A = acc<T>;
  const RowGroup<kWarp> grp;
  for (int64_t row = grp.first; row < outer; row += grp.stride) {
    const A l = load(lse + row);
    const A gv = load(g + row);
    // A row of -inf has no mass: gradient 0 instead of exp(-inf - -inf) = NaN.
    const bool dead = l == -dinf<A>();
    row_write(
        dx + row * r, r, grp.tid, grp.nthr,
        [&](int64_t, A v) { return dead ? A(0) : gv * dexp(v - l); }, x + row * r);
  }
}

template <typename T>
__global__ void scatter_selected_kernel(const T* g, const int64_t* idx, T* dx, int64_t outer,
                                        int64_t r, int64_t inner) {
  const int64_t n = outer * r * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner;
    const int64_t j = (e / inner) % r;
    const int64_t o = e / (inner * r);
    const int64_t k = o * inner + i;
    store(dx + e, idx[k] == j ? load(g + k) : acc<T>(0));
  }
}

// Note [Column sums]
// A sum over leading or middle dims of a contiguous tensor, [outer, R, inner] -> [outer,
// inner] (a bias gradient sums [B*T, C] over its rows), would need a transposing copy to
// become rows. Instead a block takes 32 adjacent columns (a warp reads 32 consecutive
// elements of a row) and 8 row lanes; the R rows of a column are cut into `splits` chunks
// when outer * column tiles is too few blocks to fill the GPU. Each block reduces its
// chunk through shared memory into partial[o, split, i], and a second kernel adds a
// column's partials in split order: no atomics, so the result is deterministic.
constexpr int kColTile = 32;
constexpr int kColLanes = 8;

template <typename T, typename S, typename O>
__global__ void __launch_bounds__(kColTile* kColLanes)
    sum_columns_kernel(const T* x, int64_t r, int64_t inner, int64_t splits, int64_t chunk,
                       S* partial, O* out) {
  __shared__ S red[kColLanes][kColTile + 1];
  const int64_t col = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t o = blockIdx.y / splits;
  const int64_t split = blockIdx.y % splits;
  const int64_t r0 = split * chunk;
  const int64_t r1 = r0 + chunk < r ? r0 + chunk : r;
  S acc_v = S(0);
  if (col < inner) {
    const T* base = x + o * r * inner + col;
    for (int64_t row = r0 + threadIdx.y; row < r1; row += kColLanes)
      acc_v += static_cast<S>(load(base + row * inner));
  }
  red[threadIdx.y][threadIdx.x] = acc_v;
  __syncthreads();
  if (threadIdx.y != 0 || col >= inner) return;
  S total = S(0);
  for (int l = 0; l < kColLanes; ++l) total += red[l][threadIdx.x];
  if (partial)
    partial[(o * splits + split) * inner + col] = total;
  else
    store(out + o * inner + col, total);
}

template <typename S, typename O>
__global__ void sum_column_partials_kernel(const S* partial, int64_t outer, int64_t splits,
                                           int64_t inner, O* out) {
  const int64_t n = outer * inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = e / inner, i = e % inner;
    S total = S(0);
    for (int64_t sp = 0; sp < splits; ++sp) total += partial[(o * splits + sp) * inner + i];
    store(out + e, total);
  }
}

template <typename T, typename S, typename O>
void sum_columns_impl(int device, const T* x, O* out, int64_t outer, int64_t r, int64_t inner) {
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int64_t tiles = ceil_div(inner, int64_t(kColTile));
  const int64_t want = 4 * static_cast<int64_t>(sm_count(device));
  int64_t splits = 1;
  if (outer * tiles < want)
    splits = std::min(ceil_div(want, outer * tiles), ceil_div(r, int64_t(64)));
  splits = std::max<int64_t>(splits, 1);
  const int64_t chunk = ceil_div(r, splits);
  splits = ceil_div(r, chunk);
  const dim3 block(kColTile, kColLanes);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(outer * splits));
  if (splits == 1) {
    sum_columns_kernel<T, S, O><<<grid, block, 0, s>>>(x, r, inner, 1, chunk, nullptr, out);
    MF_CUDA_CHECK(cudaGetLastError());
    return;
  }
  Workspace ws(device, outer * splits * inner * static_cast<int64_t>(sizeof(S)));
  sum_columns_kernel<T, S, O><<<grid, block, 0, s>>>(x, r, inner, splits, chunk, ws.as<S>(), out);
  MF_CUDA_CHECK(cudaGetLastError());
  const int64_t n = outer * inner;
  sum_column_partials_kernel<S, O>
      <<<static_cast<unsigned>(std::min<int64_t>(ceil_div(n, int64_t(256)), 4096)), 256, 0, s>>>(
          ws.as<S>(), outer, splits, inner, out);
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void sum_rows(int device, const void* in, DType in_type, void* out, DType out_type, int64_t outer,
              int64_t r) {
  MF_CUDA_DISPATCH_ALL(in_type, [&] {
    using T = scalar_t;
    if constexpr (std::is_floating_point_v<acc<T>>) {
      MF_INTERNAL_ASSERT(out_type == in_type, "sum_rows: output dtype ", out_type);
      reduce_rows<T>(device, in, outer, r, SumOp<T, acc<T>, T>{static_cast<T*>(out)});
    } else {
      MF_INTERNAL_ASSERT(out_type == DType::Int64, "sum_rows: output dtype ", out_type);
      reduce_rows<T>(device, in, outer, r, SumOp<T, int64_t, int64_t>{static_cast<int64_t*>(out)});
    }
  });
}

void sum_columns(int device, const void* in, DType in_type, void* out, DType out_type,
                 int64_t outer, int64_t r, int64_t inner) {
  if (outer == 0 || inner == 0) return;
  MF_CUDA_DISPATCH_ALL(in_type, [&] {
    using T = scalar_t;
    const T* x = static_cast<const T*>(in);
    if constexpr (std::is_floating_point_v<acc<T>>) {
      MF_INTERNAL_ASSERT(out_type == in_type, "sum_columns: output dtype ", out_type);
      sum_columns_impl<T, acc<T>, T>(device, x, static_cast<T*>(out), outer, r, inner);
    } else {
      MF_INTERNAL_ASSERT(out_type == DType::Int64, "sum_columns: output dtype ", out_type);
      sum_columns_impl<T, int64_t, int64_t>(device, x, static_cast<int64_t*>(out), outer, r, inner);
    }
  });
}

void mean_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r) {
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    reduce_rows<scalar_t>(device, in, outer, r, MeanOp<scalar_t>{static_cast<scalar_t*>(out)});
  });
}

void minmax_rows(int device, const void* in, DType type, int64_t outer, int64_t r, bool is_max,
                 void* values, int64_t* indices) {
  MF_INTERNAL_ASSERT(r > 0, "minmax_rows: empty rows");
  MF_CUDA_DISPATCH_ALL(type, [&] {
    reduce_rows<scalar_t>(device, in, outer, r,
                          MinMaxOp<scalar_t>{is_max, static_cast<scalar_t*>(values), indices});
  });
}

void logsumexp_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r) {
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    reduce_rows<scalar_t>(device, in, outer, r, LogSumExpOp<scalar_t>{static_cast<scalar_t*>(out)});
  });
}

void var_rows(int device, const void* in, DType type, void* out, int64_t outer, int64_t r,
              double correction) {
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    reduce_rows<scalar_t>(device, in, outer, r,
                          VarOp<scalar_t>{static_cast<scalar_t*>(out), correction});
  });
}

void amax_backward_rows(int device, const void* g, const void* x, const void* y, void* dx,
                        DType type, int64_t outer, int64_t r) {
  if (outer == 0 || r == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
      amax_backward_kernel<T, decltype(warp)::value>
          <<<grid, block, 0, s>>>(static_cast<const T*>(g), static_cast<const T*>(x),
                                  static_cast<const T*>(y), static_cast<T*>(dx), outer, r);
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void logsumexp_backward_rows(int device, const void* g, const void* x, const void* lse, void* dx,
                             DType type, int64_t outer, int64_t r) {
  if (outer == 0 || r == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    launch_rows(outer, r, [&](auto warp, dim3 grid, dim3 block) {
      logsumexp_backward_kernel<T, decltype(warp)::value>
          <<<grid, block, 0, s>>>(static_cast<const T*>(g), static_cast<const T*>(x),
                                  static_cast<const T*>(lse), static_cast<T*>(dx), outer, r);
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void scatter_selected(int device, const void* g, const int64_t* idx, void* dx, DType type,
                      int64_t outer, int64_t r, int64_t inner) {
  const int64_t n = outer * r * inner;
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int threads = 256;
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    using T = scalar_t;
    scatter_selected_kernel<T><<<blocks_for(n, threads), threads, 0, s>>>(
        static_cast<const T*>(g), idx, static_cast<T*>(dx), outer, r, inner);
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
