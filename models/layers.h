// Basic layers, modelled on torch.nn: Linear, Embedding, LayerNorm, RMSNorm, Dropout, and
// nanoGPT's MLP. Parameters are float32 on the CPU when made; Module::to converts them.
// Dimension letters: B batch, T sequence, C channels (n_embd), V vocabulary.
#pragma once
#include <optional>

#include "models/module.h"

namespace microflex {

// y = x W^T + b: x [*, in] -> [*, out]. weight [out, in], bias [out] (when `bias`), both
// drawn from U(-1/sqrt(in), 1/sqrt(in)) as in PyTorch.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined without bias
};

// Rows of weight [num, dim] at integer ids of any shape: ids.shape + [dim]. weight ~ N(0, 1).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  Tensor forward(const Tensor& ids) const;
  Tensor operator()(const Tensor& ids) const { return forward(ids); }

  int64_t num_embeddings, embedding_dim;
  Tensor weight;
};

// Layer normalisation over the last dim: weight ones, bias zeros (when `bias`).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim;
  double eps;
  Tensor weight, bias;
};

// RMS normalisation over the last dim, weight ones; eps as in ops/nn.h (default: the
// machine epsilon of x's dtype).
class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, std::optional<double> eps = std::nullopt);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim;
  std::optional<double> eps;
  Tensor weight;
};

// Zeroes elements with probability p while training; the identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  double p;
};

// nanoGPT's MLP: c_fc (C -> 4C), gelu (tanh approximation), c_proj (4C -> C), dropout.
class MLP : public Module {
 public:
  MLP(int64_t n_embd, bool bias = true, double dropout = 0.0);
  Tensor forward(const Tensor& x) const;  // [B, T, C] -> [B, T, C]
  Tensor operator()(const Tensor& x) const { return forward(x); }

  std::shared_ptr<Linear> c_fc, c_proj;
  std::shared_ptr<Dropout> drop;
};

}  // namespace microflex
