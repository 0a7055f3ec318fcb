#include "plan.h"

#include <cstdlib>

#include <fmt/format.h>

namespace strata::run {

namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Host device nodes the container gets; anything else in /dev stays out (no disks, no kmsg).
constexpr const char* kDevices[] = {"null", "zero", "full", "random", "urandom", "tty"};

}  // namespace

std::vector<Step> plan_container(const RunConfig& cfg, const std::string& console) {
  std::vector<Step> steps;
  auto add = [&](StepKind kind, std::string source, std::string target, std::string data = {}) -> Step& {
    steps.push_back(Step{kind, std::move(source), std::move(target), std::move(data)});
    return steps.back();
  };

  // Mounts copied from the holder into a namespace of another user namespace are locked, and
  // pivot_root refuses a locked new root: a bind made here is not.
  add(StepKind::BindRoot, "", "/");

  // /proc first: the later /dev links point into it.
  add(StepKind::MountProc, "proc", "/proc");

  // A minimal /dev: tmpfs, a few host nodes bound in (a tmpfs made in a user namespace cannot
  // hold working device nodes, a bind mount of the host's can), a private devpts, shm, links.
  add(StepKind::MountTmpfs, "tmpfs", "/dev", "mode=0755,size=1m");
  for (const char* dev : kDevices) add(StepKind::BindDevice, fmt::format("/dev/{}", dev), fmt::format("/dev/{}", dev));
  // The caller's terminal belongs to the host's devpts, not to the container's: its /dev/pts/N
  // name leads nowhere inside, and ttyname(3) (tty, ps, ssh, sudo...) would find no name for the
  // command's stdin. Bound on /dev/console, as runc does with the terminal it gives a container,
  // it is found where glibc looks when the name fails: a scan of /dev for the same device.
  if (!console.empty()) add(StepKind::BindDevice, console, "/dev/console");
  add(StepKind::MountDevpts, "devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620");
  add(StepKind::Symlink, "pts/ptmx", "/dev/ptmx");
  add(StepKind::MountTmpfs, "tmpfs", "/dev/shm", "mode=1777");
  add(StepKind::Symlink, "/proc/self/fd", "/dev/fd");
  add(StepKind::Symlink, "/proc/self/fd/0", "/dev/stdin");
  add(StepKind::Symlink, "/proc/self/fd/1", "/dev/stdout");
  add(StepKind::Symlink, "/proc/self/fd/2", "/dev/stderr");

  // /sys read-only. A rootless user may be refused (locked mounts, foreign network namespace):
  // the container then has an empty /sys, which most commands survive.
  Step& sys = add(StepKind::BindTree, "/sys", "/sys");
  sys.read_only = true;
  sys.optional = true;

  // The user's binds last, so that they may cover anything above (even a /dev entry).
  for (const auto& bind : cfg.binds) add(StepKind::BindTree, bind.source, bind.target).read_only = bind.read_only;

  add(StepKind::Hostname, cfg.hostname, "");
  if (cfg.net == NetMode::None) add(StepKind::LoopbackUp, "lo", "");

  // Nothing from the host may run after this: the old root is detached in the same step.
  add(StepKind::PivotRoot, "", "/");
  add(StepKind::Chdir, "", cfg.cwd);
  add(StepKind::NoNewPrivs, "", "");
  return steps;
}

std::string describe(const Step& step) {
  const char* ro = step.read_only ? " read-only" : "";
  switch (step.kind) {
    case StepKind::BindRoot: return "bind the overlay onto itself";
    case StepKind::MountProc: return fmt::format("mount proc on {}", step.target);
    case StepKind::MountTmpfs: return fmt::format("mount tmpfs on {}", step.target);
    case StepKind::BindDevice: return fmt::format("bind {} on {}", step.source, step.target);
    case StepKind::MountDevpts: return fmt::format("mount devpts on {}", step.target);
    case StepKind::Symlink: return fmt::format("symlink {} -> {}", step.target, step.source);
    case StepKind::BindTree: return fmt::format("bind{} {} on {}", ro, step.source, step.target);
    case StepKind::Hostname: return fmt::format("set hostname {}", step.source);
    case StepKind::LoopbackUp: return "bring up lo";
    case StepKind::PivotRoot: return "pivot_root into the overlay";
    case StepKind::Chdir: return fmt::format("--cwd {}", step.target);
    case StepKind::NoNewPrivs: return "PR_SET_NO_NEW_PRIVS";
  }
  return "?";
}

std::vector<std::string> container_environment(const RunConfig& cfg) {
  // A clean environment: the host's PATH or LD_* mean nothing inside the image.
  const char* term = std::getenv("TERM");
  std::vector<std::string> env = {
      fmt::format("PATH={}", kDefaultPath),
      "HOME=/root",
      fmt::format("TERM={}", term && *term ? term : "xterm"),
      fmt::format("HOSTNAME={}", cfg.hostname),
      "container=strata",
  };
  for (const auto& kv : cfg.env) {
    std::string key = kv.substr(0, kv.find('=') + 1);
    bool replaced = false;
    for (auto& existing : env)
      if (existing.starts_with(key)) {
        existing = kv;
        replaced = true;
      }
    if (!replaced) env.push_back(kv);
  }
  return env;
}

}  // namespace strata::run
