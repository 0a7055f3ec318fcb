// The process tree of one container, and who does what in it:
//
//   strata-run            the supervisor, on the host: writes the holder's id maps, forwards
//    |                    signals, turns the result into our exit status, removes leftovers
//    `- holder            new mount namespace (rootless: and the new user namespace, root
//        |                inside): mounts strata-fs on a private staging directory, stays there
//        |                for the container's lifetime, then unmounts, waits for the daemon and
//        |                removes the scratch directory
//        |- strata-fs     the daemon, in the holder's mount namespace (not the container's)
//        `- container     new mount, pid, uts, ipc (net) namespaces (as root: and the new user
//                         namespace, identity-mapped): pid 1; runs the plan, pivots onto the
//                         overlay, execs the command (container.cpp); with --init it
//                         stays as an init and forks the command as pid 2 (init.h)
//
// Death of a parent is passed down with PR_SET_PDEATHSIG (holder: SIGTERM, cleans up; daemon:
// SIGTERM, unmounts; container: SIGKILL), so a SIGKILLed strata-run leaves no mount and no daemon.
#pragma once
#include <signal.h>

#include <string>

#include "cli.h"
#include "daemon.h"
#include "idmap.h"

namespace strata::run {

// What the preflight (main.cpp) decided, on the host, before any namespace exists.
struct Layout {
  std::string scratch;     // our temporary directory; removed at exit
  DaemonConfig daemon;     // mountpoint is scratch/root; upper/work may be in scratch too
  IdMapPlan ids;
  std::string console;     // the caller's terminal (stdin's), bound on /dev/console; or empty
};

// Blocks the signals the supervisor handles and returns the mask from before. Called first thing in
// main(): a signal that comes while the preflight makes the scratch directory then stays pending
// until supervise() reads it, and the scratch directory is removed on the way out instead of left.
sigset_t block_handled_signals();

// Runs the container; returns the exit status for strata-run. `original_mask` is what
// block_handled_signals() returned: what the daemon and the command get back.
int supervise(const RunConfig& cfg, const Layout& layout, const sigset_t& original_mask);

}  // namespace strata::run
