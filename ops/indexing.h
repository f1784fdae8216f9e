// Indexing: index with broadcasting index tensors (what score_mod uses to read captured
// buffers), gather, index_select, embedding, masked_fill.
#pragma once
#include "core/tensor.h"

namespace microflex {}  // namespace microflex
