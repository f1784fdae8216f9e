#include "core/graph.h"

#include <sstream>

#include "core/fake.h"

namespace microflex::graph {

namespace {

thread_local Tracer* t_current_tracer = nullptr;

std::map<std::string, HopRunner>& hop_runners() {
  static std::map<std::string, HopRunner> m;
  return m;
}

std::string compact_shape(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

std::string meta_str(const TensorMeta& m) {
  std::string s = std::string(dtype_short(m.dtype)) + compact_shape(m.sizes);
  if (!m.device.is_cpu()) s += "@" + m.device.str();
  return s;
}

bool is_constant_node(const Node& n) {
  return n.op == "scalar_tensor" && n.attrs.has("wrapped") && n.attrs.b("wrapped");
}

std::string constant_str(const Node& n) {
  for (const auto& [name, v] : n.attrs.items())
    if (name == "value") return attr_value_string(v);
  return "?";
}

}  // namespace

Tracer* current_tracer() {
  return t_current_tracer;
}

TracingGuard::TracingGuard(Tracer* tracer)
    : prev_(t_current_tracer), saved_(local_dispatch_state()) {
  t_current_tracer = tracer;
  LocalDispatchState& s = local_dispatch_state();
  s.included = s.included.add(DispatchKey::Tracing).add(DispatchKey::Fake);
  s.excluded = s.excluded.remove(DispatchKey::Tracing).remove(DispatchKey::Fake);
}

TracingGuard::~TracingGuard() {
  t_current_tracer = prev_;
  local_dispatch_state() = saved_;
}

// ---- Graph ----
int64_t Graph::new_value(const TensorMeta& meta) {
  metas_.push_back(meta);
  lifted_.push_back(false);
  return static_cast<int64_t>(metas_.size()) - 1;
}

int64_t Graph::add_input(const TensorMeta& meta, bool lifted) {
  const int64_t id = new_value(meta);
  lifted_[id] = lifted;
  inputs_.push_back(id);
  if (lifted) ++num_lifted_;
  return id;
}

void Graph::add_node(Node n) {
  nodes_.push_back(std::move(n));
}

std::string Graph::to_string(const std::string& indent) const {
  std::map<int64_t, std::string> constants;
  for (const Node& n : nodes_)
    if (is_constant_node(n)) constants[n.outputs[0]] = constant_str(n);
  auto ref = [&](int64_t v) {
    if (v < 0) return std::string("None");
    auto it = constants.find(v);
    return it != constants.end() ? it->second : "%" + std::to_string(v);
  };
  std::ostringstream os;
  os << "graph(";
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const int64_t v = inputs_[i];
    os << (i ? ", " : "") << "%" << v << ": " << meta_str(metas_[v])
       << (lifted_[v] ? " (captured)" : "");
  }
  os << "):\n";
  for (const Node& n : nodes_) {
    if (is_constant_node(n)) continue;
    os << indent << "  ";
    for (size_t i = 0; i < n.outputs.size(); ++i) os << (i ? ", " : "") << "%" << n.outputs[i];
    os << " = " << n.op << "(";
    bool first = true;
    for (int64_t v : n.inputs) {
      os << (first ? "" : ", ") << ref(v);
      first = false;
    }
    for (const auto& [name, v] : n.attrs.items()) {
      os << (first ? "" : ", ") << name << "=" << attr_value_string(v);
      first = false;
    }
    os << ")  # ";
    for (size_t i = 0; i < n.output_metas.size(); ++i)
      os << (i ? ", " : "") << meta_str(n.output_metas[i]);
    os << "\n";
    for (const auto& [name, sg] : n.subgraphs)
      os << indent << "    " << name << " = " << sg->to_string(indent + "    ");
  }
  os << indent << "  return (";
  for (size_t i = 0; i < outputs_.size(); ++i) os << (i ? ", " : "") << ref(outputs_[i]);
  os << ")\n";
  return os.str();
}

std::string Graph::to_dot() const {
  std::ostringstream os;
  os << "digraph microflex {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (int64_t v : inputs_)
    os << "  v" << v << " [label=\"%" << v << ": " << meta_str(metas_[v])
       << (lifted_[v] ? " (captured)" : "") << "\", shape=ellipse];\n";
  std::map<int64_t, size_t> producer;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    std::string outs;
    for (size_t j = 0; j < n.outputs.size(); ++j) {
      outs += (j ? ", %" : "%") + std::to_string(n.outputs[j]);
      producer[n.outputs[j]] = i;
    }
    os << "  n" << i << " [label=\"" << outs << " = " << n.op;
    for (const auto& [name, sg] : n.subgraphs)
      os << "\\n" << name << ": " << sg->nodes().size() << " nodes";
    os << "\\n" << (n.output_metas.empty() ? "" : meta_str(n.output_metas[0])) << "\"];\n";
    for (int64_t v : n.inputs) {
      if (v < 0) continue;
      auto it = producer.find(v);
      os << "  "
         << (it == producer.end() ? "v" + std::to_string(v) : "n" + std::to_string(it->second))
         << " -> n" << i << ";\n";
    }
  }
  os << "  out [label=\"return\", shape=ellipse];\n";
  for (int64_t v : outputs_) {
    auto it = producer.find(v);
    os << "  "
       << (it == producer.end() ? "v" + std::to_string(v) : "n" + std::to_string(it->second))
       << " -> out;\n";
  }
  os << "}\n";
  return os.str();
}

// ---- Tracer ----
Tensor Tracer::placeholder(const Tensor& example) {
  Tensor p = to_fake(example);
  bind(p, graph_->add_input(meta_of(p), false));
  return p;
}

// Note [Aliases of recorded values]
// Autograd saves detached aliases of an op's outputs (same storage, same geometry) before
// the Tracing kernel has bound those outputs to graph values, so a backward formula that
// reads a saved output holds a tensor the tracer has not seen. Such a tensor is the
// recorded value, not a captured one: it is recognised by its storage and geometry.
Tensor Tracer::proxy_for(const Tensor& t) {
  if (owns(t)) return t;
  auto al = aliases_.find({t.storage().get(), t.storage_offset(), t.sizes(), t.strides()});
  if (al != aliases_.end()) {
    bind(t, al->second);
    return t;
  }
  auto it = lifted_.find(t.impl());
  if (it != lifted_.end()) return it->second;
  // A captured tensor: lift it to a graph input (Note [Graph values]).
  Tensor p = to_fake(t);
  bind(p, graph_->add_input(meta_of(p), true));
  lifted_.emplace(t.impl(), p);
  captured_.push_back(t);
  lifted_proxies_.push_back(p);
  return p;
}

void Tracer::bind(const Tensor& t, int64_t id) {
  t.impl()->tracer = this;
  t.impl()->proxy_id = id;
  aliases_[{t.storage().get(), t.storage_offset(), t.sizes(), t.strides()}] = id;
}

int64_t Tracer::id_of(const Tensor& t) const {
  if (!t.defined()) return -1;
  MF_INTERNAL_ASSERT(owns(t), "tensor is not a proxy of this trace");
  return t.impl()->proxy_id;
}

void Tracer::record(const std::string& name, const TensorList& inputs, const Attrs& attrs,
                    const TensorList& outputs,
                    std::map<std::string, std::shared_ptr<Graph>> subgraphs) {
  Node n;
  n.op = name;
  n.attrs = attrs;
  n.subgraphs = std::move(subgraphs);
  for (const Tensor& t : inputs) n.inputs.push_back(t.defined() ? id_of(proxy_for(t)) : -1);
  for (const Tensor& t : outputs) {
    const TensorMeta m = meta_of(t);
    const int64_t id = graph_->new_value(m);
    n.outputs.push_back(id);
    n.output_metas.push_back(m);
    bind(t, id);  // an in-place op's output rebinds its input's proxy to the new value
  }
  graph_->add_node(std::move(n));
}

// ---- Running graphs ----
void register_hop_runner(const std::string& name, HopRunner r) {
  hop_runners()[name] = std::move(r);
}

TensorList GraphModule::run(const TensorList& inputs) const {
  TensorList all = inputs;
  all.insert(all.end(), captured_.begin(), captured_.end());
  return run_all(all);
}

TensorList GraphModule::run_all(const TensorList& all, bool check_shapes) const {
  const Graph& g = *graph_;
  MF_CHECK(all.size() == g.inputs().size(), "GraphModule::run: the graph takes ",
           g.inputs().size() - g.num_lifted(), " inputs (plus ", g.num_lifted(), " captured), got ",
           all.size() - g.num_lifted());
  std::unordered_map<int64_t, Tensor> env;
  for (size_t i = 0; i < all.size(); ++i) {
    const TensorMeta& m = g.meta(g.inputs()[i]);
    MF_CHECK(all[i].dtype() == m.dtype && (!check_shapes || all[i].sizes() == m.sizes), "GraphModule::run: input ", i,
             " is ", dtype_name(all[i].dtype()), shape_str(all[i].sizes()),
             ", the graph was traced with ", dtype_name(m.dtype), shape_str(m.sizes));
    env[g.inputs()[i]] = all[i];
  }
  for (const Node& n : g.nodes()) {
    TensorList in;
    for (int64_t v : n.inputs) in.push_back(v < 0 ? Tensor() : env.at(v));
    TensorList out;
    if (const OpDef* op = Dispatcher::get().find_or_null(n.op)) {
      out = call_op(*op, in, n.attrs);
    } else {
      auto it = hop_runners().find(n.op);
      MF_CHECK(it != hop_runners().end(), "GraphModule::run: unknown op '", n.op, "'");
      out = it->second(n, in);
    }
    MF_INTERNAL_ASSERT(out.size() == n.outputs.size(), "op ", n.op, " returned ", out.size(),
                       " outputs, the graph recorded ", n.outputs.size());
    for (size_t j = 0; j < out.size(); ++j) env[n.outputs[j]] = out[j];
  }
  TensorList res;
  for (int64_t v : g.outputs()) res.push_back(v < 0 ? Tensor() : env.at(v));
  return res;
}

// ---- trace / trace_joint ----
namespace {

std::vector<int64_t> output_ids(Tracer& tr, const TensorList& outs) {
  std::vector<int64_t> ids;
  for (const Tensor& t : outs) ids.push_back(t.defined() ? tr.id_of(tr.proxy_for(t)) : -1);
  return ids;
}

}  // namespace

GraphModule trace(const TracedFn& fn, const TensorList& example_inputs) {
  auto g = std::make_shared<Graph>();
  Tracer tr(g);
  TracingGuard guard(&tr);
  TensorList proxies;
  for (const Tensor& x : example_inputs) proxies.push_back(tr.placeholder(x));
  const TensorList outs = fn(proxies);
  g->set_outputs(output_ids(tr, outs));
  return GraphModule(g, tr.captured());
}

// Note [Joint graph]
// trace_joint runs the forward on proxies with autograd on, then calls backward on the
// first output while still tracing: the engine's backward formulas are ordinary op calls,
// so they are recorded too, and forward + backward end up as one graph whose extra
// outputs are the gradients. flex_attention's backward uses it to differentiate
// score_mod.
GraphModule trace_joint(const TracedFn& fn, const TensorList& example_inputs) {
  auto g = std::make_shared<Graph>();
  Tracer tr(g);
  TracingGuard guard(&tr);
  const bool prev_grad = local_dispatch_state().grad_enabled;
  local_dispatch_state().grad_enabled = true;
  TensorList proxies;
  for (const Tensor& x : example_inputs) proxies.push_back(tr.placeholder(x));
  TensorList outs = fn(proxies);
  MF_CHECK(!outs.empty() && outs[0].defined(), "trace_joint: the function returned no output");
  TensorList wrt;
  for (const Tensor& p : proxies)
    if (p.requires_grad()) wrt.push_back(p);
  for (const Tensor& p : tr.lifted_proxies())
    if (p.requires_grad()) wrt.push_back(p);
  if (outs[0].requires_grad()) {
    outs[0].backward(outs[0].numel() == 1 ? Tensor() : ones_like(outs[0]));
  }
  TensorList all = outs;
  for (const Tensor& p : wrt) all.push_back(p.grad().defined() ? p.grad() : zeros_like(p));
  local_dispatch_state().grad_enabled = prev_grad;
  g->set_outputs(output_ids(tr, all));
  return GraphModule(g, tr.captured());
}

namespace {

TensorList tracing_kernel(const OpDef& op, DispatchKeySet ks, const TensorList& in,
                          const Attrs& attrs) {
  Tracer* tr = current_tracer();
  TensorList outs;
  if (!tr) {
    ExcludeKeyGuard g(DispatchKeySet{DispatchKey::Tracing});
    return Dispatcher::get().redispatch(op, ks.below(DispatchKey::Tracing), in, attrs);
  }
  TensorList proxied;
  for (const Tensor& t : in) proxied.push_back(t.defined() ? tr->proxy_for(t) : t);
  {
    ExcludeKeyGuard g(DispatchKeySet{DispatchKey::Tracing});
    outs = Dispatcher::get().redispatch(op, ks.below(DispatchKey::Tracing), proxied, attrs);
  }
  tr->record(op.name, proxied, attrs, outs);
  return outs;
}

}  // namespace

}  // namespace microflex::graph

namespace microflex {

void register_modes(Dispatcher& d) {
  d.set_fallback(DispatchKey::Tracing, graph::tracing_kernel);
}

}  // namespace microflex
