#include "caller_creds.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>

#include <fmt/format.h>

namespace strata::fs {

namespace {

constexpr int kCapFsetid = 4;  // <linux/capability.h>

bool effective_has(pid_t pid, int cap) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> cap) & 1;
  return false;
}

bool same_user_namespace(pid_t pid) {
  struct stat theirs, ours;
  if (::stat(fmt::format("/proc/{}/ns/user", pid).c_str(), &theirs) < 0) return false;
  if (::stat("/proc/self/ns/user", &ours) < 0) return false;
  return theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino;
}

// `id` is in the "outside" column of /proc/PID/{uid,gid}_map, read from our namespace.
bool mapped_in(pid_t pid, const char* map, uint32_t id) {
  std::ifstream in(fmt::format("/proc/{}/{}", pid, map));
  uint64_t inside, outside, count;
  while (in >> inside >> outside >> count)
    if (id >= outside && id - outside < count) return true;
  return false;
}

}  // namespace

bool caller_in_group(fuse_req_t req, gid_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return true;
  gid_t groups[256];
  const int n = fuse_req_getgroups(req, 256, groups);
  return std::find(groups, groups + std::clamp(n, 0, 256), gid) != groups + std::clamp(n, 0, 256);
}

bool caller_has_fsetid_over(pid_t pid, uid_t uid, gid_t gid) {
  if (pid <= 0) return false;
  try {
    if (!effective_has(pid, kCapFsetid)) return false;
  } catch (const std::exception&) {  // a CapEff line we can't parse
    return false;
  }
  if (same_user_namespace(pid)) return true;
  return mapped_in(pid, "uid_map", uid) && mapped_in(pid, "gid_map", gid);
}

}  // namespace strata::fs
