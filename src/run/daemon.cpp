#include "daemon.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "util.h"

namespace strata::run {

namespace {

// strata-fs splits -o on ',' and lowerdir on ':'; a backslash escapes either (and itself).
std::string escape(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == '\\' || c == ',' || c == ':') out += '\\';
    out += c;
  }
  return out;
}

long now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  ::nanosleep(&ts, nullptr);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {}", WTERMSIG(status));
  return "stopped";
}

// waitpid with a deadline; true once reaped.
bool wait_with_timeout(pid_t pid, int* status, long timeout_ms) {
  long deadline = now_ms() + timeout_ms;
  for (long pause = 1;; pause = std::min(pause * 2, 50L)) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return true;  // not our child any more: nothing to wait for
    if (now_ms() >= deadline) return false;
    sleep_ms(pause);
  }
}

}  // namespace

std::string find_strata_fs() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = 0;
    std::string beside = dirname_of(self) + "/strata-fs";
    if (::access(beside.c_str(), X_OK) == 0) return beside;
  }
  if (const char* env = std::getenv("STRATA_FS"); env && *env) {
    if (::access(env, X_OK) == 0) return absolute_path(env);
    die(fmt::format("STRATA_FS={}: {}", env, errno_text(errno)));
  }
  const char* path = std::getenv("PATH");
  if (auto found = find_in_dirs(path ? path : "/usr/local/bin:/usr/bin:/bin", "strata-fs")) return *found;
  die("strata-fs: not found beside strata-run nor in PATH (set STRATA_FS=/path/to/strata-fs)");
}

std::string daemon_options(const DaemonConfig& cfg) {
  std::string lower;
  for (const auto& dir : cfg.lowers) lower += (lower.empty() ? "" : ":") + escape(dir);
  // allow_other: processes of any uid inside the container must reach their root (FUSE otherwise
  // admits only the mounting uid). It is permitted to the namespace's root that mounts here.
  // auto_unmount: libfuse's helper unmounts even if the daemon is killed outright.
  std::string opts = fmt::format("lowerdir={},upperdir={},workdir={},allow_other,auto_unmount", lower,
                                 escape(cfg.upper), escape(cfg.work));
  // FUSE passthrough needs CAP_SYS_ADMIN in the initial user namespace: ask for none rather
  // than have the daemon find out and say so on every rootless run.
  if (cfg.in_user_namespace) opts += ",passthrough=off";
  if (!cfg.trace.empty()) opts += fmt::format(",trace={},trace_file={}", cfg.trace, escape(cfg.trace_file));
  return opts;
}

pid_t start_daemon(const DaemonConfig& cfg, const sigset_t& original_mask) {
  std::vector<std::string> args = {cfg.program, "-f", "-o", daemon_options(cfg), cfg.mountpoint};
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) die(fmt::format("fork: {}", errno_text(errno)));
  if (pid > 0) return pid;

  // SIGTERM, not SIGKILL: libfuse's handler then leaves the session loop and unmounts.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(1);
  ::setsid();
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, STDIN_FILENO);
  ::dup2(STDERR_FILENO, STDOUT_FILENO);  // the container's stdout is the command's alone
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
  ::execv(cfg.program.c_str(), argv.data());
  die(fmt::format("{}: {}", cfg.program, errno_text(errno)));
}

void wait_until_mounted(pid_t daemon, const std::string& mountpoint, int timeout_ms) {
  struct stat parent;
  if (::stat(dirname_of(mountpoint).c_str(), &parent) != 0)
    die(fmt::format("{}: {}", dirname_of(mountpoint), errno_text(errno)));
  long deadline = now_ms() + timeout_ms;
  for (long pause = 1;; pause = std::min(pause * 2, 20L)) {
    int status = 0;
    if (::waitpid(daemon, &status, WNOHANG) == daemon)
      die(fmt::format("strata-fs {} before the mount was live (its message is above)", describe_status(status)));
    struct stat st;
    if (::stat(mountpoint.c_str(), &st) == 0 && st.st_dev != parent.st_dev) return;
    if (now_ms() >= deadline) {
      ::kill(daemon, SIGKILL);
      ::waitpid(daemon, &status, 0);
      die(fmt::format("strata-fs did not mount {} within {} s", mountpoint, timeout_ms / 1000));
    }
    sleep_ms(pause);
  }
}

bool stop_daemon(pid_t daemon, const std::string& mountpoint) {
  bool clean = true;
  if (::umount2(mountpoint.c_str(), 0) != 0 && errno != EINVAL && errno != ENOENT) {
    // EBUSY: something still uses it (nothing should); detach, the daemon goes all the same.
    warn(fmt::format("umount {}: {}; detaching it", mountpoint, errno_text(errno)));
    ::umount2(mountpoint.c_str(), MNT_DETACH);
    clean = false;
  }
  int status = 0;
  if (wait_with_timeout(daemon, &status, 5000)) return clean;
  warn("strata-fs still running 5 s after the unmount; sending SIGTERM");
  ::kill(daemon, SIGTERM);
  if (wait_with_timeout(daemon, &status, 5000)) return false;
  warn("strata-fs ignored SIGTERM; killing it");
  ::kill(daemon, SIGKILL);
  ::waitpid(daemon, &status, 0);
  return false;
}

}  // namespace strata::run
