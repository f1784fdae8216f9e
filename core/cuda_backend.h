// The CUDA backend's host side: a caching allocator per device (cudaMalloc'd blocks
// reused by size, never managed memory), one stream per device, copies between host and
// device, and switches (TF32). Everything here is a no-op or an error without CUDA.
#pragma once
#include <cstdint>

#include "core/allocator.h"

namespace microflex::cuda {

// Waits for all work queued on `device`'s stream (-1: every device).
void synchronize(int device = -1);
// Returns cached, unused blocks to the driver.
void empty_cache();
// Free and total bytes of `device` (false without CUDA or on error).
bool device_memory(int device, int64_t* free_bytes, int64_t* total_bytes);
// TF32 tensor-core math for float32 matmuls (off by default, as in PyTorch).
void set_allow_tf32(bool allow);
bool allow_tf32();
// Fill every new allocation with 0xFF bytes (NaN for floats), so tests catch kernels
// that leave outputs unwritten. Also on when MICROFLEX_CUDA_POISON=1.
void set_poison_allocations(bool on);

}  // namespace microflex::cuda
