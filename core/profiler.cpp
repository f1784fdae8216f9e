// Op profiler (Note [Op profiler]).
#include "core/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>

#include "core/error.h"

#ifdef MICROFLEX_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/device.h"
#include "kernels/cuda/cuda_utils.h"
#endif

namespace microflex::profiler {

// Note [Op profiler]
// The dispatcher opens a detail::Scope around each backend kernel call when the profiler
// is on. The scope records the host time of the call and, for a CUDA op, a start and an
// end event on the device's stream; events are pooled and only read in stop(), after the
// stream is synchronized, so profiling adds no synchronization inside the measured span.
// Composite ops (linear, the autograd formulas) are not rows themselves: their time is in
// the backend kernels they dispatch. Single-threaded use: records are guarded by a mutex,
// but the phase flag is per thread.

namespace {

using Clock = std::chrono::steady_clock;

struct Record {
  std::string key;
  int device = -1;
  double host_ms = 0;
  int event = -1;  // index of the start event; end is event + 1
};

struct State {
  std::mutex mu;
  std::atomic<bool> on{false};  // read without the lock on every dispatch
  ProfilerOptions options;
  std::vector<Record> records;
#ifdef MICROFLEX_WITH_CUDA
  std::vector<cudaEvent_t> events;
  size_t events_used = 0;
#endif
};

State& state() {
  static State* s = new State();
  return *s;
}

thread_local bool t_backward = false;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool enabled() {
  return state().on;
}

void start(const ProfilerOptions& options) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  MF_CHECK(!s.on, "profiler::start: the profiler is already running");
  s.options = options;
  s.records.clear();
#ifdef MICROFLEX_WITH_CUDA
  s.events_used = 0;
#endif
  s.on = true;
}

std::vector<OpStats> stop() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  MF_CHECK(s.on, "profiler::stop: the profiler is not running");
  s.on = false;
  std::map<std::string, OpStats> by_key;
  for (const Record& r : s.records) {
    OpStats& st = by_key[r.key];
    st.name = r.key;
    st.calls += 1;
    st.host_ms += r.host_ms;
#ifdef MICROFLEX_WITH_CUDA
    if (r.event >= 0) {
      MF_CUDA_CHECK(cudaEventSynchronize(s.events[r.event + 1]));
      float ms = 0;
      MF_CUDA_CHECK(cudaEventElapsedTime(&ms, s.events[r.event], s.events[r.event + 1]));
      st.device_ms += ms;
    }
#endif
  }
  std::vector<OpStats> rows;
  for (auto& [_, st] : by_key) rows.push_back(st);
  std::sort(rows.begin(), rows.end(), [](const OpStats& a, const OpStats& b) {
    if (a.device_ms != b.device_ms) return a.device_ms > b.device_ms;
    return a.host_ms > b.host_ms;
  });
  return rows;
}

std::string format_table(const std::vector<OpStats>& rows, double wall_ms, size_t max_rows) {
  double host = 0, dev = 0;
  int64_t calls = 0;
  for (const OpStats& r : rows) {
    host += r.host_ms;
    dev += r.device_ms;
    calls += r.calls;
  }
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-40s %8s %11s %11s %7s\n", "op", "calls", "host ms",
                "device ms", "% wall");
  out += line;
  for (size_t i = 0; i < rows.size() && i < max_rows; ++i) {
    const OpStats& r = rows[i];
    std::snprintf(line, sizeof line, "%-40s %8lld %11.3f %11.3f %6.1f%%\n", r.name.c_str(),
                  static_cast<long long>(r.calls), r.host_ms, r.device_ms,
                  wall_ms > 0 ? 100.0 * std::max(r.device_ms, r.host_ms) / wall_ms : 0.0);
    out += line;
  }
  if (rows.size() > max_rows) {
    std::snprintf(line, sizeof line, "(%zu more ops)\n", rows.size() - max_rows);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-40s %8lld %11.3f %11.3f   wall %.3f ms\n", "total",
                static_cast<long long>(calls), host, dev, wall_ms);
  out += line;
  return out;
}

BackwardPhaseGuard::BackwardPhaseGuard() : saved_(t_backward) {
  t_backward = true;
}
BackwardPhaseGuard::~BackwardPhaseGuard() {
  t_backward = saved_;
}

namespace detail {

Scope::Scope(const char* op_name, int device, const TensorList& inputs) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.on) return;
  Record r;
  r.key = op_name;
  if (s.options.record_shapes)
    for (const Tensor& t : inputs) r.key += " " + (t.defined() ? shape_str(t.sizes()) : "-");
  if (t_backward) r.key += " (backward)";
  r.device = device;
#ifdef MICROFLEX_WITH_CUDA
  if (device >= 0) {
    while (s.events.size() < s.events_used + 2) {
      cudaEvent_t e;
      MF_CUDA_CHECK(cudaEventCreate(&e));
      s.events.push_back(e);
    }
    r.event = static_cast<int>(s.events_used);
    s.events_used += 2;
    MF_CUDA_CHECK(
        cudaEventRecord(s.events[r.event], static_cast<cudaStream_t>(cuda::stream(device))));
  }
#endif
  record = static_cast<int>(s.records.size());
  s.records.push_back(std::move(r));
  start_ns = now_ns();
}

Scope::~Scope() {
  if (record < 0) return;
  const double ms = 1e-6 * static_cast<double>(now_ns() - start_ns);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (record >= static_cast<int>(s.records.size())) return;
  Record& r = s.records[record];
  r.host_ms = ms;
#ifdef MICROFLEX_WITH_CUDA
  // Unchecked: a destructor must not throw; a failed record shows up in stop().
  if (r.event >= 0)
    cudaEventRecord(s.events[r.event + 1], static_cast<cudaStream_t>(cuda::stream(r.device)));
#endif
}

}  // namespace detail

}  // namespace microflex::profiler
