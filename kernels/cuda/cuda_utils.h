// Host-side helpers shared by the CUDA launchers (.cu) and the backend (.cpp): status
// checks with file and line, the per-device stream, and strided geometry passed to
// kernels by value. Plain C++: no CUDA types, so ops/ can include it.
#pragma once
#include <cstdint>
#include <vector>

namespace microflex::cuda {

constexpr int kMaxDims = 10;

// Sizes and element strides of one operand, passed to kernels by value.
struct Geometry {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
};
// Errors (microflex::Error) for more than kMaxDims dims, naming `op`.
Geometry make_geometry(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                       const char* op);

// Throws microflex::Error naming `what`, the CUDA error string and file:line when
// `status` (a cudaError_t) is not success.
void check_status(int status, const char* what, const char* file, int line);
// The stream all work on `device` goes to (a cudaStream_t).
void* stream(int device);
// The device kernels for a tensor on cuda:`device` should run on; makes it current.
void set_device(int device);

}  // namespace microflex::cuda

#define MF_CUDA_CHECK(expr) \
  ::microflex::cuda::check_status(static_cast<int>(expr), #expr, __FILE__, __LINE__)
