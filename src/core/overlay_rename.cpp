// rename and link: the operations that move or add names of objects that may live below.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include "strata/fs_util.h"
#include "strata/overlay.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

NodePtr Overlay::node_of(const NodePtr& parent, std::string_view name, const Resolution& res) const {
  NodeKey key{res.st.st_dev, res.st.st_ino, nullptr, nullptr};
  if (!S_ISDIR(res.st.st_mode) && res.layer != 0 && res.st.st_nlink > 1) {
    key.parent = parent.get();
    key.name = std::make_shared<const std::string>(name);
  }
  return table_.find(key);
}

// A directory about to move: if its content comes from lower layers, record where (redirect, as
// the kernel's redirect_dir=on does), so that after the move its lower part is found again; if it
// is upper-only but lands on a name that lower layers have, make it opaque so they don't merge in.
Status Overlay::mark_dir_for_move(const NodePtr& dir, const NodePtr& new_parent, std::string_view new_name) {
  int fd;
  bool has_lower;
  std::string lower_path;
  {
    std::lock_guard lock(dir->mu);
    fd = dir->dir().dirs.front().fd.get();
    has_lower = dir->dir().dirs.size() > 1;
    lower_path = dir->dir().lower_path;
  }
  if (has_lower) {
    // The kernel refuses redirects longer than its redirect_max (256): the same EXDEV here keeps
    // every upper we write readable by it (tools then fall back to copying).
    if (lower_path.size() + 1 > 256) return fail(EXDEV);
    STRATA_TRY(set_redirect(*stack_, fd, "/" + lower_path));
    if (tracer_ && tracer_->on(kTraceRename))
      tracer_->emit(kTraceRename,
                    fmt::format("{}: directory with lower content moves: redirect \"/{}\" set in upper {}",
                                path_of(*dir), lower_path, stack_->layer(0).path),
                    {field("path", path_of(*dir)), field("redirect", "/" + lower_path)});
  } else if (lower_has_name(*stack_, view_of(*new_parent), new_name)) {
    if (read_dir_markers(fd).opaque == OpaqueKind::None) {
      STRATA_TRY(set_opaque(*stack_, fd));
      stats_.opaque_dirs.fetch_add(1, std::memory_order_relaxed);
      if (tracer_ && tracer_->on(kTraceOpaque))
        tracer_->emit(kTraceOpaque,
                      fmt::format("{}: made opaque before moving over lower '{}'", path_of(*dir), std::string(new_name)),
                      {field("path", path_of(*dir))});
    }
  }
  return {};
}

Status Overlay::rename(const NodePtr& p1, std::string_view n1_view, const NodePtr& p2, std::string_view n2_view,
                       unsigned flags) {
  STRATA_TRY(ensure_writable());
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return fail(EINVAL);
  const bool exchange = flags & RENAME_EXCHANGE;
  const std::string n1(n1_view), n2(n2_view);
  if (n2.size() > NAME_MAX) return fail(ENAMETOOLONG);
  if (is_aufs_marker_name(n2)) return fail(EINVAL);
  // Checks that refuse the rename come before anything is copied up (as in the kernel); they
  // are repeated under the names locks, where the rename itself happens.
  auto check = [&](Resolution& src, Resolution& dst, bool& same_file, bool before_copy_up) -> Status {
    if (!src.found) return fail(ENOENT);
    if (exchange && !dst.found) return fail(ENOENT);
    if ((flags & RENAME_NOREPLACE) && dst.found) return fail(EEXIST);
    same_file = false;
    if (dst.found && !exchange) {
      // The same file under two names: rename(2) does nothing. Two names of one *lower* file are
      // not that: copying one up breaks the link (index=off), as the kernel overlay treats them.
      if (src.layer == 0 && dst.layer == 0 && src.st.st_dev == dst.st.st_dev && src.st.st_ino == dst.st.st_ino) {
        same_file = true;
        return {};
      }
      const bool src_dir = S_ISDIR(src.st.st_mode), dst_dir = S_ISDIR(dst.st.st_mode);
      if (src_dir && !dst_dir) return fail(ENOTDIR);
      if (!src_dir && dst_dir) return fail(EISDIR);
      // A target dir only in the upper is found not empty by the real rename in the kernel,
      // after the source was copied up; one with lower parts is checked before.
      const bool pure_upper = dst.layer == 0 && dst.dirs.size() == 1;
      if (dst_dir && !(before_copy_up && pure_upper)) STRATA_TRY(require_empty_dir(dst));
    }
    return {};
  };
  auto resolve_both = [&]() -> Result<std::pair<Resolution, Resolution>> {
    auto src = resolve_child(*stack_, view_of(*p1), n1, false);
    if (!src) return fail(src.error());
    auto dst = resolve_child(*stack_, view_of(*p2), n2, false);
    if (!dst) return fail(dst.error());
    return std::pair<Resolution, Resolution>{std::move(*src), std::move(*dst)};
  };
  {
    auto both = resolve_both();
    if (!both) return fail(both.error());
    bool same_file;
    STRATA_TRY(check(both->first, both->second, same_file, true));
    if (same_file) return {};
  }

  // Copy-ups (they take names locks of their own): the source, an exchanged target, both parents.
  // Their nodes are held (looked up) until the end, so that they are still the ones the names
  // map to below, even when the kernel holds none.
  struct Release {
    Overlay* self;
    NodePtr s, d;
    ~Release() {
      if (s) self->forget(s.get(), 1);
      if (d) self->forget(d.get(), 1);
    }
  } release{this, nullptr, nullptr};
  auto s_entry = lookup(p1, n1);
  if (!s_entry) return fail(s_entry.error());
  release.s = s_entry->node;
  if (exchange) {
    auto d_entry = lookup(p2, n2);
    if (!d_entry) return fail(d_entry.error());
    release.d = d_entry->node;
  }
  // metacopy=on: a regular file whose data is below moves as a metacopy with a redirect to its
  // data (the kernel's way), so a rename costs no data copy and no fsync.
  std::string data_redirect;
  if (!exchange && stack_->metacopy() && S_ISREG(release.s->type) && !data_in_upper(*release.s))
    data_redirect = metacopy_redirect_for(release.s, p1, n1);
  if (!data_redirect.empty()) {
    STRATA_TRY(copy_up_metadata(release.s));
    if (data_in_upper(*release.s)) data_redirect.clear();  // a hard link: it was copied whole
  } else {
    STRATA_TRY(copy_up(release.s));
  }
  if (release.d) STRATA_TRY(copy_up(release.d));
  STRATA_TRY(copy_up(p2));
  // A metacopy moves with its redirect under its copy-up lock (taken before the names locks, as
  // the lock order says): a data copy-up finishing meanwhile would remove that redirect.
  std::unique_lock<std::mutex> metacopy_lock;
  if (!data_redirect.empty()) metacopy_lock = std::unique_lock(copy_up_lock(*release.s));

  // The rename itself, with both directories' names locked.
  std::unique_lock lock1(p1->names_mu(), std::defer_lock), lock2(p2->names_mu(), std::defer_lock);
  if (p1 == p2) lock1.lock();
  else std::lock(lock1, lock2);
  auto both = resolve_both();
  if (!both) return fail(both.error());
  auto& [src_res, dst_res] = *both;
  Resolution* src = &src_res;
  Resolution* dst = &dst_res;
  bool same_file;
  STRATA_TRY(check(*src, *dst, same_file, false));
  if (same_file) return {};
  // Copied up above; anything else means the name changed under us.
  if (src->layer != 0 || (exchange && dst->layer != 0)) return fail(ESTALE);
  const bool src_dir = S_ISDIR(src->st.st_mode);
  const bool dst_dir = dst->found && S_ISDIR(dst->st.st_mode);
  // The nodes the kernel holds for the two names now (none for a name it never looked up).
  NodePtr S = node_of(p1, n1, *src);
  NodePtr D = exchange ? node_of(p2, n2, *dst) : nullptr;
  const int u1 = upper_fd_of(*p1), u2 = upper_fd_of(*p2);
  if (src_dir) {
    if (!S) return fail(ESTALE);
    STRATA_TRY(mark_dir_for_move(S, p2, n2));
  }
  if (exchange && dst_dir) {
    if (!D) return fail(ESTALE);
    STRATA_TRY(mark_dir_for_move(D, p1, n1));
  }
  bool set_data_path = false;
  bool s_metacopy = false;
  if (S) {
    std::lock_guard lock(S->mu);
    s_metacopy = S->data_layer >= 0;
  }
  if (!data_redirect.empty() && S && s_metacopy) {
    // Set at the old name, before the move: any moment (and any crash) finds the data. Always
    // written, absolute: one the file had may be relative (the kernel's, within one directory),
    // which would lead elsewhere from another directory.
    STRATA_TRY(sys::setxattr(u1, n1.c_str(), (stack_->xattr_prefix() + "overlay.redirect").c_str(), data_redirect));
    set_data_path = true;
    if (tracer_ && tracer_->on(kTraceRename))
      tracer_->emit(kTraceRename,
                    fmt::format("{}: metacopy file moves: redirect \"{}\" to its data set in upper {}",
                                child_path(*p1, n1), data_redirect, stack_->layer(0).path),
                    {field("path", child_path(*p1, n1)), field("redirect", data_redirect)});
  } else if (!data_redirect.empty() && !S) {
    return fail(ESTALE);  // no node for the name we copied up: it changed under us
  }

  if (exchange) {
    STRATA_TRY(sys::renameat2(u1, n1.c_str(), u2, n2.c_str(), RENAME_EXCHANGE));
  } else {
    bool need_whiteout = lower_has_name(*stack_, view_of(*p1), n1);
    struct stat target {};
    bool target_exists = ::fstatat(u2, n2.c_str(), &target, AT_SYMLINK_NOFOLLOW) == 0;
    bool over_aufs = !target_exists && has_aufs_whiteout(u2, n2);
    if (target_exists && is_whiteout(target) && src_dir) {
      // A directory can't replace a non-directory: swap it with the whiteout, which then sits
      // at the old name, exactly where one is needed if the lower layers have that name.
      STRATA_TRY(sys::renameat2(u1, n1.c_str(), u2, n2.c_str(), RENAME_EXCHANGE));
      if (!need_whiteout) ::unlinkat(u1, n1.c_str(), 0);
      need_whiteout = false;
    } else {
      if (target_exists && !is_whiteout(target)) {
        // A directory target is empty in the merged view but its upper part may hold
        // whiteouts: swap in an empty opaque directory first, so that no moment (and no
        // crash) shows the lower entries those whiteouts hid.
        if (S_ISDIR(target.st_mode)) STRATA_TRY(empty_upper_dir(u2, n2));
        else detach_node_at(u2, n2, p2.get());
      }
      NodePtr replaced = dst->found ? node_of(p2, n2, *dst) : nullptr;
      if (need_whiteout && !stack_->chardev_whiteouts()) {
        // `.wh.` markers: the marker before the move (beside n1 it hides only the lower
        // layers), so that no moment, and no crash, shows the lower n1 again.
        STRATA_TRY(make_aufs_whiteout(u1, n1));
        note_whiteout(p1, n1, ".wh. file, before the rename");
        need_whiteout = false;
      }
      unsigned rflags = need_whiteout && stack_->chardev_whiteouts() ? RENAME_WHITEOUT : 0;
      auto r = sys::renameat2(u1, n1.c_str(), u2, n2.c_str(), rflags);
      if (!r && rflags && r.error() == EINVAL) {
        rflags = 0;
        r = sys::renameat2(u1, n1.c_str(), u2, n2.c_str(), 0);
      }
      if (!r) return r;
      if (rflags) {
        need_whiteout = false;
        note_whiteout(p1, n1, "char device 0/0, left by the rename");
      }
      if (over_aufs) ::unlinkat(u2, (std::string(kAufsWhiteoutPrefix) + n2).c_str(), 0);
      // A replaced name that was one of several links of an upper file leaves that file (and
      // its node, shared by all its names) alive.
      if (replaced && replaced != S && (dst_dir || dst->layer != 0 || dst->st.st_nlink <= 1)) {
        {
          std::lock_guard lock(replaced->mu);
          replaced->unlinked = true;
        }
        table_.unhash(replaced.get());
      }
    }
    if (need_whiteout) {
      STRATA_TRY(make_whiteout(*stack_, u1, n1.c_str()));
      note_whiteout(p1, n1, "after the rename");
    }
  }

  if (S) {
    std::lock_guard lock(S->mu);
    S->parent = p2;
    S->name = n2;
    if (set_data_path) S->data_path = std::make_shared<const std::string>(data_redirect.substr(1));
  }
  if (D) {
    std::lock_guard lock(D->mu);
    D->parent = p1;
    D->name = n1;
  }
  if (tracer_ && tracer_->on(kTraceRename)) {
    std::string to = child_path(*p2, n2);
    tracer_->emit(kTraceRename, fmt::format("{} -> {}{}", child_path(*p1, n1), to, exchange ? " (exchange)" : ""),
                  {field("from", child_path(*p1, n1)), field("to", to)});
  }
  return {};
}

Result<Entry> Overlay::link(const NodePtr& node, const NodePtr& new_parent, std::string_view new_name_view) {
  STRATA_TRY(ensure_writable());
  if (node->is_dir()) return fail(EPERM);
  const std::string name(new_name_view);
  if (name.size() > NAME_MAX) return fail(ENAMETOOLONG);
  if (is_aufs_marker_name(name)) return fail(EINVAL);
  STRATA_TRY(copy_up(node));
  STRATA_TRY(copy_up(new_parent));
  std::unique_lock names(new_parent->names_mu());
  // The kernel holds the inode for a link (as for a rename or unlink of it): its name is stable.
  auto loc = locate(node, false);
  if (!loc) return fail(loc.error());
  const int up = upper_fd_of(*new_parent);
  // linkat from an O_PATH fd needs CAP_DAC_READ_SEARCH with AT_EMPTY_PATH; /proc works rootless.
  auto link_to = [&](int dirfd, const char* n) -> Status {
    int r = loc->name.empty()
                ? ::linkat(AT_FDCWD, sys::proc_fd_path(loc->dirfd).c_str(), dirfd, n, AT_SYMLINK_FOLLOW)
                : ::linkat(loc->dirfd, loc->name.c_str(), dirfd, n, 0);
    if (r < 0) return fail_errno();
    return {};
  };
  struct stat st;
  if (::fstatat(up, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!is_whiteout(st)) return fail(EEXIST);
    const std::string tmp = staging_name("link");
    STRATA_TRY(link_to(stack_->work_fd(), tmp.c_str()));
    if (auto r = sys::renameat2(stack_->work_fd(), tmp.c_str(), up, name.c_str(), 0); !r) {
      ::unlinkat(stack_->work_fd(), tmp.c_str(), 0);
      return fail(r.error());
    }
  } else {
    bool over_aufs = has_aufs_whiteout(up, name);
    if (!over_aufs && lower_has_name(*stack_, view_of(*new_parent), name)) return fail(EEXIST);
    STRATA_TRY(link_to(up, name.c_str()));
    if (over_aufs) ::unlinkat(up, (std::string(kAufsWhiteoutPrefix) + name).c_str(), 0);
  }
  return lookup_locked(new_parent, name);
}

}  // namespace strata
