// Tensor files: safetensors and NumPy .npy, read with bounds checks.
#pragma once
#include "core/tensor.h"

namespace microflex {}  // namespace microflex
