// CUDA launchers of softmax / log_softmax over the last dim of contiguous [outer, R]
// buffers, forward and fused backward (the op glue moves another dim last first). The
// semantics are the CPU kernels' (kernels/cpu/softmax.h, Note [Safe softmax]).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cuda {

// y = softmax(x) (or log_softmax when `log`) over each row of R; floating types.
void softmax_forward(int device, const void* x, void* y, DType type, int64_t outer, int64_t r,
                     bool log);

// softmax:     dx = y * (g - sum_R(g * y))
// log_softmax: dx = g - exp(y) * sum_R(g)
void softmax_backward(int device, const void* g, const void* y, void* dx, DType type, int64_t outer,
                      int64_t r, bool log);

}  // namespace microflex::cuda
