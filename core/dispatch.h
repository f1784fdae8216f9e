// The dispatcher: one table from op name to its definition (schema-ish OpDef: shape rule,
// backward, kernels per dispatch key). Every public op call computes a dispatch key set
// from the thread-local mode state plus its inputs and runs the highest key's kernel,
// which may redispatch below itself. See docs/ARCHITECTURE.md, "Dispatch".
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/tensor.h"

namespace microflex {

// Note [Dispatch key order]
// Highest priority first. Tracing records a graph node and redispatches; Autograd
// records a tape entry and redispatches; Fake replaces the backend for tensors with no
// data (it sits below Autograd so that backward works on fake tensors, as PyTorch's
// fake tensor mode runs below its autograd key); CPU and CUDA compute.
enum class DispatchKey : uint8_t { Tracing, Autograd, Fake, CPU, CUDA };
constexpr int kNumDispatchKeys = 5;
const char* dispatch_key_name(DispatchKey k);

class DispatchKeySet {
 public:
  DispatchKeySet() = default;
  DispatchKeySet(std::initializer_list<DispatchKey> ks) {
    for (auto k : ks) bits_ |= bit(k);
  }
  DispatchKeySet add(DispatchKey k) const { return from_bits(bits_ | bit(k)); }
  DispatchKeySet remove(DispatchKey k) const { return from_bits(bits_ & ~bit(k)); }
  DispatchKeySet operator|(DispatchKeySet o) const { return from_bits(bits_ | o.bits_); }
  DispatchKeySet operator-(DispatchKeySet o) const { return from_bits(bits_ & ~o.bits_); }
  bool has(DispatchKey k) const { return bits_ & bit(k); }
  bool empty() const { return bits_ == 0; }
  DispatchKey highest() const;
  // The keys strictly below `k` in priority.
  DispatchKeySet below(DispatchKey k) const { return from_bits(bits_ & ~((bit(k) << 1) - 1)); }
  uint32_t raw() const { return bits_; }

 private:
  static uint32_t bit(DispatchKey k) { return 1u << static_cast<uint32_t>(k); }
  static DispatchKeySet from_bits(uint32_t b) {
    DispatchKeySet s;
    s.bits_ = b;
    return s;
  }
  uint32_t bits_ = 0;
};

// Thread-local mode state: keys forced on (modes) and keys forced off (below a kernel).
struct LocalDispatchState {
  DispatchKeySet included;
  DispatchKeySet excluded;
  bool grad_enabled = true;
};
LocalDispatchState& local_dispatch_state();

class IncludeKeyGuard {
 public:
  explicit IncludeKeyGuard(DispatchKey k);
  ~IncludeKeyGuard();
  IncludeKeyGuard(const IncludeKeyGuard&) = delete;
  IncludeKeyGuard& operator=(const IncludeKeyGuard&) = delete;

 private:
  DispatchKeySet saved_;
};

class ExcludeKeyGuard {
 public:
  explicit ExcludeKeyGuard(DispatchKeySet ks);
  ~ExcludeKeyGuard();
  ExcludeKeyGuard(const ExcludeKeyGuard&) = delete;
  ExcludeKeyGuard& operator=(const ExcludeKeyGuard&) = delete;

 private:
  DispatchKeySet saved_;
};

// ---- Attributes: the non-tensor arguments of an op call. ----
using AttrValue = std::variant<bool, int64_t, double, std::string, Shape, DType, Device>;

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<std::string, AttrValue>> items) : items_(items) {}
  Attrs& set(const std::string& name, AttrValue v);
  Attrs& set_scalar(const std::string& name, const Scalar& s);
  bool has(const std::string& name) const { return find(name) != nullptr; }
  int64_t i(const std::string& name) const { return get<int64_t>(name); }
  double f(const std::string& name) const;  // accepts an int64 too
  bool b(const std::string& name) const { return get<bool>(name); }
  const std::string& s(const std::string& name) const { return get<std::string>(name); }
  const Shape& ints(const std::string& name) const { return get<Shape>(name); }
  DType dtype(const std::string& name) const { return get<DType>(name); }
  Device device(const std::string& name) const { return get<Device>(name); }
  Scalar scalar(const std::string& name) const;
  const std::vector<std::pair<std::string, AttrValue>>& items() const { return items_; }
  std::string to_string() const;  // "dim=1, keepdim=false"

 private:
  const AttrValue* find(const std::string& name) const;
  template <typename T>
  const T& get(const std::string& name) const {
    const AttrValue* v = find(name);
    MF_INTERNAL_ASSERT(v != nullptr, "missing attribute ", name);
    MF_INTERNAL_ASSERT(std::holds_alternative<T>(*v), "attribute ", name, " has another type");
    return std::get<T>(*v);
  }
  std::vector<std::pair<std::string, AttrValue>> items_;
};

std::string attr_value_string(const AttrValue& v);

// What an op's shape/dtype rule says about one output.
struct TensorMeta {
  Shape sizes;
  DType dtype = DType::Float32;
  Device device;
  Shape strides;  // empty: contiguous
  bool wrapped_number = false;
};
TensorMeta meta_of(const Tensor& t);

struct OpDef;

// What a backward formula sees (Note [Saved tensors] in autograd/node.h).
struct BackwardContext {
  const OpDef* op = nullptr;
  const Attrs* attrs = nullptr;
  TensorList inputs;        // saved inputs (undefined where the op did not save them)
  TensorList outputs;       // saved outputs
  TensorList grad_outputs;  // undefined where no gradient flowed into that output
  std::vector<TensorMeta> input_metas;
  std::vector<TensorMeta> output_metas;
  std::vector<bool> needs_input_grad;
  // grad_outputs[i], or zeros of output i's shape when none flowed.
  Tensor grad_output(size_t i) const;
  bool needs(size_t i) const { return i < needs_input_grad.size() && needs_input_grad[i]; }
};

using MetaFn = std::function<std::vector<TensorMeta>(const TensorList&, const Attrs&)>;
using ComputeFn = std::function<void(const TensorList& in, const TensorList& out, const Attrs&)>;
using ViewFn = std::function<TensorList(const TensorList& in, const Attrs&)>;
// One gradient per input (undefined where none), in input order.
using BackwardFn = std::function<TensorList(const BackwardContext&)>;
using KernelFn =
    std::function<TensorList(const OpDef&, DispatchKeySet, const TensorList&, const Attrs&)>;

enum class OpKind : uint8_t {
  Functional,  // allocates fresh outputs from the shape rule, the kernel fills them
  View,        // outputs alias input 0 (metadata only, the same on every device)
  InPlace,     // writes into input 0 and returns it
};

struct OpDef {
  std::string name;
  OpKind kind = OpKind::Functional;
  MetaFn meta;  // shape/dtype rule: validates and describes outputs (fake mode runs only this)
  ViewFn view;  // View ops
  BackwardFn backward;
  bool differentiable = true;        // false: outputs never require grad (comparisons, argmax)
  uint64_t save_inputs = ~0ull;      // bit i: keep input i for backward
  uint64_t save_outputs = ~0ull;     // bit i: keep output i for backward
  uint64_t optional_inputs = 0;      // bit i: input i may be undefined (an absent weight)
  std::array<ComputeFn, 2> compute;  // [CPU, CUDA]
  std::array<KernelFn, kNumDispatchKeys> kernels;  // per-key overrides of the defaults

  OpDef& set_meta(MetaFn f) {
    meta = std::move(f);
    return *this;
  }
  OpDef& set_backward(BackwardFn f) {
    backward = std::move(f);
    return *this;
  }
  OpDef& set_cpu(ComputeFn f) {
    compute[0] = std::move(f);
    return *this;
  }
  OpDef& set_cuda(ComputeFn f) {
    compute[1] = std::move(f);
    return *this;
  }
  OpDef& set_view(ViewFn f) {
    kind = OpKind::View;
    view = std::move(f);
    return *this;
  }
  OpDef& set_kind(OpKind k) {
    kind = k;
    return *this;
  }
  OpDef& non_differentiable() {
    differentiable = false;
    return *this;
  }
  OpDef& save(uint64_t inputs_mask, uint64_t outputs_mask) {
    save_inputs = inputs_mask;
    save_outputs = outputs_mask;
    return *this;
  }
  OpDef& optional(uint64_t inputs_mask) {
    optional_inputs = inputs_mask;
    return *this;
  }
  OpDef& impl(DispatchKey k, KernelFn f) {
    kernels[static_cast<int>(k)] = std::move(f);
    return *this;
  }
};

class Dispatcher {
 public:
  static Dispatcher& get();
  // Registers a new op; defining a name twice is an error.
  OpDef& def(const std::string& name);
  const OpDef& find(const std::string& name) const;
  const OpDef* find_or_null(const std::string& name) const;
  void set_fallback(DispatchKey k, KernelFn f);
  std::vector<std::string> op_names() const;

  // The full call: computes the key set and runs the highest kernel.
  TensorList call(const OpDef& op, const TensorList& in, const Attrs& attrs) const;
  // Runs the highest key of `ks` (after a kernel removed itself and those above).
  TensorList redispatch(const OpDef& op, DispatchKeySet ks, const TensorList& in,
                        const Attrs& attrs) const;
  DispatchKeySet compute_keys(const TensorList& in, const Attrs& attrs) const;

 private:
  Dispatcher();
  struct Impl;
  Impl* impl_;
};

// Allocates real or fake outputs as the shape rule describes.
TensorList allocate_outputs(const std::vector<TensorMeta>& metas, bool fake);

// Shorthands for public op functions: look the op up once, call it.
TensorList call_op(const OpDef& op, const TensorList& in, const Attrs& attrs = {});
inline Tensor call_op1(const OpDef& op, const TensorList& in, const Attrs& attrs = {}) {
  return call_op(op, in, attrs).at(0);
}
const OpDef& op_named(const char* name);

// Defined in ops/registry.cpp: registers every built-in op, once, on first use.
void register_builtin_ops(Dispatcher& d);

}  // namespace microflex
