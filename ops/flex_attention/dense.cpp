// The dense math path (Note [Dense flex_attention]).
#include "ops/flex_attention/dense.h"

#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "ops/elementwise.h"
#include "ops/indexing.h"
#include "ops/linalg.h"
#include "ops/nn.h"
#include "ops/op_utils.h"
#include "ops/reduction.h"
#include "ops/shape_ops.h"

namespace microflex {

// Note [Dense flex_attention]
// For each group of (batch, head) that shares a block-mask row (all of them when the
// mask has B = H = 1) and each query block of rows [m0, m0 + bm):
//   cols   = positions of the partial kv blocks, then of the full kv blocks
//   s      = q_blk · k[cols]ᵀ · scale                 [Bs, Hs, bm, n] working precision
//   s      = score_mod(s, b, h, q_idx, kv_idx)        broadcast indices
//   s      = where(mask_mod(...) on the partial columns, s, -inf)
//   out    = softmax(s) · v[cols],  lse = logsumexp(s)
// Empty kv blocks are never gathered, so causal costs about half of full. A row with
// every score masked gets out 0 and lse -inf, never NaN.

// Note [Flex dropout]
// Attention dropout zeroes each probability P[b, h, q, kv] (after the softmax, which still
// normalises over all of them) with probability p and scales the kept ones by 1 / (1 - p),
// so out = (P * z) V with z in {0, 1 / (1 - p)}; lse is unchanged. Whether (b, h, q, kv)
// is kept is philox::dropout_keep of its element id ((b * Hq + h) * M + q) * N + kv under
// the call's (seed, offset): a pure function, so the dense path (block by block, through
// the dropout_keep op), the fused forward and both fused backward kernels draw the same
// mask, and nothing is saved for the backward.

DType flex_working_dtype(DType input) {
  return input == DType::Float64 ? DType::Float64 : DType::Float32;
}

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

Tensor index_grid(int64_t start, int64_t n, int64_t dim, Device dev) {
  Shape s{1, 1, 1, 1};
  s[dim] = n;
  return arange(start, start + n, 1, {.dtype = DType::Int32, .device = dev}).view(s);
}

Tensor index_list(const std::vector<int64_t>& v, int64_t dim, DType dt, Device dev) {
  Shape s{1, 1, 1, 1};
  s[dim] = static_cast<int64_t>(v.size());
  return from_vector(v, s, {.dtype = dt, .device = dev});
}

// x [B, Hkv, n, D] -> [B, Hkv * G, n, D]: each kv head serves G query heads.
Tensor repeat_kv(const Tensor& x, int64_t G) {
  if (G == 1) return x;
  const Shape& s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], G, s[2], s[3]}).reshape({s[0], s[1] * G, s[2], s[3]});
}

// Host copy of the block lists, indexed like Note [Block mask layout].
struct HostMask {
  bool present = false;
  int64_t B = 1, H = 1, Mb = 0, Nb = 0;
  std::vector<int32_t> num, idx, full_num, full_idx;
};

HostMask host_mask(const FlexArgs& a, int64_t M, int64_t N) {
  HostMask h;
  if (a.block_mask.empty()) {
    h.Mb = (M + a.q_block - 1) / a.q_block;
    return h;
  }
  h.present = true;
  h.B = a.block_mask[0].size(0);
  h.H = a.block_mask[0].size(1);
  h.Mb = a.block_mask[0].size(2);
  h.Nb = a.block_mask[1].size(3);
  h.num = a.block_mask[0].to_vector<int32_t>();
  h.idx = a.block_mask[1].to_vector<int32_t>();
  h.full_num = a.block_mask[2].to_vector<int32_t>();
  h.full_idx = a.block_mask[3].to_vector<int32_t>();
  (void)N;
  return h;
}

// One unit of work: a (batch range, head range, query block) and its columns.
struct Chunk {
  int64_t b0, nb, h0, nh, m0, bm;
  std::vector<int64_t> partial, full;  // kv positions
};

template <typename F>
void for_each_chunk(const FlexArgs& a, F&& f) {
  const int64_t B = a.q.size(0), Hq = a.q.size(1), M = a.q.size(2), N = a.k.size(2);
  const HostMask hm = host_mask(a, M, N);
  for (int64_t bb = 0; bb < hm.B; ++bb)
    for (int64_t hh = 0; hh < hm.H; ++hh)
      for (int64_t mb = 0; mb < hm.Mb; ++mb) {
        Chunk c;
        c.b0 = hm.B == 1 ? 0 : bb;
        c.nb = hm.B == 1 ? B : 1;
        c.h0 = hm.H == 1 ? 0 : hh;
        c.nh = hm.H == 1 ? Hq : 1;
        c.m0 = mb * a.q_block;
        c.bm = std::min(a.q_block, M - c.m0);
        if (!hm.present) {
          for (int64_t n = 0; n < N; ++n) c.full.push_back(n);
        } else {
          const int64_t row = (bb * hm.H + hh) * hm.Mb + mb;
          auto add = [&](const std::vector<int32_t>& num, const std::vector<int32_t>& idx,
                         std::vector<int64_t>* out) {
            for (int32_t j = 0; j < num[row]; ++j) {
              const int64_t blk = idx[row * hm.Nb + j];
              for (int64_t n = blk * a.kv_block; n < std::min(N, (blk + 1) * a.kv_block); ++n)
                out->push_back(n);
            }
          };
          add(hm.num, hm.idx, &c.partial);
          add(hm.full_num, hm.full_idx, &c.full);
        }
        if (c.partial.empty() && c.full.empty()) continue;  // all masked: out 0, lse -inf
        f(c);
      }
}

Tensor check_broadcast(const Tensor& t, const Shape& want, const char* what) {
  Shape b;
  try {
    b = broadcast_shapes(t.sizes(), want, "flex_attention");
  } catch (const Error&) {
    b.clear();
  }
  MF_CHECK(b == want, "flex_attention: ", what, " returned shape ", shape_str(t.sizes()),
           ", which does not broadcast to the score shape ", shape_str(want));
  return t.sizes() == want ? t : t.expand(want);
}

// The chunk's normalized output and lse from working-precision q/k/v.
struct ChunkResult {
  Tensor out, lse;
};

ChunkResult chunk_forward(const FlexArgs& a, const Chunk& c, const Tensor& qw, const Tensor& kw,
                          const Tensor& vw, const TensorList& score_caps) {
  const Device dev = qw.device();
  const int64_t G = a.q.size(1) / a.k.size(1);
  const int64_t kv_h0 = c.nh == a.q.size(1) ? 0 : c.h0 / G;
  const int64_t kv_nh = c.nh == a.q.size(1) ? a.k.size(1) : 1;
  const int64_t reps = c.nh == a.q.size(1) ? G : 1;
  std::vector<int64_t> cols = c.partial;
  cols.insert(cols.end(), c.full.begin(), c.full.end());
  const int64_t n = static_cast<int64_t>(cols.size());
  const bool all_cols = c.partial.empty() && n == a.k.size(2);

  // q_blk [Bs, Hs, bm, D]; k_blk [Bs, Hs, n, D]; v_blk [Bs, Hs, n, Dv]
  Tensor q_blk = qw.narrow(0, c.b0, c.nb).narrow(1, c.h0, c.nh).narrow(2, c.m0, c.bm);
  Tensor k_sub = kw.narrow(0, c.b0, c.nb).narrow(1, kv_h0, kv_nh);
  Tensor v_sub = vw.narrow(0, c.b0, c.nb).narrow(1, kv_h0, kv_nh);
  Tensor col_idx = index_list(cols, 3, DType::Int64, dev).flatten();
  Tensor k_blk = repeat_kv(all_cols ? k_sub : index_select(k_sub, 2, col_idx), reps);
  Tensor v_blk = repeat_kv(all_cols ? v_sub : index_select(v_sub, 2, col_idx), reps);

  const Shape score_shape{c.nb, c.nh, c.bm, n};
  Tensor s = matmul(q_blk, k_blk.transpose(-2, -1)) * a.scale;
  const Tensor b_idx = index_grid(c.b0, c.nb, 0, dev), h_idx = index_grid(c.h0, c.nh, 1, dev);
  const Tensor q_idx = index_grid(c.m0, c.bm, 2, dev);
  if (a.score_fn) {
    TensorList in{s, b_idx, h_idx, q_idx, index_list(cols, 3, DType::Int32, dev)};
    in.insert(in.end(), score_caps.begin(), score_caps.end());
    s = check_broadcast(a.score_fn(in).at(0), score_shape, "score_mod");
    if (s.dtype() != qw.dtype()) s = s.to(qw.dtype());
  }
  if (!c.partial.empty()) {
    TensorList in{b_idx, h_idx, q_idx, index_list(c.partial, 3, DType::Int32, dev)};
    in.insert(in.end(), a.mask_captured.begin(), a.mask_captured.end());
    Tensor keep = a.mask_fn(in).at(0);
    MF_CHECK(keep.dtype() == DType::Bool,
             "flex_attention: mask_mod must return a bool tensor, got ", keep.dtype());
    const int64_t np = static_cast<int64_t>(c.partial.size());
    keep = check_broadcast(keep, {c.nb, c.nh, c.bm, np}, "mask_mod");
    if (np < n) {
      keep = cat(
          {keep, full({c.nb, c.nh, c.bm, n - np}, true, {.dtype = DType::Bool, .device = dev})}, 3);
    }
    s = where(keep, s, kNegInf);
  }
  // Stable softmax; a fully masked row has max -inf: use 0 so exp gives zeros, not NaN.
  Tensor mx = amax(s, {3}, true);
  mx = where(mx == kNegInf, 0.0, mx);
  Tensor p = exp(s - mx);
  Tensor l = sum(p, {3}, true);
  if (a.dropout_p > 0.0) {
    // Element ids of the chunk (Note [Flex dropout]), broadcast to [Bs, Hs, bm, n].
    auto i64 = [](const Tensor& t) { return t.to(DType::Int64); };
    const Tensor ids =
        ((i64(b_idx) * a.q.size(1) + i64(h_idx)) * a.q.size(2) + i64(q_idx)) * a.k.size(2) +
        index_list(cols, 3, DType::Int64, dev);
    const Tensor keep = dropout_keep(ids, a.dropout_p, a.dropout_seed, a.dropout_offset);
    const double z = a.dropout_p < 1.0 ? 1.0 / (1.0 - a.dropout_p) : 0.0;
    p = p * (keep.to(p.dtype()) * z);
  }
  Tensor out = matmul(p, v_blk) / where(l == 0.0, 1.0, l);
  Tensor lse = (log(l) + mx).squeeze(3);
  return {out, lse};
}

}  // namespace

TensorList flex_dense_forward(const FlexArgs& a) {
  const DType wdt = flex_working_dtype(a.q.dtype());
  const Device dev = a.q.device();
  const int64_t B = a.q.size(0), Hq = a.q.size(1), M = a.q.size(2), Dv = a.v.size(3);
  const Tensor qw = as_dtype(a.q, wdt), kw = as_dtype(a.k, wdt), vw = as_dtype(a.v, wdt);
  Tensor out = zeros({B, Hq, M, Dv}, {.dtype = wdt, .device = dev});
  Tensor lse = full({B, Hq, M}, kNegInf, {.dtype = wdt, .device = dev});
  for_each_chunk(a, [&](const Chunk& c) {
    ChunkResult r = chunk_forward(a, c, qw, kw, vw, a.score_captured);
    out.narrow(0, c.b0, c.nb).narrow(1, c.h0, c.nh).narrow(2, c.m0, c.bm).copy_(r.out);
    lse.narrow(0, c.b0, c.nb).narrow(1, c.h0, c.nh).narrow(2, c.m0, c.bm).copy_(r.lse);
  });
  return {as_dtype(out, a.q.dtype()), as_dtype(lse, wdt)};
}

TensorList flex_dense_backward(const FlexArgs& a, const Tensor& grad_out) {
  const DType wdt = flex_working_dtype(a.q.dtype());
  EnableGradGuard grad_on;
  Tensor qd = as_dtype(a.q, wdt).detach().requires_grad_();
  Tensor kd = as_dtype(a.k, wdt).detach().requires_grad_();
  Tensor vd = as_dtype(a.v, wdt).detach().requires_grad_();
  TensorList caps;
  for (const Tensor& t : a.score_captured) {
    Tensor d = t.detach();
    if (is_floating(t.dtype())) d.requires_grad_();
    caps.push_back(d);
  }
  const Tensor gw = as_dtype(grad_out, wdt);
  for_each_chunk(a, [&](const Chunk& c) {
    ChunkResult r = chunk_forward(a, c, qd, kd, vd, caps);
    Tensor g = gw.narrow(0, c.b0, c.nb).narrow(1, c.h0, c.nh).narrow(2, c.m0, c.bm);
    (r.out * g).sum().backward();
  });
  auto grad_or_zeros = [](const Tensor& leaf, DType dt) {
    Tensor g = leaf.grad().defined() ? leaf.grad() : zeros_like(leaf);
    return as_dtype(g, dt);
  };
  TensorList res{grad_or_zeros(qd, a.q.dtype()), grad_or_zeros(kd, a.k.dtype()),
                 grad_or_zeros(vd, a.v.dtype())};
  for (size_t i = 0; i < caps.size(); ++i)
    res.push_back(caps[i].requires_grad() ? grad_or_zeros(caps[i], a.score_captured[i].dtype())
                                          : Tensor());
  return res;
}

}  // namespace microflex
