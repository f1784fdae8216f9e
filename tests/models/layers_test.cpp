// Basic layers (Linear, Embedding, LayerNorm, RMSNorm, Dropout, MLP) against float64 loop
// references on odd sizes, in float64 (1e-12: only summation order differs) and float32
// (1e-5 relative over sums of <= 20 terms), and gradcheck of each layer's parameters.
#include "models/layers.h"

#include "models/model_reference.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::normal_f64;
using mftest::values;

namespace {

// gradcheck of sum(module(x) * w) with respect to every parameter of the module and x (when
// floating); one scalar output keeps it to one backward.
void check_grads(mf::Module& m, const std::function<mf::Tensor(const mf::Tensor&)>& fwd,
                 mf::Tensor x, const mf::Shape& out_shape) {
  const mf::Tensor w = normal_f64(out_shape, 99);
  mf::TensorList inputs = m.parameters();
  if (mf::is_floating(x.dtype())) {
    x.requires_grad_();
    inputs.push_back(x);
  }
  auto fn = [&](const mf::TensorList&) { return (fwd(x) * w).sum(); };
  const mf::GradcheckResult r = mf::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace

TEST(Layers, LinearMatchesReference) {
  mf::manual_seed(1);
  mf::Linear lin(5, 3);
  EXPECT_EQ(lin.weight.sizes(), (mf::Shape{3, 5}));
  EXPECT_EQ(lin.bias.sizes(), (mf::Shape{3}));
  // PyTorch's init: U(-1/sqrt(in), 1/sqrt(in)).
  for (double v : values(lin.weight)) EXPECT_LE(std::abs(v), 1.0 / std::sqrt(5.0));
  const mf::Tensor x = normal_f64({2, 7, 5}, 1);
  // float32 parameters and input.
  mftest::expect_close(
      values(lin(x.to(mf::DType::Float32))),
      mftest::linear_ref(values(x), values(lin.weight), values(lin.bias), 14, 5, 3), 1e-5, 1e-5,
      "linear f32");
  lin.to(mf::DType::Float64);
  const mf::Tensor y = lin(x);
  EXPECT_EQ(y.sizes(), (mf::Shape{2, 7, 3}));
  mftest::expect_close(
      values(y), mftest::linear_ref(values(x), values(lin.weight), values(lin.bias), 14, 5, 3),
      1e-12, 1e-12, "linear f64");
  mf::Linear nobias(5, 3, false);
  EXPECT_FALSE(nobias.bias.defined());
  EXPECT_EQ(nobias.named_parameters().size(), 1u);
  nobias.to(mf::DType::Float64);
  mftest::expect_close(values(nobias(x)),
                       mftest::linear_ref(values(x), values(nobias.weight), {}, 14, 5, 3), 1e-12,
                       1e-12, "linear no bias");
}

TEST(Layers, LinearGradcheck) {
  mf::Linear lin(3, 2);
  lin.to(mf::DType::Float64);
  check_grads(lin, [&](const mf::Tensor& x) { return lin(x); }, normal_f64({3, 3}, 2), {3, 2});
}

TEST(Layers, EmbeddingMatchesReferenceAndAccumulatesRepeatedIds) {
  mf::Embedding emb(11, 3);
  emb.to(mf::DType::Float64);
  const std::vector<int64_t> ids{0, 10, 3, 3, 7, 1, 10, 3, 5, 2};
  const mf::Tensor idx = mf::from_vector(ids, {2, 5});
  const mf::Tensor y = emb(idx);
  EXPECT_EQ(y.sizes(), (mf::Shape{2, 5, 3}));
  const auto w = values(emb.weight);
  std::vector<double> ref;
  for (int64_t id : ids)
    for (int64_t d = 0; d < 3; ++d) ref.push_back(w[id * 3 + d]);
  mftest::expect_close(values(y), ref, 0.0, 0.0, "embedding rows");
  check_grads(emb, [&](const mf::Tensor& i) { return emb(i); }, idx, {2, 5, 3});
}

TEST(Layers, LayerNormMatchesReference) {
  mf::LayerNorm ln(7, 1e-5);
  ln.to(mf::DType::Float64);
  // Non-trivial affine parameters so that weight and bias are exercised.
  {
    mf::NoGradGuard g;
    ln.weight.copy_(normal_f64({7}, 3));
    ln.bias.copy_(normal_f64({7}, 4));
  }
  const mf::Tensor x = normal_f64({3, 5, 7}, 5, 2.0);
  mftest::expect_close(
      values(ln(x)),
      mftest::layer_norm_ref(values(x), values(ln.weight), values(ln.bias), 15, 7, 1e-5), 1e-12,
      1e-12, "layer_norm");
  mf::LayerNorm nob(7, 1e-3, false);
  EXPECT_FALSE(nob.bias.defined());
  nob.to(mf::DType::Float64);
  mftest::expect_close(values(nob(x)),
                       mftest::layer_norm_ref(values(x), values(nob.weight), {}, 15, 7, 1e-3),
                       1e-12, 1e-12, "layer_norm no bias");
  check_grads(ln, [&](const mf::Tensor& t) { return ln(t); }, normal_f64({2, 7}, 6), {2, 7});
}

TEST(Layers, RMSNormMatchesReference) {
  mf::RMSNorm rn(7);
  rn.to(mf::DType::Float64);
  {
    mf::NoGradGuard g;
    rn.weight.copy_(normal_f64({7}, 7));
  }
  const mf::Tensor x = normal_f64({5, 7}, 8);
  // float64's default eps is its machine epsilon.
  mftest::expect_close(values(rn(x)),
                       mftest::rms_norm_ref(values(x), values(rn.weight), 5, 7,
                                            std::numeric_limits<double>::epsilon()),
                       1e-12, 1e-12, "rms_norm");
  check_grads(rn, [&](const mf::Tensor& t) { return rn(t); }, normal_f64({2, 7}, 9), {2, 7});
}

TEST(Layers, DropoutTrainAndEval) {
  mf::manual_seed(3);
  mf::Dropout drop(0.5);
  const mf::Tensor x = mf::ones({1001}, {.dtype = mf::DType::Float64});
  int64_t kept = 0;
  for (double v : values(drop(x))) {
    EXPECT_TRUE(v == 0.0 || v == 2.0) << v;
    kept += v != 0.0;
  }
  // Binomial(1001, 0.5): 5 standard deviations is about 80.
  EXPECT_NEAR(static_cast<double>(kept), 500.5, 80.0);
  drop.eval();
  EXPECT_FALSE(drop.is_training());
  EXPECT_TRUE(drop(x).is_same(x));
  mftest::expect_error([] { mf::Dropout(1.5); }, {"Dropout", "p must be in [0, 1]", "1.5"});
}

TEST(Layers, MLPMatchesReference) {
  mf::MLP mlp(5);
  EXPECT_EQ(mlp.c_fc->weight.sizes(), (mf::Shape{20, 5}));
  EXPECT_EQ(mlp.c_proj->weight.sizes(), (mf::Shape{5, 20}));
  mlp.to(mf::DType::Float64);
  const mf::Tensor x = normal_f64({2, 3, 5}, 10);
  mftest::expect_close(values(mlp(x)),
                       mftest::mlp_ref(values(x), values(mlp.c_fc->weight), values(mlp.c_fc->bias),
                                       values(mlp.c_proj->weight), values(mlp.c_proj->bias), 6, 5),
                       1e-12, 1e-12, "mlp");
}

TEST(Layers, MLPGradcheck) {
  mf::MLP mlp(2);
  mlp.to(mf::DType::Float64);
  check_grads(mlp, [&](const mf::Tensor& t) { return mlp(t); }, normal_f64({3, 2}, 11), {3, 2});
}

TEST(Layers, BadSizes) {
  mftest::expect_error([] { mf::Linear(0, 3); }, {"Linear", "positive", "0"});
  mf::Linear lin(5, 3);
  mftest::expect_error([&] { lin(mf::zeros({2, 4})); }, {"linear", "[2, 4]", "[3, 5]"});
}
