// Shared by the libFuzzer targets: a microflex::Error is the expected answer to bad
// bytes, except an internal assertion, which is a bug and must crash the fuzzer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/tensor.h"

namespace mffuzz {

inline void check_error(const microflex::Error& e) {
  if (std::strncmp(e.what(), "internal error", 14) == 0) {
    std::fprintf(stderr, "%s\n", e.what());
    std::abort();
  }
}

// Reads every byte of a loaded tensor, so that ASan sees any storage that is shorter
// than the tensor claims; checks the tensor is the contiguous CPU tensor loaders promise.
inline uint64_t touch(const microflex::Tensor& t) {
  if (!t.defined() || !t.is_cpu() || t.is_fake() || !t.is_contiguous()) std::abort();
  const auto* p = static_cast<const uint8_t*>(t.numel() > 0 ? t.raw_data() : nullptr);
  uint64_t sum = 0;
  const int64_t n = t.numel() * t.element_size();
  for (int64_t i = 0; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace mffuzz
