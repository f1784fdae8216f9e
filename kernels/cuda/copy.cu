// Strided copies with dtype conversion, and fills (Note [Strided copies]).
#include "kernels/cuda/copy.h"
#include "kernels/cuda/elementwise.cuh"

#include <cmath>

namespace microflex::cuda {

namespace {

// Note [Strided copies]
// Copies go through the elementwise engine's coalescing (size-1 dims dropped, dims that
// are contiguous in both operands merged) and 32-bit index math. A same-dtype copy whose
// innermost coalesced dim is contiguous on both sides (a transpose of [B, T, H, D] with D
// whole, a slice of rows) moves raw units of up to 16 bytes instead of elements, so a
// bfloat16 head dim of 64 is 8 stores per row. A fully contiguous same-dtype copy is a
// cudaMemcpyAsync; other conversions run the engine's kernels with an identity function.

struct IdentityF {
  template <typename A>
  __device__ __forceinline__ A operator()(A x) const {
    return x;
  }
};

template <typename Index, typename T, typename V>
__global__ void __launch_bounds__(ew::kThreads)
    fill_kernel(int64_t n, ew::Strided<1> g, T* dst, V v) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    ew::offsets_of(static_cast<Index>(i), g, off);
    store(dst + off[0], v);
  }
}

template <typename Index, typename U>
__global__ void __launch_bounds__(ew::kThreads)
    copy_units_kernel(int64_t n, ew::Strided<2> g, U* dst, const U* src) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    ew::offsets_of(static_cast<Index>(i), g, off);
    dst[off[0]] = src[off[1]];
  }
}

int64_t numel(const Geometry& g) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.sizes[d];
  return n;
}

template <typename U>
void launch_units(cudaStream_t s, int64_t n, const ew::Strided<2>& g, void* dst, const void* src) {
  if (n <= int64_t(UINT32_MAX))
    copy_units_kernel<uint32_t, U><<<blocks_for(n, ew::kThreads), ew::kThreads, 0, s>>>(
        n, g, static_cast<U*>(dst), static_cast<const U*>(src));
  else
    copy_units_kernel<uint64_t, U><<<blocks_for(n, ew::kThreads), ew::kThreads, 0, s>>>(
        n, g, static_cast<U*>(dst), static_cast<const U*>(src));
  MF_CUDA_CHECK(cudaGetLastError());
}

// A same-dtype copy over coalesced geometry `g` (strides in elements of `item` bytes), as
// units of the widest size in 16, 8, 4, 2, 1 bytes that divides the inner run, every other
// stride and both pointers.
void copy_raw(cudaStream_t s, void* dst, const void* src, ew::Strided<2> g, int64_t item) {
  int64_t unit = item;
  if (g.ndim > 0 && g.strides[0][0] == 1 && g.strides[0][1] == 1) {
    for (int64_t w : {16, 8, 4, 2}) {
      if (w <= item) break;
      bool ok = (g.sizes[0] * item) % w == 0 && ew::aligned(dst, w) && ew::aligned(src, w);
      for (int d = 1; d < g.ndim && ok; ++d)
        ok = (g.strides[d][0] * item) % w == 0 && (g.strides[d][1] * item) % w == 0;
      if (ok) {
        unit = w;
        break;
      }
    }
  }
  if (unit != item) {
    const int64_t per = unit / item;
    g.sizes[0] /= per;
    for (int d = 1; d < g.ndim; ++d)
      for (int k = 0; k < 2; ++k) g.strides[d][k] /= per;
  }
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.sizes[d];
  switch (unit) {
    case 16:
      return launch_units<uint4>(s, n, g, dst, src);
    case 8:
      return launch_units<uint2>(s, n, g, dst, src);
    case 4:
      return launch_units<uint32_t>(s, n, g, dst, src);
    case 2:
      return launch_units<uint16_t>(s, n, g, dst, src);
    default:
      return launch_units<uint8_t>(s, n, g, dst, src);
  }
}

}  // namespace

void copy_convert(int device, void* dst, DType dst_type, const Geometry& dst_g, const void* src,
                  DType src_type, const Geometry& src_g) {
  const int64_t n = numel(dst_g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  if (dst_type == src_type) {
    const ew::Strided<2> g = ew::coalesce<2>({&dst_g, &src_g});
    const bool flat = g.ndim == 0 || (g.ndim == 1 && g.strides[0][0] == 1 && g.strides[0][1] == 1);
    if (flat) {
      MF_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * itemsize(dst_type), cudaMemcpyDeviceToDevice, s));
      return;
    }
    copy_raw(s, dst, src, g, static_cast<int64_t>(itemsize(dst_type)));
    return;
  }
  MF_CUDA_DISPATCH_ALL(dst_type, [&] {
    using D = scalar_t;
    MF_CUDA_DISPATCH_ALL(src_type, [&] {
      using S = scalar_t;
      // load/store convert through the compute types, exactly as the CPU copy does.
      ew::launch(device, IdentityF{}, static_cast<D*>(dst), dst_g, std::array<Geometry, 1>{src_g},
                 static_cast<const S*>(src));
    });
  });
}

void fill(int device, void* dst, DType type, const Geometry& g, double value_f, int64_t value_i,
          bool is_float) {
  const int64_t n = numel(g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const ew::Strided<1> cg = ew::coalesce<1>({&g});
  const bool flat = cg.ndim == 0 || (cg.ndim == 1 && cg.strides[0][0] == 1);
  // Zero is all-zero bytes in every dtype (IEEE +0, integers, bool).
  if (flat && (is_float ? value_f == 0.0 && !std::signbit(value_f) : value_i == 0)) {
    MF_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * itemsize(type), s));
    return;
  }
  MF_CUDA_DISPATCH_ALL(type, [&] {
    using T = scalar_t;
    auto run = [&](auto v) {
      if (n <= int64_t(UINT32_MAX))
        fill_kernel<uint32_t>
            <<<blocks_for(n, ew::kThreads), ew::kThreads, 0, s>>>(n, cg, static_cast<T*>(dst), v);
      else
        fill_kernel<uint64_t>
            <<<blocks_for(n, ew::kThreads), ew::kThreads, 0, s>>>(n, cg, static_cast<T*>(dst), v);
    };
    // store() rounds the double or int64 value to T directly (one rounding).
    if (is_float)
      run(value_f);
    else
      run(value_i);
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
