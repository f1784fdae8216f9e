// A small strict JSON reader and writer for file headers (safetensors) and test sidecars.
// Input is untrusted: the parser bounds its nesting depth, rejects duplicate object keys,
// invalid UTF-8 and trailing garbage, and reports the byte offset of every error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace microflex::json {

enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };
const char* kind_name(Kind k);  // "number", "object", ...

struct Value {
  // Declared here, defined in json.cpp: an inline destructor would need
  // std::pair<std::string, Value> complete while Value is not (clang rejects that).
  Value();
  ~Value();
  Value(const Value&);
  Value(Value&&) noexcept;
  Value& operator=(const Value&);
  Value& operator=(Value&&) noexcept;

  Kind kind = Kind::Null;
  bool boolean = false;
  // The decoded text of a string, or the literal text of a number (kept exact so that
  // integers beyond 2^53 are not rounded through a double).
  std::string text;
  std::vector<Value> items;                            // Array
  std::vector<std::pair<std::string, Value>> members;  // Object, in file order

  bool is(Kind k) const { return kind == k; }
  // The member named `key` of an object, or null when absent.
  const Value* find(std::string_view key) const;
  // A number written without fraction or exponent that fits in int64; nullopt otherwise.
  std::optional<int64_t> as_int64() const;
  // Any number, as the nearest double.
  double as_double() const;
};

// Parses one JSON value spanning all of `text` (surrounding whitespace allowed).
// Throws microflex::Error "<context>: malformed JSON at byte N: <what>".
Value parse(std::string_view text, const std::string& context, int max_depth = 64);

// `s` as a JSON string literal, quotes included; `s` must be valid UTF-8.
std::string quote(std::string_view s);
bool valid_utf8(std::string_view s);

}  // namespace microflex::json
