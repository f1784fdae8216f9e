// Writes the seed corpora of the fuzz targets: small valid safetensors, .npy and JSON
// files covering every dtype, 0-d and empty tensors, metadata and nested JSON.
// Usage: fuzz_make_seeds <dir>  (creates <dir>/corpus_<target>/...)
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "microflex/microflex.h"

namespace mf = microflex;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// The JSON header of a safetensors file (bytes 8 .. 8 + N).
std::string safetensors_header(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string h(n, '\0');
  f.read(h.data(), static_cast<std::streamsize>(n));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds <dir>\n";
    return 2;
  }
  const fs::path root = argv[1];
  const fs::path st = root / "corpus_fuzz_safetensors", npy = root / "corpus_fuzz_npy",
                 js = root / "corpus_fuzz_json";
  for (const auto& d : {st, npy, js}) fs::create_directories(d);

  const mf::Tensor f32 = mf::arange(0, 6, 1, {.dtype = mf::DType::Float32}).reshape({2, 3});
  const mf::Tensor f64 = mf::linspace(-1, 1, 5, {.dtype = mf::DType::Float64});
  const mf::Tensor f16 = mf::arange(0, 4, 1, {.dtype = mf::DType::Float16}).reshape({2, 2});
  const mf::Tensor bf16 = mf::arange(0, 3, 1, {.dtype = mf::DType::BFloat16});
  const mf::Tensor i32 = mf::arange(-2, 2, 1, {.dtype = mf::DType::Int32});
  const mf::Tensor i64 = mf::arange(0, 3, 1, {.dtype = mf::DType::Int64}).reshape({3, 1});
  const mf::Tensor b = mf::from_vector<bool>({true, false, true});
  const mf::Tensor scalar = mf::scalar_tensor(2.5, {.dtype = mf::DType::Float32});
  const mf::Tensor empty = mf::zeros({0, 3});

  mf::save_safetensors((st / "all_dtypes.safetensors").string(),
                       {{"f32", f32},
                        {"f64", f64},
                        {"f16", f16},
                        {"bf16", bf16},
                        {"i32", i32},
                        {"i64", i64},
                        {"b", b}},
                       {{"format", "pt"}, {"note", "seed"}});
  mf::save_safetensors((st / "single.safetensors").string(), {{"w", f32}});
  mf::save_safetensors((st / "scalar_empty.safetensors").string(), {{"s", scalar}, {"e", empty}});
  mf::save_safetensors((st / "no_tensors.safetensors").string(), {}, {{"k", "v"}});

  const std::vector<std::pair<std::string, mf::Tensor>> arrays = {
      {"f32", f32}, {"f64", f64}, {"f16", f16},       {"i32", i32},
      {"i64", i64}, {"bool", b},  {"scalar", scalar}, {"empty", empty}};
  for (const auto& [name, t] : arrays) mf::save_npy((npy / (name + ".npy")).string(), t);

  // JSON: the headers above plus hand-written values reaching every branch of the parser.
  int i = 0;
  for (const auto& e : fs::directory_iterator(st))
    write_text(js / ("header" + std::to_string(i++) + ".json"), safetensors_header(e.path()));
  write_text(js / "numbers.json",
             R"([0, -1, 1.5e-3, 9007199254740993, -0.0, 1E+2, 123456789012345678901234567890])");
  write_text(js / "strings.json",
             R"({"a": "\u00e9\ud83d\ude00\n\t\"\\\/", "b": "caf\u00e9 \u20ac"})");
  write_text(js / "nested.json", R"({"x": [[[{"y": null}]], true, false], "z": {}})");
  write_text(js / "utf8.json", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
  write_text(js / "scalars.json", " \n\t 42 ");
  std::cout << "seeds written under " << root << "\n";
  return 0;
}
