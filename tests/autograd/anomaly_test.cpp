// Anomaly mode (Note [Anomaly mode] in core/anomaly.h): the first op or backward node
// that produces a NaN or Inf raises an Error naming it; off, nothing is checked.
#include <cmath>
#include <limits>

#include "core/anomaly.h"
#include "test_util.h"

namespace mf = microflex;
using mf::Tensor;

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}

TEST(AnomalyMode, OffByDefault) {
  EXPECT_FALSE(mf::anomaly_mode_enabled());
  Tensor y = mf::log(mf::from_vector<double>({-1.0, 0.0}));
  EXPECT_TRUE(std::isnan(y.to_vector<double>()[0]));
}

TEST(AnomalyMode, ForwardNaNNamesTheOp) {
  mf::AnomalyModeGuard anomaly;
  EXPECT_TRUE(mf::anomaly_mode_enabled());
  Tensor x = mf::from_vector<double>({1.0, -2.0, 3.0}, {1, 3});
  Tensor ok = mf::exp(x) * 2.0;  // finite: passes
  EXPECT_EQ(ok.sizes(), (mf::Shape{1, 3}));
  mftest::expect_error([&] { mf::sqrt(x); },
                       {"anomaly mode: op 'sqrt' produced NaN in output 0 of shape [1, 3]"});
}

TEST(AnomalyMode, ForwardInfAndTheNaNOnlySetting) {
  Tensor zero = mf::zeros({2}, {.dtype = mf::DType::Float32});
  {
    mf::AnomalyModeGuard anomaly;
    mftest::expect_error([&] { mf::log(zero); },
                         {"anomaly mode: op 'log' produced Inf in output 0 of shape [2]"});
  }
  {
    // -inf from masking is allowed when only NaN is checked.
    mf::AnomalyModeGuard anomaly(/*check_inf=*/false);
    EXPECT_EQ(mf::log(zero).to_vector<double>()[0], -kInf);
    mftest::expect_error([&] { mf::sub(mf::log(zero), mf::log(zero)); }, {"op 'sub'", "NaN"});
  }
  EXPECT_FALSE(mf::anomaly_mode_enabled());
}

TEST(AnomalyMode, OutputIndexOfMultiOutputOps) {
  mf::AnomalyModeGuard anomaly;
  Tensor x = mf::from_vector<double>({1.0, std::nan(""), 3.0});
  // max over a dim (op max_dim) returns (values, indices): the NaN is in output 0;
  // integer outputs are not scanned.
  mftest::expect_error([&] { mf::max(x, 0); }, {"op 'max_dim'", "NaN in output 0 of shape []"});
}

TEST(AnomalyMode, BackwardNaNNamesTheBackwardNode) {
  // sqrt at 0 is finite forward (0) but its gradient 0.5 / sqrt(0) is Inf: the error
  // names the op inside the backward formula and the backward node it ran for.
  Tensor x = mf::from_vector<double>({0.0, 4.0}).requires_grad_();
  Tensor y;
  {
    mf::AnomalyModeGuard anomaly;
    y = mf::sum(mf::sqrt(x));
    try {
      y.backward();
      ADD_FAILURE() << "expected an anomaly error";
    } catch (const mf::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("anomaly mode"), std::string::npos) << msg;
      EXPECT_NE(msg.find("Inf"), std::string::npos) << msg;
      EXPECT_NE(msg.find("backward of 'sqrt'"), std::string::npos) << msg;
    }
  }
  // Without the guard the same backward runs and gives inf.
  x.zero_grad();
  mf::sum(mf::sqrt(x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>()[0], kInf);
}

TEST(AnomalyMode, BackwardNodeGradientCheck) {
  // A NaN gradient fed into backward propagates through mul's backward, which is named.
  Tensor a = mf::from_vector<double>({1.0, 2.0}).requires_grad_();
  Tensor b = a * 3.0;
  mf::AnomalyModeGuard anomaly(/*check_inf=*/false);
  mftest::expect_error(
      [&] {
        b.backward(mf::from_vector<double>({std::nan(""), 1.0}));
      },
      {"anomaly mode", "NaN", "backward of 'mul'"});
}

TEST(AnomalyMode, FakeTensorsAreNotScanned) {
  mf::AnomalyModeGuard anomaly;
  mf::FakeModeGuard fake;
  Tensor y = mf::log(mf::zeros({4}));
  EXPECT_TRUE(y.is_fake());
}
