// Allocators hand out the bytes behind Storage and keep PyTorch-like statistics
// (allocated now, peak). The fake allocator hands out no memory at all but counts the
// bytes an eager run would take, which is how fake mode estimates peak memory.
#pragma once
#include <cstdint>

#include "core/device.h"

namespace microflex {

struct MemoryStats {
  int64_t allocated = 0;   // bytes held by live storages now
  int64_t peak = 0;        // highest `allocated` since the last reset
  int64_t reserved = 0;    // bytes the allocator holds from the system (caching)
  int64_t num_allocs = 0;  // allocations served
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(int64_t nbytes) = 0;
  virtual void deallocate(void* ptr, int64_t nbytes) = 0;
  virtual MemoryStats stats() const = 0;
  virtual void reset_peak() = 0;
};

// The CPU allocator: 64-byte aligned blocks, large ones cached (Note [CPU block cache]).
Allocator* cpu_allocator();
// Returns the CPU allocator's cached blocks to the system.
void empty_cpu_cache();
// The allocator for real memory on `device` (CUDA needs the CUDA backend).
Allocator* allocator_for(Device device);
// The accounting-only allocator fake tensors on `device` draw from.
Allocator* fake_allocator(Device device);

MemoryStats memory_stats(Device device);
void reset_peak_memory_stats(Device device);
MemoryStats fake_memory_stats(Device device);
void reset_fake_peak(Device device);

// Registered by the CUDA backend when it is built in.
void set_cuda_allocator(Allocator* (*factory)(int device_index));

}  // namespace microflex
