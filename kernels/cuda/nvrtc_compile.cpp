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
#include <cstring>
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

// FNV-1a over 64-bit words (then the tail bytes), with a shift to mix high bits down: the
// key is computed on every fused call over ~40 KB of template text, 8x faster than bytes.
uint64_t fnv1a(uint64_t h, const std::string& s) {
  constexpr uint64_t kPrime = 1099511628211ull;
  const size_t words = s.size() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, s.data() + 8 * i, 8);
    h = (h ^ w) * kPrime;
    h ^= h >> 29;
  }
  for (size_t i = 8 * words; i < s.size(); ++i) h = (h ^ static_cast<unsigned char>(s[i])) * kPrime;
  h = (h ^ (0xff ^ s.size())) * kPrime;  // separator: ("ab", "c") and ("a", "bc") differ
  return h;
}

}  // namespace

// Read once per device.
int device_arch(int device) {
  static std::mutex mu;
  static std::map<int, int> archs;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = archs.find(device); it != archs.end()) return it->second;
  int major = 0, minor = 0;
  MF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  MF_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return archs[device] = major * 10 + minor;
}

namespace {

std::vector<std::string> all_options(const NvrtcSource& src, int arch) {
  // sm_90a: Hopper's own instructions (wgmma), in code that runs only on compute
  // capability 9.0, which is the device it is compiled for.
  const std::string target = "sm_" + std::to_string(arch) + (arch == 90 ? "a" : "");
  std::vector<std::string> o{"--gpu-architecture=" + target, "--std=c++17", "--use_fast_math"};
  o.insert(o.end(), src.options.begin(), src.options.end());
  return o;
}

std::string cache_key(const NvrtcSource& src, int arch) {
  static const std::pair<int, int> version = [] {
    int major = 0, minor = 0;
    MF_NVRTC_CHECK(nvrtcVersion(&major, &minor));
    return std::make_pair(major, minor);
  }();
  const auto [major, minor] = version;
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
  return (std::filesystem::path(kernel_cache_dir()) /
          (cache_key(src, device_arch(device)) + ".cubin"))
      .string();
}

std::vector<void*> nvrtc_kernels(const NvrtcSource& src, const std::vector<std::string>& names,
                                 int device) {
  // A loaded library per cache key, with the kernels taken from it so far by name.
  struct Library {
    cudaLibrary_t lib;
    std::map<std::string, cudaKernel_t> kernels;
  };
  static std::mutex mu;
  static std::map<std::string, Library> libraries;
  const int arch = device_arch(device);
  const std::string key = cache_key(src, arch);
  std::lock_guard<std::mutex> lock(mu);
  auto lib = libraries.find(key);
  if (lib == libraries.end()) {
    const std::filesystem::path dir = kernel_cache_dir();
    const std::filesystem::path file = dir / (key + ".cubin");
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
        std::ofstream out_file(tmp, std::ios::binary);
        out_file.write(cubin.data(), static_cast<std::streamsize>(cubin.size()));
      }
      std::filesystem::rename(tmp, file, ec);
      if (ec)
        log::warn("nvrtc: could not write the kernel cache file ", file.string(), ": ",
                  ec.message());
    }
    set_device(device);
    cudaLibrary_t l;
    MF_CUDA_CHECK(cudaLibraryLoadData(&l, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
    lib = libraries.emplace(key, Library{l, {}}).first;
  }
  std::vector<void*> out;
  for (const std::string& name : names) {
    auto it = lib->second.kernels.find(name);
    if (it == lib->second.kernels.end()) {
      cudaKernel_t kernel;
      MF_CUDA_CHECK(cudaLibraryGetKernel(&kernel, lib->second.lib, name.c_str()));
      it = lib->second.kernels.emplace(name, kernel).first;
    }
    out.push_back(reinterpret_cast<void*>(it->second));
  }
  return out;
}

void* nvrtc_kernel(const NvrtcSource& src, const std::string& kernel_name, int device) {
  return nvrtc_kernels(src, {kernel_name}, device).at(0);
}

}  // namespace microflex::cuda
