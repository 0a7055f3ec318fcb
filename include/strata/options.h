// Mount options: the fuse-overlayfs-compatible `-o` syntax shared by strata-fs and strata.
// Parsing only; checking the directories themselves is LayerStack's job (layers.h).
#pragma once
#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "strata/id_map.h"

namespace strata {

struct MountOptions {
  std::vector<std::string> lowerdirs;  // uppermost first
  std::string upperdir;                // empty: read-only mount
  std::string workdir;
  double timeout = 86400;              // kernel entry/attr cache, seconds
  bool volatile_mode = false;          // skip fsync (podman's `volatile`, fuse-overlayfs' fsync=0)
  // Metadata-only copy-up (the kernel's metacopy=on): chmod, chown, touch -m/-a by path and
  // xattr changes of a lower file copy its attributes, not its data, until it is opened for writing.
  bool metacopy = false;
  // POSIX ACLs enforced by the kernel (FUSE_POSIX_ACL), as the kernel overlay does; `noacl`
  // (fuse-overlayfs' option) turns that off: ACLs are then stored but not checked.
  bool acl = true;
  bool debug = false;
  bool read_only = false;              // `ro`
  std::string trace;                   // trace categories ("all", "lookup+copyup", ...)
  std::string trace_file;
  std::string trace_format = "text";
  std::string passthrough = "auto";
  std::vector<IdRange> uid_ranges, gid_ranges;  // uidmapping=, gidmapping=
  bool squash_to_root = false;
  std::optional<uint32_t> squash_uid, squash_gid;
  // Options handed to the kernel/libfuse (allow_other, fsname=..., nosuid, ...).
  std::vector<std::string> fuse_options;
  // Accepted for compatibility with fuse-overlayfs and mount(8), without effect.
  std::vector<std::string> ignored;
};

// Parse one `-o` argument (may be given several times; later values win). Empty elements are
// accepted. Returns a one-line error naming the offending option.
std::expected<void, std::string> parse_option_string(const std::string& text, MountOptions& out);

// Split a lowerdir value on unescaped ':' (`\:` keeps a colon, `\\` a backslash).
std::vector<std::string> split_lowerdir(const std::string& value);

}  // namespace strata
