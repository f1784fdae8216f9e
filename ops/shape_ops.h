// Ops that build or split tensors: cat, stack, split, chunk, tril, triu, one_hot.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace microflex {

// Concatenates along `dim`; the result has the promoted dtype of the inputs. Sizes must
// match except at `dim`; 1-D empty tensors are skipped (as in PyTorch).
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Stacks same-shaped tensors along a new dim `dim` (in [-(n+1), n] for n-dim inputs).
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
// Views of `split_size`-long pieces along `dim` (the last may be shorter).
std::vector<Tensor> split(const Tensor& t, int64_t split_size, int64_t dim = 0);
// Views of the given sizes along `dim`; the sizes must sum to t.size(dim).
std::vector<Tensor> split(const Tensor& t, const std::vector<int64_t>& sizes, int64_t dim = 0);
// At most `chunks` views of ceil(n / chunks) along `dim` (fewer when they run out).
std::vector<Tensor> chunk(const Tensor& t, int64_t chunks, int64_t dim = 0);
// The lower (tril) or upper (triu) triangle of the last two dims, zero elsewhere:
// element (i, j) is kept when j - i <= diagonal (tril) or j - i >= diagonal (triu).
Tensor tril(const Tensor& t, int64_t diagonal = 0);
Tensor triu(const Tensor& t, int64_t diagonal = 0);
// int64 [*, num_classes] with a 1 at each id of an integer tensor [*]. num_classes = -1
// uses max(ids) + 1 (which needs the data: not under fake mode). Ids outside
// [0, num_classes) are an error.
Tensor one_hot(const Tensor& ids, int64_t num_classes = -1);

}  // namespace microflex
