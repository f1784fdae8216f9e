// The launch engine shared by the elementwise_*.cu files, and the device element
// functions that mirror kernels/cpu/elementwise.h. The host coalesces the operands' dims,
// then runs a 16-byte vectorized kernel when every operand is contiguous (or one value
// broadcast everywhere), else a strided kernel that computes the index once per element.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cuda/std/tuple>
#include <cuda/std/utility>
#include <type_traits>
#include <vector>

#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/elementwise.h"

namespace microflex::cuda::ew {

// ---- Dtype dispatch: only the dtypes an op supports are instantiated. ----

enum class Kinds { Floating, Integral, Numeric, Bitwise, Bool, All };

template <typename T>
struct Tag {
  using type = T;
};

template <Kinds K, typename T>
constexpr bool supports() {
  constexpr bool fp = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                      std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
  constexpr bool in = std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>;
  constexpr bool b = std::is_same_v<T, bool>;
  switch (K) {
    case Kinds::Floating:
      return fp;
    case Kinds::Integral:
      return in;
    case Kinds::Numeric:
      return fp || in;
    case Kinds::Bitwise:
      return in || b;
    case Kinds::Bool:
      return b;
    case Kinds::All:
      return fp || in || b;
  }
  return false;
}

template <Kinds K, typename T, typename Body>
void run_if_supported(DType dt, const char* op, Body& body) {
  if constexpr (supports<K, T>()) {
    body(Tag<T>{});
  } else {
    // The op's shape rule only lets supported dtypes through.
    MF_INTERNAL_ASSERT(false, op, ": dtype ", dt, " has no CUDA kernel");
  }
}

// Calls body(Tag<T>{}) with T the device storage type of `dt`.
template <Kinds K, typename Body>
void dispatch(DType dt, const char* op, Body&& body) {
  switch (dt) {
    case DType::Float32:
      return run_if_supported<K, float>(dt, op, body);
    case DType::Float64:
      return run_if_supported<K, double>(dt, op, body);
    case DType::Float16:
      return run_if_supported<K, __half>(dt, op, body);
    case DType::BFloat16:
      return run_if_supported<K, __nv_bfloat16>(dt, op, body);
    case DType::Int32:
      return run_if_supported<K, int32_t>(dt, op, body);
    case DType::Int64:
      return run_if_supported<K, int64_t>(dt, op, body);
    case DType::Bool:
      return run_if_supported<K, bool>(dt, op, body);
  }
  MF_INTERNAL_ASSERT(false, op, ": bad dtype");
}

// ---- Kernels ----

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Dims after coalescing, innermost first; strides[d][k] is operand k's (0 = the output).
template <int NT>
struct Strided {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims][NT] = {};
};

// N elements of `p` from i, or p[0] repeated when the operand is one broadcast value.
template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p, int64_t i, bool broadcast) {
  if (broadcast) {
    Vec<T, N> r;
    const T s = *p;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = s;
    return r;
  }
  return *reinterpret_cast<const Vec<T, N>*>(p + i);
}

// Bit k of `bcast` says input k is one value broadcast everywhere.
template <int N, typename F, typename Out, size_t... I, typename... In>
__device__ __forceinline__ void vec_step(int64_t i, const F& f, Out* out, unsigned bcast,
                                         ::cuda::std::index_sequence<I...>, const In*... in) {
  // All loads are issued before the first use.
  const ::cuda::std::tuple<Vec<In, N>...> v{load_vec<In, N>(in, i, (bcast >> I) & 1u)...};
  Vec<Out, N> o;
#pragma unroll
  for (int k = 0; k < N; ++k) store(&o.v[k], f(load(&::cuda::std::get<I>(v).v[k])...));
  *reinterpret_cast<Vec<Out, N>*>(out + i) = o;
}

template <typename F, typename Out, size_t... I, typename... In>
__device__ __forceinline__ void scalar_step(int64_t i, const F& f, Out* out, unsigned bcast,
                                            ::cuda::std::index_sequence<I...>, const In*... in) {
  store(out + i, f(load(in + (((bcast >> I) & 1u) ? 0 : i))...));
}

// Every operand contiguous (or broadcast from one value): N-wide 16-byte loads and stores,
// then the n % N tail one element at a time.
template <int N, typename F, typename Out, typename... In>
__global__ void __launch_bounds__(kThreads)
    contiguous_kernel(int64_t n, F f, unsigned bcast, Out* out, const In*... in) {
  using Seq = ::cuda::std::index_sequence_for<In...>;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t nvec = n / N;
  for (int64_t v = tid; v < nvec; v += step) vec_step<N>(v * N, f, out, bcast, Seq{}, in...);
  for (int64_t i = nvec * N + tid; i < n; i += step) scalar_step(i, f, out, bcast, Seq{}, in...);
}

// Element offsets of linear index i for every operand; Index is 32-bit when the element
// count allows, which makes the divisions several times cheaper.
template <typename Index, int NT>
__device__ __forceinline__ void offsets_of(Index i, const Strided<NT>& g, int64_t (&off)[NT]) {
#pragma unroll
  for (int k = 0; k < NT; ++k) off[k] = 0;
#pragma unroll
  for (int d = 0; d < kMaxDims; ++d) {
    if (d == g.ndim) break;
    const Index size = static_cast<Index>(g.sizes[d]);
    const Index q = i / size;
    const int64_t idx = static_cast<int64_t>(i - q * size);
    i = q;
#pragma unroll
    for (int k = 0; k < NT; ++k) off[k] += idx * g.strides[d][k];
  }
}

template <typename F, typename Out, size_t... I, typename... In>
__device__ __forceinline__ void strided_step(const int64_t* off, const F& f, Out* out,
                                             ::cuda::std::index_sequence<I...>, const In*... in) {
  store(out + off[0], f(load(in + off[1 + I])...));
}

template <typename Index, typename F, typename Out, typename... In>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(int64_t n, F f, Strided<1 + sizeof...(In)> g, Out* out, const In*... in) {
  using Seq = ::cuda::std::index_sequence_for<In...>;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) {
    int64_t off[1 + sizeof...(In)];
    offsets_of(static_cast<Index>(i), g, off);
    strided_step(off, f, out, Seq{}, in...);
  }
}

// Note [Vectorized inner rows]
// When the innermost coalesced dim is contiguous (stride 1) or constant (stride 0) in
// every operand and its length is a multiple of N (a bias added to [B*T, C] rows), each
// thread handles N adjacent elements of one row: the index math runs once per vector and
// the loads and stores are 16 bytes wide. `g` has the inner size divided by N and inner
// strides scaled by N, so offsets_of gives each vector's first element.
template <int N, typename F, typename Out, size_t... I, typename... In>
__device__ __forceinline__ void vec_step_at(const int64_t* off, const F& f, Out* out,
                                            unsigned bcast, ::cuda::std::index_sequence<I...>,
                                            const In*... in) {
  const ::cuda::std::tuple<Vec<In, N>...> v{
      load_vec<In, N>(in + off[1 + I], 0, (bcast >> I) & 1u)...};
  Vec<Out, N> o;
#pragma unroll
  for (int k = 0; k < N; ++k) store(&o.v[k], f(load(&::cuda::std::get<I>(v).v[k])...));
  *reinterpret_cast<Vec<Out, N>*>(out + off[0]) = o;
}

template <int N, typename Index, typename F, typename Out, typename... In>
__global__ void __launch_bounds__(kThreads)
    inner_vec_kernel(int64_t nvec, F f, Strided<1 + sizeof...(In)> g, unsigned bcast, Out* out,
                     const In*... in) {
  using Seq = ::cuda::std::index_sequence_for<In...>;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < nvec; v += step) {
    int64_t off[1 + sizeof...(In)];
    offsets_of(static_cast<Index>(v), g, off);
    vec_step_at<N>(off, f, out, bcast, Seq{}, in...);
  }
}

// ---- Host side ----

// Drops size-1 dims and merges dims that are contiguous for every operand (as the CPU
// loops do), so most broadcasts end with one or two dims.
template <int NT>
Strided<NT> coalesce(const std::array<const Geometry*, NT>& gs) {
  const Geometry& o = *gs[0];
  std::vector<int64_t> sz;
  std::vector<std::array<int64_t, NT>> st;
  for (int d = 0; d < o.ndim; ++d) {
    const int64_t size = o.sizes[d];
    if (size == 1) continue;
    bool merge = !sz.empty();
    for (int k = 0; k < NT && merge; ++k) merge = st.back()[k] == gs[k]->strides[d] * size;
    if (merge) {
      sz.back() *= size;
      for (int k = 0; k < NT; ++k) st.back()[k] = gs[k]->strides[d];
    } else {
      sz.push_back(size);
      std::array<int64_t, NT> s;
      for (int k = 0; k < NT; ++k) s[k] = gs[k]->strides[d];
      st.push_back(s);
    }
  }
  Strided<NT> r;
  r.ndim = static_cast<int>(sz.size());
  for (int j = 0; j < r.ndim; ++j) {
    r.sizes[j] = sz[r.ndim - 1 - j];
    for (int k = 0; k < NT; ++k) r.strides[j][k] = st[r.ndim - 1 - j][k];
  }
  return r;
}

inline bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Whether the inner-row vector kernel applies (Note [Vectorized inner rows]): N > 1, the
// output's inner dim contiguous, each input's contiguous or constant, the inner length a
// multiple of N, and every vector start aligned to N elements.
template <int N, int NT>
bool inner_vec_ok(const Strided<NT>& g, const void* out, const void* const* ptrs,
                  const size_t* sizes) {
  if (N <= 1 || g.ndim < 2 || g.strides[0][0] != 1 || g.sizes[0] % N != 0) return false;
  if (!aligned(out, N * sizes[0])) return false;
  for (int d = 1; d < g.ndim; ++d)
    if (g.strides[d][0] % N != 0) return false;
  for (int k = 1; k < NT; ++k) {
    const int64_t s = g.strides[0][k];
    if (s != 0 && s != 1) return false;
    if (s == 1) {
      if (!aligned(ptrs[k - 1], N * sizes[k])) return false;
      for (int d = 1; d < g.ndim; ++d)
        if (g.strides[d][k] % N != 0) return false;
    }
  }
  return true;
}

// out = f(in...) elementwise over out_g; in_g[k] has out_g's sizes (stride 0 where input k
// broadcasts). f takes and returns compute-type values (load/store convert).
template <typename F, typename Out, typename... In>
void launch(int device, F f, Out* out, const Geometry& out_g,
            const std::array<Geometry, sizeof...(In)>& in_g, const In*... in) {
  constexpr int NT = 1 + sizeof...(In);
  int64_t n = 1;
  for (int d = 0; d < out_g.ndim; ++d) n *= out_g.sizes[d];
  if (n == 0) return;
  std::array<const Geometry*, NT> gs;
  gs[0] = &out_g;
  for (int k = 1; k < NT; ++k) gs[k] = &in_g[k - 1];
  const Strided<NT> g = coalesce<NT>(gs);

  // The vector width: 16 bytes of the widest operand.
  constexpr size_t kWidest = std::max({sizeof(Out), sizeof(In)...});
  constexpr int kVec = static_cast<int>(16 / kWidest);
  const void* ptrs[] = {in...};
  // Element sizes, the output's first.
  const size_t sizes[] = {sizeof(Out), sizeof(In)...};
  // One dim left (or none) with the output at stride 1 and each input at stride 1 or 0.
  bool fast = g.ndim == 0 || g.strides[0][0] == 1;
  fast = fast && aligned(out, kVec * sizeof(Out));
  unsigned bcast = 0;
  for (int k = 1; k < NT && fast; ++k) {
    const int64_t s = g.ndim == 0 ? 1 : g.strides[0][k];
    if (s == 0) bcast |= 1u << (k - 1);
    fast = (s == 0 || s == 1) && (s == 0 || aligned(ptrs[k - 1], kVec * sizes[k]));
  }

  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  if (fast && g.ndim <= 1) {
    const int64_t work = std::max<int64_t>(n / kVec, 1);
    contiguous_kernel<kVec>
        <<<blocks_for(work, kThreads), kThreads, 0, s>>>(n, f, bcast, out, in...);
  } else if (inner_vec_ok<kVec>(g, out, ptrs, sizes)) {
    Strided<NT> gv = g;
    gv.sizes[0] /= kVec;
    for (int k = 0; k < NT; ++k) gv.strides[0][k] *= kVec;
    unsigned inner_bcast = 0;
    for (int k = 1; k < NT; ++k)
      if (g.strides[0][k] == 0) inner_bcast |= 1u << (k - 1);
    const int64_t nvec = n / kVec;
    if (nvec <= int64_t(UINT32_MAX))
      inner_vec_kernel<kVec, uint32_t>
          <<<blocks_for(nvec, kThreads), kThreads, 0, s>>>(nvec, f, gv, inner_bcast, out, in...);
    else
      inner_vec_kernel<kVec, uint64_t>
          <<<blocks_for(nvec, kThreads), kThreads, 0, s>>>(nvec, f, gv, inner_bcast, out, in...);
  } else if (n <= int64_t(UINT32_MAX)) {
    strided_kernel<uint32_t><<<blocks_for(n, kThreads), kThreads, 0, s>>>(n, f, g, out, in...);
  } else {
    strided_kernel<uint64_t><<<blocks_for(n, kThreads), kThreads, 0, s>>>(n, f, g, out, in...);
  }
  MF_CUDA_CHECK(cudaGetLastError());
}

// ---- Device math: float and double overloads of the libm functions used. ----

#define MF_EW_MATH1(NAME)                            \
  __device__ __forceinline__ float NAME(float x) {   \
    return ::NAME##f(x);                             \
  }                                                  \
  __device__ __forceinline__ double NAME(double x) { \
    return ::NAME(x);                                \
  }
#define MF_EW_MATH2(NAME)                                      \
  __device__ __forceinline__ float NAME(float x, float y) {    \
    return ::NAME##f(x, y);                                    \
  }                                                            \
  __device__ __forceinline__ double NAME(double x, double y) { \
    return ::NAME(x, y);                                       \
  }

namespace m {
MF_EW_MATH1(exp)
MF_EW_MATH1(exp2)
MF_EW_MATH1(log)
MF_EW_MATH1(log2)
MF_EW_MATH1(sqrt)
MF_EW_MATH1(sin)
MF_EW_MATH1(cos)
MF_EW_MATH1(tanh)
MF_EW_MATH1(erf)
MF_EW_MATH1(floor)
MF_EW_MATH1(fabs)
MF_EW_MATH2(pow)
MF_EW_MATH2(fmod)
MF_EW_MATH2(copysign)
}  // namespace m

#undef MF_EW_MATH1
#undef MF_EW_MATH2

// ---- Element functions on the compute type A, as kernels/cpu/elementwise.h. ----

template <typename A>
__device__ __forceinline__ bool is_nan(A x) {
  if constexpr (std::is_floating_point_v<A>) {
    return x != x;
  } else {
    return false;
  }
}

template <typename A>
__device__ __forceinline__ A wrap_neg(A x) {
  if constexpr (std::is_integral_v<A> && std::is_signed_v<A>) {
    return static_cast<A>(std::make_unsigned_t<A>(0) - static_cast<std::make_unsigned_t<A>>(x));
  } else {
    return -x;
  }
}

// Python's a % b. Integer b == 0 gives 0 (Note [Integer division by zero on the GPU]).
template <typename A>
__device__ __forceinline__ A py_remainder(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    if (b == 0 || b == -1) return 0;  // -1 avoids INT_MIN % -1 overflow
    A r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else {
    A r = m::fmod(a, b);
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
}

// Python's a // b. Integer b == 0 gives 0 (Note [Integer division by zero on the GPU]).
template <typename A>
__device__ __forceinline__ A py_floor_divide(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    if (b == 0) return 0;
    if (b == -1) return wrap_neg(a);
    A q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
  } else {
    if (b == 0) return a / b;
    const A mod = m::fmod(a, b);
    A div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= A(1);
    if (div == 0) return m::copysign(A(0), a / b);
    A fl = m::floor(div);
    if (div - fl > A(0.5)) fl += A(1);
    return fl;
  }
}

template <typename A>
__device__ __forceinline__ A int_pow(A base, A exp) {
  if (exp < 0) {
    if (base == 1) return 1;
    if (base == -1) return (exp % 2 == 0) ? 1 : -1;
    return 0;
  }
  using U = std::make_unsigned_t<A>;
  U result = 1, b = static_cast<U>(base);
  for (U e = static_cast<U>(exp); e != 0; e >>= 1) {
    if (e & 1) result *= b;
    b *= b;
  }
  return static_cast<A>(result);
}

template <typename A>
__device__ __forceinline__ A gelu(A x, bool tanh_approx) {
  if (tanh_approx) {
    const A k = m::sqrt(A(2) / A(M_PI));
    return A(0.5) * x * (A(1) + m::tanh(k * (x + A(0.044715) * x * x * x)));
  }
  return A(0.5) * x * (A(1) + m::erf(x * A(M_SQRT1_2)));
}

template <typename A>
__device__ __forceinline__ A gelu_grad(A x, bool tanh_approx) {
  if (tanh_approx) {
    const A k = m::sqrt(A(2) / A(M_PI));
    const A inner = k * (x + A(0.044715) * x * x * x);
    const A t = m::tanh(inner);
    const A dinner = k * (A(1) + A(3) * A(0.044715) * x * x);
    return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * dinner;
  }
  const A cdf = A(0.5) * (A(1) + m::erf(x * A(M_SQRT1_2)));
  const A pdf = m::exp(A(-0.5) * x * x) * A(0.5 * M_2_SQRTPI * M_SQRT1_2);
  return cdf + x * pdf;
}

// Predicates, logical and bitwise binary ops (elementwise_compare.cu).
void binary_compare(int device, cpu::BinaryOp op, DType dtype, void* out, const Geometry& out_g,
                    const void* a, const Geometry& a_g, const void* b, const Geometry& b_g);

}  // namespace microflex::cuda::ew
