// Element types, their sizes and names, PyTorch-style type promotion, the 16-bit float
// types (converted through float on the CPU) and the MF_DISPATCH_* macros that turn a
// runtime DType into a C++ type for kernels.
#pragma once
#include <cstdint>
#include <cstring>
#include <ostream>

#include "core/error.h"

namespace microflex {

enum class DType : uint8_t { Bool, Int32, Int64, Float16, BFloat16, Float32, Float64 };
constexpr int kNumDTypes = 7;

// IEEE binary16, stored as bits; arithmetic goes through float.
struct Half {
  uint16_t bits = 0;
  Half() = default;
  Half(float f) : bits(from_float(f)) {}  // NOLINT: implicit like a built-in float type
  operator float() const { return to_float(bits); }
  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
    if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to inf
    if (x < 0x38800000u) {                                  // subnormal or zero
      if (x < 0x33000000u) return uint16_t(sign);
      const uint32_t e = x >> 23;
      const uint32_t m = (x & 0x7fffffu) | 0x800000u;
      const uint32_t shift = 126 - e;  // 14..24
      uint32_t h = m >> shift;
      const uint32_t rem = m & ((1u << shift) - 1u);
      const uint32_t half = 1u << (shift - 1);
      if (rem > half || (rem == half && (h & 1u))) ++h;
      return uint16_t(sign | h);
    }
    uint32_t h = ((x - 0x38000000u) >> 13);
    const uint32_t rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  static float to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
      if (m == 0) {
        x = sign;
      } else {
        int shift = 0;
        while (!(m & 0x400u)) {
          m <<= 1;
          ++shift;
        }
        m &= 0x3ffu;
        x = sign | (uint32_t(113 - shift) << 23) | (m << 13);
      }
    } else if (e == 31) {
      x = sign | 0x7f800000u | (m << 13);
    } else {
      x = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

// bfloat16: the top half of a float32, rounded to nearest even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) : bits(from_float(f)) {}  // NOLINT
  operator float() const { return to_float(bits); }
  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
    const uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return uint16_t(x >> 16);
  }
  static float to_float(uint16_t b) {
    const uint32_t x = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

int64_t itemsize(DType t);
const char* dtype_name(DType t);   // "float32"
const char* dtype_short(DType t);  // "f32", used in graph printouts
bool is_floating(DType t);
bool is_integral(DType t, bool include_bool = false);
// Promotion like PyTorch's: bool < integers < floating; float16 and bfloat16 promote
// to float32 when mixed.
DType promote_types(DType a, DType b);
std::ostream& operator<<(std::ostream& os, DType t);

template <typename T>
struct dtype_of;
template <>
struct dtype_of<bool> {
  static constexpr DType value = DType::Bool;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::Int32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::Int64;
};
template <>
struct dtype_of<Half> {
  static constexpr DType value = DType::Float16;
};
template <>
struct dtype_of<BFloat16> {
  static constexpr DType value = DType::BFloat16;
};
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::Float32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::Float64;
};

// The type arithmetic runs in: float for the 16-bit types, the type itself otherwise.
template <typename T>
struct acc_type {
  using type = T;
};
template <>
struct acc_type<Half> {
  using type = float;
};
template <>
struct acc_type<BFloat16> {
  using type = float;
};
template <>
struct acc_type<bool> {
  using type = int64_t;
};
template <typename T>
using acc_t = typename acc_type<T>::type;

}  // namespace microflex

#define MF_DTYPE_CASE(DT, T, ...) \
  case ::microflex::DType::DT: {  \
    using scalar_t = T;           \
    return __VA_ARGS__();         \
  }

#define MF_DISPATCH_FLOATING(dtype, opname, ...)                                               \
  [&] {                                                                                        \
    switch (dtype) {                                                                           \
      MF_DTYPE_CASE(Float32, float, __VA_ARGS__)                                               \
      MF_DTYPE_CASE(Float64, double, __VA_ARGS__)                                              \
      MF_DTYPE_CASE(Float16, ::microflex::Half, __VA_ARGS__)                                   \
      MF_DTYPE_CASE(BFloat16, ::microflex::BFloat16, __VA_ARGS__)                              \
      default:                                                                                 \
        ::microflex::detail::throw_error(                                                      \
            ::microflex::detail::str_cat(opname, ": expected a floating dtype, got ", dtype)); \
    }                                                                                          \
  }()

#define MF_DISPATCH_INTEGRAL(dtype, opname, ...)                                               \
  [&] {                                                                                        \
    switch (dtype) {                                                                           \
      MF_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                               \
      MF_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                               \
      default:                                                                                 \
        ::microflex::detail::throw_error(                                                      \
            ::microflex::detail::str_cat(opname, ": expected an integer dtype, got ", dtype)); \
    }                                                                                          \
  }()

#define MF_DISPATCH_NUMERIC(dtype, opname, ...)                                               \
  [&] {                                                                                       \
    switch (dtype) {                                                                          \
      MF_DTYPE_CASE(Float32, float, __VA_ARGS__)                                              \
      MF_DTYPE_CASE(Float64, double, __VA_ARGS__)                                             \
      MF_DTYPE_CASE(Float16, ::microflex::Half, __VA_ARGS__)                                  \
      MF_DTYPE_CASE(BFloat16, ::microflex::BFloat16, __VA_ARGS__)                             \
      MF_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                              \
      MF_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                              \
      default:                                                                                \
        ::microflex::detail::throw_error(                                                     \
            ::microflex::detail::str_cat(opname, ": expected a numeric dtype, got ", dtype)); \
    }                                                                                         \
  }()

#define MF_DISPATCH_ALL(dtype, opname, ...)                                                \
  [&] {                                                                                    \
    switch (dtype) {                                                                       \
      MF_DTYPE_CASE(Float32, float, __VA_ARGS__)                                           \
      MF_DTYPE_CASE(Float64, double, __VA_ARGS__)                                          \
      MF_DTYPE_CASE(Float16, ::microflex::Half, __VA_ARGS__)                               \
      MF_DTYPE_CASE(BFloat16, ::microflex::BFloat16, __VA_ARGS__)                          \
      MF_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                           \
      MF_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                           \
      MF_DTYPE_CASE(Bool, bool, __VA_ARGS__)                                               \
    }                                                                                      \
    ::microflex::detail::throw_error(::microflex::detail::str_cat(opname, ": bad dtype")); \
  }()
