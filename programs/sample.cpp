// microflex-sample: continues a prompt with a GPT checkpoint written by microflex-train,
// streaming the bytes to stdout as they are drawn (KV-cached generation).
#include <cstdio>
#include <iostream>

#include "models/checkpoint.h"
#include "models/data.h"
#include "models/generate.h"
#include "programs/flags.h"

namespace mf = microflex;
namespace flags = microflex::flags;

namespace {

const char* kUsage = R"(usage: microflex-sample --checkpoint FILE [--key=value ...]
  checkpoint=FILE    a checkpoint from microflex-train (out_dir/ckpt.safetensors)
  prompt=TEXT        text to continue (default: a newline)
  tokens=N           bytes to generate (default 200)
  temperature=T      0 is greedy (default 0.8)
  top_k=K            sample among the K most likely bytes; 0: all (default 0)
  seed=S             sampling seed (default 0)
  device=cpu|cuda
)";

struct Options {
  std::string checkpoint, prompt = "\n", device = "cpu";
  int64_t tokens = 200, top_k = 0, seed = 0;
  double temperature = 0.8;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  flags::Table t;
  t.add("checkpoint", false, [&](const std::string& v) { o.checkpoint = v; });
  t.add("prompt", false, [&](const std::string& v) { o.prompt = v; });
  t.add("device", false, [&](const std::string& v) {
    if (v != "cpu" && v != "cuda")
      throw flags::UsageError("--device must be cpu or cuda, got '" + v + "'");
    o.device = v;
  });
  t.add("tokens", false,
        [&](const std::string& v) { o.tokens = flags::parse_int("tokens", v, 0); });
  t.add("top_k", false, [&](const std::string& v) { o.top_k = flags::parse_int("top_k", v, 0); });
  t.add("seed", false, [&](const std::string& v) { o.seed = flags::parse_int("seed", v, 0); });
  t.add("temperature", false,
        [&](const std::string& v) { o.temperature = flags::parse_double("temperature", v, 0.0); });
  try {
    const auto args = t.parse_args(argc, argv, nullptr);
    for (const auto& [k, v] : args)
      if (k == "help") {
        std::cout << kUsage;
        return 0;
      }
    for (const auto& [k, v] : args) t.set(k, v, "");
    if (o.checkpoint.empty()) throw flags::UsageError("--checkpoint is required (see --help)");
    if (o.prompt.empty()) throw flags::UsageError("--prompt must not be empty");
  } catch (const flags::UsageError& e) {
    std::cerr << "microflex-sample: " << e.what() << "\n";
    return 2;
  }
  try {
    const mf::Device device = o.device == "cuda" ? mf::Device::cuda(0) : mf::Device::cpu();
    auto model = mf::load_gpt(o.checkpoint, device);
    const mf::ByteTokenizer tok;
    std::cout << o.prompt << std::flush;
    mf::generate(*model, tok.encode(o.prompt), o.tokens, o.temperature, o.top_k,
                 static_cast<uint64_t>(o.seed), [&](int64_t token, const std::vector<double>&) {
                   std::cout << tok.decode({token}) << std::flush;
                 });
    std::cout << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "\nmicroflex-sample: error: " << e.what() << "\n";
    return 1;
  }
}
