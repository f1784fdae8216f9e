// libFuzzer target: microflex-train's command line through parse_train_command_line
// (programs/train_flags.h), with the program's own flag table, config-file reader and
// checks. The input is split at '\0' bytes: the first piece is the text of the config
// file, the others are argv; with no '\0' the whole input is the config file, given as
// --config. An input with '\0' bytes is also applied whole as a config file. A
// flags::UsageError is the expected answer (the program exits with code 2); any other
// exception escapes and aborts. Accepted options must satisfy every bound the flags and
// checks promise.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "programs/train_flags.h"

namespace {

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "accepted options break: %s\n", what);
    std::abort();
  }
}

bool finite_nonneg(double x) {
  return std::isfinite(x) && x >= 0.0;
}

void check(const microflex::TrainOptions& o) {
  expect(o.data == "brown" || o.data == "tiny", "data");
  expect(o.device == "cpu" || o.device == "cuda", "device");
  expect(o.dtype == "fp32" || o.dtype == "bf16", "dtype");
  expect(!o.data_dir.empty() && !o.attention.empty() && !o.out_dir.empty(), "non-empty strings");
  expect(o.n_layer >= 1 && o.n_head >= 1 && o.n_embd >= 1 && o.block_size >= 1, "model sizes");
  expect(o.batch_size >= 1 && o.accum_steps >= 1 && o.steps >= 1 && o.eval_batches >= 1,
         "run sizes");
  expect(
      o.warmup >= 0 && o.eval_every >= 0 && o.ckpt_every >= 0 && o.seed >= 0 && o.dump_batches >= 0,
      "counts");
  expect(o.n_embd % o.n_head == 0, "head dim");
  expect(!o.rotary || (o.n_embd / o.n_head) % 2 == 0, "rotary head dim");
  expect(finite_nonneg(o.dropout) && o.dropout < 1.0, "dropout");
  expect(finite_nonneg(o.beta1) && o.beta1 < 1.0 && finite_nonneg(o.beta2) && o.beta2 < 1.0,
         "betas");
  expect(finite_nonneg(o.lr) && finite_nonneg(o.min_lr) && o.min_lr <= o.lr, "learning rates");
  expect(finite_nonneg(o.weight_decay) && finite_nonneg(o.grad_clip), "weight decay, clip");
  expect(o.dump_reference.empty() || (o.out_dir == o.dump_reference && o.dump_batches == o.steps),
         "dump_reference");
  const microflex::AttentionPattern p = microflex::parse_train_attention(o.attention);
  expect(p.causal && p.window >= 0 && p.prefix >= 0, "attention mask");
  expect(std::isfinite(p.softcap) && p.softcap >= 0.0, "attention softcap");
}

// Applies argv (args[0] the program name) with `config` as the text of any --config file.
void run_command_line(std::vector<std::string> args, const std::string& config) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  microflex::TrainOptions o;
  try {
    if (!microflex::parse_train_command_line(static_cast<int>(args.size()), argv.data(), &o,
                                             [&config](const std::string&) { return config; }))
      return;  // --help
  } catch (const microflex::flags::UsageError&) {
    return;
  }
  check(o);
}

// The whole input, '\0' bytes included (which argv cannot hold), as a config file.
void run_config_text(const std::string& text) {
  microflex::TrainOptions o;
  try {
    microflex::train_flag_table(&o).apply_text(text, "fuzz.conf");
    microflex::validate_train_options(o);
  } catch (const microflex::flags::UsageError&) {
    return;
  }
  check(o);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  if (nul == std::string::npos) {
    run_command_line({"microflex-train", "--config", "fuzz.conf"}, in);
    return 0;
  }
  std::vector<std::string> args{"microflex-train"};
  for (size_t b = nul + 1;;) {
    const size_t e = in.find('\0', b);
    args.push_back(in.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  run_command_line(std::move(args), in.substr(0, nul));
  run_config_text(in);
  return 0;
}
