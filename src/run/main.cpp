// strata-run: run a command in a container whose root filesystem is a strata-fs overlay of image
// layers, as root or as an ordinary user. main() is the outline: parse the command line, check on
// the host everything a person could have got wrong (so that the message comes before any
// namespace exists), then hand over to the supervisor (supervisor.h draws the process tree).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "cli.h"
#include "daemon.h"
#include "idmap.h"
#include "supervisor.h"
#include "util.h"

using namespace strata::run;

namespace {

std::string mode_string(mode_t mode) {
  std::string s = S_ISCHR(mode) ? "c" : S_ISDIR(mode) ? "d" : S_ISBLK(mode) ? "b" : "-";
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) s += (mode & (0400 >> i)) ? rwx[i] : '-';
  return s;
}

// Mounting FUSE needs read and write access to /dev/fuse. Several distributions' images ship it
// 0600, which only root passes; say exactly that instead of a bare EACCES from deep inside.
void check_dev_fuse() {
  struct stat st;
  if (::stat("/dev/fuse", &st) != 0)
    die(fmt::format("/dev/fuse: {} (load the fuse module: modprobe fuse)", errno_text(errno)));
  if (!S_ISCHR(st.st_mode)) die("/dev/fuse: not a character device");
  if (::faccessat(AT_FDCWD, "/dev/fuse", R_OK | W_OK, AT_EACCESS) == 0) return;
  if (errno == EACCES || errno == EPERM)
    die(fmt::format("/dev/fuse: mode {:04o} ({}), not accessible to uid {}; ask an administrator to run "
                    "'chmod 0666 /dev/fuse' (most distributions ship it 0666)",
                    st.st_mode & 07777, mode_string(st.st_mode), ::geteuid()));
  die(fmt::format("/dev/fuse: {}", errno_text(errno)));
}

std::string existing_dir(const std::string& option, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) die(fmt::format("{} {}: {}", option, path, errno_text(errno)));
  if (!S_ISDIR(st.st_mode)) die(fmt::format("{} {}: {}", option, path, errno_text(ENOTDIR)));
  return absolute_path(path);
}

std::string created_dir(const std::string& option, const std::string& path) {
  if (!make_dirs(path, 0755)) die(fmt::format("{} {}: {}", option, path, errno_text(errno)));
  return existing_dir(option, path);
}

Layout preflight(RunConfig& cfg) {
  Layout layout;
  DaemonConfig& d = layout.daemon;
  d.program = find_strata_fs();
  for (const auto& lower : cfg.lowers) d.lowers.push_back(existing_dir("--lower", lower));
  for (auto& bind : cfg.binds) {
    struct stat st;
    if (::stat(bind.source.c_str(), &st) != 0)
      die(fmt::format("--bind {}:{}: {}: {}", bind.source, bind.target, bind.source, errno_text(errno)));
    bind.source = absolute_path(bind.source);
  }
  check_dev_fuse();
  // Only a terminal of the caller's own, not one named through another mount namespace's devpts:
  // ttyname() checks that the name it returns is the same device as the fd.
  if (::isatty(STDIN_FILENO))
    if (const char* name = ::ttyname(STDIN_FILENO)) layout.console = name;
  layout.ids = plan_id_maps();
  d.in_user_namespace = layout.ids.kind != IdMapPlan::Kind::Identity;

  if (!cfg.upper.empty()) {
    d.upper = created_dir("--upper", cfg.upper);
    if (d.upper == "/") die("--upper /: not a usable upper directory");
    // Beside the upper, not inside it: the same filesystem (copy-up renames from work to upper)
    // and nothing of ours appears in the container's changes.
    d.work = created_dir("--work", cfg.work.empty() ? d.upper + ".work" : cfg.work);
  }

  const char* tmp = std::getenv("TMPDIR");
  std::string templ = fmt::format("{}/strata-run.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!::mkdtemp(templ.data())) die(fmt::format("{}: {}", templ, errno_text(errno)));
  layout.scratch = absolute_path(templ);
  d.mountpoint = layout.scratch + "/root";
  bool ok = ::mkdir(d.mountpoint.c_str(), 0755) == 0;
  if (cfg.upper.empty()) {
    d.upper = layout.scratch + "/upper";
    d.work = layout.scratch + "/work";
    ok = ok && ::mkdir(d.upper.c_str(), 0755) == 0 && ::mkdir(d.work.c_str(), 0700) == 0;
  }
  if (!ok) {
    int err = errno;
    remove_tree(layout.scratch);
    die(fmt::format("{}: {}", layout.scratch, errno_text(err)));
  }

  if (!cfg.trace.empty()) {
    d.trace = cfg.trace;
    d.trace_file = absolute_path(!cfg.trace_file.empty() ? cfg.trace_file
                                                         : fmt::format("{}/strata-run.{}.trace",
                                                                       tmp && *tmp ? tmp : "/tmp", ::getpid()));
    warn(fmt::format("tracing {} to {}", d.trace, d.trace_file));
  }
  return layout;
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t original_mask = block_handled_signals();
  RunConfig cfg = parse_command_line(argc, argv);
  Layout layout = preflight(cfg);
  return supervise(cfg, layout, original_mask);
}
