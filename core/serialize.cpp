// safetensors and .npy readers and writers. Readers work on a ByteSource (a file or a
// memory block) and check every length, offset and shape against the bytes present
// before allocating; the data is then read straight into the new tensors' storage.
#include "core/serialize.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <tuple>

#include "core/dispatch.h"
#include "core/json.h"

namespace microflex {

// Both formats store little-endian data, which is copied as-is into tensors.
static_assert(std::endian::native == std::endian::little,
              "tensor file readers assume a little-endian host");

namespace {

// Larger shapes are refused outright; Tensor::make has the same element cap.
constexpr int64_t kMaxDims = 64;
constexpr uint64_t kMaxElements = uint64_t(1) << 56;
// The Rust safetensors reader refuses headers over 100 MB; NumPy caps .npy headers
// far lower. Both keep a hostile length field from allocating gigabytes of header.
constexpr uint64_t kMaxSafetensorsHeader = uint64_t(100) << 20;
constexpr uint64_t kMaxNpyHeader = uint64_t(1) << 20;

// The prefix of every error: "load_npy: weights.npy: ".
struct Ctx {
  const char* fn;
  std::string src;
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    detail::throw_error(detail::str_cat(fn, ": ", src, ": ", args...));
  }
};

// ---- Byte sources ----

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Copies bytes [offset, offset + n); the caller has checked the range.
  virtual void read(uint64_t offset, uint64_t n, void* dst) = 0;
};

class MemorySource final : public ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint64_t n, void* dst) override {
    MF_INTERNAL_ASSERT(offset <= size_ && n <= size_ - offset);
    if (n > 0) std::memcpy(dst, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

class FileSource final : public ByteSource {
 public:
  FileSource(const std::string& path, const Ctx& ctx) : ctx_(ctx) {
    f_ = std::fopen(path.c_str(), "rb");
    if (f_ == nullptr) ctx_.fail("cannot open for reading: ", std::strerror(errno));
    off_t end = -1;
    if (::fseeko(f_, 0, SEEK_END) == 0) end = ::ftello(f_);
    if (end < 0) {
      const int err = errno;
      std::fclose(f_);
      ctx_.fail("cannot determine the file size: ", std::strerror(err));
    }
    size_ = static_cast<uint64_t>(end);
  }
  ~FileSource() override { std::fclose(f_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint64_t n, void* dst) override {
    MF_INTERNAL_ASSERT(offset <= size_ && n <= size_ - offset);
    if (n == 0) return;
    // A short read here means the file shrank after its size was taken.
    if (::fseeko(f_, static_cast<off_t>(offset), SEEK_SET) != 0 || std::fread(dst, 1, n, f_) != n)
      ctx_.fail("read of ", n, " bytes at offset ", offset,
                " failed (file truncated while reading?)");
  }

 private:
  const Ctx& ctx_;
  std::FILE* f_ = nullptr;
  uint64_t size_ = 0;
};

// ---- Helpers shared by both formats ----

// Bytes of a C-order array of `shape`, or nullopt when the shape is beyond kMaxDims or
// kMaxElements. Zero dims do not excuse the others: the product of the nonzero dims
// must also fit, so that the strides of an empty tensor cannot overflow.
std::optional<uint64_t> checked_nbytes(const Shape& shape, int64_t item) {
  if (static_cast<int64_t>(shape.size()) > kMaxDims) return std::nullopt;
  uint64_t span = 1;
  bool empty = false;
  for (const int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) {
      empty = true;
      continue;
    }
    if (span > kMaxElements / static_cast<uint64_t>(d)) return std::nullopt;
    span *= static_cast<uint64_t>(d);
  }
  return empty ? 0 : span * static_cast<uint64_t>(item);
}

// Copies the elements of a strided array (sizes and strides in elements) into `dst` in
// C order. Rows whose inner stride is 1 go by memcpy.
void gather_bytes(const uint8_t* src, const Shape& sizes, const Shape& strides, size_t item,
                  uint8_t* dst) {
  const int64_t numel = shape_numel(sizes);
  if (numel == 0) return;
  const int64_t nd = static_cast<int64_t>(sizes.size());
  if (nd == 0) {
    std::memcpy(dst, src, item);
    return;
  }
  const int64_t inner = sizes[nd - 1];
  const int64_t inner_stride = strides[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  int64_t off = 0;  // elements from src to the current row
  for (int64_t row = 0, rows = numel / inner; row < rows; ++row) {
    if (inner_stride == 1) {
      std::memcpy(dst, src + off * item, inner * item);
    } else {
      for (int64_t j = 0; j < inner; ++j)
        std::memcpy(dst + j * item, src + (off + j * inner_stride) * item, item);
    }
    dst += inner * item;
    for (int64_t d = nd - 2; d >= 0; --d) {
      off += strides[d];
      if (++idx[d] < sizes[d]) break;
      off -= strides[d] * sizes[d];
      idx[d] = 0;
    }
  }
}

// A real CPU tensor holding `t`'s values, for writing. Fake tensors have no data to
// write; CUDA tensors are copied over without being traced or recorded on the tape.
Tensor host_tensor(const Tensor& t, const Ctx& ctx, const std::string& what) {
  if (!t.defined()) ctx.fail(what, " is undefined");
  if (t.is_fake())
    ctx.fail(what, " is a fake tensor (shape ", shape_str(t.sizes()), ", ", t.dtype(), ", ",
             t.device(), "): fake tensors carry no data to save");
  if (t.is_cpu()) return t;
  ExcludeKeyGuard guard({DispatchKey::Tracing, DispatchKey::Autograd, DispatchKey::Fake});
  return t.to(Device::cpu());
}

// `t`'s bytes in C order: its own memory when contiguous, else a copy in `scratch`.
const uint8_t* dense_bytes(const Tensor& t, std::vector<uint8_t>& scratch) {
  const auto* base = static_cast<const uint8_t*>(t.raw_data());
  if (t.is_contiguous()) return base;
  scratch.resize(static_cast<size_t>(t.numel() * t.element_size()));
  gather_bytes(base, t.sizes(), t.strides(), t.element_size(), scratch.data());
  return scratch.data();
}

// A bool byte other than 0 or 1 is undefined behaviour to read as a C++ bool.
void normalize_bools(const Tensor& t) {
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = p[i] != 0;
}

class FileWriter {
 public:
  FileWriter(std::FILE* f, const Ctx& ctx) : f_(f), ctx_(ctx) {}
  void write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, f_) != n)
      ctx_.fail("write failed: ", std::strerror(errno));
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

 private:
  std::FILE* f_;
  const Ctx& ctx_;
};

// Runs `body` on path + ".tmp", syncs it and renames it over `path`; on any failure the
// temporary file is removed and `path` is left as it was.
template <typename F>
void write_atomically(const std::string& path, const Ctx& ctx, F&& body) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) ctx.fail("cannot open ", tmp, " for writing: ", std::strerror(errno));
  try {
    FileWriter w(f, ctx);
    body(w);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      ctx.fail("write failed: ", std::strerror(errno));
    std::FILE* g = f;
    f = nullptr;
    if (std::fclose(g) != 0) ctx.fail("close failed: ", std::strerror(errno));
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      ctx.fail("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
  } catch (...) {
    if (f != nullptr) std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
}

// ---- safetensors ----

struct StDType {
  const char* name;
  DType dtype;
};
constexpr StDType kStDTypes[] = {{"F32", DType::Float32}, {"F64", DType::Float64},
                                 {"F16", DType::Float16}, {"BF16", DType::BFloat16},
                                 {"I32", DType::Int32},   {"I64", DType::Int64},
                                 {"BOOL", DType::Bool}};

const char* st_dtype_name(DType d) {
  for (const auto& e : kStDTypes)
    if (e.dtype == d) return e.name;
  MF_INTERNAL_ASSERT(false, "no safetensors name for ", d);
  return "";
}

struct StEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// A JSON value that must be an integer in [0, 2^63).
int64_t st_uint(const json::Value& v, const Ctx& ctx, const std::string& what) {
  const auto i = v.as_int64();
  if (!i.has_value() || *i < 0) {
    if (v.is(json::Kind::Number))
      ctx.fail(what, " must be a non-negative integer below 2^63, got ", v.text);
    ctx.fail(what, " must be a non-negative integer, got a JSON ", json::kind_name(v.kind));
  }
  return *i;
}

StEntry st_entry(const std::string& name, const json::Value& v, const Ctx& ctx) {
  const std::string what = "tensor " + json::quote(name);
  if (!v.is(json::Kind::Object))
    ctx.fail(what, ": expected an object, got a JSON ", json::kind_name(v.kind));
  for (const auto& [key, _] : v.members)
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      ctx.fail(what, ": unexpected key ", json::quote(key));
  const json::Value* dtype = v.find("dtype");
  const json::Value* shape = v.find("shape");
  const json::Value* offsets = v.find("data_offsets");
  if (dtype == nullptr) ctx.fail(what, ": missing \"dtype\"");
  if (shape == nullptr) ctx.fail(what, ": missing \"shape\"");
  if (offsets == nullptr) ctx.fail(what, ": missing \"data_offsets\"");

  StEntry e;
  e.name = name;
  if (!dtype->is(json::Kind::String))
    ctx.fail(what, ": dtype must be a string, got a JSON ", json::kind_name(dtype->kind));
  const StDType* found = nullptr;
  for (const auto& d : kStDTypes)
    if (dtype->text == d.name) found = &d;
  if (found == nullptr)
    ctx.fail(what, ": unsupported dtype ", json::quote(dtype->text),
             " (supported: F32, F64, F16, BF16, I32, I64, BOOL)");
  e.dtype = found->dtype;

  if (!shape->is(json::Kind::Array))
    ctx.fail(what, ": shape must be an array, got a JSON ", json::kind_name(shape->kind));
  if (static_cast<int64_t>(shape->items.size()) > kMaxDims)
    ctx.fail(what, ": shape has ", shape->items.size(), " dims (at most ", kMaxDims, ")");
  for (const auto& d : shape->items) e.shape.push_back(st_uint(d, ctx, what + ": shape entry"));

  if (!offsets->is(json::Kind::Array) || offsets->items.size() != 2)
    ctx.fail(what, ": data_offsets must be an array [begin, end]");
  e.begin = st_uint(offsets->items[0], ctx, what + ": data_offsets begin");
  e.end = st_uint(offsets->items[1], ctx, what + ": data_offsets end");
  return e;
}

NamedTensors load_safetensors_impl(ByteSource& src, const Ctx& ctx,
                                   std::map<std::string, std::string>* metadata) {
  const uint64_t size = src.size();
  if (size < 8) ctx.fail("file is ", size, " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  src.read(0, 8, &header_len);
  if (header_len > size - 8)
    ctx.fail("header length ", header_len, " exceeds the ", size - 8,
             " bytes that follow the length field");
  if (header_len > kMaxSafetensorsHeader)
    ctx.fail("header length ", header_len, " exceeds the limit of ", kMaxSafetensorsHeader,
             " bytes");
  std::string header(header_len, '\0');
  src.read(8, header_len, header.data());
  const json::Value root = json::parse(header, detail::str_cat(ctx.fn, ": ", ctx.src, ": header"));
  if (!root.is(json::Kind::Object))
    ctx.fail("header is a JSON ", json::kind_name(root.kind), ", expected an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::map<std::string, std::string> meta;
  std::vector<StEntry> entries;
  for (const auto& [name, v] : root.members) {
    if (name == "__metadata__") {
      if (!v.is(json::Kind::Object))
        ctx.fail("__metadata__ must be an object, got a JSON ", json::kind_name(v.kind));
      for (const auto& [k, mv] : v.members) {
        if (!mv.is(json::Kind::String))
          ctx.fail("__metadata__ value of ", json::quote(k), " must be a string, got a JSON ",
                   json::kind_name(mv.kind));
        meta[k] = mv.text;
      }
      continue;
    }
    StEntry e = st_entry(name, v, ctx);
    const std::string what = "tensor " + json::quote(name);
    if (e.begin > e.end)
      ctx.fail(what, ": data_offsets [", e.begin, ", ", e.end, "] has begin after end");
    if (e.end > data_size)
      ctx.fail(what, ": data_offsets [", e.begin, ", ", e.end, "] extend past the ", data_size,
               "-byte data buffer");
    const auto need = checked_nbytes(e.shape, itemsize(e.dtype));
    if (!need.has_value())
      ctx.fail(what, ": shape ", shape_str(e.shape), " is too large (more than 2^56 elements)");
    if (e.end - e.begin != *need)
      ctx.fail(what, ": data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin,
               " bytes but shape ", shape_str(e.shape), " of ", st_dtype_name(e.dtype), " needs ",
               *need);
    entries.push_back(std::move(e));
  }

  // The tensors must tile the data buffer: no overlap, no gap, nothing left over.
  std::sort(entries.begin(), entries.end(), [](const StEntry& a, const StEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const StEntry& e = entries[i];
    if (e.begin < covered)
      ctx.fail("tensor ", json::quote(e.name), " (data_offsets [", e.begin, ", ", e.end,
               "]) overlaps tensor ", json::quote(entries[i - 1].name));
    if (e.begin > covered)
      ctx.fail("gap of ", e.begin - covered, " bytes in the data buffer before tensor ",
               json::quote(e.name));
    covered = e.end;
  }
  if (covered != data_size)
    ctx.fail("data buffer is ", data_size, " bytes but the tensors cover ", covered,
             " (trailing bytes)");

  NamedTensors out;
  out.reserve(entries.size());
  for (const StEntry& e : entries) {
    Tensor t = Tensor::make(e.shape, e.dtype, Device::cpu(), false);
    if (e.end > e.begin) src.read(data_start + e.begin, e.end - e.begin, t.raw_data());
    if (e.dtype == DType::Bool) normalize_bools(t);
    out.emplace_back(e.name, std::move(t));
  }
  if (metadata != nullptr) *metadata = std::move(meta);
  return out;
}

// ---- .npy ----

struct NpyDType {
  const char* code;  // descr without the byte-order character
  DType dtype;
};
constexpr NpyDType kNpyDTypes[] = {{"f4", DType::Float32}, {"f8", DType::Float64},
                                   {"f2", DType::Float16}, {"i4", DType::Int32},
                                   {"i8", DType::Int64},   {"b1", DType::Bool}};

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// The header is a Python dict literal as written by numpy.lib.format, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only that subset of Python is accepted: quoted strings without escapes, True/False
// and tuples of non-negative integers.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view s, const Ctx& ctx) : s_(s), ctx_(ctx) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      const std::string key = parse_str();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (seen_descr) fail("duplicate key 'descr'");
        seen_descr = true;
        if (peek() == '[') fail("descr is a list: structured dtypes are not supported");
        if (peek() != '\'' && peek() != '"') fail("descr must be a string");
        h.descr = parse_str();
      } else if (key == "fortran_order") {
        if (seen_fortran) fail("duplicate key 'fortran_order'");
        seen_fortran = true;
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        if (seen_shape) fail("duplicate key 'shape'");
        seen_shape = true;
        h.shape = parse_tuple();
      } else {
        fail("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}'");
    }
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters after the header dict");
    if (!seen_descr) fail("missing key 'descr'");
    if (!seen_fortran) fail("missing key 'fortran_order'");
    if (!seen_shape) fail("missing key 'shape'");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    ctx_.fail("malformed header at byte ", pos_, ": ", what);
  }
  // '\0' past the end, which matches no expected character.
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (peek() == ' ' || peek() == '\n' || peek() == '\t' || peek() == '\r') ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_str() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    const size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\') fail("escapes in strings are not supported");
      ++pos_;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(start, pos_++ - start));
  }
  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("fortran_order must be True or False");
  }
  Shape parse_tuple() {
    if (peek() != '(') fail("shape must be a tuple");
    ++pos_;
    Shape shape;
    while (true) {
      skip_ws();
      if (peek() == ')') {
        ++pos_;
        return shape;
      }
      if (peek() == '-') fail("negative dimension in shape");
      if (peek() < '0' || peek() > '9') fail("shape entries must be integers");
      const size_t start = pos_;
      while (peek() >= '0' && peek() <= '9') ++pos_;
      int64_t d = 0;
      auto [p, ec] = std::from_chars(s_.data() + start, s_.data() + pos_, d);
      if (ec != std::errc() || p != s_.data() + pos_) fail("dimension does not fit in int64");
      if (peek() == 'L') ++pos_;  // Python 2 long literal
      if (static_cast<int64_t>(shape.size()) >= kMaxDims)
        fail(detail::str_cat("shape has more than ", kMaxDims, " dims"));
      shape.push_back(d);
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != ')') fail("expected ',' or ')' in shape");
      // A one-element tuple needs its comma: "(3)" is an int in parentheses.
      if (shape.size() == 1) fail("one-element shape tuple without a trailing comma");
      ++pos_;
      return shape;
    }
  }

  std::string_view s_;
  const Ctx& ctx_;
  size_t pos_ = 0;
};

std::string npy_shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

void byteswap_elements(const Tensor& t) {
  auto* p = static_cast<uint8_t*>(t.raw_data());
  const int64_t item = t.element_size();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) std::reverse(p + i * item, p + (i + 1) * item);
}

constexpr char kNpyMagic[] = "\x93NUMPY";

Tensor load_npy_impl(ByteSource& src, const Ctx& ctx) {
  const uint64_t size = src.size();
  uint8_t pre[12] = {};
  if (size < 8) ctx.fail("file is ", size, " bytes, too short for the .npy magic and version");
  src.read(0, 8, pre);
  if (std::memcmp(pre, kNpyMagic, 6) != 0) ctx.fail("not a .npy file (bad magic string)");
  const int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    ctx.fail("unsupported .npy format version ", major, ".", minor, " (supported: 1.0, 2.0, 3.0)");
  const uint64_t len_bytes = major == 1 ? 2 : 4;
  if (size < 8 + len_bytes) ctx.fail("file is ", size, " bytes, too short for the header length");
  src.read(8, len_bytes, pre + 8);
  const uint64_t header_len = major == 1 ? uint64_t(pre[8]) | uint64_t(pre[9]) << 8
                                         : uint64_t(pre[8]) | uint64_t(pre[9]) << 8 |
                                               uint64_t(pre[10]) << 16 | uint64_t(pre[11]) << 24;
  const uint64_t header_start = 8 + len_bytes;
  if (header_len > size - header_start)
    ctx.fail("header length ", header_len, " exceeds the ", size - header_start,
             " bytes that follow the length field");
  if (header_len > kMaxNpyHeader)
    ctx.fail("header length ", header_len, " exceeds the limit of ", kMaxNpyHeader, " bytes");
  std::string text(header_len, '\0');
  src.read(header_start, header_len, text.data());
  const NpyHeader h = NpyHeaderParser(text, ctx).parse();

  // descr: byte order ('<' little, '>' big, '|' not applicable, '=' native) + code.
  const std::string& d = h.descr;
  const NpyDType* found = nullptr;
  if (d.size() == 3 && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '='))
    for (const auto& e : kNpyDTypes)
      if (d.compare(1, 2, e.code) == 0) found = &e;
  if (found == nullptr)
    ctx.fail("unsupported dtype descr '", d,
             "' (supported: '<f4', '<f8', '<f2', '<i4', '<i8', "
             "'|b1' and their big-endian forms)");
  const bool swap = d[0] == '>' && itemsize(found->dtype) > 1;

  const auto need = checked_nbytes(h.shape, itemsize(found->dtype));
  if (!need.has_value())
    ctx.fail("shape ", npy_shape_str(h.shape), " is too large (more than 2^56 elements)");
  const uint64_t data_start = header_start + header_len;
  const uint64_t have = size - data_start;
  if (have < *need)
    ctx.fail("data is ", have, " bytes but shape ", npy_shape_str(h.shape), " of '", d, "' needs ",
             *need, " (data shorter than the shape)");
  if (have > *need) ctx.fail(have - *need, " trailing bytes after the array data");

  Tensor t = Tensor::make(h.shape, found->dtype, Device::cpu(), false);
  if (h.fortran_order && t.dim() > 1) {
    // Column-major data: element (i0, ..., in-1) sits at sum(ik * prod(d<k)).
    std::vector<uint8_t> raw(*need);
    src.read(data_start, *need, raw.data());
    Shape fstrides(h.shape.size());
    int64_t s = 1;
    for (size_t k = 0; k < h.shape.size(); ++k) {
      fstrides[k] = s;
      s *= std::max<int64_t>(h.shape[k], 1);
    }
    gather_bytes(raw.data(), h.shape, fstrides, t.element_size(),
                 static_cast<uint8_t*>(t.raw_data()));
  } else if (*need > 0) {
    src.read(data_start, *need, t.raw_data());
  }
  if (swap) byteswap_elements(t);
  if (found->dtype == DType::Bool) normalize_bools(t);
  return t;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const Ctx ctx{"save_safetensors", path};
  std::vector<std::pair<std::string, Tensor>> sorted;
  sorted.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!json::valid_utf8(name)) ctx.fail("tensor name is not valid UTF-8");
    if (name == "__metadata__") ctx.fail("\"__metadata__\" is reserved and cannot name a tensor");
    sorted.emplace_back(name, host_tensor(t, ctx, "tensor " + json::quote(name)));
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i].first == sorted[i - 1].first)
      ctx.fail("duplicate tensor name ", json::quote(sorted[i].first));

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!json::valid_utf8(k) || !json::valid_utf8(v))
        ctx.fail("metadata key or value is not valid UTF-8");
      if (!first) header += ',';
      first = false;
      header += json::quote(k) + ':' + json::quote(v);
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    const uint64_t nbytes = static_cast<uint64_t>(t.numel() * t.element_size());
    if (header.size() > 1) header += ',';
    header += json::quote(name) + ":{\"dtype\":\"" + st_dtype_name(t.dtype()) + "\",\"shape\":[";
    for (int64_t i = 0; i < t.dim(); ++i) {
      if (i > 0) header += ',';
      header += std::to_string(t.sizes()[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + ',' +
              std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += '}';
  // Padding keeps the data buffer 8-byte aligned for readers that map the file.
  header.append((8 - header.size() % 8) % 8, ' ');

  write_atomically(path, ctx, [&](FileWriter& w) {
    const uint64_t header_len = header.size();
    w.write(&header_len, 8);
    w.write(header);
    std::vector<uint8_t> scratch;
    for (const auto& [name, t] : sorted) {
      if (t.numel() == 0) continue;
      w.write(dense_bytes(t, scratch), static_cast<size_t>(t.numel() * t.element_size()));
    }
  });
}

NamedTensors load_safetensors(const std::string& path,
                              std::map<std::string, std::string>* metadata) {
  const Ctx ctx{"load_safetensors", path};
  FileSource src(path, ctx);
  return load_safetensors_impl(src, ctx, metadata);
}

NamedTensors load_safetensors_from_memory(const uint8_t* data, size_t size,
                                          std::map<std::string, std::string>* metadata) {
  const Ctx ctx{"load_safetensors", "<memory>"};
  MemorySource src(data, data == nullptr ? 0 : size);
  return load_safetensors_impl(src, ctx, metadata);
}

void save_npy(const std::string& path, const Tensor& tensor) {
  const Ctx ctx{"save_npy", path};
  if (tensor.defined() && tensor.dtype() == DType::BFloat16)
    ctx.fail(
        "bfloat16 has no NumPy dtype; save bfloat16 tensors with save_safetensors, or "
        "convert with .to(DType::Float32) first");
  const Tensor t = host_tensor(tensor, ctx, "tensor");
  const char* descr = nullptr;
  for (const auto& e : kNpyDTypes)
    if (e.dtype == t.dtype()) descr = e.code;
  MF_INTERNAL_ASSERT(descr != nullptr, "no .npy descr for ", t.dtype());
  std::string header = std::string("{'descr': '") + (t.dtype() == DType::Bool ? '|' : '<') + descr +
                       "', 'fortran_order': False, 'shape': " + npy_shape_str(t.sizes()) + ", }";
  // NumPy pads with spaces and ends with '\n' so that the data starts 64-byte aligned.
  const bool v1 = header.size() + 1 + 10 <= 65535;
  const size_t preamble = v1 ? 10 : 12;
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';

  write_atomically(path, ctx, [&](FileWriter& w) {
    w.write(kNpyMagic, 6);
    const uint32_t len = static_cast<uint32_t>(header.size());
    const uint8_t version[2] = {uint8_t(v1 ? 1 : 2), 0};
    w.write(version, 2);
    w.write(&len, v1 ? 2 : 4);  // little-endian host: the low bytes come first
    w.write(header);
    std::vector<uint8_t> scratch;
    if (t.numel() > 0)
      w.write(dense_bytes(t, scratch), static_cast<size_t>(t.numel() * t.element_size()));
  });
}

Tensor load_npy(const std::string& path) {
  const Ctx ctx{"load_npy", path};
  FileSource src(path, ctx);
  return load_npy_impl(src, ctx);
}

Tensor load_npy_from_memory(const uint8_t* data, size_t size) {
  const Ctx ctx{"load_npy", "<memory>"};
  MemorySource src(data, data == nullptr ? 0 : size);
  return load_npy_impl(src, ctx);
}

}  // namespace microflex
