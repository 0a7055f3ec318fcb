// Opening, attributes, directory listings, statfs and xattrs of the merged tree.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include "strata/overlay.h"
#include "strata/posix_acl.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

namespace {

constexpr const char* kLayerXattr = "user.strata.layer";

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

int at_empty(const std::string& name) { return name.empty() ? AT_EMPTY_PATH : 0; }

bool is_write_open(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

}  // namespace

Result<UniqueFd> Overlay::open(const NodePtr& node, int flags, bool defer_data) {
  if (node->is_dir()) return fail(EISDIR);
  const bool write = is_write_open(flags);
  if (write) {
    STRATA_TRY(ensure_writable());
    if (defer_data && stack_->metacopy() && !(flags & O_TRUNC))
      STRATA_TRY(copy_up_metadata(node));
    else  // an O_TRUNC open throws the data away: copy only the metadata
      STRATA_TRY(copy_up(node, !(flags & O_TRUNC)));
  }
  auto loc = locate(node, true, !write);  // reads of a metacopy file: its lower data file
  if (!loc) return fail(loc.error());
  // Never open a lower file for writing, whatever raced with the copy-up above (a node split off
  // for older open files points at the lower file again): the caller looks the name up again.
  if (write && loc->layer != 0) return fail(ESTALE);
  int clean = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW;
  auto fd = loc->name.empty() ? sys::reopen(loc->dirfd, clean) : sys::openat(loc->dirfd, loc->name.c_str(), clean);
  return fd;
}

Result<struct stat> Overlay::setattr(const NodePtr& node, const AttrChange& c, int open_fd) {
  STRATA_TRY(ensure_writable());
  const bool only_truncate_to_zero = c.size && c.values.st_size == 0;
  if (c.size) STRATA_TRY(copy_up(node, !only_truncate_to_zero));
  else STRATA_TRY(copy_up_metadata(node));
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  if (loc->layer != 0) return fail(ESTALE);  // lower layers are never changed (see open)
  const int dirfd = loc->dirfd;
  const char* name = loc->name.c_str();
  const int flags = AT_SYMLINK_NOFOLLOW | at_empty(loc->name);
  if (c.uid || c.gid) {
    uid_t uid = c.uid ? uid_map_.to_disk(c.values.st_uid) : uid_t(-1);
    gid_t gid = c.gid ? gid_map_.to_disk(c.values.st_gid) : gid_t(-1);
    if (::fchownat(dirfd, name, uid, gid, flags) < 0)
      return fail_errno();
  }
  if (c.mode && !S_ISLNK(node->type)) {
    if (syscall(SYS_fchmodat2, dirfd, name, c.values.st_mode & 07777, flags) < 0) return fail_errno();
  }
  if (c.size) {
    if (open_fd >= 0) {
      if (::ftruncate(open_fd, c.values.st_size) < 0) return fail_errno();
    } else {
      auto fd = loc->name.empty() ? sys::reopen(dirfd, O_WRONLY) : sys::openat(dirfd, name, O_WRONLY | O_NOFOLLOW);
      if (!fd) return fail(fd.error());
      if (::ftruncate(fd->get(), c.values.st_size) < 0) return fail_errno();
    }
  }
  if (c.atime || c.mtime) {
    struct timespec ts[2];
    ts[0] = c.atime ? (c.atime_now ? timespec{0, UTIME_NOW} : c.values.st_atim) : timespec{0, UTIME_OMIT};
    ts[1] = c.mtime ? (c.mtime_now ? timespec{0, UTIME_NOW} : c.values.st_mtim) : timespec{0, UTIME_OMIT};
    if (::utimensat(dirfd, name, ts, flags) < 0) return fail_errno();
  }
  if (loc->names.owns_lock()) loc->names.unlock();  // getattr takes it again
  return getattr(node);
}

Result<std::vector<MergedEntry>> Overlay::read_dir(const NodePtr& dir) {
  DirView view = view_of(*dir);
  auto entries = read_merged_dir(*stack_, view);
  if (tracer_ && tracer_->on(kTraceReaddir)) {
    std::string layers;
    for (const auto& l : view.layers) layers += fmt::format("{}{}", layers.empty() ? "" : ", ", stack_->layer(l.layer).path);
    std::string path = path_of(*dir);
    tracer_->emit(kTraceReaddir,
                  fmt::format("{}: {} entries merged from {} layer(s): {}", path, entries ? entries->size() : 0,
                              view.layers.size(), layers),
                  {field("path", path), field("entries", uint64_t(entries ? entries->size() : 0)),
                   field("layers", layers)});
  }
  return entries;
}

Result<struct statvfs> Overlay::statfs() {
  struct statvfs sv;
  int fd = stack_->has_upper() ? stack_->upper().root.get() : stack_->layer(1).root.get();
  if (::fstatvfs(fd, &sv) < 0) return fail_errno();
  return sv;
}

namespace {

// The name a user xattr has on disk: escaped if it is in the overlay namespace, refused (empty)
// if it is one of the names strata keeps for itself.
Result<std::string> stored_name(const std::string& attr, int refusal) {
  if (attr == kLayerXattr) return fail(refusal);
  if (std::string escaped = escape_xattr(attr); !escaped.empty()) return escaped;
  if (is_private_xattr(attr)) return fail(refusal);
  return attr;
}

}  // namespace

Result<std::string> Overlay::getxattr(const NodePtr& node, const std::string& attr) {
  if (attr == kLayerXattr) {  // virtual: which layer this object comes from
    int layer = layer_of(*node);
    return stack_->layer(layer).path;
  }
  auto stored = stored_name(attr, ENODATA);
  if (!stored) return fail(stored.error());
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  auto value = sys::getxattr(loc->dirfd, loc->name.c_str(), stored->c_str());
  if (value && is_acl_xattr(attr) && (uid_map_.has_ranges() || gid_map_.has_ranges())) {
    // Named entries carry owners too: show them as the mount shows the files' owners.
    auto shown = map_acl_ids(*value, [&](uint32_t id) { return uid_map_.shown_by_ranges(id); },
                             [&](uint32_t id) { return gid_map_.shown_by_ranges(id); }, Unmapped::drop);
    if (shown) return *shown;
  }
  return value;
}

Result<std::vector<std::string>> Overlay::listxattr(const NodePtr& node) {
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  auto names = sys::listxattr(loc->dirfd, loc->name.c_str());
  if (!names) return names;
  std::vector<std::string> shown;
  for (auto& a : *names) {
    if (std::string user = unescape_xattr(a); !user.empty()) shown.push_back(std::move(user));
    else if (!is_private_xattr(a)) shown.push_back(std::move(a));
  }
  return shown;
}

Status Overlay::setxattr(const NodePtr& node, const std::string& attr, std::string_view value, int flags) {
  auto stored = stored_name(attr, EPERM);
  if (!stored) return fail(stored.error());
  STRATA_TRY(ensure_writable());
  STRATA_TRY(copy_up_metadata(node));
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  if (tracer_ && tracer_->on(kTraceXattr))
    tracer_->emit(kTraceXattr, fmt::format("{}: set {}{}", path_of(*node), attr,
                                           *stored != attr ? fmt::format(" (stored as {})", *stored) : ""),
                  {field("path", path_of(*node)), field("xattr", attr), field("stored_as", *stored)});
  if (loc->layer != 0) return fail(ESTALE);
  if (is_acl_xattr(attr) && (uid_map_.has_ranges() || gid_map_.has_ranges())) {
    // An entry for an id the mapping does not cover could only be stored as someone else's.
    auto on_disk = map_acl_ids(value, [&](uint32_t id) { return uid_map_.to_disk_by_ranges(id); },
                               [&](uint32_t id) { return gid_map_.to_disk_by_ranges(id); }, Unmapped::refuse);
    if (!on_disk) return fail(EINVAL);
    return sys::setxattr(loc->dirfd, loc->name.c_str(), stored->c_str(), *on_disk, flags);
  }
  return sys::setxattr(loc->dirfd, loc->name.c_str(), stored->c_str(), value, flags);
}

Status Overlay::removexattr(const NodePtr& node, const std::string& attr) {
  auto stored = stored_name(attr, EPERM);
  if (!stored) return fail(stored.error());
  STRATA_TRY(ensure_writable());
  // Nothing to remove is answered without a copy-up.
  if (auto v = getxattr(node, attr); !v) return fail(v.error());
  STRATA_TRY(copy_up_metadata(node));
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  if (tracer_ && tracer_->on(kTraceXattr))
    tracer_->emit(kTraceXattr, fmt::format("{}: removed {}", path_of(*node), attr),
                  {field("path", path_of(*node)), field("xattr", attr)});
  if (loc->layer != 0) return fail(ESTALE);
  return sys::removexattr(loc->dirfd, loc->name.c_str(), stored->c_str());
}

}  // namespace strata
