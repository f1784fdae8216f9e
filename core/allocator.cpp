#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "core/error.h"

namespace microflex {
namespace {

// Keeps the counters shared by the real and fake allocators.
class Counters {
 public:
  void add(int64_t n) {
    const int64_t now = allocated_.fetch_add(n) + n;
    int64_t p = peak_.load();
    while (now > p && !peak_.compare_exchange_weak(p, now)) {
    }
    ++num_allocs_;
  }
  void sub(int64_t n) { allocated_.fetch_sub(n); }
  MemoryStats stats() const {
    MemoryStats s;
    s.allocated = allocated_.load();
    s.peak = peak_.load();
    s.reserved = s.allocated;
    s.num_allocs = num_allocs_.load();
    return s;
  }
  void reset_peak() { peak_.store(allocated_.load()); }

 private:
  std::atomic<int64_t> allocated_{0}, peak_{0}, num_allocs_{0};
};

class CpuAllocator final : public Allocator {
 public:
  void* allocate(int64_t nbytes) override {
    MF_CHECK(nbytes >= 0, "CPU allocator: negative size ", nbytes);
    if (nbytes == 0) return nullptr;
    const int64_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, static_cast<size_t>(rounded));
    MF_CHECK(p != nullptr, "CPU allocator: out of memory allocating ", nbytes,
             " bytes (allocated now: ", counters_.stats().allocated, " bytes)");
    counters_.add(nbytes);
    return p;
  }
  void deallocate(void* ptr, int64_t nbytes) override {
    if (!ptr) return;
    std::free(ptr);
    counters_.sub(nbytes);
  }
  MemoryStats stats() const override { return counters_.stats(); }
  void reset_peak() override { counters_.reset_peak(); }

 private:
  Counters counters_;
};

class FakeAllocator final : public Allocator {
 public:
  void* allocate(int64_t nbytes) override {
    counters_.add(nbytes);
    return nullptr;
  }
  void deallocate(void*, int64_t nbytes) override { counters_.sub(nbytes); }
  MemoryStats stats() const override { return counters_.stats(); }
  void reset_peak() override { counters_.reset_peak(); }

 private:
  Counters counters_;
};

Allocator* (*g_cuda_factory)(int) = nullptr;

struct FakeRegistry {
  std::mutex mu;
  std::map<std::pair<int, int>, std::unique_ptr<FakeAllocator>> by_device;
};
FakeRegistry& fake_registry() {
  static FakeRegistry r;
  return r;
}

}  // namespace

Allocator* cpu_allocator() {
  static CpuAllocator a;
  return &a;
}

void set_cuda_allocator(Allocator* (*factory)(int)) {
  g_cuda_factory = factory;
}

Allocator* allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
  MF_CHECK(g_cuda_factory != nullptr && device.index < cuda_device_count(),
           "cannot allocate memory on ", device,
           ": microflex was built without CUDA or no such GPU is present (", cuda_device_count(),
           " CUDA devices); use fake mode for shape-only runs");
  return g_cuda_factory(device.index);
}

Allocator* fake_allocator(Device device) {
  auto& r = fake_registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto& slot = r.by_device[{static_cast<int>(device.type), device.index}];
  if (!slot) slot = std::make_unique<FakeAllocator>();
  return slot.get();
}

MemoryStats memory_stats(Device device) {
  return allocator_for(device)->stats();
}
void reset_peak_memory_stats(Device device) {
  allocator_for(device)->reset_peak();
}
MemoryStats fake_memory_stats(Device device) {
  return fake_allocator(device)->stats();
}
void reset_fake_peak(Device device) {
  fake_allocator(device)->reset_peak();
}

}  // namespace microflex
