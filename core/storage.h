// Storage: a reference-counted buffer from an allocator, shared by a tensor and all its
// views. It carries the version counter in-place ops bump (Note [Version counter]).
#pragma once
#include <cstdint>

#include "core/allocator.h"
#include "core/device.h"

namespace microflex {

// Note [Version counter]
// Every in-place write to a storage bumps `version`. Autograd remembers the version of
// each tensor it saves for backward and refuses to run the backward if it changed:
// the saved value was overwritten. Views share the counter because they share storage.
struct Storage {
  Storage(int64_t nbytes, Device device, bool fake);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;  // null for fake storage
  int64_t nbytes = 0;
  Device device;
  bool fake = false;
  uint64_t version = 0;

 private:
  Allocator* allocator_ = nullptr;
};

}  // namespace microflex
