// ID mapping, as fuse-overlayfs defines it (podman passes these options): the owner a file has
// on disk and the owner the mount shows can differ.
//   uidmapping=DISK:SHOWN:LEN[:DISK2:SHOWN2:LEN2...]  (same for gidmapping)
//     disk ids in [DISK, DISK+LEN) show as SHOWN + (id - DISK); other ids show as the overflow
//     id (65534); owners written through the mount are mapped back.
//   squash_to_root, squash_to_uid=N, squash_to_gid=N: every object shows as owned by root or N
//     (squash_to_uid/gid win over squash_to_root); what is written is not squashed.
#pragma once
#include <sys/types.h>

#include <expected>
#include <optional>
#include <string>
#include <vector>

namespace strata {

struct IdRange {
  uint32_t disk, shown, length;
};

class IdMap {
 public:
  // Parse "0:1000:1:1:100000:65536" (a leading ':' as podman writes it is accepted).
  static std::expected<std::vector<IdRange>, std::string> parse(const std::string& option, const std::string& text);

  void set_ranges(std::vector<IdRange> ranges) { ranges_ = std::move(ranges); }
  void set_squash(std::optional<uint32_t> id) { squash_ = id; }
  bool identity() const { return ranges_.empty() && !squash_; }

  bool has_ranges() const { return !ranges_.empty(); }

  uint32_t shown(uint32_t disk) const;   // on disk -> as the mount shows it
  // For the ids in ACL entries: by the ranges only (no squashing), nullopt for an id no range
  // maps (an entry that must not name the overflow id's owner instead).
  std::optional<uint32_t> shown_by_ranges(uint32_t disk) const;
  std::optional<uint32_t> to_disk_by_ranges(uint32_t shown) const;
  uint32_t to_disk(uint32_t shown) const;  // as the caller gave it -> on disk

 private:
  std::vector<IdRange> ranges_;
  std::optional<uint32_t> squash_;
};

}  // namespace strata
