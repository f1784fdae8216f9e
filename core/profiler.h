// Op-level profiler: while on, every dispatched backend kernel is counted and timed on the
// host, and CUDA ops also on the device with a pair of CUDA events on the op's stream.
// The report groups by op name and phase (forward or backward), so a training step's time
// can be split without an external profiler. See Note [Op profiler].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace microflex::profiler {

struct OpStats {
  std::string name;  // op name (+ input shapes), " (backward)" for ops the engine runs
  int64_t calls = 0;
  double host_ms = 0;    // wall time inside the backend kernel call (launch cost on CUDA)
  double device_ms = 0;  // summed event time on the device (0 for CPU ops)
};

struct ProfilerOptions {
  // Also key each row by its inputs' shapes, e.g. "matmul [8, 1024, 768] [768, 50257]".
  bool record_shapes = false;
};

// Starts collecting (clears earlier records). Nested starts are an error.
void start(const ProfilerOptions& options = {});
// Stops collecting, waits for the recorded device work and returns the per-op totals,
// largest device time first (then host time).
std::vector<OpStats> stop();
bool enabled();

// A table of the rows, with each row's share of `wall_ms` (the caller's measured span).
std::string format_table(const std::vector<OpStats>& rows, double wall_ms, size_t max_rows = 40);

// Marks ops dispatched in this scope as part of the backward pass.
class BackwardPhaseGuard {
 public:
  BackwardPhaseGuard();
  ~BackwardPhaseGuard();
  BackwardPhaseGuard(const BackwardPhaseGuard&) = delete;
  BackwardPhaseGuard& operator=(const BackwardPhaseGuard&) = delete;

 private:
  bool saved_;
};

namespace detail {
// Called by the dispatcher around a backend kernel; `device` is -1 for CPU ops.
struct Scope {
  Scope(const char* op_name, int device, const TensorList& inputs);
  ~Scope();
  int record = -1;
  int64_t start_ns = 0;
};
}  // namespace detail

}  // namespace microflex::profiler
