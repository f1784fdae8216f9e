// bf16 mixed precision: float32 master weights that the optimizer updates, and a copy of
// the model in bfloat16 that runs forward and backward (activations in bf16, float32
// accumulation inside matmuls and norms). After backward the bf16 gradients become float32
// master gradients; after the optimizer step the masters are copied back into the bf16
// copy.
#pragma once
#include "models/module.h"

namespace microflex {

class MixedPrecision {
 public:
  // `master` holds float32 parameters; `compute` is the same architecture (parameters in
  // the same order and shapes), converted here to bfloat16 and loaded from the master.
  MixedPrecision(Module& master, Module& compute);
  // compute grads (bf16) -> master grads (float32); clears the compute grads.
  void grads_to_master();
  // master weights -> compute weights (after the optimizer step).
  void master_to_compute();

 private:
  TensorList master_, compute_;
};

}  // namespace microflex
