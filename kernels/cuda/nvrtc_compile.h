// Run-time compilation of CUDA C++ with NVRTC into a CUBIN for the device's architecture,
// loaded through the runtime's library API (cudaLibraryLoadData, CUDA 12+), cached in
// memory and on disk under MICROFLEX_CACHE_DIR (default ~/.cache/microflex); a cache file
// that does not load is compiled again.
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

// The kernels (extern "C", as cudaKernel_t usable with cudaLaunchKernel) and the
// `extern "C" __constant__ int` values (a kernel's shared-memory size, say, written in the
// kernel only) of `src` compiled for `device`'s architecture, both by name, in one cache
// lookup. Throws microflex::Error with the NVRTC log on compile errors.
struct NvrtcProgram {
  std::vector<void*> kernels;
  std::vector<int> constants;
};
NvrtcProgram nvrtc_program(const NvrtcSource& src, const std::vector<std::string>& kernel_names,
                           const std::vector<std::string>& constant_names, int device);

// `device`'s compute capability as major * 10 + minor (90 on an H100).
int device_arch(int device);

// The directory compiled CUBINs are kept in (created on demand).
std::string kernel_cache_dir();
// The cache file a source would use on `device` (for tests and tools).
std::string kernel_cache_path(const NvrtcSource& src, int device);

}  // namespace microflex::cuda
