#include "models/mixed_precision.h"

#include "autograd/grad_mode.h"
#include "ops/op_utils.h"

namespace microflex {

MixedPrecision::MixedPrecision(Module& master, Module& compute) {
  compute.to(DType::BFloat16);
  master_ = master.parameters();
  compute_ = compute.parameters();
  MF_CHECK(master_.size() == compute_.size(), "MixedPrecision: the master model has ",
           master_.size(), " parameters, the compute model ", compute_.size());
  for (size_t i = 0; i < master_.size(); ++i)
    MF_CHECK(master_[i].sizes() == compute_[i].sizes() && master_[i].dtype() == DType::Float32,
             "MixedPrecision: parameter ", i, " is ", describe(master_[i]), " in the master and ",
             describe(compute_[i]),
             " in the compute model (expected float32 masters of the "
             "same shapes)");
  master_to_compute();
}

void MixedPrecision::grads_to_master() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < master_.size(); ++i) {
    Tensor& c = compute_[i];
    Tensor m = master_[i];
    if (c.grad().defined()) m.set_grad(c.grad().to(DType::Float32));
    c.zero_grad();
  }
}

void MixedPrecision::master_to_compute() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < master_.size(); ++i) compute_[i].copy_(master_[i]);
}

}  // namespace microflex
