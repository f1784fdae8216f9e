// Random factories on the GPU: one thread per element, one Philox block each, with the
// same transforms as the CPU code in core/random.cpp (kernels/cpu/philox.h).
#include "kernels/cpu/philox.h"
#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/random.h"

namespace microflex::cuda {

namespace {

// Random mantissa bits of a uniform sample: as many as the 16-bit types hold, so their
// conversion is exact and stays < 1 (as uniform_bits in core/random.cpp).
template <typename T>
constexpr int uniform_bits() {
  if constexpr (std::is_same_v<T, __half>) return 11;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return 8;
  return 24;
}

template <typename T>
__global__ void rand_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const philox::Block b = philox::element_block(seed, offset, static_cast<uint64_t>(i));
    if constexpr (std::is_same_v<T, double>)
      out[i] = philox::uniform_double(b.x[0], b.x[1]);
    else
      store(out + i, philox::uniform_float(b.x[0], uniform_bits<T>()));
  }
}

template <typename T>
__global__ void randn_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double z =
        philox::normal_double(philox::element_block(seed, offset, static_cast<uint64_t>(i)));
    // double -> acc -> T, the CPU's rounding path.
    store(out + i, static_cast<acc<T>>(z));
  }
}

template <typename T>
__global__ void randint_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, int64_t low,
                               uint64_t range) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r =
        philox::below(philox::element_block(seed, offset, static_cast<uint64_t>(i)), range);
    out[i] = static_cast<T>(static_cast<int64_t>(static_cast<uint64_t>(low) + r));
  }
}

constexpr int kThreads = 256;

}  // namespace

void rand_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    rand_kernel<scalar_t>
        <<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<scalar_t*>(out), n, seed, offset);
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void randn_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_DISPATCH_FLOATING(type, [&] {
    randn_kernel<scalar_t>
        <<<blocks_for(n, kThreads), kThreads, 0, s>>>(static_cast<scalar_t*>(out), n, seed, offset);
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void randint_fill(int device, void* out, DType type, int64_t n, uint64_t seed, uint64_t offset,
                  int64_t low, uint64_t range) {
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  if (type == DType::Int64) {
    randint_kernel<int64_t><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
        static_cast<int64_t*>(out), n, seed, offset, low, range);
  } else {
    MF_INTERNAL_ASSERT(type == DType::Int32, "randint_fill: dtype ", type);
    randint_kernel<int32_t><<<blocks_for(n, kThreads), kThreads, 0, s>>>(
        static_cast<int32_t*>(out), n, seed, offset, low, range);
  }
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
