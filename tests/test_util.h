// Helpers for tests: float64 references and comparisons with a stated tolerance.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "microflex/microflex.h"

namespace mftest {

// Expects every element of `actual` within atol + rtol*|expected| of `expected`.
inline void expect_close(const std::vector<double>& actual, const std::vector<double>& expected,
                         double atol, double rtol, const std::string& what = "") {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double tol = atol + rtol * std::abs(expected[i]);
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(actual[i])) << what << " element " << i;
      continue;
    }
    if (std::isinf(expected[i])) {
      EXPECT_EQ(actual[i], expected[i]) << what << " element " << i;
      continue;
    }
    ASSERT_LE(std::abs(actual[i] - expected[i]), tol)
        << what << " element " << i << ": " << actual[i] << " vs " << expected[i];
  }
}

inline void expect_close(const microflex::Tensor& actual, const microflex::Tensor& expected,
                         double atol, double rtol, const std::string& what = "") {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  expect_close(actual.to_vector<double>(), expected.to_vector<double>(), atol, rtol, what);
}

// Runs `f`, expects microflex::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected microflex::Error";
  } catch (const microflex::Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  }
}

}  // namespace mftest
