// Higher-order operators: ops whose arguments include functions (subgraphs), dispatched
// per mode with one implementation per dispatch key, like PyTorch's HigherOrderOperator
// and its py_impl. Tracing emits one graph node holding the traced subgraphs.
#pragma once
#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/graph.h"

namespace microflex {

using SubgraphFn = std::function<TensorList(const TensorList&)>;

class HigherOrderOperator {
 public:
  using Impl = std::function<TensorList(const HigherOrderOperator& self, DispatchKeySet ks,
                                        const std::vector<SubgraphFn>& fns,
                                        const TensorList& operands, const Attrs& attrs)>;

  HigherOrderOperator(std::string name, std::vector<std::string> subgraph_names);
  // Registers the implementation for one key; registering a key twice is an error.
  // DispatchKey::CPU registers the dense (backend) implementation for every device.
  HigherOrderOperator& impl(DispatchKey k, Impl f);

  TensorList call(const std::vector<SubgraphFn>& fns, const TensorList& operands,
                  const Attrs& attrs = {}) const;
  // Runs the highest key of `ks` that has an implementation (a kernel calls this with
  // the keys below its own, inside an ExcludeKeyGuard for its key).
  TensorList redispatch(DispatchKeySet ks, const std::vector<SubgraphFn>& fns,
                        const TensorList& operands, const Attrs& attrs) const;

  const std::string& name() const { return name_; }
  const std::vector<std::string>& subgraph_names() const { return subgraph_names_; }

 private:
  std::string name_;
  std::vector<std::string> subgraph_names_;
  std::array<Impl, kNumDispatchKeys> impls_;
};

// Traces `fn` on fake proxies shaped like `examples`; raises
// "<hop>: Mutations detected in <subgraph>" if it writes into one of its inputs or a
// tensor it captured (through a view too). This is the functionalization check.
graph::GraphModule trace_subgraph(const std::string& hop, const std::string& subgraph,
                                  const SubgraphFn& fn, const TensorList& examples);

// The Tracing implementation shared by higher-order ops: traces every subgraph on
// proxies for `subgraph_inputs[i]`, records one node `hop(operands..., captured...)`
// whose outputs have the metas `out_metas`, and returns those outputs as proxies.
TensorList trace_hop(const HigherOrderOperator& hop, const std::vector<SubgraphFn>& fns,
                     const std::vector<TensorList>& subgraph_inputs, const TensorList& operands,
                     const Attrs& attrs, const std::vector<TensorMeta>& out_metas);

// Turns a traced subgraph and the captured values bound to it into a callable.
using SubgraphFactory =
    std::function<SubgraphFn(std::shared_ptr<graph::Graph> g, const TensorList& captured)>;

// Registers how GraphModule replays a node of `hop`: the node's operands, then each
// subgraph made callable by `make_fn` (default: run the graph with its captured values
// appended, checking shapes), and the node's attributes minus the tracing bookkeeping.
void register_hop_runner(const HigherOrderOperator& hop, SubgraphFactory make_fn = {});

// cond(pred, true_fn, false_fn, operands): runs one branch by a boolean scalar. Both
// branches must return tensors of the same shapes and dtypes.
TensorList cond(const Tensor& pred, const SubgraphFn& true_fn, const SubgraphFn& false_fn,
                const TensorList& operands);

}  // namespace microflex
