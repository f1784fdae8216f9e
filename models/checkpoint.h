// Training checkpoints: one safetensors file holding a GPT's weights under nanoGPT's names
// (PyTorch's nanoGPT model loads them with load_state_dict), the optimizer state under
// "optimizer.*" and the training state (step, batch sampler, Philox generator, config)
// as metadata strings. Files are written through path + ".tmp" and a rename.
#pragma once
#include <map>
#include <memory>
#include <random>
#include <string>

#include "core/random.h"
#include "core/serialize.h"
#include "models/gpt.h"
#include "models/optim.h"

namespace microflex {

// Everything besides tensors that a resumed run needs to continue exactly.
struct TrainState {
  int64_t step = 0;                          // optimizer steps done
  std::mt19937_64 rng;                       // the batch sampler (sample_batch)
  PhiloxSeedOffset philox;                   // microflex's default generator (dropout, init)
  std::map<std::string, std::string> extra;  // more metadata, e.g. the training flags
};

// GPTConfig as a JSON object with nanoGPT's field names (vocab_size, block_size, n_layer,
// n_head, n_embd, dropout, bias) plus rotary, rope_base and attention {causal, window,
// prefix, document, alibi, softcap, block_size}. Parsing checks every field's type;
// missing fields keep their defaults.
std::string gpt_config_to_json(const GPTConfig& cfg);
GPTConfig gpt_config_from_json(const std::string& text, const std::string& context = "config");

// A GPT parameter name under nanoGPT's layout: "wte.weight" -> "transformer.wte.weight",
// "h.0.attn.c_attn.weight" -> "transformer.h.0.attn.c_attn.weight". Linear weights are
// [out, in] in both, so tensors are stored as they are.
std::string to_nanogpt_name(const std::string& name);
// The model's state_dict under nanoGPT's names, with "lm_head.weight" (a copy of the tied
// wte.weight, as nanoGPT's state_dict has both).
NamedTensors nanogpt_state_dict(const GPT& model);

// Metadata keys: "format" ("microflex-gpt"), "config" (gpt_config_to_json), "step",
// "rng" (the std::mt19937_64 state as text), "philox_seed", "philox_offset", "optimizer"
// ("adamw" or "sgd"), and `state.extra`'s keys, which must not collide with these.
void save_checkpoint(const std::string& path, const GPT& model, const Optimizer& opt,
                     const TrainState& state);
// Weights and config only (no optimizer, step 0): for sampling or to export a model.
void save_weights(const std::string& path, const GPT& model,
                  const std::map<std::string, std::string>& extra = {});

// Restores weights, optimizer state and `state` saved by save_checkpoint. The model's
// config must equal the file's; weights move to the model's device and dtype must match.
void load_checkpoint(const std::string& path, GPT& model, Optimizer& opt, TrainState* state);
// The config stored in a checkpoint.
GPTConfig read_checkpoint_config(const std::string& path);
// A new GPT built from the file's config and weights, on `device`, in the stored dtype,
// in eval mode. `extra` receives the non-standard metadata when given.
std::shared_ptr<GPT> load_gpt(const std::string& path, Device device = Device::cpu(),
                              std::map<std::string, std::string>* extra = nullptr);

}  // namespace microflex
