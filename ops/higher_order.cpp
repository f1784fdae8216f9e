// The higher-order operator layer: per-key dispatch, the mutation check and the shared
// Tracing implementation. cond.cpp and flex_attention build on it.
#include "ops/higher_order.h"

#include <set>

#include "core/fake.h"
#include "ops/op_utils.h"

namespace microflex {

HigherOrderOperator::HigherOrderOperator(std::string name, std::vector<std::string> names)
    : name_(std::move(name)), subgraph_names_(std::move(names)) {}

HigherOrderOperator& HigherOrderOperator::impl(DispatchKey k, Impl f) {
  auto& slot = impls_[static_cast<int>(k)];
  MF_INTERNAL_ASSERT(!slot, name_, ": implementation for ", dispatch_key_name(k),
                     " registered twice");
  slot = std::move(f);
  return *this;
}

TensorList HigherOrderOperator::call(const std::vector<SubgraphFn>& fns, const TensorList& operands,
                                     const Attrs& attrs) const {
  return redispatch(Dispatcher::get().compute_keys(operands, attrs), fns, operands, attrs);
}

TensorList HigherOrderOperator::redispatch(DispatchKeySet ks, const std::vector<SubgraphFn>& fns,
                                           const TensorList& operands, const Attrs& attrs) const {
  while (!ks.empty()) {
    const DispatchKey k = ks.highest();
    // The dense implementation registered for CPU serves every backend.
    const DispatchKey slot =
        k == DispatchKey::CUDA && !impls_[static_cast<int>(k)] ? DispatchKey::CPU : k;
    if (const Impl& f = impls_[static_cast<int>(slot)]) return f(*this, ks, fns, operands, attrs);
    ks = ks.remove(k);
  }
  MF_CHECK(false, name_, ": no implementation for this combination of modes and devices");
  return {};
}

graph::GraphModule trace_subgraph(const std::string& hop, const std::string& subgraph,
                                  const SubgraphFn& fn, const TensorList& examples) {
  graph::GraphModule gm = [&] {
    try {
      return graph::trace(fn, examples);
    } catch (const Error& e) {
      // The user's function failed on the proxies: say which function of which op.
      throw Error(
          detail::str_cat(hop, ": ", subgraph, " raised an error while traced: ", e.what()));
    }
  }();
  const graph::Graph& g = gm.graph();
  // Values that alias a graph input (placeholder or captured), through views.
  std::map<int64_t, int64_t> root;
  for (int64_t v : g.inputs()) root[v] = v;
  for (const graph::Node& n : g.nodes()) {
    const OpDef* op = Dispatcher::get().find_or_null(n.op);
    if (!op || n.inputs.empty()) continue;
    auto it = root.find(n.inputs[0]);
    if (it == root.end()) continue;
    if (op->kind == OpKind::InPlace) {
      const bool captured =
          it->second >= 0 && std::find(g.inputs().end() - static_cast<long>(g.num_lifted()),
                                       g.inputs().end(), it->second) != g.inputs().end();
      MF_CHECK(false, hop, ": Mutations detected in ", subgraph, ": in-place op '", n.op,
               "' writes into ", captured ? "a captured tensor" : "an input of the function", " (",
               dtype_name(g.meta(it->second).dtype), shape_str(g.meta(it->second).sizes),
               "); use out-of-place ops");
    }
    if (op->kind == OpKind::View)
      for (int64_t o : n.outputs) root[o] = it->second;
  }
  return gm;
}

namespace {

// Runs a traced subgraph with captured values taken from a node's inputs.
SubgraphFn from_graph(std::shared_ptr<graph::Graph> g, const TensorList& captured) {
  return [g, captured](const TensorList& in) {
    TensorList all = in;
    all.insert(all.end(), captured.begin(), captured.end());
    return graph::GraphModule(g, {}).run_all(all);
  };
}

}  // namespace

TensorList trace_hop(const HigherOrderOperator& hop, const std::vector<SubgraphFn>& fns,
                     const std::vector<TensorList>& subgraph_inputs, const TensorList& operands,
                     const Attrs& attrs, const std::vector<TensorMeta>& out_metas) {
  graph::Tracer* tr = graph::current_tracer();
  MF_INTERNAL_ASSERT(tr != nullptr, hop.name(), ": tracing without a tracer");
  std::map<std::string, std::shared_ptr<graph::Graph>> subgraphs;
  TensorList inputs = operands;
  Shape captured_counts;
  for (size_t i = 0; i < fns.size(); ++i) {
    graph::GraphModule gm =
        trace_subgraph(hop.name(), hop.subgraph_names()[i], fns[i], subgraph_inputs[i]);
    subgraphs[hop.subgraph_names()[i]] = gm.graph_ptr();
    captured_counts.push_back(static_cast<int64_t>(gm.captured().size()));
    inputs.insert(inputs.end(), gm.captured().begin(), gm.captured().end());
  }
  Attrs a = attrs;
  a.set("num_operands", static_cast<int64_t>(operands.size()));
  a.set("captured_counts", captured_counts);
  TensorList outs;
  for (const TensorMeta& m : out_metas)
    outs.push_back(Tensor::make(m.sizes, m.dtype, m.device, true));
  tr->record(hop.name(), inputs, a, outs, std::move(subgraphs));
  return outs;
}

void register_hop_runner(const HigherOrderOperator& hop, SubgraphFactory make_fn) {
  if (!make_fn) make_fn = from_graph;
  const HigherOrderOperator* h = &hop;
  graph::register_hop_runner(hop.name(), [h, make_fn](const graph::Node& n, const TensorList& in) {
    const int64_t nops = n.attrs.i("num_operands");
    const Shape& counts = n.attrs.ints("captured_counts");
    TensorList operands(in.begin(), in.begin() + nops);
    std::vector<SubgraphFn> fns;
    int64_t at = nops;
    for (size_t i = 0; i < h->subgraph_names().size(); ++i) {
      TensorList cap(in.begin() + at, in.begin() + at + counts[i]);
      at += counts[i];
      fns.push_back(make_fn(n.subgraphs.at(h->subgraph_names()[i]), cap));
    }
    Attrs a;
    for (const auto& [name, v] : n.attrs.items())
      if (name != "num_operands" && name != "captured_counts") a.set(name, v);
    return h->call(fns, operands, a);
  });
}

// ---- cond ----
namespace {

std::vector<TensorMeta> metas_of(const TensorList& ts) {
  std::vector<TensorMeta> m;
  for (const Tensor& t : ts) m.push_back({t.sizes(), t.dtype(), t.device()});
  return m;
}

void check_same_outputs(const TensorList& a, const TensorList& b) {
  MF_CHECK(a.size() == b.size(), "cond: true_fn returns ", a.size(), " tensors, false_fn ",
           b.size());
  for (size_t i = 0; i < a.size(); ++i)
    MF_CHECK(a[i].sizes() == b[i].sizes() && a[i].dtype() == b[i].dtype(), "cond: output ", i,
             " of true_fn is ", describe(a[i]), " but false_fn's is ", describe(b[i]));
}

TensorList branch_operands(const TensorList& operands) {
  return TensorList(operands.begin() + 1, operands.end());
}

bool pred_value(const Tensor& pred) {
  return pred.item<bool>();
}

const HigherOrderOperator& cond_op() {
  static const HigherOrderOperator* op = [] {
    auto* h = new HigherOrderOperator("cond", {"true_fn", "false_fn"});
    // Dense: evaluate the predicate and run one branch.
    h->impl(DispatchKey::CPU,
            [](const HigherOrderOperator&, DispatchKeySet, const std::vector<SubgraphFn>& fns,
               const TensorList& ops,
               const Attrs&) { return fns[pred_value(ops[0]) ? 0 : 1](branch_operands(ops)); });
    // Fake: the predicate has no value; both branches run for their shapes.
    h->impl(DispatchKey::Fake,
            [](const HigherOrderOperator&, DispatchKeySet, const std::vector<SubgraphFn>& fns,
               const TensorList& ops, const Attrs&) {
              const TensorList t = fns[0](branch_operands(ops));
              const TensorList f = fns[1](branch_operands(ops));
              check_same_outputs(t, f);
              return t;
            });
    // Autograd: run the chosen branch with autograd on, so its ops record tape entries
    // (with a fake predicate, both run and the true branch's outputs are returned).
    h->impl(DispatchKey::Autograd,
            [](const HigherOrderOperator& self, DispatchKeySet ks,
               const std::vector<SubgraphFn>& fns, const TensorList& ops, const Attrs& attrs) {
              if (ops[0].is_fake()) {
                const TensorList t = fns[0](branch_operands(ops));
                check_same_outputs(t, fns[1](branch_operands(ops)));
                return t;
              }
              return fns[pred_value(ops[0]) ? 0 : 1](branch_operands(ops));
            });
    h->impl(DispatchKey::Tracing,
            [](const HigherOrderOperator& self, DispatchKeySet, const std::vector<SubgraphFn>& fns,
               const TensorList& ops, const Attrs& attrs) {
              const TensorList bops = branch_operands(ops);
              TensorList examples;
              for (const Tensor& t : bops) examples.push_back(to_fake(t));
              TensorList t, f;
              {
                ExcludeKeyGuard g(DispatchKeySet{DispatchKey::Tracing});
                FakeModeGuard fake;
                t = fns[0](examples);
                f = fns[1](examples);
              }
              check_same_outputs(t, f);
              return trace_hop(self, fns, {bops, bops}, ops, attrs, metas_of(t));
            });
    register_hop_runner(*h);
    return h;
  }();
  return *op;
}

}  // namespace

TensorList cond(const Tensor& pred, const SubgraphFn& true_fn, const SubgraphFn& false_fn,
                const TensorList& operands) {
  MF_CHECK(pred.defined() && pred.numel() == 1 && pred.dtype() == DType::Bool,
           "cond: pred must be a bool tensor with one element, got ",
           pred.defined() ? describe(pred) : std::string("an undefined tensor"));
  const HigherOrderOperator& op = cond_op();
  // Functionalization check: neither branch may write into its inputs or captures.
  TensorList examples;
  for (const Tensor& t : operands) examples.push_back(to_fake(t));
  const graph::GraphModule t = trace_subgraph("cond", "true_fn", true_fn, examples);
  const graph::GraphModule f = trace_subgraph("cond", "false_fn", false_fn, examples);
  // Both branches must agree even though only one runs (as under fake mode and tracing).
  const graph::Graph &tg = t.graph(), &fg = f.graph();
  MF_CHECK(tg.outputs().size() == fg.outputs().size(), "cond: true_fn returns ",
           tg.outputs().size(), " tensors, false_fn ", fg.outputs().size());
  for (size_t i = 0; i < tg.outputs().size(); ++i) {
    if (tg.outputs()[i] < 0 || fg.outputs()[i] < 0) continue;
    const TensorMeta &a = tg.meta(tg.outputs()[i]), &b = fg.meta(fg.outputs()[i]);
    MF_CHECK(a.sizes == b.sizes && a.dtype == b.dtype, "cond: output ", i, " of true_fn is ",
             dtype_name(a.dtype), shape_str(a.sizes), " but false_fn's is ", dtype_name(b.dtype),
             shape_str(b.sizes));
  }
  TensorList all{pred};
  all.insert(all.end(), operands.begin(), operands.end());
  return op.call({true_fn, false_fn}, all);
}

}  // namespace microflex
