#include "kernels/cuda/copy.h"
#include "kernels/cuda/device_types.cuh"

namespace microflex::cuda {

namespace {

template <typename D, typename S>
__global__ void copy_kernel(D* dst, Geometry dg, const S* src, Geometry sg, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(dst + offset_of(i, dg), load(src + offset_of(i, sg)));
}

template <typename T, typename V>
__global__ void fill_kernel(T* dst, Geometry g, V v, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(dst + offset_of(i, g), v);
}

int64_t numel(const Geometry& g) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.sizes[d];
  return n;
}

bool is_contiguous(const Geometry& g) {
  int64_t expect = 1;
  for (int d = g.ndim - 1; d >= 0; --d) {
    if (g.sizes[d] != 1 && g.strides[d] != expect) return false;
    expect *= g.sizes[d];
  }
  return true;
}

}  // namespace

void copy_convert(int device, void* dst, DType dst_type, const Geometry& dst_g, const void* src,
                  DType src_type, const Geometry& src_g) {
  const int64_t n = numel(dst_g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int threads = 256;
  if (dst_type == src_type && is_contiguous(dst_g) && is_contiguous(src_g)) {
    MF_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * itemsize(dst_type), cudaMemcpyDeviceToDevice, s));
    return;
  }
  MF_CUDA_DISPATCH_ALL(dst_type, [&] {
    using D = scalar_t;
    MF_CUDA_DISPATCH_ALL(src_type, [&] {
      copy_kernel<<<blocks_for(n, threads), threads, 0, s>>>(
          static_cast<D*>(dst), dst_g, static_cast<const scalar_t*>(src), src_g, n);
    });
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

void fill(int device, void* dst, DType type, const Geometry& g, double value_f, int64_t value_i,
          bool is_float) {
  const int64_t n = numel(g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int threads = 256;
  MF_CUDA_DISPATCH_ALL(type, [&] {
    if (is_float) {
      fill_kernel<<<blocks_for(n, threads), threads, 0, s>>>(static_cast<scalar_t*>(dst), g,
                                                             value_f, n);
    } else {
      fill_kernel<<<blocks_for(n, threads), threads, 0, s>>>(static_cast<scalar_t*>(dst), g,
                                                             value_i, n);
    }
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
