// The strata-fs daemon as seen by strata-run: found, started in the foreground (-f) as our own
// child so that we know its pid and can wait for it, watched until the mount is live, and stopped
// after the container: unmount, then wait for the pid (an unmount that returned says nothing about
// whether the daemon is gone). The daemon runs in the holder's mount namespace, never in the
// container's: a daemon whose own root is the filesystem it serves deadlocks against itself.
#pragma once
#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace strata::run {

struct DaemonConfig {
  std::string program;  // strata-fs
  std::vector<std::string> lowers;
  std::string upper, work, mountpoint;
  std::string trace, trace_file;
  bool in_user_namespace = false;  // rootless: the daemon is root only in our user namespace
};

// strata-fs beside our own executable, else $STRATA_FS, else in PATH. Dies if there is none.
std::string find_strata_fs();

// The -o option string (paths escaped for strata-fs's parser).
std::string daemon_options(const DaemonConfig& cfg);

// fork + exec strata-fs -f; the child gets SIGTERM when we die, its own session (a ^C meant for
// the container must not unmount its root) and the signal mask `original_mask`.
pid_t start_daemon(const DaemonConfig& cfg, const sigset_t& original_mask);

// Polls until `mountpoint` is a different filesystem from its parent. Dies (after reaping) when
// the daemon exits first or nothing happens within `timeout_ms`.
void wait_until_mounted(pid_t daemon, const std::string& mountpoint, int timeout_ms);

// Unmounts `mountpoint` and waits until `daemon` has exited: SIGTERM after a grace period, then
// SIGKILL. Returns false (after a warning) if anything had to be forced.
bool stop_daemon(pid_t daemon, const std::string& mountpoint);

}  // namespace strata::run
