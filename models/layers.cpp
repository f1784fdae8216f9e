// Basic layers: parameter creation and forwards through the dispatched ops, so each layer
// runs on any device, in fake mode and under tracing.
#include "models/layers.h"

#include <cmath>

#include "core/error.h"
#include "ops/elementwise.h"
#include "ops/indexing.h"
#include "ops/linalg.h"
#include "ops/nn.h"

namespace microflex {

namespace {

Tensor uniform(const Shape& shape, double bound) {
  return rand(shape) * (2.0 * bound) - bound;
}

}  // namespace

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  MF_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got ", in,
           " and ", out);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", uniform({out, in}, bound));
  if (with_bias) bias = register_parameter("bias", uniform({out}, bound));
}

Tensor Linear::forward(const Tensor& x) const {
  return linear(x, weight, bias);
}

Embedding::Embedding(int64_t num, int64_t dim) : num_embeddings(num), embedding_dim(dim) {
  MF_CHECK(num > 0 && dim > 0, "Embedding: num_embeddings and embedding_dim must be positive, got ",
           num, " and ", dim);
  weight = register_parameter("weight", randn({num, dim}));
}

Tensor Embedding::forward(const Tensor& ids) const {
  return embedding(weight, ids);
}

LayerNorm::LayerNorm(int64_t d, double e, bool with_bias) : dim(d), eps(e) {
  MF_CHECK(d > 0, "LayerNorm: dim must be positive, got ", d);
  weight = register_parameter("weight", ones({d}));
  if (with_bias) bias = register_parameter("bias", zeros({d}));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, {dim}, weight, bias, eps);
}

RMSNorm::RMSNorm(int64_t d, std::optional<double> e) : dim(d), eps(e) {
  MF_CHECK(d > 0, "RMSNorm: dim must be positive, got ", d);
  weight = register_parameter("weight", ones({d}));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  return rms_norm(x, {dim}, weight, eps);
}

Dropout::Dropout(double prob) : p(prob) {
  MF_CHECK(prob >= 0.0 && prob <= 1.0, "Dropout: p must be in [0, 1], got ", prob);
}

Tensor Dropout::forward(const Tensor& x) const {
  return dropout(x, p, is_training());
}

MLP::MLP(int64_t n_embd, bool bias, double dropout) {
  c_fc = register_module("c_fc", std::make_shared<Linear>(n_embd, 4 * n_embd, bias));
  c_proj = register_module("c_proj", std::make_shared<Linear>(4 * n_embd, n_embd, bias));
  drop = register_module("drop", std::make_shared<Dropout>(dropout));
}

Tensor MLP::forward(const Tensor& x) const {
  // x [B, T, C] -> h [B, T, 4C] -> [B, T, C]
  Tensor h = gelu(c_fc->forward(x), "tanh");
  return drop->forward(c_proj->forward(h));
}

}  // namespace microflex
