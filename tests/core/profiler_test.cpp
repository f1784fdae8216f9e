// The op profiler counts dispatched backend kernels per op and phase.
#include <gtest/gtest.h>

#include <microflex/microflex.h>

#include "test_util.h"

namespace mf = microflex;

namespace {

const mf::profiler::OpStats* find_row(const std::vector<mf::profiler::OpStats>& rows,
                                      const std::string& name) {
  for (const auto& r : rows)
    if (r.name == name) return &r;
  return nullptr;
}

TEST(Profiler, CountsForwardAndBackwardOpsSeparately) {
  mf::Tensor a = mf::randn({5, 7}).requires_grad_();
  mf::Tensor b = mf::randn({5, 7});
  mf::profiler::start();
  EXPECT_TRUE(mf::profiler::enabled());
  mf::Tensor y = (a * b + a).sum();
  y.backward();
  const auto rows = mf::profiler::stop();
  EXPECT_FALSE(mf::profiler::enabled());

  const auto* mul = find_row(rows, "mul");
  ASSERT_NE(mul, nullptr);
  EXPECT_EQ(mul->calls, 1);
  EXPECT_GE(mul->host_ms, 0.0);
  EXPECT_EQ(mul->device_ms, 0.0);  // CPU ops have no device time
  ASSERT_NE(find_row(rows, "add"), nullptr);
  ASSERT_NE(find_row(rows, "sum"), nullptr);
  // d(a*b)/da = grad * b runs a mul inside the backward.
  const auto* mul_bwd = find_row(rows, "mul (backward)");
  ASSERT_NE(mul_bwd, nullptr);
  EXPECT_GE(mul_bwd->calls, 1);

  const std::string table = mf::profiler::format_table(rows, 1.0);
  EXPECT_NE(table.find("mul (backward)"), std::string::npos);
  EXPECT_NE(table.find("total"), std::string::npos);
}

TEST(Profiler, OffByDefaultAndRestartClears) {
  EXPECT_FALSE(mf::profiler::enabled());
  mf::profiler::start();
  mf::Tensor x = mf::randn({3}) * 2.0;
  (void)mf::profiler::stop();
  mf::profiler::start();
  const auto rows = mf::profiler::stop();
  EXPECT_TRUE(rows.empty());
}

TEST(Profiler, RecordShapesKeysRowsByInputShapes) {
  mf::Tensor a = mf::randn({5, 7}), b = mf::randn({7, 3});
  mf::profiler::start({.record_shapes = true});
  (void)mf::matmul(a, b);
  const auto rows = mf::profiler::stop();
  ASSERT_NE(find_row(rows, "matmul [5, 7] [7, 3]"), nullptr);
}

TEST(Profiler, MisuseIsAnError) {
  mftest::expect_error([] { (void)mf::profiler::stop(); }, {"profiler::stop", "not running"});
  mf::profiler::start();
  mftest::expect_error([] { mf::profiler::start(); }, {"profiler::start", "already running"});
  (void)mf::profiler::stop();
}

}  // namespace
