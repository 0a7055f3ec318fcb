// Diagnostics for people: one line per message, written with a single write(2) to stderr.
// (Tracing of layer resolution is separate: see trace.h.)
#pragma once
#include <fmt/format.h>

#include <string_view>

namespace strata {

void log_line(std::string_view line);

template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
  log_line(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace strata
