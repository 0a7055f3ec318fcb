// Tracing: why a path resolved the way it did, and what copy-on-write cost. One line per event,
// written whole with a single write(2), as human text or JSON lines. Categories are chosen at
// mount time; when a category is off, the check is one load and nothing is formatted.
#pragma once
#include <atomic>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/unique_fd.h"

namespace strata {

enum TraceCategory : uint32_t {
  kTraceLookup = 1u << 0,
  kTraceReaddir = 1u << 1,
  kTraceOpen = 1u << 2,
  kTraceCopyup = 1u << 3,
  kTraceWhiteout = 1u << 4,
  kTraceOpaque = 1u << 5,
  kTraceRename = 1u << 6,
  kTraceXattr = 1u << 7,
  kTraceError = 1u << 8,
  kTraceAll = (1u << 9) - 1,
};

// Parse "all" or "lookup+copyup+whiteout".
std::expected<uint32_t, std::string> parse_trace_categories(const std::string& text);
const char* trace_category_name(TraceCategory category);

// A field of an event: shown as key=value in text, as a JSON member in json.
struct TraceField {
  std::string_view key;
  std::string value;
  bool numeric = false;
};

class Tracer {
 public:
  Tracer() = default;
  Tracer(uint32_t categories, UniqueFd sink, bool json)
      : categories_(categories), sink_(std::move(sink)), json_(json) {}

  bool on(TraceCategory category) const {
    return (categories_.load(std::memory_order_relaxed) & category) != 0;
  }
  // `message` is the sentence a person reads; fields carry the same facts for machines.
  void emit(TraceCategory category, std::string_view message, std::vector<TraceField> fields);
  bool json() const { return json_; }
  // Free text (e.g. the SIGUSR1 summary) written to the trace sink, or stderr without one.
  void write_raw(std::string_view text) const;

 private:
  std::atomic<uint32_t> categories_{0};
  UniqueFd sink_;
  bool json_ = false;
};

inline TraceField field(std::string_view key, std::string value) { return {key, std::move(value), false}; }
inline TraceField field(std::string_view key, uint64_t value) { return {key, std::to_string(value), true}; }

}  // namespace strata
