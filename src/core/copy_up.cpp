#include "strata/copy_up.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <mutex>
#include <vector>

#include "strata/fs_util.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

namespace {

std::mutex g_hook_mu;
CopyFaultHook g_hook;

int fault_at(uint64_t offset) {
  std::lock_guard lock(g_hook_mu);
  return g_hook ? g_hook(offset) : 0;
}

bool hook_set() {
  std::lock_guard lock(g_hook_mu);
  return bool(g_hook);
}

constexpr size_t kChunk = 1 << 20;

Status copy_range_rw(int src, int dst, uint64_t off, uint64_t len, std::vector<char>& buf) {
  if (buf.empty()) buf.resize(kChunk);
  while (len > 0) {
    if (int err = fault_at(off)) return fail(err);
    size_t want = std::min<uint64_t>(len, buf.size());
    ssize_t n = ::pread(src, buf.data(), want, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno();
    if (n == 0) break;  // the source shrank: copy what there is
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::pwrite(dst, buf.data() + done, n - done, off + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return fail_errno();
      done += w;
    }
    off += n;
    len -= n;
  }
  return {};
}

// copy_file_range for one segment; returns false (nothing copied) when the kernel can't do it.
Result<bool> copy_range_cfr(int src, int dst, uint64_t off, uint64_t len, uint64_t chunk) {
  bool any = false;
  while (len > 0) {
    if (int err = fault_at(off)) return fail(err);
    loff_t in = off, out = off;
    ssize_t n = ::copy_file_range(src, &in, dst, &out, std::min<uint64_t>(len, chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (!any && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP))
        return false;
      return fail_errno();
    }
    if (n == 0) break;
    any = true;
    off += n;
    len -= n;
  }
  return true;
}

}  // namespace

void set_copy_fault_hook(CopyFaultHook hook) {
  std::lock_guard lock(g_hook_mu);
  g_hook = std::move(hook);
}

// Under the overlay prefix so that the kernel overlay, mounting an upper we wrote, hides it too.
std::string ino_xattr_name(const LayerStack& stack) { return stack.xattr_prefix() + "overlay.strata.ino"; }

std::string staging_name(std::string_view what) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("#{}-{}-{}", what, ::getpid(), counter.fetch_add(1));
}

Result<CopyUpReport> copy_file_data(int src, int dst, uint64_t size) {
  CopyUpReport report;
  if (size == 0) return report;
  // Reflink shares the blocks: instant and no extra space, when the filesystem allows it.
  if (!hook_set() && ::ioctl(dst, FICLONE, src) == 0) {
    report.bytes = size;
    report.method = "reflink";
    return report;
  }
  std::vector<char> buf;
  bool use_cfr = true;
  uint64_t off = 0;
  while (off < size) {
    off_t data = ::lseek(src, off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      data = off;                 // no SEEK_DATA here: treat everything as data
    }
    off_t hole = ::lseek(src, data, SEEK_HOLE);
    if (hole < 0 || uint64_t(hole) > size) hole = size;
    uint64_t len = hole - data;
    if (len == 0) break;
    if (use_cfr) {
      // Big steps for speed; 1 MiB ones when a test injects faults "in the middle".
      auto r = copy_range_cfr(src, dst, data, len, hook_set() ? kChunk : (64u << 20));
      if (!r) return fail(r.error());
      use_cfr = *r;
      if (use_cfr) report.method = "copy_file_range";
    }
    if (!use_cfr) {
      STRATA_TRY(copy_range_rw(src, dst, data, len, buf));
      report.method = "read/write";
    }
    report.bytes += len;
    off = hole;
  }
  if (::ftruncate(dst, size) < 0) return fail_errno();  // a trailing hole
  return report;
}

StagedCopy::StagedCopy(StagedCopy&& other) noexcept
    : report(other.report), stack_(other.stack_), name_(std::move(other.name_)) {
  other.name_.clear();
}

StagedCopy::~StagedCopy() {
  if (!name_.empty()) remove_tree(stack_->work_fd(), name_.c_str());
}

Status StagedCopy::place(int dirfd, const std::string& name) {
  STRATA_TRY(sys::renameat2(stack_->work_fd(), name_.c_str(), dirfd, name.c_str(), RENAME_NOREPLACE));
  name_.clear();
  return {};
}

Result<CopyUpReport> copy_up_object(const LayerStack& stack, const CopyUpRequest& req) {
  auto staged = stage_copy_up(stack, req);
  if (!staged) return fail(staged.error());
  STRATA_TRY(staged->place(req.dst_dirfd, req.dst_name));
  return staged->report;
}

Result<StagedCopy> stage_copy_up(const LayerStack& stack, const CopyUpRequest& req) {
  auto start = std::chrono::steady_clock::now();
  const struct stat& st = req.src_st;
  const int work = stack.work_fd();
  const std::string tmp = staging_name("copyup");
  const char* src_name = req.src_name.c_str();
  CopyUpReport report;

  auto cleanup_on_error = [&](int err) -> Result<StagedCopy> {
    remove_tree(work, tmp.c_str());
    return fail(err);
  };

  // 1. The object itself, under a temporary name.
  UniqueFd data_fd;  // regular files: open for writing
  switch (st.st_mode & S_IFMT) {
    case S_IFREG: {
      auto fd = sys::openat(work, tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, 0600);
      if (!fd) return fail(fd.error());
      data_fd = std::move(*fd);
      if (req.metadata_only) {
        if (::ftruncate(data_fd.get(), st.st_size) < 0) return cleanup_on_error(errno);
        report.method = "metacopy";
      } else if (req.with_data && st.st_size > 0) {
        auto src = req.src_name.empty() ? sys::reopen(req.src_dirfd, O_RDONLY)
                                        : sys::openat(req.src_dirfd, src_name, O_RDONLY | O_NOFOLLOW);
        if (!src) return cleanup_on_error(src.error());
        auto copied = copy_file_data(src->get(), data_fd.get(), st.st_size);
        if (!copied) return cleanup_on_error(copied.error());
        report = *copied;
      }
      break;
    }
    case S_IFDIR:
      if (::mkdirat(work, tmp.c_str(), 0700) < 0) return fail_errno();
      break;
    case S_IFLNK: {
      auto target = sys::readlinkat(req.src_dirfd, src_name);
      if (!target) return fail(target.error());
      if (::symlinkat(target->c_str(), work, tmp.c_str()) < 0) return fail_errno();
      break;
    }
    default:  // fifo, socket, devices: each stays what it is
      if (::mknodat(work, tmp.c_str(), (st.st_mode & S_IFMT) | 0600, st.st_rdev) < 0) return fail_errno();
      break;
  }

  // 2. Metadata: owner, then mode, then xattrs, then times.
  UniqueFd path_fd;
  int ofd = data_fd.get();
  if (!data_fd) {
    auto obj = sys::openat(work, tmp.c_str(), O_PATH | O_NOFOLLOW);
    if (!obj) return cleanup_on_error(obj.error());
    path_fd = std::move(*obj);
    ofd = path_fd.get();
  }
  if (auto r = sys::fchown_empty(ofd, st.st_uid, st.st_gid); !r) return cleanup_on_error(r.error());
  if (!S_ISLNK(st.st_mode))
    if (auto r = sys::fchmod_empty(ofd, st.st_mode & 07777); !r) return cleanup_on_error(r.error());
  if (auto names = sys::listxattr(req.src_dirfd, src_name); names) {
    for (const auto& attr : *names) {
      // Overlay markers of the lower are not ours to copy; escaped user xattrs are.
      if (is_private_xattr(attr) && !is_escaped_xattr(attr)) continue;
      auto value = sys::getxattr(req.src_dirfd, src_name, attr.c_str());
      if (!value) continue;  // vanished meanwhile
      if (auto r = sys::setxattr(ofd, "", attr.c_str(), *value); !r) {
        // A namespace the upper can't store (e.g. trusted.* when rootless) is skipped, as the
        // kernel's copy-up does for EOPNOTSUPP; anything else is a real failure.
        if (r.error() != EOPNOTSUPP && r.error() != EPERM) return cleanup_on_error(r.error());
      }
    }
  }
  if (req.presented_ino)
    if (auto r = sys::setxattr(ofd, "", ino_xattr_name(stack).c_str(), std::to_string(req.presented_ino));
        !r && !S_ISLNK(st.st_mode))
      return cleanup_on_error(r.error());
  if (req.metadata_only)
    if (auto r = set_metacopy(stack, ofd); !r) return cleanup_on_error(r.error());
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (auto r = sys::utimens_empty(ofd, times); !r) return cleanup_on_error(r.error());
  if (data_fd && !req.metadata_only && !stack.volatile_mode() && ::fsync(data_fd.get()) < 0)
    return cleanup_on_error(errno);

  // 3. Complete, still invisible: the caller places it (one atomic rename).
  report.nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - start).count();
  StagedCopy staged(stack, tmp);
  staged.report = report;
  return staged;
}

}  // namespace strata
