// Anomaly mode: a debugging aid that scans every value an op computes for NaN (and Inf)
// and raises an Error naming the op that first produced one, forward or backward.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace microflex {

// Note [Anomaly mode]
// Inside an AnomalyModeGuard (thread-local), the dispatcher scans the floating outputs of
// every CPU/CUDA op after its kernel returns (views are skipped: they compute nothing),
// and the backward engine scans the gradients each tape node returns. The first NaN, or
// Inf unless check_inf is false, raises
//   "anomaly mode: op 'log' produced NaN in output 0 of shape [2, 3]"
//   "anomaly mode: backward of 'div' produced Inf in the gradient of input 1 of shape [3]"
// Scanning copies every output to the host: use it to find a bad value, not in training.
// Programs that mask with -inf (causal attention) should pass check_inf = false.
class AnomalyModeGuard {
 public:
  explicit AnomalyModeGuard(bool check_inf = true);
  ~AnomalyModeGuard();
  AnomalyModeGuard(const AnomalyModeGuard&) = delete;
  AnomalyModeGuard& operator=(const AnomalyModeGuard&) = delete;

 private:
  uint8_t saved_;
};

bool anomaly_mode_enabled();
// The first bad value among the real floating tensors of `ts` as "NaN in <what> 0 of shape
// [2, 3]", or "" when there is none (or anomaly mode is off).
std::string find_anomaly(const TensorList& ts, const char* what);

}  // namespace microflex
