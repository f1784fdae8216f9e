// The fused CUDA forward and backward of flex_attention: decide whether they apply (CUDA
// inputs, generatable mods, supported dtypes and head dims) and run them.
#pragma once
#include <memory>
#include <optional>

#include "core/graph.h"
#include "ops/flex_attention/dense.h"
#include "ops/flex_attention/flex_attention.h"

namespace microflex {

// A SubgraphFn that runs a traced per-element graph on broadcast blocks; the fused path
// reads the graph back with SubgraphFn::target<FlexGraphFn>().
struct FlexGraphFn {
  std::shared_ptr<graph::Graph> graph;
  TensorList operator()(const TensorList& in) const {
    return graph::GraphModule(graph, {}).run_all(in, false);
  }
};

// {out, lse} from the fused kernel, or nothing when the dense path should run (Auto and
// the fused kernel does not apply). With FlexKernel::Fused, raises saying why it cannot.
std::optional<TensorList> flex_try_fused_forward(const FlexArgs& a, FlexKernel kernel);

struct FlexBackwardOptions {
  FlexKernel kernel = FlexKernel::Auto;
  bool deterministic = false;             // captured-tensor gradients without float atomics
  std::vector<bool> captured_needs_grad;  // per score_mod captured tensor; empty: all floating
};

// {dq, dk, dv, d(score captured)...} (undefined where no gradient is needed) from the fused
// backward kernels, or nothing when the dense path should run.
std::optional<TensorList> flex_try_fused_backward(const FlexArgs& a, const Tensor& out,
                                                  const Tensor& lse, const Tensor& grad_out,
                                                  const FlexBackwardOptions& o);

}  // namespace microflex
