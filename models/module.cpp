// Module: registration of parameters, buffers and children; name walks, train/eval,
// in-place device/dtype conversion and state_dict loading with checked names and shapes.
#include "models/module.h"

#include <map>
#include <set>
#include <sstream>

#include "autograd/grad_mode.h"
#include "core/error.h"

namespace microflex {

namespace {

// Swaps the data behind `dst`'s TensorImpl for `src`'s (Note [Parameters replaced in
// place]); the autograd leaf state (requires_grad) is kept, the gradient dropped.
void replace_data(const Tensor& dst, const Tensor& src) {
  TensorImpl* d = dst.impl();
  const TensorImpl* s = src.impl();
  d->sizes = s->sizes;
  d->strides = s->strides;
  d->offset = s->offset;
  d->dtype = s->dtype;
  d->storage = s->storage;
  d->grad.reset();
  d->grad_accumulator.reset();
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

}  // namespace

void Module::check_name(const std::string& name, const char* what) const {
  MF_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: ", what, " name '", name,
           "' must be non-empty and contain no '.'");
  bool taken = false;
  for (const auto& [n, t] : params_) taken = taken || n == name;
  for (const Buffer& b : buffers_) taken = taken || b.name == name;
  for (const auto& [n, m] : children_) taken = taken || n == name;
  MF_CHECK(!taken, "Module: ", what, " name '", name, "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, const Tensor& t) {
  check_name(name, "parameter");
  MF_CHECK(t.defined(), "Module: parameter '", name, "' is undefined");
  MF_CHECK(is_floating(t.dtype()), "Module: parameter '", name, "' must be floating, got ",
           t.dtype());
  Tensor p = t.is_leaf() ? t : t.detach();
  p.requires_grad_(true);
  params_.emplace_back(name, p);
  return p;
}

Tensor Module::register_buffer(const std::string& name, const Tensor& t, bool persistent) {
  check_name(name, "buffer");
  MF_CHECK(t.defined(), "Module: buffer '", name, "' is undefined");
  Tensor b = t.detach();
  buffers_.push_back({name, b, persistent});
  return b;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_name(name, "module");
  MF_CHECK(m != nullptr, "Module: child module '", name, "' is null");
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, NamedTensors* params,
                     std::vector<Buffer>* buffers) const {
  for (const auto& [n, t] : params_) params->emplace_back(prefix + n, t);
  for (const Buffer& b : buffers_) buffers->push_back({prefix + b.name, b.tensor, b.persistent});
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", params, buffers);
}

NamedTensors Module::named_parameters() const {
  NamedTensors all, out;
  std::vector<Buffer> bufs;
  collect("", &all, &bufs);
  std::set<const TensorImpl*> seen;
  for (auto& [n, t] : all)
    if (seen.insert(t.impl()).second) out.emplace_back(n, t);
  return out;
}

TensorList Module::parameters() const {
  TensorList out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors params, out;
  std::vector<Buffer> bufs;
  collect("", &params, &bufs);
  for (const Buffer& b : bufs) out.emplace_back(b.name, b.tensor);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::for_each_module(const std::function<void(Module&)>& f) {
  f(*this);
  for (auto& [n, m] : children_) m->for_each_module(f);
}

void Module::train(bool on) {
  for_each_module([on](Module& m) { m.training_ = on; });
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.zero_grad();
}

void Module::convert(const std::function<Tensor(const Tensor&)>& f) {
  NoGradGuard no_grad;
  std::set<const TensorImpl*> done;
  for_each_module([&](Module& m) {
    auto apply = [&](const Tensor& t) {
      if (!done.insert(t.impl()).second) return;
      Tensor c = f(t);
      if (!c.is_same(t)) replace_data(t, c);
    };
    for (auto& [n, t] : m.params_) apply(t);
    for (Buffer& b : m.buffers_) apply(b.tensor);
  });
  for_each_module([](Module& m) { m.on_converted(); });
}

Module& Module::to(Device device) {
  convert([device](const Tensor& t) { return t.device() == device ? t : t.to(device); });
  return *this;
}

Module& Module::to(DType dtype) {
  convert([dtype](const Tensor& t) {
    return !is_floating(t.dtype()) || t.dtype() == dtype ? t : t.to(dtype);
  });
  return *this;
}

NamedTensors Module::state_dict() const {
  // PyTorch's order: a module's parameters, its persistent buffers, then each child.
  NamedTensors out;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m,
                                                                    const std::string& prefix) {
    for (const auto& [n, t] : m.params_) out.emplace_back(prefix + n, t.detach());
    for (const Buffer& b : m.buffers_)
      if (b.persistent) out.emplace_back(prefix + b.name, b.tensor.detach());
    for (const auto& [n, c] : m.children_) walk(*c, prefix + n + ".");
  };
  walk(*this, "");
  return out;
}

void Module::load_state_dict(const NamedTensors& sd, bool strict) {
  const NamedTensors own = state_dict();
  std::map<std::string, const Tensor*> target;
  for (const auto& [n, t] : own) target[n] = &t;
  std::map<std::string, const Tensor*> source;
  std::vector<std::string> unexpected, missing, mismatches;
  for (const auto& [n, t] : sd) {
    MF_CHECK(source.emplace(n, &t).second, "load_state_dict: the state dict has the key '", n,
             "' twice");
    auto it = target.find(n);
    if (it == target.end()) {
      unexpected.push_back(n);
      continue;
    }
    const Tensor& dst = *it->second;
    std::ostringstream os;
    if (!t.defined()) {
      os << "'" << n << "' is undefined in the state dict";
    } else if (t.sizes() != dst.sizes()) {
      os << "size mismatch for '" << n << "': state dict has " << shape_str(t.sizes())
         << ", model has " << shape_str(dst.sizes());
    } else if (t.dtype() != dst.dtype()) {
      os << "dtype mismatch for '" << n << "': state dict has " << t.dtype() << ", model has "
         << dst.dtype();
    }
    if (!os.str().empty()) mismatches.push_back(os.str());
  }
  for (const auto& [n, t] : own)
    if (!source.count(n)) missing.push_back(n);
  std::vector<std::string> errors = mismatches;
  if (strict && !missing.empty()) errors.push_back("missing keys: " + join(missing));
  if (strict && !unexpected.empty()) errors.push_back("unexpected keys: " + join(unexpected));
  MF_CHECK(errors.empty(), "load_state_dict: ", join(errors));

  NoGradGuard no_grad;
  for (const auto& [n, t] : sd) {
    auto it = target.find(n);
    if (it == target.end()) continue;
    Tensor dst = *it->second;
    dst.copy_(t.device() == dst.device() ? t : t.to(dst.device()));
  }
}

void ModuleList::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(size()), std::move(m));
}

std::shared_ptr<Module> ModuleList::operator[](int64_t i) const {
  MF_CHECK(i >= 0 && i < size(), "ModuleList: index ", i, " out of range for ", size(), " modules");
  return named_children()[static_cast<size_t>(i)].second;
}

}  // namespace microflex
