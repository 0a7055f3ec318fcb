// The thin FUSE adapter: one handler per low-level operation. Each computes through the core
// (Overlay) and sends exactly one reply; no exception crosses into libfuse.
#pragma once
#include <fuse_lowlevel.h>

#include "strata/overlay.h"

namespace strata::fs {

struct Daemon {
  Overlay* overlay = nullptr;
  struct fuse_session* session = nullptr;
  double timeout = 86400;
  bool volatile_mode = false;
};

const struct fuse_lowlevel_ops& lowlevel_ops();
// The FUSE nodeid of a node (the root is FUSE_ROOT_ID).
fuse_ino_t nodeid_of(const Daemon& daemon, const Node* node);

}  // namespace strata::fs
