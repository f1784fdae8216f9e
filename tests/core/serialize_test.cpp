// Tensor files: round trips through safetensors and .npy for every dtype, malformed
// inputs built in memory (each must be a microflex::Error naming the problem, never a
// crash), and files written by PyTorch / NumPy (tools/make_torch_fixtures.py).
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "core/json.h"
#include "test_util.h"

namespace mf = microflex;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("mf_serialize_") + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

void append(Bytes& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}
void append(Bytes& b, const std::string& s) {
  append(b, s.data(), s.size());
}

// A safetensors file: header length (the real one unless given), header, `data_len`
// bytes of data.
Bytes make_st(const std::string& header, size_t data_len, int64_t declared_len = -1) {
  Bytes b;
  const uint64_t n = declared_len < 0 ? header.size() : static_cast<uint64_t>(declared_len);
  append(b, &n, 8);
  append(b, header);
  b.resize(b.size() + data_len, 0);
  return b;
}

// A .npy file: magic, version, header length in 2 (v1) or 4 bytes, header, data.
Bytes make_npy(const std::string& header, const Bytes& data, int major = 1, int minor = 0) {
  Bytes b;
  append(b, "\x93NUMPY", 6);
  b.push_back(uint8_t(major));
  b.push_back(uint8_t(minor));
  const uint32_t n = static_cast<uint32_t>(header.size());
  append(b, &n, major == 1 ? 2 : 4);
  append(b, header);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

template <typename T>
Bytes as_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

mf::NamedTensors load_st(const Bytes& b, std::map<std::string, std::string>* meta = nullptr) {
  return mf::load_safetensors_from_memory(b.data(), b.size(), meta);
}
mf::Tensor load_np(const Bytes& b) {
  return mf::load_npy_from_memory(b.data(), b.size());
}

// Random values exactly representable in every dtype they are stored in (multiples of
// 1/8 in [-16, 16] are exact in float16 and bfloat16), so round trips compare exactly.
std::vector<double> random_values(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-128, 128);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng) / 8.0;
  return v;
}

mf::Tensor make_tensor(const std::vector<double>& v, const mf::Shape& shape, mf::DType dtype) {
  return mf::from_vector<double>(v, shape).to(dtype);
}

void expect_same(const mf::Tensor& actual, const mf::Tensor& expected, const std::string& what) {
  EXPECT_EQ(actual.dtype(), expected.dtype()) << what;
  EXPECT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(actual.is_contiguous()) << what;
  // Serialization is a byte copy: values must match exactly.
  EXPECT_EQ(actual.to_vector<double>(), expected.to_vector<double>()) << what;
}

const mf::DType kAllDTypes[] = {mf::DType::Float32,  mf::DType::Float64, mf::DType::Float16,
                                mf::DType::BFloat16, mf::DType::Int32,   mf::DType::Int64,
                                mf::DType::Bool};

// A small set of tensors covering every dtype and layout: contiguous, transposed,
// sliced with a step, expanded (stride 0), 0-d and empty.
mf::NamedTensors sample_tensors() {
  std::mt19937 rng(1234);
  mf::NamedTensors out;
  for (mf::DType dt : kAllDTypes) {
    const std::string n = mf::dtype_short(dt);
    out.emplace_back(n + ".plain", make_tensor(random_values(5 * 7 * 3, rng), {5, 7, 3}, dt));
    out.emplace_back(n + ".transposed", make_tensor(random_values(4 * 6, rng), {4, 6}, dt).t());
    out.emplace_back(n + ".sliced",
                     make_tensor(random_values(9 * 5, rng), {9, 5}, dt).slice(0, 1, 8, 3));
    out.emplace_back(n + ".expanded",
                     make_tensor(random_values(3, rng), {3, 1}, dt).expand({3, 4}));
    out.emplace_back(n + ".scalar", make_tensor(random_values(1, rng), {}, dt));
    out.emplace_back(n + ".empty", mf::zeros({0, 3}, {.dtype = dt}));
  }
  return out;
}

}  // namespace

// ---- safetensors round trips ----

TEST(Safetensors, RoundTripEveryDTypeAndLayout) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const mf::NamedTensors in = sample_tensors();
  ASSERT_FALSE(in[1].second.is_contiguous());
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"quote\"and\\slash", "line\nbreak\ttab \x01"},
                                                   {"unicode", "h\xc3\xa9 \xe2\x82\xac"}};
  mf::save_safetensors(path, in, meta);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  std::map<std::string, std::string> meta_out;
  const mf::NamedTensors out = mf::load_safetensors(path, &meta_out);
  EXPECT_EQ(meta_out, meta);
  ASSERT_EQ(out.size(), in.size());
  std::map<std::string, mf::Tensor> expected(in.begin(), in.end());
  std::string prev;
  for (const auto& [name, t] : out) {
    EXPECT_LT(prev, name) << "tensors come back in name order";
    prev = name;
    ASSERT_TRUE(expected.count(name)) << name;
    expect_same(t, expected[name], name);
  }

  // The file itself: header padded to a multiple of 8 starting with '{', and data
  // offsets ascending in name order.
  const Bytes b = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(b[8], '{');
  const auto header = mf::json::parse(std::string(b.begin() + 8, b.begin() + 8 + n), "test");
  uint64_t offset = 0;
  std::string last_name;
  for (const auto& [name, v] : header.members) {
    if (name == "__metadata__") continue;
    EXPECT_LT(last_name, name);
    last_name = name;
    const auto& offs = v.find("data_offsets")->items;
    EXPECT_EQ(*offs[0].as_int64(), int64_t(offset)) << name;
    offset = *offs[1].as_int64();
  }
  EXPECT_EQ(8 + n + offset, b.size());
}

TEST(Safetensors, FromMemoryMatchesFileAndEmptyList) {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  mf::save_safetensors(path, {});
  std::map<std::string, std::string> meta = {{"stale", "x"}};
  EXPECT_TRUE(mf::load_safetensors(path, &meta).empty());
  EXPECT_TRUE(meta.empty());

  const std::string path2 = dir.file("one.safetensors");
  mf::save_safetensors(path2, {{"w", mf::arange(0, 6, 1, {.dtype = mf::DType::Float32})}});
  const Bytes b = read_bytes(path2);
  const auto out = load_st(b);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].second.to_vector<double>(), (std::vector<double>{0, 1, 2, 3, 4, 5}));
}

TEST(Safetensors, SaveOverwritesAtomically) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  mf::save_safetensors(path, {{"a", mf::ones({2})}});
  mf::save_safetensors(path, {{"b", mf::zeros({3})}});
  const auto out = mf::load_safetensors(path);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, "b");
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  // A failing rename (the target is a directory) leaves no temporary file behind.
  const std::string target = dir.file("a_directory");
  fs::create_directories(target);
  mftest::expect_error(
      [&] {
        mf::save_safetensors(target, {{"a", mf::ones({2})}});
      },
      {"save_safetensors", target, "cannot rename"});
  EXPECT_FALSE(fs::exists(target + ".tmp"));
}

TEST(Safetensors, SaveErrors) {
  TempDir dir;
  const std::string path = dir.file("e.safetensors");
  const mf::Tensor fake = mf::Tensor::make({2, 3}, mf::DType::Float32, mf::Device::cpu(), true);
  mftest::expect_error(
      [&] {
        mf::save_safetensors(path, {{"f", fake}});
      },
      {"save_safetensors", path, "\"f\"", "fake tensor", "[2, 3]"});
  mftest::expect_error(
      [&] {
        mf::save_safetensors(path, {{"u", mf::Tensor()}});
      },
      {"save_safetensors", "\"u\"", "undefined"});
  mftest::expect_error(
      [&] {
        mf::save_safetensors(path, {{"a", mf::ones({1})}, {"a", mf::ones({2})}});
      },
      {"save_safetensors", "duplicate tensor name \"a\""});
  mftest::expect_error(
      [&] {
        mf::save_safetensors(path, {{"__metadata__", mf::ones({1})}});
      },
      {"save_safetensors", "reserved"});
  mftest::expect_error(
      [&] {
        mf::save_safetensors(path, {{"bad\xff", mf::ones({1})}});
      },
      {"save_safetensors", "UTF-8"});
  EXPECT_FALSE(fs::exists(path));
  const std::string missing = dir.file("no/such/dir/x.safetensors");
  mftest::expect_error(
      [&] {
        mf::save_safetensors(missing, {{"a", mf::ones({1})}});
      },
      {"save_safetensors", missing, "cannot open"});
  mftest::expect_error([&] { mf::load_safetensors(missing); },
                       {"load_safetensors", missing, "cannot open"});
}

// ---- safetensors: malformed inputs ----

TEST(Safetensors, MalformedInputTable) {
  const std::string f32_2 = R"({"dtype":"F32","shape":[2],"data_offsets":)";
  struct Case {
    const char* what;
    Bytes file;
    std::string expected;
  };
  std::string deep(100000, '[');
  std::string deep_obj;
  for (int i = 0; i < 1000; ++i) deep_obj += "{\"a\":";
  Bytes len_max = make_st("{}", 0);
  std::memset(len_max.data(), 0xff, 8);
  const std::vector<Case> cases = {
      {"empty file", {}, "too short for the 8-byte header length"},
      {"7 bytes", Bytes(7, 0), "too short"},
      {"header length past the end", make_st("{}", 0, 3), "header length 3 exceeds the 2 bytes"},
      {"header length 2^62", make_st("{}", 0, int64_t(1) << 62), "exceeds"},
      {"header length 2^64-1", len_max, "header length 18446744073709551615 exceeds"},
      {"empty header", make_st("", 0), "unexpected end of input"},
      {"truncated JSON", make_st(R"({"a":{"dtype":"F32")", 0), "malformed JSON"},
      {"trailing garbage", make_st("{} x", 0), "trailing characters"},
      {"two values", make_st("{}{}", 0), "trailing characters"},
      {"root is an array", make_st("[]", 0), "header is a JSON array"},
      {"root is a number", make_st("7", 0), "expected an object"},
      {"not JSON", make_st("hello", 0), "malformed JSON"},
      {"bad literal", make_st(R"({"a":nul})", 0), "invalid literal"},
      {"leading zero", make_st(R"({"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}})", 8),
       "leading zero"},
      {"bad escape", make_st(R"({"a\q":1})", 0), "invalid escape"},
      {"control character", make_st("{\"a\x01\":1}", 0), "control character"},
      {"invalid UTF-8", make_st("{\"a\xc3\x28\":1}", 0), "invalid UTF-8"},
      {"lone surrogate", make_st(R"({"\ud800":1})", 0), "surrogate"},
      {"deep arrays", make_st(deep, 0), "nesting deeper than 64"},
      {"deep objects", make_st(deep_obj, 0), "nesting deeper than 64"},
      {"unclosed object", make_st(R"({"a":1,)", 0), "malformed JSON"},
      {"duplicate tensor", make_st(R"({"a":)" + f32_2 + R"([0,8]},"a":)" + f32_2 + "[8,16]}}", 16),
       "duplicate key \"a\""},
      {"duplicate inner key",
       make_st(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       "duplicate key \"dtype\""},
      {"entry not an object", make_st(R"({"a":[1,2]})", 0), "tensor \"a\": expected an object"},
      {"unknown key", make_st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
       "unexpected key \"x\""},
      {"missing dtype", make_st(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8),
       "missing \"dtype\""},
      {"missing offsets", make_st(R"({"a":{"dtype":"F32","shape":[2]}})", 8),
       "missing \"data_offsets\""},
      {"unsupported dtype U8",
       make_st(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2),
       "unsupported dtype \"U8\""},
      {"unsupported dtype F8",
       make_st(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
       "unsupported dtype \"F8_E4M3\""},
      {"lowercase dtype", make_st(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
       "unsupported dtype \"f32\""},
      {"dtype not a string", make_st(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       "dtype must be a string"},
      {"shape not an array", make_st(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape must be an array"},
      {"shape of strings",
       make_st(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
       "shape entry must be a non-negative integer, got a JSON string"},
      {"fractional shape",
       make_st(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8), "got 2.0"},
      {"negative shape", make_st(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "got -2"},
      {"shape beyond int64",
       make_st(R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}})", 8),
       "below 2^63"},
      {"overflowing shape",
       make_st(R"({"a":{"dtype":"F32","shape":[2147483648,2147483648,4],"data_offsets":[0,8]}})",
               8),
       "shape [2147483648, 2147483648, 4] is too large"},
      {"2^62 elements",
       make_st(R"({"a":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "too large"},
      {"huge dims with a zero",
       make_st(R"({"a":{"dtype":"F32","shape":[0,4611686018427387904,8],"data_offsets":[0,0]}})",
               0),
       "too large"},
      {"2^40 elements in 8 bytes",
       make_st(R"({"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}})", 8),
       "hold 8 bytes but shape [1099511627776] of F32 needs 4398046511104"},
      {"offsets past the end", make_st(R"({"a":)" + f32_2 + "[0,1000]}}", 8),
       "extend past the 8-byte data buffer"},
      {"offsets reversed", make_st(R"({"a":)" + f32_2 + "[8,0]}}", 8), "begin after end"},
      {"offsets not matching shape", make_st(R"({"a":)" + f32_2 + "[0,4]}}", 8),
       "hold 4 bytes but shape [2] of F32 needs 8"},
      {"offsets of 3", make_st(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", 8),
       "data_offsets must be an array [begin, end]"},
      {"negative offset", make_st(R"({"a":)" + f32_2 + "[-8,0]}}", 8), "got -8"},
      {"overlap", make_st(R"({"a":)" + f32_2 + R"([0,8]},"b":)" + f32_2 + "[4,12]}}", 12),
       "overlaps tensor \"a\""},
      {"gap", make_st(R"({"a":)" + f32_2 + R"([0,8]},"b":)" + f32_2 + "[12,20]}}", 20),
       "gap of 4 bytes"},
      {"trailing data", make_st(R"({"a":)" + f32_2 + "[0,8]}}", 12), "trailing bytes"},
      {"data shorter than the shape", make_st(R"({"a":)" + f32_2 + "[0,8]}}", 5),
       "extend past the 5-byte data buffer"},
      {"metadata not an object", make_st(R"({"__metadata__":[]})", 0),
       "__metadata__ must be an object"},
      {"metadata value not a string", make_st(R"({"__metadata__":{"k":1}})", 0),
       "__metadata__ value of \"k\" must be a string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    mftest::expect_error([&] { load_st(c.file); }, {"load_safetensors", "<memory>", c.expected});
  }
}

TEST(Safetensors, DimLimit) {
  std::string shape;
  for (int i = 0; i < 65; ++i) shape += i ? ",1" : "1";
  const Bytes b =
      make_st(R"({"a":{"dtype":"F32","shape":[)" + shape + R"(],"data_offsets":[0,4]}})", 4);
  mftest::expect_error([&] { load_st(b); }, {"load_safetensors", "shape has 65 dims"});
}

TEST(Safetensors, AcceptsOtherLayoutsOfValidFiles) {
  // Data in an order other than the names', whitespace and escapes in the header,
  // zero-size tensors anywhere, bool bytes other than 0/1 (normalised to true).
  const std::string h =
      " {\n \"b\" : {\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[8,8]},"
      "\"\\u0061\\ud83d\\ude00\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[8,11]},"
      "\"__metadata__\":{}}   ";
  Bytes b = make_st(h, 11);
  const float vals[2] = {1.5f, -2.0f};
  std::memcpy(b.data() + 8 + h.size(), vals, 8);
  b[8 + h.size() + 8] = 2;
  b[8 + h.size() + 10] = 1;
  std::map<std::string, std::string> meta = {{"old", "1"}};
  const auto out = load_st(b, &meta);
  EXPECT_TRUE(meta.empty());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].first, "b");
  EXPECT_EQ(out[0].second.to_vector<double>(), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(out[1].first, "e");
  EXPECT_EQ(out[1].second.sizes(), (mf::Shape{0}));
  EXPECT_EQ(out[2].first, "a\xf0\x9f\x98\x80");
  EXPECT_EQ(out[2].second.dtype(), mf::DType::Bool);
  EXPECT_EQ(out[2].second.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1}));
  const auto raw = static_cast<const uint8_t*>(out[2].second.raw_data());
  EXPECT_EQ(raw[0], 1);
}

// Every strict prefix of a valid file is an error, never an out-of-bounds read; each
// prefix is copied into its own buffer so that sanitizers see reads past its end.
TEST(Safetensors, EveryTruncationIsAnError) {
  TempDir dir;
  const std::string path = dir.file("small.safetensors");
  mf::save_safetensors(path,
                       {{"w", mf::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3})},
                        {"s", mf::scalar_tensor(7, {.dtype = mf::DType::Int64})},
                        {"h", mf::from_vector<float>({0.5f, 0.25f}).to(mf::DType::Float16)}},
                       {{"k", "v"}});
  const Bytes full = read_bytes(path);
  ASSERT_EQ(load_st(full).size(), 3u);
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    const Bytes prefix(full.begin(), full.begin() + n);
    mftest::expect_error([&] { load_st(prefix); }, {"load_safetensors", "<memory>"});
  }
  // Appending bytes is an error too.
  Bytes longer = full;
  longer.push_back(0);
  mftest::expect_error([&] { load_st(longer); }, {"trailing bytes"});
}

// Corrupting any single byte either still loads or is a microflex::Error.
TEST(Safetensors, SingleByteCorruptionNeverCrashes) {
  TempDir dir;
  const std::string path = dir.file("c.safetensors");
  mf::save_safetensors(
      path, {{"a", mf::ones({2, 2})}, {"b", mf::zeros({3}, {.dtype = mf::DType::Int32})}},
      {{"k", "v"}});
  const Bytes full = read_bytes(path);
  const uint8_t values[] = {0x00, 0xff, '"', '[', '{', '9', '-', ',', 0x80};
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t v : values) {
      Bytes b = full;
      b[i] = v;
      try {
        load_st(b);
      } catch (const mf::Error&) {
      }
    }
  }
}

// ---- .npy round trips ----

TEST(Npy, RoundTripEveryDTypeAndLayout) {
  TempDir dir;
  for (const auto& [name, t] : sample_tensors()) {
    if (t.dtype() == mf::DType::BFloat16) continue;
    SCOPED_TRACE(name);
    const std::string path = dir.file(name + ".npy");
    mf::save_npy(path, t);
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    expect_same(mf::load_npy(path), t, name);

    // The header as NumPy writes it: version 1.0, data 64-byte aligned, '\n'-terminated.
    const Bytes b = read_bytes(path);
    ASSERT_GE(b.size(), 10u);
    EXPECT_EQ(std::string(b.begin(), b.begin() + 6), "\x93NUMPY");
    EXPECT_EQ(b[6], 1);
    EXPECT_EQ(b[7], 0);
    const size_t header_len = b[8] | (b[9] << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u);
    EXPECT_EQ(b[10 + header_len - 1], '\n');
    const std::string header(b.begin() + 10, b.begin() + 10 + header_len);
    EXPECT_NE(header.find("'fortran_order': False"), std::string::npos) << header;
  }
  // Shape spelling: Python tuples.
  const std::string p = dir.file("shape.npy");
  mf::save_npy(p, mf::zeros({3}));
  const Bytes b1 = read_bytes(p);
  EXPECT_NE(std::string(b1.begin(), b1.end()).find("'shape': (3,), }"), std::string::npos);
  mf::save_npy(p, mf::zeros({}));
  const Bytes b0 = read_bytes(p);
  EXPECT_NE(std::string(b0.begin(), b0.end())
                .find("'descr': '<f4', 'fortran_order': False, "
                      "'shape': (), }"),
            std::string::npos);
}

TEST(Npy, SaveErrors) {
  TempDir dir;
  const std::string path = dir.file("b.npy");
  mftest::expect_error([&] { mf::save_npy(path, mf::ones({2}, {.dtype = mf::DType::BFloat16})); },
                       {"save_npy", path, "bfloat16 has no NumPy dtype", "save_safetensors"});
  const mf::Tensor fake = mf::Tensor::make({4}, mf::DType::Float32, mf::Device::cpu(), true);
  mftest::expect_error([&] { mf::save_npy(path, fake); }, {"save_npy", "fake tensor"});
  EXPECT_FALSE(fs::exists(path));
  mftest::expect_error([&] { mf::load_npy(path); }, {"load_npy", path, "cannot open"});
}

TEST(Npy, FortranOrderBigEndianAndVersions) {
  // (2, 3) in column-major order: a[i][j] = 3i + j is stored 0 3 1 4 2 5.
  const Bytes f23 = make_npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n",
                             as_bytes(std::vector<double>{0, 3, 1, 4, 2, 5}));
  const mf::Tensor a = load_np(f23);
  EXPECT_EQ(a.sizes(), (mf::Shape{2, 3}));
  EXPECT_TRUE(a.is_contiguous());
  EXPECT_EQ(a.to_vector<double>(), (std::vector<double>{0, 1, 2, 3, 4, 5}));

  // (2, 3, 4): element (i, j, k) = 100i + 10j + k sits at i + 2j + 6k.
  std::vector<int32_t> fdata(24), cexpect(24);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) {
        fdata[i + 2 * j + 6 * k] = 100 * i + 10 * j + k;
        cexpect[(i * 3 + j) * 4 + k] = 100 * i + 10 * j + k;
      }
  const mf::Tensor b = load_np(
      make_npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3, 4), }", as_bytes(fdata)));
  EXPECT_EQ(b.to_vector<int32_t>(), cexpect);
  // Fortran order of an empty array and of a 1-d array.
  EXPECT_EQ(
      load_np(make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (0, 5), }", {})).sizes(),
      (mf::Shape{0, 5}));
  EXPECT_EQ(load_np(make_npy("{'descr': '<i8', 'fortran_order': True, 'shape': (2,), }",
                             as_bytes(std::vector<int64_t>{7, -8})))
                .to_vector<int64_t>(),
            (std::vector<int64_t>{7, -8}));

  // Big-endian data is byte-swapped.
  Bytes be = as_bytes(std::vector<float>{1.5f, -3.25f});
  std::reverse(be.begin(), be.begin() + 4);
  std::reverse(be.begin() + 4, be.end());
  EXPECT_EQ(load_np(make_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", be))
                .to_vector<double>(),
            (std::vector<double>{1.5, -3.25}));
  Bytes be8 = as_bytes(std::vector<int64_t>{0x0102030405060708});
  std::reverse(be8.begin(), be8.end());
  EXPECT_EQ(load_np(make_npy("{'descr': '>i8', 'fortran_order': False, 'shape': (), }", be8))
                .item<int64_t>(),
            0x0102030405060708);

  // Versions 2.0 and 3.0 carry a 4-byte header length; double-quoted keys, '|' and '='
  // byte orders and a Python 2 long literal are accepted.
  const std::string h = "{\"descr\": \"|b1\", \"fortran_order\": False, \"shape\": (3L,)}";
  for (int major : {2, 3}) {
    const mf::Tensor t = load_np(make_npy(h, Bytes{1, 0, 7}, major));
    EXPECT_EQ(t.dtype(), mf::DType::Bool);
    EXPECT_EQ(t.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1}));
    EXPECT_EQ(static_cast<const uint8_t*>(t.raw_data())[2], 1);
  }
  EXPECT_EQ(load_np(make_npy("{'descr': '=f2', 'fortran_order': False, 'shape': (1,), }",
                             as_bytes(std::vector<uint16_t>{0x3c00})))
                .to_vector<double>(),
            (std::vector<double>{1.0}));
}

TEST(Npy, MalformedInputTable) {
  const std::string ok_prefix = "{'descr': '<f4', 'fortran_order': False, 'shape': ";
  const Bytes f2(8, 0);  // two float32
  Bytes bad_magic = make_npy(ok_prefix + "(2,), }", f2);
  bad_magic[1] = 'M';
  Bytes huge_len = make_npy(ok_prefix + "(2,), }", f2, 2);
  std::memset(huge_len.data() + 8, 0xff, 4);
  Bytes cut = make_npy(ok_prefix + "(2,), }", {});
  cut.resize(cut.size() - 3);
  struct Case {
    const char* what;
    Bytes file;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"empty", {}, "too short for the .npy magic"},
      {"bad magic", bad_magic, "bad magic"},
      {"version 4.0", make_npy(ok_prefix + "(2,), }", f2, 4),
       "unsupported .npy format version 4.0"},
      {"version 1.1", make_npy(ok_prefix + "(2,), }", f2, 1, 1), "version 1.1"},
      {"header length past the end", cut, "header length 57 exceeds the 54 bytes"},
      {"header length 2^32-1", huge_len, "header length 4294967295 exceeds"},
      {"not a dict", make_npy("['descr']", f2), "expected '{'"},
      {"missing descr", make_npy("{'fortran_order': False, 'shape': (2,), }", f2),
       "missing key 'descr'"},
      {"missing shape", make_npy("{'descr': '<f4', 'fortran_order': False}", f2),
       "missing key 'shape'"},
      {"missing fortran_order", make_npy("{'descr': '<f4', 'shape': (2,)}", f2),
       "missing key 'fortran_order'"},
      {"extra key", make_npy(ok_prefix + "(2,), 'extra': 1}", f2), "unexpected key 'extra'"},
      {"duplicate key", make_npy(ok_prefix + "(2,), 'shape': (2,)}", f2), "duplicate key 'shape'"},
      {"unterminated dict", make_npy(ok_prefix + "(2,), ", f2), "expected a quoted string"},
      {"unterminated string", make_npy("{'descr': '<f4", f2), "unterminated string"},
      {"escape", make_npy("{'descr': '<f\\4', 'fortran_order': False, 'shape': (2,)}", f2),
       "escapes"},
      {"trailing garbage", make_npy(ok_prefix + "(2,), } x", f2), "trailing characters"},
      {"fortran_order not bool",
       make_npy("{'descr': '<f4', 'fortran_order': 1, 'shape': (2,)}", f2),
       "fortran_order must be True or False"},
      {"shape a list", make_npy(ok_prefix + "[2], }", f2), "shape must be a tuple"},
      {"shape without comma", make_npy(ok_prefix + "(2), }", f2), "trailing comma"},
      {"shape of strings", make_npy(ok_prefix + "('2',), }", f2), "shape entries must be integers"},
      {"shape of floats", make_npy(ok_prefix + "(2.0,), }", f2), "expected ',' or ')'"},
      {"negative dim", make_npy(ok_prefix + "(-2,), }", f2), "negative dimension"},
      {"dim beyond int64", make_npy(ok_prefix + "(99999999999999999999,), }", f2),
       "does not fit in int64"},
      {"overflowing shape", make_npy(ok_prefix + "(2147483648, 2147483648, 4), }", f2),
       "shape (2147483648, 2147483648, 4) is too large"},
      {"2^62 elements", make_npy(ok_prefix + "(4611686018427387904,), }", f2), "too large"},
      {"2^40 elements", make_npy(ok_prefix + "(1099511627776,), }", f2),
       "data is 8 bytes but shape (1099511627776,) of '<f4' needs 4398046511104"},
      {"data shorter", make_npy(ok_prefix + "(3,), }", f2), "data shorter than the shape"},
      {"trailing data", make_npy(ok_prefix + "(1,), }", f2), "4 trailing bytes"},
      {"descr u1", make_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (8,)}", f2),
       "unsupported dtype descr '|u1'"},
      {"descr i2", make_npy("{'descr': '<i2', 'fortran_order': False, 'shape': (4,)}", f2),
       "unsupported dtype descr '<i2'"},
      {"descr c8", make_npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", f2),
       "unsupported dtype descr '<c8'"},
      {"descr object", make_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", f2),
       "unsupported dtype descr '|O'"},
      {"descr unicode", make_npy("{'descr': '<U2', 'fortran_order': False, 'shape': (1,)}", f2),
       "unsupported dtype descr '<U2'"},
      {"structured",
       make_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", f2),
       "structured dtypes are not supported"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    mftest::expect_error([&] { load_np(c.file); }, {"load_npy", "<memory>", c.expected});
  }
}

TEST(Npy, EveryTruncationIsAnErrorAndCorruptionNeverCrashes) {
  TempDir dir;
  const std::string path = dir.file("small.npy");
  mf::save_npy(path, mf::from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2}));
  const Bytes full = read_bytes(path);
  ASSERT_EQ(load_np(full).sizes(), (mf::Shape{3, 2}));
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    const Bytes prefix(full.begin(), full.begin() + n);
    mftest::expect_error([&] { load_np(prefix); }, {"load_npy", "<memory>"});
  }
  const uint8_t values[] = {0x00, 0xff, '\'', '(', ')', ',', '9', '-', 'T', 0x80};
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t v : values) {
      Bytes b = full;
      b[i] = v;
      try {
        load_np(b);
      } catch (const mf::Error&) {
      }
    }
  }
}

// ---- Files written by PyTorch and NumPy ----

namespace {

mf::DType fixture_dtype(const std::string& s) {
  static const std::map<std::string, mf::DType> m = {
      {"F32", mf::DType::Float32},   {"F64", mf::DType::Float64}, {"F16", mf::DType::Float16},
      {"BF16", mf::DType::BFloat16}, {"I32", mf::DType::Int32},   {"I64", mf::DType::Int64},
      {"BOOL", mf::DType::Bool}};
  auto it = m.find(s);
  if (it == m.end()) throw std::runtime_error("fixture: unknown dtype " + s);
  return it->second;
}

// Checks a loaded tensor against {"dtype", "shape", "values"} from the sidecar. The
// values there were printed by Python from the stored dtype, so they are exact.
void expect_matches_fixture(const mf::Tensor& t, const mf::json::Value& spec,
                            const std::string& what) {
  EXPECT_EQ(t.dtype(), fixture_dtype(spec.find("dtype")->text)) << what;
  mf::Shape shape;
  for (const auto& d : spec.find("shape")->items) shape.push_back(*d.as_int64());
  EXPECT_EQ(t.sizes(), shape) << what;
  std::vector<double> expected;
  for (const auto& v : spec.find("values")->items) expected.push_back(v.as_double());
  EXPECT_EQ(t.to_vector<double>(), expected) << what;
}

}  // namespace

TEST(TensorFiles, ReadsTorchAndNumpyFixtures) {
  const std::string data = MICROFLEX_TEST_DATA_DIR;
  const std::string sidecar = data + "/torch_tensors_expected.json";
  if (!fs::exists(sidecar))
    GTEST_SKIP() << sidecar << " is absent; generate it with tools/make_torch_fixtures.py";
  const Bytes text = read_bytes(sidecar);
  const auto root = mf::json::parse(std::string(text.begin(), text.end()), sidecar);

  const auto& st = *root.find("safetensors");
  // Our own writer's layout, and the `safetensors` package's when it was installed.
  ASSERT_FALSE(st.find("files")->items.empty());
  for (const auto& file : st.find("files")->items) {
    SCOPED_TRACE(file.text);
    std::map<std::string, std::string> meta;
    const auto tensors = mf::load_safetensors(data + "/" + file.text, &meta);
    const auto& specs = st.find("tensors")->members;
    ASSERT_EQ(tensors.size(), specs.size());
    for (const auto& [name, spec] : specs) {
      const auto it = std::find_if(tensors.begin(), tensors.end(),
                                   [&](const auto& p) { return p.first == name; });
      ASSERT_NE(it, tensors.end()) << name;
      expect_matches_fixture(it->second, spec, name);
    }
    for (const auto& [k, v] : st.find("metadata")->members) EXPECT_EQ(meta[k], v.text) << k;
  }

  for (const auto& [file, spec] : root.find("npy")->members) {
    expect_matches_fixture(mf::load_npy(data + "/numpy_arrays/" + file), spec, file);
  }
}

// ---- Regressions found by the fuzz targets (tests/fuzz/) ----

// A tensor with a zero dim that is not the first ([3, 0]) loaded as "not contiguous",
// breaking the loaders' promise of contiguous tensors: Tensor::is_contiguous rejected
// empty tensors whose strides do not shrink with the 0. Empty tensors are contiguous.
TEST(FuzzRegression, SafetensorsEmptyTensorWithInnerZeroDimIsContiguous) {
  const std::string header = R"({"e":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]},)"
                             R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  Bytes b = make_st(header, 0);
  append(b, "\x00\x00\x20\x40", 4);  // 2.5f
  const mf::NamedTensors ts = load_st(b);
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[0].first, "e");
  EXPECT_EQ(ts[0].second.sizes(), (mf::Shape{3, 0}));
  EXPECT_TRUE(ts[0].second.is_contiguous());
  EXPECT_EQ(ts[1].second.item<float>(), 2.5f);
}

TEST(FuzzRegression, NpyEmptyArrayWithSeveralZeroDimsIsContiguous) {
  const mf::Tensor t =
      load_np(make_npy("{'descr': '<b1', 'fortran_order': False, 'shape': (0,0, 3), }\n", {}));
  EXPECT_EQ(t.sizes(), (mf::Shape{0, 0, 3}));
  EXPECT_EQ(t.dtype(), mf::DType::Bool);
  EXPECT_TRUE(t.is_contiguous());
  for (const mf::Shape& s : {mf::Shape{3, 0}, mf::Shape{0, 0, 3}, mf::Shape{2, 0, 5}})
    EXPECT_TRUE(mf::zeros(s).is_contiguous()) << mf::shape_str(s);
}
