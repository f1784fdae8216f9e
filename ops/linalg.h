// Matrix products: matmul (PyTorch's rules, batch broadcasting), bmm, linear.
#pragma once
#include "core/tensor.h"

namespace microflex {}  // namespace microflex
