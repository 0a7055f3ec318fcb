#include "supervisor.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include <fmt/format.h>

#include "container.h"
#include "plan.h"
#include "strata/unique_fd.h"
#include "util.h"

namespace strata::run {

namespace {

bool is_terminating(int sig) {
  for (int s : kForwardedSignals)
    if (s == sig) return true;
  return false;
}

sigset_t signal_set(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  return set;
}

// fork() with namespace flags: the child starts like a fork child, in the new namespaces.
pid_t clone_with(unsigned long flags) {
  return pid_t(::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
}

// Rootless, the holder needs the user namespace to mount at all; as root it needs none.
bool holder_has_userns(const IdMapPlan& ids) { return ids.kind != IdMapPlan::Kind::Identity; }

// Waits (up to timeout_ms) until we have no child left: helpers that the daemon started.
void reap_all_children(long timeout_ms) {
  for (long waited = 0;; waited += 10) {
    pid_t r = ::waitpid(-1, nullptr, WNOHANG);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return;  // ECHILD: none left
    if (waited >= timeout_ms) {
      warn("a helper of strata-fs is still running; not waiting for it");
      return;
    }
    ::usleep(10000);
  }
}

// One byte on `go` means "your id maps are written"; EOF means the writer gave up (and said why).
bool wait_for_go(UniqueFd& go) {
  char byte = 0;
  ssize_t n;
  do n = ::read(go.get(), &byte, 1);
  while (n < 0 && errno == EINTR);
  go.reset();
  return n == 1;
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die(fmt::format("pipe: {}", errno_text(errno)));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// ---- the holder ------------------------------------------------------------------------------

[[noreturn]] void run_holder(const RunConfig& cfg, const Layout& layout, pid_t supervisor, UniqueFd go,
                             UniqueFd report, const sigset_t& original_mask) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != supervisor) ::_exit(kExitLauncher);
  // libfuse's auto_unmount helper (fusermount3) outlives the daemon by a moment; as a subreaper we
  // get it as a child and can wait for it, instead of leaving it to init.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  // Wait until the supervisor has written our id maps; EOF means it gave up (and said why).
  if (!wait_for_go(go)) ::_exit(kExitLauncher);

  // Host groups we kept are unmapped here; drop them where the maps allow it (not with setgroups
  // denied, where they just show as nogroup).
  ::setgroups(0, nullptr);

  // Nothing we mount may reach the host's namespace, and nothing of the host's may land on us.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    die(fmt::format("make / private in the new mount namespace: {}", errno_text(errno)));

  const std::string& root = layout.daemon.mountpoint;
  pid_t daemon = start_daemon(layout.daemon, original_mask);
  wait_until_mounted(daemon, root, 20000);

  sigset_t watched = signal_set({SIGTERM, SIGCHLD});
  UniqueFd sigfd(::signalfd(-1, &watched, SFD_CLOEXEC));
  if (!sigfd) die(fmt::format("signalfd: {}", errno_text(errno)));

  // The container's own mount namespace is a copy of ours: its pivot_root and its mounts stay
  // there, while the daemon keeps serving from here.
  // As root the holder and the daemon stay in the initial user namespace (the daemon may then use
  // FUSE passthrough and write trusted.overlay.* xattrs, the format the kernel overlay reads), and
  // the container alone gets the new user namespace, whose maps we write before it goes on.
  unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC;
  if (cfg.net == NetMode::None) flags |= CLONE_NEWNET;
  bool container_userns = !holder_has_userns(layout.ids);
  if (container_userns) flags |= CLONE_NEWUSER;
  std::vector<Step> steps = plan_container(cfg, layout.console);
  auto [maps_read, maps_write] = make_pipe();
  pid_t container = clone_with(flags);
  auto give_up = [&](const std::string& message) {
    if (container > 0) {
      ::kill(container, SIGKILL);
      ::waitpid(container, nullptr, 0);
    }
    stop_daemon(daemon, root);
    remove_tree(layout.scratch);
    die(message);
  };
  if (container < 0) give_up(fmt::format("cannot create the container's namespaces: {}", errno_text(errno)));
  if (container == 0) {
    sigfd.reset();
    report.reset();
    maps_write.reset();
    if (container_userns && !wait_for_go(maps_read)) ::_exit(kExitLauncher);
    maps_read.reset();
    run_container(cfg, steps, root, original_mask);
  }
  maps_read.reset();
  if (container_userns) {
    if (std::string err = apply_id_maps(layout.ids, container); !err.empty()) give_up(err);
    if (::write(maps_write.get(), "g", 1) != 1) give_up(fmt::format("pipe: {}", errno_text(errno)));
  }
  maps_write.reset();
  std::string line = fmt::format("{}\n", container);
  [[maybe_unused]] ssize_t w = ::write(report.get(), line.data(), line.size());
  report.reset();

  int code = kExitLauncher;
  bool aborted = false, daemon_gone = false;
  for (bool running = true; running;) {
    struct signalfd_siginfo si;
    ssize_t r = ::read(sigfd.get(), &si, sizeof si);
    if (r < 0 && errno == EINTR) continue;
    if (r != sizeof si) die(fmt::format("signalfd: {}", errno_text(errno)));
    if (si.ssi_signo == SIGTERM) {
      // Only the supervisor (or its death, PR_SET_PDEATHSIG) stops us: a SIGTERM sent to the whole
      // process group reaches the supervisor too, which forwards it to the command as it should.
      if (pid_t(si.ssi_pid) == supervisor || ::getppid() != supervisor) {
        aborted = true;
        ::kill(container, SIGKILL);
      }
      continue;
    }
    int status;
    if (!daemon_gone && ::waitpid(daemon, &status, WNOHANG) == daemon) {
      daemon_gone = true;
      warn(fmt::format("strata-fs {} while the container ran; stopping the container",
                       WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                         : fmt::format("was killed by signal {}", WTERMSIG(status))));
      ::kill(container, SIGKILL);
    }
    if (::waitpid(container, &status, WNOHANG) == container) {
      code = daemon_gone ? kExitLauncher : exit_code_of(status);
      running = false;
    }
  }

  if (!daemon_gone) stop_daemon(daemon, root);
  reap_all_children(5000);
  if (!remove_tree(layout.scratch)) warn(fmt::format("{}: could not remove all of it", layout.scratch));
  ::_exit(aborted ? 128 + SIGTERM : code);
}

// ---- the supervisor --------------------------------------------------------------------------

struct Forwarder {
  pid_t holder = 0;
  pid_t container = 0;  // 0 until the holder reports it
  bool init = false;    // pid 1 is our --init, which passes every forwarded signal on itself
  UniqueFd pidfd;
  int aborted_by = 0;   // a signal that came before the container existed
  int emulated = 0;     // a signal we turned into SIGKILL for pid 1

  // Whether pid 1 catches (1), ignores (-1) or leaves at default (0) signal `sig`.
  int disposition(int sig) const {
    auto text = read_file(fmt::format("/proc/{}/status", container));
    if (!text) return 0;
    auto mask_of = [&](std::string_view key) -> unsigned long long {
      auto pos = text->find(key);
      if (pos == std::string::npos) return 0;
      return std::strtoull(text->c_str() + pos + key.size(), nullptr, 16);
    };
    unsigned long long bit = 1ULL << (sig - 1);
    if (mask_of("SigCgt:") & bit) return 1;
    if (mask_of("SigIgn:") & bit) return -1;
    return 0;
  }

  void send(int sig) const {
    if (pidfd) ::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0);
    else ::kill(container, sig);
  }

  // The command is pid 1 of its namespace, and the kernel drops signals that pid 1 has no handler
  // for. To make `kill`, ^C and `timeout` behave as for any process, a terminating signal that
  // pid 1 leaves at its default action is carried out with SIGKILL, and the exit status still
  // says 128+N for the original signal.
  //
  // With --init, pid 1 reads the forwarded signals from a signalfd (blocked, so not "caught" in
  // /proc/PID/status) and passes them on to the command: it counts as catching them all.
  void forward(int sig, bool from_terminal) {
    if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) return;  // no job control across the boundary
    if (container == 0) {
      if (is_terminating(sig) && aborted_by == 0) {
        aborted_by = sig;
        ::kill(holder, SIGTERM);
      }
      return;
    }
    switch (init ? 1 : disposition(sig)) {
      case 1:
        // The terminal signals its whole foreground process group: the command has it already.
        if (!from_terminal) send(sig);
        return;
      case -1: return;
      default:
        if (is_terminating(sig)) {
          emulated = sig;
          send(SIGKILL);
        }
        return;
    }
  }
};

}  // namespace

namespace {
sigset_t handled_signals() {
  return signal_set({SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGWINCH, SIGTSTP, SIGTTIN,
                     SIGTTOU, SIGCHLD});
}
}  // namespace

sigset_t block_handled_signals() {
  sigset_t handled = handled_signals();
  sigset_t original;
  ::sigprocmask(SIG_BLOCK, &handled, &original);
  return original;
}

int supervise(const RunConfig& cfg, const Layout& layout, const sigset_t& original) {
  sigset_t handled = handled_signals();
  UniqueFd sigfd(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd) die(fmt::format("signalfd: {}", errno_text(errno)));

  auto [go_read, go_write] = make_pipe();
  auto [report_read, report_write] = make_pipe();
  pid_t self = ::getpid();

  auto fail_early = [&](const std::string& message) {
    remove_tree(layout.scratch);
    die(message);
  };

  pid_t holder = clone_with(CLONE_NEWNS | (holder_has_userns(layout.ids) ? CLONE_NEWUSER : 0));
  if (holder < 0) {
    int err = errno;
    fail_early(fmt::format("cannot create a user namespace: {}{}", errno_text(err),
                           err == ENOSPC || err == EPERM || err == EINVAL
                               ? " (are user namespaces disabled? see /proc/sys/user/max_user_namespaces)"
                               : ""));
  }
  if (holder == 0) {
    sigfd.reset();
    go_write.reset();
    report_read.reset();
    run_holder(cfg, layout, self, std::move(go_read), std::move(report_write), original);
  }
  go_read.reset();
  report_write.reset();

  // Maps are written from here, the parent namespace: the kernel's rule for an unprivileged map.
  std::string err = holder_has_userns(layout.ids) ? apply_id_maps(layout.ids, holder) : "";
  if (!err.empty()) {
    go_write.reset();  // the holder reads EOF and leaves
    ::waitpid(holder, nullptr, 0);
    fail_early(err);
  }
  if (::write(go_write.get(), "g", 1) != 1) fail_early(fmt::format("pipe: {}", errno_text(errno)));
  go_write.reset();

  Forwarder fwd;
  fwd.holder = holder;
  fwd.init = cfg.init;
  std::string report;
  int holder_status = 0;
  for (bool running = true; running;) {
    struct pollfd fds[2] = {{sigfd.get(), POLLIN, 0}, {report_read.get(), POLLIN, 0}};
    int nfds = report_read ? 2 : 1;
    if (::poll(fds, nfds, -1) < 0) {
      if (errno == EINTR) continue;
      die(fmt::format("poll: {}", errno_text(errno)));
    }
    if (nfds == 2 && fds[1].revents) {
      char buf[64];
      ssize_t n = ::read(report_read.get(), buf, sizeof buf);
      if (n > 0) report.append(buf, size_t(n));
      if (n <= 0) report_read.reset();
      if (fwd.container == 0 && report.find('\n') != std::string::npos) {
        fwd.container = pid_t(std::atoi(report.c_str()));
        fwd.pidfd = UniqueFd(int(::syscall(SYS_pidfd_open, fwd.container, 0)));
        if (fwd.aborted_by) fwd.forward(fwd.aborted_by, false);
      }
    }
    struct signalfd_siginfo si;
    while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGCHLD) {
        pid_t r = ::waitpid(holder, &holder_status, WNOHANG);
        if (r == holder) running = false;
        continue;
      }
      fwd.forward(int(si.ssi_signo), si.ssi_code == SI_KERNEL);
    }
  }

  int code;
  if (WIFEXITED(holder_status)) {
    code = WEXITSTATUS(holder_status);
    if (fwd.emulated && code == 128 + SIGKILL) code = 128 + fwd.emulated;
    if (fwd.aborted_by && code == 128 + SIGTERM) code = 128 + fwd.aborted_by;
  } else {
    warn(fmt::format("internal error: the namespace holder was killed by signal {}",
                     WIFSIGNALED(holder_status) ? WTERMSIG(holder_status) : 0));
    code = kExitLauncher;
  }
  // The holder removes the scratch directory; if it could not (killed), we try.
  if (::access(layout.scratch.c_str(), F_OK) == 0 && !remove_tree(layout.scratch))
    warn(fmt::format("{}: could not remove it; remove it by hand", layout.scratch));
  return code;
}

}  // namespace strata::run
