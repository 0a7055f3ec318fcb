#include "strata/trace.h"

#include <sys/time.h>
#include <unistd.h>

#include <fmt/format.h>

namespace strata {

namespace {

constexpr std::pair<TraceCategory, const char*> kNames[] = {
    {kTraceLookup, "lookup"},     {kTraceReaddir, "readdir"}, {kTraceOpen, "open"},
    {kTraceCopyup, "copyup"},     {kTraceWhiteout, "whiteout"}, {kTraceOpaque, "opaque"},
    {kTraceRename, "rename"},     {kTraceXattr, "xattr"},     {kTraceError, "error"},
};

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += char(c);
    }
  }
  out += '"';
}

}  // namespace

std::expected<uint32_t, std::string> parse_trace_categories(const std::string& text) {
  uint32_t mask = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t plus = text.find('+', pos);
    std::string word = text.substr(pos, plus == std::string::npos ? std::string::npos : plus - pos);
    pos = plus == std::string::npos ? text.size() + 1 : plus + 1;
    if (word.empty()) continue;
    if (word == "all") {
      mask |= kTraceAll;
      continue;
    }
    bool known = false;
    for (auto [cat, name] : kNames)
      if (word == name) {
        mask |= cat;
        known = true;
      }
    if (!known)
      return std::unexpected(fmt::format(
          "trace '{}': unknown category '{}' (known: all, lookup, readdir, open, copyup, whiteout, "
          "opaque, rename, xattr, error)", text, word));
  }
  return mask;
}

const char* trace_category_name(TraceCategory category) {
  for (auto [cat, name] : kNames)
    if (cat == category) return name;
  return "?";
}

void Tracer::emit(TraceCategory category, std::string_view message, std::vector<TraceField> fields) {
  std::string line;
  if (json_) {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    line = fmt::format("{{\"time\":{}.{:06},\"event\":\"{}\",\"msg\":", tv.tv_sec, tv.tv_usec,
                       trace_category_name(category));
    json_string(line, message);
    for (auto& f : fields) {
      line += ',';
      json_string(line, f.key);
      line += ':';
      if (f.numeric) line += f.value;
      else json_string(line, f.value);
    }
    line += "}\n";
  } else {
    line = fmt::format("[{}] {}\n", trace_category_name(category), message);
  }
  write_raw(line);
}

void Tracer::write_raw(std::string_view text) const {
  int fd = sink_ ? sink_.get() : STDERR_FILENO;
  [[maybe_unused]] ssize_t n = ::write(fd, text.data(), text.size());
}

}  // namespace strata
