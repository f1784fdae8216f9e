// Logging for library code, through spdlog (kept out of this header so CUDA sources can
// include it). The level comes from MICROFLEX_LOG_LEVEL (trace, debug, info, warn, error,
// off; default warn). Library code never prints to stdout.
#pragma once
#include <string>

#include "core/error.h"

namespace microflex::log {

enum class Level { Trace, Debug, Info, Warn, Error };
bool enabled(Level level);
void write(Level level, const std::string& message);

template <typename... Args>
void debug(const Args&... args) {
  if (enabled(Level::Debug)) write(Level::Debug, detail::str_cat(args...));
}
template <typename... Args>
void info(const Args&... args) {
  if (enabled(Level::Info)) write(Level::Info, detail::str_cat(args...));
}
template <typename... Args>
void warn(const Args&... args) {
  if (enabled(Level::Warn)) write(Level::Warn, detail::str_cat(args...));
}

}  // namespace microflex::log
