// Optimizers (AdamW, SGD), gradient clipping and nanoGPT's warm-up + cosine learning-rate
// schedule. Updates are dispatched in-place ops under NoGradGuard, so they run on any
// device and in fake mode.
//
// Gradient accumulation (nanoGPT's gradient_accumulation_steps): gradients add up in
// each parameter's .grad across backward calls, so scale each micro-batch's loss and step
// once every accum_steps:
//   for (int64_t micro = 0; micro < accum_steps; ++micro) {
//     Tensor loss = model.forward(x[micro], y[micro]).loss / double(accum_steps);
//     loss.backward();
//   }
//   clip_grad_norm_(model.parameters(), 1.0);
//   opt.step();
//   opt.zero_grad();
// The accumulated gradient is then the gradient of the mean loss over all micro-batches.
#pragma once
#include <string>

#include "core/serialize.h"
#include "core/tensor.h"

namespace microflex {

class Optimizer {
 public:
  // Parameters by name (Module::named_parameters()); each must be a leaf that requires
  // grad. Names key the optimizer state.
  Optimizer(NamedTensors params, double lr);
  virtual ~Optimizer() = default;

  // One update from the current gradients; parameters without a gradient are skipped.
  virtual void step() = 0;
  // Clears every parameter's gradient.
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);
  int64_t step_count() const { return step_; }
  const NamedTensors& params() const { return params_; }

  // The optimizer state for checkpoints: "<state>.<param name>" tensors (detached, shared
  // with the optimizer) and "step" (0-d int64).
  virtual NamedTensors state_dict() const = 0;
  // Restores a state_dict; names, shapes and dtypes are checked before anything is copied.
  virtual void load_state_dict(const NamedTensors& sd) = 0;

 protected:
  // Shared by the optimizers: `kinds` are the state prefixes ("exp_avg", ...), `state[k][i]`
  // the tensor of kind k for parameter i (undefined until its first update).
  NamedTensors state_dict_of(const std::vector<std::string>& kinds,
                             const std::vector<TensorList>& state) const;
  void load_state_dict_into(const NamedTensors& sd, const std::vector<std::string>& kinds,
                            std::vector<TensorList>* state);

  NamedTensors params_;
  double lr_;
  int64_t step_ = 0;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// AdamW (Loshchilov & Hutter), as torch.optim.AdamW: with t the step count,
//   p -= lr * wd * p                     (decoupled decay; only on tensors with dim >= 2)
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Biases and norm weights (dim < 2) are not decayed, as in nanoGPT's configure_optimizers.
// State: "exp_avg.<name>", "exp_avg_sq.<name>", "step". One step count for all parameters.
class AdamW : public Optimizer {
 public:
  AdamW(NamedTensors params, const AdamWOptions& opts = {});
  void step() override;
  NamedTensors state_dict() const override;
  void load_state_dict(const NamedTensors& sd) override;
  // Whether parameter i gets weight decay.
  bool decays(size_t i) const { return params_[i].second.dim() >= 2; }

  AdamWOptions opts;  // opts.lr is the initial rate; lr() / set_lr() the current one

 private:
  std::vector<TensorList> state_;  // exp_avg, exp_avg_sq
};

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double weight_decay = 0.0;  // coupled: g += wd * p
  bool nesterov = false;
};

// SGD as torch.optim.SGD: g += wd p; with momentum, buf = g on the first update and
// buf = momentum buf + g after (nesterov: g + momentum buf), then p -= lr * buf.
// State: "momentum_buffer.<name>", "step".
class SGD : public Optimizer {
 public:
  SGD(NamedTensors params, const SGDOptions& opts = {});
  void step() override;
  NamedTensors state_dict() const override;
  void load_state_dict(const NamedTensors& sd) override;

  SGDOptions opts;  // opts.lr is the initial rate; lr() / set_lr() the current one

 private:
  std::vector<TensorList> state_;  // momentum_buffer
};

// Scales the gradients of `params` in place so their joint 2-norm is at most max_norm:
// g *= min(1, max_norm / (total + 1e-6)). Returns the total norm before clipping (0-d,
// float32, or float64 when a gradient is float64), computed on the device, no host sync.
// Parameters without a gradient are skipped.
Tensor clip_grad_norm_(const TensorList& params, double max_norm);

// nanoGPT's learning-rate schedule: linear warm-up lr_max * (it + 1) / (warmup + 1) for
// it < warmup, then cosine decay from lr_max to lr_min until decay_iters, lr_min after.
struct CosineSchedule {
  double max_lr = 6e-4;
  double min_lr = 6e-5;
  int64_t warmup_iters = 2000;
  int64_t decay_iters = 600000;

  double operator()(int64_t it) const;
};

}  // namespace microflex
