// microflex-train's options: the flag table over TrainOptions, the --attention pattern
// parser, the checks across options, and the whole command line (argv plus the --config
// file) in one function that the program, its tests and the fuzz target share.
#pragma once
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>

#include "models/attention.h"
#include "programs/flags.h"

namespace microflex {

struct TrainOptions {
  std::string data = "brown";  // brown | tiny
  std::string data_dir = "data/brown";
  int64_t n_layer = 4, n_head = 4, n_embd = 128, block_size = 128;
  double dropout = 0.0;
  bool bias = true, rotary = false;
  std::string attention = "causal";
  int64_t batch_size = 16, accum_steps = 1, steps = 1000;
  double lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, grad_clip = 1.0;
  double beta1 = 0.9, beta2 = 0.95;
  int64_t warmup = 100;
  int64_t eval_every = 100, eval_batches = 10, ckpt_every = 0;
  std::string device = "cpu";
  std::string dtype = "fp32";  // fp32, or bf16 mixed precision (float32 master weights)
  int64_t seed = 1337;
  std::string out_dir = "out/train";
  bool resume = false;
  // Reference-comparison outputs (tools/torch_gpt_reference.py).
  bool save_init_only = false;
  int64_t dump_batches = 0;
  std::string dump_reference;
};

// Every flag of microflex-train, each setting its field of *o (which must outlive the table).
inline flags::Table train_flag_table(TrainOptions* o) {
  using flags::parse_bool, flags::parse_double, flags::parse_int, flags::UsageError;
  flags::Table t;
  auto str = [&t](const char* k, std::string* p) {
    t.add(k, false, [k, p](const std::string& v) {
      if (v.empty()) throw UsageError(std::string("--") + k + " needs a value");
      *p = v;
    });
  };
  auto int_ = [&t](const char* k, int64_t* p, int64_t min_value) {
    t.add(k, false, [k, p, min_value](const std::string& v) { *p = parse_int(k, v, min_value); });
  };
  auto dbl = [&t](const char* k, double* p, double min_value) {
    t.add(k, false,
          [k, p, min_value](const std::string& v) { *p = parse_double(k, v, min_value); });
  };
  auto bln = [&t](const char* k, bool* p) {
    t.add(k, true, [k, p](const std::string& v) { *p = parse_bool(k, v); });
  };
  str("data", &o->data);
  str("data_dir", &o->data_dir);
  int_("n_layer", &o->n_layer, 1);
  int_("n_head", &o->n_head, 1);
  int_("n_embd", &o->n_embd, 1);
  int_("block_size", &o->block_size, 1);
  dbl("dropout", &o->dropout, 0.0);
  bln("bias", &o->bias);
  bln("rotary", &o->rotary);
  str("attention", &o->attention);
  int_("batch_size", &o->batch_size, 1);
  int_("accum_steps", &o->accum_steps, 1);
  int_("steps", &o->steps, 1);
  dbl("lr", &o->lr, 0.0);
  dbl("min_lr", &o->min_lr, 0.0);
  dbl("weight_decay", &o->weight_decay, 0.0);
  dbl("grad_clip", &o->grad_clip, 0.0);
  dbl("beta1", &o->beta1, 0.0);
  dbl("beta2", &o->beta2, 0.0);
  int_("warmup", &o->warmup, 0);
  int_("eval_every", &o->eval_every, 0);
  int_("eval_batches", &o->eval_batches, 1);
  int_("ckpt_every", &o->ckpt_every, 0);
  str("device", &o->device);
  str("dtype", &o->dtype);
  int_("seed", &o->seed, 0);
  str("out_dir", &o->out_dir);
  bln("resume", &o->resume);
  bln("save_init_only", &o->save_init_only);
  int_("dump_batches", &o->dump_batches, 0);
  str("dump_reference", &o->dump_reference);
  return t;
}

// "--attention": terms joined with '+' (causal, sliding:W, alibi, softcap:C, document,
// prefix:P); always causal.
inline AttentionPattern parse_train_attention(const std::string& spec) {
  using flags::UsageError;
  AttentionPattern p;
  std::stringstream ss(spec);
  std::string term;
  while (std::getline(ss, term, '+')) {
    const size_t colon = term.find(':');
    const std::string name = term.substr(0, colon);
    const std::string arg = colon == std::string::npos ? "" : term.substr(colon + 1);
    auto need_arg = [&](bool wanted) {
      if (wanted && arg.empty())
        throw UsageError("--attention: '" + name + "' needs a value, e.g. " + name + ":64");
      if (!wanted && colon != std::string::npos)
        throw UsageError("--attention: '" + name + "' takes no value, got '" + term + "'");
    };
    if (name == "causal") {
      need_arg(false);
    } else if (name == "sliding") {
      need_arg(true);
      p.window = flags::parse_int("attention sliding", arg, 1);
    } else if (name == "alibi") {
      need_arg(false);
      p.alibi = true;
    } else if (name == "softcap") {
      need_arg(true);
      p.softcap = flags::parse_double("attention softcap", arg, 0.0);
      if (p.softcap <= 0.0) throw UsageError("--attention softcap must be > 0, got " + arg);
    } else if (name == "document") {
      need_arg(false);
      p.document = true;
    } else if (name == "prefix") {
      need_arg(true);
      p.prefix = flags::parse_int("attention prefix", arg, 1);
    } else {
      throw UsageError("--attention: unknown pattern '" + term +
                       "' (causal, sliding:W, alibi, softcap:C, document, prefix:P)");
    }
  }
  return p;
}

// Checks combinations that single values cannot; every problem is a UsageError.
// dump_reference implies its out_dir and a dump of every step's batches.
inline void validate_train_options(TrainOptions& o) {
  using flags::UsageError;
  if (o.data != "brown" && o.data != "tiny")
    throw UsageError("--data must be brown or tiny, got '" + o.data + "'");
  if (o.device != "cpu" && o.device != "cuda")
    throw UsageError("--device must be cpu or cuda, got '" + o.device + "'");
  if (o.dtype != "fp32" && o.dtype != "bf16")
    throw UsageError("--dtype must be fp32 or bf16, got '" + o.dtype + "'");
  if (o.n_embd % o.n_head != 0)
    throw UsageError("--n_embd (" + std::to_string(o.n_embd) +
                     ") must be a multiple of --n_head (" + std::to_string(o.n_head) + ")");
  if (o.rotary && (o.n_embd / o.n_head) % 2 != 0)
    throw UsageError("--rotary needs an even head dim, n_embd / n_head = " +
                     std::to_string(o.n_embd / o.n_head));
  if (o.beta1 >= 1.0 || o.beta2 >= 1.0) throw UsageError("--beta1 and --beta2 must be below 1");
  if (o.dropout >= 1.0) throw UsageError("--dropout must be below 1");
  if (o.min_lr > o.lr) throw UsageError("--min_lr must not exceed --lr");
  parse_train_attention(o.attention);
  if (!o.dump_reference.empty()) {
    o.out_dir = o.dump_reference;
    o.dump_batches = o.steps;
  }
}

// The microflex-train command line: the --config file (its text from `read_config`) is
// applied first, then the command-line values in order, then validate_train_options.
// Returns false, with nothing applied, when --help is given.
inline bool parse_train_command_line(
    int argc, char** argv, TrainOptions* o,
    const std::function<std::string(const std::string&)>& read_config = flags::read_file) {
  const flags::Table table = train_flag_table(o);
  std::string config;
  const auto args = table.parse_args(argc, argv, &config);
  for (const auto& [k, v] : args)
    if (k == "help") return false;
  if (!config.empty()) table.apply_text(read_config(config), config);
  for (const auto& [k, v] : args) table.set(k, v, "");
  validate_train_options(*o);
  return true;
}

}  // namespace microflex
