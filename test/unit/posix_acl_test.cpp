// POSIX ACL xattrs as the core handles them: ids of named entries mapped (uidmapping), entries
// for unmapped ids dropped on reads and refused on writes, and the default-ACL test of a parent.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cstdint>
#include <string>
#include <vector>

#include "strata/id_map.h"
#include "strata/posix_acl.h"
#include "temp_dir.h"

using strata::IdMap;
using strata::map_acl_ids;
using strata::Unmapped;

namespace {

struct AclEntry {
  uint16_t tag, perm;
  uint32_t id;
};
constexpr uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10, kOther = 0x20;
constexpr uint32_t kNoId = 0xffffffff;

std::string acl_xattr(const std::vector<AclEntry>& entries) {
  std::string out;
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += char((v >> (8 * i)) & 0xff);
  };
  put(2, 4);
  for (const auto& e : entries) {
    put(e.tag, 2);
    put(e.perm, 2);
    put(e.id, 4);
  }
  return out;
}

const std::vector<AclEntry> kBase = {{kUserObj, 6, kNoId}, {kGroupObj, 4, kNoId}, {kMask, 4, kNoId}, {kOther, 0, kNoId}};

std::vector<AclEntry> with(std::vector<AclEntry> entries, std::vector<AclEntry> named) {
  entries.insert(entries.begin() + 1, named.begin(), named.end());
  return entries;
}

IdMap shifted() {  // disk 100000.. shows as 0..
  IdMap m;
  m.set_ranges({{100000, 0, 65536}});
  return m;
}

}  // namespace

TEST_CASE("ACL named entries follow the id mapping; unmapped ones are dropped or refused", "[acl]") {
  const IdMap uids = shifted(), gids = shifted();
  auto shown_u = [&](uint32_t id) { return uids.shown_by_ranges(id); };
  auto shown_g = [&](uint32_t id) { return gids.shown_by_ranges(id); };
  auto disk_u = [&](uint32_t id) { return uids.to_disk_by_ranges(id); };
  auto disk_g = [&](uint32_t id) { return gids.to_disk_by_ranges(id); };

  SECTION("users and groups are mapped, the base entries untouched") {
    auto disk = acl_xattr(with(kBase, {{kUser, 4, 101000}, {kGroup, 4, 103000}}));
    auto shown = map_acl_ids(disk, shown_u, shown_g, Unmapped::drop);
    REQUIRE(shown);
    CHECK(*shown == acl_xattr(with(kBase, {{kUser, 4, 1000}, {kGroup, 4, 3000}})));
    auto back = map_acl_ids(*shown, disk_u, disk_g, Unmapped::refuse);
    REQUIRE(back);
    CHECK(*back == disk);
  }
  SECTION("an entry for an unmapped disk id is not shown at all (not as the overflow id)") {
    auto disk = acl_xattr(with(kBase, {{kUser, 4, 99999}, {kUser, 4, 100001}}));
    auto shown = map_acl_ids(disk, shown_u, shown_g, Unmapped::drop);
    REQUIRE(shown);
    CHECK(*shown == acl_xattr(with(kBase, {{kUser, 4, 1}})));
  }
  SECTION("an entry for a shown id outside the mapping can't be stored") {
    auto asked = acl_xattr(with(kBase, {{kGroup, 4, 70000}}));
    CHECK_FALSE(map_acl_ids(asked, disk_u, disk_g, Unmapped::refuse));
  }
  SECTION("not a version-2 ACL: no answer") {
    CHECK_FALSE(map_acl_ids("", shown_u, shown_g, Unmapped::drop));
    CHECK_FALSE(map_acl_ids(std::string("\x01\0\0\0", 4), shown_u, shown_g, Unmapped::drop));
    CHECK_FALSE(map_acl_ids(acl_xattr(kBase) + "x", shown_u, shown_g, Unmapped::drop));
  }
  SECTION("squashing is not a mapping of ACL entries") {
    IdMap squashed;
    squashed.set_squash(0);
    CHECK(squashed.shown(1234) == 0);
    CHECK(squashed.shown_by_ranges(1234) == 1234u);
  }
}

TEST_CASE("has_default_acl tells whether new children inherit an ACL", "[acl]") {
  TempDir dir;
  int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(fd >= 0);
  CHECK_FALSE(strata::has_default_acl(fd));
  auto value = acl_xattr({{kUserObj, 7, kNoId}, {kGroupObj, 5, kNoId}, {kOther, 5, kNoId}});
  if (::fsetxattr(fd, strata::kAclDefaultXattr, value.data(), value.size(), 0) == 0) {
    CHECK(strata::has_default_acl(fd));
  } else {
    WARN("the test directory's filesystem takes no ACLs: only the negative case was checked");
  }
  ::close(fd);
}
