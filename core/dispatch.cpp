#include "core/dispatch.h"

#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "core/anomaly.h"
#include "core/profiler.h"

namespace microflex {

const char* dispatch_key_name(DispatchKey k) {
  switch (k) {
    case DispatchKey::Tracing:
      return "Tracing";
    case DispatchKey::Autograd:
      return "Autograd";
    case DispatchKey::Fake:
      return "Fake";
    case DispatchKey::CPU:
      return "CPU";
    case DispatchKey::CUDA:
      return "CUDA";
  }
  return "?";
}

DispatchKey DispatchKeySet::highest() const {
  MF_INTERNAL_ASSERT(bits_ != 0, "empty dispatch key set");
  return static_cast<DispatchKey>(__builtin_ctz(bits_));
}

LocalDispatchState& local_dispatch_state() {
  thread_local LocalDispatchState s;
  return s;
}

IncludeKeyGuard::IncludeKeyGuard(DispatchKey k) : saved_(local_dispatch_state().included) {
  local_dispatch_state().included = saved_.add(k);
}
IncludeKeyGuard::~IncludeKeyGuard() {
  local_dispatch_state().included = saved_;
}

ExcludeKeyGuard::ExcludeKeyGuard(DispatchKeySet ks) : saved_(local_dispatch_state().excluded) {
  local_dispatch_state().excluded = saved_ | ks;
}
ExcludeKeyGuard::~ExcludeKeyGuard() {
  local_dispatch_state().excluded = saved_;
}

// ---- Attrs ----
Attrs& Attrs::set(const std::string& name, AttrValue v) {
  for (auto& [n, val] : items_) {
    if (n == name) {
      val = std::move(v);
      return *this;
    }
  }
  items_.emplace_back(name, std::move(v));
  return *this;
}

Attrs& Attrs::set_scalar(const std::string& name, const Scalar& s) {
  if (s.is_floating()) return set(name, s.to_double());
  if (s.is_bool()) return set(name, static_cast<bool>(s.to_int()));
  return set(name, s.to_int());
}

const AttrValue* Attrs::find(const std::string& name) const {
  for (const auto& [n, v] : items_)
    if (n == name) return &v;
  return nullptr;
}

double Attrs::f(const std::string& name) const {
  const AttrValue* v = find(name);
  MF_INTERNAL_ASSERT(v != nullptr, "missing attribute ", name);
  if (auto* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
  return std::get<double>(*v);
}

Scalar Attrs::scalar(const std::string& name) const {
  const AttrValue* v = find(name);
  MF_INTERNAL_ASSERT(v != nullptr, "missing attribute ", name);
  if (auto* i = std::get_if<int64_t>(v)) return Scalar(*i);
  if (auto* b = std::get_if<bool>(v)) return Scalar(*b);
  return Scalar(std::get<double>(*v));
}

std::string attr_value_string(const AttrValue& v) {
  std::ostringstream os;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          os << (x ? "true" : "false");
        } else if constexpr (std::is_same_v<T, Shape>) {
          os << shape_str(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          os << '"' << x << '"';
        } else if constexpr (std::is_same_v<T, double>) {
          std::ostringstream d;
          d.precision(17);
          d << x;
          std::string s = d.str();
          if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
          os << s;
        } else {
          os << x;
        }
      },
      v);
  return os.str();
}

std::string Attrs::to_string() const {
  std::string out;
  for (const auto& [n, v] : items_) {
    if (!out.empty()) out += ", ";
    out += n + "=" + attr_value_string(v);
  }
  return out;
}

TensorMeta meta_of(const Tensor& t) {
  return TensorMeta{t.sizes(), t.dtype(), t.device(), t.strides(), t.impl()->wrapped_number};
}

Tensor BackwardContext::grad_output(size_t i) const {
  MF_INTERNAL_ASSERT(i < output_metas.size());
  if (i < grad_outputs.size() && grad_outputs[i].defined()) return grad_outputs[i];
  const TensorMeta& m = output_metas[i];
  return zeros(m.sizes, {.dtype = m.dtype, .device = m.device});
}

TensorList allocate_outputs(const std::vector<TensorMeta>& metas, bool fake) {
  TensorList outs;
  outs.reserve(metas.size());
  for (const auto& m : metas) {
    Tensor t = Tensor::make(m.sizes, m.dtype, m.device, fake, m.strides);
    t.impl()->wrapped_number = m.wrapped_number;
    outs.push_back(std::move(t));
  }
  return outs;
}

// ---- Dispatcher ----
struct Dispatcher::Impl {
  std::unordered_map<std::string, std::unique_ptr<OpDef>> ops;
  std::array<KernelFn, kNumDispatchKeys> fallbacks;
  std::mutex mu;
};

namespace {

// An in-place op may not write through a tensor where several elements share memory
// (an expanded view): the result would depend on the order of the writes.
void check_no_internal_overlap(const OpDef& op, const Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d)
    MF_CHECK(t.sizes()[d] <= 1 || t.strides()[d] != 0, op.name,
             ": unsupported in-place write into a tensor where several elements share one "
             "memory location (shape ",
             shape_str(t.sizes()), ", strides ", shape_str(t.strides()), "); clone() it first");
}

int profile_device(DispatchKey key, const TensorList& in, const TensorList& outs,
                   const Attrs& attrs) {
  if (key != DispatchKey::CUDA) return -1;
  for (const TensorList* list : {&in, &outs})
    for (const Tensor& t : *list)
      if (t.defined() && t.device().is_cuda()) return t.device().index;
  return attrs.has("device") ? attrs.device("device").index : 0;
}

TensorList backend_kernel(const OpDef& op, DispatchKey key, const TensorList& in,
                          const Attrs& attrs) {
  if (op.kind == OpKind::View) return op.view(in, attrs);
  MF_INTERNAL_ASSERT(op.meta, "op ", op.name, " has no shape rule");
  std::vector<TensorMeta> metas = op.meta(in, attrs);
  const ComputeFn& fn = op.compute[key == DispatchKey::CPU ? 0 : 1];
  MF_CHECK(fn != nullptr, op.name, ": no ", dispatch_key_name(key), " kernel is registered");
  // A failed CUDA call inside a kernel reports the CUDA error and where; say which op too.
  auto run = [&](const TensorList& outs) {
    std::optional<profiler::detail::Scope> prof;
    if (profiler::enabled())
      prof.emplace(op.name.c_str(), profile_device(key, in, outs, attrs), in);
    try {
      fn(in, outs, attrs);
    } catch (const Error& e) {
      const std::string msg = e.what();
      if (msg.rfind("CUDA error", 0) != 0) throw;
      throw Error(op.name + ": " + msg);
    }
  };
  if (op.kind == OpKind::InPlace) {
    check_no_internal_overlap(op, in.at(0));
    TensorList outs{in.at(0)};
    run(outs);
    in[0].bump_version();
    return outs;
  }
  TensorList outs = allocate_outputs(metas, false);
  run(outs);
  return outs;
}

TensorList fake_kernel(const OpDef& op, const TensorList& in, const Attrs& attrs) {
  if (op.kind == OpKind::View) return op.view(in, attrs);
  MF_INTERNAL_ASSERT(op.meta, "op ", op.name, " has no shape rule");
  std::vector<TensorMeta> metas = op.meta(in, attrs);
  if (op.kind == OpKind::InPlace) {
    check_no_internal_overlap(op, in.at(0));
    in.at(0).bump_version();
    return {in[0]};
  }
  return allocate_outputs(metas, true);
}

}  // namespace

Dispatcher::Dispatcher() : impl_(new Impl) {}

Dispatcher& Dispatcher::get() {
  static Dispatcher* d = [] {
    auto* disp = new Dispatcher();
    register_builtin_ops(*disp);
    return disp;
  }();
  return *d;
}

OpDef& Dispatcher::def(const std::string& name) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto& slot = impl_->ops[name];
  MF_INTERNAL_ASSERT(!slot, "op ", name, " registered twice");
  slot = std::make_unique<OpDef>();
  slot->name = name;
  return *slot;
}

const OpDef* Dispatcher::find_or_null(const std::string& name) const {
  auto it = impl_->ops.find(name);
  return it == impl_->ops.end() ? nullptr : it->second.get();
}

const OpDef& Dispatcher::find(const std::string& name) const {
  const OpDef* op = find_or_null(name);
  MF_CHECK(op != nullptr, "dispatcher: no op named '", name, "'");
  return *op;
}

std::vector<std::string> Dispatcher::op_names() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : impl_->ops) names.push_back(n);
  std::sort(names.begin(), names.end());
  return names;
}

void Dispatcher::set_fallback(DispatchKey k, KernelFn f) {
  impl_->fallbacks[static_cast<int>(k)] = std::move(f);
}

DispatchKeySet Dispatcher::compute_keys(const TensorList& in, const Attrs& attrs) const {
  const LocalDispatchState& tls = local_dispatch_state();
  DispatchKeySet ks = tls.included;
  bool have_device = false;
  Device dev;
  for (const Tensor& t : in) {
    if (!t.defined()) continue;
    if (t.is_fake()) ks = ks.add(DispatchKey::Fake);
    if (tls.grad_enabled && t.requires_grad()) ks = ks.add(DispatchKey::Autograd);
    if (!have_device) {
      dev = t.device();
      have_device = true;
    }
  }
  if (!have_device && attrs.has("device")) {
    dev = attrs.device("device");
    have_device = true;
  }
  ks = ks.add(dev.is_cuda() ? DispatchKey::CUDA : DispatchKey::CPU);
  return ks - tls.excluded;
}

TensorList Dispatcher::redispatch(const OpDef& op, DispatchKeySet ks, const TensorList& in,
                                  const Attrs& attrs) const {
  while (!ks.empty()) {
    const DispatchKey k = ks.highest();
    const int ki = static_cast<int>(k);
    if (op.kernels[ki]) return op.kernels[ki](op, ks, in, attrs);
    switch (k) {
      case DispatchKey::Fake:
        return fake_kernel(op, in, attrs);
      case DispatchKey::CPU:
      case DispatchKey::CUDA: {
        TensorList outs = backend_kernel(op, k, in, attrs);
        if (anomaly_mode_enabled() && op.kind != OpKind::View) {
          const std::string bad = find_anomaly(outs, "output");
          MF_CHECK(bad.empty(), "anomaly mode: op '", op.name, "' produced ", bad);
        }
        return outs;
      }
      default:
        if (impl_->fallbacks[ki]) return impl_->fallbacks[ki](op, ks, in, attrs);
        ks = ks.remove(k);
    }
  }
  MF_INTERNAL_ASSERT(false, "no kernel found for ", op.name);
}

TensorList Dispatcher::call(const OpDef& op, const TensorList& in, const Attrs& attrs) const {
  for (size_t i = 0; i < in.size(); ++i)
    MF_CHECK(in[i].defined() || (i < 64 && ((op.optional_inputs >> i) & 1)), op.name, ": input ", i,
             " is an undefined tensor");
  return redispatch(op, compute_keys(in, attrs), in, attrs);
}

TensorList call_op(const OpDef& op, const TensorList& in, const Attrs& attrs) {
  return Dispatcher::get().call(op, in, attrs);
}

const OpDef& op_named(const char* name) {
  return Dispatcher::get().find(name);
}

}  // namespace microflex
