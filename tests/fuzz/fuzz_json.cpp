// libFuzzer target: json::parse on arbitrary text must either return a value or throw
// microflex::Error. Every accepted string must be valid UTF-8 and survive
// quote() + parse() unchanged; every number must convert without crashing.
#include <string>
#include <string_view>

#include "core/json.h"
#include "fuzz_common.h"

namespace {

void check_string(const std::string& s) {
  if (!microflex::json::valid_utf8(s)) std::abort();
  const microflex::json::Value back = microflex::json::parse(microflex::json::quote(s), "quoted");
  if (!back.is(microflex::json::Kind::String) || back.text != s) std::abort();
}

void walk(const microflex::json::Value& v) {
  using microflex::json::Kind;
  switch (v.kind) {
    case Kind::Number: {
      volatile double d = v.as_double();
      (void)d;
      (void)v.as_int64();
      break;
    }
    case Kind::String:
      check_string(v.text);
      break;
    case Kind::Array:
      for (const auto& item : v.items) walk(item);
      break;
    case Kind::Object:
      for (const auto& [key, member] : v.members) {
        check_string(key);
        if (v.find(key) != &member) std::abort();  // keys are unique
        walk(member);
      }
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    walk(microflex::json::parse(text, "fuzz"));
  } catch (const microflex::Error& e) {
    mffuzz::check_error(e);
  }
  return 0;
}
