#include "ops/higher_order.h"
#include "core/fake.h"
#include "test_util.h"

namespace mf = microflex;

namespace {
mf::Tensor vec(std::vector<double> v) {
  return mf::from_vector(v);
}
mf::Tensor flag(bool b) {
  return mf::from_vector<bool>({b}, {});
}
mf::TensorList double_it(const mf::TensorList& in) {
  return {in[0] * 2.0};
}
mf::TensorList square_it(const mf::TensorList& in) {
  return {in[0] * in[0]};
}
}  // namespace

TEST(Cond, EagerPicksTheBranch) {
  mf::Tensor x = vec({1.5, -2.0, 3.0});
  EXPECT_EQ(mf::cond(flag(true), double_it, square_it, {x})[0].to_vector<double>(),
            (std::vector<double>{3.0, -4.0, 6.0}));
  EXPECT_EQ(mf::cond(flag(false), double_it, square_it, {x})[0].to_vector<double>(),
            (std::vector<double>{2.25, 4.0, 9.0}));
}

TEST(Cond, FakeModeChecksBothBranches) {
  mf::FakeModeGuard fake;
  mf::Tensor x = mf::empty({5}, {.dtype = mf::DType::Float64});
  mf::Tensor p = mf::empty({}, {.dtype = mf::DType::Bool});
  mf::TensorList out = mf::cond(p, double_it, square_it, {x});
  EXPECT_TRUE(out[0].is_fake());
  EXPECT_EQ(out[0].sizes(), (mf::Shape{5}));
  mftest::expect_error(
      [&] {
        mf::cond(p, double_it, [](const mf::TensorList& in) { return mf::TensorList{in[0].sum()}; },
                 {x});
      },
      {"cond", "output 0", "float64[5]", "float64[]"});
}

TEST(Cond, AutogradFlowsThroughTheChosenBranch) {
  mf::Tensor x = vec({1.5, -2.0, 3.0});
  x.requires_grad_();
  mf::cond(flag(false), double_it, square_it, {x})[0].sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3.0, -4.0, 6.0}));
}

TEST(Cond, TracingEmitsOneNodeWithSubgraphs) {
  mf::Tensor bias = vec({10.0, 20.0, 30.0});
  auto fn = [&](const mf::TensorList& in) {
    return mf::cond(in[0], [&](const mf::TensorList& a) { return mf::TensorList{a[0] + bias}; },
                    square_it, {in[1]});
  };
  mf::graph::GraphModule gm = mf::graph::trace(fn, {flag(true), vec({1, 2, 3})});
  const std::string s = gm.to_string();
  EXPECT_EQ(s,
            "graph(%0: b8[], %1: f64[3], %2: f64[3] (captured)):\n"
            "  %3 = cond(%0, %1, %2, num_operands=2, captured_counts=[1, 0])  # f64[3]\n"
            "    false_fn = graph(%0: f64[3]):\n"
            "      %1 = mul(%0, %0)  # f64[3]\n"
            "      return (%1)\n"
            "    true_fn = graph(%0: f64[3], %1: f64[3] (captured)):\n"
            "      %2 = add(%0, %1)  # f64[3]\n"
            "      return (%2)\n"
            "  return (%3)\n");
  // The graph re-runs like eager, both ways.
  mf::Tensor x = vec({0.5, 1.0, -1.0});
  mftest::expect_close(gm.run({flag(true), x})[0], x + bias, 0, 0);
  mftest::expect_close(gm.run({flag(false), x})[0], x * x, 0, 0);
}

TEST(Cond, MutationIsRejected) {
  mf::Tensor captured = vec({1.0, 2.0, 3.0});
  auto mutating = [&](const mf::TensorList& in) {
    captured.add_(in[0]);
    return mf::TensorList{in[0] * 1.0};
  };
  mftest::expect_error(
      [&] {
        mf::cond(flag(true), mutating, square_it, {vec({1, 1, 1})});
      },
      {"cond: Mutations detected in true_fn", "add_", "captured tensor"});
  // The captured tensor was not touched by the check.
  EXPECT_EQ(captured.to_vector<double>(), (std::vector<double>{1.0, 2.0, 3.0}));
  auto mutating_input_view = [&](const mf::TensorList& in) {
    mf::Tensor v = in[0].slice(0, 0, 2);
    v.mul_(2.0);
    return mf::TensorList{in[0] * 1.0};
  };
  mftest::expect_error(
      [&] {
        mf::cond(flag(false), square_it, mutating_input_view, {vec({1, 1, 1})});
      },
      {"Mutations detected in false_fn", "mul_", "an input"});
}

TEST(Cond, BadPredicate) {
  mftest::expect_error([&] { mf::cond(vec({1.0}), double_it, square_it, {vec({1.0})}); },
                       {"cond: pred must be a bool tensor", "float64[1]"});
}
