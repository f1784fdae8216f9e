// The fused CUDA forward of flex_attention: decides whether it applies (CUDA inputs,
// generatable mods, supported shapes, no gradient recorded) and runs it. The backward
// stays on the dense path, so calls that record a gradient take the dense forward.
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

}  // namespace microflex
