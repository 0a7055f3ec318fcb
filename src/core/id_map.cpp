#include "strata/id_map.h"

#include <fmt/format.h>

#include <cstdlib>

namespace strata {

namespace {

constexpr uint32_t kOverflowId = 65534;

}  // namespace

std::expected<std::vector<IdRange>, std::string> IdMap::parse(const std::string& option, const std::string& text) {
  std::vector<uint32_t> numbers;
  size_t pos = text.starts_with(':') ? 1 : 0;
  while (pos <= text.size()) {
    size_t colon = text.find(':', pos);
    std::string part = text.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    char* end = nullptr;
    unsigned long v = std::strtoul(part.c_str(), &end, 10);
    if (part.empty() || *end || v > 0xffffffffUL)
      return std::unexpected(fmt::format("{} '{}': '{}' is not a number (want ID:SHOWN-ID:LENGTH[:...])", option, text, part));
    numbers.push_back(uint32_t(v));
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  if (numbers.size() % 3 != 0)
    return std::unexpected(fmt::format("{} '{}': needs triples ID:SHOWN-ID:LENGTH", option, text));
  std::vector<IdRange> ranges;
  for (size_t i = 0; i < numbers.size(); i += 3) {
    if (numbers[i + 2] == 0) return std::unexpected(fmt::format("{} '{}': a range of length 0", option, text));
    ranges.push_back({numbers[i], numbers[i + 1], numbers[i + 2]});
  }
  return ranges;
}

uint32_t IdMap::shown(uint32_t disk) const {
  if (squash_) return *squash_;
  return shown_by_ranges(disk).value_or(kOverflowId);
}

std::optional<uint32_t> IdMap::shown_by_ranges(uint32_t disk) const {
  if (ranges_.empty()) return disk;
  for (const auto& r : ranges_)
    if (disk >= r.disk && disk - r.disk < r.length) return r.shown + (disk - r.disk);
  return std::nullopt;
}

uint32_t IdMap::to_disk(uint32_t shown_id) const { return to_disk_by_ranges(shown_id).value_or(kOverflowId); }

std::optional<uint32_t> IdMap::to_disk_by_ranges(uint32_t shown_id) const {
  if (ranges_.empty()) return shown_id;
  for (const auto& r : ranges_)
    if (shown_id >= r.shown && shown_id - r.shown < r.length) return r.disk + (shown_id - r.shown);
  return std::nullopt;
}

}  // namespace strata
