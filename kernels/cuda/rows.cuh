// Device helpers shared by the row kernels (reductions, softmax, nn): a contiguous
// [rows, R] buffer is processed one warp per row (R <= kWarpRowMax) or one block per row,
// rows are walked with 16-byte vector accesses, and small POD states are all-reduced
// across the warp or block. Host side: SM count and a scratch buffer from the caching
// allocator.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
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

// Note [Rows in registers]
// A row of up to kRegRowMaxThreads * RegRow<T>::kElems elements is loaded once into the
// registers of its group (a warp, or a block of up to kRegRowMaxThreads), reduced from
// there and written back: it crosses memory once each way, where a row walk re-reads it
// for every pass. Thread tid keeps the row's 16-byte vectors k * nthr + tid (k < kVecs),
// so every load and store instruction of a warp covers 512 contiguous bytes. This needs
// R a multiple of the vector width V and 16-byte aligned buffers (reg_row_vectorizable);
// other rows take the row-walk kernels. Slots past the row hold `pad`.
constexpr int kRegRowMaxThreads = 512;

template <typename T>
struct RegRow {
  using A = acc<T>;
  static constexpr int V = 16 / sizeof(T);
  // 32 values per thread (8 for float64, whose exp needs many registers): the row fits
  // without spilling under __launch_bounds__(kRegRowMaxThreads), which allows 128
  // registers per thread (64 are used for float32 and bfloat16 softmax).
  static constexpr int kVecs = sizeof(T) == 2 ? 4 : (sizeof(T) == 4 ? 8 : 4);
  static constexpr int kElems = kVecs * V;
  A v[kElems];  // slot k * V + u holds element (k * nthr + tid) * V + u

  // Offsets within a row are int: a row that fits has at most kRegRowMaxThreads * kElems
  // elements.
  __device__ __forceinline__ static int index(int i, int tid, int nthr) {
    return ((i / V) * nthr + tid) * V + i % V;
  }

  __device__ __forceinline__ void load(const T* row, int n, int tid, int nthr, A pad) {
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int j0 = (k * nthr + tid) * V;
      if (j0 < n) {
        const uint4 raw = *reinterpret_cast<const uint4*>(row + j0);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int u = 0; u < V; ++u) v[k * V + u] = microflex::cuda::load(e + u);
      } else {
#pragma unroll
        for (int u = 0; u < V; ++u) v[k * V + u] = pad;
      }
    }
  }

  // For each of the thread's vectors inside the row: y = its values, f(j0, y) (j0 its first
  // element) changes y in place, and y is stored to row[j0 .. j0 + V). Vector by vector, so
  // a caller that reads more data per vector in f holds one vector of it at a time.
  template <typename F>
  __device__ __forceinline__ void store_vectors(T* row, int n, int tid, int nthr, F f) const {
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int j0 = (k * nthr + tid) * V;
      if (j0 < n) {
        A y[V];
#pragma unroll
        for (int u = 0; u < V; ++u) y[u] = v[k * V + u];
        f(j0, y);
        uint4 raw;
        T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
        for (int u = 0; u < V; ++u) microflex::cuda::store(e + u, y[u]);
        *reinterpret_cast<uint4*>(row + j0) = raw;
      }
    }
  }

  // V values of A from p (16-byte aligned; V values of A are whole 16-byte vectors since
  // sizeof(A) >= sizeof(T)).
  __device__ __forceinline__ static void load_acc(const A* p, A (&out)[V]) {
    constexpr int kWords = V * sizeof(A) / 16;
#pragma unroll
    for (int w = 0; w < kWords; ++w)
      reinterpret_cast<uint4*>(out)[w] = reinterpret_cast<const uint4*>(p)[w];
  }

  // row[index(i)] = f(v[i]) for the slots inside the row.
  template <typename F>
  __device__ __forceinline__ void store(T* row, int n, int tid, int nthr, F f) const {
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int j0 = (k * nthr + tid) * V;
      if (j0 < n) {
        uint4 raw;
        T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
        for (int u = 0; u < V; ++u) microflex::cuda::store(e + u, f(v[k * V + u]));
        *reinterpret_cast<uint4*>(row + j0) = raw;
      }
    }
  }
};

// Whether rows of r elements of T can be held in registers (Note [Rows in registers]): r
// fits, r is a multiple of the vector width and every non-null buffer is 16-byte aligned
// (rows then all start on a 16-byte boundary).
template <typename T>
bool reg_rows_apply(int64_t r, std::initializer_list<const void*> ptrs) {
  if (r > int64_t(kRegRowMaxThreads) * RegRow<T>::kElems || r % RegRow<T>::V != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Launches f(std::bool_constant<kWarp>, grid, block) for `items` rows of r elements held in
// registers: a warp per row (4 rows per block) when the row fits 32 threads, else a block
// per row with the fewest warps that hold it (128 threads for 4096 float32 or bfloat16).
// The kernel's launch bound is kRegRowMaxThreads.
template <typename T, typename F>
void launch_reg_rows(int64_t items, int64_t r, F f) {
  if (items == 0) return;
  constexpr int64_t kMaxGrid = 0x7fffffff;
  constexpr int64_t per = RegRow<T>::kElems;
  if (r <= kWarpSize * per) {
    const int64_t blocks = ceil_div(items, kWarpsPerBlock);
    f(std::true_type{}, dim3(static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid)),
      dim3(kWarpSize * kWarpsPerBlock));
  } else {
    const int64_t threads = ceil_div(ceil_div(r, per), kWarpSize) * kWarpSize;
    f(std::false_type{}, dim3(static_cast<unsigned>(items < kMaxGrid ? items : kMaxGrid)),
      dim3(static_cast<unsigned>(threads)));
  }
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
