// Tape entries. An OpNode is what the Autograd kernel records for one op call: the op's
// backward formula, its attributes, the tensors it saved and one edge per input to the
// entry that produced that input (or to a leaf's AccumulateGrad).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dispatch.h"

namespace microflex::autograd {

struct Node;

struct Edge {
  std::shared_ptr<Node> fn;
  int input_nr = 0;  // which output of `fn` the gradient belongs to
  bool valid() const { return fn != nullptr; }
};

// Note [Saved tensors]
// A saved tensor is kept as a detached alias (same storage, no grad_fn: saving an output
// would otherwise make a reference cycle output -> node -> output) plus the storage
// version at save time. Unpacking checks the version: an in-place op that overwrote a
// saved value makes the backward an error instead of a wrong gradient.
struct SavedTensor {
  Tensor tensor;
  uint64_t version = 0;
  static SavedTensor save(const Tensor& t);
  Tensor unpack(const std::string& op) const;
};

struct Node {
  virtual ~Node() = default;
  // Gradients for each of next_edges, from the gradients of this node's outputs.
  virtual TensorList apply(const TensorList& grad_outputs) = 0;
  virtual std::string name() const = 0;
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  std::vector<TensorMeta> output_metas;
  uint64_t sequence_nr = 0;  // later entries run first
};

struct OpNode final : Node {
  const OpDef* op = nullptr;
  Attrs attrs;
  std::vector<TensorMeta> input_metas;
  std::vector<SavedTensor> saved_inputs, saved_outputs;
  std::vector<bool> has_input, has_output;
  bool released = false;

  TensorList apply(const TensorList& grad_outputs) override;
  std::string name() const override { return op->name; }
  void release_saved() override;
};

struct AccumulateGrad final : Node {
  std::weak_ptr<TensorImpl> leaf;
  TensorList apply(const TensorList& grad_outputs) override;
  std::string name() const override { return "AccumulateGrad"; }
};

// The edge a gradient for `t` should flow into (invalid if t does not require grad).
Edge gradient_edge(const Tensor& t);
uint64_t next_sequence_nr();

// Runs the tape backwards from `roots` (Note [Backward] in autograd/engine.cpp).
void run_backward(const TensorList& roots, const TensorList& grads, bool retain_graph);

// The Autograd dispatch key's kernel for every op.
void register_autograd_fallback(Dispatcher& d);

}  // namespace microflex::autograd
