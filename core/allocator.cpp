#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

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

// Note [CPU block cache]
// Large blocks (1 MiB and up) come from the system as fresh mmap'd pages, and touching
// them costs a page fault per 4 KiB: for a 64 MiB elementwise result that is most of the
// op's time. Freed large blocks are therefore kept (up to 1 GiB) and handed out again for
// a request of the same rounded size or up to 1/8 smaller. `allocated` counts live bytes
// only; `reserved` adds the cached ones.
class CpuAllocator final : public Allocator {
 public:
  ~CpuAllocator() override { release_cached(); }

  void* allocate(int64_t nbytes) override {
    MF_CHECK(nbytes >= 0, "CPU allocator: negative size ", nbytes);
    if (nbytes == 0) return nullptr;
    const int64_t rounded = round_up(nbytes);
    void* p = nullptr;
    if (rounded >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = cache_.lower_bound(rounded);
      if (it != cache_.end() && it->first <= rounded + rounded / 8) {
        p = it->second;
        cached_bytes_ -= it->first;
        block_sizes_[p] = it->first;
        cache_.erase(it);
      }
    }
    if (!p) {
      p = std::aligned_alloc(64, static_cast<size_t>(rounded));
      MF_CHECK(p != nullptr, "CPU allocator: out of memory allocating ", nbytes,
               " bytes (allocated now: ", counters_.stats().allocated, " bytes)");
      if (rounded >= kCacheMin) {
        std::lock_guard<std::mutex> lock(mu_);
        block_sizes_[p] = rounded;
      }
    }
    counters_.add(nbytes);
    return p;
  }

  void deallocate(void* ptr, int64_t nbytes) override {
    if (!ptr) return;
    counters_.sub(nbytes);
    if (round_up(nbytes) >= kCacheMin) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = block_sizes_.find(ptr);
      if (it != block_sizes_.end()) {
        const int64_t size = it->second;
        block_sizes_.erase(it);
        if (cached_bytes_ + size <= kCacheMax) {
          cache_.emplace(size, ptr);
          cached_bytes_ += size;
          return;
        }
      }
    }
    std::free(ptr);
  }

  MemoryStats stats() const override {
    MemoryStats s = counters_.stats();
    std::lock_guard<std::mutex> lock(mu_);
    s.reserved = s.allocated + cached_bytes_;
    return s;
  }
  void reset_peak() override { counters_.reset_peak(); }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, p] : cache_) std::free(p);
    cache_.clear();
    cached_bytes_ = 0;
  }

 private:
  static constexpr int64_t kCacheMin = int64_t(1) << 20;
  static constexpr int64_t kCacheMax = int64_t(1) << 30;
  static int64_t round_up(int64_t n) {
    return n >= kCacheMin ? (n + 65535) / 65536 * 65536 : (n + 63) / 64 * 64;
  }

  Counters counters_;
  mutable std::mutex mu_;
  std::multimap<int64_t, void*> cache_;
  std::unordered_map<void*, int64_t> block_sizes_;
  int64_t cached_bytes_ = 0;
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

CpuAllocator* cpu_cache() {
  // Never destroyed: tensors in other static objects may be freed after main returns.
  static CpuAllocator* a = new CpuAllocator();
  return a;
}

}  // namespace

Allocator* cpu_allocator() { return cpu_cache(); }
void empty_cpu_cache() { cpu_cache()->release_cached(); }

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
