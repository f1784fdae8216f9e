// NVRTC compilation with a two-level cache: key = FNV-1a hash of (sources, headers,
// options, architecture, NVRTC version); memory map -> cudaKernel_t, disk file
// <cache dir>/<key>.cubin written atomically (temporary file, then rename).
#include "kernels/cuda/nvrtc_compile.h"

#include <cuda_runtime.h>
#include <nvrtc.h>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "kernels/cuda/cuda_utils.h"

namespace microflex::cuda {

namespace {

void check_nvrtc(nvrtcResult r, const char* what, const char* file, int line) {
  MF_CHECK(r == NVRTC_SUCCESS, "NVRTC error: ", what, " failed with ", nvrtcGetErrorString(r), " (",
           file, ":", line, ")");
}
#define MF_NVRTC_CHECK(expr) check_nvrtc((expr), #expr, __FILE__, __LINE__)

uint64_t fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= 0xff;  // separator, so ("ab", "c") and ("a", "bc") differ
  h *= 1099511628211ull;
  return h;
}

int arch_of(int device) {
  int major = 0, minor = 0;
  MF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  MF_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major * 10 + minor;
}

std::vector<std::string> all_options(const NvrtcSource& src, int arch) {
  std::vector<std::string> o{"--gpu-architecture=sm_" + std::to_string(arch), "--std=c++17",
                             "--use_fast_math"};
  o.insert(o.end(), src.options.begin(), src.options.end());
  return o;
}

std::string cache_key(const NvrtcSource& src, int arch) {
  int major = 0, minor = 0;
  MF_NVRTC_CHECK(nvrtcVersion(&major, &minor));
  uint64_t h = 1469598103934665603ull;
  h = fnv1a(h, src.source);
  for (const auto& [n, t] : src.headers) h = fnv1a(fnv1a(h, n), t);
  for (const std::string& o : all_options(src, arch)) h = fnv1a(h, o);
  h = fnv1a(h, std::to_string(major) + "." + std::to_string(minor));
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%016llx-sm%d", static_cast<unsigned long long>(h), arch);
  return buf;
}

std::string compile(const NvrtcSource& src, int arch) {
  std::vector<const char*> hn, ht;
  for (const auto& [n, t] : src.headers) {
    hn.push_back(n.c_str());
    ht.push_back(t.c_str());
  }
  nvrtcProgram prog;
  MF_NVRTC_CHECK(nvrtcCreateProgram(&prog, src.source.c_str(), src.name.c_str(),
                                    static_cast<int>(hn.size()), ht.data(), hn.data()));
  const std::vector<std::string> opts = all_options(src, arch);
  std::vector<const char*> copts;
  for (const std::string& o : opts) copts.push_back(o.c_str());
  const nvrtcResult r = nvrtcCompileProgram(prog, static_cast<int>(copts.size()), copts.data());
  if (r != NVRTC_SUCCESS) {
    size_t n = 0;
    std::string log;
    if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
      log.resize(n);
      nvrtcGetProgramLog(prog, log.data());
    }
    nvrtcDestroyProgram(&prog);
    MF_CHECK(false, "NVRTC: compiling ", src.name, " for sm_", arch, " failed with ",
             nvrtcGetErrorString(r), " (", __FILE__, ":", __LINE__, "):\n", log);
  }
  size_t size = 0;
  MF_NVRTC_CHECK(nvrtcGetCUBINSize(prog, &size));
  std::string cubin(size, '\0');
  MF_NVRTC_CHECK(nvrtcGetCUBIN(prog, cubin.data()));
  MF_NVRTC_CHECK(nvrtcDestroyProgram(&prog));
  return cubin;
}

}  // namespace

std::string kernel_cache_dir() {
  std::filesystem::path dir;
  if (const char* d = std::getenv("MICROFLEX_CACHE_DIR"); d && *d) {
    dir = d;
  } else {
    const char* home = std::getenv("HOME");
    dir = std::filesystem::path(home && *home ? home : "/tmp") / ".cache" / "microflex";
  }
  return dir.string();
}

std::string kernel_cache_path(const NvrtcSource& src, int device) {
  return (std::filesystem::path(kernel_cache_dir()) / (cache_key(src, arch_of(device)) + ".cubin"))
      .string();
}

void* nvrtc_kernel(const NvrtcSource& src, const std::string& kernel_name, int device) {
  static std::mutex mu;
  static std::map<std::string, cudaKernel_t> loaded;
  const int arch = arch_of(device);
  const std::string key = cache_key(src, arch) + "/" + kernel_name;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = loaded.find(key); it != loaded.end()) return reinterpret_cast<void*>(it->second);

  const std::filesystem::path dir = kernel_cache_dir();
  const std::filesystem::path file = dir / (cache_key(src, arch) + ".cubin");
  std::string cubin;
  if (std::ifstream in(file, std::ios::binary); in) {
    std::ostringstream ss;
    ss << in.rdbuf();
    cubin = ss.str();
    log::debug("nvrtc: loaded ", src.name, " from ", file.string());
  }
  if (cubin.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    cubin = compile(src, arch);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    log::debug("nvrtc: compiled ", src.name, " for sm_", arch, " in ", ms, " ms");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::filesystem::path tmp =
        file.string() + ".tmp" + std::to_string(static_cast<long long>(::getpid()));
    {
      std::ofstream out(tmp, std::ios::binary);
      out.write(cubin.data(), static_cast<std::streamsize>(cubin.size()));
    }
    std::filesystem::rename(tmp, file, ec);
    if (ec)
      log::warn("nvrtc: could not write the kernel cache file ", file.string(), ": ", ec.message());
  }
  set_device(device);
  cudaLibrary_t lib;
  MF_CUDA_CHECK(cudaLibraryLoadData(&lib, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  cudaKernel_t kernel;
  MF_CUDA_CHECK(cudaLibraryGetKernel(&kernel, lib, kernel_name.c_str()));
  loaded[key] = kernel;
  return reinterpret_cast<void*>(kernel);
}

}  // namespace microflex::cuda
