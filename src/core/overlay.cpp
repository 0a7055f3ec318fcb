#include "strata/overlay.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include <array>
#include <climits>
#include <unistd.h>

#include <fmt/format.h>

#include "strata/fs_util.h"
#include "strata/posix_acl.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

namespace {

// Where an object made aside is built before one rename puts it in the upper: the workdir, or,
// so that it inherits a parent's default ACL as if made in the parent, a private dir in the
// workdir carrying that ACL (removed when done; a crash leaves it to the workdir's cleanup).
class StagingDir {
 public:
  static Result<StagingDir> open(int work, int acl_parent) {
    StagingDir s(work);
    if (acl_parent < 0) return s;
    auto acl = sys::getxattr(acl_parent, "", kAclDefaultXattr);
    if (!acl) return fail(acl.error());
    const std::string name = staging_name("acl");
    if (::mkdirat(work, name.c_str(), 0700) < 0) return fail_errno();
    s.name_ = name;
    auto fd = sys::openat(work, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) return fail(fd.error());
    s.dir_ = std::move(*fd);
    STRATA_TRY(sys::setxattr(s.dir_.get(), "", kAclDefaultXattr, *acl, 0));
    return s;
  }
  StagingDir(StagingDir&& o) noexcept : work_(o.work_), name_(std::exchange(o.name_, {})), dir_(std::move(o.dir_)) {}
  StagingDir& operator=(StagingDir&&) = delete;
  ~StagingDir() {
    if (!name_.empty()) ::unlinkat(work_, name_.c_str(), AT_REMOVEDIR);
  }
  int fd() const { return dir_ ? dir_.get() : work_; }

 private:
  explicit StagingDir(int work) : work_(work) {}
  int work_;
  std::string name_;
  UniqueFd dir_;
};

int empty_flag(const std::string& name) { return name.empty() ? AT_EMPTY_PATH : 0; }

std::string layer_label(const LayerStack& stack, int layer) {
  return layer == 0 ? fmt::format("upper {}", stack.layer(0).path)
                    : fmt::format("lower {} {}", layer, stack.layer(layer).path);
}

}  // namespace

Overlay::Overlay(std::unique_ptr<LayerStack> stack, Tracer* tracer)
    : stack_(std::move(stack)), tracer_(tracer) {
  stats_.lookups_per_layer = std::vector<std::atomic<uint64_t>>(stack_->layer_count());
}

Status Overlay::init() {
  auto res = resolve_root(*stack_);
  if (!res) return fail(res.error());
  const auto& top = res->dirs.front();
  root_ = std::make_shared<Node>(S_IFDIR, presented_ino_of(*stack_, top.layer, top.fd.get(), "", res->st));
  root_->layer = res->layer;
  root_->dir().opaque_layer = res->opaque_layer;
  root_->dir().dirs = std::move(res->dirs);
  root_->nlookup = 1;
  return {};
}

std::string Overlay::path_of(const Node& node) const {
  std::vector<std::string> parts;
  const Node* cur = &node;
  NodePtr hold;
  while (cur) {
    std::lock_guard lock(cur->mu);
    if (!cur->parent) break;
    parts.push_back(cur->name);
    hold = cur->parent;
    cur = hold.get();
  }
  if (parts.empty()) return "/";
  std::string out;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) out += "/" + *it;
  return out;
}

std::string Overlay::child_path(const Node& parent, std::string_view name) const {
  std::string dir = path_of(parent);
  if (dir != "/") dir += '/';
  dir.append(name);
  return dir;
}

int Overlay::layer_of(const Node& node) const {
  std::lock_guard lock(node.mu);
  return node.is_dir() ? (node.dir().dirs.empty() ? -1 : node.dir().dirs.front().layer) : node.layer;
}

DirView Overlay::view_of(const Node& dir) const {
  DirView view;
  std::lock_guard lock(dir.mu);
  view.layers.reserve(dir.dir().dirs.size());
  for (const auto& d : dir.dir().dirs) view.layers.push_back({d.layer, d.fd.get(), d.markers.get()});
  view.lower_path = dir.dir().lower_path;
  return view;
}

int Overlay::upper_fd_of(const Node& dir) const {
  std::lock_guard lock(dir.mu);
  return !dir.dir().dirs.empty() && dir.dir().dirs.front().layer == 0 ? dir.dir().dirs.front().fd.get() : -1;
}

Result<Overlay::Location> Overlay::locate(const NodePtr& node, bool hold_name, bool for_data) const {
  // The layer asked for: the top object's, or for a metacopy file's data, its data file's.
  auto wanted_layer = [&] { return for_data && node->data_layer >= 0 ? node->data_layer : node->layer; };
  for (;;) {
    Location loc;
    {
      std::lock_guard lock(node->mu);
      if (node->is_dir()) {
        if (node->dir().dirs.empty()) return fail(ESTALE);
        loc.dirfd = node->dir().dirs.front().fd.get();
        loc.layer = node->dir().dirs.front().layer;
        return loc;
      }
      loc.layer = wanted_layer();
      if (node->detached) {
        // A removed metacopy file pins its upper (attributes) file only; its data can't be
        // reached by name any more. (Files open on it keep the fd they opened.)
        if (loc.layer != node->layer) return fail(ESTALE);
        loc.dirfd = node->detached.get();
        return loc;
      }
      loc.keep = node->parent;
      loc.name = node->name;
    }
    if (!loc.keep) return fail(ESTALE);
    if (for_data && loc.layer != 0) {
      std::shared_ptr<const std::string> path;
      {
        std::lock_guard lock(node->mu);
        path = node->data_path;
      }
      if (path) {  // a redirected metacopy: walk to its data from the layer root
        auto slash = path->rfind('/');
        std::string dir = slash == std::string::npos ? "" : path->substr(0, slash);
        loc.name = slash == std::string::npos ? *path : path->substr(slash + 1);
        auto fd = open_dir_path(stack_->layer(loc.layer).root.get(), dir);
        if (!fd) return fail(fd.error());
        loc.owned = std::move(*fd);
        loc.dirfd = loc.owned.get();
        return loc;
      }
    }
    if (hold_name) {
      loc.names = std::shared_lock(loc.keep->names_mu());
      std::lock_guard lock(node->mu);
      // Renamed, removed or copied up while we waited for the lock: look again.
      if (node->detached || node->parent != loc.keep || node->name != loc.name || wanted_layer() != loc.layer)
        continue;
    }
    std::lock_guard lock(loc.keep->mu);
    for (const auto& d : loc.keep->dir().dirs)
      if (d.layer == loc.layer) {
        loc.dirfd = d.fd.get();
        return loc;
      }
    return fail(ESTALE);
  }
}

Result<Entry> Overlay::intern(const NodePtr& parent, std::string_view name, Resolution&& res,
                              const MetacopyData* data) {
  const struct stat& st = res.st;
  const bool is_dir = S_ISDIR(st.st_mode);
  uint64_t ino;
  if (is_dir) {
    const auto& top = res.dirs.front();
    ino = presented_ino_of(*stack_, top.layer, top.fd.get(), "", st);
  } else {
    int dirfd = -1;
    {
      std::lock_guard lock(parent->mu);
      for (const auto& d : parent->dir().dirs)
        if (d.layer == res.layer) dirfd = d.fd.get();
    }
    std::string n(name);
    ino = dirfd >= 0 ? presented_ino_of(*stack_, res.layer, dirfd, n.c_str(), st)
                     : stack_->presented_ino(st.st_dev, st.st_ino);
  }
  NodeKey key{st.st_dev, st.st_ino, nullptr, nullptr};
  if (!is_dir && res.layer != 0 && st.st_nlink > 1) {  // lower hard links: one node per name
    key.parent = parent.get();
    key.name = std::make_shared<const std::string>(name);
  }
  bool created = false;
  NodePtr node = table_.intern(key, st.st_mode, [&] {
    created = true;
    auto n = std::make_shared<Node>(st.st_mode & S_IFMT, ino);
    n->parent = parent;
    n->name = name;
    n->layer = res.layer;
    // Only a new node takes it from the lookup: an existing one knows better (a metacopy whose
    // data was copied up after this lookup read the marker).
    if (data) {
      n->data_layer = data->layer;
      if (!data->path.empty()) n->data_path = std::make_shared<const std::string>(data->path);
    }
    if (n->is_dir()) {
      n->dir().dirs = std::move(res.dirs);
      n->dir().lower_path = std::move(res.lower_path);
      n->dir().opaque_layer = res.opaque_layer;
    }
    return n;
  });
  struct stat attr = st;
  {
    std::lock_guard lock(node->mu);
    if (!created && !is_dir && !node->detached) {  // another name of the same file: remember this one
      node->parent = parent;
      node->name = name;
    }
    attr.st_ino = node->ino;
    if (is_dir && node->dir().dirs.size() > 1) attr.st_nlink = 1;  // as the kernel: merged dirs show 1
  }
  present(attr);
  return Entry{std::move(node), attr};
}

Result<Entry> Overlay::lookup(const NodePtr& parent, std::string_view name, int first_lower) {
  std::shared_lock names(parent->names_mu());
  return lookup_locked(parent, name, first_lower);
}

Result<Entry> Overlay::lookup_locked(const NodePtr& parent, std::string_view name, int first_lower) {
  DirView view = view_of(*parent);
  const bool tracing = tracer_ && tracer_->on(kTraceLookup);
  auto res = resolve_child(*stack_, view, name, tracing, tracing ? 0 : first_lower);
  if (!res) return fail(res.error());
  if (res->found) stats_.lookups_per_layer[res->layer].fetch_add(1, std::memory_order_relaxed);
  else stats_.negative_lookups.fetch_add(1, std::memory_order_relaxed);
  // A regular file of the upper may be a metacopy (attributes only), also with metacopy=off: an
  // upper written by the kernel with metacopy=on then still reads right (the kernel itself
  // refuses such files with EPERM). One listxattr per lookup of an upper file; st_blocks can't
  // tell (a small metacopy file whose xattrs need a block of their own looks like data), and
  // empty ones count too: a write into one the kernel left would be lost to the kernel's view.
  std::optional<MetacopyData> metacopy;
  const struct stat& top = res->st;
  if (res->found && res->layer == 0 && S_ISREG(top.st_mode) &&
      has_metacopy(view.layers.front().fd, std::string(name).c_str(), stack_->xattr_prefix())) {
    auto data = resolve_metacopy_data(*stack_, view, name, stack_->xattr_prefix());
    if (!data) {
      if (tracer_ && tracer_->on(kTraceError))
        tracer_->emit(kTraceError, fmt::format("{}: metacopy file in the upper without a data file below: {}",
                                               child_path(*parent, name), sys::errno_text(data.error())),
                      {field("op", std::string("lookup")), field("path", child_path(*parent, name)),
                       field("errno", uint64_t(data.error()))});
      return fail(data.error());
    }
    res->st.st_blocks = data->st.st_blocks;  // the kernel shows the data's blocks too
    metacopy = std::move(*data);
  }
  if (tracing) {
    std::string path = child_path(*parent, name);
    std::string story, verdict = res->found ? "found" : "not found";
    int64_t answered = -1;
    std::string layer_dir = "-";
    for (const auto& v : res->trail) {
      if (!story.empty()) story += "; ";
      story += fmt::format("{}: {}", layer_label(*stack_, v.layer), describe(v.kind));
      if (!v.detail.empty()) story += fmt::format(" ({})", v.detail);
      if (v.kind == LayerVerdict::Whiteout || v.kind == LayerVerdict::AufsWhiteout) {
        if (!res->found) verdict = fmt::format("hidden by whiteout in {}", stack_->layer(v.layer).path);
      }
    }
    int opaque_layer;
    {
      std::lock_guard lock(parent->mu);
      opaque_layer = parent->dir().opaque_layer;
    }
    if (res->found) {
      answered = res->layer;
      layer_dir = stack_->layer(res->layer).path;
      verdict = fmt::format("from layer {} ({})", res->layer, layer_dir);
      if (res->merged) verdict += fmt::format(", merged with {} more", res->dirs.size() - 1);
      if (metacopy)
        verdict += fmt::format(", metadata only (metacopy): data from layer {} ({}{})", metacopy->layer,
                               stack_->layer(metacopy->layer).path,
                               metacopy->path.empty() ? "" : ", redirected to /" + metacopy->path);
    } else if (verdict == "not found") {
      verdict = "not found in any layer";
      if (opaque_layer >= 0 && opaque_layer < stack_->lower_count())
        verdict = fmt::format("not found: below opaque dir {} in {}, the layers under it are not searched",
                              path_of(*parent), stack_->layer(opaque_layer).path);
    }
    if (!res->found && opaque_layer >= 0 && verdict.starts_with("hidden"))
      verdict += fmt::format("; below opaque dir {} in {}", path_of(*parent), stack_->layer(opaque_layer).path);
    tracer_->emit(kTraceLookup, fmt::format("{}: {} [{}]", path, verdict, story),
                  {field("path", path), field("found", std::string(res->found ? "yes" : "no")),
                   TraceField{"layer", std::to_string(answered), true}, field("layer_dir", layer_dir),
                   field("verdict", verdict), field("trail", story)});
  }
  if (!res->found) return fail(ENOENT);
  return intern(parent, name, std::move(*res), metacopy ? &*metacopy : nullptr);
}

Result<struct stat> Overlay::getattr(const NodePtr& node) {
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  auto st = sys::fstatat(loc->dirfd, loc->name.c_str(), AT_SYMLINK_NOFOLLOW | empty_flag(loc->name));
  if (!st) return st;
  st->st_ino = node->ino;
  if (node->is_dir()) {
    std::lock_guard lock(node->mu);
    if (node->dir().dirs.size() > 1) st->st_nlink = 1;
  } else if (!data_in_upper(*node) && loc->layer == 0) {  // a metacopy: blocks are the data's
    if (loc->names.owns_lock()) loc->names.unlock();
    if (auto data = locate(node, true, true); data && data->layer != 0)
      if (auto dst = sys::fstatat(data->dirfd, data->name.c_str(), AT_SYMLINK_NOFOLLOW | empty_flag(data->name)); dst)
        st->st_blocks = dst->st_blocks;
  }
  present(*st);
  return st;
}

Result<std::string> Overlay::readlink(const NodePtr& node) {
  auto loc = locate(node);
  if (!loc) return fail(loc.error());
  return sys::readlinkat(loc->dirfd, loc->name.c_str());
}

bool Overlay::in_upper(const Node& node) const {
  std::lock_guard lock(node.mu);
  return node.is_dir() ? (!node.dir().dirs.empty() && node.dir().dirs.front().layer == 0) : node.layer == 0;
}

void Overlay::retire_node(const NodePtr& node) {
  // Out of the table: the next lookup of the name makes a new node. The kernel's references to
  // this one (and its open files) stay valid until it forgets them. Renames and unlinks update
  // only the node in the table, so a retired one is pinned to its object by an fd of its own.
  if (!node->is_dir()) {
    if (auto loc = locate(node); loc && !loc->name.empty()) {
      if (auto fd = sys::openat(loc->dirfd, loc->name.c_str(), O_PATH | O_NOFOLLOW); fd) {
        std::lock_guard lock(node->mu);
        if (!node->detached) node->detached = std::move(*fd);
      }
    }
  }
  table_.unhash(node.get());
}

Status Overlay::copy_up_and_split(const NodePtr& node, bool with_data) {
  if (node->is_dir()) return fail(EISDIR);
  int old_layer = -1;
  UniqueFd pinned;
  if (!data_in_upper(*node)) {
    auto loc = locate(node, true, true);  // a metacopy's old open files use its lower data file
    if (!loc) return fail(loc.error());
    old_layer = loc->layer;
    auto fd = loc->name.empty() ? sys::reopen(loc->dirfd, O_PATH)
                                : sys::openat(loc->dirfd, loc->name.c_str(), O_PATH | O_NOFOLLOW);
    if (fd) pinned = std::move(*fd);
  }  // (the names lock is released here: copy_up takes it)
  STRATA_TRY(copy_up(node, with_data));
  if (pinned) {
    std::lock_guard lock(node->mu);
    if (!node->detached) {  // (removed meanwhile: it keeps the fd it got then)
      node->detached = std::move(pinned);
      node->layer = old_layer;
    }
  }
  retire_node(node);  // after the pin: a detached fd, once set, is never replaced
  return {};
}

Status Overlay::ensure_writable() const {
  // An upper opened without a workdir (the offline tool's way) is read, never written.
  if (!stack_->has_upper() || stack_->work_fd() < 0) return fail(EROFS);
  return {};
}

std::mutex& Overlay::copy_up_lock(const Node& node) {
  // Striped rather than one per node: a mutex per node costs 40 bytes on every file the kernel
  // holds, and copy-ups are rare. Never two held at once (a parent's copy-up is finished before
  // its child's lock is taken), so two nodes sharing a stripe can't deadlock.
  static std::array<std::mutex, 64> stripes;
  return stripes[(reinterpret_cast<uintptr_t>(&node) >> 4) % stripes.size()];
}

Status Overlay::copy_up(const NodePtr& node, bool with_data) { return copy_up_impl(node, with_data, false); }

Status Overlay::copy_up_impl(const NodePtr& node, bool with_data, bool metadata_only) {
  STRATA_TRY(ensure_writable());
  NodePtr parent;
  bool metacopy = false;
  auto in_upper = [&] {
    std::lock_guard lock(node->mu);
    parent = node->parent;
    metacopy = node->data_layer >= 0;
    return node->is_dir() ? (!node->dir().dirs.empty() && node->dir().dirs.front().layer == 0) : node->layer == 0;
  };
  if (in_upper()) return metacopy && !metadata_only ? complete_metacopy(node, with_data) : Status{};
  if (!parent) return fail(EIO);  // the root is always in the upper of a writable mount
  STRATA_TRY(copy_up(parent, true));
  std::unique_lock copy_lock(copy_up_lock(*node));
  if (in_upper()) {
    if (!metacopy || metadata_only) return {};
    copy_lock.unlock();  // complete_metacopy takes it
    return complete_metacopy(node, with_data);
  }
  {
    std::lock_guard lock(node->mu);
    if (node->detached) return fail(ESTALE);  // removed from the tree: nothing to copy it to
  }
  // No names lock: a lower object's name can't change before its copy-up (rename and link copy
  // up first, under its copy-up lock), and the placement below takes the parent's names lock.
  auto src = locate(node, false);
  if (!src) return fail(src.error());
  int upper_parent = upper_fd_of(*parent);
  if (upper_parent < 0) return fail(EIO);
  std::string name;
  {
    std::lock_guard lock(node->mu);
    name = node->name;
  }
  auto st = sys::fstatat(src->dirfd, src->name.c_str(), AT_SYMLINK_NOFOLLOW | empty_flag(src->name));
  if (!st) return fail(st.error());
  CopyUpRequest req;
  req.src_dirfd = src->dirfd;
  req.src_name = src->name;
  req.src_st = *st;
  req.dst_dirfd = upper_parent;
  req.dst_name = name;
  req.with_data = with_data;
  // Copying up one name of a lower hard-link group breaks the link (as the kernel's index=off):
  // that name gets an inode number of its own.
  const bool breaks_link = !node->is_dir() && st->st_nlink > 1;
  // Metadata only for regular files (empty ones too, as the kernel); not for a hard-link group
  // (its copied name becomes an inode of its own: simpler with its own data).
  req.metadata_only = metadata_only && stack_->metacopy() && S_ISREG(st->st_mode) && !breaks_link;
  req.presented_ino = breaks_link ? 0 : node->ino.load();
  // The rename into the parent changes the parent's times; the merged view did not change, so
  // put them back afterwards (the kernel overlay does the same).
  auto staged = stage_copy_up(*stack_, req);
  auto report_failure = [&](int err) -> Status {
    if (tracer_ && tracer_->on(kTraceError))
      tracer_->emit(kTraceError, fmt::format("copy-up of {} failed: {}", path_of(*node), sys::errno_text(err)),
                    {field("op", std::string("copyup")), field("path", path_of(*node)),
                     field("errno", uint64_t(err))});
    return fail(err);
  };
  if (!staged) return report_failure(staged.error());
  const CopyUpReport report = staged->report;
  {
    // Placing the copy and switching the node to it is one step for lookups in the parent.
    std::unique_lock names(parent->names_mu());
    {
      std::lock_guard lock(node->mu);
      // Removed meanwhile (its name is a whiteout or another object now): nothing to place.
      if (node->detached || node->unlinked) return fail(ESTALE);
    }
    auto parent_before = sys::fstat(upper_parent);
    if (auto r = staged->place(upper_parent, name); !r) return report_failure(r.error());
    if (parent_before) {
      struct timespec times[2] = {parent_before->st_atim, parent_before->st_mtim};
      ::futimens(upper_parent, times);
    }
    auto upper_st = sys::fstatat(upper_parent, name.c_str());
    if (!upper_st) return fail(upper_st.error());
    if (node->is_dir()) {
      auto fd = sys::openat(upper_parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!fd) return fail(fd.error());
      std::lock_guard lock(node->mu);
      node->dir().dirs.insert(node->dir().dirs.begin(), DirLayer{0, std::move(*fd), nullptr});
      node->layer = 0;
    } else {
      std::lock_guard lock(node->mu);
      node->layer = 0;
      node->data_layer = req.metadata_only ? src->layer : -1;
    }
    if (breaks_link) node->ino = stack_->presented_ino(upper_st->st_dev, upper_st->st_ino);
    table_.rekey(node.get(), NodeKey{upper_st->st_dev, upper_st->st_ino, nullptr, nullptr});
  }
  if (breaks_link && on_listing_changed) on_listing_changed(parent.get());  // its d_ino changed
  stats_.copyups.fetch_add(1, std::memory_order_relaxed);
  stats_.copyup_bytes.fetch_add(report.bytes, std::memory_order_relaxed);
  if (on_attr_changed) on_attr_changed(node.get());  // dirs: nlink (now merged); all: ctime
  if (tracer_ && tracer_->on(kTraceCopyup)) {
    std::string path = path_of(*node);
    double ms = report.nanoseconds / 1e6;
    tracer_->emit(kTraceCopyup,
                  fmt::format("{}: copied up from {} to {}: {} bytes by {}{} in {:.3f} ms", path,
                              layer_label(*stack_, src->layer), stack_->layer(0).path, report.bytes,
                              report.method,
                              req.metadata_only ? " (metadata only: metacopy, the data stays below until written)"
                              : with_data       ? ""
                                                : " (data skipped: truncated)",
                              ms),
                  {field("path", path), field("from_layer", uint64_t(src->layer)),
                   field("from_dir", stack_->layer(src->layer).path), field("bytes", report.bytes),
                   field("method", std::string(report.method)), field("ns", report.nanoseconds)});
  }
  return {};
}

Status Overlay::fix_owner(int dirfd, const char* name, const NodePtr& parent, Caller who, mode_t mode,
                          bool is_link) {
  who.uid = uid_map_.to_disk(who.uid);
  who.gid = gid_map_.to_disk(who.gid);
  gid_t gid = who.gid;
  int upper_parent = upper_fd_of(*parent);
  auto pst = sys::fstat(upper_parent);
  if (pst && (pst->st_mode & S_ISGID)) {
    gid = pst->st_gid;  // BSD group semantics of a setgid directory
    if (S_ISDIR(mode)) mode |= S_ISGID;
  }
  auto st = sys::fstatat(dirfd, name);
  if (!st) return fail(st.error());
  if (st->st_uid != who.uid || st->st_gid != gid)
    if (::fchownat(dirfd, name, who.uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return fail_errno();
  // chown clears setuid/setgid, and mkdir ignores S_ISGID: set the set-id bits last, keeping
  // the permission bits the object was made with (a default ACL may have narrowed them).
  const mode_t wanted = (st->st_mode & 0777) | (mode & 07000);
  if (!is_link && (mode & 07000) && (st->st_mode & 07777) != wanted)
    if (::fchmodat(dirfd, name, wanted, 0) < 0) return fail_errno();
  return {};
}

void Overlay::note_whiteout(const NodePtr& parent, std::string_view name, const char* how) {
  stats_.whiteouts.fetch_add(1, std::memory_order_relaxed);
  if (!tracer_ || !tracer_->on(kTraceWhiteout)) return;
  std::string path = child_path(*parent, name);
  tracer_->emit(kTraceWhiteout,
                fmt::format("{}: whiteout written in upper {} ({}) to hide the lower layers' {}", path,
                            stack_->layer(0).path, how, std::string(name)),
                {field("path", path), field("upper", stack_->layer(0).path), field("form", std::string(how))});
}

template <class MakeFn>
Result<Entry> Overlay::create_object(const NodePtr& parent, std::string_view name_view, bool is_dir,
                                     Caller who, mode_t mode, bool is_link, MakeFn make) {
  STRATA_TRY(ensure_writable());
  if (name_view.size() > NAME_MAX) return fail(ENAMETOOLONG);
  if (is_aufs_marker_name(name_view)) return fail(EINVAL);  // would be read back as a marker
  STRATA_TRY(copy_up(parent));
  std::unique_lock names(parent->names_mu());
  const std::string name(name_view);
  const int up = upper_fd_of(*parent);
  const int work = stack_->work_fd();
  // POSIX: under a default ACL a new object takes its permissions from the ACL (the upper
  // filesystem does that when we create in the parent) and the umask does not apply.
  const bool default_acl = !is_link && has_default_acl(up);
  if (!default_acl && !is_link) mode &= ~who.umask;
  bool over_whiteout = false, over_aufs = false;
  if (auto st = sys::fstatat(up, name.c_str()); st) {
    if (!is_whiteout(*st)) return fail(EEXIST);
    over_whiteout = true;
  } else if (st.error() != ENOENT) {
    return fail(st.error());
  } else {
    over_aufs = has_aufs_whiteout(up, name);
    // The VFS only creates names its lookup found absent, but the core answers for itself: a
    // name that a lower layer shows exists (cheap: negative fstatats in the lower dirs).
    if (!over_aufs && lower_has_name(*stack_, view_of(*parent), name)) return fail(EEXIST);
  }
  if (!over_whiteout) {
    STRATA_TRY(make(up, name.c_str(), mode));
    if (auto r = fix_owner(up, name.c_str(), parent, who, mode, is_link); !r) {
      remove_tree(up, name.c_str());
      return fail(r.error());
    }
    if (over_aufs) {
      if (is_dir) {
        auto fd = sys::openat(up, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fd) set_opaque(*stack_, fd->get());
      }
      ::unlinkat(up, (std::string(kAufsWhiteoutPrefix) + name).c_str(), 0);
    }
  } else {
    // Build it aside, then swap it with the whiteout in one rename. The workdir hands down no
    // default ACL: under a parent with one, build it in a staging dir that carries the parent's.
    auto stage = StagingDir::open(work, default_acl ? up : -1);
    if (!stage) return fail(stage.error());
    const int sdir = stage->fd();
    const std::string tmp = staging_name("new");
    STRATA_TRY(make(sdir, tmp.c_str(), mode));
    auto undo = [&](int err) -> Result<Entry> {
      remove_tree(sdir, tmp.c_str());
      return fail(err);
    };
    if (auto r = fix_owner(sdir, tmp.c_str(), parent, who, mode, is_link); !r) return undo(r.error());
    if (is_dir) {
      auto fd = sys::openat(sdir, tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!fd) return undo(fd.error());
      if (auto r = set_opaque(*stack_, fd->get()); !r) return undo(r.error());
      stats_.opaque_dirs.fetch_add(1, std::memory_order_relaxed);
      if (auto r = sys::renameat2(sdir, tmp.c_str(), up, name.c_str(), RENAME_EXCHANGE); !r) return undo(r.error());
      ::unlinkat(sdir, tmp.c_str(), 0);  // the whiteout it replaced
      if (tracer_ && tracer_->on(kTraceOpaque)) {
        std::string path = child_path(*parent, name);
        tracer_->emit(kTraceOpaque,
                      fmt::format("{}: new directory over a whiteout made opaque ({}overlay.opaque=y in upper {}): "
                                  "nothing below shows through",
                                  path, stack_->xattr_prefix(), stack_->layer(0).path),
                      {field("path", path), field("upper", stack_->layer(0).path)});
      }
    } else {
      if (auto r = sys::renameat2(sdir, tmp.c_str(), up, name.c_str(), 0); !r) return undo(r.error());
    }
  }
  return lookup_locked(parent, name);
}

Result<Entry> Overlay::mknod(const NodePtr& parent, std::string_view name, mode_t mode, dev_t rdev, Caller who) {
  // A 0/0 character device is a whiteout: through the mount it can't be made (as in the kernel).
  if (S_ISCHR(mode) && rdev == 0) return fail(EPERM);
  return create_object(parent, name, false, who, mode, false, [&](int dirfd, const char* n, mode_t m) -> Status {
    if (::mknodat(dirfd, n, m, rdev) < 0) return fail_errno();
    return {};
  });
}

Result<Entry> Overlay::mkdir(const NodePtr& parent, std::string_view name, mode_t mode, Caller who) {
  return create_object(parent, name, true, who, mode | S_IFDIR, false, [&](int dirfd, const char* n, mode_t m) -> Status {
    if (::mkdirat(dirfd, n, m & 07777) < 0) return fail_errno();
    return {};
  });
}

Result<Entry> Overlay::symlink(const NodePtr& parent, std::string_view name, const std::string& target,
                               Caller who) {
  return create_object(parent, name, false, who, S_IFLNK | 0777, true, [&](int dirfd, const char* n, mode_t) -> Status {
    if (::symlinkat(target.c_str(), dirfd, n) < 0) return fail_errno();
    return {};
  });
}

Result<std::pair<Entry, UniqueFd>> Overlay::create(const NodePtr& parent, std::string_view name, mode_t mode,
                                                    int flags, Caller who) {
  UniqueFd fd;
  int open_flags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) | O_CREAT | O_EXCL | O_NOFOLLOW;
  auto entry = create_object(parent, name, false, who, mode | S_IFREG, false, [&](int dirfd, const char* n, mode_t m) -> Status {
    auto r = sys::openat(dirfd, n, open_flags, m & 07777);
    if (!r) return fail(r.error());
    fd = std::move(*r);
    return {};
  });
  if (!entry) return fail(entry.error());
  return std::pair<Entry, UniqueFd>{std::move(*entry), std::move(fd)};
}

void Overlay::detach_node_at(int upper_dirfd, const std::string& name, const Node* parent) {
  auto st = sys::fstatat(upper_dirfd, name.c_str());
  if (!st) return;
  NodePtr node = table_.find(NodeKey{st->st_dev, st->st_ino, nullptr, nullptr});
  if (!node) return;
  std::lock_guard lock(node->mu);
  if (node->is_dir()) {
    node->unlinked = true;
    return;
  }
  if (node->detached || node->parent.get() != parent || node->name != name) return;
  if (auto fd = sys::openat(upper_dirfd, name.c_str(), O_PATH | O_NOFOLLOW); fd) node->detached = std::move(*fd);
}

Status Overlay::whiteout_upper_entry(int up, const std::string& name) {
  const int work = stack_->work_fd();
  if (stack_->chardev_whiteouts()) {
    // The kernel's way: a whiteout made aside and swapped in, so the name never shows the lower
    // object in between, even across a crash.
    const std::string tmp = staging_name("whiteout");
    auto made = stack_->link_whiteout(work, tmp.c_str());
    if (!made && ::mknodat(work, tmp.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0) made = {};
    if (made) {
      if (auto r = sys::renameat2(work, tmp.c_str(), up, name.c_str(), RENAME_EXCHANGE); !r) {
        ::unlinkat(work, tmp.c_str(), 0);
        return r;
      }
      return remove_tree(work, tmp.c_str());
    }
    if (made.error() != EPERM) return made;
  }
  // `.wh.` markers: the marker first (beside the entry it only hides the lower layers), then the
  // entry goes in one step (a directory is moved into the staging dir and removed there): a
  // crash in between leaves the old entry, never the lower object or a half-emptied directory.
  STRATA_TRY(make_aufs_whiteout(up, name));
  auto st = sys::fstatat(up, name.c_str());
  if (!st) return st.error() == ENOENT ? Status{} : fail(st.error());
  if (!S_ISDIR(st->st_mode)) {
    if (::unlinkat(up, name.c_str(), 0) < 0 && errno != ENOENT) return fail_errno();
    return {};
  }
  const std::string tmp = staging_name("rmdir");
  STRATA_TRY(sys::renameat2(up, name.c_str(), work, tmp.c_str(), 0));
  return remove_tree(work, tmp.c_str());
}

Status Overlay::empty_upper_dir(int up, const std::string& name) {
  auto dir = sys::openat(up, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dir) return fail(dir.error());
  auto entries = sys::openat(dir->get(), ".", O_RDONLY | O_DIRECTORY);
  if (!entries) return fail(entries.error());
  DIR* stream = ::fdopendir(entries->release());
  if (!stream) return fail_errno();
  bool empty = true;
  while (struct dirent* e = ::readdir(stream)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(stream);
  if (empty) return {};
  const int work = stack_->work_fd();
  const std::string tmp = staging_name("empty");
  if (::mkdirat(work, tmp.c_str(), 0700) < 0) return fail_errno();
  auto undo = [&](int err) -> Status {
    remove_tree(work, tmp.c_str());
    return fail(err);
  };
  auto fresh = sys::openat(work, tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fresh) return undo(fresh.error());
  if (auto r = set_opaque(*stack_, fresh->get()); !r) return undo(r.error());
  if (auto r = sys::renameat2(work, tmp.c_str(), up, name.c_str(), RENAME_EXCHANGE); !r) return undo(r.error());
  return remove_tree(work, tmp.c_str());
}

Status Overlay::clear_dir_in_upper(int up, const std::string& name) {
  // Remove an upper directory whose merged view is empty but which may still hold whiteouts.
  if (::unlinkat(up, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT) return {};
  if (errno != ENOTEMPTY && errno != EEXIST) return fail_errno();
  const std::string tmp = staging_name("rmdir");
  STRATA_TRY(sys::renameat2(up, name.c_str(), stack_->work_fd(), tmp.c_str(), 0));
  return remove_tree(stack_->work_fd(), tmp.c_str());
}

Status Overlay::require_empty_dir(const Resolution& dir) const {
  DirView view;
  for (const auto& d : dir.dirs) view.layers.push_back({d.layer, d.fd.get(), d.markers.get()});
  auto entries = read_merged_dir(*stack_, view, true);
  if (!entries) return fail(entries.error());
  if (!entries->empty()) return fail(ENOTEMPTY);
  return {};
}

Status Overlay::remove_entry(const NodePtr& parent, std::string_view name_view, bool want_dir) {
  STRATA_TRY(ensure_writable());
  const std::string name(name_view);
  auto removable = [&]() -> Result<Resolution> {
    auto res = resolve_child(*stack_, view_of(*parent), name, false);
    if (!res) return fail(res.error());
    if (!res->found) return fail(ENOENT);
    const bool is_dir = S_ISDIR(res->st.st_mode);
    if (want_dir && !is_dir) return fail(ENOTDIR);
    if (!want_dir && is_dir) return fail(EISDIR);
    if (is_dir) STRATA_TRY(require_empty_dir(*res));
    return res;
  };
  if (!in_upper(*parent)) {
    // A refused removal copies nothing up (as in the kernel): check before the parent's copy-up,
    // which can't run under the names lock.
    if (auto r = removable(); !r) return fail(r.error());
    STRATA_TRY(copy_up(parent));
  }
  std::unique_lock names(parent->names_mu());
  auto res = removable();
  if (!res) return fail(res.error());
  const bool is_dir = S_ISDIR(res->st.st_mode);
  const int up = upper_fd_of(*parent);
  const bool need_whiteout = lower_has_name(*stack_, view_of(*parent), name);

  // The node for this name, if the kernel holds one: it leaves the tree.
  NodeKey key{res->st.st_dev, res->st.st_ino, nullptr, nullptr};
  if (!is_dir && res->layer != 0 && res->st.st_nlink > 1) {
    key.parent = parent.get();
    key.name = std::make_shared<const std::string>(name);
  }
  NodePtr node = table_.find(key);

  if (res->layer == 0) {
    detach_node_at(up, name, parent.get());
    if (need_whiteout) {
      STRATA_TRY(whiteout_upper_entry(up, name));
      note_whiteout(parent, name, stack_->chardev_whiteouts() ? "char device 0/0, swapped in" : ".wh. file");
    } else if (is_dir) {
      STRATA_TRY(clear_dir_in_upper(up, name));
    } else if (::unlinkat(up, name.c_str(), 0) < 0) {
      return fail_errno();
    }
  } else {
    STRATA_TRY(make_whiteout(*stack_, up, name.c_str()));
    note_whiteout(parent, name, stack_->chardev_whiteouts() ? "char device 0/0" : ".wh. file");
  }
  if (node && (is_dir || res->layer != 0 || res->st.st_nlink <= 1)) {
    {
      std::lock_guard lock(node->mu);
      node->unlinked = true;
    }
    table_.unhash(node.get());
  }
  return {};
}

Status Overlay::unlink(const NodePtr& parent, std::string_view name) { return remove_entry(parent, name, false); }
Status Overlay::rmdir(const NodePtr& parent, std::string_view name) { return remove_entry(parent, name, true); }

}  // namespace strata
