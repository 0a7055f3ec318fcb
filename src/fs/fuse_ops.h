// The thin FUSE adapter: one handler per low-level operation. Each computes through the core
// (Overlay) and sends exactly one reply; no exception crosses into libfuse.
#pragma once
#include <fuse_lowlevel.h>

#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "dir_listings.h"
#include "open_files.h"
#include "passthrough.h"
#include "strata/overlay.h"

namespace strata::fs {

// Below this many nodes held at the peak, a trim would give back too little to be worth it.
inline constexpr size_t kTrimMinNodes = 20000;

struct Daemon {
  Overlay* overlay = nullptr;
  struct fuse_session* session = nullptr;
  Passthrough* passthrough = nullptr;
  double timeout = 86400;
  bool volatile_mode = false;
  bool want_acl = true;  // ask for FUSE_POSIX_ACL (not with -o noacl)
  // Negotiated in INIT: the kernel enforces and caches POSIX ACLs (FUSE_POSIX_ACL), and leaves
  // the caller's umask to us (FUSE_DONT_MASK, asked with it: it must not apply under a default ACL).
  bool acl = false;
  DaemonCounters counters;
  // Most nodes held since memory was last given back (see trim_after_forgets).
  std::atomic<size_t> nodes_peak{0};
  OpenFiles* open_files = nullptr;
  class FdBudget* fd_budget = nullptr;
  // The real directories this mount reads and writes (layers and workdir), one per line: the
  // virtual xattr user.strata.layers on the root, read by another strata-fs that would stack
  // on this mount, to refuse a mountpoint inside them.
  std::string layer_paths;
  // Open files not released yet (a mount can end with files still open: the kernel sends no
  // RELEASE then); freed at exit. Guarded by handles_mu.
  std::mutex handles_mu;
  std::unordered_set<void*> open_file_handles;
  DirListings dir_listings;
};

// Free what open_handles still holds (after the session loop ended).
void free_open_handles(Daemon& daemon);

// The live summary (SIGUSR1, and the virtual xattr user.strata.stats on the mount's root).
std::string summary_text(Daemon& daemon);
std::string summary_json(Daemon& daemon);

const struct fuse_lowlevel_ops& lowlevel_ops();
// The FUSE nodeid of a node (the root is FUSE_ROOT_ID).
fuse_ino_t nodeid_of(const Daemon& daemon, const Node* node);

}  // namespace strata::fs
