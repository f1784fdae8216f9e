// Anomaly mode (Note [Anomaly mode] in core/anomaly.h): the thread-local switch and the
// scan the dispatcher and the backward engine call.
#include "core/anomaly.h"

#include <cmath>

namespace microflex {

namespace {

// 0: off, 1: NaN only, 2: NaN and Inf.
thread_local uint8_t g_anomaly = 0;

}  // namespace

AnomalyModeGuard::AnomalyModeGuard(bool check_inf) : saved_(g_anomaly) {
  g_anomaly = check_inf ? 2 : 1;
}
AnomalyModeGuard::~AnomalyModeGuard() {
  g_anomaly = saved_;
}

bool anomaly_mode_enabled() {
  return g_anomaly != 0;
}

std::string find_anomaly(const TensorList& ts, const char* what) {
  const uint8_t mode = g_anomaly;
  if (mode == 0) return {};
  // Reading the values dispatches copies (to the host, to contiguous); those must not
  // be scanned in turn.
  struct Off {
    uint8_t saved;
    Off() : saved(g_anomaly) { g_anomaly = 0; }
    ~Off() { g_anomaly = saved; }
  } off;
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    if (!t.defined() || t.is_fake() || !is_floating(t.dtype()) || t.numel() == 0) continue;
    for (double v : t.to_vector<double>()) {
      const bool nan = std::isnan(v);
      if (nan || (mode == 2 && std::isinf(v)))
        return detail::str_cat(nan ? "NaN" : "Inf", " in ", what, " ", i, " of shape ",
                               shape_str(t.sizes()));
    }
  }
  return {};
}

}  // namespace microflex
