// GPT and Block: construction, GPT-2 initialisation and the forward with loss.
#include "models/gpt.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/linalg.h"
#include "ops/nn.h"

namespace microflex {

GPTConfig GPTConfig::gpt2() {
  return GPTConfig{};
}

namespace {

AttentionConfig attention_config(const GPTConfig& c) {
  AttentionConfig a;
  a.n_embd = c.n_embd;
  a.n_head = c.n_head;
  a.bias = c.bias;
  a.dropout = c.dropout;
  a.pattern = c.attention;
  a.rotary = c.rotary;
  a.rope_base = c.rope_base;
  a.max_len = c.block_size;
  return a;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Block::Block(const GPTConfig& cfg) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(cfg.n_embd, 1e-5, cfg.bias));
  attn = register_module("attn", std::make_shared<CausalSelfAttention>(attention_config(cfg)));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(cfg.n_embd, 1e-5, cfg.bias));
  mlp = register_module("mlp", std::make_shared<MLP>(cfg.n_embd, cfg.bias, cfg.dropout));
}

Tensor Block::forward(const Tensor& x, const BlockMask* mask) {
  Tensor y = x + attn->forward(ln_1->forward(x), mask);
  return y + mlp->forward(ln_2->forward(y));
}

GPT::GPT(const GPTConfig& c) : cfg(c) {
  MF_CHECK(c.vocab_size > 0 && c.block_size > 0 && c.n_layer > 0 && c.n_head > 0 && c.n_embd > 0,
           "GPT: vocab_size, block_size, n_layer, n_head and n_embd must be positive, got ",
           c.vocab_size, ", ", c.block_size, ", ", c.n_layer, ", ", c.n_head, ", ", c.n_embd);
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
  if (!c.rotary) wpe = register_module("wpe", std::make_shared<Embedding>(c.block_size, c.n_embd));
  drop = register_module("drop", std::make_shared<Dropout>(c.dropout));
  h = register_module("h", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < c.n_layer; ++i) {
    blocks.push_back(std::make_shared<Block>(c));
    h->push_back(blocks.back());
  }
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.n_embd, 1e-5, c.bias));

  // GPT-2 initialisation, one draw per matrix in named_parameters() order.
  NoGradGuard no_grad;
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  for (auto& [name, p] : named_parameters()) {
    if (ends_with(name, ".bias")) {
      p.zero_();
    } else if (p.dim() >= 2) {
      const double std = ends_with(name, "c_proj.weight") ? proj_std : 0.02;
      p.copy_(randn(p.sizes(), {.dtype = p.dtype(), .device = p.device()}) * std);
    }
  }
}

std::optional<BlockMask> GPT::document_block_mask(const Tensor& doc_ids) const {
  MF_CHECK(doc_ids.defined(), "GPT: document ids are undefined");
  return blocks[0]->attn->build_block_mask(doc_ids.size(-1), doc_ids);
}

GPTOutput GPT::forward(const Tensor& idx, const Tensor& targets) {
  return run(idx, targets, nullptr);
}

GPTOutput GPT::forward(const Tensor& idx, const Tensor& targets, const BlockMask& mask) {
  return run(idx, targets, &mask);
}

GPTOutput GPT::forward_packed(const Tensor& idx, const Tensor& doc_ids, const Tensor& targets) {
  MF_CHECK(idx.defined() && idx.dim() == 2, "GPT: idx must be [B, T], got ",
           idx.defined() ? shape_str(idx.sizes()) : "undefined");
  MF_CHECK(doc_ids.defined() && doc_ids.size(-1) == idx.size(1) &&
               (doc_ids.dim() == 1 || (doc_ids.dim() == 2 && doc_ids.size(0) == idx.size(0))),
           "GPT: doc_ids must be [T] or [B, T] for idx ", shape_str(idx.sizes()), ", got ",
           doc_ids.defined() ? shape_str(doc_ids.sizes()) : "undefined");
  const std::optional<BlockMask> bm = document_block_mask(doc_ids);
  return run(idx, targets, &*bm);
}

GPTOutput GPT::run(const Tensor& idx, const Tensor& targets, const BlockMask* mask) {
  MF_CHECK(idx.defined() && idx.dim() == 2 &&
               (idx.dtype() == DType::Int64 || idx.dtype() == DType::Int32),
           "GPT: idx must be [B, T] int64 or int32, got ",
           idx.defined() ? shape_str(idx.sizes()) : "undefined", " ",
           idx.defined() ? dtype_name(idx.dtype()) : "");
  const int64_t B = idx.size(0), T = idx.size(1), V = cfg.vocab_size;
  MF_CHECK(T <= cfg.block_size, "GPT: cannot forward a sequence of length ", T,
           ", block size is only ", cfg.block_size);
  MF_CHECK(!targets.defined() || targets.sizes() == idx.sizes(), "GPT: targets ",
           targets.defined() ? shape_str(targets.sizes()) : "", " must match idx ",
           shape_str(idx.sizes()));
  Tensor x = wte->forward(idx);  // [B, T, C]
  if (wpe) x = x + wpe->forward(arange(0, T, 1, {.dtype = DType::Int64, .device = idx.device()}));
  x = drop->forward(x);
  // Every layer has the same pattern: build (or fetch) the mask once for all of them.
  std::optional<BlockMask> own;
  if (mask == nullptr) {
    own = blocks[0]->attn->block_mask(T, idx.device());
    if (own) mask = &*own;
  }
  for (auto& b : blocks) x = b->forward(x, mask);
  x = ln_f->forward(x);
  GPTOutput out;
  out.logits = linear(x, wte->weight);  // [B, T, V], the head tied to wte
  if (targets.defined())
    out.loss = cross_entropy(out.logits.reshape({B * T, V}), targets.reshape({B * T}), -1);
  return out;
}

}  // namespace microflex
