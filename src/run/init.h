// --init: a tiny init, in strata-run's own binary, as pid 1 of the container (docker run --init,
// tini). Without it the command is pid 1, and a process orphaned in the container is reparented
// to a command that never waits for it: it stays a zombie until the container ends.
//
// The init forks the command as pid 2, passes on the signals strata-run forwards (the supervisor
// sends them to pid 1, supervisor.cpp), reaps every process reparented to it, and exits with the
// command's status (128+N when killed by signal N) as soon as the command exits, killing whatever
// is left in the container.
#pragma once
#include <signal.h>
#include <sys/types.h>

namespace strata::run {

// Call before forking the command: blocks the signals the init reads from a signalfd (so that
// none sent between the fork and the loop is lost) and hides strata-run from the container (see
// init.cpp). The command restores its own mask before its exec, as without --init.
void prepare_init();

// The init's loop; `command` is the forked command (pid 2). Never returns.
[[noreturn]] void run_init(pid_t command);

}  // namespace strata::run
