// NVRTC compilation with a two-level cache: key = FNV-1a hash of (sources, headers,
// options, architecture, NVRTC version, microflex version); memory map -> loaded program,
// disk file <cache dir>/<key>.cubin (Note [Kernel cache file]) written atomically
// (temporary file, then rename).
#include "kernels/cuda/nvrtc_compile.h"

#include <cuda_runtime.h>
#include <nvrtc.h>

#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
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
constexpr uint64_t kFnvOffset = 1469598103934665603ull;  // FNV-1a's starting value

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
  uint64_t h = kFnvOffset;
  h = fnv1a(h, src.source);
  for (const auto& [n, t] : src.headers) h = fnv1a(fnv1a(h, n), t);
  for (const std::string& o : all_options(src, arch)) h = fnv1a(h, o);
  h = fnv1a(h, std::to_string(major) + "." + std::to_string(minor));
  h = fnv1a(h, MICROFLEX_VERSION);
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
    // Without HOME, a directory of this user's own under /tmp (Note [Kernel cache file]).
    const char* home = std::getenv("HOME");
    dir = home && *home
              ? std::filesystem::path(home) / ".cache" / "microflex"
              : std::filesystem::path("/tmp") / ("microflex-cache-" + std::to_string(::getuid()));
  }
  return dir.string();
}

std::string kernel_cache_path(const NvrtcSource& src, int device) {
  return (std::filesystem::path(kernel_cache_dir()) /
          (cache_key(src, device_arch(device)) + ".cubin"))
      .string();
}

namespace {

// A loaded program: its library, the kernels and constants taken from it so far by name.
struct Library {
  cudaLibrary_t lib;
  std::map<std::string, cudaKernel_t> kernels;
  std::map<std::string, int> ints;
};

std::mutex& libraries_mutex() {
  static std::mutex mu;
  return mu;
}

// Note [Kernel cache file]
// cudaLibraryLoadData takes no size: the driver reads as far as the image's own headers
// say, so a cut-off CUBIN (a full disk, an interrupted copy) would have it read past the
// buffer, and it does crash on one. The cache file therefore wraps the CUBIN: 8 bytes
// "MFCUBIN1", the CUBIN's byte count and a hash of it (the cache key's word-wise FNV-1a;
// both little-endian 64-bit), then the CUBIN. Only a regular file under 256 MB whose count
// and hash match, and whose CUBIN starts as an ELF image does, reaches the driver; any
// other file is compiled again and rewritten. The hash finds damage, not forgery: whoever
// can write the directory can run code on the GPU, so the directory must be the user's own
// (created owner-only; without HOME it is /tmp/microflex-cache-<uid>), else it is not used.
constexpr char kCacheMagic[8] = {'M', 'F', 'C', 'U', 'B', 'I', 'N', '1'};
constexpr size_t kCacheHeader = 24;
// Far past any kernel's CUBIN (a few MB): a bigger file is not read into memory.
constexpr long long kMaxCacheFile = 256ll << 20;
constexpr char kElfMagic[4] = {'\x7f', 'E', 'L', 'F'};

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

std::string wrap_cubin(const std::string& cubin) {
  std::string out(kCacheMagic, sizeof(kCacheMagic));
  put_u64(out, cubin.size());
  put_u64(out, fnv1a(kFnvOffset, cubin));
  return out + cubin;
}

// The CUBIN in a cache file's bytes, or why there is none.
std::string unwrap_cubin(const std::string& bytes, std::string& why) {
  if (bytes.size() < kCacheHeader || bytes.compare(0, 8, kCacheMagic, 8) != 0) {
    why = "not a microflex kernel cache file";
    return {};
  }
  const uint64_t size = get_u64(bytes, 8);
  if (size != bytes.size() - kCacheHeader) {
    why = "holds " + std::to_string(bytes.size() - kCacheHeader) + " bytes of a " +
          std::to_string(size) + "-byte CUBIN";
    return {};
  }
  std::string cubin = bytes.substr(kCacheHeader);
  if (fnv1a(kFnvOffset, cubin) != get_u64(bytes, 16)) {
    why = "its CUBIN does not match its hash";
    return {};
  }
  if (cubin.size() < 4 || cubin.compare(0, 4, kElfMagic, 4) != 0) {
    why = "its contents are not an ELF image";
    return {};
  }
  return cubin;
}

// Whether the cache directory may be trusted: it exists (created owner-only if not), is a
// directory and belongs to this user. Anyone who can write into it can run code on the GPU,
// so a directory of another user's is not used (with a warning, once per directory).
bool usable_cache_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::create_directories(dir, ec))
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  struct stat st {};
  const bool ok = ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::getuid();
  static std::set<std::string> warned;
  if (!ok && warned.insert(dir.string()).second)
    log::warn("nvrtc: not using the kernel cache directory ", dir.string(),
              " (missing, not a directory, or another user's); kernels are compiled per process");
  return ok;
}

// The cache file's program loaded, or nullptr when there is no file or (with a warning)
// it does not hold a program that loads (Note [Kernel cache file]).
cudaLibrary_t load_cached(const std::filesystem::path& file, const NvrtcSource& src) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return nullptr;
  std::string why;
  std::string cubin;
  if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_size > kMaxCacheFile) {
    why = std::to_string(st.st_size) + " bytes, past the " + std::to_string(kMaxCacheFile) +
          "-byte limit";
  } else {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    cubin = unwrap_cubin(ss.str(), why);
  }
  if (!cubin.empty()) {
    cudaLibrary_t l = nullptr;
    const cudaError_t e =
        cudaLibraryLoadData(&l, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
    if (e == cudaSuccess) {
      log::debug("nvrtc: loaded ", src.name, " from ", file.string());
      return l;
    }
    cudaGetLastError();  // not sticky: clear it so later calls do not report it
    why = std::string("the driver did not load it: ") + cudaGetErrorString(e);
  }
  log::warn("nvrtc: the kernel cache file ", file.string(), " is unusable (", why, "); compiling ",
            src.name, " again");
  return nullptr;
}

// Writes the cache file through a temporary file of a unique name and a rename, so a
// reader sees the old file or the whole new one; a failure is a warning (the next
// process compiles again).
void write_cached(const std::filesystem::path& file, const std::string& cubin) {
  static std::atomic<unsigned long long> serial{0};
  const std::filesystem::path tmp = file.string() + ".tmp" + std::to_string(::getpid()) + "-" +
                                    std::to_string(serial++) + "-" +
                                    std::to_string(std::random_device{}());
  std::string failed;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const std::string bytes = wrap_cubin(cubin);
    if (!out) failed = std::string("opening a temporary file: ") + std::strerror(errno);
    if (failed.empty() &&
        !out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())).flush())
      failed = std::string("writing: ") + std::strerror(errno);
  }
  std::error_code ec;
  if (failed.empty()) {
    std::filesystem::rename(tmp, file, ec);
    if (ec) failed = "renaming the temporary file: " + ec.message();
  }
  if (failed.empty()) return;
  std::filesystem::remove(tmp, ec);
  log::warn("nvrtc: could not write the kernel cache file ", file.string(), " (", failed, ")");
}

// The program with cache key `key` (src compiled for `arch`): from memory, else from the
// disk cache, else compiled (and written to the disk cache). The caller holds
// libraries_mutex() and has made the program's device current.
Library& library(const std::string& key, const NvrtcSource& src, int arch) {
  static std::map<std::string, Library> libraries;
  auto lib = libraries.find(key);
  if (lib != libraries.end()) return lib->second;
  const std::filesystem::path dir = kernel_cache_dir();
  const std::filesystem::path file = dir / (key + ".cubin");
  const bool use_disk = usable_cache_dir(dir);
  cudaLibrary_t l = use_disk ? load_cached(file, src) : nullptr;
  if (l == nullptr) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string cubin = compile(src, arch);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    log::debug("nvrtc: compiled ", src.name, " for sm_", arch, " in ", ms, " ms");
    if (use_disk) write_cached(file, cubin);
    MF_CUDA_CHECK(cudaLibraryLoadData(&l, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  }
  return libraries.emplace(key, Library{l, {}, {}}).first->second;
}

}  // namespace

NvrtcProgram nvrtc_program(const NvrtcSource& src, const std::vector<std::string>& kernel_names,
                           const std::vector<std::string>& constant_names, int device) {
  const int arch = device_arch(device);
  const std::string key = cache_key(src, arch);  // hashes the texts: outside the lock
  set_device(device);                            // loads and constant reads happen on it
  std::lock_guard<std::mutex> lock(libraries_mutex());
  Library& lib = library(key, src, arch);
  NvrtcProgram out;
  for (const std::string& name : kernel_names) {
    auto it = lib.kernels.find(name);
    if (it == lib.kernels.end()) {
      cudaKernel_t kernel;
      MF_CUDA_CHECK(cudaLibraryGetKernel(&kernel, lib.lib, name.c_str()));
      it = lib.kernels.emplace(name, kernel).first;
    }
    out.kernels.push_back(reinterpret_cast<void*>(it->second));
  }
  for (const std::string& name : constant_names) {
    auto it = lib.ints.find(name);
    if (it == lib.ints.end()) {
      void* ptr = nullptr;
      size_t bytes = 0;
      MF_CUDA_CHECK(cudaLibraryGetGlobal(&ptr, &bytes, lib.lib, name.c_str()));
      MF_CHECK(bytes == sizeof(int), "nvrtc_program: the constant ", name, " of ", src.name,
               " has ", bytes, " bytes, not an int's ", sizeof(int));
      int value = 0;
      MF_CUDA_CHECK(cudaMemcpy(&value, ptr, sizeof(int), cudaMemcpyDeviceToHost));
      it = lib.ints.emplace(name, value).first;
    }
    out.constants.push_back(it->second);
  }
  return out;
}

}  // namespace microflex::cuda
