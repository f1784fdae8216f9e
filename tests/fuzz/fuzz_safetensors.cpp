// libFuzzer target: load_safetensors_from_memory on arbitrary bytes must either return
// tensors whose storage holds every byte they claim, or throw microflex::Error.
#include <map>
#include <string>

#include "core/serialize.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    std::map<std::string, std::string> metadata;
    const microflex::NamedTensors ts =
        microflex::load_safetensors_from_memory(data, size, &metadata);
    volatile uint64_t sink = 0;
    for (const auto& [name, t] : ts) sink = sink + name.size() + mffuzz::touch(t);
  } catch (const microflex::Error& e) {
    mffuzz::check_error(e);
  }
  return 0;
}
