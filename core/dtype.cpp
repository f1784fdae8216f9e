#include "core/dtype.h"

namespace microflex {

namespace detail {
void throw_error(const std::string& msg) {
  throw Error(msg);
}
void throw_internal(const char* cond, const char* file, int line, const std::string& msg) {
  throw Error(str_cat("internal error: ", cond, " failed at ", file, ":", line,
                      msg.empty() ? "" : ": ", msg,
                      " (this is a bug in microflex, please report it)"));
}
}  // namespace detail

int64_t itemsize(DType t) {
  switch (t) {
    case DType::Bool:
      return 1;
    case DType::Int32:
      return 4;
    case DType::Int64:
      return 8;
    case DType::Float16:
      return 2;
    case DType::BFloat16:
      return 2;
    case DType::Float32:
      return 4;
    case DType::Float64:
      return 8;
  }
  MF_INTERNAL_ASSERT(false, "bad dtype");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Bool:
      return "bool";
    case DType::Int32:
      return "int32";
    case DType::Int64:
      return "int64";
    case DType::Float16:
      return "float16";
    case DType::BFloat16:
      return "bfloat16";
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
  }
  return "?";
}

const char* dtype_short(DType t) {
  switch (t) {
    case DType::Bool:
      return "b8";
    case DType::Int32:
      return "i32";
    case DType::Int64:
      return "i64";
    case DType::Float16:
      return "f16";
    case DType::BFloat16:
      return "bf16";
    case DType::Float32:
      return "f32";
    case DType::Float64:
      return "f64";
  }
  return "?";
}

bool is_floating(DType t) {
  return t == DType::Float16 || t == DType::BFloat16 || t == DType::Float32 || t == DType::Float64;
}

bool is_integral(DType t, bool include_bool) {
  return t == DType::Int32 || t == DType::Int64 || (include_bool && t == DType::Bool);
}

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if (a == DType::Bool) return b;
  if (b == DType::Bool) return a;
  const bool fa = is_floating(a), fb = is_floating(b);
  if (fa && !fb) return a;
  if (fb && !fa) return b;
  if (!fa) return DType::Int64;  // int32 with int64
  // Both floating and different.
  if (a == DType::Float64 || b == DType::Float64) return DType::Float64;
  return DType::Float32;  // f16+bf16, f16+f32, bf16+f32
}

std::ostream& operator<<(std::ostream& os, DType t) {
  return os << dtype_name(t);
}

}  // namespace microflex
