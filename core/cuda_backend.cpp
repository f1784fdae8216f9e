// CUDA backend host code (Note [CUDA caching allocator]). Compiled only with CUDA.
#include "core/cuda_backend.h"

#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex {

extern void (*g_cross_device_copy)(const Tensor& dst, const Tensor& src);

namespace cuda {

void check_status(int status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  const auto err = static_cast<cudaError_t>(status);
  cudaGetLastError();  // clear a sticky launch error so the next call is not blamed
  MF_CHECK(false, "CUDA error: ", cudaGetErrorString(err), " (", cudaGetErrorName(err), ") in ",
           what, " at ", file, ":", line);
}

Geometry make_geometry(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                       const char* op) {
  MF_CHECK(sizes.size() <= static_cast<size_t>(kMaxDims), op, ": CUDA kernels support at most ",
           kMaxDims, " dims, got ", sizes.size());
  Geometry g;
  g.ndim = static_cast<int>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    g.sizes[i] = sizes[i];
    g.strides[i] = strides[i];
  }
  return g;
}

namespace {

constexpr int kMaxDevices = 64;

std::once_flag g_stream_once[kMaxDevices];
cudaStream_t g_streams[kMaxDevices];
std::atomic<bool> g_tf32{false};
std::atomic<bool> g_poison{std::getenv("MICROFLEX_CUDA_POISON") != nullptr &&
                           std::string(std::getenv("MICROFLEX_CUDA_POISON")) == "1"};

// Note [CUDA caching allocator]
// cudaMalloc and cudaFree synchronize the device and are slow, so freed blocks are kept
// in a free list keyed by size and handed out again. All work on a device runs on one
// stream, so a block freed by the host can be reused by the next kernel on that stream
// without an event: stream order guarantees the old kernels finished with it. Sizes round
// up to 512 bytes; a cached block is reused for a request up to 1/8 smaller. On
// cudaMalloc failure the cache is released and the call retried once; a second failure is
// an Error with the allocator's figures.
class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(int64_t nbytes) override {
    if (nbytes <= 0) return nullptr;
    const int64_t size = (nbytes + 511) / 512 * 512;
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= size + size / 8) {
      p = it->second;
      free_.erase(it);
    } else {
      set_device(device_);
      cudaError_t err = cudaMalloc(&p, static_cast<size_t>(size));
      if (err != cudaSuccess) {
        cudaGetLastError();
        log::debug("cudaMalloc of ", size, " bytes failed on cuda:", device_,
                   "; releasing cached blocks and retrying");
        release_cached();
        err = cudaMalloc(&p, static_cast<size_t>(size));
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        MF_CHECK(false, "CUDA out of memory on cuda:", device_, " allocating ", mib(nbytes),
                 " MiB: ", mib(allocated_), " MiB allocated by microflex, ", mib(reserved_),
                 " MiB reserved, ", mib(static_cast<int64_t>(free_b)), " MiB free of ",
                 mib(static_cast<int64_t>(total_b)), " MiB on the device");
      }
      reserved_ += size;
      sizes_[p] = size;
    }
    const int64_t block = sizes_[p];
    allocated_ += block;
    peak_ = std::max(peak_, allocated_);
    ++num_allocs_;
    if (g_poison.load()) {
      MF_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, static_cast<size_t>(block),
                                    static_cast<cudaStream_t>(stream(device_))));
    }
    return p;
  }

  void deallocate(void* p, int64_t) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t size = sizes_.at(p);
    allocated_ -= size;
    free_.emplace(size, p);
  }

  MemoryStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return MemoryStats{allocated_, peak_, reserved_, num_allocs_};
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = allocated_;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached();
  }

 private:
  static double mib(int64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }
  void release_cached() {
    set_device(device_);
    cudaStreamSynchronize(static_cast<cudaStream_t>(stream(device_)));
    for (auto& [size, p] : free_) {
      cudaFree(p);
      reserved_ -= size;
      sizes_.erase(p);
    }
    free_.clear();
  }

  int device_;
  mutable std::mutex mu_;
  std::multimap<int64_t, void*> free_;
  std::unordered_map<void*, int64_t> sizes_;
  int64_t allocated_ = 0, peak_ = 0, reserved_ = 0, num_allocs_ = 0;
};

CachingAllocator* allocator(int device) {
  static std::unique_ptr<CachingAllocator> allocs[kMaxDevices];
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (!allocs[device]) allocs[device] = std::make_unique<CachingAllocator>(device);
  return allocs[device].get();
}

// Pinned host buffer used to stage large host<->device copies.
struct Staging {
  std::mutex mu;
  void* ptr = nullptr;
  size_t size = 0;
  void* get(size_t n) {
    if (n > size) {
      if (ptr) cudaFreeHost(ptr);
      ptr = nullptr;
      MF_CUDA_CHECK(cudaHostAlloc(&ptr, n, cudaHostAllocDefault));
      size = n;
    }
    return ptr;
  }
};
Staging& staging() {
  static Staging s;
  return s;
}

constexpr size_t kStageChunk = size_t(8) << 20;  // copies above 1 MiB go through 8 MiB chunks

void copy_bytes(const Tensor& dst, const Tensor& src, size_t n) {
  void* d = dst.raw_data();
  const void* s = src.raw_data();
  if (src.is_cpu() && dst.is_cuda()) {
    const int dev = dst.device().index;
    set_device(dev);
    auto st = static_cast<cudaStream_t>(stream(dev));
    if (n < (size_t(1) << 20)) {
      MF_CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyHostToDevice, st));
      MF_CUDA_CHECK(cudaStreamSynchronize(st));
      return;
    }
    std::lock_guard<std::mutex> lock(staging().mu);
    char* buf = static_cast<char*>(staging().get(kStageChunk));
    for (size_t off = 0; off < n; off += kStageChunk) {
      const size_t len = std::min(kStageChunk, n - off);
      std::memcpy(buf, static_cast<const char*>(s) + off, len);
      MF_CUDA_CHECK(
          cudaMemcpyAsync(static_cast<char*>(d) + off, buf, len, cudaMemcpyHostToDevice, st));
      MF_CUDA_CHECK(cudaStreamSynchronize(st));
    }
  } else if (src.is_cuda() && dst.is_cpu()) {
    const int dev = src.device().index;
    set_device(dev);
    auto st = static_cast<cudaStream_t>(stream(dev));
    MF_CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToHost, st));
    MF_CUDA_CHECK(cudaStreamSynchronize(st));
  } else {
    const int sd = src.device().index, dd = dst.device().index;
    // Make the destination's stream wait for the source's queued work.
    MF_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream(sd))));
    set_device(dd);
    MF_CUDA_CHECK(cudaMemcpyPeerAsync(d, dd, s, sd, n, static_cast<cudaStream_t>(stream(dd))));
  }
}

// dst and src on different devices (or one of them on the host).
void cross_device_copy(const Tensor& dst, const Tensor& src) {
  ExcludeKeyGuard below(DispatchKeySet{DispatchKey::Autograd, DispatchKey::Tracing});
  Tensor s = src;
  if (s.sizes() != dst.sizes()) {
    // Broadcast on the destination device after an exact move.
    Tensor moved = Tensor::make(s.sizes(), s.dtype(), dst.device(), false);
    cross_device_copy(moved, s);
    Tensor d = dst;
    d.copy_(moved);
    return;
  }
  if (s.dtype() != dst.dtype()) s = s.to(dst.dtype());
  s = s.contiguous();
  Tensor d =
      dst.is_contiguous() ? dst : Tensor::make(dst.sizes(), dst.dtype(), dst.device(), false);
  copy_bytes(d, s, static_cast<size_t>(s.numel() * s.element_size()));
  if (!d.is_same(dst)) {
    Tensor out = dst;
    out.copy_(d);
  }
}

}  // namespace

void* stream(int device) {
  MF_CHECK(device >= 0 && device < kMaxDevices, "cuda: bad device index ", device);
  std::call_once(g_stream_once[device], [device] {
    set_device(device);
    MF_CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[device], cudaStreamNonBlocking));
  });
  return g_streams[device];
}

void set_device(int device) {
  thread_local int current = -1;
  if (current == device) return;
  MF_CUDA_CHECK(cudaSetDevice(device));
  current = device;
}

void synchronize(int device) {
  const int n = cuda_device_count();
  for (int d = 0; d < n; ++d)
    if (device < 0 || d == device)
      MF_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream(d))));
}

void empty_cache() {
  for (int d = 0; d < cuda_device_count(); ++d) allocator(d)->empty_cache();
}

void set_allow_tf32(bool allow) {
  g_tf32 = allow;
}
bool allow_tf32() {
  return g_tf32;
}
void set_poison_allocations(bool on) {
  g_poison = on;
}

bool device_memory(int device, int64_t* free_bytes, int64_t* total_bytes) {
  if (device < 0 || device >= cuda_device_count()) return false;
  set_device(device);
  size_t f = 0, t = 0;
  if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  *free_bytes = static_cast<int64_t>(f);
  *total_bytes = static_cast<int64_t>(t);
  return true;
}

}  // namespace cuda

int cuda_device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

void register_cuda_backend() {
  set_cuda_allocator([](int device) -> Allocator* { return cuda::allocator(device); });
  g_cross_device_copy = cuda::cross_device_copy;
}

}  // namespace microflex

#else

namespace microflex::cuda {
void synchronize(int) {}
void empty_cache() {}
bool device_memory(int, int64_t*, int64_t*) { return false; }
void set_allow_tf32(bool) {}
bool allow_tf32() {
  return false;
}
void set_poison_allocations(bool) {}
}  // namespace microflex::cuda

namespace microflex {
void register_cuda_backend() {}
}  // namespace microflex

#endif
