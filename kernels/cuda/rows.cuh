// Device helpers shared by the row kernels (reductions, softmax, nn): a contiguous
// [rows, R] buffer is processed one warp per row (R <= kWarpRowMax) or one block per row,
// rows are walked with 16-byte vector accesses, and small POD states are all-reduced
// across the warp or block. Host side: SM count and a scratch buffer from the caching
// allocator.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "core/allocator.h"
#include "kernels/cuda/device_types.cuh"

namespace microflex::cuda {

constexpr int kWarpSize = 32;
// Rows up to this length go one warp per row, longer rows one block per row.
constexpr int64_t kWarpRowMax = 1024;
constexpr int kWarpsPerBlock = 4;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Multiprocessors of `device`, read once.
inline int sm_count(int device) {
  static int counts[64] = {};
  if (device < 0 || device >= 64) return 132;
  if (counts[device] == 0) {
    int n = 0;
    MF_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    counts[device] = n;
  }
  return counts[device];
}

// Scratch device memory from the caching allocator. Freeing it right after queueing the
// kernels that use it is safe: all work on a device runs on one stream, so the next user
// of the block runs after them (Note [CUDA caching allocator] in core/cuda_backend.cpp).
class Workspace {
 public:
  Workspace(int device, int64_t nbytes)
      : alloc_(allocator_for(Device::cuda(device))), nbytes_(nbytes) {
    ptr_ = nbytes > 0 ? alloc_->allocate(nbytes) : nullptr;
  }
  ~Workspace() {
    if (ptr_) alloc_->deallocate(ptr_, nbytes_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  Allocator* alloc_;
  int64_t nbytes_;
  void* ptr_;
};

template <typename T>
__device__ __forceinline__ T dexp(T v) {
  if constexpr (std::is_same_v<T, float>)
    return expf(v);
  else
    return exp(v);
}
template <typename T>
__device__ __forceinline__ T dlog(T v) {
  if constexpr (std::is_same_v<T, float>)
    return logf(v);
  else
    return log(v);
}
template <typename T>
__device__ __forceinline__ T dsqrt(T v) {
  if constexpr (std::is_same_v<T, float>)
    return sqrtf(v);
  else
    return sqrt(v);
}
template <typename T>
__device__ __forceinline__ T dinf() {
  return static_cast<T>(INFINITY);
}

// Shuffles any trivially copyable state, one 32-bit word at a time.
template <typename S>
__device__ __forceinline__ S shfl_down(const S& v, int delta) {
  static_assert(sizeof(S) % 4 == 0, "states are made of 32-bit words");
  constexpr int kWords = sizeof(S) / 4;
  uint32_t w[kWords];
  memcpy(w, &v, sizeof(S));
#pragma unroll
  for (int k = 0; k < kWords; ++k) w[k] = __shfl_down_sync(0xffffffffu, w[k], delta);
  S out;
  memcpy(&out, w, sizeof(S));
  return out;
}

template <typename S>
__device__ __forceinline__ S shfl_first(const S& v) {
  constexpr int kWords = sizeof(S) / 4;
  uint32_t w[kWords];
  memcpy(w, &v, sizeof(S));
#pragma unroll
  for (int k = 0; k < kWords; ++k) w[k] = __shfl_sync(0xffffffffu, w[k], 0);
  S out;
  memcpy(&out, w, sizeof(S));
  return out;
}

// Every lane gets lane 0's combination of all 32 lanes (combined in one fixed order, so
// the lanes agree bit for bit even when `combine` is not commutative).
template <typename S, typename C>
__device__ __forceinline__ S warp_allreduce(S v, C combine) {
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d /= 2) v = combine(v, shfl_down(v, d));
  return shfl_first(v);
}

// Every thread of the block gets the combination of all threads. blockDim.x is a
// multiple of 32. Safe to call several times in a row.
template <typename S, typename C>
__device__ __forceinline__ S block_allreduce(S v, C combine) {
  __shared__ alignas(16) unsigned char raw[kWarpSize * sizeof(S)];
  S* buf = reinterpret_cast<S*>(raw);
  v = warp_allreduce(v, combine);
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int nw = blockDim.x / kWarpSize;
  __syncthreads();  // an earlier call may still be reading buf
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  S r = buf[0];
  for (int k = 1; k < nw; ++k) r = combine(r, buf[k]);
  return r;
}

// Which row (or work item) a thread works on, and its rank among the row's threads:
// a warp per row (kWarp) or the whole block per row. Items are visited in a grid-stride
// loop so any count fits the grid.
template <bool kWarp>
struct RowGroup {
  int tid, nthr;
  int64_t first, stride;
  __device__ RowGroup() {
    if constexpr (kWarp) {
      const int per_block = blockDim.x / kWarpSize;
      tid = threadIdx.x % kWarpSize;
      nthr = kWarpSize;
      first = int64_t(blockIdx.x) * per_block + threadIdx.x / kWarpSize;
      stride = int64_t(gridDim.x) * per_block;
    } else {
      tid = threadIdx.x;
      nthr = blockDim.x;
      first = blockIdx.x;
      stride = gridDim.x;
    }
  }
  template <typename S, typename C>
  __device__ S allreduce(S v, C combine) const {
    if constexpr (kWarp)
      return warp_allreduce(v, combine);
    else
      return block_allreduce(v, combine);
  }
};

// Launches f(std::bool_constant<kWarp>, grid, block) for `items` rows of length r: a warp
// per row for short rows, else a block per row (wider blocks for long rows).
template <typename F>
void launch_rows(int64_t items, int64_t r, F f) {
  if (items == 0) return;
  constexpr int64_t kMaxGrid = 0x7fffffff;
  if (r <= kWarpRowMax) {
    const int64_t blocks = ceil_div(items, kWarpsPerBlock);
    f(std::true_type{}, dim3(static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid)),
      dim3(kWarpSize * kWarpsPerBlock));
  } else {
    const int threads = r >= 16384 ? 1024 : 512;
    f(std::false_type{}, dim3(static_cast<unsigned>(items < kMaxGrid ? items : kMaxGrid)),
      dim3(threads));
  }
}

namespace detail {

template <typename T, size_t N>
struct Raw {
  uint4 v[N > 0 ? N : 1];
};

template <typename T, size_t N, typename F, size_t... I>
__device__ __forceinline__ auto call_at(F& f, int64_t j, const Raw<T, N>& raw, int u,
                                        std::index_sequence<I...>) {
  return f(j, load(reinterpret_cast<const T*>(&raw.v[I]) + u)...);
}

template <typename T, size_t N, typename F, size_t... I>
__device__ __forceinline__ auto call_scalar(F& f, int64_t j, const T* const (&in)[N > 0 ? N : 1],
                                            std::index_sequence<I...>) {
  return f(j, load(in[I] + j)...);
}

// The row walk behind row_read and row_write: elements before the first 16-byte boundary
// one at a time, then 16-byte vectors, then the tail. Each thread visits its elements in
// increasing order. Vectors are used only when every pointer has the same alignment.
template <bool kWrite, typename T, typename F, typename... P>
__device__ __forceinline__ void row_walk(T* out, int64_t n, int tid, int nthr, F& f, P... in) {
  constexpr size_t N = sizeof...(P);
  constexpr int V = 16 / sizeof(T);
  const T* const ptrs[N > 0 ? N : 1] = {in...};
  const uintptr_t a =
      (kWrite ? reinterpret_cast<uintptr_t>(out) : reinterpret_cast<uintptr_t>(ptrs[0])) % 16;
  const bool same = ((reinterpret_cast<uintptr_t>(in) % 16 == a) && ...);
  int64_t head = same ? static_cast<int64_t>(((16 - a) % 16) / sizeof(T)) : n;
  if (head > n) head = n;
  const auto seq = std::make_index_sequence<N>{};
  for (int64_t j = tid; j < head; j += nthr) {
    if constexpr (kWrite)
      store(out + j, call_scalar<T, N>(f, j, ptrs, seq));
    else
      call_scalar<T, N>(f, j, ptrs, seq);
  }
  const int64_t nvec = (n - head) / V;
  for (int64_t k = tid; k < nvec; k += nthr) {
    const int64_t j0 = head + k * V;
    Raw<T, N> raw;
    if constexpr (N > 0) {
#pragma unroll
      for (size_t p = 0; p < N; ++p) raw.v[p] = *reinterpret_cast<const uint4*>(ptrs[p] + j0);
    }
    if constexpr (kWrite) {
      uint4 o;
      T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
      for (int u = 0; u < V; ++u) store(oe + u, call_at<T, N>(f, j0 + u, raw, u, seq));
      *reinterpret_cast<uint4*>(out + j0) = o;
    } else {
#pragma unroll
      for (int u = 0; u < V; ++u) call_at<T, N>(f, j0 + u, raw, u, seq);
    }
  }
  for (int64_t j = head + nvec * V + tid; j < n; j += nthr) {
    if constexpr (kWrite)
      store(out + j, call_scalar<T, N>(f, j, ptrs, seq));
    else
      call_scalar<T, N>(f, j, ptrs, seq);
  }
}

}  // namespace detail

// Calls f(j, in0[j], in1[j], ...) (values converted to acc<T>) for this thread's share of
// a row of n elements. At least one input.
template <typename T, typename F, typename... P>
__device__ __forceinline__ void row_read(int64_t n, int tid, int nthr, F&& f, const T* in0,
                                         P... in) {
  detail::row_walk<false, T>(static_cast<T*>(nullptr), n, tid, nthr, f, in0, in...);
}

// out[j] = f(j, in0[j], ...) for this thread's share of a row of n elements.
template <typename T, typename F, typename... P>
__device__ __forceinline__ void row_write(T* out, int64_t n, int tid, int nthr, F&& f, P... in) {
  detail::row_walk<true, T>(out, n, tid, nthr, f, in...);
}

// The online (max, sum of exp) state of softmax and logsumexp (Note [Online softmax]).
template <typename A>
struct ExpSum {
  A m;  // running max (never NaN)
  A s;  // sum of exp(x - m)
};

// Note [Online softmax]
// One pass keeps (m, s) with s = sum exp(x - m), rescaling s when m grows; states from
// different threads combine the same way. Matching the CPU kernels in the corners:
// -inf elements add nothing, NaN makes s NaN and so every output NaN, a row of all -inf
// keeps m = -inf (softmax 0, logsumexp -inf). For logsumexp (kLse) an element equal to
// the max adds exactly 1, so a +inf max gives +inf as the CPU's unshifted sum does; for
// softmax exp(inf - inf) = NaN is kept, as on the CPU.
template <bool kLse, typename A>
__device__ __forceinline__ void expsum_step(ExpSum<A>& st, A x) {
  if (x == -dinf<A>()) return;
  if (x > st.m) {
    st.s = (kLse ? st.s * dexp(st.m - x) + A(1) : st.s * dexp(st.m - x));
    st.m = x;
    if (kLse) return;
  } else if (kLse && x == st.m) {
    st.s += A(1);
    return;
  }
  st.s += dexp(x - st.m);
}

template <bool kLse, typename A>
__device__ __forceinline__ ExpSum<A> expsum_combine(ExpSum<A> a, ExpSum<A> b) {
  const A m = a.m > b.m ? a.m : b.m;
  if (m == -dinf<A>()) return {m, a.s + b.s};
  auto scale = [m](A mi) { return (kLse && mi == m) ? A(1) : dexp(mi - m); };
  return {m, a.s * scale(a.m) + b.s * scale(b.m)};
}

}  // namespace microflex::cuda
