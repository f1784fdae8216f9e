// The microflex-inspect command line, run in process through inspect_main: exit status 2
// with a message for bad flags and configs, JSON that parses with the documented keys,
// --trace with the flex_attention node and its subgraphs, --dot to a file.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/json.h"
#include "models/inspect.h"
#include "test_util.h"

namespace mf = microflex;

namespace {

struct CliRun {
  int status;
  std::string out, err;
};

CliRun run(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int status = mf::inspect_main(args, out, err);
  return {status, out.str(), err.str()};
}

// A small model so each run takes milliseconds.
std::vector<std::string> small(std::vector<std::string> extra = {}) {
  std::vector<std::string> a{"--n_layer",    "2",  "--n_head",     "2",  "--n_embd", "16",
                             "--block_size", "32", "--vocab_size", "50", "--batch",  "2"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

void expect_usage_error(const std::vector<std::string>& args, const std::string& message) {
  const CliRun r = run(args);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("microflex-inspect: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

}  // namespace

TEST(InspectCli, BadConfigsExitWithTwo) {
  expect_usage_error({"--n_embd", "770"}, "n_embd 770 is not divisible by n_head 12");
  expect_usage_error({"--preset", "gpt5"}, "unknown preset 'gpt5'");
  expect_usage_error({"--batch", "-4"}, "--batch must be >= 1, got -4");
  expect_usage_error({"--batch", "x"}, "--batch expects an integer, got 'x'");
  expect_usage_error({"--n_layer", "0"}, "--n_layer must be >= 1, got 0");
  expect_usage_error({"--frobnicate"}, "unknown flag '--frobnicate'");
  expect_usage_error({"--batch"}, "--batch expects a value");
  expect_usage_error({"--dtype", "fp8"}, "--dtype expects fp32 or bf16, got 'fp8'");
  expect_usage_error({"--device", "tpu"}, "--device expects cpu, cuda or cuda:N, got 'tpu'");
  expect_usage_error({"--attention", "sliding:0"}, "the window must be >= 1");
  expect_usage_error({"--attention", "diagonal"}, "unknown --attention term 'diagonal'");
  expect_usage_error({"--attention", "document"}, "document masking");
  expect_usage_error(small({"--n_embd", "18", "--n_head", "2", "--rotary"}),
                     "--rotary needs an even head dim");
}

TEST(InspectCli, PrintsTableWithTotals) {
  const CliRun r = run(small({"--attention", "sliding:8+alibi", "--dtype", "bf16"}));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* s : {"module", "h.0.attn", "lm_head", "parameters", "training FLOPs per token",
                        "optimizer state", "peak, first step", "causal+window:8+alibi", "bf16"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  EXPECT_EQ(run({"--help"}).status, 0);
}

TEST(InspectCli, JsonParses) {
  const CliRun r = run(small({"--json", "--device", "cuda"}));
  ASSERT_EQ(r.status, 0) << r.err;
  const mf::json::Value v = mf::json::parse(r.out, "inspect output");
  for (const char* k : {"config", "batch", "seq_len", "device", "dtype", "parameters", "flops",
                        "attention", "memory", "modules"})
    EXPECT_NE(v.find(k), nullptr) << k;
  EXPECT_EQ(v.find("device")->text, "cuda:0");
  const mf::json::Value& mem = *v.find("memory");
  for (const char* k : {"weights", "activations", "grads", "optimizer_state", "peak", "steady_peak",
                        "after_forward"})
    EXPECT_NE(mem.find(k), nullptr) << k;
  const int64_t params = *v.find("parameters")->as_int64();
  EXPECT_EQ(*mem.find("weights")->as_int64(), 4 * params);
  const mf::json::Value& mods = *v.find("modules");
  ASSERT_TRUE(mods.is(mf::json::Kind::Array));
  ASSERT_FALSE(mods.items.empty());
  for (const char* k : {"name", "shape", "dtype", "parameters", "flops", "activation_bytes"})
    EXPECT_NE(mods.items[0].find(k), nullptr) << k;
  EXPECT_NE(v.find("flops")->find("training_per_token"), nullptr);
}

TEST(InspectCli, TraceAndDot) {
  const std::string dot = ::testing::TempDir() + "inspect_block.dot";
  const CliRun r = run(small({"--trace", "--dot", dot, "--attention", "causal+softcap:30"}));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("flex_attention("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("score_mod = graph("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mask_mod = graph("), std::string::npos) << r.out;
  std::ifstream f(dot);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_EQ(text.str().rfind("digraph", 0), 0u) << text.str();
  EXPECT_NE(text.str().find("flex_attention"), std::string::npos);
  std::remove(dot.c_str());

  // With --json the trace is one more key.
  const CliRun j = run(small({"--json", "--trace"}));
  ASSERT_EQ(j.status, 0) << j.err;
  const mf::json::Value v = mf::json::parse(j.out, "inspect output");
  ASSERT_NE(v.find("trace"), nullptr);
  EXPECT_NE(v.find("trace")->text.find("mask_mod = graph("), std::string::npos);
}
