#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "strata/sys.h"
#include "strata/unique_fd.h"

namespace strata::run {

void warn(std::string_view message) {
  std::string line = "strata-run: ";
  line.append(message);
  line += '\n';
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

void die(std::string_view message, int status) {
  warn(message);
  ::_exit(status);
}

std::string errno_text(int err) { return sys::errno_text(err); }

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitLauncher;
}

bool write_file(const std::string& path, std::string_view data) {
  auto fd = sys::openat(AT_FDCWD, path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!fd) {
    errno = fd.error();
    return false;
  }
  // /proc/PID/uid_map must be written in one write(2): a short write is an error there.
  ssize_t n = ::write(fd->get(), data.data(), data.size());
  if (n < 0) return false;
  if (size_t(n) != data.size()) {
    errno = EIO;
    return false;
  }
  return true;
}

std::optional<std::string> read_file(const std::string& path) {
  auto fd = sys::openat(AT_FDCWD, path.c_str(), O_RDONLY);
  if (!fd) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

bool make_dirs(const std::string& path, mode_t mode) {
  if (path.empty()) return true;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return true;
    errno = ENOTDIR;
    return false;
  }
  std::string parent = dirname_of(path);
  if (parent != path && !make_dirs(parent, mode)) return false;
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return false;
  return true;
}

namespace {

bool remove_children(int dirfd, dev_t dev) {
  bool ok = true;
  int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return false;
  DIR* dir = ::fdopendir(dup);
  if (!dir) {
    ::close(dup);
    return false;
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(dir);
  for (const auto& name : names) {
    if (::unlinkat(dirfd, name.c_str(), 0) == 0) continue;
    if (errno != EISDIR && errno != EPERM) {  // Linux says EISDIR; POSIX allows EPERM
      ok = false;
      continue;
    }
    auto child = sys::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!child) {
      ok = false;
      continue;
    }
    auto st = sys::fstat(child->get());
    if (!st || st->st_dev != dev) {  // a mount point: never reach into it
      ok = false;
      continue;
    }
    // A directory we may not write (a container made it 0555) still goes: we own it.
    ::fchmod(child->get(), 0700);
    if (!remove_children(child->get(), dev)) ok = false;
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) ok = false;
  }
  return ok;
}

}  // namespace

bool remove_tree(const std::string& path) {
  auto fd = sys::openat(AT_FDCWD, path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return fd.error() == ENOENT;
  auto st = sys::fstat(fd->get());
  if (!st) return false;
  ::fchmod(fd->get(), 0700);
  bool ok = remove_children(fd->get(), st->st_dev);
  fd->reset();
  if (::rmdir(path.c_str()) != 0) ok = false;
  return ok;
}

std::string dirname_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string absolute_path(const std::string& path) {
  std::string full = path;
  if (full.empty() || full[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd)) full = std::string(cwd) + "/" + path;
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < full.size()) {
    size_t j = full.find('/', i);
    if (j == std::string::npos) j = full.size();
    std::string part = full.substr(i, j - i);
    if (!part.empty() && part != ".") parts.push_back(part);
    i = j + 1;
  }
  // ".." is kept as written: resolving it lexically would be wrong under symlinks.
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

std::optional<std::string> find_in_dirs(const std::string& dirs, std::string_view name) {
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t colon = dirs.find(':', start);
    if (colon == std::string::npos) colon = dirs.size();
    std::string dir = dirs.substr(start, colon - start);
    start = colon + 1;
    if (dir.empty() || dir[0] != '/') continue;
    std::string candidate = dir + "/" + std::string(name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

}  // namespace strata::run
