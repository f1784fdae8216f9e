#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace microflex::log {

namespace {

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("microflex");
    const char* env = std::getenv("MICROFLEX_LOG_LEVEL");
    lg->set_level(env ? spdlog::level::from_str(env) : spdlog::level::warn);
    lg->set_pattern("[microflex %l] %v");
    return lg;
  }();
  return *l;
}

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::Trace: return spdlog::level::trace;
    case Level::Debug: return spdlog::level::debug;
    case Level::Info: return spdlog::level::info;
    case Level::Warn: return spdlog::level::warn;
    case Level::Error: return spdlog::level::err;
  }
  return spdlog::level::warn;
}

}  // namespace

bool enabled(Level level) { return logger().should_log(to_spd(level)); }
void write(Level level, const std::string& message) { logger().log(to_spd(level), message); }

}  // namespace microflex::log
