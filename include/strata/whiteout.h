// The whiteout/opaque codec: how deletions and opaque directories are written on disk and read
// back. Writes use the kernel overlayfs format (char device 0/0, overlay.opaque=y xattr) so an
// upper written by strata-fs mounts under the kernel overlay. Reads also accept the OCI/aufs form
// (`.wh.NAME` files, `.wh..wh..opq`) that image layers and podman's stored layers use.
#pragma once
#include <sys/stat.h>

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "strata/layers.h"
#include "strata/result.h"

namespace strata {

inline constexpr std::string_view kAufsWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kAufsOpaqueMarker = ".wh..wh..opq";

inline bool is_whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == 0; }
// Any `.wh.` name is a marker, never a visible entry.
inline bool is_aufs_marker_name(std::string_view name) { return name.starts_with(kAufsWhiteoutPrefix); }

enum class OpaqueKind { None, TrustedXattr, UserXattr, AufsMarker };
const char* describe(OpaqueKind kind);

// Markers found on a directory in a layer: opaque (stops merging below) and redirect (the path
// in the lower layers its content comes from, set when a merged directory was renamed).
struct DirMarkers {
  OpaqueKind opaque = OpaqueKind::None;
  std::string redirect;
};
DirMarkers read_dir_markers(int dirfd);

// Is `name` deleted in this layer directory by an aufs-style `.wh.name` file?
bool has_aufs_whiteout(int dirfd, std::string_view name);

// The `.wh.` markers of one directory of a lower layer, read once on first need: a lookup of a
// name that is not in that directory then costs one fstatat instead of two. Lower layers do not
// change under a mount (overlayfs.rst: changing them is undefined), so the answer stays right.
class AufsMarkerCache {
 public:
  bool hides(int dirfd, std::string_view name) const;

 private:
  mutable std::once_flag once_;
  mutable std::vector<std::string> hidden_;  // sorted: the NAMEs of .wh.NAME files
};

// Whiteout `name` in the upper directory `dirfd` (the name must not exist there).
Status make_whiteout(const LayerStack& stack, int dirfd, const char* name);
// The `.wh.NAME` form, where char-device whiteouts can't be made; NAME itself may exist beside it
// (the marker hides only the layers below).
Status make_aufs_whiteout(int dirfd, std::string_view name);
Status set_opaque(const LayerStack& stack, int fd);
Status set_redirect(const LayerStack& stack, int fd, const std::string& path);
// Metacopy (the kernel's metacopy=on format): a regular file of the upper with the xattr
// overlay.metacopy holds the attributes only; its data is the file of the same name in the lower
// layers. The value is empty (or, from newer kernels, a versioned digest we do not check).
// `dirfd`+`name` as for fstatat; name "" means dirfd itself. `prefix`: the one namespace a mount
// honours for these ("trusted." or "user."): a metacopy with a redirect shows another file's data
// under its own owner and mode, so one an unprivileged user could write (user.*) must not count
// on a mount whose markers are trusted.*, as in the kernel. Empty: either (offline readers).
bool has_metacopy(int dirfd, const char* name, std::string_view prefix = {});
Status set_metacopy(const LayerStack& stack, int fd);
Status clear_metacopy(int fd);  // both namespaces; absent is fine
// The redirect of a metacopy file (where its data is: "/a/b" from the layer roots, or a name
// beside it); "" when there is none. And its removal, once the data is in the file.
std::string read_redirect(int dirfd, const char* name, std::string_view prefix = {});
Status clear_redirect(int fd);

// Names of the xattrs that are ours and never show through the mount.
bool is_private_xattr(std::string_view attr);

// xattr escaping, as the kernel overlay does it (Linux 6.7): a user's "trusted.overlay.X" set
// through the mount is stored as "trusted.overlay.overlay.X", so it can never be taken for one
// of the overlay's own markers, and is shown under its own name again.
bool is_escaped_xattr(std::string_view stored);
std::string escape_xattr(std::string_view shown);    // "" if `shown` needs no escaping
std::string unescape_xattr(std::string_view stored); // "" if `stored` is not an escaped name

}  // namespace strata
