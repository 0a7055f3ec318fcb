#include "strata/sys.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fmt/format.h>

namespace strata::sys {

namespace {

template <class F>
auto retry_eintr(F f) {
  decltype(f()) r;
  do r = f();
  while (r < 0 && errno == EINTR);
  return r;
}

// The *xattrat family (Linux 6.13) lets us reach xattrs of an entry relative to a directory fd
// without building /proc paths. Probe once; fall back on ENOSYS.
#ifndef SYS_getxattrat
#define SYS_setxattrat 463
#define SYS_getxattrat 464
#define SYS_listxattrat 465
#define SYS_removexattrat 466
#endif
struct XattrArgs {
  uint64_t value;
  uint32_t size;
  uint32_t flags;
};
std::atomic<bool> have_xattrat{true};

unsigned at_flags_for(const char* name) { return AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH); }

// The *xattrat calls refuse an O_PATH fd with AT_EMPTY_PATH (EBADF): go through /proc then.
bool opath_refused(long r, const char* name) { return r < 0 && errno == EBADF && *name == 0; }

// An entry inside a directory fd, reached through /proc (used with the l* calls: no following).
// For the fd itself (name "") the plain calls follow the magic link to the object instead.
std::string proc_entry_path(int dirfd, const char* name) { return fmt::format("/proc/self/fd/{}/{}", dirfd, name); }

}  // namespace

std::string proc_fd_path(int fd) { return fmt::format("/proc/self/fd/{}", fd); }

std::string errno_text(int err) { return std::strerror(err); }

Result<UniqueFd> openat(int dirfd, const char* name, int flags, mode_t mode) {
  int fd = retry_eintr([&] { return ::openat(dirfd, name, flags | O_CLOEXEC, mode); });
  if (fd < 0) return fail_errno();
  return UniqueFd(fd);
}

Result<UniqueFd> reopen(int opath_fd, int flags) {
  return openat(AT_FDCWD, proc_fd_path(opath_fd).c_str(), flags & ~O_NOFOLLOW);
}

Result<struct stat> fstatat(int dirfd, const char* name, int flags) {
  struct stat st;
  if (*name == 0) flags |= AT_EMPTY_PATH;
  if (::fstatat(dirfd, name, &st, flags) < 0) return fail_errno();
  return st;
}

Result<struct stat> fstat(int fd) { return fstatat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW); }

Result<std::string> readlinkat(int dirfd, const char* name) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
    if (n < 0) return fail_errno();
    if (size_t(n) < buf.size()) {
      buf.resize(n);
      return buf;
    }
    buf.resize(buf.size() * 4);
  }
}

Result<std::string> getxattr(int dirfd, const char* name, const char* attr) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = -1;
    if (have_xattrat.load(std::memory_order_relaxed)) {
      XattrArgs args{reinterpret_cast<uint64_t>(buf.data()), uint32_t(buf.size()), 0};
      n = syscall(SYS_getxattrat, dirfd, name, at_flags_for(name), attr, &args, sizeof args);
      if (n < 0 && errno == ENOSYS) have_xattrat = false;
    }
    if (!have_xattrat.load(std::memory_order_relaxed) || opath_refused(n, name))
      n = *name ? ::lgetxattr(proc_entry_path(dirfd, name).c_str(), attr, buf.data(), buf.size())
                : ::getxattr(proc_fd_path(dirfd).c_str(), attr, buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(n);
      return buf;
    }
    if (errno != ERANGE) return fail_errno();
    buf.resize(buf.size() * 8);
    if (buf.size() > (1u << 20)) return fail(E2BIG);
  }
}

Result<std::vector<std::string>> listxattr(int dirfd, const char* name) {
  std::string buf(1024, '\0');
  for (;;) {
    ssize_t n = -1;
    if (have_xattrat.load(std::memory_order_relaxed)) {
      n = syscall(SYS_listxattrat, dirfd, name, at_flags_for(name), buf.data(), buf.size());
      if (n < 0 && errno == ENOSYS) have_xattrat = false;
    }
    if (!have_xattrat.load(std::memory_order_relaxed) || opath_refused(n, name))
      n = *name ? ::llistxattr(proc_entry_path(dirfd, name).c_str(), buf.data(), buf.size())
                : ::listxattr(proc_fd_path(dirfd).c_str(), buf.data(), buf.size());
    if (n >= 0) {
      std::vector<std::string> names;
      for (size_t i = 0; i < size_t(n);) {
        size_t len = strnlen(buf.data() + i, n - i);
        if (len) names.emplace_back(buf.data() + i, len);
        i += len + 1;
      }
      return names;
    }
    if (errno != ERANGE) return fail_errno();
    buf.resize(buf.size() * 8);
    if (buf.size() > (1u << 22)) return fail(E2BIG);
  }
}

Status setxattr(int dirfd, const char* name, const char* attr, std::string_view value, int flags) {
  int r = -1;
  if (have_xattrat.load(std::memory_order_relaxed)) {
    XattrArgs args{reinterpret_cast<uint64_t>(value.data()), uint32_t(value.size()), uint32_t(flags)};
    r = syscall(SYS_setxattrat, dirfd, name, at_flags_for(name), attr, &args, sizeof args);
    if (r < 0 && errno == ENOSYS) have_xattrat = false;
  }
  if (!have_xattrat.load(std::memory_order_relaxed) || opath_refused(r, name))
    r = *name ? ::lsetxattr(proc_entry_path(dirfd, name).c_str(), attr, value.data(), value.size(), flags)
              : ::setxattr(proc_fd_path(dirfd).c_str(), attr, value.data(), value.size(), flags);
  if (r < 0) return fail_errno();
  return {};
}

Status removexattr(int dirfd, const char* name, const char* attr) {
  int r = -1;
  if (have_xattrat.load(std::memory_order_relaxed)) {
    r = syscall(SYS_removexattrat, dirfd, name, at_flags_for(name), attr);
    if (r < 0 && errno == ENOSYS) have_xattrat = false;
  }
  if (!have_xattrat.load(std::memory_order_relaxed) || opath_refused(r, name))
    r = *name ? ::lremovexattr(proc_entry_path(dirfd, name).c_str(), attr)
              : ::removexattr(proc_fd_path(dirfd).c_str(), attr);
  if (r < 0) return fail_errno();
  return {};
}

Status renameat2(int olddir, const char* oldname, int newdir, const char* newname, unsigned flags) {
  if (::renameat2(olddir, oldname, newdir, newname, flags) < 0) return fail_errno();
  return {};
}

Status fchmod_empty(int fd, mode_t mode) {
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
  if (syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0) return {};
  if (errno != ENOSYS && errno != EINVAL) return fail_errno();
  if (::chmod(proc_fd_path(fd).c_str(), mode) < 0) return fail_errno();
  return {};
}

Status fchown_empty(int fd, uid_t uid, gid_t gid) {
  if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return fail_errno();
  return {};
}

Status utimens_empty(int fd, const struct timespec ts[2]) {
  if (::utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return fail_errno();
  return {};
}

}  // namespace strata::sys
