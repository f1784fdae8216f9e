// The tape: the Autograd kernel that records OpNodes, and the engine that replays them.
#include <atomic>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/anomaly.h"
#include "core/profiler.h"
#include "ops/elementwise.h"

namespace microflex {

bool is_grad_enabled() {
  return local_dispatch_state().grad_enabled;
}
void set_grad_enabled(bool enabled) {
  local_dispatch_state().grad_enabled = enabled;
}
NoGradGuard::NoGradGuard() : prev_(is_grad_enabled()) {
  set_grad_enabled(false);
}
NoGradGuard::~NoGradGuard() {
  set_grad_enabled(prev_);
}
EnableGradGuard::EnableGradGuard() : prev_(is_grad_enabled()) {
  set_grad_enabled(true);
}
EnableGradGuard::~EnableGradGuard() {
  set_grad_enabled(prev_);
}

namespace autograd {

uint64_t next_sequence_nr() {
  static std::atomic<uint64_t> n{0};
  return ++n;
}

SavedTensor SavedTensor::save(const Tensor& t) {
  SavedTensor s;
  if (t.defined()) {
    s.tensor = t.detach();
    s.version = t.version();
  }
  return s;
}

Tensor SavedTensor::unpack(const std::string& op) const {
  if (!tensor.defined()) return tensor;
  MF_CHECK(tensor.version() == version, "backward of ", op,
           ": one of the tensors needed for gradient computation (shape ",
           shape_str(tensor.sizes()), ", ", tensor.dtype(),
           ") has been modified by an in-place operation (version ", tensor.version(),
           ", expected ", version, ")");
  return tensor;
}

TensorList OpNode::apply(const TensorList& grad_outputs) {
  MF_CHECK(!released, "backward of ", op->name,
           ": trying to backward through the graph a second time; its saved tensors were "
           "freed after the first backward. Pass retain_graph=true to the first backward.");
  BackwardContext ctx;
  ctx.op = op;
  ctx.attrs = &attrs;
  for (const SavedTensor& s : saved_inputs) ctx.inputs.push_back(s.unpack(op->name));
  for (const SavedTensor& s : saved_outputs) ctx.outputs.push_back(s.unpack(op->name));
  ctx.grad_outputs = grad_outputs;
  ctx.input_metas = input_metas;
  ctx.output_metas = output_metas;
  for (const Edge& e : next_edges) ctx.needs_input_grad.push_back(e.valid());
  TensorList grads = op->backward(ctx);
  MF_INTERNAL_ASSERT(grads.size() <= next_edges.size(), "backward of ", op->name, " returned ",
                     grads.size(), " gradients for ", next_edges.size(), " inputs");
  grads.resize(next_edges.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined() || !next_edges[i].valid()) continue;
    MF_INTERNAL_ASSERT(grads[i].sizes() == input_metas[i].sizes, "backward of ", op->name,
                       ": gradient for input ", i, " has shape ", shape_str(grads[i].sizes()),
                       ", expected ", shape_str(input_metas[i].sizes));
    if (grads[i].dtype() != input_metas[i].dtype) grads[i] = grads[i].to(input_metas[i].dtype);
  }
  return grads;
}

void OpNode::release_saved() {
  saved_inputs.clear();
  saved_outputs.clear();
  released = true;
}

TensorList AccumulateGrad::apply(const TensorList& grad_outputs) {
  std::shared_ptr<TensorImpl> impl = leaf.lock();
  if (!impl || !grad_outputs[0].defined()) return {};
  Tensor g = grad_outputs[0];
  if (g.dtype() != impl->dtype) g = g.to(impl->dtype);
  if (!impl->grad) {
    // Own the gradient: never alias a tensor the caller or another node may still write.
    // A gradient only this call holds (the engine's buffer and `g`; its storage in no other
    // tensor) is taken as it is, like PyTorch's gradient stealing: no copy, no extra peak.
    const bool sole =
        g.impl_ptr().use_count() <= 2 && g.storage().use_count() == 1 && !g.requires_grad();
    impl->grad = sole ? g.impl_ptr() : g.clone().impl_ptr();
  } else {
    impl->grad = (Tensor(impl->grad) + g).impl_ptr();
  }
  return {};
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), t.impl()->output_nr};
  auto& acc = t.impl()->grad_accumulator;
  if (!acc) {
    auto a = std::make_shared<AccumulateGrad>();
    a->leaf = t.impl_ptr();
    a->output_metas = {meta_of(t)};
    acc = a;
  }
  return {acc, 0};
}

// Note [Backward]
// 1. Walk the graph from the roots' edges, counting for each node how many edges point
//    at it (its dependencies); nodes not reachable from the roots are never touched.
// 2. Seed the roots' gradients, then repeatedly take the ready node (all dependencies
//    delivered) with the highest sequence number, apply it, and add each returned
//    gradient into the input buffer of the node its edge points to.
// 3. Without retain_graph, a node frees its saved tensors right after it ran.
void run_backward(const TensorList& roots, const TensorList& grads, bool retain_graph) {
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, TensorList> buffers;
  std::vector<Node*> stack;
  std::vector<std::shared_ptr<Node>> keep_alive;
  auto add_grad = [&](const Edge& e, const Tensor& g) {
    TensorList& buf = buffers[e.fn.get()];
    if (buf.size() < e.fn->output_metas.size()) buf.resize(e.fn->output_metas.size());
    Tensor& slot = buf[e.input_nr];
    slot = slot.defined() ? slot + g : g;
  };

  NoGradGuard no_grad;
  profiler::BackwardPhaseGuard backward_phase;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Edge e = gradient_edge(roots[i]);
    MF_CHECK(e.valid(), "backward: tensor ", i,
             " does not require grad and has no grad_fn (did you forget requires_grad_()?)");
    if (deps.emplace(e.fn.get(), 0).second) {
      stack.push_back(e.fn.get());
      keep_alive.push_back(e.fn);
    }
  }
  // Count dependencies.
  std::vector<Node*> todo = stack;
  std::unordered_map<Node*, bool> seen;
  for (Node* n : todo) seen[n] = true;
  while (!todo.empty()) {
    Node* n = todo.back();
    todo.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.valid()) continue;
      ++deps[e.fn.get()];
      if (!seen[e.fn.get()]) {
        seen[e.fn.get()] = true;
        todo.push_back(e.fn.get());
      }
    }
  }
  for (size_t i = 0; i < roots.size(); ++i) add_grad(gradient_edge(roots[i]), grads[i]);

  auto cmp = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(cmp)> ready(cmp);
  for (Node* n : stack)
    if (deps[n] == 0) ready.push(n);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    TensorList in = std::move(buffers[n]);
    buffers.erase(n);
    in.resize(n->output_metas.size());
    TensorList out;
    try {
      out = n->apply(in);
    } catch (const Error& e) {
      // An op inside the backward formula tripped anomaly mode: say whose backward it was.
      if (!anomaly_mode_enabled() || std::string_view(e.what()).rfind("anomaly mode", 0) != 0)
        throw;
      throw Error(detail::str_cat(e.what(), " (in the backward of '", n->name(), "')"));
    }
    if (anomaly_mode_enabled()) {
      const std::string bad = find_anomaly(out, "the gradient of input");
      MF_CHECK(bad.empty(), "anomaly mode: backward of '", n->name(), "' produced ", bad);
    }
    if (!retain_graph) n->release_saved();
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.valid()) continue;
      if (i < out.size() && out[i].defined()) add_grad(e, out[i]);
      if (--deps[e.fn.get()] == 0) ready.push(e.fn.get());
    }
  }
}

namespace {

bool is_view_node(const Tensor& t) {
  auto* n = dynamic_cast<OpNode*>(t.grad_fn().get());
  return n && n->op->kind == OpKind::View;
}

TensorList autograd_kernel(const OpDef& op, DispatchKeySet ks, const TensorList& in,
                           const Attrs& attrs) {
  std::vector<bool> needs(in.size(), false);
  bool any = false;
  for (size_t i = 0; i < in.size(); ++i) {
    needs[i] = op.differentiable && in[i].defined() && in[i].requires_grad();
    any = any || needs[i];
  }
  if (op.kind == OpKind::InPlace && in[0].requires_grad()) {
    MF_CHECK(in[0].grad_fn() != nullptr, op.name,
             ": a leaf tensor that requires grad is being used in an in-place operation; "
             "wrap it in NoGradGuard or use an out-of-place op");
    MF_CHECK(!is_view_node(in[0]), op.name,
             ": in-place operation on a view of a tensor that requires grad is not "
             "supported; use the out-of-place op");
  }
  // An in-place op overwrites input 0: keep its old value if the backward needs it.
  Tensor old_self;
  if (any && op.kind == OpKind::InPlace && (op.save_inputs & 1)) {
    // The copy is part of the computation: when a trace is active (it excluded its key
    // for the ops below it), it must be recorded too, or a joint graph would lack it.
    LocalDispatchState& tls = local_dispatch_state();
    const DispatchKeySet saved_excluded = tls.excluded;
    DispatchKeySet ex = saved_excluded.add(DispatchKey::Autograd);
    if (tls.included.has(DispatchKey::Tracing)) ex = ex.remove(DispatchKey::Tracing);
    tls.excluded = ex;
    try {
      old_self = in[0].clone();
    } catch (...) {
      tls.excluded = saved_excluded;
      throw;
    }
    tls.excluded = saved_excluded;
  }
  std::vector<Edge> edges(in.size());
  std::vector<TensorMeta> in_metas(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i].defined()) in_metas[i] = meta_of(in[i]);
    if (needs[i]) edges[i] = gradient_edge(in[i]);
  }
  TensorList outs;
  {
    ExcludeKeyGuard g(DispatchKeySet{DispatchKey::Autograd});
    outs = Dispatcher::get().redispatch(op, ks.below(DispatchKey::Autograd), in, attrs);
  }
  if (!any) return outs;
  MF_CHECK(op.backward != nullptr, op.name, ": the derivative is not implemented");

  auto node = std::make_shared<OpNode>();
  node->op = &op;
  node->attrs = attrs;
  node->input_metas = std::move(in_metas);
  node->next_edges = std::move(edges);
  node->sequence_nr = next_sequence_nr();
  for (size_t i = 0; i < in.size(); ++i) {
    const bool keep = (op.save_inputs >> i) & 1;
    const Tensor& src = (i == 0 && old_self.defined()) ? old_self : in[i];
    node->saved_inputs.push_back(keep ? SavedTensor::save(src) : SavedTensor{});
  }
  for (size_t j = 0; j < outs.size(); ++j) {
    node->output_metas.push_back(meta_of(outs[j]));
    const bool keep = (op.save_outputs >> j) & 1;
    node->saved_outputs.push_back(keep ? SavedTensor::save(outs[j]) : SavedTensor{});
  }
  for (size_t j = 0; j < outs.size(); ++j) {
    if (!is_floating(outs[j].dtype())) continue;
    TensorImpl* impl = outs[j].impl();
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(j);
  }
  return outs;
}

}  // namespace

void register_autograd_fallback(Dispatcher& d) {
  d.set_fallback(DispatchKey::Autograd, autograd_kernel);
}

}  // namespace autograd

// ---- Tensor's autograd surface ----
Tensor& Tensor::requires_grad_(bool r) {
  MF_CHECK(is_leaf(),
           "requires_grad_: only leaf tensors can change requires_grad; "
           "use detach() to get a leaf");
  MF_CHECK(!r || is_floating(dtype()),
           "requires_grad_: only floating tensors can require "
           "gradients, got ",
           dtype());
  impl_->requires_grad = r;
  return *this;
}

bool Tensor::is_leaf() const {
  return impl_->grad_fn == nullptr;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  MF_CHECK(defined(), "backward: tensor is undefined");
  MF_CHECK(requires_grad(), "backward: tensor does not require grad and has no grad_fn");
  Tensor g = grad;
  if (!g.defined()) {
    MF_CHECK(numel() == 1,
             "backward: grad can be implicitly created only for a tensor with "
             "one element, got shape ",
             shape_str(sizes()), "; pass a gradient");
    g = ones_like(*this);
  } else {
    MF_CHECK(g.sizes() == sizes(), "backward: gradient of shape ", shape_str(g.sizes()),
             " does not match the tensor's shape ", shape_str(sizes()));
  }
  autograd::run_backward({*this}, {g}, retain_graph);
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->sizes = impl_->sizes;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  impl->storage = impl_->storage;
  impl->wrapped_number = impl_->wrapped_number;
  impl->tracer = impl_->tracer;
  impl->proxy_id = impl_->proxy_id;
  return Tensor(std::move(impl));
}

}  // namespace microflex
