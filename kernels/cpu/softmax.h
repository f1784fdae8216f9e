// CPU kernels of softmax and log_softmax along one dim, forward and backward. Buffers are
// contiguous [outer, R, inner] with the softmax over R (Note [Safe softmax] in
// kernels/cpu/softmax.cpp). No Tensor here.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cpu {

// y = softmax(x) (or log_softmax when `log`) over R; floating types, computed in float for
// the 16-bit types.
void softmax_forward(const void* x, void* y, DType type, int64_t outer, int64_t r, int64_t inner,
                     bool log);

// softmax:     dx = y * (g - sum_R(g * y))
// log_softmax: dx = g - exp(y) * sum_R(g)
void softmax_backward(const void* g, const void* y, void* dx, DType type, int64_t outer, int64_t r,
                      int64_t inner, bool log);

}  // namespace microflex::cpu
