// Node: one inode of the merged tree as the kernel sees it (one FUSE nodeid).
//
// Directories hold an fd per layer that contributes to them, so looking up a child is one
// fstatat per layer relative to those fds. Non-directories hold no fd at all: they are reached
// as (parent directory fd in their layer, name). That keeps the daemon's fd count proportional
// to the directories the kernel holds, not to every file a walk touched (RLIMIT_NOFILE), and
// saves a syscall per lookup. A non-directory whose last known name is removed while the kernel
// still holds it gets an O_PATH fd ("detached") first.
//
// Lock order: a node's copy-up lock (Overlay::copy_up_lock, never two at once); then names_mu
// (one directory's, or two taken together by std::lock in a rename; never a copy-up while one is
// held); Node::mu is a leaf (never held while taking another lock or doing I/O beyond an
// fd copy); InodeTable's mutex is a leaf too.
#pragma once
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "strata/small_mutex.h"
#include "strata/unique_fd.h"

namespace strata {

struct Node;
using NodePtr = std::shared_ptr<Node>;

class AufsMarkerCache;

// How many directory fds DirLayers hold right now: the daemon's main use of descriptors. The
// adapter sheds cached nodes before RLIMIT_NOFILE is reached (src/fs/fd_budget.*).
struct HeldDirFd {
  static inline std::atomic<int64_t> count{0};
  HeldDirFd() { count.fetch_add(1, std::memory_order_relaxed); }
  HeldDirFd(const HeldDirFd&) : HeldDirFd() {}
  HeldDirFd(HeldDirFd&&) noexcept : HeldDirFd() {}
  HeldDirFd& operator=(const HeldDirFd&) { return *this; }
  HeldDirFd& operator=(HeldDirFd&&) noexcept { return *this; }
  ~HeldDirFd() { count.fetch_sub(1, std::memory_order_relaxed); }
};

// A directory of one layer that is part of a merged directory.
struct DirLayer {
  int layer;     // 0 = upper
  UniqueFd fd;   // O_RDONLY|O_DIRECTORY
  std::shared_ptr<const AufsMarkerCache> markers;  // lower layers only
  HeldDirFd held{};
};

// What identifies a node, so that a second lookup of the same object finds the same nodeid:
// the real (dev, ino) of its top object. A lower file with several hard links is given one node
// per name (parent+name added), because copying one name up breaks the link, as in the kernel.
struct NodeKey {
  dev_t dev = 0;
  ino_t ino = 0;
  const Node* parent = nullptr;
  // Only for the per-name keys of lower hard links, so shared and rarely set: a std::string here
  // would cost 32 bytes on every node.
  std::shared_ptr<const std::string> name;
  bool operator==(const NodeKey& o) const {
    return dev == o.dev && ino == o.ino && parent == o.parent &&
           (name == o.name || (name && o.name && *name == *o.name));
  }
};

struct NodeKeyHash {
  size_t operator()(const NodeKey& k) const noexcept {
    size_t h = std::hash<uint64_t>()(k.ino) ^ (std::hash<uint64_t>()(k.dev) << 1);
    if (k.parent) h ^= std::hash<const void*>()(k.parent) ^ (k.name ? std::hash<std::string>()(*k.name) : 0);
    return h;
  }
};

// The state only directory nodes have. dirs, lower_path and opaque_layer are guarded by the
// node's mu.
struct DirState {
  // What the names in this directory refer to. A lookup holds it shared from its stat of the
  // layers to filing the node under that name; whatever changes the object behind a name
  // (create, unlink, rename, the rename that places a copy-up) holds it exclusively. The kernel
  // does not serialise these for us (dentry revalidation and copy-ups triggered by open or
  // setxattr run outside its directory locks), and without it a lookup could file a node under a
  // name that meanwhile holds another object: a later GETATTR then answers with the wrong type
  // and the kernel marks the inode bad (EIO).
  std::shared_mutex names_mu;
  std::vector<DirLayer> dirs;  // contributing layers, upper first
  std::string lower_path;      // where the lower parts live, from the layer roots
  int opaque_layer = -1;       // the layer whose opaque marker cut the merge
};

struct Node : std::enable_shared_from_this<Node> {
  Node(mode_t type_, uint64_t ino_)
      : type(type_), ino(ino_), dir_(S_ISDIR(type_) ? std::make_unique<DirState>() : nullptr) {}
  bool is_dir() const { return S_ISDIR(type); }
  // See DirState::names_mu (a non-directory never is a parent).
  std::shared_mutex& names_mu() const { return dir_ ? dir_->names_mu : unused_names_mu; }
  static inline std::shared_mutex unused_names_mu;

  const mode_t type;   // S_IFMT bits; a name that changes type gets a new node
  // st_ino shown for this node: kept across copy-up, except for a lower file with several
  // links, whose copied name becomes a file of its own (as in the kernel overlay).
  std::atomic<uint64_t> ino;
  std::atomic<uint64_t> nlookup{0};
  // What only directories have (allocated for them only: most nodes are files, and the daemon's
  // memory grows with the nodes the kernel holds). Null for other nodes.
  const std::unique_ptr<DirState> dir_;
  DirState& dir() const { return *dir_; }  // directories only

  mutable SmallMutex mu;  // guards everything below (a leaf lock: see above)
  NodePtr parent;         // null for the root
  std::string name;       // the name in parent this node was last reached by
  int layer = -1;         // layer of the top object (0 = upper)
  // A metacopy file (upper holds the attributes only): the lower layer whose file of the same
  // name holds the data; -1 otherwise. Cleared when the data is copied up (complete_metacopy).
  int data_layer = -1;
  // ... and when the data file is not (the parent's lower directories, name), as after a rename
  // of the metacopy file (the upper file then carries a redirect): its path from the layer roots.
  std::shared_ptr<const std::string> data_path;
  // Non-directories whose known name was removed: an O_PATH fd. Set once, never replaced or
  // closed while the node lives: locate() hands out the raw number without holding mu.
  UniqueFd detached;
  NodeKey key;            // (guarded by the InodeTable's mutex, not mu)
  bool unlinked = false;  // removed from the merged tree (open files may still use it)
};

}  // namespace strata
