#include "init.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "strata/unique_fd.h"
#include "util.h"

namespace strata::run {

namespace {

// The signals the init reads: the forwarded ones, SIGWINCH (the supervisor passes it on when the
// command's pid 1 catches it, and the init stands in for the command there), and SIGCHLD.
sigset_t init_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kForwardedSignals) sigaddset(&set, s);
  sigaddset(&set, SIGWINCH);
  sigaddset(&set, SIGCHLD);
  return set;
}

// Reaps every child that has exited; returns true with *status when `command` was among them.
bool reap(pid_t command, int* status) {
  bool found = false;
  for (;;) {
    int st;
    pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return found;  // 0: children left, none exited; ECHILD: none left
    if (pid == command) {
      *status = st;
      found = true;
    }
  }
}

}  // namespace

void prepare_init() {
  sigset_t set = init_signals();
  ::sigprocmask(SIG_BLOCK, &set, nullptr);

  // The init is strata-run itself, a host program, and the container's processes may look at
  // pid 1 through /proc/1. Not dumpable, /proc/1/exe (the host's strata-run binary: runc's
  // CVE-2019-5736 overwrote its own through that link), environ (the caller's environment), mem,
  // cwd and root need CAP_SYS_PTRACE in the user namespace strata-run was started in, which the
  // container never has. The command is exec'd, and so dumpable again as usual.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  // /proc/1/cmdline is readable by everyone and would show the host's layer paths: overwrite the
  // argument strings (contiguous from argv[0]; /proc/self/cmdline says how long they are).
  if (auto cmdline = read_file("/proc/self/cmdline"); cmdline && !cmdline->empty()) {
    constexpr char kTitle[] = "strata-run\0--init";
    std::memset(program_invocation_name, 0, cmdline->size());
    std::memcpy(program_invocation_name, kTitle, std::min(sizeof kTitle, cmdline->size() - 1));
  }
}

void run_init(pid_t command) {
  sigset_t set = init_signals();
  UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC));
  if (!sigfd) {
    warn(fmt::format("--init: signalfd: {}", errno_text(errno)));
    ::kill(command, SIGKILL);  // without it we could neither forward nor reap: stop at once
  }
  int status = 0;
  bool done = false;
  while (!done) {
    struct signalfd_siginfo si;
    ssize_t r = sigfd ? ::read(sigfd.get(), &si, sizeof si) : -1;
    if (r < 0 && errno == EINTR) continue;
    if (r != sizeof si) {  // cannot happen with a valid signalfd; wait for the command instead
      pid_t w = ::waitpid(command, &status, 0);
      if (w < 0 && errno == EINTR) continue;
      if (w != command) status = W_EXITCODE(kExitLauncher, 0);  // never loop on ECHILD
      done = true;
      continue;
    }
    if (si.ssi_signo == SIGCHLD) {
      done = reap(command, &status);
      continue;
    }
    // A signal from the terminal went to its whole foreground process group: the command, in
    // ours, has it already. Anything else (the supervisor, kill 1 inside) is passed on.
    if (si.ssi_code != SI_KERNEL) ::kill(command, int(si.ssi_signo));
  }
  // The command is gone: so is the container. Our exit would kill the rest anyway; doing it first
  // says so here rather than leaving it to a rule of pid namespaces.
  ::kill(-1, SIGKILL);
  ::_exit(exit_code_of(status));
}

}  // namespace strata::run
