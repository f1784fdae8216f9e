// Device-side element types and the dtype switch for CUDA kernels: microflex's Half and
// BFloat16 are stored as __half / __nv_bfloat16 and computed in float.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex::cuda {

template <typename T>
struct Acc {
  using type = T;
};
template <>
struct Acc<__half> {
  using type = float;
};
template <>
struct Acc<__nv_bfloat16> {
  using type = float;
};
template <>
struct Acc<bool> {
  using type = int64_t;
};
template <typename T>
using acc = typename Acc<T>::type;

template <typename T>
__device__ __forceinline__ acc<T> load(const T* p) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(*p);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(*p);
  else
    return static_cast<acc<T>>(*p);
}

template <typename T, typename V>
__device__ __forceinline__ void store(T* p, V v) {
  if constexpr (std::is_same_v<T, __half>)
    *p = __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    *p = __float2bfloat16_rn(static_cast<float>(v));
  else if constexpr (std::is_same_v<T, bool>)
    *p = v != V(0);
  else
    *p = static_cast<T>(v);
}

// Offset (in elements) of linear index `i` of a row-major walk over g's sizes.
__device__ __forceinline__ int64_t offset_of(int64_t i, const Geometry& g) {
  int64_t off = 0;
  for (int d = g.ndim - 1; d >= 0; --d) {
    const int64_t s = g.sizes[d];
    off += (i % s) * g.strides[d];
    i /= s;
  }
  return off;
}

inline unsigned int blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(b < 65535 * 64 ? b : 65535 * 64);
}

}  // namespace microflex::cuda

#define MF_CUDA_TYPE_CASE(DT, T, ...) \
  case ::microflex::DType::DT: {      \
    using scalar_t = T;               \
    __VA_ARGS__();                    \
    break;                            \
  }

#define MF_CUDA_DISPATCH_ALL(dtype, ...)                    \
  switch (dtype) {                                          \
    MF_CUDA_TYPE_CASE(Float32, float, __VA_ARGS__)          \
    MF_CUDA_TYPE_CASE(Float64, double, __VA_ARGS__)         \
    MF_CUDA_TYPE_CASE(Float16, __half, __VA_ARGS__)         \
    MF_CUDA_TYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__) \
    MF_CUDA_TYPE_CASE(Int32, int32_t, __VA_ARGS__)          \
    MF_CUDA_TYPE_CASE(Int64, int64_t, __VA_ARGS__)          \
    MF_CUDA_TYPE_CASE(Bool, bool, __VA_ARGS__)              \
  }

#define MF_CUDA_DISPATCH_FLOATING(dtype, ...)               \
  switch (dtype) {                                          \
    MF_CUDA_TYPE_CASE(Float32, float, __VA_ARGS__)          \
    MF_CUDA_TYPE_CASE(Float64, double, __VA_ARGS__)         \
    MF_CUDA_TYPE_CASE(Float16, __half, __VA_ARGS__)         \
    MF_CUDA_TYPE_CASE(BFloat16, __nv_bfloat16, __VA_ARGS__) \
    default:                                                \
      break;                                                \
  }
