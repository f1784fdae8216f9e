#include "core/storage.h"

namespace microflex {

Storage::Storage(int64_t nbytes_, Device device_, bool fake_)
    : nbytes(nbytes_), device(device_), fake(fake_) {
  allocator_ = fake ? fake_allocator(device) : allocator_for(device);
  data = allocator_->allocate(nbytes);
}

Storage::~Storage() {
  allocator_->deallocate(data, nbytes);
}

}  // namespace microflex
