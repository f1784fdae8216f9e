// Fake (shape-only) mode: inside a FakeModeGuard every tensor created or computed is
// fake — shape, strides, dtype, device, requires_grad, no data, no allocation — and the
// bytes an eager run would allocate are counted per device (Note [Fake memory]).
#pragma once
#include "core/dispatch.h"

namespace microflex {

// Note [Fake memory]
// Fake storages draw from an accounting-only allocator per device: creating one adds
// its byte size, freeing it subtracts. The peak of that count over a fake run estimates
// the eager run's peak, since the same tensors live and die at the same points.
// Allocations inside kernels (scratch buffers) are not seen.
class FakeModeGuard {
 public:
  FakeModeGuard();
  ~FakeModeGuard() = default;
  FakeModeGuard(const FakeModeGuard&) = delete;
  FakeModeGuard& operator=(const FakeModeGuard&) = delete;

  // Bytes held by fake tensors on `device` now / at most since this guard began.
  int64_t current_bytes(Device device = Device::cpu()) const;
  int64_t peak_bytes(Device device = Device::cpu()) const;

 private:
  IncludeKeyGuard include_;
};

bool fake_mode_active();
// A fake tensor with t's shape, strides, dtype, device and requires_grad.
Tensor to_fake(const Tensor& t);

}  // namespace microflex
