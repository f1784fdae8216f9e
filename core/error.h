// microflex::Error and the check macros every layer uses. MF_CHECK is for user errors,
// MF_INTERNAL_ASSERT for broken invariants; both throw, neither aborts.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace microflex {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const std::string& msg);
[[noreturn]] void throw_internal(const char* cond, const char* file, int line,
                                 const std::string& msg);
}  // namespace detail

}  // namespace microflex

#define MF_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) ::microflex::detail::throw_error(::microflex::detail::str_cat(__VA_ARGS__)); \
  } while (0)

#define MF_INTERNAL_ASSERT(cond, ...)                                                              \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      ::microflex::detail::throw_internal(                                                         \
          #cond, __FILE__, __LINE__, ::microflex::detail::str_cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
