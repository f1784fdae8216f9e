// Ops that build or split tensors: cat, stack, split, chunk, tril, triu, one_hot.
#pragma once
#include "core/tensor.h"

namespace microflex {}  // namespace microflex
