// Tracing mode and graphs. trace(fn, inputs) runs fn on proxy tensors (fake tensors that
// know which graph value they stand for) and records one node per op call, like
// PyTorch's make_fx. A Graph prints as code, runs on real or fake tensors through the
// dispatcher (GraphModule), and can hold subgraphs (for higher-order ops).
#pragma once
#include <functional>
#include <map>
#include <tuple>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dispatch.h"

namespace microflex::graph {

class Graph;

struct Node {
  std::string op;               // an op name, or a higher-order op's name
  std::vector<int64_t> inputs;  // value ids; -1 for an undefined (absent) tensor
  Attrs attrs;
  std::vector<int64_t> outputs;  // value ids
  std::vector<TensorMeta> output_metas;
  std::map<std::string, std::shared_ptr<Graph>> subgraphs;  // for higher-order ops
};

// Note [Graph values]
// Every tensor in a graph is a value with an id. Placeholders (the traced function's
// inputs, then the captured tensors lifted to inputs in order of first use) and node
// outputs are values; an in-place op produces a new value that replaces its input's id
// on the proxy, so the graph stays in SSA form.
class Graph {
 public:
  int64_t add_input(const TensorMeta& meta, bool lifted);
  void add_node(Node n);
  int64_t new_value(const TensorMeta& meta);
  void set_outputs(std::vector<int64_t> outs) { outputs_ = std::move(outs); }

  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int64_t>& inputs() const { return inputs_; }
  const std::vector<int64_t>& outputs() const { return outputs_; }
  size_t num_lifted() const { return num_lifted_; }
  const TensorMeta& meta(int64_t value) const { return metas_.at(static_cast<size_t>(value)); }

  // Readable code: "graph(%0: f32[4, 8]):\n  %1 = mul(%0, %0)  # f32[4, 8]\n  return (%1)".
  std::string to_string(const std::string& indent = "") const;
  // Graphviz dot text.
  std::string to_dot() const;

 private:
  std::vector<Node> nodes_;
  std::vector<int64_t> inputs_, outputs_;
  std::vector<TensorMeta> metas_;
  std::vector<bool> lifted_;
  size_t num_lifted_ = 0;
};

// A graph plus the captured tensors it lifted to inputs; run() appends them.
class GraphModule {
 public:
  GraphModule() = default;
  GraphModule(std::shared_ptr<Graph> g, TensorList captured)
      : graph_(std::move(g)), captured_(std::move(captured)) {}
  // Runs the graph through the dispatcher: real tensors in eager, fake under fake mode.
  TensorList run(const TensorList& inputs) const;
  // Runs with every input given, captured ones included (in graph input order). Without
  // `check_shapes`, inputs may have other shapes than traced (per-element graphs run on
  // broadcast blocks, Note [Pointwise mods] in ops/flex_attention).
  TensorList run_all(const TensorList& all_inputs, bool check_shapes = true) const;
  const Graph& graph() const { return *graph_; }
  const std::shared_ptr<Graph>& graph_ptr() const { return graph_; }
  const TensorList& captured() const { return captured_; }
  std::string to_string() const { return graph_->to_string(); }

 private:
  std::shared_ptr<Graph> graph_;
  TensorList captured_;
};

using TracedFn = std::function<TensorList(const TensorList&)>;

// Traces `fn` on proxies shaped like `example_inputs` (their data is never read).
GraphModule trace(const TracedFn& fn, const TensorList& example_inputs);

// Traces forward and backward as one graph (Note [Joint graph]): outputs are fn's
// outputs followed by the gradient of fn's first output (a scalar, or weighted by a
// ones tensor) with respect to every input that requires grad, then every captured
// tensor that requires grad (undefined grads become zeros).
GraphModule trace_joint(const TracedFn& fn, const TensorList& example_inputs);

// Runs a higher-order op's subgraph callable from a graph node (set by ops/higher_order).
using HopRunner = std::function<TensorList(const Node&, const TensorList&)>;
void register_hop_runner(const std::string& name, HopRunner r);

class Tracer {
 public:
  explicit Tracer(std::shared_ptr<Graph> g) : graph_(std::move(g)) {}
  // A proxy for a new graph input (placeholder).
  Tensor placeholder(const Tensor& example);
  // The proxy for `t` in this graph: t itself if it is one, else t lifted to an input.
  Tensor proxy_for(const Tensor& t);
  // Binds a tensor produced while tracing to a new value id.
  void bind(const Tensor& t, int64_t id);
  int64_t id_of(const Tensor& t) const;
  bool owns(const Tensor& t) const { return t.defined() && t.impl()->tracer == this; }
  Graph& graph() { return *graph_; }
  const std::shared_ptr<Graph>& graph_ptr() const { return graph_; }
  const TensorList& captured() const { return captured_; }
  const TensorList& lifted_proxies() const { return lifted_proxies_; }
  // Records one node for a call of `name` on `inputs` that produced `outputs`.
  void record(const std::string& name, const TensorList& inputs, const Attrs& attrs,
              const TensorList& outputs,
              std::map<std::string, std::shared_ptr<Graph>> subgraphs = {});

 private:
  std::shared_ptr<Graph> graph_;
  std::unordered_map<const TensorImpl*, Tensor> lifted_;  // captured impl -> proxy
  // Note [Aliases of recorded values]: (storage, offset, sizes, strides) -> value id.
  std::map<std::tuple<const Storage*, int64_t, Shape, Shape>, int64_t> aliases_;
  TensorList captured_, lifted_proxies_;
};

// The tracer of the innermost active trace (null when not tracing).
Tracer* current_tracer();

// Makes `tracer` current and turns on the Tracing and Fake keys for a scope.
class TracingGuard {
 public:
  explicit TracingGuard(Tracer* tracer);
  ~TracingGuard();
  TracingGuard(const TracingGuard&) = delete;
  TracingGuard& operator=(const TracingGuard&) = delete;

 private:
  Tracer* prev_;
  LocalDispatchState saved_;
};

}  // namespace microflex::graph
