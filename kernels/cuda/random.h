// CUDA launchers of the random factories rand, randn and randint. Element i of a
// contiguous output of n elements is a function of (seed, offset, i) only (Note [Random
// element layout] in kernels/cpu/philox.h), so the GPU draws the CPU's numbers: bit for
// bit for rand and randint; randn goes through double log/cos, whose device versions may
// differ from glibc's in the last bits of a float64 (float32 and narrower round alike).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace microflex::cuda {

// Uniform on [0, 1); floating types.
void rand_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset);
// Standard normal; floating types.
void randn_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset);
// low + (64 random bits mod range), range = high - low as unsigned; int32 or int64.
void randint_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset,
                  int64_t low, uint64_t range);

}  // namespace microflex::cuda
