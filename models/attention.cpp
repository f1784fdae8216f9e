// CausalSelfAttention: projections, head split, rotary, mask and score_mod construction
// from an AttentionPattern, and the BlockMask cache.
#include "models/attention.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/indexing.h"
#include "ops/shape_ops.h"

namespace microflex {

MaskMod make_mask_mod(const AttentionPattern& p, const Tensor& doc_ids) {
  MF_CHECK(p.window >= 0 && p.prefix >= 0,
           "attention pattern: window and prefix must be >= 0, got ", p.window, " and ", p.prefix);
  MF_CHECK(!p.document || doc_ids.defined(),
           "attention pattern: document masking needs document ids");
  MF_CHECK(!p.document || doc_ids.dim() == 1 || doc_ids.dim() == 2,
           "attention pattern: document ids must be [T] or [B, T], got ",
           shape_str(doc_ids.sizes()));
  const Tensor doc = p.document ? doc_ids : Tensor();
  return [p, doc](const Tensor& b, const Tensor&, const Tensor& q, const Tensor& kv) {
    // q [1,1,M,1], kv [1,1,1,N] int32: every term broadcasts to [*,*,M,N].
    Tensor keep;
    auto both = [&keep](const Tensor& t) { keep = keep.defined() ? (keep & t) : t; };
    if (p.causal) both(kv <= q);
    if (p.window > 0) {
      Tensor d = q - kv;
      both(p.causal ? lt(d, p.window) : lt(abs(d), p.window));
    }
    if (p.prefix > 0) {
      Tensor in_prefix = lt(kv, p.prefix);
      keep = keep.defined() ? (keep | in_prefix) : in_prefix;
    }
    if (doc.defined()) {
      both(doc.dim() == 1 ? eq(doc.index({q}), doc.index({kv}))
                          : eq(doc.index({b, q}), doc.index({b, kv})));
    }
    // A pattern that keeps everything still needs a bool of the right rank.
    return keep.defined() ? keep : ge(kv, 0);
  };
}

ScoreMod make_score_mod(const AttentionPattern& p, const Tensor& slopes) {
  MF_CHECK(std::isfinite(p.softcap) && p.softcap >= 0.0,
           "attention pattern: softcap must be finite and >= 0, got ", p.softcap);
  if (!p.has_score_mod()) return {};
  MF_CHECK(!p.alibi || slopes.defined(), "attention pattern: ALiBi needs per-head slopes");
  const double cap = p.softcap;
  const Tensor sl = p.alibi ? slopes : Tensor();
  return [cap, sl](const Tensor& s, const Tensor&, const Tensor& h, const Tensor& q,
                   const Tensor& kv) {
    Tensor out = s;
    if (cap > 0.0) out = tanh(out / cap) * cap;
    if (sl.defined()) out = out + sl.index({h}) * (kv - q);
    return out;
  };
}

Tensor alibi_slopes(int64_t n_head, DType dtype) {
  MF_CHECK(n_head > 0, "alibi_slopes: n_head must be positive, got ", n_head);
  const Tensor h = arange(1, n_head + 1, 1, {.dtype = DType::Float64});
  return exp2(h * (-8.0 / static_cast<double>(n_head))).to(dtype);
}

std::pair<Tensor, Tensor> rotary_tables(int64_t max_len, int64_t head_dim, double base,
                                        DType dtype) {
  MF_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary: head dim must be even, got ", head_dim);
  MF_CHECK(max_len > 0 && base > 0.0, "rotary: max_len and base must be positive, got ", max_len,
           " and ", base);
  // In float64, rounded once at the end: angles reach max_len radians.
  // inv_freq [D/2] = base^(-2i / D); angle [T_max, D/2] = t * inv_freq
  const Tensor i = arange(0, head_dim / 2, 1, {.dtype = DType::Float64});
  const Tensor inv_freq = exp(i * (-2.0 * std::log(base) / static_cast<double>(head_dim)));
  const Tensor t = arange(0, max_len, 1, {.dtype = DType::Float64});
  const Tensor angle = t.unsqueeze(1) * inv_freq.unsqueeze(0);
  return {cos(angle).to(dtype), sin(angle).to(dtype)};
}

Tensor apply_rotary(const Tensor& x, const Tensor& cos_t, const Tensor& sin_t) {
  MF_CHECK(x.dim() == 4, "apply_rotary: x must be [B, H, T, D], got ", shape_str(x.sizes()));
  const int64_t T = x.size(2), D = x.size(3);
  MF_CHECK(cos_t.dim() == 2 && cos_t.sizes() == sin_t.sizes() && cos_t.size(1) * 2 == D &&
               cos_t.size(0) >= T,
           "apply_rotary: tables ", shape_str(cos_t.sizes()), " and ", shape_str(sin_t.sizes()),
           " do not fit x ", shape_str(x.sizes()), " (need [>= T, D/2])");
  Tensor c = cos_t.narrow(0, 0, T), s = sin_t.narrow(0, 0, T);  // [T, D/2]
  if (c.dtype() != x.dtype()) {
    c = c.to(x.dtype());
    s = s.to(x.dtype());
  }
  const Tensor x1 = x.narrow(3, 0, D / 2), x2 = x.narrow(3, D / 2, D / 2);  // [B, H, T, D/2]
  return cat({x1 * c - x2 * s, x1 * s + x2 * c}, 3);
}

CausalSelfAttention::CausalSelfAttention(const AttentionConfig& c) : cfg(c) {
  MF_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0, "CausalSelfAttention: n_embd ", c.n_embd,
           " must be a multiple of n_head ", c.n_head);
  MF_CHECK(c.pattern.block_size > 0, "CausalSelfAttention: block_size must be positive, got ",
           c.pattern.block_size);
  head_dim = c.n_embd / c.n_head;
  c_attn = register_module("c_attn", std::make_shared<Linear>(c.n_embd, 3 * c.n_embd, c.bias));
  c_proj = register_module("c_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, c.bias));
  resid_drop = register_module("resid_drop", std::make_shared<Dropout>(c.dropout));
  if (c.pattern.alibi) slopes = register_buffer("alibi_slopes", alibi_slopes(c.n_head), false);
  if (c.rotary) {
    auto [cs, sn] = rotary_tables(c.max_len, head_dim, c.rope_base);
    rope_cos = register_buffer("rope_cos", cs, false);
    rope_sin = register_buffer("rope_sin", sn, false);
  }
  // Captures the slopes handle, which follows to() (Note [Parameters replaced in place]).
  score_mod_ = make_score_mod(c.pattern, slopes);
  // Checks the pattern's fields now rather than at the first forward.
  if (c.pattern.has_mask() && !c.pattern.document) make_mask_mod(c.pattern);
}

std::optional<BlockMask> CausalSelfAttention::block_mask(int64_t T, Device device) {
  MF_CHECK(!cfg.pattern.document,
           "CausalSelfAttention: the attention pattern masks documents; pass a BlockMask built "
           "with document ids (build_block_mask)");
  if (!cfg.pattern.has_mask()) return std::nullopt;
  const auto key = std::make_pair(T, device.str());
  auto it = mask_cache_.find(key);
  if (it != mask_cache_.end()) return it->second;
  std::optional<BlockMask> bm =
      create_block_mask(make_mask_mod(cfg.pattern), 1, 1, T, T, device, cfg.pattern.block_size);
  mask_cache_.emplace(key, bm);
  return bm;
}

std::optional<BlockMask> CausalSelfAttention::build_block_mask(int64_t T,
                                                               const Tensor& doc_ids) const {
  MF_CHECK(doc_ids.defined() && (doc_ids.dim() == 1 || doc_ids.dim() == 2) &&
               doc_ids.size(-1) == T && !is_floating(doc_ids.dtype()),
           "CausalSelfAttention: document ids must be integers shaped [T] or [B, T] with T = ", T,
           ", got ", doc_ids.defined() ? shape_str(doc_ids.sizes()) : "undefined", " ",
           doc_ids.defined() ? dtype_name(doc_ids.dtype()) : "");
  AttentionPattern p = cfg.pattern;
  p.document = true;
  const int64_t B = doc_ids.dim() == 2 ? doc_ids.size(0) : 1;
  const Device device = doc_ids.device();
  // The blocks are classified on the host: build from host ids, then let the kernels read
  // the ids where the inputs live.
  const Tensor host_ids = device.is_cpu() ? doc_ids : doc_ids.to(Device::cpu());
  BlockMask bm = create_block_mask(make_mask_mod(p, host_ids), B, 1, T, T, device, p.block_size);
  if (!device.is_cpu()) bm.mask_mod = make_mask_mod(p, doc_ids);
  return bm;
}

void CausalSelfAttention::on_converted() {
  mask_cache_.clear();
  // Recompute the derived tables at the new dtype's precision rather than keep values
  // rounded to the old one.
  NoGradGuard no_grad;
  // The tables are made on the host; copy_ needs them on the buffer's device.
  if (slopes.defined()) slopes.copy_(alibi_slopes(cfg.n_head, slopes.dtype()).to(slopes.device()));
  if (cfg.rotary) {
    auto [cs, sn] = rotary_tables(cfg.max_len, head_dim, cfg.rope_base, rope_cos.dtype());
    rope_cos.copy_(cs.to(rope_cos.device()));
    rope_sin.copy_(sn.to(rope_sin.device()));
  }
}

Tensor CausalSelfAttention::forward(const Tensor& x, const BlockMask* mask) {
  MF_CHECK(x.defined() && x.dim() == 3 && x.size(2) == cfg.n_embd,
           "CausalSelfAttention: x must be [B, T, C] with C = ", cfg.n_embd, ", got ",
           x.defined() ? shape_str(x.sizes()) : "undefined");
  const int64_t B = x.size(0), T = x.size(1), C = cfg.n_embd, H = cfg.n_head, D = head_dim;
  MF_CHECK(!cfg.rotary || T <= cfg.max_len, "CausalSelfAttention: sequence length ", T,
           " exceeds max_len ", cfg.max_len, " of the rotary tables");
  const std::vector<Tensor> qkv = split(c_attn->forward(x), C, 2);  // 3 x [B, T, C]
  auto heads = [&](const Tensor& t) { return t.reshape({B, T, H, D}).transpose(1, 2); };
  Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);  // [B, H, T, D]
  if (cfg.rotary) {
    q = apply_rotary(q, rope_cos, rope_sin);
    k = apply_rotary(k, rope_cos, rope_sin);
  }
  FlexAttentionOptions opts;
  opts.score_mod = score_mod_;
  opts.dropout_p = is_training() ? cfg.dropout : 0.0;
  if (mask != nullptr) {
    opts.block_mask = *mask;
  } else {
    opts.block_mask = block_mask(T, x.device());
  }
  const Tensor y = flex_attention(q, k, v, opts).out;  // [B, H, T, D]
  return resid_drop->forward(c_proj->forward(y.transpose(1, 2).reshape({B, T, C})));
}

}  // namespace microflex
