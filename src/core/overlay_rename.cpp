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
  NodeKey key{res.st.st_dev, res.st.st_ino, nullptr, {}};
  if (!S_ISDIR(res.st.st_mode) && res.layer != 0 && res.st.st_nlink > 1) {
    key.parent = parent.get();
    key.name = name;
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
    fd = dir->dirs.front().fd.get();
    has_lower = dir->dirs.size() > 1;
    lower_path = dir->lower_path;
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
  auto src = resolve_child(*stack_, view_of(*p1), n1, false);
  if (!src) return fail(src.error());
  if (!src->found) return fail(ENOENT);
  auto dst = resolve_child(*stack_, view_of(*p2), n2, false);
  if (!dst) return fail(dst.error());
  if (exchange && !dst->found) return fail(ENOENT);
  if ((flags & RENAME_NOREPLACE) && dst->found) return fail(EEXIST);
  const bool src_dir = S_ISDIR(src->st.st_mode);
  const bool dst_dir = dst->found && S_ISDIR(dst->st.st_mode);
  if (dst->found && !exchange) {
    // The same file under two names: rename(2) does nothing. Two names of one *lower* file are
    // not that: copying one up breaks the link (index=off), as the kernel overlay treats them.
    if (src->layer == 0 && dst->layer == 0 && src->st.st_dev == dst->st.st_dev && src->st.st_ino == dst->st.st_ino)
      return {};
    if (src_dir && !dst_dir) return fail(ENOTDIR);
    if (!src_dir && dst_dir) return fail(EISDIR);
    if (dst_dir) STRATA_TRY(require_empty_dir(*dst));
  }

  // Nodes for both names (interned for the duration if the kernel holds none).
  auto hold = [&](const NodePtr& parent, const std::string& name, Resolution& res) -> Result<NodePtr> {
    if (NodePtr n = node_of(parent, name, res)) {
      n->nlookup.fetch_add(1);
      return n;
    }
    auto e = intern(parent, name, std::move(res));
    if (!e) return fail(e.error());
    return e->node;
  };
  auto s_node = hold(p1, n1, *src);
  if (!s_node) return fail(s_node.error());
  NodePtr S = *s_node, D;
  struct Release {
    Overlay* self;
    NodePtr s, d;
    ~Release() {
      if (s) self->forget(s.get(), 1);
      if (d) self->forget(d.get(), 1);
    }
  } release{this, S, nullptr};
  if (exchange) {
    auto d_node = hold(p2, n2, *dst);
    if (!d_node) return fail(d_node.error());
    D = *d_node;
    release.d = D;
  }

  STRATA_TRY(copy_up(S));
  if (D) STRATA_TRY(copy_up(D));
  STRATA_TRY(copy_up(p2));
  const int u1 = upper_fd_of(*p1), u2 = upper_fd_of(*p2);
  if (src_dir) STRATA_TRY(mark_dir_for_move(S, p2, n2));
  if (D && dst_dir) STRATA_TRY(mark_dir_for_move(D, p1, n1));

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

  {
    std::lock_guard lock(S->mu);
    S->parent = p2;
    S->name = n2;
  }
  if (D) {
    std::lock_guard lock(D->mu);
    D->parent = p1;
    D->name = n1;
  }
  if (tracer_ && tracer_->on(kTraceRename))
    tracer_->emit(kTraceRename, fmt::format("{} -> {}{}", child_path(*p1, n1), path_of(*S), exchange ? " (exchange)" : ""),
                  {field("from", child_path(*p1, n1)), field("to", path_of(*S))});
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
  auto loc = locate(node);
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
  return lookup(new_parent, name);
}

}  // namespace strata
