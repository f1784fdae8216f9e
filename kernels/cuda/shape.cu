// CUDA kernels for tril/triu (a strided copy that zeroes outside a band, moving raw bits)
// and one_hot (one thread per output element, ids checked on the device).
#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/shape.h"

namespace microflex::cuda {

namespace {

constexpr int kThreads = 256;

bool is_contiguous(const Geometry& g) {
  int64_t expect = 1;
  for (int d = g.ndim - 1; d >= 0; --d) {
    if (g.sizes[d] != 1 && g.strides[d] != expect) return false;
    expect *= g.sizes[d];
  }
  return true;
}

int64_t numel(const Geometry& g) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.sizes[d];
  return n;
}

// dst [batch, rows, cols] (contiguous) from src (geometry sg); U has the dtype's width.
template <typename U, bool kContig>
__global__ void triangle_kernel(U* dst, const U* src, Geometry sg, int64_t rows, int64_t cols,
                                int64_t diagonal, bool lower, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % cols, row = (i / cols) % rows;
    const bool keep = lower ? col - row <= diagonal : col - row >= diagonal;
    dst[i] = keep ? src[kContig ? i : offset_of(i, sg)] : U(0);
  }
}

template <typename U>
void launch_triangle(void* dst, const void* src, const Geometry& sg, int64_t diagonal, bool lower,
                     int64_t n, cudaStream_t s) {
  const int64_t rows = sg.sizes[sg.ndim - 2], cols = sg.sizes[sg.ndim - 1];
  const unsigned int blocks = blocks_for(n, kThreads);
  if (is_contiguous(sg)) {
    triangle_kernel<U, true><<<blocks, kThreads, 0, s>>>(
        static_cast<U*>(dst), static_cast<const U*>(src), sg, rows, cols, diagonal, lower, n);
  } else {
    triangle_kernel<U, false><<<blocks, kThreads, 0, s>>>(
        static_cast<U*>(dst), static_cast<const U*>(src), sg, rows, cols, diagonal, lower, n);
  }
}

template <typename I, bool kContig>
__global__ void one_hot_kernel(int64_t* out, const I* ids, Geometry ig, int64_t num_classes,
                               int64_t n, IndexFault* fault) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / num_classes, c = i - r * num_classes;
    const int64_t id = static_cast<int64_t>(ids[kContig ? r : offset_of(r, ig)]);
    if (c == 0 && (id < 0 || id >= num_classes) &&
        atomicCAS(reinterpret_cast<unsigned long long*>(&fault->bad), 0ull, 1ull) == 0ull)
      fault->value = id;
    out[i] = id == c ? 1 : 0;
  }
}

template <typename I>
void launch_one_hot(int64_t* out, const void* ids, const Geometry& ig, int64_t num_classes,
                    int64_t n, IndexFault* fault, cudaStream_t s) {
  const unsigned int blocks = blocks_for(n, kThreads);
  if (is_contiguous(ig)) {
    one_hot_kernel<I, true>
        <<<blocks, kThreads, 0, s>>>(out, static_cast<const I*>(ids), ig, num_classes, n, fault);
  } else {
    one_hot_kernel<I, false>
        <<<blocks, kThreads, 0, s>>>(out, static_cast<const I*>(ids), ig, num_classes, n, fault);
  }
}

}  // namespace

void triangle(int device, void* dst, const void* src, int64_t itemsize, const Geometry& src_g,
              int64_t diagonal, bool lower) {
  const int64_t n = numel(src_g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  switch (itemsize) {
    case 1:
      launch_triangle<uint8_t>(dst, src, src_g, diagonal, lower, n, s);
      break;
    case 2:
      launch_triangle<uint16_t>(dst, src, src_g, diagonal, lower, n, s);
      break;
    case 4:
      launch_triangle<uint32_t>(dst, src, src_g, diagonal, lower, n, s);
      break;
    default:
      launch_triangle<uint64_t>(dst, src, src_g, diagonal, lower, n, s);
      break;
  }
  MF_CUDA_CHECK(cudaGetLastError());
}

IndexFault one_hot(int device, int64_t* out, const void* ids, bool ids_int32, const Geometry& ids_g,
                   int64_t num_classes, void* fault) {
  const int64_t n = numel(ids_g) * num_classes;
  if (n == 0) return {};
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  MF_CUDA_CHECK(cudaMemsetAsync(fault, 0, sizeof(IndexFault), s));
  auto* f = static_cast<IndexFault*>(fault);
  if (ids_int32)
    launch_one_hot<int32_t>(out, ids, ids_g, num_classes, n, f, s);
  else
    launch_one_hot<int64_t>(out, ids, ids_g, num_classes, n, f, s);
  MF_CUDA_CHECK(cudaGetLastError());
  IndexFault r;
  MF_CUDA_CHECK(cudaMemcpyAsync(&r, fault, sizeof(IndexFault), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  return r;
}

}  // namespace microflex::cuda
