// strata-fs: command line, checks, mount, daemonize, session loop.
// A drop-in for fuse-overlayfs: `strata-fs [-f] [-d] [-s] -o OPTIONS MOUNTPOINT`, and the
// `strata-fs SOURCE MOUNTPOINT -o OPTIONS` form that mount.fuse3 produces.
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <expected>
#include <cstring>
#include <fmt/format.h>
#include <string>
#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "fd_budget.h"
#include "fuse_ops.h"
#include "passthrough.h"
#include "strata/layers.h"
#include "strata/log.h"
#include "strata/options.h"
#include "strata/overlay.h"
#include "strata/sys.h"
#include "strata/trace.h"

using namespace strata;

namespace {

constexpr const char* kUsage =
    "usage: strata-fs [-f] [-d] [-s] -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTIONS] MOUNTPOINT\n"
    "       strata-fs SOURCE MOUNTPOINT -o OPTIONS      (as run by mount -t fuse.strata-fs)\n"
    "\n"
    "A userspace overlay filesystem: one writable upper directory over read-only lower\n"
    "directories, in the kernel overlayfs on-disk format.\n"
    "\n"
    "  -f            stay in the foreground\n"
    "  -d            debug: foreground, log every FUSE request\n"
    "  -s            single-threaded\n"
    "  -o OPTIONS    comma-separated; may be given several times\n"
    "  --version     print the version\n"
    "  --help        this text\n"
    "\n"
    "options:\n"
    "  lowerdir=L1:L2:...     read-only layers, uppermost first (\\: escapes a colon)\n"
    "  upperdir=DIR           writable layer (without it the mount is read-only)\n"
    "  workdir=DIR            staging directory on the upper's filesystem\n"
    "  timeout=SECONDS        kernel entry/attribute cache time (default 86400)\n"
    "  volatile, fsync=0      skip fsync (podman --rm, build steps)\n"
    "  trace=CATEGORIES       all, or lookup+readdir+open+copyup+whiteout+opaque+rename+xattr+error\n"
    "  trace_file=PATH        where trace lines go (default: stderr in the foreground)\n"
    "  trace_format=text|json one line per event\n"
    "  plus the generic mount options (allow_other, ro, nodev, nosuid, fsname=, ...) and the\n"
    "  options fuse-overlayfs accepts; see strata-fs(1).\n";

[[noreturn]] void die(const std::string& message) {
  std::string line = "strata-fs: " + message + "\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  ::_exit(1);
}

void raise_fd_limit() {
  // Directory nodes hold an fd per layer; take all the descriptors we may have.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = rl.rlim_max;
  if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
    unsigned long nr = 0;
    if (std::fscanf(f, "%lu", &nr) == 1 && nr > want) {
      struct rlimit bigger = {nr, nr};
      if (setrlimit(RLIMIT_NOFILE, &bigger) == 0) want = nr;
    }
    std::fclose(f);
  }
  rl.rlim_cur = want;
  setrlimit(RLIMIT_NOFILE, &rl);
}

struct CommandLine {
  MountOptions opts;
  std::string mountpoint;
  bool foreground = false, debug = false, single_thread = false;
};

CommandLine parse_command_line(int argc, char** argv) {
  CommandLine cl;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--version" || a == "-V") {
      std::printf("strata-fs version %s\nFUSE library version %s\n", STRATA_VERSION, fuse_pkgversion());
      std::exit(0);
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "-f") {
      cl.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      cl.debug = cl.foreground = true;
    } else if (a == "-s") {
      cl.single_thread = true;
    } else if (a == "-o" || a.starts_with("-o")) {
      std::string text = a == "-o" ? (i + 1 < argc ? argv[++i] : "") : a.substr(2);
      if (text.empty()) die("-o: needs an option list");
      if (auto r = parse_option_string(text, cl.opts); !r) die(r.error());
    } else if (a.starts_with("-") && a != "-") {
      die(fmt::format("unknown flag '{}' (see strata-fs --help)", a));
    } else {
      positional.push_back(a);
    }
  }
  if (cl.opts.debug) cl.debug = cl.foreground = true;
  if (positional.empty()) die("mountpoint: missing (usage: strata-fs -o lowerdir=DIR MOUNTPOINT)");
  if (positional.size() > 2) die(fmt::format("'{}': unexpected argument", positional[2]));
  cl.mountpoint = positional.back();  // with two, the first is mount(8)'s SOURCE: ignored
  return cl;
}

// Kernel passthrough needs the FUSE superblock's stacking depth announced: 1 keeps our mount
// usable as a lower layer of a kernel overlay; a layer that is itself on an overlay needs 2.
int passthrough_stack_depth(const LayerStack& stack) {
  constexpr long kOverlayMagic = 0x794c7630, kEcryptfsMagic = 0xf15f;
  for (int i = 0; i < stack.layer_count(); ++i) {
    struct statfs sf;
    if (!stack.layer(i).root || ::fstatfs(stack.layer(i).root.get(), &sf) != 0) continue;
    if (sf.f_type == kOverlayMagic || sf.f_type == kEcryptfsMagic) {
      log_error("passthrough: layer {} is on an overlay filesystem: announcing stacking depth 2, so this "
                "mount cannot be a lower layer of a kernel overlay", stack.layer(i).path);
      return 2;
    }
  }
  return 1;
}

std::string canonical_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

bool path_inside(const std::string& inner, const std::string& outer) {
  return inner == outer || outer == "/" || (inner.starts_with(outer) && inner[outer.size()] == '/');
}

// The root of the mount that `path` lies on (walk up while the device stays the same).
std::string mount_root_of(const std::string& path) {
  std::string cur = canonical_path(path);
  struct stat st;
  if (::stat(cur.c_str(), &st) != 0) return cur;
  while (cur != "/") {
    std::string up = cur.substr(0, std::max<size_t>(1, cur.rfind('/')));
    struct stat pst;
    if (::stat(up.c_str(), &pst) != 0 || pst.st_dev != st.st_dev) break;
    cur = up;
  }
  return cur;
}

// A mountpoint inside a layer (or a layer inside the mountpoint) would make the daemon look up
// names in its own mount: a deadlock, or endless recursion. Refuse it up front. A layer on
// another strata-fs mount counts with that mount's own layers (user.strata.layers on its root),
// since looking names up there leads back into this mount just the same.
std::expected<void, std::string> check_no_recursion(const std::string& mountpoint, const MountOptions& opts) {
  const std::string mnt = canonical_path(mountpoint);
  auto check = [&](const char* what, const std::string& dir, const std::string& via) -> std::expected<void, std::string> {
    const std::string d = canonical_path(dir);
    const std::string through = via.empty() ? "" : fmt::format(" (a layer of the strata-fs mount {})", via);
    if (path_inside(mnt, d))
      return std::unexpected(fmt::format("mountpoint {}: inside {} {}{}: the mount would look itself up",
                                         mountpoint, what, dir, through));
    if (path_inside(d, mnt))
      return std::unexpected(fmt::format("{} {}: inside the mountpoint {}{}: the mount would look itself up",
                                         what, dir, mountpoint, through));
    return {};
  };
  struct Dir {
    const char* what;
    std::string path, via;  // via: the strata-fs mount whose layer this is ("" for ours)
  };
  std::vector<Dir> todo;
  for (const auto& lower : opts.lowerdirs) todo.push_back({"lowerdir", lower, ""});
  if (!opts.upperdir.empty()) todo.push_back({"upperdir", opts.upperdir, ""});
  if (!opts.workdir.empty()) todo.push_back({"workdir", opts.workdir, ""});
  for (size_t i = 0; i < todo.size() && i < 256; ++i) {
    const Dir cur = todo[i];
    const std::string& dir = cur.path;
    if (auto r = check(cur.what, dir, cur.via); !r) return r;
    struct statfs sf;
    constexpr long kFuseMagic = 0x65735546;
    if (::statfs(dir.c_str(), &sf) != 0 || sf.f_type != kFuseMagic) continue;
    std::string root = mount_root_of(dir);
    char buf[65536];
    ssize_t n = ::getxattr(root.c_str(), "user.strata.layers", buf, sizeof buf);
    if (n <= 0) continue;  // not a strata-fs mount (or an old one)
    std::string list(buf, n);
    for (size_t pos = 0; pos < list.size();) {
      size_t nl = list.find('\n', pos);
      std::string layer = list.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (!layer.empty()) todo.push_back({"layer", layer, root});
      pos = nl == std::string::npos ? list.size() : nl + 1;
    }
  }
  return {};
}

// SIGUSR1 prints the summary. The handler only pokes a pipe; a thread does the formatting. The
// thread is stopped (write end closed, joined) before the daemon's state it reads goes away.
std::atomic<int> g_summary_poke{-1};

void on_sigusr1(int) {
  char c = 1;
  if (int fd = g_summary_poke.load(); fd >= 0) [[maybe_unused]] ssize_t n = ::write(fd, &c, 1);
}

class SummaryThread {
 public:
  SummaryThread(fs::Daemon& daemon, Tracer& tracer) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    read_end_.reset(fds[0]);
    write_end_.reset(fds[1]);
    thread_ = std::thread([this, &daemon, &tracer] {
      char c;
      while (::read(read_end_.get(), &c, 1) > 0)
        tracer.write_raw(tracer.json() ? "{\"event\":\"summary\"," + fs::summary_json(daemon).substr(1) + "\n"
                                       : fs::summary_text(daemon));
    });
    g_summary_poke = write_end_.get();
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
  }
  ~SummaryThread() {
    signal(SIGUSR1, SIG_IGN);
    g_summary_poke = -1;
    write_end_.reset();  // the reader sees end of file and returns
    if (thread_.joinable()) thread_.join();
  }

 private:
  UniqueFd read_end_, write_end_;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  // One malloc arena. Nodes outlive the request that made them and are freed by whichever worker
  // handles the FORGET; with glibc's arena per thread that memory scatters over up to 8 arenas
  // per core and the daemon grows with every walk of a big tree (measured on 100k files: 32 MiB
  // after the first walk, 44 MiB after the fourth; with one arena 32 MiB each time).
  ::mallopt(M_ARENA_MAX, 1);
  CommandLine cl = parse_command_line(argc, argv);
  MountOptions& opts = cl.opts;

  auto stack = LayerStack::open(opts);
  if (!stack) die(stack.error());
  if (auto st = sys::fstatat(AT_FDCWD, cl.mountpoint.c_str(), 0); !st)
    die(fmt::format("mountpoint {}: {}", cl.mountpoint, sys::errno_text(st.error())));
  else if (!S_ISDIR(st->st_mode))
    die(fmt::format("mountpoint {}: {}", cl.mountpoint, sys::errno_text(ENOTDIR)));
  if (auto r = check_no_recursion(cl.mountpoint, opts); !r) die(r.error());
  if (auto r = (*stack)->prepare_workdir(); !r) die(r.error());

  uint32_t categories = 0;
  if (!opts.trace.empty()) {
    auto c = parse_trace_categories(opts.trace);
    if (!c) die(c.error());
    categories = *c;
  }
  UniqueFd trace_sink;
  if (!opts.trace_file.empty()) {
    auto fd = sys::openat(AT_FDCWD, opts.trace_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (!fd) die(fmt::format("trace_file {}: {}", opts.trace_file, sys::errno_text(fd.error())));
    trace_sink = std::move(*fd);
  } else if (categories && !cl.foreground) {
    die("trace: without -f there is no terminal: give trace_file=PATH");
  }
  Tracer tracer(categories, std::move(trace_sink), opts.trace_format == "json");

  raise_fd_limit();
  ::umask(0);  // modes we pass to the layers are exact; the kernel already applied the caller's umask

  Overlay overlay(std::move(*stack), &tracer);
  {
    IdMap uids, gids;
    uids.set_ranges(opts.uid_ranges);
    gids.set_ranges(opts.gid_ranges);
    if (opts.squash_uid) uids.set_squash(opts.squash_uid);
    else if (opts.squash_to_root) uids.set_squash(0);
    if (opts.squash_gid) gids.set_squash(opts.squash_gid);
    else if (opts.squash_to_root) gids.set_squash(0);
    overlay.set_id_maps(std::move(uids), std::move(gids));
  }
  if (auto r = overlay.init(); !r) die(fmt::format("lowerdir: cannot read the layer roots: {}", sys::errno_text(r.error())));

  std::string fuse_opts = "default_permissions,fsname=strata-fs,subtype=strata-fs";
  // As the kernel overlay does for root: device nodes and setuid binaries of the layers work
  // (libfuse would default to nodev,nosuid). nodev/nosuid given by the user come later and win.
  // Also like the kernel overlay, the mount is for every user (permissions are checked by the
  // kernel against the layers' owners and modes: default_permissions).
  if (::geteuid() == 0) fuse_opts += ",dev,suid,allow_other";
  if (!overlay.stack().has_upper()) fuse_opts += ",ro";
  for (const auto& o : opts.fuse_options) {
    if (o == "default_permissions") continue;
    fuse_opts += "," + o;
  }
  std::vector<std::string> fargs_store = {argv[0], "-o", fuse_opts};
  if (cl.debug) fargs_store.push_back("-d");
  std::vector<char*> fargv;
  for (auto& s : fargs_store) fargv.push_back(s.data());
  struct fuse_args args = FUSE_ARGS_INIT(int(fargv.size()), fargv.data());

  fs::Passthrough passthrough;
  fs::Daemon daemon;
  daemon.passthrough = &passthrough;
  fs::OpenFiles open_files(overlay, &passthrough, daemon.counters);
  daemon.open_files = &open_files;
  for (const auto& dir : opts.lowerdirs) daemon.layer_paths += canonical_path(dir) + "\n";
  if (!opts.upperdir.empty()) daemon.layer_paths += canonical_path(opts.upperdir) + "\n";
  if (!opts.workdir.empty()) daemon.layer_paths += canonical_path(opts.workdir) + "\n";
  daemon.overlay = &overlay;
  daemon.timeout = opts.timeout;
  daemon.volatile_mode = opts.volatile_mode;
  daemon.want_acl = opts.acl;
  struct fuse_session* se = fuse_session_new(&args, &fs::lowlevel_ops(), sizeof(fs::lowlevel_ops()), &daemon);
  if (!se) die(fmt::format("options '{}': refused by libfuse", fuse_opts));
  daemon.session = se;
  overlay.on_attr_changed = [&daemon](Node* node) {
    fuse_lowlevel_notify_inval_inode(daemon.session, fs::nodeid_of(daemon, node), -1, 0);
  };
  overlay.on_listing_changed = [&daemon](Node* dir) {
    fuse_lowlevel_notify_inval_inode(daemon.session, fs::nodeid_of(daemon, dir), 0, 0);
  };
  if (fuse_set_signal_handlers(se) != 0) die("cannot install signal handlers");
  if (fuse_session_mount(se, cl.mountpoint.c_str()) != 0)
    die(fmt::format("mountpoint {}: mount failed (see the message above)", cl.mountpoint));
  passthrough.install(se, opts.passthrough == "auto", passthrough_stack_depth(overlay.stack()));
  // Returns in the parent only once the mount is live, so callers can use it at once.
  if (fuse_daemonize(cl.foreground) != 0) die("cannot daemonize");
  SummaryThread summary(daemon, tracer);
  // Threads start after fuse_daemonize's fork; they stop before the session goes away.
  std::optional<fs::FdBudget> fd_budget;
  fd_budget.emplace(daemon, se);
  daemon.fd_budget = &*fd_budget;

  int rc;
  if (cl.single_thread) {
    rc = fuse_session_loop(se);
  } else {
    struct fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_idle_threads(config, 16);
    fuse_loop_cfg_set_max_threads(config, 64);
    rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
  }
  daemon.fd_budget = nullptr;
  fd_budget.reset();
  fs::free_open_handles(daemon);
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  return rc == 0 ? 0 : 1;
}
