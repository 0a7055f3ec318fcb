#include "open_files.h"

#include <fcntl.h>

#include <fmt/format.h>

#include "strata/sys.h"

namespace strata::fs {

OpenFiles::Binding OpenFiles::bind(const NodePtr& node, int fd, const char* no_passthrough_why) {
  Binding b;
  auto real = sys::fstat(fd);
  if (!real) return b;  // can't tell: normal I/O is always safe on its own
  const bool node_in_upper = overlay_.data_in_upper(*node);
  std::lock_guard lock(mu_);
  State& st = states_[node.get()];
  if (st.opens == 0) {
    st = State{};
    st.dev = real->st_dev;
    st.ino = real->st_ino;
    st.in_upper = node_in_upper;
    if (!S_ISREG(node->type)) {
      b.why_not = "not a regular file";
    } else if (no_passthrough_why) {
      b.why_not = no_passthrough_why;
    } else if (!passthrough_ || !passthrough_->usable()) {
      b.why_not = passthrough_ ? passthrough_->why_not() : "off";
    } else if (int id = passthrough_->open_backing(fd); id > 0) {
      st.passthrough = true;
      st.backing_id = id;
    } else {
      b.why_not = fmt::format("the kernel refused the backing file: {}", sys::errno_text(-id));
    }
  } else if (no_passthrough_why && st.passthrough) {
    // Its writes must come through the daemon, and the kernel would pass them all through:
    // (only if a passthrough open raced in) give the name a fresh inode instead.
    b.outcome = Binding::Rebind;
    return b;
  } else if (st.dev != real->st_dev || st.ino != real->st_ino) {
    if (st.passthrough) {
      // Two files for one inode: the kernel would fail this open (EIO).
      if (st.in_upper && node_in_upper) b.outcome = Binding::Stale;  // we raced a copy-up
      else b.outcome = Binding::Rebind;
      return b;
    }
    b.why_not = "the inode's other open files go through the daemon";
  } else if (!st.passthrough) {
    b.why_not = "the inode's other open files go through the daemon";
  }
  ++st.opens;
  counters_.open_files.fetch_add(1, std::memory_order_relaxed);
  (st.passthrough ? counters_.passthrough_opens : counters_.normal_opens).fetch_add(1, std::memory_order_relaxed);
  b.backing_id = st.passthrough ? st.backing_id : 0;
  return b;
}

void OpenFiles::unbind(const Node* node) {
  std::lock_guard lock(mu_);
  auto it = states_.find(node);
  if (it == states_.end()) return;
  counters_.open_files.fetch_sub(1, std::memory_order_relaxed);
  if (--it->second.opens > 0) return;
  if (it->second.passthrough) passthrough_->close_backing(it->second.backing_id);
  states_.erase(it);
}

bool OpenFiles::must_rebind(const NodePtr& node, int flags) {
  std::lock_guard lock(mu_);
  auto it = states_.find(node.get());
  // Opens without passthrough share the kernel's page cache of the inode: they can't disagree.
  if (it == states_.end() || !it->second.passthrough || it->second.in_upper) return false;
  return is_write_open(flags) || overlay_.data_in_upper(*node);
}

}  // namespace strata::fs
