#include "strata/layers.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fmt/format.h>

#include "strata/fs_util.h"
#include "strata/posix_acl.h"
#include "strata/sys.h"

namespace strata {

namespace {

// The shared whiteout lives beside the staging dir, not in it: the staging dir holds only
// unfinished work.
constexpr const char* kSharedWhiteout = "strata-whiteout";

std::unexpected<std::string> path_error(std::string_view what, const std::string& path, int err) {
  return std::unexpected(fmt::format("{} {}: {}", what, path, sys::errno_text(err)));
}

std::expected<Layer, std::string> open_layer(std::string_view what, const std::string& path, int index) {
  auto fd = sys::openat(AT_FDCWD, path.c_str(), O_RDONLY | O_DIRECTORY);
  if (!fd) {
    if (fd.error() == ENOTDIR) return path_error(what, path, ENOTDIR);
    return path_error(what, path, fd.error());
  }
  auto st = sys::fstat(fd->get());
  if (!st) return path_error(what, path, st.error());
  Layer layer;
  layer.index = index;
  layer.path = path;
  layer.root = std::move(*fd);
  layer.dev = st->st_dev;
  return layer;
}

std::string canonical(const std::string& path) {
  char buf[PATH_MAX];
  if (!::realpath(path.c_str(), buf)) return path;
  return buf;
}

bool is_inside(const std::string& inner, const std::string& outer) {
  return inner == outer || (inner.starts_with(outer) && (outer == "/" || inner[outer.size()] == '/'));
}

}  // namespace

std::expected<std::unique_ptr<LayerStack>, std::string> LayerStack::open(const MountOptions& opts,
                                                                        bool need_workdir) {
  auto stack = std::make_unique<LayerStack>();
  stack->volatile_mode_ = opts.volatile_mode;
  stack->metacopy_ = opts.metacopy;
  if (opts.lowerdirs.empty())
    return std::unexpected("lowerdir: missing; give at least one layer: -o lowerdir=DIR[:DIR...]");
  if (!opts.upperdir.empty() && opts.workdir.empty() && need_workdir)
    return std::unexpected(fmt::format("upperdir {}: needs workdir=DIR on the same filesystem", opts.upperdir));
  if (opts.upperdir.empty() && !opts.workdir.empty())
    return std::unexpected(fmt::format("workdir {}: given without upperdir=DIR", opts.workdir));

  stack->layers_.emplace_back();  // slot 0: the upper (stays closed on a read-only mount)
  if (!opts.upperdir.empty()) {
    auto upper = open_layer("upperdir", opts.upperdir, 0);
    if (!upper) return std::unexpected(upper.error());
    stack->layers_[0] = std::move(*upper);
    if (auto r = stack->open_workdir(opts); !r) return std::unexpected(r.error());
  } else {
    stack->layers_[0].path = "(none: read-only)";
  }
  for (size_t i = 0; i < opts.lowerdirs.size(); ++i) {
    auto lower = open_layer("lowerdir", opts.lowerdirs[i], int(i) + 1);
    if (!lower) return std::unexpected(lower.error());
    stack->layers_.push_back(std::move(*lower));
    // Writes into an upper (or workdir) that lies inside a lower would change that lower
    // underneath the mount; the kernel overlay refuses such overlapping layers too.
    for (const std::string* w : {&opts.upperdir, &opts.workdir}) {
      if (w->empty()) continue;
      std::string cw = canonical(*w), cl = canonical(opts.lowerdirs[i]);
      if (is_inside(cw, cl) || is_inside(cl, cw))
        return std::unexpected(fmt::format("{} {}: overlaps lowerdir {}", w == &opts.upperdir ? "upperdir" : "workdir",
                                           *w, opts.lowerdirs[i]));
    }
  }
  // The upper's filesystem is fs index 0, so its inode numbers show unchanged.
  uint64_t next = 0;
  for (auto& layer : stack->layers_)
    if (layer.root && !stack->dev_index_.contains(layer.dev)) stack->dev_index_[layer.dev] = next++;
  return stack;
}

std::expected<void, std::string> LayerStack::open_workdir(const MountOptions& opts) {
  if (opts.workdir.empty()) return {};  // an offline reader without a workdir
  auto work = open_layer("workdir", opts.workdir, -1);
  if (!work) return std::unexpected(work.error());
  if (work->dev != layers_[0].dev)
    return std::unexpected(fmt::format("workdir {}: not on the same filesystem as upperdir {}",
                                       opts.workdir, opts.upperdir));
  std::string cu = canonical(opts.upperdir), cw = canonical(opts.workdir);
  if (is_inside(cw, cu))
    return std::unexpected(fmt::format("workdir {}: must not be inside upperdir {}", opts.workdir, opts.upperdir));
  if (is_inside(cu, cw))
    return std::unexpected(fmt::format("upperdir {}: must not be inside workdir {}", opts.upperdir, opts.workdir));
  workdir_ = std::move(work->root);
  workdir_path_ = opts.workdir;
  return {};
}

std::expected<void, std::string> LayerStack::prepare_workdir() {
  if (!has_upper()) return {};
  if (::flock(workdir_.get(), LOCK_EX | LOCK_NB) < 0)
    return std::unexpected(fmt::format("workdir {}: {}", workdir_path_,
                                       errno == EWOULDBLOCK ? "in use by another strata-fs mount"
                                                            : sys::errno_text(errno)));
  // The upper too: a second mount with another workdir would write the same upper unlocked.
  if (::flock(layers_[0].root.get(), LOCK_EX | LOCK_NB) < 0)
    return std::unexpected(fmt::format("upperdir {}: {}", layers_[0].path,
                                       errno == EWOULDBLOCK ? "in use by another strata-fs mount"
                                                            : sys::errno_text(errno)));
  // Whiteouts are made as links of the shared whiteout: whatever has its name must be one (a
  // 0/0 character device), or every whiteout would become a link to something else. Anything
  // else there is refused, not removed: removing a link would touch the file it links to.
  if (auto st = sys::fstatat(workdir_.get(), kSharedWhiteout); st && !(S_ISCHR(st->st_mode) && st->st_rdev == 0))
    return std::unexpected(fmt::format("workdir {}/{}: not a whiteout (character device 0/0); remove it",
                                       workdir_path_, kSharedWhiteout));
  if (::mkdirat(workdir_.get(), "work", 0700) < 0 && errno != EEXIST)
    return path_error("workdir", workdir_path_ + "/work", errno);
  auto work = sys::openat(workdir_.get(), "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!work) return path_error("workdir", workdir_path_ + "/work", work.error());
  work_ = std::move(*work);
  // Objects are built here before a rename puts them in the upper: a default ACL on work (made
  // under a parent with one) would be inherited by every copy-up and widen access to it. The
  // kernel overlay strips both ACLs from its work dir at mount; so do we.
  for (const char* acl : {kAclDefaultXattr, kAclAccessXattr})
    if (auto r = sys::removexattr(work_.get(), "", acl); !r && r.error() != ENODATA && r.error() != EOPNOTSUPP)
      return path_error("workdir", workdir_path_ + "/work", r.error());
  // Anything left here is a copy-up, whiteout or removal a crash interrupted: never visible,
  // so removing it completes or undoes that step.
  if (auto r = remove_children(work_.get()); !r)
    return path_error("workdir", workdir_path_ + "/work", r.error());

  // Probe: can we write trusted.* xattrs and char-device whiteouts on the upper filesystem?
  const char* probe = "#strata-probe";
  ::unlinkat(work_.get(), probe, 0);
  if (::mknodat(work_.get(), probe, S_IFCHR | 0, makedev(0, 0)) == 0) {
    chardev_whiteouts_ = true;
  } else {
    chardev_whiteouts_ = false;
    auto f = sys::openat(work_.get(), probe, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (!f) return path_error("workdir", workdir_path_, f.error());
  }
  if (auto r = sys::setxattr(work_.get(), probe, "trusted.overlay.strata-probe", "y"); r) {
    xattr_prefix_ = "trusted.";
  } else {
    if (auto ru = sys::setxattr(work_.get(), probe, "user.overlay.strata-probe", "y"); !ru && !chardev_whiteouts_) {
      ::unlinkat(work_.get(), probe, 0);
      return std::unexpected(fmt::format("upperdir {}: the filesystem supports neither trusted nor user xattrs ({})",
                                         layers_[0].path, sys::errno_text(ru.error())));
    }
    xattr_prefix_ = "user.";
  }
  ::unlinkat(work_.get(), probe, 0);
  return {};
}

Status LayerStack::link_whiteout(int dirfd, const char* name) const {
  const char* kShared = kSharedWhiteout;
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (::linkat(workdir_.get(), kShared, dirfd, name, 0) == 0) return {};
    int err = errno;
    if (err != ENOENT && err != EMLINK) return fail(err);
    std::lock_guard lock(whiteout_mu_);
    if (err == EMLINK) ::unlinkat(workdir_.get(), kShared, 0);  // full: start a new one
    if (::mknodat(workdir_.get(), kShared, S_IFCHR | 0, makedev(0, 0)) < 0 && errno != EEXIST) return fail_errno();
  }
  return fail(EMLINK);
}

uint64_t LayerStack::presented_ino(dev_t dev, ino_t ino) const {
  uint64_t index;
  {
    std::lock_guard lock(dev_mu_);
    auto [it, inserted] = dev_index_.try_emplace(dev, dev_index_.size());
    index = it->second;
  }
  return index == 0 ? uint64_t(ino) : (uint64_t(ino) ^ (index << 56));
}

}  // namespace strata
