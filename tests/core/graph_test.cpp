#include <random>

#include "core/fake.h"
#include "core/graph.h"
#include "test_util.h"

namespace mf = microflex;
using mf::graph::GraphModule;

namespace {

mf::Tensor random_tensor(const mf::Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  std::vector<double> v(static_cast<size_t>(mf::shape_numel(s)));
  for (auto& x : v) x = u(gen);
  return mf::from_vector(v, s);
}

}  // namespace

TEST(Graph, TracePrintsGoldenString) {
  mf::Tensor x = random_tensor({4, 8}, 1).to(mf::DType::Float32);
  mf::Tensor b = random_tensor({8}, 2).to(mf::DType::Float32);
  GraphModule gm = mf::graph::trace(
      [](const mf::TensorList& in) {
        mf::Tensor y = in[0] * in[1] + 1.0;
        return mf::TensorList{y.sum({1})};
      },
      {x, b});
  EXPECT_EQ(gm.to_string(),
            "graph(%0: f32[4,8], %1: f32[8]):\n"
            "  %2 = mul(%0, %1)  # f32[4,8]\n"
            "  %4 = add(%2, 1.0)  # f32[4,8]\n"
            "  %5 = sum(%4, dims=[1], keepdim=false)  # f32[4]\n"
            "  return (%5)\n");
}

TEST(Graph, RerunMatchesEagerOnFreshInputs) {
  auto fn = [](const mf::TensorList& in) {
    mf::Tensor t = in[0].t();  // a view
    mf::Tensor y = (t / (in[1] + 3.0)) - in[1] * 2.0;
    return mf::TensorList{y, y.sum({0}, true)};
  };
  GraphModule gm = mf::graph::trace(fn, {random_tensor({3, 5}, 3), random_tensor({3}, 4)});
  for (uint32_t seed = 10; seed < 13; ++seed) {
    mf::TensorList in{random_tensor({3, 5}, seed), random_tensor({3}, seed + 100)};
    mf::TensorList eager = fn(in);
    mf::TensorList replay = gm.run(in);
    ASSERT_EQ(replay.size(), 2u);
    mftest::expect_close(replay[0], eager[0], 0, 0, "output 0");
    mftest::expect_close(replay[1], eager[1], 0, 0, "output 1");
  }
}

TEST(Graph, CapturedTensorsAreLiftedInStableOrder) {
  mf::Tensor c1 = random_tensor({4}, 5), c2 = random_tensor({4}, 6);
  auto fn = [&](const mf::TensorList& in) { return mf::TensorList{(in[0] * c2) + c1}; };
  GraphModule gm = mf::graph::trace(fn, {random_tensor({4}, 7)});
  ASSERT_EQ(gm.captured().size(), 2u);
  EXPECT_TRUE(gm.captured()[0].is_same(c2));  // first use first
  EXPECT_TRUE(gm.captured()[1].is_same(c1));
  EXPECT_NE(gm.to_string().find("%1: f64[4] (captured)"), std::string::npos) << gm.to_string();
  mf::Tensor x = random_tensor({4}, 8);
  mftest::expect_close(gm.run({x})[0], fn({x})[0], 0, 0);
}

TEST(Graph, RunsUnderFakeMode) {
  GraphModule gm = mf::graph::trace(
      [](const mf::TensorList& in) { return mf::TensorList{(in[0] + in[1]).sum({0})}; },
      {random_tensor({6, 2}, 1), random_tensor({2}, 2)});
  mf::FakeModeGuard fake;
  mf::TensorList out = gm.run({mf::empty({6, 2}, {.dtype = mf::DType::Float64}),
                               mf::empty({2}, {.dtype = mf::DType::Float64})});
  EXPECT_TRUE(out[0].is_fake());
  EXPECT_EQ(out[0].sizes(), (mf::Shape{2}));
}

TEST(Graph, JointGraphGradientsEqualAutograd) {
  mf::Tensor w = random_tensor({5}, 21);
  w.requires_grad_();
  auto fn = [&](const mf::TensorList& in) {
    mf::Tensor y = (in[0] * w) / (in[1] * in[1] + 1.0);
    return mf::TensorList{y.sum()};
  };
  mf::Tensor a = random_tensor({3, 5}, 22), b = random_tensor({5}, 23);
  a.requires_grad_();
  b.requires_grad_();
  GraphModule joint = mf::graph::trace_joint(fn, {a, b});
  // Outputs: loss, d/da, d/db, d/dw (w is captured and requires grad).
  mf::TensorList out = joint.run({a, b});
  ASSERT_EQ(out.size(), 4u);
  mf::Tensor loss = fn({a, b})[0];
  loss.backward();
  mftest::expect_close(out[0], loss.detach(), 1e-12, 1e-12, "loss");
  mftest::expect_close(out[1], a.grad(), 1e-12, 1e-12, "da");
  mftest::expect_close(out[2], b.grad(), 1e-12, 1e-12, "db");
  mftest::expect_close(out[3], w.grad(), 1e-12, 1e-12, "dw");
}

TEST(Graph, DotOutputNamesEveryNode) {
  GraphModule gm =
      mf::graph::trace([](const mf::TensorList& in) { return mf::TensorList{in[0] * in[0]}; },
                       {random_tensor({2}, 1)});
  const std::string dot = gm.graph().to_dot();
  EXPECT_NE(dot.find("digraph"), std::string::npos);
  EXPECT_NE(dot.find("mul"), std::string::npos);
}

TEST(Graph, RunChecksInputs) {
  GraphModule gm =
      mf::graph::trace([](const mf::TensorList& in) { return mf::TensorList{in[0] * in[0]}; },
                       {random_tensor({2}, 1)});
  mftest::expect_error([&] { gm.run({random_tensor({3}, 1)}); },
                       {"GraphModule::run", "float64[3]", "float64[2]"});
  mftest::expect_error([&] { gm.run({}); }, {"takes 1 inputs"});
}
