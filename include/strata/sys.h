// sys:: thin syscall wrappers: O_CLOEXEC always, EINTR retried, results as Result<T>.
// Paths given to these are single components relative to a directory fd unless said otherwise:
// the daemon never walks a multi-component path inside a layer (see resolve.h).
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"
#include "strata/unique_fd.h"

namespace strata::sys {

Result<UniqueFd> openat(int dirfd, const char* name, int flags, mode_t mode = 0);
// Reopen an O_PATH fd with real access flags (through /proc/self/fd, as passthrough_hp does).
Result<UniqueFd> reopen(int opath_fd, int flags);
Result<struct stat> fstatat(int dirfd, const char* name, int flags = AT_SYMLINK_NOFOLLOW);
Result<struct stat> fstat(int fd);
Result<std::string> readlinkat(int dirfd, const char* name);

// Extended attributes of the object `name` in `dirfd` (name may be "" for dirfd itself), never
// following a final symlink. Uses getxattrat & co (Linux 6.13) when present, else /proc paths.
Result<std::string> getxattr(int dirfd, const char* name, const char* attr);
Result<std::vector<std::string>> listxattr(int dirfd, const char* name);
Status setxattr(int dirfd, const char* name, const char* attr, std::string_view value, int flags = 0);
Status removexattr(int dirfd, const char* name, const char* attr);

Status renameat2(int olddir, const char* oldname, int newdir, const char* newname, unsigned flags);
Status fchmod_empty(int fd, mode_t mode);    // chmod through an O_PATH fd (fchmodat2 + AT_EMPTY_PATH)
Status fchown_empty(int fd, uid_t uid, gid_t gid);
Status utimens_empty(int fd, const struct timespec ts[2]);

std::string proc_fd_path(int fd);
std::string errno_text(int err);

}  // namespace strata::sys
