// Where a tensor lives: the CPU or one CUDA device. A CUDA device is a plain value here;
// whether a GPU is present is asked of the CUDA backend (cuda_available()).
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace microflex {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}
  // Parses "cpu", "cuda", "cuda:1".
  static Device parse(const std::string& s);
  static constexpr Device cpu() { return Device(DeviceType::CPU, 0); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::CUDA, i); }

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

std::ostream& operator<<(std::ostream& os, const Device& d);

// Number of CUDA devices this process can use (0 when built without CUDA or no GPU).
int cuda_device_count();
inline bool cuda_available() {
  return cuda_device_count() > 0;
}

}  // namespace microflex
