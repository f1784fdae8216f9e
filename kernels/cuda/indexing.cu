// CUDA kernels for advanced indexing: a gather that reads any strided source, an atomic
// scatter-add (the backward of every gather-like op) and masked_fill. Index bounds are
// checked on the device: a bad index is skipped (its output element written as 0) and
// reported through a fault record that the launcher reads back after a stream sync.
#include "kernels/cuda/copy.h"
#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/indexing.h"

namespace microflex::cuda {

namespace {

constexpr int kThreads = 256;

int64_t numel(const Geometry& g) {
  int64_t n = 1;
  for (int d = 0; d < g.ndim; ++d) n *= g.sizes[d];
  return n;
}

// Whether dims [from, ndim) of g are contiguous (row-major, innermost stride 1).
bool contiguous_from(const Geometry& g, int from) {
  int64_t expect = 1;
  for (int d = g.ndim - 1; d >= from; --d) {
    if (g.sizes[d] != 1 && g.strides[d] != expect) return false;
    expect *= g.sizes[d];
  }
  return true;
}

__device__ void record_fault(IndexFault* f, int j, int64_t v) {
  if (atomicCAS(reinterpret_cast<unsigned long long*>(&f->bad), 0ull, 1ull) == 0ull) {
    f->dim = j;
    f->value = v;
  }
}

// Element offset, in a tensor of geometry g whose first k dims are indexed, of the
// entry the index list selects at position p of P (Note [Index lists] in
// ops/indexing.cpp). An out-of-range index is recorded and clears `ok` (the caller then
// touches no memory: the indexed dim may even be empty).
__device__ __forceinline__ int64_t indexed_offset(int64_t p, const IndexArgs& ia, const Geometry& g,
                                                  IndexFault* fault, bool& ok) {
  int64_t coord[kMaxDims];
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; --d) {
    if (d < ia.ndim) {
      coord[d] = p % ia.P[d];
      p /= ia.P[d];
    }
  }
  int64_t off = 0;
#pragma unroll
  for (int j = 0; j < kMaxDims; ++j) {
    if (j < ia.k) {
      int64_t e = 0;
#pragma unroll
      for (int d = 0; d < kMaxDims; ++d)
        if (d < ia.ndim) e += coord[d] * ia.strides[j][d];
      int64_t v = ia.is_int32[j] ? static_cast<int64_t>(static_cast<const int32_t*>(ia.data[j])[e])
                                 : static_cast<const int64_t*>(ia.data[j])[e];
      const int64_t n = g.sizes[j];
      if (v < (ia.wrap_negative ? -n : 0) || v >= n) {
        record_fault(fault, j, v);
        ok = false;
        v = 0;
      } else if (v < 0) {
        v += n;
      }
      off += v * g.strides[j];
    }
  }
  return off;
}

// Offset of element c of the inner dims [k, ndim) of g.
__device__ __forceinline__ int64_t inner_offset(int64_t c, const Geometry& g, int k) {
  int64_t off = 0;
  for (int d = g.ndim - 1; d >= k; --d) {
    const int64_t s = g.sizes[d];
    off += (c % s) * g.strides[d];
    c /= s;
  }
  return off;
}

// out [P, inner] (contiguous) from src; one thread per output element. Elements are
// moved as raw bits (U has the dtype's width).
template <typename U, bool kInnerContig>
__global__ void gather_kernel(U* out, const U* src, Geometry sg, IndexArgs ia, int64_t inner,
                              int64_t n, IndexFault* fault) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = inner == 1 ? i : i / inner;
    const int64_t c = inner == 1 ? 0 : i - p * inner;
    bool ok = true;
    const int64_t base = indexed_offset(p, ia, sg, fault, ok);
    out[i] = ok ? src[base + (kInnerContig ? c : inner_offset(c, sg, ia.k))] : U(0);
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(double* p, double v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) {
  atomicAdd(p, v);
}
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  // Two's complement: unsigned wrap-around addition is signed addition.
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// dst (contiguous, geometry dg) [idx[p], c] += grad[p, c] for grad [P, inner]; A is the
// accumulation type (float for 16-bit grads).
template <typename A, typename G, bool kGradContig>
__global__ void scatter_add_kernel(A* dst, Geometry dg, const G* grad, Geometry gg, IndexArgs ia,
                                   int64_t inner, int64_t n, IndexFault* fault) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = inner == 1 ? i : i / inner;
    const int64_t c = inner == 1 ? 0 : i - p * inner;
    bool ok = true;
    const int64_t base = indexed_offset(p, ia, dg, fault, ok);
    if (ok)
      atomic_add(dst + base + c, static_cast<A>(load(grad + (kGradContig ? i : offset_of(i, gg)))));
  }
}

template <typename T, bool kContig>
__global__ void masked_fill_kernel(T* out, Geometry og, const T* t, Geometry tg, const bool* mask,
                                   Geometry mg, const T* value_dev, double value_f, int64_t value_i,
                                   bool value_is_float, int64_t n) {
  T v;
  if (value_dev != nullptr)
    v = *value_dev;
  else if (value_is_float)
    store(&v, value_f);
  else
    store(&v, value_i);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (kContig)
      out[i] = mask[i] ? v : t[i];
    else
      out[offset_of(i, og)] = mask[offset_of(i, mg)] ? v : t[offset_of(i, tg)];
  }
}

// Zeroes the fault record before a kernel; reads it back after (a stream sync).
void clear_fault(void* fault, cudaStream_t s) {
  MF_CUDA_CHECK(cudaMemsetAsync(fault, 0, sizeof(IndexFault), s));
}
IndexFault read_fault(const void* fault, cudaStream_t s) {
  IndexFault f;
  MF_CUDA_CHECK(cudaMemcpyAsync(&f, fault, sizeof(IndexFault), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  return f;
}

template <typename U>
void launch_gather(void* out, const void* src, const Geometry& sg, const IndexArgs& idx,
                   int64_t inner, int64_t n, IndexFault* fault, cudaStream_t s) {
  const unsigned int blocks = blocks_for(n, kThreads);
  if (contiguous_from(sg, idx.k)) {
    gather_kernel<U, true><<<blocks, kThreads, 0, s>>>(
        static_cast<U*>(out), static_cast<const U*>(src), sg, idx, inner, n, fault);
  } else {
    gather_kernel<U, false><<<blocks, kThreads, 0, s>>>(
        static_cast<U*>(out), static_cast<const U*>(src), sg, idx, inner, n, fault);
  }
}

template <typename A, typename G>
void launch_scatter(A* dst, const Geometry& dg, const G* grad, const Geometry& gg,
                    const IndexArgs& idx, int64_t inner, int64_t n, IndexFault* fault,
                    cudaStream_t s) {
  const unsigned int blocks = blocks_for(n, kThreads);
  if (contiguous_from(gg, 0)) {
    scatter_add_kernel<A, G, true>
        <<<blocks, kThreads, 0, s>>>(dst, dg, grad, gg, idx, inner, n, fault);
  } else {
    scatter_add_kernel<A, G, false>
        <<<blocks, kThreads, 0, s>>>(dst, dg, grad, gg, idx, inner, n, fault);
  }
}

int64_t positions(const IndexArgs& idx) {
  int64_t n = 1;
  for (int d = 0; d < idx.ndim; ++d) n *= idx.P[d];
  return n;
}

int64_t inner_numel(const Geometry& g, int k) {
  int64_t n = 1;
  for (int d = k; d < g.ndim; ++d) n *= g.sizes[d];
  return n;
}

}  // namespace

IndexFault index_gather(int device, void* out, const void* src, int64_t itemsize,
                        const Geometry& src_g, const IndexArgs& idx, void* fault) {
  const int64_t inner = inner_numel(src_g, idx.k);
  const int64_t n = positions(idx) * inner;
  if (n == 0) return {};
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  clear_fault(fault, s);
  auto* f = static_cast<IndexFault*>(fault);
  switch (itemsize) {
    case 1:
      launch_gather<uint8_t>(out, src, src_g, idx, inner, n, f, s);
      break;
    case 2:
      launch_gather<uint16_t>(out, src, src_g, idx, inner, n, f, s);
      break;
    case 4:
      launch_gather<uint32_t>(out, src, src_g, idx, inner, n, f, s);
      break;
    default:
      launch_gather<uint64_t>(out, src, src_g, idx, inner, n, f, s);
      break;
  }
  MF_CUDA_CHECK(cudaGetLastError());
  return read_fault(fault, s);
}

IndexFault index_scatter_add(int device, DType dtype, void* out, const Geometry& out_g,
                             const void* grad, const Geometry& grad_g, const IndexArgs& idx,
                             void* acc32, void* fault) {
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const int64_t total = numel(out_g);
  const bool half = dtype == DType::Float16 || dtype == DType::BFloat16;
  void* dst = half ? acc32 : out;
  const int64_t acc_size = half ? 4 : itemsize(dtype);
  if (total > 0) MF_CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<size_t>(total * acc_size), s));
  const int64_t inner = inner_numel(out_g, idx.k);
  const int64_t n = positions(idx) * inner;
  if (n == 0) {
    if (half && total > 0) copy_convert(device, out, dtype, out_g, acc32, DType::Float32, out_g);
    return {};
  }
  clear_fault(fault, s);
  auto* f = static_cast<IndexFault*>(fault);
  switch (dtype) {
    case DType::Float32:
      launch_scatter(static_cast<float*>(dst), out_g, static_cast<const float*>(grad), grad_g, idx,
                     inner, n, f, s);
      break;
    case DType::Float64:
      launch_scatter(static_cast<double*>(dst), out_g, static_cast<const double*>(grad), grad_g,
                     idx, inner, n, f, s);
      break;
    case DType::Float16:
      launch_scatter(static_cast<float*>(dst), out_g, static_cast<const __half*>(grad), grad_g, idx,
                     inner, n, f, s);
      break;
    case DType::BFloat16:
      launch_scatter(static_cast<float*>(dst), out_g, static_cast<const __nv_bfloat16*>(grad),
                     grad_g, idx, inner, n, f, s);
      break;
    case DType::Int32:
      launch_scatter(static_cast<int32_t*>(dst), out_g, static_cast<const int32_t*>(grad), grad_g,
                     idx, inner, n, f, s);
      break;
    case DType::Int64:
      launch_scatter(static_cast<int64_t*>(dst), out_g, static_cast<const int64_t*>(grad), grad_g,
                     idx, inner, n, f, s);
      break;
    default:
      break;
  }
  MF_CUDA_CHECK(cudaGetLastError());
  if (half) copy_convert(device, out, dtype, out_g, acc32, DType::Float32, out_g);
  return read_fault(fault, s);
}

void masked_fill(int device, DType dtype, void* out, const Geometry& out_g, const void* t,
                 const Geometry& t_g, const void* mask, const Geometry& mask_g,
                 const void* value_dev, double value_f, int64_t value_i, bool value_is_float) {
  const int64_t n = numel(out_g);
  if (n == 0) return;
  set_device(device);
  auto s = static_cast<cudaStream_t>(stream(device));
  const bool contig =
      contiguous_from(out_g, 0) && contiguous_from(t_g, 0) && contiguous_from(mask_g, 0);
  const unsigned int blocks = blocks_for(n, kThreads);
  MF_CUDA_DISPATCH_ALL(dtype, [&] {
    using T = scalar_t;
    if (contig) {
      masked_fill_kernel<T, true><<<blocks, kThreads, 0, s>>>(
          static_cast<T*>(out), out_g, static_cast<const T*>(t), t_g,
          static_cast<const bool*>(mask), mask_g, static_cast<const T*>(value_dev), value_f,
          value_i, value_is_float, n);
    } else {
      masked_fill_kernel<T, false><<<blocks, kThreads, 0, s>>>(
          static_cast<T*>(out), out_g, static_cast<const T*>(t), t_g,
          static_cast<const bool*>(mask), mask_g, static_cast<const T*>(value_dev), value_f,
          value_i, value_is_float, n);
    }
  });
  MF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace microflex::cuda
