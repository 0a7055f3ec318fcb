// The container's setup as data (bubblewrap's shape): the command line becomes a list of Steps,
// and the container's first process executes the list in order. Keeping the plan separate from
// its execution keeps the order of mounts in one readable place (plan.cpp), and each step kind is
// implemented once (container.cpp).
//
// Targets are paths inside the container. Until the PivotRoot step they are resolved beneath the
// new root with openat2(RESOLVE_IN_ROOT), so a symlink in the image can never send a mount onto a
// host path; after it, "/" is the container's root.
#pragma once
#include <string>
#include <vector>

#include "cli.h"

namespace strata::run {

enum class StepKind {
  BindRoot,      // bind the overlay onto itself: a mount of our own namespace, so pivot_root takes it
  MountProc,     // a fresh procfs (the container's pid namespace) on target
  MountTmpfs,    // tmpfs on target; `data` holds its options
  BindDevice,    // host device node `source` on a new empty file `target`
  MountDevpts,   // a private devpts instance (newinstance) on target
  Symlink,       // symlink target -> source
  BindTree,      // recursive bind of host `source` on target (created as dir or file)
  Hostname,      // sethostname(source)
  LoopbackUp,    // bring `lo` up in the new network namespace
  PivotRoot,     // pivot_root into the new root, detach the old one at once
  Chdir,         // chdir(target) inside the container
  NoNewPrivs,    // PR_SET_NO_NEW_PRIVS
};

struct Step {
  StepKind kind;
  std::string source;
  std::string target;
  std::string data;
  bool read_only = false;
  bool optional = false;  // a failure is a note on stderr, not an error (e.g. /sys rootless)
};

// `console`: the caller's terminal (a host path such as /dev/pts/3), or empty when stdin is none.
std::vector<Step> plan_container(const RunConfig& cfg, const std::string& console);

// One line per step, for error messages ("mount tmpfs on /dev: ...").
std::string describe(const Step& step);

// The environment the command starts with: defaults, then --env in order.
std::vector<std::string> container_environment(const RunConfig& cfg);

}  // namespace strata::run
