// libFuzzer target: load_npy_from_memory on arbitrary bytes must either return a tensor
// whose storage holds every byte it claims, or throw microflex::Error.
#include "core/serialize.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const microflex::Tensor t = microflex::load_npy_from_memory(data, size);
    volatile uint64_t sink = mffuzz::touch(t);
    (void)sink;
  } catch (const microflex::Error& e) {
    mffuzz::check_error(e);
  }
  return 0;
}
