// flex_attention as a higher-order op: the public function (validation, tracing of
// score_mod/mask_mod), then one implementation per mode — dense (any device), fake,
// autograd, tracing — for the forward op and for flex_attention_backward.
#include "ops/flex_attention/flex_attention.h"

#include <cmath>
#include <set>

#include "autograd/node.h"
#include "core/fake.h"
#include "core/random.h"
#include "ops/flex_attention/dense.h"
#include "ops/flex_attention/fused.h"
#include "ops/op_utils.h"

namespace microflex {

namespace {

// ---- score_mod / mask_mod as graphs ----

// Ops a score_mod or mask_mod may not apply to the score or the indices: they would make
// the broadcast call and the per-element call differ (Note [Pointwise mods]).
const std::set<std::string>& non_pointwise_ops() {
  static const std::set<std::string> s{
      "sum",     "mean",          "amax",       "amin",     "max",     "min",
      "argmax",  "argmin",        "logsumexp",  "var",      "softmax", "log_softmax",
      "matmul",  "bmm",           "linear",     "cat",      "stack",   "tril",
      "triu",    "cross_entropy", "layer_norm", "rms_norm", "dropout", "embedding",
      "one_hot", "arange",        "rand",       "randn",    "randint"};
  return s;
}

// Note [Pointwise mods]
// score_mod and mask_mod are traced on 0-d proxies. The graph may read captured tensors
// freely, but every value computed from the score or the indices must be elementwise in
// them (arithmetic, comparisons, where, casts, gathers with them as indices). Then the
// same graph runs on broadcast [B, H, rows, cols] blocks (the dense path) and per element
// (fused kernels), with the same meaning.
void check_pointwise(const graph::Graph& g, size_t num_index_args, const char* which) {
  std::set<int64_t> derived(g.inputs().begin(), g.inputs().begin() + num_index_args);
  for (const graph::Node& n : g.nodes()) {
    bool from_args = false;
    for (int64_t v : n.inputs) from_args = from_args || derived.count(v);
    if (!from_args) continue;
    const OpDef* op = Dispatcher::get().find_or_null(n.op);
    const bool bad = non_pointwise_ops().count(n.op) || (op && op->kind == OpKind::View);
    MF_CHECK(!bad, "flex_attention: ", which,
             " must be pointwise in the score and indices, but it "
             "applies '",
             n.op, "' to them");
    for (int64_t o : n.outputs) derived.insert(o);
  }
  MF_CHECK(g.outputs().size() == 1 && g.outputs()[0] >= 0, "flex_attention: ", which,
           " must return one tensor");
  MF_CHECK(g.meta(g.outputs()[0]).sizes.empty(), "flex_attention: ", which,
           " must return one value per score element; on 0-d inputs it returned shape ",
           shape_str(g.meta(g.outputs()[0]).sizes));
}

Tensor proxy_scalar(DType dt, Device dev) {
  return Tensor::make({}, dt, dev, true);
}

// Runs a per-element graph on broadcast blocks (shapes differ from the traced 0-d ones);
// the fused path reads the graph back out of the SubgraphFn (FlexGraphFn in fused.h).
SubgraphFn graph_fn(const graph::GraphModule& gm) {
  return FlexGraphFn{gm.graph_ptr()};
}

}  // namespace

graph::GraphModule trace_score_mod(const ScoreMod& score_mod, DType score_dtype, Device device) {
  const Tensor i = proxy_scalar(DType::Int32, device);
  graph::GraphModule gm =
      trace_subgraph("flex_attention", "score_mod",
                     [&](const TensorList& in) {
                       return TensorList{score_mod(in[0], in[1], in[2], in[3], in[4])};
                     },
                     {proxy_scalar(score_dtype, device), i, i, i, i});
  check_pointwise(gm.graph(), 5, "score_mod");
  return gm;
}

graph::GraphModule trace_mask_mod(const MaskMod& mask_mod, Device device) {
  const Tensor i = proxy_scalar(DType::Int32, device);
  graph::GraphModule gm = trace_subgraph(
      "flex_attention", "mask_mod",
      [&](const TensorList& in) { return TensorList{mask_mod(in[0], in[1], in[2], in[3])}; },
      {i, i, i, i});
  check_pointwise(gm.graph(), 4, "mask_mod");
  const DType out = gm.graph().meta(gm.graph().outputs()[0]).dtype;
  MF_CHECK(out == DType::Bool, "flex_attention: mask_mod must return a bool tensor, got ", out);
  return gm;
}

namespace {

// ---- operand layout shared by the forward and backward ops ----
// forward:  q, k, v, [8 block-mask tensors], score captured..., mask captured...
// backward: q, k, v, out, lse, grad_out, then the same tail.
constexpr size_t kMaskTensors = 8;

FlexArgs unpack(const TensorList& ops, size_t lead, const std::vector<SubgraphFn>& fns,
                const Attrs& a) {
  FlexArgs f;
  f.q = ops[0];
  f.k = ops[1];
  f.v = ops[2];
  size_t at = lead;
  if (a.b("has_block_mask")) {
    f.block_mask.assign(ops.begin() + at, ops.begin() + at + kMaskTensors);
    at += kMaskTensors;
  }
  const auto ns = static_cast<size_t>(a.i("num_score_captured"));
  f.score_captured.assign(ops.begin() + at, ops.begin() + at + ns);
  f.mask_captured.assign(ops.begin() + at + ns, ops.end());
  f.q_block = a.i("q_block_size");
  f.kv_block = a.i("kv_block_size");
  f.scale = a.f("scale");
  if (a.has("dropout_p")) {
    f.dropout_p = a.f("dropout_p");
    const PhiloxSeedOffset so = philox_attrs(a);
    f.dropout_seed = so.seed;
    f.dropout_offset = so.offset;
  }
  if (a.b("has_score_mod")) f.score_fn = fns[0];
  f.mask_fn = fns[1];
  return f;
}

TensorList tail(const TensorList& ops, size_t lead) {
  return TensorList(ops.begin() + lead, ops.end());
}

DType lse_dtype(DType q) {
  return flex_working_dtype(q);
}

std::vector<TensorMeta> forward_metas(const TensorList& ops) {
  const Tensor &q = ops[0], &v = ops[2];
  return {{{q.size(0), q.size(1), q.size(2), v.size(3)}, q.dtype(), q.device()},
          {{q.size(0), q.size(1), q.size(2)}, lse_dtype(q.dtype()), q.device()}};
}

TensorList fakes(const std::vector<TensorMeta>& metas) {
  TensorList t;
  for (const TensorMeta& m : metas) t.push_back(Tensor::make(m.sizes, m.dtype, m.device, true));
  return t;
}

// Examples for tracing the two subgraphs inside a traced flex_attention node.
std::vector<TensorList> subgraph_examples(const FlexArgs& f) {
  const Device dev = f.q.device();
  const Tensor i = proxy_scalar(DType::Int32, dev);
  TensorList s{proxy_scalar(flex_working_dtype(f.q.dtype()), dev), i, i, i, i};
  s.insert(s.end(), f.score_captured.begin(), f.score_captured.end());
  TensorList m{i, i, i, i};
  m.insert(m.end(), f.mask_captured.begin(), f.mask_captured.end());
  return {s, m};
}

const HigherOrderOperator& backward_op();

// The tape entry of one flex_attention call.
struct FlexAttentionNode final : autograd::Node {
  std::vector<SubgraphFn> fns;
  Attrs attrs;
  std::vector<autograd::SavedTensor> saved;  // operands, then out and lse
  std::vector<TensorMeta> input_metas;
  bool released = false;

  TensorList apply(const TensorList& grads) override {
    MF_CHECK(!released,
             "backward of flex_attention: trying to backward through the graph a "
             "second time; pass retain_graph=true to the first backward");
    TensorList ops;
    for (const auto& s : saved) ops.push_back(s.unpack("flex_attention"));
    const Tensor out = ops[ops.size() - 2], lse = ops[ops.size() - 1];
    ops.resize(ops.size() - 2);
    const Tensor g = grads[0].defined() ? grads[0] : zeros_like(out);
    TensorList bops{ops[0], ops[1], ops[2], out, lse, g};
    bops.insert(bops.end(), ops.begin() + 3, ops.end());
    TensorList r = backward_op().call(fns, bops, attrs);
    // One gradient per operand: dq, dk, dv, nothing for the mask, d(score captured)...
    TensorList per_input(next_edges.size());
    per_input[0] = r[0];
    per_input[1] = r[1];
    per_input[2] = r[2];
    const size_t first_cap = 3 + (attrs.b("has_block_mask") ? kMaskTensors : 0);
    for (size_t i = 3; i < r.size(); ++i) per_input[first_cap + i - 3] = r[i];
    return per_input;
  }
  std::string name() const override { return "flex_attention"; }
  void release_saved() override {
    saved.clear();
    released = true;
  }
};

const HigherOrderOperator& forward_op() {
  static const HigherOrderOperator* op = [] {
    auto* h = new HigherOrderOperator("flex_attention", {"score_mod", "mask_mod"});
    h->impl(DispatchKey::CPU, [](const HigherOrderOperator&, DispatchKeySet,
                                 const std::vector<SubgraphFn>& fns, const TensorList& ops,
                                 const Attrs& a) {
      const FlexArgs f = unpack(ops, 3, fns, a);
      const auto kernel = static_cast<FlexKernel>(a.has("kernel") ? a.i("kernel") : int64_t{0});
      if (auto r = flex_try_fused_forward(f, kernel)) return *r;
      return flex_dense_forward(f);
    });
    h->impl(DispatchKey::Fake,
            [](const HigherOrderOperator&, DispatchKeySet, const std::vector<SubgraphFn>&,
               const TensorList& ops, const Attrs&) { return fakes(forward_metas(ops)); });
    h->impl(DispatchKey::Autograd, [](const HigherOrderOperator& self, DispatchKeySet ks,
                                      const std::vector<SubgraphFn>& fns, const TensorList& ops,
                                      const Attrs& a) {
      TensorList outs;
      {
        ExcludeKeyGuard g(DispatchKeySet{DispatchKey::Autograd});
        outs = self.redispatch(ks.below(DispatchKey::Autograd), fns, ops, a);
      }
      const size_t first_cap = 3 + (a.b("has_block_mask") ? kMaskTensors : 0);
      const size_t end_cap = first_cap + static_cast<size_t>(a.i("num_score_captured"));
      auto node = std::make_shared<FlexAttentionNode>();
      bool any = false;
      for (size_t i = 0; i < ops.size(); ++i) {
        const bool diff = i < 3 || (i >= first_cap && i < end_cap);
        node->next_edges.push_back(diff ? autograd::gradient_edge(ops[i]) : autograd::Edge{});
        any = any || node->next_edges.back().valid();
      }
      if (!any) return outs;
      node->fns = fns;
      node->attrs = a;
      // Which captured tensors of score_mod want a gradient (the fused backward skips the
      // others' accumulation).
      if (end_cap > first_cap) {
        Shape needs;
        for (size_t i = first_cap; i < end_cap; ++i) needs.push_back(node->next_edges[i].valid());
        node->attrs.set("captured_needs_grad", needs);
      }
      node->sequence_nr = autograd::next_sequence_nr();
      for (const Tensor& t : ops) node->saved.push_back(autograd::SavedTensor::save(t));
      node->saved.push_back(autograd::SavedTensor::save(outs[0]));
      node->saved.push_back(autograd::SavedTensor::save(outs[1]));
      node->output_metas = {meta_of(outs[0])};
      outs[0].impl()->requires_grad = true;
      outs[0].impl()->grad_fn = node;
      outs[0].impl()->output_nr = 0;
      return outs;
    });
    h->impl(DispatchKey::Tracing,
            [](const HigherOrderOperator& self, DispatchKeySet, const std::vector<SubgraphFn>& fns,
               const TensorList& ops, const Attrs& a) {
              const FlexArgs f = unpack(ops, 3, fns, a);
              return trace_hop(self, fns, subgraph_examples(f), ops, a, forward_metas(ops));
            });
    return h;
  }();
  return *op;
}

const HigherOrderOperator& backward_op() {
  static const HigherOrderOperator* op = [] {
    auto* h = new HigherOrderOperator("flex_attention_backward", {"score_mod", "mask_mod"});
    h->impl(DispatchKey::CPU,
            [](const HigherOrderOperator&, DispatchKeySet, const std::vector<SubgraphFn>& fns,
               const TensorList& ops, const Attrs& a) {
              FlexArgs f = unpack(ops, 6, fns, a);
              FlexBackwardOptions o;
              o.kernel = static_cast<FlexKernel>(a.has("kernel") ? a.i("kernel") : int64_t{0});
              o.deterministic = a.has("deterministic") && a.b("deterministic");
              if (a.has("captured_needs_grad"))
                for (int64_t n : a.ints("captured_needs_grad"))
                  o.captured_needs_grad.push_back(n != 0);
              if (auto r = flex_try_fused_backward(f, ops[3], ops[4], ops[5], o)) return *r;
              return flex_dense_backward(f, ops[5]);
            });
    auto metas = [](const TensorList& ops, const Attrs& a) {
      std::vector<TensorMeta> m;
      for (int i = 0; i < 3; ++i) m.push_back({ops[i].sizes(), ops[i].dtype(), ops[i].device()});
      const size_t first = 6 + (a.b("has_block_mask") ? kMaskTensors : 0);
      for (size_t i = 0; i < static_cast<size_t>(a.i("num_score_captured")); ++i) {
        const Tensor& c = ops[first + i];
        m.push_back({c.sizes(), c.dtype(), c.device()});
      }
      return m;
    };
    h->impl(DispatchKey::Fake,
            [metas](const HigherOrderOperator&, DispatchKeySet, const std::vector<SubgraphFn>&,
                    const TensorList& ops, const Attrs& a) { return fakes(metas(ops, a)); });
    h->impl(DispatchKey::Tracing,
            [metas](const HigherOrderOperator& self, DispatchKeySet,
                    const std::vector<SubgraphFn>& fns, const TensorList& ops, const Attrs& a) {
              const FlexArgs f = unpack(ops, 6, fns, a);
              return trace_hop(self, fns, subgraph_examples(f), ops, a, metas(ops, a));
            });
    return h;
  }();
  return *op;
}

// Replayed flex_attention nodes get FlexGraphFn subgraphs, so a replay can take the fused
// kernels too (their mods' captured tensors are operands: no captured values here).
void register_runners() {
  static bool done = [] {
    auto make = [](std::shared_ptr<graph::Graph> g, const TensorList& captured) -> SubgraphFn {
      MF_INTERNAL_ASSERT(captured.empty(), "flex_attention: a traced mod with bound captures");
      return FlexGraphFn{std::move(g)};
    };
    register_hop_runner(forward_op(), make);
    register_hop_runner(backward_op(), make);
    return true;
  }();
  (void)done;
}

void validate(const Tensor& q, const Tensor& k, const Tensor& v, const FlexAttentionOptions& o) {
  MF_CHECK(q.defined() && k.defined() && v.defined(), "flex_attention: q, k and v must be defined");
  MF_CHECK(q.dim() == 4, "flex_attention: q must be 4-D [B, Hq, M, D], got ", shape_str(q.sizes()));
  MF_CHECK(k.dim() == 4, "flex_attention: k must be 4-D [B, Hkv, N, D], got ",
           shape_str(k.sizes()));
  MF_CHECK(v.dim() == 4, "flex_attention: v must be 4-D [B, Hkv, N, Dv], got ",
           shape_str(v.sizes()));
  MF_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(),
           "flex_attention: q, k and v must have one dtype, got ", q.dtype(), ", ", k.dtype(),
           " and ", v.dtype());
  MF_CHECK(is_floating(q.dtype()), "flex_attention: expected floating inputs, got ", q.dtype());
  MF_CHECK(q.device() == k.device() && q.device() == v.device(),
           "flex_attention: q, k and v must be on one device, got ", q.device(), ", ", k.device(),
           " and ", v.device());
  MF_CHECK(q.size(0) == k.size(0) && q.size(0) == v.size(0),
           "flex_attention: batch sizes differ: q ", shape_str(q.sizes()), ", k ",
           shape_str(k.sizes()), ", v ", shape_str(v.sizes()));
  MF_CHECK(k.size(1) == v.size(1) && k.size(2) == v.size(2), "flex_attention: k ",
           shape_str(k.sizes()), " and v ", shape_str(v.sizes()),
           " must agree in heads and length");
  MF_CHECK(q.size(3) == k.size(3), "flex_attention: q's head dim D = ", q.size(3),
           " differs from k's ", k.size(3), " (q ", shape_str(q.sizes()), ", k ",
           shape_str(k.sizes()), ")");
  const int64_t Hq = q.size(1), Hkv = k.size(1);
  if (Hq != Hkv) {
    MF_CHECK(o.enable_gqa, "flex_attention: q has ", Hq, " heads and k/v ", Hkv,
             "; unequal head counts need enable_gqa = true");
    MF_CHECK(Hkv > 0 && Hq % Hkv == 0, "flex_attention: with enable_gqa, q's head count ", Hq,
             " must be a multiple of k/v's ", Hkv);
  }
  MF_CHECK(q.size(2) > 0 && k.size(2) > 0, "flex_attention: empty sequence (M = ", q.size(2),
           ", N = ", k.size(2), ")");
  if (o.block_mask) {
    const BlockMask& bm = *o.block_mask;
    MF_CHECK(bm.q_len == q.size(2) && bm.kv_len == k.size(2),
             "flex_attention: BlockMask built for ", bm.q_len, "x", bm.kv_len, ", inputs are ",
             q.size(2), "x", k.size(2), " (build it for these lengths or use BlockMask::adjust)");
    MF_CHECK(bm.batch() == 1 || bm.batch() == q.size(0), "flex_attention: BlockMask batch ",
             bm.batch(), " must be 1 or q's batch ", q.size(0));
    MF_CHECK(bm.heads() == 1 || bm.heads() == Hq, "flex_attention: BlockMask heads ", bm.heads(),
             " must be 1 or q's heads ", Hq);
    MF_CHECK(bm.kv_num_blocks.device() == q.device(), "flex_attention: BlockMask is on ",
             bm.kv_num_blocks.device(), ", inputs on ", q.device(), " (use BlockMask::to)");
  }
  if (o.scale)
    MF_CHECK(std::isfinite(*o.scale), "flex_attention: scale must be finite, got ", *o.scale);
  MF_CHECK(o.dropout_p >= 0.0 && o.dropout_p <= 1.0,
           "flex_attention: dropout_p must be in [0, 1], got ", o.dropout_p);
}

}  // namespace

FlexAttentionResult flex_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const FlexAttentionOptions& opts) {
  validate(q, k, v, opts);
  register_runners();
  const Device dev = q.device();
  TensorList operands{q, k, v};
  Attrs a;
  a.set("scale", opts.scale ? *opts.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3))));
  a.set("has_block_mask", opts.block_mask.has_value());
  a.set("has_score_mod", static_cast<bool>(opts.score_mod));
  if (opts.kernel != FlexKernel::Auto) a.set("kernel", static_cast<int64_t>(opts.kernel));
  if (opts.deterministic) a.set("deterministic", true);
  if (opts.dropout_p > 0.0) {
    // One draw from the default generator per call; the backward reuses it.
    a.set("dropout_p", opts.dropout_p);
    set_philox_attrs(a, next_philox_seed_offset());
  }
  a.set("q_block_size", opts.block_mask ? opts.block_mask->q_block_size : int64_t{128});
  a.set("kv_block_size", opts.block_mask ? opts.block_mask->kv_block_size : int64_t{128});
  if (opts.block_mask) {
    const BlockMask& bm = *opts.block_mask;
    for (const Tensor& t :
         {bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices,
          bm.q_num_blocks, bm.q_indices, bm.full_q_num_blocks, bm.full_q_indices})
      operands.push_back(t);
  }
  std::vector<SubgraphFn> fns(2);
  TensorList score_caps, mask_caps;
  if (opts.score_mod) {
    graph::GraphModule gm = trace_score_mod(opts.score_mod, flex_working_dtype(q.dtype()), dev);
    fns[0] = graph_fn(gm);
    score_caps = gm.captured();
  } else {
    fns[0] = [](const TensorList& in) { return TensorList{in[0]}; };
  }
  if (opts.block_mask && opts.block_mask->mask_mod) {
    graph::GraphModule gm = trace_mask_mod(opts.block_mask->mask_mod, dev);
    fns[1] = graph_fn(gm);
    mask_caps = gm.captured();
  } else {
    fns[1] = [](const TensorList& in) {
      return TensorList{full({}, true, {.dtype = DType::Bool, .device = in[0].device()})};
    };
  }
  for (const Tensor& c : score_caps)
    MF_CHECK(c.device() == dev, "flex_attention: score_mod captures a tensor on ", c.device(),
             ", inputs are on ", dev);
  for (const Tensor& c : mask_caps)
    MF_CHECK(c.device() == dev, "flex_attention: mask_mod captures a tensor on ", c.device(),
             ", inputs are on ", dev);
  a.set("num_score_captured", static_cast<int64_t>(score_caps.size()));
  operands.insert(operands.end(), score_caps.begin(), score_caps.end());
  operands.insert(operands.end(), mask_caps.begin(), mask_caps.end());
  TensorList r = forward_op().call(fns, operands, a);
  FlexAttentionResult res;
  res.out = r[0];
  if (opts.return_lse) res.lse = r[1];
  return res;
}

}  // namespace microflex
