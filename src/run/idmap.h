// uid/gid maps of the container's user namespace: the caller becomes root inside.
//  - root: the identity map over the whole range (files keep their owners);
//  - an ordinary user with /etc/subuid and /etc/subgid ranges and newuidmap/newgidmap (package
//    uidmap): 0 -> the caller, 1..N -> the subordinate range, so images with several owners work;
//  - otherwise one mapping, 0 -> the caller, with setgroups denied (the kernel's rule for an
//    unprivileged gid_map).
// STRATA_RUN_IDMAP=single forces the last form (for tests and for broken subordinate ranges).
// The maps are written from outside the namespace, by the supervisor, once the child exists.
#pragma once
#include <sys/types.h>

#include <string>

namespace strata::run {

struct IdRange {
  unsigned long start = 0, count = 0;
};

struct IdMapPlan {
  enum class Kind { Identity, Subordinate, Single } kind = Kind::Single;
  uid_t uid = 0;
  gid_t gid = 0;
  IdRange subuid, subgid;
  std::string newuidmap, newgidmap;  // helper paths for Kind::Subordinate
};

IdMapPlan plan_id_maps();
std::string describe(const IdMapPlan& plan);

// Writes the maps of process `pid` (a child in a new user namespace). Returns "" or a one-line
// error message (the caller cleans up before dying).
std::string apply_id_maps(const IdMapPlan& plan, pid_t pid);

}  // namespace strata::run
