#include "strata/log.h"

#include <unistd.h>

#include <string>

namespace strata {

void log_line(std::string_view line) {
  std::string out = "strata-fs: ";
  out.append(line);
  out.push_back('\n');
  // One write so that concurrent messages never interleave mid-line.
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace strata
