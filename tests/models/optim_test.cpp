// Optimizers against steps computed in the test from their formulas (AdamW with decoupled
// weight decay, SGD with momentum and nesterov), clip_grad_norm_, the cosine schedule,
// optimizer state round trips, gradient accumulation, and a tiny GPT memorising a sequence.
#include "models/optim.h"

#include "models/gpt.h"
#include "models/model_reference.h"
#include "test_util.h"

namespace mf = microflex;
using mftest::values;

namespace {

mf::Tensor f64(const std::vector<double>& v) {
  return mf::from_vector(v, {static_cast<int64_t>(v.size())}, {.dtype = mf::DType::Float64});
}

mf::Tensor param(const std::vector<double>& v, const mf::Shape& s) {
  mf::Tensor p = mf::from_vector(v, s, {.dtype = mf::DType::Float64});
  p.requires_grad_();
  return p;
}

void set_grad(mf::Tensor& p, const std::vector<double>& g) {
  p.set_grad(mf::from_vector(g, p.sizes(), {.dtype = mf::DType::Float64}));
}

}  // namespace

TEST(Optim, AdamWTwoStepsByHand) {
  // A [1, 3] matrix (decayed) and a 3-element bias (not decayed), two steps.
  mf::Tensor w = param({0.5, -1.0, 2.0}, {1, 3});
  mf::Tensor b = param({0.5, -1.0, 2.0}, {3});
  const mf::AdamWOptions o{
      .lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.5};
  mf::AdamW opt({{"w", w}, {"b", b}}, o);
  EXPECT_TRUE(opt.decays(0));
  EXPECT_FALSE(opt.decays(1));
  const std::vector<std::vector<double>> grads{{0.3, -0.2, 1.5}, {-0.1, 0.4, 0.25}};
  std::vector<double> pw{0.5, -1.0, 2.0}, pb = pw, m(3, 0.0), v(3, 0.0);
  for (int t = 1; t <= 2; ++t) {
    set_grad(w, grads[t - 1]);
    set_grad(b, grads[t - 1]);
    opt.step();
    const double bc1 = 1 - std::pow(0.9, t), bc2 = 1 - std::pow(0.99, t);
    for (int i = 0; i < 3; ++i) {
      const double g = grads[t - 1][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.99 * v[i] + 0.01 * g * g;
      const double upd = 0.1 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
      pw[i] = pw[i] * (1 - 0.1 * 0.5) - upd;
      pb[i] = pb[i] - upd;
    }
    // float64 state and updates: only rounding differs.
    mftest::expect_close(values(w), pw, 1e-14, 1e-13, "w step " + std::to_string(t));
    mftest::expect_close(values(b), pb, 1e-14, 1e-13, "b step " + std::to_string(t));
  }
  EXPECT_EQ(opt.step_count(), 2);
  // The state for checkpoints.
  const mf::NamedTensors sd = opt.state_dict();
  ASSERT_EQ(sd.size(), 5u);
  EXPECT_EQ(sd[0].first, "step");
  EXPECT_EQ(sd[0].second.item<int64_t>(), 2);
  EXPECT_EQ(sd[1].first, "exp_avg.w");
  EXPECT_EQ(sd[2].first, "exp_avg_sq.w");
  EXPECT_EQ(sd[3].first, "exp_avg.b");
  mftest::expect_close(values(sd[3].second), m, 1e-15, 1e-14, "exp_avg");
  mftest::expect_close(values(sd[4].second), v, 1e-15, 1e-14, "exp_avg_sq");
}

TEST(Optim, AdamWStateRoundTripContinuesIdentically) {
  auto make = [] { return param({1.0, 2.0, -3.0, 0.5}, {2, 2}); };
  mf::Tensor a = make(), b = make();
  mf::AdamW oa({{"p", a}}, {.lr = 0.05});
  set_grad(a, {0.1, -0.3, 0.2, 0.4});
  oa.step();
  // b joins at the same parameter values with the state of a.
  {
    mf::NoGradGuard g;
    b.copy_(a);
  }
  mf::AdamW ob({{"p", b}}, {.lr = 0.05});
  ob.load_state_dict(oa.state_dict());
  EXPECT_EQ(ob.step_count(), 1);
  for (mf::Tensor* p : {&a, &b}) set_grad(*p, {0.3, 0.1, -0.2, 0.05});
  oa.step();
  ob.step();
  EXPECT_EQ(values(a), values(b));
  // Errors name the entry and both shapes.
  mf::NamedTensors bad = oa.state_dict();
  bad[1].second = mf::zeros({3}, {.dtype = mf::DType::Float64});
  mftest::expect_error(
      [&] { ob.load_state_dict(bad); },
      {"optimizer load_state_dict", "'exp_avg.p' is [3] float64", "[2, 2] float64"});
  mftest::expect_error(
      [&] {
        ob.load_state_dict({{"step", mf::scalar_tensor(1, {.dtype = mf::DType::Int64})},
                            {"exp_avg.q", mf::zeros({2, 2})}});
      },
      {"unexpected key 'exp_avg.q'"});
  mftest::expect_error([&] { ob.load_state_dict({}); }, {"missing key 'step'"});
  const mf::NamedTensors full = oa.state_dict();
  const mf::NamedTensors half(full.begin(), full.begin() + 2);
  mftest::expect_error([&] { ob.load_state_dict(half); }, {"incomplete state for parameter 'p'"});
}

TEST(Optim, SGDMomentumByHand) {
  mf::Tensor p = param({1.0, -2.0, 0.5}, {3});
  mf::SGD opt({{"p", p}}, {.lr = 0.1, .momentum = 0.9});
  const std::vector<std::vector<double>> grads{{0.5, 1.0, -1.0}, {0.2, -0.4, 0.3}, {1.0, 0.0, 0.1}};
  std::vector<double> ref{1.0, -2.0, 0.5}, buf(3, 0.0);
  for (size_t t = 0; t < grads.size(); ++t) {
    set_grad(p, grads[t]);
    opt.step();
    for (int i = 0; i < 3; ++i) {
      buf[i] = t == 0 ? grads[t][i] : 0.9 * buf[i] + grads[t][i];
      ref[i] -= 0.1 * buf[i];
    }
    mftest::expect_close(values(p), ref, 1e-15, 1e-14, "sgd step " + std::to_string(t));
  }
  EXPECT_EQ(opt.state_dict()[1].first, "momentum_buffer.p");
  mftest::expect_close(values(opt.state_dict()[1].second), buf, 1e-15, 1e-14, "buffer");

  // Nesterov with weight decay, one step from a zero buffer: g' = g + wd p, p -= lr (g' + m g').
  mf::Tensor q = param({1.0, -2.0}, {2});
  mf::SGD nes({{"q", q}}, {.lr = 0.1, .momentum = 0.5, .weight_decay = 0.1, .nesterov = true});
  set_grad(q, {0.5, 0.5});
  nes.step();
  const double g0 = 0.5 + 0.1 * 1.0, g1 = 0.5 + 0.1 * -2.0;
  mftest::expect_close(values(q), {1.0 - 0.1 * 1.5 * g0, -2.0 - 0.1 * 1.5 * g1}, 1e-15, 1e-14,
                       "nesterov");
  // Parameters without a gradient are left alone.
  q.zero_grad();
  const auto before = values(q);
  nes.step();
  EXPECT_EQ(values(q), before);
}

TEST(Optim, ClipGradNorm) {
  mf::Tensor a = param({0, 0, 0}, {3}), b = param({0, 0}, {1, 2}), c = param({0}, {1});
  set_grad(a, {3.0, 0.0, -4.0});
  set_grad(b, {12.0, 0.0});
  // total = sqrt(9 + 16 + 144) = 13; c has no gradient.
  const mf::Tensor total = mf::clip_grad_norm_({a, b, c}, 6.5);
  EXPECT_EQ(total.dim(), 0);
  EXPECT_EQ(total.dtype(), mf::DType::Float64);
  EXPECT_NEAR(total.item<double>(), 13.0, 1e-12);
  const double s = 6.5 / (13.0 + 1e-6);
  mftest::expect_close(values(a.grad()), {3 * s, 0, -4 * s}, 1e-15, 1e-14, "a");
  mftest::expect_close(values(b.grad()), {12 * s, 0}, 1e-15, 1e-14, "b");
  // Under the limit the gradients are unchanged.
  const auto before = values(a.grad());
  EXPECT_NEAR(mf::clip_grad_norm_({a, b}, 100.0).item<double>(), 6.5, 1e-5);
  EXPECT_EQ(values(a.grad()), before);
  mftest::expect_error([&] { mf::clip_grad_norm_({a}, 0.0); },
                       {"clip_grad_norm_", "max_norm", "0"});
}

TEST(Optim, CosineSchedule) {
  const mf::CosineSchedule s{
      .max_lr = 1e-3, .min_lr = 1e-4, .warmup_iters = 10, .decay_iters = 110};
  EXPECT_DOUBLE_EQ(s(0), 1e-3 * 1.0 / 11.0);   // warm-up start
  EXPECT_DOUBLE_EQ(s(9), 1e-3 * 10.0 / 11.0);  // last warm-up step
  EXPECT_DOUBLE_EQ(s(10), 1e-3);               // end of warm-up: the peak
  EXPECT_DOUBLE_EQ(s(60), 5.5e-4);             // halfway through the cosine: the midpoint
  EXPECT_NEAR(s(35), 1e-4 + 0.5 * (1 + std::cos(M_PI * 0.25)) * 9e-4, 1e-18);
  EXPECT_DOUBLE_EQ(s(110), 1e-4);
  EXPECT_DOUBLE_EQ(s(500), 1e-4);
}

TEST(Optim, GradientAccumulationMatchesFullBatch) {
  // Two micro-batches with loss / 2 accumulate to the gradient of the full-batch mean.
  mf::manual_seed(7);
  mf::GPTConfig cfg;
  cfg.vocab_size = 7;
  cfg.block_size = 5;
  cfg.n_layer = 1;
  cfg.n_head = 2;
  cfg.n_embd = 4;
  mf::GPT m(cfg);
  m.to(mf::DType::Float64);
  const mf::Tensor x = mf::from_vector<int64_t>({1, 2, 3, 4, 5, 6, 0, 1, 2, 3}, {2, 5});
  const mf::Tensor y = mf::from_vector<int64_t>({2, 3, 4, 5, 6, 0, 1, 2, 3, 4}, {2, 5});
  m.forward(x, y).loss.backward();
  std::vector<std::vector<double>> full;
  for (const mf::Tensor& p : m.parameters()) full.push_back(values(p.grad()));
  m.zero_grad();
  for (int64_t micro = 0; micro < 2; ++micro)
    (m.forward(x.narrow(0, micro, 1), y.narrow(0, micro, 1)).loss / 2.0).backward();
  const mf::TensorList ps = m.parameters();
  for (size_t i = 0; i < ps.size(); ++i)
    mftest::expect_close(values(ps[i].grad()), full[i], 1e-14, 1e-10,
                         m.named_parameters()[i].first);
}

TEST(Optim, TinyGPTMemorisesARepeatingSequence) {
  // V = 64, T = 16, 2 layers, 2 heads, 32 wide, batch 2, 30 AdamW steps with warm-up and
  // cosine decay and clipping; the sequence repeats a period of 8 distinct tokens, so each
  // next token is determined by the current one.
  mf::manual_seed(1337);
  mf::GPTConfig cfg;
  cfg.vocab_size = 64;
  cfg.block_size = 16;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_embd = 32;
  mf::GPT m(cfg);
  const std::vector<int64_t> period{3, 41, 17, 8, 60, 25, 33, 12};
  std::vector<int64_t> xs, ys;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 16; ++t) {
      xs.push_back(period[(b + t) % 8]);
      ys.push_back(period[(b + t + 1) % 8]);
    }
  const mf::Tensor x = mf::from_vector(xs, {2, 16}), y = mf::from_vector(ys, {2, 16});
  mf::AdamW opt(m.named_parameters(),
                {.lr = 2e-2, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1});
  const mf::CosineSchedule sched{
      .max_lr = 2e-2, .min_lr = 2e-3, .warmup_iters = 3, .decay_iters = 30};
  double first = 0, last = 0;
  for (int64_t it = 0; it < 30; ++it) {
    opt.set_lr(sched(it));
    const mf::Tensor loss = m.forward(x, y).loss;
    if (it == 0) first = loss.item<double>();
    last = loss.item<double>();
    loss.backward();
    mf::clip_grad_norm_(m.parameters(), 1.0);
    opt.step();
    opt.zero_grad();
  }
  // Starts near ln(64) = 4.16 (small init) and ends memorised: 0.017 with this seed (0.02 to
  // 0.05 with seeds 1-3), so 0.1 leaves room for summation-order changes.
  EXPECT_NEAR(first, std::log(64.0), 0.3);
  EXPECT_LT(last, 0.1) << "first " << first;
}
