#include "core/device.h"

#include <cctype>

#include "core/error.h"

namespace microflex {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s.rfind("cuda", 0) == 0) {
    if (s.size() == 4) return cuda(0);
    MF_CHECK(s.size() > 5 && s[4] == ':', "Device: cannot parse '", s,
             "' (expected cpu, cuda or cuda:N)");
    int idx = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      MF_CHECK(std::isdigit(static_cast<unsigned char>(s[i])) && idx < 100000,
               "Device: cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
      idx = idx * 10 + (s[i] - '0');
    }
    return cuda(idx);
  }
  MF_CHECK(false, "Device: cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
  return cpu();
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

std::ostream& operator<<(std::ostream& os, const Device& d) {
  return os << d.str();
}

#ifndef MICROFLEX_WITH_CUDA
int cuda_device_count() {
  return 0;
}
#endif

}  // namespace microflex
