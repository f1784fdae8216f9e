// Run-time compilation of CUDA C++ with NVRTC into a CUBIN for the device's architecture,
// loaded through the runtime's library API (cudaLibraryLoadData, CUDA 12+), cached in
// memory and on disk under MICROFLEX_CACHE_DIR (default ~/.cache/microflex).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace microflex::cuda {

struct NvrtcSource {
  std::string name;                                          // the program's file name in messages
  std::string source;                                        // the main source
  std::vector<std::pair<std::string, std::string>> headers;  // (include name, text)
  std::vector<std::string> options;                          // extra NVRTC options
};

// The kernel `kernel_name` (extern "C") of `src` compiled for `device`'s architecture,
// as a cudaKernel_t usable with cudaLaunchKernel. Throws microflex::Error with the NVRTC
// log on compile errors.
void* nvrtc_kernel(const NvrtcSource& src, const std::string& kernel_name, int device);
// Several kernels of one source: one cache key, one library load.
std::vector<void*> nvrtc_kernels(const NvrtcSource& src, const std::vector<std::string>& names,
                                 int device);

// `device`'s compute capability as major * 10 + minor (90 on an H100).
int device_arch(int device);

// The directory compiled CUBINs are kept in (created on demand).
std::string kernel_cache_dir();
// The cache file a source would use on `device` (for tests and tools).
std::string kernel_cache_path(const NvrtcSource& src, int device);

}  // namespace microflex::cuda
