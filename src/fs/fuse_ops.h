// The thin FUSE adapter: one handler per low-level operation. Each computes through the core
// (Overlay) and sends exactly one reply; no exception crosses into libfuse.
#pragma once
#include <fuse_lowlevel.h>

#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>

#include "passthrough.h"
#include "strata/overlay.h"

namespace strata::fs {

// What the open files of one inode are bound to. The kernel demands that all concurrent opens of
// an inode agree: all passthrough with one backing id, or all not (passthrough.md, rules 1-2).
struct OpenState {
  int opens = 0;
  bool passthrough = false;
  int backing_id = 0;
  bool bound_in_upper = false;  // the file they use is the upper one (else a lower one)
};

struct DaemonCounters {
  std::atomic<uint64_t> read_requests{0}, write_requests{0}, open_files{0};
  std::atomic<uint64_t> passthrough_opens{0}, normal_opens{0}, estale_reopens{0};
};

struct Daemon {
  Overlay* overlay = nullptr;
  struct fuse_session* session = nullptr;
  Passthrough* passthrough = nullptr;
  double timeout = 86400;
  bool volatile_mode = false;
  DaemonCounters counters;
  std::mutex open_mu;  // guards open_states; a leaf lock
  std::unordered_map<const Node*, OpenState> open_states;
};

// The live summary (SIGUSR1, and the virtual xattr user.strata.stats on the mount's root).
std::string summary_text(Daemon& daemon);
std::string summary_json(Daemon& daemon);

const struct fuse_lowlevel_ops& lowlevel_ops();
// The FUSE nodeid of a node (the root is FUSE_ROOT_ID).
fuse_ino_t nodeid_of(const Daemon& daemon, const Node* node);

}  // namespace strata::fs
