// Metadata-only copy-up (metacopy=on), the kernel overlay's format: a chmod, chown, utimes or
// xattr change of a lower regular file copies its attributes into the upper as a sparse file of
// the same size marked overlay.metacopy, without the data and without an fsync (there is no data
// to make durable). Reads keep going to the lower file; a rename moves the metacopy with a
// redirect to its data (overlay_rename.cpp). The first write (or a truncate or link) copies the
// data into that upper file in place and removes the marker last, after an fsync: a crash before
// that leaves a file that reads as the lower one again.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include <fmt/format.h>

#include "strata/overlay.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

namespace {
constexpr const char* kCapabilityXattr = "security.capability";
}  // namespace

bool Overlay::data_in_upper(const Node& node) const {
  std::lock_guard lock(node.mu);
  if (node.is_dir()) return !node.dir().dirs.empty() && node.dir().dirs.front().layer == 0;
  return node.layer == 0 && node.data_layer < 0;
}

Status Overlay::copy_up_metadata(const NodePtr& node) { return copy_up_impl(node, true, true); }

Status Overlay::copy_up_data(const NodePtr& node, int data_fd) {
  if (in_upper(*node)) return complete_metacopy(node, true, data_fd);
  return copy_up(node);
}

std::string Overlay::metacopy_redirect_for(const NodePtr& node, const NodePtr& parent, std::string_view name) const {
  std::shared_ptr<const std::string> known;
  {
    std::lock_guard lock(node->mu);
    known = node->data_path;
  }
  std::string path;
  if (known) {
    path = *known;
  } else {
    std::lock_guard lock(parent->mu);
    path = parent->dir().lower_path.empty() ? std::string(name) : parent->dir().lower_path + "/" + std::string(name);
  }
  // The kernel refuses redirects longer than its redirect_max (256): copy the data instead.
  return path.size() + 1 > 256 ? std::string() : "/" + path;
}

Status Overlay::complete_metacopy(const NodePtr& node, bool with_data, int data_fd) {
  STRATA_TRY(ensure_writable());
  std::lock_guard copy_lock(copy_up_lock(*node));
  {
    std::lock_guard lock(node->mu);
    if (node->data_layer < 0) return {};  // another request did it meanwhile
  }
  const auto start = std::chrono::steady_clock::now();
  // Both files are opened under the parent's names lock (so the names still mean this node),
  // one after the other: a shared_mutex can't be taken twice by one thread. A rename in between
  // is harmless (it waits for our copy-up lock before it moves a metacopy: overlay_rename.cpp);
  // a link copies up first, which waits for it too.
  UniqueFd upper, data;
  int data_layer = -1;
  {
    auto loc = locate(node);
    if (!loc) return fail(loc.error());
    if (loc->layer != 0) return fail(ESTALE);
    auto fd = loc->name.empty() ? sys::reopen(loc->dirfd, O_WRONLY)
                                : sys::openat(loc->dirfd, loc->name.c_str(), O_WRONLY | O_NOFOLLOW);
    if (!fd) return fail(fd.error());
    upper = std::move(*fd);
  }
  if (with_data) {
    auto loc = locate(node, true, true);
    if (loc && loc->layer != 0) {
      data_layer = loc->layer;
      auto fd = sys::openat(loc->dirfd, loc->name.c_str(), O_RDONLY | O_NOFOLLOW);
      if (!fd) return fail(fd.error());
      data = std::move(*fd);
    } else if (data_fd >= 0) {  // removed while open: its name no longer leads to the data
      auto fd = sys::reopen(data_fd, O_RDONLY);
      if (!fd) return fail(fd.error());
      data = std::move(*fd);
    } else {
      return fail(loc ? ESTALE : loc.error());
    }
  }
  auto before = sys::fstat(upper.get());
  if (!before) return fail(before.error());
  // Writing data drops security.capability (and may drop setuid/setgid): put back what the
  // attributes were, after the data and on the failure path too.
  auto caps = sys::getxattr(upper.get(), "", kCapabilityXattr);
  auto restore_attributes = [&] {
    if (caps) (void)sys::setxattr(upper.get(), "", kCapabilityXattr, *caps);
    if (auto now = sys::fstat(upper.get()); now && (now->st_mode & 07777) != (before->st_mode & 07777))
      (void)::fchmod(upper.get(), before->st_mode & 07777);
    struct timespec times[2] = {before->st_atim, before->st_mtim};
    (void)::futimens(upper.get(), times);
  };
  CopyUpReport report;
  if (with_data) {
    auto copied = copy_file_data(data.get(), upper.get(), before->st_size);
    if (!copied) {
      // Give the space back; the marker stays, so the file still reads as the lower one.
      (void)::ftruncate(upper.get(), 0);
      (void)::ftruncate(upper.get(), before->st_size);
      restore_attributes();
      return fail(copied.error());
    }
    report = *copied;
  } else if (::ftruncate(upper.get(), 0) < 0) {
    return fail_errno();
  }
  restore_attributes();
  if (with_data && !stack_->volatile_mode() && ::fsync(upper.get()) < 0) return fail_errno();
  STRATA_TRY(clear_metacopy(upper.get()));
  (void)clear_redirect(upper.get());  // only a metacopy follows it; a crash before this is harmless
  {
    std::lock_guard lock(node->mu);
    node->data_layer = -1;
    node->data_path.reset();
  }
  report.nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start).count();
  stats_.copyups.fetch_add(1, std::memory_order_relaxed);
  stats_.copyup_bytes.fetch_add(report.bytes, std::memory_order_relaxed);
  if (on_attr_changed) on_attr_changed(node.get());  // st_blocks are the upper file's now
  if (tracer_ && tracer_->on(kTraceCopyup)) {
    std::string path = path_of(*node);
    std::string from = data_layer >= 0 ? fmt::format("lower {} {}", data_layer, stack_->layer(data_layer).path)
                                       : std::string("(none: truncated)");
    tracer_->emit(kTraceCopyup,
                  fmt::format("{}: data copied up from {} into its metacopy in {}: {} bytes by {}{} in {:.3f} ms",
                              path, from, stack_->layer(0).path, report.bytes, report.method,
                              with_data ? "" : " (data skipped: truncated)", report.nanoseconds / 1e6),
                  {field("path", path), field("from_layer", uint64_t(data_layer < 0 ? 0 : data_layer)),
                   field("bytes", report.bytes), field("method", std::string(report.method)),
                   field("ns", report.nanoseconds), field("metacopy", std::string("completed"))});
  }
  return {};
}

}  // namespace strata
