// The container's first process: pid 1 of the new pid namespace, in its own mount, uts, ipc
// (and for --net none, network) namespaces. It executes the planned steps against the overlay
// mounted at `new_root`, then becomes the command with execve(): the command is pid 1, as under
// `docker run` without --init (`echo $$` prints 1). Signals reach it through the supervisor
// (supervisor.cpp), which stands in for the kernel's default actions that pid 1 is exempt from.
// With --init it forks the command as pid 2 and stays as its init (init.h).
#pragma once
#include <signal.h>

#include <string>
#include <vector>

#include "cli.h"
#include "plan.h"

namespace strata::run {

[[noreturn]] void run_container(const RunConfig& cfg, const std::vector<Step>& steps, const std::string& new_root,
                                const sigset_t& original_mask);

}  // namespace strata::run
