// What the kernel knows about a caller and FUSE does not pass on: its supplementary groups and
// whether it holds CAP_FSETID over a file (for the setgid rule of access ACLs, see op_setxattr).
#pragma once
#include <fuse_lowlevel.h>
#include <sys/types.h>

namespace strata::fs {

// The caller's fsgid or one of its supplementary groups is `gid`.
bool caller_in_group(fuse_req_t req, gid_t gid);

// As the kernel's capable_wrt_inode_uidgid(CAP_FSETID): the capability is in the caller's
// effective set, and, when the caller is in another user namespace than the daemon, the file's
// owner and group (as the daemon sees them) are mapped in the caller's namespace. What /proc
// does not tell counts as "no": the setgid bit is then cleared rather than kept on a guess.
bool caller_has_fsetid_over(pid_t pid, uid_t uid, gid_t gid);

}  // namespace strata::fs
