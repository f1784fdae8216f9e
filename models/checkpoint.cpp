// Checkpoint files: nanoGPT-named weights, optimizer state and training-state metadata in
// one safetensors file; the config as JSON.
#include "models/checkpoint.h"

#include <iomanip>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace microflex {

namespace {

constexpr const char* kFormat = "microflex-gpt";
const std::set<std::string> kReservedKeys = {"format",      "config",        "step",     "rng",
                                             "philox_seed", "philox_offset", "optimizer"};

std::string num(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

const char* boolean(bool b) {
  return b ? "true" : "false";
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string optimizer_kind(const Optimizer& opt) {
  if (dynamic_cast<const AdamW*>(&opt) != nullptr) return "adamw";
  if (dynamic_cast<const SGD*>(&opt) != nullptr) return "sgd";
  MF_CHECK(false, "checkpoint: unsupported optimizer type (AdamW and SGD are supported)");
  return "";
}

std::map<std::string, std::string> base_metadata(const GPT& model) {
  return {{"format", kFormat}, {"config", gpt_config_to_json(model.cfg)}};
}

void add_extra(std::map<std::string, std::string>* meta,
               const std::map<std::string, std::string>& extra) {
  for (const auto& [k, v] : extra) {
    MF_CHECK(!kReservedKeys.count(k), "save_checkpoint: extra metadata key '", k, "' is reserved");
    (*meta)[k] = v;
  }
}

const std::string& meta_at(const std::map<std::string, std::string>& meta, const std::string& key,
                           const std::string& path) {
  auto it = meta.find(key);
  MF_CHECK(it != meta.end(), "checkpoint ", path, ": metadata has no '", key, "'");
  return it->second;
}

uint64_t parse_u64(const std::string& s, const std::string& key, const std::string& path) {
  size_t used = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MF_CHECK(used == s.size() && !s.empty() && s[0] != '-', "checkpoint ", path, ": metadata '", key,
           "' is not an unsigned integer: '", s, "'");
  return v;
}

// Reads the file and checks its format; fills the model tensors (microflex names) and
// the optimizer tensors (names without "optimizer.").
void read_file(const std::string& path, NamedTensors* model_sd, NamedTensors* opt_sd,
               std::map<std::string, std::string>* meta) {
  NamedTensors all = load_safetensors(path, meta);
  auto fmt = meta->find("format");
  MF_CHECK(fmt != meta->end() && fmt->second == kFormat, "checkpoint ", path,
           ": not a microflex GPT checkpoint (metadata 'format' is not '", kFormat, "')");
  const std::string prefix = "transformer.", opt_prefix = "optimizer.";
  std::vector<std::string> unexpected;
  for (auto& [name, t] : all) {
    if (starts_with(name, prefix)) {
      model_sd->emplace_back(name.substr(prefix.size()), t);
    } else if (starts_with(name, opt_prefix)) {
      if (opt_sd != nullptr) opt_sd->emplace_back(name.substr(opt_prefix.size()), t);
    } else if (name != "lm_head.weight") {
      unexpected.push_back(name);
    }
  }
  std::string list;
  for (const auto& n : unexpected) list += (list.empty() ? "" : ", ") + n;
  MF_CHECK(unexpected.empty(), "checkpoint ", path, ": unexpected tensors: ", list);
}

}  // namespace

std::string gpt_config_to_json(const GPTConfig& c) {
  const AttentionPattern& a = c.attention;
  std::ostringstream os;
  os << "{\"vocab_size\": " << c.vocab_size << ", \"block_size\": " << c.block_size
     << ", \"n_layer\": " << c.n_layer << ", \"n_head\": " << c.n_head
     << ", \"n_embd\": " << c.n_embd << ", \"dropout\": " << num(c.dropout)
     << ", \"bias\": " << boolean(c.bias) << ", \"rotary\": " << boolean(c.rotary)
     << ", \"rope_base\": " << num(c.rope_base)
     << ", \"attention\": {\"causal\": " << boolean(a.causal) << ", \"window\": " << a.window
     << ", \"prefix\": " << a.prefix << ", \"document\": " << boolean(a.document)
     << ", \"alibi\": " << boolean(a.alibi) << ", \"softcap\": " << num(a.softcap)
     << ", \"block_size\": " << a.block_size << "}}";
  return os.str();
}

GPTConfig gpt_config_from_json(const std::string& text, const std::string& context) {
  const json::Value root = json::parse(text, context);
  MF_CHECK(root.is(json::Kind::Object), context, ": the GPT config must be a JSON object, got ",
           json::kind_name(root.kind));
  auto get_int = [&](const json::Value& obj, const char* key, int64_t* out) {
    const json::Value* v = obj.find(key);
    if (v == nullptr) return;
    MF_CHECK(v->is(json::Kind::Number) && v->as_int64(), context, ": '", key,
             "' must be an integer");
    *out = *v->as_int64();
  };
  auto get_double = [&](const json::Value& obj, const char* key, double* out) {
    const json::Value* v = obj.find(key);
    if (v == nullptr) return;
    MF_CHECK(v->is(json::Kind::Number), context, ": '", key, "' must be a number");
    *out = v->as_double();
  };
  auto get_bool = [&](const json::Value& obj, const char* key, bool* out) {
    const json::Value* v = obj.find(key);
    if (v == nullptr) return;
    MF_CHECK(v->is(json::Kind::Bool), context, ": '", key, "' must be true or false");
    *out = v->boolean;
  };
  GPTConfig c;
  get_int(root, "vocab_size", &c.vocab_size);
  get_int(root, "block_size", &c.block_size);
  get_int(root, "n_layer", &c.n_layer);
  get_int(root, "n_head", &c.n_head);
  get_int(root, "n_embd", &c.n_embd);
  get_double(root, "dropout", &c.dropout);
  get_bool(root, "bias", &c.bias);
  get_bool(root, "rotary", &c.rotary);
  get_double(root, "rope_base", &c.rope_base);
  if (const json::Value* a = root.find("attention")) {
    MF_CHECK(a->is(json::Kind::Object), context, ": 'attention' must be an object");
    AttentionPattern& p = c.attention;
    get_bool(*a, "causal", &p.causal);
    get_int(*a, "window", &p.window);
    get_int(*a, "prefix", &p.prefix);
    get_bool(*a, "document", &p.document);
    get_bool(*a, "alibi", &p.alibi);
    get_double(*a, "softcap", &p.softcap);
    get_int(*a, "block_size", &p.block_size);
  }
  return c;
}

std::string to_nanogpt_name(const std::string& name) {
  return "transformer." + name;
}

NamedTensors nanogpt_state_dict(const GPT& model) {
  NamedTensors out;
  for (const auto& [n, t] : model.state_dict()) out.emplace_back(to_nanogpt_name(n), t);
  // The tied head: nanoGPT's state_dict lists it too; a copy, as safetensors files cannot
  // share storage between names.
  out.emplace_back("lm_head.weight", model.wte->weight.detach());
  return out;
}

void save_checkpoint(const std::string& path, const GPT& model, const Optimizer& opt,
                     const TrainState& state) {
  NamedTensors tensors = nanogpt_state_dict(model);
  for (const auto& [n, t] : opt.state_dict()) tensors.emplace_back("optimizer." + n, t);
  std::map<std::string, std::string> meta = base_metadata(model);
  add_extra(&meta, state.extra);
  std::ostringstream rng;
  rng << state.rng;
  meta["step"] = std::to_string(state.step);
  meta["rng"] = rng.str();
  meta["philox_seed"] = std::to_string(state.philox.seed);
  meta["philox_offset"] = std::to_string(state.philox.offset);
  meta["optimizer"] = optimizer_kind(opt);
  save_safetensors(path, tensors, meta);
}

void save_weights(const std::string& path, const GPT& model,
                  const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> meta = base_metadata(model);
  add_extra(&meta, extra);
  save_safetensors(path, nanogpt_state_dict(model), meta);
}

void load_checkpoint(const std::string& path, GPT& model, Optimizer& opt, TrainState* state) {
  NamedTensors model_sd, opt_sd;
  std::map<std::string, std::string> meta;
  read_file(path, &model_sd, &opt_sd, &meta);
  const GPTConfig file_cfg = gpt_config_from_json(meta_at(meta, "config", path), path);
  MF_CHECK(gpt_config_to_json(file_cfg) == gpt_config_to_json(model.cfg), "checkpoint ", path,
           ": its model config ", gpt_config_to_json(file_cfg), " differs from the model's ",
           gpt_config_to_json(model.cfg));
  const std::string& kind = meta_at(meta, "optimizer", path);
  MF_CHECK(kind == optimizer_kind(opt), "checkpoint ", path, ": it holds '", kind,
           "' optimizer state, the optimizer is '", optimizer_kind(opt), "'");

  TrainState s;
  s.step = static_cast<int64_t>(parse_u64(meta_at(meta, "step", path), "step", path));
  std::istringstream rng(meta_at(meta, "rng", path));
  rng >> s.rng;
  MF_CHECK(!rng.fail(), "checkpoint ", path, ": metadata 'rng' is not a std::mt19937_64 state");
  s.philox.seed = parse_u64(meta_at(meta, "philox_seed", path), "philox_seed", path);
  s.philox.offset = parse_u64(meta_at(meta, "philox_offset", path), "philox_offset", path);
  for (const auto& [k, v] : meta)
    if (!kReservedKeys.count(k)) s.extra[k] = v;

  // Both loads check everything before copying, so a bad file leaves the model as it was
  // unless only the optimizer part is bad.
  model.load_state_dict(model_sd);
  opt.load_state_dict(opt_sd);
  set_default_generator_state(s.philox);
  if (state != nullptr) *state = std::move(s);
}

GPTConfig read_checkpoint_config(const std::string& path) {
  std::map<std::string, std::string> meta;
  NamedTensors model_sd;
  read_file(path, &model_sd, nullptr, &meta);
  return gpt_config_from_json(meta_at(meta, "config", path), path);
}

std::shared_ptr<GPT> load_gpt(const std::string& path, Device device,
                              std::map<std::string, std::string>* extra) {
  NamedTensors model_sd;
  std::map<std::string, std::string> meta;
  read_file(path, &model_sd, nullptr, &meta);
  const GPTConfig cfg = gpt_config_from_json(meta_at(meta, "config", path), path);
  DType dtype = DType::Float32;
  for (const auto& [n, t] : model_sd)
    if (n == "wte.weight") dtype = t.dtype();
  // Building the model draws its initial weights; keep the caller's generator untouched.
  const PhiloxSeedOffset saved = default_generator_state();
  auto model = std::make_shared<GPT>(cfg);
  set_default_generator_state(saved);
  if (dtype != DType::Float32) model->to(dtype);
  model->load_state_dict(model_sd);
  if (!device.is_cpu()) model->to(device);
  model->eval();
  if (extra != nullptr) {
    extra->clear();
    for (const auto& [k, v] : meta)
      if (!kReservedKeys.count(k)) (*extra)[k] = v;
  }
  return model;
}

}  // namespace microflex
