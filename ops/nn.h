// Neural-network ops: cross_entropy, layer_norm, rms_norm, dropout.
#pragma once
#include "core/tensor.h"

namespace microflex {}  // namespace microflex
