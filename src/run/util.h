// strata-run's small helpers: dying with one line, exit codes, files written in one go, and a
// tree removal that never leaves its filesystem. Everything here is for a short-lived launcher:
// errors that a person must fix end the process with die(); nothing is retried or recovered.
#pragma once
#include <signal.h>
#include <sys/types.h>

#include <fmt/format.h>

#include <optional>
#include <string>
#include <string_view>

namespace strata::run {

// Exit codes of the launcher itself, as docker and podman use them, so that a script can tell
// "strata-run failed" from "the command failed".
constexpr int kExitLauncher = 125;  // strata-run could not set the container up
constexpr int kExitCannotRun = 126;  // the command exists but cannot be executed
constexpr int kExitNotFound = 127;   // the command is not in the container

// "strata-run: MESSAGE" on stderr with a single write(2); die() then _exit()s (never returns, runs
// no destructors: safe in any of the launcher's processes, before or after fork).
void warn(std::string_view message);
[[noreturn]] void die(std::string_view message, int status = kExitLauncher);

template <class... Args>
[[noreturn]] void dief(fmt::format_string<Args...> f, Args&&... args) {
  die(fmt::format(f, std::forward<Args>(args)...));
}

std::string errno_text(int err);

// The signals whose default action ends a process: strata-run passes them on to the command (and
// SIGWINCH too, when the command catches it; job control stops never cross the boundary).
inline constexpr int kForwardedSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};

// A wait status as a shell reports it: the exit code, or 128+N when killed by signal N.
int exit_code_of(int status);

// Whole-file helpers for /proc files and small config files.
bool write_file(const std::string& path, std::string_view data);  // false with errno set
std::optional<std::string> read_file(const std::string& path);

// The first executable `name` in a ':'-separated list of absolute directories (relative entries
// are skipped: a launcher must not run whatever the current directory holds).
std::optional<std::string> find_in_dirs(const std::string& dirs, std::string_view name);

// mkdir -p; false with errno set on the first failure (an existing directory is fine).
bool make_dirs(const std::string& path, mode_t mode);

// rm -rf that stays on the filesystem of `path`: a directory with another st_dev (a mount that is
// still there) is left alone, so a failed unmount can never make us delete through it.
// Returns false when something could not be removed.
bool remove_tree(const std::string& path);

std::string dirname_of(const std::string& path);
std::string basename_of(const std::string& path);
// An absolute, lexically clean path (no symlink resolution): relative paths are taken against
// the current directory, "//", "/./" and trailing slashes are dropped.
std::string absolute_path(const std::string& path);

}  // namespace strata::run
