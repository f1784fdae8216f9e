// AdamW and SGD updates, their checkpoint state, gradient clipping and the cosine schedule.
#include "models/optim.h"

#include <cmath>
#include <map>
#include <set>

#include "autograd/grad_mode.h"
#include "core/error.h"
#include "core/graph.h"
#include "ops/elementwise.h"
#include "ops/reduction.h"

#ifdef MICROFLEX_WITH_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace microflex {

Optimizer::Optimizer(NamedTensors params, double lr) : params_(std::move(params)), lr_(lr) {
  MF_CHECK(!params_.empty(), "optimizer: got an empty parameter list");
  std::set<std::string> names;
  for (const auto& [n, p] : params_) {
    MF_CHECK(names.insert(n).second, "optimizer: parameter name '", n, "' appears twice");
    MF_CHECK(p.defined() && p.is_leaf() && p.requires_grad(), "optimizer: parameter '", n,
             "' must be a leaf tensor that requires grad");
  }
  set_lr(lr);
}

void Optimizer::set_lr(double lr) {
  MF_CHECK(std::isfinite(lr) && lr >= 0.0, "optimizer: learning rate must be finite and >= 0, got ",
           lr);
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (auto& [n, p] : params_) p.zero_grad();
}

NamedTensors Optimizer::state_dict_of(const std::vector<std::string>& kinds,
                                      const std::vector<TensorList>& state) const {
  NamedTensors out;
  out.emplace_back("step", scalar_tensor(step_, {.dtype = DType::Int64}));
  for (size_t i = 0; i < params_.size(); ++i)
    for (size_t k = 0; k < kinds.size(); ++k)
      if (state[k][i].defined())
        out.emplace_back(kinds[k] + "." + params_[i].first, state[k][i].detach());
  return out;
}

void Optimizer::load_state_dict_into(const NamedTensors& sd, const std::vector<std::string>& kinds,
                                     std::vector<TensorList>* state) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i].first] = i;
  const Tensor* step = nullptr;
  std::vector<std::vector<const Tensor*>> src(kinds.size(),
                                              std::vector<const Tensor*>(params_.size(), nullptr));
  std::vector<std::string> errors;
  for (const auto& [name, t] : sd) {
    if (name == "step") {
      if (!t.defined() || t.numel() != 1 || is_floating(t.dtype()))
        errors.push_back("'step' must be a one-element integer tensor");
      step = &t;
      continue;
    }
    const size_t dot = name.find('.');
    size_t k = kinds.size();
    for (size_t j = 0; j < kinds.size() && dot != std::string::npos; ++j)
      if (name.compare(0, dot, kinds[j]) == 0 && kinds[j].size() == dot) k = j;
    auto it = dot == std::string::npos ? index.end() : index.find(name.substr(dot + 1));
    if (k == kinds.size() || it == index.end()) {
      errors.push_back("unexpected key '" + name + "'");
      continue;
    }
    const Tensor& p = params_[it->second].second;
    if (!t.defined() || t.sizes() != p.sizes() || t.dtype() != p.dtype()) {
      errors.push_back(detail::str_cat(
          "'", name, "' is ",
          t.defined() ? shape_str(t.sizes()) + " " + dtype_name(t.dtype())
                      : std::string("undefined"),
          ", parameter '", it->first, "' is ", shape_str(p.sizes()), " ", dtype_name(p.dtype())));
      continue;
    }
    src[k][it->second] = &t;
  }
  if (step == nullptr) errors.push_back("missing key 'step'");
  for (size_t i = 0; i < params_.size(); ++i) {
    bool any = false, all = true;
    for (size_t k = 0; k < kinds.size(); ++k) {
      any = any || src[k][i] != nullptr;
      all = all && src[k][i] != nullptr;
    }
    if (any && !all) errors.push_back("incomplete state for parameter '" + params_[i].first + "'");
  }
  std::string msg;
  for (size_t i = 0; i < errors.size(); ++i) msg += (i ? "; " : "") + errors[i];
  MF_CHECK(errors.empty(), "optimizer load_state_dict: ", msg);

  NoGradGuard no_grad;
  step_ = step->to(DType::Int64).item<int64_t>();
  for (size_t k = 0; k < kinds.size(); ++k)
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor* s = src[k][i];
      // A copy, so the optimizer never writes into the caller's tensors.
      (*state)[k][i] = s ? s->to(params_[i].second.device()).clone() : Tensor();
    }
}

AdamW::AdamW(NamedTensors params, const AdamWOptions& o)
    : Optimizer(std::move(params), o.lr), opts(o) {
  MF_CHECK(o.beta1 >= 0.0 && o.beta1 < 1.0 && o.beta2 >= 0.0 && o.beta2 < 1.0,
           "AdamW: betas must be in [0, 1), got ", o.beta1, " and ", o.beta2);
  MF_CHECK(o.eps >= 0.0 && o.weight_decay >= 0.0, "AdamW: eps and weight_decay must be >= 0, got ",
           o.eps, " and ", o.weight_decay);
  state_.assign(2, TensorList(params_.size()));
}

#ifdef MICROFLEX_WITH_CUDA
namespace {

// Whether the fused CUDA update applies: real (not fake, not traced) contiguous float32
// tensors on one GPU.
bool fused_adamw_applies(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v) {
  if (!p.is_cuda() || graph::current_tracer() != nullptr) return false;
  for (const Tensor* t : {&p, &g, &m, &v})
    if (t->is_fake() || t->dtype() != DType::Float32 || t->device() != p.device() ||
        !t->is_contiguous())
      return false;
  return true;
}

}  // namespace
#endif

void AdamW::step() {
  NoGradGuard no_grad;
  ++step_;
  const double t = static_cast<double>(step_);
  const double bc1 = 1.0 - std::pow(opts.beta1, t), bc2 = 1.0 - std::pow(opts.beta2, t);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor& m = state_[0][i];
    Tensor& v = state_[1][i];
    if (!m.defined()) {
      m = zeros_like(p);
      v = zeros_like(p);
    }
    const bool decay = decays(i) && opts.weight_decay != 0.0;
#ifdef MICROFLEX_WITH_CUDA
    if (fused_adamw_applies(p, g, m, v)) {
      // One kernel instead of the composed ops below, with the same float32 factors.
      const cuda::AdamWFactors f{
          .decay = decay ? static_cast<float>(1.0 - lr_ * opts.weight_decay) : 1.0f,
          .beta1 = static_cast<float>(opts.beta1),
          .beta2 = static_cast<float>(opts.beta2),
          .one_minus_b1 = static_cast<float>(1.0 - opts.beta1),
          .one_minus_b2 = static_cast<float>(1.0 - opts.beta2),
          .sqrt_bc2 = static_cast<float>(std::sqrt(bc2)),
          .eps = static_cast<float>(opts.eps),
          .neg_step_size = static_cast<float>(-lr_ / bc1)};
      cuda::adamw_step(p.device().index, p.data_ptr<float>(), g.data_ptr<float>(),
                       m.data_ptr<float>(), v.data_ptr<float>(), p.numel(), f);
      // The in-place ops of the composed update bump these.
      p.bump_version();
      m.bump_version();
      v.bump_version();
      continue;
    }
#endif
    if (decay) p.mul_(1.0 - lr_ * opts.weight_decay);
    m.mul_(opts.beta1).add_(g, 1.0 - opts.beta1);
    v.mul_(opts.beta2).add_(g * g, 1.0 - opts.beta2);
    const Tensor denom = sqrt(v) / std::sqrt(bc2) + opts.eps;
    p.add_(m / denom, -lr_ / bc1);
  }
}

NamedTensors AdamW::state_dict() const {
  return state_dict_of({"exp_avg", "exp_avg_sq"}, state_);
}

void AdamW::load_state_dict(const NamedTensors& sd) {
  load_state_dict_into(sd, {"exp_avg", "exp_avg_sq"}, &state_);
}

SGD::SGD(NamedTensors params, const SGDOptions& o) : Optimizer(std::move(params), o.lr), opts(o) {
  MF_CHECK(o.momentum >= 0.0 && o.weight_decay >= 0.0,
           "SGD: momentum and weight_decay must be >= 0, got ", o.momentum, " and ",
           o.weight_decay);
  MF_CHECK(!o.nesterov || o.momentum > 0.0, "SGD: nesterov needs momentum > 0");
  state_.assign(1, TensorList(params_.size()));
}

void SGD::step() {
  NoGradGuard no_grad;
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (opts.weight_decay != 0.0) g = g + p * opts.weight_decay;
    if (opts.momentum != 0.0) {
      Tensor& buf = state_[0][i];
      if (!buf.defined()) {
        buf = g.clone();
      } else {
        buf.mul_(opts.momentum).add_(g);
      }
      g = opts.nesterov ? g + buf * opts.momentum : buf;
    }
    p.add_(g, -lr_);
  }
}

NamedTensors SGD::state_dict() const {
  return state_dict_of({"momentum_buffer"}, state_);
}

void SGD::load_state_dict(const NamedTensors& sd) {
  load_state_dict_into(sd, {"momentum_buffer"}, &state_);
}

Tensor clip_grad_norm_(const TensorList& params, double max_norm) {
  MF_CHECK(std::isfinite(max_norm) && max_norm > 0.0,
           "clip_grad_norm_: max_norm must be finite and > 0, got ", max_norm);
  NoGradGuard no_grad;
  TensorList grads;
  bool f64 = false;
  for (const Tensor& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    grads.push_back(p.grad());
    f64 = f64 || grads.back().dtype() == DType::Float64;
  }
  const DType acc = f64 ? DType::Float64 : DType::Float32;
  if (grads.empty()) return zeros({}, {.dtype = acc});
  Tensor sq;  // sum of squares over every gradient, 0-d
  for (const Tensor& g : grads) {
    const Tensor ga = g.dtype() == acc ? g : g.to(acc);
    const Tensor s = sum(ga * ga);
    sq = sq.defined() ? sq + s : s;
  }
  const Tensor total = sqrt(sq);
  const Tensor coef = clamp(max_norm / (total + 1e-6), std::nullopt, 1.0);
  for (const Tensor& g : grads) {
    Tensor gi = g;
    gi.mul_(coef.dtype() == g.dtype() ? coef : coef.to(g.dtype()));
  }
  return total;
}

double CosineSchedule::operator()(int64_t it) const {
  if (it < warmup_iters)
    return max_lr * static_cast<double>(it + 1) / static_cast<double>(warmup_iters + 1);
  if (it > decay_iters) return min_lr;
  const double span = static_cast<double>(decay_iters - warmup_iters);
  const double ratio = span > 0.0 ? static_cast<double>(it - warmup_iters) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return min_lr + coeff * (max_lr - min_lr);
}

}  // namespace microflex
