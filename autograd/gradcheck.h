// gradcheck: compares the gradients autograd computes with central finite differences
// in float64, element by element of the Jacobian, and names the worst element.
#pragma once
#include <functional>
#include <string>

#include "core/tensor.h"

namespace microflex {

struct GradcheckResult {
  bool ok = true;
  std::string message;     // the worst mismatch, with its input, index and output element
  double max_error = 0.0;  // largest |analytic - numeric| seen
};

// `fn` maps the inputs to one output tensor (any shape). Inputs that require grad must
// be float64 (they may be non-contiguous views); they are perturbed in place and restored.
GradcheckResult gradcheck(const std::function<Tensor(const TensorList&)>& fn,
                          const TensorList& inputs, double eps = 1e-6, double atol = 1e-6,
                          double rtol = 1e-4);

}  // namespace microflex
