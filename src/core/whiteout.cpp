#include "strata/whiteout.h"

#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>

#include "strata/sys.h"

namespace strata {

const char* describe(OpaqueKind kind) {
  switch (kind) {
    case OpaqueKind::None: return "not opaque";
    case OpaqueKind::TrustedXattr: return "xattr trusted.overlay.opaque=y";
    case OpaqueKind::UserXattr: return "xattr user.overlay.opaque=y";
    case OpaqueKind::AufsMarker: return "marker .wh..wh..opq";
  }
  return "?";
}

DirMarkers read_dir_markers(int dirfd) {
  DirMarkers markers;
  // One listxattr answers "no markers" for the common directory without any xattr.
  if (auto names = sys::listxattr(dirfd, ""); names) {
    for (const auto& attr : *names) {
      bool trusted = attr == "trusted.overlay.opaque", user = attr == "user.overlay.opaque";
      if ((trusted || user) && markers.opaque == OpaqueKind::None) {
        // "x" marks a dir with opaque whiteouts inside (kernel xwhiteouts), not an opaque dir.
        if (auto v = sys::getxattr(dirfd, "", attr.c_str()); v && *v == "y")
          markers.opaque = trusted ? OpaqueKind::TrustedXattr : OpaqueKind::UserXattr;
      } else if ((attr == "trusted.overlay.redirect" || attr == "user.overlay.redirect") &&
                 markers.redirect.empty()) {
        if (auto v = sys::getxattr(dirfd, "", attr.c_str()); v) markers.redirect = *v;
      }
    }
  }
  if (markers.opaque == OpaqueKind::None) {
    struct stat st;
    if (::fstatat(dirfd, std::string(kAufsOpaqueMarker).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      markers.opaque = OpaqueKind::AufsMarker;
  }
  return markers;
}

bool has_aufs_whiteout(int dirfd, std::string_view name) {
  std::string marker(kAufsWhiteoutPrefix);
  marker.append(name);
  if (marker.size() > 255) return false;
  struct stat st;
  return ::fstatat(dirfd, marker.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

bool AufsMarkerCache::hides(int dirfd, std::string_view name) const {
  std::call_once(once_, [&] {
    auto dup = sys::openat(dirfd, ".", O_RDONLY | O_DIRECTORY);
    if (!dup) return;
    DIR* dir = ::fdopendir(dup->release());
    if (!dir) return;
    while (struct dirent* e = ::readdir(dir)) {
      std::string_view n = e->d_name;
      if (n.starts_with(kAufsWhiteoutPrefix) && n != kAufsOpaqueMarker)
        hidden_.emplace_back(n.substr(kAufsWhiteoutPrefix.size()));
    }
    ::closedir(dir);
    std::sort(hidden_.begin(), hidden_.end());
  });
  return std::binary_search(hidden_.begin(), hidden_.end(), name);
}

Status make_whiteout(const LayerStack& stack, int dirfd, const char* name) {
  if (stack.chardev_whiteouts()) {
    auto r = stack.work_fd() >= 0 ? stack.link_whiteout(dirfd, name) : Status(fail(EPERM));
    if (r) return {};
    if (::mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) == 0) return {};
    if (errno != EPERM) return fail_errno();
  }
  return make_aufs_whiteout(dirfd, name);
}

Status make_aufs_whiteout(int dirfd, std::string_view name) {
  std::string marker(kAufsWhiteoutPrefix);
  marker.append(name);
  if (marker.size() > 255) return fail(ENAMETOOLONG);
  auto fd = sys::openat(dirfd, marker.c_str(), O_CREAT | O_WRONLY | O_NOFOLLOW, 0);
  if (!fd) return fail(fd.error());
  return {};
}

Status set_opaque(const LayerStack& stack, int fd) {
  return sys::setxattr(fd, "", (stack.xattr_prefix() + "overlay.opaque").c_str(), "y");
}

Status set_redirect(const LayerStack& stack, int fd, const std::string& path) {
  return sys::setxattr(fd, "", (stack.xattr_prefix() + "overlay.redirect").c_str(), path);
}

namespace {
bool in_namespace(std::string_view attr, std::string_view prefix) { return prefix.empty() || attr.starts_with(prefix); }
}  // namespace

bool has_metacopy(int dirfd, const char* name, std::string_view prefix) {
  // One listxattr answers for both namespaces (and is cheap on the common file without xattrs).
  auto names = sys::listxattr(dirfd, name);
  if (!names) return false;
  for (const auto& attr : *names)
    if ((attr == "trusted.overlay.metacopy" || attr == "user.overlay.metacopy") && in_namespace(attr, prefix))
      return true;
  return false;
}

Status set_metacopy(const LayerStack& stack, int fd) {
  return sys::setxattr(fd, "", (stack.xattr_prefix() + "overlay.metacopy").c_str(), "");
}

namespace {
// Remove overlay.FIELD in both namespaces; absent (or a namespace we may not touch) is fine.
Status remove_overlay_xattr(int fd, std::string_view field) {
  for (std::string_view ns : {"trusted.overlay.", "user.overlay."}) {
    std::string attr = std::string(ns) + std::string(field);
    if (auto r = sys::removexattr(fd, "", attr.c_str()); !r && r.error() != ENODATA && r.error() != EPERM &&
                                                          r.error() != EOPNOTSUPP)
      return r;
  }
  return {};
}
}  // namespace

Status clear_metacopy(int fd) { return remove_overlay_xattr(fd, "metacopy"); }

std::string read_redirect(int dirfd, const char* name, std::string_view prefix) {
  for (const char* attr : {"trusted.overlay.redirect", "user.overlay.redirect"})
    if (in_namespace(attr, prefix))
      if (auto v = sys::getxattr(dirfd, name, attr); v) return *v;
  return {};
}

Status clear_redirect(int fd) { return remove_overlay_xattr(fd, "redirect"); }

namespace {
constexpr std::string_view kTrustedOverlay = "trusted.overlay.";
}  // namespace

bool is_escaped_xattr(std::string_view stored) {
  return stored.starts_with(kTrustedOverlay) && stored.substr(kTrustedOverlay.size()).starts_with("overlay.");
}

std::string escape_xattr(std::string_view shown) {
  if (!shown.starts_with(kTrustedOverlay)) return {};
  return std::string(kTrustedOverlay) + "overlay." + std::string(shown.substr(kTrustedOverlay.size()));
}

std::string unescape_xattr(std::string_view stored) {
  if (!is_escaped_xattr(stored)) return {};
  return std::string(kTrustedOverlay) + std::string(stored.substr(kTrustedOverlay.size() + 8));
}

bool is_private_xattr(std::string_view attr) {
  return attr.starts_with("trusted.overlay.") || attr.starts_with("user.overlay.") ||
         attr.starts_with("trusted.strata.") || attr.starts_with("user.strata.");
}

}  // namespace strata
