// Module: the base of every layer, modelled on torch.nn.Module. A module owns named
// parameters (leaf tensors that require grad), buffers (tensors that are not trained)
// and child modules; names nest with dots ("h.0.attn.c_attn.weight", as in nanoGPT).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/serialize.h"
#include "core/tensor.h"

namespace microflex {

// Note [Parameters replaced in place]
// A layer keeps its parameters in members (`Tensor weight`) that are handles to the same
// TensorImpl as the registry entry. to(Device) / to(DType) swap the data behind that
// TensorImpl (shape, strides, dtype, storage), like PyTorch's `param.data = ...` in
// Module._apply, so every handle — the member, a tied weight, an optimizer's parameter
// list, a tensor captured by a score_mod — sees the converted tensor. Gradients are
// dropped by the conversion.

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Own parameters first, in registration order, then each child's, depth first. A
  // tensor registered under several names (tied weights) is listed once, under its
  // first name.
  NamedTensors named_parameters() const;
  TensorList parameters() const;
  // Buffers, persistent or not, in the same order.
  NamedTensors named_buffers() const;
  // Children, direct only, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }
  // Number of parameter elements, each shared tensor counted once.
  int64_t num_parameters() const;

  // Training mode for this module and every child (dropout reads it).
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves / converts every parameter and buffer in place (Note [Parameters replaced in
  // place]); to(DType) converts floating tensors only. Returns *this.
  virtual Module& to(Device device);
  virtual Module& to(DType dtype);

  // Clears the gradient of every parameter.
  void zero_grad();

  // Parameters and persistent buffers by name, detached (they share storage with the
  // module), in PyTorch's order: a module's parameters, its persistent buffers, then each
  // child's entries. Unlike named_parameters(), a tensor registered under two names
  // appears under both.
  NamedTensors state_dict() const;
  // Copies tensors from `sd` into the parameters and persistent buffers by name. Every
  // entry is checked before anything is copied: a shape or dtype mismatch is always an
  // error; with `strict`, so are names the module has and `sd` lacks (missing) and names
  // `sd` has and the module lacks (unexpected). Values move to each tensor's device.
  void load_state_dict(const NamedTensors& sd, bool strict = true);

 protected:
  // Makes `t` a leaf that requires grad (detached from any graph), registers it and
  // returns it; the caller keeps the returned handle as its member.
  Tensor register_parameter(const std::string& name, const Tensor& t);
  // Registers a buffer; non-persistent buffers are left out of state_dict (derived
  // tables such as rotary frequencies).
  Tensor register_buffer(const std::string& name, const Tensor& t, bool persistent = true);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  // Called after to(): layers that cache device- or dtype-dependent state drop it.
  virtual void on_converted() {}

 private:
  struct Buffer {
    std::string name;
    Tensor tensor;
    bool persistent;
  };
  void check_name(const std::string& name, const char* what) const;
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, NamedTensors* params, std::vector<Buffer>* buffers) const;
  void for_each_module(const std::function<void(Module&)>& f);
  void convert(const std::function<Tensor(const Tensor&)>& f);

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of child modules named "0", "1", ... (torch.nn.ModuleList).
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<Module> m);
  int64_t size() const { return static_cast<int64_t>(named_children().size()); }
  std::shared_ptr<Module> operator[](int64_t i) const;
};

}  // namespace microflex
