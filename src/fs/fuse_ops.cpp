#include "fuse_ops.h"

#include "caller_creds.h"
#include "fd_budget.h"

#include <fcntl.h>
#include <dirent.h>
#include <sys/file.h>
#include <unistd.h>

#include <malloc.h>

#include <cstring>
#include <new>
#include <optional>
#include <thread>
#include <string>

#include "strata/log.h"
#include "strata/posix_acl.h"
#include "strata/trace.h"

#include <fmt/format.h>
#include "strata/sys.h"

namespace strata::fs {

namespace {

Daemon& daemon_of(fuse_req_t req) { return *static_cast<Daemon*>(fuse_req_userdata(req)); }

NodePtr node_of(fuse_req_t req, fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return daemon_of(req).overlay->root();
  return reinterpret_cast<Node*>(ino)->shared_from_this();
}

struct FileHandle {
  FileHandle(UniqueFd f, NodePtr n, bool follow_copy_up)
      : fd(std::move(f)), node(std::move(n)), read_fd(fd.get()), on_lower(follow_copy_up) {}
  UniqueFd fd;
  NodePtr node;
  // A read-only open of a lower file (served by the daemon, not passthrough) follows its file
  // when it is copied up, as in the kernel overlay (4.19+): reads switch to the upper copy.
  std::atomic<int> read_fd;
  std::atomic<bool> on_lower;
  std::mutex mu;
  UniqueFd upper_fd;
  // metacopy=on: opened for writing with the data still below (Overlay::open's defer_data).
  // Whatever writes through fd, or reads it directly, first has the data copied (ensure_data);
  // reads go to lower_fd (the data) until then, like a read-only open that follows a copy-up.
  std::atomic<bool> data_deferred{false};
  UniqueFd lower_fd;
  std::atomic<int> in_use{0};  // requests using this file right now (see InUse)
};

// Marks a request that uses an open file. The kernel sends RELEASE only after the file's last
// request was answered, so release never waits in practice; this makes that ordering explicit
// in the daemon (and visible to ThreadSanitizer, which cannot see it through the kernel).
class InUse {
 public:
  explicit InUse(FileHandle* fh) : fh_(fh) { fh_->in_use.fetch_add(1, std::memory_order_acquire); }
  ~InUse() { fh_->in_use.fetch_sub(1, std::memory_order_release); }
  InUse(const InUse&) = delete;
  InUse& operator=(const InUse&) = delete;

 private:
  FileHandle* fh_;
};

constexpr const char* kStatsXattr = "user.strata.stats";
constexpr const char* kLayersXattr = "user.strata.layers";  // see check_no_recursion (main.cpp)

void track(Daemon& d, FileHandle* fh) {
  std::lock_guard lock(d.handles_mu);
  d.open_file_handles.insert(fh);
}
void untrack(Daemon& d, FileHandle* fh) {
  std::lock_guard lock(d.handles_mu);
  d.open_file_handles.erase(fh);
}

FileHandle* file_of(struct fuse_file_info* fi) { return reinterpret_cast<FileHandle*>(fi->fh); }

// Before a request writes through (or reads directly from) an open file whose data copy-up was
// deferred: copy the data now. 0 or an errno for the reply.
int ensure_data(Daemon& d, FileHandle* fh) {
  if (!fh->data_deferred.load(std::memory_order_acquire)) return 0;
  if (auto r = d.overlay->copy_up_data(fh->node, fh->lower_fd.get()); !r) return r.error();
  fh->data_deferred.store(false, std::memory_order_release);
  return 0;
}

// Every handler body runs inside this: bad_alloc becomes ENOMEM, anything else EIO and a log line.
template <class F>
void guarded(fuse_req_t req, const char* op, F&& body) {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    log_error("{}: internal error: {}", op, e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    log_error("{}: internal error", op);
    fuse_reply_err(req, EIO);
  }
}

// Run a core call; if it ran out of descriptors, let the fd budget shed cached nodes and run it
// once more, so that EMFILE does not reach the user while the kernel holds unused entries.
template <class F>
auto with_fd_room(Daemon& d, F&& call) {
  auto r = call();
  if (!r && (r.error() == EMFILE || r.error() == ENFILE) && d.fd_budget) {
    d.fd_budget->wait_for_room();
    r = call();
  }
  return r;
}

Caller caller_of(fuse_req_t req) {
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->uid, ctx->gid, daemon_of(req).acl ? (ctx->umask & 0777) : 0};
}

struct fuse_entry_param entry_param(fuse_req_t req, const Entry& e) {
  Daemon& d = daemon_of(req);
  struct fuse_entry_param p;
  std::memset(&p, 0, sizeof p);
  p.ino = nodeid_of(d, e.node.get());
  p.attr = e.attr;
  p.attr_timeout = d.timeout;
  p.entry_timeout = d.timeout;
  return p;
}

void reply_entry(fuse_req_t req, const Result<Entry>& e) {
  if (!e) {
    fuse_reply_err(req, e.error());
    return;
  }
  auto p = entry_param(req, *e);
  if (fuse_reply_entry(req, &p) == -ENOENT)  // the request was interrupted: undo the lookup
    daemon_of(req).overlay->forget(e->node.get(), 1);
}

void reply_status(fuse_req_t req, const Status& s) { fuse_reply_err(req, s ? 0 : s.error()); }

void op_init(void* userdata, struct fuse_conn_info* conn) {
  Daemon& d = *static_cast<Daemon*>(userdata);
  auto want = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // No FUSE_CAP_ATOMIC_O_TRUNC: with it the kernel skips the setattr that clears setuid/setgid
  // when a non-owner truncates on open (found by hardening_perms). Without it open(O_TRUNC)
  // is an open plus a truncate to 0, and the truncate copies a lower file up without its data.
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  // No opendir: the kernel skips OPENDIR and RELEASEDIR and caches every listing (it drops a
  // cached listing when it changes the directory; the daemon tells it when it did).
  want(FUSE_CAP_NO_OPENDIR_SUPPORT);
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // libfuse asks for these by default. HANDLE_KILLPRIV would tell the kernel that we clear
  // setuid/setgid on writes and truncates by non-owners; the kernel does it right (its rules,
  // its credential checks), so leave it to the kernel (found by hardening_perms).
  conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ATOMIC_O_TRUNC);
  // POSIX ACLs: the kernel checks them (as the kernel overlay does through the real inodes) and
  // caches them per inode; every change of one comes through us (SETXATTR, or SETATTR of the
  // mode, which the upper filesystem folds into the ACL), and the kernel drops its cache then.
  // Inheriting a parent's default ACL is ours: with DONT_MASK the kernel sends the mode without
  // the umask and the umask beside it (create_object applies it unless a default ACL rules).
  conn->want &= ~(FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK);
  if (d.want_acl && (conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK)) {
    conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
    d.acl = true;
  }
  conn->max_write = 1u << 20;
  if (d.passthrough) d.passthrough->negotiate(conn);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "lookup", [&] {
    Daemon& d = daemon_of(req);
    auto e = with_fd_room(d, [&] { return d.overlay->lookup(node_of(req, parent), name); });
    if (e && d.fd_budget) d.fd_budget->note_growth();
    if (!e && e.error() == ENOENT) {
      // A negative entry the kernel may cache: all changes to the tree come through us.
      struct fuse_entry_param p;
      std::memset(&p, 0, sizeof p);
      p.entry_timeout = d.timeout;
      fuse_reply_entry(req, &p);
      return;
    }
    reply_entry(req, e);
  });
}

// When the kernel has forgotten most of the nodes it held (memory pressure, drop_caches, the end
// of a big walk), give the freed memory back: free() keeps it for reuse otherwise, and a daemon
// that walked a large tree once would hold that much for the rest of its life.
void trim_after_forgets(Daemon& d) {
  const size_t held = d.overlay->table().size();
  size_t peak = d.nodes_peak.load(std::memory_order_relaxed);
  while (held > peak && !d.nodes_peak.compare_exchange_weak(peak, held, std::memory_order_relaxed)) {
  }
  if (peak >= kTrimMinNodes && held < peak / 4 && d.nodes_peak.compare_exchange_strong(peak, held)) ::malloc_trim(0);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Daemon& d = daemon_of(req);
  if (ino != FUSE_ROOT_ID) d.overlay->forget(reinterpret_cast<Node*>(ino), nlookup);
  fuse_reply_none(req);
  trim_after_forgets(d);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data* forgets) {
  Daemon& d = daemon_of(req);
  for (size_t i = 0; i < count; ++i)
    if (forgets[i].ino != FUSE_ROOT_ID) d.overlay->forget(reinterpret_cast<Node*>(forgets[i].ino), forgets[i].nlookup);
  fuse_reply_none(req);
  trim_after_forgets(d);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  guarded(req, "getattr", [&] {
    Daemon& d = daemon_of(req);
    NodePtr node = node_of(req, ino);
    auto st = d.overlay->getattr(node);
    if (!st && fi && !node->is_dir() && file_of(fi)) {  // unlinked but open: ask the open file
      InUse use(file_of(fi));
      st = sys::fstat(file_of(fi)->fd.get());
      if (st) {
        st->st_ino = node->ino;
        d.overlay->present(*st);
      }
    }
    if (!st) return (void)fuse_reply_err(req, st.error());
    fuse_reply_attr(req, &*st, d.timeout);
  });
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, struct fuse_file_info* fi) {
  guarded(req, "setattr", [&] {
    Daemon& d = daemon_of(req);
    AttrChange c;
    c.mode = to_set & FUSE_SET_ATTR_MODE;
    c.uid = to_set & FUSE_SET_ATTR_UID;
    c.gid = to_set & FUSE_SET_ATTR_GID;
    c.size = to_set & FUSE_SET_ATTR_SIZE;
    c.atime = to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW);
    c.mtime = to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW);
    c.atime_now = to_set & FUSE_SET_ATTR_ATIME_NOW;
    c.mtime_now = to_set & FUSE_SET_ATTR_MTIME_NOW;
    c.values = *attr;
    NodePtr node = node_of(req, ino);
    FileHandle* fh = fi && !node->is_dir() ? file_of(fi) : nullptr;
    std::optional<InUse> use;
    if (fh) use.emplace(fh);
    int fd = fh ? fh->fd.get() : -1;
    auto st = d.overlay->setattr(node, c, fd);
    if (!st) return (void)fuse_reply_err(req, st.error());
    fuse_reply_attr(req, &*st, d.timeout);
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "readlink", [&] {
    auto target = daemon_of(req).overlay->readlink(node_of(req, ino));
    if (!target) return (void)fuse_reply_err(req, target.error());
    fuse_reply_readlink(req, target->c_str());
  });
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, "mknod", [&] {
    Daemon& d = daemon_of(req);
    reply_entry(req, with_fd_room(d, [&] { return d.overlay->mknod(node_of(req, parent), name, mode, rdev, caller_of(req)); }));
  });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, "mkdir", [&] {
    Daemon& d = daemon_of(req);
    reply_entry(req, with_fd_room(d, [&] { return d.overlay->mkdir(node_of(req, parent), name, mode, caller_of(req)); }));
  });
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guarded(req, "symlink", [&] {
    Daemon& d = daemon_of(req);
    reply_entry(req, with_fd_room(d, [&] { return d.overlay->symlink(node_of(req, parent), name, target, caller_of(req)); }));
  });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guarded(req, "link", [&] {
    reply_entry(req, daemon_of(req).overlay->link(node_of(req, ino), node_of(req, newparent), newname));
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "unlink", [&] {
    Daemon& d = daemon_of(req);
    reply_status(req, with_fd_room(d, [&] { return d.overlay->unlink(node_of(req, parent), name); }));
  });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "rmdir", [&] {
    Daemon& d = daemon_of(req);
    reply_status(req, with_fd_room(d, [&] { return d.overlay->rmdir(node_of(req, parent), name); }));
  });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  guarded(req, "rename", [&] {
    Daemon& d = daemon_of(req);
    reply_status(req, with_fd_room(d, [&] {
      return d.overlay->rename(node_of(req, parent), name, node_of(req, newparent), newname, flags);
    }));
  });
}

// Page-cache policy and passthrough flag of an open reply. The kernel fails a passthrough open
// that also asks to keep the page cache (EIO), and there is no page cache to keep then anyway.
void set_open_flags(struct fuse_file_info* fi, int backing_id) {
  fi->keep_cache = backing_id == 0;  // every change to the file's data comes through this mount
  if (backing_id) Passthrough::arm_reply(backing_id);
}

void trace_open(Daemon& d, const NodePtr& node, int flags, const OpenFiles::Binding& b, bool created) {
  Tracer* t = d.overlay->tracer();
  if (!t || !t->on(kTraceOpen)) return;
  const std::string path = d.overlay->path_of(*node);
  const int layer = d.overlay->layer_of(*node);
  const std::string& dir = d.overlay->stack().layer(layer).path;
  const char* how = created ? "created" : is_write_open(flags) ? "opened for writing" : "opened read-only";
  std::string io = b.backing_id ? "passthrough (reads and writes bypass the daemon)"
                                : fmt::format("through the daemon: {}", b.why_not);
  t->emit(kTraceOpen, fmt::format("{}: {} in layer {} ({}), {}", path, how, layer, dir, io),
          {field("path", path), field("layer", uint64_t(layer)), field("layer_dir", dir),
           field("mode", std::string(is_write_open(flags) ? "write" : "read")),
           field("passthrough", std::string(b.backing_id ? "yes" : "no")), field("why_not", b.why_not)});
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  guarded(req, "open", [&] {
    Daemon& d = daemon_of(req);
    NodePtr node = node_of(req, ino);
    auto rebind = [&]() {
      // The inode's open files use a lower file while this open needs the upper one, and the
      // kernel can't rebind an inode with open files: copy up now (before anything irreversible
      // such as O_TRUNC), give the name a fresh inode and let the VFS walk the path again.
      // Old open files keep the old data.
      if (is_write_open(fi->flags)) {
        if (auto r = d.overlay->copy_up_and_split(node, !(fi->flags & O_TRUNC)); !r)
          return (void)fuse_reply_err(req, r.error());
      } else {
        d.overlay->retire_node(node);
      }
      d.counters.estale_reopens.fetch_add(1, std::memory_order_relaxed);
      fuse_reply_err(req, ESTALE);
    };
    if (d.open_files->must_rebind(node, fi->flags)) return rebind();
    // metacopy=on: a write open of a file whose data is below copies the attributes only; the
    // data follows at the first write (touch never writes). Such an open can't be passthrough:
    // the kernel would write into the file before its data is there.
    const bool defer = d.overlay->stack().metacopy() && is_write_open(fi->flags) && !(fi->flags & O_TRUNC) &&
                       S_ISREG(node->type) && !d.overlay->data_in_upper(*node);
    for (int attempt = 0;; ++attempt) {
      auto fd = with_fd_room(d, [&] { return d.overlay->open(node, fi->flags, defer); });
      if (!fd) return (void)fuse_reply_err(req, fd.error());
      const bool deferred = defer && !d.overlay->data_in_upper(*node);
      UniqueFd lower;  // the data below: read until it is copied, and copied from if the name goes
      if (deferred) {
        auto r = with_fd_room(d, [&] { return d.overlay->open(node, O_RDONLY); });
        if (!r) return (void)fuse_reply_err(req, r.error());
        lower = std::move(*r);
      }
      OpenFiles::Binding b = d.open_files->bind(
          node, fd->get(), deferred ? "metacopy: the data is copied up at the first write, through the daemon" : nullptr);
      if (b.outcome == OpenFiles::Binding::Rebind) return rebind();
      if (b.outcome == OpenFiles::Binding::Stale) {
        if (attempt < 3) continue;
        return (void)fuse_reply_err(req, ESTALE);
      }
      trace_open(d, node, fi->flags, b, false);
      const bool follow = !is_write_open(fi->flags) && b.backing_id == 0 && !d.overlay->data_in_upper(*node);
      auto* fh = new FileHandle(std::move(*fd), node, follow);
      if (deferred) {
        fh->data_deferred = true;
        fh->lower_fd = std::move(lower);
        if ((fi->flags & O_ACCMODE) == O_RDWR) {  // reads take the data below until it is copied up
          fh->read_fd = fh->lower_fd.get();
          fh->on_lower = true;
        }
      }
      track(d, fh);
      fi->fh = reinterpret_cast<uint64_t>(fh);
      set_open_flags(fi, b.backing_id);
      int sent = fuse_reply_open(req, fi);
      Passthrough::disarm_reply();
      if (sent == -ENOENT) {  // interrupted: the kernel never saw this open
        d.open_files->unbind(node.get());
        untrack(d, fh);
        delete fh;
      }
      return;
    }
  });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, struct fuse_file_info* fi) {
  guarded(req, "create", [&] {
    Daemon& d = daemon_of(req);
    auto r = with_fd_room(d, [&] { return d.overlay->create(node_of(req, parent), name, mode, fi->flags, caller_of(req)); });
    if (!r) return (void)fuse_reply_err(req, r.error());
    auto& [entry, fd] = *r;
    OpenFiles::Binding b = d.open_files->bind(entry.node, fd.get());
    if (b.outcome != OpenFiles::Binding::Bound) {  // a brand-new file can't have other opens
      d.overlay->forget(entry.node.get(), 1);
      return (void)fuse_reply_err(req, EIO);
    }
    trace_open(d, entry.node, fi->flags, b, true);
    auto* fh = new FileHandle(std::move(fd), entry.node, false);
    track(d, fh);
    fi->fh = reinterpret_cast<uint64_t>(fh);
    auto p = entry_param(req, entry);
    set_open_flags(fi, b.backing_id);
    int sent = fuse_reply_create(req, &p, fi);
    Passthrough::disarm_reply();
    if (sent == -ENOENT) {
      d.overlay->forget(entry.node.get(), 1);
      d.open_files->unbind(entry.node.get());
      untrack(d, fh);
      delete fh;
    }
  });
}

int read_fd_of(Daemon& d, FileHandle* fh) {
  if (fh->on_lower.load(std::memory_order_relaxed) && d.overlay->data_in_upper(*fh->node)) {
    std::lock_guard lock(fh->mu);
    if (fh->on_lower) {
      if (auto fd = d.overlay->open(fh->node, O_RDONLY); fd) {
        fh->upper_fd = std::move(*fd);
        fh->read_fd = fh->upper_fd.get();
      }
      fh->on_lower = false;
    }
  }
  return fh->read_fd.load(std::memory_order_relaxed);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, struct fuse_file_info* fi) {
  Daemon& d = daemon_of(req);
  d.counters.read_requests.fetch_add(1, std::memory_order_relaxed);
  struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = fuse_buf_flags(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  InUse use(file_of(fi));
  buf.buf[0].fd = read_fd_of(d, file_of(fi));
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void op_write_buf(fuse_req_t req, fuse_ino_t, struct fuse_bufvec* in, off_t off, struct fuse_file_info* fi) {
  daemon_of(req).counters.write_requests.fetch_add(1, std::memory_order_relaxed);
  struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
  out.buf[0].flags = fuse_buf_flags(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  InUse use(file_of(fi));
  if (int err = ensure_data(daemon_of(req), file_of(fi))) return (void)fuse_reply_err(req, err);
  out.buf[0].fd = file_of(fi)->fd.get();
  out.buf[0].pos = off;
  ssize_t n = fuse_buf_copy(&out, in, fuse_buf_copy_flags(0));
  if (n < 0) fuse_reply_err(req, int(-n));
  else fuse_reply_write(req, size_t(n));
}

void op_release(fuse_req_t req, fuse_ino_t, struct fuse_file_info* fi) {
  FileHandle* fh = file_of(fi);
  while (fh->in_use.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  daemon_of(req).open_files->unbind(fh->node.get());
  untrack(daemon_of(req), fh);
  delete fh;
  fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t, int datasync, struct fuse_file_info* fi) {
  if (daemon_of(req).volatile_mode) return (void)fuse_reply_err(req, 0);
  InUse use(file_of(fi));
  int fd = file_of(fi)->fd.get();
  int r = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, r < 0 ? errno : 0);
}

void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, struct fuse_file_info* fi) {
  InUse use(file_of(fi));
  if (int err = ensure_data(daemon_of(req), file_of(fi))) return (void)fuse_reply_err(req, err);
  int r = ::fallocate(file_of(fi)->fd.get(), mode, off, len);
  fuse_reply_err(req, r < 0 ? errno : 0);
}

void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, struct fuse_file_info* fi) {
  InUse use(file_of(fi));
  if (int err = ensure_data(daemon_of(req), file_of(fi))) return (void)fuse_reply_err(req, err);
  off_t r = ::lseek(file_of(fi)->fd.get(), off, whence);
  if (r < 0) fuse_reply_err(req, errno);
  else fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, struct fuse_file_info* fi_in, fuse_ino_t,
                        off_t off_out, struct fuse_file_info* fi_out, size_t len, int flags) {
  loff_t in = off_in, out = off_out;
  InUse use_in(file_of(fi_in)), use_out(file_of(fi_out));
  for (FileHandle* fh : {file_of(fi_in), file_of(fi_out)})
    if (int err = ensure_data(daemon_of(req), fh)) return (void)fuse_reply_err(req, err);
  ssize_t n = ::copy_file_range(file_of(fi_in)->fd.get(), &in, file_of(fi_out)->fd.get(), &out, len, flags);
  if (n < 0) fuse_reply_err(req, errno);
  else fuse_reply_write(req, size_t(n));
}

// ENOSYS makes the kernel stop sending OPENDIR (and RELEASEDIR) for this mount and cache every
// listing (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE by default); libfuse 3.14 answers a missing
// opendir with an empty open instead, so the daemon says it.
void op_opendir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, ENOSYS); }

// Offsets carry a listing snapshot and a position in it (see dir_listings.h): position 0 is
// ".", 1 is "..", entry i is position i + 2. The offset sent with an entry is that of the *next*
// one, so a listing can resume anywhere (seekdir/telldir are stable).
void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*, bool plus) {
  guarded(req, "readdir", [&] {
    Daemon& d = daemon_of(req);
    d.counters.readdir_requests.fetch_add(1, std::memory_order_relaxed);
    NodePtr dir = node_of(req, ino);
    // The merged listing is read at the start of a pass (offset 0), or when the pass's snapshot
    // is gone; when the kernel answers from its cached listing, it is never read.
    DirListings::Entries entries;
    uint32_t snapshot = 0;
    if (off != 0) {
      snapshot = DirListings::snapshot_of(off);
      entries = d.dir_listings.find(dir.get(), snapshot);
    }
    if (!entries) {
      auto read = with_fd_room(d, [&] { return d.overlay->read_dir(dir); });
      if (!read) return (void)fuse_reply_err(req, read.error());
      snapshot = d.dir_listings.add(dir, std::move(*read), &entries);
    }
    uint64_t self_ino = dir->ino, parent_ino = dir->ino;
    {
      std::lock_guard lock(dir->mu);
      if (dir->parent) parent_ino = dir->parent->ino;
    }
    std::string buf(size, '\0');
    size_t used = 0;
    for (uint32_t i = DirListings::position_of(off);; ++i) {
      std::string name;
      struct fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      NodePtr looked_up;
      if (i == 0 || i == 1) {
        name = i == 0 ? "." : "..";
        e.attr.st_ino = i == 0 ? self_ino : parent_ino;
        e.attr.st_mode = S_IFDIR;
      } else {
        size_t idx = size_t(i - 2);
        if (idx >= entries->size()) break;
        const MergedEntry& m = (*entries)[idx];
        name = m.name;
        e.attr.st_ino = m.ino;
        e.attr.st_mode = DTTOIF(m.d_type);
        // Close to the descriptor limit, directories are listed without making their nodes
        // (the kernel looks them up when it needs them).
        if (plus && !(m.d_type == DT_DIR && d.fd_budget && d.fd_budget->tight())) {
          auto entry = d.overlay->lookup(dir, m.name, m.layer);
          if (entry) {
            e = entry_param(req, *entry);
            looked_up = entry->node;
          }
        }
      }
      const off_t next = DirListings::offset(snapshot, i + 1);
      size_t need = plus ? fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, next)
                         : fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &e.attr, next);
      if (need > size - used) {
        if (looked_up) d.overlay->forget(looked_up.get(), 1);  // not sent: the kernel won't count it
        break;
      }
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, true);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t, int, struct fuse_file_info*) { fuse_reply_err(req, 0); }

void op_statfs(fuse_req_t req, fuse_ino_t) {
  guarded(req, "statfs", [&] {
    auto sv = daemon_of(req).overlay->statfs();
    if (!sv) return (void)fuse_reply_err(req, sv.error());
    fuse_reply_statfs(req, &*sv);
  });
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, "getxattr", [&] {
    Daemon& d = daemon_of(req);
    Result<std::string> v = ino == FUSE_ROOT_ID && std::string_view(name) == kStatsXattr
                                ? Result<std::string>(summary_json(d))
                            : ino == FUSE_ROOT_ID && std::string_view(name) == kLayersXattr
                                ? Result<std::string>(d.layer_paths)
                                : d.overlay->getxattr(node_of(req, ino), name);
    if (!v) {
      // A layer on a filesystem without ACLs has none: with FUSE_POSIX_ACL the kernel would take
      // EOPNOTSUPP for an error of every permission check that asks.
      const bool no_acl = d.acl && v.error() == EOPNOTSUPP && is_acl_xattr(name);
      return (void)fuse_reply_err(req, no_acl ? ENODATA : v.error());
    }
    if (size == 0) return (void)fuse_reply_xattr(req, v->size());
    if (v->size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, v->data(), v->size());
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, "listxattr", [&] {
    auto names = daemon_of(req).overlay->listxattr(node_of(req, ino));
    if (!names) return (void)fuse_reply_err(req, names.error());
    std::string joined;
    for (const auto& n : *names) {
      joined += n;
      joined += '\0';
    }
    if (size == 0) return (void)fuse_reply_xattr(req, joined.size());
    if (joined.size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, joined.data(), joined.size());
  });
}

// The kernel overlay clears setgid when an access ACL is set by a caller outside the file's
// group and without CAP_FSETID over it (the mode change an ACL implies must not keep a bit that
// chmod would drop). The kernel tells a FUSE server so only through FUSE_SETXATTR_ACL_KILL_SGID,
// which libfuse 3.14 does not pass on: decide here.
bool acl_set_kills_sgid(fuse_req_t req, Daemon& d, const NodePtr& node) {
  auto st = d.overlay->getattr(node);
  if (!st || !(st->st_mode & S_ISGID) || caller_in_group(req, st->st_gid)) return false;
  return !caller_has_fsetid_over(fuse_req_ctx(req)->pid, st->st_uid, st->st_gid);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  guarded(req, "setxattr", [&] {
    Daemon& d = daemon_of(req);
    NodePtr node = node_of(req, ino);
    const bool kill_sgid = d.acl && std::string_view(name) == kAclAccessXattr && acl_set_kills_sgid(req, d, node);
    auto r = d.overlay->setxattr(node, name, std::string_view(value, size), flags);
    if (r && kill_sgid) {
      if (auto st = d.overlay->getattr(node); st && (st->st_mode & S_ISGID)) {
        AttrChange change;
        change.mode = true;
        change.values.st_mode = st->st_mode & ~S_ISGID;
        if (auto c = d.overlay->setattr(node, change, -1); !c) r = fail(c.error());
      }
    }
    reply_status(req, r);
  });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guarded(req, "removexattr", [&] { reply_status(req, daemon_of(req).overlay->removexattr(node_of(req, ino), name)); });
}

const struct fuse_lowlevel_ops kOps = [] {
  struct fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.open = op_open;
  ops.create = op_create;
  ops.read = op_read;
  ops.write_buf = op_write_buf;
  // No flush handler: there is nothing to flush (every write went to the layer already), and
  // without one the kernel stops sending FLUSH on every close.
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  ops.copy_file_range = op_copy_file_range;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.setxattr = op_setxattr;
  ops.removexattr = op_removexattr;
  return ops;
}();

}  // namespace

void free_open_handles(Daemon& d) {
  std::lock_guard lock(d.handles_mu);
  for (void* h : d.open_file_handles) delete static_cast<FileHandle*>(h);
  d.open_file_handles.clear();
}

fuse_ino_t nodeid_of(const Daemon& daemon, const Node* node) {
  return node == daemon.overlay->root().get() ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(node);
}

const struct fuse_lowlevel_ops& lowlevel_ops() { return kOps; }

}  // namespace strata::fs
