// CUDA launchers for the elementwise ops (unary, binary, where, clamp): the same op enums
// and semantics as the CPU kernels (kernels/cpu/elementwise.h), device pointers on
// `device`, one Geometry per operand with the output's sizes (stride 0 where it broadcasts).
#pragma once
#include "core/dtype.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex::cuda {

// out = op(a); a has `dtype`, out has `dtype` (bool for LogicalNot).
void unary(int device, cpu::UnaryOp op, DType dtype, void* out, const Geometry& out_g,
           const void* a, const Geometry& a_g);

// out = op(a, b); a and b have `dtype`, out has `dtype` (bool for predicates).
// Note [Integer division by zero on the GPU]: integer remainder and floor_divide by zero
// write 0 instead of raising as the CPU does; detecting it would need a device sync on
// every call. Floating division by zero gives inf or nan as on the CPU.
void binary(int device, cpu::BinaryOp op, DType dtype, void* out, const Geometry& out_g,
            const void* a, const Geometry& a_g, const void* b, const Geometry& b_g);

// out = cond ? a : b; a, b and out have `dtype`.
void where(int device, DType dtype, void* out, const Geometry& out_g, const bool* cond,
           const Geometry& cond_g, const void* a, const Geometry& a_g, const void* b,
           const Geometry& b_g);

// min(max(a, lo), hi) with the CPU's bound rounding and NaN rules.
void clamp(int device, DType dtype, void* out, const Geometry& out_g, const void* a,
           const Geometry& a_g, const cpu::ClampBounds& bounds);

}  // namespace microflex::cuda
