// Run-time compiled programs (kernels/cuda/nvrtc_compile.h): kernels and constants taken by
// name, and a kernel cache file that does not hold a whole CUBIN (Note [Kernel cache file]:
// cut off, altered, or not one at all) compiled again instead of reaching the driver.
#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/cuda/nvrtc_compile.h"

namespace {

namespace mfc = microflex::cuda;

// A program text no earlier call has seen (so neither cache has it): a constant of 3 v and
// a kernel that writes the constant plus the thread index.
mfc::NvrtcSource program(int v) {
  mfc::NvrtcSource s;
  s.name = "nvrtc_test.cu";
  s.source = "extern \"C\" {\n__constant__ int mf_test_constant = " + std::to_string(v) +
             " * 3;\n}\nextern \"C\" __global__ void mf_test_kernel(int* out) {\n"
             "  out[threadIdx.x] = mf_test_constant + static_cast<int>(threadIdx.x);\n}\n";
  return s;
}

// A value not used before in this process.
int fresh_value() {
  static int next = static_cast<int>(std::random_device{}() % 1000000) * 16;
  return ++next;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A cache file as microflex writes it: the header, then an ELF image.
bool is_cache_file(const std::string& bytes) {
  const char elf[4] = {'\x7f', 'E', 'L', 'F'};
  return bytes.size() > 28 && bytes.compare(0, 8, "MFCUBIN1") == 0 &&
         bytes.compare(24, 4, elf, 4) == 0;
}

// Launches `kernel` (mf_test_kernel) on 32 threads over a poisoned buffer; what it wrote.
std::vector<int> run_kernel(void* kernel) {
  int* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, 32 * sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaMemset(d, 0xff, 32 * sizeof(int)), cudaSuccess);
  void* args[] = {&d};
  EXPECT_EQ(cudaLaunchKernel(kernel, dim3(1), dim3(32), args, 0, nullptr), cudaSuccess);
  std::vector<int> out(32);
  EXPECT_EQ(cudaMemcpy(out.data(), d, 32 * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  return out;
}

// The program for v compiles (or loads), its constant reads 3 v and its kernel writes
// 3 v + i for thread i.
void expect_program_works(int v) {
  const mfc::NvrtcProgram p =
      mfc::nvrtc_program(program(v), {"mf_test_kernel"}, {"mf_test_constant"}, 0);
  ASSERT_EQ(p.kernels.size(), 1u);
  ASSERT_EQ(p.constants.size(), 1u);
  EXPECT_EQ(p.constants[0], 3 * v);
  const std::vector<int> got = run_kernel(p.kernels[0]);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], 3 * v + i) << i;
}

// Each test runs with a fresh, empty cache directory.
class NvrtcCompileTest : public mftest::CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped()) return;
    dir_ = std::filesystem::temp_directory_path() /
           ("microflex_nvrtc_test_" + std::to_string(std::random_device{}()));
    setenv("MICROFLEX_CACHE_DIR", dir_.c_str(), 1);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) {
      unsetenv("MICROFLEX_CACHE_DIR");
      std::filesystem::remove_all(dir_);
    }
    CudaTest::TearDown();
  }
  std::filesystem::path dir_;
};

TEST_F(NvrtcCompileTest, KernelsAndConstantsByName) {
  const int v = fresh_value();
  expect_program_works(v);
  EXPECT_TRUE(is_cache_file(read_file(mfc::kernel_cache_path(program(v), 0))));
  expect_program_works(v);  // from memory
  EXPECT_THROW(mfc::nvrtc_program(program(v), {"no_such_kernel"}, {}, 0), microflex::Error);
  EXPECT_THROW(mfc::nvrtc_program(program(v), {}, {"no_such_constant"}, 0), microflex::Error);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the failed look-ups left no error behind
  expect_program_works(v);
}

// A good cache file is loaded, not compiled again: program(v1)'s file holding program(v0)'s
// CUBIN gives v0's constant for v1.
TEST_F(NvrtcCompileTest, CacheFileIsLoaded) {
  const int v0 = fresh_value(), v1 = fresh_value();
  expect_program_works(v0);
  const std::string path = mfc::kernel_cache_path(program(v1), 0);
  std::ofstream(path, std::ios::binary) << read_file(mfc::kernel_cache_path(program(v0), 0));
  const mfc::NvrtcProgram p = mfc::nvrtc_program(program(v1), {}, {"mf_test_constant"}, 0);
  ASSERT_EQ(p.constants.size(), 1u);
  EXPECT_EQ(p.constants[0], 3 * v0);
}

TEST_F(NvrtcCompileTest, DamagedCacheFileIsCompiledAgain) {
  const int v0 = fresh_value();
  expect_program_works(v0);
  const std::string good = read_file(mfc::kernel_cache_path(program(v0), 0));
  ASSERT_TRUE(is_cache_file(good));
  std::string flipped = good;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x20);
  const std::vector<std::pair<const char*, std::string>> bad = {
      {"text", "not a kernel image"},
      {"header only", good.substr(0, 24)},
      {"cut at 64 bytes", good.substr(0, 64)},
      {"cut in half", good.substr(0, good.size() / 2)},
      {"one bit changed", flipped},
      {"a bare CUBIN", good.substr(24)},
      {"one byte more", good + "x"}};
  for (const auto& [what, bytes] : bad) {
    const int v = fresh_value();
    const std::string path = mfc::kernel_cache_path(program(v), 0);
    std::ofstream(path, std::ios::binary) << bytes;
    expect_program_works(v);  // v's constant: compiled, not v0's damaged file loaded
    const std::string rewritten = read_file(path);
    EXPECT_TRUE(is_cache_file(rewritten) && rewritten != bytes) << what << ": not rewritten";
  }
  // A directory where the file should be: compiled, and the directory left alone.
  const int v = fresh_value();
  std::filesystem::create_directories(mfc::kernel_cache_path(program(v), 0));
  expect_program_works(v);
  EXPECT_TRUE(std::filesystem::is_directory(mfc::kernel_cache_path(program(v), 0)));
}

}  // namespace
#endif
