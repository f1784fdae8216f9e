// CUDA launcher of the fused AdamW update of one contiguous float32 parameter tensor: one
// pass reads p, grad, exp_avg, exp_avg_sq and writes p, exp_avg, exp_avg_sq (models/optim.h
// has the formula; the step-dependent factors come from the host).
#pragma once
#include <cstdint>

namespace microflex::cuda {

// The per-step factors of AdamW, rounded to float32 as the composed update rounds them.
struct AdamWFactors {
  float decay;          // 1 - lr * weight_decay, or 1 for tensors without decay
  float beta1, beta2;   // b1, b2
  float one_minus_b1;   // 1 - b1
  float one_minus_b2;   // 1 - b2
  float sqrt_bc2;       // sqrt(1 - b2^t)
  float eps;            // eps
  float neg_step_size;  // -lr / (1 - b1^t)
};

// Over n elements on cuda:`device`:
//   p = p * decay
//   m = m * b1 + g * (1 - b1),   v = v * b2 + (g * g) * (1 - b2)
//   p = p + (m / (sqrt(v) / sqrt_bc2 + eps)) * neg_step_size
void adamw_step(int device, float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                int64_t n, const AdamWFactors& f);

}  // namespace microflex::cuda
