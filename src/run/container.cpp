#include "container.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "init.h"
#include "strata/unique_fd.h"
#include "util.h"

namespace strata::run {

namespace {

enum class Kind { Dir, File };

// Where targets are resolved: beneath the new root until the pivot, plain paths after it.
struct RootContext {
  std::string path;  // the overlay's mountpoint, as the holder mounted it
  UniqueFd root;
  bool pivoted = false;
};

// An O_PATH fd for `path` inside the container; invalid with errno set on failure.
UniqueFd resolve(const RootContext& ctx, const std::string& path, int flags = O_PATH) {
  if (ctx.pivoted) return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC));
  std::string rel = path;
  while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
  if (rel.empty()) rel = ".";
  struct open_how how = {};
  how.flags = uint64_t(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  long fd;
  do fd = ::syscall(SYS_openat2, ctx.root.get(), rel.c_str(), &how, sizeof how);
  while (fd < 0 && errno == EINTR);
  return UniqueFd(int(fd));
}

// The target of a mount, created when the image lacks it (a directory or an empty file, with
// missing parents). Creating goes through the overlay, so it lands in the upper layer.
UniqueFd ensure_target(const RootContext& ctx, const std::string& path, Kind kind) {
  if (UniqueFd fd = resolve(ctx, path); fd || errno != ENOENT) return fd;
  std::string parent_path = dirname_of(path), name = basename_of(path);
  if (name.empty() || name == "." || name == "..") {
    errno = EINVAL;
    return UniqueFd();
  }
  UniqueFd parent = ensure_target(ctx, parent_path, Kind::Dir);
  if (!parent) return parent;
  if (kind == Kind::Dir) {
    if (::mkdirat(parent.get(), name.c_str(), 0755) != 0 && errno != EEXIST) return UniqueFd();
  } else {
    int fd = ::openat(parent.get(), name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) return UniqueFd();
    if (fd >= 0) ::close(fd);
  }
  return resolve(ctx, path);
}

std::string fd_path(const UniqueFd& fd) { return fmt::format("/proc/self/fd/{}", fd.get()); }

// Runs one step; returns 0 or an errno, and `what` may name the sub-operation that failed.
int execute(RootContext& ctx, const Step& step, std::string& what) {
  switch (step.kind) {
    case StepKind::BindRoot: {
      UniqueFd tree(::open_tree(ctx.root.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH));
      if (!tree) return errno;
      if (::move_mount(tree.get(), "", ctx.root.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
        return errno;
      // The fd we hold still names the mount underneath; from now on we work on the new one.
      ctx.root = UniqueFd(::open(ctx.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      return ctx.root ? 0 : errno;
    }
    case StepKind::MountProc: {
      UniqueFd target = ensure_target(ctx, step.target, Kind::Dir);
      if (!target) return errno;
      if (::mount("proc", fd_path(target).c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        return errno;
      return 0;
    }
    case StepKind::MountTmpfs: {
      UniqueFd target = ensure_target(ctx, step.target, Kind::Dir);
      if (!target) return errno;
      if (::mount("tmpfs", fd_path(target).c_str(), "tmpfs", MS_NOSUID | MS_NODEV, step.data.c_str()) != 0)
        return errno;
      return 0;
    }
    case StepKind::MountDevpts: {
      UniqueFd target = ensure_target(ctx, step.target, Kind::Dir);
      if (!target) return errno;
      if (::mount("devpts", fd_path(target).c_str(), "devpts", MS_NOSUID | MS_NOEXEC, step.data.c_str()) != 0)
        return errno;
      return 0;
    }
    case StepKind::BindDevice:
    case StepKind::BindTree: {
      // open_tree + move_mount: the clone is made read-only before anyone can see it, and the
      // target is an fd resolved beneath the new root rather than a path string.
      struct stat st;
      if (::stat(step.source.c_str(), &st) != 0) {
        what = step.source;
        return errno;
      }
      UniqueFd tree(::open_tree(AT_FDCWD, step.source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
      if (!tree) {
        what = "open_tree " + step.source;
        return errno;
      }
      if (step.read_only) {
        struct mount_attr attr = {};
        attr.attr_set = MOUNT_ATTR_RDONLY;
        if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0) {
          what = "read-only";
          return errno;
        }
      }
      UniqueFd target = ensure_target(ctx, step.target, S_ISDIR(st.st_mode) ? Kind::Dir : Kind::File);
      if (!target) return errno;
      if (::move_mount(tree.get(), "", target.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0)
        return errno;
      return 0;
    }
    case StepKind::Symlink: {
      UniqueFd parent = ensure_target(ctx, dirname_of(step.target), Kind::Dir);
      if (!parent) return errno;
      if (::symlinkat(step.source.c_str(), parent.get(), basename_of(step.target).c_str()) != 0 && errno != EEXIST)
        return errno;
      return 0;
    }
    case StepKind::Hostname:
      return ::sethostname(step.source.data(), step.source.size()) == 0 ? 0 : errno;
    case StepKind::LoopbackUp: {
      UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!sock) return errno;
      struct ifreq req = {};
      std::strncpy(req.ifr_name, step.source.c_str(), IFNAMSIZ - 1);
      if (::ioctl(sock.get(), SIOCGIFFLAGS, &req) != 0) return errno;
      req.ifr_flags |= IFF_UP | IFF_RUNNING;
      if (::ioctl(sock.get(), SIOCSIFFLAGS, &req) != 0) return errno;
      return 0;
    }
    case StepKind::PivotRoot: {
      // pivot_root(".", ".") stacks the old root under the new one; detaching it right away means
      // no host path, and no host symlink resolved into the new root, is ever reachable again.
      if (::fchdir(ctx.root.get()) != 0) return errno;
      if (::syscall(SYS_pivot_root, ".", ".") != 0) {
        what = "pivot_root";
        return errno;
      }
      if (::umount2(".", MNT_DETACH) != 0) {
        what = "detach the old root";
        return errno;
      }
      if (::chdir("/") != 0) return errno;
      ctx.pivoted = true;
      return 0;
    }
    case StepKind::Chdir:
      return ::chdir(step.target.c_str()) == 0 ? 0 : errno;
    case StepKind::NoNewPrivs:
      return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : errno;
  }
  return EINVAL;
}

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& kv : env)
    if (kv.size() > name.size() && kv.starts_with(name) && kv[name.size()] == '=') return kv.substr(name.size() + 1);
  return {};
}

bool is_executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// The command as a path, searched in the container's PATH like execvp() would; dies with the
// message a person needs when it is not there.
std::string find_command(const std::string& cmd, const std::vector<std::string>& env) {
  std::string path = env_value(env, "PATH");
  if (cmd.find('/') != std::string::npos) {
    struct stat st;
    if (::stat(cmd.c_str(), &st) != 0) die(fmt::format("{}: not found in the container", cmd), kExitNotFound);
    return cmd;
  }
  size_t start = 0;
  for (;;) {
    size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + cmd;
    if (is_executable_file(candidate)) return candidate;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  die(fmt::format("{}: not found in the container (PATH={})", cmd, path), kExitNotFound);
}

[[noreturn]] void exec_command(const std::string& program, const std::vector<std::string>& command,
                               const std::vector<std::string>& env, const sigset_t& original_mask) {
  std::vector<char*> argv, envp;
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
  ::execve(program.c_str(), argv.data(), envp.data());
  int err = errno;
  if (err == ENOENT)  // the file is there (find_command saw it): its interpreter or loader is not
    die(fmt::format("{}: cannot execute: {} (a missing interpreter or dynamic loader?)", program, errno_text(err)),
        kExitNotFound);
  die(fmt::format("{}: cannot execute: {}", program, errno_text(err)), kExitCannotRun);
}

}  // namespace

void run_container(const RunConfig& cfg, const std::vector<Step>& steps, const std::string& new_root,
                   const sigset_t& original_mask) {
  // If the process that holds the daemon goes, so does the container (and its whole pid namespace).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);

  RootContext ctx;
  ctx.path = new_root;
  ctx.root = UniqueFd(::open(new_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!ctx.root) die(fmt::format("{}: {}", new_root, errno_text(errno)));

  for (const Step& step : steps) {
    std::string what;
    if (int err = execute(ctx, step, what); err != 0) {
      std::string message = what.empty() ? describe(step) : fmt::format("{} ({})", describe(step), what);
      if (step.optional) {
        warn(fmt::format("note: {}: {}; going on without it", message, errno_text(err)));
        continue;
      }
      if (step.kind == StepKind::Chdir)
        die(fmt::format("--cwd {}: {} in the container", step.target, errno_text(err)));
      die(fmt::format("{}: {}", message, errno_text(err)));
    }
  }

  std::vector<std::string> env = container_environment(cfg);
  std::string program = find_command(cfg.command[0], env);
  if (cfg.init) {
    prepare_init();
    pid_t command = ::fork();
    if (command < 0) die(fmt::format("--init: fork: {}", errno_text(errno)));
    if (command == 0) exec_command(program, cfg.command, env, original_mask);
    run_init(command);
  }
  exec_command(program, cfg.command, env, original_mask);
}

}  // namespace strata::run
