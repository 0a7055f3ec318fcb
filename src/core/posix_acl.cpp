#include "strata/posix_acl.h"

#include "strata/sys.h"

namespace strata {

namespace {

// <linux/posix_acl_xattr.h>: a 4-byte version header, then 8-byte entries (tag, perm, id),
// little-endian, as every filesystem stores them.
constexpr uint32_t kAclVersion = 2;
constexpr uint16_t kAclUser = 0x02, kAclGroup = 0x08;
constexpr size_t kHeaderSize = 4, kEntrySize = 8;

uint32_t load32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

void store32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}

}  // namespace

bool is_acl_xattr(std::string_view name) { return name == kAclAccessXattr || name == kAclDefaultXattr; }

std::optional<std::string> map_acl_ids(std::string_view value, const IdFn& map_uid, const IdFn& map_gid,
                                       Unmapped unmapped) {
  if (value.size() < kHeaderSize || (value.size() - kHeaderSize) % kEntrySize != 0) return std::nullopt;
  if (load32(value.data()) != kAclVersion) return std::nullopt;
  std::string out(value.substr(0, kHeaderSize));
  for (size_t off = kHeaderSize; off < value.size(); off += kEntrySize) {
    std::string entry(value.substr(off, kEntrySize));
    const uint16_t tag = uint16_t(uint8_t(entry[0]) | uint8_t(entry[1]) << 8);
    if (tag == kAclUser || tag == kAclGroup) {
      auto id = (tag == kAclUser ? map_uid : map_gid)(load32(entry.data() + 4));
      if (!id && unmapped == Unmapped::refuse) return std::nullopt;
      if (!id) continue;
      store32(entry.data() + 4, *id);
    }
    out += entry;
  }
  return out;
}

bool has_default_acl(int dirfd) {
  auto value = sys::getxattr(dirfd, "", kAclDefaultXattr);
  return value && !value->empty();
}

}  // namespace strata
