// POSIX ACLs in the form the kernel stores them (system.posix_acl_access and _default): what
// the core needs of them, namely which names they are, the ids in their named entries (for
// uidmapping/gidmapping) and whether a directory hands a default ACL to new children.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace strata {

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";
inline constexpr const char* kAclDefaultXattr = "system.posix_acl_default";

bool is_acl_xattr(std::string_view name);

// The same ACL with the id of every named user entry passed through map_uid and of every named
// group entry through map_gid. An entry whose id does not map is dropped (Unmapped::drop: an ACL
// read narrows, it never names someone else) or makes the whole call fail (Unmapped::refuse).
// nullopt when `value` is not a version-2 ACL xattr, or on such a refusal.
using IdFn = std::function<std::optional<uint32_t>(uint32_t)>;
enum class Unmapped { drop, refuse };
std::optional<std::string> map_acl_ids(std::string_view value, const IdFn& map_uid, const IdFn& map_gid,
                                       Unmapped unmapped);

// Whether the directory open at dirfd has a default ACL: then new objects in it take their
// permissions from it, and the creator's umask does not apply.
bool has_default_acl(int dirfd);

}  // namespace strata
