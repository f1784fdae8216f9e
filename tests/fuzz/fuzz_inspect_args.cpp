// libFuzzer target: microflex-inspect's flags through parse_inspect_args (models/inspect.h).
// The input is split at '\0' bytes into the arguments. An InspectUsageError is the
// expected answer (the program exits with code 2); any other exception escapes and aborts.
// An accepted config must satisfy every bound the flags and checks promise.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "models/inspect.h"

namespace {

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "accepted config breaks: %s\n", what);
    std::abort();
  }
}

void check(const microflex::InspectArgs& a) {
  const microflex::GPTConfig& c = a.cfg;
  expect(c.n_layer >= 1 && c.n_head >= 1 && c.n_embd >= 1 && c.block_size >= 1 && c.vocab_size >= 1,
         "model sizes");
  expect(c.n_embd % c.n_head == 0, "head dim");
  expect(!c.rotary || (c.n_embd / c.n_head) % 2 == 0, "rotary head dim");
  expect(a.batch >= 1, "batch");
  const microflex::AttentionPattern& p = c.attention;
  expect(p.window >= 0 && p.prefix >= 0 && p.block_size >= 1 && !p.document, "attention mask");
  expect(std::isfinite(p.softcap) && p.softcap >= 0.0, "attention softcap");
  expect(a.device.is_cpu() || a.device.is_cuda(), "device");
  expect(a.dtype == microflex::DTypePolicy::FP32 || a.dtype == microflex::DTypePolicy::BF16,
         "dtype");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  if (size > 0) {
    for (size_t b = 0;;) {
      const size_t e = in.find('\0', b);
      args.push_back(in.substr(b, e == std::string::npos ? std::string::npos : e - b));
      if (e == std::string::npos) break;
      b = e + 1;
    }
  }
  microflex::InspectArgs a;
  try {
    a = microflex::parse_inspect_args(args);
  } catch (const microflex::InspectUsageError&) {
    return 0;
  }
  check(a);
  return 0;
}
