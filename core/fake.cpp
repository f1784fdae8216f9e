#include "core/fake.h"

namespace microflex {

FakeModeGuard::FakeModeGuard() : include_(DispatchKey::Fake) {
  reset_fake_peak(Device::cpu());
  for (int i = 0; i < 16; ++i) reset_fake_peak(Device::cuda(i));
}

int64_t FakeModeGuard::current_bytes(Device device) const {
  return fake_memory_stats(device).allocated;
}
int64_t FakeModeGuard::peak_bytes(Device device) const {
  return fake_memory_stats(device).peak;
}

bool fake_mode_active() {
  return local_dispatch_state().included.has(DispatchKey::Fake);
}

Tensor to_fake(const Tensor& t) {
  Tensor f = Tensor::make(t.sizes(), t.dtype(), t.device(), true, t.strides());
  f.impl()->wrapped_number = t.impl()->wrapped_number;
  if (t.requires_grad()) f.requires_grad_();
  return f;
}

}  // namespace microflex
